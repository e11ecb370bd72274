//! The fleet client end to end against mosquitto and the hub: the shadow,
//! update jobs across a (simulated) reboot, failures, a broker restart in
//! the middle of a job, and the polling mode. The device is a fake that
//! really downloads the bundle over HTTPS from the hub's file server.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::Env;
use fleet::{Device, DeviceStatus, Runner, Settings, UpdateError, UpdateOutcome, UpdateStarted};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

#[derive(Default)]
struct FakeState {
    version: String,
    confirmed: bool,
    outcome: Option<UpdateOutcome>,
    downloads: Vec<String>,
    reboots: u32,
    fail_with: Option<String>,
    settings: Option<Settings>,
    /// Called from inside the download with each progress step.
    on_progress: Option<Box<dyn FnMut(u8) + Send>>,
}

#[derive(Clone)]
struct FakeDevice {
    s: Arc<Mutex<FakeState>>,
    ca: PathBuf,
}

impl FakeDevice {
    fn new(version: &str, ca: &Path) -> FakeDevice {
        let s = FakeState {
            version: version.into(),
            confirmed: true,
            ..FakeState::default()
        };
        FakeDevice {
            s: Arc::new(Mutex::new(s)),
            ca: ca.to_path_buf(),
        }
    }
    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.s.lock().unwrap())
    }
}

impl Device for FakeDevice {
    fn status(&self) -> DeviceStatus {
        self.with(|s| DeviceStatus {
            firmware_version: s.version.clone(),
            running_slot: "a".into(),
            confirmed: s.confirmed,
            last_update: None,
            uptime: Duration::from_secs(5),
            agent_version: "test".into(),
            data_free_bytes: Some(1 << 30),
        })
    }

    fn start_update(
        &mut self,
        url: &str,
        sha: Option<[u8; 32]>,
        progress: &mut dyn FnMut(u8),
    ) -> Result<UpdateStarted, UpdateError> {
        self.with(|s| s.downloads.push(url.to_string()));
        let mut trust = net::Trust::empty();
        trust.add_pem_file(&self.ca).unwrap();
        let fail = |reason: String| UpdateError { reason };
        let mut body = net::get(
            url,
            &trust,
            &net::Resolver::default(),
            &net::GetOptions::default(),
        )
        .map_err(|e| fail(e.to_string()))?;
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes)
            .map_err(|e| fail(e.to_string()))?;
        for pct in (0..=100).step_by(10) {
            progress(pct);
            let hook = self.with(|s| s.on_progress.take());
            if let Some(mut h) = hook {
                h(pct);
                self.with(|s| s.on_progress = Some(h));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        if let Some(want) = sha {
            if Sha256::digest(&bytes).as_slice() != want {
                return Err(fail("the bundle's sha256 does not match the job's".into()));
            }
        }
        if let Some(reason) = self.with(|s| s.fail_with.clone()) {
            return Err(fail(reason));
        }
        self.with(|s| s.outcome = Some(UpdateOutcome::Staged));
        Ok(UpdateStarted::RebootRequired)
    }

    fn update_outcome(&self) -> UpdateOutcome {
        self.with(|s| s.outcome.clone().unwrap_or(UpdateOutcome::Idle))
    }

    fn reboot(&mut self) {
        self.with(|s| s.reboots += 1);
    }

    fn apply_settings(&mut self, settings: &Settings) {
        self.with(|s| s.settings = Some(settings.clone()));
    }
}

/// A device root (`/etc/keel/fleet.toml`, `/data/keel/identity`) for `thing`.
fn device_root(env: &Env, thing: &str, extra: &str) -> PathBuf {
    let root = env.dir.path().join(format!("root-{thing}"));
    let conf = keel_contract::paths::under(&root, keel_contract::paths::FLEET_CONF);
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(
        &conf,
        format!(
            "[mqtt]\nendpoint = \"127.0.0.1\"\nport = {}\nkeepalive_secs = 30\n{extra}",
            env.site.broker_port
        ),
    )
    .unwrap();
    let ident = keel_contract::paths::under(&root, keel_contract::paths::IDENTITY_DIR);
    std::fs::create_dir_all(&ident).unwrap();
    let made = env.identity(thing);
    for f in ["device.pem", "device.key", "ca.pem"] {
        std::fs::copy(made.join(f), ident.join(f)).unwrap();
    }
    root
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    lines: Arc<Mutex<Vec<String>>>,
}

/// Starts the fleet client in a thread; it ends at `stop` or at a reboot.
fn start(root: &Path, device: &FakeDevice) -> Running {
    let (log, lines) = fleet::Log::capture();
    let mut runner = Runner::start(root, device.clone(), log)
        .unwrap()
        .expect("configured");
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let thread = std::thread::spawn(move || runner.run(&s));
    Running {
        stop,
        thread,
        lines,
    }
}

impl Running {
    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.lines.lock().unwrap().clone()
    }
}

