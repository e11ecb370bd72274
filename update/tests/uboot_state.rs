//! The two-copy boot state on a real image file: every write is atomic at
//! the state level, whatever instant power is cut.

mod common;

use card_format::bootstate::{Record, SlotMark, COPIES, RECORD_SIZE, SEQ_MAX};
use update::uboot::Uboot;
use update::{BootFlow, BootState, Card, Slot};

fn card() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = common::make_card(dir.path());
    (dir, path)
}

const FLOW: Uboot = Uboot { max_tries: 3 };

fn fresh() -> BootState {
    BootState {
        slots: [SlotMark::complete("0.1.0@t"), SlotMark::default()],
        ..BootState::default()
    }
}

#[test]
fn a_fresh_card_reads_as_built_and_writes_alternate_copies() {
    let (_d, path) = card();
    let mut c = Card::open(&path).unwrap();
    assert_eq!(FLOW.read(&mut c).unwrap(), fresh());
    let marked = fresh().begin_write(Slot::A, Slot::B).unwrap();
    FLOW.write(&mut c, &marked).unwrap();
    let trial = marked.finish_write(Slot::B, "0.2.0@u").unwrap();
    FLOW.write(&mut c, &trial).unwrap();
    let confirmed = trial.confirm(Slot::B);
    FLOW.write(&mut c, &confirmed).unwrap();
    let mut seqs = Vec::new();
    for off in COPIES {
        let mut b = [0u8; RECORD_SIZE];
        c.read_gap(off, &mut b).unwrap();
        seqs.push(Record::decode(&b, 3).unwrap().seq);
    }
    assert_eq!(seqs, [3, 4], "writes alternate between the copies");
    assert_eq!(FLOW.read(&mut c).unwrap(), confirmed);
}

#[test]
fn a_torn_or_lost_write_leaves_the_previous_state() {
    let (_d, path) = card();
    let mut c = Card::open(&path).unwrap();
    let old = fresh();
    let new = old.begin_write(Slot::A, Slot::B).unwrap();
    // Power cut before the write reaches the card.
    c.cut_power_after(0);
    assert!(FLOW.write(&mut c, &new).is_err());
    drop(c);
    let mut c = Card::open(&path).unwrap();
    assert_eq!(FLOW.read(&mut c).unwrap(), old);
    // Power cut in the middle of the sector: every torn prefix of the new
    // copy over the old bytes of that copy still reads as the old state.
    let full = Record {
        seq: 2,
        active: Slot::A,
        trial: None,
        tries: 0,
        slots: new.slots.clone(),
    }
    .encode()
    .unwrap();
    let mut before = [0u8; RECORD_SIZE];
    c.read_gap(COPIES[1], &mut before).unwrap();
    for cut in (0..RECORD_SIZE).step_by(7) {
        let mut torn = before;
        torn[..cut].copy_from_slice(&full[..cut]);
        c.write_gap(COPIES[1], &torn).unwrap();
        // Once every byte that differs has landed, the write is complete.
        let expect = if torn == full { &new } else { &old };
        assert_eq!(&FLOW.read(&mut c).unwrap(), expect, "torn at byte {cut}");
    }
    c.write_gap(COPIES[1], &full).unwrap();
    assert_eq!(FLOW.read(&mut c).unwrap(), new);
}

/// At the largest sequence number Linux refuses to write (the record would
/// be one its own decoder and the script reject), and nothing changes.
#[test]
fn an_exhausted_sequence_is_refused_not_wrapped() {
    let (_d, path) = card();
    let mut c = Card::open(&path).unwrap();
    let last = Record {
        seq: SEQ_MAX,
        ..Record::initial("0.1.0@t")
    };
    c.write_gap(COPIES[0], &last.encode().unwrap()).unwrap();
    let before = std::fs::read(&path).unwrap();
    let next = fresh().begin_write(Slot::A, Slot::B).unwrap();
    let e = FLOW.write(&mut c, &next).unwrap_err().to_string();
    assert!(e.contains("sequence number"), "{e}");
    assert!(std::fs::read(&path).unwrap() == before);
    assert_eq!(FLOW.read(&mut c).unwrap(), fresh());
}

#[test]
fn the_gap_guard_protects_mbr_and_partitions() {
    let (_d, path) = card();
    let mut c = Card::open(&path).unwrap();
    assert!(c.write_gap(0, &[0; 512]).is_err(), "MBR");
    assert!(
        c.write_gap(4 * common::MIB * 512 - 512, &[0; 1024])
            .is_err(),
        "partition 1"
    );
}
