//! A streaming HTTPS GET: just enough HTTP/1.1 to fetch an update bundle
//! from a web server, an object store or a CDN (redirects, Content-Length,
//! chunked encoding), with the body handed out as a `Read` so the applier
//! checks each chunk as it arrives and memory stays flat.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::dns::{ResolveError, Resolver};
use crate::tls::{TlsError, Trust};

mod url;

pub use url::Url;

const MAX_REDIRECTS: usize = 5;
const MAX_HEAD: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A stalled server fails the update instead of hanging the agent.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("'{url}' is not a usable URL: {why}")]
    BadUrl { url: String, why: String },
    #[error("{0}")]
    Resolve(#[from] ResolveError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("cannot connect to {host} ({addrs}): {source}")]
    Connect {
        host: String,
        addrs: String,
        source: io::Error,
    },
    #[error("TLS with {host} failed: {detail}")]
    Handshake { host: String, detail: String },
    #[error("GET {url}: the server answered {status} {reason}")]
    Status {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("GET {url}: {detail}")]
    Protocol { url: String, detail: String },
    #[error("GET {url}: more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects { url: String },
    #[error("GET {url}: {source}")]
    Io { url: String, source: io::Error },
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

enum Framing {
    Length(u64),
    /// Bytes left in the current chunk; `None` before a size line.
    Chunked(Option<u64>),
    /// Until the server closes (TLS close_notify proves it was not cut).
    Close,
    Done,
}

/// A response body; reading fails on a truncated or malformed stream.
pub struct Response {
    pub url: Url,
    /// The body's length, when the server said.
    pub length: Option<u64>,
    stream: BufReader<Tls>,
    framing: Framing,
    received: u64,
}

/// GETs `url`, following redirects (never to plain http), and returns the
/// body as a stream once the server answered 200.
pub fn get(url: &str, trust: &Trust, resolver: &Resolver) -> Result<Response, HttpError> {
    let config = trust.client_config()?;
    let mut url = Url::parse(url)?;
    for _ in 0..=MAX_REDIRECTS {
        match request(&url, &config, resolver)? {
            Reply::Body(r) => return Ok(*r),
            Reply::Redirect(location) => url = url.join(&location)?,
        }
    }
    Err(HttpError::TooManyRedirects {
        url: url.to_string(),
    })
}

enum Reply {
    Body(Box<Response>),
    Redirect(String),
}

fn connect(url: &Url, resolver: &Resolver) -> Result<TcpStream, HttpError> {
    let addrs = resolver.resolve(&url.host, url.port)?;
    let mut last = io::Error::other("no address");
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                let io = |source| HttpError::Io {
                    url: url.to_string(),
                    source,
                };
                s.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
                s.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(HttpError::Connect {
        host: url.host.clone(),
        addrs: addrs
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        source: last,
    })
}

/// Turns an I/O error from the TLS stream into a message that says what
/// to do about a certificate problem.
fn tls_failure(url: &Url, e: io::Error) -> HttpError {
    let detail = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(cert)) => format!(
            "the server's certificate is not acceptable ({cert:?}); if the server uses a \
             private CA, put its certificate in {} in the image or pass --ca FILE",
            crate::tls::EXTRA_CA_DIR
        ),
        Some(other) => other.to_string(),
        None => {
            return HttpError::Io {
                url: url.to_string(),
                source: e,
            }
        }
    };
    HttpError::Handshake {
        host: url.host.clone(),
        detail,
    }
}

