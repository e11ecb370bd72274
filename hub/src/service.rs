//! The hub service: routes each request topic to the shadow, jobs or
//! fleet provisioning service, keeps each device's online state from its presence messages
//! (published on connect, and by the broker as its last will), answers the
//! operator's API, and keeps everything in one state file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::jobs::JobsService;
use crate::provisioning::{Provisioner, ProvisioningService};
use crate::shadow::ShadowService;
use crate::{api, now, Out};

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot read the hub state {path}: {detail}; move it away to start with an empty hub")]
    Load { path: PathBuf, detail: String },
    #[error("cannot write the hub state {path}: {source}")]
    Save {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub online: bool,
    pub since: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct HubState {
    pub shadow: ShadowService,
    pub jobs: JobsService,
    pub presence: BTreeMap<String, Presence>,
    #[serde(default)]
    pub provisioning: ProvisioningService,
}

pub struct Hub {
    pub state: HubState,
    path: Option<PathBuf>,
    /// Fleet provisioning by claim signs with this; off when `None`.
    provisioner: Option<Provisioner>,
}

/// What the hub subscribes to.
pub const FILTERS: &[&str] = &[
    "$aws/things/+/shadow/get",
    "$aws/things/+/shadow/update",
    "$aws/things/+/jobs/start-next",
    "$aws/things/+/jobs/get",
    "$aws/things/+/jobs/+/update",
    "$aws/things/+/jobs/+/get",
    "keel/things/+/presence",
    "keel/hub/api/+",
    crate::provisioning::CREATE_FROM_CSR,
    "$aws/provisioning-templates/+/provision/json",
];

pub const STATE_FILE: &str = "hub-state.json";

impl Hub {
    /// A hub that keeps nothing on disk (tests).
    pub fn in_memory() -> Hub {
        Hub {
            state: HubState::default(),
            path: None,
            provisioner: None,
        }
    }

    /// The hub whose state lives in `dir`.
    pub fn open(dir: &Path) -> Result<Hub, HubError> {
        let path = dir.join(STATE_FILE);
        let state = match durable::read(&path, 64 << 20) {
            Ok(None) => HubState::default(),
            Ok(Some(b)) => serde_json::from_slice(&b).map_err(|e| HubError::Load {
                path: path.clone(),
                detail: e.to_string(),
            })?,
            Err(e) => {
                return Err(HubError::Load {
                    path,
                    detail: e.to_string(),
                })
            }
        };
        Ok(Hub {
            state,
            path: Some(path),
            provisioner: None,
        })
    }

    /// Answers fleet provisioning requests, signing with `p`'s CA.
    pub fn enable_provisioning(&mut self, p: Provisioner) {
        self.provisioner = Some(p);
    }

    fn save(&self) -> Result<(), HubError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(&self.state).map_err(|e| HubError::Save {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        durable::replace(path, &bytes, 0o644).map_err(|source| HubError::Save {
            path: path.clone(),
            source,
        })
    }

    /// Handles one message; returns what to publish.
    pub fn handle(&mut self, topic: &str, payload: &[u8]) -> Result<Vec<Out>, HubError> {
        let parts: Vec<&str> = topic.splitn(4, '/').collect();
        let out = match parts.as_slice() {
            ["$aws", "certificates", ..] | ["$aws", "provisioning-templates", ..] => self
                .state
                .provisioning
                .handle(self.provisioner.as_ref(), topic, payload),
            ["$aws", "things", thing, rest] => {
                if let Some(op) = rest.strip_prefix("shadow/") {
                    self.state.shadow.handle(thing, op, payload)
                } else if let Some(rest) = rest.strip_prefix("jobs/") {
                    self.state.jobs.handle(thing, rest, payload)
                } else {
                    Vec::new()
                }
            }
            ["keel", "things", thing, "presence"] => {
                let online = serde_json::from_slice::<Value>(payload)
                    .ok()
                    .and_then(|v| v.get("online").and_then(Value::as_bool))
                    .unwrap_or(false);
                self.state.presence.insert(
                    thing.to_string(),
                    Presence {
                        online,
                        since: now(),
                    },
                );
                Vec::new()
            }
            ["keel", "hub", "api", op] => api::answer(self, op, payload),
            _ => Vec::new(),
        };
        // Reads change nothing worth an fsync.
        let read_only = topic.ends_with("/get") || topic == "keel/hub/api/list";
        if !read_only {
            self.save()?;
        }
        Ok(out)
    }

    /// One line of JSON per device: its shadow, online state and jobs.
    pub fn devices(&self) -> Value {
        let mut things: std::collections::BTreeSet<&String> =
            self.state.shadow.documents.keys().collect();
        things.extend(self.state.presence.keys());
        things.extend(self.state.jobs.executions.keys());
        things.extend(self.state.provisioning.things.keys());
        let list: Vec<Value> = things
            .into_iter()
            .map(|t| {
                let doc = self.state.shadow.documents.get(t);
                let jobs: Vec<Value> = self
                    .state
                    .jobs
                    .executions
                    .get(t)
                    .into_iter()
                    .flat_map(|m| m.values())
                    .map(|e| json!({"jobId": e.job_id, "status": e.status, "statusDetails": e.status_details, "history": e.history}))
                    .collect();
                json!({
                    "thing": t,
                    "online": self.state.presence.get(t).map(|p| p.online),
                    "reported": doc.map(|d| Value::Object(d.reported.clone())),
                    "desired": doc.map(|d| Value::Object(d.desired.clone())),
                    "shadowVersion": doc.map(|d| d.version),
                    "provisioned": self.state.provisioning.things.get(t),
                    "jobs": jobs,
                })
            })
            .collect();
        json!({ "things": list })
    }

    /// Serves over `client` until `stop` is set; `log` gets one line per
    /// connection change and per request answered.
    pub fn run(&mut self, client: &mut mqtt::Client, stop: &AtomicBool, log: &mut dyn FnMut(&str)) {
        client.subscribe(
            &FILTERS
                .iter()
                .map(|f| (*f, mqtt::QoS::AtLeastOnce))
                .collect::<Vec<_>>(),
        );
        while !stop.load(Ordering::Relaxed) {
            match client.poll(Duration::from_millis(200)) {
                None => {}
                Some(mqtt::Event::Connected { refused }) => {
                    log(&format!(
                        "hub: connected to the broker (refused subscriptions: {refused:?})"
                    ));
                }
                Some(mqtt::Event::Disconnected {
                    error, retry_in, ..
                }) => {
                    log(&format!(
                        "hub: {error}; retrying in {:.1} s",
                        retry_in.as_secs_f32()
                    ));
                }
                Some(mqtt::Event::Message(p)) => match self.handle(&p.topic, &p.payload) {
                    Ok(out) => {
                        for o in out {
                            if !p.topic.starts_with("keel/hub/api/list") {
                                log(&format!("hub: {} -> {}", p.topic, o.topic));
                            }
                            if let Err(e) =
                                client.publish(&o.topic, &o.payload, mqtt::QoS::AtLeastOnce, false)
                            {
                                log(&format!("hub: cannot answer on {}: {e}", o.topic));
                            }
                        }
                    }
                    Err(e) => log(&format!("hub: {e}")),
                },
            }
        }
        client.disconnect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a device (or anyone the ACL lets through) sends, the
        /// hub answers or ignores it, never panics.
        #[test]
        fn any_request_is_answered_or_ignored(payload in proptest::collection::vec(any::<u8>(), 0..300), which in 0usize..11) {
            let topic = [
                "$aws/things/t/shadow/get", "$aws/things/t/shadow/update", "$aws/things/t/jobs/start-next",
                "$aws/things/t/jobs/get", "$aws/things/t/jobs/j/update", "$aws/things/t/jobs/j/get",
                "keel/things/t/presence", "keel/hub/api/create-job", "keel/hub/api/desire",
                "$aws/certificates/create-from-csr/json", "$aws/provisioning-templates/keel-fleet/provision/json",
            ][which];
            let mut hub = Hub::in_memory();
            hub.state.jobs.create("j", serde_json::json!({}), &["t".into()]).unwrap();
            let _ = hub.handle(topic, &payload).unwrap();
        }
    }

    #[test]
    fn the_state_file_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let mut hub = Hub::open(d.path()).unwrap();
        hub.handle(
            "$aws/things/t/shadow/update",
            br#"{"state":{"reported":{"v":"1"}}}"#,
        )
        .unwrap();
        hub.handle("keel/things/t/presence", br#"{"online":true}"#)
            .unwrap();
        hub.handle(
            "keel/hub/api/create-job",
            br#"{"jobId":"j","targets":["t"],"document":{"operation":"x"}}"#,
        )
        .unwrap();
        let again = Hub::open(d.path()).unwrap();
        assert_eq!(again.devices(), hub.devices());
        assert_eq!(
            again.state.jobs.execution("t", "j").unwrap().status,
            "QUEUED"
        );
    }
}
