//! A TCP stream that cannot be held open for ever: every read and write
//! ends by a deadline, and fails after an idle limit with nothing moving.
//!
//! It sits under rustls on purpose. One TLS read may take many socket reads
//! to collect a record (up to 16 KiB), and rustls loops over them itself:
//! a per-read socket timeout set once above rustls is restarted by every
//! byte, so a server trickling a byte every 50 s would hold that one read
//! for days. Here each socket read checks the deadline.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Why a read or write gave up: the inner error of the `TimedOut`
/// `io::Error` it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Expired {
    #[error("the deadline passed")]
    Deadline,
    #[error("nothing moved for {0:?}")]
    Idle(Duration),
}

impl Expired {
    /// Which limit an I/O error from the stream stopped at, if any.
    pub(crate) fn of(e: &io::Error) -> Option<Expired> {
        e.get_ref()?.downcast_ref::<Expired>().copied()
    }
}

pub(crate) struct TimedStream {
    sock: TcpStream,
    deadline: Instant,
    idle: Duration,
    /// What the socket is set to now, to skip a system call per read.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

impl TimedStream {
    pub(crate) fn new(sock: TcpStream, deadline: Instant, idle: Duration) -> TimedStream {
        TimedStream {
            sock,
            deadline,
            // A zero timeout means "none" to the socket layer.
            idle: idle.max(Duration::from_millis(1)),
            read_timeout: None,
            write_timeout: None,
        }
    }

    pub(crate) fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// How long the next socket call may wait.
    fn wait(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, Expired::Deadline));
        }
        Ok(left.min(self.idle))
    }

    /// Names the limit behind a socket timeout. `waited` is what the socket
    /// was allowed: less than the idle limit only when the deadline was
    /// nearer.
    fn classify(&self, e: io::Error, waited: Duration) -> io::Error {
        if !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            return e;
        }
        let why = if waited < self.idle {
            Expired::Deadline
        } else {
            Expired::Idle(self.idle)
        };
        io::Error::new(io::ErrorKind::TimedOut, why)
    }
}

impl Read for TimedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let wait = self.wait()?;
        if self.read_timeout != Some(wait) {
            self.sock.set_read_timeout(Some(wait))?;
            self.read_timeout = Some(wait);
        }
        self.sock.read(buf).map_err(|e| self.classify(e, wait))
    }
}

impl Write for TimedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let wait = self.wait()?;
        if self.write_timeout != Some(wait) {
            self.sock.set_write_timeout(Some(wait))?;
            self.write_timeout = Some(wait);
        }
        self.sock.write(buf).map_err(|e| self.classify(e, wait))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// `now + d`, or as far as an `Instant` reaches.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}
