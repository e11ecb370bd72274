//! What can go wrong with a download, in words that say what happened and
//! what to do. Errors met while the body is read come out of
//! [`Response`](super::Response)'s `Read` as an `io::Error` whose inner
//! error is an [`HttpError`] (`get_ref()` and `downcast_ref` find it).

use std::fmt;
use std::io;
use std::time::Duration;

use super::chunked::{MAX_CHUNK_LINE, MAX_TRAILER, MAX_TRAILER_FIELDS};
use super::head::{MAX_FIELDS, MAX_HEAD, MAX_INTERIM};
use super::MAX_REDIRECTS;
use crate::dns::ResolveError;
use crate::tls::TlsError;
use crate::Secs;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("'{url}' is not a usable URL: {why}")]
    BadUrl { url: String, why: String },
    #[error("request header '{name}' cannot be sent: {why}")]
    BadHeader { name: String, why: &'static str },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot connect to {host} ({addrs}): {source}")]
    Connect {
        host: String,
        addrs: String,
        source: io::Error,
    },
    #[error("TLS with {host} failed: {detail}")]
    Handshake { host: String, detail: String },
    #[error(
        "GET {url}: no response within {} ({stage}); the server or the network is down or too slow",
        Secs(*.limit)
    )]
    HeadTimeout {
        url: String,
        stage: Stage,
        limit: Duration,
    },
    #[error(
        "GET {url}: nothing received for {} ({received} bytes of the body so far); the server or the link stalled",
        Secs(*.idle)
    )]
    Stalled {
        url: String,
        idle: Duration,
        received: u64,
    },
    #[error(
        "GET {url}: the download did not finish within {} ({}); the link or the server is too slow, or allow more time",
        Secs(*.limit), Progress(*.received, *.total)
    )]
    BodyTimeout {
        url: String,
        limit: Duration,
        /// Where the body stood, counted from byte 0 of the resource.
        received: u64,
        total: Option<u64>,
    },
    #[error("GET {url}: the server answered {status} {reason}")]
    Status {
        url: String,
        status: u16,
        reason: String,
    },
    #[error(
        "GET {url}: the server has no bytes from offset {offset} on{}",
        .total.map(|t| format!(" (the file is {t} bytes long)")).unwrap_or_default()
    )]
    RangeNotSatisfiable {
        url: String,
        offset: u64,
        total: Option<u64>,
    },
    #[error("GET {url}: {}", TooLarge(*.limit, *.announced))]
    TooLarge {
        url: String,
        /// The caller's [`max_length`](super::GetOptions::max_length).
        limit: u64,
        /// The end the server announced, when it did before the body.
        announced: Option<u64>,
    },
    #[error("GET {url}: the download was cut off after {}", Progress(*.received, *.total))]
    CutOff {
        url: String,
        received: u64,
        total: Option<u64>,
    },
    #[error("GET {url}: {source}")]
    Protocol { url: String, source: ProtocolError },
    #[error("GET {url}: more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects { url: String },
    #[error("GET {url}: {source}")]
    Io { url: String, source: io::Error },
}

impl HttpError {
    /// The `io::Error` a body read returns for this error.
    pub(crate) fn into_io(self) -> io::Error {
        let kind = match &self {
            HttpError::Stalled { .. } | HttpError::BodyTimeout { .. } => io::ErrorKind::TimedOut,
            HttpError::CutOff { .. } => io::ErrorKind::UnexpectedEof,
            HttpError::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }
}

/// Where a request was when its head deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connecting,
    Handshake,
    Sending,
    Head,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connecting => "while connecting",
            Stage::Handshake => "during the TLS handshake",
            Stage::Sending => "while sending the request",
            Stage::Head => "while waiting for the response head",
        })
    }
}

/// The server broke HTTP/1.1, or went past a bound this client sets.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the server closed the connection before answering")]
    Closed,
    #[error("the response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the response has more than {MAX_FIELDS} header fields")]
    TooManyFields,
    #[error("more than {MAX_INTERIM} interim (1xx) responses")]
    TooManyInterim,
    #[error("not an HTTP/1 response: '{0}'")]
    NotHttp1(String),
    #[error("bad status line '{0}'")]
    BadStatusLine(String),
    #[error("unexpected status {0} (this client never asks to switch protocols)")]
    UnexpectedStatus(u16),
    #[error("bad header line '{0}'")]
    BadField(String),
    #[error("bad Content-Length '{0}'")]
    BadContentLength(String),
    #[error("the body uses transfer coding '{0}', which this client does not decode")]
    UnsupportedTransferCoding(String),
    #[error(
        "the body is compressed ('Content-Encoding: {0}') although the client asked for identity"
    )]
    UnsupportedContentEncoding(String),
    #[error("a redirect ({0}) without a Location")]
    RedirectWithoutLocation(u16),
    #[error("206 Partial Content without a Range request")]
    UnrequestedPartial,
    #[error("206 Partial Content with Content-Range '{got}', not bytes {offset} to the end")]
    WrongRange { got: String, offset: u64 },
    #[error("bad chunk size line '{0}'")]
    BadChunkSize(String),
    #[error("a chunk size line longer than {MAX_CHUNK_LINE} bytes")]
    ChunkLineTooLong,
    #[error("a chunk is not followed by CRLF")]
    BadChunkEnd,
    #[error("the trailer section is over {MAX_TRAILER} bytes or {MAX_TRAILER_FIELDS} fields")]
    TrailerTooLarge,
}

/// What reading a head or a body found, before the client adds the URL
/// and how far it got.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    Protocol(ProtocolError),
    /// The stream ended where more was due.
    Eof,
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        // rustls says UnexpectedEof when the peer hung up without
        // close_notify: an attacker or a dying link cut the stream.
        if e.kind() == io::ErrorKind::UnexpectedEof {
            ReadError::Eof
        } else {
            ReadError::Io(e)
        }
    }
}

impl From<ProtocolError> for ReadError {
    fn from(e: ProtocolError) -> Self {
        ReadError::Protocol(e)
    }
}

/// Server text for a message: control characters escaped, cut short.
pub(crate) fn shown(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes).escape_debug().collect();
    match text.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

struct Progress(u64, Option<u64>);

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(total) => write!(f, "{} of {total} bytes", self.0),
            None => write!(f, "{} bytes", self.0),
        }
    }
}

struct TooLarge(u64, Option<u64>);

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(end) => write!(
                f,
                "the server announces {end} bytes, more than the {} allowed",
                self.0
            ),
            None => write!(f, "the body goes on past the {} bytes allowed", self.0),
        }
    }
}
