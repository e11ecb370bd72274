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
//!
//! For the bench, a Pi card can also be started without the firmware's and
//! U-Boot's part ([`direct_kernel`]): QEMU loads the slot's own kernel and
//! initramfs, to show what the boot chain costs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use card_format::mbr::PartitionTable;
use keel_contract::bootfiles::{bootargs, CONFIG_TXT, INITRAMFS, KERNEL};
use keel_contract::partition::SELECTOR;
use keel_contract::Slot;

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

/// What QEMU passes as the Pi firmware's kernel command line (`-append`,
/// which QEMU puts into the device tree as the firmware would): it tells
/// init not to arm the watchdog, because QEMU 7.2's raspi3b resets the
/// machine the moment the BCM2835 watchdog is started instead of counting
/// down. The driver still loads: reboot goes through it. Real boards keep
/// their watchdog.
pub const PI_FIRMWARE_CMDLINE: &str = "keel.watchdog=off";

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
            let (kernel, dtb) = firmware_files(card, pi_model(model)?, scratch)?;
            pad_to_power_of_two(card)?;
            args.extend(["-kernel".into(), kernel.into_os_string()]);
            args.extend(["-dtb".into(), dtb.into_os_string()]);
            // The firmware puts its command line into the device tree, and
            // Keel's Pi boot script passes it on.
            args.extend(["-append", PI_FIRMWARE_CMDLINE].map(OsString::from));
            args.extend(pi_sd_card(card, snapshot));
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
    let mut fat = CardFat::open(card)?;
    let config = String::from_utf8_lossy(&fat.read(SELECTOR, CONFIG_TXT)?).into_owned();
    let (kernel, dtb) = pi_firmware::boot_files(&config, model);
    let kernel = kernel
        .ok_or_else(|| QemuError::Card(format!("config.txt names no kernel= for {model:?}")))?;
    let dtb = dtb.ok_or_else(|| {
        QemuError::Card(format!("config.txt names no device_tree= for {model:?}"))
    })?;
    let kernel = save(scratch, &kernel, &fat.read(SELECTOR, &kernel)?)?;
    let dtb = save(scratch, &dtb, &fat.read(SELECTOR, &dtb)?)?;
    Ok((kernel, dtb))
}

/// A Pi card started without the firmware's and U-Boot's part: QEMU loads
/// `slot`'s own kernel and initramfs (`-kernel`, `-initrd`) with the device
/// tree config.txt gives the model, and passes the slot's command line from
/// its bootargs file followed by [`PI_FIRMWARE_CMDLINE`]; the same SD card.
/// The bench boots this next to [`plan`] to show what the boot chain costs.
/// The files are copied into `scratch`.
pub fn direct_kernel(
    cfg: &BoardConfig,
    card: &Path,
    slot: Slot,
    snapshot: bool,
    scratch: &Path,
) -> Result<QemuRun, QemuError> {
    let q = cfg
        .qemu
        .as_ref()
        .ok_or_else(|| QemuError::NotQemu(cfg.name.clone()))?;
    let model = q.pi_model.as_deref().ok_or_else(|| {
        QemuError::Card(format!(
            "board {} is not a Raspberry Pi: QEMU starts its U-Boot as -bios",
            cfg.name
        ))
    })?;
    let model = pi_model(model)?;
    let mut fat = CardFat::open(card)?;
    let config = String::from_utf8_lossy(&fat.read(SELECTOR, CONFIG_TXT)?).into_owned();
    let (_, dtb) = pi_firmware::boot_files(&config, model);
    let dtb = dtb.ok_or_else(|| {
        QemuError::Card(format!("config.txt names no device_tree= for {model:?}"))
    })?;
    let part = slot.boot_partition();
    let text = String::from_utf8_lossy(&fat.read(part, bootargs(slot))?).into_owned();
    let cmdline = text
        .lines()
        .find_map(|l| l.strip_prefix("bootargs="))
        .ok_or_else(|| {
            QemuError::Card(format!(
                "partition {part}, {}: no bootargs= line",
                bootargs(slot)
            ))
        })?
        .trim()
        .to_string();
    let kernel = save(scratch, KERNEL, &fat.read(part, KERNEL)?)?;
    let initrd = save(scratch, INITRAMFS, &fat.read(part, INITRAMFS)?)?;
    let dtb = save(scratch, &dtb, &fat.read(SELECTOR, &dtb)?)?;
    drop(fat);
    pad_to_power_of_two(card)?;
    let mut args = machine_args(q);
    args.extend(["-kernel".into(), kernel.into_os_string()]);
    args.extend(["-initrd".into(), initrd.into_os_string()]);
    args.extend(["-dtb".into(), dtb.into_os_string()]);
    args.extend([
        "-append".into(),
        format!("{cmdline} {PI_FIRMWARE_CMDLINE}").into(),
    ]);
    args.extend(pi_sd_card(card, snapshot));
    Ok(QemuRun {
        program: q.system.clone(),
        args,
    })
}

