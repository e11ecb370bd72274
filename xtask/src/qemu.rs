//! `cargo xtask qemu`: boots a built image the way CI does, through Debian's
//! U-Boot, with the card as a virtio disk and the console on this terminal.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use image_build::board::BoardConfig;

use crate::host;

#[derive(clap::Args, Clone, Debug)]
pub struct Qemu {
    /// A QEMU board: qemu-aarch64 or qemu-armv7.
    #[arg(long)]
    pub board: String,
    /// Image to boot [default: target/images/<board>/sdcard.img, built if missing].
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Discard the guest's writes when QEMU exits instead of writing them to the image.
    #[arg(long)]
    pub snapshot: bool,
    /// Attach a further raw file as a read-only virtio disk (e.g. an update bundle); repeatable.
    #[arg(long)]
    pub disk: Vec<PathBuf>,
}

impl Qemu {
    pub fn run(self) -> Result<()> {
        let root = host::workspace_root();
        let cfg = BoardConfig::load(&root.join("board-configs"), &self.board)?;
        let Some(q) = cfg.qemu.clone() else {
            bail!("board {} has no [qemu] section: QEMU cannot run it; use qemu-aarch64 or qemu-armv7", cfg.name);
        };
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
        let pkg = lock.get(&q.bios_package).with_context(|| {
            format!(
                "{} is not in the lock file; rebuild the board",
                q.bios_package
            )
        })?;
        let bios = image_build::artifacts::cache_dir()
            .join("unpacked")
            .join(&pkg.sha256[..24])
            .join(&q.bios_path);
        if !bios.is_file() {
            bail!(
                "{} is missing from the cache; run `cargo xtask build --board {}`",
                bios.display(),
                cfg.name
            );
        }
        let mut drive = format!("if=none,id=card,format=raw,file={}", image.display());
        if self.snapshot {
            drive.push_str(",snapshot=on");
        }
        let mut cmd = machine(&q);
        cmd.args(["-serial", "mon:stdio", "-bios"]).arg(&bios);
        // User-mode networking: the guest (10.0.2.15) reaches the host's
        // loopback as 10.0.2.2 and nothing needs privileges. Added first,
        // so the disks keep the virtio-mmio slots U-Boot scans first.
        cmd.args([
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-device,netdev=net0",
        ]);
        // QEMU's virt machine hands out virtio-mmio slots from the top, so
        // the device added last is the one U-Boot scans as virtio 0: the card.
        for (i, d) in self.disk.iter().enumerate() {
            if !d.is_file() {
                bail!("--disk {}: no such file", d.display());
            }
            cmd.arg("-drive")
                .arg(format!(
                    "if=none,id=extra{i},format=raw,readonly=on,file={}",
                    d.display()
                ))
                .args(["-device", &format!("virtio-blk-device,drive=extra{i}")]);
        }
        cmd.args(["-drive", &drive, "-device", "virtio-blk-device,drive=card"]);
        eprintln!("keel: booting {} (quit: Ctrl-a x)", image.display());
        // Replace this process with QEMU: signals and exit status are QEMU's own.
        let err = std::os::unix::process::CommandExt::exec(&mut cmd);
        Err(err).with_context(|| format!("starting {}", q.system))
    }
}

/// QEMU for a board's machine, CPU and memory, headless, with no default
/// devices: callers add the console, firmware and disks.
pub fn machine(q: &image_build::board::QemuConfig) -> Command {
    let mut cmd = Command::new(&q.system);
    cmd.args(["-M", &q.machine, "-cpu", &q.cpu, "-m", &q.memory])
        .args(["-nographic", "-no-user-config", "-nodefaults"]);
    cmd
}
