//! Cluster mode against real processes: three `nats-server` 2.15 (R3, `sync_interval:
//! always`), several `groundtrail-collector serve` with `[cluster]`, moto as S3, the unmodified
//! AWS CLI, and a real agent where the agent's buffering is the point. Every test ends with
//! every acknowledged record in the trail exactly once and `validate-logs` passing (ours for
//! every region, the AWS CLI's for the home region).
//!
//! The failure cases of issue 16, one test each:
//! - a collector killed after publishing and before answering (the sender resends);
//! - the shard owner killed mid-upload (another takes over, the file and the chain go on);
//! - a frozen owner resumed after a takeover (it must not write);
//! - one, then two of three NATS servers killed (agents buffer, nothing lost);
//! - the stream full while S3 is down (503s, then everything arrives).
//!
//! And one configuration error: a stream larger than the servers' store, refused at start-up
//! with what to change (one server and three).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use groundtrail_tests::nats::{NatsCluster, NatsOptions, nats_server};
use groundtrail_tests::*;
use serde_json::Value;

const OTHER_REGIONS: [&str; 2] = ["eu-west-1", "ap-southeast-2"];

/// Three NATS servers, a bucket, and collectors that share one signing key.
struct Setup {
    dir: tempfile::TempDir,
    nats: NatsCluster,
    endpoint: String,
    bucket: String,
    store: Store,
    key_pem: String,
    collectors: Vec<Collector>,
    started: chrono::DateTime<chrono::Utc>,
}

/// `[cluster]` for collector `node`, plus `extra` lines in that section.
fn spec(s: &Setup, node: &str, shards: u32, extra: &str) -> Spec {
    let mut spec = Spec::new(Dest::S3 {
        bucket: s.bucket.clone(),
        endpoint: s.endpoint.clone(),
    });
    spec.log_file_interval = "2s".into();
    spec.digest_interval = "4s".into();
    spec.limits = vec!["max_batch_records = 1000".into()];
    let urls: Vec<String> = s
        .nats
        .client_urls()
        .iter()
        .map(|u| format!("{u:?}"))
        .collect();
    spec.extra_toml = format!(
        "[api]\nallow_unsigned_loopback_reads = true\n\n[detection]\nenabled = false\n\n\
         [cluster]\nnats = [{}]\nnode_id = \"{node}\"\nshards = {shards}\nlease_ttl = \"3s\"\n\
         request_timeout = \"2s\"\n{max_bytes}{extra}\n",
        urls.join(", "),
        max_bytes = if extra.contains("stream_max_bytes") {
            ""
        } else {
            "stream_max_bytes = 67108864\n"
        },
    );
    spec
}

async fn setup(test: &str, endpoint: Option<String>) -> Option<Setup> {
    let nats_bin = nats_server(test)?;
    let endpoint = match endpoint {
        Some(e) => e,
        None => s3_endpoint(test)?,
    };
    let dir = tempfile::Builder::new()
        .prefix(&format!("gt-{test}-"))
        .tempdir_in("/tmp")
        .unwrap();
    let nats = NatsCluster::start(
        &nats_bin,
        &dir.path().join("nats"),
        3,
        NatsOptions::default(),
    )
    .await;
    let bucket = unique_bucket(test);
    let store = create_bucket(&endpoint, &bucket).await;
    let key_pem = groundtrail_common::trail::SigningKey::generate()
        .unwrap()
        .to_pem()
        .unwrap();
    Some(Setup {
        dir,
        nats,
        endpoint,
        bucket,
        store,
        key_pem,
        collectors: Vec::new(),
        started: chrono::Utc::now(),
    })
}

impl Setup {
    /// Starts collector `c<n>` with `shards` shards.
    async fn collector(&mut self, shards: u32, extra: &str) -> usize {
        let n = self.collectors.len();
        let name = format!("c{n}");
        let cdir = self.dir.path().join(&name);
        std::fs::create_dir_all(&cdir).unwrap();
        let key = cdir.join("signing-key.pem");
        std::fs::write(&key, &self.key_pem).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let spec = spec(self, &name, shards, extra);
        self.collectors.push(Collector::start(&cdir, spec).await);
        n
    }