fn payload_file(env: &Env, name: &str, bytes: &[u8]) -> (String, String) {
    std::fs::create_dir_all(env.site.files_dir()).unwrap();
    std::fs::write(env.site.files_dir().join(name), bytes).unwrap();
    let url = format!("https://127.0.0.1:{}/{name}", env.site.files_port);
    (url, hex::encode(Sha256::digest(bytes)))
}

fn create_job(env: &Env, id: &str, thing: &str, document: Value) {
    let opts = env.site.hub_options("test-operator").unwrap();
    hub::api::call(
        opts,
        "create-job",
        json!({"jobId": id, "targets": [thing], "document": document}),
        common::DEADLINE,
    )
    .unwrap();
}

fn job<'a>(t: &'a Value, id: &str) -> Option<&'a Value> {
    t["jobs"].as_array()?.iter().find(|j| j["jobId"] == id)
}

fn status_of(t: &Value, id: &str) -> String {
    job(t, id)
        .and_then(|j| j["status"].as_str())
        .unwrap_or("")
        .to_string()
}

#[test]
fn shadow_reports_and_applies_the_whitelisted_delta() {
    let env = Env::with_hub();
    let root = device_root(&env, "dev-s", "");
    let device = FakeDevice::new("1.0.0", &env.pki().ca_pem());
    let run = start(&root, &device);
    let t = env.wait_thing("dev-s", "the first report", |t| {
        t["reported"]["firmware_version"] == "1.0.0"
    });
    assert_eq!(t["online"], true);
    assert_eq!(t["reported"]["data_free_bytes"], 1 << 30);
    env.site
        .desire(
            "dev-s",
            json!({"telemetry_interval_secs": 60, "log_level": 5, "colour": "red"}),
        )
        .unwrap();
    let t = env.wait_thing("dev-s", "the settings reported back", |t| {
        t["reported"]["telemetry_interval_secs"] == 60
            && t["reported"]["rejected_settings"]["log_level"].is_string()
    });
    assert!(t["reported"].get("colour").is_none());
    assert_eq!(
        device
            .with(|s| s.settings.clone())
            .unwrap()
            .telemetry_interval,
        Duration::from_secs(60)
    );
    // A status change is reported without being asked.
    device.with(|s| s.version = "1.0.1".into());
    env.wait_thing("dev-s", "the new version", |t| {
        t["reported"]["firmware_version"] == "1.0.1"
    });
    let lines = run.finish();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ignoring desired 'colour'")),
        "{lines:#?}"
    );
    // Gone: the last will (or the clean disconnect's presence) says so.
    drop(env);
}

