//! The chunked transfer coding (RFC 9112 §7.1), decoded as the body is read.
//! Every part the server controls is bounded: a chunk-size line with its
//! extensions, and the trailer section after the last chunk (its fields are
//! read and dropped), so endless metadata ends in an error after a few KiB
//! instead of holding a read for as long as the server sends.

use std::io::{BufRead, Read};

use super::error::{shown, ProtocolError, ReadError};

/// A chunk-size line with its extensions, CRLF included.
pub(crate) const MAX_CHUNK_LINE: usize = 1024;
/// The whole trailer section, final CRLF included.
pub(crate) const MAX_TRAILER: usize = 8 * 1024;
pub(crate) const MAX_TRAILER_FIELDS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a chunk-size line.
    Size,
    /// Bytes left in the current chunk.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: bytes and fields of the trailer so far.
    Trailer {
        bytes: usize,
        fields: usize,
    },
    Done,
}

#[derive(Debug)]
pub(crate) struct Chunked {
    state: State,
}

impl Chunked {
    pub(crate) fn new() -> Chunked {
        Chunked { state: State::Size }
    }

    /// Reads body bytes; `Ok(0)` once the last chunk and the trailer
    /// section are through.
    pub(crate) fn read<R: BufRead>(
        &mut self,
        r: &mut R,
        buf: &mut [u8],
    ) -> Result<usize, ReadError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::Size => {
                    let (line, _) = read_line(r, MAX_CHUNK_LINE, ProtocolError::ChunkLineTooLong)?
                        .ok_or(ReadError::Eof)?;
                    self.state = match parse_size_line(&line)? {
                        0 => State::Trailer {
                            bytes: 0,
                            fields: 0,
                        },
                        n => State::Data(n),
                    };
                }
                State::Data(left) => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = r.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(ReadError::Eof);
                    }
                    self.state = match left - n as u64 {
                        0 => State::DataEnd,
                        left => State::Data(left),
                    };
                    return Ok(n);
                }
                State::DataEnd => {
                    let (line, _) =
                        read_line(r, 2, ProtocolError::BadChunkEnd)?.ok_or(ReadError::Eof)?;
                    if !line.is_empty() {
                        return Err(ProtocolError::BadChunkEnd.into());
                    }
                    self.state = State::Size;
                }
                State::Trailer { bytes, fields } => {
                    let room = MAX_TRAILER - bytes;
                    if room == 0 {
                        return Err(ProtocolError::TrailerTooLarge.into());
                    }
                    let Some((line, n)) = read_line(r, room, ProtocolError::TrailerTooLarge)?
                    else {
                        // The body is whole; a server that closes cleanly
                        // (TLS close_notify) without the last CRLF is sloppy,
                        // not cut off.
                        self.state = State::Done;
                        continue;
                    };
                    self.state = if line.is_empty() {
                        State::Done
                    } else if fields == MAX_TRAILER_FIELDS {
                        return Err(ProtocolError::TrailerTooLarge.into());
                    } else {
                        State::Trailer {
                            bytes: bytes + n,
                            fields: fields + 1,
                        }
                    };
                }
                State::Done => return Ok(0),
            }
        }
    }
}

/// One line of at most `max` bytes (its CRLF or LF included) without the
/// line end, and the bytes it took; `None` at a clean end of stream before
/// the first byte.
fn read_line<R: BufRead>(
    r: &mut R,
    max: usize,
    too_long: ProtocolError,
) -> Result<Option<(Vec<u8>, usize)>, ReadError> {
    let mut line = Vec::new();
    let n = Read::take(r, max as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(if n == max {
            too_long.into()
        } else {
            ReadError::Eof
        });
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some((line, n)))
}

