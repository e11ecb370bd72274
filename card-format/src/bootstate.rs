//! The U-Boot boot state record: a 512-byte U-Boot environment block (`env
//! export -c -s 0x200`: CRC32 + `name=value\0` pairs), kept in two copies in
//! the gap before partition 1. The image builder writes the first records,
//! the device's agent and the boot script the later ones. See
//! docs/uboot-boot-state.md for the scheme and the power-cut argument.
//!
//! The ranges of the counters are defined here once; the boot script is
//! generated from the same functions (`image_build::bootfiles`), so Linux and
//! U-Boot accept exactly the same records.

use keel_contract::Slot;

/// Byte offsets of the two copies (LBA 2048 and 4096): 1 MiB apart, so no
/// single page-cache writeback covers both.
pub const COPIES: [u64; 2] = [2048 * 512, 4096 * 512];
pub const RECORD_SIZE: usize = 512;

/// The largest sequence number: U-Boot's `test` compares numbers as 32-bit
/// signed integers on armv7. Linux refuses to write past it (it would take
/// two billion updates).
pub const SEQ_MAX: u64 = i32::MAX as u64;

pub use keel_contract::release::MAX_TRIES_LIMIT;

/// Valid values of `keel_tries` for a board that tries a new slot
/// `max_tries` times: 0 to `max_tries + 1` (the script writes `max + 1`
/// when it gives up on a trial).
pub fn valid_tries(max_tries: u32) -> std::ops::RangeInclusive<u32> {
    0..=max_tries + 1
}

/// The longest image id (`version@build_id`) a record carries; both parts
/// are bounded by the bundle manifest, so a record always fits one sector.
pub const MAX_IMAGE_ID: usize = 129;

/// What a slot holds, as far as the boot state knows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SlotMark {
    /// The slot holds a complete, verified image: the only kind the boot
    /// script trials or falls back to.
    pub bootable: bool,
    /// `version@build_id` of that image, when known.
    pub image: Option<String>,
}

impl SlotMark {
    pub fn complete(image: impl Into<String>) -> SlotMark {
        SlotMark {
            bootable: true,
            image: Some(image.into()),
        }
    }
}

/// One record. `tries` counts trial boots (U-Boot increments it, up to
/// `max_tries + 1` on fallback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub active: Slot,
    pub trial: Option<Slot>,
    pub tries: u32,
    /// Per slot, indexed by [`slot_index`].
    pub slots: [SlotMark; 2],
}

pub fn slot_index(s: Slot) -> usize {
    match s {
        Slot::A => 0,
        Slot::B => 1,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the boot state's sequence number has reached {SEQ_MAX}; no further boot state can be written (re-flash the card)")]
    SeqExhausted,
    #[error("image id {0:?} is too long for the boot state ({MAX_IMAGE_ID} characters at most)")]
    ImageId(String),
}

/// A value the boot script copies between variables unchanged: letters,
/// digits and `. _ + ~ @ : -` (no spaces, quotes, `$` or `;` for hush to
/// act on).
pub fn is_env_word(v: &str) -> bool {
    !v.is_empty()
        && v.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'~' | b'@' | b':' | b'-')
        })
}

impl Record {
    /// What a fresh card holds: slot a with the image the builder wrote,
    /// slot b empty.
    pub fn initial(image: &str) -> Record {
        Record {
            seq: 1,
            active: Slot::A,
            trial: None,
            tries: 0,
            slots: [SlotMark::complete(image), SlotMark::default()],
        }
    }

    pub fn mark(&self, s: Slot) -> &SlotMark {
        &self.slots[slot_index(s)]
    }

