//! History indexing rate, LookupEvents latency (p50, p99) with a large event history, and
//! history bytes on disk per event.
//!
//! ```text
//! cargo run --release -p groundtrail-collector --example lookup_bench [EVENTS] [DIR] [LIVE]
//! ```
//!
//! 1. fill: EVENTS management events (default 1,000,000) spread evenly over the 90-day
//!    retention (one every 7.8 s at the default: the worst case for the index's packing),
//!    2,000 users, 60 event names, 12 sources, 20,000 resources, inserted as the indexer does (the
//!    collector's own path: one task, queued batches merged into one insert) in batches of
//!    1,000 (what the batcher sends), with a barrier (indexed and flushed) at the end;
//! 2. live: LIVE more events (default 1,000,000) into a second store the same way, their
//!    times as live ingest makes them (20,000 a second, ending now);
//! 3. size: the first store's bytes on disk (after a flush) divided by EVENTS;
//! 4. lookups: the API handler itself (`Api::handle`: JSON parsing, the index range scan, the
//!    50 records read and shaped into the AWS answer with `CloudTrailEvent`), per kind of
//!    query: one attribute over the whole retention (first page of 50), one attribute and a
//!    one-hour window, EventId, no attribute and a one-hour window, and the fifth page of a
//!    paged lookup (NextToken). The HTTP transport and SigV4 (one HMAC chain) are not in it.
//!
//! The records are made on the sending task (a cheap `format!`), beside the indexer, as the
//! batcher would send them. Reference figures printed beside the results: the store before
//! its entries were packed (one sled key per event and per index entry), measured with this
//! example at `300000 DIR 300000` on the 2-core development machine (4,449 events/s spread,
//! 3,990 live, 2,639 bytes/event; the packed store: 9,218, 16,006 and 1,174), CloudTrail's own
//! LookupEvents rate limit (2 requests/s per account and region, i.e. 500 ms per request)
//! and the issue's target history size (10 million events).

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

/// The n-th record, at time `t`: a realistic agent record (about 900 bytes of JSON).
fn record(n: u64, t: u64) -> Vec<u8> {
    let user = (n as usize * 7919) % USERS;
    let time = chrono::DateTime::from_timestamp(t as i64, 0)
        .map(groundtrail_common::time::json_time)
        .unwrap_or_default();
    format!(
        concat!(
            r#"{{"eventVersion":"1.11","userIdentity":{{"type":"IAMUser","principalId":"AIDA{user:08}","#,
            r#""arn":"arn:aws:iam::111122223333:user/host-{host}/user{user}","accountId":"111122223333","#,
            r#""accessKeyId":"AKIA{user:016}","userName":"user{user}"}},"eventTime":"{time}","#,
            r#""eventSource":"svc{source}.onprem.internal","eventName":"Action{name}","awsRegion":"us-east-1","#,
            r#""sourceIPAddress":"10.0.{ip1}.{ip2}","userAgent":"groundtrail-agent/0.1","#,
            r#""requestParameters":{{"command":"/usr/bin/systemctl restart nginx","cwd":"/root"}},"#,
            r#""responseElements":null,"eventID":"{id}","readOnly":{ro},"resources":[{{"accountId":"111122223333","#,
            r#""type":"AWS::Host::Unit","ARN":"arn:aws:host:::unit/unit{unit}"}}],"eventType":"AwsApiCall","#,
            r#""managementEvent":true,"recipientAccountId":"111122223333","eventCategory":"Management"}}"#
        ),
        user = user,
        host = n % 50,
        time = time,
        source = n as usize % SOURCES,
        name = (n as usize * 31) % NAMES,
        ip1 = n % 200,
        ip2 = n % 250,
        id = event_id(n),
        ro = n.is_multiple_of(4),
        unit = (n as usize * 13) % RESOURCES,
    )
    .into_bytes()
}

/// Inserts events `first..first + count` (times from `time(n)`) into `history` in batches of
/// `BATCH`, as the indexer does, then flushes. Returns the seconds taken.
async fn index(history: &Arc<History>, first: u64, count: u64, time: impl Fn(u64) -> u64) -> f64 {
    let started = Instant::now();
    let mut n = first;
    while n < first + count {
        let end = (n + BATCH as u64).min(first + count);
        let batch: Vec<Vec<u8>> = (n..end).map(|i| record(i, time(i))).collect();
        history
            .insert(batch.iter().map(|r| r.as_slice()), 0)
            .expect("insert");
        n = end;
        if (n - first).is_multiple_of(250_000) {
            eprintln!("  {} / {count} events indexed", n - first);
        }
    }
    history.flush().await.expect("flush");
    started.elapsed().as_secs_f64()
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
            mb.parse::<u64>().unwrap_or(48) * 1024 * 1024,
            std::env::var("GROUNDTRAIL_BENCH_HIGH_THROUGHPUT").as_deref() != Ok("1"),
        ),
        Err(_) => History::open(&dir.join("history")),
    };
    let history = Arc::new(history.expect("open history"));

    // 1. fill, spread over the retention
    let fill = index(&history, 0, total, |n| {
        now - RETENTION + (n * RETENTION / total.max(1))
    })
    .await;

    // 2. live: dense times, into a second store
    let live_total: u64 = args
        .next()
        .and_then(|a| a.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let live_rate = 20_000u64;
    let live = if live_total > 0 {
        let store = Arc::new(History::open(&dir.join("history-live")).expect("open live history"));
        let start = now - live_total / live_rate;
        let took = index(&store, total, live_total, |n| {
            start + (n - total) / live_rate
        })
        .await;
        let bytes = store.size_on_disk().expect("size");
        Some((took, bytes))
    } else {
        None
    };

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
        "indexing, spread over 90 days: {total} events in {fill:.1} s = {:.0} events/s (unpacked store: 4,449 events/s)",
        total as f64 / fill
    );
    if let Some((took, bytes)) = live {
        println!(
            "indexing, live ({live_rate} events/s of event time): {live_total} events in {took:.1} s = {:.0} events/s (unpacked store: 3,990 events/s), {:.0} bytes/event",
            live_total as f64 / took,
            bytes as f64 / live_total as f64
        );
    }
    println!(
        "history on disk: {bytes} bytes = {:.0} bytes/event (unpacked store: 2,639 bytes/event)",
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
