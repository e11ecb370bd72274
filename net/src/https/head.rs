//! The response head (RFC 9112 §4–5): status line and header fields, read
//! with bounds on its bytes and its field count so a server cannot make the
//! client buffer without end, and parsed strictly enough that the body's
//! framing is never a guess.

use std::io::{BufRead, Read};

use super::error::{shown, ProtocolError, ReadError};

/// All heads of one response together, interim (1xx) ones included.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Header fields in one head; real servers send a few dozen.
pub(crate) const MAX_FIELDS: usize = 100;
/// 1xx heads (103 Early Hints, say) before the final one.
pub(crate) const MAX_INTERIM: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub status: u16,
    pub reason: String,
    /// Names lower-cased, values trimmed.
    pub fields: Vec<(String, String)>,
}

impl Head {
    /// Every value of a field, lists split at commas.
    pub(crate) fn list(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(|v| v.trim_matches([' ', '\t']))
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// The first value of a field that is not a list (`Location`,
    /// `Content-Range`).
    pub(crate) fn first(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads heads until the final (non-1xx) one, at most [`MAX_HEAD`] bytes
/// in all.
pub(crate) fn read_final_head<R: BufRead>(r: &mut R) -> Result<Head, ReadError> {
    let mut budget = MAX_HEAD;
    for _ in 0..=MAX_INTERIM {
        let head = read_head(r, &mut budget)?;
        match head.status {
            101 => return Err(ProtocolError::UnexpectedStatus(101).into()),
            100..=199 => continue,
            _ => return Ok(head),
        }
    }
    Err(ProtocolError::TooManyInterim.into())
}

/// Reads one head, status line to blank line, taking at most `budget`
/// bytes (and lowering it by what it took).
pub(crate) fn read_head<R: BufRead>(r: &mut R, budget: &mut usize) -> Result<Head, ReadError> {
    let Some(status_line) = read_line(r, budget)? else {
        return Err(ProtocolError::Closed.into());
    };
    let (status, reason) = parse_status_line(&status_line)?;
    let mut fields = Vec::new();
    loop {
        let line = read_line(r, budget)?.ok_or(ReadError::Eof)?;
        if line.is_empty() {
            break;
        }
        if fields.len() == MAX_FIELDS {
            return Err(ProtocolError::TooManyFields.into());
        }
        fields.push(parse_field(&line)?);
    }
    Ok(Head {
        status,
        reason,
        fields,
    })
}

/// One line without its CRLF (or bare LF, RFC 9112 §2.2); `None` at a
/// clean end of stream before the first byte.
fn read_line<R: BufRead>(r: &mut R, budget: &mut usize) -> Result<Option<Vec<u8>>, ReadError> {
    let mut line = Vec::new();
    let n = Read::take(r, *budget as u64 + 1).read_until(b'\n', &mut line)?;
    if n > *budget {
        return Err(ProtocolError::HeadTooLarge.into());
    }
    *budget -= n;
    if n == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(ReadError::Eof);
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// `HTTP/1.x SP 3DIGIT [SP reason]`.
pub(crate) fn parse_status_line(line: &[u8]) -> Result<(u16, String), ProtocolError> {
    let bad = || ProtocolError::BadStatusLine(shown(line));
    let Some(rest) = line
        .strip_prefix(b"HTTP/1.")
        .filter(|r| r.first().is_some_and(u8::is_ascii_digit))
    else {
        return Err(ProtocolError::NotHttp1(shown(line)));
    };
    let rest = rest[1..].strip_prefix(b" ").ok_or_else(bad)?;
    let (code, reason) = match rest.get(3) {
        None => (rest, &[][..]),
        Some(b' ') => (&rest[..3], &rest[4..]),
        Some(_) => return Err(bad()),
    };
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let status = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(100..=599).contains(&status) || reason.iter().any(|&b| is_bad_text(b)) {
        return Err(bad());
    }
    Ok((status, String::from_utf8_lossy(reason).into_owned()))
}

/// `name ":" OWS value OWS`; no whitespace before the colon and no
/// continuation lines (RFC 9112 §5.1–5.2 lets a client refuse both).
pub(crate) fn parse_field(line: &[u8]) -> Result<(String, String), ProtocolError> {
    let bad = || ProtocolError::BadField(shown(line));
    let colon = line.iter().position(|&b| b == b':').ok_or_else(bad)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
        return Err(bad());
    }
    if value.iter().any(|&b| is_bad_text(b)) {
        return Err(bad());
    }
    let value = String::from_utf8_lossy(value);
    Ok((
        String::from_utf8_lossy(name).to_ascii_lowercase(),
        value.trim_matches([' ', '\t']).to_string(),
    ))
}

/// `tchar` (RFC 9110 §5.6.2).
pub(crate) fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Control characters other than tab may not appear in a field value or
/// a reason phrase.
pub(crate) fn is_bad_text(b: u8) -> bool {
    (b < b' ' && b != b'\t') || b == 0x7f
}

/// A decimal length: digits only, no sign, no spaces.
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A `Content-Range` value (RFC 9110 §14.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentRange {
    /// `bytes first-last/total`, `total` `None` for `*`.
    Bytes {
        first: u64,
        last: u64,
        total: Option<u64>,
    },
    /// `bytes */total`, sent with 416.
    Unsatisfied { total: u64 },
}

pub(crate) fn parse_content_range(v: &str) -> Option<ContentRange> {
    let (unit, rest) = v.trim().split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (range, total) = rest.trim_start().split_once('/')?;
    if range == "*" {
        return Some(ContentRange::Unsatisfied {
            total: parse_decimal(total)?,
        });
    }
    let (first, last) = range.split_once('-')?;
    let (first, last) = (parse_decimal(first)?, parse_decimal(last)?);
    let total = match total {
        "*" => None,
        t => Some(parse_decimal(t)?),
    };
    if last < first || total.is_some_and(|t| last >= t) {
        return None;
    }
    Some(ContentRange::Bytes { first, last, total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn head(bytes: &[u8]) -> Result<Head, ReadError> {
        read_final_head(&mut &bytes[..])
    }

    #[test]
    fn heads_parse_with_their_fields() {
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A:  b, c \r\n\r\nbody").unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.reason, "OK");
        assert_eq!(h.first("content-length"), Some("5"));
        assert_eq!(h.list("x-a"), ["b", "c"]);
        // Bare LF, no reason, and an interim 103 before the final head.
        let h = head(b"HTTP/1.1 103\nLink: </a>\n\nHTTP/1.0 404\n\n").unwrap();
        assert_eq!((h.status, h.reason.as_str()), (404, ""));
    }

    #[test]
    fn bad_heads_are_named() {
        let err = |b: &[u8]| match head(b) {
            Err(ReadError::Protocol(e)) => e.to_string(),
            other => panic!("{other:?}"),
        };
        assert!(err(b"").contains("closed"));
        assert!(err(b"SSH-2.0-x\r\n\r\n").contains("not an HTTP/1"));
        assert!(err(b"HTTP/1.1 20 OK\r\n\r\n").contains("status line"));
        assert!(err(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n").contains("header line"));
        assert!(err(b"HTTP/1.1 200 OK\r\n folded\r\n\r\n").contains("header line"));
        assert!(err(b"HTTP/1.1 200 OK\r\nA: \x01\r\n\r\n").contains("\\u{1}"));
        assert!(err(b"HTTP/1.1 101 Switching\r\n\r\n").contains("101"));
        assert!(err(&b"HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_INTERIM + 1)).contains("interim"));
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_FIELDS + 1)
        );
        assert!(err(many.as_bytes()).contains("header fields"));
        let long = format!("HTTP/1.1 200 OK\r\nA: {}\r\n\r\n", "b".repeat(MAX_HEAD));
        assert!(err(long.as_bytes()).contains("larger than"));
        assert!(matches!(
            head(b"HTTP/1.1 200 OK\r\nA: b"),
            Err(ReadError::Eof)
        ));
    }

    #[test]
    fn content_ranges() {
        use ContentRange::*;
        let p = parse_content_range;
        let bytes = |first, last, total| Some(Bytes { first, last, total });
        assert_eq!(p("bytes 10-99/100"), bytes(10, 99, Some(100)));
        assert_eq!(p("bytes 10-99/*"), bytes(10, 99, None));
        assert_eq!(p("bytes */100"), Some(Unsatisfied { total: 100 }));
        for bad in [
            "bytes 10-99/99",
            "bytes 9-8/100",
            "bytes +1-2/3",
            "items 1-2/3",
            "bytes 1-2",
            "",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_bytes_make_a_head_or_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = head(&bytes);
        }

        #[test]
        fn head_like_bytes_never_panic(
            lines in proptest::collection::vec("[ -~\t:]{0,40}", 0..8),
            status in "[0-9]{0,4}",
        ) {
            let text = format!("HTTP/1.1 {status} R\r\n{}\r\n\r\n", lines.join("\r\n"));
            let _ = head(text.as_bytes());
        }

        #[test]
        fn fields_round_trip(name in "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}", value in "[!-~]([ -~]{0,40}[!-~])?") {
            let text = format!("HTTP/1.1 200 OK\r\n{name}:\t{value} \r\n\r\n");
            let h = head(text.as_bytes()).unwrap();
            prop_assert_eq!(h.first(&name.to_ascii_lowercase()), Some(value.as_str()));
        }

        #[test]
        fn content_range_never_panics(v in "[a-z ]{0,6}[0-9*/ -]{0,30}") {
            if let Some(ContentRange::Bytes { first, last, total }) = parse_content_range(&v) {
                prop_assert!(first <= last && total.is_none_or(|t| last < t));
            }
        }
    }
}
