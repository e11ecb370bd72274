//! Host-side image assembly: everything that turns a board config, Debian
//! packages and the device binaries into an SD-card image and its update
//! bundle, tested without the command line. Never linked into a device
//! binary (see ARCHITECTURE.md).

pub mod artifacts;
pub mod assemble;
pub mod bmap;
pub mod board;
pub mod bootfiles;
pub mod card;
pub mod check;
pub mod cpio;
pub mod elf;
pub mod ext4;
pub mod fat;
pub mod fstree;
pub mod keys;
pub mod layout;
pub mod lock;
pub mod modules;
pub mod outputs;
pub mod pi_firmware;
pub mod qemu;
pub mod slice;
pub mod squashfs;
mod sys;
pub mod uboot;
