//! The agent in a fleet, end to end: the booted qemu-aarch64 device connects
//! to mosquitto and the hub on the host (QEMU's user network reaches the
//! host's loopback as 10.0.2.2) with a device certificate, reports its
//! shadow, and carries out update jobs: a new version is downloaded from
//! the hub's HTTPS server, booted on trial, confirmed, and reported
//! SUCCEEDED exactly once; a tampered bundle is reported FAILED and
//! changes nothing that runs; a version that never becomes healthy is
//! rolled back by U-Boot and reported FAILED. A card burned with only the
//! claim certificate provisions itself on its first boot and keeps the
//! identity it got.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(300);
const BOARD: &str = "qemu-aarch64";
const THING: &str = "keel-test-0001";

/// The hub's view of a thing.
fn device(site: &hub::site::Site, thing: &str) -> Value {
    let all = site.devices().expect("the hub answers");
    all["things"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["thing"] == thing).cloned())
        .unwrap_or(Value::Null)
}

/// Waits until `f` holds for the hub's view of the test's thing.
fn wait_hub(
    site: &hub::site::Site,
    what: &str,
    timeout: Duration,
    f: impl Fn(&Value) -> bool,
) -> Value {
    wait_thing(site, THING, what, timeout, f)
}

fn wait_thing(
    site: &hub::site::Site,
    thing: &str,
    what: &str,
    timeout: Duration,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let d = device(site, thing);
        if f(&d) {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the hub says:\n{d:#}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn job(d: &Value, id: &str) -> Value {
    d["jobs"]
        .as_array()
        .and_then(|a| a.iter().find(|j| j["jobId"] == id).cloned())
        .unwrap_or(Value::Null)
}

fn job_status(d: &Value, id: &str) -> Option<String> {
    job(d, id)["status"].as_str().map(str::to_string)
}

fn firmware(d: &Value) -> Option<&str> {
    d["reported"]["firmware_version"].as_str()
}

#[test]
fn qemu_aarch64_takes_update_jobs_from_the_hub() {
    let v1_dir = build(BOARD);
    let work = tempfile::tempdir().unwrap();
    let (v2, v3) = (work.path().join("v2"), work.path().join("v3"));
    build_version(BOARD, "0.2.0", &v2, None);
    build_version(BOARD, "0.3.0", &v3, Some(&unhealthy_overlay(work.path())));

    // The hub: mosquitto with TLS and a per-thing ACL, the hub's services,
    // an HTTPS file server; devices reach it as 10.0.2.2.
    let (site, stop, serving) = hub_site(work.path());
    let identity = site.add_thing(THING).unwrap();

    // The card: v1, with the device's identity and the fleet configuration
    // on /data, as manufacturing would leave it.
    let card = work.path().join("card.img");
    std::fs::copy(v1_dir.join("sdcard.img"), &card).unwrap();
    let fleet_toml = work.path().join("fleet.toml");
    std::fs::write(&fleet_toml, site.fleet_toml()).unwrap();
    let file = |n: &str| identity.join(n);
    put_in_data(
        &card,
        &[
            (&file("device.pem"), "keel/identity/device.pem"),
            (&file("device.key"), "keel/identity/device.key"),
            (&file("ca.pem"), "keel/identity/ca.pem"),
            (&fleet_toml, "keel/fleet.toml"),
        ],
    );
    let v1 = env!("CARGO_PKG_VERSION");

    let mut c = Console::boot(BOARD, &card);
    c.expect(&format!("keel: ready slot=a version={v1}"), BOOT);
    wait_hub(&site, "the device's shadow", BOOT, |d| {
        firmware(d) == Some(v1)
    });

    // 1. An update job: the device installs v2, reboots into it on trial,
    // confirms it, and only then reports SUCCEEDED.
    site.update_job(&[THING.into()], &[], &v2.join("update.fw"), Some("to-v2"))
        .unwrap();
    c.expect("keel: trial 1/3 of slot b", BOOT);
    c.expect("keel: ready slot=b version=0.2.0", BOOT);
    c.expect("agent: confirmed: slot b version 0.2.0", BOOT);
    wait_hub(&site, "job to-v2 SUCCEEDED", BOOT, |d| {
        job_status(d, "to-v2").as_deref() == Some("SUCCEEDED")
    });
    let d = wait_hub(&site, "the shadow showing 0.2.0", BOOT, |d| {
        firmware(d) == Some("0.2.0")
    });
    // Reported once: a job that reboots the device does not run twice.
    let history = job(&d, "to-v2")["history"].to_string();
    assert_eq!(history.matches("SUCCEEDED").count(), 1, "{d:#}");

    // 2. A tampered bundle: the job ends FAILED naming the cause, and the
    // device keeps running version 2 without a reboot.
    let mut bytes = std::fs::read(v3.join("update.fw")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    let tampered = work.path().join("tampered.fw");
    std::fs::write(&tampered, bytes).unwrap();
    site.update_job(&[THING.into()], &[], &tampered, Some("tampered"))
        .unwrap();
    let d = wait_hub(&site, "job tampered FAILED", BOOT, |d| {
        job_status(d, "tampered").as_deref() == Some("FAILED")
    });
    let details = job(&d, "tampered")["statusDetails"].to_string();
    assert!(details.contains("tampered"), "{d:#}");
    let status = c.command("run /usr/bin/agent status", BOOT);
    assert!(
        status.contains("running_slot=b")
            && status.contains("active_slot=b")
            && status.contains("trial_slot=none"),
        "{status}"
    );

    // 3. A version that never becomes healthy: rolled back by U-Boot after
    // its trials, and the job ends FAILED.
    site.update_job(&[THING.into()], &[], &v3.join("update.fw"), Some("to-v3"))
        .unwrap();
    c.expect("keel: trial 1/3 of slot a", BOOT);
    c.expect("not confirmed after 3 tries; falling back to b", BOOT * 2);
    c.expect("keel: ready slot=b version=0.2.0", BOOT);
    let d = wait_hub(&site, "job to-v3 FAILED", BOOT, |d| {
        job_status(d, "to-v3").as_deref() == Some("FAILED")
    });
    assert_eq!(
        job_status(&d, "to-v2").as_deref(),
        Some("SUCCEEDED"),
        "{d:#}"
    );
    c.send("poweroff");
    c.wait_exit(BOOT);
    stop.store(true, Ordering::SeqCst);
    let _ = serving.join();
}

/// A hub on the host: mosquitto with TLS and a per-thing ACL, the hub's
/// services, an HTTPS file server; devices reach it as 10.0.2.2.
fn hub_site(
    work: &std::path::Path,
) -> (
    hub::site::Site,
    Arc<AtomicBool>,
    std::thread::JoinHandle<Result<(), hub::site::SiteError>>,
) {
    let site = hub::site::Site {
        dir: work.join("site"),
        bind: "127.0.0.1".into(),
        host: "10.0.2.2".into(),
        broker_port: hub::broker::free_port().unwrap(),
        files_port: hub::broker::free_port().unwrap(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let (site, stop) = (site.clone(), stop.clone());
        std::thread::spawn(move || site.serve(&stop, &mut |l| eprintln!("{l}")))
    };
    (site, stop, serving)
}

#[test]
fn qemu_aarch64_provisions_itself_by_claim_once() {
    use keel_contract::paths::{IDENTITY_CERTIFICATE, IDENTITY_DIR, IDENTITY_KEY};
    const SERIAL: &str = "QEMU-CLAIM-0001";
    let v1_dir = build(BOARD);
    let v1 = env!("CARGO_PKG_VERSION");
    let work = tempfile::tempdir().unwrap();
    let (site, stop, serving) = hub_site(work.path());
    let claim = site.claim().unwrap();

    // The card as the factory burns it for provisioning by claim: the
    // image, the claim certificate and the broker's CA; no identity.
    let card = work.path().join("card.img");
    let image = v1_dir.join("sdcard.img");
    let out = xtask(&[
        "burn",
        "--image",
        image.to_str().unwrap(),
        "--file",
        card.to_str().unwrap(),
        "--claim",
        claim.to_str().unwrap(),
        "--yes",
    ]);
    assert!(
        out.status.success(),
        "xtask burn: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // QEMU's virt machine has no serial number of its own: fleet.toml
    // gives one.
    let fleet_toml = work.path().join("fleet.toml");
    std::fs::write(&fleet_toml, site.claim_fleet_toml(Some(SERIAL))).unwrap();
    put_in_data(&card, &[(&fleet_toml, "keel/fleet.toml")]);
    let part = factory::card::data_partition(&card).unwrap();
    let key_path = format!("{IDENTITY_DIR}/{IDENTITY_KEY}");
    let cert_path = format!("{IDENTITY_DIR}/{IDENTITY_CERTIFICATE}");
    assert_eq!(
        factory::card::read_file(&card, part, &key_path).unwrap(),
        None,
        "a claim card carries no device key"
    );

    // First boot: the claim buys the device its own certificate, and the
    // device reports as the thing named after its serial.
    let mut c = Console::boot(BOARD, &card);
    c.expect(&format!("keel: ready slot=a version={v1}"), BOOT);
    c.expect(&format!("provisioned by claim: thing {SERIAL}"), BOOT);
    let d = wait_thing(&site, SERIAL, "the provisioned device online", BOOT, |d| {
        d["online"] == true && firmware(d) == Some(v1)
    });
    assert_eq!(d["provisioned"]["template"], "keel-fleet", "{d:#}");
    c.send("poweroff");
    c.wait_exit(BOOT);
    wait_thing(&site, SERIAL, "the device offline", BOOT, |d| {
        d["online"] == false
    });
    let key = factory::card::read_file(&card, part, &key_path)
        .unwrap()
        .expect("the device's own key, stored on /data");
    let cert = factory::card::read_file(&card, part, &cert_path)
        .unwrap()
        .expect("the device's own certificate, stored on /data");
    let (mode, uid, _) = factory::card::file_owner_mode(&card, part, &key_path).unwrap();
    assert_eq!((uid, mode & 0o777), (0, 0o600), "the key is root's only");

    // Second boot: the stored identity is used; no second request.
    let mut c = Console::boot(BOARD, &card);
    let mut said = c.expect(&format!("keel: ready slot=a version={v1}"), BOOT);
    wait_thing(&site, SERIAL, "the device online again", BOOT, |d| {
        d["online"] == true
    });
    c.send("poweroff");
    said += &c.wait_exit(BOOT);
    assert!(!said.contains("provisioned by claim"), "{said}");
    assert_eq!(
        factory::card::read_file(&card, part, &key_path).unwrap(),
        Some(key)
    );
    assert_eq!(
        factory::card::read_file(&card, part, &cert_path).unwrap(),
        Some(cert)
    );
    stop.store(true, Ordering::SeqCst);
    let _ = serving.join();
}
