//! The payloads inside an update bundle, by name: the builder writes them,
//! the applier decides from the name where each one goes.

use crate::Slot;

/// The whole boot partition image, the same for either slot (it holds both
/// slots' command lines; the boot script picks its own).
pub const BOOT: &str = "boot";
/// Older bundles: slot A's and slot B's boot partition images, each with
/// only its own command line. Still accepted.
pub const BOOT_A: &str = "boot-a";
pub const BOOT_B: &str = "boot-b";
/// The root filesystem (squashfs), the same for either slot.
pub const ROOTFS: &str = "rootfs";

/// The older, per-slot boot payload written when `slot` is updated.
pub fn legacy_boot(slot: Slot) -> &'static str {
    match slot {
        Slot::A => BOOT_A,
        Slot::B => BOOT_B,
    }
}

/// Where a payload goes when `target` is the slot being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Written to this partition.
    Partition(u8),
    /// For the other slot: read and checked, never written.
    Skip,
}

/// None for a payload this version does not know.
pub fn destination(name: &str, target: Slot) -> Option<Destination> {
    Some(match name {
        ROOTFS => Destination::Partition(target.rootfs_partition()),
        BOOT => Destination::Partition(target.boot_partition()),
        BOOT_A | BOOT_B if name == legacy_boot(target) => {
            Destination::Partition(target.boot_partition())
        }
        BOOT_A | BOOT_B => Destination::Skip,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(
            destination(ROOTFS, Slot::B),
            Some(Destination::Partition(6))
        );
        assert_eq!(
            destination(BOOT_B, Slot::B),
            Some(Destination::Partition(3))
        );
        assert_eq!(destination(BOOT_A, Slot::B), Some(Destination::Skip));
        assert_eq!(destination(BOOT, Slot::A), Some(Destination::Partition(2)));
        assert_eq!(destination("kernel", Slot::A), None);
    }
}
