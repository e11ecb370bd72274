//! The hand-written certificate signing request and key against an
//! independent reader (the openssl CLI): the request's self-signature must
//! verify and its subject and key must be what the device made.

use std::process::Command;

use fleet::csr::DeviceKey;

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is missing: apt-get install openssl (cargo xtask test does)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned()
}

#[test]
fn openssl_verifies_the_request_and_reads_the_key() {
    let d = tempfile::tempdir().unwrap();
    let key = DeviceKey::generate().unwrap();
    let (csr_path, key_path) = (d.path().join("csr.pem"), d.path().join("key.pem"));
    std::fs::write(&csr_path, key.csr_pem("10000000c0ffee01").unwrap()).unwrap();
    std::fs::write(&key_path, key.to_pem()).unwrap();
    let csr = csr_path.to_str().unwrap();
    let said = openssl(&["req", "-in", csr, "-noout", "-verify", "-subject"]);
    assert!(said.contains("verify OK"), "{said}");
    assert!(
        said.contains("CN = 10000000c0ffee01") || said.contains("CN=10000000c0ffee01"),
        "{said}"
    );
    // The request carries the key's own public half.
    let from_csr = openssl(&["req", "-in", csr, "-noout", "-pubkey"]);
    let from_key = openssl(&["pkey", "-in", key_path.to_str().unwrap(), "-pubout"]);
    assert_eq!(from_csr, from_key);
    let text = openssl(&["req", "-in", csr, "-noout", "-text"]);
    assert!(
        text.contains("ecdsa-with-SHA256") && text.contains("prime256v1"),
        "{text}"
    );
}
