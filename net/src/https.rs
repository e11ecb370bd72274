//! A streaming HTTPS GET: just enough HTTP/1.1 to fetch an update bundle
//! from a web server, an object store or a CDN (redirects, Content-Length,
//! chunked encoding, a range to resume from), with the body handed out as a
//! `Read` so the applier checks each chunk as it arrives and memory stays
//! flat. Every step has a deadline and everything the server sends has a
//! bound ([`GetOptions`]; docs/network.md says which and why).

mod body;
mod chunked;
mod error;
mod head;
mod timed;
mod url;

use std::io::{self, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

pub use body::Response;
pub use error::{HttpError, ProtocolError, Stage};
pub use url::Url;

use crate::dns::Resolver;
use crate::tls::Trust;
use error::{shown, ReadError};
use head::{is_bad_text, is_token, parse_content_range, ContentRange, Head};
use timed::{after, Expired, TimedStream};

pub(crate) const MAX_REDIRECTS: usize = 5;

/// What to ask for beyond the URL, and how long and how much to accept.
/// `GetOptions { offset, ..GetOptions::default() }` changes one thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetOptions {
    /// Asks for the body from this byte on (`Range: bytes=N-`), to resume
    /// a download. A server may send the whole file instead:
    /// [`Response::start`] says where the body really starts.
    pub offset: u64,
    /// Extra request header fields. They go to the URL's own host and port
    /// only: a redirect elsewhere drops them, as curl does, so a credential
    /// does not reach a CDN. The fields the client sets for the framing
    /// (`Host`, `Range`, `Connection`, …) cannot be replaced; `User-Agent`
    /// can.
    pub headers: Vec<(String, String)>,
    /// The longest file accepted, counted from byte 0 whatever the offset:
    /// a server announcing more is refused before the body is read, and a
    /// body of unknown length fails at the first byte past it.
    pub max_length: Option<u64>,
    /// From the call until the response head is in: resolving the name,
    /// connecting, the TLS handshake, every redirect.
    pub head_timeout: Duration,
    /// The longest the connection may stay silent, before or in the body.
    pub idle_timeout: Duration,
    /// From the call until the body's last byte, whatever the server's pace.
    pub total_timeout: Duration,
}

impl Default for GetOptions {
    /// No range, no extra fields, no length limit; 30 s to the response
    /// head, 60 s of silence at most, one hour in all.
    fn default() -> Self {
        GetOptions {
            offset: 0,
            headers: Vec::new(),
            max_length: None,
            head_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(3600),
        }
    }
}

/// Header fields that carry the client's framing and negotiation.
const OWN_FIELDS: [&str; 11] = [
    "host",
    "range",
    "connection",
    "keep-alive",
    "proxy-connection",
    "content-length",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "accept-encoding",
];

type Tls = StreamOwned<ClientConnection, TimedStream>;

/// GETs `url`, following redirects (never to plain http), and returns the
/// body as a stream once the server answered 200 (or 206 to a range).
pub fn get(
    url: &str,
    trust: &Trust,
    resolver: &Resolver,
    options: &GetOptions,
) -> Result<Response, HttpError> {
    let started = Instant::now();
    let total_deadline = after(started, options.total_timeout);
    let head_deadline = after(started, options.head_timeout).min(total_deadline);
    let extra = extra_fields(&options.headers)?;
    let config = trust.client_config()?;
    let first = Url::parse(url)?;
    let mut url = first.clone();
    let mut same_origin = true;
    for _ in 0..=MAX_REDIRECTS {
        same_origin &= url.host == first.host && url.port == first.port;
        let exchange = Exchange {
            url: &url,
            config: &config,
            resolver,
            options,
            extra: if same_origin { &extra } else { "" },
            deadline: head_deadline,
            limit: options.head_timeout.min(options.total_timeout),
        };
        match exchange.run()? {
            Reply::Body(mut r) => {
                r.stream.get_mut().sock.set_deadline(total_deadline);
                return Ok(*r);
            }
            Reply::Redirect(location) => url = url.join(&location)?,
        }
    }
    Err(HttpError::TooManyRedirects {
        url: url.to_string(),
    })
}

