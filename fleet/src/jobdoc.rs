//! The job document Keel runs (docs/fleet.md):
//! `{"operation":"keel-update","url":"https://…","sha256":"…","version":"…"}`
//! (`sha256` and `version` optional), and the HTTPS channel manifest of the
//! polling mode: `{"version":"…","url":"https://…","sha256":"…"}`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only operation this device runs.
pub const OPERATION_UPDATE: &str = "keel-update";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateOrder {
    pub url: String,
    /// Hex sha256 of the whole bundle, when the sender knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Why a document is not run; the status it earns is REJECTED either way
/// (the device refuses the job before doing anything), with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocError {
    #[error("unknown operation {0:?}: this device runs only \"keel-update\" jobs")]
    UnknownOperation(String),
    #[error("malformed job document: {0}")]
    Malformed(String),
}

impl UpdateOrder {
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(self.sha256.as_deref()?, &mut out).ok()?;
        Some(out)
    }

    fn check(self) -> Result<UpdateOrder, String> {
        net::Url::parse(&self.url).map_err(|e| format!("url: {e}"))?;
        if let Some(h) = &self.sha256 {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("sha256 must be 64 hexadecimal digits".into());
            }
        }
        if let Some(v) = &self.version {
            if v.is_empty() || v.len() > 64 || v.chars().any(char::is_whitespace) {
                return Err("version must be 1 to 64 characters without spaces".into());
            }
        }
        Ok(self)
    }
}

/// Reads a job document (the `jobDocument` of a job execution).
pub fn parse_job(doc: &Value) -> Result<UpdateOrder, DocError> {
    let obj = doc
        .as_object()
        .ok_or_else(|| DocError::Malformed("not a JSON object".into()))?;
    match obj.get("operation") {
        Some(Value::String(op)) if op == OPERATION_UPDATE => {}
        Some(Value::String(op)) => return Err(DocError::UnknownOperation(op.clone())),
        Some(_) => return Err(DocError::Malformed("\"operation\" is not a string".into())),
        None => return Err(DocError::Malformed("no \"operation\"".into())),
    }
    let mut rest = obj.clone();
    rest.remove("operation");
    let order: UpdateOrder = serde_json::from_value(Value::Object(rest))
        .map_err(|e| DocError::Malformed(e.to_string()))?;
    order.check().map_err(DocError::Malformed)
}

/// The polling mode's channel manifest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelManifest {
    pub version: String,
    pub url: String,
    #[serde(default)]
    pub sha256: Option<String>,
}

impl ChannelManifest {
    pub fn parse(bytes: &[u8]) -> Result<ChannelManifest, DocError> {
        let m: ChannelManifest = serde_json::from_slice(bytes)
            .map_err(|e| DocError::Malformed(format!("channel manifest: {e}")))?;
        let order = UpdateOrder {
            url: m.url.clone(),
            sha256: m.sha256.clone(),
            version: Some(m.version.clone()),
        }
        .check()
        .map_err(|e| DocError::Malformed(format!("channel manifest: {e}")))?;
        let _ = order;
        Ok(m)
    }

    pub fn order(&self) -> UpdateOrder {
        UpdateOrder {
            url: self.url.clone(),
            sha256: self.sha256.clone(),
            version: Some(self.version.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_document() {
        let h = "ab".repeat(32);
        let o = parse_job(
            &json!({"operation":"keel-update","url":"https://h/u.fw","sha256":h,"version":"1.2"}),
        )
        .unwrap();
        assert_eq!(o.sha256_bytes(), Some([0xab; 32]));
        assert_eq!(o.version.as_deref(), Some("1.2"));
        // Round trip through what the store keeps.
        let back: UpdateOrder = serde_json::from_value(serde_json::to_value(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn refusals_say_why() {
        let e = |v: Value| parse_job(&v).unwrap_err();
        assert_eq!(
            e(json!({"operation":"reboot"})),
            DocError::UnknownOperation("reboot".into())
        );
        assert!(matches!(e(json!([])), DocError::Malformed(_)));
        assert!(
            matches!(e(json!({"operation":"keel-update"})), DocError::Malformed(m) if m.contains("url"))
        );
        assert!(
            matches!(e(json!({"operation":"keel-update","url":"http://x/"})), DocError::Malformed(m) if m.contains("plain http"))
        );
        assert!(
            matches!(e(json!({"operation":"keel-update","url":"https://x/","sha256":"zz"})), DocError::Malformed(m) if m.contains("64"))
        );
        assert!(matches!(
            e(json!({"operation":"keel-update","url":5})),
            DocError::Malformed(_)
        ));
    }

    #[test]
    fn manifests() {
        let m = ChannelManifest::parse(br#"{"version":"2.0.0","url":"https://h/2.fw"}"#).unwrap();
        assert_eq!(m.order().version.as_deref(), Some("2.0.0"));
        assert!(ChannelManifest::parse(br#"{"version":"2.0.0"}"#).is_err());
        assert!(
            ChannelManifest::parse(br#"{"version":"2","url":"https://h/","extra":1}"#).is_err()
        );
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = ChannelManifest::parse(&bytes);
            if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                let _ = parse_job(&v);
            }
        }
    }
}
