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
    #[error(transparent)]
    Bundle(#[from] bundle::BundleError),
    #[error("the signing key is not among the board's [update] trusted_keys, so devices would reject this update; add its .pub file there or sign with a listed key")]
    SignerNotTrusted,
    #[error("{0} is a public key file, not a private one; sign with the matching .key file")]
    PublicAsPrivate(PathBuf),
    #[error("{path} can be read by other users (mode {mode:o}); a private key must be mode 0600: chmod 600 {path}")]
    Readable { path: PathBuf, mode: u32 },
    #[error("{0}: the private key's bytes are a public key the image trusts; this is a public key file, and signing with it would make the image trust a key whose private half is public")]
    PublicBytes(PathBuf),
    #[error("a release image cannot be signed with the development key ({0}); make a release key with `cargo xtask keys new keys/release` and pass --key")]
    ReleaseWithDevelopmentKey(PathBuf),
    #[error("a release image cannot trust the development key ({0} in [update] trusted_keys); remove it from the board config")]
    ReleaseTrustsDevelopmentKey(String),
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
        let dev_private = pair_paths(dev_name).0;
        let development = match (
            std::fs::canonicalize(path),
            std::fs::canonicalize(&dev_private),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        return Ok(Signer {
            key: load_private(path)?,
            path: path.to_path_buf(),
            development,
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

/// Loads a private signing key, refusing what is plainly not one: a `.pub`
/// file, or a file others can read (a private key is 0600; a public key
/// file, 0644, has the same 64 hex digits and would otherwise pass).
pub fn load_private(path: &Path) -> Result<SigningKey, KeyError> {
    use std::os::unix::fs::PermissionsExt;
    if path.extension().is_some_and(|e| e == "pub") {
        return Err(KeyError::PublicAsPrivate(path.to_path_buf()));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Readable {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    Ok(bundle::keys::load_signing_key(path)?)
}

/// For a release image: refuses the development key, as signer or as a
/// trusted key. `dev_public` is the development key's public half, if one
/// exists on this machine.
pub fn check_release(
    signer: &Signer,
    trusted: &[(String, String)],
    dev_public: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<(), KeyError> {
    if signer.development {
        return Err(KeyError::ReleaseWithDevelopmentKey(signer.path.clone()));
    }
    if let Some(dev) = dev_public {
        let dev_text = bundle::keys::verifying_key_text(dev);
        if let Some((name, _)) = trusted.iter().find(|(_, t)| *t == dev_text) {
            return Err(KeyError::ReleaseTrustsDevelopmentKey(name.clone()));
        }
    }
    Ok(())
}

/// The development key's public half, if the development key pair exists.
pub fn development_public(dev_name: &Path) -> Option<ed25519_dalek::VerifyingKey> {
    bundle::keys::load_verifying_key(&pair_paths(dev_name).1).ok()
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
        if k.as_bytes() == &key.to_bytes() {
            return Err(KeyError::PublicBytes(path));
        }
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
    fn a_public_key_is_not_taken_for_a_private_one() {
        let d = tempfile::tempdir().unwrap();
        let (private, public) = new_pair(&d.path().join("release")).unwrap();
        assert!(load_private(&private).is_ok());
        let e = load_private(&public).unwrap_err().to_string();
        assert!(e.contains("public key file"), "{e}");
        // The same 64 hex digits under another name, readable by all.
        let copy = d.path().join("release-copy");
        std::fs::copy(&public, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_private(&copy).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
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
