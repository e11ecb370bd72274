//! Bundle format: every tampered byte, every truncation, wrong keys and
//! boards, and manifests that lie are rejected before a byte is handed out.

use bundle::*;
use ed25519_dalek::SigningKey;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn header(board: &str, chunk: u64) -> Manifest {
    Manifest {
        board: board.into(),
        version: "0.2.0".into(),
        min_version: "0.1.0".into(),
        build_id: "test".into(),
        chunk_size: chunk,
        payloads: vec![],
    }
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    // Compressible but not trivially so.
    (0..len)
        .map(|i| ((i / 7) as u8).wrapping_mul(seed) ^ (i % 3) as u8)
        .collect()
}

fn make(keys: &[&SigningKey]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let boot = payload(5000, 3);
    let root = payload(3000, 5);
    let mut out = Vec::new();
    let (mut b, mut r) = (&boot[..], &root[..]);
    write_bundle(
        &mut out,
        &header("qemu-aarch64", 1024),
        &mut [
            PayloadSource {
                name: "boot",
                data: &mut b,
                compression: Compression::Deflate,
            },
            PayloadSource {
                name: "rootfs",
                data: &mut r,
                compression: Compression::None,
            },
        ],
        keys,
    )
    .unwrap();
    (out, boot, root)
}

/// Reads every payload through the verifier; returns them or the first error.
fn read_all(
    bytes: &[u8],
    trusted: &[ed25519_dalek::VerifyingKey],
) -> Result<Vec<Vec<u8>>, BundleError> {
    read_all_from(bytes, trusted)
}

fn read_all_from(
    source: impl std::io::Read,
    trusted: &[ed25519_dalek::VerifyingKey],
) -> Result<Vec<Vec<u8>>, BundleError> {
    let mut rd = BundleReader::open(source, trusted)?;
    rd.check_board("qemu-aarch64")?;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(mut p) = rd.next_payload()? {
        let mut data = Vec::new();
        while let Some(n) = p.next_chunk(&mut buf)? {
            data.extend_from_slice(&buf[..n]);
        }
        out.push(data);
    }
    rd.finish()?;
    Ok(out)
}

#[test]
fn round_trip() {
    let k = key(1);
    let (bytes, boot, root) = make(&[&k]);
    assert_eq!(
        read_all(&bytes, &[k.verifying_key()]).unwrap(),
        vec![boot, root]
    );
}

#[test]
fn any_of_several_trusted_keys_is_enough() {
    let (old, new) = (key(1), key(2));
    let (bytes, ..) = make(&[&new]);
    assert!(read_all(&bytes, &[old.verifying_key(), new.verifying_key()]).is_ok());
    assert!(matches!(
        read_all(&bytes, &[old.verifying_key()]),
        Err(BundleError::Untrusted)
    ));
}

#[test]
fn every_flipped_byte_is_rejected() {
    let k = key(1);
    let (bytes, ..) = make(&[&k]);
    for i in 0..bytes.len() {
        let mut t = bytes.clone();
        t[i] ^= 0x01;
        assert!(
            read_all(&t, &[k.verifying_key()]).is_err(),
            "flipping byte {i} of {} went unnoticed",
            bytes.len()
        );
    }
}

