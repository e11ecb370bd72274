//! A certificate authority made for the local hub: the broker's server
//! certificate, the hub's own client certificate, one identity per device
//! (`device.pem`, `device.key`, `ca.pem`, as the device keeps them under
//! /data/keel/identity), the claim certificate for fleet provisioning and
//! the certificates that provisioning signs for devices' own keys. Never
//! for production fleets: the CA key sits in a plain file.

use std::path::{Path, PathBuf};

use keel_contract::paths;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}; remove {dir} to make a new CA")]
    Read {
        path: PathBuf,
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("'{0}' is not a usable name (thing names: 1 to 128 of a-z A-Z 0-9 : _ -)")]
    BadName(String),
    #[error("'{0}' is reserved for the hub's own certificates; pick another thing name")]
    Reserved(String),
    #[error("the certificate signing request is not valid: {0}")]
    BadRequest(String),
}

/// The hub's own client certificate's common name (the broker's ACL gives
/// it every thing's topics).
pub const HUB_CN: &str = "keel-hub";

/// The claim certificate's common name: the broker lets it use the fleet
/// provisioning topics and nothing else.
pub const CLAIM_CN: &str = "keel-claim";

/// How long the certificates this CA issues to devices are valid: a
/// device in the field for twenty years must still connect.
const DEVICE_VALIDITY_DAYS: i64 = 20 * 365;

pub struct Pki {
    pub dir: PathBuf,
    ca_params: CertificateParams,
    ca_key: KeyPair,
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    let err = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(d) = path.parent() {
        durable::create_dir_all(d).map_err(err)?;
    }
    durable::replace(path, text.as_bytes(), mode).map_err(err)
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_-".contains(&b))
}

