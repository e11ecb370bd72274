//! The control socket (/run/keel/control.sock) and `keelctl`, its client.
//!
//! Protocol (docs/services.md): the client sends one request line; init
//! answers with zero or more output lines and then exactly one final line,
//! `ok` or `error: MESSAGE`, and closes the connection. Output lines never
//! have either form (status rows and log lines start otherwise).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::shutdown::Kind;

pub const SOCKET: &str = "/run/keel/control.sock";
/// Overrides `SOCKET` for keelctl (host mode, tests).
pub const SOCKET_ENV: &str = "KEEL_CONTROL";
const MAX_REQUEST: usize = 1024;
/// A client that sends no complete line (or reads no reply) in this time
/// is dropped, so a stuck client cannot pin memory in PID 1.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CLIENTS: usize = 16;

pub const USAGE: &str = "usage: keelctl COMMAND

commands:
  status              the supervision tree: state, pid, restarts, uptime of each child
  logs [NAME]         captured output (all services and init, or one of them)
  start NAME          start a stopped service or supervisor
  stop NAME           stop it (SIGTERM, SIGKILL after its timeout); not restarted
  restart NAME        stop it and start it again
  kill NAME [SIGNAL]  send a signal (default TERM); the supervisor sees the exit
  reboot [ARG]        orderly reboot; ARG goes to the kernel (e.g. '0 tryboot')
  poweroff | halt     orderly power off / halt";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status,
    Logs(Option<String>),
    Start(String),
    Stop(String),
    Restart(String),
    Kill(String, libc::c_int),
    Shutdown(Kind),
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
            ["kill", name] => Ok(Self::Kill(name.to_string(), libc::SIGTERM)),
            ["kill", name, sig] => Ok(Self::Kill(name.to_string(), parse_signal(sig)?)),
            ["reboot"] => Ok(Self::Shutdown(Kind::Reboot(None))),
            ["reboot", ..] => Ok(Self::Shutdown(Kind::Reboot(Some(words[1..].join(" "))))),
            ["poweroff"] => Ok(Self::Shutdown(Kind::PowerOff)),
            ["halt"] => Ok(Self::Shutdown(Kind::Halt)),
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
}

/// `TERM`, `SIGTERM`, `term` or a number.
pub fn parse_signal(s: &str) -> Result<libc::c_int, String> {
    if let Ok(n) = s.parse::<libc::c_int>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    Ok(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "ABRT" => libc::SIGABRT,
        "SEGV" => libc::SIGSEGV,
        _ => {
            return Err(format!(
                "unknown signal '{s}' (a number, or TERM, KILL, HUP, INT, USR1, ...)"
            ))
        }
    })
}

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

struct Client {
    stream: UnixStream,
    input: Vec<u8>,
    /// The encoded reply once the request is answered.
    output: Option<Vec<u8>>,
    written: usize,
    deadline: Instant,
}

/// The listening socket and its connections, all non-blocking.
pub struct Server {
    listener: UnixListener,
    clients: Vec<Client>,
}

