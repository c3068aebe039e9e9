//! Black-box tests of `groundtrail-collector`: the real binary, real HTTP, a real directory or a
//! real S3-compatible server, and the real validators (ours and the AWS CLI's).

use std::path::Path;

use chrono::Utc;
use groundtrail_tests::*;
use serde_json::Value;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("gt-test-")
        .tempdir()
        .expect("tempdir")
}

fn local_spec(trail: &Path) -> Spec {
    Spec::new(Dest::Local {
        path: trail.to_path_buf(),
        bucket: "test-trail".into(),
    })
}

/// Posts three batches (plain, zstd, plain) a digest interval apart, so the trail has several
/// digests that list log files; returns every record sent.
async fn fill(c: &Collector, store: &Store) -> Vec<Value> {
    let mut sent = Vec::new();
    for i in 0..3 {
        let batch = records(20);
        let reply = if i == 1 {
            c.client().post_records_zstd(&batch).await
        } else {
            c.client().post_records(&batch).await
        }
        .expect("post batch");
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.json()["committed"], 20, "{}", reply.body);
        store.wait_delivered(&event_ids(&batch)).await;
        sent.extend(batch);
    }
    // At least two digests after the last log file, so a digest in the middle of the chain
    // lists logs and has a successor.
    let n = store.digest_keys().await.len();
    wait_for("two more digests", || async {
        (store.digest_keys().await.len() >= n + 2).then_some(())
    })
    .await;
    sent
}

/// Every sent record is in the trail exactly once.
async fn assert_exactly_once(store: &Store, sent: &[Value]) {
    let counts = store.event_id_counts().await;
    for id in event_ids(sent) {
        assert_eq!(
            counts.get(&id).copied().unwrap_or(0),
            1,
            "eventID {id} should be in the trail exactly once"
        );
    }
}

/// A digest in the middle of the chain that lists at least one log file, and one of its logs.
async fn pick_targets(store: &Store) -> (String, String, String) {
    let digests = store.digests().await;
    assert!(digests.len() >= 3, "need at least three digests");
    // Newest first; skip the newest (deleting it is undetectable by design, spec §3.4).
    let (digest, doc) = digests[..digests.len() - 1]
        .iter()
        .rev()
        .find(|(_, d)| d["logFiles"].as_array().is_some_and(|l| !l.is_empty()))
        .expect("a digest with log files and a successor");
    let log = doc["logFiles"][0]["s3Object"]
        .as_str()
        .expect("s3Object")
        .to_string();
    // Another log file, in another digest where possible.
    let other_log = digests
        .iter()
        .flat_map(|(_, d)| d["logFiles"].as_array().cloned().unwrap_or_default())
        .map(|l| l["s3Object"].as_str().unwrap_or_default().to_string())
        .find(|k| *k != log)
        .expect("a second log file");
    (digest.clone(), log, other_log)
}

fn line(kind: &str, bucket: &str, key: &str, status: &str) -> String {
    format!("{kind} file\ts3://{bucket}/{key}\tINVALID: {status}")
}

/// The four kinds of damage, each applied to the trail in `store` by `apply`, and the one
/// status line each must produce.
enum Damage {
    EditLog,
    DeleteLog,
    EditDigest,
    DeleteDigest,
}

impl Damage {
    const ALL: [Damage; 4] = [
        Damage::EditLog,
        Damage::DeleteLog,
        Damage::EditDigest,
        Damage::DeleteDigest,
    ];

