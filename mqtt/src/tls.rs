//! The device's TLS identity for the broker: its certificate chain and
//! private key (client authentication, as AWS IoT Core requires) and the
//! CA bundle the broker's certificate must chain to. The server
//! certificate is always verified; there is no switch to turn that off.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// The ALPN protocol AWS IoT Core wants for MQTT with client certificates
/// on port 443 (where HTTPS would otherwise be assumed).
pub const ALPN_AWS_MQTT: &[u8] = b"x-amzn-mqtt-ca";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {detail}; manufacturing (or `hub`, or your test) writes it, see docs/fleet.md")]
    Read {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("{what} {path} holds no PEM {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("the CA bundle {0} has no certificate rustls can use as a trust anchor")]
    NoAnchor(PathBuf),
    #[error("the device certificate {cert} does not match the private key {key}; write the pair that belongs together")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS client setup failed: {0}")]
    Config(String),
}

/// Paths of the identity files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The device certificate, optionally followed by its intermediate CAs
    /// (AWS's just-in-time provisioning wants the registered CA sent too).
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// The CA certificates the broker's certificate must chain to.
    pub ca_bundle: PathBuf,
}

fn read_err<'a>(what: &'static str, path: &'a Path) -> impl Fn(String) -> TlsError + 'a {
    move |detail| TlsError::Read {
        what,
        path: path.to_path_buf(),
        detail,
    }
}

/// Reads every certificate of a PEM file.
pub fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err(what, path)(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| read_err(what, path)(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
            expected: "CERTIFICATE block",
        });
    }
    Ok(certs)
}

impl Identity {
    /// The files under a directory laid out as docs/fleet.md says
    /// (`device.pem`, `device.key`, `ca.pem`: the names are
    /// `keel_contract::paths::IDENTITY_*`, which manufacturing writes).
    pub fn in_dir(dir: &Path) -> Identity {
        use keel_contract::paths;
        Identity {
            certificate: dir.join(paths::IDENTITY_CERTIFICATE),
            private_key: dir.join(paths::IDENTITY_KEY),
            ca_bundle: dir.join(paths::IDENTITY_CA_BUNDLE),
        }
    }

    /// The device certificate (the first in its file), DER.
    pub fn leaf_certificate(&self) -> Result<CertificateDer<'static>, TlsError> {
        let mut certs = read_certificates("the device certificate", &self.certificate)?;
        Ok(certs.swap_remove(0))
    }

    /// A rustls client configuration presenting this identity and
    /// trusting only the CA bundle; with `alpn`, it offers
    /// [`ALPN_AWS_MQTT`].
    pub fn client_config(&self, alpn: bool) -> Result<Arc<ClientConfig>, TlsError> {
        let chain = read_certificates("the device certificate", &self.certificate)?;
        let key = PrivateKeyDer::from_pem_file(&self.private_key).map_err(|e| {
            read_err("the private key", &self.private_key)(format!(
                "{e} (a PEM PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block is expected)"
            ))
        })?;
        let mut roots = RootCertStore::empty();
        let (added, _) =
            roots.add_parsable_certificates(read_certificates("the CA bundle", &self.ca_bundle)?);
        if added == 0 {
            return Err(TlsError::NoAnchor(self.ca_bundle.clone()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
                    cert: self.certificate.clone(),
                    key: self.private_key.clone(),
                },
                other => TlsError::Config(other.to_string()),
            })?;
        if alpn {
            config.alpn_protocols = vec![ALPN_AWS_MQTT.to_vec()];
        }
        Ok(Arc::new(config))
    }
}
