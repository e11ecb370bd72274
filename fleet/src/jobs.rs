//! AWS IoT jobs (`$aws/things/<thing>/jobs/...`, the MQTT API) as a state
//! machine whose every transition is on disk before it is acted on.
//!
//! The bug this exists to avoid (AWS's own device client has it): a job
//! that reboots the device stays IN_PROGRESS, and `start-next` hands the
//! same job out again after the reboot, so it runs twice. Here:
//!
//! - the job being run is recorded (durably) before the update starts, and
//!   its phase (downloading, rebooting) before the reboot;
//! - a job `start-next` hands out that is the recorded one, or one that
//!   finished recently, is never run again;
//! - after the reboot the outcome comes from the device (confirmed, rolled
//!   back) and the terminal status is *owed*: recorded durably and re-sent
//!   on every connect and every [`RESEND`] until the cloud accepts it (or
//!   says the job is already terminal), then forgotten.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::device::{DeviceStatus, UpdateError, UpdateOutcome, UpdateStarted};
use crate::jobdoc::{self, UpdateOrder};
use crate::log::Level;
use crate::store::{self, StoreError};
use crate::Outgoing;

/// How often an owed status is re-sent while unanswered.
pub const RESEND: Duration = Duration::from_secs(30);
/// How many finished job ids are remembered.
const FINISHED_KEPT: usize = 32;

pub const JOBS_FILE: &str = "jobs.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Recorded before the download started.
    Downloading,
    /// The update is on the inactive slot; recorded before the reboot.
    Rebooting,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub job_id: String,
    /// The execution's version as last seen (AWS's `expectedVersion`).
    pub version: Option<u64>,
    pub order: UpdateOrder,
    pub phase: Phase,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owed {
    pub job_id: String,
    /// SUCCEEDED, FAILED or REJECTED.
    pub status: String,
    pub details: BTreeMap<String, String>,
    pub version: Option<u64>,
}

/// Everything in `jobs.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobsState {
    pub current: Option<Current>,
    pub owed: Vec<Owed>,
    pub finished: Vec<String>,
}

/// What the runner must do next, in order.
#[derive(Debug, PartialEq)]
pub enum Step {
    Publish(Outgoing),
    /// Start this update (the job is recorded as downloading).
    RunUpdate(UpdateOrder),
    /// Reboot into the staged slot (recorded as rebooting).
    Reboot,
    Log(Level, String),
}

pub struct Jobs {
    thing: String,
    path: PathBuf,
    pub state: JobsState,
    last_resend: Option<Instant>,
    token: u64,
}

pub fn topic(thing: &str, suffix: &str) -> String {
    format!("$aws/things/{thing}/jobs/{suffix}")
}

