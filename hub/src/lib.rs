//! `hub`: the cloud side of a Keel fleet, locally. It plays AWS IoT Core's
//! classic shadow and jobs services (and fleet provisioning by claim) on
//! any MQTT broker, following AWS's
//! documented topics and payloads, so a device's fleet client works the
//! same against it and against AWS. Also here: a CA for development
//! ([`pki`]), mosquitto configured like AWS IoT ([`broker`]), an HTTPS
//! file server for bundles ([`files`]) and the operator's API ([`api`]).
//!
//! Host only: devices never link this crate.

#![forbid(unsafe_code)]

pub mod api;
pub mod broker;
pub mod cli;
pub mod files;
pub mod jobs;
pub mod pki;
pub mod provisioning;
pub mod service;
pub mod shadow;
pub mod site;

pub use service::Hub;

/// A message the hub publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub topic: String,
    pub payload: Vec<u8>,
}

impl Out {
    pub fn new(topic: String, body: serde_json::Value) -> Out {
        Out {
            topic,
            payload: body.to_string().into_bytes(),
        }
    }
}

/// Seconds since 1970 (AWS's `timestamp` fields).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
