//! Checks that a finished card can boot, using only Keel's own parsers:
//! the boot chain's files are there, the command line names partitions that
//! exist, the initramfs can reach the root filesystem, init fits the board.

use std::fs::File;
use std::path::Path;

use crate::board::{Arch, BoardConfig, FdtSource, FileTarget};
use card_format::mbr::PartitionTable;
use keel_contract::bootfiles::{bootargs, BOOT_SCRIPT, CONFIG_TXT, INITRAMFS, KERNEL};
use keel_contract::partition::{BOOT_A, ROOTFS_A, SELECTOR};
use keel_contract::{paths, KernelCmdline, Release, Slot};

use crate::elf::ElfArch;
use crate::fstree::{FsTree, NodeKind};
use crate::layout::Layout;
use crate::slice::PartitionSlice;

/// Every problem found, each naming what is wrong and what to do.
#[derive(Debug, Default)]
pub struct Findings {
    pub problems: Vec<String>,
}

impl Findings {
    fn require(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(problem());
        }
    }
}

/// What a card holds, read back with Keel's parsers.
pub struct CardContents {
    pub table: PartitionTable,
    pub selector: Vec<(String, u64)>,
    pub boot_a: Vec<(String, u64)>,
    pub cmdline: String,
    /// Slot B's, from the same boot partition (one image serves both).
    pub cmdline_b: String,
    /// The Pi firmware's config.txt in the boot selector, on Pi boards.
    pub config_txt: Option<String>,
    pub initramfs: FsTree,
    pub rootfs: FsTree,
}

pub fn elf_arch(arch: Arch) -> ElfArch {
    match arch {
        Arch::Aarch64 => ElfArch::Aarch64,
        Arch::Armv7 => ElfArch::Arm,
    }
}

/// Reads a card back. Errors are returned as text because any of them means
/// the card cannot boot.
pub fn read_card(image: &Path, cfg: &BoardConfig) -> Result<CardContents, String> {
    let mut f = File::open(image).map_err(|e| format!("cannot open {}: {e}", image.display()))?;
    let table = PartitionTable::read_from(&mut f).map_err(|e| format!("partition table: {e}"))?;
    let span = |n: u8| {
        table
            .get(n)
            .map(|p| (p.start_lba * 512, p.sectors * 512))
            .ok_or_else(|| format!("partition {n} is missing"))
    };
    let fat = |f: &mut File, n: u8| -> Result<Vec<(String, u64)>, String> {
        let (off, len) = span(n)?;
        let part = PartitionSlice::new(f, off, len).map_err(|e| e.to_string())?;
        crate::fat::list_files(part).map_err(|e| format!("partition {n}: {e}"))
    };
    let read_fat = |f: &mut File, n: u8, name: &str| -> Result<Vec<u8>, String> {
        let (off, len) = span(n)?;
        let part = PartitionSlice::new(f, off, len).map_err(|e| e.to_string())?;
        crate::fat::read_file(part, name).map_err(|e| format!("partition {n}, {name}: {e}"))
    };
    let selector = fat(&mut f, SELECTOR)?;
    let boot_a = fat(&mut f, BOOT_A)?;
    let mut read_cmdline = |slot: Slot| -> Result<String, String> {
        Ok(
            String::from_utf8_lossy(&read_fat(&mut f, BOOT_A, bootargs(slot))?)
                .trim()
                .trim_start_matches("bootargs=")
                .to_string(),
        )
    };
    let cmdline = read_cmdline(Slot::A)?;
    let cmdline_b = read_cmdline(Slot::B)?;
    let config_txt = match cfg.raspberrypi {
        Some(_) => {
            Some(String::from_utf8_lossy(&read_fat(&mut f, SELECTOR, CONFIG_TXT)?).into_owned())
        }
        None => None,
    };
    let initrd = read_fat(&mut f, BOOT_A, INITRAMFS)?;
    let initramfs =
        crate::cpio::read_initramfs_gz(&initrd[..]).map_err(|e| format!("initramfs: {e}"))?;
    let (off, len) = span(ROOTFS_A)?;
    let part = PartitionSlice::new(&mut f, off, len).map_err(|e| e.to_string())?;
    let rootfs = crate::squashfs::read(part).map_err(|e| format!("rootfs A: {e}"))?;
    Ok(CardContents {
        table,
        selector,
        boot_a,
        cmdline,
        cmdline_b,
        config_txt,
        initramfs,
        rootfs,
    })
}

