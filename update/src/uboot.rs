//! The boot backend: the boot state lives in two records in raw sectors
//! before partition 1 (`card_format::bootstate`). The boot script uses the
//! valid record with the larger (seq, tries); every write, by the script or
//! by Linux, replaces only the other record, so a torn or lost write leaves
//! the previous state in force. See docs/uboot-boot-state.md.

use card_format::bootstate::{Record, COPIES, RECORD_SIZE};

use crate::card::{Card, CardError};
use crate::state::{BootFlow, BootState};

pub struct Uboot {
    /// How many times a new slot is tried (the board config's `max_tries`,
    /// baked into both the boot script and the release file).
    pub max_tries: u32,
}

impl Uboot {
    /// Both records as read from the card (None where invalid).
    pub fn read_records(&self, card: &mut Card) -> Result<[Option<Record>; 2], CardError> {
        let mut out = [None, None];
        for (i, off) in COPIES.iter().enumerate() {
            let mut block = [0u8; RECORD_SIZE];
            card.read_gap(*off, &mut block)?;
            out[i] = Record::decode(&block, self.max_tries);
        }
        Ok(out)
    }
}

impl BootFlow for Uboot {
    /// No valid record reads as the default (slot a), as the script does.
    fn read(&self, card: &mut Card) -> Result<BootState, CardError> {
        Ok(match Record::newest(self.read_records(card)?) {
            Some((_, r)) => BootState {
                active: r.active,
                trial: r.trial,
                tries: r.tries,
                slots: r.slots,
            },
            None => BootState::default(),
        })
    }

    /// Linux's writes: the next sequence number, tries reset, into the
    /// record not in force; then read back.
    fn write(&self, card: &mut Card, state: &BootState) -> Result<(), CardError> {
        let (target, seq) = match Record::newest(self.read_records(card)?) {
            Some((i, r)) => (1 - i, r.seq + 1),
            None => (0, 1),
        };
        let record = Record {
            seq,
            active: state.active,
            trial: state.trial,
            tries: 0,
            slots: state.slots.clone(),
        };
        let bytes = record.encode().map_err(|e| CardError::Format {
            number: 0,
            detail: e.to_string(),
        })?;
        card.write_gap(COPIES[target], &bytes)?;
        card.sync()?;
        let mut back = [0u8; RECORD_SIZE];
        card.read_gap(COPIES[target], &mut back)?;
        if back != bytes {
            return Err(CardError::Format {
                number: 0,
                detail: "boot state record did not read back as written; the card may be failing"
                    .into(),
            });
        }
        Ok(())
    }
}
