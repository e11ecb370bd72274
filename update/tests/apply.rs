//! The applier on a real image file: what lands on the card, what does not,
//! and what a rejected bundle, a forged partition table or a power cut
//! leaves behind.

mod common;

use std::path::Path;

use bundle::{write_bundle, Compression, Manifest, PayloadSource};
use card_format::bootstate::SlotMark;
use common::{make_card, read_part, slot_a_untouched, SLOT_BYTES};
use ed25519_dalek::SigningKey;
use update::uboot::Uboot;
use update::{apply, ApplyError, ApplyOptions, BootFlow, BootState, Card, Slot};

const FLOW: Uboot = Uboot { max_tries: 3 };

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add((i >> 12) as u8))
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    card: std::path::PathBuf,
    key: SigningKey,
    boot_b: Vec<u8>,
    rootfs: Vec<u8>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let card = make_card(dir.path());
    Fixture {
        card,
        _dir: dir,
        key: SigningKey::from_bytes(&[7; 32]),
        boot_b: payload(3 << 20, 3),
        rootfs: payload((3 << 20) + 123, 5),
    }
}

impl Fixture {
    fn bundle(&self, board: &str, version: &str, key: &SigningKey) -> Vec<u8> {
        let boot_a = payload(3 << 20, 9);
        let (mut a, mut b, mut r) = (&boot_a[..], &self.boot_b[..], &self.rootfs[..]);
        let mut out = Vec::new();
        let header = Manifest {
            board: board.into(),
            version: version.into(),
            min_version: "0.1.0".into(),
            build_id: "t".into(),
            chunk_size: 1 << 20,
            payloads: vec![],
        };
        write_bundle(
            &mut out,
            &header,
            &mut [
                PayloadSource {
                    name: "boot-a",
                    data: &mut a,
                    compression: Compression::Deflate,
                },
                PayloadSource {
                    name: "boot-b",
                    data: &mut b,
                    compression: Compression::Deflate,
                },
                PayloadSource {
                    name: "rootfs",
                    data: &mut r,
                    compression: Compression::Deflate,
                },
            ],
            &[key],
        )
        .unwrap();
        out
    }

    fn trusted(&self) -> Vec<ed25519_dalek::VerifyingKey> {
        vec![self.key.verifying_key()]
    }
}

fn opts<'a>(trusted: &'a [ed25519_dalek::VerifyingKey], booted: Slot) -> ApplyOptions<'a> {
    ApplyOptions {
        board: "qemu-aarch64",
        running_version: "0.1.0",
        booted,
        trusted,
        allow_downgrade: false,
    }
}

fn apply_bytes(
    card_path: &Path,
    bundle: &[u8],
    fx: &Fixture,
    booted: Slot,
) -> Result<update::Applied, ApplyError> {
    let mut card = Card::open(card_path).unwrap();
    apply(bundle, &mut card, &FLOW, &opts(&fx.trusted(), booted))
}

fn state(card: &Path) -> BootState {
    FLOW.read(&mut Card::open(card).unwrap()).unwrap()
}

#[test]
fn apply_writes_only_the_inactive_slot_and_marks_it_complete_last() {
    let fx = fixture();
    let applied = apply_bytes(
        &fx.card,
        &fx.bundle("qemu-aarch64", "0.2.0", &fx.key),
        &fx,
        Slot::A,
    )
    .unwrap();
    assert_eq!(applied.slot, Slot::B);
    assert_eq!(read_part(&fx.card, 3, fx.boot_b.len()), fx.boot_b);
    assert_eq!(read_part(&fx.card, 6, fx.rootfs.len()), fx.rootfs);
    assert!(slot_a_untouched(&fx.card));
    let s = state(&fx.card);
    assert_eq!((s.active, s.trial), (Slot::A, Some(Slot::B)));
    assert_eq!(s.mark(Slot::B), &SlotMark::complete("0.2.0@t"));
    assert_eq!(s.mark(Slot::A), &SlotMark::complete("0.1.0@t"));
}

