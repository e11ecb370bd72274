//! File names inside the boot partitions, shared by the image builder, the
//! boot script it generates and the device's boot backends.

/// The kernel, in every slot's boot partition.
pub const KERNEL: &str = "vmlinuz";
/// The initramfs, in every slot's boot partition.
pub const INITRAMFS: &str = "initrd.img";
/// The boot script loads a slot's kernel command line (a U-Boot env file)
/// by this name, with `${keel_slot}` set to the slot's letter.
pub const BOOTARGS_TEMPLATE: &str = "bootargs-${keel_slot}.env";

/// A slot's kernel command line. Every boot partition holds both slots'
/// files, so one boot partition image serves either slot and an update
/// bundle carries it once.
pub fn bootargs(slot: crate::Slot) -> &'static str {
    match slot {
        crate::Slot::A => "bootargs-a.env",
        crate::Slot::B => "bootargs-b.env",
    }
}
/// U-Boot boards: Keel's boot script, in the boot selector.
pub const BOOT_SCRIPT: &str = "boot.scr";
/// Raspberry Pi: the firmware's configuration, in the boot selector.
pub const CONFIG_TXT: &str = "config.txt";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_names_each_slots_file() {
        for s in crate::Slot::ALL {
            assert_eq!(
                BOOTARGS_TEMPLATE.replace("${keel_slot}", s.as_str()),
                bootargs(s)
            );
        }
    }
}
