//! The Raspberry Pi's boot backend: the firmware's own A/B. `autoboot.txt`
//! in partition 1 names the default slot; a trial is one `0 tryboot` reboot,
//! so nothing is written to start it, and any reset before the new slot
//! confirms itself returns to the default by itself.

use card_format::autoboot;
use card_format::fat::{find_root_file, rewrite_in_place, FileSpot};
use keel_contract::partition::SELECTOR;

use crate::card::{Card, CardError};
use crate::state::{BootFlow, BootState};

/// `autoboot.txt` as an 8.3 directory entry name.
const NAME: &[u8; 11] = b"AUTOBOOTTXT";

pub struct Tryboot;

impl Tryboot {
    fn read_text(card: &mut Card) -> Result<(FileSpot, String), CardError> {
        let spot = find_root_file(&mut card.partition(SELECTOR), NAME)?.ok_or_else(|| {
            CardError::Format {
                number: SELECTOR,
                detail: "no autoboot.txt: this card was not built for a tryboot board".into(),
            }
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
        let active = autoboot::default_slot(&text).ok_or_else(|| CardError::Format {
            number: SELECTOR,
            detail: "autoboot.txt names no Keel boot partition".into(),
        })?;
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
        let text = autoboot::text(state.active);
        if text == old {
            return Ok(());
        }
        rewrite_in_place(&mut card.partition(SELECTOR), spot, text.as_bytes())
    }

    fn trial_reboot_arg(&self) -> Option<&'static str> {
        Some("0 tryboot")
    }
}