#[test]
fn rejected_bundles_never_change_the_running_slot_nor_what_boots() {
    let fx = fixture();
    let good = fx.bundle("qemu-aarch64", "0.2.0", &fx.key);
    let other_key = SigningKey::from_bytes(&[8; 32]);
    let mut tampered = good.clone();
    let last = tampered.len() - 10;
    tampered[last] ^= 1;
    let mut trailing = good.clone();
    trailing.push(0);
    // (what, bundle, message, rejected before any write)
    let cases: Vec<(&str, Vec<u8>, &str, bool)> = vec![
        ("tampered payload byte", tampered, "tampered", false),
        (
            "truncated",
            good[..good.len() / 2].to_vec(),
            "truncated",
            false,
        ),
        ("trailing bytes", trailing, "after its last payload", false),
        (
            "wrong board",
            fx.bundle("bbb", "0.2.0", &fx.key),
            "board 'bbb'",
            true,
        ),
        (
            "unknown key",
            fx.bundle("qemu-aarch64", "0.2.0", &other_key),
            "trusted key",
            true,
        ),
        (
            "downgrade",
            fx.bundle("qemu-aarch64", "0.0.9", &fx.key),
            "older than the running",
            true,
        ),
        (
            "pre-release downgrade",
            fx.bundle("qemu-aarch64", "0.1.0-rc1", &fx.key),
            "older than the running",
            true,
        ),
    ];
    for (what, bytes, needle, before_any_write) in cases {
        let pristine = std::fs::read(&fx.card).unwrap();
        let err = apply_bytes(&fx.card, &bytes, &fx, Slot::A)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{what}: {err}");
        if before_any_write {
            assert!(
                std::fs::read(&fx.card).unwrap() == pristine,
                "{what}: card changed"
            );
        }
        let s = state(&fx.card);
        assert_eq!((s.active, s.trial), (Slot::A, None), "{what}");
        assert!(
            !s.mark(Slot::B).bootable,
            "{what}: a partly written slot is bootable"
        );
        assert!(slot_a_untouched(&fx.card), "{what}: slot A changed");
    }
}

/// Issue: `agent revert` on a fresh card, or after a stream cut halfway,
/// chose the empty or half-written slot and the card never booted again.
#[test]
fn revert_refuses_an_empty_or_half_written_slot() {
    let fx = fixture();
    let s = state(&fx.card);
    let e = s.revert(Slot::A).unwrap_err().to_string();
    assert!(e.contains("slot b holds no complete image"), "{e}");
    let good = fx.bundle("qemu-aarch64", "0.2.0", &fx.key);
    assert!(apply_bytes(&fx.card, &good[..good.len() * 2 / 3], &fx, Slot::A).is_err());
    assert!(state(&fx.card).revert(Slot::A).is_err());
}

#[test]
fn refuses_to_update_while_on_trial() {
    let fx = fixture();
    let mut c = Card::open(&fx.card).unwrap();
    let s = state(&fx.card);
    let trial = s
        .begin_write(Slot::A, Slot::B)
        .unwrap()
        .finish_write(Slot::B, "0.2.0@t")
        .unwrap();
    FLOW.write(&mut c, &trial).unwrap();
    drop(c);
    let err = apply_bytes(
        &fx.card,
        &fx.bundle("qemu-aarch64", "0.3.0", &fx.key),
        &fx,
        Slot::B,
    )
    .unwrap_err();
    assert!(err.to_string().contains("on trial"), "{err}");
}

#[test]
fn a_power_cut_at_any_write_leaves_slot_a_booting_and_b_unbootable() {
    let fx = fixture();
    let bundle = fx.bundle("qemu-aarch64", "0.2.0", &fx.key);
    let mut finished = false;
    for budget in 0..16 {
        let mut card = Card::open(&fx.card).unwrap();
        card.cut_power_after(budget);
        let result = apply(&bundle[..], &mut card, &FLOW, &opts(&fx.trusted(), Slot::A));
        drop(card);
        let s = state(&fx.card);
        assert_eq!(s.active, Slot::A, "budget {budget}");
        assert!(slot_a_untouched(&fx.card), "budget {budget}");
        if result.is_ok() {
            assert_eq!(s.trial, Some(Slot::B));
            finished = true;
            break;
        }
        // Cut before the last write: B is never offered to the bootloader.
        assert_eq!(s.trial, None, "budget {budget}");
        assert!(!s.mark(Slot::B).bootable, "budget {budget}");
    }
    assert!(
        finished,
        "the apply never completed within the write budgets"
    );
}

#[test]
fn a_card_that_drops_writes_fails_the_read_back_and_keeps_booting_a() {
    let fx = fixture();
    let bundle = fx.bundle("qemu-aarch64", "0.2.0", &fx.key);
    let mut card = Card::open(&fx.card).unwrap();
    // The first write (marking B) lands; the payload writes are dropped.
    card.drop_writes_after(1);
    let err = apply(&bundle[..], &mut card, &FLOW, &opts(&fx.trusted(), Slot::A)).unwrap_err();
    assert!(
        matches!(err, ApplyError::Readback { .. }),
        "expected a read-back failure, got: {err}"
    );
    assert!(err.to_string().contains("does not read back"), "{err}");
    drop(card);
    let s = state(&fx.card);
    assert_eq!(
        (s.active, s.trial, s.mark(Slot::B).bootable),
        (Slot::A, None, false)
    );
}

