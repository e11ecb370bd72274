//! Puts a whole card together from a board config and its inputs: boot
//! files, initramfs, root filesystem, data partition, partition table.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use card_format::bootstate;
use keel_contract::bootfiles::{bootargs, BOOT_SCRIPT, CONFIG_TXT, INITRAMFS, KERNEL};
use keel_contract::partition::{BOOT_A, BOOT_B, DATA, ROOTFS_A, SELECTOR};
use keel_contract::{paths, Release, Slot};

use crate::board::{BoardConfig, FileTarget};
use crate::bootfiles;
use crate::fat::FatFile;
use crate::fstree::{FsTree, Node, NodeKind};
use crate::layout::{derive, Layout};
use crate::modules::ModuleIndex;
use crate::slice::PartitionSlice;

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("{what}: {path}: {source}")]
    Io {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the kernel package has no {0}; is kernel.package a Debian linux-image package?")]
    Kernel(String),
    #[error("{path} is not in package {package}; check `path` in the board config's [[files]]")]
    MissingFile { package: String, path: String },
    #[error("package {0} is used by the board config but was not fetched")]
    MissingPackage(String),
    #[error(transparent)]
    Modules(#[from] crate::modules::ModulesError),
    #[error(transparent)]
    Fat(#[from] crate::fat::FatError),
    #[error(transparent)]
    Squashfs(#[from] crate::squashfs::SquashfsError),
    #[error(transparent)]
    Ext4(#[from] crate::ext4::Ext4Error),
    #[error(transparent)]
    Mbr(#[from] card_format::mbr::MbrError),
    #[error(transparent)]
    Release(#[from] keel_contract::release::ReleaseError),
    #[error("the boot state: {0}")]
    BootState(card_format::bootstate::RecordError),
    #[error("the root filesystem is {size} bytes but its slot holds {slot}; raise partitions.rootfs_slot_mib in the board config")]
    RootfsTooBig { size: u64, slot: u64 },
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> AssembleError {
    let (what, path) = (what.to_string(), path.to_owned());
    move |source| AssembleError::Io { what, path, source }
}

/// Everything an image is made of besides the board config.
pub struct Inputs<'a> {
    pub cfg: &'a BoardConfig,
    /// Unpacked Debian packages, by the name the board config uses.
    pub packages: &'a BTreeMap<String, PathBuf>,
    pub init: &'a Path,
    pub agent: &'a Path,
    pub overlay: &'a Path,
    pub version: &'a str,
    pub build_id: &'a str,
    /// Seconds since the epoch stamped on every file (SOURCE_DATE_EPOCH).
    pub epoch: u64,
    /// Public keys the device accepts bundles from: (file name, key text).
    pub trusted_keys: &'a [(String, String)],
    /// The development conveniences the image keeps (none for a release).
    pub conveniences: &'a [keel_contract::Convenience],
}

/// How full each partition is, for the build's report.
#[derive(Debug, Clone)]
pub struct Usage {
    pub number: u8,
    pub role: &'static str,
    pub used: u64,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct Report {
    /// The root filesystem; with slot A's boot partition (which serves
    /// either slot), the payloads of the update bundle.
    pub rootfs_image: Vec<u8>,
    pub kernel_release: String,
    pub initramfs_modules: Vec<String>,
    pub usage: Vec<Usage>,
}

/// The kernel package's release (the one directory under lib/modules).
pub fn kernel_release(kernel_root: &Path) -> Result<String, AssembleError> {
    let dir = kernel_root.join("lib/modules");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|_| AssembleError::Kernel("lib/modules directory".into()))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
        .pop()
        .ok_or_else(|| AssembleError::Kernel("kernel release under lib/modules".into()))
}

/// A device path as a path inside the tree being assembled.
fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// The release file of the image being built.
fn release(inputs: &Inputs, kernel: &str) -> Result<Release, AssembleError> {
    let cfg = inputs.cfg;
    Ok(Release {
        version: Some(inputs.version.to_string()),
        board: Some(cfg.name.clone()),
        build_id: Some(inputs.build_id.to_string()),
        kernel: Some(kernel.to_string()),
        boot_backend: Some(cfg.boot_backend.name().to_string()),
        max_tries: Some(cfg.uboot.as_ref().map_or(1, |u| u.max_tries).to_string()),
        build_time: Some(inputs.epoch.to_string()),
        conveniences: Some(keel_contract::Convenience::list(inputs.conveniences)),
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, AssembleError> {
    std::fs::read(path).map_err(io_err(what, path))
}

fn package_root<'a>(inputs: &'a Inputs, name: &str) -> Result<&'a Path, AssembleError> {
    inputs
        .packages
        .get(name)
        .map(PathBuf::as_path)
        .ok_or_else(|| AssembleError::MissingPackage(name.to_string()))
}

/// Builds the card at `out` (which the caller renames into place).
pub fn build_image(inputs: &Inputs, out: &Path) -> Result<Report, AssembleError> {
    let cfg = inputs.cfg;
    let layout = Layout::for_board(cfg);
    let kroot = package_root(inputs, &cfg.kernel.package)?;
    let kver = kernel_release(kroot)?;
    let mods_dir = kroot.join("lib/modules").join(&kver);
    let index = ModuleIndex::scan(&mods_dir)?;
    let init = read(inputs.init, "reading the init binary")?;

    // Initramfs: just enough to find and mount the slot's root filesystem.
    let early = index.closure(&cfg.kernel.initramfs_modules)?;
    let mut initramfs = FsTree::new();
    initramfs.file("init", 0o755, init.clone());
    initramfs.file(
        rel(paths::INITRAMFS_MARKER),
        0o644,
        format!("kernel={kver}\n"),
    );
    let mut load_list = String::new();
    for m in &early {
        let file = format!("{}.ko", m.name);
        initramfs.file(
            &format!("lib/modules/{file}"),
            0o644,
            read(&mods_dir.join(&m.rel_path), "reading a module")?,
        );
        load_list.push_str(&file);
        load_list.push('\n');
    }
    initramfs.file(rel(paths::INITRAMFS_MODULES), 0o644, load_list);
    for d in ["dev", "proc", "sys", "newroot"] {
        initramfs.dir(d);
    }
    // The kernel opens /dev/console for init before devtmpfs exists.
    initramfs.insert(
        "dev/console",
        Node {
            mode: 0o600,
            kind: NodeKind::CharDevice { major: 5, minor: 1 },
        },
    );
    let mut initrd = Vec::new();
    crate::cpio::write_initramfs_gz(&mut initrd, &initramfs, inputs.epoch as u32)
        .map_err(io_err("writing the initramfs", out))?;

    // Root filesystem of slot A.
    let mut rootfs = FsTree::new();
    add_overlay(&mut rootfs, inputs.overlay, inputs.overlay)?;
    for d in ["proc", "sys", "dev", "run", "tmp", "data", "root"] {
        rootfs.dir(d);
    }
    rootfs.file(rel(paths::INIT), 0o755, init);
    rootfs.file(
        rel(paths::AGENT),
        0o755,
        read(inputs.agent, "reading the agent binary")?,
    );
    rootfs.file(
        rel(paths::RELEASE),
        0o644,
        release(inputs, &kver)?.to_text()?,
    );
    // /etc is read-only: whoever configures the network writes /run.
    rootfs.symlink("etc/resolv.conf", paths::RESOLV_CONF);
    if let Some(net) = &cfg.network {
        rootfs.file(rel(paths::NETWORK), 0o644, net.to_file().into_bytes());
    }
    for (name, text) in inputs.trusted_keys {
        rootfs.file(
            &format!("{}/{name}", rel(paths::TRUSTED_KEYS_DIR)),
            0o644,
            text.clone(),
        );
    }
    let mut late_list = String::new();
    for m in index.closure(&cfg.kernel.rootfs_modules)? {
        let rel = m.rel_path.display().to_string();
        rootfs.file(
            &format!("lib/modules/{kver}/{rel}"),
            0o644,
            read(&mods_dir.join(&m.rel_path), "reading a module")?,
        );
        late_list.push_str(&rel);
        late_list.push('\n');
    }
    rootfs.file(
        &format!("lib/modules/{kver}/{}", paths::ROOTFS_MODULES_FILE),
        0o644,
        late_list,
    );
    let mut squash = std::io::Cursor::new(Vec::new());
    crate::squashfs::write(&rootfs, &mut squash, inputs.epoch as u32)?;
    let squash = squash.into_inner();
    let (rootfs_off, rootfs_len) = layout.span(ROOTFS_A);
    if squash.len() as u64 > rootfs_len {
        return Err(AssembleError::RootfsTooBig {
            size: squash.len() as u64,
            slot: rootfs_len,
        });
    }

    // Boot slot A and the boot selector.
    let mut slot_files = vec![
        FatFile {
            path: KERNEL.into(),
            data: read(
                &kroot.join("boot").join(format!("vmlinuz-{kver}")),
                "reading the kernel",
            )?,
        },
        FatFile {
            path: INITRAMFS.into(),
            data: initrd,
        },
    ];
    let mut dtb_selector_files = Vec::new();
    for dtb in &cfg.kernel.dtbs {
        let src = kroot
            .join("usr/lib")
            .join(format!("linux-image-{kver}"))
            .join(dtb);
        let name = dtb.rsplit('/').next().unwrap_or(dtb);
        let file = FatFile {
            path: name.into(),
            data: read(&src, "reading a device tree")?,
        };
        match cfg.kernel.dtbs_target {
            FileTarget::Selector => dtb_selector_files.push(file),
            FileTarget::Slot => slot_files.push(file),
        }
    }
    let mut selector_files = dtb_selector_files;
    for f in &cfg.files {
        let src = package_root(inputs, &f.package)?.join(&f.path);
        if !src.is_file() {
            return Err(AssembleError::MissingFile {
                package: f.package.clone(),
                path: f.path.clone(),
            });
        }
        let file = FatFile {
            path: f.dest_name().into(),
            data: read(&src, "reading a firmware file")?,
        };
        match f.target {
            FileTarget::Selector => selector_files.push(file),
            FileTarget::Slot => slot_files.push(file),
        }
    }
    let arch = match cfg.arch {
        crate::board::Arch::Aarch64 => crate::uboot::UbootArch::Arm64,
        crate::board::Arch::Armv7 => crate::uboot::UbootArch::Arm,
    };
    selector_files.push(FatFile {
        path: BOOT_SCRIPT.into(),
        data: crate::uboot::script_image(
            &bootfiles::uboot_script(cfg),
            "keel boot selector",
            arch,
            inputs.epoch as u32,
        ),
    });
    if let Some(text) = bootfiles::config_txt(cfg) {
        selector_files.push(FatFile {
            path: CONFIG_TXT.into(),
            data: text.into(),
        });
    }
    // Each slot's kernel command line names its own root filesystem; both
    // go into the boot partition, so the same image serves either slot and
    // an update carries it once.
    let mut boot_files = slot_files;
    for slot in Slot::ALL {
        boot_files.push(FatFile {
            path: bootargs(slot).into(),
            data: bootfiles::uboot_bootargs(&layout, cfg, slot).into(),
        });
    }

    // Write the card. A fresh file, sized up front so untouched regions
    // (rootfs B, gaps) stay sparse holes.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(io_err("creating the image", out))?;
    file.set_len(layout.image_size)
        .map_err(io_err("sizing the image", out))?;
    layout.table.write_to(&mut file)?;
    // The boot state: both records say slot a holds this build's image and
    // slot b nothing.
    let initial = bootstate::Record::initial(&format!("{}@{}", inputs.version, inputs.build_id))
        .encode()
        .map_err(AssembleError::BootState)?;
    for off in bootstate::COPIES {
        file.seek(SeekFrom::Start(off))
            .map_err(io_err("writing the boot state", out))?;
        file.write_all(&initial)
            .map_err(io_err("writing the boot state", out))?;
    }
    let mut usage = Vec::new();
    for (number, role, files) in [
        (SELECTOR, "boot selector", &selector_files),
        (BOOT_A, "boot A", &boot_files),
        (BOOT_B, "boot B", &Vec::new()),
    ] {
        let (off, len) = layout.span(number);
        let label = match number {
            SELECTOR => "KEEL-SEL",
            _ => "KEEL-BOOT",
        };
        let vol = derive(&cfg.name, label);
        let vol = u32::from_le_bytes([vol[0], vol[1], vol[2], vol[3]]);
        let part =
            PartitionSlice::new(&mut file, off, len).map_err(io_err("opening a partition", out))?;
        crate::fat::format_and_fill(part, len, label, vol, files, inputs.epoch)?;
        let part =
            PartitionSlice::new(&mut file, off, len).map_err(io_err("opening a partition", out))?;
        let (used, size) = crate::fat::usage(part)?;
        usage.push(Usage {
            number,
            role,
            used,
            size,
        });
    }
    file.seek(SeekFrom::Start(rootfs_off))
        .map_err(io_err("writing the root filesystem", out))?;
    file.write_all(&squash)
        .map_err(io_err("writing the root filesystem", out))?;
    usage.push(Usage {
        number: ROOTFS_A,
        role: "rootfs A",
        used: squash.len() as u64,
        size: rootfs_len,
    });
    file.sync_all().map_err(io_err("syncing the image", out))?;
    drop(file);

    let (data_off, data_len) = layout.span(DATA);
    let uuid = derive(&cfg.name, "data-uuid");
    let seed = derive(&cfg.name, "data-hash-seed");
    let mut uuid16 = [0u8; 16];
    let mut seed16 = [0u8; 16];
    uuid16.copy_from_slice(&uuid[..16]);
    seed16.copy_from_slice(&seed[..16]);
    // RFC 4122 version 4 / variant bits, so tools print a well-formed UUID.
    uuid16[6] = (uuid16[6] & 0x0f) | 0x40;
    uuid16[8] = (uuid16[8] & 0x3f) | 0x80;
    crate::ext4::make_ext4(
        out,
        data_off,
        data_len,
        "keel-data",
        uuid16,
        seed16,
        inputs.epoch,
    )?;
    File::open(out)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing the image", out))?;

    Ok(Report {
        rootfs_image: squash,
        kernel_release: kver,
        initramfs_modules: early.iter().map(|m| m.name.clone()).collect(),
        usage,
    })
}

/// Copies `rootfs-overlay/` verbatim: regular files keep their executable
/// bit, symlinks stay symlinks; owner is always root.
fn add_overlay(tree: &mut FsTree, base: &Path, dir: &Path) -> Result<(), AssembleError> {
    use std::os::unix::fs::PermissionsExt;
    if !dir.exists() {
        return Ok(());
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_err("reading the overlay", dir))?
        .collect::<Result<_, _>>()
        .map_err(io_err("reading the overlay", dir))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .to_string_lossy()
            .to_string();
        let meta =
            std::fs::symlink_metadata(&path).map_err(io_err("reading the overlay", &path))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(io_err("reading the overlay", &path))?;
            tree.symlink(&rel, &target.to_string_lossy());
        } else if meta.is_dir() {
            tree.dir(&rel);
            add_overlay(tree, base, &path)?;
        } else {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            tree.file(&rel, mode, read(&path, "reading the overlay")?);
        }
    }
    Ok(())
}
