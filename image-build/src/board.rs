//! Board configuration files (`board-configs/<board>.toml`): the one layout
//! spec from which the image writer, boot files and checks are derived.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("unknown board '{name}'; known boards: {known}. Pass one of them to --board, or add board-configs/{name}.toml")]
    Unknown { name: String, known: String },
    #[error("cannot read board config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid board config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// CPU architecture of a board, as the kernel, Rust and Debian name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Aarch64,
    Armv7,
}

impl Arch {
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
            Arch::Armv7 => "armv7-unknown-linux-gnueabihf",
        }
    }

    pub fn debian_arch(self) -> &'static str {
        match self {
            Arch::Aarch64 => "arm64",
            Arch::Armv7 => "armhf",
        }
    }
}

pub use keel_contract::BootBackend;

/// `boot_backend = "uboot"`, by the contract's names.
fn boot_backend<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BootBackend, D::Error> {
    let name = String::deserialize(d)?;
    BootBackend::parse(&name).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unknown boot_backend '{name}': use \"uboot\" (the Pi firmware's tryboot needs the Raspberry Pi kernel; Keel's Pi boards boot through U-Boot, see docs/boards.md)"
        ))
    })
}

/// Where a file taken from a Debian package goes on the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileTarget {
    /// Partition 1, read by the ROM or firmware before any slot is chosen.
    Selector,
    /// Each boot slot (partition 2 and, on update, 3).
    Slot,
}

/// A file out of a Debian package, placed on the card.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageFile {
    pub package: String,
    /// Path inside the package, without a leading slash.
    pub path: String,
    /// File name in the partition; defaults to the path's last component.
    pub dest: Option<String>,
    pub target: FileTarget,
}

impl PackageFile {
    pub fn dest_name(&self) -> &str {
        self.dest
            .as_deref()
            .unwrap_or_else(|| self.path.rsplit('/').next().unwrap_or(&self.path))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    /// Debian package (or metapackage, followed to the versioned image package).
    pub package: String,
    /// Device trees from the kernel package, relative to its
    /// `usr/lib/linux-image-<kver>/`. Empty when firmware (QEMU) supplies one.
    #[serde(default)]
    pub dtbs: Vec<String>,
    /// Where they go: each boot slot (default; U-Boot loads them with the
    /// kernel) or the boot selector (the Pi firmware reads them there).
    #[serde(default = "slot_target")]
    pub dtbs_target: FileTarget,
    /// Modules the initramfs loads to reach the root filesystem and /data.
    pub initramfs_modules: Vec<String>,
    /// Further modules shipped in the root filesystem and loaded at boot.
    #[serde(default)]
    pub rootfs_modules: Vec<String>,
    /// Appended to the generated kernel command line.
    #[serde(default)]
    pub cmdline_extra: String,
}

/// Partition sizes in MiB; every partition starts on a 4 MiB boundary.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSizes {
    pub boot_selector_mib: u64,
    pub boot_slot_mib: u64,
    pub rootfs_slot_mib: u64,
    pub data_mib: u64,
    /// Free space a slot must keep for future, larger updates: a slot cannot
    /// grow after devices ship.
    #[serde(default = "default_headroom")]
    pub slot_headroom_percent: u64,
}

fn default_headroom() -> u64 {
    25
}

/// Where the kernel's device tree comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FdtSource {
    /// The one U-Boot itself runs with (QEMU hands one to U-Boot).
    #[default]
    Control,
    /// The one the Raspberry Pi firmware loaded as `config.txt` says and
    /// passed to U-Boot, with the firmware's command line put first.
    Firmware,
    /// A file in the slot's boot partition, loaded with the kernel.
    Slot(String),
}

