//! CloudTrail Insights against the real collector binary: a week of synthetic history (by
//! `eventTime`, posted in seconds) and then a burst of failed calls produce exactly one
//! `ApiErrorRateInsight` Start and its End, with statistics that match what was sent, in
//! `CloudTrail-Insight/` files listed in the digests; both validators pass, `LookupEvents`
//! finds them (only with `EventCategory=insight`), the detection rules raise an alert on the
//! Start, and a `kill -9` and restart repeat nothing.

use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use groundtrail_tests::*;
use serde_json::Value;

const SOURCE: &str = "app.onprem.internal";
/// The API that fails in a burst.
const BURSTY: &str = "Login";
/// An API with noise and no burst: never an insight.
const STEADY: &str = "GetConfig";
const ARN: &str = "arn:aws:iam::123456789012:user/host-1/alice";
const ATTACKER: &str = "arn:aws:iam::123456789012:user/host-1/mallory";
/// Failed calls a minute during the burst, and its length in minutes.
const BURST: usize = 20;
const BURST_MINUTES: i64 = 5;

fn call(t: DateTime<Utc>, name: &str, arn: &str, error: bool, read_only: bool) -> Value {
    let mut r = record(ACCOUNT, REGION);
    r["eventSource"] = SOURCE.into();
    r["eventName"] = name.into();
    r["eventType"] = "AwsApiCall".into();
    r["eventTime"] = t.format("%Y-%m-%dT%H:%M:%SZ").to_string().into();
    r["readOnly"] = read_only.into();
    r["userIdentity"]["arn"] = arn.into();
    if error {
        r["errorCode"] = "AccessDenied".into();
    }
    r
}

/// xorshift64*, so the noise is the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % n
    }
}

/// The history: from 7 days and 3 hours before `now` up to the burst, `BURSTY` is called
/// every 5 minutes (every 7th call fails); `STEADY` has 0-3 calls a minute, some failing,
/// up to `now`. Then `BURST` failed reads of `BURSTY` a minute, from 12 minutes before `now`
/// for `BURST_MINUTES`. In time order.
fn history(now: DateTime<Utc>) -> (Vec<Value>, DateTime<Utc>) {
    let burst_start = now - TimeDelta::minutes(12);
    let start = now - TimeDelta::days(7) - TimeDelta::hours(3);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = Vec::new();
    let mut t = start;
    let mut n = 0u64;
    while t < now - TimeDelta::minutes(1) {
        if t < burst_start && (t - start).num_minutes() % 5 == 0 {
            n += 1;
            out.push(call(t, BURSTY, ARN, n.is_multiple_of(7), false));
        }
        for _ in 0..rng.below(4) {
            out.push(call(
                t + TimeDelta::seconds(rng.below(60) as i64),
                STEADY,
                ARN,
                rng.below(10) == 0,
                false,
            ));
        }
        if t >= burst_start && t < burst_start + TimeDelta::minutes(BURST_MINUTES) {
            for i in 0..BURST {
                out.push(call(
                    t + TimeDelta::seconds(i as i64),
                    BURSTY,
                    ATTACKER,
                    true,
                    true,
                ));
            }
        }
        t += TimeDelta::minutes(1);
    }
    (out, burst_start)
}

fn spec(bucket: &str, endpoint: &str) -> Spec {
    let mut spec = Spec::new(Dest::S3 {
        bucket: bucket.into(),
        endpoint: endpoint.into(),
    });
    spec.limits.push("max_batch_records = 5000".into());
    spec.extra_toml = "[api]\nallow_unsigned_loopback_reads = true\n\n\
         [insights]\ntypes = [\"ApiCallRateInsight\", \"ApiErrorRateInsight\"]\nclose_idle_after = \"10s\"\ncheckpoint_interval = \"1s\"\n"
        .into();
    spec
}

fn stat(r: &Value, path: &str) -> f64 {
    r.pointer(&format!("/insightDetails/insightContext/statistics/{path}"))
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} in {r}"))
}

