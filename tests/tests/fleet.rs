//! The agent in a fleet, end to end: the booted qemu-aarch64 device connects
//! to mosquitto and the hub on the host (QEMU's user network reaches the
//! host's loopback as 10.0.2.2) with a device certificate, reports its
//! shadow, and carries out update jobs: a new version is downloaded from
//! the hub's HTTPS server, booted on trial, confirmed, and reported
//! SUCCEEDED exactly once; a tampered bundle is reported FAILED and
//! changes nothing that runs; a version that never becomes healthy is
//! rolled back by U-Boot and reported FAILED.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(300);
const BOARD: &str = "qemu-aarch64";
const THING: &str = "keel-test-0001";

/// The hub's view of our thing.
fn device(site: &hub::site::Site) -> Value {
    let all = site.devices().expect("the hub answers");
    all["things"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["thing"] == THING).cloned())
        .unwrap_or(Value::Null)
}

/// Waits until `f` holds for the hub's view of the thing.
fn wait_hub(
    site: &hub::site::Site,
    what: &str,
    timeout: Duration,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let d = device(site);
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
    let site = hub::site::Site {
        dir: work.path().join("site"),
        bind: "127.0.0.1".into(),
        host: "10.0.2.2".into(),
        broker_port: hub::broker::free_port().unwrap(),
        files_port: hub::broker::free_port().unwrap(),
    };
    let identity = site.add_thing(THING).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let (site, stop) = (site.clone(), stop.clone());
        std::thread::spawn(move || site.serve(&stop, &mut |l| eprintln!("{l}")))
    };

    // The card: v1, with the device's identity and the fleet configuration
    // on /data, as manufacturing would leave it.
    let card = work.path().join("card.img");
    std::fs::copy(v1_dir.join("sdcard.img"), &card).unwrap();
    let fleet_toml = work.path().join("fleet.toml");
    std::fs::write(&fleet_toml, site.fleet_toml()).unwrap();
    let file = |n: &str| identity.join(n);
    put_in_data(
        BOARD,
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
