//! Keel's device networking, pure Rust but for `ring`'s C: a DNS resolver
//! that does not need glibc's NSS (static glibc's `getaddrinfo` cannot load
//! it on the device), the TLS trust store, and a streaming HTTPS GET the
//! update agent reads bundles from.

#![forbid(unsafe_code)]

pub mod dns;
pub mod https;
pub mod tls;

pub use dns::{ResolveError, Resolver};
pub use https::{get, HttpError, Response, Url};
pub use tls::{TlsError, Trust};
