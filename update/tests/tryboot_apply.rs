//! The applier on a real image file with the tryboot backend: what lands on
//! the card, what does not, and what a power cut leaves behind.

use std::path::{Path, PathBuf};
use std::process::Command;

use bundle::{write_bundle, Compression, Manifest, PayloadSource};
use card_format::mbr::{Partition, PartitionTable, KIND_EXTENDED_LBA, KIND_FAT32_LBA, KIND_LINUX};
use ed25519_dalek::SigningKey;
use update::tryboot::Tryboot;
use update::{apply, ApplyError, ApplyOptions, BootFlow, BootState, Card, Slot};

const MIB: u64 = 2048; // sectors

fn run(cmd: &mut Command, package: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}; install Debian package {package}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small card with the Keel layout and a Pi-style partition 1.
fn make_card(dir: &Path) -> PathBuf {
    let path = dir.join("card.img");
    let parts = vec![
        Partition {
            number: 1,
            start_lba: 4 * MIB,
            sectors: 40 * MIB,
            kind: KIND_FAT32_LBA,
            bootable: true,
        },
        Partition {
            number: 2,
            start_lba: 44 * MIB,
            sectors: 4 * MIB,
            kind: KIND_FAT32_LBA,
            bootable: false,
        },
        Partition {
            number: 3,
            start_lba: 48 * MIB,
            sectors: 4 * MIB,
            kind: KIND_FAT32_LBA,
            bootable: false,
        },
        Partition {
            number: 4,
            start_lba: 52 * MIB,
            sectors: 24 * MIB,
            kind: KIND_EXTENDED_LBA,
            bootable: false,
        },
        Partition {
            number: 5,
            start_lba: 56 * MIB,
            sectors: 4 * MIB,
            kind: KIND_LINUX,
            bootable: false,
        },
        Partition {
            number: 6,
            start_lba: 64 * MIB,
            sectors: 4 * MIB,
            kind: KIND_LINUX,
            bootable: false,
        },
        Partition {
            number: 7,
            start_lba: 72 * MIB,
            sectors: 4 * MIB,
            kind: KIND_LINUX,
            bootable: false,
        },
    ];
    let mut f = std::fs::File::create(&path).unwrap();
    f.set_len(76 * MIB * 512).unwrap();
    PartitionTable {
        disk_id: 0x1234_5678,
        partitions: parts,
    }
    .write_to(&mut f)
    .unwrap();
    drop(f);
    // Slot A holds the running system: fill it so changes are visible.
    let mut card = Card::open(&path).unwrap();
    card.write_at(2, 0, &vec![0xaa; 4 << 20]).unwrap();
    card.write_at(5, 0, &vec![0x55; 4 << 20]).unwrap();
    drop(card);
    let off = (4 * MIB * 512).to_string();
    run(
        Command::new("mkfs.vfat")
            .args(["-F", "32", "-s", "1", "--offset", &(4 * MIB).to_string()])
            .arg(&path)
            .arg((40 * MIB / 2).to_string()),
        "dosfstools",
    );
    let txt = dir.join("autoboot.txt");
    std::fs::write(&txt, card_format::autoboot::text(Slot::A)).unwrap();
    run(
        Command::new("mcopy")
            .arg("-i")
            .arg(format!("{}@@{off}", path.display()))
            .arg(&txt)
            .arg("::/autoboot.txt"),
        "mtools",
    );
    path
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add((i >> 12) as u8))
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    card: PathBuf,
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

    fn opts(&self) -> (Vec<ed25519_dalek::VerifyingKey>, &'static str) {
        (vec![self.key.verifying_key()], "rpi4")
    }
}

fn apply_bytes(
    card_path: &Path,
    bundle: &[u8],
    trusted: &[ed25519_dalek::VerifyingKey],
    booted: Slot,
) -> Result<update::Applied, ApplyError> {
    let mut card = Card::open(card_path).unwrap();
    let opts = ApplyOptions {
        board: "rpi4",
        running_version: "0.1.0",
        booted,
        trusted,
        allow_downgrade: false,
    };
    apply(bundle, &mut card, &Tryboot, &opts)
}

fn read_part(card: &Path, part: u8, len: usize) -> Vec<u8> {
    let mut c = Card::open(card).unwrap();
    let mut buf = vec![0; len];
    c.read_at(part, 0, &mut buf).unwrap();
    buf
}

