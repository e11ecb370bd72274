//! The fleet client's configuration: `/etc/keel/fleet.toml` in the root
//! filesystem, overridden key by key by `/data/keel/fleet.toml`. The
//! schema is in docs/fleet.md; unknown keys are errors, so a typo is
//! reported instead of silently ignored.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_contract::paths;
use serde::Deserialize;

use crate::device::Settings;
use crate::log::Level;

/// Configuration files are small; anything larger is not one.
const MAX_CONF: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {detail} (schema: docs/fleet.md)")]
    Invalid { path: String, detail: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    mqtt: RawMqtt,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    settings: RawSettings,
    #[serde(default)]
    polling: RawPolling,
    #[serde(default)]
    provisioning: RawProvisioning,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    endpoint: Option<String>,
    port: Option<u16>,
    thing_name: Option<String>,
    keepalive_secs: Option<u64>,
    presence_topic: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    dir: Option<PathBuf>,
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
    ca_bundle: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    update_channel: Option<String>,
    telemetry_interval_secs: Option<u64>,
    log_level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvisioning {
    template: Option<String>,
    claim_certificate: Option<PathBuf>,
    claim_private_key: Option<PathBuf>,
    serial_number: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolling {
    manifest_url: Option<String>,
    interval_secs: Option<u64>,
}

/// The MQTT side; absent when no endpoint is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    pub endpoint: String,
    /// 8883, or 443 (ALPN `x-amzn-mqtt-ca`).
    pub port: u16,
    /// `None`: the device certificate's CN.
    pub thing_name: Option<String>,
    pub keepalive_secs: u64,
    /// Where the device says it is online and the last will says it is
    /// not; `{thing}` is replaced. Empty: no presence messages.
    pub presence_topic: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollingConfig {
    /// `{channel}` is replaced by the update channel.
    pub manifest_url: String,
    pub interval: Duration,
}

/// Fleet provisioning by claim (docs/fleet.md): how a device without an
/// identity of its own obtains one on first boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningConfig {
    /// The fleet provisioning template's name (AWS: 1–36 of
    /// `[A-Za-z0-9_-]`).
    pub template: String,
    /// The claim certificate and key, with the identity's CA bundle for
    /// the broker.
    pub claim: mqtt::Identity,
    /// The serial number sent as the template's `SerialNumber` parameter;
    /// `None`: read from [`ProvisioningConfig::serial_file`].
    pub serial_number: Option<String>,
    /// The board's serial number file (the Pi's device tree).
    pub serial_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub mqtt: Option<MqttConfig>,
    pub identity: mqtt::Identity,
    /// Where the fleet client keeps its state (job, owed statuses).
    pub state_dir: PathBuf,
    /// The settings before the cloud changes any.
    pub settings: Settings,
    pub polling: Option<PollingConfig>,
    /// `None`: the identity comes from manufacturing only.
    pub provisioning: Option<ProvisioningConfig>,
}

/// Telemetry intervals outside this range are refused (seconds).
pub const TELEMETRY_RANGE: (u64, u64) = (10, 86_400);
/// Polling intervals outside this range are refused (seconds).
pub const POLL_RANGE: (u64, u64) = (60, 30 * 86_400);

/// Reads and parses one file; `Ok(None)` if it does not exist. Each file
/// must be valid on its own (an error names the file it is in).
fn read(path: &Path) -> Result<Option<Raw>, ConfigError> {
    let text = durable::read_to_string(path, MAX_CONF).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.map(|t| {
        basic_toml::from_str::<Raw>(&t).map_err(|e| ConfigError::Invalid {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
    })
    .transpose()
}

/// Every key `over` sets wins over `base`'s.
macro_rules! overlay {
    ($base:expr, $over:expr; $($table:ident { $($key:ident),* })*) => {
        $($( if $over.$table.$key.is_some() { $base.$table.$key = $over.$table.$key; } )*)*
    };
}

impl Raw {
    fn overlay(mut self, over: Raw) -> Raw {
        overlay!(self, over;
            mqtt { endpoint, port, thing_name, keepalive_secs, presence_topic }
            identity { dir, certificate, private_key, ca_bundle }
            settings { update_channel, telemetry_interval_secs, log_level }
            polling { manifest_url, interval_secs }
            provisioning { template, claim_certificate, claim_private_key, serial_number });
        self
    }
}

impl Config {
    /// Reads the configuration under `root` ("/" on the device). `Ok(None)`
    /// when neither file exists: the fleet client is not wanted.
    pub fn load(root: &Path) -> Result<Option<Config>, ConfigError> {
        let base_path = paths::under(root, paths::FLEET_CONF);
        let over_path = paths::under(root, paths::FLEET_CONF_OVERRIDE);
        let (base, over) = (read(&base_path)?, read(&over_path)?);
        let shown = format!("{} + {}", base_path.display(), over_path.display());
        let raw = match (base, over) {
            (None, None) => return Ok(None),
            (Some(b), None) => b,
            (None, Some(o)) => o,
            (Some(b), Some(o)) => b.overlay(o),
        };
        Config::from_raw(raw, root)
            .map(Some)
            .map_err(|detail| ConfigError::Invalid {
                path: shown,
                detail,
            })
    }

    /// Parses one TOML text as the whole configuration (tests, docs).
    pub fn parse(text: &str, root: &Path) -> Result<Config, ConfigError> {
        let invalid = |detail: String| ConfigError::Invalid {
            path: "the configuration".into(),
            detail,
        };
        let raw: Raw = basic_toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        Config::from_raw(raw, root).map_err(invalid)
    }

    fn from_raw(raw: Raw, root: &Path) -> Result<Config, String> {
        let mqtt = match raw.mqtt.endpoint {
            None => None,
            Some(endpoint) if endpoint.trim().is_empty() => {
                return Err("mqtt.endpoint is empty".into())
            }
            Some(endpoint) => {
                let keepalive_secs = raw.mqtt.keepalive_secs.unwrap_or(300);
                let (lo, hi) = mqtt::client::KEEP_ALIVE_RANGE;
                if !(lo..=hi).contains(&keepalive_secs) {
                    return Err(format!(
                        "mqtt.keepalive_secs = {keepalive_secs}: AWS IoT Core accepts {lo} to {hi}"
                    ));
                }
                if let Some(t) = &raw.mqtt.thing_name {
                    check_thing_name(t)?;
                }
                Some(MqttConfig {
                    endpoint,
                    port: raw.mqtt.port.unwrap_or(8883),
                    thing_name: raw.mqtt.thing_name,
                    keepalive_secs,
                    presence_topic: raw
                        .mqtt
                        .presence_topic
                        .unwrap_or_else(|| "keel/things/{thing}/presence".into()),
                })
            }
        };
        let dir = raw
            .identity
            .dir
            .unwrap_or_else(|| paths::under(root, paths::IDENTITY_DIR));
        let defaults = mqtt::Identity::in_dir(&dir);
        let identity = mqtt::Identity {
            certificate: raw.identity.certificate.unwrap_or(defaults.certificate),
            private_key: raw.identity.private_key.unwrap_or(defaults.private_key),
            ca_bundle: raw.identity.ca_bundle.unwrap_or(defaults.ca_bundle),
        };
        let mut settings = Settings {
            update_channel: "stable".into(),
            telemetry_interval: Duration::from_secs(300),
            log_level: Level::Info,
        };
        if let Some(c) = raw.settings.update_channel {
            settings.update_channel = check_channel(&c)?;
        }
        if let Some(s) = raw.settings.telemetry_interval_secs {
            settings.telemetry_interval = check_telemetry(s)?;
        }
        if let Some(l) = raw.settings.log_level {
            settings.log_level = Level::parse(&l).ok_or_else(|| {
                format!("settings.log_level = {l:?}: use one of {}", Level::NAMES)
            })?;
        }
        let polling = match raw.polling.manifest_url {
            None => None,
            Some(url) => {
                let secs = raw.polling.interval_secs.unwrap_or(3600);
                if !(POLL_RANGE.0..=POLL_RANGE.1).contains(&secs) {
                    return Err(format!(
                        "polling.interval_secs = {secs}: use {} to {}",
                        POLL_RANGE.0, POLL_RANGE.1
                    ));
                }
                net::Url::parse(&url.replace("{channel}", "stable"))
                    .map_err(|e| format!("polling.manifest_url: {e}"))?;
                Some(PollingConfig {
                    manifest_url: url,
                    interval: Duration::from_secs(secs),
                })
            }
        };
        let p = raw.provisioning;
        let provisioning = match p.template {
            None if p.claim_certificate.is_some()
                || p.claim_private_key.is_some()
                || p.serial_number.is_some() =>
            {
                return Err("provisioning.template is missing: name the fleet provisioning template the claim certificate may use".into())
            }
            None => None,
            Some(template) => {
                check_template_name(&template)?;
                if mqtt.is_none() {
                    return Err("[provisioning] needs [mqtt] endpoint: provisioning by claim talks to the broker".into());
                }
                if let Some(s) = &p.serial_number {
                    check_thing_name(s).map_err(|e| format!("provisioning.serial_number: {e}"))?;
                }
                let claim_dir = paths::under(root, paths::CLAIM_DIR);
                Some(ProvisioningConfig {
                    template,
                    claim: mqtt::Identity {
                        certificate: p
                            .claim_certificate
                            .unwrap_or_else(|| claim_dir.join(paths::CLAIM_CERTIFICATE)),
                        private_key: p
                            .claim_private_key
                            .unwrap_or_else(|| claim_dir.join(paths::CLAIM_KEY)),
                        ca_bundle: identity.ca_bundle.clone(),
                    },
                    serial_number: p.serial_number,
                    serial_file: paths::under(root, paths::BOARD_SERIAL),
                })
            }
        };
        Ok(Config {
            mqtt,
            identity,
            state_dir: paths::under(root, paths::FLEET_STATE_DIR),
            settings,
            polling,
            provisioning,
        })
    }
}

/// AWS thing names: 1–128 of `[a-zA-Z0-9:_-]`. They go into topics, so
/// `/`, `+`, `#` would change what a topic means.
pub fn check_thing_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_-".contains(&b))
    {
        return Err(format!(
            "thing name {name:?}: AWS IoT allows 1 to 128 letters, digits, ':', '_' and '-'"
        ));
    }
    Ok(())
}

/// AWS fleet provisioning template names: 1–36 of `[A-Za-z0-9_-]`; the
/// name goes into a topic.
pub fn check_template_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 36
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
    {
        return Err(format!(
            "provisioning.template = {name:?}: AWS IoT allows 1 to 36 letters, digits, '_' and '-'"
        ));
    }
    Ok(())
}

pub fn check_channel(c: &str) -> Result<String, String> {
    if c.is_empty()
        || c.len() > 64
        || !c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(format!(
            "update channel {c:?}: use 1 to 64 letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(c.to_string())
}

pub fn check_telemetry(secs: u64) -> Result<Duration, String> {
    if !(TELEMETRY_RANGE.0..=TELEMETRY_RANGE.1).contains(&secs) {
        return Err(format!(
            "telemetry interval {secs} s: use {} to {} seconds",
            TELEMETRY_RANGE.0, TELEMETRY_RANGE.1
        ));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_identity_dir() {
        let c = Config::parse("[mqtt]\nendpoint = \"a.example\"\n", Path::new("/r")).unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!((m.port, m.keepalive_secs, m.thing_name), (8883, 300, None));
        assert_eq!(
            c.identity.certificate,
            Path::new("/r/data/keel/identity/device.pem")
        );
        assert_eq!(c.state_dir, Path::new("/r/data/keel/fleet"));
        assert!(c.polling.is_none());
        assert_eq!(c.settings.log_level, Level::Info);
    }

    #[test]
    fn bad_values_say_what_is_allowed() {
        let root = Path::new("/");
        let err = |t: &str| Config::parse(t, root).unwrap_err().to_string();
        assert!(err("[mqtt]\nendpoint = \"a\"\nkeepalive_secs = 5\n").contains("30 to 1200"));
        assert!(err("[mqtt]\nendpoint = \"a\"\nthing_name = \"a/b\"\n").contains("thing name"));
        assert!(err("[mqtt]\nendpoit = \"a\"\n").contains("endpoit"));
        assert!(err("[settings]\nlog_level = \"loud\"\n").contains("error, warn"));
        assert!(err("[polling]\nmanifest_url = \"http://x/\"\n").contains("plain http"));
        assert!(err("[provisioning]\nserial_number = \"1\"\n").contains("template is missing"));
        assert!(err("[provisioning]\ntemplate = \"t\"\n").contains("[mqtt]"));
        assert!(
            err("[mqtt]\nendpoint = \"a\"\n[provisioning]\ntemplate = \"a/b\"\n")
                .contains("1 to 36")
        );
    }

    #[test]
    fn provisioning_defaults_to_the_claim_directory() {
        let c = Config::parse(
            "[mqtt]\nendpoint = \"a\"\n[provisioning]\ntemplate = \"keel-fleet\"\n",
            Path::new("/r"),
        )
        .unwrap();
        let p = c.provisioning.unwrap();
        assert_eq!(p.template, "keel-fleet");
        assert_eq!(
            p.claim.certificate,
            Path::new("/r/data/keel/claim/claim.pem")
        );
        assert_eq!(
            p.claim.private_key,
            Path::new("/r/data/keel/claim/claim.key")
        );
        assert_eq!(p.claim.ca_bundle, c.identity.ca_bundle);
        assert_eq!(
            p.serial_file,
            Path::new("/r/sys/firmware/devicetree/base/serial-number")
        );
        assert_eq!(p.serial_number, None);
    }

    #[test]
    fn data_overrides_the_root_filesystem_key_by_key() {
        let d = tempfile::tempdir().unwrap();
        let put = |p: &str, t: &str| {
            let path = paths::under(d.path(), p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, t).unwrap();
        };
        assert!(Config::load(d.path()).unwrap().is_none());
        put(
            paths::FLEET_CONF,
            "[mqtt]\nendpoint = \"a.example\"\nport = 443\n",
        );
        put(
            paths::FLEET_CONF_OVERRIDE,
            "[mqtt]\nendpoint = \"b.example\"\n[settings]\nlog_level = \"debug\"\n",
        );
        let c = Config::load(d.path()).unwrap().unwrap();
        let m = c.mqtt.unwrap();
        assert_eq!((m.endpoint.as_str(), m.port), ("b.example", 443));
        assert_eq!(c.settings.log_level, Level::Debug);
        // A typo in the override is reported with that file's name.
        put(paths::FLEET_CONF_OVERRIDE, "[mqtt]\nport = \"many\"\n");
        let err = Config::load(d.path()).unwrap_err().to_string();
        assert!(
            err.contains("data/keel/fleet.toml") && err.contains("port"),
            "{err}"
        );
    }
}
