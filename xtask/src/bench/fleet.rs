//! Fleet figures: QoS 1 messages per second through a local mosquitto
//! (Keel's MQTT client against `mosquitto_pub`/`mosquitto_sub` on the same
//! path, publisher → broker → subscriber, same identities and TLS), and
//! the time to be connected again after the broker restarts, against the
//! time the restarted broker takes to accept connections at all; and on a
//! QEMU `virt` board, the agent's memory while connected to a hub.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use factory::card::CardFile;
use hub::pki::{Pki, HUB_CN};
use keel_contract::paths;
use mqtt::{Client, Event, Identity, Options, QoS};

use super::console::{number_after, Console};
use super::Row;
use crate::build::Built;

const MESSAGES: usize = 2000;
const PAYLOAD: usize = 200;
const TOPIC: &str = "$aws/things/bench-pub/bench";

fn options(pki: &Pki, name: &str, port: u16) -> Result<Options> {
    let dir = pki.dir.join("things").join(name);
    if !dir.join("device.pem").exists() {
        pki.client(name)?;
    }
    let tls = Identity::in_dir(&dir).client_config(false)?;
    let mut o = Options::new("127.0.0.1", port, name, tls).keep_alive(60);
    // A device starts its backoff at a second; the bench wants the client's
    // own reconnect cost, so it retries quickly.
    o.backoff = mqtt::Backoff::new(Duration::from_millis(50), Duration::from_millis(200));
    o.clock_floor = std::time::UNIX_EPOCH;
    Ok(o)
}

fn connect(o: Options, subscribe: &[&str]) -> Result<Client> {
    let mut c = Client::new(o);
    let filters: Vec<(&str, QoS)> = subscribe.iter().map(|f| (*f, QoS::AtLeastOnce)).collect();
    c.subscribe(&filters);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match c.poll(Duration::from_millis(200)) {
            Some(Event::Connected { .. }) => return Ok(c),
            _ => continue,
        }
    }
    bail!("could not connect to the bench's mosquitto")
}

/// Receives `n` messages on another thread; the handle returns when they
/// have all arrived.
fn receive(mut sub: Client, n: usize) -> std::thread::JoinHandle<Result<Instant>> {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut got = 0;
        while got < n {
            if Instant::now() > deadline {
                bail!("only {got} of {n} messages arrived");
            }
            if let Some(Event::Message(_)) = sub.poll(Duration::from_millis(100)) {
                got += 1;
            }
        }
        Ok(Instant::now())
    })
}