#[test]
fn apply_writes_only_the_inactive_slot_then_confirm_rewrites_autoboot() {
    let fx = fixture();
    let (trusted, _) = fx.opts();
    let before_a = (
        read_part(&fx.card, 2, 4 << 20),
        read_part(&fx.card, 5, 4 << 20),
    );
    let applied = apply_bytes(
        &fx.card,
        &fx.bundle("rpi4", "0.2.0", &fx.key),
        &trusted,
        Slot::A,
    )
    .unwrap();
    assert_eq!(applied.slot, Slot::B);
    assert_eq!(applied.reboot_arg, Some("0 tryboot"));
    assert_eq!(read_part(&fx.card, 3, fx.boot_b.len()), fx.boot_b);
    assert_eq!(read_part(&fx.card, 6, fx.rootfs.len()), fx.rootfs);
    assert_eq!(
        (
            read_part(&fx.card, 2, 4 << 20),
            read_part(&fx.card, 5, 4 << 20)
        ),
        before_a,
        "slot A untouched"
    );
    // A trial on the Pi is the one-shot reboot argument: autoboot.txt still says A.
    let mut card = Card::open(&fx.card).unwrap();
    assert_eq!(Tryboot.read(&mut card).unwrap(), BootState::default());
    // Booted into B and healthy: confirm.
    let state = Tryboot.read(&mut card).unwrap();
    assert!(state.on_trial(Slot::B));
    Tryboot.write(&mut card, &state.confirm(Slot::B)).unwrap();
    assert_eq!(Tryboot.read(&mut card).unwrap().active, Slot::B);
    drop(card);
    // An independent FAT reader agrees and the filesystem is clean.
    let off = format!("{}@@{}", fx.card.display(), 4 * MIB * 512);
    let out = Command::new("mtype")
        .args(["-i", &off, "::/autoboot.txt"])
        .output()
        .expect("mtools");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        card_format::autoboot::text(Slot::B)
    );
}

#[test]
fn bad_bundles_change_nothing() {
    let fx = fixture();
    let (trusted, _) = fx.opts();
    let good = fx.bundle("rpi4", "0.2.0", &fx.key);
    let other_key = SigningKey::from_bytes(&[8; 32]);
    let mut tampered = good.clone();
    let last = tampered.len() - 10;
    tampered[last] ^= 1;
    let mut trailing = good.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("tampered payload byte", tampered, "tampered"),
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        (
            "wrong board",
            fx.bundle("bbb", "0.2.0", &fx.key),
            "board 'bbb'",
        ),
        (
            "unknown key",
            fx.bundle("rpi4", "0.2.0", &other_key),
            "trusted key",
        ),
        ("trailing bytes", trailing, "after its last payload"),
        (
            "downgrade",
            fx.bundle("rpi4", "0.0.9", &fx.key),
            "older than the running",
        ),
    ];
    for (what, bytes, needle) in cases {
        let pristine = std::fs::read(&fx.card).unwrap();
        // Verified first (as the tools do for files): not one byte is written.
        let opts = ApplyOptions {
            board: "rpi4",
            running_version: "0.1.0",
            booted: Slot::A,
            trusted: &trusted,
            allow_downgrade: false,
        };
        let err = update::applier::verify(&bytes[..], &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{what}: {err}");
        assert!(
            std::fs::read(&fx.card).unwrap() == pristine,
            "{what}: card changed"
        );
        // Streamed straight into apply: the boot state and slot A stay as they were.
        let err = apply_bytes(&fx.card, &bytes, &trusted, Slot::A)
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{what}: {err}");
        let mut card = Card::open(&fx.card).unwrap();
        assert_eq!(
            Tryboot.read(&mut card).unwrap(),
            BootState::default(),
            "{what}"
        );
        assert_eq!(
            read_part(&fx.card, 5, 4 << 20),
            vec![0x55; 4 << 20],
            "{what}: slot A changed"
        );
    }
}

#[test]
fn refuses_to_update_while_on_trial() {
    let fx = fixture();
    let (trusted, _) = fx.opts();
    let err = apply_bytes(
        &fx.card,
        &fx.bundle("rpi4", "0.2.0", &fx.key),
        &trusted,
        Slot::B,
    )
    .unwrap_err();
    assert!(err.to_string().contains("on trial"), "{err}");
}

