//! The NATS test kit (`groundtrail_tests::nats`) against the real `nats-server` 2.15.1, and the
//! JetStream facts cluster mode (issue 16) builds on, each pinned by a test that fails if the
//! server stops behaving so:
//! - an R3 stream keeps every acknowledged message, exactly once, when its leader is killed,
//!   and a re-published `Nats-Msg-Id` is acknowledged as a duplicate, not stored again;
//! - without a quorum a publish gets an error, never an ack; with the quorum back it succeeds;
//! - a stream with `max_bytes` and `discard: new` refuses publishes when full (503, 10077) and
//!   takes them again after a purge;
//! - a KV create fails on an existing key, and an update with a stale revision fails (10071):
//!   the compare-and-set that fences a stale shard owner.
//!
//! Timings are printed (`--nocapture`), never asserted: waits poll with deadlines.

use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, kv, stream};
use groundtrail_tests::nats::{NatsCluster, NatsOptions, connect, nats_server};
use serde_json::Value;

/// How long a test retries a publish across a leader election.
const ELECTION: Duration = Duration::from_secs(15);

/// A JetStream context on `cluster` whose requests time out after 2 s (the default 5 s only
/// slows the failure tests down).
async fn jetstream(urls: &[String]) -> jetstream::Context {
    let mut js = jetstream::new(connect(urls).await);
    js.set_timeout(Duration::from_secs(2));
    js
}

