//! LookupEvents latency (p50, p99) with a large event history, and history bytes on disk per
//! event.
//!
//! ```text
//! cargo run --release -p groundtrail-collector --example lookup_bench [EVENTS] [DIR]
//! ```
//!
//! 1. fill: EVENTS management events (default 1,000,000) spread evenly over the 90-day
//!    retention, 2,000 users, 60 event names, 12 sources, 20,000 resources, written through
//!    `History::insert` in batches of 1,000 (what the batcher does) from 2 threads;
//! 2. size: the store's bytes on disk (after a flush) divided by EVENTS;
//! 3. lookups: the API handler itself (`Api::handle`: JSON parsing, the index range scan, the
//!    50 records read and shaped into the AWS answer with `CloudTrailEvent`), per kind of
//!    query: one attribute over the whole retention (first page of 50), one attribute and a
//!    one-hour window, EventId, no attribute and a one-hour window, and the fifth page of a
//!    paged lookup (NextToken). The HTTP transport and SigV4 (one HMAC chain) are not in it.
//!
//! Reference figures printed beside the results: CloudTrail's own LookupEvents rate limit
//! (2 requests/s per account and region, i.e. 500 ms per request) and the issue's target
//! history size (10 million events).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use groundtrail_collector::api::{Api, TARGET_PREFIX};
use groundtrail_collector::config::Config;
use groundtrail_collector::history::History;
use groundtrail_collector::journal::Journal;
use groundtrail_common::trail::SigningKey;
use serde_json::{Value, json};

const BATCH: usize = 1000;

/// Builds the i-th LookupEvents input of one kind of query.
type QueryMaker = Box<dyn Fn(u64) -> Value>;
const RETENTION: u64 = 90 * 24 * 3600;
const USERS: usize = 2000;
const NAMES: usize = 60;
const SOURCES: usize = 12;
const RESOURCES: usize = 20_000;

