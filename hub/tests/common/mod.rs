//! What the broker-level tests share: a development CA, mosquitto on a
//! free loopback port with TLS, client certificates and the per-thing ACL,
//! the HTTPS file server, the hub serving in a thread, and clients.
//! Everything stops when the [`Env`] is dropped.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hub::broker::{free_port, Broker};
use hub::files::FileServer;
use hub::site::Site;
use mqtt::{Client, Event, Options};
use serde_json::Value;

/// Generous: a loaded CI machine must not fail a test by being slow.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct Env {
    pub dir: tempfile::TempDir,
    pub site: Site,
    pub broker: Broker,
    pub files: FileServer,
    hub_stop: Arc<AtomicBool>,
    hub_thread: Option<JoinHandle<()>>,
    pub hub_log: Arc<Mutex<Vec<String>>>,
}

impl Env {
    /// mosquitto and the file server, without the hub.
    pub fn broker_only() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let site = Site {
            dir: dir.path().join("hub"),
            bind: "127.0.0.1".into(),
            host: "127.0.0.1".into(),
            broker_port: free_port().unwrap(),
            files_port: free_port().unwrap(),
        };
        let (broker, files) = site
            .start_servers()
            .expect("start mosquitto and the file server");
        Env {
            dir,
            site,
            broker,
            files,
            hub_stop: Arc::new(AtomicBool::new(false)),
            hub_thread: None,
            hub_log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// mosquitto, the file server and the hub.
    pub fn with_hub() -> Env {
        let mut env = Env::broker_only();
        let (stop, log) = (env.hub_stop.clone(), env.hub_log.clone());
        let site = env.site.clone();
        let mut client = Client::new(site.hub_options(hub::pki::HUB_CN).unwrap());
        let mut hub = hub::Hub::open(&site.dir).unwrap();
        hub.enable_provisioning(site.provisioner().unwrap());
        env.hub_thread = Some(std::thread::spawn(move || {
            hub.run(&mut client, &stop, &mut |l| {
                if let Ok(mut v) = log.lock() {
                    v.push(l.to_string());
                }
            });
        }));
        // The hub is subscribed once it said so.
        env.wait_for("the hub to connect", || {
            env.hub_log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("connected to the broker"))
        });
        env
    }

    pub fn pki(&self) -> hub::pki::Pki {
        self.site.pki().unwrap()
    }

    /// A device identity directory for `thing` from the hub's CA.
    pub fn identity(&self, thing: &str) -> PathBuf {
        self.site.add_thing(thing).unwrap()
    }

    /// Options for a client with the identity in `dir`, on the broker.
    pub fn options(&self, dir: &Path, client_id: &str, alpn: bool) -> Options {
        options(dir, client_id, self.site.broker_port, alpn)
    }

    pub fn wait_for(&self, what: &str, mut done: impl FnMut() -> bool) {
        let end = Instant::now() + DEADLINE;
        while Instant::now() < end {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for {what}; broker log:\n{}",
            self.broker.log()
        );
    }

    /// The hub's view of every device (through its API).
    pub fn devices(&self) -> Value {
        self.site.devices().expect("hub API list")
    }

    /// The hub's entry for `thing`; `None` also while the hub is
    /// unreachable (it reconnects after a broker restart).
    pub fn thing(&self, thing: &str) -> Option<Value> {
        self.site.devices().ok()?["things"]
            .as_array()?
            .iter()
            .find(|t| t["thing"] == thing)
            .cloned()
    }

    /// Polls the hub until `f` holds for the thing's entry.
    pub fn wait_thing(&self, thing: &str, what: &str, mut f: impl FnMut(&Value) -> bool) -> Value {
        let end = Instant::now() + DEADLINE;
        let mut last = None;
        while Instant::now() < end {
            if let Some(t) = self.thing(thing) {
                if f(&t) {
                    return t;
                }
                last = Some(t);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "timed out waiting for {what}; the hub has {last:#?}\nhub log: {:#?}",
            self.hub_log.lock().unwrap()
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.hub_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.hub_thread.take() {
            let _ = t.join();
        }
    }
}

pub fn options(dir: &Path, client_id: &str, port: u16, alpn: bool) -> Options {
    let tls = mqtt::Identity::in_dir(dir).client_config(alpn).unwrap();
    let mut o = Options::new("127.0.0.1", port, client_id, tls).keep_alive(30);
    o.timeout = Duration::from_secs(10);
    o.backoff = mqtt::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    o
}

/// Polls `client` until `pick` accepts an event; panics at the deadline.
pub fn wait_event<T>(
    client: &mut Client,
    what: &str,
    mut pick: impl FnMut(Event) -> Option<T>,
) -> T {
    let end = Instant::now() + DEADLINE;
    while Instant::now() < end {
        if let Some(e) = client.poll(Duration::from_millis(200)) {
            if let Some(t) = pick(e) {
                return t;
            }
        }
    }
    panic!("timed out waiting for {what}");
}

pub fn connected(client: &mut Client) -> Vec<String> {
    wait_event(client, "a connection", |e| match e {
        Event::Connected { refused } => Some(refused),
        Event::Disconnected { error, .. } => {
            eprintln!("(not yet: {error})");
            None
        }
        Event::Message(_) => None,
    })
}

/// A TLS server on loopback run by the test: `script` gets each
/// connection (already past the handshake) and its number.
pub fn fake_broker(
    env: &Env,
    script: impl Fn(usize, &mut dyn ReadWrite) + Send + Sync + 'static,
) -> (u16, Arc<AtomicUsize>) {
    let pki = env.pki();
    let config = hub::files::server_config(
        &pki.dir.join("server.pem"),
        &pki.dir.join("server.key"),
        &[],
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    let script = Arc::new(script);
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let (config, script) = (config.clone(), script.clone());
            std::thread::spawn(move || {
                tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                script(n, &mut tls);
            });
        }
    });
    (port, count)
}

pub trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Reads the client's CONNECT (any bytes will do for these fakes).
pub fn read_connect(s: &mut dyn ReadWrite) {
    let mut buf = [0u8; 512];
    let _ = s.read(&mut buf);
}

pub const CONNACK: &[u8] = &[0x20, 2, 0, 0];
