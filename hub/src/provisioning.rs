//! AWS IoT fleet provisioning's MQTT API, locally: a device connected
//! with the claim certificate sends a certificate signing request to
//! `$aws/certificates/create-from-csr/json` and gets a certificate signed
//! by the hub's CA plus an ownership token; it then sends the token and
//! its parameters to `$aws/provisioning-templates/<name>/provision/json`
//! and becomes a thing. Payloads as AWS documents them.
//!
//! Two differences from AWS, both from running on mosquitto: the hub
//! keeps the request's subject CN in the certificate (AWS writes its own
//! subject), because the broker takes the CN as the user name its ACL
//! confines; so the hub's template names the thing after the
//! `SerialNumber` parameter and refuses a thing name that differs from
//! the certificate's CN. And answers go to everyone subscribed (AWS sends
//! them to the requesting connection only): a device recognises its
//! certificate by its own public key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::pki::Pki;
use crate::{now, Out};

/// Where devices send certificate signing requests.
pub const CREATE_FROM_CSR: &str = "$aws/certificates/create-from-csr/json";
/// The template the hub offers unless told otherwise.
pub const DEFAULT_TEMPLATE: &str = "keel-fleet";
/// AWS: the ownership token expires after an hour.
const TOKEN_LIFETIME_SECS: u64 = 3600;

/// A certificate handed out and not yet registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub certificate_id: String,
    pub common_name: String,
    pub issued_at: u64,
}

/// A thing created by provisioning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provisioned {
    pub certificate_id: String,
    pub template: String,
    pub at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProvisioningService {
    /// Ownership token → the certificate it belongs to.
    pub pending: BTreeMap<String, Pending>,
    /// Thing name → how it was provisioned.
    pub things: BTreeMap<String, Provisioned>,
}

/// What the hub provisions with: its CA and the templates it offers.
pub struct Provisioner {
    pub pki: Pki,
    pub templates: Vec<String>,
}

fn rejected(topic: &str, status: u16, code: &str, message: String) -> Vec<Out> {
    vec![Out::new(
        format!("{topic}/rejected"),
        json!({ "statusCode": status, "errorCode": code, "errorMessage": message }),
    )]
}

impl ProvisioningService {
    /// Handles a request on `topic` (one of the two the hub subscribes
    /// to); `None` when provisioning is not enabled.
    pub fn handle(&mut self, prov: Option<&Provisioner>, topic: &str, payload: &[u8]) -> Vec<Out> {
        let Some(prov) = prov else {
            return rejected(
                topic,
                503,
                "ServiceUnavailable",
                "fleet provisioning is not enabled on this hub".into(),
            );
        };
        if topic == CREATE_FROM_CSR {
            return self.create_from_csr(prov, payload);
        }
        let template = topic
            .strip_prefix("$aws/provisioning-templates/")
            .and_then(|r| r.strip_suffix("/provision/json"))
            .unwrap_or("");
        self.register(prov, template, topic, payload)
    }

    fn create_from_csr(&mut self, prov: &Provisioner, payload: &[u8]) -> Vec<Out> {
        let topic = CREATE_FROM_CSR;
        let req: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
        let Some(csr) = req.get("certificateSigningRequest").and_then(Value::as_str) else {
            return rejected(
                topic,
                400,
                "InvalidPayload",
                "certificateSigningRequest (a PEM CSR) is missing".into(),
            );
        };
        let (pem, der, cn) = match prov.pki.sign_request(csr) {
            Ok(signed) => signed,
            Err(e) => return rejected(topic, 400, "InvalidCsr", e.to_string()),
        };
        // AWS's certificate id is the certificate's SHA-256.
        let certificate_id = hex::encode(Sha256::digest(&der));
        let token = hex::encode(Sha256::digest(
            format!("{certificate_id}:{:?}", std::time::SystemTime::now()).as_bytes(),
        ));
        let t = now();
        self.pending
            .retain(|_, p| p.issued_at + TOKEN_LIFETIME_SECS > t);
        self.pending.insert(
            token.clone(),
            Pending {
                certificate_id: certificate_id.clone(),
                common_name: cn,
                issued_at: t,
            },
        );
        vec![Out::new(
            format!("{topic}/accepted"),
            json!({
                "certificateId": certificate_id,
                "certificatePem": pem,
                "certificateOwnershipToken": token,
            }),
        )]
    }

