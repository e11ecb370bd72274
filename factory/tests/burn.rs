//! Burning into files and fake block devices: only the mapped blocks
//! written and the rest of the card untouched, the identity on the data
//! partition read back with the fleet client's loader, the chain checked
//! by openssl, and batches interrupted and resumed.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::{FakeSys, Scripted, MIB, PATTERN};
use factory::batch::{self, Batch, TargetSpec};
use factory::burn;
use factory::ca::DeviceCa;
use factory::card;
use factory::image::SourceImage;
use factory::ledger::{Ledger, Status, MANIFEST};
use factory::target::Sysroot;
use factory::Serial;
use keel_contract::paths;

fn read(path: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_end(&mut v)
        .unwrap();
    v
}

fn sn(s: &str) -> Serial {
    Serial::parse(s).unwrap()
}

#[test]
fn only_mapped_blocks_are_written_and_the_rest_of_the_card_is_untouched() {
    let d = tempfile::tempdir().unwrap();
    let img = common::image(d.path());
    let src = SourceImage::open(&img.path, None).unwrap();
    let card = d.path().join("card.img");
    // A used card, larger than the image.
    common::used_card(&card, img.size + 8 * MIB);
    let mut op = Scripted::default();
    let report = batch::burn_generic(
        &Sysroot::real(),
        &src,
        &TargetSpec::File(card.clone()),
        None,
        None,
        false,
        &mut op,
    )
    .unwrap()
    .unwrap();
    assert_eq!(report.stats.bytes, src.mapped_bytes());
    assert!(
        src.mapped_bytes() < img.size / 2,
        "the test image is mostly empty"
    );
    let (image, burned) = (read(&img.path), read(&card));
    assert_eq!(
        burned.len() as u64,
        img.size + 8 * MIB,
        "a card keeps its size"
    );
    let mapped = src.extents();
    for block in 0..(img.size / 4096) {
        let at = (block * 4096) as usize;
        let range = at..at + 4096;
        let in_map = mapped
            .iter()
            .any(|e| e.offset <= at as u64 && (at as u64) < e.offset + e.len);
        if in_map {
            assert_eq!(
                burned[range.clone()],
                image[range],
                "mapped block {block} differs"
            );
        } else {
            assert!(
                burned[range].iter().all(|&b| b == PATTERN),
                "unmapped block {block} was written"
            );
        }
    }
    assert!(burned[img.size as usize..].iter().all(|&b| b == PATTERN));
    // The data partition is a clean filesystem whatever the card held.
    card::fsck(&card, src.data).unwrap();
    // No identity on a generic card.
    assert_eq!(
        card::read_file(
            &card,
            src.data,
            &format!("{}/{}", paths::IDENTITY_DIR, paths::IDENTITY_KEY)
        )
        .unwrap(),
        None
    );
}

fn openssl_verify(ca: &Path, cert: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca)
        .arg(cert)
        .output()
        .expect("openssl is missing: apt-get install openssl");
    (
        out.status.success(),
        String::from_utf8_lossy(&[out.stdout, out.stderr].concat()).into_owned(),
    )
}

