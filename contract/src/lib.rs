//! The contract between Keel's host tools and its devices: every fact that
//! the image builder writes and the device reads back lives here once.
//!
//! - [`Slot`] and the partition roles of the card ([`partition`]);
//! - the kernel command line's `keel.*` parameters ([`cmdline`]);
//! - the release file `/etc/keel/release` ([`release`]);
//! - runtime paths on the device ([`paths`]);
//! - the payload names inside an update bundle ([`payload`]);
//! - the control-socket protocol between init and its clients ([`control`]);
//! - the names of the files in a boot partition ([`bootfiles`]).
//!
//! No dependencies and no I/O beyond the control-socket client: the host
//! and the device link the same code, so they cannot disagree.

#![forbid(unsafe_code)]

pub mod bootfiles;
pub mod cmdline;
pub mod control;
pub mod partition;
pub mod paths;
pub mod payload;
pub mod release;
mod slot;

pub use cmdline::{KernelCmdline, PartUuid};
pub use release::{BootBackend, Convenience, Release};
pub use slot::Slot;
