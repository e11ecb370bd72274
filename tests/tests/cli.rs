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
    let slot_a = |card: &std::path::Path| {
        let layout = image_build::layout::Layout::for_board(&board_config("qemu-aarch64"));
        let bytes = std::fs::read(card).unwrap();
        [2u8, 5]
            .map(|n| {
                let (off, len) = layout.span(n);
                bytes[off as usize..(off + len) as usize].to_vec()
            })
            .concat()
    };
    let pristine = slot_a(&card);
    let out = xtask(&[
        "apply",
        "--image",
        card.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "tampered bundle applied");
    assert!(err.contains("tampered"), "{err}");
    // Each cause is said once ("X: X" was a defect).
    let first = err.find("does not match its signed hash").unwrap();
    assert!(
        err[first + 1..]
            .find("does not match its signed hash")
            .is_none(),
        "{err}"
    );
    assert!(
        slot_a(&card) == pristine,
        "a rejected bundle changed slot A"
    );
    let text = ok(&xtask(&["inspect", card.to_str().unwrap()]));
    assert!(text.contains("active a trial none"), "{text}");
    assert!(text.contains("slot b    not bootable"), "{text}");

    // A good one lands in slot B, which boots next on trial.
    ok(&xtask(&[
        "apply",
        "--image",
        card.to_str().unwrap(),
        fw.to_str().unwrap(),
    ]));
    let text = ok(&xtask(&["inspect", card.to_str().unwrap()]));
    assert!(
        text.contains("slot a      version 0.1.0, development image"),
        "{text}"
    );
    assert!(text.contains("slot b      version 0.2.0"), "{text}");
    assert!(text.contains("active a trial b"), "{text}");
    assert!(text.contains("slot b    complete (0.2.0@"), "{text}");
}

#[test]
fn release_builds_refuse_development_keys_and_bad_versions() {
    let out = xtask(&["build", "--board", "qemu-aarch64", "--release"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("needs a release key"),
        "{err}"
    );
    for bad in ["v2.0.0", "1.0 beta", "1..2"] {
        let out = xtask(&["build", "--board", "qemu-aarch64", "--version", bad]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("not a Keel version"),
            "{bad}: {err}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    ok(&xtask(&[
        "keys",
        "new",
        dir.path().join("k").to_str().unwrap(),
    ]));
    let public = dir.path().join("k.pub");
    let out = xtask(&[
        "build",
        "--board",
        "qemu-aarch64",
        "--release",
        "--key",
        public.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("public key file"),
        "{err}"
    );

    // With a release key: no conveniences, and inspect says so.
    let out_dir = dir.path().join("release");
    {
        let _g = lock_builds();
        ok(&xtask(&[
            "build",
            "--board",
            "qemu-aarch64",
            "--release",
            "--key",
            dir.path().join("k.key").to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ]));
    }
    let text = ok(&xtask(&[
        "inspect",
        out_dir.join("sdcard.img").to_str().unwrap(),
    ]));
    assert!(text.contains("release image"), "{text}");
}