fn pi_model(name: &str) -> Result<PiModel, QemuError> {
    PiModel::from_qemu_model(name).ok_or_else(|| {
        QemuError::Card(format!(
            "[qemu] pi_model {name:?} is not one QEMU emulates (pi3)"
        ))
    })
}

/// The card as the Pi's SD card, and the console on the mini UART, QEMU's
/// second serial port.
fn pi_sd_card(card: &Path, snapshot: bool) -> Vec<OsString> {
    let snap = if snapshot { ",snapshot=on" } else { "" };
    let mut args: Vec<OsString> = vec![
        "-drive".into(),
        format!("file={},if=sd,format=raw{snap}", card.display()).into(),
    ];
    args.extend(["-serial", "null", "-serial", "mon:stdio"].map(OsString::from));
    args
}

/// Reads files out of a card image's FAT partitions.
struct CardFat {
    file: std::fs::File,
    table: PartitionTable,
    path: PathBuf,
}

impl CardFat {
    fn open(card: &Path) -> Result<CardFat, QemuError> {
        let mut file = std::fs::File::open(card).map_err(io("opening", card))?;
        let table = PartitionTable::read_from(&mut file)
            .map_err(|e| QemuError::Card(format!("{}: {e}", card.display())))?;
        Ok(CardFat {
            file,
            table,
            path: card.to_path_buf(),
        })
    }

    fn read(&mut self, number: u8, name: &str) -> Result<Vec<u8>, QemuError> {
        let p = self.table.get(number).ok_or_else(|| {
            QemuError::Card(format!("{} has no partition {number}", self.path.display()))
        })?;
        let part =
            crate::slice::PartitionSlice::new(&mut self.file, p.start_lba * 512, p.sectors * 512)
                .map_err(io("reading", &self.path))?;
        crate::fat::read_file(part, name).map_err(|e| {
            QemuError::Card(format!(
                "partition {number} of {}, {name}: {e}",
                self.path.display()
            ))
        })
    }
}

