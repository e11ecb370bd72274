//! The HTTPS client and resolver against real servers on loopback: Python's
//! http.server over OpenSSL with a CA made by the openssl CLI, dnsmasq
//! answering for the test's host name, and a proxy that slows the server
//! down (env.rs). `limits` holds the deadlines and size bounds, `ranges`
//! resuming and request headers.

mod env;
mod limits;
mod ranges;

use std::io::Read;

use env::{fetch, setup, NAME};
use net::{GetOptions, HttpError, Trust};

#[test]
fn downloads_by_name_with_length_redirect_and_chunks() {
    let env = setup();
    let trust = env.trust();
    let options = GetOptions::default();
    assert_eq!(
        env.resolver.resolve(NAME, 443).unwrap(),
        vec!["127.0.0.1:443".parse().unwrap()]
    );
    let r = net::get(
        &env.url("/files/payload.bin"),
        &trust,
        &env.resolver,
        &options,
    )
    .unwrap();
    assert_eq!(r.length, Some(env.payload.len() as u64));
    assert_eq!((r.start, r.total), (0, Some(env.payload.len() as u64)));
    drop(r);
    for path in [
        "/files/payload.bin",
        "/redirect",
        "/chunked",
        "/early-hints",
    ] {
        let got = fetch(&env, path, &trust, &options).unwrap();
        assert!(got == env.payload, "{path}: body differs");
    }
    // The server's certificate also names its IP address.
    let by_ip = format!("https://127.0.0.1:{}/files/payload.bin", env.port);
    let mut body = Vec::new();
    net::get(&by_ip, &trust, &env.resolver, &options)
        .unwrap()
        .read_to_end(&mut body)
        .unwrap();
    assert!(body == env.payload);
}

#[test]
fn failures_say_what_went_wrong() {
    let env = setup();
    let trust = env.trust();
    let options = GetOptions::default();
    let get =
        |url: &str, trust: &Trust| net::get(url, trust, &env.resolver, &options).err().unwrap();
    let err = fetch(&env, "/files/payload.bin", &Trust::public_roots(), &options).unwrap_err();
    assert!(
        err.contains("certificate") && err.contains("--ca"),
        "unknown CA: {err}"
    );
    let wrong = format!(
        "https://wrong-name.keel.test:{}/files/payload.bin",
        env.port
    );
    let err = get(&wrong, &trust).to_string();
    assert!(err.contains("certificate"), "wrong name: {err}");
    let err = fetch(&env, "/files/missing.fw", &trust, &options).unwrap_err();
    assert!(err.contains("404"), "missing file: {err}");
    let err = fetch(&env, "/cut", &trust, &options).unwrap_err();
    assert!(
        err.contains("cut off after 1500008 of 3000017 bytes"),
        "cut download: {err}"
    );
    let err = get(
        &format!("http://{NAME}:{}/files/payload.bin", env.port),
        &trust,
    );
    assert!(matches!(err, HttpError::BadUrl { .. }), "{err}");
    assert!(err.to_string().contains("use https"), "{err}");
    let err = get("https://gone.keel.test/x", &trust).to_string();
    assert!(err.contains("does not exist"), "NXDOMAIN: {err}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = get(&format!("https://127.0.0.1:{port}/"), &trust).to_string();
    assert!(err.contains("cannot connect"), "refused: {err}");
}