#[test]
fn an_update_job_runs_once_across_the_reboot_and_succeeds() {
    let env = Env::with_hub();
    let root = device_root(&env, "dev-j", "");
    let (url, sha) = payload_file(&env, "u2.fw", &[7u8; 300_000]);
    let device = FakeDevice::new("1.0.0", &env.pki().ca_pem());
    let run = start(&root, &device);
    env.wait_thing("dev-j", "online", |t| t["online"] == true);
    create_job(
        &env,
        "job-1",
        "dev-j",
        json!({"operation":"keel-update","url":url,"sha256":sha,"version":"2.0.0"}),
    );
    env.wait_for("the reboot", || device.with(|s| s.reboots) == 1);
    run.thread.join().unwrap();
    let t = env.wait_thing("dev-j", "IN_PROGRESS rebooting", |t| {
        job(t, "job-1").is_some_and(|j| j["statusDetails"]["step"] == "rebooting")
    });
    assert_eq!(status_of(&t, "job-1"), "IN_PROGRESS");

    // The "reboot": the new version on trial, a new client on the same /data.
    device.with(|s| {
        s.version = "2.0.0".into();
        s.confirmed = false;
        s.outcome = Some(UpdateOutcome::Trial);
    });
    let run = start(&root, &device);
    env.wait_thing("dev-j", "the trial reported", |t| {
        t["reported"]["confirmed"] == false
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        status_of(&env.thing("dev-j").unwrap(), "job-1"),
        "IN_PROGRESS",
        "not before the health check"
    );
    device.with(|s| {
        s.confirmed = true;
        s.outcome = Some(UpdateOutcome::Confirmed {
            version: "2.0.0".into(),
        });
    });
    let t = env.wait_thing("dev-j", "SUCCEEDED", |t| {
        status_of(t, "job-1") == "SUCCEEDED"
    });
    let history: Vec<&str> = job(&t, "job-1").unwrap()["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        history.iter().filter(|s| **s == "SUCCEEDED").count(),
        1,
        "{history:?}"
    );
    run.finish();
    // One more restart: nothing is owed, nothing runs again.
    let run = start(&root, &device);
    env.wait_thing("dev-j", "online again", |t| {
        t["online"] == true && t["reported"]["confirmed"] == true
    });
    std::thread::sleep(Duration::from_secs(2));
    run.finish();
    assert_eq!(device.with(|s| s.downloads.len()), 1, "the job ran once");
    assert_eq!(env.files.gets.load(Ordering::Relaxed), 1);
}

#[test]
fn failures_end_the_job_failed_with_the_reason() {
    let env = Env::with_hub();
    let root = device_root(&env, "dev-f", "");
    let (url, _) = payload_file(&env, "bad.fw", b"not a bundle");
    let device = FakeDevice::new("1.0.0", &env.pki().ca_pem());
    device.with(|s| s.fail_with = Some("bad signature: not signed by a trusted key".into()));
    let run = start(&root, &device);
    env.wait_thing("dev-f", "online", |t| t["online"] == true);
    create_job(
        &env,
        "job-bad",
        "dev-f",
        json!({"operation":"keel-update","url":url}),
    );
    let t = env.wait_thing("dev-f", "FAILED", |t| status_of(t, "job-bad") == "FAILED");
    assert_eq!(
        job(&t, "job-bad").unwrap()["statusDetails"]["reason"],
        "bad signature: not signed by a trusted key"
    );
    create_job(
        &env,
        "job-odd",
        "dev-f",
        json!({"operation":"factory-reset"}),
    );
    let t = env.wait_thing("dev-f", "REJECTED", |t| {
        status_of(t, "job-odd") == "REJECTED"
    });
    assert!(job(&t, "job-odd").unwrap()["statusDetails"]["reason"]
        .as_str()
        .unwrap()
        .contains("unknown operation"));
    run.finish();
    assert_eq!(device.with(|s| s.reboots), 0);

    // A rollback after the reboot: FAILED with the device's reason.
    device.with(|s| s.fail_with = None);
    create_job(
        &env,
        "job-rb",
        "dev-f",
        json!({"operation":"keel-update","url":url,"version":"3.0"}),
    );
    let run = start(&root, &device);
    env.wait_for("the reboot", || device.with(|s| s.reboots) == 1);
    run.thread.join().unwrap();
    device.with(|s| {
        s.outcome = Some(UpdateOutcome::Failed {
            reason: "3.0 never became healthy; rolled back".into(),
        })
    });
    let run = start(&root, &device);
    let t = env.wait_thing("dev-f", "FAILED after rollback", |t| {
        status_of(t, "job-rb") == "FAILED"
    });
    assert_eq!(
        job(&t, "job-rb").unwrap()["statusDetails"]["reason"],
        "3.0 never became healthy; rolled back"
    );
    run.finish();
}

#[test]
fn a_broker_restart_mid_job_and_a_status_owed_across_a_reboot() {
    let mut env = Env::with_hub();
    let root = device_root(&env, "dev-r", "");
    let (url, sha) = payload_file(&env, "r.fw", &[1u8; 100_000]);
    let device = FakeDevice::new("1.0.0", &env.pki().ca_pem());
    let run = start(&root, &device);
    env.wait_thing("dev-r", "online", |t| t["online"] == true);

    // Restart mosquitto while the download runs.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let tx = Mutex::new(Some(tx));
    device.with(|s| {
        s.on_progress = Some(Box::new(move |pct| {
            if pct == 30 {
                if let Some(t) = tx.lock().unwrap().take() {
                    let _ = t.send(());
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        }))
    });
    create_job(
        &env,
        "job-r",
        "dev-r",
        json!({"operation":"keel-update","url":url,"sha256":sha}),
    );
    rx.recv_timeout(common::DEADLINE)
        .expect("the download started");
    env.broker.restart().unwrap();
    env.wait_for("the reboot", || device.with(|s| s.reboots) == 1);
    run.thread.join().unwrap();
    let lines = run.lines.lock().unwrap().clone();
    assert!(
        lines.iter().any(|l| l.contains("reconnected as dev-r")),
        "{lines:#?}"
    );

    // Confirmed while the broker is down: SUCCEEDED is owed, on disk.
    env.broker.stop();
    device.with(|s| {
        s.version = "2.0.0".into();
        s.outcome = Some(UpdateOutcome::Confirmed {
            version: "2.0.0".into(),
        });
    });
    let run = start(&root, &device);
    std::thread::sleep(Duration::from_secs(2));
    run.finish(); // another "reboot" before it could be sent
    env.broker.restart().unwrap();
    let run = start(&root, &device);
    let t = env.wait_thing("dev-r", "SUCCEEDED", |t| {
        status_of(t, "job-r") == "SUCCEEDED"
    });
    let history = job(&t, "job-r").unwrap()["history"].to_string();
    assert_eq!(history.matches("SUCCEEDED").count(), 1, "{history}");
    run.finish();
    assert_eq!(device.with(|s| s.downloads.len()), 1);
}

#[test]
fn polling_mode_updates_to_a_newer_channel_version_and_remembers_a_failure() {
    let env = Env::broker_only();
    let (url, sha) = payload_file(&env, "p.fw", &[3u8; 50_000]);
    let manifest = json!({"version":"1.1.0","url":url,"sha256":sha}).to_string();
    payload_file(&env, "beta.json", manifest.as_bytes());
    let root = env.dir.path().join("root-poll");
    let conf = keel_contract::paths::under(&root, keel_contract::paths::FLEET_CONF);
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    let manifest_url = format!("https://127.0.0.1:{}/{{channel}}.json", env.site.files_port);
    std::fs::write(
        &conf,
        format!("[settings]\nupdate_channel = \"beta\"\n[polling]\nmanifest_url = \"{manifest_url}\"\ninterval_secs = 60\n[identity]\nca_bundle = \"{}\"\n", env.pki().ca_pem().display()),
    )
    .unwrap();
    let device = FakeDevice::new("1.0.0", &env.pki().ca_pem());
    let run = start(&root, &device);
    env.wait_for("the reboot", || device.with(|s| s.reboots) == 1);
    run.thread.join().unwrap();
    assert_eq!(device.with(|s| s.downloads.clone()), [url]);
    // Rolled back: the same version is not tried again.
    device.with(|s| {
        s.outcome = Some(UpdateOutcome::Failed {
            reason: "rolled back".into(),
        })
    });
    let run = start(&root, &device);
    std::thread::sleep(Duration::from_secs(3));
    let lines = run.finish();
    assert!(
        lines.iter().any(|l| l.contains("1.1.0 failed")),
        "{lines:#?}"
    );
    assert_eq!(device.with(|s| s.downloads.len()), 1);
}

#[test]
fn no_configuration_or_no_identity_is_a_clear_message_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let device = FakeDevice::new("1.0.0", Path::new("/nonexistent"));
    let (log, lines) = fleet::Log::capture();
    assert!(Runner::start(dir.path(), device.clone(), log)
        .unwrap()
        .is_none());
    assert!(lines.lock().unwrap()[0].contains("no fleet configuration"));
    let conf = keel_contract::paths::under(dir.path(), keel_contract::paths::FLEET_CONF);
    std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
    std::fs::write(&conf, "[mqtt]\nendpoint = \"example.com\"\n").unwrap();
    let (log, _) = fleet::Log::capture();
    let err = Runner::start(dir.path(), device, log)
        .err()
        .expect("no identity")
        .to_string();
    assert!(
        err.contains("device.pem") && err.contains("no device identity"),
        "{err}"
    );
}

#[test]
fn just_in_time_provisioning_is_logged_once_and_retried() {
    let env = Env::broker_only();
    // A broker that closes every connection right after CONNECT.
    let (port, count) = common::fake_broker(&env, |_, s| common::read_connect(s));
    let root = device_root(&env, "dev-jitp", "");
    let conf = keel_contract::paths::under(&root, keel_contract::paths::FLEET_CONF);
    std::fs::write(
        &conf,
        format!("[mqtt]\nendpoint = \"127.0.0.1\"\nport = {port}\n"),
    )
    .unwrap();
    let device = FakeDevice::new("1.0.0", &env.pki().ca_pem());
    let run = start(&root, &device);
    env.wait_for("three attempts", || count.load(Ordering::SeqCst) >= 3);
    let lines = run.finish();
    let jitp = lines
        .iter()
        .filter(|l| l.contains("as AWS IoT does while it registers"))
        .count();
    assert_eq!(jitp, 1, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("warn") && l.contains("right after CONNECT")),
        "{lines:#?}"
    );
}

#[test]
fn a_job_made_from_a_built_bundle_reaches_the_device() {
    let env = Env::with_hub();
    // A real (small) signed bundle, as `cargo xtask build` writes update.fw.
    let bundle_path = env.dir.path().join("update.fw");
    let mut out = Vec::new();
    let data = vec![5u8; 10_000];
    bundle::write_bundle(
        &mut out,
        &bundle::Manifest {
            board: "qemu-aarch64".into(),
            version: "1.7.0".into(),
            min_version: "0.1.0".into(),
            build_id: "test".into(),
            chunk_size: 4096,
            payloads: vec![],
        },
        &mut [bundle::PayloadSource {
            name: "rootfs",
            data: &mut &data[..],
            compression: bundle::Compression::None,
        }],
        &[&ed25519_dalek::SigningKey::from_bytes(&[9; 32])],
    )
    .unwrap();
    std::fs::write(&bundle_path, &out).unwrap();
    let root = device_root(&env, "dev-b", "");
    let device = FakeDevice::new("1.0.0", &env.pki().ca_pem());
    let run = start(&root, &device);
    env.wait_thing("dev-b", "online", |t| t["online"] == true);
    env.site.set_group("bench", &["dev-b".into()]).unwrap();
    let answer = env
        .site
        .update_job(&[], &["bench".into()], &bundle_path, Some("rel-1-7"))
        .unwrap();
    assert_eq!(answer["targets"], json!(["dev-b"]));
    // The fake checks the job's sha256 against what it downloaded.
    env.wait_for("the reboot", || device.with(|s| s.reboots) == 1);
    run.thread.join().unwrap();
    let url = device.with(|s| s.downloads[0].clone());
    assert!(
        url.starts_with(&format!("https://127.0.0.1:{}/1.7.0-", env.site.files_port)),
        "{url}"
    );
    let hub = hub::Hub::open(&env.site.dir).unwrap();
    let job = &hub.state.jobs.jobs["rel-1-7"];
    assert_eq!(job.document["version"], "1.7.0");
    assert_eq!(job.document["sha256"], hex::encode(Sha256::digest(&out)));
}
