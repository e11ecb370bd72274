//! File names inside the boot partitions, shared by the image builder, the
//! boot script it generates and the device's boot backends.

/// The kernel, in every slot's boot partition.
pub const KERNEL: &str = "vmlinuz";
/// The initramfs, in every slot's boot partition.
pub const INITRAMFS: &str = "initrd.img";
/// U-Boot boards: the slot's kernel command line as a U-Boot env file.
pub const BOOTARGS: &str = "bootargs.env";
/// U-Boot boards: Keel's boot script, in the boot selector.
pub const BOOT_SCRIPT: &str = "boot.scr";
/// Raspberry Pi firmware: the slot selection, in the boot selector.
pub const AUTOBOOT: &str = "autoboot.txt";
/// Raspberry Pi firmware: what to load, in each slot.
pub const CONFIG_TXT: &str = "config.txt";
/// Raspberry Pi firmware: the slot's kernel command line.
pub const CMDLINE_TXT: &str = "cmdline.txt";
