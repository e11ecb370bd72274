//! Fleet figures for `cargo xtask bench`: QoS 1 messages per second through
//! a local mosquitto (Keel's MQTT client against `mosquitto_pub`, the same
//! path: publisher → broker → subscriber), the time to reconnect after the
//! broker restarts, and the agent's resident memory on the booted device
//! while it is connected to the hub.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hub::pki::{Pki, HUB_CN};
use mqtt::{Client, Event, Identity, Options, QoS};

/// One table row: (what, ours, reference, ratio, target).
pub type Figure = (String, String, String, String, &'static str);

const MESSAGES: usize = 2000;
const TOPIC: &str = "$aws/things/bench-pub/bench";

fn options(pki: &Pki, name: &str, port: u16) -> Result<Options> {
    let dir = pki.dir.join("things").join(name);
    if !dir.join("device.pem").exists() {
        pki.client(name)?;
    }
    let tls = Identity::in_dir(&dir).client_config(false)?;
    let mut o = Options::new("127.0.0.1", port, name, tls).keep_alive(60);
    o.backoff = mqtt::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    o.clock_floor = std::time::UNIX_EPOCH;
    Ok(o)
}

fn connect(o: Options, subscribe: &[&str]) -> Result<Client> {
    let mut c = Client::new(o);
    let filters: Vec<(&str, QoS)> = subscribe.iter().map(|f| (*f, QoS::AtLeastOnce)).collect();
    c.subscribe(&filters);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(Event::Connected { .. }) = c.poll(Duration::from_millis(200)) {
            return Ok(c);
        }
    }
    bail!("could not connect to the bench broker")
}

/// Waits until `sub` has received `n` messages.
fn receive(sub: &mut Client, n: usize, deadline: Instant) -> Result<()> {
    let mut got = 0;
    while got < n {
        if Instant::now() > deadline {
            bail!("only {got} of {n} messages arrived");
        }
        if let Some(Event::Message(_)) = sub.poll(Duration::from_millis(100)) {
            got += 1;
        }
    }
    Ok(())
}

