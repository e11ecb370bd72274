//! The HTTPS client and resolver against real servers on loopback: Python's
//! http.server over OpenSSL with a CA made by the openssl CLI, and dnsmasq
//! answering for the test's host name.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use net::{HttpError, Resolver, Trust};

const NAME: &str = "update.keel.test";

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

struct Env {
    dir: tempfile::TempDir,
    port: u16,
    payload: Vec<u8>,
    resolver: Resolver,
    _server: Kill,
    _dns: Kill,
}

impl Env {
    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    fn trust(&self) -> Trust {
        let mut t = Trust::empty();
        assert_eq!(t.add_pem_file(&self.ca()).unwrap(), 1);
        t
    }
    fn url(&self, path: &str) -> String {
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

fn setup() -> Env {
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

fn fetch(env: &Env, path: &str, trust: &Trust) -> Result<Vec<u8>, String> {
    let mut r = net::get(&env.url(path), trust, &env.resolver).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn downloads_by_name_with_length_redirect_and_chunks() {
    let env = setup();
    let trust = env.trust();
    assert_eq!(
        env.resolver.resolve(NAME, 443).unwrap(),
        vec!["127.0.0.1:443".parse().unwrap()]
    );
    let r = net::get(&env.url("/files/payload.bin"), &trust, &env.resolver).unwrap();
    assert_eq!(r.length, Some(env.payload.len() as u64));
    drop(r);
    for path in ["/files/payload.bin", "/redirect", "/chunked"] {
        let got = fetch(&env, path, &trust).unwrap();
        assert!(got == env.payload, "{path}: body differs");
    }
    // The server's certificate also names its IP address.
    let by_ip = format!("https://127.0.0.1:{}/files/payload.bin", env.port);
    let mut body = Vec::new();
    net::get(&by_ip, &trust, &env.resolver)
        .unwrap()
        .read_to_end(&mut body)
        .unwrap();
    assert!(body == env.payload);
}

#[test]
fn failures_say_what_went_wrong() {
    let env = setup();
    let trust = env.trust();
    let err = fetch(&env, "/files/payload.bin", &Trust::public_roots()).unwrap_err();
    assert!(
        err.contains("certificate") && err.contains("--ca"),
        "unknown CA: {err}"
    );
    let wrong = format!(
        "https://wrong-name.keel.test:{}/files/payload.bin",
        env.port
    );
    let err = net::get(&wrong, &trust, &env.resolver)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("certificate"), "wrong name: {err}");
    let err = fetch(&env, "/files/missing.fw", &trust).unwrap_err();
    assert!(err.contains("404"), "missing file: {err}");
    let err = fetch(&env, "/cut", &trust).unwrap_err();
    assert!(
        err.contains("cut off after 1500008 of 3000017 bytes"),
        "cut download: {err}"
    );
    let err = net::get(
        &format!("http://{NAME}:{}/files/payload.bin", env.port),
        &trust,
        &env.resolver,
    )
    .err()
    .unwrap();
    assert!(matches!(err, HttpError::BadUrl { .. }), "{err}");
    assert!(err.to_string().contains("use https"), "{err}");
    let err = net::get("https://gone.keel.test/x", &trust, &env.resolver)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not exist"), "NXDOMAIN: {err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = net::get(&format!("https://127.0.0.1:{port}/"), &trust, &env.resolver)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("cannot connect"), "refused: {err}");
}
