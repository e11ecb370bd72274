//! A local hub "site": one directory holding the development CA, the
//! broker's configuration, the bundles served, the groups and the hub's
//! state, plus the operations the `hub` binary and `cargo xtask hub` offer
//! on it. Flags are parsed by the callers; the policy is here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::{self, ApiError};
use crate::broker::{Broker, BrokerError};
use crate::files::{FileServer, FileServerError};
use crate::pki::{Pki, PkiError, HUB_CN};
use crate::provisioning::{Provisioner, DEFAULT_TEMPLATE};
use crate::service::HubError;
use crate::Hub;

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Files(#[from] FileServerError),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the hub's identity: {0}")]
    Tls(#[from] mqtt::TlsError),
    #[error("{path}: {detail}")]
    Groups { path: PathBuf, detail: String },
    #[error("unknown group {0:?}: define it with `hub group {0} THING…`")]
    NoGroup(String),
    #[error("name a thing (--thing) or a group (--group)")]
    NoTarget,
    #[error("'{0}' is not KEY=VALUE")]
    NotKeyValue(String),
}

#[derive(Debug, Clone)]
pub struct Site {
    pub dir: PathBuf,
    /// Where the broker and file server listen.
    pub bind: String,
    /// The name or address devices use to reach this host (goes into the
    /// server certificate and the bundle URLs). QEMU's user network
    /// reaches the host as 10.0.2.2.
    pub host: String,
    pub broker_port: u16,
    pub files_port: u16,
}

impl Site {
    pub fn pki(&self) -> Result<Pki, PkiError> {
        Pki::open_or_create(&self.dir.join("pki"), "Keel hub development CA")
    }

    fn names(&self) -> Vec<&str> {
        let mut n = vec!["localhost", "127.0.0.1", "10.0.2.2"];
        if !n.contains(&self.host.as_str()) {
            n.push(&self.host);
        }
        n
    }

    /// The hub's own MQTT options (its certificate's CN is [`HUB_CN`]).
    pub fn hub_options(&self, client_id: &str) -> Result<mqtt::Options, SiteError> {
        let pki = self.pki()?;
        let dir = pki.dir.join("things").join(HUB_CN);
        if !dir.join("device.pem").exists() {
            pki.client(HUB_CN)?;
        }
        let tls = mqtt::Identity::in_dir(&dir).client_config(false)?;
        let mut o =
            mqtt::Options::new("127.0.0.1", self.broker_port, client_id, tls).keep_alive(60);
        o.backoff = mqtt::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        o.clock_floor = std::time::UNIX_EPOCH;
        Ok(o)
    }

    pub fn files_dir(&self) -> PathBuf {
        self.dir.join("files")
    }

    /// Starts mosquitto and the file server; returns them running.
    pub fn start_servers(&self) -> Result<(Broker, FileServer), SiteError> {
        let pki = self.pki()?;
        let (cert, key) = pki.server(&self.names())?;
        let broker = Broker::start(
            &self.dir.join("broker"),
            &self.bind,
            self.broker_port,
            &pki,
            &self.names(),
        )?;
        let files = FileServer::start(&self.bind, self.files_port, &self.files_dir(), &cert, &key)?;
        Ok((broker, files))
    }

    /// Runs mosquitto, the file server and the hub until `stop` is set.
    pub fn serve(&self, stop: &AtomicBool, log: &mut dyn FnMut(&str)) -> Result<(), SiteError> {
        let (_broker, files) = self.start_servers()?;
        log(&format!(
            "hub: broker on mqtts://{}:{} (client certificates from {}), bundles on https://{}:{}/",
            self.host,
            self.broker_port,
            self.pki()?.ca_pem().display(),
            self.host,
            files.port()
        ));
        let mut hub = Hub::open(&self.dir)?;
        hub.enable_provisioning(self.provisioner()?);
        let mut client = mqtt::Client::new(self.hub_options(HUB_CN)?);
        hub.run(&mut client, stop, log);
        Ok(())
    }

    /// Fleet provisioning by claim with this site's CA and the default
    /// template ([`crate::provisioning::DEFAULT_TEMPLATE`]).
    pub fn provisioner(&self) -> Result<Provisioner, SiteError> {
        Ok(Provisioner {
            pki: self.pki()?,
            templates: vec![DEFAULT_TEMPLATE.to_string()],
        })
    }

    /// The claim certificate for fleet provisioning by claim; returns its
    /// directory (`claim.pem` and `claim.key` for the card's
    /// /data/keel/claim/, `ca.pem` for /data/keel/identity/).
    pub fn claim(&self) -> Result<PathBuf, SiteError> {
        Ok(self.pki()?.claim()?)
    }

    /// The `fleet.toml` a device provisioning itself by claim needs.
    pub fn claim_fleet_toml(&self, serial: Option<&str>) -> String {
        let mut t = format!(
            "{}\n[provisioning]\ntemplate = \"{DEFAULT_TEMPLATE}\"\n",
            self.fleet_toml()
        );
        match serial {
            Some(s) => t.push_str(&format!("serial_number = \"{s}\"\n")),
            None => t.push_str("# serial_number defaults to the board's (the Pi's SoC serial)\n"),
        }
        t
    }

    /// Makes a device identity for `thing`; returns its directory (copy
    /// it to the device's /data/keel/identity/).
    pub fn add_thing(&self, thing: &str) -> Result<PathBuf, SiteError> {
        Ok(self.pki()?.client(thing)?)
    }

    /// The `fleet.toml` a device of this site needs.
    pub fn fleet_toml(&self) -> String {
        format!(
            "[mqtt]\nendpoint = \"{}\"\nport = {}\n# thing_name defaults to the certificate's CN\n",
            self.host, self.broker_port
        )
    }

    fn groups_path(&self) -> PathBuf {
        self.dir.join("groups.json")
    }

    pub fn groups(&self) -> Result<BTreeMap<String, Vec<String>>, SiteError> {
        let path = self.groups_path();
        let err = |detail: String| SiteError::Groups {
            path: path.clone(),
            detail,
        };
        match durable::read(&path, 1 << 20).map_err(|e| err(e.to_string()))? {
            None => Ok(BTreeMap::new()),
            Some(b) => serde_json::from_slice(&b).map_err(|e| err(e.to_string())),
        }
    }

    pub fn set_group(&self, name: &str, things: &[String]) -> Result<(), SiteError> {
        let mut g = self.groups()?;
        g.insert(name.to_string(), things.to_vec());
        let path = self.groups_path();
        let bytes = serde_json::to_vec_pretty(&g).map_err(|e| SiteError::Groups {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        durable::create_dir_all(&self.dir)
            .and_then(|()| durable::replace(&path, &bytes, 0o644))
            .map_err(|e| SiteError::Groups {
                path,
                detail: e.to_string(),
            })
    }

    fn call(&self, op: &str, request: Value) -> Result<Value, SiteError> {
        let id = format!("keel-hub-cli-{}", std::process::id());
        Ok(api::call(
            self.hub_options(&id)?,
            op,
            request,
            Duration::from_secs(15),
        )?)
    }

    /// Every device the hub knows, with shadow, online state and jobs.
    pub fn devices(&self) -> Result<Value, SiteError> {
        self.call("list", json!({}))
    }

    /// `KEY=VALUE` arguments as a desired state; VALUE is JSON, or else
    /// taken as a string (`update_channel=beta`, `telemetry_interval_secs=60`).
    pub fn desired_from_args(args: &[String]) -> Result<Value, SiteError> {
        let mut desired = serde_json::Map::new();
        for a in args {
            let (k, v) = a
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| SiteError::NotKeyValue(a.clone()))?;
            let value = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
            desired.insert(k.to_string(), value);
        }
        Ok(Value::Object(desired))
    }

    /// Sets desired shadow state for a thing.
    pub fn desire(&self, thing: &str, desired: Value) -> Result<Value, SiteError> {
        self.call("desire", json!({ "thing": thing, "desired": desired }))
    }

    /// Creates an update job from a built bundle for things and groups.
    pub fn update_job(
        &self,
        things: &[String],
        groups: &[String],
        bundle: &Path,
        job_id: Option<&str>,
    ) -> Result<Value, SiteError> {
        let mut targets: Vec<String> = things.to_vec();
        let all = self.groups()?;
        for g in groups {
            targets.extend(
                all.get(g)
                    .ok_or_else(|| SiteError::NoGroup(g.clone()))?
                    .iter()
                    .cloned(),
            );
        }
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            return Err(SiteError::NoTarget);
        }
        let base = format!("https://{}:{}", self.host, self.files_port);
        let document = api::publish_bundle(bundle, &self.files_dir(), &base)?;
        let id = match job_id {
            Some(id) => id.to_string(),
            None => format!("update-{}", crate::now()),
        };
        self.call(
            "create-job",
            json!({ "jobId": id, "targets": targets, "document": document }),
        )
    }
}
