//! The collector's CloudTrail API against the unmodified AWS CLI: `validate-logs` with no stub,
//! `lookup-events` by every attribute and with paging, `describe-trails`, `get-trail-status`,
//! `cloudtrail-data put-audit-events`, SigV4 refusals, and webhook notifications received by a
//! real HTTP server.

use std::sync::{Arc, Mutex};

use groundtrail_tests::*;
use serde_json::{Value, json};

const READ_KEY: &str = "AKIDTESTREADER";
const READ_SECRET: &str = "reader-secret-for-the-tests";
const WRITE_KEY: &str = "AKIDTESTWRITER";
const WRITE_SECRET: &str = "writer-secret-for-the-tests";

fn keys_toml() -> String {
    format!(
        "[[api.access_keys]]\naccess_key_id = \"{READ_KEY}\"\nsecret_access_key = \"{READ_SECRET}\"\nscopes = [\"read\"]\n\n\
         [[api.access_keys]]\naccess_key_id = \"{WRITE_KEY}\"\nsecret_access_key = \"{WRITE_SECRET}\"\nscopes = [\"read\", \"write\"]\naccount = \"{ACCOUNT}\"\n"
    )
}

fn local_spec(dir: &std::path::Path) -> (Spec, Store) {
    let trail = dir.join("trail");
    (
        Spec::new(Dest::Local {
            path: trail.clone(),
            bucket: "api-bucket".into(),
        }),
        Store::Local(trail),
    )
}

fn url(c: &Collector) -> String {
    format!("http://{}", c.addr)
}

/// `aws <args> --endpoint-url <collector>` with the reader's credentials; (exit code, stdout
/// JSON or Null, stderr).
fn aws_read(aws: &std::path::Path, c: &Collector, args: &[&str]) -> (i32, Value, String) {
    aws_as(aws, c, args, READ_KEY, READ_SECRET)
}

