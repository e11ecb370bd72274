//! The jobs state machine without a broker: every message a cloud could
//! send, in the orders that matter, including a restart in the middle.

use super::*;
use serde_json::json;

const T: &str = "dev-1";

fn doc() -> Value {
    json!({"operation":"keel-update","url":"https://h/u.fw","version":"2.0"})
}

fn started(id: &str, version: u64, document: Value) -> Vec<u8> {
    json!({"execution":{"jobId":id,"status":"IN_PROGRESS","versionNumber":version,"jobDocument":document}})
        .to_string()
        .into_bytes()
}

fn status(v: &str) -> DeviceStatus {
    DeviceStatus {
        firmware_version: v.into(),
        ..DeviceStatus::default()
    }
}

fn published(steps: &[Step]) -> Vec<(String, Value)> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Publish(o) => {
                Some((o.topic.clone(), serde_json::from_slice(&o.payload).unwrap()))
            }
            _ => None,
        })
        .collect()
}

fn msg(j: &mut Jobs, suffix: &str, payload: Value) -> Vec<Step> {
    j.on_message(&topic(T, suffix), payload.to_string().as_bytes())
        .unwrap()
}

#[test]
fn a_job_runs_once_across_a_reboot_and_its_status_is_sent_until_accepted() {
    let d = tempfile::tempdir().unwrap();
    let mut j = Jobs::open(T, d.path()).unwrap();
    let steps = j.on_connect(&UpdateOutcome::Idle, &status("1.0")).unwrap();
    assert_eq!(published(&steps)[0].0, "$aws/things/dev-1/jobs/start-next");
    let steps = j
        .on_message(&topic(T, "start-next/accepted"), &started("j1", 2, doc()))
        .unwrap();
    assert!(matches!(&steps[1], Step::RunUpdate(o) if o.url == "https://h/u.fw"));
    let steps = j.after_update(Ok(UpdateStarted::RebootRequired)).unwrap();
    let p = published(&steps);
    assert_eq!(p[0].0, "$aws/things/dev-1/jobs/j1/update");
    assert_eq!(p[0].1["status"], "IN_PROGRESS");
    assert!(p[0].1.get("expectedVersion").is_none());
    assert_eq!(steps.last(), Some(&Step::Reboot));

    // The reboot: a new state machine on the same directory. The cloud
    // hands out the same job again; it is not run again.
    let mut j = Jobs::open(T, d.path()).unwrap();
    let steps = j.on_connect(&UpdateOutcome::Trial, &status("2.0")).unwrap();
    assert!(steps
        .iter()
        .all(|s| !matches!(s, Step::RunUpdate(_) | Step::Reboot)));
    let steps = j
        .on_message(&topic(T, "start-next/accepted"), &started("j1", 3, doc()))
        .unwrap();
    assert!(steps.is_empty(), "{steps:?}");
    // Health confirmed: SUCCEEDED is owed, with the version learnt.
    let steps = j
        .tick(
            &UpdateOutcome::Confirmed {
                version: "2.0".into(),
            },
            &status("2.0"),
        )
        .unwrap();
    let p = published(&steps);
    assert_eq!(p[0].1["status"], "SUCCEEDED");
    assert_eq!(p[0].1["expectedVersion"], 3);

    // Lost answer, another restart: still owed, sent again on connect.
    let mut j = Jobs::open(T, d.path()).unwrap();
    let steps = j
        .on_connect(
            &UpdateOutcome::Confirmed {
                version: "2.0".into(),
            },
            &status("2.0"),
        )
        .unwrap();
    assert_eq!(published(&steps)[0].1["status"], "SUCCEEDED");
    // Accepted: forgotten, and the next job is asked for.
    let steps = msg(
        &mut j,
        "j1/update/accepted",
        json!({"executionState":{"status":"SUCCEEDED","versionNumber":4}}),
    );
    assert_eq!(published(&steps)[0].0, "$aws/things/dev-1/jobs/start-next");
    assert!(j.state.owed.is_empty());
    // Offered once more (a buggy cloud): refused, never run.
    let steps = j
        .on_message(&topic(T, "start-next/accepted"), &started("j1", 5, doc()))
        .unwrap();
    assert!(steps.iter().all(|s| !matches!(s, Step::RunUpdate(_))));
}

#[test]
fn a_rollback_fails_the_job_with_the_reason() {
    let d = tempfile::tempdir().unwrap();
    let mut j = Jobs::open(T, d.path()).unwrap();
    j.on_message(&topic(T, "start-next/accepted"), &started("j2", 1, doc()))
        .unwrap();
    j.after_update(Ok(UpdateStarted::RebootRequired)).unwrap();
    let mut j = Jobs::open(T, d.path()).unwrap();
    let steps = j
        .on_connect(
            &UpdateOutcome::Failed {
                reason: "health check failed; rolled back".into(),
            },
            &status("1.0"),
        )
        .unwrap();
    let p = published(&steps);
    assert_eq!(p[0].1["status"], "FAILED");
    assert_eq!(
        p[0].1["statusDetails"]["reason"],
        "health check failed; rolled back"
    );
}

