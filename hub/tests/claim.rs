//! Fleet provisioning by claim end to end, on the host: a device root
//! holding only the claim certificate and the broker's CA gets its own key
//! and certificate from the hub over mosquitto, connects as its thing with
//! them, and on its next start reuses them without asking again.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::Env;
use fleet::provision::{ensure_identity, ProvisionOptions};
use fleet::{Device, DeviceStatus, Runner, Settings, UpdateError, UpdateOutcome, UpdateStarted};
use keel_contract::paths;

/// A device that only reports its status.
struct Quiet;

impl Device for Quiet {
    fn status(&self) -> DeviceStatus {
        DeviceStatus {
            firmware_version: "1.0.0".into(),
            running_slot: "a".into(),
            confirmed: true,
            last_update: None,
            uptime: Duration::from_secs(1),
            agent_version: "test".into(),
            data_free_bytes: None,
        }
    }
    fn start_update(
        &mut self,
        _: &str,
        _: Option<[u8; 32]>,
        _: &mut dyn FnMut(u8),
    ) -> Result<UpdateStarted, UpdateError> {
        Err(UpdateError {
            reason: "not in this test".into(),
        })
    }
    fn update_outcome(&self) -> UpdateOutcome {
        UpdateOutcome::Idle
    }
    fn reboot(&mut self) {}
    fn apply_settings(&mut self, _: &Settings) {}
}

/// A card as manufacturing leaves it for provisioning by claim: the
/// claim credentials, the broker's CA, the board's serial number in the
/// device tree, and a fleet.toml naming the template.
fn claim_root(env: &Env, serial: &str, template: &str) -> PathBuf {
    let root = env.dir.path().join(format!("root-{serial}"));
    let put = |path: &Path, bytes: &[u8]| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    put(
        &paths::under(&root, paths::FLEET_CONF),
        format!(
            "[mqtt]\nendpoint = \"127.0.0.1\"\nport = {}\nkeepalive_secs = 30\n\
             [provisioning]\ntemplate = \"{template}\"\n",
            env.site.broker_port
        )
        .as_bytes(),
    );
    let claim = env.site.claim().unwrap();
    let claim_dir = paths::under(&root, paths::CLAIM_DIR);
    for f in [paths::CLAIM_CERTIFICATE, paths::CLAIM_KEY] {
        put(&claim_dir.join(f), &std::fs::read(claim.join(f)).unwrap());
    }
    put(
        &paths::under(&root, paths::IDENTITY_DIR).join(paths::IDENTITY_CA_BUNDLE),
        &std::fs::read(claim.join(paths::IDENTITY_CA_BUNDLE)).unwrap(),
    );
    // The Pi firmware's serial-number node ends in a NUL.
    put(
        &paths::under(&root, paths::BOARD_SERIAL),
        format!("{serial}\0").as_bytes(),
    );
    root
}

fn quick() -> ProvisionOptions {
    ProvisionOptions {
        attempt_timeout: Duration::from_secs(30),
        retry: mqtt::Backoff::new(Duration::from_millis(200), Duration::from_secs(2)),
    }
}

#[test]
fn claim_gives_the_device_its_own_certificate_and_it_connects_as_its_thing() {
    let env = Env::with_hub();
    let serial = "10000000c0ffee01";
    let root = claim_root(&env, serial, "keel-fleet");
    let config = fleet::Config::load(&root).unwrap().unwrap();
    let (mut log, lines) = fleet::Log::capture();
    let stop = AtomicBool::new(false);

    let id = ensure_identity(&root, &config, &quick(), &mut log, &stop).unwrap();
    assert!(id.provisioned_now);
    assert_eq!(id.thing_name.as_deref(), Some(serial));
    let key = &config.identity.private_key;
    let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the device key must be readable by root only");
    let cert = config.identity.leaf_certificate().unwrap();
    let info = fleet::identity::inspect(&cert).unwrap();
    assert_eq!(info.common_name.as_deref(), Some(serial));
    // The hub knows the thing, and signed the key the device made.
    let thing = env.wait_thing(serial, "the provisioned thing", |t| {
        !t["provisioned"].is_null()
    });
    assert_eq!(thing["provisioned"]["template"], "keel-fleet");

    // From now on the fleet client connects with the new identity.
    let key_before = std::fs::read(key).unwrap();
    let mut runner = Runner::new(config.clone(), &root, Quiet, fleet::Log::capture().0).unwrap();
    let stop_runner = std::sync::Arc::new(AtomicBool::new(false));
    let s2 = stop_runner.clone();
    let t = std::thread::spawn(move || runner.run(&s2));
    env.wait_thing(serial, "the device online and reporting", |t| {
        t["online"] == true && t["reported"]["firmware_version"] == "1.0.0"
    });
    stop_runner.store(true, std::sync::atomic::Ordering::Relaxed);
    t.join().unwrap();

    // The next start reuses what is stored: no new key, no new request.
    let again = ensure_identity(&root, &config, &quick(), &mut log, &stop).unwrap();
    assert!(!again.provisioned_now);
    assert_eq!(again.thing_name.as_deref(), Some(serial));
    assert_eq!(std::fs::read(key).unwrap(), key_before);
    let said = lines.lock().unwrap().join("\n");
    assert_eq!(said.matches("provisioned by claim").count(), 1, "{said}");
}

#[test]
fn a_refusal_is_reported_and_nothing_half_made_is_kept() {
    let env = Env::with_hub();
    let root = claim_root(&env, "sn-refused", "no-such-template");
    let config = fleet::Config::load(&root).unwrap().unwrap();
    let p = config.provisioning.clone().unwrap();
    let key = fleet::csr::DeviceKey::generate().unwrap();
    let stop = AtomicBool::new(false);
    let err = fleet::provision::provision_once(
        &root,
        &config,
        &p,
        &key,
        "sn-refused",
        Duration::from_secs(30),
        &mut fleet::Log::capture().0,
        &stop,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("RegisterThing") && text.contains("no-such-template"),
        "{text}"
    );
    assert!(
        err.is_transient(),
        "the cloud's template may be fixed later"
    );
    assert!(!config.identity.certificate.exists());
}

#[test]
fn no_identity_and_no_claim_says_what_to_do() {
    let d = tempfile::tempdir().unwrap();
    let config = fleet::Config::parse("[mqtt]\nendpoint = \"127.0.0.1\"\n", d.path()).unwrap();
    let err = ensure_identity(
        d.path(),
        &config,
        &quick(),
        &mut fleet::Log::capture().0,
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert!(err.to_string().contains("--serial"), "{err}");
    assert!(!err.is_transient());
}
