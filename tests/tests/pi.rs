//! The Raspberry Pi 3 card end to end on QEMU's raspi3b, started the way the
//! Pi firmware starts it (`cargo xtask qemu --board rpi3`: the kernel= and
//! device tree its config.txt names, both from the card): Debian's U-Boot
//! runs Keel's boot script, which boots the slot. The whole update cycle with
//! the kernel the card ships — trial, confirm, rollback of a version that
//! never becomes healthy, a tampered bundle, a power cut during a trial boot.
//!
//! raspi3b has only the SD card: the bundles are put into the card's data
//! partition on the host (debugfs) before the first boot.

mod common;

use std::time::Duration;

use common::*;

const BOOT: Duration = Duration::from_secs(300);
const CMD: Duration = Duration::from_secs(300);
const BOARD: &str = "rpi3";

#[test]
fn rpi3_updates_confirms_and_rolls_back_on_raspi3b() {
    let v1_dir = build(BOARD);
    let work = tempfile::tempdir().unwrap();
    let (v2, v3) = (work.path().join("v2"), work.path().join("v3"));
    build_version(BOARD, "0.2.0", &v2, None);
    let overlay3 = unhealthy_overlay(work.path());
    build_version(BOARD, "0.3.0", &v3, Some(&overlay3));

    let card = work.path().join("card.img");
    std::fs::copy(v1_dir.join("sdcard.img"), &card).unwrap();
    let mut tampered = std::fs::read(v2.join("update.fw")).unwrap();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x10;
    let bad = work.path().join("tampered.fw");
    std::fs::write(&bad, tampered).unwrap();
    put_in_data(
        &card,
        &[
            (&v2.join("update.fw"), "v2.fw"),
            (&v3.join("update.fw"), "v3.fw"),
            (&bad, "tampered.fw"),
        ],
    );
    let v1 = env!("CARGO_PKG_VERSION");

    // 1. Version 1 on slot A installs version 2, which boots on trial and
    // confirms itself.
    let mut c = Console::boot(BOARD, &card);
    c.expect(&format!("keel: ready slot=a version={v1}"), BOOT);
    assert!(c
        .command("write /data/precious kept-across-updates", CMD)
        .contains("keel: ok"));
    let out = c.command("run /usr/bin/agent update /data/v2.fw", CMD);
    reboot_into_v2_confirmed(&mut c, &out, BOOT, CMD);

    // 2. A tampered bundle is rejected; nothing that boots changes.
    let out = c.command("run /usr/bin/agent update /data/tampered.fw", CMD);
    assert!(
        out.contains("update rejected")
            && out.contains("tampered")
            && !out.contains("keel: exit=0"),
        "{out}"
    );
    let status = c.command("run /usr/bin/agent status", CMD);
    assert!(
        status.contains("active_slot=b") && status.contains("trial_slot=none"),
        "{status}"
    );

    // 3. Version 3 never becomes healthy: after its trial boots the device is
    // back on version 2 by itself.
    let out = c.command("run /usr/bin/agent update /data/v3.fw", CMD);
    reboot_into_unhealthy_v3_and_back(&mut c, &out, BOOT, CMD);

    // 4. A power cut during a trial boot: the card still boots.
    let out = c.command("run /usr/bin/agent update /data/v3.fw", CMD);
    assert!(out.contains("slot a now holds version 0.3.0"), "{out}");
    c.send("reboot");
    c.expect("keel: trial 1/3 of slot a", BOOT);
    c.expect("Starting kernel", BOOT);
    drop(c); // QEMU killed: power cut while the trial slot's kernel starts
    let mut c = Console::boot(BOARD, &card);
    c.expect("keel: ready slot=", BOOT);
    c.send("poweroff");
    c.wait_exit(CMD);
}