/// The caller's header fields as request lines, checked.
fn extra_fields(fields: &[(String, String)]) -> Result<String, HttpError> {
    let mut lines = String::new();
    for (name, value) in fields {
        let bad = |why| HttpError::BadHeader {
            name: shown(name.as_bytes()),
            why,
        };
        if name.is_empty() || !name.bytes().all(is_token) {
            return Err(bad("the name is not an HTTP token"));
        }
        if OWN_FIELDS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(bad("the client sets it itself"));
        }
        if value.bytes().any(is_bad_text) {
            return Err(bad("control characters (CR, LF, …) in the value"));
        }
        lines.push_str(&format!("{name}: {}\r\n", value.trim_matches([' ', '\t'])));
    }
    Ok(lines)
}

enum Reply {
    Body(Box<Response>),
    Redirect(String),
}

/// One request and its response head.
struct Exchange<'a> {
    url: &'a Url,
    config: &'a Arc<rustls::ClientConfig>,
    resolver: &'a Resolver,
    options: &'a GetOptions,
    /// Caller's fields, as request lines.
    extra: &'a str,
    /// When the head must be in.
    deadline: Instant,
    /// The time allowed for it, for messages.
    limit: Duration,
}

impl Exchange<'_> {
    fn run(&self) -> Result<Reply, HttpError> {
        let url = self.url;
        let tcp = self.connect()?;
        let name = ServerName::try_from(url.host.clone()).map_err(|_| HttpError::BadUrl {
            url: url.to_string(),
            why: "the host is not a valid DNS name or IP address".into(),
        })?;
        let conn =
            ClientConnection::new(self.config.clone(), name).map_err(|e| HttpError::Handshake {
                host: url.host.clone(),
                detail: e.to_string(),
            })?;
        let sock = TimedStream::new(tcp, self.deadline, self.options.idle_timeout);
        let mut tls = StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .map_err(|e| self.failure(e, Stage::Handshake))?;
        }
        tls.write_all(self.request_head().as_bytes())
            .and_then(|()| tls.flush())
            .map_err(|e| self.failure(e, Stage::Sending))?;
        let mut stream = BufReader::with_capacity(64 * 1024, tls);
        let head = head::read_final_head(&mut stream).map_err(|e| match e {
            ReadError::Io(e) => self.failure(e, Stage::Head),
            ReadError::Protocol(p) => self.protocol(p),
            ReadError::Eof => self.protocol(ProtocolError::Closed),
        })?;
        self.reply(head, stream)
    }

    fn connect(&self) -> Result<TcpStream, HttpError> {
        let url = self.url;
        let addrs = self
            .resolver
            .resolve_before(&url.host, url.port, self.deadline)?;
        let mut last = io::Error::other("no address");
        for (i, addr) in addrs.iter().enumerate() {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Each address left gets its share, so one that drops SYNs
            // does not eat the time of the next.
            let share = left / (addrs.len() - i) as u32;
            match TcpStream::connect_timeout(addr, share.max(Duration::from_millis(1))) {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        if Instant::now() >= self.deadline {
            return Err(self.timeout(Stage::Connecting));
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

    fn request_head(&self) -> String {
        let url = self.url;
        let mut head = format!("GET {} HTTP/1.1\r\nHost: {}\r\n", url.path, url.authority());
        if !self
            .options
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
        {
            head.push_str(&format!(
                "User-Agent: keel-agent/{}\r\n",
                env!("CARGO_PKG_VERSION")
            ));
        }
        head.push_str("Accept-Encoding: identity\r\n");
        if self.options.offset > 0 {
            head.push_str(&format!("Range: bytes={}-\r\n", self.options.offset));
        }
        head.push_str(self.extra);
        head.push_str("Connection: close\r\n\r\n");
        head
    }

    /// Decides what the head means: a body, a redirect or an error.
    fn reply(&self, head: Head, stream: BufReader<Tls>) -> Result<Reply, HttpError> {
        let url = self.url;
        let offset = self.options.offset;
        match head.status {
            200 | 206 => {}
            301 | 302 | 303 | 307 | 308 => {
                return match head.first("location") {
                    Some(location) => Ok(Reply::Redirect(location.to_string())),
                    None => Err(self.protocol(ProtocolError::RedirectWithoutLocation(head.status))),
                };
            }
            416 if offset > 0 => {
                let total = match head.first("content-range").and_then(parse_content_range) {
                    Some(ContentRange::Unsatisfied { total }) => Some(total),
                    _ => None,
                };
                return Err(HttpError::RangeNotSatisfiable {
                    url: url.to_string(),
                    offset,
                    total,
                });
            }
            status => {
                return Err(HttpError::Status {
                    url: url.to_string(),
                    status,
                    reason: shown(head.reason.as_bytes()),
                })
            }
        }
        let (framing, length) = body::framing(&head).map_err(|p| self.protocol(p))?;
        let (start, total) = if head.status == 206 {
            let got = head.first("content-range").unwrap_or("");
            let wrong = || {
                self.protocol(ProtocolError::WrongRange {
                    got: shown(got.as_bytes()),
                    offset,
                })
            };
            if offset == 0 {
                return Err(self.protocol(ProtocolError::UnrequestedPartial));
            }
            // `bytes=N-` asks for the rest of the file: a server that sends
            // another piece, or less of it, is not resuming this download.
            match parse_content_range(got) {
                Some(ContentRange::Bytes { first, last, total })
                    if first == offset
                        && total.is_none_or(|t| last + 1 == t)
                        && length.is_none_or(|n| n == last - first + 1) =>
                {
                    (offset, total)
                }
                _ => return Err(wrong()),
            }
        } else {
            (0, length)
        };
        let end = total.or(length.map(|n| start.saturating_add(n)));
        if let (Some(limit), Some(end)) = (self.options.max_length, end) {
            if end > limit {
                return Err(HttpError::TooLarge {
                    url: url.to_string(),
                    limit,
                    announced: Some(end),
                });
            }
        }
        Ok(Reply::Body(Box::new(Response {
            url: url.clone(),
            start,
            length,
            total,
            stream,
            body: framing,
            received: 0,
            max_length: self.options.max_length,
            total_timeout: self.options.total_timeout,
        })))
    }

    fn protocol(&self, source: ProtocolError) -> HttpError {
        HttpError::Protocol {
            url: self.url.to_string(),
            source,
        }
    }

    fn timeout(&self, stage: Stage) -> HttpError {
        HttpError::HeadTimeout {
            url: self.url.to_string(),
            stage,
            limit: self.limit,
        }
    }

    /// Turns an I/O error before the body into a message that names the
    /// limit that stopped it, or says what to do about a certificate.
    fn failure(&self, e: io::Error, stage: Stage) -> HttpError {
        let url = self.url;
        match Expired::of(&e) {
            Some(Expired::Deadline) => return self.timeout(stage),
            Some(Expired::Idle(idle)) => {
                return HttpError::Stalled {
                    url: url.to_string(),
                    idle,
                    received: 0,
                }
            }
            None => {}
        }
        let detail = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(cert)) => format!(
                "the server's certificate is not acceptable ({cert:?}); if the server uses a \
                 private CA, put its certificate in {} in the image or pass --ca FILE",
                crate::tls::EXTRA_CA_DIR
            ),
            Some(other) => other.to_string(),
            None if stage == Stage::Handshake && e.kind() == io::ErrorKind::UnexpectedEof => {
                "the server closed the connection during the handshake (is it speaking TLS?)"
                    .to_string()
            }
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
}