/// Forged tables: partition 3 pointed at partition 2's sectors, the EBR
/// chain relinked so partition 6 covers partition 5, partition 3 past the
/// end of the card. Refused before any write; the image neither changes nor
/// grows.
#[test]
fn forged_partition_tables_are_refused_before_any_write() {
    let fx = fixture();
    let bundle = fx.bundle("qemu-aarch64", "0.2.0", &fx.key);
    let t = common::table();
    let start = |n: u8| t.get(n).unwrap().start_lba;
    let ext = start(4);
    let gap = card_format::mbr::EBR_GAP;
    /// (what, [(byte offset on the card, bytes written there)])
    type Forgery = (&'static str, Vec<(u64, Vec<u8>)>);
    let forgeries: Vec<Forgery> = vec![
        // MBR entry 3 (offset 446 + 32): start = partition 2's start.
        (
            "3 over 2",
            vec![(446 + 32 + 8, (start(2) as u32).to_le_bytes().to_vec())],
        ),
        (
            "3 past the end",
            vec![(
                446 + 32 + 8,
                ((common::CARD_SECTORS + 8) as u32).to_le_bytes().to_vec(),
            )],
        ),
        // EBR 5's link now points one sector on, where a forged EBR holds a
        // partition 6 that starts before partition 5 and covers it, and
        // links on to the real EBR 7.
        ("6 over 5", {
            let mut forged = vec![0u8; 512];
            let entry = |rel: u64, size: u64, kind: u8| {
                let mut e = [0u8; 16];
                e[4] = kind;
                e[8..12].copy_from_slice(&(rel as u32).to_le_bytes());
                e[12..16].copy_from_slice(&(size as u32).to_le_bytes());
                e
            };
            forged[446..462].copy_from_slice(&entry(1, gap + 4 * common::MIB, 0x83));
            forged[462..478].copy_from_slice(&entry(
                start(7) - gap - ext,
                4 * common::MIB + gap,
                0x05,
            ));
            forged[510] = 0x55;
            forged[511] = 0xaa;
            vec![
                ((ext) * 512 + 462 + 8, 1u32.to_le_bytes().to_vec()),
                ((ext + 1) * 512, forged),
            ]
        }),
    ];
    for (what, edits) in forgeries {
        let dir = tempfile::tempdir().unwrap();
        let path = make_card(dir.path());
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            for (at, bytes) in edits {
                f.seek(SeekFrom::Start(at)).unwrap();
                f.write_all(&bytes).unwrap();
            }
        }
        let before = std::fs::read(&path).unwrap();
        let e = match Card::open(&path) {
            Err(e) => e.to_string(),
            Ok(mut c) => apply(&bundle[..], &mut c, &FLOW, &opts(&fx.trusted(), Slot::A))
                .map(|_| ())
                .unwrap_err()
                .to_string(),
        };
        assert!(
            e.contains("overlap") || e.contains("past the end"),
            "{what}: {e}"
        );
        assert!(
            std::fs::read(&path).unwrap() == before,
            "{what}: card changed"
        );
    }
}

/// Chunks are checked on several threads; the error reported is still the
/// one a sequential reader meets first.
#[test]
fn the_earliest_bad_chunk_is_the_one_reported() {
    let fx = fixture();
    let good = fx.bundle("qemu-aarch64", "0.2.0", &fx.key);
    let header = bundle::Header::read(&mut &good[..]).unwrap();
    let manifest = Manifest::parse(header.manifest_text().unwrap()).unwrap();
    let body = header.len() as usize;
    let rootfs = manifest.payload("rootfs").unwrap();
    let rootfs_start = body
        + manifest
            .payloads
            .iter()
            .take_while(|p| p.name != "rootfs")
            .map(|p| p.stored as usize)
            .sum::<usize>();
    let second = rootfs_start + rootfs.chunks[0].stored as usize;
    let mut bad = good.clone();
    bad[second + 5] ^= 1; // rootfs chunk 1
    bad[rootfs_start + 5] ^= 1; // rootfs chunk 0
    bad[good.len() - 5] ^= 1; // rootfs, last chunk
                              // The race this guards against is rare per run; repeat it.
    for _ in 0..30 {
        let err = apply_bytes(&fx.card, &bad, &fx, Slot::A)
            .unwrap_err()
            .to_string();
        assert!(err.contains("'rootfs'") && err.contains("chunk 0"), "{err}");
    }
    assert!(slot_a_untouched(&fx.card));
    let _ = SLOT_BYTES;
}
