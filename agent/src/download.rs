//! A bundle download that survives interruptions: when the connection
//! stalls or is cut, it asks the server again for the rest (`Range: bytes=N-`)
//! and carries on from the byte it had reached. Nothing downloaded twice is
//! trusted more than once: every chunk is still checked against the signed
//! manifest by the applier.

use std::io::{self, Read};

/// How many times one download resumes before it gives up.
const RESUMES: u32 = 5;

pub struct Download<'a> {
    url: String,
    trust: &'a net::Trust,
    resolver: net::Resolver,
    options: net::GetOptions,
    response: net::Response,
    pos: u64,
    resumes_left: u32,
    log: &'a mut dyn FnMut(&str),
}

impl<'a> Download<'a> {
    pub fn start(
        url: &str,
        trust: &'a net::Trust,
        options: net::GetOptions,
        log: &'a mut dyn FnMut(&str),
    ) -> Result<Download<'a>, net::HttpError> {
        let resolver = net::Resolver::default();
        let response = net::get(url, trust, &resolver, &options)?;
        match response.total.or(response.length) {
            Some(n) => log(&format!(
                "agent: downloading {} ({:.1} MiB)",
                response.url,
                n as f64 / 1048576.0
            )),
            None => log(&format!("agent: downloading {}", response.url)),
        }
        Ok(Download {
            url: url.to_string(),
            trust,
            resolver,
            options,
            response,
            pos: 0,
            resumes_left: RESUMES,
            log,
        })
    }

    /// The whole file's length, when the server said.
    pub fn total(&self) -> Option<u64> {
        self.response.total.or(self.response.length)
    }

    fn resume(&mut self, why: &io::Error) -> io::Result<()> {
        self.resumes_left -= 1;
        (self.log)(&format!(
            "agent: download interrupted at byte {} ({why}); resuming",
            self.pos
        ));
        let options = net::GetOptions {
            offset: self.pos,
            ..self.options.clone()
        };
        let response = net::get(&self.url, self.trust, &self.resolver, &options)
            .map_err(|e| io::Error::other(format!("{why}; resuming failed: {e}")))?;
        if response.start != self.pos {
            return Err(io::Error::other(format!(
                "{why}; the server does not resume downloads (it answered from byte {} instead of {})",
                response.start, self.pos
            )));
        }
        self.response = response;
        Ok(())
    }
}

/// Errors worth another try: the connection, not the content.
fn resumable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

impl Read for Download<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.response.read(buf) {
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if self.resumes_left > 0 && resumable(&e) => self.resume(&e)?,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Passes bytes through, reporting progress and, at the end of the stream,
/// refusing it if its sha256 is not the one expected (before the applier
/// marks the slot complete: its check for trailing bytes reads to the end).
pub struct Checked<R: Read, F: FnMut(u64)> {
    inner: R,
    hasher: Option<(sha2::Sha256, [u8; 32])>,
    read: u64,
    progress: F,
}

impl<R: Read, F: FnMut(u64)> Checked<R, F> {
    pub fn new(inner: R, expected_sha256: Option<[u8; 32]>, progress: F) -> Self {
        use sha2::Digest;
        Checked {
            inner,
            hasher: expected_sha256.map(|e| (sha2::Sha256::new(), e)),
            read: 0,
            progress,
        }
    }
}

impl<R: Read, F: FnMut(u64)> Read for Checked<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        (self.progress)(self.read);
        if let Some((h, expected)) = &mut self.hasher {
            if n > 0 {
                h.update(&buf[..n]);
            } else if <[u8; 32]>::from(h.clone().finalize()) != *expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the bundle's sha256 is not the one the job document names",
                ));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn checked_refuses_a_stream_whose_hash_differs() {
        let data = b"bundle bytes".to_vec();
        let good: [u8; 32] = sha2::Sha256::digest(&data).into();
        let mut seen = 0;
        let mut out = Vec::new();
        Checked::new(&data[..], Some(good), |n| seen = n)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!((out, seen), (data.clone(), 12));
        let e = Checked::new(&data[..], Some([0; 32]), |_| {})
            .read_to_end(&mut Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }
}
