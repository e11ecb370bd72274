//! The classic device shadow (`$aws/things/<thing>/shadow/...`), as a pure
//! state machine: messages in, messages out, no I/O. The runner publishes
//! what it returns.
//!
//! The device reports its [`DeviceStatus`] and its settings under
//! `state.reported`. It applies the whitelisted settings of a `desired`
//! delta ([`WHITELIST`]), reports them back and ignores anything else with
//! a log line; a value of the wrong type or range is reported under
//! `reported.rejected_settings`, never a crash. Reports carry the shadow
//! version when it is known, so a report raced by a cloud-side change is
//! rejected (409) and the device re-reads the shadow instead of writing
//! over it.

use serde_json::{json, Map, Value};

use crate::device::{DeviceStatus, Settings};
use crate::log::Level;
use crate::Outgoing;

/// The settings a `desired` state may change (docs/fleet.md).
pub const WHITELIST: [&str; 3] = ["update_channel", "telemetry_interval_secs", "log_level"];

pub fn topic(thing: &str, suffix: &str) -> String {
    format!("$aws/things/{thing}/shadow/{suffix}")
}

/// What handling a message led to.
#[derive(Debug, Default, PartialEq)]
pub struct Reaction {
    pub publish: Vec<Outgoing>,
    /// The settings changed: persist them and tell the device.
    pub settings_changed: bool,
    pub log: Vec<(Level, String)>,
}

pub struct Shadow {
    thing: String,
    pub settings: Settings,
    /// The shadow's version as last seen; `None` until read.
    version: Option<u64>,
    /// Settings the cloud asked for and we refused, with why.
    rejected: Map<String, Value>,
    token: u64,
}

impl Shadow {
    pub fn new(thing: &str, settings: Settings) -> Shadow {
        Shadow {
            thing: thing.to_string(),
            settings,
            version: None,
            rejected: Map::new(),
            token: 0,
        }
    }

    /// The topics to subscribe to.
    pub fn filters(&self) -> Vec<String> {
        [
            "update/delta",
            "update/accepted",
            "update/rejected",
            "get/accepted",
            "get/rejected",
        ]
        .iter()
        .map(|s| topic(&self.thing, s))
        .collect()
    }

    /// After every (re)connect: read the shadow, which answers with its
    /// version and any pending delta; the report follows the answer.
    pub fn on_connect(&mut self) -> Reaction {
        self.version = None;
        Reaction {
            publish: vec![self.get()],
            ..Reaction::default()
        }
    }

    fn get(&mut self) -> Outgoing {
        Outgoing::new(
            topic(&self.thing, "get"),
            json!({ "clientToken": self.next_token() }),
        )
    }

    fn next_token(&mut self) -> String {
        self.token += 1;
        format!("keel-{}", self.token)
    }

    /// The full `reported` state.
    pub fn report(&mut self, status: &DeviceStatus) -> Outgoing {
        let mut reported = json!({
            "firmware_version": status.firmware_version,
            "running_slot": status.running_slot,
            "confirmed": status.confirmed,
            "last_update": status.last_update,
            "uptime_secs": status.uptime.as_secs(),
            "agent_version": status.agent_version,
            "data_free_bytes": status.data_free_bytes,
        });
        if let Value::Object(m) = &mut reported {
            m.extend(self.settings_json());
        }
        self.update(reported)
    }

