//! The device's MQTT client against a real mosquitto (TLS, client
//! certificates, the per-thing ACL), against a TLS front that insists on
//! AWS's ALPN protocol, and against fake brokers that misbehave.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use common::{connected, fake_broker, options, read_connect, wait_event, Env, CONNACK};
use mqtt::session::SessionError;
use mqtt::{Client, Event, QoS};

#[test]
fn connects_subscribes_and_carries_a_128_kib_message() {
    let env = Env::broker_only();
    let id = env.identity("dev-a");
    let mut c = Client::new(env.options(&id, "dev-a", false));
    c.subscribe(&[("$aws/things/dev-a/echo", QoS::AtLeastOnce)]);
    assert!(connected(&mut c).is_empty());
    let big = vec![b'x'; 128 * 1024];
    c.publish("$aws/things/dev-a/echo", &big, QoS::AtLeastOnce, false)
        .unwrap();
    let got = wait_event(&mut c, "the echo", |e| match e {
        Event::Message(p) => Some(p),
        _ => None,
    });
    assert_eq!(got.payload.len(), big.len());
    // A filter added while connected is subscribed at once.
    c.subscribe(&[("$aws/things/dev-a/later", QoS::AtMostOnce)]);
    c.publish("$aws/things/dev-a/later", b"now", QoS::AtLeastOnce, false)
        .unwrap();
    let got = wait_event(&mut c, "the later message", |e| match e {
        Event::Message(p) => Some(p),
        _ => None,
    });
    assert_eq!(got.topic, "$aws/things/dev-a/later");
    // Over the limit: refused before it is sent, and the connection stays.
    assert!(c
        .publish(
            "$aws/things/dev-a/echo",
            &vec![0; 140 * 1024],
            QoS::AtMostOnce,
            false
        )
        .is_err());
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let env = Env::broker_only();
    let other = hub::pki::Pki::open_or_create(&env.dir.path().join("other"), "Another CA").unwrap();
    let stranger = other.client("dev-x").unwrap();
    // The stranger trusts the real broker's CA, so only its own
    // certificate is wrong.
    std::fs::copy(env.pki().ca_pem(), stranger.join("ca.pem")).unwrap();
    let mut c = Client::new(env.options(&stranger, "dev-x", false));
    for _ in 0..2 {
        match c.poll(common::DEADLINE) {
            Some(Event::Disconnected { error, .. }) => {
                assert!(
                    matches!(
                        error,
                        SessionError::Tls { .. }
                            | SessionError::Closed
                            | SessionError::ClosedAfterConnect
                            | SessionError::Io(_)
                    ),
                    "{error}"
                )
            }
            other => panic!("a stranger got {other:?}"),
        }
    }
    // And a device that does not trust the broker's CA refuses it.
    let lost = env.identity("dev-y");
    std::fs::copy(other.ca_pem(), lost.join("ca.pem")).unwrap();
    let mut c = Client::new(env.options(&lost, "dev-y", false));
    match c.poll(common::DEADLINE) {
        Some(Event::Disconnected {
            error: SessionError::Tls { detail, .. },
            ..
        }) => {
            assert!(detail.contains("certificate is not acceptable"), "{detail}")
        }
        other => panic!("expected a certificate error, got {other:?}"),
    }
}

#[test]
fn the_acl_keeps_a_device_to_its_own_topics() {
    let env = Env::broker_only();
    let (a, b) = (env.identity("dev-a"), env.identity("dev-b"));
    let mut victim = Client::new(env.options(&b, "dev-b", false));
    victim.subscribe(&[("$aws/things/dev-b/#", QoS::AtLeastOnce)]);
    connected(&mut victim);
    let mut intruder = Client::new(env.options(&a, "dev-a", false));
    intruder.subscribe(&[
        ("$aws/things/dev-b/#", QoS::AtLeastOnce),
        ("$aws/things/dev-a/#", QoS::AtLeastOnce),
    ]);
    let refused = connected(&mut intruder);
    // mosquitto 2.0 may acknowledge a denied subscription; either way the
    // intruder must not receive dev-b's messages (checked below).
    eprintln!("refused: {refused:?}");
    intruder
        .publish(
            "$aws/things/dev-b/shadow/update",
            b"{\"forged\":1}",
            QoS::AtLeastOnce,
            false,
        )
        .unwrap();
    // A marker the victim may receive proves its subscription works and
    // orders the check: the forged message would have come first.
    victim
        .publish("$aws/things/dev-b/marker", b"m", QoS::AtLeastOnce, false)
        .unwrap();
    let first = wait_event(&mut victim, "the marker", |e| match e {
        Event::Message(p) => Some(p),
        _ => None,
    });
    assert_eq!(
        first.topic, "$aws/things/dev-b/marker",
        "the victim received {first:?}"
    );
    // The intruder's own topics work, and dev-b's marker never reached it.
    intruder
        .publish("$aws/things/dev-a/ok", b"1", QoS::AtLeastOnce, false)
        .unwrap();
    let seen = wait_event(&mut intruder, "its own message", |e| match e {
        Event::Message(p) => Some(p),
        _ => None,
    });
    assert_eq!(
        seen.topic, "$aws/things/dev-a/ok",
        "the intruder received {seen:?}"
    );
}

