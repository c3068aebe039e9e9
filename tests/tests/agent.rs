//! Black-box tests of `groundtrail-agent` with the real `groundtrail-collector`: the real
//! binaries, real Unix sockets, real HTTP and mutual TLS, a real trail directory.
//!
//! Nothing here asserts on time: waits poll until a condition holds (or give up after the
//! harness's generous deadline); "it blocks" is checked as "it has not completed although it
//! cannot have", which no scheduling delay can make fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use groundtrail_tests::*;
use serde_json::{Value, json};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("gt-agent-")
        .tempdir_in("/tmp")
        .expect("tempdir")
}

fn local_spec(trail: &Path) -> Spec {
    Spec::new(Dest::Local {
        path: trail.to_path_buf(),
        bucket: "agent-trail".into(),
    })
}

/// The agent config used by these tests: no host sources (the test host's logs would add
/// records nobody waits for), quick batches and retries.
fn agent_config(dir: &Path, collector_urls: &[String], extra: &str) -> String {
    let urls: Vec<String> = collector_urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        r#"[agent]
host = "agent-test"
account_id = "{ACCOUNT}"
region = "{REGION}"
data_dir = {data:?}

[collector]
urls = [{urls}]

[shipper]
batch_max_records = 50
batch_max_wait_ms = 200
retry_initial_ms = 50
retry_max_ms = 500
drain_timeout_ms = 2000

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

{extra}
"#,
        data = dir.join("data").display().to_string(),
        urls = urls.join(", "),
    )
}

/// A running (or stopped) `groundtrail-agent run`: the kit's [`AgentProcess`] (ready on its
/// `READY=1`, killed when dropped), and the CLI calls of this file through [`AgentClient`].
struct Agent {
    p: AgentProcess,
}

impl Agent {
    async fn start(dir: &Path, config_text: &str) -> Agent {
        Agent {
            p: AgentProcess::start(dir, config_text).await,
        }
    }

    async fn spawn(&mut self) {
        self.p.spawn().await;
    }

    fn log_text(&self) -> String {
        self.p.log()
    }

    fn kill9(&mut self) {
        self.p.kill9();
    }

    async fn sigterm(&mut self) {
        self.p.sigterm().await;
    }

    /// The address the agent bound for `role` (`APP_EVENTS`, `METRICS`), from its `READY=1`.
    fn addr(&self, role: &str) -> std::net::SocketAddr {
        self.p.addr(role)
    }

    fn client(&self) -> AgentClient {
        AgentClient(self.p.cli_handle())
    }

    async fn status(&self) -> Value {
        self.client().status().await
    }

    async fn metrics(&self) -> String {
        self.client().metrics().await
    }

    async fn put(&self, events: &[Value]) -> (bool, Value) {
        self.client().put(events).await
    }
}

/// The agent's CLI (`status`, `put-audit-events`) as this file's tests call it, on the kit's
/// [`AgentCli`]; cheap to clone into tasks.
#[derive(Clone)]
struct AgentClient(AgentCli);

impl AgentClient {
    async fn try_status(&self) -> Option<Value> {
        self.0.json(&["status"]).await
    }

    async fn status(&self) -> Value {
        self.try_status()
            .await
            .unwrap_or_else(|| panic!("status failed; log:\n{}", self.0.log()))
    }

    async fn metrics(&self) -> String {
        let out = self
            .0
            .output(&["status", "--metrics"])
            .await
            .unwrap_or_else(|| panic!("status --metrics failed; log:\n{}", self.0.log()));
        String::from_utf8_lossy(&out).into_owned()
    }

    /// `put-audit-events --audit-events file://...` through the CLI: (accepted, the JSON
    /// printed). Not accepted with `Value::Null` means the agent could not be reached.
    async fn put(&self, events: &[Value]) -> (bool, Value) {
        let file = tempfile::NamedTempFile::new_in(&self.0.dir).unwrap();
        std::fs::write(file.path(), Value::Array(events.to_vec()).to_string()).unwrap();
        let out = self
            .0
            .command(&["put-audit-events"])
            .arg("--audit-events")
            .arg(format!("file://{}", file.path().display()))
            .output()
            .await
            .unwrap();
        let text = if out.status.success() {
            out.stdout
        } else {
            out.stderr
        };
        (
            out.status.success(),
            serde_json::from_slice(&text).unwrap_or(Value::Null),
        )
    }
}

