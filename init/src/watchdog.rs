//! The hardware watchdog (/dev/watchdog): opening it arms it, and PID 1
//! pets it while the supervision tree is working. If init hangs, or the
//! tree gives up and the reboot does not happen, the board resets, and a
//! trial slot falls back to the previous one.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

pub const DEVICE: &str = "/dev/watchdog";

pub struct Watchdog {
    file: File,
    interval: Duration,
    next: Instant,
}

impl Watchdog {
    /// Opens (arms) the device if the board has one.
    pub fn open(path: &Path, interval: Duration, now: Instant) -> Option<Self> {
        if !path.exists() {
            return None;
        }
        match std::fs::OpenOptions::new().write(true).open(path) {
            Ok(file) => {
                crate::log!(
                    "watchdog {} armed; petting it every {interval:?}",
                    path.display()
                );
                let mut w = Self {
                    file,
                    interval,
                    next: now,
                };
                w.pet_if_due(now);
                Some(w)
            }
            Err(e) => {
                crate::log!("watchdog {}: {e}; not used", path.display());
                None
            }
        }
    }

    pub fn next_deadline(&self) -> Instant {
        self.next
    }

    pub fn pet_if_due(&mut self, now: Instant) {
        if now >= self.next {
            // Any write is a keepalive.
            let _ = self.file.write_all(b"\0");
            self.next = now + self.interval;
        }
    }

    /// Magic close: drivers that allow it stop the timer ("hang" mode is
    /// for debugging; a reset would end the session).
    pub fn disarm(mut self) {
        let _ = self.file.write_all(b"V");
        crate::log!("watchdog disarmed (if the driver allows it)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pets_on_schedule_and_disarms_with_v() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("watchdog");
        assert!(Watchdog::open(&dev, Duration::from_secs(1), Instant::now()).is_none());
        std::fs::write(&dev, b"").unwrap();
        let t0 = Instant::now();
        let mut w = Watchdog::open(&dev, Duration::from_secs(5), t0).unwrap();
        w.pet_if_due(t0 + Duration::from_secs(1));
        assert_eq!(std::fs::read(&dev).unwrap(), b"\0", "once at open only");
        w.pet_if_due(t0 + Duration::from_secs(5));
        assert_eq!(w.next_deadline(), t0 + Duration::from_secs(10));
        w.disarm();
        assert_eq!(std::fs::read(&dev).unwrap(), b"\0\0V");
    }
}
