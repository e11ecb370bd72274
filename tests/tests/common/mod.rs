//! Helpers shared by the integration tests: running `cargo xtask`, building
//! boards once per test binary, and driving a QEMU serial console.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BOARDS: [&str; 5] = ["qemu-aarch64", "qemu-armv7", "rpi4", "rpi3", "bbb"];

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn xtask_command(args: &[&str]) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root())
        .args(["run", "--quiet", "-p", "xtask", "--"])
        .args(args);
    cmd
}

pub fn xtask(args: &[&str]) -> Output {
    xtask_command(args).output().expect("cargo runs")
}

/// Builds serialize: two builds of one board must not share temp files.
static BUILD: Mutex<()> = Mutex::new(());

pub fn lock_builds() -> std::sync::MutexGuard<'static, ()> {
    BUILD.lock().unwrap_or_else(|e| e.into_inner())
}

/// Builds (or reuses) a board's image and returns target/images/<board>.
pub fn build(board: &str) -> PathBuf {
    let _guard = lock_builds();
    let out = xtask(&["build", "--board", board]);
    assert!(
        out.status.success(),
        "cargo xtask build --board {board} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    root().join("target/images").join(board)
}

pub fn board_config(board: &str) -> image_build::board::BoardConfig {
    image_build::board::BoardConfig::load(&root().join("board-configs"), board).unwrap()
}

/// A QEMU machine whose serial console the test reads and types into.
pub struct Console {
    child: Child,
    stdin: ChildStdin,
    seen: Arc<Mutex<String>>,
    /// Bytes of `seen` already matched by `expect`.
    cursor: usize,
    log: PathBuf,
    image: PathBuf,
}

impl Console {
    pub fn boot(board: &str, image: &Path) -> Console {
        Self::boot_with(board, image, &[])
    }

    /// Boots with further read-only virtio disks attached (e.g. a bundle).
    pub fn boot_with(board: &str, image: &Path, disks: &[&Path]) -> Console {
        // Run the xtask binary itself (it execs QEMU), so killing the child
        // really stops the machine; `cargo run` would leave QEMU behind.
        assert!(xtask(&["--help"]).status.success(), "xtask builds");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"));
        let mut child = Command::new(target.join("debug/xtask"))
            .args(["qemu", "--board", board, "--image", image.to_str().unwrap()])
            .args(
                disks
                    .iter()
                    .flat_map(|d| ["--disk".to_string(), d.display().to_string()]),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cargo xtask qemu starts");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(String::new()));
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                // The serial line ends lines with \r\n; tests match on \n.
                let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                sink.lock().unwrap().push_str(&text);
            }
        });
        let log = image.with_extension("console.log");
        Console {
            child,
            stdin,
            seen,
            cursor: 0,
            log,
            image: image.to_path_buf(),
        }
    }

    fn transcript(&self) -> String {
        let s = self.seen.lock().unwrap().clone();
        let _ = std::fs::write(&self.log, &s);
        s
    }

    /// Waits for `needle` after everything matched so far; returns the text
    /// between the previous match and the end of this one.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let seen = self.seen.lock().unwrap();
                if let Some(pos) = seen[self.cursor..].find(needle) {
                    let end = self.cursor + pos + needle.len();
                    let chunk = seen[self.cursor..end].to_string();
                    self.cursor = end;
                    return chunk;
                }
            }
            if Instant::now() > deadline {
                let t = self.transcript();
                panic!("timed out after {timeout:?} waiting for {needle:?}; console so far (also in {}):\n{t}", self.log.display());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                let t = self.transcript();
                panic!("QEMU exited ({status}) before {needle:?} appeared; console:\n{t}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn send(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Runs one console command and returns its output up to `keel: ok` or
    /// `keel: error...` (the status line included).
    pub fn command(&mut self, line: &str, timeout: Duration) -> String {
        self.send(line);
        let deadline = Instant::now() + timeout;
        loop {
            {
                let seen = self.seen.lock().unwrap();
                let rest = &seen[self.cursor..];
                let hit = ["keel: ok", "keel: error"]
                    .iter()
                    .filter_map(|n| rest.find(n))
                    .min();
                if let Some(pos) = hit {
                    let line_end = rest[pos..]
                        .find('\n')
                        .map(|e| pos + e)
                        .unwrap_or(rest.len());
                    let chunk = rest[..line_end].to_string();
                    self.cursor += line_end;
                    return chunk;
                }
            }
            if Instant::now() > deadline {
                let t = self.transcript();
                panic!("timed out waiting for {line:?} to finish; console:\n{t}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_exit(mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                return self.transcript();
            }
            if Instant::now() > deadline {
                let t = self.transcript();
                panic!("QEMU did not exit within {timeout:?}; console:\n{t}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.transcript();
    }
}

/// A real HTTPS server on the host's loopback (Python's http.server over
/// OpenSSL, net/tests/https_server.py) serving `dir`, with a certificate
/// from a CA made for this run. QEMU guests reach it as 10.0.2.2.
pub struct HttpsServer {
    child: Child,
    pub port: u16,
    /// The CA certificate (PEM) that signed the server's certificate.
    pub ca: PathBuf,
}

impl HttpsServer {
    /// `san`: the certificate's names, e.g. "IP:10.0.2.2".
    pub fn start(dir: &Path, certs: &Path, san: &str) -> HttpsServer {
        std::fs::create_dir_all(certs).unwrap();
        let net = root().join("net/tests");
        let out = Command::new("sh")
            .arg(net.join("make-certs.sh"))
            .arg(certs)
            .arg(san)
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "making test certificates (needs openssl): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = Command::new("python3")
            .arg(net.join("https_server.py"))
            .arg(certs.join("server.pem"))
            .arg(certs.join("server.key"))
            .arg(dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (cargo xtask test installs it)");
        let mut port = String::new();
        let mut stdout = child.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            port.push(byte[0] as char);
        }
        let port = port
            .trim()
            .parse()
            .expect("the HTTPS server prints its port");
        HttpsServer {
            child,
            port,
            ca: certs.join("ca.pem"),
        }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Console {
    /// Writes a host file into the guest line by line with the console's
    /// `write` and `append` commands.
    pub fn put_file(&mut self, host: &Path, guest: &str, timeout: Duration) {
        let text = std::fs::read_to_string(host).unwrap();
        for (i, line) in text.lines().enumerate() {
            let verb = if i == 0 { "write" } else { "append" };
            let out = self.command(&format!("{verb} {guest} {line}"), timeout);
            assert!(out.contains("keel: ok"), "{verb} {guest}: {out}");
        }
    }
}

/// Builds `board` at `version` into `out`, optionally from another overlay.
pub fn build_version(board: &str, version: &str, out: &Path, overlay: Option<&Path>) {
    let _guard = lock_builds();
    let mut args = vec![
        "build",
        "--board",
        board,
        "--version",
        version,
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(o) = overlay {
        args.extend(["--overlay", o.to_str().unwrap()]);
    }
    let res = xtask(&args);
    assert!(
        res.status.success(),
        "build {version}: {}",
        String::from_utf8_lossy(&res.stderr)
    );
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// An overlay whose health check never passes: one of its services cannot
/// start, and the agent gives up on a trial after 20 s instead of 120.
pub fn unhealthy_overlay(work: &Path) -> PathBuf {
    let overlay = work.join("overlay-unhealthy");
    copy_dir(&root().join("rootfs-overlay"), &overlay);
    let services = overlay.join("etc/keel/services.toml");
    let text = std::fs::read_to_string(&services).unwrap().replace(
        "children = [\"agent\"]",
        "children = [\"agent\", \"broken\"]",
    )
        + "\n[worker.broken]\ncommand = \"/usr/bin/does-not-exist\"\nrestart = \"permanent\"\n";
    std::fs::write(&services, text).unwrap();
    std::fs::write(overlay.join("etc/keel/agent.conf"), "trial_timeout=20\n").unwrap();
    overlay
}

/// Copies host files into a card's data partition (ext4) before the card
/// boots, with the writer manufacturing uses (`name` is relative to /data;
/// keys get mode 0600): for machines with no second disk.
pub fn put_in_data(card: &Path, files: &[(&Path, &str)]) {
    let part = factory::card::data_partition(card).expect("the card's data partition");
    let files: Vec<factory::card::CardFile> = files
        .iter()
        .map(|(host, name)| {
            let (dir, file) = name.rsplit_once('/').unwrap_or(("", name));
            let dir = format!("{}/{dir}", keel_contract::paths::DATA);
            let mode = if file.ends_with(".key") { 0o600 } else { 0o644 };
            let bytes = std::fs::read(host).unwrap_or_else(|e| panic!("{}: {e}", host.display()));
            factory::card::CardFile::new(dir.trim_end_matches('/'), file, bytes, mode)
        })
        .collect();
    factory::card::write_files(card, part, &files).expect("writing the card's data partition");
}

/// The first step of the QEMU update tests, after `agent update` of
/// version 0.2.0 on slot A said `out`: the reboot tries slot B, which
/// confirms itself, and /data/precious (written under version 1) is still
/// there.
pub fn reboot_into_v2_confirmed(c: &mut Console, out: &str, boot: Duration, cmd: Duration) {
    assert!(
        out.contains("keel: exit=0") && out.contains("slot b now holds version 0.2.0"),
        "{out}"
    );
    c.send("reboot");
    c.expect("keel: trial 1/3 of slot b", boot);
    c.expect("keel: ready slot=b version=0.2.0", boot);
    c.expect("agent: confirmed: slot b version 0.2.0", boot);
    let status = c.command("run /usr/bin/agent status", cmd);
    assert!(
        status.contains("active_slot=b") && status.contains("on_trial=false"),
        "{status}"
    );
    assert!(c
        .command("cat /data/precious", cmd)
        .contains("kept-across-updates"));
}

/// The rollback step of the QEMU update tests, after `agent update` of a
/// version 0.3.0 whose health check never passes said `out` on version
/// 0.2.0 in slot B: three trial boots of slot A fail, and the device is
/// back on version 0.2.0 by itself.
pub fn reboot_into_unhealthy_v3_and_back(
    c: &mut Console,
    out: &str,
    boot: Duration,
    cmd: Duration,
) {
    assert!(out.contains("slot a now holds version 0.3.0"), "{out}");
    c.send("reboot");
    for n in 1..=3 {
        c.expect(&format!("keel: trial {n}/3 of slot a"), boot);
        c.expect("keel: ready slot=a version=0.3.0", boot);
        c.expect("health check failed", boot);
    }
    c.expect("not confirmed after 3 tries; falling back to b", boot);
    c.expect("keel: ready slot=b version=0.2.0", boot);
    c.expect("agent: rolled back", boot);
    let status = c.command("run /usr/bin/agent status", cmd);
    assert!(
        status.contains("active_slot=b") && status.contains("version=0.2.0"),
        "{status}"
    );
}
