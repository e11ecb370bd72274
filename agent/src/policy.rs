//! The agent's decisions as pure functions of what it observed, so every
//! rule is tested without a card, a clock or init.

use std::time::Duration;

use keel_contract::Slot;
use update::BootState;

use crate::store::Pending;

/// What the boot-time daemon does next about the running slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialStep {
    /// The running slot is the confirmed default: nothing to decide.
    Settled,
    /// On trial and healthy: make it the default.
    Confirm,
    /// On trial, not healthy yet, still within the time allowed.
    Wait,
    /// On trial and never healthy in time: reboot, so the bootloader counts
    /// another try (and falls back after the last).
    GiveUp,
}

pub fn trial_step(
    state: &BootState,
    booted: Slot,
    healthy: bool,
    elapsed: Duration,
    timeout: Duration,
) -> TrialStep {
    if !state.on_trial(booted) {
        TrialStep::Settled
    } else if healthy {
        TrialStep::Confirm
    } else if elapsed >= timeout {
        TrialStep::GiveUp
    } else {
        TrialStep::Wait
    }
}

/// An update recorded as pending for a slot the device is not running
/// never confirmed: the bootloader fell back.
pub fn rolled_back(pending: Option<&Pending>, booted: Slot) -> Option<&Pending> {
    pending.filter(|p| p.slot != booted)
}

/// The agent's settings (`/etc/keel/agent.conf`, `key=value` lines; all
/// optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConf {
    /// How long a slot on trial may take to become healthy before the
    /// agent reboots.
    pub trial_timeout: Duration,
}

impl Default for AgentConf {
    fn default() -> Self {
        AgentConf {
            trial_timeout: Duration::from_secs(120),
        }
    }
}

impl AgentConf {
    /// Unknown keys and unreadable values keep the defaults; the returned
    /// list names each problem for the log.
    pub fn parse(text: &str) -> (AgentConf, Vec<String>) {
        let mut conf = AgentConf::default();
        let mut problems = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("trial_timeout", v)) => match v.parse::<u64>() {
                    Ok(s) if (1..=86_400).contains(&s) => {
                        conf.trial_timeout = Duration::from_secs(s)
                    }
                    _ => problems.push(format!(
                        "trial_timeout={v:?} is not a number of seconds from 1 to 86400"
                    )),
                },
                _ => problems.push(format!("unknown setting {line:?}")),
            }
        }
        (conf, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn trial(active: Slot, trial: Slot) -> BootState {
        BootState {
            active,
            trial: Some(trial),
            tries: 1,
            ..BootState::default()
        }
    }

    #[test]
    fn confirms_a_trial_once_healthy() {
        let s = trial(Slot::A, Slot::B);
        assert_eq!(trial_step(&s, Slot::B, true, MIN, MIN), TrialStep::Confirm);
        assert_eq!(
            trial_step(&s, Slot::B, false, Duration::ZERO, MIN),
            TrialStep::Wait
        );
    }

    #[test]
    fn gives_up_on_a_trial_that_never_becomes_healthy() {
        let s = trial(Slot::A, Slot::B);
        assert_eq!(trial_step(&s, Slot::B, false, MIN, MIN), TrialStep::GiveUp);
    }

    #[test]
    fn a_confirmed_slot_is_settled_even_with_a_trial_pending() {
        // An update has been written to B and waits for a reboot: the
        // running A is confirmed and must not be "confirmed" again (that
        // would cancel the pending trial).
        let s = trial(Slot::A, Slot::B);
        assert_eq!(trial_step(&s, Slot::A, true, MIN, MIN), TrialStep::Settled);
        assert_eq!(
            trial_step(&BootState::default(), Slot::A, false, MIN, MIN),
            TrialStep::Settled
        );
    }

    #[test]
    fn notes_a_rollback_only_for_another_slot() {
        let p = Pending {
            slot: Slot::B,
            version: "2".into(),
        };
        assert_eq!(rolled_back(Some(&p), Slot::A), Some(&p));
        assert_eq!(rolled_back(Some(&p), Slot::B), None);
        assert_eq!(rolled_back(None, Slot::A), None);
    }

    #[test]
    fn reads_the_conf_and_names_problems() {
        let (c, p) = AgentConf::parse("# x\ntrial_timeout=20\n");
        assert_eq!((c.trial_timeout, p.len()), (Duration::from_secs(20), 0));
        let (c, p) = AgentConf::parse("trial_timeout=0\nbogus=1\n");
        assert_eq!(c, AgentConf::default());
        assert_eq!(p.len(), 2);
    }
}
