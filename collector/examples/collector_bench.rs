//! Throughput of the collector beside its limit, the raw gzip rate of the same bytes.
//!
//! ```text
//! cargo run --release -p groundtrail-collector --example collector_bench [RECORDS] [CONNECTIONS]
//! ```
//!
//! 1. raw gzip: the `{"Records":[...]}` JSON of all records through flate2 at the level log
//!    files use — the ceiling, since every record is gzipped once;
//! 2. ingest: the real `serve` on loopback, batches of 1000 records POSTed over several
//!    connections, each answered only after the journal flush (records/s committed);
//! 3. end to end: the same plus shutdown, which closes, gzips and delivers every log file and
//!    signs the digests (records/s from first request to everything delivered).

use std::io::Write;
use std::time::Instant;

use groundtrail_collector::config::{Config, DestinationConfig, Duration};
use groundtrail_common::shutdown::Shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BATCH: usize = 1000;

fn record(n: usize) -> String {
    format!(
        r#"{{"eventVersion":"1.11","userIdentity":{{"type":"IAMUser","principalId":"AIDAEXAMPLE{n}","arn":"arn:aws:iam::111122223333:user/web-1/alice","accountId":"111122223333","userName":"alice"}},"eventTime":"2026-01-01T00:00:00Z","eventSource":"sshd.onprem.internal","eventName":"ConsoleLogin","awsRegion":"us-east-1","sourceIPAddress":"10.0.0.{}","userAgent":"sshd","requestParameters":null,"responseElements":{{"ConsoleLogin":"Success"}},"eventID":"{}","readOnly":false,"eventType":"AwsConsoleSignIn","managementEvent":true,"recipientAccountId":"111122223333","eventCategory":"Management"}}"#,
        n % 250,
        uuid::Uuid::new_v4()
    )
}

async fn post(addr: std::net::SocketAddr, body: &[u8]) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("write");
    s.write_all(body).await.expect("write");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read");
    std::str::from_utf8(&out[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let connections: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(4);
    let records: Vec<String> = (0..total).map(record).collect();
    let bytes: usize = records.iter().map(|r| r.len() + 1).sum();
    println!(
        "{total} records, {} bytes each on average, {connections} connections, batches of {BATCH}",
        bytes / total
    );

    // 1. raw gzip of the same bytes.
    let mut json = b"{\"Records\":[".to_vec();
    json.extend_from_slice(records.join(",").as_bytes());
    json.extend_from_slice(b"]}");
    let t = Instant::now();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&json).expect("gzip");
    let gz = enc.finish().expect("gzip");
    let gzip_secs = t.elapsed().as_secs_f64();
    println!(
        "raw gzip:   {:>9.0} records/s  ({:.0} MB/s in, ratio {:.1})",
        total as f64 / gzip_secs,
        json.len() as f64 / gzip_secs / 1e6,
        json.len() as f64 / gz.len() as f64
    );

    // 2. + 3. the real collector.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.journal.path = dir.path().join("journal");
    config.signing.key_file = dir.path().join("key.pem");
    config.trail.log_file_interval = Duration::from_secs(3600);
    config.destinations = vec![DestinationConfig::Local {
        name: None,
        path: dir.path().join("trail"),
        bucket: "bench".into(),
    }];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::broadcast::channel(1);
    let server = tokio::spawn(groundtrail_collector::service::serve(
        config,
        listener,
        Shutdown::new(rx),
    ));
    let batches: Vec<Vec<u8>> = records
        .chunks(BATCH)
        .map(|c| (c.join("\n") + "\n").into_bytes())
        .collect();
    let per = batches.len().div_ceil(connections);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for chunk in batches.chunks(per.max(1)) {
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            for b in chunk {
                assert_eq!(post(addr, &b).await, 200);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let ingest_secs = t.elapsed().as_secs_f64();
    println!(
        "ingest:     {:>9.0} records/s  (committed and flushed, answered 200)",
        total as f64 / ingest_secs
    );
    tx.send(()).expect("shutdown");
    server.await.expect("server").expect("serve");
    let e2e_secs = t.elapsed().as_secs_f64();
    println!(
        "end to end: {:>9.0} records/s  (plus closing, gzipping, delivering and digesting)",
        total as f64 / e2e_secs
    );
}
