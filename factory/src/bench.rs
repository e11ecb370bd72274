//! Burn throughput next to the tools a factory would otherwise use,
//! measured in the same run on the same image to the same kind of target
//! (a file beside the others): `dd bs=4M conv=fsync` (every byte) and
//! `bmaptool copy` (mapped blocks, no read-back). Keel's figure includes
//! reading every written block back from the disk and hashing it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::copy::{self, OpenMode};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{tool} is needed for the burn benchmark: apt-get install {package}")]
    Missing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
    #[error(transparent)]
    Copy(#[from] copy::CopyError),
}

/// One row: what ran, how long it took, the image's size over that time.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub name: String,
    pub time: Duration,
    /// Image bytes per second, MiB (what bmaptool reports as its speed).
    pub mib_per_sec: f64,
    pub note: String,
}

fn run(what: &str, cmd: &mut Command) -> Result<Duration, BenchError> {
    let start = Instant::now();
    let out = cmd.output().map_err(|e| BenchError::Failed {
        what: what.to_string(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(BenchError::Failed {
            what: what.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(start.elapsed())
}

fn fresh(path: &Path) -> PathBuf {
    let _ = std::fs::remove_file(path);
    path.to_path_buf()
}

/// Burns `image` (with its block map `bmap`) into files under `work` with
/// dd, bmaptool and Keel, and returns one [`Figure`] each (Keel's twice:
/// whole, and its write pass alone).
pub fn burn_figures(image: &Path, bmap: &Path, work: &Path) -> Result<Vec<Figure>, BenchError> {
    for (tool, package) in [("dd", "coreutils"), ("bmaptool", "bmap-tools")] {
        let found = Command::new(tool).arg("--version").output().is_ok();
        if !found {
            return Err(BenchError::Missing { tool, package });
        }
    }
    // The block map alone: a bench image needs no partition table.
    let text = std::fs::read_to_string(bmap).map_err(|e| BenchError::Failed {
        what: format!("reading {}", bmap.display()),
        detail: e.to_string(),
    })?;
    let map = image_build::bmap::Bmap::parse(&text).map_err(|e| BenchError::Failed {
        what: format!("reading {}", bmap.display()),
        detail: e.to_string(),
    })?;
    let extents = copy::extents(&map);
    let (size, mapped_bytes) = (map.image_size, extents.iter().map(|e| e.len).sum::<u64>());
    std::fs::create_dir_all(work).map_err(|e| BenchError::Failed {
        what: format!("creating {}", work.display()),
        detail: e.to_string(),
    })?;
    // Every tool then reads the image from memory: only the writing and
    // (for Keel) the read-back differ.
    crate::image::sha256_file(image).map_err(|e| BenchError::Failed {
        what: "reading the image".into(),
        detail: e.to_string(),
    })?;
    let mib = size as f64 / f64::from(1 << 20);
    let figure = |name: &str, time: Duration, note: String| Figure {
        name: name.to_string(),
        time,
        mib_per_sec: mib / time.as_secs_f64().max(1e-9),
        note,
    };
    let dd_target = fresh(&work.join("dd.img"));
    let dd = run(
        "dd",
        Command::new("dd")
            .arg(format!("if={}", image.display()))
            .arg(format!("of={}", dd_target.display()))
            .args(["bs=4M", "conv=fsync", "status=none"]),
    )?;
    let bmap_target = fresh(&work.join("bmaptool.img"));
    let bmaptool = run(
        "bmaptool copy",
        Command::new("bmaptool")
            .args(["-q", "copy", "--bmap"])
            .arg(bmap)
            .arg(image)
            .arg(&bmap_target),
    )?;
    let keel_target = fresh(&work.join("keel.img"));
    let start = Instant::now();
    let stats = copy::write_and_verify(
        image,
        &keel_target,
        &extents,
        size,
        // What `burn --file` uses.
        OpenMode {
            direct: true,
            exclusive: false,
        },
        &mut |_| {},
    )?;
    let keel = start.elapsed();
    for p in [&dd_target, &bmap_target, &keel_target] {
        let _ = std::fs::remove_file(p);
    }
    let mapped = mapped_bytes as f64 / size.max(1) as f64 * 100.0;
    let vs = |t: Duration, r: Duration| {
        format!(
            "{:.2}x bmaptool's time",
            t.as_secs_f64() / r.as_secs_f64().max(1e-9)
        )
    };
    Ok(vec![
        figure("dd bs=4M conv=fsync", dd, "every byte of the image".into()),
        figure(
            "bmaptool copy",
            bmaptool,
            format!("{mapped:.0}% of the image mapped; no read-back"),
        ),
        figure(
            "keel burn (write + read-back)",
            keel,
            format!(
                "{}; {}",
                vs(keel, bmaptool),
                if stats.direct {
                    "O_DIRECT"
                } else {
                    "page cache dropped before reading back"
                }
            ),
        ),
        figure(
            "keel burn, write pass",
            stats.write,
            vs(stats.write, bmaptool),
        ),
    ])
}
