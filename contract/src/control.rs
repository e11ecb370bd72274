//! The control socket's protocol ([`crate::paths::CONTROL_SOCKET`]): how
//! `keelctl`, the agent and tests talk to init.
//!
//! The client sends one request line; init answers with zero or more
//! output lines and then exactly one final line, `ok` or `error: MESSAGE`,
//! and closes the connection. Output lines never have either form.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

/// The longest request line init reads.
pub const MAX_REQUEST: usize = 1024;

/// How the system goes down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shutdown {
    /// Restart, optionally with an argument for the kernel's restart
    /// handler (reboot(2)'s `LINUX_REBOOT_CMD_RESTART2`).
    Reboot(Option<String>),
    PowerOff,
    Halt,
}

impl fmt::Display for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reboot(None) => f.write_str("reboot"),
            Self::Reboot(Some(arg)) => write!(f, "reboot ({arg})"),
            Self::PowerOff => f.write_str("poweroff"),
            Self::Halt => f.write_str("halt"),
        }
    }
}

/// Linux's signal numbers for the architectures Keel runs on (the generic
/// numbering that arm, arm64 and x86 share; init checks them against libc).
pub mod signal {
    pub const HUP: i32 = 1;
    pub const INT: i32 = 2;
    pub const QUIT: i32 = 3;
    pub const ABRT: i32 = 6;
    pub const KILL: i32 = 9;
    pub const USR1: i32 = 10;
    pub const SEGV: i32 = 11;
    pub const USR2: i32 = 12;
    pub const TERM: i32 = 15;
    pub const CONT: i32 = 18;
    pub const STOP: i32 = 19;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status,
    Logs(Option<String>),
    Start(String),
    Stop(String),
    Restart(String),
    Kill(String, i32),
    Shutdown(Shutdown),
}

impl Request {
    pub fn parse(line: &str) -> Result<Self, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let usage = |u: &str| Err(format!("usage: {u}"));
        match words.as_slice() {
            ["status"] => Ok(Self::Status),
            ["logs"] => Ok(Self::Logs(None)),
            ["logs", name] => Ok(Self::Logs(Some(name.to_string()))),
            ["start", name] => Ok(Self::Start(name.to_string())),
            ["stop", name] => Ok(Self::Stop(name.to_string())),
            ["restart", name] => Ok(Self::Restart(name.to_string())),
            ["kill", name] => Ok(Self::Kill(name.to_string(), signal::TERM)),
            ["kill", name, sig] => Ok(Self::Kill(name.to_string(), parse_signal(sig)?)),
            ["reboot"] => Ok(Self::Shutdown(Shutdown::Reboot(None))),
            ["reboot", ..] => Ok(Self::Shutdown(Shutdown::Reboot(Some(
                words[1..].join(" "),
            )))),
            ["poweroff"] => Ok(Self::Shutdown(Shutdown::PowerOff)),
            ["halt"] => Ok(Self::Shutdown(Shutdown::Halt)),
            ["logs", ..] => usage("logs [NAME]"),
            [cmd @ ("start" | "stop" | "restart"), ..] => usage(&format!("{cmd} NAME")),
            ["kill", ..] => usage("kill NAME [SIGNAL]"),
            ["status" | "poweroff" | "halt", ..] => usage(words[0]),
            [] => Err("empty request".into()),
            [other, ..] => Err(format!(
                "unknown command '{}' (try: status, logs, start, stop, restart, kill, reboot, poweroff, halt)",
                other.chars().take(40).collect::<String>()
            )),
        }
    }

    /// The request line a client sends (without the newline).
    pub fn to_line(&self) -> String {
        match self {
            Self::Status => "status".into(),
            Self::Logs(None) => "logs".into(),
            Self::Logs(Some(n)) => format!("logs {n}"),
            Self::Start(n) => format!("start {n}"),
            Self::Stop(n) => format!("stop {n}"),
            Self::Restart(n) => format!("restart {n}"),
            Self::Kill(n, s) => format!("kill {n} {s}"),
            Self::Shutdown(Shutdown::Reboot(None)) => "reboot".into(),
            Self::Shutdown(Shutdown::Reboot(Some(a))) => format!("reboot {a}"),
            Self::Shutdown(Shutdown::PowerOff) => "poweroff".into(),
            Self::Shutdown(Shutdown::Halt) => "halt".into(),
        }
    }
}

/// `TERM`, `SIGTERM`, `term` or a number from 1 to 64.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    Ok(match name {
        "HUP" => signal::HUP,
        "INT" => signal::INT,
        "QUIT" => signal::QUIT,
        "KILL" => signal::KILL,
        "USR1" => signal::USR1,
        "USR2" => signal::USR2,
        "TERM" => signal::TERM,
        "CONT" => signal::CONT,
        "STOP" => signal::STOP,
        "ABRT" => signal::ABRT,
        "SEGV" => signal::SEGV,
        _ => {
            return Err(format!(
                "unknown signal '{}' (a number, or TERM, KILL, HUP, INT, USR1, ...)",
                s.chars().take(20).collect::<String>()
            ))
        }
    })
}