#[test]
fn a_device_error_fails_the_job_and_bad_documents_are_rejected() {
    let d = tempfile::tempdir().unwrap();
    let mut j = Jobs::open(T, d.path()).unwrap();
    j.on_message(&topic(T, "start-next/accepted"), &started("j3", 1, doc()))
        .unwrap();
    let steps = j
        .after_update(Err(UpdateError {
            reason: "bad signature".into(),
        }))
        .unwrap();
    let p = published(&steps);
    assert_eq!(
        (
            p[0].1["status"].as_str(),
            p[0].1["statusDetails"]["reason"].as_str()
        ),
        (Some("FAILED"), Some("bad signature"))
    );

    let steps = j
        .on_message(
            &topic(T, "start-next/accepted"),
            &started("j4", 1, json!({"operation":"reboot"})),
        )
        .unwrap();
    let p = published(&steps);
    assert_eq!(p.last().unwrap().1["status"], "REJECTED");
    assert!(p.last().unwrap().1["statusDetails"]["reason"]
        .as_str()
        .unwrap()
        .contains("unknown operation"));
    let steps = j
        .on_message(
            &topic(T, "start-next/accepted"),
            &started("j5", 1, json!({"operation":"keel-update","url":7})),
        )
        .unwrap();
    assert_eq!(published(&steps).last().unwrap().1["status"], "REJECTED");
    assert!(!j.is_busy());
}

#[test]
fn a_second_job_while_one_runs_waits_or_is_rejected() {
    let d = tempfile::tempdir().unwrap();
    let mut j = Jobs::open(T, d.path()).unwrap();
    j.on_message(&topic(T, "start-next/accepted"), &started("a", 1, doc()))
        .unwrap();
    let steps = msg(&mut j, "notify-next", json!({"execution":{"jobId":"b"}}));
    assert!(
        published(&steps).is_empty(),
        "a notify while busy asks for nothing"
    );
    let steps = j
        .on_message(&topic(T, "start-next/accepted"), &started("b", 1, doc()))
        .unwrap();
    let p = published(&steps);
    assert_eq!(
        (p[0].0.as_str(), p[0].1["status"].as_str()),
        ("$aws/things/dev-1/jobs/b/update", Some("REJECTED"))
    );
    assert_eq!(j.state.current.as_ref().unwrap().job_id, "a");
}

#[test]
fn version_mismatch_and_terminal_answers() {
    let d = tempfile::tempdir().unwrap();
    let mut j = Jobs::open(T, d.path()).unwrap();
    j.on_message(&topic(T, "start-next/accepted"), &started("j", 1, doc()))
        .unwrap();
    j.after_update(Err(UpdateError { reason: "x".into() }))
        .unwrap();
    let steps = msg(
        &mut j,
        "j/update/rejected",
        json!({"code":"VersionMismatch"}),
    );
    assert_eq!(published(&steps)[0].0, "$aws/things/dev-1/jobs/j/get");
    let steps = msg(
        &mut j,
        "j/get/accepted",
        json!({"execution":{"versionNumber":6}}),
    );
    assert_eq!(published(&steps)[0].1["expectedVersion"], 6);
    let steps = msg(
        &mut j,
        "j/update/rejected",
        json!({"code":"VersionMismatch","executionState":{"versionNumber":8}}),
    );
    assert_eq!(published(&steps)[0].1["expectedVersion"], 8);
    msg(
        &mut j,
        "j/update/rejected",
        json!({"code":"TerminalStateReached"}),
    );
    assert!(j.state.owed.is_empty());
    assert_eq!(j.state.finished, ["j"]);
}

#[test]
fn a_restart_during_the_download() {
    let d = tempfile::tempdir().unwrap();
    let mut j = Jobs::open(T, d.path()).unwrap();
    j.on_message(&topic(T, "start-next/accepted"), &started("j", 1, doc()))
        .unwrap();
    // Written before the power went: reboot into it.
    let mut j2 = Jobs::open(T, d.path()).unwrap();
    let steps = j2
        .on_connect(&UpdateOutcome::Staged, &status("1.0"))
        .unwrap();
    assert!(steps.contains(&Step::Reboot));
    // Not written: FAILED with a reason, never re-run silently.
    let d = tempfile::tempdir().unwrap();
    let mut j = Jobs::open(T, d.path()).unwrap();
    j.on_message(&topic(T, "start-next/accepted"), &started("k", 1, doc()))
        .unwrap();
    let mut j = Jobs::open(T, d.path()).unwrap();
    let steps = j.on_connect(&UpdateOutcome::Idle, &status("1.0")).unwrap();
    assert_eq!(published(&steps)[0].1["status"], "FAILED");
}

proptest::proptest! {
    #[test]
    fn messages_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), which in 0usize..6) {
        let d = tempfile::tempdir().unwrap();
        let mut j = Jobs::open(T, d.path()).unwrap();
        let suffix = ["notify-next", "start-next/accepted", "x/update/accepted", "x/update/rejected", "x/get/accepted", "start-next/rejected"][which];
        let _ = j.on_message(&topic(T, suffix), &bytes);
    }
}
