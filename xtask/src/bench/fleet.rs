//! Fleet figures: QoS 1 messages per second through a local mosquitto
//! (Keel's MQTT client against `mosquitto_pub`/`mosquitto_sub` on the same
//! path, publisher → broker → subscriber, same identities and TLS), and
//! the time to be connected again after the broker restarts, against the
//! time the restarted broker takes to accept connections at all.

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hub::pki::{Pki, HUB_CN};
use mqtt::{Client, Event, Identity, Options, QoS};

use super::Row;

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
