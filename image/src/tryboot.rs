//! The Raspberry Pi firmware's `autoboot.txt`: written at build time and
//! rewritten on the device to confirm or revert a slot. Both sides use these
//! two functions, and every variant has the same length, so a rewrite
//! changes one sector of file data and nothing else (see docs/power-cut.md).

/// `autoboot.txt` booting `default` and, on a one-shot `tryboot`, `trial`.
pub fn autoboot_txt(default: u8, trial: u8) -> String {
    format!("[all]\ntryboot_a_b=1\nboot_partition={default}\n[tryboot]\nboot_partition={trial}\n")
}

/// The default boot partition named in an `autoboot.txt`.
pub fn autoboot_default(text: &str) -> Option<u8> {
    let mut section = "all";
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
        } else if section == "all" {
            if let Some(v) = line.strip_prefix("boot_partition=") {
                return v.trim().parse().ok();
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
        assert_eq!(autoboot_txt(2, 3).len(), autoboot_txt(3, 2).len());
        assert_eq!(autoboot_default(&autoboot_txt(3, 2)), Some(3));
        assert_eq!(autoboot_default("[tryboot]\nboot_partition=3\n"), None);
    }
}
