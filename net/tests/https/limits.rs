//! Deadlines and size bounds: a slow or endless server ends in an error
//! that names the limit, in bounded time and memory.

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use crate::env::{fetch, setup, trickle_proxy, within};
use net::{GetOptions, HttpError, ProtocolError, Stage};

/// Room for a loaded machine beyond a deadline; a client without the
/// deadline takes minutes (the proxy sends 10 bytes a second).
const SLACK: Duration = Duration::from_secs(3);

#[test]
fn deadlines_end_slow_servers() {
    let env = setup();
    let trust = env.trust();
    let resolver = env.resolver.clone();

    // The head and the first 256 KiB at once, then a byte every 100 ms:
    // never idle, so only the total deadline ends it. The bytes trickle
    // below TLS, inside one rustls read of a 16 KiB record.
    let proxy = trickle_proxy(env.port, 256 * 1024, Duration::from_millis(100));
    let url = format!("https://127.0.0.1:{proxy}/files/payload.bin");
    let options = GetOptions {
        total_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(30),
        ..GetOptions::default()
    };
    let (t, r) = (trust.clone(), resolver.clone());
    let (err, got, elapsed) = within(Duration::from_secs(30), move || {
        let started = Instant::now();
        let mut body = net::get(&url, &t, &r, &options).unwrap();
        let mut got = Vec::new();
        let err = body.read_to_end(&mut got).unwrap_err();
        (err, got.len(), started.elapsed())
    });
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<HttpError>());
    assert!(
        matches!(inner, Some(HttpError::BodyTimeout { received, total: Some(3_000_017), .. }) if *received == got as u64),
        "{err}"
    );
    assert!(
        err.to_string().contains("did not finish within 2 s"),
        "{err}"
    );
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(2) + SLACK,
        "{elapsed:?}"
    );

    // Trickled from the first byte: the handshake cannot finish, and the
    // head deadline says where it was.
    let proxy = trickle_proxy(env.port, 0, Duration::from_millis(100));
    let url = format!("https://127.0.0.1:{proxy}/files/payload.bin");
    let options = GetOptions {
        head_timeout: Duration::from_secs(1),
        ..GetOptions::default()
    };
    let (t, r) = (trust.clone(), resolver.clone());
    let (err, elapsed) = within(Duration::from_secs(30), move || {
        let started = Instant::now();
        let err = net::get(&url, &t, &r, &options).err().unwrap();
        (err, started.elapsed())
    });
    assert!(
        matches!(
            err,
            HttpError::HeadTimeout {
                stage: Stage::Handshake,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("no response within 1 s (during the TLS handshake)"),
        "{err}"
    );
    assert!(elapsed < Duration::from_secs(1) + SLACK, "{elapsed:?}");

    // A server that stops sending: the idle limit, long before the total.
    let proxy = trickle_proxy(env.port, 256 * 1024, Duration::from_secs(20));
    let url = format!("https://127.0.0.1:{proxy}/files/payload.bin");
    let options = GetOptions {
        idle_timeout: Duration::from_millis(500),
        ..GetOptions::default()
    };
    let (err, elapsed) = within(Duration::from_secs(30), move || {
        let started = Instant::now();
        let mut body = net::get(&url, &trust, &resolver, &options).unwrap();
        let err = body.read_to_end(&mut Vec::new()).unwrap_err();
        (err, started.elapsed())
    });
    assert_eq!(err.kind(), ErrorKind::TimedOut, "{err}");
    assert!(
        err.to_string().contains("nothing received for 0.5 s"),
        "{err}"
    );
    assert!(elapsed < Duration::from_millis(500) + SLACK, "{elapsed:?}");
}

#[test]
fn bounds_end_endless_metadata_and_long_bodies() {
    let env = setup();
    let trust = env.trust();
    let options = GetOptions::default();
    let len = env.payload.len() as u64;

    // Trailer fields for 16 MiB after the last chunk: an error within the
    // trailer bound, not after reading them all.
    let started = Instant::now();
    let mut body = net::get(
        &env.url("/endless-trailer"),
        &trust,
        &env.resolver,
        &options,
    )
    .unwrap();
    let mut got = Vec::new();
    let err = body.read_to_end(&mut got).unwrap_err();
    assert_eq!(got, b"hello");
    assert_eq!(err.kind(), ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains("trailer section"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let err = net::get(&env.url("/many-headers"), &trust, &env.resolver, &options)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            HttpError::Protocol {
                source: ProtocolError::TooManyFields,
                ..
            }
        ),
        "{err}"
    );

    // The caller's limit: a longer Content-Length is refused before the
    // body; a chunked body stops at the limit, never handing out more.
    let limited = |max| GetOptions {
        max_length: Some(max),
        ..GetOptions::default()
    };
    let err = net::get(
        &env.url("/huge-length"),
        &trust,
        &env.resolver,
        &limited(10 << 20),
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("announces 1000000000000000 bytes, more than the 10485760 allowed"),
        "{err}"
    );
    let err = net::get(
        &env.url("/files/payload.bin"),
        &trust,
        &env.resolver,
        &limited(len - 1),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, HttpError::TooLarge { announced: Some(n), .. } if n == len),
        "{err}"
    );
    let mut body = net::get(
        &env.url("/chunked"),
        &trust,
        &env.resolver,
        &limited(len - 1),
    )
    .unwrap();
    let mut got = Vec::new();
    let err = body.read_to_end(&mut got).unwrap_err();
    assert_eq!(got.len() as u64, len - 1);
    assert!(
        err.to_string()
            .contains("goes on past the 3000016 bytes allowed"),
        "{err}"
    );
    for path in ["/files/payload.bin", "/chunked"] {
        assert!(
            fetch(&env, path, &trust, &limited(len)).unwrap() == env.payload,
            "{path}"
        );
    }
}
