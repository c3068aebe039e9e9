//! Availability and growth limits against the real collector binary (issue 14, items 6, 8, 9):
//! silent sockets cannot hold the connection slots, an idle HTTP/2 connection is closed, agent
//! names and (account, region) pairs are capped, no sequence header switches gap detection off,
//! request bodies share a memory budget, the webhook queue is bounded, every `[limits]` value is
//! checked at startup, unsigned API reads are an explicit setting, and `check-config` prints no
//! secret.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use groundtrail_tests::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn local_spec(dir: &std::path::Path) -> (Spec, Store) {
    let trail = dir.join("trail");
    (
        Spec::new(Dest::Local {
            path: trail.clone(),
            bucket: "trail-bucket".into(),
        }),
        Store::Local(trail),
    )
}

/// Starts a collector whose `[server]` section also holds `server` lines: the harness writes
/// `[server]` itself, so the config is written, the process stopped, the lines added and the
/// process started again.
async fn start_with_server(dir: &std::path::Path, spec: Spec, server: &[&str]) -> Collector {
    let mut c = Collector::start(dir, spec).await;
    c.kill9();
    let text = std::fs::read_to_string(&c.config_path).unwrap();
    let text = text.replacen(
        "[server]\n",
        &format!("[server]\n{}\n", server.join("\n")),
        1,
    );
    std::fs::write(&c.config_path, text).unwrap();
    c.spawn().await;
    c
}

