//! Keel's update bundle: one streamable file, a signed manifest first and
//! then the payloads, verified chunk by chunk before any byte is used.
//!
//! ```text
//! "KEELBNDL" | format u32le | manifest_len u32le | manifest (text)
//! | sig_count u8 | sig_count × (ed25519 public key 32 | signature 64)
//! | payload 1 (stored bytes) | payload 2 | …            (nothing after)
//! ```
//! Each signature covers everything from the magic to the end of the
//! manifest, so the format version and every manifest byte are signed. See
//! docs/bundle.md.

#![forbid(unsafe_code)]

mod error;
pub mod header;
pub mod keys;
pub mod manifest;
mod reader;
pub mod version;
mod writer;

pub use error::BundleError;
pub use header::Header;
pub use manifest::{Chunk, Compression, Manifest, PayloadInfo};
pub use reader::{BundleReader, PayloadReader, StoredChunk};
pub use writer::{write_bundle, PayloadSource};

pub const MAGIC: &[u8; 8] = b"KEELBNDL";
pub const FORMAT_VERSION: u32 = 1;
/// Manifests are small; a larger length field means a corrupt or hostile file.
pub const MAX_MANIFEST: u32 = 4 << 20;
pub const MAX_SIGNATURES: u8 = 8;
pub const DEFAULT_CHUNK_SIZE: u64 = 1 << 20;
/// The largest chunk a manifest may declare: the applier holds a few
/// chunks in memory at once, and must stay within a small device's means.
pub const MAX_CHUNK_SIZE: u64 = 1 << 20;
