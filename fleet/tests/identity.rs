//! The certificate reader against certificates made by an independent tool
//! (the openssl CLI), read back by that tool: the CN and notBefore must
//! agree.

use std::process::Command;

use fleet::identity::inspect;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

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
    String::from_utf8(out.stdout).unwrap()
}

fn check(key_args: &[&str], subject: &str, cn: Option<&str>) {
    let d = tempfile::tempdir().unwrap();
    let (cert, key) = (d.path().join("c.pem"), d.path().join("k.pem"));
    let mut args = vec!["req", "-x509", "-nodes", "-days", "30", "-subj", subject];
    args.extend_from_slice(key_args);
    args.extend([
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    openssl(&args);
    let der = CertificateDer::from_pem_file(&cert).unwrap();
    let info = inspect(&der).unwrap();
    assert_eq!(info.common_name.as_deref(), cn);
    // openssl's own reading of notBefore, as seconds through date(1).
    let start = openssl(&[
        "x509",
        "-noout",
        "-startdate",
        "-in",
        cert.to_str().unwrap(),
    ]);
    let when = start.trim().trim_start_matches("notBefore=");
    let out = Command::new("date")
        .args(["-u", "-d", when, "+%s"])
        .output()
        .unwrap();
    let secs: i64 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(info.not_before, secs, "{when}");
}

#[test]
fn common_name_and_not_before_agree_with_openssl() {
    check(
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/O=Keel/OU=Fleet/CN=dev-0042",
        Some("dev-0042"),
    );
    check(
        &["-newkey", "rsa:2048"],
        "/CN=thing:with_colon-1",
        Some("thing:with_colon-1"),
    );
    check(
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "/O=No common name",
        None,
    );
}