/// On a failed assertion, prints the agent's status and log and keeps the test directory.
struct Explain<'a>(&'a Agent, &'a Path);

impl Drop for Explain<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = self.1.with_extension("kept");
            let _ = std::fs::rename(self.1, &kept);
            eprintln!(
                "test directory kept at {}; agent log:\n{}",
                kept.display(),
                self.0.log_text()
            );
        }
    }
}

/// One PutAuditEvents event (a valid one unless the test edits it).
fn app_event(id: &str) -> Value {
    let data = json!({
        "version": "1.0",
        "userIdentity": {"type": "AppUser", "principalId": format!("user-{id}")},
        "eventSource": "billing.example.com",
        "eventName": "IssueRefund",
        "eventTime": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "UID": format!("req-{id}"),
        "requestParameters": {"ticket": id},
        "recipientAccountId": ACCOUNT,
    });
    json!({"id": id, "eventData": data.to_string()})
}

/// An event with about 1 KB of random text: the buffer compresses an append's events together,
/// so a test that must fill it needs data that does not compress away.
fn incompressible_app_event(id: &str) -> Value {
    let mut event = app_event(id);
    let mut data: Value = serde_json::from_str(event["eventData"].as_str().unwrap()).unwrap();
    let noise: String = (0..32)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    data["requestParameters"]["noise"] = Value::String(noise);
    event["eventData"] = Value::String(data.to_string());
    event
}

