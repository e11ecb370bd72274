//! Keel's manufacturing line, host only: a device CA ([`ca`]) that signs
//! one identity per serial ([`serial`]), the AWS IoT set-up that accepts
//! them ([`aws`]), and burning cards ([`burn`], [`batch`]): only the
//! image's mapped blocks written ([`copy`]) and read back, the identity
//! written onto the data partition ([`card`]), the wrong disk refused
//! ([`target`]), every serial recorded once in a manifest ([`ledger`]).
//!
//! docs/manufacturing.md is the operator's guide and says why each
//! decision was taken.

#![deny(unsafe_code)]

pub mod aws;
pub mod batch;
pub mod bench;
pub mod burn;
pub mod ca;
pub mod card;
pub mod copy;
pub mod image;
pub mod ledger;
pub mod serial;
mod sys;
pub mod target;

pub use burn::BurnError;
pub use serial::Serial;