/// Checks the card against its board config. `early_modules` are the module
/// names (closure) the initramfs must carry.
pub fn check_card(image: &Path, cfg: &BoardConfig, early_modules: &[String]) -> Findings {
    let mut out = Findings::default();
    let card = match read_card(image, cfg) {
        Ok(c) => c,
        Err(e) => {
            out.problems.push(e);
            return out;
        }
    };
    let layout = Layout::for_board(cfg);
    out.require(card.table == layout.table, || {
        "the partition table differs from the board config's layout; rebuild the image".into()
    });
    let has =
        |files: &[(String, u64)], name: &str| files.iter().any(|(n, size)| n == name && *size > 0);

    let mut selector_need: Vec<String> = vec![BOOT_SCRIPT.into()];
    let mut slot_need: Vec<String> = vec![
        KERNEL.into(),
        INITRAMFS.into(),
        bootargs(Slot::A).into(),
        bootargs(Slot::B).into(),
    ];
    if let Some(FdtSource::Slot(fdt)) = cfg.uboot.as_ref().map(|u| &u.fdt) {
        slot_need.push(fdt.clone());
    }
    for dtb in &cfg.kernel.dtbs {
        let name = dtb.rsplit('/').next().unwrap_or(dtb).to_string();
        match cfg.kernel.dtbs_target {
            FileTarget::Selector => selector_need.push(name),
            FileTarget::Slot => slot_need.push(name),
        }
    }
    // On a Pi, what the firmware starts for each model must be there.
    if let Some(text) = &card.config_txt {
        for model in crate::pi_firmware::PiModel::ALL {
            let covered = cfg
                .raspberrypi
                .iter()
                .flat_map(|p| &p.device_tree)
                .any(|d| model.matches(&d.filter));
            if !covered {
                continue;
            }
            let (kernel, dt) = crate::pi_firmware::boot_files(text, model);
            match kernel {
                Some(k) => selector_need.push(k),
                None => out
                    .problems
                    .push(format!("config.txt names no kernel= for {model:?}")),
            }
            match dt {
                Some(d) => selector_need.push(d),
                None => out
                    .problems
                    .push(format!("config.txt names no device_tree= for {model:?}")),
            }
        }
    }
    for f in &cfg.files {
        match f.target {
            FileTarget::Selector => selector_need.push(f.dest_name().to_string()),
            FileTarget::Slot => slot_need.push(f.dest_name().to_string()),
        }
    }
    for name in &selector_need {
        out.require(has(&card.selector, name), || {
            format!("boot selector (partition 1) lacks {name}")
        });
    }
    for name in &slot_need {
        out.require(has(&card.boot_a, name), || {
            format!("boot A (partition 2) lacks {name}")
        });
    }

    // Each slot's command line must name partitions that exist on this
    // card and its own slot and root filesystem, read the way init reads it.
    for (slot, line) in [(Slot::A, &card.cmdline), (Slot::B, &card.cmdline_b)] {
        for (key, value) in keel_contract::cmdline::params(line) {
            if let Some(uuid) = value.strip_prefix("PARTUUID=") {
                let exists = card
                    .table
                    .partitions
                    .iter()
                    .any(|p| card.table.partuuid(p.number).to_string() == uuid);
                out.require(exists, || {
                    format!("kernel command line {key}= names PARTUUID {uuid}, which is not on the card")
                });
            }
        }
        let parsed = KernelCmdline::parse(line);
        out.require(
            parsed.slot() == Ok(slot)
                && parsed.root() == Ok(card.table.partuuid(slot.rootfs_partition())),
            || format!("slot {slot}'s command line `{line}` does not name slot {slot} and its root filesystem"),
        );
    }

    // Initramfs: our init for this architecture, and the modules to reach root.
    check_init(
        &mut out,
        &card.initramfs,
        "init",
        "initramfs /init",
        cfg.arch,
    );
    let listed = match card
        .initramfs
        .get(paths::INITRAMFS_MODULES.trim_start_matches('/'))
        .map(|n| &n.kind)
    {
        Some(NodeKind::File(d)) => String::from_utf8_lossy(d).to_string(),
        _ => String::new(),
    };
    for m in early_modules {
        let file = format!("{m}.ko");
        out.require(
            listed.lines().any(|l| l == file)
                && card.initramfs.get(&format!("lib/modules/{file}")).is_some(),
            || format!("the initramfs lacks module {m}, needed to reach the root filesystem"),
        );
    }
    check_init(
        &mut out,
        &card.rootfs,
        paths::INIT.trim_start_matches('/'),
        "rootfs /sbin/init",
        cfg.arch,
    );
    check_init(
        &mut out,
        &card.rootfs,
        paths::AGENT.trim_start_matches('/'),
        "rootfs /usr/bin/agent",
        cfg.arch,
    );
    let release = match card
        .rootfs
        .get(paths::RELEASE.trim_start_matches('/'))
        .map(|n| &n.kind)
    {
        Some(NodeKind::File(d)) => Some(Release::parse(&String::from_utf8_lossy(d))),
        _ => None,
    };
    match release {
        None => out
            .problems
            .push(format!("rootfs lacks {}", paths::RELEASE)),
        Some(r) => {
            for problem in [
                r.version().err(),
                r.board().err(),
                r.build_id().err(),
                r.boot_backend().err(),
                r.max_tries().err(),
            ]
            .into_iter()
            .flatten()
            {
                out.problems.push(problem.to_string());
            }
        }
    }
    out
}

fn check_init(out: &mut Findings, tree: &FsTree, path: &str, what: &str, arch: Arch) {
    match tree.get(path).map(|n| &n.kind) {
        Some(NodeKind::File(bytes)) => match crate::elf::inspect(bytes) {
            Ok(info) => {
                out.require(info.arch == elf_arch(arch), || {
                    format!(
                        "{what} is built for {:?}, the board is {arch:?}; rebuild it for {}",
                        info.arch,
                        arch.rust_target()
                    )
                });
                out.require(info.static_linked, || {
                    format!("{what} is dynamically linked (it needs a loader or shared libraries); device binaries must be static")
                });
            }
            Err(e) => out.problems.push(format!("{what}: {e}")),
        },
        _ => out.problems.push(format!("{what} is missing")),
    }
}

/// Slots that are too full for later updates to fit: each names the
/// partition and the board config key to raise.
pub fn headroom(cfg: &BoardConfig, usage: &[crate::assemble::Usage]) -> Vec<String> {
    let limit = 100 - cfg.partitions.slot_headroom_percent;
    usage
        .iter()
        .filter(|u| u.number != SELECTOR)
        .filter_map(|u| {
            let pct = u.used * 100 / u.size.max(1);
            (pct > limit).then(|| {
                format!(
                    "{} is {pct}% full; the board config asks for {}% headroom so later updates fit; raise its size in board-configs/{}.toml",
                    u.role, cfg.partitions.slot_headroom_percent, cfg.name
                )
            })
        })
        .collect()
}