fn details(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Jobs {
    pub fn open(thing: &str, state_dir: &std::path::Path) -> Result<Jobs, StoreError> {
        let path = state_dir.join(JOBS_FILE);
        Ok(Jobs {
            thing: thing.to_string(),
            state: store::load(&path)?,
            path,
            last_resend: None,
            token: 0,
        })
    }

    pub fn filters(&self) -> Vec<String> {
        [
            "notify-next",
            "start-next/accepted",
            "start-next/rejected",
            "+/update/accepted",
            "+/update/rejected",
            "+/get/accepted",
            "+/get/rejected",
        ]
        .iter()
        .map(|s| topic(&self.thing, s))
        .collect()
    }

    pub fn is_busy(&self) -> bool {
        self.state.current.is_some()
    }

    fn save(&self) -> Result<(), StoreError> {
        store::save(&self.path, &self.state)
    }

    fn next_token(&mut self) -> String {
        self.token += 1;
        format!("keel-job-{}", self.token)
    }

    fn start_next(&mut self) -> Step {
        let token = self.next_token();
        Step::Publish(Outgoing::new(
            topic(&self.thing, "start-next"),
            json!({ "clientToken": token }),
        ))
    }

    fn update(
        &mut self,
        job_id: &str,
        status: &str,
        details: &BTreeMap<String, String>,
        version: Option<u64>,
    ) -> Step {
        let mut doc = json!({
            "status": status,
            "statusDetails": details,
            "includeJobExecutionState": true,
            "clientToken": self.next_token(),
        });
        if let (Some(v), Value::Object(m)) = (version, &mut doc) {
            m.insert("expectedVersion".into(), json!(v));
        }
        Step::Publish(Outgoing::new(
            topic(&self.thing, &format!("{job_id}/update")),
            doc,
        ))
    }

    /// Records the job's terminal status as owed and sends it.
    fn finish(
        &mut self,
        status: &str,
        why: BTreeMap<String, String>,
    ) -> Result<Vec<Step>, StoreError> {
        let Some(cur) = self.state.current.take() else {
            return Ok(Vec::new());
        };
        let owed = Owed {
            job_id: cur.job_id,
            status: status.to_string(),
            details: why,
            version: cur.version,
        };
        self.state.owed.push(owed.clone());
        self.save()?;
        Ok(vec![
            Step::Log(
                Level::Info,
                format!("job {}: {status} {:?}", owed.job_id, owed.details),
            ),
            self.update(&owed.job_id, &owed.status, &owed.details, owed.version),
        ])
    }

    fn resend_owed(&mut self) -> Vec<Step> {
        self.last_resend = Some(Instant::now());
        let owed = self.state.owed.clone();
        owed.iter()
            .map(|o| self.update(&o.job_id, &o.status, &o.details, o.version))
            .collect()
    }

    /// Decides a job that was interrupted by a restart, from what the
    /// device says became of its update.
    fn resolve(
        &mut self,
        outcome: &UpdateOutcome,
        status: &DeviceStatus,
    ) -> Result<Vec<Step>, StoreError> {
        let Some(cur) = self.state.current.clone() else {
            return Ok(Vec::new());
        };
        match (cur.phase, outcome) {
            (_, UpdateOutcome::Trial) => Ok(Vec::new()), // wait for the health check
            (_, UpdateOutcome::Staged) => {
                if cur.phase == Phase::Downloading {
                    if let Some(c) = &mut self.state.current {
                        c.phase = Phase::Rebooting;
                    }
                    self.save()?;
                }
                Ok(vec![Step::Reboot])
            }
            (Phase::Rebooting, UpdateOutcome::Confirmed { version }) => self.finish(
                "SUCCEEDED",
                details(&[
                    ("result", "the new slot booted and passed its health check"),
                    ("version", version),
                ]),
            ),
            (Phase::Rebooting, UpdateOutcome::Failed { reason }) => self.finish(
                "FAILED",
                details(&[("reason", reason), ("running", &status.firmware_version)]),
            ),
            (Phase::Rebooting, _) => {
                // No verdict recorded: judge by the version that runs.
                let wanted = cur.order.version.as_deref();
                if wanted.is_some_and(|w| {
                    bundle::version::compare(w, &status.firmware_version).is_ok_and(|o| o.is_eq())
                }) {
                    self.finish(
                        "SUCCEEDED",
                        details(&[("version", &status.firmware_version)]),
                    )
                } else {
                    self.finish(
                        "FAILED",
                        details(&[
                            (
                                "reason",
                                "the device restarted without the update taking effect",
                            ),
                            ("running", &status.firmware_version),
                        ]),
                    )
                }
            }
            (Phase::Downloading, _) => self.finish(
                "FAILED",
                details(&[(
                    "reason",
                    "interrupted by a restart before the update was written; create the job again",
                )]),
            ),
        }
    }

    /// After every (re)connect.
    pub fn on_connect(
        &mut self,
        outcome: &UpdateOutcome,
        status: &DeviceStatus,
    ) -> Result<Vec<Step>, StoreError> {
        let mut steps = self.resolve(outcome, status)?;
        if !steps.iter().any(|s| matches!(s, Step::Publish(_))) {
            steps.extend(self.resend_owed());
        }
        if self.state.current.is_none() {
            steps.push(self.start_next());
        }
        Ok(steps)
    }

    /// Called every few seconds: decides a trial that ended, re-sends
    /// owed statuses nobody answered.
    pub fn tick(
        &mut self,
        outcome: &UpdateOutcome,
        status: &DeviceStatus,
    ) -> Result<Vec<Step>, StoreError> {
        let mut steps = Vec::new();
        if self
            .state
            .current
            .as_ref()
            .is_some_and(|c| c.phase == Phase::Rebooting)
        {
            steps = self.resolve(outcome, status)?;
        }
        if !self.state.owed.is_empty() && self.last_resend.is_none_or(|t| t.elapsed() >= RESEND) {
            steps.extend(self.resend_owed());
        }
        Ok(steps)
    }

    /// What the device's [`crate::Device::start_update`] returned.
    pub fn after_update(
        &mut self,
        result: Result<UpdateStarted, UpdateError>,
    ) -> Result<Vec<Step>, StoreError> {
        match result {
            Err(e) => self.finish("FAILED", details(&[("reason", &e.reason)])),
            Ok(UpdateStarted::AlreadyRunning) => self.finish(
                "SUCCEEDED",
                details(&[("result", "this version was already running")]),
            ),
            Ok(UpdateStarted::RebootRequired) => {
                let Some(cur) = &mut self.state.current else {
                    return Ok(Vec::new());
                };
                cur.phase = Phase::Rebooting;
                let id = cur.job_id.clone();
                self.save()?;
                // Informational like the progress reports, so without
                // expectedVersion: their answers may still be queued.
                Ok(vec![
                    self.update(&id, "IN_PROGRESS", &details(&[("step", "rebooting")]), None),
                    Step::Reboot,
                ])
            }
        }
    }

    /// An IN_PROGRESS report of download progress (not owed: a lost one
    /// is replaced by the next).
    pub fn progress(&mut self, percent: u8) -> Option<Outgoing> {
        let cur = self.state.current.clone()?;
        match self.update(
            &cur.job_id,
            "IN_PROGRESS",
            &details(&[
                ("step", "downloading"),
                ("progress", &format!("{percent}%")),
            ]),
            None,
        ) {
            Step::Publish(o) => Some(o),
            _ => None,
        }
    }

    /// A message on one of [`Jobs::filters`].
    pub fn on_message(
        &mut self,
        topic_name: &str,
        payload: &[u8],
    ) -> Result<Vec<Step>, StoreError> {
        let prefix = topic(&self.thing, "");
        let Some(suffix) = topic_name.strip_prefix(&prefix) else {
            return Ok(Vec::new());
        };
        let doc: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                return Ok(vec![Step::Log(
                    Level::Warn,
                    format!("jobs: ignoring {suffix}: not JSON ({e})"),
                )])
            }
        };
        match suffix {
            "notify-next" => Ok(self.on_notify(&doc)),
            "start-next/accepted" => self.on_started(&doc),
            "start-next/rejected" => Ok(vec![Step::Log(
                Level::Warn,
                format!(
                    "jobs: start-next rejected: {}",
                    crate::shadow::describe(&doc)
                ),
            )]),
            _ => {
                let mut parts = suffix.rsplitn(3, '/');
                let (Some(result), Some(verb), Some(job_id)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Ok(Vec::new());
                };
                match (verb, result) {
                    ("update", "accepted") => self.on_update_accepted(job_id, &doc),
                    ("update", "rejected") => self.on_update_rejected(job_id, &doc),
                    ("get", "accepted") => Ok(self.on_described(job_id, &doc)),
                    ("get", "rejected") => self.settle(job_id, &doc),
                    _ => Ok(Vec::new()),
                }
            }
        }
    }

    fn on_notify(&mut self, doc: &Value) -> Vec<Step> {
        let Some(id) = doc.pointer("/execution/jobId").and_then(Value::as_str) else {
            return Vec::new(); // no job pending
        };
        if let Some(cur) = &self.state.current {
            return vec![Step::Log(
                Level::Info,
                format!("jobs: job {id} waits until job {} is done", cur.job_id),
            )];
        }
        vec![self.start_next()]
    }

    fn on_started(&mut self, doc: &Value) -> Result<Vec<Step>, StoreError> {
        let Some(exec) = doc.get("execution") else {
            return Ok(Vec::new()); // nothing queued
        };
        let Some(id) = exec
            .get("jobId")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Ok(vec![Step::Log(
                Level::Warn,
                "jobs: start-next answer without a jobId".into(),
            )]);
        };
        let version = exec.get("versionNumber").and_then(Value::as_u64);
        if let Some(cur) = &mut self.state.current {
            if cur.job_id == id {
                // Ours, handed out again after a restart: never run twice.
                cur.version = version.or(cur.version);
                self.save()?;
                return Ok(Vec::new());
            }
            let why = format!(
                "another update (job {}) is running on this device",
                cur.job_id
            );
            let d = details(&[("reason", &why)]);
            return Ok(vec![
                Step::Log(Level::Warn, format!("jobs: rejecting job {id}: {why}")),
                self.update(&id, "REJECTED", &d, version),
            ]);
        }
        if let Some(o) = self.state.owed.iter_mut().find(|o| o.job_id == id) {
            o.version = version.or(o.version);
            let o = o.clone();
            self.save()?;
            return Ok(vec![
                self.update(&o.job_id, &o.status, &o.details, o.version)
            ]);
        }
        if self.state.finished.contains(&id) {
            return Ok(vec![Step::Log(
                Level::Warn,
                format!("jobs: job {id} is offered again but already finished here; not running it twice"),
            )]);
        }
        let order = match exec.get("jobDocument").map(jobdoc::parse_job) {
            Some(Ok(order)) => order,
            Some(Err(e)) => {
                self.state.current = Some(Current {
                    job_id: id,
                    version,
                    order: UpdateOrder {
                        url: String::new(),
                        sha256: None,
                        version: None,
                    },
                    phase: Phase::Downloading,
                });
                return self.finish("REJECTED", details(&[("reason", &e.to_string())]));
            }
            None => {
                self.state.current = None;
                let d = details(&[("reason", "the job execution has no jobDocument")]);
                return Ok(vec![self.update(&id, "REJECTED", &d, version)]);
            }
        };
        self.state.current = Some(Current {
            job_id: id.clone(),
            version,
            order: order.clone(),
            phase: Phase::Downloading,
        });
        self.save()?;
        Ok(vec![
            Step::Log(
                Level::Info,
                format!("job {id}: updating from {}", order.url),
            ),
            Step::RunUpdate(order),
        ])
    }

    fn on_update_accepted(&mut self, job_id: &str, doc: &Value) -> Result<Vec<Step>, StoreError> {
        let version = doc
            .pointer("/executionState/versionNumber")
            .and_then(Value::as_u64);
        let status = doc
            .pointer("/executionState/status")
            .and_then(Value::as_str);
        if let Some(cur) = self.state.current.as_mut().filter(|c| c.job_id == job_id) {
            if version.is_some() {
                cur.version = version;
                self.save()?;
            }
            return Ok(Vec::new());
        }
        let owed_here = self.state.owed.iter().any(|o| o.job_id == job_id);
        let terminal = status.is_none_or(|s| s != "IN_PROGRESS" && s != "QUEUED");
        if owed_here && terminal {
            return self.settle(job_id, doc);
        }
        Ok(Vec::new())
    }

    /// The cloud has the owed status (or needs none any more): forget it.
    fn settle(&mut self, job_id: &str, doc: &Value) -> Result<Vec<Step>, StoreError> {
        let before = self.state.owed.len();
        self.state.owed.retain(|o| o.job_id != job_id);
        if self.state.owed.len() == before {
            return Ok(Vec::new());
        }
        self.state.finished.push(job_id.to_string());
        let excess = self.state.finished.len().saturating_sub(FINISHED_KEPT);
        self.state.finished.drain(..excess);
        self.save()?;
        let mut steps = vec![Step::Log(
            Level::Info,
            format!(
                "job {job_id}: the cloud has its final status {}",
                describe_short(doc)
            ),
        )];
        if self.state.current.is_none() {
            steps.push(self.start_next());
        }
        Ok(steps)
    }

    fn on_update_rejected(&mut self, job_id: &str, doc: &Value) -> Result<Vec<Step>, StoreError> {
        let code = doc.get("code").and_then(Value::as_str).unwrap_or("");
        let owed = self.state.owed.iter().any(|o| o.job_id == job_id);
        match code {
            "VersionMismatch" => {
                if let Some(v) = doc
                    .pointer("/executionState/versionNumber")
                    .and_then(Value::as_u64)
                {
                    return Ok(self.on_version(job_id, v));
                }
                let token = self.next_token();
                Ok(vec![Step::Publish(Outgoing::new(
                    topic(&self.thing, &format!("{job_id}/get")),
                    json!({ "clientToken": token, "includeJobDocument": false }),
                ))])
            }
            // Already terminal (answered before, but the answer was lost;
            // or cancelled in the cloud): nothing more is owed.
            "InvalidStateTransition" | "TerminalStateReached" | "ResourceNotFound" if owed => {
                self.settle(job_id, doc)
            }
            _ => Ok(vec![Step::Log(
                Level::Warn,
                format!(
                    "jobs: update of job {job_id} rejected: {}",
                    crate::shadow::describe(doc)
                ),
            )]),
        }
    }

    fn on_described(&mut self, job_id: &str, doc: &Value) -> Vec<Step> {
        match doc
            .pointer("/execution/versionNumber")
            .and_then(Value::as_u64)
        {
            Some(v) => self.on_version(job_id, v),
            None => Vec::new(),
        }
    }

    /// Learnt the execution's current version: re-send what is owed.
    fn on_version(&mut self, job_id: &str, version: u64) -> Vec<Step> {
        if let Some(c) = self.state.current.as_mut().filter(|c| c.job_id == job_id) {
            c.version = Some(version);
        }
        let Some(o) = self.state.owed.iter_mut().find(|o| o.job_id == job_id) else {
            return Vec::new();
        };
        o.version = Some(version);
        let o = o.clone();
        vec![self.update(&o.job_id, &o.status, &o.details, o.version)]
    }
}

fn describe_short(doc: &Value) -> String {
    doc.pointer("/executionState/status")
        .and_then(Value::as_str)
        .map(|s| format!("({s})"))
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "jobs_tests.rs"]
mod tests;
