//! The Raspberry Pi firmware's `autoboot.txt`: written at build time and
//! rewritten on the device to confirm or revert a slot. Both sides use these
//! two functions, and every variant has the same length, so a rewrite
//! changes one sector of file data and nothing else (see docs/power-cut.md).

use keel_contract::Slot;

/// `autoboot.txt` booting `default`'s boot partition and, on a one-shot
/// `tryboot`, the other slot's.
pub fn text(default: Slot) -> String {
    format!(
        "[all]\ntryboot_a_b=1\nboot_partition={}\n[tryboot]\nboot_partition={}\n",
        default.boot_partition(),
        default.other().boot_partition()
    )
}

/// The slot whose boot partition an `autoboot.txt` names by default.
pub fn default_slot(text: &str) -> Option<Slot> {
    let mut section = "all";
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
        } else if section == "all" {
            if let Some(v) = line.strip_prefix("boot_partition=") {
                return Slot::from_boot_partition(v.trim().parse().ok()?);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_have_one_length_and_parse_back() {
        assert_eq!(text(Slot::A).len(), text(Slot::B).len());
        assert_eq!(default_slot(&text(Slot::B)), Some(Slot::B));
        assert_eq!(default_slot("[tryboot]\nboot_partition=3\n"), None);
        assert!(
            text(Slot::A).contains("tryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3")
        );
    }
}
