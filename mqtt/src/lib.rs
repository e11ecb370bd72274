//! Keel's device-side MQTT 3.1.1 client, written for AWS IoT Core and any
//! broker carrying the same topics.
//!
//! Small and blocking on purpose: one thread, one TLS stream, no async
//! runtime (the agent's size is measured; see docs/dependencies.md). The
//! layers, bottom up:
//!
//! - [`codec`]: the packets, encoded and decoded without trusting a length
//!   the peer sends (nothing larger than [`MAX_PACKET`] is ever allocated);
//! - [`tls`]: the device identity (certificate, key, CA bundle) as a rustls
//!   configuration, with ALPN `x-amzn-mqtt-ca` for port 443;
//! - [`session`]: one connection: CONNECT, SUBSCRIBE, PUBLISH, keepalive,
//!   every read under a deadline;
//! - [`client`]: the connection kept alive: reconnect with exponential
//!   backoff and jitter after any failure, re-subscribe, and say why.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod client;
pub mod codec;
pub mod session;
pub mod tls;

pub use backoff::Backoff;
pub use client::{Client, Event, Options};
pub use codec::{CodecError, Packet, Publish, QoS, Will};
pub use session::{Session, SessionError};
pub use tls::{Identity, TlsError, ALPN_AWS_MQTT};

/// The largest packet accepted or sent: AWS IoT Core's 128 KiB message
/// limit plus room for the fixed header, topic and packet id.
pub const MAX_PACKET: usize = 128 * 1024 + 1024;

/// No clock that is still before this moment (2026-11-01, when this code
/// was written) can be right: certificates cannot be checked against it.
/// The fleet layer raises the floor to the device certificate's notBefore.
pub const BUILD_EPOCH_FLOOR: u64 = 1_793_491_200;
