//! Resuming with `Range`, and the caller's request header fields.

use std::io::Read;

use crate::env::{fetch, setup};
use net::{GetOptions, HttpError, ProtocolError};

#[test]
fn resumes_from_an_offset() {
    let env = setup();
    let trust = env.trust();
    let len = env.payload.len() as u64;
    let from = |offset| GetOptions {
        offset,
        ..GetOptions::default()
    };

    // 206 with the matching Content-Range, also through a redirect.
    for path in ["/files/payload.bin", "/redirect"] {
        let mut r = net::get(&env.url(path), &trust, &env.resolver, &from(1_000_000)).unwrap();
        assert_eq!(r.start, 1_000_000, "{path}");
        assert_eq!(r.total, Some(len), "{path}");
        assert_eq!(r.length, Some(len - 1_000_000), "{path}");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest == env.payload[1_000_000..], "{path}: body differs");
    }

    // A server that ignores Range: the whole file, and the caller is told.
    for path in ["/ignore-range", "/chunked"] {
        let mut r = net::get(&env.url(path), &trust, &env.resolver, &from(1_000_000)).unwrap();
        assert_eq!(r.start, 0, "{path}");
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert!(all == env.payload, "{path}: body differs");
    }

    // Another range than the one asked for is not a resume.
    let err = net::get(&env.url("/wrong-range"), &trust, &env.resolver, &from(10))
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            HttpError::Protocol {
                source: ProtocolError::WrongRange { offset: 10, .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("'bytes 11-3000016/3000017'"),
        "{err}"
    );

    // Nothing left: 416, with the file's length.
    let err = net::get(
        &env.url("/files/payload.bin"),
        &trust,
        &env.resolver,
        &from(len),
    )
    .err()
    .unwrap();
    assert!(
        matches!(err, HttpError::RangeNotSatisfiable { offset, total: Some(t), .. } if offset == len && t == len),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("no bytes from offset 3000017 on (the file is 3000017 bytes long)"),
        "{err}"
    );
}

#[test]
fn extra_headers_go_to_the_first_host_only() {
    let env = setup();
    let trust = env.trust();
    let options = GetOptions {
        offset: 5,
        headers: vec![
            ("X-Keel-Device".into(), "rpi4-0001".into()),
            ("user-agent".into(), "keel-test".into()),
        ],
        ..GetOptions::default()
    };
    let echoed =
        String::from_utf8(fetch(&env, "/echo-headers", &trust, &options).unwrap()).unwrap();
    for want in [
        "X-Keel-Device: rpi4-0001",
        "user-agent: keel-test",
        "Range: bytes=5-",
        "Accept-Encoding: identity",
    ] {
        assert!(echoed.contains(want), "{want} missing from:\n{echoed}");
    }
    assert!(
        !echoed.contains("keel-agent/"),
        "two User-Agents:\n{echoed}"
    );
    // A redirect to another host (the IP address) drops them; the range stays.
    let echoed = String::from_utf8(fetch(&env, "/to-ip-echo", &trust, &options).unwrap()).unwrap();
    assert!(
        !echoed.contains("rpi4-0001"),
        "a header followed the redirect:\n{echoed}"
    );
    assert!(echoed.contains("Range: bytes=5-"), "{echoed}");

    for (name, value, why) in [
        ("X-A", "b\r\nInjected: 1", "control characters"),
        ("Host", "elsewhere", "sets it itself"),
        ("Bad Name", "v", "not an HTTP token"),
    ] {
        let options = GetOptions {
            headers: vec![(name.into(), value.into())],
            ..GetOptions::default()
        };
        let err = net::get(&env.url("/echo-headers"), &trust, &env.resolver, &options)
            .err()
            .unwrap();
        assert!(matches!(err, HttpError::BadHeader { .. }), "{err}");
        assert!(err.to_string().contains(why), "{err}");
    }
}