#[test]
fn the_identity_on_the_card_loads_with_the_fleet_client_and_chains_to_the_ca() {
    let d = tempfile::tempdir().unwrap();
    let img = common::image(d.path());
    let src = SourceImage::open(&img.path, None).unwrap();
    let ca = DeviceCa::create(&d.path().join("acme")).unwrap();
    let server_ca = b"-----BEGIN CERTIFICATE-----\nstand-in\n-----END CERTIFICATE-----\n".to_vec();
    let mut ledger = Ledger::open(&ca.dir.join(MANIFEST)).unwrap();
    let card = d.path().join("card.img");
    common::used_card(&card, img.size);
    let mut b = file_batch(&src, TargetSpec::File(card.clone()), &ca, &mut ledger);
    let mut op = Scripted::default();
    let summary = b.run(&[sn("ACME-0042")], true, &mut op).unwrap();
    assert_eq!(summary.done, [sn("ACME-0042")]);

    // Read back as the device will: the identity directory under a root.
    let root = d.path().join("device-root");
    let dir = paths::under(&root, paths::IDENTITY_DIR);
    let files = burn::read_identity(&card, src.data, &dir).unwrap();
    std::fs::write(dir.join(paths::IDENTITY_CA_BUNDLE), ca.cert_pem()).unwrap();
    let config = fleet::Config::parse("[mqtt]\nendpoint = \"iot.example\"\n", &root).unwrap();
    assert_eq!(config.identity, files);
    config
        .identity
        .client_config(false)
        .expect("the fleet client's loader takes it");
    let leaf = config.identity.leaf_certificate().unwrap();
    assert_eq!(
        fleet::identity::inspect(&leaf)
            .unwrap()
            .common_name
            .as_deref(),
        Some("ACME-0042")
    );
    // On the card: root's, the key 0600 in a 0700 directory.
    let key = format!("{}/{}", paths::IDENTITY_DIR, paths::IDENTITY_KEY);
    assert_eq!(
        card::file_owner_mode(&card, src.data, &key).unwrap(),
        (0o600, 0, 0)
    );
    assert_eq!(
        card::file_owner_mode(&card, src.data, paths::IDENTITY_DIR).unwrap(),
        (0o700, 0, 0)
    );
    card::fsck(&card, src.data).unwrap();

    // openssl agrees the certificate chains to this CA, and not to another.
    let cert = dir.join("leaf.pem");
    let pem = std::fs::read_to_string(dir.join(paths::IDENTITY_CERTIFICATE)).unwrap();
    let leaf_pem = &pem[..pem.find("-----END CERTIFICATE-----").unwrap() + 26];
    std::fs::write(&cert, leaf_pem).unwrap();
    assert!(
        pem.ends_with(ca.cert_pem()),
        "the device presents the CA after its certificate"
    );
    let (ok, said) = openssl_verify(&ca.dir.join("ca.pem"), &cert);
    assert!(ok, "{said}");
    let other = DeviceCa::create(&d.path().join("other")).unwrap();
    let (ok, said) = openssl_verify(&other.dir.join("ca.pem"), &cert);
    assert!(!ok, "{said}");

    // The manifest says so, the certificate is kept, no key is.
    let l = Ledger::open(&ca.dir.join(MANIFEST)).unwrap();
    let r = l.latest(&sn("ACME-0042")).unwrap();
    assert_eq!(r.status, Status::Done);
    assert_eq!(r.image_sha256, src.sha256);
    assert!(ca.dir.join("certs/ACME-0042.pem").exists());
    let mut names: Vec<String> = std::fs::read_dir(&ca.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ca.key",
            "ca.pem",
            "certs",
            "manifest.csv",
            "manifest.csv.lock"
        ]
    );
    for e in std::fs::read_dir(ca.dir.join("certs")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        assert!(!text.contains("PRIVATE KEY"), "no device key is kept");
    }

    // The same serial again is refused: a serial is issued once.
    let mut ledger = Ledger::open(&ca.dir.join(MANIFEST)).unwrap();
    let mut b = Batch {
        server_ca: Some(server_ca),
        ..file_batch(&src, TargetSpec::File(card.clone()), &ca, &mut ledger)
    };
    let err = b
        .run(&[sn("ACME-0042")], true, &mut Scripted::default())
        .unwrap_err();
    assert!(err.to_string().contains("never issued twice"), "{err}");
}

#[test]
fn a_claim_card_carries_the_claim_and_the_broker_ca_only() {
    let d = tempfile::tempdir().unwrap();
    let img = common::image(d.path());
    let src = SourceImage::open(&img.path, None).unwrap();
    let claim_dir = d.path().join("claim");
    std::fs::create_dir(&claim_dir).unwrap();
    std::fs::write(claim_dir.join(paths::CLAIM_CERTIFICATE), "CLAIM CERT").unwrap();
    std::fs::write(claim_dir.join(paths::CLAIM_KEY), "CLAIM KEY").unwrap();
    std::fs::write(claim_dir.join(paths::IDENTITY_CA_BUNDLE), "BROKER CA").unwrap();
    let claim = burn::ClaimFiles::read(&claim_dir).unwrap();
    let card = d.path().join("card.img");
    batch::burn_generic(
        &Sysroot::real(),
        &src,
        &TargetSpec::File(card.clone()),
        Some(claim),
        None,
        false,
        &mut Scripted::default(),
    )
    .unwrap()
    .unwrap();
    // A new image file is as long as the image, mapped or not.
    assert_eq!(std::fs::metadata(&card).unwrap().len(), img.size);
    let at =
        |dir: &str, name: &str| card::read_file(&card, src.data, &format!("{dir}/{name}")).unwrap();
    assert_eq!(
        at(paths::CLAIM_DIR, paths::CLAIM_KEY).as_deref(),
        Some(&b"CLAIM KEY"[..])
    );
    assert_eq!(
        at(paths::IDENTITY_DIR, paths::IDENTITY_CA_BUNDLE).as_deref(),
        Some(&b"BROKER CA"[..])
    );
    assert_eq!(
        at(paths::IDENTITY_DIR, paths::IDENTITY_KEY),
        None,
        "the device makes its own key"
    );
    let key = format!("{}/{}", paths::CLAIM_DIR, paths::CLAIM_KEY);
    assert_eq!(
        card::file_owner_mode(&card, src.data, &key).unwrap(),
        (0o600, 0, 0)
    );
}

