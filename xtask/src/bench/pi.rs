//! Boot figures for a Raspberry Pi card on QEMU (raspi3b for rpi3): booted
//! the way `cargo xtask qemu` boots it — U-Boot from config.txt, Keel's
//! boot script, the slot's kernel — next to QEMU starting the same slot's
//! kernel, initramfs and device tree directly, on the same card, in the
//! same run. Both as the kernel's uptime at `keel: ready` and as the wall
//! clock from QEMU's start (power-on). QEMU emulates the CPU: these are
//! regression figures.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use keel_contract::Slot;

use super::console::{number_after, Console};
use super::Row;
use crate::build::Built;

const BOOT: Duration = Duration::from_secs(300);

struct Boot {
    /// QEMU start to `keel: ready` on the host's clock.
    wall: Duration,
    /// The kernel's uptime when init printed ready.
    ready: f64,
    /// init's VmRSS in KiB.
    rss: f64,
}

pub fn rows(built: &Built, work: &Path) -> Result<Vec<Row>> {
    let cfg = &built.cfg;
    let machine = cfg.qemu.as_ref().map_or("QEMU", |q| q.machine.as_str());
    // A copy, since QEMU's SD card wants it padded; both boots discard
    // their writes, so each starts from the same card.
    let card = work.join("pi-card.img");
    std::fs::copy(&built.image, &card).context("copying the card")?;
    let uboot = image_build::qemu::plan(cfg, &card, None, &[], true, &work.join("pi-firmware"))?;
    let uboot = boot(&uboot)?;
    let direct =
        image_build::qemu::direct_kernel(cfg, &card, Slot::A, true, &work.join("pi-slot"))?;
    let direct = boot(&direct)?;
    let secs = |d: Duration| d.as_secs_f64();
    Ok(vec![
        Row {
            what: format!("{machine}: init resident memory (VmRSS)"),
            ours: format!("{:.2} MiB", uboot.rss / 1024.0),
            reference: format!("{:.2} MiB -kernel", direct.rss / 1024.0),
            ratio: "-".into(),
            target: "< 2 MiB".into(),
        },
        Row {
            what: format!("{machine}: kernel start to ready (uptime)"),
            ours: format!("{:.2} s", uboot.ready),
            reference: format!("{:.2} s -kernel", direct.ready),
            ratio: format!("{:.2}", direct.ready / uboot.ready.max(1e-9)),
            target: "report: emulated CPU, regression figure".into(),
        },
        Row {
            what: format!("{machine}: power-on to ready (wall, U-Boot incl.)"),
            ours: format!("{:.2} s", secs(uboot.wall)),
            reference: format!("{:.2} s -kernel", secs(direct.wall)),
            ratio: format!("{:.2}", secs(direct.wall) / secs(uboot.wall).max(1e-9)),
            target: "report: emulated CPU, regression figure".into(),
        },
    ])
}

fn boot(run: &image_build::qemu::QemuRun) -> Result<Boot> {
    let mut c = Console::start(&run.program, &run.args)?;
    let (_, at) = c.expect("keel: ready", BOOT)?;
    let wall = at.duration_since(c.started());
    let (line, _) = c.expect(" uptime", BOOT)?;
    let ready = number_after(&line, "ready at ").context("no `ready at` line from init")?;
    let (status, _) = c.command("cat /proc/1/status", BOOT)?;
    let rss = number_after(&status, "VmRSS:").context("no VmRSS in /proc/1/status")?;
    Ok(Boot { wall, ready, rss })
}