pub fn rows(work: &Path) -> Result<Vec<Row>> {
    let pki = Pki::open_or_create(&work.join("pki"), "Keel bench CA")?;
    let port = hub::broker::free_port()?;
    let mut broker = hub::broker::Broker::start(
        &work.join("broker"),
        "127.0.0.1",
        port,
        &pki,
        &["localhost", "127.0.0.1"],
    )
    .context("starting mosquitto (Debian package mosquitto)")?;
    let payload = vec![b'x'; PAYLOAD];

    // Ours: the hub's identity may subscribe to every thing's topics.
    // Timed from before the publisher connects, as mosquitto_pub's run is.
    let sub = connect(options(&pki, HUB_CN, port)?, &[TOPIC])?;
    let receiving = receive(sub, MESSAGES);
    let start = Instant::now();
    let mut publisher = connect(options(&pki, "bench-pub", port)?, &[])?;
    for _ in 0..MESSAGES {
        publisher
            .publish(TOPIC, &payload, QoS::AtLeastOnce, false)
            .context("publishing to the bench's mosquitto")?;
        // Reads the PUBACKs as they come, without waiting for any.
        let _ = publisher.poll(Duration::ZERO);
    }
    let done = receiving
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    let ours = done - start;

    // The reference: mosquitto_pub -l to mosquitto_sub -C, same identities.
    let tls = |cmd: &mut Command, name: &str| {
        let dir = pki.dir.join("things").join(name);
        cmd.arg("--cafile")
            .arg(pki.ca_pem())
            .arg("--cert")
            .arg(dir.join("device.pem"))
            .arg("--key")
            .arg(dir.join("device.key"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    };
    let mut s = Command::new("mosquitto_sub");
    tls(&mut s, HUB_CN);
    s.args(["-t", TOPIC, "-C", &MESSAGES.to_string(), "-i", "bench-sub"]);
    let mut s = s
        .spawn()
        .context("mosquitto_sub (Debian package mosquitto-clients)")?;
    // mosquitto_sub prints nothing when subscribed: give it time.
    std::thread::sleep(Duration::from_millis(1000));
    let mut p = Command::new("mosquitto_pub");
    tls(&mut p, "bench-pub");
    p.args(["-t", TOPIC, "-i", "bench-pub-ref", "-l"])
        .stdin(Stdio::piped());
    let start = Instant::now();
    let mut p = p.spawn().context("mosquitto_pub")?;
    {
        let mut stdin = p.stdin.take().context("mosquitto_pub's stdin")?;
        let mut line = payload.clone();
        line.push(b'\n');
        for _ in 0..MESSAGES {
            stdin.write_all(&line)?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = s.kill();
            bail!("mosquitto_sub did not receive {MESSAGES} messages");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
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
        if let Some(Event::Connected { .. }) = c.poll(Duration::from_millis(20)) {
            break down.elapsed();
        }
    };
    drop(c);
    // The reference: how long the restarted broker takes to accept TCP.
    let down = Instant::now();
    broker.restart()?;
    let listening = loop {
        if Instant::now() - down > Duration::from_secs(60) {
            bail!("mosquitto did not come back within a minute");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break down.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    };

    let rate = |d: Duration| MESSAGES as f64 / d.as_secs_f64().max(1e-9);
    Ok(vec![
        Row {
            what: format!("MQTT QoS 1, {MESSAGES} x {PAYLOAD} B via mosquitto"),
            ours: format!("{:.0} msg/s", rate(ours)),
            reference: format!("{:.0} mosquitto_pub", rate(reference)),
            ratio: format!("{:.2}", rate(ours) / rate(reference)),
            target: "report: publisher -> broker -> subscriber".into(),
        },
        Row {
            what: "MQTT reconnect after a broker restart".into(),
            ours: format!("{:.2} s", reconnect.as_secs_f64()),
            reference: format!("{:.2} s TCP up", listening.as_secs_f64()),
            ratio: format!(
                "{:.2}",
                listening.as_secs_f64() / reconnect.as_secs_f64().max(1e-9)
            ),
            target: "report: TLS + CONNECT + SUBSCRIBE on top".into(),
        },
    ])
}

/// The agent's resident memory on the booted device (the bench image, for
/// busybox's `pidof`) while its fleet client is connected to a hub on the
/// host, with a device certificate on /data as manufacturing leaves it.
pub fn device_rows(built: &Built, busybox: &[u8], work: &Path) -> Result<Vec<Row>> {
    const THING: &str = "bench-device";
    let image = super::device::bench_image(built, busybox)?;
    let card = work.join("fleet-card.img");
    std::fs::copy(&image.image, &card).context("copying the bench card")?;
    let site = hub::site::Site {
        dir: work.join("site"),
        bind: "127.0.0.1".into(),
        host: "10.0.2.2".into(),
        broker_port: hub::broker::free_port()?,
        files_port: hub::broker::free_port()?,
    };
    let identity = site.add_thing(THING)?;
    let file = |dir: &str, name: &str, mode: u32| -> Result<CardFile> {
        let bytes = std::fs::read(identity.join(name))?;
        Ok(CardFile::new(dir, name, bytes, mode))
    };
    let files = [
        file(paths::IDENTITY_DIR, paths::IDENTITY_CERTIFICATE, 0o644)?,
        file(paths::IDENTITY_DIR, paths::IDENTITY_KEY, 0o600)?,
        file(paths::IDENTITY_DIR, paths::IDENTITY_CA_BUNDLE, 0o644)?,
        CardFile::new(paths::DATA_KEEL, "fleet.toml", site.fleet_toml(), 0o644),
    ];
    factory::card::write_files(&card, factory::card::data_partition(&card)?, &files)?;

    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let (site, stop) = (site.clone(), stop.clone());
        std::thread::spawn(move || site.serve(&stop, &mut |_| {}))
    };
    let measured = measure_connected(built, &card, &site, THING, work);
    stop.store(true, Ordering::SeqCst);
    let _ = serving.join();
    let (rss, hwm) = measured?;
    Ok(vec![Row {
        what: "QEMU: agent RSS, fleet client connected".into(),
        ours: format!("{:.1} MiB", rss / 1024.0),
        reference: format!("{:.1} MiB peak", hwm / 1024.0),
        ratio: "-".into(),
        target: "< 8 MiB (VmRSS; the peak is VmHWM)".into(),
    }])
}

fn measure_connected(
    built: &Built,
    card: &Path,
    site: &hub::site::Site,
    thing: &str,
    work: &Path,
) -> Result<(f64, f64)> {
    const BOOT: Duration = Duration::from_secs(300);
    let bios = crate::qemu::bios_path(&crate::host::workspace_root(), &built.cfg)?;
    let run = image_build::qemu::plan(
        &built.cfg,
        card,
        bios.as_deref(),
        &[],
        false,
        &work.join("fleet-qemu"),
    )?;
    let mut c = Console::start(&run.program, &run.args)?;
    c.expect("keel: ready", BOOT)?;
    let deadline = Instant::now() + BOOT;
    loop {
        let all = site.devices()?;
        let online = all["things"].as_array().is_some_and(|a| {
            a.iter().any(|d| {
                d["thing"] == thing
                    && d["online"] == true
                    && d["reported"]["firmware_version"].is_string()
            })
        });
        if online {
            break;
        }
        if Instant::now() > deadline {
            bail!("the bench device never reported to the hub:\n{all:#}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let (pids, _) = c.command("run /usr/bin/busybox pidof agent", BOOT)?;
    let pid = pids
        .lines()
        .find_map(|l| l.split_whitespace().next()?.parse::<u32>().ok())
        .with_context(|| format!("no agent running:\n{pids}"))?;
    let (status, _) = c.command(&format!("cat /proc/{pid}/status"), BOOT)?;
    let field = |key: &str| {
        number_after(&status, key).with_context(|| format!("no {key} for the agent:\n{status}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