    fn register(
        &mut self,
        prov: &Provisioner,
        template: &str,
        topic: &str,
        payload: &[u8],
    ) -> Vec<Out> {
        if !prov.templates.iter().any(|t| t == template) {
            return rejected(
                topic,
                404,
                "ResourceNotFoundException",
                format!(
                    "no provisioning template {template:?}; the hub offers {:?}",
                    prov.templates
                ),
            );
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Request {
            certificate_ownership_token: String,
            #[serde(default)]
            parameters: BTreeMap<String, Value>,
        }
        let req: Request = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => return rejected(topic, 400, "InvalidPayload", e.to_string()),
        };
        let t = now();
        let pending = match self.pending.get(&req.certificate_ownership_token) {
            Some(p) if p.issued_at + TOKEN_LIFETIME_SECS > t => p.clone(),
            _ => return rejected(
                topic,
                400,
                "InvalidCertificateOwnershipToken",
                "unknown, used or expired certificateOwnershipToken; ask for a certificate again"
                    .into(),
            ),
        };
        let serial = req
            .parameters
            .get("SerialNumber")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !crate::pki::valid_name(serial) {
            return rejected(
                topic,
                400,
                "InvalidParameters",
                format!("parameters.SerialNumber {serial:?} cannot be a thing name (1 to 128 of a-z A-Z 0-9 : _ -)"),
            );
        }
        if serial != pending.common_name {
            return rejected(
                topic,
                400,
                "InvalidParameters",
                format!(
                    "the hub names the thing after SerialNumber ({serial}) and its broker confines a device to its certificate's CN ({}); they must be equal",
                    pending.common_name
                ),
            );
        }
        self.pending.remove(&req.certificate_ownership_token);
        self.things.insert(
            serial.to_string(),
            Provisioned {
                certificate_id: pending.certificate_id,
                template: template.to_string(),
                at: t,
            },
        );
        vec![Out::new(
            format!("{topic}/accepted"),
            json!({ "thingName": serial, "deviceConfiguration": {} }),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provisioner(dir: &std::path::Path) -> Provisioner {
        Provisioner {
            pki: Pki::open_or_create(dir, "test CA").unwrap(),
            templates: vec![DEFAULT_TEMPLATE.into()],
        }
    }

    fn csr(cn: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn body(out: &[Out]) -> (String, Value) {
        assert_eq!(out.len(), 1);
        (
            out[0].topic.clone(),
            serde_json::from_slice(&out[0].payload).unwrap(),
        )
    }

    #[test]
    fn certificate_then_thing_and_a_token_serves_once() {
        let d = tempfile::tempdir().unwrap();
        let prov = provisioner(d.path());
        let mut s = ProvisioningService::default();
        let req = json!({ "certificateSigningRequest": csr("sn-7") }).to_string();
        let (topic, v) = body(&s.handle(Some(&prov), CREATE_FROM_CSR, req.as_bytes()));
        assert_eq!(topic, format!("{CREATE_FROM_CSR}/accepted"));
        assert_eq!(v["certificateId"].as_str().unwrap().len(), 64);
        let token = v["certificateOwnershipToken"].as_str().unwrap().to_string();
        let reg = "$aws/provisioning-templates/keel-fleet/provision/json";
        let ask = |serial: &str| {
            json!({"certificateOwnershipToken": token, "parameters": {"SerialNumber": serial}})
                .to_string()
        };
        let (topic, v) = body(&s.handle(Some(&prov), reg, ask("sn-8").as_bytes()));
        assert!(topic.ends_with("/rejected"), "{v}");
        assert!(v["errorMessage"].as_str().unwrap().contains("CN"));
        let (topic, v) = body(&s.handle(Some(&prov), reg, ask("sn-7").as_bytes()));
        assert_eq!(topic, format!("{reg}/accepted"));
        assert_eq!(v["thingName"], "sn-7");
        assert!(s.things.contains_key("sn-7"));
        let (topic, v) = body(&s.handle(Some(&prov), reg, ask("sn-7").as_bytes()));
        assert!(topic.ends_with("/rejected"));
        assert_eq!(v["errorCode"], "InvalidCertificateOwnershipToken");
    }

    #[test]
    fn bad_requests_are_rejected_with_a_reason() {
        let d = tempfile::tempdir().unwrap();
        let prov = provisioner(d.path());
        let mut s = ProvisioningService::default();
        for payload in [
            "{}".to_string(),
            json!({"certificateSigningRequest": "junk"}).to_string(),
            json!({"certificateSigningRequest": csr("keel-hub")}).to_string(),
            json!({"certificateSigningRequest": csr("a/b")}).to_string(),
        ] {
            let (topic, v) = body(&s.handle(Some(&prov), CREATE_FROM_CSR, payload.as_bytes()));
            assert!(topic.ends_with("/rejected"), "{payload}: {v}");
            assert_eq!(v["statusCode"], 400);
        }
        let (topic, v) = body(&s.handle(
            Some(&prov),
            "$aws/provisioning-templates/other/provision/json",
            b"{}",
        ));
        assert!(topic.ends_with("/rejected"));
        assert_eq!(v["statusCode"], 404);
        let (_, v) = body(&s.handle(None, CREATE_FROM_CSR, b"{}"));
        assert_eq!(v["statusCode"], 503);
    }
}
