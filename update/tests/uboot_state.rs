//! The U-Boot backend's two-copy boot state on a real image file: every
//! write is atomic at the state level, whatever instant power is cut.

use card_format::bootstate::{Record, COPIES, RECORD_SIZE as ENV_SIZE};
use card_format::mbr::{Partition, PartitionTable, KIND_FAT32_LBA};
use update::uboot::Uboot;
use update::{BootFlow, BootState, Card, Slot};

fn card() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("card.img");
    let mut f = std::fs::File::create(&path).unwrap();
    f.set_len(16 << 20).unwrap();
    let p = Partition {
        number: 1,
        start_lba: 8192,
        sectors: 8192,
        kind: KIND_FAT32_LBA,
        bootable: true,
    };
    // (the two records sit at LBA 2048 and 4096, inside the gap)
    PartitionTable {
        disk_id: 1,
        partitions: vec![p],
    }
    .write_to(&mut f)
    .unwrap();
    (dir, path)
}

#[test]
fn blank_card_reads_as_slot_a_and_writes_alternate_copies() {
    let (_d, path) = card();
    let mut c = Card::open(&path).unwrap();
    assert_eq!(
        Uboot { max_tries: 3 }.read(&mut c).unwrap(),
        BootState::default()
    );
    let flow = Uboot { max_tries: 3 };
    let trial = BootState::default().set_trial(Slot::A, Slot::B).unwrap();
    flow.write(&mut c, &trial).unwrap();
    flow.write(&mut c, &trial.confirm(Slot::B)).unwrap();
    flow.write(
        &mut c,
        &BootState {
            active: Slot::B,
            trial: Some(Slot::A),
            tries: 0,
        },
    )
    .unwrap();
    let mut seqs = Vec::new();
    for off in COPIES {
        let mut b = [0u8; ENV_SIZE];
        c.read_gap(off, &mut b).unwrap();
        seqs.push(Record::decode(&b).unwrap().seq);
    }
    assert_eq!(seqs, [3, 2], "writes alternate between the copies");
    assert_eq!(
        flow.read(&mut c).unwrap(),
        BootState {
            active: Slot::B,
            trial: Some(Slot::A),
            tries: 0
        }
    );
}

#[test]
fn a_torn_or_lost_write_leaves_the_previous_state() {
    let (_d, path) = card();
    let flow = Uboot { max_tries: 3 };
    let mut c = Card::open(&path).unwrap();
    let old = BootState {
        active: Slot::A,
        trial: None,
        tries: 0,
    };
    flow.write(&mut c, &old).unwrap();
    let new = old.set_trial(Slot::A, Slot::B).unwrap();
    // Power cut before the write reaches the card.
    c.cut_power_after(0);
    assert!(flow.write(&mut c, &new).is_err());
    drop(c);
    let mut c = Card::open(&path).unwrap();
    assert_eq!(flow.read(&mut c).unwrap(), old);
    // Power cut in the middle of the sector: every torn prefix of the new
    // copy over the old bytes of that copy still reads as the old state.
    let full = Record {
        seq: 2,
        active: Slot::A,
        trial: Some(Slot::B),
        tries: 0,
    }
    .encode();
    let mut before = [0u8; ENV_SIZE];
    c.read_gap(COPIES[1], &mut before).unwrap();
    for cut in (0..ENV_SIZE).step_by(7) {
        let mut torn = before;
        torn[..cut].copy_from_slice(&full[..cut]);
        c.write_gap(COPIES[1], &torn).unwrap();
        // Once every byte that differs has landed, the write is complete.
        let expect = if torn == full { new } else { old };
        assert_eq!(flow.read(&mut c).unwrap(), expect, "torn at byte {cut}");
    }
    c.write_gap(COPIES[1], &full).unwrap();
    assert_eq!(flow.read(&mut c).unwrap(), new);
}

#[test]
fn the_gap_guard_protects_mbr_and_partitions() {
    let (_d, path) = card();
    let mut c = Card::open(&path).unwrap();
    assert!(c.write_gap(0, &[0; 512]).is_err(), "MBR");
    assert!(c.write_gap(8191 * 512, &[0; 1024]).is_err(), "partition 1");
}
