//! The boot state as a plain value with pure transitions; the backend only
//! reads and writes it. Tested without a disk.
//!
//! Besides which slot is the confirmed default (`active`) and which boots
//! next on probation (`trial`), the state records per slot whether it holds
//! a complete, verified image. The applier marks its target slot unbootable
//! before the first byte is written and complete only after the read-back,
//! so no command, no trial and no fallback ever selects a half-written or
//! empty slot.

use card_format::bootstate::slot_index;
pub use card_format::bootstate::SlotMark;
pub use keel_contract::Slot;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("slot {0} is on trial and not yet confirmed; confirm it (or let it roll back) before another update")]
    OnTrial(Slot),
    #[error("slot {0} is the active slot; an update goes to the other slot")]
    TargetIsActive(Slot),
    #[error("slot {0} holds no complete image (it was never written, or an update to it did not finish), so it cannot boot; install an update first")]
    NotBootable(Slot),
    #[error("slot {0} was not marked for writing; the applier marks a slot before it writes it")]
    NotMarked(Slot),
}

/// Which slot boots, and what each slot holds. `tries` counts trial boots
/// (the bootloader increments it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootState {
    pub active: Slot,
    pub trial: Option<Slot>,
    pub tries: u32,
    pub slots: [SlotMark; 2],
}

impl Default for BootState {
    /// What a card reads as when no record is valid: slot a, as the boot
    /// script decides; slot a is assumed bootable, slot b is not.
    fn default() -> Self {
        BootState {
            active: Slot::A,
            trial: None,
            tries: 0,
            slots: [
                SlotMark {
                    bootable: true,
                    image: None,
                },
                SlotMark::default(),
            ],
        }
    }
}

impl BootState {
    pub fn mark(&self, s: Slot) -> &SlotMark {
        &self.slots[slot_index(s)]
    }

    fn with_mark(&self, s: Slot, mark: SlotMark) -> BootState {
        let mut next = self.clone();
        next.slots[slot_index(s)] = mark;
        next
    }

    /// The running slot is on trial when it is not the confirmed default.
    pub fn on_trial(&self, booted: Slot) -> bool {
        booted != self.active
    }

    /// Before the first write to `target`: it holds nothing bootable from
    /// now on, and any trial of it is cancelled. Only from a confirmed
    /// slot, and never the running one.
    pub fn begin_write(&self, booted: Slot, target: Slot) -> Result<BootState, StateError> {
        if self.on_trial(booted) {
            return Err(StateError::OnTrial(booted));
        }
        if target == self.active || target == booted {
            return Err(StateError::TargetIsActive(target));
        }
        let mut next = self.with_mark(target, SlotMark::default());
        if next.trial == Some(target) {
            next.trial = None;
            next.tries = 0;
        }
        Ok(next)
    }

    /// After `target` was written and read back: it holds `image` and boots
    /// next, on probation.
    pub fn finish_write(&self, target: Slot, image: &str) -> Result<BootState, StateError> {
        if target == self.active {
            return Err(StateError::TargetIsActive(target));
        }
        if self.mark(target).bootable {
            return Err(StateError::NotMarked(target));
        }
        let mut next = self.with_mark(target, SlotMark::complete(image));
        next.trial = Some(target);
        next.tries = 0;
        Ok(next)
    }

    /// The running slot passed its health check: make it the default.
    pub fn confirm(&self, booted: Slot) -> BootState {
        let mut next = self.clone();
        next.active = booted;
        next.trial = None;
        next.tries = 0;
        // A slot that runs and is healthy is complete, whatever an older
        // record said.
        if !next.mark(booted).bootable {
            next.slots[slot_index(booted)].bootable = true;
        }
        next
    }

    /// By hand: cancel a pending or running trial (the default boots next),
    /// or else boot the other slot next, on probation — only if it holds a
    /// complete image.
    pub fn revert(&self, booted: Slot) -> Result<BootState, StateError> {
        let mut next = self.clone();
        next.tries = 0;
        if self.trial.is_some() || self.on_trial(booted) {
            next.trial = None;
            return Ok(next);
        }
        let other = self.active.other();
        if !self.mark(other).bootable {
            return Err(StateError::NotBootable(other));
        }
        next.trial = Some(other);
        Ok(next)
    }

    /// What the U-Boot script does at power-on: returns the slot to boot
    /// and the state it persists first (a model of the script, for tests).
    /// A trial of a slot that is not complete is dropped.
    pub fn boot(&self, max_tries: u32) -> (Slot, BootState) {
        let mut next = self.clone();
        match self.trial {
            Some(t) if t != self.active && !self.mark(t).bootable => {
                next.trial = None;
                (self.active, next)
            }
            Some(t) if t != self.active && self.tries < max_tries => {
                next.tries += 1;
                (t, next)
            }
            // Gave up: tries = max + 1 tells the agent the trial was abandoned.
            Some(t) if t != self.active => {
                next.trial = None;
                next.tries = max_tries + 1;
                (self.active, next)
            }
            _ => (self.active, next),
        }
    }
}

