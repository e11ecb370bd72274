//! `cargo xtask bench`: speed, memory and size figures, each against a
//! reference measured in the same run on the same data. Prints a table;
//! asserts nothing (tests check behaviour, not timings). README's
//! Benchmarks section says what each figure means.

mod apply;
mod boot;
mod burn;
mod console;
mod device;
mod fleet;
mod memory;
mod pi;
mod sizes;
mod squashfs;

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::host;

pub use memory::bench_apply_child;

#[derive(clap::Args, Clone, Debug)]
pub struct Bench {
    /// Board whose image the figures are taken on. A QEMU `virt` board
    /// (qemu-aarch64, qemu-armv7) adds its boot figures and an update on the
    /// booted device; rpi3 adds QEMU raspi3b's boot figures, U-Boot path
    /// against a direct kernel boot.
    #[arg(long, default_value = "qemu-aarch64")]
    pub board: String,
    /// Size of the synthetic payload for the applier's memory figure, in MiB.
    #[arg(long, default_value_t = 200)]
    pub payload_mib: u64,
}

/// One line of the table.
struct Row {
    what: String,
    ours: String,
    reference: String,
    /// Keel against the reference: > 1 is better.
    ratio: String,
    target: String,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn time<T>(f: impl FnOnce() -> Result<T>) -> Result<(Duration, T)> {
    let t = Instant::now();
    let v = f()?;
    Ok((t.elapsed(), v))
}

/// The median of three (or any odd number of) measurements.
fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs.get(runs.len() / 2).copied().unwrap_or_default()
}

impl Bench {
    pub fn run(self) -> Result<()> {
        host::ensure_tools(host::BENCH_TOOLS)?;
        let built = crate::build::Build::defaults(&self.board).run()?;
        let qemu = built.cfg.qemu.clone();
        if qemu.is_some() {
            host::ensure_tools(host::QEMU_TOOLS)?;
        }
        // Every build first, so their output comes before the figures.
        let boards = sizes::build_all(&built)?;
        let work = tempfile::tempdir()?;
        let work = work.path();

        let mut rows = vec![squashfs::row(&built.image, &built.cfg, work)?];
        rows.extend(apply::rows(&built.dir, work)?);
        rows.push(memory::row(self.payload_mib, work)?);
        rows.extend(burn::rows(&built.dir, work)?);
        rows.extend(fleet::rows(work)?);
        rows.extend(sizes::binary_rows(&built.cfg)?);
        rows.extend(sizes::bundle_rows(&boards)?);
        match qemu {
            Some(q) if q.pi_model.is_some() => rows.extend(pi::rows(&built, work)?),
            Some(_) => {
                let busybox = boot::busybox(built.cfg.arch)?;
                rows.extend(boot::rows(&built, &busybox, work)?);
                rows.extend(device::rows(&built, &busybox, work)?);
                rows.extend(fleet::device_rows(&built, &busybox, work)?);
            }
            None => {}
        }
        print(&self.board, &rows);
        Ok(())
    }
}

fn print(board: &str, rows: &[Row]) {
    let w = rows.iter().map(|r| r.what.len()).max().unwrap_or(10);
    println!(
        "\n{:<w$} {:>12} {:>18} {:>6}  target",
        format!("measure ({board})"),
        "keel",
        "reference",
        "ratio"
    );
    for r in rows {
        println!(
            "{:<w$} {:>12} {:>18} {:>6}  {}",
            r.what, r.ours, r.reference, r.ratio, r.target
        );
    }
    println!(
        "\nratio: keel against the reference, > 1 is better (sizes: plain bytes / bundle; memory: over idle).\n\
         per core: plain bytes / CPU time of all the applier's threads (user + system);\n\
         the floor: the same chunks inflated and hashed on one thread in this process.\n\
         QEMU rows: the CPU is emulated, so they are regression figures, not targets."
    );
}