/// A reply: output lines and the result.
pub type Reply = (Vec<String>, Result<(), String>);

/// Encodes a reply: output lines, then `ok` or `error: …`.
pub fn encode_reply(lines: &[String], result: &Result<(), String>) -> Vec<u8> {
    let mut out = String::new();
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    match result {
        Ok(()) => out.push_str("ok\n"),
        Err(e) => {
            out.push_str("error: ");
            out.push_str(&e.replace('\n', " "));
            out.push('\n');
        }
    }
    out.into_bytes()
}

/// Splits a reply into output lines and the final result.
pub fn decode_reply(text: &str) -> io::Result<Reply> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let last = lines.pop().unwrap_or_default();
    let result = if last == "ok" {
        Ok(())
    } else if let Some(e) = last.strip_prefix("error: ") {
        Err(e.to_string())
    } else {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the reply ended (init going down?)",
        ));
    };
    Ok((lines, result))
}

/// The longest reply a client accepts (the whole log ring fits).
const MAX_REPLY: u64 = 4 << 20;

/// One request/reply exchange with init over `socket`, giving up after
/// `timeout` for each of connecting, sending and every read.
pub fn request(socket: &Path, request: &Request, timeout: Duration) -> io::Result<Reply> {
    use std::os::unix::net::UnixStream;
    let mut s = UnixStream::connect(socket)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect ({e}); is init running?")))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("{}\n", request.to_line()).as_bytes())?;
    let mut text = String::new();
    s.take(MAX_REPLY).read_to_string(&mut text)?;
    decode_reply(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests() {
        assert_eq!(Request::parse("status"), Ok(Request::Status));
        assert_eq!(
            Request::parse(" logs  agent "),
            Ok(Request::Logs(Some("agent".into())))
        );
        assert_eq!(Request::parse("logs"), Ok(Request::Logs(None)));
        assert_eq!(
            Request::parse("restart agent"),
            Ok(Request::Restart("agent".into()))
        );
        assert_eq!(
            Request::parse("kill agent"),
            Ok(Request::Kill("agent".into(), signal::TERM))
        );
        assert_eq!(
            Request::parse("kill agent 9"),
            Ok(Request::Kill("agent".into(), 9))
        );
        assert_eq!(
            Request::parse("kill agent SIGHUP"),
            Ok(Request::Kill("agent".into(), signal::HUP))
        );
        assert_eq!(
            Request::parse("reboot 0 tryboot"),
            Ok(Request::Shutdown(Shutdown::Reboot(Some(
                "0 tryboot".into()
            ))))
        );
        assert_eq!(
            Request::parse("reboot"),
            Ok(Request::Shutdown(Shutdown::Reboot(None)))
        );
        assert_eq!(
            Request::parse("poweroff"),
            Ok(Request::Shutdown(Shutdown::PowerOff))
        );
        assert_eq!(Request::parse("stop"), Err("usage: stop NAME".into()));
        assert_eq!(Request::parse("status now"), Err("usage: status".into()));
        assert!(Request::parse("kill a BOGUS")
            .unwrap_err()
            .contains("unknown signal 'BOGUS'"));
        assert!(Request::parse("frob")
            .unwrap_err()
            .starts_with("unknown command 'frob'"));
        assert!(Request::parse("").is_err());
    }

    #[test]
    fn request_lines_round_trip() {
        for r in [
            Request::Status,
            Request::Logs(Some("agent".into())),
            Request::Kill("a".into(), 9),
            Request::Shutdown(Shutdown::Reboot(Some("0 tryboot".into()))),
            Request::Shutdown(Shutdown::Halt),
        ] {
            assert_eq!(Request::parse(&r.to_line()), Ok(r));
        }
    }

    #[test]
    fn replies_round_trip() {
        let lines = vec!["a".to_string(), "b c".to_string()];
        let ok = encode_reply(&lines, &Ok(()));
        assert_eq!(ok, b"a\nb c\nok\n");
        assert_eq!(
            decode_reply(std::str::from_utf8(&ok).unwrap()).unwrap(),
            (lines, Ok(()))
        );
        let err = encode_reply(&[], &Err("no\nway".into()));
        assert_eq!(err, b"error: no way\n");
        assert_eq!(
            decode_reply("error: no way\n").unwrap(),
            (vec![], Err("no way".to_string()))
        );
        assert!(decode_reply("half a reply\n").is_err());
        assert!(decode_reply("").is_err());
    }
}