fn fake_client(env: &Env, port: u16) -> Client {
    let id = env.identity("dev-f");
    let mut o = options(&id, "dev-f", port, false);
    o.timeout = Duration::from_secs(2);
    Client::new(o)
}

#[test]
fn garbage_and_oversized_packets_are_errors_and_the_client_reconnects() {
    let env = Env::broker_only();
    let (port, count) = fake_broker(&env, |n, s| {
        read_connect(s);
        let _ = s.write_all(CONNACK);
        match n {
            0 => {
                let _ = s.write_all(&[0x00, 0x02, 0xff, 0xff]);
            }
            1 => {
                // A PUBLISH announcing 268 MB, then an endless stream.
                let _ = s.write_all(&[0x30, 0xff, 0xff, 0xff, 0x7f]);
                let junk = [0x41u8; 16 * 1024];
                while s.write_all(&junk).is_ok() {}
            }
            _ => {
                // The first two bytes of a packet, then silence.
                let _ = s.write_all(&[0x30, 0x10]);
                let _ = s.flush();
                std::thread::sleep(Duration::from_secs(10));
            }
        }
        let _ = s.flush();
        std::thread::sleep(Duration::from_secs(1));
    });
    let mut c = fake_client(&env, port);
    let mut errors = Vec::new();
    let started = Instant::now();
    while errors.len() < 3 {
        match c.poll(common::DEADLINE) {
            Some(Event::Disconnected { error, .. }) => errors.push(error),
            Some(_) => {}
            None => panic!("no event"),
        }
    }
    assert!(
        matches!(
            errors[0],
            SessionError::Protocol(mqtt::CodecError::UnknownType(0))
        ),
        "{}",
        errors[0]
    );
    assert!(
        matches!(
            errors[1],
            SessionError::Protocol(mqtt::CodecError::TooLarge { .. })
        ),
        "{}",
        errors[1]
    );
    assert!(errors[1].to_string().contains("128 KiB"), "{}", errors[1]);
    assert!(
        matches!(errors[2], SessionError::Timeout(_)),
        "{}",
        errors[2]
    );
    assert!(
        count.load(Ordering::SeqCst) >= 3,
        "it reconnected after each"
    );
    assert!(started.elapsed() < Duration::from_secs(30), "no hang");
}

#[test]
fn a_close_right_after_connect_is_expected_once_then_a_failure() {
    let env = Env::broker_only();
    let (port, _) = fake_broker(&env, |n, s| {
        read_connect(s);
        if n == 0 || n == 2 {
            return; // dropped: just-in-time provisioning, then a policy
        }
        let _ = s.write_all(CONNACK);
        let _ = s.flush();
        // Then close, as a broker shutting down would.
    });
    let mut c = fake_client(&env, port);
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match c.poll(common::DEADLINE) {
            Some(Event::Disconnected {
                error, expected, ..
            }) => seen.push(format!("{expected}:{error}")),
            Some(Event::Connected { .. }) => seen.push("connected".into()),
            _ => {}
        }
    }
    assert!(
        seen[0].starts_with("true:") && seen[0].contains("just-in-time"),
        "{seen:?}"
    );
    assert_eq!(seen[1], "connected");
    assert!(seen[2].starts_with("false:"), "{seen:?}");
}

