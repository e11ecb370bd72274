//! AWS IoT fleet provisioning's MQTT API (CreateCertificateFromCsr, then
//! RegisterThing) as a pure state machine: it says what to publish and
//! reads the answers; [`super`] does the I/O. JSON payloads, as
//! <https://docs.aws.amazon.com/iot/latest/developerguide/fleet-provision-api.html>
//! describes them.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use serde_json::json;

use crate::identity;
use crate::Outgoing;

/// Where the device sends its certificate signing request.
pub const CREATE_FROM_CSR: &str = "$aws/certificates/create-from-csr/json";

/// Where the device asks the template to register it.
pub fn register_topic(template: &str) -> String {
    format!("$aws/provisioning-templates/{template}/provision/json")
}

/// The template parameter that carries the serial number (the thing name
/// of the hub's template; AWS templates name it as they like, Keel's
/// `cargo xtask aws fleet-template` uses this).
pub const SERIAL_PARAMETER: &str = "SerialNumber";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    #[error("the cloud refused {step} ({status} {code}: {message}); check the provisioning template and the claim certificate's policy")]
    Rejected {
        step: &'static str,
        status: u64,
        code: String,
        message: String,
    },
    #[error(
        "the cloud's answer to {step} is not what the fleet provisioning API promises: {detail}"
    )]
    BadAnswer { step: &'static str, detail: String },
}

/// What the device got: its certificate and the thing it now is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub certificate_pem: String,
    /// AWS's certificate id (the SHA-256 of the certificate, hex).
    pub certificate_id: String,
    pub thing_name: String,
    /// The template's `DeviceConfiguration`, passed on as is.
    pub device_configuration: serde_json::Value,
}

/// What to do after a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Not for this exchange (another device's answer on a shared broker,
    /// or a step already past).
    Ignore,
    Send(Outgoing),
    Done(Provisioned),
}

#[derive(Debug)]
enum Step {
    Certificate,
    Registration {
        certificate_pem: String,
        certificate_id: String,
    },
    Finished,
}

