//! The U-Boot boards' boot backend: the boot state is kept twice, in two
//! raw sectors in the gap before partition 1, each a U-Boot environment
//! block (CRC32 + `name=value\0` pairs) with a sequence number. The boot
//! script imports both with `env import -c` (which checks the CRC) and uses
//! the valid copy with the higher sequence; every write replaces the other
//! copy, so a torn write leaves the previous state in force. See
//! docs/power-cut.md.

use crate::card::{Card, CardError};
use crate::state::{BootFlow, BootState, Slot};

/// Byte offsets of the two copies (LBA 2048 and 2049) and their size.
pub const COPIES: [u64; 2] = [2048 * 512, 2049 * 512];
pub const ENV_SIZE: usize = 512;

pub struct Uboot {
    pub max_tries: u32,
}

/// A decoded copy: its sequence number and state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy {
    pub seq: u64,
    pub state: BootState,
}

/// Encodes a copy as U-Boot's `env export -c` would.
pub fn encode(copy: &Copy) -> [u8; ENV_SIZE] {
    let s = &copy.state;
    let text = format!(
        "keel_seq={}\0keel_active={}\0keel_trial={}\0keel_tries={}\0\0",
        copy.seq,
        s.active.letter(),
        s.trial.map(|t| t.letter().to_string()).unwrap_or_default(),
        s.tries
    );
    let mut out = [0u8; ENV_SIZE];
    out[4..4 + text.len()].copy_from_slice(text.as_bytes());
    let crc = crc32fast::hash(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a copy; None when its CRC or contents are not valid.
pub fn decode(block: &[u8; ENV_SIZE]) -> Option<Copy> {
    let crc = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
    if crc32fast::hash(&block[4..]) != crc {
        return None;
    }
    let mut seq = None;
    let mut state = BootState { active: Slot::A, trial: None, tries: 0 };
    let mut active_seen = false;
    for pair in block[4..].split(|&b| b == 0).take_while(|p| !p.is_empty()) {
        let pair = std::str::from_utf8(pair).ok()?;
        let (k, v) = pair.split_once('=')?;
        match k {
            "keel_seq" => seq = v.parse().ok(),
            "keel_active" => {
                state.active = Slot::from_letter(v)?;
                active_seen = true;
            }
            "keel_trial" => state.trial = if v.is_empty() { None } else { Some(Slot::from_letter(v)?) },
            "keel_tries" => state.tries = v.parse().ok()?,
            _ => {}
        }
    }
    if !active_seen {
        return None;
    }
    Some(Copy { seq: seq?, state })
}

/// Reads both copies: (index of the newest valid copy, its contents).
fn newest(card: &mut Card) -> Result<Option<(usize, Copy)>, CardError> {
    let mut best: Option<(usize, Copy)> = None;
    for (i, off) in COPIES.iter().enumerate() {
        let mut block = [0u8; ENV_SIZE];
        card.read_gap(*off, &mut block)?;
        if let Some(c) = decode(&block) {
            if best.is_none_or(|(_, b)| c.seq > b.seq) {
                best = Some((i, c));
            }
        }
    }
    Ok(best)
}

impl BootFlow for Uboot {
    /// No valid copy reads as the default (slot A), as the script does.
    fn read(&self, card: &mut Card) -> Result<BootState, CardError> {
        Ok(newest(card)?.map(|(_, c)| c.state).unwrap_or_default())
    }

    fn write(&self, card: &mut Card, state: &BootState) -> Result<(), CardError> {
        let (slot, seq) = match newest(card)? {
            Some((i, c)) => (1 - i, c.seq + 1),
            None => (0, 1),
        };
        card.write_gap(COPIES[slot], &encode(&Copy { seq, state: *state }))?;
        card.sync()
    }

    fn trial_reboot_arg(&self) -> Option<&'static str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip_and_reject_damage() {
        let c = Copy { seq: 7, state: BootState { active: Slot::B, trial: Some(Slot::A), tries: 2 } };
        let block = encode(&c);
        assert_eq!(decode(&block), Some(c));
        for i in [0, 3, 4, 20, 511] {
            let mut bad = block;
            bad[i] ^= 0x40;
            assert_eq!(decode(&bad), None, "byte {i}");
        }
        assert_eq!(decode(&[0u8; ENV_SIZE]), None);
    }
}
