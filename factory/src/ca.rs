//! The device CA: the factory's own certificate authority that signs one
//! certificate per device (CN = serial = thing name), registered with AWS
//! IoT for just-in-time provisioning. A directory holds it:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem` | the CA certificate (public: goes to AWS, and after each device certificate) |
//! | `ca.key` | its private key, mode 0600; never leaves the factory |
//! | `manifest.csv` | every serial this CA issued a certificate for ([`crate::ledger`]) |
//! | `manifest.csv.lock` | held (shared) by every burn running with this CA |
//! | `certs/SERIAL.pem` | each device certificate, for the records (never a private key) |
//! | `server-ca.pem` | optional: the broker's CA bundle, written to every card as `ca.pem` |

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

use crate::serial::Serial;

pub const CA_CERTIFICATE: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
/// The broker's CA bundle, if the factory keeps one beside the CA.
pub const SERVER_CA: &str = "server-ca.pem";
pub const CERTS_DIR: &str = "certs";

/// The CA itself: thirty years, longer than any device it signs for.
const CA_VALIDITY_DAYS: i64 = 30 * 365;
/// Device certificates: twenty years, a product's life in the field. A
/// device keeps connecting as long as its certificate is valid; AWS IoT
/// accepts any validity period.
const DEVICE_VALIDITY_DAYS: i64 = 20 * 365;
/// Device clocks and the factory's disagree; a certificate that starts an
/// hour early is still fresh on a device whose clock is a little behind.
const BACKDATE_HOURS: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0} already holds a CA; refusing to overwrite it (pick another NAME; a CA's key is never replaced)")]
    Exists(PathBuf),
    #[error(
        "{0} is a symlink; refusing to follow it for a CA's private key (name the real directory)"
    )]
    Symlink(PathBuf),
    #[error("no device CA in {0}: make one with `cargo xtask keys ca new {0}`")]
    Missing(PathBuf),
    #[error("the CA name {0:?} must be 1 to 64 letters, digits, '.', '_' or '-' (it is the last part of the CA's path and its certificate's CN)")]
    BadName(String),
    #[error("{path} can be read by other users (mode {mode:o}); a CA private key must be mode 0600: chmod 600 {path}")]
    Readable { path: PathBuf, mode: u32 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable CA: {detail}")]
    Invalid { path: PathBuf, detail: String },
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the system random number generator failed")]
    Random,
    #[error("{0:?} is not an AWS registration code (64 hex digits); get it with `aws iot get-registration-code --query registrationCode --output text`")]
    BadRegistrationCode(String),
}

/// A device CA opened for signing.
pub struct DeviceCa {
    pub dir: PathBuf,
    pub name: String,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DeviceCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceCa({})", self.dir.display())
    }
}

/// One device's identity, as issued. The private key lives only in memory
/// until it is written to the card (or to `provision --out`).
pub struct IssuedIdentity {
    pub serial: Serial,
    pub key_pem: String,
    pub cert_pem: String,
    /// The certificate then the CA: what the device presents (AWS's
    /// just-in-time provisioning needs the CA in the chain).
    pub chain_pem: String,
    /// SHA-256 of the certificate's DER, hex: AWS's certificate id.
    pub fingerprint: String,
}

impl std::fmt::Debug for IssuedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuedIdentity({}, {})", self.serial, self.fingerprint)
    }
}

/// Sixteen random bytes, top bit clear: a positive serial number (RFC
/// 5280 wants them unique per CA; random ones are, without a counter).
fn random_serial() -> Result<rcgen::SerialNumber, CaError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| CaError::Random)?;
    b[0] &= 0x7f;
    b[0] |= 0x01;
    Ok(rcgen::SerialNumber::from_slice(&b))
}

fn validity(p: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(BACKDATE_HOURS);
    p.not_after = now + time::Duration::days(days);
}

/// SHA-256 of DER, hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn check_name(name: &str) -> Result<(), CaError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        || name.starts_with('.')
    {
        return Err(CaError::BadName(name.to_string()));
    }
    Ok(())
}

fn name_of(dir: &Path) -> Result<String, CaError> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    check_name(&name)?;
    Ok(name)
}

