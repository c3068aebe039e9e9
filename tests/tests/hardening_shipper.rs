//! Issue 14, items 1 and 7 (agent side), against the real binaries: the shipper believes only
//! the collector's own marked verdicts, the side tree is bounded, counted and resent, and a
//! disk that fails neither makes the agent hammer the collector nor costs it its backlog.
//!
//! Where something other than the collector must answer (nginx's "400 The plain HTTP request
//! was sent to HTTPS port", a proxy's 413), a small TCP server in the test answers like it and
//! later forwards the same connections to the real collector byte for byte.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use groundtrail_tests::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("gt-ship-")
        .tempdir_in("/tmp")
        .expect("tempdir")
}

fn local_spec(trail: &Path) -> Spec {
    Spec::new(Dest::Local {
        path: trail.to_path_buf(),
        bucket: "agent-trail".into(),
    })
}

/// No host sources, quick batches and retries; `extra` is appended (whole sections).
fn agent_config(data_dir: &Path, url: &str, buffer: &str, shipper: &str) -> String {
    format!(
        r#"[agent]
host = "agent-test"
account_id = "{ACCOUNT}"
region = "{REGION}"
data_dir = {data:?}

[collector]
urls = [{url:?}]

[buffer]
{buffer}

[shipper]
batch_max_records = 50
batch_max_wait_ms = 200
retry_initial_ms = 50
retry_max_ms = 500
drain_timeout_ms = 2000
{shipper}

[sources.auth_log]
enabled = false
[sources.auditd]
enabled = false
[sources.packages]
enabled = false
[sources.fim]
enabled = false
[sources.journald]
enabled = false
"#,
        data = data_dir.display().to_string(),
    )
}

/// `status` through the control socket (without blocking the runtime).
async fn status(agent: &AgentProcess) -> Value {
    match agent.cli(&["status"]).await {
        Some(v) => v,
        None => panic!("status failed; log:\n{}", agent.log()),
    }
}