    fn settings_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("update_channel".into(), json!(self.settings.update_channel));
        m.insert(
            "telemetry_interval_secs".into(),
            json!(self.settings.telemetry_interval.as_secs()),
        );
        m.insert("log_level".into(), json!(self.settings.log_level.name()));
        // null deletes the key from the shadow once nothing is refused.
        let rejected = if self.rejected.is_empty() {
            Value::Null
        } else {
            Value::Object(self.rejected.clone())
        };
        m.insert("rejected_settings".into(), rejected);
        m
    }

    fn update(&mut self, reported: Value) -> Outgoing {
        let mut doc =
            json!({ "state": { "reported": reported }, "clientToken": self.next_token() });
        if let (Some(v), Value::Object(m)) = (self.version, &mut doc) {
            m.insert("version".into(), json!(v));
        }
        Outgoing::new(topic(&self.thing, "update"), doc)
    }

    /// A message on one of [`Shadow::filters`].
    pub fn on_message(
        &mut self,
        topic_name: &str,
        payload: &[u8],
        status: &DeviceStatus,
    ) -> Reaction {
        let mut r = Reaction::default();
        let Some(suffix) = topic_name.strip_prefix(&topic(&self.thing, "")) else {
            return r;
        };
        let doc: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                r.log.push((
                    Level::Warn,
                    format!("shadow: ignoring {suffix}: not JSON ({e})"),
                ));
                return r;
            }
        };
        let version = doc.get("version").and_then(Value::as_u64);
        match suffix {
            "get/accepted" => {
                self.version = version;
                if let Some(delta) = doc.pointer("/state/delta").and_then(Value::as_object) {
                    self.apply_delta(delta, &mut r);
                }
                r.publish.push(self.report(status));
            }
            "get/rejected" => {
                // 404: no shadow yet; the report creates it.
                let code = doc.get("code").and_then(Value::as_u64);
                if code != Some(404) {
                    r.log.push((
                        Level::Warn,
                        format!("shadow: get rejected: {}", describe(&doc)),
                    ));
                }
                self.version = None;
                r.publish.push(self.report(status));
            }
            "update/accepted" => {
                if let Some(v) = version {
                    self.version = Some(v.max(self.version.unwrap_or(0)));
                }
            }
            "update/rejected" => {
                if doc.get("code").and_then(Value::as_u64) == Some(409) {
                    // Someone changed the shadow since we read it: read it
                    // again, then report on top of what is there.
                    r.log.push((
                        Level::Info,
                        "shadow: version conflict; reading the shadow again".into(),
                    ));
                    self.version = None;
                    r.publish.push(self.get());
                } else {
                    r.log.push((
                        Level::Warn,
                        format!("shadow: update rejected: {}", describe(&doc)),
                    ));
                }
            }
            "update/delta" => {
                self.version = version.or(self.version);
                match doc.get("state").and_then(Value::as_object) {
                    Some(delta) => {
                        let changed = self.apply_delta(delta, &mut r);
                        if changed || !r.log.is_empty() {
                            let mut reported = self.settings_json();
                            reported
                                .retain(|k, _| delta.contains_key(k) || k == "rejected_settings");
                            r.publish.push(self.update(Value::Object(reported)));
                        }
                    }
                    None => r
                        .log
                        .push((Level::Warn, "shadow: a delta without a state object".into())),
                }
            }
            _ => {}
        }
        r
    }

    /// Applies the whitelisted keys of a delta; returns whether any setting
    /// changed.
    fn apply_delta(&mut self, delta: &Map<String, Value>, r: &mut Reaction) -> bool {
        let before = self.settings.clone();
        for (key, value) in delta {
            if !WHITELIST.contains(&key.as_str()) {
                r.log.push((
                    Level::Info,
                    format!("shadow: ignoring desired '{key}': not a setting the device takes (it takes {})", WHITELIST.join(", ")),
                ));
                continue;
            }
            match self.set(key, value) {
                Ok(()) => {
                    self.rejected.remove(key);
                }
                Err(why) => {
                    r.log.push((
                        Level::Warn,
                        format!("shadow: refusing desired '{key}' = {value}: {why}"),
                    ));
                    self.rejected.insert(key.clone(), json!(why));
                }
            }
        }
        let changed = self.settings != before;
        if changed {
            r.settings_changed = true;
            r.log.push((
                Level::Info,
                format!("shadow: settings now {:?}", self.settings),
            ));
        }
        changed
    }

    fn set(&mut self, key: &str, value: &Value) -> Result<(), String> {
        match key {
            "update_channel" => {
                let s = value.as_str().ok_or("expected a string")?;
                self.settings.update_channel = crate::config::check_channel(s)?;
            }
            "telemetry_interval_secs" => {
                let n = value.as_u64().ok_or("expected a whole number of seconds")?;
                self.settings.telemetry_interval = crate::config::check_telemetry(n)?;
            }
            "log_level" => {
                let s = value.as_str().ok_or("expected a string")?;
                self.settings.log_level =
                    Level::parse(s).ok_or_else(|| format!("expected one of {}", Level::NAMES))?;
            }
            _ => return Err("not a setting".into()),
        }
        Ok(())
    }
}

