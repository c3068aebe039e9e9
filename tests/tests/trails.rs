//! Two trails on one collector, against the real binary, moto S3 and the unmodified AWS CLI:
//! a security trail (the primary, `[trail]`) that records everything, and a developers' trail
//! (`[[trails]]`) with its own bucket, key prefix and selectors (only their services' write
//! events). Each trail gets exactly the records its selectors take, `DescribeTrails` lists both,
//! a `PutEventSelectors` on the developers' trail changes what it records from then on and is in
//! its trail, a `kill -9` loses and doubles nothing in either, and both validators accept both
//! chains.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use groundtrail_tests::*;
use serde_json::{Value, json};

const KEY: &str = "AKIDTRAILSADMIN";
const SECRET: &str = "trails-admin-secret-0123";
const DEV: &str = "developers";
const DEV_ARN: &str = "arn:aws:cloudtrail:us-east-1:123456789012:trail/developers";

fn spec(security: &str, developers: &str, endpoint: &str) -> Spec {
    let mut spec = Spec::new(Dest::S3 {
        bucket: security.into(),
        endpoint: endpoint.into(),
    });
    spec.extra_toml = format!(
        r#"[[api.access_keys]]
access_key_id = "{KEY}"
secret_access_key = "{SECRET}"
scopes = ["read", "write"]

[[trails]]
name = "{DEV}"
s3_key_prefix = "dev"
advanced_event_selectors = [{{ name = "developer services, writes", field_selectors = [
  {{ field = "eventCategory", equals = ["Management"] }},
  {{ field = "eventSource", starts_with = ["app."] }},
  {{ field = "readOnly", equals = ["false"] }},
] }}]

[[trails.destinations]]
type = "s3"
name = "developers-bucket"
bucket = "{developers}"
region = "us-east-1"
endpoint = "{endpoint}"
force_path_style = true
"#
    );
    spec
}

fn id(r: &Value) -> String {
    r["eventID"].as_str().unwrap().to_string()
}

