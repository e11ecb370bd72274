//! The boot state as a plain value with pure transitions; the backends only
//! read and write it. Tested without a disk.

pub use keel_contract::Slot;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("slot {0} is on trial and not yet confirmed; confirm it (or let it roll back) before another update")]
    OnTrial(char),
    #[error("slot {0} is the active slot; an update goes to the other slot")]
    TrialOfActive(char),
    #[error("nothing to revert: slot {0} is active and no other slot is pending")]
    NothingToRevert(char),
}

/// Which slot boots. `active` is the confirmed default; `trial` a slot to
/// boot on probation (`tries` times at most on U-Boot boards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootState {
    pub active: Slot,
    pub trial: Option<Slot>,
    pub tries: u32,
}

impl Default for BootState {
    fn default() -> Self {
        BootState {
            active: Slot::A,
            trial: None,
            tries: 0,
        }
    }
}

impl BootState {
    /// The running slot is on trial when it is not the confirmed default.
    pub fn on_trial(&self, booted: Slot) -> bool {
        booted != self.active
    }

    /// Boot `slot` next, on probation.
    pub fn set_trial(&self, booted: Slot, slot: Slot) -> Result<BootState, StateError> {
        if self.on_trial(booted) {
            return Err(StateError::OnTrial(booted.letter()));
        }
        if slot == self.active {
            return Err(StateError::TrialOfActive(slot.letter()));
        }
        Ok(BootState {
            active: self.active,
            trial: Some(slot),
            tries: 0,
        })
    }

    /// The running slot passed its health check: make it the default.
    pub fn confirm(&self, booted: Slot) -> BootState {
        BootState {
            active: booted,
            trial: None,
            tries: 0,
        }
    }

    /// By hand: cancel a pending trial, or switch back to the other slot.
    pub fn revert(&self, booted: Slot) -> Result<BootState, StateError> {
        if self.trial.is_some() || self.on_trial(booted) {
            return Ok(BootState {
                active: self.active,
                trial: None,
                tries: 0,
            });
        }
        let _ = booted;
        Ok(BootState {
            active: self.active.other(),
            trial: None,
            tries: 0,
        })
    }

    /// What the U-Boot script does at power-on: returns the slot to boot
    /// and the state it persists first (a model of the script, for tests).
    pub fn boot(&self, max_tries: u32) -> (Slot, BootState) {
        match self.trial {
            Some(t) if self.tries < max_tries => (
                t,
                BootState {
                    tries: self.tries + 1,
                    ..*self
                },
            ),
            // Gave up: tries = max + 1 tells the agent the trial was abandoned.
            Some(_) => (
                self.active,
                BootState {
                    trial: None,
                    tries: max_tries + 1,
                    ..*self
                },
            ),
            None => (self.active, *self),
        }
    }
}

/// A boot backend: where the state lives and how a trial boot is started.
pub trait BootFlow {
    fn read(&self, card: &mut crate::Card) -> Result<BootState, crate::CardError>;
    /// Persists `state` so that a power cut at any instant leaves either the
    /// old or the new state in force (see docs/power-cut.md).
    fn write(&self, card: &mut crate::Card, state: &BootState) -> Result<(), crate::CardError>;
    /// The reboot(2) argument that starts a trial boot, if the backend needs
    /// one (the Pi firmware's one-shot "0 tryboot").
    fn trial_reboot_arg(&self) -> Option<&'static str>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_confirm_cycle() {
        let s = BootState::default();
        let t = s.set_trial(Slot::A, Slot::B).unwrap();
        assert_eq!(t.trial, Some(Slot::B));
        // The bootloader boots B on trial; B is not yet the default.
        let (slot, t) = t.boot(3);
        assert_eq!(slot, Slot::B);
        assert!(t.on_trial(Slot::B));
        assert_eq!(t.set_trial(Slot::B, Slot::A), Err(StateError::OnTrial('b')));
        let c = t.confirm(Slot::B);
        assert_eq!(
            c,
            BootState {
                active: Slot::B,
                trial: None,
                tries: 0
            }
        );
    }

    #[test]
    fn unconfirmed_trial_falls_back_after_max_tries() {
        let mut s = BootState::default().set_trial(Slot::A, Slot::B).unwrap();
        let mut booted = Vec::new();
        for _ in 0..5 {
            let (slot, next) = s.boot(3);
            booted.push(slot);
            s = next;
        }
        assert_eq!(booted, [Slot::B, Slot::B, Slot::B, Slot::A, Slot::A]);
        assert_eq!(
            s,
            BootState {
                active: Slot::A,
                trial: None,
                tries: 4
            }
        );
    }

    #[test]
    fn revert_cancels_trial_or_switches_back() {
        let s = BootState::default().set_trial(Slot::A, Slot::B).unwrap();
        assert_eq!(s.revert(Slot::A).unwrap(), BootState::default());
        let confirmed = BootState {
            active: Slot::B,
            trial: None,
            tries: 0,
        };
        assert_eq!(confirmed.revert(Slot::B).unwrap().active, Slot::A);
        assert_eq!(
            BootState::default().set_trial(Slot::A, Slot::A),
            Err(StateError::TrialOfActive('a'))
        );
    }
}