#[test]
fn power_cut_at_any_write_leaves_slot_a_booting() {
    let fx = fixture();
    let (trusted, _) = fx.opts();
    let bundle = fx.bundle("rpi4", "0.2.0", &fx.key);
    for budget in 0..12 {
        let mut card = Card::open(&fx.card).unwrap();
        card.cut_power_after(budget);
        let opts = ApplyOptions {
            board: "rpi4",
            running_version: "0.1.0",
            booted: Slot::A,
            trusted: &trusted,
            allow_downgrade: false,
        };
        let result = apply(&bundle[..], &mut card, &Tryboot, &opts);
        drop(card);
        let mut card = Card::open(&fx.card).unwrap();
        let state = Tryboot.read(&mut card).unwrap();
        assert_eq!(state.active, Slot::A, "budget {budget}");
        assert_eq!(read_part(&fx.card, 5, 4 << 20), vec![0x55; 4 << 20]);
        if result.is_ok() {
            break;
        }
    }
    // Confirm and revert are single-sector writes: cut before, it is the old state.
    let mut card = Card::open(&fx.card).unwrap();
    card.cut_power_after(0);
    let s = Tryboot.read(&mut card).unwrap();
    assert!(Tryboot.write(&mut card, &s.confirm(Slot::B)).is_err());
    assert_eq!(Tryboot.read(&mut card).unwrap().active, Slot::A);
}

#[test]
fn a_card_that_drops_writes_fails_the_read_back_and_keeps_booting_a() {
    let fx = fixture();
    let (trusted, _) = fx.opts();
    let bundle = fx.bundle("rpi4", "0.2.0", &fx.key);
    let mut card = Card::open(&fx.card).unwrap();
    card.drop_writes_after(2);
    let opts = ApplyOptions {
        board: "rpi4",
        running_version: "0.1.0",
        booted: Slot::A,
        trusted: &trusted,
        allow_downgrade: false,
    };
    let err = apply(&bundle[..], &mut card, &Tryboot, &opts).unwrap_err();
    assert!(
        matches!(err, ApplyError::Readback { .. }),
        "expected a read-back failure, got: {err}"
    );
    assert!(err.to_string().contains("does not read back"), "{err}");
    drop(card);
    let mut card = Card::open(&fx.card).unwrap();
    assert_eq!(Tryboot.read(&mut card).unwrap(), BootState::default());
}

/// A file verified in full and then changed before the write pass: the
/// write pass re-checks what it reads, so the change is caught.
#[test]
fn a_bundle_changed_after_verification_is_caught() {
    let fx = fixture();
    let (trusted, _) = fx.opts();
    let opts = ApplyOptions {
        board: "rpi4",
        running_version: "0.1.0",
        booted: Slot::A,
        trusted: &trusted,
        allow_downgrade: false,
    };
    let good = fx.bundle("rpi4", "0.2.0", &fx.key);
    let verified = update::verify(&good[..], &opts).unwrap();
    // A different, equally well signed bundle swapped in.
    let other = fx.bundle("rpi4", "0.3.0", &fx.key);
    let pristine = std::fs::read(&fx.card).unwrap();
    let mut card = Card::open(&fx.card).unwrap();
    let err =
        update::apply_verified(&other[..], &mut card, &Tryboot, &opts, &verified).unwrap_err();
    assert!(matches!(err, ApplyError::Changed), "{err}");
    drop(card);
    assert!(std::fs::read(&fx.card).unwrap() == pristine, "card changed");
    // The same manifest with a payload byte flipped after verification.
    let mut flipped = good.clone();
    let last = flipped.len() - 100;
    flipped[last] ^= 0x10;
    let mut card = Card::open(&fx.card).unwrap();
    let err =
        update::apply_verified(&flipped[..], &mut card, &Tryboot, &opts, &verified).unwrap_err();
    assert!(err.to_string().contains("tampered"), "{err}");
    assert_eq!(Tryboot.read(&mut card).unwrap(), BootState::default());
}

/// Chunks are checked on several threads; the error reported is still the
/// one a sequential reader meets first.
#[test]
fn the_earliest_bad_chunk_is_the_one_reported() {
    let fx = fixture();
    let (trusted, _) = fx.opts();
    let opts = ApplyOptions {
        board: "rpi4",
        running_version: "0.1.0",
        booted: Slot::A,
        trusted: &trusted,
        allow_downgrade: false,
    };
    let good = fx.bundle("rpi4", "0.2.0", &fx.key);
    let manifest = update::verify(&good[..], &opts).unwrap();
    // Payload bytes start after the header, manifest and one signature.
    let len = u32::from_le_bytes(good[12..16].try_into().unwrap()) as usize;
    let body = 16 + len + 1 + 96;
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
    for _ in 0..60 {
        let err = update::verify(&bad[..], &opts).unwrap_err().to_string();
        assert!(err.contains("'rootfs'") && err.contains("chunk 0"), "{err}");
    }
}