fn request(
    url: &Url,
    config: &Arc<rustls::ClientConfig>,
    resolver: &Resolver,
) -> Result<Reply, HttpError> {
    let tcp = connect(url, resolver)?;
    let name = ServerName::try_from(url.host.clone()).map_err(|_| HttpError::BadUrl {
        url: url.to_string(),
        why: "the host is not a valid DNS name or IP address".into(),
    })?;
    let conn = ClientConnection::new(config.clone(), name).map_err(|e| HttpError::Handshake {
        host: url.host.clone(),
        detail: e.to_string(),
    })?;
    let mut tls = StreamOwned::new(conn, tcp);
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: keel-agent/{}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority(),
        env!("CARGO_PKG_VERSION")
    );
    tls.write_all(head.as_bytes())
        .and_then(|()| tls.flush())
        .map_err(|e| tls_failure(url, e))?;
    let mut stream = BufReader::with_capacity(64 * 1024, tls);
    let protocol = |detail: &str| HttpError::Protocol {
        url: url.to_string(),
        detail: detail.to_string(),
    };
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let n = (&mut stream)
            .take((MAX_HEAD - total) as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| tls_failure(url, e))?;
        total += n;
        if n == 0 {
            return Err(protocol(
                "the server closed the connection before answering",
            ));
        }
        if total > MAX_HEAD {
            return Err(protocol("the response header is too large"));
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        if line.is_empty() {
            break;
        }
        lines.push(line);
    }
    let status_line = lines.first().ok_or_else(|| protocol("empty response"))?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(protocol(&format!(
            "not an HTTP/1 response: '{status_line}'"
        )));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| protocol(&format!("bad status line '{status_line}'")))?;
    let reason = parts.next().unwrap_or("").to_string();
    let header = |name: &str| {
        lines[1..].iter().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    match status {
        200 => {}
        301 | 302 | 303 | 307 | 308 => {
            let location =
                header("location").ok_or_else(|| protocol("a redirect without a Location"))?;
            return Ok(Reply::Redirect(location));
        }
        _ => {
            return Err(HttpError::Status {
                url: url.to_string(),
                status,
                reason,
            })
        }
    }
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length = match header("content-length") {
        Some(v) if !chunked => Some(
            v.parse::<u64>()
                .map_err(|_| protocol(&format!("bad Content-Length '{v}'")))?,
        ),
        _ => None,
    };
    let framing = if chunked {
        Framing::Chunked(None)
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    Ok(Reply::Body(Box::new(Response {
        url: url.clone(),
        length,
        stream,
        framing,
        received: 0,
    })))
}

impl Response {
    fn cut_off(&self) -> io::Error {
        let what = match self.length {
            Some(len) => format!(
                "the download was cut off after {} of {len} bytes",
                self.received
            ),
            None => format!("the download was cut off after {} bytes", self.received),
        };
        io::Error::new(io::ErrorKind::UnexpectedEof, what)
    }

    fn chunk_size_line(&mut self) -> io::Result<u64> {
        let mut line = Vec::new();
        (&mut self.stream).take(1024).read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\n") {
            return Err(self.cut_off());
        }
        let text = String::from_utf8_lossy(&line);
        let size = text.trim().split(';').next().unwrap_or("").trim();
        u64::from_str_radix(size, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size line '{}'", text.trim()),
            )
        })
    }

    fn expect_crlf(&mut self) -> io::Result<()> {
        let mut crlf = [0u8; 2];
        self.stream.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed chunked encoding",
            ));
        }
        Ok(())
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let limit = match self.framing {
                Framing::Done => return Ok(0),
                Framing::Length(0) => {
                    self.framing = Framing::Done;
                    return Ok(0);
                }
                Framing::Length(left) => left,
                Framing::Close => u64::MAX,
                Framing::Chunked(None) => {
                    let size = self.chunk_size_line()?;
                    if size == 0 {
                        // Trailers, then the blank line.
                        loop {
                            let mut line = Vec::new();
                            let n = (&mut self.stream).take(8192).read_until(b'\n', &mut line)?;
                            if n == 0 || line == b"\r\n" || line == b"\n" {
                                break;
                            }
                        }
                        self.framing = Framing::Done;
                        return Ok(0);
                    }
                    self.framing = Framing::Chunked(Some(size));
                    continue;
                }
                Framing::Chunked(Some(0)) => {
                    self.expect_crlf()?;
                    self.framing = Framing::Chunked(None);
                    continue;
                }
                Framing::Chunked(Some(left)) => left,
            };
            let want = buf.len().min(limit.min(usize::MAX as u64) as usize);
            let n = match self.stream.read(&mut buf[..want]) {
                // rustls reports a close without close_notify as
                // UnexpectedEof: an attacker or a dying link cut the stream.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(self.cut_off()),
                other => other?,
            };
            if n == 0 && want > 0 {
                if matches!(self.framing, Framing::Close) {
                    self.framing = Framing::Done;
                    return Ok(0);
                }
                return Err(self.cut_off());
            }
            self.received += n as u64;
            if let Framing::Length(left) | Framing::Chunked(Some(left)) = &mut self.framing {
                *left -= n as u64;
            }
            return Ok(n);
        }
    }
}