    /// Damages the trail; returns the expected INVALID line and what to restore.
    async fn apply(
        &self,
        store: &Store,
        bucket: &str,
        targets: &(String, String, String),
    ) -> (String, String, Vec<u8>, Metadata) {
        let (digest, log, other_log) = targets;
        let (key, expected) = match self {
            Damage::EditLog => (log, line("Log", bucket, log, "hash value doesn't match")),
            Damage::DeleteLog => (other_log, line("Log", bucket, other_log, "not found")),
            Damage::EditDigest => (
                digest,
                line("Digest", bucket, digest, "signature verification failed"),
            ),
            Damage::DeleteDigest => (digest, line("Digest", bucket, digest, "not found")),
        };
        let (body, md) = store.get(key).await.expect("target exists");
        match self {
            Damage::EditLog => {
                let mut doc: Value = serde_json::from_slice(&gunzip(&body)).unwrap();
                doc["Records"][0]["eventName"] = Value::String("DeleteTrail".into());
                store
                    .put(key, gzip(&serde_json::to_vec(&doc).unwrap()), &md)
                    .await;
            }
            Damage::EditDigest => {
                let mut doc: Value = serde_json::from_slice(&gunzip(&body)).unwrap();
                doc["logFiles"][0]["hashValue"] = Value::String("0".repeat(64));
                store
                    .put(key, gzip(&serde_json::to_vec(&doc).unwrap()), &md)
                    .await;
            }
            Damage::DeleteLog | Damage::DeleteDigest => store.delete(key).await,
        }
        (expected, key.clone(), body, md)
    }

