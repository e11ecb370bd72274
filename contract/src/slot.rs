//! The two A/B slots. A slot is a pair of partitions: its boot partition
//! (kernel, initramfs, device trees) and its root filesystem.

use std::fmt;

use crate::partition;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const ALL: [Slot; 2] = [Slot::A, Slot::B];

    /// The slot's name as written everywhere: `a` or `b`.
    pub fn letter(self) -> char {
        match self {
            Slot::A => 'a',
            Slot::B => 'b',
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// `a` or `b`, in either case: a bootloader or a hand-edited
    /// `cmdline.txt` may say `A`, and the whole device must read it the
    /// same way. Anything else is not a slot.
    pub fn parse(s: &str) -> Option<Slot> {
        match s {
            "a" | "A" => Some(Slot::A),
            "b" | "B" => Some(Slot::B),
            _ => None,
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// MBR number of the slot's boot partition.
    pub fn boot_partition(self) -> u8 {
        match self {
            Slot::A => partition::BOOT_A,
            Slot::B => partition::BOOT_B,
        }
    }

    /// MBR number of the slot's root filesystem.
    pub fn rootfs_partition(self) -> u8 {
        match self {
            Slot::A => partition::ROOTFS_A,
            Slot::B => partition::ROOTFS_B,
        }
    }

    /// The slot whose boot partition is `number`, if any.
    pub fn from_boot_partition(number: u8) -> Option<Slot> {
        Slot::ALL.into_iter().find(|s| s.boot_partition() == number)
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_partitions() {
        assert_eq!(Slot::parse("a"), Some(Slot::A));
        assert_eq!(Slot::parse("B"), Some(Slot::B));
        for bad in ["", "c", "ab", " a", "a "] {
            assert_eq!(Slot::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Slot::B.to_string(), "b");
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(
            (Slot::A.boot_partition(), Slot::A.rootfs_partition()),
            (2, 5)
        );
        assert_eq!(
            (Slot::B.boot_partition(), Slot::B.rootfs_partition()),
            (3, 6)
        );
        assert_eq!(Slot::from_boot_partition(3), Some(Slot::B));
        assert_eq!(Slot::from_boot_partition(5), None);
    }
}
