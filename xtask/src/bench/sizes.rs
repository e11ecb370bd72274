//! What a device stores and downloads: the device binaries' sizes, and
//! every board's update bundle next to the plain bytes it writes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image_build::board::BoardConfig;

use super::Row;
use crate::build::{Build, Built};
use crate::host;

/// Bundle sizes with a target, from the issue that set them.
const BUNDLE_TARGETS: &[(&str, u64)] = &[("rpi4", 14 << 20)];

pub fn binary_rows(cfg: &BoardConfig) -> Result<Vec<Row>> {
    let dir = host::cargo_target_dir()
        .join(cfg.arch.rust_target())
        .join("device");
    let mut rows = Vec::new();
    for bin in ["init", "agent"] {
        let path = dir.join(bin);
        let len = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        rows.push(Row {
            what: format!("{bin} binary ({})", cfg.arch.rust_target()),
            ours: format!("{} KiB", len / 1024),
            reference: "-".into(),
            ratio: "-".into(),
            target: "small (opt-level z, LTO)".into(),
        });
    }
    Ok(rows)
}

/// Every board in board-configs/, built through the build's up-to-date
/// check (seconds when nothing changed; a full build the first time), so
/// no figure comes from a stale image. `built` is the bench's own board,
/// already built. Returns each board's output directory.
pub fn build_all(built: &Built) -> Result<Vec<(String, Result<PathBuf>)>> {
    let names = image_build::board::known_boards(&host::workspace_root().join("board-configs"));
    Ok(names
        .into_iter()
        .map(|name| {
            let result = if name == built.cfg.name {
                Ok(built.dir.clone())
            } else {
                Build::defaults(&name).run().map(|b| b.dir)
            };
            (name, result)
        })
        .collect())
}

/// update.fw of every board, next to the plain bytes it carries.
pub fn bundle_rows(boards: &[(String, Result<PathBuf>)]) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (name, built) in boards {
        let target = BUNDLE_TARGETS.iter().find(|(b, _)| b == name);
        let target_text = match target {
            Some((b, max)) => format!("{b} <= {} MiB", max >> 20),
            None => "report".into(),
        };
        let row = match built {
            Ok(dir) => {
                let path = dir.join(image_build::outputs::BUNDLE);
                let (size, plain) = bundle_size(&path)?;
                Row {
                    what: format!("update.fw, {name}"),
                    ours: format!("{:.1} MiB", mib(size)),
                    reference: format!("{:.1} MiB plain", mib(plain)),
                    ratio: format!("{:.2}", plain as f64 / size.max(1) as f64),
                    target: target_text,
                }
            }
            Err(e) => {
                eprintln!("keel: bench: cannot build {name}: {e:#}");
                Row {
                    what: format!("update.fw, {name}"),
                    ours: "not built".into(),
                    reference: "-".into(),
                    ratio: "-".into(),
                    target: target_text,
                }
            }
        };
        rows.push(row);
    }
    Ok(rows)
}

/// The bundle's length and the sum of its payloads' plain sizes.
fn bundle_size(path: &Path) -> Result<(u64, u64)> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let mut f = std::io::BufReader::new(std::fs::File::open(path)?);
    let header = bundle::Header::read(&mut f)?;
    let manifest = bundle::Manifest::parse(header.manifest_text()?)?;
    Ok((size, manifest.payloads.iter().map(|p| p.size).sum()))
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}