#[test]
fn every_truncation_is_rejected() {
    let k = key(1);
    let (bytes, ..) = make(&[&k]);
    for len in 0..bytes.len() {
        assert!(
            read_all(&bytes[..len], &[k.verifying_key()]).is_err(),
            "truncation at {len} went unnoticed"
        );
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let k = key(1);
    let (mut bytes, ..) = make(&[&k]);
    bytes.extend_from_slice(b"junk");
    assert!(matches!(
        read_all(&bytes, &[k.verifying_key()]),
        Err(BundleError::Trailing)
    ));
}

/// A valid bundle followed by a stream that never ends is refused at its
/// first extra byte, not read for ever.
#[test]
fn an_endless_tail_is_refused_at_once() {
    use std::io::Read;
    let k = key(1);
    let (bytes, ..) = make(&[&k]);
    let endless = (&bytes[..]).chain(std::io::repeat(7));
    assert!(matches!(
        read_all_from(endless, &[k.verifying_key()]),
        Err(BundleError::Trailing)
    ));
}

/// Signed manifests a hostile or broken builder could write: sizes that
/// overflow, chunks too large for the applier's memory, versions and
/// names the tools cannot order or print safely. Each is an error, never a
/// panic.
#[test]
fn hostile_signed_manifests_are_refused_without_panicking() {
    let k = key(1);
    let (bytes, ..) = make(&[&k]);
    let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let text = std::str::from_utf8(&bytes[16..16 + len])
        .unwrap()
        .to_string();
    let body = &bytes[16 + len + 1 + 96..];
    let m = Manifest::parse(&text).unwrap();
    let p = m.payload("boot").unwrap();
    let first = p.chunks[0];
    let huge = u64::MAX - 10;
    let cases = [
        text.replace(
            &format!("chunk={} ", first.stored),
            &format!("chunk={huge} "),
        ),
        text.replace(&format!("stored={} ", p.stored), &format!("stored={huge} ")),
        text.replace("chunk_size=1024", "chunk_size=67108864"),
        text.replace("version=0.2.0", "version=v0.2.0"),
        text.replace("board=qemu-aarch64", "board=qemu\u{1b}[31m"),
    ];
    for forged in cases {
        assert_ne!(forged, text);
        let resigned = resign(&forged, body, &k);
        let r = std::panic::catch_unwind(|| read_all(&resigned, &[k.verifying_key()]));
        assert!(matches!(r, Ok(Err(_))), "accepted or panicked: {forged}");
    }
}

#[test]
fn wrong_board_and_format_are_named() {
    let k = key(1);
    let (bytes, ..) = make(&[&k]);
    let rd = BundleReader::open(&bytes[..], &[k.verifying_key()]).unwrap();
    let err = rd.check_board("bbb").unwrap_err().to_string();
    assert!(
        err.contains("'qemu-aarch64'") && err.contains("'bbb'"),
        "{err}"
    );
    let mut t = bytes.clone();
    t[8] = 2;
    let err = BundleReader::open(&t[..], &[k.verifying_key()])
        .err()
        .unwrap();
    assert!(matches!(err, BundleError::Format(2, 1)), "{err}");
}

/// A correctly signed manifest whose sizes lie (a broken or hostile
/// builder) is still caught by the reader.
#[test]
fn signed_manifest_that_lies_about_sizes_is_rejected() {
    let k = key(1);
    let (bytes, ..) = make(&[&k]);
    let len = u32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    let text = std::str::from_utf8(&bytes[16..16 + len])
        .unwrap()
        .to_string();
    let payload_start = 16 + len + 1 + 96;
    let body = &bytes[payload_start..];
    let m = Manifest::parse(&text).unwrap();
    let stored = m.payload("boot").unwrap().stored;
    for lie in [stored - 1, stored + 1] {
        let forged = text.replace(&format!("stored={stored} "), &format!("stored={lie} "));
        let resigned = resign(&forged, body, &k);
        assert!(
            read_all(&resigned, &[k.verifying_key()]).is_err(),
            "stored={lie} accepted"
        );
    }
}

fn resign(text: &str, body: &[u8], k: &SigningKey) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let mut signed = Vec::new();
    signed.extend_from_slice(MAGIC);
    signed.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    signed.extend_from_slice(&(text.len() as u32).to_le_bytes());
    signed.extend_from_slice(text.as_bytes());
    let mut out = signed.clone();
    out.push(1);
    out.extend_from_slice(k.verifying_key().as_bytes());
    out.extend_from_slice(&k.sign(&signed).to_bytes());
    out.extend_from_slice(body);
    out
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn random_corruption_never_panics_or_passes(pos in 0usize..100_000, val in 1u8..=255) {
        let k = key(1);
        let (mut bytes, ..) = make(&[&k]);
        let i = pos % bytes.len();
        bytes[i] ^= val;
        proptest::prop_assert!(read_all(&bytes, &[k.verifying_key()]).is_err());
    }
}
