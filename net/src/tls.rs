//! What the device trusts for TLS: the Mozilla root set built into the
//! binary (a read-only root filesystem has no CA bundle to update anyway;
//! a new agent brings a new set), plus PEM certificates the firmware team
//! adds for a private update server.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// Extra CA certificates baked into the image (`*.pem`, `*.crt`).
pub const EXTRA_CA_DIR: &str = keel_contract::paths::EXTRA_CA_DIR;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA certificates from {path}: {detail}")]
    Pem { path: String, detail: String },
    #[error("{path} holds no usable CA certificate")]
    NoCertificate { path: String },
    #[error("TLS setup: {0}")]
    Config(String),
}

#[derive(Clone)]
pub struct Trust {
    roots: RootCertStore,
}

impl Trust {
    /// The built-in public roots and every certificate in [`EXTRA_CA_DIR`].
    pub fn system() -> Result<Trust, TlsError> {
        let mut t = Trust::public_roots();
        if let Ok(dir) = std::fs::read_dir(EXTRA_CA_DIR) {
            let mut files: Vec<_> = dir.filter_map(|e| Some(e.ok()?.path())).collect();
            files.sort();
            for f in files {
                if matches!(f.extension().and_then(|e| e.to_str()), Some("pem" | "crt")) {
                    t.add_pem_file(&f)?;
                }
            }
        }
        Ok(t)
    }

    /// Only the built-in public roots.
    pub fn public_roots() -> Trust {
        Trust {
            roots: RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        }
    }

    /// Trusts nothing until certificates are added.
    pub fn empty() -> Trust {
        Trust {
            roots: RootCertStore::empty(),
        }
    }

    /// Adds every CA certificate in a PEM file; returns how many.
    pub fn add_pem_file(&mut self, path: &Path) -> Result<usize, TlsError> {
        let shown = path.display().to_string();
        let pem_err = |detail: String| TlsError::Pem {
            path: shown.clone(),
            detail,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| pem_err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(e.to_string()))?;
        let (added, _ignored) = self.roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TlsError::NoCertificate { path: shown });
        }
        Ok(added)
    }

    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}
