//! Keel's device networking, pure Rust but for `ring`'s C: a DNS resolver
//! that does not need glibc's NSS (static glibc's `getaddrinfo` cannot load
//! it on the device), the TLS trust store, and a streaming HTTPS GET the
//! update agent reads bundles from. Every operation ends by a deadline, and
//! everything a peer sends is bounded (docs/network.md).

#![forbid(unsafe_code)]

pub mod dns;
pub mod https;
pub mod tls;

pub use dns::{ResolveError, Resolver};
pub use https::{get, GetOptions, HttpError, ProtocolError, Response, Stage, Url};
pub use tls::{TlsError, Trust};

/// A duration for a message: "60 s", "1.2 s".
pub(crate) struct Secs(pub std::time::Duration);

impl std::fmt::Display for Secs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.subsec_millis() == 0 {
            write!(f, "{} s", self.0.as_secs())
        } else {
            write!(f, "{:.1} s", self.0.as_secs_f64())
        }
    }
}
