//! How QEMU runs a board's card: the machine, the firmware and the disks,
//! as `cargo xtask qemu`, the tests and the bench start it.
//!
//! Two ways in, as on the real boards:
//! - U-Boot boards (`[qemu] bios_*`): Debian's U-Boot is QEMU's firmware
//!   (`-bios`) and the card is a virtio disk.
//! - Raspberry Pi (`[qemu] pi_model`): QEMU cannot run the GPU firmware, so
//!   its part is played here: read the card's `config.txt` the way the
//!   firmware does for the model, and start what it names as `kernel=` (U-Boot)
//!   with the `device_tree=` it picks, both taken from the card itself. The
//!   card is the SD card.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use keel_contract::bootfiles::CONFIG_TXT;
use keel_contract::partition::SELECTOR;

use crate::board::{BoardConfig, QemuConfig};
use crate::pi_firmware::{self, PiModel};

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error(
        "board {0} has no [qemu] section: QEMU cannot run it; use qemu-aarch64, qemu-armv7 or rpi3"
    )]
    NotQemu(String),
    #[error("{0}")]
    Card(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("QEMU's {machine} has no slot for a further disk ({disk}); put the file on the card instead (e.g. in /data)")]
    NoExtraDisks { machine: String, disk: PathBuf },
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> QemuError {
    let path = path.to_path_buf();
    move |source| QemuError::Io { what, path, source }
}

/// The program and arguments for one QEMU run.
#[derive(Debug, Clone)]
pub struct QemuRun {
    pub program: String,
    pub args: Vec<OsString>,
}

/// QEMU for a board's machine, CPU and memory, headless, with no default
/// devices: callers add the console, firmware and disks.
pub fn machine_args(q: &QemuConfig) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-M".into(), q.machine.clone().into()];
    if let Some(cpu) = &q.cpu {
        a.extend(["-cpu".into(), cpu.into()]);
    }
    a.extend(["-m".into(), q.memory.clone().into()]);
    a.extend(["-nographic", "-no-user-config", "-nodefaults"].map(OsString::from));
    a
}

/// What to run for `card`. `bios` is the U-Boot build for `bios_*` boards
/// (from the artifact cache); `scratch` is a directory for the files the
/// Pi firmware would load (kept after QEMU starts, since xtask execs it).
pub fn plan(
    cfg: &BoardConfig,
    card: &Path,
    bios: Option<&Path>,
    disks: &[PathBuf],
    snapshot: bool,
    scratch: &Path,
) -> Result<QemuRun, QemuError> {
    let q = cfg
        .qemu
        .as_ref()
        .ok_or_else(|| QemuError::NotQemu(cfg.name.clone()))?;
    let mut args = machine_args(q);
    let snap = if snapshot { ",snapshot=on" } else { "" };
    match (&q.pi_model, bios) {
        (Some(model), _) => {
            if let Some(disk) = disks.first() {
                return Err(QemuError::NoExtraDisks {
                    machine: q.machine.clone(),
                    disk: disk.clone(),
                });
            }
            let model = PiModel::from_qemu_model(model).ok_or_else(|| {
                QemuError::Card(format!(
                    "[qemu] pi_model {model:?} is not one QEMU emulates (pi3)"
                ))
            })?;
            let (kernel, dtb) = firmware_files(card, model, scratch)?;
            pad_to_power_of_two(card)?;
            args.extend(["-kernel".into(), kernel.into_os_string()]);
            args.extend(["-dtb".into(), dtb.into_os_string()]);
            // The firmware puts its command line into the device tree, and
            // Keel's Pi boot script passes it on: here it tells init not to
            // arm the watchdog, because QEMU 7.2's raspi3b resets the machine
            // the moment the BCM2835 watchdog is started instead of counting
            // down. The driver still loads: reboot goes through it. Real
            // boards keep their watchdog.
            args.extend(["-append", "keel.watchdog=off"].map(OsString::from));
            args.push("-drive".into());
            args.push(format!("file={},if=sd,format=raw{snap}", card.display()).into());
            // The console is the mini UART, QEMU's second serial port.
            args.extend(["-serial", "null", "-serial", "mon:stdio"].map(OsString::from));
        }
        (None, Some(bios)) => {
            args.extend([
                "-serial".into(),
                "mon:stdio".into(),
                "-bios".into(),
                bios.into(),
            ]);
            // User-mode networking: the guest (10.0.2.15) reaches the host's
            // loopback as 10.0.2.2 and nothing needs privileges. Added
            // first, so the disks keep the virtio-mmio slots U-Boot scans first.
            args.extend(
                [
                    "-netdev",
                    "user,id=net0",
                    "-device",
                    "virtio-net-device,netdev=net0",
                ]
                .map(OsString::from),
            );
            // QEMU's virt machine hands out virtio-mmio slots from the top,
            // so the device added last is the one U-Boot scans as virtio 0:
            // the card.
            for (i, d) in disks.iter().enumerate() {
                if !d.is_file() {
                    return Err(QemuError::Card(format!(
                        "--disk {}: no such file",
                        d.display()
                    )));
                }
                args.push("-drive".into());
                args.push(
                    format!(
                        "if=none,id=extra{i},format=raw,readonly=on,file={}",
                        d.display()
                    )
                    .into(),
                );
                args.push("-device".into());
                args.push(format!("virtio-blk-device,drive=extra{i}").into());
            }
            args.push("-drive".into());
            args.push(format!("if=none,id=card,format=raw,file={}{snap}", card.display()).into());
            args.extend(["-device", "virtio-blk-device,drive=card"].map(OsString::from));
        }
        (None, None) => {
            return Err(QemuError::Card(format!(
                "board {} names a U-Boot build for QEMU but none was given",
                cfg.name
            )))
        }
    }
    Ok(QemuRun {
        program: q.system.clone(),
        args,
    })
}

