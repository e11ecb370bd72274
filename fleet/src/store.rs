//! The fleet client's state on /data, one JSON file each, written through
//! `durable` (temporary file, fsync, rename, fsync of the directory): after
//! a power cut a file holds the old state or the new, never a mix.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// State files are small; a larger one is not ours.
const MAX_STATE: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged ({detail}); remove it to start over (a job it held will be reported again by the cloud)")]
    Damaged { path: PathBuf, detail: String },
    #[error("cannot write {path}: {source} (is /data full or read-only?)")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn load<T: DeserializeOwned + Default>(path: &Path) -> Result<T, StoreError> {
    let bytes = durable::read(path, MAX_STATE).map_err(|source| StoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    match bytes {
        None => Ok(T::default()),
        Some(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Damaged {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let write = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        durable::create_dir_all(dir).map_err(write)?;
    }
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| write(std::io::Error::other(e)))?;
    durable::replace(path, &bytes, 0o600).map_err(write)
}

#[cfg(test)]
mod tests {
    use crate::jobdoc::UpdateOrder;
    use crate::jobs::{Current, JobsState, Owed, Phase};

    #[test]
    fn the_jobs_state_round_trips_and_a_damaged_file_says_so() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fleet").join("jobs.json");
        let st = JobsState {
            current: Some(Current {
                job_id: "j".into(),
                version: Some(3),
                order: UpdateOrder {
                    url: "https://h/u.fw".into(),
                    sha256: None,
                    version: Some("2".into()),
                },
                phase: Phase::Rebooting,
            }),
            owed: vec![Owed {
                job_id: "k".into(),
                status: "FAILED".into(),
                details: [("reason".to_string(), "x".to_string())].into(),
                version: None,
            }],
            finished: vec!["a".into()],
        };
        super::save(&p, &st).unwrap();
        assert_eq!(super::load::<JobsState>(&p).unwrap(), st);
        std::fs::write(&p, b"{\"current\":").unwrap();
        let err = super::load::<JobsState>(&p).unwrap_err().to_string();
        assert!(
            err.contains("damaged") && err.contains("remove it"),
            "{err}"
        );
    }
}
