//! Keel's bytes-on-disk library: everything that turns inputs into an SD-card
//! image, tested without the command line.

// Always available: small and dependency-free, shared with the device.
pub mod mbr;
pub mod slice;
pub mod tryboot;
pub mod ubootstate;

// The image writers and readers (feature `build`, on by default).
#[cfg(feature = "build")]
pub mod artifacts;
#[cfg(feature = "build")]
pub mod assemble;
#[cfg(feature = "build")]
pub mod bmap;
#[cfg(feature = "build")]
pub mod board;
#[cfg(feature = "build")]
pub mod bootfiles;
#[cfg(feature = "build")]
pub mod check;
#[cfg(feature = "build")]
pub mod cpio;
#[cfg(feature = "build")]
pub mod elf;
#[cfg(feature = "build")]
pub mod ext4;
#[cfg(feature = "build")]
pub mod fat;
#[cfg(feature = "build")]
pub mod fstree;
#[cfg(feature = "build")]
pub mod layout;
#[cfg(feature = "build")]
pub mod lock;
#[cfg(feature = "build")]
pub mod modules;
#[cfg(feature = "build")]
pub mod squashfs;
#[cfg(feature = "build")]
pub mod uboot;
