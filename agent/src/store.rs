//! The agent's records on the data partition: the update waiting for its
//! trial boot (`pending`) and a log of updates, confirmations and
//! rollbacks (`events`). Every write goes through `durable`: fsynced,
//! atomic, and never through a symlink or into a FIFO someone planted.

use std::path::{Path, PathBuf};

use keel_contract::{paths, Slot};

use crate::AgentError;

/// State files are a line or two; anything larger is not ours.
const MAX_STATE: u64 = 4096;

/// An update written to a slot and not yet confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub slot: Slot,
    pub version: String,
}

impl Pending {
    pub fn to_line(&self) -> String {
        format!("slot={} version={}", self.slot, self.version)
    }

    pub fn parse(text: &str) -> Option<Pending> {
        let mut slot = None;
        let mut version = None;
        for word in text.split_whitespace() {
            match word.split_once('=') {
                Some(("slot", v)) => slot = Slot::parse(v),
                Some(("version", v)) => version = Some(v.to_string()),
                _ => {}
            }
        }
        Some(Pending {
            slot: slot?,
            version: version?,
        })
    }
}

/// Where the records live: /data/keel on a device, a temporary directory
/// in tests.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn device() -> Store {
        Store::at(Path::new(paths::DATA_KEEL))
    }

    pub fn at(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    fn pending_path(&self) -> PathBuf {
        self.dir.join("pending")
    }

    fn events_path(&self) -> PathBuf {
        self.dir.join("events")
    }

    /// Whether the data partition holds Keel's directory (a device, not a
    /// host where the agent was run by mistake).
    pub fn exists(&self) -> bool {
        self.dir.is_dir()
    }

    pub fn pending(&self) -> Result<Option<Pending>, AgentError> {
        let path = self.pending_path();
        let text = durable::read_to_string(&path, MAX_STATE)
            .map_err(AgentError::io(format!("cannot read {}", path.display())))?;
        Ok(text.as_deref().and_then(Pending::parse))
    }

    pub fn set_pending(&self, p: &Pending) -> Result<(), AgentError> {
        let path = self.pending_path();
        durable::create_dir_all(&self.dir).map_err(AgentError::io(format!(
            "cannot create {}",
            self.dir.display()
        )))?;
        durable::replace(&path, format!("{}\n", p.to_line()).as_bytes(), 0o644)
            .map_err(AgentError::io(format!("cannot write {}", path.display())))
    }

    pub fn clear_pending(&self) -> Result<(), AgentError> {
        let path = self.pending_path();
        durable::remove(&path).map_err(AgentError::io(format!("cannot remove {}", path.display())))
    }

    /// Appends one event line.
    pub fn record(&self, line: &str) -> Result<(), AgentError> {
        let path = self.events_path();
        durable::create_dir_all(&self.dir).map_err(AgentError::io(format!(
            "cannot create {}",
            self.dir.display()
        )))?;
        let line = line.replace(['\n', '\r'], " ");
        durable::append_line(&path, &line, 0o644)
            .map_err(AgentError::io(format!("cannot write {}", path.display())))
    }

    pub fn events(&self) -> Result<String, AgentError> {
        let path = self.events_path();
        Ok(durable::read_to_string(&path, 1 << 20)
            .map_err(AgentError::io(format!("cannot read {}", path.display())))?
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_round_trips_and_clears() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::at(&d.path().join("keel"));
        assert_eq!(s.pending().unwrap(), None);
        let p = Pending {
            slot: Slot::B,
            version: "0.2.0".into(),
        };
        s.set_pending(&p).unwrap();
        assert_eq!(s.pending().unwrap(), Some(p));
        s.clear_pending().unwrap();
        assert_eq!(s.pending().unwrap(), None);
        s.clear_pending().unwrap();
    }

    #[test]
    fn events_are_single_lines() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::at(d.path());
        s.record("one\ntwo").unwrap();
        s.record("three").unwrap();
        assert_eq!(s.events().unwrap(), "one two\nthree\n");
    }

    #[test]
    fn a_planted_symlink_is_not_written_through() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join("events")).unwrap();
        assert!(Store::at(d.path()).record("x").is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }
}
