//! The servers the HTTPS tests run against: Python's http.server over
//! OpenSSL (tests/https_server.py) with a CA made by the openssl CLI,
//! dnsmasq answering for the test's host name, and a TCP proxy that
//! trickles the server's bytes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use net::{GetOptions, Resolver, Trust};

pub const NAME: &str = "update.keel.test";

fn tool(name: &str, package: &str) -> Command {
    let path = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is missing; install Debian package {package} (cargo xtask test does)")
        });
    Command::new(path)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Env {
    dir: tempfile::TempDir,
    pub port: u16,
    pub payload: Vec<u8>,
    pub resolver: Resolver,
    _server: Kill,
    _dns: Kill,
}

impl Env {
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    pub fn trust(&self) -> Trust {
        let mut t = Trust::empty();
        assert_eq!(t.add_pem_file(&self.ca()).unwrap(), 1);
        t
    }
    pub fn url(&self, path: &str) -> String {
        format!("https://{NAME}:{}{path}", self.port)
    }
}

fn make_certs(dir: &Path) {
    tool("openssl", "openssl"); // a clear message if it is missing
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/make-certs.sh");
    run(Command::new("sh")
        .arg(script)
        .arg(dir)
        .arg(format!("DNS:{NAME},IP:127.0.0.1")));
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn setup() -> Env {
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path());
    let files = dir.path().join("www/files");
    std::fs::create_dir_all(&files).unwrap();
    // Several TLS records and chunks' worth, not a multiple of anything.
    let payload: Vec<u8> = (0..3_000_017u32)
        .map(|i| (i * 7 + i / 4099) as u8)
        .collect();
    std::fs::write(files.join("payload.bin"), &payload).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/https_server.py");
    let mut server = tool("python3", "python3")
        .arg(script)
        .arg(dir.path().join("server.pem"))
        .arg(dir.path().join("server.key"))
        .arg(dir.path().join("www"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("server port");

    let dns_port = free_udp_port();
    let dns = tool("dnsmasq", "dnsmasq-base")
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--pid-file=",
        ])
        .arg(format!("--port={dns_port}"))
        .arg(format!("--address=/{NAME}/127.0.0.1"))
        .arg("--address=/gone.keel.test/")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(
        dir.path().join("resolv.conf"),
        format!("nameserver 127.0.0.1#{dns_port}\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("hosts"), "127.0.0.1 wrong-name.keel.test\n").unwrap();
    let resolver = Resolver {
        hosts: dir.path().join("hosts"),
        resolv_conf: dir.path().join("resolv.conf"),
        timeout: Duration::from_secs(2),
    };
    // dnsmasq needs a moment to bind.
    for _ in 0..50 {
        if resolver.resolve(NAME, 1).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Env {
        dir,
        port,
        payload,
        resolver,
        _server: Kill(server),
        _dns: Kill(dns),
    }
}

/// GETs `path` and reads the whole body.
pub fn fetch(
    env: &Env,
    path: &str,
    trust: &Trust,
    options: &GetOptions,
) -> Result<Vec<u8>, String> {
    let mut r =
        net::get(&env.url(path), trust, &env.resolver, options).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Runs `f` in a thread and fails the test if it is not done within
/// `limit`: a client that regresses to waiting for ever fails, not hangs.
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still running after {limit:?}"))
}

/// A TCP proxy to the server on `port` that passes the server's first
/// `fast` bytes on at once, then one byte every `every`; returns its port.
pub fn trickle_proxy(port: u16, fast: usize, every: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let local = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            std::thread::spawn(move || {
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                let (mut from_client, mut to_server) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || std::io::copy(&mut from_client, &mut to_server));
                let (mut server, mut client) = (server, client);
                let mut passed = 0;
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = match server.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let quick = n.min(fast.saturating_sub(passed));
                    if client.write_all(&buf[..quick]).is_err() {
                        return;
                    }
                    passed += quick;
                    for b in &buf[quick..n] {
                        std::thread::sleep(every);
                        if client.write_all(&[*b]).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    local
}
