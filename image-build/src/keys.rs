//! Signing keys on the host: creating a pair, choosing the key a build
//! signs with, and the list of public keys an image trusts.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use crate::board::BoardConfig;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{0} already exists; refusing to overwrite a key (pick another NAME or remove it yourself)"
    )]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Bundle(#[from] bundle::BundleError),
    #[error("the signing key is not among the board's [update] trusted_keys, so devices would reject this update; add its .pub file there or sign with a listed key")]
    SignerNotTrusted,
}

fn with_ext(name: &Path, ext: &str) -> PathBuf {
    let mut s = name.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

/// The private and public key files of a pair named `name`.
pub fn pair_paths(name: &Path) -> (PathBuf, PathBuf) {
    (with_ext(name, ".key"), with_ext(name, ".pub"))
}

/// Creates NAME.key (mode 0600) and NAME.pub. Nothing already at either
/// path is touched — not a file, not a directory, not a dangling symlink.
pub fn new_pair(name: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
    let (private, public) = pair_paths(name);
    for p in [&private, &public] {
        if p.symlink_metadata().is_ok() {
            return Err(KeyError::Exists(p.clone()));
        }
    }
    if let Some(dir) = private.parent().filter(|d| !d.as_os_str().is_empty()) {
        durable::create_dir_all(dir).map_err(|source| KeyError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let key = bundle::keys::generate()?;
    let write = |path: &Path, text: String, mode| {
        durable::create_new(path, text.as_bytes(), mode).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists(path.to_path_buf())
            } else {
                KeyError::Write {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })
    };
    write(&private, bundle::keys::signing_key_text(&key), 0o600)?;
    if let Err(e) = write(
        &public,
        bundle::keys::verifying_key_text(&key.verifying_key()),
        0o644,
    ) {
        let _ = std::fs::remove_file(&private);
        return Err(e);
    }
    Ok((private, public))
}

/// The key a build signs with.
pub struct Signer {
    pub key: SigningKey,
    pub path: PathBuf,
    /// The development key, which the build warns about loudly.
    pub development: bool,
    /// The development key was created by this call.
    pub created: bool,
}

/// `explicit` (from `--key` or `KEEL_SIGNING_KEY`), else the development
/// key pair at `dev_name` (created on first use).
pub fn signer(explicit: Option<&Path>, dev_name: &Path) -> Result<Signer, KeyError> {
    if let Some(path) = explicit {
        return Ok(Signer {
            key: bundle::keys::load_signing_key(path)?,
            path: path.to_path_buf(),
            development: false,
            created: false,
        });
    }
    let (private, _) = pair_paths(dev_name);
    let created = !private.exists();
    if created {
        new_pair(dev_name)?;
    }
    Ok(Signer {
        key: bundle::keys::load_signing_key(&private)?,
        path: private,
        development: true,
        created,
    })
}

/// The keys baked into the image as (file name, key text): the board
/// config's list (paths relative to `root`), or else the key this build
/// signs with. A signing key the image would not trust is an error.
pub fn trusted_keys(
    root: &Path,
    cfg: &BoardConfig,
    key: &SigningKey,
) -> Result<Vec<(String, String)>, KeyError> {
    let signer = key.verifying_key();
    if cfg.update.trusted_keys.is_empty() {
        return Ok(vec![(
            "build.pub".into(),
            bundle::keys::verifying_key_text(&signer),
        )]);
    }
    let mut out = Vec::new();
    let mut signer_trusted = false;
    for rel in &cfg.update.trusted_keys {
        let path = root.join(rel);
        let k = bundle::keys::load_verifying_key(&path)?;
        signer_trusted |= k == signer;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| rel.clone());
        out.push((name, bundle::keys::verifying_key_text(&k)));
    }
    if !signer_trusted {
        return Err(KeyError::SignerNotTrusted);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn new_pair_is_private_and_never_overwrites() {
        let d = tempfile::tempdir().unwrap();
        let name = d.path().join("sub/release");
        let (private, public) = new_pair(&name).unwrap();
        assert_eq!(
            std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let before = std::fs::read(&private).unwrap();
        assert!(matches!(new_pair(&name), Err(KeyError::Exists(_))));
        assert_eq!(std::fs::read(&private).unwrap(), before);
        assert!(public.exists());
    }

    #[test]
    fn new_pair_does_not_follow_a_dangling_symlink() {
        let d = tempfile::tempdir().unwrap();
        let name = d.path().join("k");
        let target = d.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, pair_paths(&name).1).unwrap();
        assert!(matches!(new_pair(&name), Err(KeyError::Exists(_))));
        assert!(!target.exists());
        assert!(!pair_paths(&name).0.exists(), "no half pair left behind");
    }
}
