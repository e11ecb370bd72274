//! Why an agent command failed; every message names the cause.

use keel_contract::cmdline::CmdlineError;
use keel_contract::release::ReleaseError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Cmdline(#[from] CmdlineError),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Card(#[from] update::CardError),
    #[error(transparent)]
    State(#[from] update::StateError),
    #[error("update rejected: {0}")]
    Rejected(#[from] update::ApplyError),
    #[error("update not downloaded: {0}")]
    Download(#[from] net::HttpError),
    #[error(transparent)]
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