/// Connects to `addr` from the local address `from` (another loopback address is another peer).
async fn connect_from(from: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// One ingest POST over `tcp`: (status, body).
async fn post_on(tcp: TcpStream, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, String) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::post(groundtrail_common::wire::EVENTS_PATH)
        .header("host", "collector")
        .header("content-type", groundtrail_common::wire::NDJSON);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// An unsigned CloudTrail API call: (status, JSON body).
async fn api_call(addr: SocketAddr, operation: &str, input: Value) -> (u16, Value) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("/")
        .header("host", addr.to_string())
        .header("content-type", "application/x-amz-json-1.1")
        .header(
            "x-amz-target",
            format!("com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.{operation}"),
        )
        .body(Full::new(Bytes::from(input.to_string())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn metrics(addr: SocketAddr) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/metrics")
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Whether the server closed `s` (EOF or reset) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

// --- item 6: connections ---------------------------------------------------------------------

/// More silent sockets than the per-peer cap and than all slots: another peer is served at
/// once, the silent ones are closed after the header timeout, and then a real ingest request
/// from the same peer succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_cannot_hold_the_connection_slots() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, _store) = local_spec(dir.path());
    let c = start_with_server(
        dir.path(),
        spec,
        &[
            "max_connections = 8",
            "max_connections_per_peer = 4",
            "header_timeout = \"2s\"",
        ],
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..12 {
        silent.push(TcpStream::connect(c.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Another peer address still gets a slot, at once.
    let recs = records(2);
    let from_other = tokio::time::timeout(Duration::from_secs(1), async {
        let tcp = connect_from("127.0.0.2", c.addr).await.unwrap();
        post_on(tcp, ndjson(&recs), &[]).await
    })
    .await
    .expect("a request from another peer was not served while one peer held silent sockets");
    assert_eq!(from_other.0, 200, "{}", from_other.1);

    // The silent sockets are closed (those over the per-peer cap at once, the rest after the
    // header timeout)...
    let start = Instant::now();
    for s in &mut silent {
        assert!(
            closed_within(s, Duration::from_secs(6)).await,
            "a silent socket was still open after {:?}",
            start.elapsed()
        );
    }
    // ... and the same peer is served again.
    let recs = records(2);
    let reply = tokio::time::timeout(Duration::from_secs(5), c.client().post_records(&recs))
        .await
        .expect("ingest did not answer after the silent sockets were closed")
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        metrics(c.addr)
            .await
            .contains("groundtrail_connections_refused_total")
    );
}

/// On TLS the protocol is ALPN's choice, and an HTTP/2 connection with nothing in flight is
/// closed after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki_init(dir.path());
    let (mut spec, _store) = local_spec(&dir.path().join("c"));
    spec.tls = Some(ServerTls {
        cert: pki.join("server.pem"),
        key: pki.join("server.key"),
        client_ca: None,
    });
    let c = start_with_server(
        &dir.path().join("c"),
        spec,
        &["idle_timeout = \"2s\"", "header_timeout = \"30s\""],
    )
    .await;

    let mut roots = rustls::RootCertStore::empty();
    for cert in groundtrail_common::tls::load_certs(&pki.join("ca.pem")).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(c.addr).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(format!("https://localhost:{}/metrics", c.addr.port()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await.unwrap();
    let idle_since = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the idle HTTP/2 connection was still open after 10 s")
        .unwrap()
        .ok();
    assert!(
        idle_since.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}, before the idle timeout",
        idle_since.elapsed()
    );
}

/// The agent's local servers: silent sockets on the control socket are closed after the header
/// timeout (so `status` answers although they outnumber the connection cap), and a request
/// whose body never arrives on the PutAuditEvents socket is answered 408 instead of holding its
/// connection for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_local_servers_bound_silent_and_slow_clients() {
    use tokio::net::UnixStream;
    let dir = tempfile::tempdir().unwrap();
    let adir = dir.path().join("agent");
    let config = format!(
        "{}[local_http]\nmax_connections = 2\nheader_timeout_ms = 1000\nrequest_timeout_ms = 1500\n",
        agent_config_head(&adir, "host-1", &["http://127.0.0.1:9".to_string()])
    );
    let agent = AgentProcess::start(&adir, &config).await;
    let control = adir.join("data/control.sock");
    let app = adir.join("data/app-events.sock");

    let mut silent = Vec::new();
    for _ in 0..6 {
        silent.push(UnixStream::connect(&control).await.unwrap());
    }
    let config_path = agent.config_path.clone();
    let status = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || {
            Command::new(bin("groundtrail-agent"))
                .args(["status", "--config"])
                .arg(&config_path)
                .output()
                .unwrap()
        }),
    )
    .await
    .expect("status did not answer while silent sockets were open")
    .unwrap();
    assert!(status.status.success(), "{status:?}");
    for s in &mut silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a silent control connection was not closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    let mut slow = UnixStream::connect(&app).await.unwrap();
    slow.write_all(
        b"POST /PutAuditEvents?channelArn=x HTTP/1.1\r\nhost: agent\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&answer).contains("RequestTimeout") {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("a request without its body held the connection");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("RequestTimeout"), "{answer}");
}

// --- item 8: growth ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_names_and_account_region_pairs_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spec, _store) = local_spec(dir.path());
    spec.limits = vec!["max_agents = 2".into(), "max_account_regions = 2".into()];
    let c = Collector::start(dir.path(), spec).await;
    let client = c.client();
    let post_as = |agent: &'static str, recs: Vec<Value>| {
        let client = client.clone();
        async move {
            client
                .post(ndjson(&recs), false, &[("x-groundtrail-agent", agent)])
                .await
                .unwrap()
        }
    };
    for agent in ["web-1", "web-2"] {
        let r = post_as(agent, vec![record(ACCOUNT, "us-east-1")]).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = post_as("web-3", vec![record(ACCOUNT, "us-east-1")]).await;
    assert_eq!(
        (r.status, r.code()),
        (429, "LimitExceededException".into()),
        "{}",
        r.body
    );
    assert!(r.body.contains("max_agents"), "{}", r.body);
    // Known names go on.
    let r = post_as("web-1", vec![record(ACCOUNT, "eu-west-1")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A third pair is refused, naming the line; the known pairs go on.
    let r = post_as(
        "web-2",
        vec![record(ACCOUNT, "us-east-1"), record(ACCOUNT, "ap-south-1")],
    )
    .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "LimitExceededException".into()),
        "{}",
        r.body
    );
    assert_eq!(r.json()["line"], 2, "{}", r.body);
    let r = post_as("web-2", vec![record(ACCOUNT, "eu-west-1")]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A sender that claims sequence number 2^64-1 does not switch gap detection off: the jump is
/// itself recorded, and a later real gap still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_sequence_header_does_not_switch_gap_detection_off() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, store) = local_spec(dir.path());
    let c = Collector::start(dir.path(), spec).await;
    let send = |first: &str, last: &str| {
        let client = c.client();
        let recs = records(1);
        let (first, last) = (first.to_string(), last.to_string());
        async move {
            let r = client
                .post(
                    ndjson(&recs),
                    false,
                    &[
                        ("x-groundtrail-agent", "web-1"),
                        ("x-groundtrail-seq-first", &first),
                        ("x-groundtrail-seq-last", &last),
                    ],
                )
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            recs
        }
    };
    send("1", "1").await;
    send("18446744073709551615", "18446744073709551615").await;
    send("2", "2").await;
    let last = send("10", "10").await;
    store.wait_delivered(&event_ids(&last)).await;
    let gaps: Vec<Value> = wait_for("the real gap 3..=9 in the trail", || {
        let store = store.clone();
        async move {
            let gaps: Vec<Value> = store
                .records()
                .await
                .into_iter()
                .map(|(_, r)| r)
                .filter(|r| r["eventName"] == "AgentSequenceGap")
                .collect();
            gaps.iter()
                .any(|g| g["requestParameters"]["firstMissingSequence"] == 3)
                .then_some(gaps)
        }
    })
    .await;
    let g = gaps
        .iter()
        .find(|g| g["requestParameters"]["firstMissingSequence"] == 3)
        .unwrap();
    assert_eq!(g["requestParameters"]["lastMissingSequence"], 9);
    let resets = store
        .records()
        .await
        .into_iter()
        .filter(|(_, r)| r["eventName"] == "AgentSequenceReset")
        .count();
    assert_eq!(resets, 1);
}

/// Request bodies in flight share one memory budget: while one body holds all of it, another
/// request is refused with 503 ThrottlingException, and served once the first is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_share_a_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spec, _store) = local_spec(dir.path());
    spec.limits = vec![
        "max_body_bytes = 65536".into(),
        "max_body_bytes_in_flight = 65536".into(),
    ];
    let c = Collector::start(dir.path(), spec).await;
    // Headers of a full-size body, and then nothing: it holds the whole budget.
    let mut holder = TcpStream::connect(c.addr).await.unwrap();
    holder
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nhost: c\r\ncontent-type: application/x-ndjson\r\ncontent-length: 65536\r\n\r\n",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recs = records(1);
    let r = c.client().post_records(&recs).await.unwrap();
    assert_eq!(
        (r.status, r.code()),
        (503, "ThrottlingException".into()),
        "{}",
        r.body
    );
    drop(holder);
    let r = wait_for("the budget to be given back", || {
        let client = c.client();
        let recs = recs.clone();
        async move {
            let r = client.post_records(&recs).await.unwrap();
            (r.status == 200).then_some(r)
        }
    })
    .await;
    assert_eq!(r.status, 200);
}

/// A webhook that never answers does not grow its queue for ever: the oldest notifications
/// are dropped, counted and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_queue_is_bounded_and_drops_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spec, store) = local_spec(dir.path());
    // free_port: an address where nothing listens.
    let dead = free_port();
    spec.extra_toml = format!(
        "[api]\nallow_unsigned_loopback_reads = true\n\n[[notifications]]\nurl = \"http://127.0.0.1:{dead}/hook\"\nmax_queued = 1\n"
    );
    let c = Collector::start(dir.path(), spec).await;
    // Three regions: three log files, three notifications.
    let recs = vec![
        record(ACCOUNT, "us-east-1"),
        record(ACCOUNT, "eu-west-1"),
        record(ACCOUNT, "ap-south-1"),
    ];
    assert_eq!(c.client().post_records(&recs).await.unwrap().status, 200);
    store.wait_delivered(&event_ids(&recs)).await;
    wait_for("dropped notifications in the metrics", || {
        let addr = c.addr;
        async move {
            let text = metrics(addr).await;
            text.lines()
                .find(|l| l.starts_with("groundtrail_notifications_dropped_total "))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .filter(|n| *n >= 2)
        }
    })
    .await;
    let (status, v) = api_call(c.addr, "GetTrailStatus", serde_json::json!({"Name": TRAIL})).await;
    assert_eq!(status, 200, "{v}");
    assert!(
        v["LatestNotificationError"]
            .as_str()
            .is_some_and(|m| m.contains("max_queued")),
        "{v}"
    );
    assert!(c.log().contains("queued notifications"), "{}", c.log());
}

/// Every `[limits]` value is checked at startup with an error naming the field; a
/// `max_decompressed_bytes` below 4 KiB used to make the first zstd batch panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_checked_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    for (line, field) in [
        ("max_decompressed_bytes = 100", "max_decompressed_bytes"),
        ("max_batch_records = 0", "max_batch_records"),
        ("max_record_bytes = 1", "max_record_bytes"),
        ("max_body_bytes = 0", "max_body_bytes"),
        ("max_agents = 0", "max_agents"),
        ("max_account_regions = 0", "max_account_regions"),
        ("max_body_bytes_in_flight = 1", "max_body_bytes_in_flight"),
    ] {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, format!("[limits]\n{line}\n")).unwrap();
        for command in ["check-config", "serve"] {
            let out = Command::new(bin("groundtrail-collector"))
                .arg(command)
                .arg("--config")
                .arg(&path)
                .current_dir(dir.path())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{command} accepted {line}");
            assert!(
                stderr.contains(field) && !stderr.contains("panicked"),
                "{command} {line}: {stderr}"
            );
        }
    }
}

