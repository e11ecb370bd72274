//! Why a bundle was refused; every message names the cause.

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(
        "not a Keel update bundle (bad magic); is this the update.fw from `cargo xtask build`?"
    )]
    Magic,
    #[error("bundle format {0} is not supported by this device (it reads format {1}); build the bundle with a matching Keel")]
    Format(u32, u32),
    #[error("bundle is truncated: {0}")]
    Truncated(String),
    #[error("bundle manifest is invalid: {0}")]
    Manifest(String),
    #[error("bundle is not signed by a trusted key; sign it with one of the keys listed in the board config")]
    Untrusted,
    #[error("bundle is for board '{found}', this device is '{expected}'")]
    WrongBoard { expected: String, found: String },
    #[error("payload '{payload}' chunk {index} does not match its signed hash: the bundle was tampered with or corrupted")]
    ChunkHash { payload: String, index: u64 },
    #[error("payload '{payload}' {detail}: the manifest's sizes do not match the data")]
    SizeMismatch { payload: String, detail: String },
    #[error("bundle has unexpected bytes after its last payload; it is not the file `cargo xtask build` wrote (or a stream did not end)")]
    Trailing,
    #[error("bad key: {0}")]
    Key(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
