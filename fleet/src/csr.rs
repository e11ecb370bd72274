//! The device's own key pair and the certificate signing request (PKCS#10,
//! RFC 2986) it sends when it provisions itself by claim.
//!
//! The key is ECDSA P-256 from `ring`, which the agent already links for
//! TLS, so generating and signing add no crypto code. The CSR is encoded by
//! hand: it is one fixed structure of a dozen DER elements, and the crates
//! that write it (rcgen, x509-cert) bring an ASN.1 library each
//! (docs/dependencies.md, "Fleet provisioning by claim"). The output is
//! cross-checked with `openssl req -verify` in the tests.

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the system random number generator failed; the device cannot make a key without it")]
    Random,
    #[error("the private key is not a PKCS#8 P-256 key this device made ({0}); remove it and provision again")]
    NotOurs(String),
    #[error("signing the certificate request failed")]
    Sign,
}

/// id-ecPublicKey (1.2.840.10045.2.1).
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1 / secp256r1 (1.2.840.10045.3.1.7).
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// ecdsa-with-SHA256 (1.2.840.10045.4.3.2).
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
/// id-at-commonName (2.5.4.3).
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
/// `[0] IMPLICIT`, constructed: the CSR's attributes.
const CONTEXT_0: u8 = 0xa0;

/// One DER element: tag, definite length, contents.
fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(SEQUENCE, &parts.concat())
}

/// A BIT STRING of whole bytes (no unused bits).
fn bits(bytes: &[u8]) -> Vec<u8> {
    tlv(BIT_STRING, &[&[0u8][..], bytes].concat())
}

/// The device's ECDSA P-256 key.
pub struct DeviceKey {
    pkcs8: Vec<u8>,
    pair: EcdsaKeyPair,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private half, not even in a debug log.
        write!(
            f,
            "DeviceKey(P-256, public {})",
            hex::encode(self.public_key())
        )
    }
}

impl DeviceKey {
    /// A new key from the system's random number generator.
    pub fn generate() -> Result<DeviceKey, KeyError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| KeyError::Random)?;
        DeviceKey::from_pkcs8(doc.as_ref())
    }

    /// A key read back from its PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<DeviceKey, KeyError> {
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &SystemRandom::new())
                .map_err(|e| KeyError::NotOurs(e.to_string()))?;
        Ok(DeviceKey {
            pkcs8: der.to_vec(),
            pair,
        })
    }

    /// A key read back from the PEM this module writes.
    pub fn from_pem(pem: &[u8]) -> Result<DeviceKey, KeyError> {
        match PrivateKeyDer::from_pem_slice(pem) {
            Ok(PrivateKeyDer::Pkcs8(k)) => DeviceKey::from_pkcs8(k.secret_pkcs8_der()),
            Ok(_) => Err(KeyError::NotOurs("not a PKCS#8 PRIVATE KEY block".into())),
            Err(e) => Err(KeyError::NotOurs(e.to_string())),
        }
    }

    /// The private key as PEM (`PRIVATE KEY`, PKCS#8), what rustls and
    /// the fleet client's identity loader read.
    pub fn to_pem(&self) -> String {
        pem("PRIVATE KEY", &self.pkcs8)
    }

    /// The public key: the uncompressed point (65 bytes, 0x04 ‖ x ‖ y),
    /// as it appears in a certificate's subjectPublicKey.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// SubjectPublicKeyInfo DER.
    fn spki(&self) -> Vec<u8> {
        seq(&[
            &seq(&[&tlv(OID, OID_EC_PUBLIC_KEY), &tlv(OID, OID_P256)]),
            &bits(self.public_key()),
        ])
    }

    /// A certificate signing request for this key with the subject
    /// `CN=common_name`, signed with the key (which proves possession),
    /// as PEM (`CERTIFICATE REQUEST`).
    pub fn csr_pem(&self, common_name: &str) -> Result<String, KeyError> {
        Ok(pem("CERTIFICATE REQUEST", &self.csr_der(common_name)?))
    }

    pub fn csr_der(&self, common_name: &str) -> Result<Vec<u8>, KeyError> {
        let subject = seq(&[&tlv(
            SET,
            &seq(&[&tlv(OID, OID_CN), &tlv(UTF8_STRING, common_name.as_bytes())]),
        )]);
        let info = seq(&[
            &tlv(INTEGER, &[0]), // version 1 (encoded 0)
            &subject,
            &self.spki(),
            &tlv(CONTEXT_0, &[]), // no attributes
        ]);
        let signature = self
            .pair
            .sign(&SystemRandom::new(), &info)
            .map_err(|_| KeyError::Sign)?;
        Ok(seq(&[
            &info,
            &seq(&[&tlv(OID, OID_ECDSA_SHA256)]),
            &bits(signature.as_ref()),
        ]))
    }
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// PEM text (RFC 7468): 64 characters a line.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
    }

    #[test]
    fn long_lengths_use_the_long_form() {
        assert_eq!(&tlv(0x04, &[0; 0x7f])[..2], &[0x04, 0x7f]);
        assert_eq!(&tlv(0x04, &[0; 0x80])[..3], &[0x04, 0x81, 0x80]);
        assert_eq!(&tlv(0x04, &[0; 0x1234])[..4], &[0x04, 0x82, 0x12, 0x34]);
    }

    #[test]
    fn the_key_round_trips_through_pem() {
        let k = DeviceKey::generate().unwrap();
        let again = DeviceKey::from_pem(k.to_pem().as_bytes()).unwrap();
        assert_eq!(k.public_key(), again.public_key());
        assert_eq!(k.public_key().len(), 65);
        assert!(!format!("{k:?}").contains(&hex::encode(&k.pkcs8)));
        assert!(
            DeviceKey::from_pem(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
                .is_err()
        );
    }

    #[test]
    fn pem_survives_the_pem_reader() {
        let k = DeviceKey::generate().unwrap();
        let csr = k.csr_pem("dev-0042").unwrap();
        let der =
            rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr.as_bytes()).unwrap();
        // One SEQUENCE spanning the whole request, holding the subject.
        assert_eq!(der.as_ref()[0], SEQUENCE);
        assert!(der.as_ref().windows(8).any(|w| w == b"dev-0042"));
        assert!(csr.lines().all(|l| l.len() <= 64));
    }
}
