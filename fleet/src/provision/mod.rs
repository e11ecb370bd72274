//! Fleet provisioning by claim: a device whose card carries only a claim
//! certificate (the same for a whole batch) makes its own key, has the
//! cloud sign a certificate for it, registers as a thing, stores what it
//! got in the identity directory, and from then on connects with that.
//! The private key is made on the device and never leaves it.
//!
//! The agent calls [`ensure_identity`] before it starts the fleet client:
//!
//! ```no_run
//! # use std::path::Path; use std::sync::atomic::AtomicBool;
//! # let stop = AtomicBool::new(false);
//! let mut log = fleet::Log::stderr(fleet::Level::Info);
//! if let Ok(Some(config)) = fleet::Config::load(Path::new("/")) {
//!     match fleet::provision::ensure_identity(Path::new("/"), &config, &Default::default(), &mut log, &stop) {
//!         Ok(id) => { /* fleet::Runner::new(config, …) connects as id.thing_name */ }
//!         Err(e) => log.error(e),
//!     }
//! }
//! ```
//!
//! The exchange itself is [`exchange`], a pure state machine.

pub mod exchange;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use keel_contract::paths;
use mqtt::{Event, QoS};

use crate::config::{Config, ProvisioningConfig};
use crate::csr::{DeviceKey, KeyError};
use crate::identity;
use crate::log::Log;
use exchange::{Exchange, ExchangeError, Next, Provisioned};