fn stream_config(name: &str, subject: &str, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

fn msg_id(id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(async_nats::header::NATS_MESSAGE_ID, id);
    h
}

/// Publishes with a message id and waits for the ack, once.
async fn publish_once(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
    js.publish_with_headers(subject.to_string(), msg_id(id), id.to_string().into())
        .await?
        .await
}

/// Publishes until acknowledged (the same id each time, so a retry of a publish that was
/// stored after all is dropped as a duplicate); panics after `within`.
async fn publish_retrying(
    js: &jetstream::Context,
    subject: &str,
    id: &str,
    within: Duration,
) -> jetstream::publish::PublishAck {
    let start = Instant::now();
    loop {
        match publish_once(js, subject, id).await {
            Ok(ack) => return ack,
            Err(e) if start.elapsed() > within => panic!("publish {id}: still failing: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Stream info, retried while the stream cannot answer (no meta leader or no stream leader
/// yet); panics after `within`.
async fn stream_info(js: &jetstream::Context, name: &str, within: Duration) -> stream::Info {
    let start = Instant::now();
    loop {
        let info = async {
            js.get_stream(name)
                .await?
                .get_info()
                .await
                .map_err(Into::into)
        };
        match info.await {
            Ok(info) => return info,
            Err::<_, async_nats::Error>(e) if start.elapsed() > within => {
                panic!("stream info {name}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The JetStream API error (code, err_code, description) behind a client error, if any.
fn server_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a jetstream::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(js) = err.downcast_ref::<jetstream::Error>() {
            return Some(js);
        }
        cur = err.source();
    }
    None
}

/// The messages node `i` holds of `stream`, from its own `/jsz` (its replica, not the leader's).
async fn replica_messages(cluster: &NatsCluster, i: usize, stream: &str) -> Option<u64> {
    let jsz = cluster.monitor_json(i, "/jsz?streams=true").await.ok()?;
    jsz["account_details"]
        .as_array()?
        .iter()
        .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
        .find(|s| s["name"] == stream)
        .and_then(|s: &Value| s["state"]["messages"].as_u64())
}

/// Waits until node `i`'s replica of `stream` holds `n` messages; panics after `within` with
/// what it holds.
async fn wait_replica(cluster: &NatsCluster, i: usize, stream: &str, n: u64, within: Duration) {
    let start = Instant::now();
    loop {
        let held = replica_messages(cluster, i, stream).await;
        if held == Some(n) {
            return;
        }
        assert!(
            start.elapsed() < within,
            "n{i}'s replica of {stream} holds {held:?} messages, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_survive_one_loss() {
    let Some(bin) = nats_server("three_nodes_replicate_and_survive_one_loss") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    let mut cluster = NatsCluster::start(&bin, dir.path(), 3, NatsOptions::default()).await;
    eprintln!("3 nodes ready in {:?}", t.elapsed());
    let js = jetstream(&cluster.client_urls()).await;
    js.create_stream(stream_config("KIT", "kit.>", 3))
        .await
        .expect("create the R3 stream");

    let mut pending = Vec::new();
    for i in 0..200 {
        let id = format!("m{i}");
        let ack = js
            .publish_with_headers("kit.a", msg_id(&id), id.into())
            .await
            .expect("send a publish");
        pending.push(ack);
    }
    let mut seqs = Vec::new();
    for ack in pending {
        let ack = ack.await.expect("a PubAck");
        assert!(
            !ack.duplicate,
            "a first publish acknowledged as a duplicate"
        );
        seqs.push(ack.sequence);
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<u64>>(),
        "one sequence per message"
    );

    let again = publish_once(&js, "kit.a", "m7")
        .await
        .expect("re-publish m7");
    assert!(
        again.duplicate,
        "a re-published id is a duplicate: {again:?}"
    );
    assert_eq!(again.sequence, 8, "the duplicate's ack names the original");
    for i in 0..3 {
        wait_replica(&cluster, i, "KIT", 200, ELECTION).await;
    }

    let info = stream_info(&js, "KIT", ELECTION).await;
    let placement = info.cluster.expect("an R3 stream reports its cluster");
    assert_eq!(placement.replicas.len(), 2, "a leader and two replicas");
    let leader_name = placement.leader.expect("a stream leader");
    let leader = cluster
        .index_of(&leader_name)
        .expect("the leader is one of ours");

    cluster.kill(leader);
    let killed = Instant::now();
    let mut first_ack = None;
    for i in 200..210 {
        let ack = publish_retrying(&js, "kit.a", &format!("m{i}"), ELECTION).await;
        assert!(!ack.duplicate, "m{i} is new");
        first_ack.get_or_insert(killed.elapsed());
    }
    eprintln!(
        "stream leader {leader_name} killed: first ack after {:?}, 10 acks after {:?}",
        first_ack.expect("10 acks"),
        killed.elapsed()
    );
    let info = stream_info(&js, "KIT", ELECTION).await;
    let new_leader = info.cluster.and_then(|c| c.leader);
    assert_ne!(
        new_leader.as_deref(),
        Some(leader_name.as_str()),
        "a new leader"
    );
    assert_eq!(info.state.messages, 210, "every acked message, once");
    assert_eq!(info.state.last_sequence, 210, "no message stored twice");

    let restarted = Instant::now();
    cluster.restart(leader).await;
    wait_replica(&cluster, leader, "KIT", 210, ELECTION).await;
    cluster.wait_ready().await;
    eprintln!(
        "{leader_name} back and caught up in {:?}",
        restarted.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_loss_refuses_publishes_until_it_returns() {
    let Some(bin) = nats_server("quorum_loss_refuses_publishes_until_it_returns") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = NatsCluster::start(&bin, dir.path(), 3, NatsOptions::default()).await;
    // Connected to n0 only, the survivor: the failure below is the lost quorum, not a client
    // left without a server.
    let js = jetstream(&cluster.client_urls()[..1]).await;
    js.create_stream(stream_config("QUORUM", "quorum.>", 3))
        .await
        .expect("create the R3 stream");
    publish_once(&js, "quorum.a", "q0")
        .await
        .expect("q0 with all three");

    cluster.kill(1);
    cluster.kill(2);
    let t = Instant::now();
    let refused = publish_once(&js, "quorum.a", "q1").await;
    let err = match refused {
        Ok(ack) => panic!("an ack without a quorum: {ack:?}"),
        Err(e) => e,
    };
    eprintln!(
        "without quorum: {:?} \"{err}\" after {:?}",
        err.kind(),
        t.elapsed()
    );

    let t = Instant::now();
    cluster.restart(1).await;
    cluster.restart(2).await;
    let ack = publish_retrying(&js, "quorum.a", "q1", ELECTION).await;
    eprintln!(
        "quorum back: q1 acked {:?} after the restarts began (duplicate: {}: the refused \
         publish was {}stored later)",
        t.elapsed(),
        ack.duplicate,
        if ack.duplicate { "" } else { "not " }
    );
    publish_once(&js, "quorum.a", "q2").await.expect("q2");
    let info = stream_info(&js, "QUORUM", ELECTION).await;
    assert_eq!(info.state.messages, 3, "q0, q1 and q2, each once");
    cluster.wait_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_refuses_with_discard_new() {
    let Some(bin) = nats_server("a_full_stream_refuses_with_discard_new") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = NatsCluster::start(&bin, dir.path(), 3, NatsOptions::default()).await;
    let js = jetstream(&cluster.client_urls()).await;
    let mut stream = js
        .create_stream(stream::Config {
            max_bytes: 8 * 1024,
            discard: stream::DiscardPolicy::New,
            ..stream_config("FULL", "full.>", 3)
        })
        .await
        .expect("create the small stream");

    let payload = bytes::Bytes::from(vec![b'x'; 1024]);
    let mut stored = 0u64;
    let err = loop {
        assert!(stored < 64, "64 KiB into an 8 KiB stream without a refusal");
        match js
            .publish("full.a", payload.clone())
            .await
            .expect("send")
            .await
        {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
    };
    let server = server_error(&err).unwrap_or_else(|| panic!("not a JetStream error: {err}"));
    eprintln!("full after {stored} messages: {:?} \"{err}\"", err.kind());
    assert!(stored > 0, "the stream took nothing");
    assert_eq!(server.error_code(), jetstream::ErrorCode(10077), "{err}");
    assert_eq!(server.code(), 503, "{err}");
    assert!(err.to_string().contains("maximum bytes exceeded"), "{err}");
    let info = stream.info().await.expect("stream info");
    assert_eq!(
        info.state.messages, stored,
        "nothing was dropped to make room"
    );
    assert!(info.state.bytes <= 8 * 1024, "{} bytes", info.state.bytes);

    stream.purge().await.expect("purge");
    js.publish("full.a", payload)
        .await
        .expect("send")
        .await
        .expect("a publish after the purge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_compare_and_set_rejects_a_stale_revision() {
    let Some(bin) = nats_server("kv_compare_and_set_rejects_a_stale_revision") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = NatsCluster::start(&bin, dir.path(), 3, NatsOptions::default()).await;
    let js = jetstream(&cluster.client_urls()).await;
    let kv = js
        .create_key_value(kv::Config {
            bucket: "leases".into(),
            history: 1,
            num_replicas: 3,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create the bucket");
    // A bucket just made may not answer at once: CI saw the first create fail with "no
    // responders" (from the read the client makes after a refused write) on a loaded machine.
    // So the first create is retried until it lands. A write whose answer was lost may still
    // have been stored, by this attempt or an earlier one; the key then holds our own "a" (no
    // one else writes to this new bucket), which counts as created.
    let start = Instant::now();
    let first = loop {
        match kv.create("shard-0", "a".into()).await {
            Ok(revision) => break revision,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match kv.entry("shard-0").await.expect("read the key back") {
                    Some(entry) if entry.value.as_ref() == b"a" => break entry.revision,
                    other => panic!("the first create found another value: {other:?}: {e}"),
                }
            }
            Err(e) if start.elapsed() > Duration::from_secs(30) => {
                panic!("create: still failing: {e:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let again = kv.create("shard-0", "b".into()).await;
    let err = again.expect_err("a second create of the same key");
    assert_eq!(err.kind(), kv::CreateErrorKind::AlreadyExists, "{err}");

    let second = kv
        .update("shard-0", "c".into(), first)
        .await
        .expect("an update with the current revision");
    assert!(second > first, "{second} after {first}");
    let err = kv
        .update("shard-0", "d".into(), first)
        .await
        .expect_err("an update with a stale revision");
    assert_eq!(err.kind(), kv::UpdateErrorKind::WrongLastRevision, "{err}");
    let server = server_error(&err).unwrap_or_else(|| panic!("not a JetStream error: {err}"));
    assert_eq!(server.error_code(), jetstream::ErrorCode(10071), "{err}");
    eprintln!("stale update: \"{err}\"");

    let entry = kv.entry("shard-0").await.expect("get").expect("the key");
    assert_eq!(entry.value.as_ref(), b"c", "the stale update wrote nothing");
    assert_eq!(entry.revision, second);
}

/// The kit's own promises on one node: plain JetStream without a cluster block, fsync before
/// ack, stop/cont, kill/restart keeping the store, and Drop killing a stopped node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_is_plain_jetstream_and_the_kit_owns_its_process() {
    let Some(bin) = nats_server("one_node_is_plain_jetstream_and_the_kit_owns_its_process") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = NatsCluster::start(&bin, dir.path(), 1, NatsOptions::default()).await;
    let jsz = cluster.monitor_json(0, "/jsz").await.expect("/jsz");
    assert!(jsz.get("meta_cluster").is_none(), "no cluster: {jsz}");
    assert_eq!(jsz["config"]["sync_always"], true, "{jsz}");
    let conf = std::fs::read_to_string(cluster.node_dir(0).join("nats.conf")).expect("conf");
    assert!(!conf.contains("cluster"), "{conf}");

    let js = jetstream(&cluster.client_urls()).await;
    js.create_stream(stream_config("ONE", "one.>", 1))
        .await
        .expect("create");
    publish_once(&js, "one.a", "o1").await.expect("publish");

    cluster.stop(0);
    assert!(
        cluster.is_running(0),
        "a stopped node still has its process"
    );
    assert!(
        cluster.monitor_json(0, "/healthz").await.is_err(),
        "a stopped node answers nothing"
    );
    cluster.cont(0);
    cluster
        .monitor_json(0, "/healthz")
        .await
        .expect("answers after SIGCONT");

    cluster.kill(0);
    assert!(!cluster.is_running(0));
    cluster.restart(0).await;
    assert!(cluster.is_running(0));
    let info = stream_info(&js, "ONE", ELECTION).await;
    assert_eq!(info.state.messages, 1, "the store survives a restart");

    let pid = cluster.pid(0).expect("a process");
    cluster.stop(0);
    drop(cluster);
    let pid = libc::pid_t::try_from(pid).expect("pid");
    // SAFETY: kill(2) with signal 0 only checks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(!alive, "Drop left the stopped node {pid} running");
}
