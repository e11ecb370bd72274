//! AWS IoT's jobs service for devices, as documented for the MQTT API:
//! jobs created for one or more things, one execution per thing with a
//! status (QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, REJECTED, CANCELED), a
//! version every accepted update increments, `expectedVersion` checks,
//! `notify-next` when a thing's next pending execution changes, and the
//! `start-next`, `get`, `<jobId>/get` and `<jobId>/update` requests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::{now, Out};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub document: Value,
    pub targets: Vec<String>,
    pub created_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub job_id: String,
    pub thing: String,
    pub status: String,
    pub status_details: Map<String, Value>,
    pub version: u64,
    pub execution_number: u64,
    pub queued_at: u64,
    pub started_at: Option<u64>,
    pub updated_at: u64,
    /// Every status accepted, in order (for `hub devices` and the tests:
    /// a terminal status appears once or the device misbehaved).
    pub history: Vec<String>,
}

impl Execution {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status.as_str(),
            "SUCCEEDED" | "FAILED" | "REJECTED" | "CANCELED" | "TIMED_OUT" | "REMOVED"
        )
    }

    fn state(&self) -> Value {
        json!({ "status": self.status, "statusDetails": self.status_details, "versionNumber": self.version })
    }

    fn describe(&self, document: Option<&Value>) -> Value {
        let mut v = json!({
            "jobId": self.job_id,
            "thingName": self.thing,
            "status": self.status,
            "statusDetails": self.status_details,
            "queuedAt": self.queued_at,
            "lastUpdatedAt": self.updated_at,
            "versionNumber": self.version,
            "executionNumber": self.execution_number,
        });
        if let Some(t) = self.started_at {
            v["startedAt"] = json!(t);
        }
        if let Some(d) = document {
            v["jobDocument"] = d.clone();
        }
        v
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CreateError {
    #[error("a job with id {0:?} exists already; job ids are unique")]
    Exists(String),
    #[error("job id {0:?}: use 1 to 64 letters, digits, '-' and '_'")]
    BadId(String),
    #[error("a job needs at least one target thing")]
    NoTargets,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct JobsService {
    pub jobs: BTreeMap<String, Job>,
    /// Keyed by (thing, job id).
    pub executions: BTreeMap<String, BTreeMap<String, Execution>>,
    next_execution: u64,
}

fn reject(topic: String, code: &str, message: &str, token: &Value, state: Option<Value>) -> Out {
    let mut v = json!({ "code": code, "message": message, "timestamp": now() });
    if !token.is_null() {
        v["clientToken"] = token.clone();
    }
    if let Some(s) = state {
        v["executionState"] = s;
    }
    Out::new(topic, v)
}

impl JobsService {
    /// Creates a job with an execution per target, and notifies each
    /// target whose next pending job this is.
    pub fn create(
        &mut self,
        id: &str,
        document: Value,
        targets: &[String],
    ) -> Result<Vec<Out>, CreateError> {
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        {
            return Err(CreateError::BadId(id.into()));
        }
        if self.jobs.contains_key(id) {
            return Err(CreateError::Exists(id.into()));
        }
        if targets.is_empty() {
            return Err(CreateError::NoTargets);
        }
        let t = now();
        self.jobs.insert(
            id.into(),
            Job {
                id: id.into(),
                document,
                targets: targets.to_vec(),
                created_at: t,
            },
        );
        let mut out = Vec::new();
        for thing in targets {
            self.next_execution += 1;
            let exec = Execution {
                job_id: id.into(),
                thing: thing.clone(),
                status: "QUEUED".into(),
                status_details: Map::new(),
                version: 1,
                execution_number: self.next_execution,
                queued_at: t,
                started_at: None,
                updated_at: t,
                history: vec!["QUEUED".into()],
            };
            let before = self.next_pending(thing).map(|e| e.job_id.clone());
            self.executions
                .entry(thing.clone())
                .or_default()
                .insert(id.into(), exec);
            if before.is_none() {
                out.push(self.notify_next(thing));
            }
        }
        Ok(out)
    }

    /// The thing's IN_PROGRESS execution, else its oldest QUEUED one.
    fn next_pending(&self, thing: &str) -> Option<&Execution> {
        let execs = self.executions.get(thing)?;
        let by_age = |status: &str| {
            execs
                .values()
                .filter(|e| e.status == status)
                .min_by_key(|e| (e.queued_at, e.execution_number))
        };
        by_age("IN_PROGRESS").or_else(|| by_age("QUEUED"))
    }

    fn notify_next(&self, thing: &str) -> Out {
        let mut v = json!({ "timestamp": now() });
        if let Some(e) = self.next_pending(thing) {
            v["execution"] = e.describe(self.jobs.get(&e.job_id).map(|j| &j.document));
        }
        Out::new(format!("$aws/things/{thing}/jobs/notify-next"), v)
    }

    /// Handles `$aws/things/<thing>/jobs/<rest>`.
    pub fn handle(&mut self, thing: &str, rest: &str, payload: &[u8]) -> Vec<Out> {
        let topic = |s: &str| format!("$aws/things/{thing}/jobs/{s}");
        let request = match serde_json::from_slice::<Value>(payload) {
            Ok(v @ Value::Object(_)) => v,
            _ if payload.is_empty() => json!({}),
            _ => {
                return vec![reject(
                    topic(&format!("{rest}/rejected")),
                    "InvalidJson",
                    "the request is not a JSON object",
                    &Value::Null,
                    None,
                )]
            }
        };
        let token = request.get("clientToken").cloned().unwrap_or(Value::Null);
        let with_token = |mut v: Value| {
            if !token.is_null() {
                v["clientToken"] = token.clone();
            }
            v
        };
        if rest == "start-next" {
            let t = now();
            let details = request
                .get("statusDetails")
                .and_then(Value::as_object)
                .cloned();
            let Some(id) = self.next_pending(thing).map(|e| e.job_id.clone()) else {
                return vec![Out::new(
                    topic("start-next/accepted"),
                    with_token(json!({ "timestamp": t })),
                )];
            };
            let Some(e) = self.executions.get_mut(thing).and_then(|m| m.get_mut(&id)) else {
                return Vec::new();
            };
            if e.status == "QUEUED" {
                e.status = "IN_PROGRESS".into();
                e.version += 1;
                e.started_at = Some(t);
                e.updated_at = t;
                e.history.push("IN_PROGRESS".into());
                if let Some(d) = details {
                    e.status_details = d;
                }
            }
            let doc = self.jobs.get(&id).map(|j| &j.document);
            let body = json!({ "execution": e.describe(doc), "timestamp": t });
            return vec![Out::new(topic("start-next/accepted"), with_token(body))];
        }
        if rest == "get" {
            let execs = self.executions.get(thing);
            let summary = |status: &str| -> Vec<Value> {
                execs
                    .into_iter()
                    .flat_map(|m| m.values())
                    .filter(|e| e.status == status)
                    .map(|e| json!({ "jobId": e.job_id, "queuedAt": e.queued_at, "lastUpdatedAt": e.updated_at, "versionNumber": e.version, "executionNumber": e.execution_number }))
                    .collect()
            };
            let body = json!({ "inProgressJobs": summary("IN_PROGRESS"), "queuedJobs": summary("QUEUED"), "timestamp": now() });
            return vec![Out::new(topic("get/accepted"), with_token(body))];
        }
        let Some((job_id, verb)) = rest.rsplit_once('/') else {
            return Vec::new();
        };
        let answer = |s: &str| topic(&format!("{job_id}/{verb}/{s}"));
        let Some(e) = self
            .executions
            .get_mut(thing)
            .and_then(|m| m.get_mut(job_id))
        else {
            return vec![reject(
                answer("rejected"),
                "ResourceNotFound",
                &format!("job execution {job_id} for {thing} does not exist"),
                &token,
                None,
            )];
        };
        match verb {
            "get" => {
                let doc = request
                    .get("includeJobDocument")
                    .and_then(Value::as_bool)
                    .unwrap_or(true)
                    .then(|| self.jobs.get(job_id).map(|j| &j.document))
                    .flatten();
                vec![Out::new(
                    answer("accepted"),
                    with_token(json!({ "execution": e.describe(doc), "timestamp": now() })),
                )]
            }
            "update" => {
                let status = request.get("status").and_then(Value::as_str).unwrap_or("");
                if !matches!(status, "IN_PROGRESS" | "SUCCEEDED" | "FAILED" | "REJECTED") {
                    return vec![reject(
                        answer("rejected"),
                        "InvalidRequest",
                        &format!("status {status:?} cannot be set by a device"),
                        &token,
                        None,
                    )];
                }
                if let Some(v) = request.get("expectedVersion") {
                    if v.as_u64() != Some(e.version) {
                        return vec![reject(
                            answer("rejected"),
                            "VersionMismatch",
                            "the expected version does not match",
                            &token,
                            Some(e.state()),
                        )];
                    }
                }
                if e.is_terminal() {
                    let m = format!("the job execution is {} already", e.status);
                    return vec![reject(
                        answer("rejected"),
                        "InvalidStateTransition",
                        &m,
                        &token,
                        Some(e.state()),
                    )];
                }
                let t = now();
                e.status = status.into();
                e.version += 1;
                e.updated_at = t;
                e.started_at.get_or_insert(t);
                e.history.push(status.into());
                if let Some(d) = request.get("statusDetails").and_then(Value::as_object) {
                    e.status_details = d.clone();
                }
                let mut body = json!({ "timestamp": t });
                if request
                    .get("includeJobExecutionState")
                    .and_then(Value::as_bool)
                    == Some(true)
                {
                    body["executionState"] = e.state();
                }
                if request.get("includeJobDocument").and_then(Value::as_bool) == Some(true) {
                    body["jobDocument"] = self
                        .jobs
                        .get(job_id)
                        .map(|j| j.document.clone())
                        .unwrap_or(Value::Null);
                }
                let terminal = e.is_terminal();
                let mut out = vec![Out::new(answer("accepted"), with_token(body))];
                if terminal {
                    out.push(self.notify_next(thing));
                }
                out
            }
            _ => Vec::new(),
        }
    }

    pub fn execution(&self, thing: &str, job_id: &str) -> Option<&Execution> {
        self.executions.get(thing)?.get(job_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(o: &Out) -> Value {
        serde_json::from_slice(&o.payload).unwrap()
    }

    #[test]
    fn the_documented_flow() {
        let mut s = JobsService::default();
        let out = s
            .create("j1", json!({"operation":"keel-update"}), &["t".into()])
            .unwrap();
        assert_eq!(out[0].topic, "$aws/things/t/jobs/notify-next");
        assert_eq!(body(&out[0])["execution"]["jobId"], "j1");
        assert_eq!(
            s.create("j1", json!({}), &["t".into()]),
            Err(CreateError::Exists("j1".into()))
        );
        let out = s.create("j2", json!({}), &["t".into()]).unwrap();
        assert!(out.is_empty(), "j1 is still next");

        let out = s.handle("t", "start-next", br#"{"clientToken":"c"}"#);
        let b = body(&out[0]);
        assert_eq!(
            (
                b["execution"]["status"].as_str(),
                b["execution"]["versionNumber"].as_u64()
            ),
            (Some("IN_PROGRESS"), Some(2))
        );
        assert_eq!(b["clientToken"], "c");
        // Asked again (a restart): the same execution, unchanged.
        let b = body(&s.handle("t", "start-next", b"{}")[0]);
        assert_eq!(
            (
                b["execution"]["jobId"].as_str(),
                b["execution"]["versionNumber"].as_u64()
            ),
            (Some("j1"), Some(2))
        );

        let out = s.handle(
            "t",
            "j1/update",
            br#"{"status":"SUCCEEDED","expectedVersion":1}"#,
        );
        assert_eq!(body(&out[0])["code"], "VersionMismatch");
        assert_eq!(body(&out[0])["executionState"]["versionNumber"], 2);
        let out = s.handle("t", "j1/update", br#"{"status":"SUCCEEDED","expectedVersion":2,"includeJobExecutionState":true,"statusDetails":{"v":"2"}}"#);
        assert_eq!(out[0].topic, "$aws/things/t/jobs/j1/update/accepted");
        assert_eq!(body(&out[0])["executionState"]["versionNumber"], 3);
        assert_eq!(
            body(&out[1])["execution"]["jobId"],
            "j2",
            "notify-next names the next job"
        );
        let out = s.handle("t", "j1/update", br#"{"status":"FAILED"}"#);
        assert_eq!(body(&out[0])["code"], "InvalidStateTransition");
        assert_eq!(
            s.execution("t", "j1").unwrap().history,
            ["QUEUED", "IN_PROGRESS", "SUCCEEDED"]
        );

        let out = s.handle("t", "nope/get", b"{}");
        assert_eq!(body(&out[0])["code"], "ResourceNotFound");
        let out = s.handle("t", "get", b"{}");
        assert_eq!(body(&out[0])["queuedJobs"][0]["jobId"], "j2");
    }
}