    fn name(&self) -> &'static str {
        match self {
            Damage::EditLog => "edited log file",
            Damage::DeleteLog => "deleted log file",
            Damage::EditDigest => "edited digest",
            Damage::DeleteDigest => "deleted digest",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_trail_validates_and_each_damage_is_named() {
    let started = Utc::now();
    let tmp = tempdir();
    let trail = tmp.path().join("trail");
    let mut c = Collector::start(&tmp.path().join("collector"), local_spec(&trail)).await;
    let store = Store::Local(trail.clone());
    let sent = fill(&c, &store).await;
    let status = c.sigterm().await;
    assert!(
        status.success(),
        "SIGTERM exit: {status}; log:\n{}",
        c.log()
    );
    assert_exactly_once(&store, &sent).await;

    // Through the collector's own config, and through the directory plus a public key file.
    let mut by_config = vec![
        "--trail-arn".to_string(),
        TRAIL_ARN.into(),
        "--config".into(),
        c.config_path.display().to_string(),
        "--verbose".into(),
    ];
    by_config.extend(window(started));
    groundtrail_validate(&by_config).assert_valid("validate-logs --config");

    let pem = tmp.path().join("public.pem");
    std::fs::write(&pem, c.public_key().public_key_pem()).unwrap();
    let by_dir = |root: &Path| {
        let mut a = vec![
            "--trail-arn".to_string(),
            TRAIL_ARN.into(),
            "--local-dir".into(),
            root.display().to_string(),
            "--s3-bucket".into(),
            "test-trail".into(),
            "--public-key".into(),
            pem.display().to_string(),
        ];
        a.extend(window(started));
        a
    };
    let baseline = groundtrail_validate(&by_dir(&trail));
    baseline.assert_valid("validate-logs --local-dir");

    let targets = pick_targets(&store).await;
    for (i, damage) in Damage::ALL.iter().enumerate() {
        let copy = tmp.path().join(format!("damaged-{i}"));
        copy_dir(&trail, &copy);
        let damaged = Store::Local(copy.clone());
        let (expected, ..) = damage.apply(&damaged, "test-trail", &targets).await;
        let v = groundtrail_validate(&by_dir(&copy));
        assert_eq!(
            v.code,
            1,
            "{}: exit code\n{}{}",
            damage.name(),
            v.stdout,
            v.stderr
        );
        assert_eq!(
            v.invalid_lines(),
            vec![expected],
            "{}: exactly that file is reported\nstdout:\n{}",
            damage.name(),
            v.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_trail_validates_with_groundtrail_and_the_aws_cli_alike() {
    const TEST: &str = "s3_trail_validates_with_groundtrail_and_the_aws_cli_alike";
    let Some(endpoint) = s3_endpoint(TEST) else {
        return;
    };
    let aws = aws_cli(TEST);
    let started = Utc::now();
    let tmp = tempdir();
    let bucket = unique_bucket("s3-trail");
    let store = create_bucket(&endpoint, &bucket).await;
    let mut c = Collector::start(
        &tmp.path().join("collector"),
        Spec::new(Dest::S3 {
            bucket: bucket.clone(),
            endpoint: endpoint.clone(),
        }),
    )
    .await;
    let sent = fill(&c, &store).await;
    let status = c.sigterm().await;
    assert!(
        status.success(),
        "SIGTERM exit: {status}; log:\n{}",
        c.log()
    );
    assert_exactly_once(&store, &sent).await;

    let pem = tmp.path().join("public.pem");
    std::fs::write(&pem, c.public_key().public_key_pem()).unwrap();
    let mut ours_args = vec![
        "--trail-arn".to_string(),
        TRAIL_ARN.into(),
        "--s3-endpoint".into(),
        endpoint.clone(),
        "--force-path-style".into(),
        "--s3-bucket".into(),
        bucket.clone(),
        "--public-key".into(),
        pem.display().to_string(),
    ];
    ours_args.extend(window(started));
    // The AWS CLI learns the bucket from DescribeTrails (the stub) and its key from
    // ListPublicKeys; both validators get the same window.
    let mut aws_args = vec!["--trail-arn".to_string(), TRAIL_ARN.into()];
    aws_args.extend(ours_args[ours_args.len() - 4..].iter().cloned());
    let stub = CloudTrailStub::start(trail_description(&bucket), &c.public_key());

    let check = |what: &str, expected: Option<&str>| {
        let ours = groundtrail_validate(&ours_args);
        match expected {
            None => ours.assert_valid(&format!("groundtrail validate-logs: {what}")),
            Some(line) => {
                assert_eq!(ours.code, 1, "{what}: {}{}", ours.stdout, ours.stderr);
                assert_eq!(ours.invalid_lines(), vec![line.to_string()], "{what}");
            }
        }
        if let Some(aws) = &aws {
            let theirs = aws_validate(aws, &stub, &endpoint, &aws_args);
            if expected.is_none() {
                theirs.assert_valid(&format!("aws cloudtrail validate-logs: {what}"));
            }
            assert_eq!(
                (theirs.code, &theirs.stdout, &theirs.stderr),
                (ours.code, &ours.stdout, &ours.stderr),
                "{what}: the AWS CLI and groundtrail disagree"
            );
        }
    };
    check("intact trail", None);

    let targets = pick_targets(&store).await;
    for damage in Damage::ALL {
        let (expected, key, body, md) = damage.apply(&store, &bucket, &targets).await;
        check(damage.name(), Some(&expected));
        store.put(&key, body, &md).await;
    }
    check("restored trail", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_records_twice_are_written_once() {
    let started = Utc::now();
    let tmp = tempdir();
    let trail = tmp.path().join("trail");
    let mut c = Collector::start(&tmp.path().join("collector"), local_spec(&trail)).await;
    let batch = records(25);
    let first = c.client().post_records(&batch).await.unwrap();
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        (
            first.json()["committed"].clone(),
            first.json()["duplicates"].clone()
        ),
        (25.into(), 0.into())
    );
    // Again, compressed, and once more mixed with new records.
    let again = c.client().post_records_zstd(&batch).await.unwrap();
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        (
            again.json()["committed"].clone(),
            again.json()["duplicates"].clone()
        ),
        (0.into(), 25.into())
    );
    let mut mixed = batch[..5].to_vec();
    let fresh = records(5);
    mixed.extend(fresh.iter().cloned());
    let third = c.client().post_records(&mixed).await.unwrap();
    assert_eq!(
        (
            third.json()["committed"].clone(),
            third.json()["duplicates"].clone()
        ),
        (5.into(), 5.into()),
        "{}",
        third.body
    );
    let status = c.sigterm().await;
    assert!(status.success(), "{}", c.log());
    let store = Store::Local(trail.clone());
    let mut all = batch.clone();
    all.extend(fresh);
    assert_exactly_once(&store, &all).await;
    assert_eq!(store.records().await.len(), 30);

    let mut args = vec![
        "--trail-arn".to_string(),
        TRAIL_ARN.into(),
        "--config".into(),
        c.config_path.display().to_string(),
    ];
    args.extend(window(started));
    groundtrail_validate(&args).assert_valid("after duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_commit_loses_nothing_and_duplicates_nothing() {
    let started = Utc::now();
    let tmp = tempdir();
    let trail = tmp.path().join("trail");
    let mut spec = local_spec(&trail);
    // Long enough that the kill lands before the first log file closes.
    spec.log_file_interval = "2s".into();
    spec.digest_interval = "4s".into();
    let mut c = Collector::start(&tmp.path().join("collector"), spec).await;
    let store = Store::Local(trail.clone());
    let mut committed = Vec::new();
    let mut undelivered_at_kill = 0;
    for round in 0..3 {
        let batch = records(40);
        let reply = c.client().post_records(&batch).await.unwrap();
        assert_eq!(reply.status, 200, "round {round}: {}", reply.body);
        c.kill9();
        // Usually the open log file had not closed yet: then only the journal holds them.
        let counts = store.event_id_counts().await;
        if event_ids(&batch).iter().all(|id| !counts.contains_key(id)) {
            undelivered_at_kill += 1;
        }
        committed.extend(batch.iter().cloned());
        c.spawn().await;
        // An agent that lost the 200 in the crash sends the batch again: all duplicates.
        let resend = c.client().post_records_zstd(&batch).await.unwrap();
        assert_eq!(resend.status, 200, "{}", resend.body);
        assert_eq!(resend.json()["duplicates"], 40, "{}", resend.body);
    }
    assert!(
        undelivered_at_kill > 0,
        "every kill landed after delivery; the test proved nothing about the journal"
    );
    store.wait_delivered(&event_ids(&committed)).await;
    let status = c.sigterm().await;
    assert!(status.success(), "{}", c.log());
    assert_exactly_once(&store, &committed).await;
    assert_eq!(store.records().await.len(), committed.len());

    let mut args = vec![
        "--trail-arn".to_string(),
        TRAIL_ARN.into(),
        "--config".into(),
        c.config_path.display().to_string(),
    ];
    args.extend(window(started));
    let v = groundtrail_validate(&args);
    v.assert_valid("chain across kill -9 restarts");
}

/// Builds a record, changes it with `f`, and returns it as a JSON line.
fn bad_line(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
    let mut r = record(ACCOUNT, REGION);
    f(r.as_object_mut().unwrap());
    r.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_whole_and_nothing_is_written() {
    let tmp = tempdir();
    let trail = tmp.path().join("trail");
    let mut spec = local_spec(&trail);
    spec.limits = vec![
        "max_body_bytes = 65536".into(),
        "max_decompressed_bytes = 262144".into(),
        "max_batch_records = 10".into(),
        "max_record_bytes = 8192".into(),
    ];
    spec.agents = vec![("web-1".into(), vec![ACCOUNT.into()], vec![REGION.into()])];
    let mut c = Collector::start(&tmp.path().join("collector"), spec).await;
    let client = c.client();
    let agent = [("x-groundtrail-agent", "web-1")];
    let mut refused_ids = Vec::new();

    // Each batch: one good record first, then the bad line.
    let cases: Vec<(&str, String, u16, &[&str])> = vec![
        (
            "not JSON",
            "{\"eventVersion\": \"1.11\",".into(),
            400,
            &["InvalidData"],
        ),
        (
            "required member missing",
            bad_line(|r| {
                r.remove("eventTime");
            }),
            400,
            &["FieldNotFound"],
        ),
        (
            "wrong type",
            bad_line(|r| {
                r.insert("eventTime".into(), Value::from(12));
            }),
            400,
            &["InvalidData"],
        ),
        (
            "oversize record",
            bad_line(|r| {
                r.insert(
                    "requestParameters".into(),
                    serde_json::json!({ "blob": "x".repeat(9000) }),
                );
            }),
            413,
            &["RecordTooLarge"],
        ),
        (
            "account not allowed",
            bad_line(|r| {
                r.insert("recipientAccountId".into(), Value::from("999999999999"));
            }),
            403,
            &["AccessDeniedException"],
        ),
        (
            "region not allowed",
            bad_line(|r| {
                r.insert("awsRegion".into(), Value::from("eu-west-1"));
            }),
            403,
            &["AccessDeniedException"],
        ),
    ];
    for (what, bad, status, codes) in cases {
        let good = record(ACCOUNT, REGION);
        refused_ids.push(good["eventID"].as_str().unwrap().to_string());
        let body = format!("{good}\n{bad}\n").into_bytes();
        let reply = client.post(body, false, &agent).await.unwrap();
        assert_eq!(reply.status, status, "{what}: {}", reply.body);
        let code = reply.code();
        assert!(
            codes.contains(&code.as_str()),
            "{what}: code {code}: {}",
            reply.body
        );
        assert_eq!(
            reply.json()["line"],
            2,
            "{what}: names line 2: {}",
            reply.body
        );
    }

    // Oversize body, zstd bomb, too many records.
    let good = records(10);
    refused_ids.extend(event_ids(&good));
    let mut big = ndjson(&good);
    big.extend(std::iter::repeat_n(b' ', 70_000));
    let reply = client.post(big, false, &agent).await.unwrap();
    assert_eq!(reply.status, 413, "oversize body: {}", reply.body);
    assert_eq!(reply.code(), "RequestEntityTooLarge", "{}", reply.body);

    let mut bomb_plain = ndjson(&good[..1]);
    bomb_plain.extend(std::iter::repeat_n(b' ', 50 * 1024 * 1024));
    let bomb = zstd(&bomb_plain);
    assert!(bomb.len() < 65536, "the bomb itself fits the body limit");
    let reply = client.post(bomb, true, &agent).await.unwrap();
    assert_eq!(reply.status, 413, "zstd bomb: {}", reply.body);
    assert_eq!(reply.code(), "RequestEntityTooLarge", "{}", reply.body);

    let eleven = records(11);
    refused_ids.extend(event_ids(&eleven));
    let reply = client.post(ndjson(&eleven), false, &agent).await.unwrap();
    assert_eq!(reply.status, 413, "too many records: {}", reply.body);
    assert_eq!(reply.code(), "LimitExceededException", "{}", reply.body);
    assert_eq!(reply.json()["line"], 11, "{}", reply.body);

    // An agent that is not listed at all.
    let stranger = records(1);
    refused_ids.extend(event_ids(&stranger));
    let reply = client
        .post(
            ndjson(&stranger),
            false,
            &[("x-groundtrail-agent", "intruder")],
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 403, "unlisted agent: {}", reply.body);
    assert_eq!(reply.code(), "AccessDeniedException", "{}", reply.body);

    // Still healthy: a good batch goes through.
    let fine = records(3);
    let reply = client.post(ndjson(&fine), false, &agent).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(c.is_running(), "the collector survived bad input");
    let status = c.sigterm().await;
    assert!(status.success(), "{}", c.log());

    let store = Store::Local(trail);
    let counts = store.event_id_counts().await;
    for id in &refused_ids {
        assert!(
            !counts.contains_key(id),
            "record {id} of a refused batch was written"
        );
    }
    assert_exactly_once(&store, &fine).await;
    assert_eq!(counts.len(), 3, "only the good batch is in the trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_then_recovery_delivers_everything() {
    const TEST: &str = "s3_outage_then_recovery_delivers_everything";
    let Some(moto) = moto_server(TEST) else {
        return;
    };
    let started = Utc::now();
    let tmp = tempdir();
    // free_port: moto (which cannot report a port) starts there only later.
    // Nothing listens on this port yet.
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let bucket = unique_bucket("outage");
    let mut c = Collector::start(
        &tmp.path().join("collector"),
        Spec::new(Dest::S3 {
            bucket: bucket.clone(),
            endpoint: endpoint.clone(),
        }),
    )
    .await;
    let mut sent = Vec::new();
    for _ in 0..3 {
        let batch = records(10);
        let reply = c.client().post_records(&batch).await.unwrap();
        assert_eq!(
            reply.status, 200,
            "ingest holds while S3 is down: {}",
            reply.body
        );
        sent.extend(batch);
        tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    }
    assert!(
        c.is_running(),
        "collector survives the outage; log:\n{}",
        c.log()
    );

    // S3 comes up (empty), the bucket is created: everything must arrive.
    let _moto = Moto::start(&moto, port).await;
    let store = create_bucket(&endpoint, &bucket).await;
    store.wait_delivered(&event_ids(&sent)).await;
    let status = c.sigterm().await;
    assert!(status.success(), "{}", c.log());
    assert_exactly_once(&store, &sent).await;

    let pem = tmp.path().join("public.pem");
    std::fs::write(&pem, c.public_key().public_key_pem()).unwrap();
    let mut args = vec![
        "--trail-arn".to_string(),
        TRAIL_ARN.into(),
        "--s3-endpoint".into(),
        endpoint,
        "--force-path-style".into(),
        "--s3-bucket".into(),
        bucket,
        "--public-key".into(),
        pem.display().to_string(),
    ];
    args.extend(window(started));
    groundtrail_validate(&args).assert_valid("after the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_holds_delivery_until_it_exists() {
    const TEST: &str = "missing_bucket_holds_delivery_until_it_exists";
    let Some(endpoint) = s3_endpoint(TEST) else {
        return;
    };
    let tmp = tempdir();
    let bucket = unique_bucket("late-bucket");
    let mut c = Collector::start(
        &tmp.path().join("collector"),
        Spec::new(Dest::S3 {
            bucket: bucket.clone(),
            endpoint: endpoint.clone(),
        }),
    )
    .await;
    let batch = records(15);
    let reply = c.client().post_records(&batch).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Let a few delivery attempts fail against the missing bucket.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(c.is_running(), "{}", c.log());
    let store = create_bucket(&endpoint, &bucket).await;
    store.wait_delivered(&event_ids(&batch)).await;
    let status = c.sigterm().await;
    assert!(status.success(), "{}", c.log());
    assert_exactly_once(&store, &batch).await;
}

/// `groundtrail-collector pki <args>`, which must succeed.
fn pki(args: &[&str], dir: &Path) {
    let out = std::process::Command::new(bin("groundtrail-collector"))
        .arg("pki")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run pki");
    assert!(
        out.status.success(),
        "pki {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_names_the_agent_and_refuses_strangers() {
    let started = Utc::now();
    let tmp = tempdir();
    let ca = tmp.path().join("pki");
    pki(&["init"], &ca);
    pki(&["agent", "web-1"], &ca);
    pki(&["agent", "web-2"], &ca);
    // The same agent name from another CA.
    let rogue = tmp.path().join("rogue-pki");
    pki(&["init"], &rogue);
    pki(&["agent", "web-1"], &rogue);

    let trail = tmp.path().join("trail");
    let mut spec = local_spec(&trail);
    spec.tls = Some(ServerTls {
        cert: ca.join("server.pem"),
        key: ca.join("server.key"),
        client_ca: Some(ca.join("ca.pem")),
    });
    spec.agents = vec![
        ("web-1".into(), vec![ACCOUNT.into()], vec![]),
        ("web-2".into(), vec!["210987654321".into()], vec![]),
    ];
    let mut c = Collector::start(&tmp.path().join("collector"), spec).await;
    let client = |dir: &Path, name: Option<&str>| {
        let cert = name.map(|n| {
            (
                dir.join("agents").join(format!("{n}.pem")),
                dir.join("agents").join(format!("{n}.key")),
            )
        });
        IngestClient::tls(
            c.addr,
            &ca.join("ca.pem"),
            cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            "localhost",
        )
    };

    let good = records(7);
    let reply = client(&ca, Some("web-1"))
        .post_records_zstd(&good)
        .await
        .expect("web-1 over mTLS");
    assert_eq!(reply.status, 200, "{}", reply.body);

    // The certificate names the agent: web-2 may not write this account, whatever it claims.
    let refused = records(3);
    let reply = client(&ca, Some("web-2"))
        .post(ndjson(&refused), false, &[("x-groundtrail-agent", "web-1")])
        .await
        .expect("web-2 over mTLS");
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(reply.code(), "AccessDeniedException", "{}", reply.body);

    // A certificate from another CA, and no certificate: no request gets through.
    let rogue_reply = client(&rogue, Some("web-1")).post_records(&refused).await;
    assert!(
        rogue_reply.is_err(),
        "a client certificate from another CA was accepted: {rogue_reply:?}"
    );
    let anonymous = client(&ca, None).post_records(&refused).await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate was accepted: {anonymous:?}"
    );
    // Plain HTTP on the TLS port gets nowhere either.
    let plain = c.client().post_records(&refused).await;
    assert!(
        !plain.as_ref().is_ok_and(|r| r.status == 200),
        "plain HTTP accepted: {plain:?}"
    );

    assert!(c.is_running());
    let status = c.sigterm().await;
    assert!(status.success(), "{}", c.log());
    let store = Store::Local(trail);
    assert_exactly_once(&store, &good).await;
    let counts = store.event_id_counts().await;
    for id in event_ids(&refused) {
        assert!(!counts.contains_key(&id), "refused record {id} was written");
    }
    let mut args = vec![
        "--trail-arn".to_string(),
        TRAIL_ARN.into(),
        "--config".into(),
        c.config_path.display().to_string(),
    ];
    args.extend(window(started));
    groundtrail_validate(&args).assert_valid("mTLS trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organization_trail_with_prefix_validates_per_region_with_both_validators() {
    const TEST: &str = "organization_trail_with_prefix_validates_per_region_with_both_validators";
    const ORG: &str = "o-abcdefghij";
    const PREFIX: &str = "audit/prod";
    const OTHER_REGION: &str = "eu-west-1";
    let Some(endpoint) = s3_endpoint(TEST) else {
        return;
    };
    let aws = aws_cli(TEST);
    let started = Utc::now();
    let tmp = tempdir();
    let bucket = unique_bucket("org-trail");
    let store = create_bucket(&endpoint, &bucket).await;
    let mut spec = Spec::new(Dest::S3 {
        bucket: bucket.clone(),
        endpoint: endpoint.clone(),
    });
    spec.trail = vec![
        format!("s3_key_prefix = \"{PREFIX}\""),
        format!("organization_id = \"{ORG}\""),
    ];
    let mut c = Collector::start(&tmp.path().join("collector"), spec).await;
    let mut sent = records(10);
    sent.extend((0..10).map(|_| record(ACCOUNT, OTHER_REGION)));
    let reply = c.client().post_records(&sent).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    store.wait_delivered(&event_ids(&sent)).await;
    let status = c.sigterm().await;
    assert!(status.success(), "{}", c.log());
    assert_exactly_once(&store, &sent).await;
    for key in store.keys().await {
        assert!(
            key.starts_with(&format!("{PREFIX}/AWSLogs/{ORG}/{ACCOUNT}/")),
            "{key} is outside the organization layout"
        );
    }

    let stub = CloudTrailStub::start(org_trail_description(&bucket, PREFIX, ORG), &c.public_key());
    for region in [REGION, OTHER_REGION] {
        // No --s3-bucket: bucket, prefix and organization come from the trail (the config for
        // groundtrail, DescribeTrails + DescribeOrganization for the AWS CLI).
        let mut args = vec![
            "--trail-arn".to_string(),
            TRAIL_ARN.into(),
            "--account-id".into(),
            ACCOUNT.into(),
            "--region".into(),
            region.into(),
            "--verbose".into(),
        ];
        args.extend(window(started));
        let mut ours_args = args.clone();
        ours_args.extend(["--config".to_string(), c.config_path.display().to_string()]);
        let ours = groundtrail_validate(&ours_args);
        ours.assert_valid(&format!("groundtrail, region {region}"));
        assert!(
            ours.stdout
                .contains(&format!("/CloudTrail-Digest/{region}/")),
            "{}",
            ours.stdout
        );
        if let Some(aws) = &aws {
            let theirs = aws_validate(aws, &stub, &endpoint, &args);
            assert_eq!(
                (theirs.code, &theirs.stdout, &theirs.stderr),
                (ours.code, &ours.stdout, &ours.stderr),
                "region {region}: the AWS CLI and groundtrail disagree"
            );
        }
    }

    // An organization trail needs the member account, as with the AWS CLI.
    let mut args = vec![
        "--trail-arn".to_string(),
        TRAIL_ARN.into(),
        "--config".into(),
        c.config_path.display().to_string(),
    ];
    args.extend(window(started));
    let v = groundtrail_validate(&args);
    assert_eq!(v.code, 255, "{}{}", v.stdout, v.stderr);
    assert!(
        v.stderr
            .contains("Missing required parameter for organization trail: '--account-id'"),
        "{}",
        v.stderr
    );
}