fn aws(aws: &std::path::Path, c: &Collector, args: &[&str]) -> Value {
    let endpoint = format!("http://{}", c.addr);
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--endpoint-url", &endpoint, "--output", "json"]);
    let out = aws_run(aws, &all, "testing", "testing");
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("aws output is JSON")
}

/// `aws cloudtrail lookup-events --region <test region> <more>`.
fn lookup(cli: &std::path::Path, c: &Collector, more: &[&str]) -> Value {
    let mut args = vec!["cloudtrail", "lookup-events", "--region", REGION];
    args.extend_from_slice(more);
    aws(cli, c, &args)
}

fn event_ids(v: &Value) -> Vec<String> {
    v["Events"]
        .as_array()
        .expect("Events")
        .iter()
        .map(|e| e["EventId"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_after_a_week_gives_one_insight_in_the_signed_trail() {
    let test = "a_burst_after_a_week_gives_one_insight_in_the_signed_trail";
    let (Some(aws_cli), Some(endpoint)) = (aws_cli(test), s3_endpoint(test)) else {
        return;
    };
    let bucket = unique_bucket(test);
    let store = create_bucket(&endpoint, &bucket).await;
    let dir = tempfile::tempdir().unwrap();
    let mut c = Collector::start(dir.path(), spec(&bucket, &endpoint)).await;
    let started = Utc::now();
    let now = started.duration_trunc(TimeDelta::minutes(1)).unwrap();
    let (records, burst_start) = history(now);
    for chunk in records.chunks(5000) {
        let reply = c.client().post_records(chunk).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    // Nothing is committed after the history: after `close_idle_after` the minutes up to now
    // are judged, which ends the insight.
    let insights = wait_for("a Start and an End in CloudTrail-Insight/", || async {
        let found = store.insight_records().await;
        (found.len() >= 2).then_some(found)
    })
    .await;
    let insights: Vec<Value> = insights.into_iter().map(|(_, r)| r).collect();
    assert_eq!(insights.len(), 2, "{insights:#?}");
    let (start, end) = (&insights[0], &insights[1]);
    for r in [start, end] {
        assert_eq!(r["eventType"], "AwsCloudTrailInsight");
        assert_eq!(r["eventCategory"], "Insight");
        assert_eq!(r["recipientAccountId"], ACCOUNT);
        assert_eq!(r["awsRegion"], REGION);
        let d = &r["insightDetails"];
        assert_eq!(
            (&d["eventSource"], &d["eventName"], &d["insightType"]),
            (
                &Value::from(SOURCE),
                &Value::from(BURSTY),
                &Value::from("ApiErrorRateInsight")
            ),
            "only the burst of failures is unusual: {r}"
        );
        assert!(r.get("userIdentity").is_none() && r.get("eventName").is_none());
    }
    assert_eq!(start["insightDetails"]["state"], "Start");
    assert_eq!(end["insightDetails"]["state"], "End");
    assert_eq!(start["sharedEventID"], end["sharedEventID"]);
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    assert_eq!(start["eventTime"], fmt(burst_start).as_str());
    assert_eq!(
        end["eventTime"],
        fmt(burst_start + TimeDelta::minutes(BURST_MINUTES)).as_str()
    );

    // The statistics, from the data: the baseline is the failures per minute of the 7 days of
    // whole hours before the burst's hour.
    let hour = burst_start.duration_trunc(TimeDelta::hours(1)).unwrap();
    let window_start = hour - TimeDelta::days(7);
    let baseline_failures = records
        .iter()
        .filter(|r| r["eventName"] == BURSTY && r.get("errorCode").is_some())
        .filter(|r| {
            let t: DateTime<Utc> = r["eventTime"].as_str().unwrap().parse().unwrap();
            t >= window_start && t < hour
        })
        .count();
    let baseline = baseline_failures as f64 / 10080.0;
    for r in [start, end] {
        assert!((stat(r, "baseline/average") - baseline).abs() < 1e-9, "{r}");
        assert_eq!(stat(r, "baselineDuration"), 10080.0);
    }
    assert_eq!(stat(start, "insight/average"), BURST as f64);
    assert_eq!(stat(end, "insight/average"), BURST as f64);
    assert_eq!(stat(end, "insightDuration"), BURST_MINUTES as f64);
    let top = &end["insightDetails"]["insightContext"]["attributions"];
    let arns = top
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["attribute"] == "userIdentityArn")
        .expect("userIdentityArn attribution");
    assert_eq!(arns["insight"][0]["value"], ATTACKER);
    assert_eq!(arns["insight"][0]["average"], BURST as u64);

    // The Insights files are in the digests, and both validators cover them.
    let insight_keys = store.insight_keys().await;
    wait_for("the Insights files listed in a digest", || async {
        let listed: Vec<String> = store
            .digests()
            .await
            .iter()
            .flat_map(|(_, d)| d["logFiles"].as_array().cloned().unwrap_or_default())
            .map(|l| l["s3Object"].as_str().unwrap_or_default().to_string())
            .collect();
        insight_keys
            .iter()
            .all(|k| listed.contains(k))
            .then_some(())
    })
    .await;
    let mut args = vec![
        "--trail-arn".to_string(),
        TRAIL_ARN.into(),
        "--verbose".into(),
    ];
    args.extend(window(started));
    let v = aws_validate_at(&aws_cli, &format!("http://{}", c.addr), &endpoint, &args);
    v.assert_valid("aws cloudtrail validate-logs with Insights files");
    for k in &insight_keys {
        assert!(
            v.stdout.contains(&format!("{k}\tvalid")),
            "the AWS CLI checked {k}:\n{}",
            v.stdout
        );
    }
    let mut ours = args.clone();
    ours.extend(["--config".to_string(), c.config_path.display().to_string()]);
    let v = groundtrail_validate(&ours);
    v.assert_valid("groundtrail-collector validate-logs with Insights files");
    assert!(insight_keys.iter().all(|k| v.stdout.contains(k.as_str())));

    // LookupEvents: only with EventCategory=insight, and by the insight's event name.
    let ids = |v: &Value| {
        let mut ids = event_ids(v);
        ids.sort();
        ids
    };
    let mut expected: Vec<String> = insights
        .iter()
        .map(|r| r["eventID"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    let found = wait_for("LookupEvents finds the Insights events", || async {
        let v = lookup(
            &aws_cli,
            &c,
            &[
                "--event-category",
                "insight",
                "--lookup-attributes",
                &format!("AttributeKey=EventName,AttributeValue={BURSTY}"),
            ],
        );
        (ids(&v) == expected).then_some(v)
    })
    .await;
    assert_eq!(found["Events"][0]["EventSource"], SOURCE);
    let plain = lookup(&aws_cli, &c, &["--max-results", "50"]);
    assert!(
        event_ids(&plain).iter().all(|id| !expected.contains(id)),
        "management lookups never return Insights events"
    );
    let selectors = aws(
        &aws_cli,
        &c,
        &["cloudtrail", "get-insight-selectors", "--trail-name", TRAIL],
    );
    assert_eq!(
        selectors["InsightSelectors"],
        serde_json::json!([{"InsightType": "ApiCallRateInsight"}, {"InsightType": "ApiErrorRateInsight"}])
    );

    // The detection rules raise an alert on the Start (the host pack's `host-insight-start`).
    let start_id = start["eventID"].as_str().unwrap().to_string();
    wait_for("an alert for the insight's start", || async {
        let out = Command::new(bin("groundtrail-collector"))
            .args(["alerts", "list", "--endpoint-url"])
            .arg(format!("http://{}", c.addr))
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("AWS_REGION", REGION)
            .output()
            .expect("run groundtrail-collector alerts list");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains(&format!("host-insight-start/{start_id}"))
            .then_some(())
    })
    .await;

    // A kill -9 and a restart replay the log from the detector's checkpoint: the same
    // findings again, which the journal drops. Nothing is repeated in the trail.
    c.kill9();
    c.spawn().await;
    tokio::time::sleep(Duration::from_secs(13)).await;
    c.sigterm().await;
    let again = store.insight_records().await;
    assert_eq!(again.len(), 2, "{again:#?}");
}