// --- item 9: unsigned reads and secrets --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_reads_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, _store) = local_spec(&dir.path().join("off"));
    let off = Collector::start(&dir.path().join("off"), spec).await;
    let (status, v) = api_call(off.addr, "LookupEvents", serde_json::json!({})).await;
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["__type"], "UnrecognizedClientException", "{v}");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("allow_unsigned_loopback_reads")),
        "{v}"
    );

    let (mut spec, _store) = local_spec(&dir.path().join("on"));
    spec.extra_toml = "[api]\nallow_unsigned_loopback_reads = true\n".into();
    let on = Collector::start(&dir.path().join("on"), spec).await;
    let (status, v) = api_call(on.addr, "LookupEvents", serde_json::json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["Events"].is_array(), "{v}");

    // The quickstart turns it on; the packaged config leaves it off.
    let qs = std::fs::read_to_string(workspace_root().join("scripts/quickstart.sh")).unwrap();
    assert!(qs.contains("allow_unsigned_loopback_reads = true"));
    let out = Command::new(bin("groundtrail-collector"))
        .args(["check-config", "--config"])
        .arg(workspace_root().join("packaging/config/collector.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("allow_unsigned_loopback_reads = false"));
}

#[test]
fn check_config_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let secret = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY";
    std::fs::write(
        &path,
        format!(
            "[[api.access_keys]]\naccess_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"{secret}\"\n"
        ),
    )
    .unwrap();
    let out = Command::new(bin("groundtrail-collector"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(!stdout.contains(secret), "{stdout}");
    assert!(
        stdout.contains("AKIDEXAMPLE") && stdout.contains("<redacted>"),
        "{stdout}"
    );
}
