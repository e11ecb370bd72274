//! A provisioned identity against a real broker: mosquitto configured
//! like AWS IoT (client certificate required, CN as the user name, the
//! per-thing ACL) trusting the factory's device CA accepts the device,
//! and refuses a device whose certificate another CA signed.

use std::path::Path;
use std::time::{Duration, Instant};

use factory::batch::provision_to_dir;
use factory::ca::DeviceCa;
use factory::ledger::{Ledger, Status, MANIFEST};
use factory::Serial;
use hub::broker::{free_port, Broker};
use hub::pki::Pki;
use mqtt::{Client, Event, Options};

/// Polls until the client connects (`Ok`) or fails (`Err`).
fn first_outcome(dir: &Path, id: &str, port: u16) -> Result<(), String> {
    let tls = mqtt::Identity::in_dir(dir).client_config(false).unwrap();
    let mut o = Options::new("127.0.0.1", port, id, tls).keep_alive(30);
    o.timeout = Duration::from_secs(10);
    let mut c = Client::new(o);
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        match c.poll(Duration::from_millis(200)) {
            Some(Event::Connected { .. }) => return Ok(()),
            Some(Event::Disconnected { error, .. }) => return Err(error.to_string()),
            _ => {}
        }
    }
    Err("no outcome within a minute".into())
}

#[test]
fn the_broker_accepts_the_device_ca_and_refuses_another() {
    let d = tempfile::tempdir().unwrap();
    let hub_pki = Pki::open_or_create(&d.path().join("hub-pki"), "broker CA").unwrap();
    let ca = DeviceCa::create(&d.path().join("acme")).unwrap();
    let stranger = DeviceCa::create(&d.path().join("stranger")).unwrap();
    let port = free_port().unwrap();
    let _broker = Broker::start_with_client_cas(
        &d.path().join("broker"),
        "127.0.0.1",
        port,
        &hub_pki,
        &["127.0.0.1", "localhost"],
        &[&ca.dir.join("ca.pem")],
    )
    .expect("mosquitto (apt-get install mosquitto)");
    let server_ca = std::fs::read(hub_pki.ca_pem()).unwrap();

    let mut ledger = Ledger::open(&ca.dir.join(MANIFEST)).unwrap();
    let serial = Serial::parse("ACME-0100").unwrap();
    let out = d.path().join("ACME-0100");
    provision_to_dir(&ca, &mut ledger, &serial, &out, Some(&server_ca)).unwrap();
    assert_eq!(ledger.status(&serial), Some(Status::Issued));
    first_outcome(&out, "ACME-0100", port).expect("the device CA's identity connects");

    let mut other = Ledger::open(&stranger.dir.join(MANIFEST)).unwrap();
    let out2 = d.path().join("intruder");
    provision_to_dir(
        &stranger,
        &mut other,
        &Serial::parse("ACME-0100").unwrap(),
        &out2,
        Some(&server_ca),
    )
    .unwrap();
    let err = first_outcome(&out2, "ACME-0100", port).unwrap_err();
    assert!(
        err.contains("TLS") || err.contains("closed") || err.contains("lost"),
        "{err}"
    );

    // provision refuses to reuse the serial or overwrite an identity.
    let e = provision_to_dir(&ca, &mut ledger, &serial, &d.path().join("x"), None).unwrap_err();
    assert!(e.to_string().contains("never issued twice"), "{e}");
    let e = provision_to_dir(
        &ca,
        &mut ledger,
        &Serial::parse("ACME-0101").unwrap(),
        &out,
        None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("refusing to overwrite"), "{e}");
    assert_eq!(
        ledger.status(&Serial::parse("ACME-0101").unwrap()),
        None,
        "nothing issued"
    );
}
