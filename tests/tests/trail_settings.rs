//! The trail's run-time settings through the unmodified AWS CLI against the real collector:
//! `PutEventSelectors` changes what is recorded from then on and is itself in the trail, with
//! who called it; `StopLogging` and `StartLogging` stop and start the trail (and are recorded
//! even while it is stopped); refused calls are recorded with their error; everything survives
//! a restart; both validators pass on the trail.

use std::collections::HashSet;
use std::path::Path;

use groundtrail_tests::*;
use serde_json::{Value, json};

const READ_KEY: &str = "AKIDTRAILREADER";
const READ_SECRET: &str = "reader-secret-0123456789";
const WRITE_KEY: &str = "AKIDTRAILWRITER";
const WRITE_SECRET: &str = "writer-secret-0123456789";

fn spec(dir: &Path) -> (Spec, Store) {
    let trail = dir.join("trail");
    let mut spec = Spec::new(Dest::Local {
        path: trail.clone(),
        bucket: "settings-bucket".into(),
    });
    spec.extra_toml = format!(
        "[[api.access_keys]]\naccess_key_id = \"{READ_KEY}\"\nsecret_access_key = \"{READ_SECRET}\"\nscopes = [\"read\"]\n\n\
         [[api.access_keys]]\naccess_key_id = \"{WRITE_KEY}\"\nsecret_access_key = \"{WRITE_SECRET}\"\nscopes = [\"read\", \"write\"]\n"
    );
    (spec, Store::Local(trail))
}

