//! `groundtrail-collector validate-logs` against the unmodified `aws cloudtrail validate-logs`:
//! trails written directly into S3 (moto), damaged in every way the AWS CLI distinguishes, and
//! both validators must print the same bytes and exit with the same code.

use groundtrail_tests::*;
use serde_json::Value;

const START: &str = "2026-11-01T00:00:00Z";
const END: &str = "2026-11-01T06:00:00Z";

fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
    groundtrail_common::time::parse_json_time(s).expect("time")
}

/// A fresh bucket with a trail of three chained digests: two logs, none, one.
async fn standard(endpoint: &str, name: &str, prefix: &str) -> SyntheticTrail {
    let bucket = unique_bucket(name);
    let store = create_bucket(endpoint, &bucket).await;
    let mut s = SyntheticTrail::new(store, &bucket, prefix);
    let a = s.log(t("2026-11-01T00:10:00Z"), 3).await;
    let b = s.log(t("2026-11-01T00:40:00Z"), 2).await;
    s.digest(
        "2026-11-01T00:00:00Z",
        "2026-11-01T01:00:00Z",
        vec![a, b],
        true,
    )
    .await;
    s.digest(
        "2026-11-01T01:00:00Z",
        "2026-11-01T02:00:00Z",
        vec![],
        false,
    )
    .await;
    let c = s.log(t("2026-11-01T02:30:00Z"), 1).await;
    s.digest(
        "2026-11-01T02:00:00Z",
        "2026-11-01T03:00:00Z",
        vec![c],
        false,
    )
    .await;
    s
}

struct Env {
    endpoint: String,
    aws: std::path::PathBuf,
    dir: tempfile::TempDir,
}

impl Env {
    /// Runs both validators over `trail` (trusting `key`) with `extra` arguments and checks
    /// that they agree; returns ours.
    fn compare(
        &self,
        what: &str,
        trail: &SyntheticTrail,
        key: &SigningKey,
        start: &str,
    ) -> Validation {
        let mut common = vec![
            "--trail-arn".to_string(),
            TRAIL_ARN.into(),
            "--s3-bucket".into(),
            trail.bucket.clone(),
            "--start-time".into(),
            start.into(),
            "--end-time".into(),
            END.into(),
            "--verbose".into(),
        ];
        if !trail.layout.prefix.is_empty() {
            common.extend(["--s3-prefix".to_string(), trail.layout.prefix.clone()]);
        }
        let pem = self.dir.path().join(format!("{}.pem", key.fingerprint()));
        std::fs::write(&pem, key.public_key_pem()).expect("pem");
        let mut ours_args = common.clone();
        ours_args.extend([
            "--s3-endpoint".to_string(),
            self.endpoint.clone(),
            "--force-path-style".into(),
            "--public-key".into(),
            pem.display().to_string(),
        ]);
        let ours = groundtrail_validate(&ours_args);
        let stub = CloudTrailStub::start(trail_description(&trail.bucket), key);
        let theirs = aws_validate(&self.aws, &stub, &self.endpoint, &common);
        assert_eq!(
            (theirs.code, theirs.stdout.as_str(), theirs.stderr.as_str()),
            (ours.code, ours.stdout.as_str(), ours.stderr.as_str()),
            "{what}: the AWS CLI (left) and groundtrail (right) disagree"
        );
        ours
    }
}

fn env(test: &str) -> Option<Env> {
    let endpoint = s3_endpoint(test)?;
    let aws = aws_cli(test)?;
    Some(Env {
        endpoint,
        aws,
        dir: tempfile::tempdir().expect("tempdir"),
    })
}

