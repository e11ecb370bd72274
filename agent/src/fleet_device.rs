//! The agent as the fleet client's [`fleet::Device`]: what the device
//! reports to the cloud, and an update the cloud asks for, done with the
//! same code as `agent update` (download, apply, pending record).

use std::path::Path;
use std::time::Duration;

use fleet::{DeviceStatus, UpdateError, UpdateOutcome, UpdateStarted};
use keel_contract::{paths, Slot};
use update::BootState;

use crate::device::Device;
use crate::ops::{self, BootControl, BundleSource, CardControl, Init, RealInit};
use crate::store::{Pending, Store};

pub struct AgentDevice {
    dev: Device,
    store: Store,
    /// Besides the built-in roots and /etc/keel/ca-certificates/, downloads
    /// trust the fleet's own CA bundle (a local hub serves bundles with a
    /// certificate from its development CA).
    fleet_ca: Option<std::path::PathBuf>,
    say: fn(&str),
}

impl AgentDevice {
    pub fn new(
        dev: Device,
        store: Store,
        fleet_ca: Option<std::path::PathBuf>,
        say: fn(&str),
    ) -> AgentDevice {
        AgentDevice {
            dev,
            store,
            fleet_ca,
            say,
        }
    }

    fn boot(&self) -> Result<CardControl, crate::AgentError> {
        Ok(CardControl {
            path: self.dev.card_path()?,
            flow: self.dev.flow()?,
        })
    }

    fn state(&self) -> Option<(Slot, BootState)> {
        let booted = self.dev.booted().ok()?;
        let state = self.boot().ok()?.read().ok()?;
        Some((booted, state))
    }
}

fn uptime() -> Duration {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or_default()
}

/// The last event that says what became of an update, from the agent's log.
fn last_update_event(events: &str) -> Option<&str> {
    events.lines().rev().find(|l| {
        [
            "update:",
            "confirmed:",
            "rolled back:",
            "reverted:",
            "health check failed:",
        ]
        .iter()
        .any(|p| l.starts_with(p))
    })
}

/// What became of the last update, from the pending record, the boot
/// state and the event log (pure, for tests).
pub fn outcome(
    pending: Option<&Pending>,
    booted: Slot,
    state: &BootState,
    events: &str,
) -> UpdateOutcome {
    if let Some(p) = pending {
        return if p.slot == booted {
            if state.on_trial(booted) {
                UpdateOutcome::Trial
            } else {
                UpdateOutcome::Confirmed {
                    version: p.version.clone(),
                }
            }
        } else if state.trial == Some(p.slot) {
            UpdateOutcome::Staged
        } else {
            UpdateOutcome::Failed {
                reason: format!(
                    "version {} never confirmed; the device runs slot {booted} again",
                    p.version
                ),
            }
        };
    }
    match last_update_event(events) {
        Some(l) if l.starts_with("confirmed:") => UpdateOutcome::Confirmed {
            version: l.rsplit(' ').next().unwrap_or_default().to_string(),
        },
        Some(l) if l.starts_with("rolled back:") || l.starts_with("health check failed:") => {
            UpdateOutcome::Failed {
                reason: l.to_string(),
            }
        }
        _ => UpdateOutcome::Idle,
    }
}

impl fleet::Device for AgentDevice {
    fn status(&self) -> DeviceStatus {
        let state = self.state();
        let events = self.store.events().unwrap_or_default();
        DeviceStatus {
            firmware_version: self.dev.version().unwrap_or("unknown").to_string(),
            running_slot: state
                .as_ref()
                .map_or_else(|| "unknown".to_string(), |(s, _)| s.to_string()),
            confirmed: state.as_ref().is_some_and(|(b, s)| !s.on_trial(*b)),
            last_update: last_update_event(&events).map(str::to_string),
            uptime: uptime(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            data_free_bytes: crate::sys::free_bytes(Path::new(paths::DATA)).ok(),
        }
    }

    fn start_update(
        &mut self,
        url: &str,
        expected_sha256: Option<[u8; 32]>,
        progress: &mut dyn FnMut(u8),
    ) -> Result<UpdateStarted, UpdateError> {
        let fail = |e: crate::AgentError| UpdateError {
            reason: e.to_string(),
        };
        let mut trust = net::Trust::system().map_err(|e| fail(e.into()))?;
        if let Some(ca) = &self.fleet_ca {
            trust.add_pem_file(ca).map_err(|e| fail(e.into()))?;
        }
        let mut boot = self.boot().map_err(fail)?;
        let say = self.say;
        let result = ops::install(
            &self.dev,
            &mut boot,
            &self.store,
            BundleSource::Url { url, trust },
            false,
            expected_sha256,
            progress,
            &mut |l: &str| say(l),
        );
        match result {
            Ok(_) => Ok(UpdateStarted::RebootRequired),
            Err(e) => {
                if self.store.exists() {
                    let _ = self.store.record(&format!("update failed: {e}"));
                }
                Err(fail(e))
            }
        }
    }

    fn update_outcome(&self) -> UpdateOutcome {
        let pending = self.store.pending().ok().flatten();
        let events = self.store.events().unwrap_or_default();
        match self.state() {
            Some((booted, state)) => outcome(pending.as_ref(), booted, &state, &events),
            None => UpdateOutcome::Idle,
        }
    }

    fn reboot(&mut self) {
        if let Err(e) = RealInit.reboot(None) {
            (self.say)(&format!("agent: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use card_format::bootstate::SlotMark;

    fn state(active: Slot, trial: Option<Slot>) -> BootState {
        BootState {
            active,
            trial,
            tries: 0,
            slots: [SlotMark::complete("1@x"), SlotMark::complete("2@y")],
        }
    }

    fn pending(slot: Slot) -> Pending {
        Pending {
            slot,
            version: "0.2.0".into(),
        }
    }

    #[test]
    fn outcomes_follow_the_update_through_its_reboot() {
        let p = pending(Slot::B);
        // Written, waiting for the reboot.
        assert_eq!(
            outcome(Some(&p), Slot::A, &state(Slot::A, Some(Slot::B)), ""),
            UpdateOutcome::Staged
        );
        // Booted on trial.
        assert_eq!(
            outcome(Some(&p), Slot::B, &state(Slot::A, Some(Slot::B)), ""),
            UpdateOutcome::Trial
        );
        // Confirmed: the pending record is gone, the event says so.
        assert_eq!(
            outcome(
                None,
                Slot::B,
                &state(Slot::B, None),
                "update: x\nconfirmed: slot b version 0.2.0\n"
            ),
            UpdateOutcome::Confirmed {
                version: "0.2.0".into()
            }
        );
        // Rolled back before the agent noted it.
        assert!(matches!(
            outcome(Some(&p), Slot::A, &state(Slot::A, None), ""),
            UpdateOutcome::Failed { .. }
        ));
        // Rolled back and noted.
        assert!(matches!(
            outcome(None, Slot::A, &state(Slot::A, None), "update: x\nrolled back: pending update (slot=b version=0.2.0) never confirmed; running slot a\n"),
            UpdateOutcome::Failed { .. }
        ));
        assert_eq!(
            outcome(None, Slot::A, &state(Slot::A, None), ""),
            UpdateOutcome::Idle
        );
    }
}