fn aws_as(
    aws: &std::path::Path,
    c: &Collector,
    args: &[&str],
    key: &str,
    secret: &str,
) -> (i32, Value, String) {
    let endpoint = url(c);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--endpoint-url", &endpoint, "--output", "json"]);
    let out = aws_run(aws, &all, key, secret);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn event_ids(v: &Value) -> Vec<String> {
    v["Events"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| e["EventId"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn json_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Seven records, each findable by a different attribute, one minute apart (r0 newest).
fn lookup_records(now: chrono::DateTime<chrono::Utc>) -> Vec<Value> {
    (0..7)
        .map(|i| {
            let mut r = record(ACCOUNT, REGION);
            r["eventTime"] = json!(json_time(now - chrono::Duration::minutes(i)));
            r["eventName"] = json!(if i == 1 || i == 2 {
                "CreateUser"
            } else {
                "ConsoleLogin"
            });
            r["readOnly"] = json!(i == 3);
            if i == 4 {
                r["userIdentity"]["userName"] = json!("carol");
                r["userIdentity"]["accessKeyId"] = json!("AKIACAROL");
            }
            if i == 5 {
                r["resources"] = json!([{
                    "accountId": ACCOUNT,
                    "type": "AWS::Host::Package",
                    "ARN": "arn:aws:host:::package/nginx"
                }]);
            }
            if i >= 5 {
                r["eventSource"] = json!("packages.onprem.internal");
            }
            r
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_events_by_each_attribute_with_paging_and_refusals() {
    let Some(aws) = aws_cli("lookup_events_by_each_attribute_with_paging_and_refusals") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut spec, _store) = local_spec(dir.path());
    spec.extra_toml = keys_toml();
    let c = Collector::start(dir.path(), spec).await;
    let now = chrono::Utc::now();
    let recs = lookup_records(now);
    let ids: Vec<String> = recs
        .iter()
        .map(|r| r["eventID"].as_str().unwrap().to_string())
        .collect();
    let reply = c.client().post_records(&recs).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);

    // History is written right after the commit; wait until the oldest record shows.
    let last = ids[6].clone();
    wait_for("history holds the records", || {
        let last = last.clone();
        let aws = aws.clone();
        let c = &c;
        async move {
            let attr = format!("AttributeKey=EventId,AttributeValue={last}");
            let (code, v, _) = aws_read(
                &aws,
                c,
                &["cloudtrail", "lookup-events", "--lookup-attributes", &attr],
            );
            (code == 0 && event_ids(&v) == vec![last]).then_some(())
        }
    })
    .await;

    let lookup = |key: &str, value: &str| {
        let attr = format!("AttributeKey={key},AttributeValue={value}");
        let (code, v, err) = aws_read(
            &aws,
            &c,
            &["cloudtrail", "lookup-events", "--lookup-attributes", &attr],
        );
        assert_eq!(code, 0, "{key}={value}: {err}");
        event_ids(&v)
    };
    assert_eq!(lookup("EventId", &ids[0]), vec![ids[0].clone()]);
    assert_eq!(
        lookup("EventName", "CreateUser"),
        vec![ids[1].clone(), ids[2].clone()]
    );
    assert_eq!(lookup("ReadOnly", "true"), vec![ids[3].clone()]);
    assert_eq!(lookup("Username", "carol"), vec![ids[4].clone()]);
    assert_eq!(lookup("AccessKeyId", "AKIACAROL"), vec![ids[4].clone()]);
    assert_eq!(
        lookup("ResourceType", "AWS::Host::Package"),
        vec![ids[5].clone()]
    );
    assert_eq!(
        lookup("ResourceName", "arn:aws:host:::package/nginx"),
        vec![ids[5].clone()]
    );
    assert_eq!(
        lookup("EventSource", "packages.onprem.internal"),
        vec![ids[5].clone(), ids[6].clone()]
    );
    assert!(lookup("Username", "nobody").is_empty());

    // The full record is in CloudTrailEvent, as a JSON string.
    let attr = format!("AttributeKey=EventId,AttributeValue={}", ids[4]);
    let (_, v, _) = aws_read(
        &aws,
        &c,
        &["cloudtrail", "lookup-events", "--lookup-attributes", &attr],
    );
    let e = &v["Events"][0];
    assert_eq!(e["Username"], "carol");
    assert_eq!(e["ReadOnly"], "false");
    let full: Value = serde_json::from_str(e["CloudTrailEvent"].as_str().unwrap()).unwrap();
    assert_eq!(full, recs[4]);

    // Time bounds (inclusive): r1 and r2 only.
    let (code, v, err) = aws_read(
        &aws,
        &c,
        &[
            "cloudtrail",
            "lookup-events",
            "--start-time",
            &json_time(now - chrono::Duration::minutes(2)),
            "--end-time",
            &json_time(now - chrono::Duration::minutes(1)),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(event_ids(&v), vec![ids[1].clone(), ids[2].clone()]);

    // Paging with --max-results and --next-token (the CLI then makes exactly one call each).
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec![
            "cloudtrail".to_string(),
            "lookup-events".into(),
            "--lookup-attributes".into(),
            "AttributeKey=Username,AttributeValue=alice".into(),
            "--max-results".into(),
            "2".into(),
        ];
        if let Some(t) = &token {
            args.extend(["--next-token".to_string(), t.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, v, err) = aws_read(&aws, &c, &args);
        assert_eq!(code, 0, "{err}");
        let page = event_ids(&v);
        assert!(page.len() <= 2);
        seen.extend(page);
        pages += 1;
        match v["NextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    let alice: Vec<String> = [0, 1, 2, 3, 5, 6].iter().map(|i| ids[*i].clone()).collect();
    assert_eq!(seen, alice, "every event once, newest first");
    assert_eq!(pages, 3);
    // Automatic paging by the CLI (no --max-results) sees the same.
    let (code, v, _) = aws_read(
        &aws,
        &c,
        &[
            "cloudtrail",
            "lookup-events",
            "--lookup-attributes",
            "AttributeKey=Username,AttributeValue=alice",
            "--page-size",
            "4",
        ],
    );
    assert_eq!(code, 0);
    assert_eq!(event_ids(&v), alice);

    // Refusals, with AWS's codes.
    let (code, _, err) = aws_read(
        &aws,
        &c,
        &["cloudtrail", "lookup-events", "--max-results", "51"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("InvalidMaxResultsException"), "{err}");
    let (code, _, err) = aws_read(
        &aws,
        &c,
        &[
            "cloudtrail",
            "lookup-events",
            "--start-time",
            "2026-01-02T00:00:00Z",
            "--end-time",
            "2026-01-01T00:00:00Z",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("InvalidTimeRangeException"), "{err}");
    let (code, _, err) = aws_read(
        &aws,
        &c,
        &[
            "cloudtrail",
            "lookup-events",
            "--lookup-attributes",
            "AttributeKey=EventName,AttributeValue=CreateUser",
            "--next-token",
            token.as_deref().unwrap_or("x"),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("InvalidNextTokenException"), "{err}");
    let (code, _, err) = aws_read(
        &aws,
        &c,
        &[
            "cloudtrail",
            "lookup-events",
            "--lookup-attributes",
            "AttributeKey=EventName,AttributeValue=a",
            "AttributeKey=EventName,AttributeValue=b",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("InvalidLookupAttributesException"), "{err}");

    // A wrong secret and an unknown key are refused.
    let (code, _, err) = aws_as(
        &aws,
        &c,
        &["cloudtrail", "describe-trails"],
        READ_KEY,
        "not-the-reader-secret",
    );
    assert_ne!(code, 0);
    assert!(err.contains("InvalidSignatureException"), "{err}");
    assert!(err.contains("does not match"), "{err}");
    let (code, _, err) = aws_as(
        &aws,
        &c,
        &["cloudtrail", "describe-trails"],
        "AKIDUNKNOWN",
        READ_SECRET,
    );
    assert_ne!(code, 0);
    assert!(err.contains("UnrecognizedClientException"), "{err}");

    // describe-trails, get-trail, get-trail-status.
    let (code, v, err) = aws_read(&aws, &c, &["cloudtrail", "describe-trails"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["trailList"][0]["TrailARN"], TRAIL_ARN);
    assert_eq!(v["trailList"][0]["S3BucketName"], "api-bucket");
    assert_eq!(v["trailList"][0]["LogFileValidationEnabled"], true);
    let (code, v, _) = aws_read(&aws, &c, &["cloudtrail", "get-trail", "--name", TRAIL_ARN]);
    assert_eq!(code, 0);
    assert_eq!(v["Trail"]["Name"], TRAIL);
    let (code, _, err) = aws_read(&aws, &c, &["cloudtrail", "get-trail", "--name", "other"]);
    assert_ne!(code, 0);
    assert!(err.contains("TrailNotFoundException"), "{err}");
    let status = wait_for("a delivery and a digest in GetTrailStatus", || {
        let aws = aws.clone();
        let c = &c;
        async move {
            let (code, v, _) = aws_read(
                &aws,
                c,
                &["cloudtrail", "get-trail-status", "--name", TRAIL],
            );
            (code == 0
                && v["LatestDeliveryTime"].is_number()
                && v["LatestDigestDeliveryTime"].is_number())
            .then_some(v)
        }
    })
    .await;
    assert_eq!(status["IsLogging"], true);
    assert!(status.get("LatestDeliveryError").is_none(), "{status}");

    // The collector's own lookup-events command speaks the same API.
    let out = std::process::Command::new(bin("groundtrail-collector"))
        .args([
            "lookup-events",
            "--endpoint-url",
            &url(&c),
            "--lookup-attributes",
            "AttributeKey=Username,AttributeValue=alice",
            "--max-results",
            "4",
        ])
        .env("AWS_ACCESS_KEY_ID", READ_KEY)
        .env("AWS_SECRET_ACCESS_KEY", READ_SECRET)
        .env("AWS_REGION", REGION)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(event_ids(&v), alice[..4].to_vec());
    assert!(v["NextToken"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_validate_logs_against_the_collector_with_no_stub() {
    let test = "aws_validate_logs_against_the_collector_with_no_stub";
    let (Some(aws), Some(endpoint)) = (aws_cli(test), s3_endpoint(test)) else {
        return;
    };
    let bucket = unique_bucket(test);
    let store = create_bucket(&endpoint, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    // No access keys, unsigned loopback reads allowed: any credentials work.
    let mut spec = Spec::new(Dest::S3 {
        bucket: bucket.clone(),
        endpoint: endpoint.clone(),
    });
    spec.extra_toml = "[api]\nallow_unsigned_loopback_reads = true\n".into();
    let c = Collector::start(dir.path(), spec).await;
    let started = chrono::Utc::now();
    let recs = records(5);
    assert_eq!(c.client().post_records(&recs).await.unwrap().status, 200);
    let more = records(3);
    assert_eq!(c.client().post_records(&more).await.unwrap().status, 200);
    let mut ids = groundtrail_tests::event_ids(&recs);
    ids.extend(groundtrail_tests::event_ids(&more));
    store.wait_delivered(&ids).await;

    let mut args = vec![
        "--trail-arn".to_string(),
        TRAIL_ARN.into(),
        "--verbose".into(),
    ];
    args.extend(window(started));
    let v = aws_validate_at(&aws, &url(&c), &endpoint, &args);
    v.assert_valid("aws cloudtrail validate-logs against the collector");
    assert!(v.digests().0 > 0, "digests were found: {}", v.stdout);

    // Tamper with one log file: the AWS CLI, still talking only to the collector, flags it.
    let log = store.log_keys().await[0].clone();
    let (body, md) = store.get(&log).await.unwrap();
    let mut json = gunzip(&body);
    let pos = json.iter().position(|b| *b == b'Z').unwrap();
    json[pos] = b'X';
    store.put(&log, gzip(&json), &md).await;
    let v = aws_validate_at(&aws, &url(&c), &endpoint, &args);
    assert_eq!(v.code, 1, "{}{}", v.stdout, v.stderr);
    let invalid = v.invalid_lines();
    assert_eq!(invalid.len(), 1, "{invalid:?}");
    assert!(invalid[0].contains(&log), "{invalid:?}");
}

fn audit_event(id: &str, data: &Value, checksum: Option<String>) -> Value {
    use base64::Engine;
    let text = data.to_string();
    let sum = checksum.unwrap_or_else(|| {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(d.as_ref())
    });
    json!({"id": id, "eventData": text, "eventDataChecksum": sum})
}

fn event_data(n: usize) -> Value {
    json!({
        "version": "1.0",
        "userIdentity": {"type": "CustomUser", "principalId": format!("user-{n}")},
        "eventSource": "billing.example.com",
        "eventName": "RefundIssued",
        "eventTime": "2026-11-21T10:00:00Z",
        "UID": format!("req-{n}"),
        "recipientAccountId": ACCOUNT,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudtrail_data_put_audit_events_through_the_journal() {
    let Some(aws) = aws_cli("cloudtrail_data_put_audit_events_through_the_journal") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut spec, store) = local_spec(dir.path());
    spec.extra_toml = keys_toml();
    let c = Collector::start(dir.path(), spec).await;
    let channel = format!("arn:aws:cloudtrail:{REGION}:{ACCOUNT}:channel/billing");
    let put = |events: &Value, key: &str, secret: &str| {
        let file = dir
            .path()
            .join(format!("events-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&file, events.to_string()).unwrap();
        let arg = format!("file://{}", file.display());
        aws_as(
            &aws,
            &c,
            &[
                "cloudtrail-data",
                "put-audit-events",
                "--channel-arn",
                &channel,
                "--audit-events",
                &arg,
            ],
            key,
            secret,
        )
    };
    let events = json!([
        audit_event("good-1", &event_data(1), None),
        audit_event("bad-sum", &event_data(2), Some("AAAA".into())),
        audit_event("good-3", &event_data(3), None),
    ]);
    let (code, v, err) = put(&events, WRITE_KEY, WRITE_SECRET);
    assert_eq!(code, 0, "{err}");
    let ok = v["successful"].as_array().unwrap();
    assert_eq!(ok.len(), 2, "{v}");
    assert_eq!(v["failed"][0]["id"], "bad-sum");
    assert_eq!(v["failed"][0]["errorCode"], "InvalidChecksum");
    let ids: Vec<String> = ok
        .iter()
        .map(|s| s["eventID"].as_str().unwrap().to_string())
        .collect();
    // The same call again: same eventIDs, stored once (journal dedup).
    let (code, again, _) = put(&events, WRITE_KEY, WRITE_SECRET);
    assert_eq!(code, 0);
    assert_eq!(again["successful"], v["successful"]);
    store.wait_delivered(&ids).await;
    let counts = store.event_id_counts().await;
    for id in &ids {
        assert_eq!(counts[id], 1, "{id} exactly once");
    }
    let records = store.records().await;
    let (_, r) = records
        .iter()
        .find(|(_, r)| r["eventID"] == ids[0].as_str())
        .unwrap();
    assert_eq!(r["eventType"], "ActivityLog");
    assert_eq!(r["eventCategory"], "ActivityAuditLog");
    assert_eq!(r["metadata"]["channelARN"], channel.as_str());

    // Per-event codes: the wrong account.
    let mut other = event_data(4);
    other["recipientAccountId"] = json!("999999999999");
    let (code, v, _) = put(
        &json!([audit_event("x", &other, None)]),
        WRITE_KEY,
        WRITE_SECRET,
    );
    assert_eq!(code, 0);
    assert_eq!(v["failed"][0]["errorCode"], "InvalidRecipient");

    // Over 1 MB in one call: refused whole.
    let big: Vec<Value> = (0..100)
        .map(|n| {
            let mut d = event_data(n);
            d["requestParameters"] = json!({"pad": "p".repeat(11_000)});
            audit_event(&format!("big-{n}"), &d, None)
        })
        .collect();
    let (code, _, err) = put(&Value::Array(big), WRITE_KEY, WRITE_SECRET);
    assert_ne!(code, 0);
    assert!(err.contains("ValidationException"), "{err}");
    // Over 100 events: refused whole.
    let many: Vec<Value> = (0..101)
        .map(|n| audit_event(&format!("m-{n}"), &event_data(n), None))
        .collect();
    let (code, _, err) = put(&Value::Array(many), WRITE_KEY, WRITE_SECRET);
    assert_ne!(code, 0);
    assert!(err.contains("ValidationException"), "{err}");

    // A read-only key may not write; a wrong secret is refused.
    let (code, _, err) = put(&events, READ_KEY, READ_SECRET);
    assert_ne!(code, 0);
    assert!(err.contains("AccessDeniedException"), "{err}");
    let (code, _, err) = put(&events, WRITE_KEY, "not-the-writer-secret");
    assert_ne!(code, 0);
    assert!(err.contains("InvalidSignatureException"), "{err}");
}

/// A webhook that answers 500 to its first `fail_first` requests, then 200, and remembers the
/// bodies it accepted.
struct Hook {
    port: u16,
    attempts: Arc<Mutex<usize>>,
    accepted: Arc<Mutex<Vec<Value>>>,
}

impl Hook {
    async fn start(fail_first: usize) -> Hook {
        Hook::start_on(0, fail_first).await
    }

    async fn start_on(port: u16, fail_first: usize) -> Hook {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let attempts = Arc::new(Mutex::new(0usize));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (a, b) = (attempts.clone(), accepted.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (a, b) = (a.clone(), b.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (a, b) = (a.clone(), b.clone());
                            async move {
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|c| c.to_bytes())
                                    .unwrap_or_default();
                                let n = {
                                    let mut n = a.lock().unwrap();
                                    *n += 1;
                                    *n
                                };
                                let status = if n <= fail_first {
                                    500
                                } else {
                                    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                                        b.lock().unwrap().push(v);
                                    }
                                    200
                                };
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(http_body_util::Full::new(bytes::Bytes::new()))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Hook {
            port,
            attempts,
            accepted,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_every_delivered_log_file_despite_early_failures() {
    let hook = Hook::start(2).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut spec, store) = local_spec(dir.path());
    spec.extra_toml = format!(
        "[[notifications]]\nurl = \"http://127.0.0.1:{}/trail-hook\"\n",
        hook.port
    );
    let c = Collector::start(dir.path(), spec).await;
    let recs = records(4);
    assert_eq!(c.client().post_records(&recs).await.unwrap().status, 200);
    store
        .wait_delivered(&groundtrail_tests::event_ids(&recs))
        .await;
    let more = records(2);
    assert_eq!(c.client().post_records(&more).await.unwrap().status, 200);
    store
        .wait_delivered(&groundtrail_tests::event_ids(&more))
        .await;
    let logs = store.log_keys().await;
    assert!(!logs.is_empty());
    let accepted = hook.accepted.clone();
    let notified = wait_for("a notification for every log file", || {
        let accepted = accepted.clone();
        let logs = logs.clone();
        async move {
            let got: Vec<Value> = accepted.lock().unwrap().clone();
            let keys: std::collections::BTreeSet<String> = got
                .iter()
                .flat_map(|v| v["s3ObjectKey"].as_array().cloned().unwrap_or_default())
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect();
            logs.iter().all(|l| keys.contains(l)).then_some(got)
        }
    })
    .await;
    for n in &notified {
        assert_eq!(n["s3Bucket"], "api-bucket", "{n}");
        assert_eq!(n["s3ObjectKey"].as_array().unwrap().len(), 1, "{n}");
    }
    assert!(*hook.attempts.lock().unwrap() >= notified.len() + 2);
    assert!(
        c.log().contains("notification failed"),
        "the early failures were retried"
    );
}

/// Notifications are queued in the journal: a webhook that is down while files are delivered,
/// a `kill -9` of the collector, a restart, and the webhook still gets every log file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_queue_survives_kill_9() {
    // free_port: the webhook is down first; its receiver binds this port after the kill.
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let (mut spec, store) = local_spec(dir.path());
    spec.extra_toml = format!("[[notifications]]\nurl = \"http://127.0.0.1:{port}/hook\"\n");
    let mut c = Collector::start(dir.path(), spec).await;
    let recs = records(3);
    assert_eq!(c.client().post_records(&recs).await.unwrap().status, 200);
    store
        .wait_delivered(&groundtrail_tests::event_ids(&recs))
        .await;
    wait_for("a failed notification attempt", || {
        let log = c.log();
        async move { log.contains("notification failed").then_some(()) }
    })
    .await;
    c.kill9();
    let hook = Hook::start_on(port, 0).await;
    c.spawn().await;
    let logs = store.log_keys().await;
    let accepted = hook.accepted.clone();
    wait_for("every log file notified after the restart", || {
        let accepted = accepted.clone();
        let logs = logs.clone();
        async move {
            let keys: std::collections::BTreeSet<String> = accepted
                .lock()
                .unwrap()
                .iter()
                .flat_map(|v| v["s3ObjectKey"].as_array().cloned().unwrap_or_default())
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect();
            logs.iter().all(|l| keys.contains(l)).then_some(())
        }
    })
    .await;
}

/// With mTLS on the ingest listener the AWS CLI (no client certificate) uses `[api] listen`:
/// the same TLS certificate, no client certificate, the API only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_listener_beside_mtls_ingest() {
    let Some(aws) = aws_cli("api_listener_beside_mtls_ingest") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_init(dir.path());
    let (mut spec, _store) = local_spec(dir.path());
    spec.tls = Some(ServerTls {
        cert: pki.join("server.pem"),
        key: pki.join("server.key"),
        client_ca: Some(pki.join("ca.pem")),
    });
    spec.extra_toml = format!("[api]\nlisten = \"127.0.0.1:0\"\n\n{}", keys_toml());
    let c = Collector::start(&dir.path().join("collector"), spec).await;
    let api_port = c.api_addr.expect("READY=1 names the API listener").port();
    let endpoint = format!("https://localhost:{api_port}");
    let ca = pki.join("ca.pem").display().to_string();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend([
            "--endpoint-url",
            &endpoint,
            "--ca-bundle",
            &ca,
            "--output",
            "json",
        ]);
        aws_run(&aws, &all, READ_KEY, READ_SECRET)
    };
    let out = run(&["cloudtrail", "describe-trails"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["trailList"][0]["TrailARN"], TRAIL_ARN);
    // Ingest is not served there.
    let client = IngestClient::tls(
        std::net::SocketAddr::from(([127, 0, 0, 1], api_port)),
        &pki.join("ca.pem"),
        None,
        "localhost",
    );
    let reply = client.post_records(&records(1)).await.unwrap();
    assert_eq!(reply.status, 404, "{}", reply.body);
    drop(c);
}

/// The delivered-file webhook over HTTPS, verified against a private CA (`ca_file`): every
/// log file is announced; the same URL without the CA is refused by TLS and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_over_https_with_a_private_ca() {
    use groundtrail_tests::webhook::Receiver;
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_init(dir.path());
    let rx = Receiver::start(0, Some((&pki.join("server.pem"), &pki.join("server.key")))).await;
    let (mut spec, store) = local_spec(dir.path());
    spec.extra_toml = format!(
        "[[notifications]]\nname = \"verified\"\nurl = \"https://localhost:{port}/trail-hook\"\nca_file = {ca:?}\n\n\
         [[notifications]]\nname = \"unverified\"\nurl = \"https://localhost:{port}/no-ca\"\n",
        port = rx.port,
        ca = pki.join("ca.pem").display().to_string(),
    );
    let c = Collector::start(dir.path(), spec).await;
    let recs = records(3);
    assert_eq!(c.client().post_records(&recs).await.unwrap().status, 200);
    store
        .wait_delivered(&groundtrail_tests::event_ids(&recs))
        .await;
    let logs = store.log_keys().await;
    wait_for("an HTTPS notification for every log file", || async {
        let keys: std::collections::BTreeSet<String> = rx
            .on("/trail-hook")
            .iter()
            .flat_map(|r| {
                r.json()["s3ObjectKey"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect();
        logs.iter().all(|l| keys.contains(l)).then_some(())
    })
    .await;
    let first = &rx.on("/trail-hook")[0];
    assert_eq!(first.json()["s3Bucket"], "api-bucket");
    assert_eq!(
        first.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    wait_for("the unverified webhook refused by TLS", || async {
        c.log().contains("notification failed").then_some(())
    })
    .await;
    assert!(
        rx.on("/no-ca").is_empty(),
        "no request without a trusted certificate"
    );
}
