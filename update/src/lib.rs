//! The A/B update applier and the boot backends behind one interface, used
//! by the device agent on its own card and by `cargo xtask apply` on an
//! image file: the same code, the same guarantees.

#![deny(unsafe_code)]

pub mod applier;
pub mod card;
pub mod state;
mod sys;
pub mod uboot;

pub use applier::{apply, image_id, Applied, ApplyError, ApplyOptions};
pub use card::{Card, CardError};
pub use state::{BootFlow, BootState, Slot, StateError};
