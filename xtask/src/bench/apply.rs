//! Applying update.fw on the host, from a file and streamed from stdin,
//! against `dd` writing the same bytes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{time, Row};

/// Apply throughput against dd writing the same bytes.
pub fn rows(dir: &Path, work: &Path) -> Result<Vec<Row>> {
    let card = work.join("card.img");
    std::fs::copy(dir.join("sdcard.img"), &card)?;
    let exe = std::env::current_exe()?;
    let bundle = dir.join("update.fw");
    let run = |streamed: bool| -> Result<Duration> {
        let mut cmd = Command::new(&exe);
        cmd.args(["apply", "--allow-downgrade", "--image"])
            .arg(&card);
        if streamed {
            cmd.arg("-")
                .stdin(std::fs::File::open(&bundle).context("opening update.fw")?);
        } else {
            cmd.arg(&bundle);
        }
        let (took, out) = time(|| Ok(cmd.output()?))?;
        if !out.status.success() {
            bail!("apply failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(took)
    };
    // Page-cache writeback makes single runs noisy: median of three.
    let median = |f: &dyn Fn() -> Result<Duration>| -> Result<Duration> {
        let mut runs = [f()?, f()?, f()?];
        runs.sort();
        Ok(runs[1])
    };
    let ours = median(&|| run(false))?;
    let streamed = median(&|| run(true))?;
    let m = bundle::Manifest::parse(&manifest_text(&bundle)?)?;
    let written: u64 = m
        .payloads
        .iter()
        .filter(|p| {
            matches!(
                keel_contract::payload::destination(&p.name, keel_contract::Slot::B),
                Some(keel_contract::payload::Destination::Partition(_))
            )
        })
        .map(|p| p.size)
        .sum();
    let src = work.join("plain.bin");
    std::fs::write(&src, vec![0x5au8; written as usize])?;
    let dst = work.join("dd.img");
    let dd = median(&|| {
        let _ = std::fs::remove_file(&dst);
        let (took, ()) = time(|| {
            let st = Command::new("dd")
                .arg(format!("if={}", src.display()))
                .arg(format!("of={}", dst.display()))
                .args(["bs=1M", "conv=fsync", "status=none"])
                .status()?;
            if !st.success() {
                bail!("dd failed");
            }
            Ok(())
        })?;
        Ok(took)
    })?;
    let rate = |d: Duration| written as f64 / 1048576.0 / d.as_secs_f64().max(1e-9);
    let mib = written as f64 / 1048576.0;
    let rows = vec![
        Row {
            what: format!("apply update.fw, verify + write ({mib:.0} MiB)"),
            ours: format!("{:.0} MiB/s", rate(ours)),
            reference: format!("{:.0} MiB/s dd", rate(dd)),
            ratio: format!("{:.2}", rate(ours) / rate(dd)),
            target: ">= 0.9 of dd; file: verify pass first".into(),
        },
        Row {
            what: format!("apply update.fw from stdin ({mib:.0} MiB)"),
            ours: format!("{:.0} MiB/s", rate(streamed)),
            reference: format!("{:.0} MiB/s dd", rate(dd)),
            ratio: format!("{:.2}", rate(streamed) / rate(dd)),
            target: ">= 0.9 of dd; stream: one pass".into(),
        },
    ];
    let _ = std::fs::remove_file(&src);
    Ok(rows)
}

fn manifest_text(bundle: &Path) -> Result<String> {
    let mut f = std::io::BufReader::new(std::fs::File::open(bundle)?);
    Ok(bundle::Header::read(&mut f)?.manifest_text()?.to_string())
}