/// `code: message` of an AWS error document.
pub fn describe(doc: &Value) -> String {
    format!(
        "{} {}",
        doc.get("code").map(Value::to_string).unwrap_or_default(),
        doc.get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn shadow() -> Shadow {
        Shadow::new(
            "t1",
            Settings {
                update_channel: "stable".into(),
                telemetry_interval: Duration::from_secs(300),
                log_level: Level::Info,
            },
        )
    }

    fn json_of(o: &Outgoing) -> Value {
        serde_json::from_slice(&o.payload).unwrap()
    }

    #[test]
    fn get_first_then_report_with_the_version() {
        let mut s = shadow();
        let r = s.on_connect();
        assert_eq!(r.publish[0].topic, "$aws/things/t1/shadow/get");
        let st = DeviceStatus {
            firmware_version: "1.0.0".into(),
            ..DeviceStatus::default()
        };
        let r = s.on_message(
            "$aws/things/t1/shadow/get/accepted",
            br#"{"version":7,"state":{}}"#,
            &st,
        );
        let doc = json_of(&r.publish[0]);
        assert_eq!(r.publish[0].topic, "$aws/things/t1/shadow/update");
        assert_eq!(doc["version"], 7);
        assert_eq!(doc["state"]["reported"]["firmware_version"], "1.0.0");
        assert_eq!(doc["state"]["reported"]["update_channel"], "stable");
    }

    #[test]
    fn a_conflict_reads_again() {
        let mut s = shadow();
        let st = DeviceStatus::default();
        let r = s.on_message(
            "$aws/things/t1/shadow/update/rejected",
            br#"{"code":409,"message":"Version conflict"}"#,
            &st,
        );
        assert_eq!(r.publish.len(), 1);
        assert_eq!(r.publish[0].topic, "$aws/things/t1/shadow/get");
    }

    #[test]
    fn a_delta_applies_the_whitelist_and_refuses_the_rest() {
        let mut s = shadow();
        let st = DeviceStatus::default();
        let delta = br#"{"version":9,"state":{"update_channel":"beta","telemetry_interval_secs":"often","colour":"red"}}"#;
        let r = s.on_message("$aws/things/t1/shadow/update/delta", delta, &st);
        assert!(r.settings_changed);
        assert_eq!(s.settings.update_channel, "beta");
        assert_eq!(s.settings.telemetry_interval, Duration::from_secs(300));
        let doc = json_of(&r.publish[0]);
        let reported = &doc["state"]["reported"];
        assert_eq!(reported["update_channel"], "beta");
        assert!(reported["rejected_settings"]["telemetry_interval_secs"]
            .as_str()
            .unwrap()
            .contains("whole number"));
        assert!(reported.get("colour").is_none());
        assert!(r
            .log
            .iter()
            .any(|(_, l)| l.contains("ignoring desired 'colour'")));
        // Fixed later: the refusal is cleared.
        let r = s.on_message(
            "$aws/things/t1/shadow/update/delta",
            br#"{"state":{"telemetry_interval_secs":60}}"#,
            &st,
        );
        assert_eq!(
            json_of(&r.publish[0])["state"]["reported"]["rejected_settings"],
            Value::Null
        );
    }

    #[test]
    fn garbage_is_logged_not_fatal() {
        let mut s = shadow();
        let st = DeviceStatus::default();
        for p in [&b"\xff\x00"[..], b"[]", b"{\"state\":5}", b"null"] {
            let r = s.on_message("$aws/things/t1/shadow/update/delta", p, &st);
            assert!(!r.settings_changed);
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(p in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), which in 0usize..5) {
            let mut s = shadow();
            let t = topic("t1", ["update/delta", "update/accepted", "update/rejected", "get/accepted", "get/rejected"][which]);
            let _ = s.on_message(&t, &p, &DeviceStatus::default());
        }
    }
}
