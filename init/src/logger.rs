//! Where init's log lines and its services' output go: the console
//! (written without ever blocking PID 1: a stalled serial line queues,
//! then drops, lines), /dev/kmsg, and a bounded in-memory ring that
//! `keelctl logs` reads.
//!
//! Until `init_pid1`/`init_host` runs (the initramfs stage, `keelctl`),
//! lines simply go to stdout.

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sys;

/// Bytes of log text the ring keeps (oldest lines go first).
pub const RING_BYTES: usize = 64 * 1024;
/// Console bytes queued while the console does not take them.
const PENDING_MAX: usize = 16 * 1024;
/// Longer service lines are cut (and the rest shown as its own line).
pub const MAX_LINE: usize = 1000;
/// Bookkeeping per ring entry, counted against `RING_BYTES`.
const ENTRY_OVERHEAD: usize = 48;
/// Debug level, daemon facility: kept out of the console by the kernel's
/// default console loglevel (we print to the console ourselves).
const KMSG_PRIORITY: &str = "<31>";

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Milliseconds since boot (CLOCK_BOOTTIME).
    pub at_ms: u64,
    /// `init` or the service's name.
    pub source: String,
    pub text: String,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:>6}.{:03}] {}: {}",
            self.at_ms / 1000,
            self.at_ms % 1000,
            self.source,
            self.text
        )
    }
}

/// The newest lines that fit in a byte budget.
#[derive(Debug)]
pub struct Ring {
    entries: VecDeque<Entry>,
    bytes: usize,
    cap: usize,
}

impl Ring {
    pub const fn new(cap: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            cap,
        }
    }

    fn cost(e: &Entry) -> usize {
        e.text.len() + e.source.len() + ENTRY_OVERHEAD
    }

    pub fn push(&mut self, e: Entry) {
        self.bytes += Self::cost(&e);
        self.entries.push_back(e);
        while self.bytes > self.cap {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= Self::cost(&old),
                None => break,
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

/// The console side: either plain stdout (blocking) or our own
/// non-blocking descriptor with a bounded queue.
struct ConsoleOut {
    fd: Option<OwnedFd>,
    pending: VecDeque<u8>,
    dropped: u64,
}

impl ConsoleOut {
    fn write(&mut self, line: &[u8]) {
        let Some(fd) = &self.fd else {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line);
            let _ = out.flush();
            return;
        };
        if !self.pending.is_empty() {
            self.queue(line);
            return;
        }
        match sys::write(fd.as_raw_fd(), line) {
            Ok(n) if n == line.len() => {}
            Ok(n) => self.queue(&line[n..]),
            Err(_) => self.queue(line),
        }
    }

    fn queue(&mut self, bytes: &[u8]) {
        if self.pending.len() + bytes.len() > PENDING_MAX {
            self.dropped += 1;
        } else {
            self.pending.extend(bytes);
        }
    }

    /// Writes what the console takes now; true when the queue is empty.
    fn flush(&mut self) -> bool {
        let Some(fd) = &self.fd else {
            return true;
        };
        while !self.pending.is_empty() {
            let (front, _) = self.pending.as_slices();
            match sys::write(fd.as_raw_fd(), front) {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    self.pending.drain(..n);
                }
            }
        }
        if self.dropped > 0 {
            let note = format!(
                "keel: ({} console lines dropped: console blocked)\n",
                self.dropped
            );
            self.dropped = 0;
            let _ = sys::write(fd.as_raw_fd(), note.as_bytes());
        }
        true
    }
}

struct Logger {
    console: ConsoleOut,
    kmsg: Option<File>,
    ring: Option<Ring>,
}

static LOGGER: Mutex<Logger> = Mutex::new(Logger {
    console: ConsoleOut {
        fd: None,
        pending: VecDeque::new(),
        dropped: 0,
    },
    kmsg: None,
    ring: None,
});

fn lock() -> MutexGuard<'static, Logger> {
    // A panic while logging must not silence PID 1 afterwards.
    LOGGER.lock().unwrap_or_else(|e| e.into_inner())
}

/// PID 1: console without blocking, /dev/kmsg, ring.
pub fn init_pid1() {
    let console = sys::open_raw(
        c"/dev/console",
        libc::O_WRONLY | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC,
    );
    let kmsg = sys::open_raw(c"/dev/kmsg", libc::O_WRONLY | libc::O_CLOEXEC);
    // The kernel rate-limits /dev/kmsg writers to 10 lines per 5 s by
    // default; a restarting service logs more than that.
    let _ = std::fs::write("/proc/sys/kernel/printk_devkmsg", "on\n");
    let mut l = lock();
    l.console.fd = console.ok();
    l.kmsg = kmsg.ok().map(File::from);
    l.ring = Some(Ring::new(RING_BYTES));
}

/// Host mode (`init supervise`): stdout and the ring.
pub fn init_host() {
    lock().ring = Some(Ring::new(RING_BYTES));
}

fn uptime_ms() -> u64 {
    sys::boottime().as_millis() as u64
}

/// Replaces control characters (a service's colour codes, a stray
/// carriage return) so one line stays one console line.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect()
}

