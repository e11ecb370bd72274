//! Polling mode, for devices that cannot keep a connection: every interval
//! the device fetches its channel's manifest over HTTPS and, when it names
//! a newer version, runs the same update path a job would.
//!
//! A version that failed (download, check, or rolled back after the
//! reboot) is remembered and not tried again, or a bad release would make
//! every device download and roll back once per interval forever.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::PollingConfig;
use crate::device::{DeviceStatus, UpdateOutcome};
use crate::jobdoc::{ChannelManifest, UpdateOrder};
use crate::store::{self, StoreError};

pub const POLL_FILE: &str = "poll.json";
/// Manifests are a few hundred bytes; more is not one.
const MAX_MANIFEST: u64 = 64 * 1024;
/// Failed versions remembered.
const SKIP_KEPT: usize = 16;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollState {
    /// The version being installed (recorded before the download).
    pub attempt: Option<String>,
    /// Versions that failed here; never tried again.
    pub skip: Vec<String>,
}

/// What one look at the manifest decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    UpToDate,
    /// Newer, but it failed here before.
    Skipped(String),
    Update(UpdateOrder),
}

/// Compares the manifest with what runs.
pub fn decide(manifest: &ChannelManifest, running: &str, state: &PollState) -> Decision {
    // A version that cannot be ordered is never installed by polling.
    let newer = bundle::version::compare(&manifest.version, running).is_ok_and(|o| o.is_gt());
    if !newer && bundle::version::check(&manifest.version).is_ok() {
        Decision::UpToDate
    } else if !newer || state.skip.contains(&manifest.version) {
        Decision::Skipped(manifest.version.clone())
    } else {
        Decision::Update(manifest.order())
    }
}

pub struct Poller {
    pub config: PollingConfig,
    path: PathBuf,
    pub state: PollState,
    next_at: Instant,
}

impl Poller {
    pub fn open(config: PollingConfig, state_dir: &Path) -> Result<Poller, StoreError> {
        let path = state_dir.join(POLL_FILE);
        Ok(Poller {
            config,
            state: store::load(&path)?,
            path,
            next_at: Instant::now(),
        })
    }

    /// The manifest URL for `channel`.
    pub fn url(&self, channel: &str) -> String {
        self.config.manifest_url.replace("{channel}", channel)
    }

    pub fn due(&self) -> bool {
        Instant::now() >= self.next_at
    }

    pub fn checked(&mut self) {
        self.next_at = Instant::now() + self.config.interval;
    }

    /// Settles the attempt a restart interrupted: `Some(line)` to log.
    pub fn settle(
        &mut self,
        outcome: &UpdateOutcome,
        status: &DeviceStatus,
    ) -> Result<Option<String>, StoreError> {
        let Some(version) = self.state.attempt.clone() else {
            return Ok(None);
        };
        let line = match outcome {
            UpdateOutcome::Trial | UpdateOutcome::Staged => return Ok(None),
            UpdateOutcome::Confirmed { .. } => format!("polling: {version} is installed"),
            _ if bundle::version::compare(&version, &status.firmware_version)
                .is_ok_and(|o| o.is_eq()) =>
            {
                format!("polling: {version} is installed")
            }
            UpdateOutcome::Failed { reason } => {
                self.skip(&version);
                format!("polling: {version} failed ({reason}); it will not be tried again")
            }
            UpdateOutcome::Idle => {
                self.skip(&version);
                format!("polling: {version} did not take effect; it will not be tried again")
            }
        };
        self.state.attempt = None;
        store::save(&self.path, &self.state)?;
        Ok(Some(line))
    }

    fn skip(&mut self, version: &str) {
        if !self.state.skip.iter().any(|v| v == version) {
            self.state.skip.push(version.to_string());
        }
        let excess = self.state.skip.len().saturating_sub(SKIP_KEPT);
        self.state.skip.drain(..excess);
    }

    /// Records the attempt before the download starts.
    pub fn begin(&mut self, version: &str) -> Result<(), StoreError> {
        self.state.attempt = Some(version.to_string());
        store::save(&self.path, &self.state)
    }

    /// The update failed before any reboot.
    pub fn failed(&mut self, version: &str) -> Result<(), StoreError> {
        self.state.attempt = None;
        self.skip(version);
        store::save(&self.path, &self.state)
    }

    /// The update needed no reboot (already running).
    pub fn done(&mut self) -> Result<(), StoreError> {
        self.state.attempt = None;
        store::save(&self.path, &self.state)
    }
}

/// Fetches and parses a manifest over HTTPS.
pub fn fetch(
    url: &str,
    trust: &net::Trust,
    resolver: &net::Resolver,
) -> Result<ChannelManifest, String> {
    let options = net::GetOptions {
        max_length: Some(MAX_MANIFEST),
        ..net::GetOptions::default()
    };
    let response = net::get(url, trust, resolver, &options).map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    response
        .take(MAX_MANIFEST + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("reading {url}: {e}"))?;
    if body.len() as u64 > MAX_MANIFEST {
        return Err(format!(
            "{url} is larger than {MAX_MANIFEST} bytes: not a channel manifest"
        ));
    }
    ChannelManifest::parse(&body).map_err(|e| format!("{url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(v: &str) -> ChannelManifest {
        ChannelManifest {
            version: v.into(),
            url: "https://h/u.fw".into(),
            sha256: None,
        }
    }

    #[test]
    fn newer_only_and_never_a_failed_one_again() {
        let mut st = PollState::default();
        assert_eq!(decide(&manifest("1.0.0"), "1.0.0", &st), Decision::UpToDate);
        assert_eq!(decide(&manifest("0.9"), "1.0.0", &st), Decision::UpToDate);
        assert!(
            matches!(decide(&manifest("1.1.0"), "1.0.0", &st), Decision::Update(o) if o.version.as_deref() == Some("1.1.0"))
        );
        st.skip.push("1.1.0".into());
        assert_eq!(
            decide(&manifest("1.1.0"), "1.0.0", &st),
            Decision::Skipped("1.1.0".into())
        );
    }

    #[test]
    fn a_rollback_after_the_reboot_is_remembered() {
        let d = tempfile::tempdir().unwrap();
        let cfg = PollingConfig {
            manifest_url: "https://h/{channel}.json".into(),
            interval: std::time::Duration::from_secs(60),
        };
        let mut p = Poller::open(cfg.clone(), d.path()).unwrap();
        assert_eq!(p.url("beta"), "https://h/beta.json");
        p.begin("2.0").unwrap();
        let st = DeviceStatus {
            firmware_version: "1.0".into(),
            ..DeviceStatus::default()
        };
        // After the "reboot": a fresh poller on the same directory.
        let mut p = Poller::open(cfg, d.path()).unwrap();
        assert_eq!(p.settle(&UpdateOutcome::Trial, &st).unwrap(), None);
        let line = p
            .settle(
                &UpdateOutcome::Failed {
                    reason: "rolled back".into(),
                },
                &st,
            )
            .unwrap()
            .unwrap();
        assert!(line.contains("not be tried again"), "{line}");
        assert_eq!(p.state.skip, ["2.0"]);
        assert_eq!(p.state.attempt, None);
    }
}