fn refuse_symlink(path: &Path) -> Result<(), CaError> {
    match path.symlink_metadata() {
        Ok(m) if m.file_type().is_symlink() => Err(CaError::Symlink(path.to_path_buf())),
        _ => Ok(()),
    }
}

impl DeviceCa {
    /// Makes a new CA in `dir` (its last component is the CA's name).
    /// Refuses anything already there and any symlink on the way to the
    /// key; the key is written with mode 0600, exclusively.
    pub fn create(dir: &Path) -> Result<DeviceCa, CaError> {
        let name = name_of(dir)?;
        refuse_symlink(dir)?;
        let (cert_path, key_path) = (dir.join(CA_CERTIFICATE), dir.join(CA_KEY));
        for p in [&key_path, &cert_path] {
            if p.symlink_metadata().is_ok() {
                return Err(CaError::Exists(dir.to_path_buf()));
            }
        }
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CaError::Write { path, source }
        };
        durable::create_dir_all(dir).map_err(write_err(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(write_err(dir))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, &name);
        dn.push(DnType::OrganizationName, "Keel device CA");
        params.distinguished_name = dn;
        // Path length 0: it signs device certificates, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        validity(&mut params, CA_VALIDITY_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let exists = |path: &Path| {
            let path = path.to_path_buf();
            let dir = dir.to_path_buf();
            move |source: std::io::Error| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    CaError::Exists(dir)
                } else {
                    CaError::Write { path, source }
                }
            }
        };
        durable::create_new(&key_path, key.serialize_pem().as_bytes(), 0o600)
            .map_err(exists(&key_path))?;
        if let Err(e) = durable::create_new(&cert_path, cert.pem().as_bytes(), 0o644) {
            let _ = std::fs::remove_file(&key_path);
            return Err(exists(&cert_path)(e));
        }
        DeviceCa::open(dir)
    }

    /// Opens the CA in `dir` for signing. The key must be mode 0600 and
    /// neither it nor the directory a symlink.
    pub fn open(dir: &Path) -> Result<DeviceCa, CaError> {
        refuse_symlink(dir)?;
        let name = name_of(dir)?;
        let (cert_path, key_path) = (dir.join(CA_CERTIFICATE), dir.join(CA_KEY));
        let read = |path: &Path| -> Result<String, CaError> {
            durable::read_to_string(path, 64 * 1024)
                .map_err(|source| CaError::Read {
                    path: path.to_path_buf(),
                    source,
                })?
                .ok_or_else(|| CaError::Missing(dir.to_path_buf()))
        };
        let key_text = read(&key_path)?;
        let mode = std::fs::symlink_metadata(&key_path)
            .map_err(|source| CaError::Read {
                path: key_path.clone(),
                source,
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(CaError::Readable {
                path: key_path,
                mode,
            });
        }
        let cert_pem = read(&cert_path)?;
        let invalid = |path: &Path, e: rcgen::Error| CaError::Invalid {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let key = KeyPair::from_pem(&key_text).map_err(|e| invalid(&key_path, e))?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| invalid(&cert_path, e))?;
        Ok(DeviceCa {
            dir: dir.to_path_buf(),
            name,
            cert_pem,
            issuer,
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The broker's CA bundle kept beside the CA, if any.
    pub fn server_ca(&self) -> Option<PathBuf> {
        Some(self.dir.join(SERVER_CA)).filter(|p| p.is_file())
    }

    /// A new key and a certificate for `serial`: subject CN = serial (the
    /// thing name AWS's just-in-time provisioning template reads as
    /// `AWS::IoT::Certificate::CommonName`), client authentication only,
    /// an authority key identifier naming this CA.
    pub fn issue(&self, serial: &Serial) -> Result<IssuedIdentity, CaError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, serial.as_str());
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        validity(&mut params, DEVICE_VALIDITY_DAYS);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_pem = cert.pem();
        Ok(IssuedIdentity {
            serial: serial.clone(),
            key_pem: key.serialize_pem(),
            chain_pem: format!("{cert_pem}{}", self.cert_pem),
            fingerprint: fingerprint(cert.der()),
            cert_pem,
        })
    }

    /// The certificate AWS asks for when a CA is registered in its
    /// default mode: CN = the account's registration code
    /// (`aws iot get-registration-code`), signed by this CA, proving the
    /// registrant holds the CA's key. Returns (certificate, key), PEM.
    pub fn verification_certificate(&self, code: &str) -> Result<(String, String), CaError> {
        if code.is_empty() || code.len() > 128 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CaError::BadRegistrationCode(code.to_string()));
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, code);
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial()?);
        validity(&mut params, 30);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Keeps a device certificate in `certs/SERIAL.pem` for the records.
    pub fn record_certificate(&self, id: &IssuedIdentity) -> Result<PathBuf, CaError> {
        let dir = self.dir.join(CERTS_DIR);
        let path = dir.join(format!("{}.pem", id.serial));
        let err = |source| CaError::Write {
            path: path.clone(),
            source,
        };
        durable::create_dir_all(&dir).map_err(err)?;
        durable::replace(&path, id.cert_pem.as_bytes(), 0o644).map_err(err)?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_ca_is_made_once_and_its_key_kept_private() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("acme-2026");
        let ca = DeviceCa::create(&dir).unwrap();
        assert_eq!(ca.name, "acme-2026");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(CA_KEY)), 0o600);
        let key_before = std::fs::read(dir.join(CA_KEY)).unwrap();
        assert!(matches!(DeviceCa::create(&dir), Err(CaError::Exists(_))));
        assert_eq!(std::fs::read(dir.join(CA_KEY)).unwrap(), key_before);
        // Reopened, it signs certificates that chain to the same ca.pem.
        let again = DeviceCa::open(&dir).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        std::fs::set_permissions(dir.join(CA_KEY), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = DeviceCa::open(&dir).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn symlinks_and_bad_names_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = d.path().join("linked");
        symlink(&real, &link).unwrap();
        assert!(matches!(DeviceCa::create(&link), Err(CaError::Symlink(_))));
        // A planted key symlink inside the directory is not written through.
        let dir = d.path().join("planted");
        std::fs::create_dir(&dir).unwrap();
        symlink(d.path().join("victim"), dir.join(CA_KEY)).unwrap();
        assert!(matches!(DeviceCa::create(&dir), Err(CaError::Exists(_))));
        assert!(!d.path().join("victim").exists());
        assert!(matches!(
            DeviceCa::create(&d.path().join("a b")),
            Err(CaError::BadName(_))
        ));
        assert!(matches!(
            DeviceCa::open(&d.path().join("none")),
            Err(CaError::Missing(_))
        ));
    }

    #[test]
    fn device_certificates_carry_the_serial() {
        let d = tempfile::tempdir().unwrap();
        let ca = DeviceCa::create(&d.path().join("ca")).unwrap();
        let id = ca.issue(&Serial::parse("ACME-0042").unwrap()).unwrap();
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).unwrap();
        let info = fleet::identity::inspect(&der).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("ACME-0042"));
        assert!(id.chain_pem.ends_with(ca.cert_pem()));
        assert_eq!(id.fingerprint, fingerprint(&der));
        assert!(!format!("{id:?}").contains("PRIVATE"));
        let other = ca.issue(&Serial::parse("ACME-0043").unwrap()).unwrap();
        assert_ne!(other.fingerprint, id.fingerprint);
    }

    #[test]
    fn the_verification_certificate_carries_the_registration_code() {
        use rustls_pki_types::pem::PemObject;
        let d = tempfile::tempdir().unwrap();
        let ca = DeviceCa::create(&d.path().join("ca")).unwrap();
        let code = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
        let (cert, key) = ca.verification_certificate(code).unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let info = fleet::identity::inspect(&der).unwrap();
        assert_eq!(info.common_name.as_deref(), Some(code));
        assert!(key.contains("PRIVATE KEY"));
        for bad in ["", "a b", "code;rm"] {
            assert!(matches!(
                ca.verification_certificate(bad),
                Err(CaError::BadRegistrationCode(_))
            ));
        }
    }
}
