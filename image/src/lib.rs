//! Keel's bytes-on-disk library: everything that turns inputs into an SD-card
//! image, tested without the command line.

pub mod bmap;
pub mod board;
pub mod cpio;
pub mod elf;
pub mod ext4;
pub mod fat;
pub mod fstree;
pub mod layout;
pub mod mbr;
pub mod slice;
pub mod modules;
pub mod squashfs;
pub mod uboot;