/// `chunk-size [ BWS ";" extensions ]`: the size in hex, extensions
/// ignored but free of control characters.
pub(crate) fn parse_size_line(line: &[u8]) -> Result<u64, ProtocolError> {
    let bad = || ProtocolError::BadChunkSize(shown(line));
    let (size, ext) = match line.iter().position(|&b| b == b';') {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, &[][..]),
    };
    let bws = size.iter().rposition(|&b| b != b' ' && b != b'\t');
    let size = &size[..bws.map_or(0, |i| i + 1)];
    // `from_str_radix` would take a leading '+'.
    if size.is_empty() || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(bad());
    }
    if ext.iter().any(|&b| super::head::is_bad_text(b)) {
        return Err(bad());
    }
    let digits = &size[size.iter().position(|&b| b != b'0').unwrap_or(size.len())..];
    if digits.len() > 16 {
        return Err(bad());
    }
    Ok(digits.iter().fold(0u64, |n, &d| {
        let v = (d as char).to_digit(16).unwrap_or(0);
        (n << 4) | u64::from(v)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes a whole body with reads of `step` bytes.
    fn decode(bytes: &[u8], step: usize) -> Result<Vec<u8>, ReadError> {
        let mut input = bytes;
        let mut c = Chunked::new();
        let mut out = Vec::new();
        let mut buf = vec![0; step];
        loop {
            match c.read(&mut input, &mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn protocol(r: Result<Vec<u8>, ReadError>) -> String {
        match r {
            Err(ReadError::Protocol(e)) => e.to_string(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_chunks_extensions_and_trailers() {
        let body = b"5;name=\"v\"\r\nhello\r\n0006 \r\n world\r\nA\n0123456789\n0\r\nX-Sum: 1\r\n\r\nignored";
        assert_eq!(decode(body, 3).unwrap(), b"hello world0123456789");
        assert_eq!(decode(b"0\r\n", 8).unwrap(), b"");
    }

    #[test]
    fn bounds_and_bad_framing_are_errors() {
        assert!(protocol(decode(b"+5\r\nhello\r\n0\r\n\r\n", 8)).contains("chunk size"));
        assert!(protocol(decode(b"5\r\nhelloXY0\r\n\r\n", 8)).contains("CRLF"));
        assert!(protocol(decode(b"10000000000000000\r\n", 8)).contains("chunk size"));
        let long_ext = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(MAX_CHUNK_LINE));
        assert!(protocol(decode(long_ext.as_bytes(), 8)).contains("longer than"));
        // Endless trailer fields stop at the byte bound, and at the count.
        let endless = format!("1\r\na\r\n0\r\n{}", "X-Pad: aaaaaaaa\r\n".repeat(10_000));
        assert!(protocol(decode(endless.as_bytes(), 8)).contains("trailer"));
        let many = format!("0\r\n{}\r\n", "A: b\r\n".repeat(MAX_TRAILER_FIELDS + 1));
        assert!(protocol(decode(many.as_bytes(), 8)).contains("trailer"));
        let long = format!("0\r\nA: {}\r\n\r\n", "b".repeat(MAX_TRAILER));
        assert!(protocol(decode(long.as_bytes(), 8)).contains("trailer"));
        // Cut anywhere before the last chunk: cut off, not a short body.
        let whole = b"5\r\nhello\r\n0\r\n";
        for cut in 0..whole.len() - 3 {
            assert!(
                matches!(decode(&whole[..cut], 8), Err(ReadError::Eof)),
                "{cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..400), step in 1usize..64) {
            let _ = decode(&bytes, step);
        }

        #[test]
        fn size_lines_never_panic(line in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_size_line(&line);
        }

        #[test]
        fn encoded_bodies_round_trip(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..8),
            ext in "(;[a-z]{1,5}(=[a-z0-9]{0,5})?)?",
            step in 1usize..64,
        ) {
            let mut wire = Vec::new();
            for c in &chunks {
                wire.extend_from_slice(format!("{:X}{ext}\r\n", c.len()).as_bytes());
                wire.extend_from_slice(c);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
            prop_assert_eq!(decode(&wire, step).unwrap(), chunks.concat());
        }
    }
}