fn emit(source: &str, text: String, console_line: Option<String>) {
    let mut l = lock();
    if let Some(line) = console_line {
        l.console.write(line.as_bytes());
    }
    if let Some(k) = &mut l.kmsg {
        let mut rec = String::with_capacity(text.len() + 24);
        let _ = write!(rec, "{KMSG_PRIORITY}keel[1]: ");
        if source != "init" {
            let _ = write!(rec, "[{source}] ");
        }
        let cut = text
            .char_indices()
            .nth(MAX_LINE)
            .map_or(text.len(), |(i, _)| i);
        rec.push_str(&text[..cut]);
        let _ = k.write_all(rec.as_bytes());
    }
    if let Some(ring) = &mut l.ring {
        ring.push(Entry {
            at_ms: uptime_ms(),
            source: source.to_string(),
            text,
        });
    }
}

/// One of init's own lines (`log!`).
pub fn init_line(args: fmt::Arguments) {
    let text = clean(&args.to_string());
    let line = format!("keel: {text}\n");
    emit("init", text, Some(line));
}

/// One line of a service's output.
pub fn service_line(name: &str, text: &str, to_console: bool) {
    let text = clean(text);
    let line = to_console.then(|| format!("keel: [{name}] {text}\n"));
    emit(name, text, line);
}

/// The descriptor to poll for POLLOUT while console lines are queued.
pub fn pending_fd() -> Option<RawFd> {
    let l = lock();
    let fd = l.console.fd.as_ref()?.as_raw_fd();
    (!l.console.pending.is_empty()).then_some(fd)
}

pub fn flush_pending() {
    lock().console.flush();
}

/// Before a command writes its own output to stdout: let queued lines go
/// first (waiting up to `limit`), so the console reads in order.
pub fn flush_blocking(limit: Duration) {
    let start = Instant::now();
    loop {
        let fd = {
            let mut l = lock();
            if l.console.flush() {
                return;
            }
            match &l.console.fd {
                Some(fd) => fd.as_raw_fd(),
                None => return,
            }
        };
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return;
        }
        let mut pfd = [libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        }];
        let _ = sys::poll(&mut pfd, Some(left.min(Duration::from_millis(100))));
    }
}

/// The ring's lines, oldest first, optionally from one source only.
pub fn lines(source: Option<&str>) -> Vec<String> {
    let l = lock();
    let Some(ring) = &l.ring else {
        return Vec::new();
    };
    ring.iter()
        .filter(|e| source.is_none_or(|s| e.source == s))
        .map(Entry::to_string)
        .collect()
}

/// For the panic hook: put the message in the kernel log too, unless
/// the logger itself is what panicked.
pub fn panic_line(text: &str) {
    if let Ok(mut l) = LOGGER.try_lock() {
        if let Some(k) = &mut l.kmsg {
            let _ = write!(k, "<26>keel[1]: {text}");
        }
    }
}

/// Splits a service's output into lines; bounded per line.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Complete lines from `bytes`; an overlong line comes out in pieces.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                out.push(self.take());
            } else {
                self.buf.push(b);
                if self.buf.len() >= MAX_LINE {
                    out.push(self.take());
                }
            }
        }
        out
    }

    /// What is left when the pipe closes.
    pub fn finish(&mut self) -> Option<String> {
        (!self.buf.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8_lossy(&line).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> Entry {
        Entry {
            at_ms: 12_345,
            source: "agent".into(),
            text: text.into(),
        }
    }

    #[test]
    fn ring_keeps_the_newest_lines_within_its_budget() {
        let mut r = Ring::new(10 * (ENTRY_OVERHEAD + 5 + 5));
        for i in 0..100 {
            r.push(entry(&format!("{i:05}")));
        }
        let kept: Vec<&str> = r.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(kept.len(), 10);
        assert_eq!(kept[0], "00090");
        assert_eq!(kept[9], "00099");
        // One line bigger than the budget leaves nothing behind, not a panic.
        r.push(entry(&"x".repeat(5000)));
        assert_eq!(r.iter().count(), 0);
        assert_eq!(r.bytes, 0);
    }

    #[test]
    fn entries_show_time_source_and_text() {
        assert_eq!(entry("hello").to_string(), "[    12.345] agent: hello");
    }

    #[test]
    fn splits_lines_and_bounds_them() {
        let mut s = LineSplitter::default();
        assert_eq!(s.feed(b"one\r\ntw"), ["one"]);
        assert_eq!(s.feed(b"o\n\nthree"), ["two", ""]);
        assert_eq!(s.finish().as_deref(), Some("three"));
        assert_eq!(s.finish(), None);
        let long = vec![b'a'; MAX_LINE * 2 + 10];
        let parts = s.feed(&long);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.len() == MAX_LINE));
        assert_eq!(s.finish().map(|r| r.len()), Some(10));
        assert_eq!(s.feed(&[0xff, b'\n']), ["\u{fffd}"]);
    }

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(clean("a\x1b[31mred\x1b[0m\tz\r"), "a?[31mred?[0m\tz?");
    }

    #[test]
    fn a_blocked_console_queues_then_drops() {
        let mut c = ConsoleOut {
            fd: None,
            pending: VecDeque::new(),
            dropped: 0,
        };
        for _ in 0..(PENDING_MAX / 100 + 5) {
            c.queue(&[b'x'; 100]);
        }
        assert!(c.pending.len() <= PENDING_MAX);
        assert!(c.dropped >= 5);
    }
}
