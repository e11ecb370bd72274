//! Boots the QEMU boards through Debian's U-Boot, one machine per board
//! serving several checks: ready line, read-only root, /data across reboot.

mod common;

use std::time::Duration;

use common::*;

const BOOT: Duration = Duration::from_secs(180);
const CMD: Duration = Duration::from_secs(30);

fn boot_and_check(board: &str) {
    let dir = build(board);
    // Boot a copy: the test writes to /data and must not touch the build output.
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("card.img");
    std::fs::copy(dir.join("sdcard.img"), &img).unwrap();
    let version = env!("CARGO_PKG_VERSION");

    let mut c = Console::boot(board, &img);
    c.expect("keel: booting slot a from partition 2", BOOT);
    let boot_log = c.expect(&format!("keel: ready slot=a version={version}\n"), BOOT);
    assert_eq!(boot_log.matches("keel: ready").count(), 1);

    let mounts = c.command("mounts", CMD);
    assert!(mounts.contains("keel: ok"), "{mounts}");
    let root_line = mounts
        .lines()
        .find(|l| l.contains(" / squashfs "))
        .unwrap_or_else(|| panic!("/ is not squashfs:\n{mounts}"));
    assert!(
        root_line.contains(" ro"),
        "/ must be read-only: {root_line}"
    );
    assert!(
        mounts.lines().any(|l| l.contains(" /data ext4 rw")),
        "/data must be writable ext4:\n{mounts}"
    );
    for m in [
        " /proc proc",
        " /sys sysfs",
        " /dev devtmpfs",
        " /run tmpfs",
        " /tmp tmpfs",
    ] {
        assert!(mounts.contains(m), "missing mount{m}:\n{mounts}");
    }
    let ro = c.command("write /keel-test hello", CMD);
    assert!(
        ro.contains("keel: error") && ro.to_lowercase().contains("read-only"),
        "writing / must fail: {ro}"
    );
    let w = c.command("write /data/persist survives-reboot", CMD);
    assert!(w.contains("keel: ok"), "{w}");

    // A clean reboot goes back through U-Boot and finds the file.
    c.send("reboot");
    c.expect("keel: unmounted /data cleanly", CMD);
    c.expect("keel: booting slot a from partition 2", BOOT);
    c.expect(&format!("keel: ready slot=a version={version}"), BOOT);
    let cat = c.command("cat /data/persist", CMD);
    assert!(
        cat.contains("survives-reboot") && cat.contains("keel: ok"),
        "{cat}"
    );
    c.send("poweroff");
    c.wait_exit(CMD);
}

#[test]
fn qemu_aarch64_boots_through_uboot() {
    boot_and_check("qemu-aarch64");
}

#[test]
fn qemu_armv7_boots_through_uboot() {
    boot_and_check("qemu-armv7");
}
