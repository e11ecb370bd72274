//! Formats on a Keel card that both the host (image builder, `xtask
//! apply`/`inspect`) and the device (the applier, the boot backends) read
//! or write. Pure parsing and encoding, no host-only dependencies.

#![forbid(unsafe_code)]

pub mod autoboot;
pub mod bootstate;
pub mod fat;
pub mod mbr;