/// QoS 1 rate and reconnect time against a mosquitto started here.
pub fn host_figures(work: &Path) -> Result<Vec<Figure>> {
    let pki = Pki::open_or_create(&work.join("pki"), "Keel bench CA")?;
    let port = hub::broker::free_port()?;
    let mut broker = hub::broker::Broker::start(
        &work.join("broker"),
        "127.0.0.1",
        port,
        &pki,
        &["localhost", "127.0.0.1"],
    )?;
    let payload = vec![b'x'; 200];

    // Ours: the hub's identity subscribes, bench-pub publishes.
    let mut sub = connect(options(&pki, HUB_CN, port)?, &[TOPIC])?;
    let mut publisher = connect(options(&pki, "bench-pub", port)?, &[])?;
    let start = Instant::now();
    for _ in 0..MESSAGES {
        publisher
            .publish(TOPIC, &payload, QoS::AtLeastOnce, false)
            .context("publishing")?;
        // Let the client read PUBACKs as they come.
        let _ = publisher.poll(Duration::ZERO);
    }
    receive(&mut sub, MESSAGES, Instant::now() + Duration::from_secs(120))?;
    let ours = start.elapsed();
    drop(sub);

    // The reference: mosquitto_pub to mosquitto_sub, the same identities.
    let cert = |name: &str| pki.dir.join("things").join(name);
    let tls = |cmd: &mut Command, name: &str| {
        cmd.arg("--cafile")
            .arg(pki.ca_pem())
            .arg("--cert")
            .arg(cert(name).join("device.pem"))
            .arg("--key")
            .arg(cert(name).join("device.key"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"]);
    };
    let mut s = Command::new("mosquitto_sub");
    tls(&mut s, HUB_CN);
    let mut s = s
        .args(["-t", TOPIC, "-C", &MESSAGES.to_string(), "-i", "bench-sub"])
        .stdout(Stdio::null())
        .spawn()
        .context("mosquitto_sub (Debian package mosquitto-clients)")?;
    std::thread::sleep(Duration::from_millis(500));
    let mut p = Command::new("mosquitto_pub");
    tls(&mut p, "bench-pub");
    p.args(["-t", TOPIC, "-i", "bench-pub-ref", "-l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let start = Instant::now();
    let mut p = p.spawn().context("mosquitto_pub")?;
    {
        let mut stdin = p.stdin.take().context("mosquitto_pub stdin")?;
        let line = format!("{}\n", String::from_utf8_lossy(&payload));
        for _ in 0..MESSAGES {
            stdin.write_all(line.as_bytes())?;
        }
    }
    s.wait()?;
    let reference = start.elapsed();
    let _ = p.wait();

    // Reconnecting: the broker restarts under a connected client.
    let mut c = connect(options(&pki, "bench-pub", port)?, &[TOPIC])?;
    let down = Instant::now();
    broker.restart()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let reconnect = loop {
        if Instant::now() > deadline {
            bail!("the client did not reconnect within a minute");
        }
        if let Some(Event::Connected { .. }) = c.poll(Duration::from_millis(100)) {
            break down.elapsed();
        }
    };
    let rate = |d: Duration| MESSAGES as f64 / d.as_secs_f64().max(1e-9);
    Ok(vec![
        (
            format!("MQTT QoS 1, {MESSAGES} messages via mosquitto"),
            format!("{:.0} msg/s", rate(ours)),
            format!("{:.0} msg/s pub", rate(reference)),
            format!("{:.2}", rate(ours) / rate(reference)),
            "report (publisher -> broker -> subscriber)",
        ),
        (
            "reconnect after a broker restart".into(),
            format!("{:.2} s", reconnect.as_secs_f64()),
            "-".into(),
            "-".into(),
            "backoff starts at 1 s on a device",
        ),
    ])
}

/// The agent's VmRSS and VmHWM on the booted qemu-aarch64 card while its
/// fleet client is connected to a hub on the host.
pub fn device_figures(image: &Path, cfg: &image_build::board::BoardConfig, work: &Path) -> Result<Vec<Figure>> {
    let site = hub::site::Site {
        dir: work.join("site"),
        bind: "127.0.0.1".into(),
        host: "10.0.2.2".into(),
        broker_port: hub::broker::free_port()?,
        files_port: hub::broker::free_port()?,
    };
    let identity = site.add_thing("bench-device")?;
    let card = work.join("fleet-card.img");
    std::fs::copy(image, &card)?;
    let fleet_toml = work.join("fleet.toml");
    std::fs::write(&fleet_toml, site.fleet_toml())?;
    let files = [
        (identity.join("device.pem"), "keel/identity/device.pem"),
        (identity.join("device.key"), "keel/identity/device.key"),
        (identity.join("ca.pem"), "keel/identity/ca.pem"),
        (fleet_toml, "keel/fleet.toml"),
    ];
    put_in_data(&card, cfg, &files)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let serving = {
        let (site, stop) = (site.clone(), stop.clone());
        std::thread::spawn(move || site.serve(&stop, &mut |_| {}))
    };
    let result = measure_agent(&card, &site);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = serving.join();
    let (rss, hwm) = result?;
    Ok(vec![(
        "agent resident memory, fleet connected (booted)".into(),
        format!("{:.2} MiB", rss / 1024.0),
        format!("{:.2} MiB peak", hwm / 1024.0),
        "-".into(),
        "< 8 MiB",
    )])
}

fn measure_agent(card: &Path, site: &hub::site::Site) -> Result<(f64, f64)> {
    let exe = std::env::current_exe()?;
    let mut qemu = Command::new(exe)
        .args(["qemu", "--board", "qemu-aarch64", "--image"])
        .arg(card)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = qemu.stdin.take().context("qemu stdin")?;
    let mut stdout = qemu.stdout.take().context("qemu stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    let mut wait = |needle: &str, seen: &mut String, timeout: Duration| -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !seen.contains(needle) {
            if Instant::now() > deadline {
                bail!("the device did not print {needle:?}");
            }
            if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
                seen.push_str(&String::from_utf8_lossy(&chunk).replace('\r', ""));
            }
        }
        Ok(())
    };
    let result = (|| -> Result<(f64, f64)> {
        wait("keel: ready", &mut seen, Duration::from_secs(300))?;
        // Connected: the hub has the device's shadow.
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let d = site.devices()?;
            if d.to_string().contains("bench-device") && d.to_string().contains("firmware_version") {
                break;
            }
            if Instant::now() > deadline {
                bail!("the device never reported to the hub");
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        let mark = seen.len();
        stdin.write_all(b"status\n")?;
        wait("keel: ok", &mut seen, Duration::from_secs(60))?;
        let pid = seen[mark..]
            .lines()
            .find(|l| l.trim_start().starts_with("agent"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|p| p.parse::<u32>().ok())
            .context("no agent pid in the console's status")?;
        let mark = seen.len();
        stdin.write_all(format!("cat /proc/{pid}/status\n").as_bytes())?;
        wait("VmRSS", &mut seen, Duration::from_secs(60))?;
        wait("keel: ok", &mut seen, Duration::from_secs(60))?;
        let field = |key: &str| -> Option<f64> {
            let rest = &seen[mark..];
            let at = rest.find(key)? + key.len();
            rest[at..].split_whitespace().next()?.parse().ok()
        };
        Ok((
            field("VmRSS:").context("no VmRSS")?,
            field("VmHWM:").context("no VmHWM")?,
        ))
    })();
    let _ = qemu.kill();
    let _ = qemu.wait();
    result
}

/// Copies files into the card's data partition with debugfs (parent
/// directories made first), as manufacturing leaves a device's identity.
fn put_in_data(
    card: &Path,
    cfg: &image_build::board::BoardConfig,
    files: &[(std::path::PathBuf, &str)],
) -> Result<()> {
    let layout = image_build::layout::Layout::for_board(cfg);
    let (offset, _) = layout.span(keel_contract::partition::DATA);
    let fs = format!("{}?offset={offset}", card.display());
    for (host, name) in files {
        let mut dir = String::new();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            dir = if dir.is_empty() { part.to_string() } else { format!("{dir}/{part}") };
            let _ = Command::new("debugfs")
                .args(["-w", "-R", &format!("mkdir {dir}")])
                .arg(&fs)
                .output();
        }
        let out = Command::new("debugfs")
            .args(["-w", "-R", &format!("write {} {name}", host.display())])
            .arg(&fs)
            .output()
            .context("debugfs (e2fsprogs)")?;
        if !out.status.success() {
            bail!("debugfs write {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(())
}