    /// The record's bytes, or why this record cannot be written. Variables
    /// come in the order `env export` sorts them, so the bytes equal what
    /// U-Boot itself writes.
    pub fn encode(&self) -> Result<[u8; RECORD_SIZE], RecordError> {
        if self.seq > SEQ_MAX {
            return Err(RecordError::SeqExhausted);
        }
        let id = |s: Slot| -> Result<&str, RecordError> {
            match self.mark(s).image.as_deref() {
                None => Ok("-"),
                // "-" on disk means "unknown": an image id is never just that.
                Some(i) if i != "-" && i.len() <= MAX_IMAGE_ID && is_env_word(i) => Ok(i),
                Some(i) => Err(RecordError::ImageId(i.to_string())),
            }
        };
        let flag = |s: Slot| u8::from(self.mark(s).bootable);
        let trial = self.trial.map_or("none", Slot::as_str);
        let text = format!(
            "keel_active={}\0keel_id_a={}\0keel_id_b={}\0keel_ok_a={}\0keel_ok_b={}\0keel_seq={}\0keel_trial={trial}\0keel_tries={}\0",
            self.active,
            id(Slot::A)?,
            id(Slot::B)?,
            flag(Slot::A),
            flag(Slot::B),
            self.seq,
            self.tries
        );
        let mut out = [0u8; RECORD_SIZE];
        // Bounded above: the ids are at most MAX_IMAGE_ID characters.
        out[4..4 + text.len()].copy_from_slice(text.as_bytes());
        let crc = crc32fast::hash(&out[4..]);
        out[..4].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Parses a record the way the boot script validates it for a board
    /// with `max_tries`; None when the CRC or any field is invalid.
    ///
    /// Records written before the per-slot fields existed have no
    /// `keel_ok_*`/`keel_id_*`: both slots then count as bootable, as they
    /// did, and their images as unknown (the script does the same).
    pub fn decode(block: &[u8; RECORD_SIZE], max_tries: u32) -> Option<Record> {
        let crc = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        if crc32fast::hash(&block[4..]) != crc {
            return None;
        }
        let (mut seq, mut active, mut trial, mut tries) = (None, None, None, None);
        let mut ok: [Option<bool>; 2] = [None, None];
        let mut ids: [Option<String>; 2] = [None, None];
        // The script compares letters exactly: upper case is invalid there.
        let slot = |v: &str| matches!(v, "a" | "b").then(|| Slot::parse(v)).flatten();
        for pair in block[4..].split(|&b| b == 0).take_while(|p| !p.is_empty()) {
            let (k, v) = std::str::from_utf8(pair).ok()?.split_once('=')?;
            match k {
                "keel_seq" => {
                    // Digits only, as U-Boot's decimal `test` reads them.
                    seq = Some(
                        (!v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
                            .then(|| v.parse::<u64>().ok())
                            .flatten()
                            .filter(|s| (1..=SEQ_MAX).contains(s))?,
                    )
                }
                "keel_active" => active = Some(slot(v)?),
                "keel_trial" => {
                    trial = Some(match v {
                        "none" => None,
                        _ => Some(slot(v)?),
                    })
                }
                "keel_tries" => {
                    tries = Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|t| valid_tries(max_tries).contains(t) && v == t.to_string())?,
                    )
                }
                "keel_ok_a" | "keel_ok_b" => {
                    let i = usize::from(k == "keel_ok_b");
                    ok[i] = Some(match v {
                        "0" => false,
                        "1" => true,
                        _ => return None,
                    });
                }
                "keel_id_a" | "keel_id_b" => {
                    let i = usize::from(k == "keel_id_b");
                    ids[i] = match v {
                        "-" => None,
                        _ if v.len() <= MAX_IMAGE_ID && is_env_word(v) => Some(v.to_string()),
                        _ => return None,
                    };
                }
                _ => {}
            }
        }
        let [ok_a, ok_b] = ok;
        let [id_a, id_b] = ids;
        Some(Record {
            seq: seq?,
            active: active?,
            trial: trial?,
            tries: tries?,
            slots: [
                SlotMark {
                    bootable: ok_a.unwrap_or(true),
                    image: id_a,
                },
                SlotMark {
                    bootable: ok_b.unwrap_or(true),
                    image: id_b,
                },
            ],
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

    fn legacy(text: &str) -> [u8; RECORD_SIZE] {
        let mut out = [0u8; RECORD_SIZE];
        out[4..4 + text.len()].copy_from_slice(text.as_bytes());
        let crc = crc32fast::hash(&out[4..]);
        out[..4].copy_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn matches_the_bytes_u_boot_writes() {
        // The layout of `env export -c -s 0x200` (checked against U-Boot's
        // own output for the four-variable record): CRC32 LE, then the
        // variables sorted by name.
        let r = Record::initial("0.1.0@abc").encode().unwrap();
        assert!(r[4..].starts_with(
            b"keel_active=a\0keel_id_a=0.1.0@abc\0keel_id_b=-\0keel_ok_a=1\0keel_ok_b=0\0keel_seq=1\0keel_trial=none\0keel_tries=0\0\0"
        ));
        assert_eq!(Record::decode(&r, 3), Some(Record::initial("0.1.0@abc")));
        // The old four-variable record U-Boot wrote (CRC 0x37604f89) still
        // reads, with both slots bootable as they then were.
        let old = legacy("keel_active=a\0keel_seq=1\0keel_trial=none\0keel_tries=0\0");
        assert_eq!(&old[..4], &[0x89, 0x4f, 0x60, 0x37]);
        let r = Record::decode(&old, 3).unwrap();
        assert!(r.slots[0].bootable && r.slots[1].bootable);
        assert_eq!(r.slots[0].image, None);
    }

    #[test]
    fn rejects_damage_and_bad_fields() {
        let r = Record {
            seq: 5,
            active: Slot::B,
            trial: Some(Slot::A),
            tries: 2,
            slots: [SlotMark::complete("1@x"), SlotMark::complete("2@y")],
        }
        .encode()
        .unwrap();
        for i in [0, 4, 30, 511] {
            let mut bad = r;
            bad[i] ^= 1;
            assert_eq!(Record::decode(&bad, 3), None, "byte {i}");
        }
        assert_eq!(Record::decode(&[0; RECORD_SIZE], 3), None);
        for text in [
            "keel_active=A\0keel_seq=1\0keel_trial=none\0keel_tries=0\0",
            "keel_active=a\0keel_seq=0\0keel_trial=none\0keel_tries=0\0",
            "keel_active=a\0keel_seq=+1\0keel_trial=none\0keel_tries=0\0",
            "keel_active=a\0keel_seq=2147483648\0keel_trial=none\0keel_tries=0\0",
            "keel_active=a\0keel_seq=1\0keel_trial=c\0keel_tries=0\0",
            "keel_active=a\0keel_seq=1\0keel_trial=none\0keel_tries=5\0",
            "keel_active=a\0keel_seq=1\0keel_trial=none\0keel_tries=01\0",
            "keel_active=a\0keel_ok_a=2\0keel_seq=1\0keel_trial=none\0keel_tries=0\0",
            "keel_active=a\0keel_seq=1\0keel_trial=none\0",
        ] {
            assert_eq!(Record::decode(&legacy(text), 3), None, "{text:?}");
        }
        // A tries value the script accepts for max 3 is 0..=4.
        let four = legacy("keel_active=a\0keel_seq=1\0keel_trial=b\0keel_tries=4\0");
        assert!(Record::decode(&four, 3).is_some());
        assert!(Record::decode(&four, 2).is_none());
    }

    #[test]
    fn refuses_to_write_what_it_could_not_read() {
        let mut r = Record::initial("1@x");
        r.seq = SEQ_MAX;
        let bytes = r.encode().unwrap();
        assert_eq!(Record::decode(&bytes, 3).unwrap().seq, SEQ_MAX);
        r.seq = SEQ_MAX + 1;
        assert_eq!(r.encode(), Err(RecordError::SeqExhausted));
        let long = Record::initial(&"v".repeat(MAX_IMAGE_ID + 1));
        assert!(long.encode().is_err());
        assert!(Record::initial("1 0@x").encode().is_err());
        assert!(
            Record::initial("-").encode().is_err(),
            "\"-\" reads back as no image"
        );
        // The longest ids still fit one sector.
        let mut r = Record::initial(&"v".repeat(MAX_IMAGE_ID));
        r.slots[1] = SlotMark::complete("w".repeat(MAX_IMAGE_ID));
        r.seq = SEQ_MAX;
        r.trial = Some(Slot::B);
        r.tries = 9;
        assert_eq!(Record::decode(&r.encode().unwrap(), 8), Some(r));
    }

    #[test]
    fn newest_prefers_seq_then_tries_then_copy_0() {
        let r = |seq, tries| {
            Some(Record {
                seq,
                tries,
                ..Record::initial("1@x")
            })
        };
        assert_eq!(Record::newest([r(2, 0), r(3, 0)]).unwrap().0, 1);
        assert_eq!(Record::newest([r(3, 1), r(3, 0)]).unwrap().0, 0);
        assert_eq!(Record::newest([r(3, 0), r(3, 1)]).unwrap().0, 1);
        assert_eq!(Record::newest([r(3, 0), r(3, 0)]).unwrap().0, 0);
        assert_eq!(Record::newest([None, r(1, 0)]).unwrap().0, 1);
        assert_eq!(Record::newest([None, None]), None);
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, RECORD_SIZE..=RECORD_SIZE), max in 1u32..=8) {
            let block: [u8; RECORD_SIZE] = bytes.try_into().unwrap();
            let _ = Record::decode(&block, max);
        }

        #[test]
        fn what_linux_writes_it_reads_back(
            seq in 1u64..=SEQ_MAX, a in proptest::bool::ANY, b in proptest::bool::ANY,
            trial in 0u8..3, max in 1u32..=MAX_TRIES_LIMIT, tries_seed in 0u32..100,
            id in "[0-9a-z.+~-]{1,30}@[0-9a-z]{1,12}",
        ) {
            let tries = tries_seed % (max + 2);
            let r = Record {
                seq,
                active: if a { Slot::A } else { Slot::B },
                trial: [None, Some(Slot::A), Some(Slot::B)][trial as usize],
                tries,
                slots: [SlotMark { bootable: b, image: Some(id.clone()) }, SlotMark::default()],
            };
            proptest::prop_assert_eq!(Record::decode(&r.encode().unwrap(), max), Some(r));
        }
    }
}