/// PutAuditEvents through the CLI; the eventIDs of the accepted events.
async fn put(agent: &AgentProcess, events: &[Value]) -> Vec<String> {
    let file = agent
        .dir
        .join(format!("events-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, Value::Array(events.to_vec()).to_string()).unwrap();
    let arg = format!("file://{}", file.display());
    let resp = agent
        .cli(&["put-audit-events", "--audit-events", &arg])
        .await
        .unwrap_or_else(|| panic!("put-audit-events failed; log:\n{}", agent.log()));
    assert_eq!(resp["failed"], json!([]), "{resp}");
    resp["successful"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["eventID"].as_str().unwrap().to_string())
        .collect()
}

/// One PutAuditEvents event; `noise` bytes of random hex make it large and incompressible.
fn app_event(id: &str, noise: usize) -> Value {
    let noise: String = (0..noise.div_ceil(32))
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let data = json!({
        "version": "1.0",
        "userIdentity": {"type": "AppUser", "principalId": format!("user-{id}")},
        "eventSource": "billing.example.com",
        "eventName": "IssueRefund",
        "eventTime": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "UID": format!("req-{id}"),
        "requestParameters": {"ticket": id, "noise": noise},
        "recipientAccountId": ACCOUNT,
    });
    json!({"id": id, "eventData": data.to_string()})
}

async fn records_named(store: &Store, name: &str) -> Vec<Value> {
    store
        .records()
        .await
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r["eventName"] == name)
        .collect()
}

async fn wait_exactly_once(store: &Store, ids: &[String]) {
    let start = Instant::now();
    loop {
        let counts = store.event_id_counts().await;
        if ids.iter().all(|id| counts.contains_key(id)) {
            for id in ids {
                assert_eq!(counts[id], 1, "eventID {id} more than once");
            }
            return;
        }
        assert!(start.elapsed() < DEADLINE, "events never reached the trail");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the in-test server does with a connection.
#[derive(Clone)]
struct Impostor {
    /// Forward to this address (the real collector) instead of answering.
    forward: Arc<AtomicBool>,
    /// Requests answered with an error so far.
    answered: Arc<AtomicUsize>,
}

/// Reads one HTTP/1.1 request (headers and a Content-Length body); false on EOF.
async fn read_request(s: &mut tokio::net::TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            return true;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A server on `127.0.0.1:<port>` that answers every request like nginx does when plain HTTP
/// reaches its TLS port (400, HTML) or like a proxy with a small body limit (413, HTML),
/// alternately; once `forward` is set, it relays new connections to `collector` unchanged.
async fn impostor(collector: std::net::SocketAddr) -> (Impostor, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let me = Impostor {
        forward: Arc::new(AtomicBool::new(false)),
        answered: Arc::new(AtomicUsize::new(0)),
    };
    let m = me.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let m = m.clone();
            tokio::spawn(async move {
                if m.forward.load(Ordering::SeqCst) {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(collector).await {
                        let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
                    }
                    return;
                }
                if read_request(&mut s).await {
                    let n = m.answered.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = if n.is_multiple_of(2) {
                        (
                            "400 Bad Request",
                            "<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>The plain HTTP request was sent to HTTPS port</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
                        )
                    } else {
                        (
                            "413 Request Entity Too Large",
                            "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
                        )
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    (me, url)
}

/// Item 1: an agent whose collector URL reaches something that answers 400 and 413 without the
/// collector's marker (nginx's answer to plain HTTP on its TLS port, a proxy's body limit)
/// keeps every record in its buffer: nothing set aside, nothing reported as refused, and
/// `status` says the answer is not from a collector. Once the same URL reaches the real
/// collector, every record arrives exactly once. Before the marker, each record was narrowed
/// down and set aside, and the buffer drained into the side tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_not_from_the_collector_never_set_records_aside() {
    let dir = tempdir();
    let trail = dir.path().join("trail");
    let collector = Collector::start(&dir.path().join("collector"), local_spec(&trail)).await;
    let (imp, url) = impostor(collector.addr).await;
    let adir = dir.path().join("agent");
    let agent =
        AgentProcess::start_with_env(&adir, &agent_config(&adir.join("data"), &url, "", ""), &[])
            .await;
    let ids = put(
        &agent,
        &(0..20)
            .map(|i| app_event(&format!("e{i}"), 0))
            .collect::<Vec<_>>(),
    )
    .await;
    // Enough answers for the old shipper to have narrowed the batch down and set records
    // aside (it did so without backoff, one record per answer).
    wait_for("the impostor answered 12 requests", || async {
        (imp.answered.load(Ordering::SeqCst) >= 12).then_some(())
    })
    .await;
    let st = status(&agent).await;
    assert_eq!(st["buffer"]["setAside"], 0, "{st}");
    assert_eq!(st["shipped"]["rejected"], 0, "{st}");
    assert_eq!(
        st["buffer"]["depth"].as_u64().unwrap(),
        21,
        "AgentStart and the 20 events stay queued: {st}"
    );
    assert_eq!(st["buffer"]["pendingLoss"]["rejected"], json!([]), "{st}");
    let error = st["collector"]["lastError"].as_str().unwrap_or_default();
    assert!(
        error.contains("not from a groundtrail collector"),
        "status says what is wrong: {st}"
    );

    imp.forward.store(true, Ordering::SeqCst);
    let store = Store::Local(trail);
    wait_exactly_once(&store, &ids).await;
    let st = status(&agent).await;
    assert_eq!(st["buffer"]["setAside"], 0, "{st}");
    assert!(records_named(&store, "RecordsRejected").await.is_empty());
}

/// Replaces the `[limits]` section's lines of a stopped collector's config.
fn set_collector_limits(c: &Collector, limits: &str) {
    let text = std::fs::read_to_string(&c.config_path).unwrap();
    let (head, rest) = text.split_once("[limits]\n").unwrap();
    let (_, tail) = rest.split_once("\n[journal]").unwrap();
    std::fs::write(
        &c.config_path,
        format!("{head}[limits]\n{limits}\n\n[journal]{tail}"),
    )
    .unwrap();
}

/// Item 1: records the collector really refuses (a record over its `max_record_bytes`) go to the
/// side tree, which is bounded (`set_aside_max_bytes`; a refused record that does not fit is
/// not kept and reported with `"kept": false`) and counted (`status`, metrics, within the
/// buffer's bytes). After the collector's limit is raised, `resend-set-aside` delivers the
/// kept records, each exactly once, and empties the side tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_side_tree_is_bounded_counted_and_resent_on_command() {
    let dir = tempdir();
    let trail = dir.path().join("trail");
    let mut spec = local_spec(&trail);
    spec.limits.push("max_record_bytes = 20000".into());
    let mut collector = Collector::start(&dir.path().join("collector"), spec).await;
    let url = format!("http://{}", collector.addr);
    let adir = dir.path().join("agent");
    let agent = AgentProcess::start_with_env(
        &adir,
        &agent_config(
            &adir.join("data"),
            &url,
            "set_aside_max_bytes = \"40KB\"",
            "set_aside_retry_ms = 3600000",
        ),
        &[],
    )
    .await;
    // Four records of ~30 KB (about 16 KB each compressed): two fit the side tree's 40 KB.
    let big = put(
        &agent,
        &(0..4)
            .map(|i| app_event(&format!("big{i}"), 30_000))
            .collect::<Vec<_>>(),
    )
    .await;
    let small = put(
        &agent,
        &(0..5)
            .map(|i| app_event(&format!("small{i}"), 0))
            .collect::<Vec<_>>(),
    )
    .await;
    let store = Store::Local(trail.clone());
    wait_exactly_once(&store, &small).await;
    let st = wait_for("every record judged", || async {
        let st = status(&agent).await;
        (st["buffer"]["depth"] == 0 && st["shipped"]["rejected"] == 4).then_some(st)
    })
    .await;
    let b = &st["buffer"];
    assert_eq!(b["setAside"], 2, "{st}");
    assert_eq!(b["setAsideDiscardedTotal"], 2, "{st}");
    let aside_bytes = b["setAsideBytes"].as_u64().unwrap();
    assert!(aside_bytes > 20_000 && aside_bytes <= 40_000, "{st}");
    assert_eq!(b["setAsideMaxBytes"], 40_000, "{st}");
    assert!(
        b["bytes"].as_u64().unwrap() >= aside_bytes,
        "counted in bytes: {st}"
    );
    let metrics = {
        let out = tokio::process::Command::new(bin("groundtrail-agent"))
            .args(["status", "--metrics", "--config"])
            .arg(&agent.config_path)
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        metrics.contains("groundtrail_agent_set_aside_records 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("groundtrail_agent_set_aside_discarded_total 2\n"),
        "{metrics}"
    );
    // Every refusal is in the trail, saying which records are kept.
    let reported = wait_for("the refusals reported", || async {
        let kept: Vec<(String, bool)> = records_named(&store, "RecordsRejected")
            .await
            .iter()
            .flat_map(|r| {
                r["requestParameters"]["records"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .map(|r| {
                (
                    r["eventID"].as_str().unwrap().to_string(),
                    r["kept"].as_bool().unwrap(),
                )
            })
            .collect();
        (kept.len() == 4).then_some(kept)
    })
    .await;
    let kept: Vec<String> = reported
        .iter()
        .filter(|(_, k)| *k)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(kept.len(), 2, "{reported:?}");
    let mut all: Vec<String> = reported.iter().map(|(id, _)| id.clone()).collect();
    all.sort();
    let mut want = big.clone();
    want.sort();
    assert_eq!(all, want);

    // While the collector still refuses them, a resend keeps them.
    let r = agent.cli(&["resend-set-aside"]).await.expect("resend ran");
    assert_eq!(
        (
            r["offered"].clone(),
            r["accepted"].clone(),
            r["remaining"].clone()
        ),
        (json!(2), json!(0), json!(2)),
        "{r}"
    );
    // The operator raises the limit; the kept records then arrive, once each.
    assert!(collector.sigterm().await.success());
    set_collector_limits(&collector, "");
    collector.spawn().await;
    let r = agent.cli(&["resend-set-aside"]).await.expect("resend ran");
    assert_eq!(
        (
            r["offered"].clone(),
            r["accepted"].clone(),
            r["remaining"].clone()
        ),
        (json!(2), json!(2), json!(0)),
        "{r}"
    );
    wait_exactly_once(&store, &kept).await;
    let st = status(&agent).await;
    assert_eq!(st["buffer"]["setAside"], 0, "{st}");
    assert_eq!(st["buffer"]["setAsideBytes"], 0, "{st}");
    assert_eq!(st["buffer"]["setAsideResentTotal"], 2, "{st}");
    wait_exactly_once(&store, &small).await;
}

/// Item 1: without any command, set-aside records are offered again periodically
/// (`set_aside_retry_ms`), so a record refused under a limit that is later raised arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_aside_records_are_resent_periodically() {
    let dir = tempdir();
    let trail = dir.path().join("trail");
    let mut spec = local_spec(&trail);
    spec.limits.push("max_record_bytes = 20000".into());
    let mut collector = Collector::start(&dir.path().join("collector"), spec).await;
    let url = format!("http://{}", collector.addr);
    let adir = dir.path().join("agent");
    let agent = AgentProcess::start_with_env(
        &adir,
        &agent_config(&adir.join("data"), &url, "", "set_aside_retry_ms = 1000"),
        &[],
    )
    .await;
    let big = put(&agent, &[app_event("big", 30_000)]).await;
    wait_for("the record set aside", || async {
        (status(&agent).await["buffer"]["setAside"] == 1).then_some(())
    })
    .await;
    assert!(collector.sigterm().await.success());
    set_collector_limits(&collector, "");
    collector.spawn().await;
    let store = Store::Local(trail);
    wait_exactly_once(&store, &big).await;
    wait_for("the side tree empty", || async {
        (status(&agent).await["buffer"]["setAside"] == 0).then_some(())
    })
    .await;
}

/// The collector's `GET /metrics` value of `name`.
async fn collector_metric(addr: std::net::SocketAddr, name: &str) -> u64 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Mounts a tmpfs of `size` at `path` (needs root); unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(path.to_path_buf()))
    }

    /// Writes a file until the file system is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("fill");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0x5a; 64 * 1024];
        loop {
            if f.write_all(&block).is_err() {
                break;
            }
        }
        let small = [0u8; 512];
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Datagrams an agent sends to `$NOTIFY_SOCKET`, collected with the time they arrived.
fn notify_socket(path: &Path) -> Arc<std::sync::Mutex<Vec<(Instant, String)>>> {
    let sock = std::os::unix::net::UnixDatagram::bind(path).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            s.lock().unwrap().push((
                Instant::now(),
                String::from_utf8_lossy(&buf[..n]).into_owned(),
            ));
        }
    });
    seen
}

/// Item 7 (agent): the agent's buffer lives on a small tmpfs that fills up while records wait
/// for the collector. When the collector commits them, the agent cannot delete them: it must
/// not re-send the batch in a loop (the collector sees the records once, not thousands of
/// times), it shows the storage failure in `status`, and once writes have failed for longer
/// than `stuck_after_ms` it stops the systemd watchdog pings so that systemd restarts it. A
/// restart with space again (what systemd does) keeps the backlog (nothing quarantined) and
/// every record is in the trail exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_backs_off_stops_the_watchdog_and_keeps_the_backlog() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let dir = tempdir();
    let trail = dir.path().join("trail");
    let mut collector = Collector::start(&dir.path().join("collector"), local_spec(&trail)).await;
    let url = format!("http://{}", collector.addr);
    let adir = dir.path().join("agent");
    let data = adir.join("data");
    let fs = Tmpfs::mount(&data, "16m").expect("mount a tmpfs (root)");
    let notify_path = dir.path().join("notify.sock");
    let seen = notify_socket(&notify_path);
    let notify = notify_path.display().to_string();
    let mut agent = AgentProcess::start_with_env(
        &adir,
        &agent_config(&data, &url, "stuck_after_ms = 1000", "")
            .replace("batch_max_records = 50", "batch_max_records = 100"),
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "400000")],
    )
    .await;
    wait_for("watchdog pings", || async {
        (seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, m)| m == "WATCHDOG=1")
            .count()
            >= 2)
            .then_some(())
    })
    .await;
    // 600 records wait while the collector is down, in 300 appends (so that deleting them takes
    // more than the few bytes left in sled's last page) and six batches (so that there is a
    // batch after the first failed write: the one the old shipper re-sent in a loop); then the
    // disk fills.
    collector.kill9();
    let mut ids = Vec::new();
    for round in 0..30 {
        let puts = (0..10).map(|i| {
            let e = [
                app_event(&format!("d{round}-{i}-a"), 0),
                app_event(&format!("d{round}-{i}-b"), 0),
            ];
            let agent = &agent;
            async move { put(agent, &e).await }
        });
        for got in futures_join_all(puts).await {
            ids.extend(got);
        }
    }
    let fill = fs.fill();
    collector.spawn().await;
    // The collector commits the batch; the agent cannot delete it. Watch for a while.
    let start = Instant::now();
    loop {
        let st = status(&agent).await;
        if st["buffer"].get("storageFailure").is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the agent never saw the storage failure: {st}\nlog:\n{}\ndf: {}",
            agent.log(),
            String::from_utf8_lossy(&Command::new("df").arg(&data).output().unwrap().stdout)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received_before =
        collector_metric(collector.addr, "groundtrail_records_received_total").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let received = collector_metric(collector.addr, "groundtrail_records_received_total").await
        - received_before;
    assert!(
        received <= 200,
        "the agent re-sent {received} records in 4 s instead of backing off"
    );
    let st = status(&agent).await;
    assert!(
        st["buffer"]["storageErrorsTotal"].as_u64().unwrap() >= 1,
        "{st}"
    );
    let last_error = st["collector"]["lastError"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("cannot delete committed records"),
        "{st}"
    );
    // The watchdog has stopped: no ping for well over the interval (200 ms).
    let quiet_since = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pings_after = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, m)| *t > quiet_since && m == "WATCHDOG=1")
        .count();
    assert_eq!(
        pings_after, 0,
        "the watchdog keeps pinging with a stuck store"
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|(_, m)| m.starts_with("STATUS=buffer storage failing")),
        "systemd is told why"
    );
    // systemd restarts the agent (here: SIGKILL and start again) once there is space.
    agent.kill9();
    std::fs::remove_file(fill).unwrap();
    agent.spawn().await;
    let store = Store::Local(trail);
    wait_exactly_once(&store, &ids).await;
    let quarantined: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("quarantined"))
        .collect();
    assert!(quarantined.is_empty(), "the backlog was quarantined");
    wait_for("watchdog pings again", || async {
        let n = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, m)| *t > quiet_since && m == "WATCHDOG=1")
            .count();
        (n >= 2).then_some(())
    })
    .await;
    drop(agent);
    drop(fs);
}