fn aws(cli: &Path, c: &Collector, args: &[&str]) -> Value {
    let endpoint = format!("http://{}", c.addr);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--endpoint-url", &endpoint, "--output", "json"]);
    let out = aws_run(cli, &all, KEY, SECRET);
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Each record's eventID and how often it is in the store's log files.
async fn counts(store: &Store) -> HashMap<String, usize> {
    store.event_id_counts().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trails_take_what_their_selectors_take_and_validate() {
    let test = "two_trails_take_what_their_selectors_take_and_validate";
    let (Some(cli), Some(endpoint)) = (aws_cli(test), s3_endpoint(test)) else {
        return;
    };
    let (sec_bucket, dev_bucket) = (unique_bucket("sec"), unique_bucket("dev"));
    let security = create_bucket(&endpoint, &sec_bucket).await;
    let developers = create_bucket(&endpoint, &dev_bucket).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = Collector::start(dir.path(), spec(&sec_bucket, &dev_bucket, &endpoint)).await;
    let started = chrono::Utc::now();

    // DescribeTrails: both, each with its bucket and prefix.
    let described = aws(&cli, &c, &["cloudtrail", "describe-trails"]);
    let list = described["trailList"].as_array().expect("trailList");
    assert_eq!(list.len(), 2, "{described}");
    assert_eq!(list[0]["Name"], TRAIL);
    assert_eq!(list[0]["S3BucketName"], sec_bucket.as_str());
    assert_eq!(list[1]["Name"], DEV);
    assert_eq!(list[1]["TrailARN"], DEV_ARN);
    assert_eq!(list[1]["S3BucketName"], dev_bucket.as_str());
    assert_eq!(list[1]["S3KeyPrefix"], "dev");
    assert_eq!(list[1]["HasCustomEventSelectors"], true);
    let one = aws(
        &cli,
        &c,
        &[
            "cloudtrail",
            "describe-trails",
            "--trail-name-list",
            DEV_ARN,
        ],
    );
    assert_eq!(one["trailList"].as_array().map(Vec::len), Some(1), "{one}");
    let listed = aws(&cli, &c, &["cloudtrail", "list-trails"]);
    assert_eq!(listed["Trails"][1]["TrailARN"], DEV_ARN, "{listed}");
    let status = aws(&cli, &c, &["cloudtrail", "get-trail-status", "--name", DEV]);
    assert_eq!(status["IsLogging"], true, "{status}");

    // Four kinds of record: only the app's writes are the developers'.
    let batch = [
        record_of("app.onprem.internal", false),
        record_of("app.onprem.internal", true),
        record_of("sshd.onprem.internal", false),
        record_of("sshd.onprem.internal", true),
    ];
    assert_eq!(c.client().post_records(&batch).await.unwrap().status, 200);
    security.wait_delivered(&event_ids(&batch)).await;
    developers.wait_delivered(&[id(&batch[0])]).await;
    let dev = counts(&developers).await;
    assert_eq!(dev.get(&id(&batch[0])), Some(&1));
    for r in &batch[1..] {
        assert!(!dev.contains_key(&id(r)), "not the developers': {r}");
    }
    assert!(
        developers
            .log_keys()
            .await
            .iter()
            .all(|k| k.starts_with("dev/AWSLogs/")),
        "the developers' prefix"
    );

    // The developers now take sshd's writes too; from then on, and the change is in their
    // trail (and in the security trail, which takes everything).
    let selectors = json!([
        {"Name": "developer services, writes", "FieldSelectors": [
            {"Field": "eventCategory", "Equals": ["Management"]},
            {"Field": "eventSource", "StartsWith": ["app.", "sshd."]},
            {"Field": "readOnly", "Equals": ["false"]}
        ]}
    ]);
    let put = aws(
        &cli,
        &c,
        &[
            "cloudtrail",
            "put-event-selectors",
            "--trail-name",
            DEV,
            "--advanced-event-selectors",
            &selectors.to_string(),
        ],
    );
    assert_eq!(put["TrailARN"], DEV_ARN);
    let got = aws(
        &cli,
        &c,
        &["cloudtrail", "get-event-selectors", "--trail-name", DEV],
    );
    assert_eq!(got["AdvancedEventSelectors"], selectors);
    let primary = aws(
        &cli,
        &c,
        &["cloudtrail", "get-event-selectors", "--trail-name", TRAIL],
    );
    assert_ne!(
        primary["AdvancedEventSelectors"], selectors,
        "the other trail is unchanged"
    );
    let later = [
        record_of("sshd.onprem.internal", true),
        record_of("sshd.onprem.internal", false),
    ];
    assert_eq!(c.client().post_records(&later).await.unwrap().status, 200);
    developers.wait_delivered(&[id(&later[1])]).await;
    security.wait_delivered(&event_ids(&later)).await;
    let dev = counts(&developers).await;
    assert!(!dev.contains_key(&id(&later[0])));
    assert!(!dev.contains_key(&id(&batch[2])), "not back-filled");
    let put_in = |store: &Store| {
        let store = store.clone();
        async move {
            wait_for("the PutEventSelectors record", || async {
                store
                    .records()
                    .await
                    .into_iter()
                    .map(|(_, r)| r)
                    .find(|r| r["eventName"] == "PutEventSelectors")
            })
            .await
        }
    };
    let recorded = put_in(&developers).await;
    assert_eq!(recorded["requestParameters"]["trailName"], DEV);
    assert_eq!(recorded["userIdentity"]["accessKeyId"], KEY);
    put_in(&security).await;

    // SIGTERM right after a 200: the feed copies the records before it stops, and the
    // developers' files are delivered within the shutdown, without a restart.
    let last_words = [
        record_of("app.onprem.internal", false),
        record_of("app.onprem.internal", false),
    ];
    assert_eq!(
        c.client().post_records(&last_words).await.unwrap().status,
        200
    );
    assert!(c.sigterm().await.success());
    let dev = counts(&developers).await;
    for r in &last_words {
        assert_eq!(dev.get(&id(r)), Some(&1), "delivered at shutdown: {r}");
    }
    c.spawn().await;

    // kill -9 right after a 200: each trail still gets each of its records exactly once.
    let crash: Vec<Value> = (0..50)
        .map(|i| {
            record_of(
                if i % 2 == 0 {
                    "app.onprem.internal"
                } else {
                    "kms.amazonaws.com"
                },
                false,
            )
        })
        .collect();
    assert_eq!(c.client().post_records(&crash).await.unwrap().status, 200);
    c.kill9();
    c.spawn().await;
    let dev_ids: Vec<String> = crash.iter().step_by(2).map(id).collect();
    developers.wait_delivered(&dev_ids).await;
    security.wait_delivered(&event_ids(&crash)).await;
    c.sigterm().await;
    let dev = counts(&developers).await;
    let sec = counts(&security).await;
    for (i, r) in crash.iter().enumerate() {
        assert_eq!(sec.get(&id(r)), Some(&1), "security: {r}");
        let want = (i % 2 == 0).then_some(&1);
        assert_eq!(dev.get(&id(r)), want, "developers: {r}");
    }
    assert!(sec.values().all(|&n| n == 1) && dev.values().all(|&n| n == 1));
    let dev_all: HashSet<&String> = dev.keys().collect();
    assert!(dev_all.len() >= 1 + 1 + 25);

    // Both validators accept both trails' chains.
    c.spawn().await;
    for (arn, what) in [(TRAIL_ARN, "security"), (DEV_ARN, "developers")] {
        let mut args = vec!["--trail-arn".to_string(), arn.into(), "--verbose".into()];
        args.extend(window(started));
        let url = format!("http://{}", c.addr);
        let v = aws_validate_signed(&cli, &url, &endpoint, &args, (KEY, SECRET));
        v.assert_valid(&format!("aws cloudtrail validate-logs, {what} trail"));
        args.extend(["--config".to_string(), c.config_path.display().to_string()]);
        groundtrail_validate(&args).assert_valid(&format!("validate-logs, {what} trail"));
    }
}