    /// Waits until the running collectors together write all `shards` shards.
    async fn all_shards_owned(&self, shards: u64) {
        let start = Instant::now();
        loop {
            let mut total = 0;
            for c in &self.collectors {
                if c.has_process() {
                    total += c.metric("groundtrail_cluster_shards_owned").await;
                }
            }
            if total == shards {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "collectors own {total} of {shards} shards; logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Posts `records` to collector `i`, which must answer `200`.
    async fn post_ok(&self, i: usize, records: &[Value]) {
        let r = self.collectors[i]
            .client()
            .post_records(records)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }

    /// Two collectors and one shard (so "the owner" is one process), with a first batch
    /// delivered: (the owner, the other one, that batch).
    async fn one_shard_two_collectors(&mut self) -> (usize, usize, Vec<Value>) {
        self.collector(1, "").await;
        self.collector(1, "").await;
        self.all_shards_owned(1).await;
        let first = batch(30);
        self.post_ok(0, &first).await;
        self.store.wait_delivered(&event_ids(&first)).await;
        let owner = self.owner().await;
        (owner, 1 - owner, first)
    }

    /// The collector that writes the (only) shard.
    async fn owner(&self) -> usize {
        wait_for("a shard owner", || async {
            for (i, c) in self.collectors.iter().enumerate() {
                if c.has_process() && c.metric("groundtrail_cluster_shards_owned").await > 0 {
                    return Some(i);
                }
            }
            None
        })
        .await
    }

    fn logs(&self) -> String {
        self.collectors
            .iter()
            .enumerate()
            .map(|(i, c)| format!("--- c{i}:\n{}", tail(&c.log(), 40)))
            .collect()
    }

    /// Every id in the trail exactly once, nothing in it twice, and both validators pass for
    /// every region.
    async fn check(&self, ids: &[String], regions: &[&str]) {
        self.store.wait_delivered(ids).await;
        let counts = self.store.event_id_counts().await;
        for id in ids {
            assert_eq!(
                counts.get(id),
                Some(&1),
                "{id} in the trail once; logs:\n{}",
                self.logs()
            );
        }
        let doubled: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            doubled.is_empty(),
            "records in the trail twice: {doubled:?}"
        );
        // The digests that cover the last files.
        let c = self
            .collectors
            .iter()
            .find(|c| c.has_process())
            .expect("a running collector");
        let deadline = Instant::now() + Duration::from_secs(30);
        for region in regions {
            loop {
                let mut args = vec![
                    "--trail-arn".to_string(),
                    TRAIL_ARN.into(),
                    "--region".into(),
                    region.to_string(),
                    "--config".into(),
                    c.config_path.display().to_string(),
                ];
                args.extend(window(self.started));
                let v = groundtrail_validate(&args);
                let (logs_ok, logs_all) = v.logs();
                let files: usize = self
                    .store
                    .log_keys()
                    .await
                    .iter()
                    .filter(|k| k.contains(&format!("/CloudTrail/{region}/")))
                    .count();
                if v.code == 0 && logs_ok == logs_all && logs_all == files {
                    v.assert_valid(&format!("validate-logs, {region}"));
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{region}: {logs_ok}/{logs_all} of {files} log files validated; {}\nlogs:\n{}",
                    v.stdout,
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        if let Some(cli) = aws_cli("cluster") {
            let mut args = vec![
                "--trail-arn".to_string(),
                TRAIL_ARN.into(),
                "--verbose".into(),
            ];
            args.extend(window(self.started));
            let url = format!("http://{}", c.addr);
            aws_validate_at(&cli, &url, &self.endpoint, &args)
                .assert_valid("aws cloudtrail validate-logs, home region");
        }
    }
}

/// A log without its terminal colour codes.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Records across three regions (so across shards).
fn batch(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| match i % 3 {
            0 => record(ACCOUNT, REGION),
            k => record(ACCOUNT, OTHER_REGIONS[k - 1]),
        })
        .collect()
}

/// What an agent does with a batch: send it to the first collector that answers, resend it
/// (whole, the same records) until one answers `200`. Returns how many `503`s it saw.
async fn send_like_an_agent(collectors: &[std::net::SocketAddr], records: &[Value]) -> usize {
    let mut refused = 0;
    let start = Instant::now();
    loop {
        for addr in collectors {
            let client = IngestClient {
                addr: *addr,
                tls: None,
            };
            match tokio::time::timeout(Duration::from_secs(5), client.post_records(records)).await {
                Ok(Ok(r)) if r.status == 200 => return refused,
                Ok(Ok(r)) if r.status == 503 => refused += 1,
                Ok(Ok(r)) => panic!("a batch was refused for good: {} {}", r.status, r.body),
                _ => {}
            }
        }
        assert!(
            start.elapsed() < DEADLINE * 2,
            "no collector took the batch"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_before_answering_loses_and_doubles_nothing() {
    let test = "cluster_kill_before_answer";
    let Some(mut s) = setup(test, None).await else {
        return;
    };
    for _ in 0..3 {
        s.collector(4, "").await;
    }
    s.all_shards_owned(4).await;
    let addrs: Vec<_> = s.collectors.iter().map(|c| c.addr).collect();

    // An answer lost after the publish: the same batch sent again to another collector is
    // stored once (JetStream's duplicate window) and answered 200.
    let first = batch(60);
    let r = s.collectors[0].client().post_records(&first).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["committed"], 60);
    let again = s.collectors[1].client().post_records(&first).await.unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["duplicates"], 60, "{}", again.body);
    let mut ids = event_ids(&first);

    // kill -9 while batches are in flight to it: its unanswered batches are resent to the
    // others, and those it had published are not stored twice.
    let batches: Vec<Vec<Value>> = (0..30).map(|_| batch(40)).collect();
    for b in &batches {
        ids.extend(event_ids(b));
    }
    let sender = {
        let batches = batches.clone();
        let order = vec![addrs[0], addrs[1], addrs[2]];
        tokio::spawn(async move {
            for b in &batches {
                send_like_an_agent(&order, b).await;
            }
        })
    };
    wait_for("traffic on c0", || async {
        (s.collectors[0]
            .metric("groundtrail_cluster_records_published_total")
            .await
            > 200)
            .then_some(())
    })
    .await;
    s.collectors[0].kill9();
    sender.await.unwrap();
    s.check(&ids, &[REGION, OTHER_REGIONS[0], OTHER_REGIONS[1]])
        .await;
    // The event history answers from any collector, the unmodified AWS CLI asking.
    if let Some(cli) = aws_cli(test) {
        let id = first[0]["eventID"].as_str().unwrap().to_string();
        for c in &s.collectors[1..] {
            wait_for("LookupEvents on every collector", || async {
                let endpoint = format!("http://{}", c.addr);
                let attribute = format!("AttributeKey=EventId,AttributeValue={id}");
                let out = aws_run(
                    &cli,
                    &[
                        "cloudtrail",
                        "lookup-events",
                        "--region",
                        REGION,
                        "--endpoint-url",
                        &endpoint,
                        "--lookup-attributes",
                        &attribute,
                        "--output",
                        "json",
                    ],
                    "testing",
                    "testing",
                );
                let v: Value = serde_json::from_slice(&out.stdout).ok()?;
                (v["Events"][0]["EventId"] == id.as_str()).then_some(())
            })
            .await;
        }
        // GetTrailStatus too: every collector reports the trail's latest deliveries, whoever
        // made them.
        for c in &s.collectors[1..] {
            wait_for("GetTrailStatus on every collector", || async {
                let endpoint = format!("http://{}", c.addr);
                let out = aws_run(
                    &cli,
                    &[
                        "cloudtrail",
                        "get-trail-status",
                        "--name",
                        TRAIL,
                        "--region",
                        REGION,
                        "--endpoint-url",
                        &endpoint,
                        "--output",
                        "json",
                    ],
                    "testing",
                    "testing",
                );
                let v: Value = serde_json::from_slice(&out.stdout).ok()?;
                (v["IsLogging"] == true
                    && v["LatestDeliveryTime"].is_number()
                    && v["LatestDigestDeliveryTime"].is_number())
                .then_some(())
            })
            .await;
        }
    }
    // The killed collector comes back and takes its share again; a new, empty collector
    // joins while records flow (shards move, and its history starts from the stream's start:
    // nothing may be purged that it or a file still needs).
    s.collectors[0].spawn().await;
    s.all_shards_owned(4).await;
    let more: Vec<Vec<Value>> = (0..10).map(|_| batch(30)).collect();
    let sender = {
        let more = more.clone();
        tokio::spawn(async move {
            for b in &more {
                send_like_an_agent(&addrs, b).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    s.collector(4, "").await;
    sender.await.unwrap();
    for b in &more {
        ids.extend(event_ids(b));
    }
    s.all_shards_owned(4).await;
    s.check(&ids, &[REGION, OTHER_REGIONS[0], OTHER_REGIONS[1]])
        .await;
    // The newcomer indexes what the stream still holds, from before it joined on: everything
    // sent while it joined is in its history.
    let newest = s.collectors.last().unwrap();
    let joined: u64 = more.iter().map(|b| b.len() as u64).sum();
    wait_for("the newcomer's history", || async {
        (newest
            .metric("groundtrail_cluster_history_indexed_total")
            .await
            >= joined)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_owner_killed_mid_upload_is_taken_over_and_the_chain_goes_on() {
    let test = "cluster_owner_mid_upload";
    // A private S3, so that freezing it stalls this test's uploads only.
    let Some(moto) = moto_server(test) else {
        return;
    };
    // free_port: moto cannot bind port 0 and report it.
    let moto = Moto::start(&moto, free_port()).await;
    let Some(mut s) = setup(test, Some(moto.endpoint.clone())).await else {
        return;
    };
    let (owner, other, first) = s.one_shard_two_collectors().await;
    let commits = s.collectors[owner]
        .metric("groundtrail_cluster_state_commits_total")
        .await;

    // S3 hangs: the owner records the next file's intent and starts its upload, which stays in
    // progress. Then the owner dies.
    moto.stop();
    let second = batch(30);
    s.post_ok(other, &second).await;
    wait_for(
        "the owner to record the file before uploading it",
        || async {
            (s.collectors[owner]
                .metric("groundtrail_cluster_state_commits_total")
                .await
                > commits)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.collectors[owner].kill9();
    moto.cont();

    // The other collector takes the shard, rebuilds the recorded file byte for byte and
    // uploads it under the recorded key; the chain continues under the new owner.
    s.all_shards_owned(1).await;
    let took = plain(&s.collectors[other].log());
    assert!(
        took.contains("intent=true"),
        "the new owner found the recorded file:\n{}",
        tail(&took, 30)
    );
    let third = batch(30);
    s.post_ok(other, &third).await;
    let mut ids = event_ids(&first);
    ids.extend(event_ids(&second));
    ids.extend(event_ids(&third));
    s.collectors[owner].spawn().await;
    s.check(&ids, &[REGION, OTHER_REGIONS[0], OTHER_REGIONS[1]])
        .await;
    // Digests from both owners link into one chain per region (validated above); both wrote.
    let digests = s.store.digest_keys().await;
    assert!(digests.len() >= 3, "{digests:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_owner_resumed_after_a_takeover_writes_nothing() {
    let test = "cluster_frozen_owner";
    let Some(mut s) = setup(test, None).await else {
        return;
    };
    let (owner, other, first) = s.one_shard_two_collectors().await;
    let before: HashMap<&str, u64> = {
        let mut m = HashMap::new();
        for name in [
            "groundtrail_cluster_state_commits_total",
            "groundtrail_cluster_files_uploaded_total",
            "groundtrail_cluster_digests_uploaded_total",
        ] {
            m.insert(name, s.collectors[owner].metric(name).await);
        }
        m
    };

    // Frozen past its lease: the other collector takes the shard over and writes on.
    s.collectors[owner].sigstop();
    wait_for("the takeover", || async {
        (s.collectors[other]
            .metric("groundtrail_cluster_shards_owned")
            .await
            == 1)
            .then_some(())
    })
    .await;
    let second = batch(30);
    s.post_ok(other, &second).await;
    s.store.wait_delivered(&event_ids(&second)).await;

    // Resumed, the old owner finds its lease and its state taken, stops writing the shard,
    // and commits, uploads and signs nothing more.
    s.collectors[owner].sigcont();
    wait_for("the old owner to notice", || async {
        let c = &s.collectors[owner];
        let noticed = c.metric("groundtrail_cluster_leases_lost_total").await
            + c.metric("groundtrail_cluster_fenced_total").await;
        (noticed > 0 && c.metric("groundtrail_cluster_shards_owned").await == 0).then_some(())
    })
    .await;
    let third = batch(30);
    // Its ingest still works; the new owner files what it publishes.
    s.post_ok(owner, &third).await;
    let mut ids = event_ids(&first);
    ids.extend(event_ids(&second));
    ids.extend(event_ids(&third));
    s.check(&ids, &[REGION, OTHER_REGIONS[0], OTHER_REGIONS[1]])
        .await;
    for (name, was) in before {
        assert_eq!(
            s.collectors[owner].metric(name).await,
            was,
            "{name}: the resumed owner wrote; its log:\n{}",
            tail(&s.collectors[owner].log(), 30)
        );
    }
}

/// An agent that follows an auth log, shipping to every collector in turn.
async fn agent(s: &Setup, name: &str) -> (AgentProcess, std::path::PathBuf) {
    let adir = s.dir.path().join(name);
    let logs = adir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let passwd = logs.join("passwd");
    std::fs::write(&passwd, "alice:x:1000:1000::/home/alice:/bin/bash\n").unwrap();
    let auth = logs.join("auth.log");
    std::fs::write(&auth, "").unwrap();
    let urls: Vec<String> = s
        .collectors
        .iter()
        .map(|c| format!("http://{}", c.addr))
        .collect();
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let config = format!(
        "{head}[sources]\npasswd_path = {passwd}\ntimezone = \"UTC\"\n\n\
         [sources.auth_log]\npath = {auth}\n\n[sources.auditd]\nenabled = false\n\n\
         [sources.packages]\nenabled = false\n\n[sources.fim]\nenabled = false\n\n\
         [sources.journald]\nenabled = false\n",
        head = agent_config_head(&adir, "cluster-host", &urls),
        passwd = q(&passwd),
        auth = q(&auth),
    );
    (AgentProcess::start(&adir, &config).await, auth)
}

/// Appends `n` ssh logins (each a record) to an auth log; their distinct source ports.
fn logins(auth: &Path, from: usize, n: usize) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(auth).unwrap();
    let now = chrono::Utc::now().format("%b %e %H:%M:%S");
    for port in from..from + n {
        writeln!(
            f,
            "{now} cluster-host sshd[{pid}]: Accepted password for alice from 192.0.2.7 port {port} ssh2",
            pid = 1000 + port
        )
        .unwrap();
    }
    f.sync_all().unwrap();
}

/// The logins in the trail: source port → how often.
async fn logins_in_trail(store: &Store) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for (_, r) in store.records().await {
        if r["eventName"] == "ConsoleLogin"
            && let Some(port) = r["additionalEventData"]["SourcePort"].as_u64()
        {
            *out.entry(port.to_string()).or_default() += 1;
        }
    }
    out
}

async fn wait_logins(s: &Setup, ports: std::ops::Range<usize>, agent: &AgentProcess) {
    let start = Instant::now();
    loop {
        let seen = logins_in_trail(&s.store).await;
        if ports.clone().all(|p| seen.contains_key(&p.to_string())) {
            let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
            assert!(doubled.is_empty(), "logins twice: {doubled:?}");
            return;
        }
        assert!(
            start.elapsed() < DEADLINE * 2,
            "logins {ports:?} not all in the trail ({} seen); agent log:\n{}\n{}",
            seen.len(),
            tail(&agent.log(), 30),
            s.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_then_two_nats_servers_delays_the_trail_but_loses_nothing() {
    let test = "cluster_nats_loss";
    let Some(mut s) = setup(test, None).await else {
        return;
    };
    s.collector(4, "").await;
    s.collector(4, "").await;
    s.all_shards_owned(4).await;
    let (agent, auth) = agent(&s, "agent").await;
    logins(&auth, 40000, 20);
    wait_logins(&s, 40000..40020, &agent).await;

    // One of three down: a quorum is left, publishes go on.
    s.nats.kill(0);
    logins(&auth, 40020, 20);
    wait_logins(&s, 40020..40040, &agent).await;

    // Two of three down: no quorum. Ingest refuses (503), the agent keeps the records.
    s.nats.kill(1);
    logins(&auth, 40040, 20);
    wait_for("a refused publish", || async {
        let mut refused = 0;
        for c in &s.collectors {
            refused += c.metric("groundtrail_cluster_publish_failures_total").await;
        }
        (refused > 0).then_some(())
    })
    .await;
    assert!(
        !logins_in_trail(&s.store).await.contains_key("40050"),
        "nothing can be acknowledged without a quorum"
    );
    s.nats.restart(0).await;
    s.nats.restart(1).await;
    s.nats.wait_ready().await;
    wait_logins(&s, 40000..40060, &agent).await;
    let ids: Vec<String> = s
        .store
        .records()
        .await
        .into_iter()
        .filter_map(|(_, r)| r["eventID"].as_str().map(str::to_string))
        .collect();
    s.check(&ids, &[REGION]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_while_s3_is_down_refuses_then_everything_arrives() {
    let test = "cluster_full_stream";
    let Some(moto_bin) = moto_server(test) else {
        return;
    };
    // free_port: moto cannot bind port 0 and report it.
    let port = free_port();
    let moto = Moto::start(&moto_bin, port).await;
    let Some(mut s) = setup(test, Some(moto.endpoint.clone())).await else {
        return;
    };
    // 1 MiB of stream: a few hundred of the large records below.
    s.collector(2, "stream_max_bytes = 1048576").await;
    s.collector(2, "stream_max_bytes = 1048576").await;
    s.all_shards_owned(2).await;
    let addrs: Vec<_> = s.collectors.iter().map(|c| c.addr).collect();
    // S3 down: nothing can be delivered, so nothing can be purged.
    drop(moto);
    let big = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|_| {
                let mut r = record(ACCOUNT, REGION);
                // Random hex does not compress much: the stream fills with few records.
                let pad: String = (0..64)
                    .map(|_| uuid::Uuid::new_v4().simple().to_string())
                    .collect();
                r["requestParameters"] = serde_json::json!({ "pad": pad });
                r
            })
            .collect()
    };
    let mut refused_batch = None;
    let mut ids = Vec::new();
    for _ in 0..200 {
        let b = big(20);
        let r = s.collectors[0].client().post_records(&b).await.unwrap();
        match r.status {
            200 => ids.extend(event_ids(&b)),
            503 => {
                assert!(r.body.contains("full"), "{}", r.body);
                refused_batch = Some(b);
                break;
            }
            other => panic!("{other}: {}", r.body),
        }
    }
    let refused_batch = refused_batch.expect("the stream filled up and ingest refused");
    // S3 is back (an empty S3 at the same address; the bucket made again).
    let moto = Moto::start(&moto_bin, port).await;
    create_bucket(&moto.endpoint, &s.bucket).await;
    // The refused batch, resent as an agent resends, gets in once there is room again.
    let refusals = send_like_an_agent(&addrs, &refused_batch).await;
    ids.extend(event_ids(&refused_batch));
    let more = big(20);
    send_like_an_agent(&addrs, &more).await;
    ids.extend(event_ids(&more));
    assert!(
        ids.len() >= 40,
        "{} records acknowledged before the stream filled",
        ids.len()
    );
    let _ = refusals;
    s.check(&ids, &[REGION]).await;
    drop(moto);
}

/// A `[cluster] stream_max_bytes` the NATS servers cannot hold is a configuration error: the
/// collector exits at start-up, without the half minute of retries meant for a cluster still
/// forming, and says which two settings to bring together. One server (R1) and three (R3)
/// refuse with different JetStream errors; both are covered. No S3 is involved (a local
/// directory is the destination).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_larger_than_the_servers_store_is_refused_at_start_up() {
    let test = "cluster_stream_too_large";
    let Some(nats_bin) = nats_server(test) else {
        return;
    };
    for servers in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        let nats = NatsCluster::start(
            &nats_bin,
            &dir.path().join("nats"),
            servers,
            NatsOptions {
                max_file_store: 8 << 20,
                ..NatsOptions::default()
            },
        )
        .await;
        let mut spec = Spec::new(Dest::Local {
            path: dir.path().join("trail"),
            bucket: "trail".into(),
        });
        let urls: Vec<String> = nats
            .client_urls()
            .iter()
            .map(|u| format!("{u:?}"))
            .collect();
        spec.extra_toml = format!(
            "[detection]\nenabled = false\n\n[cluster]\nnats = [{}]\nnode_id = \"c0\"\n\
             shards = 2\nreplicas = {servers}\nstream_max_bytes = 67108864\n",
            urls.join(", ")
        );
        let started = Instant::now();
        let c0 = dir.path().join("c0");
        let err = match Collector::start_with(&Bins::for_tests(), &c0, spec).await {
            Ok(_) => panic!("R{servers}: a collector started with a 64 MiB stream on 8 MiB stores"),
            Err(e) => format!("{e:#}"),
        };
        let took = started.elapsed();
        assert!(err.contains("exited with"), "R{servers}: {err}");
        assert!(
            err.contains("GT_RECORDS"),
            "R{servers}: names the stream: {err}"
        );
        assert!(
            err.contains("lower [cluster] stream_max_bytes")
                && err.contains("max_file_store")
                && err.contains(&format!(
                    "67108864 bytes on every server that holds one of its {servers} replicas"
                )),
            "R{servers}: says what to change: {err}"
        );
        // The retries for a cluster still forming last 30 s; this is not one of those.
        assert!(
            took < Duration::from_secs(20),
            "R{servers}: took {took:?}: {err}"
        );
        eprintln!(
            "R{servers}: refused after {took:?}: {}",
            err.lines().last().unwrap_or_default()
        );
    }
}