async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let handles: Vec<_> = futures.collect();
    let mut out = Vec::new();
    // Polled together: a small join without a futures dependency.
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = handles.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, r) in pinned.iter_mut().zip(results.iter_mut()) {
            if r.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *r = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.extend(results.into_iter().map(|r| r.unwrap()));
    out
}

/// Item 7 (agent): an ordinary I/O error from the operating system while the buffer opens
/// (here EMFILE, from a low `ulimit -n`, at every point of the start-up in turn) makes the
/// agent exit with an error; it never moves the backlog aside as if it were damaged. With
/// the limit back to normal, every record waiting in the buffer is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_os_error_while_opening_never_quarantines_the_backlog() {
    let dir = tempdir();
    let trail = dir.path().join("trail");
    let mut collector = Collector::start(&dir.path().join("collector"), local_spec(&trail)).await;
    let url = format!("http://{}", collector.addr);
    let adir = dir.path().join("agent");
    let data = adir.join("data");
    let mut agent =
        AgentProcess::start_with_env(&adir, &agent_config(&data, &url, "", ""), &[]).await;
    collector.kill9();
    let ids = put(
        &agent,
        &(0..10)
            .map(|i| app_event(&format!("f{i}"), 0))
            .collect::<Vec<_>>(),
    )
    .await;
    agent.kill9();
    let mut exits = Vec::new();
    let log = adir.join("ulimit.log");
    for limit in 4..40 {
        let _ = std::fs::remove_file(&log);
        let out = std::fs::File::create(&log).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {limit} && exec \"$0\" run --config \"$1\""
            ))
            .arg(bin("groundtrail-agent"))
            .arg(&agent.config_path)
            .current_dir(&adir)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let start = Instant::now();
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if start.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let quarantined = std::fs::read_dir(&data)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().contains("quarantined"));
        assert!(
            !quarantined,
            "ulimit -n {limit}: the buffer was quarantined:\n{text}"
        );
        let running = code.is_none();
        exits.push((limit, code, text.lines().last().map(str::to_string)));
        if running {
            break;
        }
    }
    assert!(
        exits.iter().any(|(_, _, l)| {
            let l = l.as_deref().unwrap_or("");
            l.contains("Too many open files") && l.contains("buffer")
        }),
        "no start failed on EMFILE while opening the buffer: {exits:?}"
    );
    collector.spawn().await;
    agent.spawn().await;
    wait_exactly_once(&Store::Local(trail), &ids).await;
}

