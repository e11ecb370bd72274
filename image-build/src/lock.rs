//! `board-configs/<board>.lock`: the Debian packages a board was built from,
//! pinned by version and sha256 (Cargo.lock semantics, see docs/artifacts.md).

use std::path::Path;

use serde::{Deserialize, Serialize};

pub const LOCK_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read lock file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("lock file {path} is corrupt ({message}); delete it and build without --locked to regenerate it")]
    Parse { path: String, message: String },
    #[error("lock file {path} has format {found}, this Keel reads format {LOCK_FORMAT}; rebuild without --locked to rewrite it")]
    Format { path: String, found: u32 },
    #[error("cannot write lock file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    /// Name as the board config asks for it (may be a metapackage).
    pub name: String,
    /// The package actually fetched (a metapackage is followed to it).
    pub resolved: String,
    pub version: String,
    pub arch: String,
    /// The .deb's file name in the archive's pool.
    pub filename: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub format: u32,
    #[serde(default, rename = "package")]
    pub packages: Vec<LockedPackage>,
}

impl LockFile {
    pub fn new(packages: Vec<LockedPackage>) -> Self {
        LockFile {
            format: LOCK_FORMAT,
            packages,
        }
    }

    pub fn get(&self, name: &str) -> Option<&LockedPackage> {
        self.packages.iter().find(|p| p.name == name)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, LockError> {
        let lock: LockFile = toml::from_str(text).map_err(|e| LockError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        if lock.format != LOCK_FORMAT {
            return Err(LockError::Format {
                path: path.display().to_string(),
                found: lock.format,
            });
        }
        Ok(lock)
    }

    /// None when the file does not exist yet.
    pub fn load(path: &Path) -> Result<Option<Self>, LockError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LockError::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("lock file fields always serialize");
        format!("# Pinned board artifacts, written by `cargo xtask build`; see docs/artifacts.md.\n{body}")
    }

    /// Written to a temporary name and renamed, so an interrupted build never
    /// leaves half a lock file.
    pub fn save(&self, path: &Path) -> Result<(), LockError> {
        let err = |source| LockError::Write {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("lock.tmp");
        std::fs::write(&tmp, self.to_toml()).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LockFile {
        LockFile::new(vec![LockedPackage {
            name: "linux-image-arm64".into(),
            resolved: "linux-image-6.1.0-50-arm64".into(),
            version: "6.1.176-1".into(),
            arch: "arm64".into(),
            filename:
                "pool/main/l/linux-signed-arm64/linux-image-6.1.0-50-arm64_6.1.176-1_arm64.deb"
                    .into(),
            size: 59515068,
            sha256: "ab".repeat(32),
        }])
    }

    #[test]
    fn round_trips_through_toml() {
        let lock = sample();
        let text = lock.to_toml();
        assert!(text.contains("[[package]]"), "{text}");
        assert_eq!(LockFile::parse(&text, Path::new("x.lock")).unwrap(), lock);
    }

    /// A rebuild must not rewrite a committed lock file just because the
    /// toml crate formats differently: they read back and write out the same.
    #[test]
    fn committed_lock_files_are_written_back_unchanged() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../board-configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "lock") {
                let text = std::fs::read_to_string(&path).unwrap();
                let lock = LockFile::parse(&text, &path).unwrap();
                assert_eq!(lock.to_toml(), text, "{}", path.display());
                seen += 1;
            }
        }
        assert!(seen >= 5, "only {seen} lock files in {}", dir.display());
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.lock");
        assert_eq!(LockFile::load(&path).unwrap(), None);
        sample().save(&path).unwrap();
        assert_eq!(LockFile::load(&path).unwrap(), Some(sample()));
        assert!(!dir.path().join("b.lock.tmp").exists());
    }

    #[test]
    fn rejects_corrupt_and_future_formats() {
        let err = LockFile::parse("format = 1\n[[package]]\nname = 3\n", Path::new("x.lock"))
            .unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        let err = LockFile::parse("format = 9\n", Path::new("x.lock")).unwrap_err();
        assert!(err.to_string().contains("format 9"), "{err}");
    }
}