fn event_id(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

fn record(n: u64, total: u64, now: u64) -> Vec<u8> {
    // Newest last; evenly spread over the retention.
    let t = now - RETENTION + (n * RETENTION / total.max(1));
    let user = (n as usize * 7919) % USERS;
    let time = chrono::DateTime::from_timestamp(t as i64, 0)
        .map(groundtrail_common::time::json_time)
        .unwrap_or_default();
    serde_json::to_vec(&json!({
        "eventVersion": "1.11",
        "userIdentity": {
            "type": "IAMUser",
            "principalId": format!("AIDA{user:08}"),
            "arn": format!("arn:aws:iam::111122223333:user/host-{}/user{user}", n % 50),
            "accountId": "111122223333",
            "accessKeyId": format!("AKIA{user:016}"),
            "userName": format!("user{user}"),
        },
        "eventTime": time,
        "eventSource": format!("svc{}.onprem.internal", n as usize % SOURCES),
        "eventName": format!("Action{}", (n as usize * 31) % NAMES),
        "awsRegion": "us-east-1",
        "sourceIPAddress": format!("10.0.{}.{}", n % 200, n % 250),
        "userAgent": "groundtrail-agent/0.1",
        "requestParameters": {"command": "/usr/bin/systemctl restart nginx", "cwd": "/root"},
        "responseElements": null,
        "eventID": event_id(n),
        "readOnly": n.is_multiple_of(4),
        "resources": [{
            "accountId": "111122223333",
            "type": "AWS::Host::Unit",
            "ARN": format!("arn:aws:host:::unit/unit{}", (n as usize * 13) % RESOURCES),
        }],
        "eventType": "AwsApiCall",
        "managementEvent": true,
        "recipientAccountId": "111122223333",
        "eventCategory": "Management",
    }))
    .unwrap_or_default()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn parts(op: &str) -> http::request::Parts {
    http::Request::post("/")
        .header("x-amz-target", format!("{TARGET_PREFIX}{op}"))
        .header("content-type", "application/x-amz-json-1.1")
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| http::Request::new(()).into_parts().0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let total: u64 = args
        .next()
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let now = groundtrail_common::time::now_secs().timestamp() as u64;
    // GROUNDTRAIL_BENCH_CACHE_MB / GROUNDTRAIL_BENCH_HIGH_THROUGHPUT=1 try other sled settings.
    let history = match std::env::var("GROUNDTRAIL_BENCH_CACHE_MB") {
        Ok(mb) => History::open_with(
            &dir.join("history"),
            mb.parse::<u64>().unwrap_or(256) * 1024 * 1024,
            std::env::var("GROUNDTRAIL_BENCH_HIGH_THROUGHPUT").as_deref() != Ok("1"),
        ),
        Err(_) => History::open(&dir.join("history")),
    };
    let history = Arc::new(history.expect("open history"));

    // 1. fill
    let started = Instant::now();
    let threads = 2u64;
    let mut handles = Vec::new();
    for t in 0..threads {
        let history = history.clone();
        handles.push(std::thread::spawn(move || {
            let mut n = t * BATCH as u64;
            while n < total {
                let end = (n + BATCH as u64).min(total);
                let batch: Vec<Vec<u8>> = (n..end).map(|i| record(i, total, now)).collect();
                history
                    .insert(batch.iter().map(|r| r.as_slice()), 0)
                    .expect("insert");
                n += threads * BATCH as u64;
                if t == 0 && (n / BATCH as u64).is_multiple_of(500) {
                    eprintln!("  {n} / {total} events written");
                }
            }
        }));
    }
    for h in handles {
        h.join().expect("writer thread");
    }
    history.flush().await.expect("flush");
    let fill = started.elapsed().as_secs_f64();

    // 2. size
    let bytes = history.size_on_disk().expect("size");

    // 3. lookups through the API handler
    let mut config = Config::default();
    config.journal.path = dir.join("journal");
    config.signing.key_file = dir.join("key.pem");
    config.trail.account_id = "111122223333".into();
    let key = SigningKey::generate().expect("key");
    let journal = Arc::new(Journal::open(&config.journal.path).expect("journal"));
    let api = Api::new(&config, &key, journal, history.clone(), None).expect("api");
    let p = parts("LookupEvents");
    let hour_start = now - RETENTION / 2;
    let kinds: Vec<(&str, QueryMaker)> = vec![
        (
            "Username, whole retention, first 50",
            Box::new(|i| {
                json!({"LookupAttributes": [{"AttributeKey": "Username",
                    "AttributeValue": format!("user{}", (i as usize * 17) % USERS)}]})
            }),
        ),
        (
            "EventName, one hour",
            Box::new(move |i| {
                json!({"LookupAttributes": [{"AttributeKey": "EventName",
                    "AttributeValue": format!("Action{}", i as usize % NAMES)}],
                    "StartTime": hour_start, "EndTime": hour_start + 3600})
            }),
        ),
        (
            "ResourceName, whole retention",
            Box::new(|i| {
                json!({"LookupAttributes": [{"AttributeKey": "ResourceName",
                    "AttributeValue": format!("arn:aws:host:::unit/unit{}", (i as usize * 7) % RESOURCES)}]})
            }),
        ),
        (
            "EventId",
            Box::new(move |i| {
                json!({"LookupAttributes": [{"AttributeKey": "EventId",
                    "AttributeValue": event_id((i * 104_729) % total)}]})
            }),
        ),
        (
            "no attribute, one hour",
            Box::new(move |i| {
                let s = now - RETENTION + (i * 7919) % (RETENTION - 3600);
                json!({"StartTime": s, "EndTime": s + 3600})
            }),
        ),
    ];
    println!(
        "history: {total} events written in {fill:.1} s ({:.0} events/s, 2 threads)",
        total as f64 / fill
    );
    println!(
        "history on disk: {bytes} bytes = {:.0} bytes/event",
        bytes as f64 / total as f64
    );
    println!(
        "{:<38} {:>8} {:>10} {:>10} {:>8}",
        "LookupEvents (Api::handle)", "calls", "p50 ms", "p99 ms", "events"
    );
    let rounds = 400u64;
    for (name, make) in &kinds {
        let mut lat = Vec::new();
        let mut returned = 0usize;
        for i in 0..rounds {
            let body = Bytes::from(make(i).to_string());
            let t = Instant::now();
            let (status, out, _) = api.handle(&p, body, true).await;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&out));
            let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
            returned += v["Events"].as_array().map(|a| a.len()).unwrap_or(0);
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{name:<38} {rounds:>8} {:>10.2} {:>10.2} {:>8.1}",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            returned as f64 / rounds as f64
        );
    }
    // Paging: the fifth page of a Username lookup (four NextTokens followed first).
    let mut lat = Vec::new();
    for i in 0..100u64 {
        let mut input = json!({"LookupAttributes": [{"AttributeKey": "ReadOnly",
            "AttributeValue": if i % 2 == 0 { "true" } else { "false" }}],
            "StartTime": now - RETENTION + i * 3600});
        let mut last = 0.0;
        for _ in 0..5 {
            let t = Instant::now();
            let (status, out, _) = api.handle(&p, Bytes::from(input.to_string()), true).await;
            last = t.elapsed().as_secs_f64() * 1000.0;
            assert_eq!(status, 200);
            let v: Value = serde_json::from_slice(&out).unwrap_or(Value::Null);
            match v["NextToken"].as_str() {
                Some(tok) => input["NextToken"] = json!(tok),
                None => break,
            }
        }
        lat.push(last);
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{:<38} {:>8} {:>10.2} {:>10.2} {:>8}",
        "ReadOnly, 5th page (NextToken)",
        100,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        50
    );
    println!(
        "reference: CloudTrail LookupEvents allows 2 requests/s per account and region (500 ms each); the issue asks for 10,000,000 events in history ({})",
        if total >= 10_000_000 {
            "measured at that size"
        } else {
            "this run is smaller, see EVENTS"
        }
    );
}
