//! The host commands around update bundles: keys, verify, inspect, apply.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

fn ok(out: &std::process::Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn keys_new_writes_a_private_0600_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("release");
    ok(&xtask(&["keys", "new", name.to_str().unwrap()]));
    let key = dir.path().join("release.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(dir.path().join("release.pub").exists());
    let before = std::fs::read(&key).unwrap();
    let again = xtask(&["keys", "new", name.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

#[test]
fn verify_inspect_and_apply_on_an_image() {
    let dir = build("qemu-aarch64");
    let work = tempfile::tempdir().unwrap();
    let v2 = work.path().join("v2");
    {
        let _g = lock_builds();
        ok(&xtask(&[
            "build",
            "--board",
            "qemu-aarch64",
            "--version",
            "0.2.0",
            "--out",
            v2.to_str().unwrap(),
        ]));
    }
    let fw = v2.join("update.fw");
    let text = ok(&xtask(&["verify", fw.to_str().unwrap()]));
    assert!(
        text.contains("OK (version 0.2.0 for qemu-aarch64"),
        "{text}"
    );
    let text = ok(&xtask(&["inspect", fw.to_str().unwrap()]));
    assert!(
        text.contains("version     0.2.0") && text.contains("payload     rootfs"),
        "{text}"
    );

    // A tampered bundle fails verify and apply, and the card stays byte-identical.
    let bad = work.path().join("bad.fw");
    let mut bytes = std::fs::read(&fw).unwrap();
    let at = bytes.len() - 1000;
    bytes[at] ^= 0x01;
    std::fs::write(&bad, bytes).unwrap();
    let out = xtask(&["verify", bad.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("tampered"));
    let card = work.path().join("card.img");
    std::fs::copy(dir.join("sdcard.img"), &card).unwrap();
    let pristine = std::fs::read(&card).unwrap();
    let out = xtask(&[
        "apply",
        "--image",
        card.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "tampered bundle applied");
    assert!(
        std::fs::read(&card).unwrap() == pristine,
        "a rejected bundle changed the card"
    );

    // A good one lands in slot B, which boots next on trial.
    ok(&xtask(&[
        "apply",
        "--image",
        card.to_str().unwrap(),
        fw.to_str().unwrap(),
    ]));
    let text = ok(&xtask(&["inspect", card.to_str().unwrap()]));
    assert!(text.contains("slot a      version 0.1.0"), "{text}");
    assert!(text.contains("slot b      version 0.2.0"), "{text}");
    assert!(text.contains("active a trial b"), "{text}");
}