/// Item 1 (collector): every error answer of the real collector on the ingest port carries
/// `X-Groundtrail-Error: <__type>`, matching its JSON body; a `200` does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collectors_error_answers_are_marked() {
    let dir = tempdir();
    let collector = Collector::start(
        &dir.path().join("collector"),
        local_spec(&dir.path().join("trail")),
    )
    .await;
    let ask = |request: String| async move {
        let mut s = tokio::net::TcpStream::connect(collector.addr)
            .await
            .unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        text
    };
    let post = |ct: &str, body: &str| {
        format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let good = String::from_utf8(ndjson(&records(1))).unwrap();
    for (request, code) in [
        (
            post("application/x-ndjson", "not json\n"),
            Some("InvalidData"),
        ),
        (
            post("text/plain", "x\n"),
            Some("UnsupportedMediaTypeException"),
        ),
        (
            "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_string(),
            Some("ResourceNotFoundException"),
        ),
        (post("application/x-ndjson", &good), None),
    ] {
        let answer = ask(request).await;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        let marker = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-groundtrail-error:")
                .map(|_| l[20..].trim().to_string())
        });
        assert_eq!(marker.as_deref(), code, "{answer}");
        if let Some(code) = code {
            let v: Value = serde_json::from_str(body).unwrap();
            assert_eq!(v["__type"], code, "{answer}");
        }
    }
}
