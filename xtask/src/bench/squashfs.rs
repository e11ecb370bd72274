//! Our squashfs writer against `mksquashfs` (one thread, the same
//! compression and block size) on slot A's root filesystem.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use super::{secs, time, Row};

/// Our squashfs writer against mksquashfs on slot A's root filesystem.
pub fn row(img: &Path, cfg: &image_build::board::BoardConfig, work: &Path) -> Result<Row> {
    let card = image_build::check::read_card(img, cfg).map_err(anyhow::Error::msg)?;
    let tree = card.rootfs;
    let dir = work.join("rootfs");
    for (path, node) in tree.iter() {
        let p = dir.join(path);
        match &node.kind {
            image_build::fstree::NodeKind::Dir => std::fs::create_dir_all(&p)?,
            image_build::fstree::NodeKind::File(d) => std::fs::write(&p, d)?,
            image_build::fstree::NodeKind::Symlink(t) => std::os::unix::fs::symlink(t, &p)?,
            image_build::fstree::NodeKind::CharDevice { .. } => {}
        }
    }
    let (ours, size) = time(|| {
        let mut out = std::io::Cursor::new(Vec::new());
        Ok(image_build::squashfs::write(&tree, &mut out, 0)?)
    })?;
    let reference_out = work.join("ref.squashfs");
    let (reference, _) = time(|| {
        let st = Command::new("mksquashfs")
            .arg(&dir)
            .arg(&reference_out)
            .args([
                "-comp",
                "xz",
                "-b",
                "131072",
                "-noappend",
                "-all-root",
                "-quiet",
                "-processors",
                "1",
            ])
            .status()?;
        if !st.success() {
            bail!("mksquashfs failed");
        }
        Ok(())
    })?;
    let ref_size = std::fs::metadata(&reference_out)?.len();
    Ok(Row {
        what: format!(
            "squashfs rootfs ({} KiB vs {} KiB)",
            size / 1024,
            ref_size / 1024
        ),
        ours: secs(ours),
        reference: format!("{} mksquashfs", secs(reference)),
        ratio: format!(
            "{:.2}",
            reference.as_secs_f64() / ours.as_secs_f64().max(1e-9)
        ),
        target: "report: speed vs mksquashfs -processors 1".into(),
    })
}
