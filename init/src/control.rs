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

use keel_contract::control;
pub use keel_contract::control::{encode_reply, Request, MAX_REQUEST};
use keel_contract::paths;

pub const SOCKET: &str = paths::CONTROL_SOCKET;
/// Overrides `SOCKET` for keelctl (host mode, tests).
pub const SOCKET_ENV: &str = "KEEL_CONTROL";
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
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let client = Client {
                    stream,
                    input: Vec::new(),
                    output: None,
                    written: 0,
                    deadline: now + CLIENT_TIMEOUT,
                };
                if self.clients.len() < MAX_CLIENTS {
                    self.clients.push(client);
                    continue;
                }
                // Full: the longest-idle client that has asked nothing makes
                // room, so idle connections cannot lock out a reboot
                // request. Replaced in place: the indices in `requests`
                // stay valid.
                let asked: Vec<usize> = requests.iter().map(|(i, _)| *i).collect();
                let idle = (0..self.clients.len())
                    .filter(|i| !asked.contains(i))
                    .filter(|i| self.clients[*i].output.is_none())
                    .min_by_key(|i| self.clients[*i].deadline);
                if let Some(i) = idle {
                    self.clients[i] = client;
                }
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
pub fn request(path: &Path, line: &str) -> io::Result<control::Reply> {
    let req = Request::parse(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    control::request(path, &req, Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_numbers_match_libc() {
        use keel_contract::control::signal;
        assert_eq!(
            [
                signal::HUP,
                signal::INT,
                signal::QUIT,
                signal::ABRT,
                signal::KILL
            ],
            [
                libc::SIGHUP,
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGABRT,
                libc::SIGKILL
            ]
        );
        assert_eq!(
            [
                signal::USR1,
                signal::SEGV,
                signal::USR2,
                signal::TERM,
                signal::CONT,
                signal::STOP
            ],
            [
                libc::SIGUSR1,
                libc::SIGSEGV,
                libc::SIGUSR2,
                libc::SIGTERM,
                libc::SIGCONT,
                libc::SIGSTOP
            ]
        );
    }

    /// Every slot held by an idle client: a new request is still served
    /// (the oldest idle connection makes room).
    #[test]
    fn idle_clients_cannot_lock_out_a_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let mut server = Server::bind(&path).unwrap();
        let mut idle = Vec::new();
        let pump = |server: &mut Server| -> Vec<(usize, String)> {
            let mut fds = Vec::new();
            server.fill(&mut fds);
            crate::sys::poll(&mut fds, Some(Duration::from_millis(50))).unwrap();
            server.service(&fds, Instant::now())
        };
        for _ in 0..MAX_CLIENTS + 4 {
            idle.push(UnixStream::connect(&path).unwrap());
            pump(&mut server);
        }
        assert_eq!(server.clients.len(), MAX_CLIENTS);
        let p = path.clone();
        let client = std::thread::spawn(move || request(&p, "status").unwrap());
        let start = Instant::now();
        let mut answered = false;
        while !answered && start.elapsed() < Duration::from_secs(5) {
            for (i, line) in pump(&mut server) {
                assert_eq!(line, "status");
                server.answer(i, encode_reply(&["row".into()], &Ok(())));
                answered = true;
            }
            server.sweep(Instant::now());
        }
        assert!(answered, "the request was never read");
        assert_eq!(client.join().unwrap().0, vec!["row".to_string()]);
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
