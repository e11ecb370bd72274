//! Keel's fleet client: the device side of AWS IoT Core (classic device
//! shadow, jobs-driven updates) over the `mqtt` crate, and a polling mode
//! that follows an HTTPS channel manifest instead.
//!
//! The protocol logic is pure state machines ([`shadow`], [`jobs`]) unit
//! tested without a broker; [`runner`] does the I/O. The rest of the agent
//! is reached through one small trait, [`Device`]. A device without an
//! identity of its own obtains one first through [`provision`] (fleet
//! provisioning by claim).

#![forbid(unsafe_code)]

pub mod config;
pub mod csr;
pub mod device;
pub mod identity;
pub mod jobdoc;
pub mod jobs;
pub mod log;
pub mod poll;
pub mod provision;
pub mod runner;
pub mod shadow;
pub mod store;

pub use config::{Config, ConfigError};
pub use device::{Device, DeviceStatus, Settings, UpdateError, UpdateOutcome, UpdateStarted};
pub use log::{Level, Log};
pub use provision::{ensure_identity, DeviceIdentity, ProvisionError};
pub use runner::{FleetError, Runner};

/// A message to publish (QoS 1: the cloud's answers are what confirm it).
#[derive(Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Outgoing {
    pub fn new(topic: String, doc: serde_json::Value) -> Outgoing {
        Outgoing {
            topic,
            payload: doc.to_string().into_bytes(),
        }
    }
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.topic,
            String::from_utf8_lossy(&self.payload)
        )
    }
}
