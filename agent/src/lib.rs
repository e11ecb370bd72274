//! Keel's device agent as a library: what the `agent` binary does, with
//! every decision testable on the host.
//!
//! - [`device`]: what the running system is (release file, kernel command
//!   line, the card it booted from, the keys it trusts);
//! - [`policy`]: pure decisions: confirm a trial slot, give up on it, note
//!   a rollback;
//! - [`store`]: the agent's records on /data, written durably;
//! - [`ops`]: the commands (status, update, confirm, revert, the boot-time
//!   daemon) over small traits for the card, the clock and init, so tests
//!   put fakes in their place;
//! - [`cli`]: the command line, parsed by hand (no clap on the device).

#![deny(unsafe_code)]

pub mod cli;
pub mod device;
pub mod download;
pub mod error;
pub mod fleet_device;
pub mod ops;
pub mod policy;
pub mod store;
pub(crate) mod sys;

pub use error::AgentError;