#[test]
fn an_interrupted_batch_resumes_without_reusing_a_serial() {
    let d = tempfile::tempdir().unwrap();
    let img = common::image(d.path());
    let src = SourceImage::open(&img.path, None).unwrap();
    let ca = DeviceCa::create(&d.path().join("acme")).unwrap();
    let serials = factory::serial::range("ACME-0001..ACME-0005").unwrap();
    let spec = TargetSpec::File(d.path().join("cards/{serial}.img"));
    std::fs::create_dir(d.path().join("cards")).unwrap();
    let manifest = ca.dir.join(MANIFEST);

    // The power goes while ACME-0003's card is being written.
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut ledger = Ledger::open(&manifest).unwrap();
        let mut b = file_batch(&src, spec.clone(), &ca, &mut ledger);
        let mut op = Scripted {
            crash_on: Some("ACME-0003".into()),
            ..Scripted::default()
        };
        let _ = b.run(&serials, false, &mut op);
    }));
    assert!(crashed.is_err(), "the simulated power cut happened");
    let l = Ledger::open(&manifest).unwrap();
    assert_eq!(l.status(&sn("ACME-0002")), Some(Status::Done));
    assert_eq!(l.status(&sn("ACME-0003")), Some(Status::Started));
    assert_eq!(l.status(&sn("ACME-0004")), None);

    // Run again with the same list: 1 and 2 are skipped, 3 is voided (its
    // card may hold its identity), 4 and 5 are burned.
    let mut ledger = Ledger::open(&manifest).unwrap();
    let mut b = file_batch(&src, spec.clone(), &ca, &mut ledger);
    let mut op = Scripted::default();
    let s = b.run(&serials, false, &mut op).unwrap();
    assert_eq!(s.skipped, [sn("ACME-0001"), sn("ACME-0002")]);
    assert_eq!(s.voided, [sn("ACME-0003")]);
    assert_eq!(s.done, [sn("ACME-0004"), sn("ACME-0005")]);
    assert!(
        op.notes
            .iter()
            .any(|n| n.contains("ACME-0003") && n.contains("void")),
        "{:?}",
        op.notes
    );
    // A third run has nothing left to do, and never touches ACME-0003.
    let mut ledger = Ledger::open(&manifest).unwrap();
    let l_before = ledger.records().len();
    let mut b = file_batch(&src, spec, &ca, &mut ledger);
    let s = b.run(&serials, false, &mut Scripted::default()).unwrap();
    assert_eq!(s.skipped.len(), 5);
    assert!(s.done.is_empty() && s.voided.is_empty());
    assert_eq!(ledger.records().len(), l_before);
    let dones: Vec<String> = ledger
        .records()
        .iter()
        .filter(|r| r.status == Status::Done)
        .map(|r| r.serial.to_string())
        .collect();
    assert_eq!(dones, ["ACME-0001", "ACME-0002", "ACME-0004", "ACME-0005"]);
    // Each done card holds its own serial's certificate.
    for s in ["ACME-0004", "ACME-0005"] {
        let pem = card::read_file(
            &d.path().join(format!("cards/{s}.img")),
            src.data,
            &format!("{}/{}", paths::IDENTITY_DIR, paths::IDENTITY_CERTIFICATE),
        )
        .unwrap()
        .unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(&pem)
            .map(|c: rustls_pki_types::CertificateDer| c)
            .unwrap();
        assert_eq!(
            fleet::identity::inspect(&der)
                .unwrap()
                .common_name
                .as_deref(),
            Some(s)
        );
    }
}

#[test]
fn a_fake_card_reader_is_burned_through_the_device_path() {
    let d = tempfile::tempdir().unwrap();
    let img = common::image(d.path());
    let src = SourceImage::open(&img.path, None).unwrap();
    let mut sys = FakeSys::new(d.path());
    sys.disk("sdz", 128 * MIB, true, 2);
    let node = sys.root.join("dev/sdz");
    common::used_card(&node, 128 * MIB);
    let ca = DeviceCa::create(&d.path().join("acme")).unwrap();
    let mut ledger = Ledger::open(&ca.dir.join(MANIFEST)).unwrap();
    let mut b = Batch {
        sys: sys.sysroot(),
        image: &src,
        target: TargetSpec::Device(sys.dev("sdz")),
        ca: &ca,
        ledger: &mut ledger,
        server_ca: None,
        claim: None,
        force: false,
    };
    let mut op = Scripted::default();
    let s = b.run(&[sn("PI-1"), sn("PI-2")], false, &mut op).unwrap();
    assert_eq!(s.done, [sn("PI-1"), sn("PI-2")]);
    assert_eq!(op.cards, 2, "the operator was asked to swap cards");
    assert!(op.asked[0].contains("/dev/sdz"), "{:?}", op.asked);
    let files = burn::read_identity(&node, src.data, &d.path().join("id")).unwrap();
    let leaf = files.leaf_certificate().unwrap();
    assert_eq!(
        fleet::identity::inspect(&leaf)
            .unwrap()
            .common_name
            .as_deref(),
        Some("PI-2")
    );
}

/// A batch into file targets on the real system, with no server CA or
/// claim: what most of these tests run.
fn file_batch<'a>(
    image: &'a SourceImage,
    target: TargetSpec,
    ca: &'a DeviceCa,
    ledger: &'a mut Ledger,
) -> Batch<'a> {
    Batch {
        sys: Sysroot::real(),
        image,
        target,
        ca,
        ledger,
        server_ca: None,
        claim: None,
        force: false,
    }
}
