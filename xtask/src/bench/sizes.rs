//! What a device stores: the device binaries' sizes.

use anyhow::{Context, Result};
use image_build::board::BoardConfig;

use super::Row;
use crate::host;

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
