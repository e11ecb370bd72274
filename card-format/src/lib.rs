//! Formats on a Keel card that both the host (image builder, `xtask
//! apply`/`inspect`) and the device (the applier, the boot state) read or
//! write: the partition table and the boot-state records. Pure parsing and
//! encoding, no host-only dependencies.

#![forbid(unsafe_code)]

pub mod bootstate;
pub mod mbr;
