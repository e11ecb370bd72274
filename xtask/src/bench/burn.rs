//! Burning the board's card image into a file on the same disk: Keel's
//! writer (mapped blocks, O_DIRECT, every written block read back and
//! hashed) against `bmaptool copy` (mapped blocks, nothing read back) and
//! `dd bs=4M conv=fsync` (every byte). The figures come from
//! `factory::bench`, which runs all three in the same run.

use std::path::Path;

use anyhow::{Context, Result};

use super::{secs, Row};

pub fn rows(dir: &Path, work: &Path) -> Result<Vec<Row>> {
    let image = dir.join(image_build::outputs::IMAGE);
    let bmap = dir.join(image_build::outputs::BMAP);
    let figures = factory::bench::burn_figures(&image, &bmap, &work.join("burn"))
        .context("the burn benchmark")?;
    let find = |prefix: &str| {
        figures
            .iter()
            .find(|f| f.name.starts_with(prefix))
            .with_context(|| format!("no '{prefix}' figure from the burn benchmark"))
    };
    let (dd, bmaptool) = (find("dd")?, find("bmaptool")?);
    let (keel, write) = (find("keel burn (")?, find("keel burn, write")?);
    let ratio = |ours: &factory::bench::Figure, reference: &factory::bench::Figure| {
        format!(
            "{:.2}",
            reference.time.as_secs_f64() / ours.time.as_secs_f64().max(1e-9)
        )
    };
    Ok(vec![
        Row {
            what: "burn sdcard.img to a file, write + read-back".into(),
            ours: secs(keel.time),
            reference: format!("{} bmaptool", secs(bmaptool.time)),
            ratio: ratio(keel, bmaptool),
            target: format!(">= 1: at least bmaptool's pace ({})", bmaptool.note),
        },
        Row {
            what: "burn sdcard.img, write pass alone".into(),
            ours: secs(write.time),
            reference: format!("{} dd 4M", secs(dd.time)),
            ratio: ratio(write, dd),
            target: format!("report: {}", keel.note),
        },
    ])
}