/// Private keys and certificates are small; anything larger is not one.
const MAX_PEM: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("no device identity ({certificate} is missing) and no [provisioning] section in the fleet configuration: burn the card with `cargo xtask burn --serial`, or configure provisioning by claim (docs/fleet.md)")]
    NoIdentity { certificate: PathBuf },
    #[error("the device identity cannot be used: {0}")]
    Identity(#[source] mqtt::TlsError),
    #[error("the claim certificate cannot be used: {0}; burn the card with `--claim DIR` (docs/manufacturing.md)")]
    Claim(#[source] mqtt::TlsError),
    #[error("the claim certificate: {0}")]
    ClaimCertificate(#[from] identity::CertError),
    #[error("cannot read the board's serial number from {path}: {detail}; set provisioning.serial_number in fleet.toml")]
    Serial { path: PathBuf, detail: String },
    #[error("the serial number: {0}")]
    BadSerial(String),
    #[error("the device key: {0}")]
    Key(#[from] KeyError),
    #[error("cannot store {path}: {source}")]
    Store {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}; retrying with backoff")]
    Connection(mqtt::SessionError),
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    #[error("no answer to {0} within {1:?}; retrying with backoff")]
    Timeout(&'static str, Duration),
    #[error("stopped before the device was provisioned")]
    Stopped,
}

impl ProvisionError {
    /// Worth trying again later (the network, the broker, the cloud's
    /// answer), as opposed to a configuration or card the device cannot
    /// fix by waiting.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProvisionError::Connection(_)
                | ProvisionError::Timeout(..)
                | ProvisionError::Exchange(_)
        )
    }
}

/// The identity the fleet client connects with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub files: mqtt::Identity,
    /// The thing name the cloud gave at provisioning (stored beside the
    /// certificate); `None`: the certificate's CN, or the configuration's.
    pub thing_name: Option<String>,
    /// Provisioned by this call (rather than found on the card).
    pub provisioned_now: bool,
}

/// Timing of [`ensure_identity`]; the defaults suit a device.
#[derive(Debug, Clone)]
pub struct ProvisionOptions {
    /// How long one attempt (connect, both requests) may take.
    pub attempt_timeout: Duration,
    /// Between failed attempts: 5 s doubling to 10 min, with jitter, so a
    /// batch switched on together does not come back in step.
    pub retry: mqtt::Backoff,
}

impl Default for ProvisionOptions {
    fn default() -> Self {
        ProvisionOptions {
            attempt_timeout: Duration::from_secs(60),
            retry: mqtt::Backoff::new(Duration::from_secs(5), Duration::from_secs(600)),
        }
    }
}

/// The stored thing name beside `identity`'s certificate, if any.
pub fn stored_thing_name(identity: &mqtt::Identity) -> Option<String> {
    let path = identity
        .certificate
        .with_file_name(paths::IDENTITY_THING_NAME);
    let text = durable::read_to_string(&path, 256).ok()??;
    let name = text.trim();
    crate::config::check_thing_name(name).ok()?;
    Some(name.to_string())
}

/// The device's identity: the one on the card if there is one, else one
/// obtained by fleet provisioning by claim, retried with backoff (a first
/// boot may have no network yet) until it succeeds or `stop` is set.
/// Errors the device cannot fix by waiting (no identity and no claim, a
/// broken identity, an unreadable serial) are returned at once.
pub fn ensure_identity(
    root: &Path,
    config: &Config,
    options: &ProvisionOptions,
    log: &mut Log,
    stop: &AtomicBool,
) -> Result<DeviceIdentity, ProvisionError> {
    let files = config.identity.clone();
    if files.certificate.symlink_metadata().is_ok() {
        // A certificate is there: use it, never replace it. A broken one is
        // an error to report, not a reason to provision over it.
        files
            .client_config(false)
            .map_err(ProvisionError::Identity)?;
        return Ok(DeviceIdentity {
            thing_name: stored_thing_name(&files),
            files,
            provisioned_now: false,
        });
    }
    let Some(p) = &config.provisioning else {
        return Err(ProvisionError::NoIdentity {
            certificate: files.certificate,
        });
    };
    let serial = serial_number(p)?;
    let key = device_key(&files)?;
    let mut retry = options.retry.clone();
    loop {
        match provision_once(
            root,
            config,
            p,
            &key,
            &serial,
            options.attempt_timeout,
            log,
            stop,
        ) {
            Ok(got) => {
                store(&files, &got)?;
                log.info(format_args!(
                    "provisioned by claim: thing {}, certificate {}",
                    got.thing_name, got.certificate_id
                ));
                return Ok(DeviceIdentity {
                    files,
                    thing_name: Some(got.thing_name),
                    provisioned_now: true,
                });
            }
            Err(e) if e.is_transient() && !stop.load(Ordering::Relaxed) => {
                let wait = retry.next_delay();
                log.warn(format_args!(
                    "provisioning by claim: {e} (next attempt in {} s)",
                    wait.as_secs()
                ));
                sleep_unless_stopped(wait, stop);
            }
            Err(e) => return Err(e),
        }
        if stop.load(Ordering::Relaxed) {
            return Err(ProvisionError::Stopped);
        }
    }
}

fn sleep_unless_stopped(wait: Duration, stop: &AtomicBool) {
    let until = Instant::now() + wait;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(200)));
    }
}

/// The configured serial, else the board's (the Pi's firmware puts the
/// SoC serial in the device tree, NUL-terminated).
fn serial_number(p: &ProvisioningConfig) -> Result<String, ProvisionError> {
    if let Some(s) = &p.serial_number {
        return Ok(s.clone());
    }
    let err = |detail: String| ProvisionError::Serial {
        path: p.serial_file.clone(),
        detail,
    };
    let bytes = std::fs::read(&p.serial_file).map_err(|e| err(e.to_string()))?;
    let text = String::from_utf8_lossy(&bytes);
    let serial = text.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    crate::config::check_thing_name(serial).map_err(ProvisionError::BadSerial)?;
    Ok(serial.to_string())
}

fn store_err(path: &Path) -> impl FnOnce(std::io::Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Store {
        path: path.to_path_buf(),
        source,
    }
}

/// The key of an interrupted provisioning if one is stored (so a retry
/// asks for a certificate for the same key), else a new one, stored
/// (0600) before anything is sent.
fn device_key(files: &mqtt::Identity) -> Result<DeviceKey, ProvisionError> {
    let path = &files.private_key;
    if let Ok(Some(pem)) = durable::read(path, MAX_PEM) {
        if let Ok(key) = DeviceKey::from_pem(&pem) {
            return Ok(key);
        }
    }
    let key = DeviceKey::generate()?;
    if let Some(dir) = path.parent() {
        durable::create_dir_all(dir).map_err(store_err(dir))?;
    }
    durable::replace(path, key.to_pem().as_bytes(), 0o600).map_err(store_err(path))?;
    Ok(key)
}