/// Writes `data` into `scratch` under the last component of `name`.
fn save(scratch: &Path, name: &str, data: &[u8]) -> Result<PathBuf, QemuError> {
    std::fs::create_dir_all(scratch).map_err(io("creating", scratch))?;
    let path = scratch.join(name.rsplit('/').next().unwrap_or(name));
    durable::replace(&path, data, 0o644).map_err(io("writing", &path))?;
    Ok(path)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fat::FatFile;
    use card_format::mbr::{Partition, KIND_FAT32_LBA};

    const MIB: u64 = 1 << 20;

    fn cfg() -> BoardConfig {
        BoardConfig::parse(
            r#"
name = "t"
description = "t"
arch = "aarch64"
boot_backend = "uboot"
console = "ttyS1,115200"
[kernel]
package = "k"
dtbs = ["broadcom/bcm2837-rpi-3-b.dtb"]
dtbs_target = "selector"
initramfs_modules = ["squashfs"]
[partitions]
boot_selector_mib = 40
boot_slot_mib = 64
rootfs_slot_mib = 128
data_mib = 64
[uboot]
fdt = "firmware"
[raspberrypi]
config_txt = ["arm_64bit=1", "kernel=u-boot.bin"]
[[raspberrypi.device_tree]]
filter = "pi3"
file = "bcm2837-rpi-3-b.dtb"
[qemu]
system = "qemu-system-aarch64"
machine = "raspi3b"
memory = "1G"
pi_model = "pi3"
"#,
            Path::new("t.toml"),
        )
        .unwrap()
    }

    /// A card with partition 1 (config.txt, the device tree) and slot A's
    /// boot partition (kernel, initramfs, command line), both FAT.
    fn card(dir: &Path) -> PathBuf {
        let path = dir.join("card.img");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        f.set_len(33 * MIB).unwrap();
        let part = |number, start: u64| Partition {
            number,
            start_lba: start * MIB / 512,
            sectors: 16 * MIB / 512,
            kind: KIND_FAT32_LBA,
            bootable: number == 1,
        };
        PartitionTable {
            disk_id: 7,
            partitions: vec![part(1, 1), part(2, 17)],
        }
        .write_to(&mut f)
        .unwrap();
        let file = |path: &str, data: &[u8]| FatFile {
            path: path.into(),
            data: data.to_vec(),
        };
        let config = crate::bootfiles::config_txt(&cfg()).unwrap();
        for (start, files) in [
            (
                1,
                vec![
                    file(CONFIG_TXT, config.as_bytes()),
                    file("bcm2837-rpi-3-b.dtb", b"the pi3 tree"),
                    file("u-boot.bin", b"u-boot"),
                ],
            ),
            (
                17,
                vec![
                    file(KERNEL, b"slot a kernel"),
                    file(INITRAMFS, b"slot a initramfs"),
                    file(
                        bootargs(Slot::A),
                        b"bootargs=console=ttyS1,115200 keel.slot=a rootwait\n",
                    ),
                    file(bootargs(Slot::B), b"bootargs=keel.slot=b\n"),
                ],
            ),
        ] {
            let slice = crate::slice::PartitionSlice::new(&mut f, start * MIB, 16 * MIB).unwrap();
            crate::fat::format_and_fill(slice, 16 * MIB, "T", start as u32, &files, 0).unwrap();
        }
        path
    }

    fn after<'a>(args: &'a [OsString], flag: &str) -> &'a str {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1].to_str().unwrap()
    }

    #[test]
    fn direct_kernel_starts_the_slots_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let card = card(dir.path());
        let scratch = dir.path().join("scratch");
        let run = direct_kernel(&cfg(), &card, Slot::A, true, &scratch).unwrap();
        assert_eq!(run.program, "qemu-system-aarch64");
        let read = |flag| std::fs::read(after(&run.args, flag)).unwrap();
        assert_eq!(read("-kernel"), b"slot a kernel");
        assert_eq!(read("-initrd"), b"slot a initramfs");
        assert_eq!(read("-dtb"), b"the pi3 tree");
        assert_eq!(
            after(&run.args, "-append"),
            "console=ttyS1,115200 keel.slot=a rootwait keel.watchdog=off"
        );
        let drive = after(&run.args, "-drive");
        assert!(
            drive.contains("if=sd") && drive.ends_with(",snapshot=on"),
            "{drive}"
        );
        // QEMU's SD card model wants a power-of-two size.
        assert_eq!(std::fs::metadata(&card).unwrap().len(), 64 * MIB);
    }

    #[test]
    fn direct_kernel_is_only_for_pi_boards() {
        let dir = tempfile::tempdir().unwrap();
        let card = card(dir.path());
        let mut cfg = cfg();
        if let Some(q) = cfg.qemu.as_mut() {
            q.pi_model = None;
        }
        let err = direct_kernel(&cfg, &card, Slot::A, true, dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a Raspberry Pi"), "{err}");
    }
}