#[test]
fn a_clock_at_1970_is_reported_before_any_connection() {
    let env = Env::broker_only();
    let (port, count) = fake_broker(&env, |_, _| {});
    let id = env.identity("dev-c");
    let mut o = options(&id, "dev-c", port, false);
    o.clock_floor = SystemTime::now() + Duration::from_secs(3600);
    let mut c = Client::new(o);
    match c.poll(common::DEADLINE) {
        Some(Event::Disconnected {
            error: e @ SessionError::ClockNotSet { .. },
            ..
        }) => {
            assert!(e.to_string().contains("NTP"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        0,
        "no TCP connection was even tried"
    );
}

/// The protocols offered in a TLS ClientHello's ALPN extension.
fn client_hello_alpn(hello: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut p = 5 + 4 + 2 + 32; // record, handshake headers, version, random
    let skip = |p: &mut usize, n: usize| -> Option<()> {
        *p = p.checked_add(n)?;
        (*p <= hello.len()).then_some(())
    };
    let len1 = |p: usize| hello.get(p).map(|&b| b as usize);
    let len2 = |p: usize| Some(((*hello.get(p)? as usize) << 8) | *hello.get(p + 1)? as usize);
    let n = len1(p)?;
    skip(&mut p, 1 + n)?; // session id
    let n = len2(p)?;
    skip(&mut p, 2 + n)?; // cipher suites
    let n = len1(p)?;
    skip(&mut p, 1 + n)?; // compression
    let end = p + 2 + len2(p)?;
    p += 2;
    while p + 4 <= end.min(hello.len()) {
        let (ty, n) = (len2(p)?, len2(p + 2)?);
        if ty == 16 {
            let mut q = p + 6;
            let mut out = Vec::new();
            while q < p + 4 + n {
                let l = len1(q)?;
                out.push(hello.get(q + 1..q + 1 + l)?.to_vec());
                q += 1 + l;
            }
            return Some(out);
        }
        p += 4 + n;
    }
    Some(Vec::new())
}

#[test]
fn port_443_style_alpn_through_a_front_that_insists_on_it() {
    let env = Env::broker_only();
    // The front reads the ClientHello, refuses it without x-amzn-mqtt-ca,
    // and otherwise splices the bytes to mosquitto, which still checks the
    // client certificate (AWS's port 443 does both).
    let front = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = front.local_addr().unwrap().port();
    let upstream = env.site.broker_port;
    std::thread::spawn(move || {
        for tcp in front.incoming() {
            let Ok(mut tcp) = tcp else { continue };
            std::thread::spawn(move || {
                let mut hello = vec![0u8; 4096];
                let n = tcp.read(&mut hello).unwrap_or(0);
                let offered = client_hello_alpn(&hello[..n]).unwrap_or_default();
                if !offered.iter().any(|p| p == mqtt::ALPN_AWS_MQTT) {
                    return; // closed, as AWS does on 443 without the protocol
                }
                let mut up = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                up.write_all(&hello[..n]).unwrap();
                let (mut a, mut b) = (tcp.try_clone().unwrap(), up.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut b, &mut a);
                });
                let _ = std::io::copy(&mut tcp, &mut up);
            });
        }
    });
    let id = env.identity("dev-443");
    let mut with = Client::new(options(&id, "dev-443", port, true));
    connected(&mut with);
    let mut without = Client::new(options(&id, "dev-443b", port, false));
    match without.poll(common::DEADLINE) {
        Some(Event::Disconnected { .. }) => {}
        other => panic!("without ALPN the front must refuse: {other:?}"),
    }
}

#[test]
fn a_broker_that_stops_answering_pings_is_left() {
    let env = Env::broker_only();
    let (port, count) = fake_broker(&env, |_, s| {
        read_connect(s);
        let _ = s.write_all(CONNACK);
        let _ = s.flush();
        // Read (and ignore) the PINGREQs, answer nothing.
        let mut buf = [0u8; 64];
        while s.read(&mut buf).is_ok_and(|n| n > 0) {}
    });
    let id = env.identity("dev-p");
    let mut o = options(&id, "dev-p", port, false);
    // Below AWS's range on purpose, to keep the test short.
    o.keep_alive = Duration::from_secs(1);
    o.timeout = Duration::from_secs(2);
    let mut c = Client::new(o);
    connected(&mut c);
    let started = Instant::now();
    match c.poll(common::DEADLINE) {
        Some(Event::Disconnected {
            error: e @ SessionError::Timeout(_),
            ..
        }) => {
            assert!(e.to_string().contains("keepalive ping"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(count.load(Ordering::SeqCst), 1);
}
