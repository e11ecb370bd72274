//! Host prerequisites: Debian packages and rust targets. Installed when we
//! can (root, rustup), otherwise the exact command to run is printed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits inside the workspace")
        .to_path_buf()
}

pub fn cargo_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// (command, Debian package providing it)
pub type Tool = (&'static str, &'static str);

pub const BUILD_TOOLS: &[Tool] = &[
    ("apt-get", "apt"),
    ("dpkg-deb", "dpkg"),
    ("mkfs.ext4", "e2fsprogs"),
    (
        "/usr/share/keyrings/debian-archive-keyring.gpg",
        "debian-archive-keyring",
    ),
];

pub const ARMV7_TOOLS: &[Tool] = &[
    ("arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf"),
    (
        "/usr/arm-linux-gnueabihf/lib/libc.a",
        "libc6-dev-armhf-cross",
    ),
];

/// The agent's TLS (ring) has C and assembly, compiled for the musl target
/// by Debian's cross gcc against its cross libc headers.
pub const AARCH64_TOOLS: &[Tool] = &[
    ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
    (
        "/usr/aarch64-linux-gnu/include/stdint.h",
        "libc6-dev-arm64-cross",
    ),
];

/// What the test suite's independent cross-checks need (the fast tier too).
pub const CHECK_TOOLS: &[Tool] = &[
    ("sfdisk", "fdisk"),
    ("cpio", "cpio"),
    ("mdir", "mtools"),
    ("fsck.vfat", "dosfstools"),
    ("unsquashfs", "squashfs-tools"),
    ("bmaptool", "bmap-tools"),
    ("mkimage", "u-boot-tools"),
    ("e2fsck", "e2fsprogs"),
    // A real HTTPS server, its certificates, and a real DNS server for the
    // agent's download tests.
    ("python3", "python3"),
    ("openssl", "openssl"),
    ("dnsmasq", "dnsmasq-base"),
    // The broker the fleet client and hub tests run against.
    ("mosquitto", "mosquitto"),
];

/// What `cargo xtask hub` runs.
pub const HUB_TOOLS: &[Tool] = &[("mosquitto", "mosquitto")];

/// What `cargo xtask bench` needs besides a build: the references it
/// measures against.
pub const BENCH_TOOLS: &[Tool] = &[
    ("mksquashfs", "squashfs-tools"),
    ("mosquitto", "mosquitto"),
    ("mosquitto_pub", "mosquitto-clients"),
    ("bmaptool", "bmap-tools"),
];

/// What booting the QEMU boards needs.
pub const QEMU_TOOLS: &[Tool] = &[
    ("qemu-system-aarch64", "qemu-system-arm"),
    ("qemu-system-arm", "qemu-system-arm"),
];

fn present(tool: &str) -> bool {
    if tool.starts_with('/') {
        return Path::new(tool).exists();
    }
    image_build::artifacts::which(tool).is_some()
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(tool).exists())
}

/// Installs missing Debian packages through apt-get when running as root;
/// otherwise fails naming the packages and the exact command.
pub fn ensure_tools(tools: &[Tool]) -> Result<()> {
    let mut missing: Vec<&str> = tools
        .iter()
        .filter(|(t, _)| !present(t))
        .map(|(_, p)| *p)
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let cmd = format!(
        "apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !is_root() {
        bail!(
            "missing host packages: {}. Install them with: sudo apt-get update && sudo {cmd}",
            missing.join(", ")
        );
    }
    eprintln!("keel: installing host packages: {}", missing.join(" "));
    let update = Command::new("apt-get")
        .args(["-q", "update"])
        .status()
        .context("running apt-get update")?;
    if !update.success() {
        eprintln!("keel: warning: apt-get update failed; trying the install anyway");
    }
    let status = Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    if !status.success() {
        bail!("`{cmd}` failed ({status}); run it by hand and retry");
    }
    let still: Vec<_> = tools
        .iter()
        .filter(|(t, _)| !present(t))
        .map(|(t, _)| *t)
        .collect();
    if !still.is_empty() {
        bail!("still missing after install: {}", still.join(", "));
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// Adds the rust target through rustup if it is not installed yet.
pub fn ensure_rust_target(target: &str) -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let installed = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.trim() == target),
        _ => bail!("rustup not found: install rustup, then run `rustup target add {target}`"),
    };
    if installed {
        return Ok(());
    }
    eprintln!("keel: installing rust target {target}");
    let status = Command::new("rustup")
        .args(["target", "add", target])
        .status()
        .context("running rustup")?;
    if !status.success() {
        bail!("`rustup target add {target}` failed; run it by hand and retry");
    }
    Ok(())
}