#[derive(Debug)]
pub struct Exchange {
    public_key: Vec<u8>,
    serial: String,
    template: String,
    step: Step,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertificateAccepted {
    certificate_ownership_token: String,
    certificate_id: String,
    certificate_pem: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegisterAccepted {
    thing_name: Option<String>,
    #[serde(default)]
    device_configuration: serde_json::Value,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Rejected {
    status_code: u64,
    error_code: String,
    error_message: String,
}

fn rejected(step: &'static str, payload: &[u8]) -> ExchangeError {
    let r: Rejected = serde_json::from_slice(payload).unwrap_or_default();
    ExchangeError::Rejected {
        step,
        status: r.status_code,
        code: r.error_code,
        message: r.error_message,
    }
}

impl Exchange {
    /// Starts the exchange for a key (its public half, as in a
    /// certificate) and a CSR made with it; returns the first request.
    pub fn start(
        public_key: &[u8],
        csr_pem: &str,
        serial: &str,
        template: &str,
    ) -> (Exchange, Outgoing) {
        let ex = Exchange {
            public_key: public_key.to_vec(),
            serial: serial.to_string(),
            template: template.to_string(),
            step: Step::Certificate,
        };
        let request = Outgoing::new(
            CREATE_FROM_CSR.to_string(),
            json!({ "certificateSigningRequest": csr_pem }),
        );
        (ex, request)
    }

    /// The answers to subscribe to before the first request (AWS: a
    /// request published before its answer's subscription may go
    /// unanswered).
    pub fn filters(&self) -> Vec<String> {
        let register = register_topic(&self.template);
        vec![
            format!("{CREATE_FROM_CSR}/accepted"),
            format!("{CREATE_FROM_CSR}/rejected"),
            format!("{register}/accepted"),
            format!("{register}/rejected"),
        ]
    }

    /// Which request an answer is still awaited for.
    pub fn awaiting(&self) -> &'static str {
        match self.step {
            Step::Certificate => "CreateCertificateFromCsr",
            Step::Registration { .. } => "RegisterThing",
            Step::Finished => "nothing",
        }
    }

    pub fn on_message(&mut self, topic: &str, payload: &[u8]) -> Result<Next, ExchangeError> {
        let register = register_topic(&self.template);
        match &self.step {
            Step::Certificate if topic == format!("{CREATE_FROM_CSR}/accepted") => {
                const STEP: &str = "CreateCertificateFromCsr";
                let a: CertificateAccepted =
                    serde_json::from_slice(payload).map_err(|e| ExchangeError::BadAnswer {
                        step: STEP,
                        detail: e.to_string(),
                    })?;
                let bad = |detail: String| ExchangeError::BadAnswer { step: STEP, detail };
                let der = CertificateDer::from_pem_slice(a.certificate_pem.as_bytes())
                    .map_err(|e| bad(format!("certificatePem: {e}")))?;
                let info = identity::inspect(&der).map_err(|e| bad(e.to_string()))?;
                if info.public_key != self.public_key {
                    // On a shared broker (the hub on mosquitto) every claim
                    // client hears every answer; this one is another's.
                    return Ok(Next::Ignore);
                }
                let request = Outgoing::new(
                    register.clone(),
                    json!({
                        "certificateOwnershipToken": a.certificate_ownership_token,
                        "parameters": { SERIAL_PARAMETER: self.serial },
                    }),
                );
                self.step = Step::Registration {
                    certificate_pem: a.certificate_pem,
                    certificate_id: a.certificate_id,
                };
                Ok(Next::Send(request))
            }
            Step::Certificate if topic == format!("{CREATE_FROM_CSR}/rejected") => {
                Err(rejected("CreateCertificateFromCsr", payload))
            }
            Step::Registration {
                certificate_pem,
                certificate_id,
            } if topic == format!("{register}/accepted") => {
                const STEP: &str = "RegisterThing";
                let a: RegisterAccepted =
                    serde_json::from_slice(payload).map_err(|e| ExchangeError::BadAnswer {
                        step: STEP,
                        detail: e.to_string(),
                    })?;
                let thing_name = a.thing_name.ok_or_else(|| ExchangeError::BadAnswer {
                    step: STEP,
                    detail: "no thingName: the template must create a thing".into(),
                })?;
                crate::config::check_thing_name(&thing_name)
                    .map_err(|detail| ExchangeError::BadAnswer { step: STEP, detail })?;
                let done = Provisioned {
                    certificate_pem: certificate_pem.clone(),
                    certificate_id: certificate_id.clone(),
                    thing_name,
                    device_configuration: a.device_configuration,
                };
                self.step = Step::Finished;
                Ok(Next::Done(done))
            }
            Step::Registration { .. } if topic == format!("{register}/rejected") => {
                Err(rejected("RegisterThing", payload))
            }
            _ => Ok(Next::Ignore),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr::DeviceKey;

    fn start_with(k: &DeviceKey) -> (Exchange, Outgoing) {
        let csr = k.csr_pem("sn-1").unwrap();
        Exchange::start(k.public_key(), &csr, "sn-1", "keel-fleet")
    }

    fn start() -> (Exchange, Outgoing) {
        start_with(&DeviceKey::generate().unwrap())
    }

    /// A certificate for a P-256 public key (the uncompressed point),
    /// signed by a throwaway CA: what the cloud would send back.
    fn certificate_for(point: &[u8]) -> String {
        struct Public(Vec<u8>);
        impl rcgen::PublicKeyData for Public {
            fn der_bytes(&self) -> &[u8] {
                &self.0
            }
            fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
                &rcgen::PKCS_ECDSA_P256_SHA256
            }
        }
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .signed_by(&Public(point.to_vec()), &issuer)
            .unwrap()
            .pem()
    }

    fn accepted(cert: &str) -> Vec<u8> {
        json!({"certificateOwnershipToken":"tok","certificateId":"cid","certificatePem":cert})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn certificate_then_registration() {
        let k = DeviceKey::generate().unwrap();
        let (mut ex, _) = start_with(&k);
        // Another device's certificate (shared broker): ignored.
        let other = DeviceKey::generate().unwrap();
        let topic = "$aws/certificates/create-from-csr/json/accepted";
        assert_eq!(
            ex.on_message(topic, &accepted(&certificate_for(other.public_key()))),
            Ok(Next::Ignore)
        );
        let mine = certificate_for(k.public_key());
        let Next::Send(register) = ex.on_message(topic, &accepted(&mine)).unwrap() else {
            panic!("expected the registration request");
        };
        assert_eq!(
            register.topic,
            "$aws/provisioning-templates/keel-fleet/provision/json"
        );
        let v: serde_json::Value = serde_json::from_slice(&register.payload).unwrap();
        assert_eq!(v["certificateOwnershipToken"], "tok");
        assert_eq!(v["parameters"]["SerialNumber"], "sn-1");
        assert_eq!(ex.awaiting(), "RegisterThing");
        let reg = "$aws/provisioning-templates/keel-fleet/provision/json/accepted";
        // A thing name that cannot be one is refused.
        assert!(ex.on_message(reg, br#"{"thingName":"a/b"}"#).is_err());
        let done = ex
            .on_message(
                reg,
                br#"{"thingName":"sn-1","deviceConfiguration":{"k":"v"}}"#,
            )
            .unwrap();
        assert_eq!(
            done,
            Next::Done(Provisioned {
                certificate_pem: mine,
                certificate_id: "cid".into(),
                thing_name: "sn-1".into(),
                device_configuration: json!({"k":"v"}),
            })
        );
    }

    #[test]
    fn the_first_request_carries_the_csr() {
        let (ex, first) = start();
        assert_eq!(first.topic, CREATE_FROM_CSR);
        let v: serde_json::Value = serde_json::from_slice(&first.payload).unwrap();
        assert!(v["certificateSigningRequest"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert_eq!(
            ex.filters()[2],
            "$aws/provisioning-templates/keel-fleet/provision/json/accepted"
        );
    }

    #[test]
    fn a_rejection_says_what_the_cloud_said() {
        let (mut ex, _) = start();
        let err = ex
            .on_message(
                "$aws/certificates/create-from-csr/json/rejected",
                br#"{"statusCode":400,"errorCode":"InvalidPayload","errorMessage":"bad CSR"}"#,
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("400 InvalidPayload: bad CSR"), "{text}");
        // Garbage in a rejection is still a rejection.
        let (mut ex, _) = start();
        assert!(matches!(
            ex.on_message("$aws/certificates/create-from-csr/json/rejected", b"\xff"),
            Err(ExchangeError::Rejected { .. })
        ));
    }

    #[test]
    fn answers_out_of_turn_are_ignored_and_bad_ones_reported() {
        let (mut ex, _) = start();
        // A registration answer before there is a certificate: not ours.
        assert_eq!(
            ex.on_message(
                "$aws/provisioning-templates/keel-fleet/provision/json/accepted",
                br#"{"thingName":"x"}"#
            ),
            Ok(Next::Ignore)
        );
        assert_eq!(ex.on_message("other/topic", b"{}"), Ok(Next::Ignore));
        let err = ex
            .on_message(
                "$aws/certificates/create-from-csr/json/accepted",
                br#"{"certificateOwnershipToken":"t","certificateId":"i","certificatePem":"nope"}"#,
            )
            .unwrap_err();
        assert!(matches!(err, ExchangeError::BadAnswer { .. }), "{err}");
        assert_eq!(ex.awaiting(), "CreateCertificateFromCsr");
    }
}