/// `aws <args>` against the collector with a key; (exit code, stdout JSON or Null, stderr).
fn aws(cli: &Path, c: &Collector, key: (&str, &str), args: &[&str]) -> (i32, Value, String) {
    let endpoint = format!("http://{}", c.addr);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--endpoint-url", &endpoint, "--output", "json"]);
    let out = aws_run(cli, &all, key.0, key.1);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `aws cloudtrail put-event-selectors` with advanced selectors.
fn put_selectors(
    cli: &Path,
    c: &Collector,
    key: (&str, &str),
    selectors: &Value,
) -> (i32, Value, String) {
    let selectors = selectors.to_string();
    aws(
        cli,
        c,
        key,
        &[
            "cloudtrail",
            "put-event-selectors",
            "--trail-name",
            TRAIL,
            "--advanced-event-selectors",
            &selectors,
        ],
    )
}

/// `aws cloudtrail <op> --name <trail>` (get-trail, get-trail-status, stop-logging, ...).
fn on_trail(cli: &Path, c: &Collector, key: (&str, &str), op: &str) -> (i32, Value, String) {
    aws(cli, c, key, &["cloudtrail", op, "--name", TRAIL])
}

/// `aws cloudtrail get-event-selectors`, as the reader.
fn get_selectors(cli: &Path, c: &Collector) -> Value {
    ok(aws(
        cli,
        c,
        (READ_KEY, READ_SECRET),
        &["cloudtrail", "get-event-selectors", "--trail-name", TRAIL],
    ))
}

fn ok(r: (i32, Value, String)) -> Value {
    assert_eq!(r.0, 0, "aws failed: {}", r.2);
    r.1
}

fn id(r: &Value) -> String {
    r["eventID"].as_str().unwrap().to_string()
}

async fn trail_ids(store: &Store) -> HashSet<String> {
    store.event_id_counts().await.into_keys().collect()
}

/// The collector's records of its trail calls, in the trail: (eventName, errorCode, key).
async fn control_records(store: &Store) -> Vec<(String, Option<String>, String)> {
    let out: Vec<(String, Value)> = store
        .records()
        .await
        .into_iter()
        .filter(|(_, r)| r["eventSource"] == "cloudtrail.amazonaws.com")
        .collect();
    let mut out: Vec<_> = out
        .into_iter()
        .map(|(_, r)| {
            (
                r["eventName"].as_str().unwrap_or_default().to_string(),
                r["errorCode"].as_str().map(str::to_string),
                r["userIdentity"]["accessKeyId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    // Calls in the same second may be filed in either order.
    out.sort();
    out
}

async fn passed_over(c: &Collector) -> u64 {
    metric(
        &c.http_get("/metrics").await,
        "groundtrail_records_passed_over_total",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selectors_and_logging_change_what_the_trail_records() {
    let test = "selectors_and_logging_change_what_the_trail_records";
    let Some(cli) = aws_cli(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (spec, store) = spec(dir.path());
    let mut c = Collector::start(dir.path(), spec).await;
    let started = chrono::Utc::now();
    let writer = (WRITE_KEY, WRITE_SECRET);
    let reader = (READ_KEY, READ_SECRET);

    // The default: every record, and selectors that say so.
    let before = [
        record_of("app.onprem.internal", false),
        record_of("sshd.onprem.internal", true),
    ];
    assert_eq!(c.client().post_records(&before).await.unwrap().status, 200);
    store.wait_delivered(&event_ids(&before)).await;
    let got = get_selectors(&cli, &c);
    assert_eq!(got["TrailARN"], TRAIL_ARN);
    let described = ok(on_trail(&cli, &c, reader, "get-trail"));
    assert_eq!(described["Trail"]["HasCustomEventSelectors"], false);

    // Developers: only their services' write events.
    let selectors = json!([{
        "Name": "developer services, writes",
        "FieldSelectors": [
            {"Field": "eventCategory", "Equals": ["Management"]},
            {"Field": "eventSource", "StartsWith": ["app."]},
            {"Field": "readOnly", "Equals": ["false"]}
        ]
    }]);
    let put = ok(put_selectors(&cli, &c, writer, &selectors));
    assert_eq!(put["TrailARN"], TRAIL_ARN);
    assert_eq!(put["AdvancedEventSelectors"], selectors);
    let got = get_selectors(&cli, &c);
    assert_eq!(got["AdvancedEventSelectors"], selectors);
    let described = ok(on_trail(&cli, &c, reader, "get-trail"));
    assert_eq!(described["Trail"]["HasCustomEventSelectors"], true);

    // From then on: the app's writes only. The taken record comes last in its batch, so once
    // it is delivered the others were judged.
    let after = [
        record_of("sshd.onprem.internal", true),
        record_of("app.onprem.internal", true),
        record_of("sshd.onprem.internal", false),
        record_of("app.onprem.internal", false),
    ];
    assert_eq!(c.client().post_records(&after).await.unwrap().status, 200);
    store.wait_delivered(&[id(&after[3])]).await;
    let ids = trail_ids(&store).await;
    for r in &after[..3] {
        assert!(!ids.contains(&id(r)), "not selected, not in the trail: {r}");
    }
    assert!(
        before.iter().all(|r| ids.contains(&id(r))),
        "earlier records stay"
    );
    assert!(passed_over(&c).await >= 3);

    // Selectors a trail cannot have are refused, and the refusal is recorded.
    let bad = json!([{"FieldSelectors": [{"Field": "readOnly", "StartsWith": ["t"]}]}]);
    let (code, _, err) = put_selectors(&cli, &c, writer, &bad);
    assert_ne!(code, 0);
    assert!(err.contains("InvalidEventSelectorsException"), "{err}");
    // A reader may not stop the trail; the attempt is recorded with who made it.
    let (code, _, err) = on_trail(&cli, &c, reader, "stop-logging");
    assert_ne!(code, 0);
    assert!(err.contains("AccessDenied"), "{err}");

    // Stopped: nothing is recorded, but the stop and the start are.
    ok(on_trail(&cli, &c, writer, "stop-logging"));
    let status = ok(on_trail(&cli, &c, reader, "get-trail-status"));
    assert_eq!(status["IsLogging"], false, "{status}");
    assert!(status["TimeLoggingStopped"].is_string(), "{status}");
    let n = passed_over(&c).await;
    let stopped = [record_of("app.onprem.internal", false)];
    assert_eq!(c.client().post_records(&stopped).await.unwrap().status, 200);
    wait_for("the record posted while stopped passed over", || async {
        (passed_over(&c).await > n).then_some(())
    })
    .await;
    ok(on_trail(&cli, &c, writer, "start-logging"));
    let resumed = [record_of("app.onprem.internal", false)];
    assert_eq!(c.client().post_records(&resumed).await.unwrap().status, 200);
    store.wait_delivered(&[id(&resumed[0])]).await;
    assert!(!trail_ids(&store).await.contains(&id(&stopped[0])));
    let calls = wait_for("the trail's records of the five calls", || async {
        let calls = control_records(&store).await;
        (calls.len() >= 5).then_some(calls)
    })
    .await;
    let expect = |name: &str, error: Option<&str>, key: &str| {
        (name.to_string(), error.map(str::to_string), key.to_string())
    };
    let mut expected = vec![
        expect("PutEventSelectors", None, WRITE_KEY),
        expect(
            "PutEventSelectors",
            Some("InvalidEventSelectorsException"),
            WRITE_KEY,
        ),
        expect("StopLogging", Some("AccessDeniedException"), READ_KEY),
        expect("StopLogging", None, WRITE_KEY),
        expect("StartLogging", None, WRITE_KEY),
    ];
    expected.sort();
    assert_eq!(calls, expected);
    let put_record = store
        .records()
        .await
        .into_iter()
        .map(|(_, r)| r)
        .find(|r| r["eventName"] == "PutEventSelectors" && r.get("errorCode").is_none())
        .unwrap();
    assert_eq!(
        put_record["requestParameters"]["advancedEventSelectors"][0]["fieldSelectors"][1]["startsWith"],
        json!(["app."])
    );
    assert_eq!(put_record["sourceIPAddress"], "127.0.0.1");

    // Both validators accept the trail.
    let mut args = vec![
        "--trail-arn".to_string(),
        TRAIL_ARN.into(),
        "--config".into(),
        c.config_path.display().to_string(),
    ];
    args.extend(window(started));
    groundtrail_validate(&args).assert_valid("validate-logs with selectors and a stop");

    // A restart keeps the selectors and the logging state.
    c.sigterm().await;
    c.spawn().await;
    let got = get_selectors(&cli, &c);
    assert_eq!(got["AdvancedEventSelectors"], selectors);
    let status = ok(on_trail(&cli, &c, reader, "get-trail-status"));
    assert_eq!(status["IsLogging"], true);
    let last = [
        record_of("sshd.onprem.internal", false),
        record_of("app.onprem.internal", false),
    ];
    assert_eq!(c.client().post_records(&last).await.unwrap().status, 200);
    store.wait_delivered(&[id(&last[1])]).await;
    assert!(!trail_ids(&store).await.contains(&id(&last[0])));

    // A selector set larger than a record's requestParameters may be (100 KiB) is still
    // recorded: with the trail's name only.
    let long: Vec<String> = (0..60)
        .map(|i| format!("app.{i}.{}", "x".repeat(2000)))
        .collect();
    let big = json!([{"FieldSelectors": [{"Field": "eventSource", "StartsWith": long}]}]);
    ok(put_selectors(&cli, &c, writer, &big));
    let recorded = wait_for("the large PutEventSelectors recorded", || async {
        store
            .records()
            .await
            .into_iter()
            .map(|(_, r)| r)
            .filter(|r| r["eventName"] == "PutEventSelectors" && r.get("errorCode").is_none())
            .find(|r| r["requestParameters"] == json!({"trailName": TRAIL}))
    })
    .await;
    assert_eq!(recorded["userIdentity"]["accessKeyId"], WRITE_KEY);
}