fn fdt_source<'de, D: serde::Deserializer<'de>>(d: D) -> Result<FdtSource, D::Error> {
    Ok(match String::deserialize(d)?.as_str() {
        "control" => FdtSource::Control,
        "firmware" => FdtSource::Firmware,
        file => FdtSource::Slot(file.to_string()),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UbootConfig {
    /// `"control"` (default), `"firmware"`, or a device tree file name in
    /// the boot slot.
    #[serde(default, deserialize_with = "fdt_source")]
    pub fdt: FdtSource,
    /// How many times a slot on trial is booted before falling back.
    #[serde(default = "default_tries")]
    pub max_tries: u32,
}

fn slot_target() -> FileTarget {
    FileTarget::Slot
}

fn default_tries() -> u32 {
    3
}

/// The Raspberry Pi firmware's `config.txt` in the boot selector. The
/// firmware reads it before anything of Keel runs; `kernel=` names what it
/// starts (U-Boot) and the `device_tree` entries give each model its own.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaspberryPiConfig {
    /// Lines for every model (`[all]`), e.g. `arm_64bit=1`, `kernel=u-boot.bin`.
    pub config_txt: Vec<String>,
    /// One section per model filter, in order: the firmware applies every
    /// section whose filter matches the board, the last assignment winning.
    pub device_tree: Vec<PiDeviceTree>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiDeviceTree {
    /// A firmware model filter: `pi3`, `pi3+`, `pi4`, …
    pub filter: String,
    /// A device tree file in the boot selector.
    pub file: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuConfig {
    pub system: String,
    pub machine: String,
    pub cpu: Option<String>,
    pub memory: String,
    /// U-Boot build QEMU runs as firmware (`-bios`), out of a package.
    pub bios_package: Option<String>,
    pub bios_path: Option<String>,
    /// Raspberry Pi machines: QEMU cannot run the GPU firmware, so `cargo
    /// xtask qemu` plays its part for this model filter (e.g. `pi3` for
    /// `raspi3b`): it starts what the card's `config.txt` names as
    /// `kernel=` with the device tree it picks for the model.
    pub pi_model: Option<String>,
}

/// Update bundles: who may sign them and what they may replace.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// Public key files (relative to the repository) the image trusts. Empty:
    /// the key the build signs with (the development key unless --key).
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// Oldest running version a bundle of this build may replace.
    #[serde(default = "default_min_version")]
    pub min_version: String,
}

/// A static network configuration baked into the image (/etc/keel/network),
/// applied by init at boot. Boards without one get loopback only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// e.g. "eth0"; its driver must be in `rootfs_modules` or built in.
    pub interface: String,
    /// IPv4 address with prefix length, e.g. "10.0.2.15/24".
    pub address: String,
    pub gateway: Option<String>,
    #[serde(default)]
    pub nameservers: Vec<String>,
}

impl NetworkConfig {
    /// The /etc/keel/network file init reads.
    pub fn to_file(&self) -> String {
        let mut out = format!("interface={}\naddress={}\n", self.interface, self.address);
        if let Some(gw) = &self.gateway {
            out.push_str(&format!("gateway={gw}\n"));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver={ns}\n"));
        }
        out
    }

    fn validate(&self) -> Result<(), String> {
        let ip = |v: &str, what: &str| {
            v.parse::<std::net::Ipv4Addr>()
                .map(|_| ())
                .map_err(|_| format!("[network] {what} '{v}' is not an IPv4 address"))
        };
        let (addr, len) = self.address.split_once('/').ok_or_else(|| {
            format!(
                "[network] address '{}' needs a prefix length, e.g. 10.0.2.15/24",
                self.address
            )
        })?;
        ip(addr, "address")?;
        if len.parse::<u8>().ok().filter(|l| *l <= 32).is_none() {
            return Err(format!(
                "[network] address '{}': bad prefix length",
                self.address
            ));
        }
        if let Some(gw) = &self.gateway {
            ip(gw, "gateway")?;
        }
        for ns in &self.nameservers {
            ns.parse::<std::net::IpAddr>()
                .map_err(|_| format!("[network] nameserver '{ns}' is not an IP address"))?;
        }
        if self.interface.is_empty() || self.interface.len() >= 16 || self.interface.contains('/') {
            return Err(format!("[network] bad interface name '{}'", self.interface));
        }
        Ok(())
    }
}

fn default_min_version() -> String {
    "0.0.0".into()
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            trusted_keys: Vec::new(),
            min_version: default_min_version(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardConfig {
    pub name: String,
    pub description: String,
    pub arch: Arch,
    #[serde(deserialize_with = "boot_backend")]
    pub boot_backend: BootBackend,
    /// Kernel console, e.g. "ttyAMA0,115200".
    pub console: String,
    pub kernel: KernelConfig,
    pub partitions: PartitionSizes,
    #[serde(default)]
    pub files: Vec<PackageFile>,
    pub uboot: Option<UbootConfig>,
    pub raspberrypi: Option<RaspberryPiConfig>,
    pub qemu: Option<QemuConfig>,
    #[serde(default)]
    pub update: UpdateConfig,
    pub network: Option<NetworkConfig>,
}

impl BoardConfig {
    pub fn parse(text: &str, path: &Path) -> Result<Self, BoardError> {
        let cfg: BoardConfig = toml::from_str(text).map_err(|e| BoardError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub fn load(dir: &Path, name: &str) -> Result<Self, BoardError> {
        let path = dir.join(format!("{name}.toml"));
        if !path.is_file() {
            return Err(BoardError::Unknown {
                name: name.to_string(),
                known: known_boards(dir).join(", "),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|source| BoardError::Read {
            path: path.clone(),
            source,
        })?;
        let cfg = Self::parse(&text, &path)?;
        if cfg.name != name {
            return Err(BoardError::Invalid {
                path,
                message: format!(
                    "`name = \"{}\"` does not match the file name; rename one of them",
                    cfg.name
                ),
            });
        }
        Ok(cfg)
    }

    /// Every Debian package the board needs, kernel first.
    pub fn packages(&self) -> Vec<String> {
        let mut out = vec![self.kernel.package.clone()];
        let extra = self
            .files
            .iter()
            .map(|f| &f.package)
            .chain(self.qemu.iter().filter_map(|q| q.bios_package.as_ref()));
        for p in extra {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }

    fn validate(&self, path: &Path) -> Result<(), BoardError> {
        let invalid = |message: String| BoardError::Invalid {
            path: path.to_owned(),
            message,
        };
        if let Some(n) = &self.network {
            n.validate().map_err(invalid)?;
        }
        let Some(uboot) = &self.uboot else {
            return Err(invalid(
                "boot_backend = \"uboot\" needs a [uboot] section".into(),
            ));
        };
        if uboot.max_tries == 0 || uboot.max_tries > card_format::bootstate::MAX_TRIES_LIMIT {
            return Err(invalid(format!(
                "uboot.max_tries = {}: must be 1 to {}",
                uboot.max_tries,
                card_format::bootstate::MAX_TRIES_LIMIT
            )));
        }
        if (uboot.fdt == FdtSource::Firmware) != self.raspberrypi.is_some() {
            return Err(invalid(
                "uboot.fdt = \"firmware\" and a [raspberrypi] section go together: the Pi firmware loads the device tree that config.txt names".into(),
            ));
        }
        if let Some(q) = &self.qemu {
            let bios = q.bios_package.is_some() && q.bios_path.is_some();
            if bios == q.pi_model.is_some() || q.bios_package.is_some() != q.bios_path.is_some() {
                return Err(invalid(
                    "[qemu] needs either bios_package and bios_path (U-Boot as QEMU's firmware) or pi_model (the Pi firmware's part played by xtask)".into(),
                ));
            }
            if q.pi_model.is_some() && self.raspberrypi.is_none() {
                return Err(invalid(
                    "[qemu] pi_model needs a [raspberrypi] section".into(),
                ));
            }
        }
        let p = &self.partitions;
        for (what, mib, min) in [
            ("boot_selector_mib", p.boot_selector_mib, 40),
            ("boot_slot_mib", p.boot_slot_mib, 40),
            ("rootfs_slot_mib", p.rootfs_slot_mib, 8),
            ("data_mib", p.data_mib, 16),
        ] {
            if mib < min || mib % 4 != 0 {
                return Err(invalid(format!(
                    "partitions.{what} = {mib}: must be a multiple of 4 and at least {min} (MiB)"
                )));
            }
        }
        if p.slot_headroom_percent >= 100 {
            return Err(invalid(
                "partitions.slot_headroom_percent must be below 100".into(),
            ));
        }
        let reserved = keel_contract::cmdline::reserved_keys(&self.kernel.cmdline_extra);
        if !reserved.is_empty() {
            return Err(invalid(format!(
                "kernel.cmdline_extra sets {}: the build writes the keel.* parameters itself; remove them",
                reserved.join(", ")
            )));
        }
        if self.kernel.initramfs_modules.is_empty() {
            return Err(invalid(
                "kernel.initramfs_modules is empty: list the storage and filesystem modules needed to reach the root filesystem".into(),
            ));
        }
        Ok(())
    }
}

/// Board names: the `*.toml` files in the config directory, sorted.
pub fn known_boards(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".toml")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = r#"
name = "x"
description = "test"
arch = "aarch64"
boot_backend = "uboot"
console = "ttyAMA0,115200"
[kernel]
package = "linux-image-arm64"
initramfs_modules = ["virtio_blk"]
[partitions]
boot_selector_mib = 40
boot_slot_mib = 64
rootfs_slot_mib = 64
data_mib = 32
[uboot]
"#;

    #[test]
    fn parses_minimal_config() {
        let cfg = BoardConfig::parse(MIN, Path::new("x.toml")).unwrap();
        assert_eq!(cfg.arch.rust_target(), "aarch64-unknown-linux-musl");
        assert_eq!(cfg.uboot.unwrap().max_tries, 3);
        assert_eq!(cfg.partitions.slot_headroom_percent, 25);
    }

    #[test]
    fn rejects_unknown_key_and_bad_sizes() {
        let bad = MIN.replace("[uboot]", "[uboot]\nbogus = 1");
        let err = BoardConfig::parse(&bad, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
        let bad = MIN.replace("data_mib = 32", "data_mib = 30");
        let err = BoardConfig::parse(&bad, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("data_mib = 30"), "{err}");
        let bad = MIN.replace("[uboot]", "");
        assert!(BoardConfig::parse(&bad, Path::new("x.toml")).is_err());
    }

    #[test]
    fn every_shipped_board_config_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs");
        let boards = known_boards(&dir);
        assert!(boards.len() >= 5, "{boards:?}");
        for name in boards {
            BoardConfig::load(&dir, &name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn unknown_board_lists_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rpi4.toml"), "").unwrap();
        std::fs::write(dir.path().join("bbb.toml"), "").unwrap();
        let err = BoardConfig::load(dir.path(), "rpi5")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown board 'rpi5'") && err.contains("bbb, rpi4"),
            "{err}"
        );
    }
}
