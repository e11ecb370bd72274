//! Boot figures for `cargo xtask bench`: init's resident memory on the
//! booted device and the kernel's uptime when init reports ready, side by
//! side with busybox (Debian's busybox-static) booting the same kernel to a
//! shell, both started directly by QEMU (`-kernel`), in the same run.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use image_build::board::BoardConfig;
use image_build::fstree::{FsTree, Node, NodeKind};

/// Runs QEMU with a kernel and initramfs, feeds `input` once `wait_for`
/// appears, and returns the console text once `until` appears.
fn qemu_console(
    cfg: &BoardConfig,
    kernel: &Path,
    initrd: &Path,
    append: &str,
    disk: Option<&Path>,
    steps: &[(&str, &str)],
    until: &str,
) -> Result<String> {
    let q = cfg.qemu.as_ref().context("not a QEMU board")?;
    let mut cmd = crate::qemu::machine(q);
    cmd.args(["-serial", "stdio", "-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", append]);
    if let Some(d) = disk {
        cmd.arg("-drive").arg(format!(
            "if=none,id=card,format=raw,snapshot=on,file={}",
            d.display()
        ));
        cmd.args(["-device", "virtio-blk-device,drive=card"]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().context("qemu stdin")?;
    let mut stdout = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut step = 0;
    while !seen.contains(until) {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("QEMU boot did not reach {until:?}; console:\n{seen}");
        }
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push_str(&String::from_utf8_lossy(&chunk).replace('\r', ""));
        }
        if let Some((wait, input)) = steps.get(step) {
            if seen.contains(wait) {
                stdin.write_all(input.as_bytes())?;
                stdin.flush()?;
                step += 1;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(seen)
}

fn number_after<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let rest = &text[text.find(key)? + key.len()..];
    rest.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|s| !s.is_empty())
}

/// (init VmRSS in kB, uptime at `keel: ready`) and (busybox uptime at its shell).
pub fn figures(
    cfg: &BoardConfig,
    card: &Path,
    kernel: &Path,
    keel_initrd: &Path,
    work: &Path,
) -> Result<(f64, f64, f64)> {
    let layout = image_build::layout::Layout::for_board(cfg);
    let append = layout.cmdline(cfg, keel_contract::Slot::A);
    let text = qemu_console(
        cfg,
        kernel,
        keel_initrd,
        &append,
        Some(card),
        &[
            ("keel: ready", "cat /proc/1/status\n"),
            ("VmRSS", "poweroff\n"),
        ],
        "keel: unmounted /data",
    )?;
    let ready = number_after(&text, "ready at ")
        .context("no `ready at` line from init")?
        .parse()?;
    let rss = number_after(&text, "VmRSS:")
        .context("no VmRSS from /proc/1/status")?
        .parse()?;

    // busybox-static for the same architecture, out of Debian like the kernel.
    let cache = image_build::artifacts::cache_dir();
    let mut apt = image_build::artifacts::Apt::new(&cache, cfg.arch.debian_arch())?;
    let lock_path = work.join("busybox.lock");
    let (fetched, _, _) = image_build::artifacts::fetch_all(
        &mut apt,
        &["busybox-static".to_string()],
        None,
        &lock_path,
        image_build::artifacts::LockMode::Update,
        &cache,
    )?;
    let busybox = std::fs::read(fetched[0].root.join("bin/busybox"))
        .context("busybox-static has no bin/busybox")?;
    let mut tree = FsTree::new();
    tree.file("bin/busybox", 0o755, busybox);
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
    // Wait for the shell itself to answer, not just the line before it.
    let text = qemu_console(
        cfg,
        kernel,
        &bb_initrd,
        &format!("console={console}"),
        None,
        &[("busybox: shell at", "echo shell-$((6*7))\n")],
        "shell-42",
    )?;
    let bb = number_after(&text, "busybox: shell at ")
        .context("no busybox uptime")?
        .parse()?;
    Ok((rss, ready, bb))
}
