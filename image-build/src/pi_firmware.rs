//! How the Raspberry Pi firmware reads `config.txt`, for what Keel needs of
//! it: which file it starts as the kernel and which device tree it loads,
//! for a given board model. `cargo xtask qemu` plays the firmware's part on
//! QEMU's raspi3b with it, and the tests check each model's device tree.
//!
//! Semantics (Raspberry Pi documentation, "Conditional filters"): lines
//! before any section, and in `[all]`, apply to every model; a model filter
//! (`[pi3]`, `[pi3+]`, `[pi4]`, …) applies its lines only to matching
//! models and replaces the previous model filter; `[all]` resets the
//! filters; `[none]` matches nothing. Later assignments win. Filters Keel
//! does not know match nothing, so an unknown section is never applied.

use std::collections::BTreeMap;

/// The models Keel's Pi boards cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiModel {
    Pi3B,
    Pi3BPlus,
    Pi3APlus,
    Pi4B,
    Pi400,
    Cm4,
}

impl PiModel {
    pub const ALL: [PiModel; 6] = [
        PiModel::Pi3B,
        PiModel::Pi3BPlus,
        PiModel::Pi3APlus,
        PiModel::Pi4B,
        PiModel::Pi400,
        PiModel::Cm4,
    ];

    /// Whether a section header's filter selects this model.
    pub fn matches(self, filter: &str) -> bool {
        use PiModel::*;
        match filter {
            "all" => true,
            "pi3" => matches!(self, Pi3B | Pi3BPlus | Pi3APlus),
            "pi3+" => matches!(self, Pi3BPlus | Pi3APlus),
            "pi4" => matches!(self, Pi4B | Pi400 | Cm4),
            "pi400" => self == Pi400,
            "cm4" => self == Cm4,
            _ => false,
        }
    }

    /// The model filter that names exactly the board QEMU emulates (and
    /// that a board config's `[qemu] pi_model` names).
    pub fn from_qemu_model(name: &str) -> Option<PiModel> {
        match name {
            "pi3" => Some(PiModel::Pi3B),
            "pi4" => Some(PiModel::Pi4B),
            _ => None,
        }
    }
}

/// The settings `config.txt` gives `model`, the last assignment of each
/// key winning.
pub fn settings(text: &str, model: PiModel) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut active = true;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(filter) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            active = model.matches(filter.trim());
            continue;
        }
        if !active {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

/// What the firmware starts on `model`: (kernel file, device tree file).
pub fn boot_files(text: &str, model: PiModel) -> (Option<String>, Option<String>) {
    let s = settings(text, model);
    (s.get("kernel").cloned(), s.get("device_tree").cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEL_PI3: &str = "arm_64bit=1\nkernel=u-boot.bin\n[pi3]\ndevice_tree=bcm2837-rpi-3-b.dtb\n[pi3+]\ndevice_tree=bcm2837-rpi-3-b-plus.dtb\n[all]\n";

    #[test]
    fn each_pi3_model_gets_its_own_device_tree() {
        let dt = |m| boot_files(KEEL_PI3, m).1;
        assert_eq!(dt(PiModel::Pi3B).as_deref(), Some("bcm2837-rpi-3-b.dtb"));
        assert_eq!(
            dt(PiModel::Pi3BPlus).as_deref(),
            Some("bcm2837-rpi-3-b-plus.dtb")
        );
        assert_eq!(
            dt(PiModel::Pi3APlus).as_deref(),
            Some("bcm2837-rpi-3-b-plus.dtb")
        );
        assert_eq!(dt(PiModel::Pi4B), None);
        assert_eq!(
            boot_files(KEEL_PI3, PiModel::Pi4B).0.as_deref(),
            Some("u-boot.bin")
        );
    }

    #[test]
    fn unconditional_lines_are_not_a_model_choice() {
        // The defect this replaces: two unconditional lines, the last wins
        // for every model.
        let old = "device_tree=bcm2837-rpi-3-b.dtb\ndevice_tree=bcm2837-rpi-3-b-plus.dtb\n";
        assert_eq!(
            boot_files(old, PiModel::Pi3B).1.as_deref(),
            Some("bcm2837-rpi-3-b-plus.dtb")
        );
    }

    #[test]
    fn all_resets_and_unknown_filters_match_nothing() {
        let t = "[pi4]\nkernel=a\n[all]\nkernel=b\n[board-type=0x11]\nkernel=c\n[none]\nkernel=d\n";
        assert_eq!(settings(t, PiModel::Pi4B)["kernel"], "b");
        assert_eq!(settings(t, PiModel::Pi3B)["kernel"], "b");
    }
}
