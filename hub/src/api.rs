//! The operator's side of the hub, over MQTT like everything else:
//! requests on `keel/hub/api/<op>`, answers on `keel/hub/api/<op>/accepted`
//! or `/rejected` carrying the request's `clientToken` (the shape of AWS's
//! own request/response topics). Only the hub's certificate may use these
//! topics (the broker's ACL). Operations:
//!
//! - `list`: every device with its shadow, online state and jobs;
//! - `create-job`: `{"jobId","targets":[thing…],"document":{…}}`;
//! - `desire`: `{"thing","desired":{…}}`, a shadow update as the cloud
//!   side sends it (the device gets the delta).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{Hub, Out};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the hub did not answer within {0} s: is `cargo xtask hub` running?")]
    Timeout(u64),
    #[error("the hub refused: {0}")]
    Rejected(String),
    #[error("{0}; is `cargo xtask hub` running?")]
    Connect(String),
    #[error("cannot read the bundle {path}: {detail}")]
    Bundle { path: PathBuf, detail: String },
    #[error("cannot copy the bundle to {path}: {source}")]
    Copy {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn topic(op: &str, result: &str) -> String {
    format!("keel/hub/api/{op}/{result}")
}

/// The hub's side: answers one API request.
pub fn answer(hub: &mut Hub, op: &str, payload: &[u8]) -> Vec<Out> {
    let req: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let token = req.get("clientToken").cloned().unwrap_or(Value::Null);
    let done = |result: &str, mut body: Value| {
        body["clientToken"] = token.clone();
        Out::new(topic(op, result), body)
    };
    match op {
        "list" => vec![done("accepted", hub.devices())],
        "create-job" => {
            let id = req.get("jobId").and_then(Value::as_str).unwrap_or("");
            let targets: Vec<String> = req
                .get("targets")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let document = req.get("document").cloned().unwrap_or(Value::Null);
            match hub.state.jobs.create(id, document, &targets) {
                Ok(mut out) => {
                    out.push(done("accepted", json!({ "jobId": id, "targets": targets })));
                    out
                }
                Err(e) => vec![done("rejected", json!({ "message": e.to_string() }))],
            }
        }
        "desire" => {
            let thing = req.get("thing").and_then(Value::as_str).unwrap_or("");
            let desired = req.get("desired").cloned().unwrap_or(Value::Null);
            if !crate::pki::valid_name(thing) || !desired.is_object() {
                return vec![done(
                    "rejected",
                    json!({ "message": "give a thing name and a desired object" }),
                )];
            }
            let update = json!({ "state": { "desired": desired } }).to_string();
            let mut out = hub.state.shadow.handle(thing, "update", update.as_bytes());
            out.push(done("accepted", json!({ "thing": thing })));
            out
        }
        _ => vec![done(
            "rejected",
            json!({ "message": format!("unknown operation {op:?}") }),
        )],
    }
}

/// The operator's side: sends one request through the broker and waits for
/// the hub's answer.
pub fn call(
    opts: mqtt::Options,
    op: &str,
    mut request: Value,
    timeout: Duration,
) -> Result<Value, ApiError> {
    let token = format!("cli-{}-{}", std::process::id(), crate::now());
    request["clientToken"] = json!(token);
    let mut client = mqtt::Client::new(opts);
    let answers = format!("keel/hub/api/{op}/+");
    client.subscribe(&[(&answers, mqtt::QoS::AtLeastOnce)]);
    let deadline = Instant::now() + timeout;
    let mut last_error = None;
    while Instant::now() < deadline {
        match client.poll(Duration::from_millis(200)) {
            Some(mqtt::Event::Connected { .. }) => {
                let _ = client.publish(
                    &format!("keel/hub/api/{op}"),
                    request.to_string().as_bytes(),
                    mqtt::QoS::AtLeastOnce,
                    false,
                );
            }
            Some(mqtt::Event::Disconnected { error, .. }) => last_error = Some(error.to_string()),
            Some(mqtt::Event::Message(p)) => {
                let body: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                if body.get("clientToken").and_then(Value::as_str) != Some(token.as_str()) {
                    continue;
                }
                client.disconnect();
                if p.topic.ends_with("/rejected") {
                    let m = body
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("no reason given");
                    return Err(ApiError::Rejected(m.to_string()));
                }
                return Ok(body);
            }
            None => {}
        }
    }
    client.disconnect();
    match last_error {
        Some(e) => Err(ApiError::Connect(e)),
        None => Err(ApiError::Timeout(timeout.as_secs())),
    }
}

/// Puts a built `update.fw` where the file server serves it (named by its
/// hash, so two bundles never collide) and returns the job document:
/// `{"operation":"keel-update","url","sha256","version"}`.
pub fn publish_bundle(bundle: &Path, files_dir: &Path, base_url: &str) -> Result<Value, ApiError> {
    let bad = |detail: String| ApiError::Bundle {
        path: bundle.to_path_buf(),
        detail,
    };
    let mut f = std::fs::File::open(bundle).map_err(|e| bad(e.to_string()))?;
    let header = bundle::Header::read(&mut f).map_err(|e| bad(e.to_string()))?;
    let manifest = bundle::Manifest::parse(header.manifest_text().map_err(|e| bad(e.to_string()))?)
        .map_err(|e| bad(e.to_string()))?;
    let bytes = std::fs::read(bundle).map_err(|e| bad(e.to_string()))?;
    let sha = hex::encode(Sha256::digest(&bytes));
    let name = format!(
        "{}-{}.fw",
        manifest
            .version
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "_"),
        &sha[..16]
    );
    let dest = files_dir.join(&name);
    durable::create_dir_all(files_dir)
        .and_then(|()| durable::replace(&dest, &bytes, 0o644))
        .map_err(|source| ApiError::Copy { path: dest, source })?;
    Ok(json!({
        "operation": "keel-update",
        "url": format!("{}/{name}", base_url.trim_end_matches('/')),
        "sha256": sha,
        "version": manifest.version,
    }))
}