impl Server {
    /// Binds `path` (replacing a stale socket), mode 0600: only root may
    /// reboot the machine through it.
    pub fn bind(path: &Path) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Self {
            listener,
            clients: Vec::new(),
        })
    }

    pub fn fill(&self, fds: &mut Vec<libc::pollfd>) {
        fds.push(libc::pollfd {
            fd: self.listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for c in &self.clients {
            fds.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events: if c.output.is_some() {
                    libc::POLLOUT
                } else {
                    libc::POLLIN
                },
                revents: 0,
            });
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients.iter().map(|c| c.deadline).min()
    }

    /// Accepts, reads and writes; returns complete requests as
    /// (client index, line) for `answer`.
    pub fn service(&mut self, fds: &[libc::pollfd], now: Instant) -> Vec<(usize, String)> {
        let mut requests = Vec::new();
        let mut buf = [0u8; 512];
        for (i, pfd) in fds.iter().enumerate().skip(1) {
            let Some(c) = self.clients.get_mut(i - 1) else {
                break;
            };
            if pfd.revents == 0 {
                continue;
            }
            if let Some(out) = &c.output {
                match c.stream.write(&out[c.written..]) {
                    Ok(n) => c.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => c.written = out.len(),
                }
                continue;
            }
            match c.stream.read(&mut buf) {
                Ok(0) => c.deadline = now, // hung up before asking
                Ok(n) => {
                    c.input.extend_from_slice(&buf[..n]);
                    if let Some(end) = c.input.iter().position(|&b| b == b'\n') {
                        let line = String::from_utf8_lossy(&c.input[..end]).trim().to_string();
                        requests.push((i - 1, line));
                    } else if c.input.len() > MAX_REQUEST {
                        c.output = Some(encode_reply(&[], &Err("request line too long".into())));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => c.deadline = now,
            }
        }
        // Finished or timed out clients go (after the requests are taken,
        // so the indices above stay valid until `answer`).
        if fds.first().is_some_and(|p| p.revents != 0) {
            while let Ok((stream, _)) = self.listener.accept() {
                if self.clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                    continue;
                }
                self.clients.push(Client {
                    stream,
                    input: Vec::new(),
                    output: None,
                    written: 0,
                    deadline: now + CLIENT_TIMEOUT,
                });
            }
        }
        requests
    }

    /// Queues the reply for a request `service` returned, writing what
    /// the socket takes at once.
    pub fn answer(&mut self, client: usize, reply: Vec<u8>) {
        if let Some(c) = self.clients.get_mut(client) {
            let n = c.stream.write(&reply).unwrap_or(0);
            c.written = n;
            c.output = Some(reply);
        }
    }

    /// Drops answered and timed-out connections. Call after `answer`.
    pub fn sweep(&mut self, now: Instant) {
        self.clients.retain(|c| {
            let done = c.output.as_ref().is_some_and(|o| c.written >= o.len());
            !done && now < c.deadline
        });
    }

    /// Blocks (briefly) until every queued reply is written: a reply to
    /// `reboot` must reach the client before the system goes down.
    pub fn drain(&mut self, limit: Duration) {
        let start = Instant::now();
        while self.clients.iter().any(|c| c.output.is_some()) && start.elapsed() < limit {
            for c in &mut self.clients {
                if let Some(out) = &c.output {
                    let _ = c.stream.set_nonblocking(false);
                    let _ = c.stream.set_write_timeout(Some(Duration::from_millis(200)));
                    let _ = c.stream.write_all(&out[c.written..]);
                    c.written = out.len();
                }
            }
            self.sweep(Instant::now());
        }
    }
}

/// `keelctl ARGS…`: sends one request and prints the reply. Exit status 0
/// for `ok`, 1 for `error:` or no answer, 2 for a usage error.
pub fn keelctl(args: &[String]) -> i32 {
    if args.is_empty() || matches!(args[0].as_str(), "-h" | "--help" | "help") {
        println!("{USAGE}");
        return if args.is_empty() { 2 } else { 0 };
    }
    let line = args.join(" ");
    if let Err(e) = Request::parse(&line) {
        eprintln!("keelctl: {e}\n{USAGE}");
        return 2;
    }
    let path = std::env::var_os(SOCKET_ENV).map_or_else(|| PathBuf::from(SOCKET), PathBuf::from);
    match request(&path, &line) {
        Ok((lines, result)) => {
            let mut out = io::stdout().lock();
            for l in &lines {
                let _ = writeln!(out, "{l}");
            }
            let _ = out.flush();
            match result {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("keelctl: {e}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("keelctl: {}: {e}", path.display());
            1
        }
    }
}

/// One request/reply exchange.
pub fn request(path: &Path, line: &str) -> io::Result<(Vec<String>, Result<(), String>)> {
    let mut s = UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot connect ({e}); is init running?")))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    decode_reply(&text)
}

/// Splits a reply into output lines and the final result.
pub fn decode_reply(text: &str) -> io::Result<(Vec<String>, Result<(), String>)> {
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
            Ok(Request::Kill("agent".into(), libc::SIGTERM))
        );
        assert_eq!(
            Request::parse("kill agent 9"),
            Ok(Request::Kill("agent".into(), 9))
        );
        assert_eq!(
            Request::parse("kill agent SIGHUP"),
            Ok(Request::Kill("agent".into(), libc::SIGHUP))
        );
        assert_eq!(
            Request::parse("reboot 0 tryboot"),
            Ok(Request::Shutdown(Kind::Reboot(Some("0 tryboot".into()))))
        );
        assert_eq!(
            Request::parse("reboot"),
            Ok(Request::Shutdown(Kind::Reboot(None)))
        );
        assert_eq!(
            Request::parse("poweroff"),
            Ok(Request::Shutdown(Kind::PowerOff))
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

    #[test]
    fn server_answers_over_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/control.sock");
        let mut server = Server::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let p = path.clone();
        let client = std::thread::spawn(move || request(&p, "status").unwrap());
        let start = Instant::now();
        let mut answered = false;
        while start.elapsed() < Duration::from_secs(5) {
            let mut fds = Vec::new();
            server.fill(&mut fds);
            crate::sys::poll(&mut fds, Some(Duration::from_millis(50))).unwrap();
            for (i, line) in server.service(&fds, Instant::now()) {
                assert_eq!(line, "status");
                server.answer(i, encode_reply(&["row".into()], &Ok(())));
                answered = true;
            }
            server.sweep(Instant::now());
            if answered && server.clients.is_empty() {
                break;
            }
        }
        let (lines, result) = client.join().unwrap();
        assert_eq!((lines, result), (vec!["row".to_string()], Ok(())));
        // A second bind replaces the stale socket file.
        drop(server);
        assert!(Server::bind(&path).is_ok());
    }
}
