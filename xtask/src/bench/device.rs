//! An update on the booted device: the board's card, built for the bench
//! with busybox in its root filesystem (from a bench-only overlay; normal
//! images never carry it), applies the board's own update.fw from a second
//! virtio disk with `agent update`, and in the same boot busybox's `dd`
//! writes the same number of plain bytes to the same partitions of the
//! inactive slot. QEMU emulates the CPU, so these are regression figures,
//! not targets.
//!
//! The agent's peak resident memory is its VmHWM, read from
//! /proc/PID/status by a busybox shell that started the update in the
//! background (the console runs one command at a time, so a second console
//! line cannot read it while `agent update` runs). busybox `time -v` is no
//! use here: it takes Linux's ru_maxrss, already in KiB, for pages and
//! prints four times the figure.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use keel_contract::payload::{self, Destination};
use keel_contract::Slot;

use super::console::{number_after, Console};
use super::Row;
use crate::build::{Build, Built};
use crate::host;

const BOOT: Duration = Duration::from_secs(300);
const CMD: Duration = Duration::from_secs(600);

pub fn rows(built: &Built, busybox: &[u8], work: &Path) -> Result<Vec<Row>> {
    let root = host::workspace_root();
    let cfg = &built.cfg;
    let image = bench_image(built, busybox)?;
    // A copy: the update and dd write to it.
    let card = work.join("device-card.img");
    std::fs::copy(&image.image, &card).context("copying the bench card")?;
    // The bundle the board ships, as a disk: padded to whole sectors.
    let bundle_path = built.dir.join(image_build::outputs::BUNDLE);
    let mut bundle = std::fs::read(&bundle_path).context("reading update.fw")?;
    let header = bundle::Header::read(&mut &bundle[..])?;
    let manifest = bundle::Manifest::parse(header.manifest_text()?)?;
    let bundle_len = bundle.len() as u64;
    bundle.resize(bundle.len().div_ceil(512) * 512, 0);
    let disk = work.join("bundle.disk");
    std::fs::write(&disk, bundle)?;

    let bios = crate::qemu::bios_path(&root, cfg)?;
    let run = image_build::qemu::plan(
        cfg,
        &card,
        bios.as_deref(),
        std::slice::from_ref(&disk),
        false,
        &work.join("qemu"),
    )?;
    let mut c = Console::start(&run.program, &run.args)?;
    // A fresh card runs slot A: the update and dd go to slot B.
    c.expect("keel: ready slot=a", BOOT)?;
    // Which virtio disk is which: the bundle's is the smaller.
    let mut sectors = |d: &str| -> Result<u64> {
        let (text, _) = c.command(&format!("cat /sys/block/{d}/size"), CMD)?;
        text.lines()
            .find_map(|l| l.trim().parse().ok())
            .with_context(|| format!("no size for /dev/{d}:\n{text}"))
    };
    let (vda, vdb) = (sectors("vda")?, sectors("vdb")?);
    let (bundle_dev, card_dev) = if vda < vdb {
        ("vda", "vdb")
    } else {
        ("vdb", "vda")
    };

    let update = format!("/usr/bin/agent update /dev/{bundle_dev}");
    let (out, agent) = c.command(&format!("run {update}"), CMD)?;
    if !out.contains("keel: exit=0") {
        bail!("agent update on the device failed:\n{out}");
    }

    let mut plain = 0;
    let mut dd = Duration::ZERO;
    for p in &manifest.payloads {
        let Some(Destination::Partition(n)) = payload::destination(&p.name, Slot::B) else {
            continue;
        };
        let (out, took) = c.command(
            &format!(
                "run /usr/bin/busybox dd if=/dev/zero of=/dev/{card_dev}{n} bs=1M count={} iflag=count_bytes conv=fsync",
                p.size
            ),
            CMD,
        )?;
        if !out.contains("keel: exit=0") {
            bail!("busybox dd on the device failed:\n{out}");
        }
        plain += p.size;
        dd += took;
    }

    // Peak memory, in a second update (the sampling would slow the timed
    // one): busybox sh reads the agent's VmHWM, a high-water mark, every
    // 0.2 s until the process is gone, keeping the last reading.
    let (out, _) = c.command(
        &format!(
            "run /usr/bin/busybox sh -c '{update} & p=$!; h=; \
             while s=$(/usr/bin/busybox grep VmHWM /proc/$p/status 2>/dev/null); do h=$s; /usr/bin/busybox usleep 200000; done; \
             wait $p; echo \"bench: status $? $h\"'"
        ),
        CMD,
    )?;
    if !out.contains("bench: status 0 ") {
        bail!("agent update on the device failed (memory run):\n{out}");
    }
    let hwm = number_after(&out, "bench: status 0 VmHWM:")
        .with_context(|| format!("no VmHWM of the agent:\n{out}"))?;
    // The agent service, idle, for reference.
    let (pids, _) = c.command("run /usr/bin/busybox pidof agent", CMD)?;
    let pid = pids
        .lines()
        .find_map(|l| l.split_whitespace().next()?.parse::<u32>().ok())
        .with_context(|| format!("no agent service running:\n{pids}"))?;
    let (status, _) = c.command(&format!("cat /proc/{pid}/status"), CMD)?;
    let idle = number_after(&status, "VmHWM:")
        .with_context(|| format!("no VmHWM of the agent service:\n{status}"))?;
    drop(c);

    let mib = plain as f64 / 1048576.0;
    let rate = |d: Duration| mib / d.as_secs_f64().max(1e-9);
    Ok(vec![
        Row {
            what: format!(
                "QEMU: agent update, {mib:.0} MiB plain from {:.1} MiB",
                bundle_len as f64 / 1048576.0
            ),
            ours: format!("{:.1} s", agent.as_secs_f64()),
            reference: format!("{:.1} s busybox dd", dd.as_secs_f64()),
            ratio: format!("{:.2}", dd.as_secs_f64() / agent.as_secs_f64().max(1e-9)),
            target: format!(
                "report: emulated CPU, regression figure ({:.1} vs {:.1} MiB/s)",
                rate(agent),
                rate(dd)
            ),
        },
        Row {
            what: "QEMU: agent peak RSS during the update".into(),
            ours: format!("{:.1} MiB", hwm / 1024.0),
            reference: format!("{:.1} MiB service", idle / 1024.0),
            ratio: format!("+{:.1}", (hwm - idle).max(0.0) / 1024.0),
            target: "report: VmHWM, sampled every 0.2 s".into(),
        },
    ])
}

/// The board's image with busybox at /usr/bin/busybox, built from a copy
/// of rootfs-overlay/ into target/bench/<board>/ (up to date in seconds
/// when nothing changed).
pub(super) fn bench_image(built: &Built, busybox: &[u8]) -> Result<Built> {
    let root = host::workspace_root();
    let dir = root.join("target/bench").join(&built.cfg.name);
    let overlay = dir.join("overlay");
    if overlay.exists() {
        std::fs::remove_dir_all(&overlay)?;
    }
    copy_tree(&root.join("rootfs-overlay"), &overlay)?;
    let bin = overlay.join("usr/bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::write(bin.join("busybox"), busybox)?;
    std::fs::set_permissions(bin.join("busybox"), std::fs::Permissions::from_mode(0o755))?;
    Build {
        overlay: Some(overlay),
        out: Some(dir.join("image")),
        ..Build::defaults(&built.cfg.name)
    }
    .run()
    .context("building the bench image (busybox in the root filesystem)")
}

/// Copies a directory tree, symlinks as symlinks.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}