fn invalid(kind: &str, bucket: &str, key: &str, status: &str) -> String {
    format!("{kind} file\ts3://{bucket}/{key}\tINVALID: {status}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_agree_on_intact_trails_windows_gaps_and_prefixes() {
    let Some(env) = env("validators_agree_on_intact_trails_windows_gaps_and_prefixes") else {
        return;
    };
    let s = standard(&env.endpoint, "agree-intact", "").await;
    let v = env.compare("intact", &s, &s.key, START);
    v.assert_valid("intact");
    assert_eq!((v.digests(), v.logs()), ((3, 3), (3, 3)));

    // A window that starts at the newest digest: the walk still follows one link back.
    let v = env.compare("window", &s, &s.key, "2026-11-01T02:30:00Z");
    assert_eq!(v.code, 0);

    let p = standard(&env.endpoint, "agree-prefix", "audit/prod").await;
    env.compare("prefix", &p, &p.key, START)
        .assert_valid("prefix");

    // Two chains: logging stopped for an hour in between.
    let bucket = unique_bucket("agree-gap");
    let store = create_bucket(&env.endpoint, &bucket).await;
    let mut g = SyntheticTrail::new(store, &bucket, "");
    let l = g.log(t("2026-11-01T00:30:00Z"), 2).await;
    g.digest(
        "2026-11-01T00:00:00Z",
        "2026-11-01T01:00:00Z",
        vec![l],
        true,
    )
    .await;
    g.digest(
        "2026-11-01T01:00:00Z",
        "2026-11-01T02:00:00Z",
        vec![],
        false,
    )
    .await;
    g.digest("2026-11-01T03:00:00Z", "2026-11-01T04:00:00Z", vec![], true)
        .await;
    let v = env.compare("gap", &g, &g.key, START);
    assert_eq!(v.code, 0);
    assert!(
        v.stderr
            .contains("No log files were delivered by CloudTrail between 2026-11-01T02:00:00Z and 2026-11-01T03:00:00Z"),
        "{}",
        v.stderr
    );

    // Nothing there.
    let bucket = unique_bucket("agree-empty");
    let store = create_bucket(&env.endpoint, &bucket).await;
    let e = SyntheticTrail::new(store, &bucket, "");
    let v = env.compare("empty", &e, &s.key, START);
    assert!(v.stdout.ends_with("No digests found\n"), "{}", v.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_agree_on_damaged_logs() {
    let Some(env) = env("validators_agree_on_damaged_logs") else {
        return;
    };
    let s = standard(&env.endpoint, "agree-logs", "").await;
    let b = s.bucket.clone();
    // Edited, deleted, a second gzip member, not gzip.
    let (body, md) = s.store.get(&s.logs[0]).await.unwrap();
    let mut doc: Value = serde_json::from_slice(&gunzip(&body)).unwrap();
    doc["Records"][0]["eventName"] = "StopLogging".into();
    s.store
        .put(&s.logs[0], gzip(&serde_json::to_vec(&doc).unwrap()), &md)
        .await;
    s.store.delete(&s.logs[1]).await;
    let (body, md) = s.store.get(&s.logs[2]).await.unwrap();
    let mut two = body.clone();
    two.extend(gzip(b"{}"));
    s.store.put(&s.logs[2], two, &md).await;
    let v = env.compare("damaged logs", &s, &s.key, START);
    assert_eq!(v.code, 1);
    assert_eq!(
        v.invalid_lines(),
        vec![
            invalid(
                "Log",
                &b,
                &s.logs[2],
                "unexpected data after end of compressed stream"
            ),
            invalid("Log", &b, &s.logs[0], "hash value doesn't match"),
            invalid("Log", &b, &s.logs[1], "not found"),
        ]
    );
    s.store.put(&s.logs[2], b"not gzip".to_vec(), &md).await;
    let v = env.compare("log not gzip", &s, &s.key, START);
    assert!(
        v.invalid_lines()
            .contains(&invalid("Log", &b, &s.logs[2], "invalid format")),
        "{}",
        v.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_agree_on_damaged_digests() {
    let Some(env) = env("validators_agree_on_damaged_digests") else {
        return;
    };
    // Each damage on its own trail; the expected status of the damaged digest.
    type Damage = fn(&mut Vec<u8>, &mut Metadata);
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "no signature metadata",
            |_, md| {
                md.clear();
            },
            "signature verification failed",
        ),
        (
            "content edited",
            |body, _| {
                let mut doc: Value = serde_json::from_slice(&gunzip(body)).unwrap();
                doc["awsAccountId"] = "000000000000".into();
                *body = gzip(&serde_json::to_vec(&doc).unwrap());
            },
            "signature verification failed",
        ),
        (
            "not gzip",
            |body, _| *body = b"{}".to_vec(),
            "invalid format",
        ),
        (
            "required member missing",
            |body, _| {
                let mut doc: Value = serde_json::from_slice(&gunzip(body)).unwrap();
                doc.as_object_mut().unwrap().remove("digestStartTime");
                *body = gzip(&serde_json::to_vec(&doc).unwrap());
            },
            "invalid format",
        ),
        (
            "odd-length signature",
            |_, md| {
                md.insert("signature".into(), "abc".into());
            },
            "Odd-length string",
        ),
        (
            "non-hex signature",
            |_, md| {
                md.insert("signature".into(), "zz".repeat(256));
            },
            "Non-hexadecimal digit found",
        ),
        (
            "JSON array",
            |body, _| *body = gzip(b"[1,2]"),
            "list indices must be integers or slices, not str",
        ),
    ];
    for (what, damage, status) in cases {
        let s = standard(&env.endpoint, "agree-digest", "").await;
        let target = s.digests[1].clone();
        let (mut body, mut md) = s.store.get(&target).await.unwrap();
        damage(&mut body, &mut md);
        s.store.put(&target, body, &md).await;
        let v = env.compare(what, &s, &s.key, START);
        assert_eq!(v.code, 1, "{what}");
        assert_eq!(
            v.invalid_lines(),
            vec![invalid("Digest", &s.bucket, &target, status)],
            "{what}"
        );
    }

    // Deleted (middle) digest, moved digest, and a key nobody published.
    let s = standard(&env.endpoint, "agree-deleted", "").await;
    s.store.delete(&s.digests[1]).await;
    let v = env.compare("deleted digest", &s, &s.key, START);
    assert_eq!(
        v.invalid_lines(),
        vec![invalid("Digest", &s.bucket, &s.digests[1], "not found")]
    );

    let s = standard(&env.endpoint, "agree-moved", "").await;
    let (body, md) = s.store.get(&s.digests[2]).await.unwrap();
    let moved = s.digests[2].replace("T030000Z", "T030500Z");
    s.store.put(&moved, body, &md).await;
    s.store.delete(&s.digests[2]).await;
    let v = env.compare("moved digest", &s, &s.key, START);
    assert_eq!(
        v.invalid_lines(),
        vec![invalid(
            "Digest",
            &s.bucket,
            &moved,
            "has been moved from its original location"
        )]
    );

    let s = standard(&env.endpoint, "agree-unknown-key", "").await;
    let stranger = SigningKey::generate().unwrap();
    let v = env.compare("unknown key", &s, &stranger, START);
    assert_eq!(v.code, 1);
    assert_eq!(v.digests(), (0, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validators_agree_on_backfill_digests() {
    let Some(env) = env("validators_agree_on_backfill_digests") else {
        return;
    };
    let mut s = standard(&env.endpoint, "agree-backfill", "").await;
    // A late log file, covered by a backfill digest generated later.
    let late = s.log(t("2026-11-01T00:20:00Z"), 2).await;
    let good = s
        .backfill_digest(
            "2026-11-01T00:00:00Z",
            "2026-11-01T01:00:00Z",
            vec![late],
            Some("2026-11-01T04:00:00Z"),
        )
        .await;
    let v = env.compare("backfill", &s, &s.key, START);
    v.assert_valid("backfill");
    assert!(
        v.stdout.contains(&format!(
            "(backfill) Digest file\ts3://{}/{good}\tvalid",
            s.bucket
        )),
        "{}",
        v.stdout
    );
    assert!(
        v.stdout.contains("\n1/1 backfill digest files valid"),
        "{}",
        v.stdout
    );
    assert_eq!(v.logs(), (4, 4));

    // Without its generation timestamp a backfill digest is "invalid format".
    let bad = s
        .backfill_digest("2026-11-01T01:00:00Z", "2026-11-01T02:00:00Z", vec![], None)
        .await;
    let v = env.compare("backfill without timestamp", &s, &s.key, START);
    assert_eq!(v.code, 1);
    assert_eq!(
        v.invalid_lines(),
        vec![format!(
            "(backfill) {}",
            invalid("Digest", &s.bucket, &bad, "invalid format")
        )]
    );
}