/// Stores the thing name, then the certificate: a certificate present
/// means the identity is complete.
fn store(files: &mqtt::Identity, got: &Provisioned) -> Result<(), ProvisionError> {
    let name_path = files.certificate.with_file_name(paths::IDENTITY_THING_NAME);
    durable::replace(
        &name_path,
        format!("{}\n", got.thing_name).as_bytes(),
        0o644,
    )
    .map_err(store_err(&name_path))?;
    durable::replace(&files.certificate, got.certificate_pem.as_bytes(), 0o644)
        .map_err(store_err(&files.certificate))?;
    // The identity must load now, or it is not worth keeping.
    if let Err(e) = files.client_config(false) {
        let _ = durable::remove(&files.certificate);
        return Err(ProvisionError::Identity(e));
    }
    Ok(())
}

/// One attempt: connect with the claim certificate, ask for a certificate,
/// register. Nothing is stored here.
#[allow(clippy::too_many_arguments)]
pub fn provision_once(
    root: &Path,
    config: &Config,
    p: &ProvisioningConfig,
    key: &DeviceKey,
    serial: &str,
    timeout: Duration,
    log: &mut Log,
    stop: &AtomicBool,
) -> Result<Provisioned, ProvisionError> {
    let Some(m) = &config.mqtt else {
        // Config::from_raw refuses [provisioning] without [mqtt].
        return Err(ProvisionError::NoIdentity {
            certificate: config.identity.certificate.clone(),
        });
    };
    let tls = p
        .claim
        .client_config(m.port == 443)
        .map_err(ProvisionError::Claim)?;
    let claim = identity::inspect(&p.claim.leaf_certificate().map_err(ProvisionError::Claim)?)?;
    // The serial is the client id: unique per device, as AWS wants, and
    // what a claim policy can be written against.
    let mut opts = mqtt::Options::new(&m.endpoint, m.port, serial, tls).keep_alive(60);
    opts.clock_floor = crate::runner::floor(Some(claim.not_before), root);
    opts.timeout = timeout.min(Duration::from_secs(20));
    let csr = key.csr_pem(serial)?;
    let (mut ex, first) = Exchange::start(key.public_key(), &csr, serial, &p.template);
    let mut client = mqtt::Client::new(opts);
    client.subscribe(
        &ex.filters()
            .iter()
            .map(|f| (f.as_str(), QoS::AtLeastOnce))
            .collect::<Vec<_>>(),
    );
    log.info(format_args!(
        "provisioning by claim as {serial} with template {} at {}:{}",
        p.template, m.endpoint, m.port
    ));
    let deadline = Instant::now() + timeout;
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Err(ProvisionError::Stopped);
        }
        let now = Instant::now();
        if now >= deadline {
            break Err(ProvisionError::Timeout(ex.awaiting(), timeout));
        }
        match client.poll((deadline - now).min(Duration::from_millis(500))) {
            None => {}
            Some(Event::Connected { refused }) => {
                if !refused.is_empty() {
                    log.warn(format_args!(
                        "the broker refused the subscriptions {refused:?}; the claim certificate's policy must allow them"
                    ));
                }
                if let Err(e) =
                    client.publish(&first.topic, &first.payload, QoS::AtLeastOnce, false)
                {
                    log.warn(e);
                }
            }
            Some(Event::Disconnected { error, .. }) => {
                break Err(ProvisionError::Connection(error))
            }
            Some(Event::Message(msg)) => match ex.on_message(&msg.topic, &msg.payload)? {
                Next::Ignore => {}
                Next::Send(out) => {
                    if let Err(e) =
                        client.publish(&out.topic, &out.payload, QoS::AtLeastOnce, false)
                    {
                        log.warn(e);
                    }
                }
                Next::Done(got) => break Ok(got),
            },
        }
    };
    client.disconnect();
    result
}
