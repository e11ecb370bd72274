//! The agent's downloads against a real HTTPS server on loopback (Python's
//! http.server over OpenSSL, the one net's tests use): a download cut off
//! halfway resumes with a Range request and delivers the whole file; a
//! server that cannot resume ends it with an error that says so.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use agent::download::Download;

struct Server {
    child: Child,
    port: u16,
    ca: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(root: &Path) -> Server {
    let net = Path::new(env!("CARGO_MANIFEST_DIR")).join("../net/tests");
    let certs = root.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let out = Command::new("sh")
        .arg(net.join("make-certs.sh"))
        .arg(&certs)
        .arg("IP:127.0.0.1")
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "make-certs.sh (needs openssl): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = Command::new("python3")
        .arg(net.join("https_server.py"))
        .arg(certs.join("server.pem"))
        .arg(certs.join("server.key"))
        .arg(root)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    let mut out = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0] as char);
    }
    Server {
        child,
        port: line.trim().parse().expect("the server prints its port"),
        ca: certs.join("ca.pem"),
    }
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("files")).unwrap();
    let payload: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i * 7 + i / 1000) as u8)
        .collect();
    std::fs::write(dir.path().join("files/payload.bin"), &payload).unwrap();
    let server = serve(dir.path());
    let mut trust = net::Trust::empty();
    trust.add_pem_file(&server.ca).unwrap();

    let mut lines = Vec::new();
    let mut log = |l: &str| lines.push(l.to_string());
    let url = format!("https://127.0.0.1:{}/cut-once/payload.bin", server.port);
    let mut d = Download::start(&url, &trust, net::GetOptions::default(), &mut log).unwrap();
    assert_eq!(d.total(), Some(payload.len() as u64));
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    drop(d);
    assert!(got == payload, "the resumed download differs from the file");
    assert!(lines.iter().any(|l| l.contains("resuming")), "{lines:?}");

    // A server that starts over instead of resuming: an error naming both.
    let mut log = |_: &str| {};
    let url = format!("https://127.0.0.1:{}/cut", server.port);
    let mut d = Download::start(&url, &trust, net::GetOptions::default(), &mut log).unwrap();
    let e = d.read_to_end(&mut Vec::new()).unwrap_err().to_string();
    assert!(
        e.contains("cut off") && e.contains("does not resume"),
        "{e}"
    );
}
