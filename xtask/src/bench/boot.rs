//! Boot figures on a QEMU `virt` board: init's resident memory on the
//! booted device and the kernel's uptime when init reports ready, side by
//! side with busybox (Debian's busybox-static) booting the same kernel to a
//! shell, both started directly by QEMU (`-kernel`), in the same run. Also
//! fetches that busybox, which the on-device update figure uses too.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use image_build::board::{Arch, BoardConfig};
use image_build::fstree::{FsTree, Node, NodeKind};
use keel_contract::bootfiles::{INITRAMFS, KERNEL};
use keel_contract::partition::BOOT_A;

use super::console::{number_after, Console};
use super::Row;
use crate::build::Built;

const BOOT: Duration = Duration::from_secs(300);

/// Debian's busybox-static for `arch`. Pinned in a lock file in the
/// artifact cache, so later runs neither resolve nor download it again.
pub fn busybox(arch: Arch) -> Result<Vec<u8>> {
    let cache = image_build::artifacts::cache_dir();
    let mut apt = image_build::artifacts::Apt::new(&cache, arch.debian_arch())?;
    let lock_path = cache.join(format!("bench-busybox-{}.lock", arch.debian_arch()));
    let lock = image_build::lock::LockFile::load(&lock_path)?;
    let (fetched, new_lock, _) = image_build::artifacts::fetch_all(
        &mut apt,
        &["busybox-static".to_string()],
        lock.as_ref(),
        &lock_path,
        image_build::artifacts::LockMode::Update,
        &cache,
    )?;
    if lock.as_ref() != Some(&new_lock) {
        new_lock.save(&lock_path)?;
    }
    let root = &fetched
        .first()
        .context("busybox-static was not fetched")?
        .root;
    std::fs::read(root.join("bin/busybox")).context("busybox-static has no bin/busybox")
}

/// QEMU for `cfg`'s machine starting `kernel` and `initrd` directly.
fn direct(
    cfg: &BoardConfig,
    kernel: &Path,
    initrd: &Path,
    append: &str,
    card: Option<&Path>,
) -> Result<Console> {
    let q = cfg.qemu.as_ref().context("not a QEMU board")?;
    let mut cmd = crate::qemu::machine(q);
    cmd.args(["-serial", "stdio", "-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append]);
    if let Some(d) = card {
        let drive: OsString = format!(
            "if=none,id=card,format=raw,snapshot=on,file={}",
            d.display()
        )
        .into();
        cmd.arg("-drive").arg(drive);
        cmd.args(["-device", "virtio-blk-device,drive=card"]);
    }
    Console::spawn(cmd)
}

/// init's VmRSS and the uptime at `keel: ready`, next to busybox's uptime
/// at its shell prompt, for a board QEMU starts with U-Boot as its firmware.
pub fn rows(built: &Built, busybox: &[u8], work: &Path) -> Result<Vec<Row>> {
    let cfg = &built.cfg;
    let layout = image_build::layout::Layout::for_board(cfg);
    let (off, len) = layout.span(BOOT_A);
    let read = |name: &str| -> Result<Vec<u8>> {
        let f = std::fs::File::open(&built.image)?;
        Ok(image_build::fat::read_file(
            image_build::slice::PartitionSlice::new(f, off, len)?,
            name,
        )?)
    };
    let kernel = work.join(KERNEL);
    std::fs::write(&kernel, read(KERNEL)?)?;
    let initrd = work.join(INITRAMFS);
    std::fs::write(&initrd, read(INITRAMFS)?)?;

    let append = layout.cmdline(cfg, keel_contract::Slot::A);
    let mut c = direct(cfg, &kernel, &initrd, &append, Some(&built.image))?;
    c.expect("keel: ready", BOOT)?;
    let (line, _) = c.expect(" uptime", BOOT)?;
    let ready = number_after(&line, "ready at ").context("no `ready at` line from init")?;
    let (status, _) = c.command("cat /proc/1/status", BOOT)?;
    let rss = number_after(&status, "VmRSS:").context("no VmRSS in /proc/1/status")?;
    drop(c);

    let mut tree = FsTree::new();
    tree.file("bin/busybox", 0o755, busybox.to_vec());
    tree.file(
        "init",
        0o755,
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n\
         echo \"busybox: shell at $(/bin/busybox cut -d' ' -f1 /proc/uptime)\"\nexec /bin/busybox sh\n",
    );
    for d in ["proc", "dev"] {
        tree.dir(d);
    }
    tree.insert(
        "dev/console",
        Node {
            mode: 0o600,
            kind: NodeKind::CharDevice { major: 5, minor: 1 },
        },
    );
    let bb_initrd = work.join("busybox.cpio.gz");
    let mut out = std::fs::File::create(&bb_initrd)?;
    image_build::cpio::write_initramfs_gz(&mut out, &tree, 0)?;
    drop(out);
    let console = cfg.console.split(',').next().unwrap_or("ttyAMA0");
    let mut c = direct(
        cfg,
        &kernel,
        &bb_initrd,
        &format!("console={console}"),
        None,
    )?;
    let (line, _) = c.expect("busybox: shell at ", BOOT)?;
    let (rest, _) = c.expect("\n", BOOT)?;
    // Wait for the shell itself to answer, not just the line before it.
    c.send("echo shell-$((6*7))")?;
    c.expect("shell-42", BOOT)?;
    let bb = number_after(&format!("{line}{rest}"), "busybox: shell at ")
        .context("no busybox uptime")?;
    Ok(vec![
        Row {
            what: "init resident memory (VmRSS, booted)".into(),
            ours: format!("{:.2} MiB", rss / 1024.0),
            reference: "-".into(),
            ratio: "-".into(),
            target: "< 2 MiB".into(),
        },
        Row {
            what: "kernel start to ready (uptime, -kernel)".into(),
            ours: format!("{ready:.2} s"),
            reference: format!("{bb:.2} s busybox sh"),
            ratio: format!("{:.2}", bb / ready.max(1e-9)),
            target: "report: keel also loads modules, mounts root and /data".into(),
        },
    ])
}