/// The files the Pi firmware would start for `model`, copied out of the
/// card's partition 1 into `scratch`: (kernel, device tree).
pub fn firmware_files(
    card: &Path,
    model: PiModel,
    scratch: &Path,
) -> Result<(PathBuf, PathBuf), QemuError> {
    let mut f = std::fs::File::open(card).map_err(io("opening", card))?;
    let table = card_format::mbr::PartitionTable::read_from(&mut f)
        .map_err(|e| QemuError::Card(format!("{}: {e}", card.display())))?;
    let p = table
        .get(SELECTOR)
        .ok_or_else(|| QemuError::Card(format!("{} has no partition 1", card.display())))?;
    let mut read = |name: &str| -> Result<Vec<u8>, QemuError> {
        let part = crate::slice::PartitionSlice::new(&mut f, p.start_lba * 512, p.sectors * 512)
            .map_err(io("reading", card))?;
        crate::fat::read_file(part, name)
            .map_err(|e| QemuError::Card(format!("partition 1 of {}, {name}: {e}", card.display())))
    };
    let config = String::from_utf8_lossy(&read(CONFIG_TXT)?).into_owned();
    let (kernel, dtb) = pi_firmware::boot_files(&config, model);
    let kernel = kernel
        .ok_or_else(|| QemuError::Card(format!("config.txt names no kernel= for {model:?}")))?;
    let dtb = dtb.ok_or_else(|| {
        QemuError::Card(format!("config.txt names no device_tree= for {model:?}"))
    })?;
    std::fs::create_dir_all(scratch).map_err(io("creating", scratch))?;
    let mut out = Vec::new();
    for name in [&kernel, &dtb] {
        let path = scratch.join(name.rsplit('/').next().unwrap_or(name));
        durable::replace(&path, &read(name)?, 0o644).map_err(io("writing", &path))?;
        out.push(path);
    }
    let dtb = out.pop().unwrap_or_default();
    let kernel = out.pop().unwrap_or_default();
    Ok((kernel, dtb))
}

/// QEMU's SD card model wants a power-of-two size; the tail beyond the
/// partitions is unused, so growing the file (sparsely) changes nothing the
/// card holds.
fn pad_to_power_of_two(card: &Path) -> Result<(), QemuError> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(card)
        .map_err(io("opening", card))?;
    let len = f.metadata().map_err(io("reading", card))?.len();
    let want = len.max(1).next_power_of_two();
    if want != len {
        f.set_len(want).map_err(io("padding", card))?;
    }
    Ok(())
}
