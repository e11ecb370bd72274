//! `cargo xtask qemu`: boots a built image the way CI does, with the
//! console on this terminal (image_build::qemu says how each board starts).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use image_build::board::BoardConfig;

use crate::host;

#[derive(clap::Args, Clone, Debug)]
pub struct Qemu {
    /// A board QEMU can run: qemu-aarch64, qemu-armv7, or rpi3 (on QEMU's raspi3b).
    #[arg(long)]
    pub board: String,
    /// Image to boot [default: target/images/<board>/sdcard.img, built if missing].
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Discard the guest's writes when QEMU exits instead of writing them to the image.
    #[arg(long)]
    pub snapshot: bool,
    /// Attach a further raw file as a read-only virtio disk (e.g. an update bundle); repeatable. Not on raspi3b, which has only the SD card.
    #[arg(long)]
    pub disk: Vec<PathBuf>,
}

impl Qemu {
    pub fn run(self) -> Result<()> {
        let root = host::workspace_root();
        let cfg = BoardConfig::load(&root.join("board-configs"), &self.board)?;
        if cfg.qemu.is_none() {
            bail!(image_build::qemu::QemuError::NotQemu(cfg.name.clone()));
        }
        host::ensure_tools(host::QEMU_TOOLS)?;
        let image = match self.image.clone() {
            Some(p) => p,
            None => crate::build::Build::defaults(&cfg.name).run()?.image,
        };
        if !image.is_file() {
            bail!(
                "{} does not exist; build it with `cargo xtask build --board {}`",
                image.display(),
                cfg.name
            );
        }
        let bios = bios_path(&root, &cfg)?;
        let scratch = host::cargo_target_dir().join("qemu").join(&cfg.name);
        let run = image_build::qemu::plan(
            &cfg,
            &image,
            bios.as_deref(),
            &self.disk,
            self.snapshot,
            &scratch,
        )?;
        eprintln!("keel: booting {} (quit: Ctrl-a x)", image.display());
        let mut cmd = Command::new(&run.program);
        cmd.args(&run.args);
        // Replace this process with QEMU: signals and exit status are QEMU's own.
        let err = std::os::unix::process::CommandExt::exec(&mut cmd);
        Err(err).with_context(|| format!("starting {}", run.program))
    }
}

/// The U-Boot build a `bios_*` board runs as QEMU's firmware, from the
/// artifact cache the build filled (None for boards QEMU starts otherwise).
pub fn bios_path(root: &Path, cfg: &BoardConfig) -> Result<Option<PathBuf>> {
    let Some(q) = &cfg.qemu else {
        return Ok(None);
    };
    let (Some(package), Some(path)) = (&q.bios_package, &q.bios_path) else {
        return Ok(None);
    };
    let lock = image_build::lock::LockFile::load(
        &root
            .join("board-configs")
            .join(format!("{}.lock", cfg.name)),
    )?
    .with_context(|| {
        format!(
            "no lock file for {}; run `cargo xtask build --board {}` first",
            cfg.name, cfg.name
        )
    })?;
    let pkg = lock
        .get(package)
        .with_context(|| format!("{package} is not in the lock file; rebuild the board"))?;
    let bios = image_build::artifacts::cache_dir()
        .join("unpacked")
        .join(&pkg.sha256[..24])
        .join(path);
    if !bios.is_file() {
        bail!(
            "{} is missing from the cache; run `cargo xtask build --board {}`",
            bios.display(),
            cfg.name
        );
    }
    Ok(Some(bios))
}

/// QEMU for a board's machine, CPU and memory, headless, with no default
/// devices: callers add the console, firmware and disks.
pub fn machine(q: &image_build::board::QemuConfig) -> Command {
    let mut cmd = Command::new(&q.system);
    cmd.args(image_build::qemu::machine_args(q));
    cmd
}
