//! Over-the-air updates end to end under QEMU, through Debian's U-Boot: the
//! device downloads a bundle over HTTPS (from a real server on the host's
//! loopback, through QEMU's user network) or reads it from a second disk,
//! boots the new slot on trial and confirms it; a version whose health check
//! never passes rolls back by itself; tampered or cut-off bundles are
//! rejected.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const BOOT: Duration = Duration::from_secs(240);
const CMD: Duration = Duration::from_secs(300);

/// A bundle as a raw disk: padded to whole sectors, as a block device is.
fn bundle_disk(bundle: &Path, dir: &Path, name: &str, tamper: bool) -> PathBuf {
    let mut bytes = std::fs::read(bundle).unwrap();
    if tamper {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
    }
    bytes.resize(bytes.len().div_ceil(512) * 512, 0);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The block device holding the bundle: the smaller of vda and vdb.
fn bundle_device(c: &mut Console) -> String {
    let size = |c: &mut Console, d: &str| -> u64 {
        let out = c.command(&format!("cat /sys/block/{d}/size"), CMD);
        out.lines()
            .find_map(|l| l.trim().parse().ok())
            .unwrap_or(u64::MAX)
    };
    let (a, b) = (size(c, "vda"), size(c, "vdb"));
    if a < b {
        "/dev/vda".into()
    } else {
        "/dev/vdb".into()
    }
}

fn update_cycle(board: &str) {
    let v1_dir = build(board);
    let work = tempfile::tempdir().unwrap();
    let (v2, v3) = (work.path().join("v2"), work.path().join("v3"));
    build_version(board, "0.2.0", &v2, None);
    let overlay3 = unhealthy_overlay(work.path());
    build_version(board, "0.3.0", &v3, Some(&overlay3));

    let card = work.path().join("card.img");
    std::fs::copy(v1_dir.join("sdcard.img"), &card).unwrap();
    let v1 = env!("CARGO_PKG_VERSION");

    // The update server: v2, a tampered v2, and (/cut) v2 hung up halfway.
    let www = work.path().join("www");
    std::fs::create_dir_all(www.join("files")).unwrap();
    std::fs::copy(v2.join("update.fw"), www.join("v2.fw")).unwrap();
    std::fs::copy(v2.join("update.fw"), www.join("files/payload.bin")).unwrap();
    let mut tampered = std::fs::read(v2.join("update.fw")).unwrap();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x10;
    std::fs::write(www.join("tampered.fw"), tampered).unwrap();
    let server = HttpsServer::start(&www, &work.path().join("certs"), "IP:10.0.2.2");
    let url = |path: &str| format!("https://10.0.2.2:{}/{path}", server.port);

    // 1. Version 1 on slot A downloads version 2 and reboots into it.
    let mut c = Console::boot(board, &card);
    c.expect(&format!("keel: ready slot=a version={v1}"), BOOT);
    assert!(c
        .command("write /data/precious kept-across-updates", CMD)
        .contains("keel: ok"));
    // The server's CA is private: without --ca the download is refused.
    let out = c.command(&format!("run /usr/bin/agent update {}", url("v2.fw")), CMD);
    assert!(
        out.contains("certificate") && out.contains("--ca") && !out.contains("keel: exit=0"),
        "{out}"
    );
    c.put_file(&server.ca, "/data/ca.pem", CMD);
    let out = c.command(
        &format!(
            "run /usr/bin/agent update {} --ca /data/ca.pem",
            url("v2.fw")
        ),
        CMD,
    );
    reboot_into_v2_confirmed(&mut c, &out, BOOT, CMD);
    c.send("poweroff");
    c.wait_exit(CMD);

    // 2. Tampered bundles (from a disk, from the server) and a download cut
    // off halfway are rejected, and nothing that boots changes.
    let bad = bundle_disk(&v2.join("update.fw"), work.path(), "bad.disk", true);
    let mut c = Console::boot_with(board, &card, &[&bad]);
    c.expect("keel: ready slot=b version=0.2.0", BOOT);
    let dev = bundle_device(&mut c);
    let out = c.command(&format!("run /usr/bin/agent update {dev}"), CMD);
    assert!(
        out.contains("update rejected") && out.contains("tampered"),
        "{out}"
    );
    assert!(!out.contains("keel: exit=0"), "{out}");
    let https = |c: &mut Console, path: &str| {
        c.command(
            &format!("run /usr/bin/agent update {} --ca /data/ca.pem", url(path)),
            CMD,
        )
    };
    let out = https(&mut c, "tampered.fw");
    assert!(
        out.contains("update rejected")
            && out.contains("tampered")
            && !out.contains("keel: exit=0"),
        "{out}"
    );
    let out = https(&mut c, "cut");
    assert!(
        out.contains("update rejected") && out.contains("cut off") && !out.contains("keel: exit=0"),
        "{out}"
    );
    let status = c.command("run /usr/bin/agent status", CMD);
    assert!(
        status.contains("active_slot=b") && status.contains("trial_slot=none"),
        "{status}"
    );
    c.send("poweroff");
    c.wait_exit(CMD);

    // 3. Version 3 never becomes healthy: after the trial boots the device is
    // back on version 2 by itself.
    let disk = bundle_disk(&v3.join("update.fw"), work.path(), "v3.disk", false);
    let mut c = Console::boot_with(board, &card, &[&disk]);
    c.expect("keel: ready slot=b version=0.2.0", BOOT);
    let dev = bundle_device(&mut c);
    let out = c.command(&format!("run /usr/bin/agent update {dev}"), CMD);
    reboot_into_unhealthy_v3_and_back(&mut c, &out, BOOT, CMD);
    c.send("poweroff");
    c.wait_exit(CMD);
}

#[test]
fn qemu_aarch64_updates_and_rolls_back() {
    update_cycle("qemu-aarch64");
}

#[test]
fn qemu_armv7_updates_and_rolls_back() {
    update_cycle("qemu-armv7");
}

/// Reverts that would brick the device are refused, and a slot whose files
/// cannot be loaded is passed over by the boot script.
#[test]
fn qemu_aarch64_refuses_unsafe_reverts_and_falls_back_from_a_broken_slot() {
    let board = "qemu-aarch64";
    let v1_dir = build(board);
    let work = tempfile::tempdir().unwrap();
    let v2 = work.path().join("v2");
    build_version(board, "0.2.0", &v2, None);
    let card = work.path().join("card.img");
    std::fs::copy(v1_dir.join("sdcard.img"), &card).unwrap();
    let v1 = env!("CARGO_PKG_VERSION");

    // A fresh card: slot B was never written, so there is nothing to revert to.
    let mut c = Console::boot(board, &card);
    c.expect(&format!("keel: ready slot=a version={v1}"), BOOT);
    let out = c.command("run /usr/bin/agent revert", CMD);
    assert!(
        out.contains("slot b holds no complete image") && !out.contains("keel: exit=0"),
        "{out}"
    );
    c.send("reboot");
    c.expect(&format!("keel: ready slot=a version={v1}"), BOOT);
    c.send("poweroff");
    c.wait_exit(CMD);

    // A stream cut halfway leaves slot B partly written: still nothing to
    // revert to, and the card boots slot A.
    let mut half = std::fs::read(v2.join("update.fw")).unwrap();
    half.truncate(half.len() / 2);
    let half_path = work.path().join("half.fw");
    std::fs::write(&half_path, &half).unwrap();
    let disk = bundle_disk(&half_path, work.path(), "half.disk", false);
    let mut c = Console::boot_with(board, &card, &[&disk]);
    c.expect(&format!("keel: ready slot=a version={v1}"), BOOT);
    let dev = bundle_device(&mut c);
    let out = c.command(&format!("run /usr/bin/agent update {dev}"), CMD);
    assert!(
        out.contains("update rejected") && !out.contains("keel: exit=0"),
        "{out}"
    );
    let out = c.command("run /usr/bin/agent revert", CMD);
    assert!(
        out.contains("holds no complete image") && !out.contains("keel: exit=0"),
        "{out}"
    );
    c.send("reboot");
    c.expect(&format!("keel: ready slot=a version={v1}"), BOOT);
    c.send("poweroff");
    c.wait_exit(CMD);

    // Version 2 installed on slot B, then its kernel removed from the card:
    // the trial boot cannot load it and the script boots slot A instead.
    let disk = bundle_disk(&v2.join("update.fw"), work.path(), "v2.disk", false);
    let mut c = Console::boot_with(board, &card, &[&disk]);
    c.expect(&format!("keel: ready slot=a version={v1}"), BOOT);
    let dev = bundle_device(&mut c);
    let out = c.command(&format!("run /usr/bin/agent update {dev}"), CMD);
    assert!(out.contains("slot b now holds version 0.2.0"), "{out}");
    c.send("poweroff");
    c.wait_exit(CMD);
    remove_from_boot_partition(board, &card, keel_contract::Slot::B, "vmlinuz");
    let mut c = Console::boot(board, &card);
    c.expect("keel: trial 1/3 of slot b", BOOT);
    c.expect("keel: slot b cannot be loaded", BOOT);
    c.expect("keel: falling back to slot a", BOOT);
    c.expect(&format!("keel: ready slot=a version={v1}"), BOOT);
    c.send("poweroff");
    c.wait_exit(CMD);
}

/// Deletes a file from a slot's boot partition with mtools, an independent
/// FAT writer.
fn remove_from_boot_partition(board: &str, card: &Path, slot: keel_contract::Slot, name: &str) {
    let layout = image_build::layout::Layout::for_board(&board_config(board));
    let (offset, _) = layout.span(slot.boot_partition());
    let out = std::process::Command::new("mdel")
        .arg("-i")
        .arg(format!("{}@@{offset}", card.display()))
        .arg(format!("::/{name}"))
        .output()
        .expect("mtools");
    assert!(
        out.status.success(),
        "mdel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