/// A boot backend: where the state lives and how a trial boot is started.
pub trait BootFlow {
    fn read(&self, card: &mut crate::Card) -> Result<BootState, crate::CardError>;
    /// Persists `state` so that a power cut at any instant leaves either the
    /// old or the new state in force (see docs/power-cut.md).
    fn write(&self, card: &mut crate::Card, state: &BootState) -> Result<(), crate::CardError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> BootState {
        BootState {
            slots: [SlotMark::complete("1@x"), SlotMark::default()],
            ..BootState::default()
        }
    }

    fn updated_to_b() -> BootState {
        let s = fresh().begin_write(Slot::A, Slot::B).unwrap();
        s.finish_write(Slot::B, "2@y").unwrap()
    }

    #[test]
    fn update_confirm_cycle() {
        let marked = fresh().begin_write(Slot::A, Slot::B).unwrap();
        assert!(!marked.mark(Slot::B).bootable);
        assert_eq!(marked.trial, None);
        let t = marked.finish_write(Slot::B, "2@y").unwrap();
        assert_eq!(t.trial, Some(Slot::B));
        assert_eq!(t.mark(Slot::B), &SlotMark::complete("2@y"));
        // The bootloader boots B on trial; B is not yet the default.
        let (slot, t) = t.boot(3);
        assert_eq!(slot, Slot::B);
        assert!(t.on_trial(Slot::B));
        assert_eq!(
            t.begin_write(Slot::B, Slot::A),
            Err(StateError::OnTrial(Slot::B))
        );
        let c = t.confirm(Slot::B);
        assert_eq!((c.active, c.trial, c.tries), (Slot::B, None, 0));
        assert_eq!(c.mark(Slot::A), &SlotMark::complete("1@x"));
    }

    #[test]
    fn unconfirmed_trial_falls_back_after_max_tries() {
        let mut s = updated_to_b();
        let mut booted = Vec::new();
        for _ in 0..5 {
            let (slot, next) = s.boot(3);
            booted.push(slot);
            s = next;
        }
        assert_eq!(booted, [Slot::B, Slot::B, Slot::B, Slot::A, Slot::A]);
        assert_eq!((s.active, s.trial, s.tries), (Slot::A, None, 4));
    }

    #[test]
    fn an_incomplete_slot_is_never_booted_nor_reverted_to() {
        // A fresh card: B was never written.
        assert_eq!(
            fresh().revert(Slot::A),
            Err(StateError::NotBootable(Slot::B))
        );
        // An update rejected halfway: B marked, never finished.
        let half = fresh().begin_write(Slot::A, Slot::B).unwrap();
        assert_eq!(half.revert(Slot::A), Err(StateError::NotBootable(Slot::B)));
        // A hand-made trial of an incomplete slot: the script drops it.
        let forced = BootState {
            trial: Some(Slot::B),
            ..half
        };
        let (slot, next) = forced.boot(3);
        assert_eq!((slot, next.trial), (Slot::A, None));
    }

    #[test]
    fn revert_cancels_a_trial_or_tries_the_other_complete_slot() {
        let pending = updated_to_b();
        let r = pending.revert(Slot::A).unwrap();
        assert_eq!((r.active, r.trial), (Slot::A, None));
        // Confirmed on B with A complete: A boots next, on trial (not as
        // the permanent default).
        let confirmed = pending.boot(3).1.confirm(Slot::B);
        let r = confirmed.revert(Slot::B).unwrap();
        assert_eq!((r.active, r.trial), (Slot::B, Some(Slot::A)));
        // While on trial: revert cancels the trial; the default boots next.
        let on_trial = pending.boot(3).1;
        let r = on_trial.revert(Slot::B).unwrap();
        assert_eq!((r.active, r.trial), (Slot::A, None));
    }

    #[test]
    fn the_running_slot_is_never_a_target() {
        let s = fresh();
        assert_eq!(
            s.begin_write(Slot::A, Slot::A),
            Err(StateError::TargetIsActive(Slot::A))
        );
        let marked = s.begin_write(Slot::A, Slot::B).unwrap();
        assert!(marked.finish_write(Slot::A, "x").is_err());
        // A complete slot must be marked before it is written again.
        let confirmed = updated_to_b().boot(3).1.confirm(Slot::B);
        assert_eq!(
            confirmed.finish_write(Slot::A, "3@z"),
            Err(StateError::NotMarked(Slot::A))
        );
    }
}
