//! AWS IoT's classic device shadow service, as documented for the MQTT
//! topics `$aws/things/<thing>/shadow/{get,update}` and their
//! `accepted`/`rejected`/`delta` answers: one JSON document per thing with
//! `desired` and `reported` states, merged key by key (`null` deletes), a
//! version that every accepted update increments, optimistic locking
//! (`version` in a request must match, else 409), and a delta of the
//! desired keys that reported does not match.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::{now, Out};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub desired: Map<String, Value>,
    pub reported: Map<String, Value>,
    pub version: u64,
}

impl Document {
    /// The desired keys whose reported value differs (recursively).
    pub fn delta(&self) -> Map<String, Value> {
        delta(&self.desired, &self.reported)
    }
}

fn delta(desired: &Map<String, Value>, reported: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, d) in desired {
        match (d, reported.get(k)) {
            (Value::Object(dm), Some(Value::Object(rm))) => {
                let sub = delta(dm, rm);
                if !sub.is_empty() {
                    out.insert(k.clone(), Value::Object(sub));
                }
            }
            (d, Some(r)) if d == r => {}
            (d, _) => {
                out.insert(k.clone(), d.clone());
            }
        }
    }
    out
}

/// Merges `patch` into `base`: objects recursively, `null` deletes.
fn merge(base: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match (base.get_mut(k), v) {
            (_, Value::Null) => {
                base.remove(k);
            }
            (Some(Value::Object(b)), Value::Object(p)) => merge(b, p),
            (_, v) => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ShadowService {
    pub documents: BTreeMap<String, Document>,
}

fn error(code: u64, message: &str, token: &Value) -> Value {
    let mut v = json!({ "code": code, "message": message, "timestamp": now() });
    if !token.is_null() {
        v["clientToken"] = token.clone();
    }
    v
}

impl ShadowService {
    /// Handles a request on `$aws/things/<thing>/shadow/<op>`; returns what
    /// to publish.
    pub fn handle(&mut self, thing: &str, op: &str, payload: &[u8]) -> Vec<Out> {
        let topic = |s: &str| format!("$aws/things/{thing}/shadow/{s}");
        let request: Value = match serde_json::from_slice(payload) {
            Ok(Value::Object(m)) => Value::Object(m),
            // AWS accepts an empty payload for get.
            _ if op == "get" && payload.is_empty() => json!({}),
            _ => {
                return vec![Out::new(
                    topic(&format!("{op}/rejected")),
                    error(400, "Invalid JSON", &Value::Null),
                )]
            }
        };
        let token = request.get("clientToken").cloned().unwrap_or(Value::Null);
        match op {
            "get" => match self.documents.get(thing) {
                None => vec![Out::new(
                    topic("get/rejected"),
                    error(
                        404,
                        &format!("No shadow exists with name: '{thing}'"),
                        &token,
                    ),
                )],
                Some(doc) => {
                    let mut state = json!({ "desired": doc.desired, "reported": doc.reported });
                    let d = doc.delta();
                    if !d.is_empty() {
                        state["delta"] = Value::Object(d);
                    }
                    let mut v =
                        json!({ "state": state, "version": doc.version, "timestamp": now() });
                    if !token.is_null() {
                        v["clientToken"] = token;
                    }
                    vec![Out::new(topic("get/accepted"), v)]
                }
            },
            "update" => self.update(thing, &request, token),
            _ => Vec::new(),
        }
    }

    fn update(&mut self, thing: &str, request: &Value, token: Value) -> Vec<Out> {
        let topic = |s: &str| format!("$aws/things/{thing}/shadow/{s}");
        let reject = |code, message: &str| {
            vec![Out::new(
                topic("update/rejected"),
                error(code, message, &token),
            )]
        };
        let Some(state) = request.get("state").and_then(Value::as_object) else {
            return reject(400, "Missing required node: state");
        };
        for (k, v) in state {
            if !matches!(k.as_str(), "desired" | "reported") {
                return reject(400, &format!("Invalid JSON: unexpected state node '{k}'"));
            }
            if !v.is_object() && !v.is_null() {
                return reject(
                    400,
                    &format!("Invalid JSON: state.{k} must be an object or null"),
                );
            }
        }
        let doc = self.documents.entry(thing.to_string()).or_default();
        if let Some(v) = request.get("version") {
            if v.as_u64() != Some(doc.version) {
                return reject(409, "Version conflict");
            }
        }
        let mut desired_changed = false;
        for (part, target) in [
            ("desired", &mut doc.desired),
            ("reported", &mut doc.reported),
        ] {
            match state.get(part) {
                Some(Value::Null) => target.clear(),
                Some(Value::Object(p)) => merge(target, p),
                _ => continue,
            }
            desired_changed |= part == "desired";
        }
        doc.version += 1;
        let mut accepted = json!({ "state": state, "version": doc.version, "timestamp": now() });
        if !token.is_null() {
            accepted["clientToken"] = token;
        }
        let mut out = vec![Out::new(topic("update/accepted"), accepted)];
        let d = doc.delta();
        if desired_changed && !d.is_empty() {
            out.push(Out::new(
                topic("update/delta"),
                json!({ "state": d, "version": doc.version, "timestamp": now() }),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(o: &Out) -> Value {
        serde_json::from_slice(&o.payload).unwrap()
    }

    #[test]
    fn update_get_delta_and_conflict() {
        let mut s = ShadowService::default();
        let r = s.handle("t", "get", b"");
        assert_eq!(r[0].topic, "$aws/things/t/shadow/get/rejected");
        assert_eq!(body(&r[0])["code"], 404);

        let r = s.handle(
            "t",
            "update",
            br#"{"state":{"reported":{"a":1,"b":{"c":2}}},"clientToken":"x"}"#,
        );
        assert_eq!(r.len(), 1);
        assert_eq!(body(&r[0])["version"], 1);
        assert_eq!(body(&r[0])["clientToken"], "x");

        let r = s.handle(
            "t",
            "update",
            br#"{"state":{"desired":{"a":1,"b":{"c":3},"z":true}}}"#,
        );
        assert_eq!(r[1].topic, "$aws/things/t/shadow/update/delta");
        assert_eq!(body(&r[1])["state"], json!({"b":{"c":3},"z":true}));

        let r = s.handle(
            "t",
            "update",
            br#"{"state":{"reported":{"z":true}},"version":1}"#,
        );
        assert_eq!(body(&r[0])["code"], 409);

        let r = s.handle(
            "t",
            "update",
            br#"{"state":{"reported":{"z":true,"a":null}},"version":2}"#,
        );
        assert_eq!(body(&r[0])["version"], 3);
        let r = s.handle("t", "get", b"{}");
        let g = body(&r[0]);
        assert_eq!(g["state"]["delta"], json!({"a":1,"b":{"c":3}}));
        assert!(g["state"]["reported"].get("a").is_none());
    }

    #[test]
    fn bad_requests_are_rejected_with_400() {
        let mut s = ShadowService::default();
        for p in [
            &b"nope"[..],
            b"[]",
            b"{}",
            br#"{"state":{"other":{}}}"#,
            br#"{"state":{"desired":5}}"#,
        ] {
            let r = s.handle("t", "update", p);
            assert_eq!(body(&r[0])["code"], 400, "{}", String::from_utf8_lossy(p));
        }
    }
}
