//! A QEMU machine whose serial console the bench reads and types into,
//! with the host time at which each piece of output arrived: boot figures
//! are taken from when a line appeared, not from when it was looked for.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct Console {
    child: Child,
    stdin: ChildStdin,
    output: Receiver<(Instant, Vec<u8>)>,
    /// Everything the console printed so far, `\r` removed.
    seen: String,
    /// (end offset in `seen`, arrival time) of every piece of output.
    arrivals: Vec<(usize, Instant)>,
    /// Bytes of `seen` already matched by `expect`.
    cursor: usize,
    started: Instant,
}

impl Console {
    /// Starts `program` with `args` (a QEMU whose serial console is stdio).
    pub fn start(program: &str, args: &[OsString]) -> Result<Console> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Self::spawn(cmd)
    }

    pub fn spawn(mut cmd: Command) -> Result<Console> {
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let stdin = child.stdin.take().context("QEMU's stdin")?;
        let mut stdout = child.stdout.take().context("QEMU's stdout")?;
        let (tx, output) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        });
        Ok(Console {
            child,
            stdin,
            output,
            seen: String::new(),
            arrivals: Vec::new(),
            cursor: 0,
            started,
        })
    }

    /// When QEMU was started: the machine's power-on.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits for `needle` after everything matched so far. Returns the text
    /// from the previous match to the end of this one, and when the output
    /// completing `needle` arrived.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> Result<(String, Instant)> {
        self.expect_any(&[needle], timeout)
    }

    /// Like [`Console::expect`], for whichever of `needles` comes first.
    fn expect_any(&mut self, needles: &[&str], timeout: Duration) -> Result<(String, Instant)> {
        let deadline = Instant::now() + timeout;
        loop {
            let hit = needles
                .iter()
                .filter_map(|n| {
                    self.seen[self.cursor..]
                        .find(n)
                        .map(|pos| self.cursor + pos + n.len())
                })
                .min();
            if let Some(end) = hit {
                let text = self.seen[self.cursor..end].to_string();
                let at = self.arrival(end);
                self.cursor = end;
                return Ok((text, at));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "the QEMU console did not show {needles:?} within {timeout:?}; it showed:\n{}",
                    self.tail()
                );
            }
            match self
                .output
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok((at, bytes)) => {
                    self.seen
                        .push_str(&String::from_utf8_lossy(&bytes).replace('\r', ""));
                    self.arrivals.push((self.seen.len(), at));
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => bail!(
                    "QEMU exited before {needles:?} appeared; the console showed:\n{}",
                    self.tail()
                ),
            }
        }
    }

    /// Types one line.
    pub fn send(&mut self, line: &str) -> Result<()> {
        self.stdin.write_all(line.as_bytes())?;
        self.stdin.write_all(b"\n")?;
        self.stdin.flush()?;
        Ok(())
    }

    /// Runs one console command and waits for its result line (`keel: ok`
    /// or `keel: error: …`). Returns the output and the host time from
    /// typing the line to the result, or for `run` to its `keel: exit=N`
    /// line (which comes right before `keel: ok`).
    pub fn command(&mut self, line: &str, timeout: Duration) -> Result<(String, Duration)> {
        let sent = Instant::now();
        self.send(line)?;
        let start = self.cursor;
        let (mut text, mut at) = self.expect_any(&["keel: ok", "keel: error:"], timeout)?;
        // The rest of the result line (an error's message).
        if let Ok((rest, _)) = self.expect("\n", Duration::from_secs(5)) {
            text.push_str(&rest);
        }
        if text.contains("keel: error:") {
            bail!("console command {line:?} failed:\n{text}");
        }
        if let Some(pos) = text.find("keel: exit=") {
            at = self.arrival(start + pos + "keel: exit=".len());
        }
        Ok((text, at.duration_since(sent)))
    }

    /// When the output up to byte `end` of everything seen had arrived.
    fn arrival(&self, end: usize) -> Instant {
        self.arrivals
            .iter()
            .find(|(e, _)| *e >= end)
            .map_or_else(Instant::now, |(_, t)| *t)
    }

    /// The last lines the console showed, for error messages.
    fn tail(&self) -> String {
        let lines: Vec<&str> = self.seen.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number that follows `key` in `text` (digits and dots), e.g.
/// `number_after("ready at 1.95s", "ready at ")` is 1.95.
pub fn number_after(text: &str, key: &str) -> Option<f64> {
    let rest = &text[text.find(key)? + key.len()..];
    rest.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::number_after;

    #[test]
    fn numbers_after_keys() {
        let line = "keel: boot: /init started at 1.374s, ready at 1.958s uptime";
        assert_eq!(number_after(line, "ready at "), Some(1.958));
        assert_eq!(number_after("VmRSS:\t    1234 kB", "VmRSS:"), Some(1234.0));
        assert_eq!(number_after("nothing here", "ready at "), None);
    }
}
