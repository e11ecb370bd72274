//! Why an agent command failed; every message names the cause.

use keel_contract::cmdline::CmdlineError;
use keel_contract::release::ReleaseError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Cmdline(#[from] CmdlineError),
    #[error("{0}")]
    Release(#[from] ReleaseError),
    #[error("{0}")]
    Card(#[from] update::CardError),
    #[error("{0}")]
    State(#[from] update::StateError),
    #[error("update rejected: {0}")]
    Rejected(#[from] update::ApplyError),
    #[error("update not downloaded: {0}")]
    Download(#[from] net::HttpError),
    #[error("{0}")]
    Tls(#[from] net::TlsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Device(String),
}

impl AgentError {
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
        let what = what.into();
        move |source| AgentError::Io { what, source }
    }
}