fn successful_ids(resp: &Value) -> Vec<String> {
    resp["successful"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s["eventID"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
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

async fn wait_in_trail(store: &Store, ids: &[String]) {
    let start = Instant::now();
    loop {
        let counts = store.event_id_counts().await;
        let missing: Vec<&String> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{} of {} events never reached the trail, e.g. {:?}",
            missing.len(),
            ids.len(),
            &missing[..missing.len().min(3)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_exactly_once(store: &Store, ids: &[String]) {
    let counts = store.event_id_counts().await;
    for id in ids {
        assert_eq!(counts.get(id).copied().unwrap_or(0), 1, "eventID {id}");
    }
}

/// An application streams calls of 10 events; the agent is killed with SIGKILL while the stream
/// runs and restarted. A call that failed is sent again, as an application would (same ids and
/// data, so the same eventIDs). Every acknowledged event is in the trail exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill9_exactly_once() {
    const CALLS: usize = 40;
    let started = chrono::Utc::now();
    let dir = tempdir();
    let trail = dir.path().join("trail");
    let mut collector = Collector::start(&dir.path().join("collector"), local_spec(&trail)).await;
    let url = format!("http://{}", collector.addr);
    let mut agent = Agent::start(
        &dir.path().join("agent"),
        &agent_config(&dir.path().join("agent"), &[url], ""),
    )
    .await;
    let client = agent.client();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stream = {
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut failures = 0;
            for call in 0..CALLS {
                let events: Vec<Value> = (0..10)
                    .map(|i| app_event(&format!("c{call}-{i}")))
                    .collect();
                loop {
                    let (ok, resp) = client.put(&events).await;
                    if ok {
                        assert_eq!(resp["failed"], json!([]), "{resp}");
                        acked.lock().unwrap().extend(successful_ids(&resp));
                        break;
                    }
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            failures
        })
    };
    wait_for("some calls acknowledged", || async {
        (acked.lock().unwrap().len() >= 100).then_some(())
    })
    .await;
    agent.kill9();
    agent.spawn().await;
    let failures = stream.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), CALLS * 10);
    eprintln!("calls refused while the agent was down: {failures}");
    let store = Store::Local(trail);
    let guard = Explain(&agent, dir.path());
    wait_in_trail(&store, &acked).await;
    std::mem::forget(guard);
    assert_exactly_once(&store, &acked).await;
    let starts = records_named(&store, "AgentStart").await;
    assert!(starts.len() >= 2, "an AgentStart per start");
    assert_eq!(starts[0]["eventSource"], "groundtrail.onprem.internal");
    let st = agent.status().await;
    assert_eq!(st["collector"]["reachable"], true, "{st}");
    agent.sigterm().await;
    wait_for("AgentStop in the trail", || async {
        (!records_named(&store, "AgentStop").await.is_empty()).then_some(())
    })
    .await;
    // The trail still validates end to end.
    let status = collector.sigterm().await;
    assert!(status.success(), "collector exit {status}");
    let mut args = vec![
        "--trail-arn".to_string(),
        TRAIL_ARN.into(),
        "--config".into(),
        collector.config_path.display().to_string(),
        "--verbose".into(),
    ];
    args.extend(window(started));
    groundtrail_validate(&args).assert_valid("validate-logs after the agent's kill -9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_outage_then_everything_arrives() {
    let dir = tempdir();
    let trail = dir.path().join("trail");
    let mut collector = Collector::start(&dir.path().join("collector"), local_spec(&trail)).await;
    let url = format!("http://{}", collector.addr);
    collector.sigterm().await;
    let agent = Agent::start(
        &dir.path().join("agent"),
        &agent_config(&dir.path().join("agent"), &[url], ""),
    )
    .await;
    let mut acked = Vec::new();
    for call in 0..5 {
        let events: Vec<Value> = (0..20)
            .map(|i| app_event(&format!("o{call}-{i}")))
            .collect();
        let (ok, resp) = agent.put(&events).await;
        assert!(ok, "{resp}");
        acked.extend(successful_ids(&resp));
    }
    assert_eq!(acked.len(), 100);
    let st = wait_for("the agent to notice the outage", || async {
        let st = agent.status().await;
        (st["collector"]["reachable"] == false).then_some(st)
    })
    .await;
    assert!(st["buffer"]["depth"].as_u64().unwrap() >= 100, "{st}");
    assert!(st["buffer"]["oldestAgeMs"].is_u64(), "{st}");
    assert!(
        agent
            .metrics()
            .await
            .contains("groundtrail_agent_collector_reachable 0")
    );

    collector.spawn().await;
    let store = Store::Local(trail);
    wait_in_trail(&store, &acked).await;
    assert_exactly_once(&store, &acked).await;
    let st = wait_for("the buffer to drain", || async {
        let st = agent.status().await;
        (st["buffer"]["depth"] == 0).then_some(st)
    })
    .await;
    assert_eq!(st["collector"]["reachable"], true);
    assert!(st["buffer"]["lastCommitPoint"].is_u64());
    let metrics = agent.metrics().await;
    assert!(metrics.contains("groundtrail_agent_collector_reachable 1"));
    assert!(
        !metrics.contains("groundtrail_agent_retries_total 0\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_under_block_waits_then_delivers() {
    let dir = tempdir();
    let trail = dir.path().join("trail");
    let mut collector = Collector::start(&dir.path().join("collector"), local_spec(&trail)).await;
    let url = format!("http://{}", collector.addr);
    collector.sigterm().await;
    let agent = std::sync::Arc::new(
        Agent::start(
            &dir.path().join("agent"),
            &agent_config(
                &dir.path().join("agent"),
                &[url],
                "[buffer]\nmax_bytes = \"64KiB\"\nfull_policy = \"block\"\n",
            ),
        )
        .await,
    );
    // Put calls until one has to wait for space: the agent reports it (waitingAppends).
    let mut acked = Vec::new();
    let mut call = 0;
    let blocked = loop {
        let events: Vec<Value> = (0..20)
            .map(|i| app_event(&format!("b{call}-{i}")))
            .collect();
        call += 1;
        assert!(call < 200, "64 KiB must fill up");
        let a = agent.clone();
        let put = tokio::spawn(async move { a.put(&events).await });
        let waiting = wait_for("the call to finish or to wait for space", || async {
            if put.is_finished() {
                return Some(false);
            }
            let st = agent.status().await;
            (st["buffer"]["waitingAppends"].as_u64().unwrap() > 0).then_some(true)
        })
        .await;
        if waiting {
            break put;
        }
        let (ok, resp) = put.await.unwrap();
        assert!(ok, "{resp}");
        assert_eq!(resp["failed"], json!([]), "{resp}");
        acked.extend(successful_ids(&resp));
    };
    let st = agent.status().await;
    assert!(st["buffer"]["bytes"].as_u64().unwrap() <= st["buffer"]["maxBytes"].as_u64().unwrap());
    // It cannot complete while the collector is down and the buffer full.
    assert!(
        !blocked.is_finished(),
        "an append into a full buffer must wait under block"
    );
    collector.spawn().await;
    let (ok, resp) = blocked.await.unwrap();
    assert!(ok, "{resp}");
    assert_eq!(resp["failed"], json!([]), "{resp}");
    acked.extend(successful_ids(&resp));
    let store = Store::Local(trail);
    wait_in_trail(&store, &acked).await;
    assert_exactly_once(&store, &acked).await;
    assert!(records_named(&store, "RecordsDropped").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_buffer_under_drop_newest_records_the_gap() {
    let dir = tempdir();
    let trail = dir.path().join("trail");
    let mut collector = Collector::start(&dir.path().join("collector"), local_spec(&trail)).await;
    let url = format!("http://{}", collector.addr);
    collector.sigterm().await;
    let agent = Agent::start(
        &dir.path().join("agent"),
        &agent_config(
            &dir.path().join("agent"),
            &[url],
            "[buffer]\nmax_bytes = \"64KiB\"\nfull_policy = \"drop_newest\"\n",
        ),
    )
    .await;
    let mut acked = Vec::new();
    let mut dropped = 0u64;
    for call in 0..60 {
        let events: Vec<Value> = (0..10)
            .map(|i| incompressible_app_event(&format!("d{call}-{i}")))
            .collect();
        let (ok, resp) = agent.put(&events).await;
        assert!(ok, "{resp}");
        acked.extend(successful_ids(&resp));
        for f in resp["failed"].as_array().unwrap() {
            assert_eq!(f["errorCode"], "Throttling", "{f}");
            dropped += 1;
        }
    }
    assert!(dropped > 0, "64 KiB cannot hold 600 events");
    let st = agent.status().await;
    assert_eq!(st["buffer"]["droppedTotal"], dropped);
    collector.spawn().await;
    let store = Store::Local(trail);
    wait_in_trail(&store, &acked).await;
    assert_exactly_once(&store, &acked).await;
    let reports = wait_for("RecordsDropped in the trail", || async {
        let r = records_named(&store, "RecordsDropped").await;
        let total: u64 = r
            .iter()
            .map(|r| r["requestParameters"]["count"].as_u64().unwrap())
            .sum();
        (total == dropped).then_some(r)
    })
    .await;
    for r in &reports {
        assert!(
            !r["requestParameters"]["seqRanges"]
                .as_array()
                .unwrap()
                .is_empty()
        );
        assert_eq!(r["requestParameters"]["fullPolicy"], "drop_newest");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_buffer_is_moved_aside_reported_and_the_agent_goes_on() {
    let dir = tempdir();
    let trail = dir.path().join("trail");
    let collector = Collector::start(&dir.path().join("collector"), local_spec(&trail)).await;
    let url = format!("http://{}", collector.addr);
    let adir = dir.path().join("agent");
    let mut agent = Agent::start(&adir, &agent_config(&adir, &[url], "")).await;
    agent.sigterm().await;
    let buffer = adir.join("data/buffer");
    for e in std::fs::read_dir(&buffer).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::write(&p, vec![0x5Au8; 8192]).unwrap();
        }
    }
    agent.spawn().await;
    let (ok, resp) = agent.put(&[app_event("after-damage")]).await;
    assert!(ok, "{resp}");
    let ids = successful_ids(&resp);
    let store = Store::Local(trail);
    wait_in_trail(&store, &ids).await;
    let reports = wait_for("BufferCorruption in the trail", || async {
        let r = records_named(&store, "BufferCorruption").await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    let q = &reports[0]["requestParameters"]["quarantined"][0];
    let aside = q["path"].as_str().unwrap();
    assert!(aside.contains("buffer.quarantined-"), "{q}");
    assert!(Path::new(aside).exists());
    assert!(agent.log_text().contains("moving it aside"));
}

/// `groundtrail-agent buffer ...` (the offline tools) on this test's agent: exit code, stdout,
/// stderr.
fn buffer_tool(agent: &Agent, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin("groundtrail-agent"))
        .arg("buffer")
        .args(args)
        .current_dir(&agent.p.dir)
        .env_remove("GROUNDTRAIL_AGENT_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The eventIDs of an ndjson export, in its order.
fn exported_ids(ndjson: &str) -> Vec<String> {
    ndjson
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["eventID"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The recovery story of docs/agent.md, on a real agent: its buffer is refused while it runs;
/// once stopped, its backlog (the collector was never reachable) is sound and exported in
/// order; after the agent moved the buffer aside as damaged, the quarantined directory is
/// found, its records are salvaged, and posting the export to a collector puts them in the
/// trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_agents_buffer_is_inspected_exported_and_recovered_by_hand() {
    let dir = tempdir();
    let adir = dir.path().join("agent");
    // Nothing listens there: every record stays in the buffer.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let mut agent = Agent::start(&adir, &agent_config(&adir, &[nowhere], "")).await;
    let config = agent.p.config_path.to_str().unwrap().to_string();
    let events: Vec<Value> = (0..3).map(|i| app_event(&format!("backlog-{i}"))).collect();
    let (ok, resp) = agent.put(&events).await;
    assert!(ok, "{resp}");
    let ids = successful_ids(&resp);
    assert_eq!(ids.len(), 3, "{resp}");

    let (code, out, err) = buffer_tool(&agent, &["inspect", "--config", &config]);
    assert_eq!(code, 2, "a running agent's buffer is refused: {out}{err}");
    assert!(
        err.contains("is in use") && err.contains("stop the agent first"),
        "{err}"
    );

    agent.sigterm().await;
    let (code, out, err) = buffer_tool(&agent, &["verify", "--config", &config]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.trim_end().ends_with(": sound"), "{out}");
    let data = adir.join("data");
    let (code, out, err) = buffer_tool(
        &agent,
        &["inspect", "--json", "--data-dir", data.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let i: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(i["quarantined"], false, "{i}");
    assert_eq!(i["problems"], json!([]), "{i}");
    assert_eq!(i["agentRecords"]["AgentStart"], 1, "{i}");
    assert_eq!(i["agentRecords"]["AgentStop"], 1, "{i}");
    let queued = i["records"].as_u64().unwrap();
    assert_eq!(queued, 5, "3 events, AgentStart, AgentStop: {i}");
    let out_file = adir.join("backlog.ndjson");
    let (code, _, err) = buffer_tool(
        &agent,
        &[
            "export",
            "--config",
            &config,
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("exported 5 records"), "{err}");
    let exported = exported_ids(&std::fs::read_to_string(&out_file).unwrap());
    let app: Vec<String> = exported
        .iter()
        .filter(|e| ids.contains(e))
        .cloned()
        .collect();
    assert_eq!(
        app, ids,
        "the events, once each, in the order they were put"
    );

    // sled refuses the store (its settings file damaged): the agent moves it aside at start.
    std::fs::write(data.join("buffer/conf"), vec![0xA5u8; 4096]).unwrap();
    agent.spawn().await;
    agent.sigterm().await;
    let (code, out, err) = buffer_tool(&agent, &["inspect", "--json", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    let fresh: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(fresh["agentRecords"]["BufferCorruption"], 1, "{fresh}");
    let siblings = fresh["quarantinedSiblings"].as_array().unwrap();
    assert_eq!(siblings.len(), 1, "{fresh}");
    let aside = siblings[0].as_str().unwrap();
    let (code, salvaged, err) = buffer_tool(&agent, &["export", "--path", aside]);
    assert_eq!(code, 1, "a salvage is reported as such: {err}");
    assert!(err.contains("sled cannot open it"), "{err}");
    let mut got = exported_ids(&salvaged);
    let mut want = exported.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want, "every record of the quarantined buffer, once");

    // Recovery by hand: post the export to a collector's ingest endpoint.
    let trail = dir.path().join("trail");
    let collector = Collector::start(&dir.path().join("collector"), local_spec(&trail)).await;
    let reply = collector
        .client()
        .post(salvaged.into_bytes(), false, &[])
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    wait_in_trail(&Store::Local(trail), &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_put_audit_events_inputs_get_their_error_codes() {
    let dir = tempdir();
    // No collector needed: the answers come from the agent once events are durable locally.
    let adir = dir.path().join("agent");
    let agent = Agent::start(
        &adir,
        &agent_config(
            &adir,
            &["http://127.0.0.1:9".into()],
            "[app_events]\nhttp_listen = \"127.0.0.1:0\"\n[control]\nmetrics_listen = \"127.0.0.1:0\"\n",
        ),
    )
    .await;
    let (app_port, metrics_port) = (
        agent
            .addr(groundtrail_common::sd_notify::role::APP_EVENTS)
            .port(),
        agent
            .addr(groundtrail_common::sd_notify::role::METRICS)
            .port(),
    );
    let edit = |id: &str, f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let ev = app_event(id);
        let mut data: Value = serde_json::from_str(ev["eventData"].as_str().unwrap()).unwrap();
        f(data.as_object_mut().unwrap());
        json!({"id": id, "eventData": data.to_string()})
    };
    let mut bad_sum = app_event("badsum");
    bad_sum["eventDataChecksum"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let cases: Vec<(Value, &str)> = vec![
        (bad_sum, "InvalidChecksum"),
        (json!({"id": "notjson", "eventData": "{"}), "InvalidData"),
        (
            edit("noname", &|m| {
                m.remove("eventName");
            }),
            "FieldNotFound",
        ),
        (
            edit("nouid", &|m| {
                m.remove("UID");
            }),
            "FieldNotFound",
        ),
        (
            edit("longname", &|m| {
                m.insert("eventName".into(), json!("x".repeat(1025)));
            }),
            "FieldTooLong",
        ),
        (
            edit("bigparams", &|m| {
                m.insert(
                    "requestParameters".into(),
                    json!({"x": "y".repeat(102_400)}),
                );
            }),
            "FieldTooLong",
        ),
        (
            edit("badtime", &|m| {
                m.insert("eventTime".into(), json!("21/11/2026"));
            }),
            "InvalidData",
        ),
        (
            edit("badip", &|m| {
                m.insert("sourceIPAddress".into(), json!("not-an-ip"));
            }),
            "InvalidData",
        ),
        (
            edit("otheraccount", &|m| {
                m.insert("recipientAccountId".into(), json!("999999999999"));
            }),
            "InvalidRecipient",
        ),
        (
            edit("awssource", &|m| {
                m.insert("eventSource".into(), json!("s3.amazonaws.com"));
            }),
            "InvalidEventSource",
        ),
    ];
    let mut events: Vec<Value> = cases.iter().map(|(e, _)| e.clone()).collect();
    events.push(app_event("good-1"));
    events.push(app_event("good-2"));
    let (ok, resp) = agent.put(&events).await;
    assert!(ok, "{resp}");
    let good: Vec<&str> = resp["successful"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(good, vec!["good-1", "good-2"]);
    let failed = resp["failed"].as_array().unwrap();
    assert_eq!(failed.len(), cases.len());
    for ((ev, code), f) in cases.iter().zip(failed) {
        assert_eq!(f["id"], ev["id"]);
        assert_eq!(f["errorCode"], *code, "{f}");
    }
    // Whole-call refusals.
    let (ok, resp) = agent.put(&[app_event("dup"), app_event("dup")]).await;
    assert!(!ok);
    assert_eq!(resp["__type"], "DuplicatedAuditEventId", "{resp}");
    let (ok, resp) = agent.put(&[]).await;
    assert!(!ok);
    assert_eq!(resp["__type"], "ValidationException", "{resp}");
    let many: Vec<Value> = (0..101).map(|i| app_event(&format!("m{i}"))).collect();
    let (ok, resp) = agent.put(&many).await;
    assert!(!ok);
    assert_eq!(resp["__type"], "ValidationException", "{resp}");
    let (ok, resp) = agent.put(&[app_event("bad id!")]).await;
    assert!(!ok);
    assert_eq!(resp["__type"], "ValidationException", "{resp}");
    // The same endpoint on the loopback HTTP listener, and metrics on theirs.
    let body = json!({"auditEvents": [app_event("http-1"), {"id": "http-2", "eventData": "[]"}]})
        .to_string();
    let (code, answer) = http_exchange(
        app_port,
        &format!(
            "POST /PutAuditEvents?channelArn=arn%3Aaws%3Acloudtrail%3Aus-east-1%3A{ACCOUNT}%3Achannel%2Fweb HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    );
    assert_eq!(code, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["successful"][0]["id"], "http-1", "{answer}");
    assert_eq!(answer["failed"][0]["errorCode"], "InvalidData", "{answer}");
    let (code, metrics) = http_exchange(
        metrics_port,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200);
    assert!(
        metrics.contains("groundtrail_agent_app_events_accepted_total 3"),
        "{metrics}"
    );
    let st = agent.status().await;
    assert_eq!(
        st["buffer"]["appendedTotal"].as_u64().unwrap(),
        3 + 1,
        "three good events and AgentStart"
    );
}

/// One HTTP/1.1 exchange over loopback TCP: (status, body).
fn http_exchange(port: u16, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, body.to_string())
}

/// A CA, a server certificate for 127.0.0.1, and client certificates, made with openssl.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn run(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        for ca in ["ca", "rogue-ca"] {
            pki.run(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        pki.leaf(
            "server",
            "ca",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        );
        pki.leaf("agent-test", "ca", "extendedKeyUsage=clientAuth");
        pki.leaf("rogue", "rogue-ca", "extendedKeyUsage=clientAuth");
        pki
    }

    fn leaf(&self, name: &str, ca: &str, ext: &str) {
        std::fs::write(self.dir.join(format!("{name}.ext")), format!("{ext}\n")).unwrap();
        self.run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        self.run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_certificate_is_refused_right_one_delivers() {
    let dir = tempdir();
    let pki = Pki::new(&dir.path().join("pki"));
    let trail = dir.path().join("trail");
    let mut spec = local_spec(&trail);
    spec.tls = Some(ServerTls {
        cert: pki.path("server.pem").into(),
        key: pki.path("server.key").into(),
        client_ca: Some(pki.path("ca.pem").into()),
    });
    spec.agents = vec![(
        "agent-test".into(),
        vec![ACCOUNT.into()],
        vec![REGION.into()],
    )];
    let collector = Collector::start(&dir.path().join("collector"), spec).await;
    let url = format!("https://127.0.0.1:{}", collector.addr.port());
    let tls = |cert: &str| {
        format!(
            "ca = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n",
            pki.path("ca.pem"),
            pki.path(&format!("{cert}.pem")),
            pki.path(&format!("{cert}.key"))
        )
    };
    // The rogue agent: its certificate is from another CA.
    let rdir = dir.path().join("rogue");
    let rogue_cfg = agent_config(&rdir, std::slice::from_ref(&url), "")
        .replace("[shipper]", &format!("{}\n[shipper]", tls("rogue")));
    let rogue = Agent::start(&rdir, &rogue_cfg).await;
    let (ok, resp) = rogue.put(&[app_event("rogue-1")]).await;
    assert!(ok, "{resp}");
    let rogue_ids = successful_ids(&resp);
    let st = wait_for("the rogue agent to be refused", || async {
        let st = rogue.status().await;
        (st["collector"]["consecutiveFailures"].as_u64().unwrap_or(0) >= 2).then_some(st)
    })
    .await;
    assert_eq!(st["collector"]["reachable"], false, "{st}");
    assert!(
        st["buffer"]["depth"].as_u64().unwrap() >= 1,
        "nothing deleted: {st}"
    );

    // The right certificate delivers.
    let adir = dir.path().join("agent");
    let good_cfg = agent_config(&adir, &[url], "")
        .replace("[shipper]", &format!("{}\n[shipper]", tls("agent-test")));
    let agent = Agent::start(&adir, &good_cfg).await;
    let (ok, resp) = agent.put(&[app_event("good-1")]).await;
    assert!(ok, "{resp}");
    let ids = successful_ids(&resp);
    let store = Store::Local(trail);
    wait_in_trail(&store, &ids).await;
    let counts = store.event_id_counts().await;
    assert!(
        !counts.contains_key(&rogue_ids[0]),
        "the rogue agent's event must not be in the trail"
    );
}
