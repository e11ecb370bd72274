//! The U-Boot boards' boot state record: a 512-byte U-Boot environment
//! block (`env export -c -s 0x200`: CRC32 + `name=value\0` pairs), kept in
//! two copies in the gap before partition 1. The image builder writes the
//! first record, the device's agent and the boot script the later ones.
//! See docs/uboot-boot-state.md for the scheme and the power-cut argument.

use keel_contract::Slot;

/// Byte offsets of the two copies (LBA 2048 and 4096): 1 MiB apart, so no
/// single page-cache writeback covers both.
pub const COPIES: [u64; 2] = [2048 * 512, 4096 * 512];
pub const RECORD_SIZE: usize = 512;

/// One record. `tries` counts trial boots (U-Boot increments it, up to
/// max_tries + 1 on fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub active: Slot,
    pub trial: Option<Slot>,
    pub tries: u32,
}

impl Record {
    /// What a fresh card holds: slot a, nothing pending.
    pub const INITIAL: Record = Record {
        seq: 1,
        active: Slot::A,
        trial: None,
        tries: 0,
    };

    /// The record's bytes; variables in the order `env export` sorts them,
    /// so the bytes equal what U-Boot itself writes.
    pub fn encode(&self) -> [u8; RECORD_SIZE] {
        let trial = self.trial.map_or("none", Slot::as_str);
        let text = format!(
            "keel_active={}\0keel_seq={}\0keel_trial={trial}\0keel_tries={}\0",
            self.active, self.seq, self.tries
        );
        let mut out = [0u8; RECORD_SIZE];
        let n = text.len().min(RECORD_SIZE - 5);
        out[4..4 + n].copy_from_slice(&text.as_bytes()[..n]);
        let crc = crc32fast::hash(&out[4..]);
        out[..4].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a record the way the boot script validates it; None when the
    /// CRC or any field is invalid.
    pub fn decode(block: &[u8; RECORD_SIZE]) -> Option<Record> {
        let crc = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        if crc32fast::hash(&block[4..]) != crc {
            return None;
        }
        let (mut seq, mut active, mut trial, mut tries) = (None, None, None, None);
        for pair in block[4..].split(|&b| b == 0).take_while(|p| !p.is_empty()) {
            let (k, v) = std::str::from_utf8(pair).ok()?.split_once('=')?;
            // The script compares letters exactly: upper case is invalid there.
            let slot = |v: &str| matches!(v, "a" | "b").then(|| Slot::parse(v)).flatten();
            match k {
                "keel_seq" => seq = v.parse::<u64>().ok().filter(|s| *s <= i32::MAX as u64),
                "keel_active" => active = slot(v),
                "keel_trial" => {
                    trial = match v {
                        "none" => Some(None),
                        _ => slot(v).map(Some),
                    }
                }
                "keel_tries" => tries = v.parse::<u32>().ok().filter(|t| *t <= 9),
                _ => {}
            }
        }
        Some(Record {
            seq: seq?,
            active: active?,
            trial: trial?,
            tries: tries?,
        })
    }

    /// The copy in force: the valid one with the larger (seq, tries); on a
    /// tie copy 0, exactly as the boot script decides.
    pub fn newest(copies: [Option<Record>; 2]) -> Option<(usize, Record)> {
        match copies {
            [Some(a), Some(b)] if (b.seq, b.tries) > (a.seq, a.tries) => Some((1, b)),
            [Some(a), _] => Some((0, a)),
            [None, Some(b)] => Some((1, b)),
            [None, None] => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_bytes_u_boot_writes() {
        // Checked against a sector written by U-Boot's `env export -c -s 0x200`.
        let r = Record::INITIAL.encode();
        assert_eq!(&r[..4], &[0x89, 0x4f, 0x60, 0x37]);
        assert!(r[4..].starts_with(b"keel_active=a\0keel_seq=1\0keel_trial=none\0keel_tries=0\0\0"));
        assert_eq!(Record::decode(&r), Some(Record::INITIAL));
    }

    #[test]
    fn rejects_damage_and_bad_fields() {
        let r = Record {
            seq: 5,
            active: Slot::B,
            trial: Some(Slot::A),
            tries: 2,
        }
        .encode();
        for i in [0, 4, 30, 511] {
            let mut bad = r;
            bad[i] ^= 1;
            assert_eq!(Record::decode(&bad), None, "byte {i}");
        }
        assert_eq!(Record::decode(&[0; RECORD_SIZE]), None);
    }

    #[test]
    fn newest_prefers_seq_then_tries_then_copy_0() {
        let r = |seq, tries| {
            Some(Record {
                seq,
                active: Slot::A,
                trial: None,
                tries,
            })
        };
        assert_eq!(Record::newest([r(2, 0), r(3, 0)]).unwrap().0, 1);
        assert_eq!(Record::newest([r(3, 1), r(3, 0)]).unwrap().0, 0);
        assert_eq!(Record::newest([r(3, 0), r(3, 1)]).unwrap().0, 1);
        assert_eq!(Record::newest([r(3, 0), r(3, 0)]).unwrap().0, 0);
        assert_eq!(Record::newest([None, r(1, 0)]).unwrap().0, 1);
        assert_eq!(Record::newest([None, None]), None);
    }
}