impl Pki {
    /// Opens the CA in `dir`, making it first if there is none. `name`
    /// goes into the CA's subject (two CAs made by tests differ by it).
    pub fn open_or_create(dir: &Path, name: &str) -> Result<Pki, PkiError> {
        let key_path = dir.join("ca.key");
        let ca_params = ca_params(name);
        // `hub serve` and `hub thing add` may meet on a fresh site: without
        // the lock each would make its own CA and one's certificates would
        // not chain to the other's ca.pem.
        let lock_path = dir.join(".lock");
        let write_err = |source| PkiError::Write {
            path: lock_path.clone(),
            source,
        };
        durable::create_dir_all(dir).map_err(write_err)?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(write_err)?;
        lock.lock().map_err(write_err)?;
        if key_path.exists() {
            let read = |p: &Path| {
                std::fs::read_to_string(p).map_err(|source| PkiError::Read {
                    path: p.to_path_buf(),
                    dir: dir.to_path_buf(),
                    source,
                })
            };
            let ca_key = KeyPair::from_pem(&read(&key_path)?)?;
            // The issuer is rebuilt from the same subject and key, so new
            // certificates chain to the ca.pem written the first time.
            return Ok(Pki {
                dir: dir.to_path_buf(),
                ca_params,
                ca_key,
            });
        }
        let ca_key = KeyPair::generate()?;
        let cert = ca_params.self_signed(&ca_key)?;
        write(&dir.join("ca.pem"), &cert.pem(), 0o644)?;
        write(&key_path, &ca_key.serialize_pem(), 0o600)?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca_params,
            ca_key,
        })
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn issue(
        &self,
        params: CertificateParams,
        cert_path: &Path,
        key_path: &Path,
    ) -> Result<(), PkiError> {
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        write(cert_path, &cert.pem(), 0o644)?;
        // Readable by the broker's user too: test and development keys
        // only (mosquitto drops root before it reads them).
        write(key_path, &key.serialize_pem(), 0o644)
    }

    /// A server certificate for the broker and the file server, valid for
    /// `names` (DNS names or IP addresses): `server.pem`, `server.key`.
    pub fn server(&self, names: &[&str]) -> Result<(PathBuf, PathBuf), PkiError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "keel hub server");
        p.distinguished_name = dn;
        p.subject_alt_names = names
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName((*n).try_into()?)),
            })
            .collect::<Result<_, rcgen::Error>>()?;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let (c, k) = (self.dir.join("server.pem"), self.dir.join("server.key"));
        self.issue(p, &c, &k)?;
        Ok((c, k))
    }

    /// A client identity whose subject CN is `name` (a thing name, or
    /// [`HUB_CN`]), in `things/<name>/`; returns that directory.
    pub fn client(&self, name: &str) -> Result<PathBuf, PkiError> {
        if !valid_name(name) {
            return Err(PkiError::BadName(name.into()));
        }
        if name == CLAIM_CN {
            return Err(PkiError::Reserved(name.into()));
        }
        let dir = self.dir.join("things").join(name);
        self.issue(
            client_params(name),
            &dir.join(paths::IDENTITY_CERTIFICATE),
            &dir.join(paths::IDENTITY_KEY),
        )?;
        self.copy_ca(&dir.join(paths::IDENTITY_CA_BUNDLE))?;
        Ok(dir)
    }

    fn copy_ca(&self, to: &Path) -> Result<(), PkiError> {
        let ca = std::fs::read_to_string(self.ca_pem()).map_err(|source| PkiError::Read {
            path: self.ca_pem(),
            dir: self.dir.clone(),
            source,
        })?;
        write(to, &ca, 0o644)
    }

    /// The claim certificate for fleet provisioning by claim (CN
    /// [`CLAIM_CN`]), in `claim/`: `claim.pem`, `claim.key` (for the
    /// card's /data/keel/claim/) and `ca.pem` (the broker's CA, for
    /// /data/keel/identity/). Made once; returns the directory.
    pub fn claim(&self) -> Result<PathBuf, PkiError> {
        let dir = self.dir.join("claim");
        let cert = dir.join(paths::CLAIM_CERTIFICATE);
        if !cert.exists() {
            self.issue(client_params(CLAIM_CN), &cert, &dir.join(paths::CLAIM_KEY))?;
        }
        self.copy_ca(&dir.join(paths::IDENTITY_CA_BUNDLE))?;
        Ok(dir)
    }

    /// Signs a device's certificate signing request (PEM) the way fleet
    /// provisioning does: the device's own public key, the subject CN the
    /// request names (the broker takes it as the thing's user name), for
    /// client authentication. Returns the certificate as PEM and DER.
    pub fn sign_request(&self, csr_pem: &str) -> Result<(String, Vec<u8>, String), PkiError> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::BadRequest(e.to_string()))?;
        let cn = csr
            .params
            .distinguished_name
            .get(&DnType::CommonName)
            .and_then(dn_text)
            .ok_or_else(|| {
                PkiError::BadRequest(
                    "no subject CN: the hub names the device's certificate after it".into(),
                )
            })?;
        if !valid_name(&cn) {
            return Err(PkiError::BadName(cn));
        }
        if cn == HUB_CN || cn == CLAIM_CN {
            return Err(PkiError::Reserved(cn));
        }
        let mut params = client_params(&cn);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(DEVICE_VALIDITY_DAYS);
        let signed = rcgen::CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        };
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = signed.signed_by(&issuer)?;
        Ok((cert.pem(), cert.der().to_vec(), cn))
    }
}

fn dn_text(v: &rcgen::DnValue) -> Option<String> {
    match v {
        rcgen::DnValue::Utf8String(s) => Some(s.clone()),
        rcgen::DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        rcgen::DnValue::Ia5String(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn client_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    p.distinguished_name = dn;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_opening_a_fresh_site_at_once_share_one_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let keys: Vec<String> = std::thread::scope(|s| {
            let opens: Vec<_> = (0..4)
                .map(|_| s.spawn(|| Pki::open_or_create(&pki, "test CA").unwrap()))
                .collect();
            opens
                .into_iter()
                .map(|h| h.join().unwrap().ca_key.serialize_pem())
                .collect()
        });
        assert!(
            keys.windows(2).all(|w| w[0] == w[1]),
            "more than one CA made"
        );
        let on_disk = std::fs::read_to_string(pki.join("ca.key")).unwrap();
        assert_eq!(keys[0], on_disk);
    }
}
