//! The Raspberry Pi's boot backend: the firmware's own A/B. `autoboot.txt`
//! in partition 1 names the default slot; a trial is one `0 tryboot` reboot,
//! so nothing is written to start it, and any reset before the new slot
//! confirms itself returns to the default by itself.

use image::tryboot::{autoboot_default, autoboot_txt};

use crate::card::{Card, CardError};
use crate::fat::{find_root_file, rewrite_in_place};
use crate::state::{BootFlow, BootState, Slot};

const SELECTOR: u8 = 1;
const NAME: &[u8; 11] = b"AUTOBOOTTXT";

pub struct Tryboot;

impl Tryboot {
    fn read_text(card: &mut Card) -> Result<(crate::fat::FileSpot, String), CardError> {
        let spot = find_root_file(card, SELECTOR, NAME)?.ok_or_else(|| CardError::Format {
            number: SELECTOR,
            detail: "no autoboot.txt: this card was not built for a tryboot board".into(),
        })?;
        if spot.size > 512 {
            return Err(CardError::Format {
                number: SELECTOR,
                detail: "autoboot.txt is larger than one sector".into(),
            });
        }
        let mut buf = vec![0u8; spot.size as usize];
        card.read_at(SELECTOR, spot.offset, &mut buf)?;
        Ok((spot, String::from_utf8_lossy(&buf).into_owned()))
    }
}

impl BootFlow for Tryboot {
    fn read(&self, card: &mut Card) -> Result<BootState, CardError> {
        let (_, text) = Self::read_text(card)?;
        let active = match autoboot_default(&text) {
            Some(p) if p == Slot::A.boot_partition() => Slot::A,
            Some(p) if p == Slot::B.boot_partition() => Slot::B,
            _ => {
                return Err(CardError::Format {
                    number: SELECTOR,
                    detail: "autoboot.txt names no Keel boot partition".into(),
                })
            }
        };
        Ok(BootState {
            active,
            trial: None,
            tries: 0,
        })
    }

    /// Only the default slot is persisted. The rewrite keeps the file's
    /// length, so it is a single-sector write: old or new, never a mix.
    fn write(&self, card: &mut Card, state: &BootState) -> Result<(), CardError> {
        let (spot, old) = Self::read_text(card)?;
        let text = autoboot_txt(
            state.active.boot_partition(),
            state.active.other().boot_partition(),
        );
        if text == old {
            return Ok(());
        }
        rewrite_in_place(card, SELECTOR, spot, text.as_bytes())
    }

    fn trial_reboot_arg(&self) -> Option<&'static str> {
        Some("0 tryboot")
    }
}
