//! The response body as a `Read`: the framing the head announced
//! (Content-Length, chunked, or until the server closes), the caller's
//! length limit, and errors that say how far the download got.

use std::io::{self, BufReader, Read};
use std::time::Duration;

use super::chunked::Chunked;
use super::error::{shown, HttpError, ProtocolError, ReadError};
use super::head::{parse_decimal, Head};
use super::timed::Expired;
use super::{Tls, Url};

pub(super) enum Body {
    Length(u64),
    Chunked(Chunked),
    /// Until the server closes (TLS close_notify proves it was not cut).
    Close,
    Done,
    /// A read failed; the stream is in an unknown state.
    Failed,
}
/// A response body; reading fails on a truncated or malformed stream, past
/// the caller's length limit, and at the total deadline.
pub struct Response {
    pub url: Url,
    /// Where the body starts in the file: the offset asked for when the
    /// server sent that range (206), 0 when it sent the whole file (200:
    /// it ignores ranges, so the caller must start over).
    pub start: u64,
    /// The body's length, when the server said.
    pub length: Option<u64>,
    /// The whole file's length, when the server said: a 200's
    /// Content-Length, or the total in a 206's Content-Range.
    pub total: Option<u64>,
    pub(super) stream: BufReader<Tls>,
    pub(super) body: Body,
    pub(super) received: u64,
    pub(super) max_length: Option<u64>,
    /// For messages: the deadline is in the stream.
    pub(super) total_timeout: Duration,
}

/// The body's framing (RFC 9112 §6.3) and its announced length.
pub(super) fn framing(head: &Head) -> Result<(Body, Option<u64>), ProtocolError> {
    let codings = head.list("transfer-encoding");
    let chunked = match codings.as_slice() {
        [] => false,
        [c] if c.eq_ignore_ascii_case("chunked") => true,
        _ => {
            return Err(ProtocolError::UnsupportedTransferCoding(shown(
                codings.join(", ").as_bytes(),
            )))
        }
    };
    if let Some(enc) = head
        .list("content-encoding")
        .into_iter()
        .find(|e| !e.eq_ignore_ascii_case("identity"))
    {
        return Err(ProtocolError::UnsupportedContentEncoding(shown(
            enc.as_bytes(),
        )));
    }
    if chunked {
        // Transfer-Encoding overrides any Content-Length.
        return Ok((Body::Chunked(Chunked::new()), None));
    }
    let mut length = None;
    for v in head.list("content-length") {
        match parse_decimal(v) {
            Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
            _ => {
                return Err(ProtocolError::BadContentLength(shown(
                    head.list("content-length").join(", ").as_bytes(),
                )))
            }
        }
    }
    Ok(match length {
        Some(n) => (Body::Length(n), Some(n)),
        None => (Body::Close, None),
    })
}
impl Response {
    /// Where the body has got to, counted from byte 0 of the file.
    fn position(&self) -> u64 {
        self.start.saturating_add(self.received)
    }

    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, ReadError> {
        match &mut self.body {
            Body::Done => Ok(0),
            Body::Failed => Err(ReadError::Io(io::Error::other(
                "an earlier read of this download failed",
            ))),
            Body::Length(0) => {
                self.body = Body::Done;
                Ok(0)
            }
            Body::Length(left) => {
                let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = self.stream.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(ReadError::Eof);
                }
                *left -= n as u64;
                Ok(n)
            }
            Body::Chunked(chunked) => {
                let n = chunked.read(&mut self.stream, buf)?;
                if n == 0 {
                    self.body = Body::Done;
                }
                Ok(n)
            }
            Body::Close => {
                let n = self.stream.read(buf)?;
                if n == 0 {
                    self.body = Body::Done;
                }
                Ok(n)
            }
        }
    }

    fn fail(&mut self, e: HttpError) -> io::Error {
        self.body = Body::Failed;
        e.into_io()
    }

    fn read_failure(&mut self, e: ReadError) -> io::Error {
        let url = self.url.to_string();
        let received = self.position();
        let total = self
            .total
            .or(self.length.map(|n| self.start.saturating_add(n)));
        let e = match e {
            ReadError::Eof => HttpError::CutOff {
                url,
                received,
                total,
            },
            ReadError::Protocol(source) => HttpError::Protocol { url, source },
            ReadError::Io(e) => match Expired::of(&e) {
                Some(Expired::Deadline) => HttpError::BodyTimeout {
                    url,
                    limit: self.total_timeout,
                    received,
                    total,
                },
                Some(Expired::Idle(idle)) => HttpError::Stalled {
                    url,
                    idle,
                    received,
                },
                // Retried by the caller: the stream is still good.
                None if e.kind() == io::ErrorKind::Interrupted => return e,
                None => HttpError::Io { url, source: e },
            },
        };
        self.fail(e)
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // At the caller's limit, one more byte tells a body that ends
        // there from one that goes on; that byte is never handed out.
        let room = self
            .max_length
            .map(|max| max.saturating_sub(self.position()));
        let want = match room {
            Some(0) => 1,
            Some(r) => buf.len().min(usize::try_from(r).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        match self.read_body(&mut buf[..want]) {
            Ok(n) if n > 0 && room == Some(0) => Err(self.fail(HttpError::TooLarge {
                url: self.url.to_string(),
                limit: self.max_length.unwrap_or(0),
                announced: None,
            })),
            Ok(n) => {
                self.received += n as u64;
                Ok(n)
            }
            Err(e) => Err(self.read_failure(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(fields: &str) -> Result<Option<u64>, String> {
        let text = format!("HTTP/1.1 200 OK\r\n{fields}\r\n");
        let head = super::super::head::read_final_head(&mut text.as_bytes()).unwrap();
        framing(&head).map(|(_, n)| n).map_err(|e| e.to_string())
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(framed("Content-Length: 5\r\n"), Ok(Some(5)));
        assert_eq!(
            framed("Content-Length: 5, 5\r\nContent-Length: 5\r\n"),
            Ok(Some(5))
        );
        assert_eq!(framed(""), Ok(None));
        // Chunked wins over a Content-Length, even a bad one.
        assert_eq!(
            framed("Transfer-Encoding: Chunked\r\nContent-Length: x\r\n"),
            Ok(None)
        );
        for (fields, why) in [
            (
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                "Content-Length",
            ),
            ("Content-Length: +5\r\n", "Content-Length"),
            ("Content-Length: 99999999999999999999\r\n", "Content-Length"),
            (
                "Transfer-Encoding: gzip, chunked\r\n",
                "transfer coding 'gzip, chunked'",
            ),
            ("Content-Encoding: gzip\r\n", "compressed"),
        ] {
            let err = framed(fields).unwrap_err();
            assert!(err.contains(why), "{fields}: {err}");
        }
        assert_eq!(
            framed("Content-Encoding: identity\r\nContent-Length: 1\r\n"),
            Ok(Some(1))
        );
    }
}
