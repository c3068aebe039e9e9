//! The reader over a real journal: what it finds is committed once, and a replay after a crash
//! (the checkpoint lost) finds the same records again, which the journal drops.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DurationRound, TimeDelta, Utc};
use groundtrail_common::shutdown::Shutdown;
use groundtrail_common::{Record, UserIdentity};
use groundtrail_detection::insights::InsightsConfig;
use tokio::sync::{broadcast, mpsc};

use super::config::InsightsSection;
use super::{InsightsReader, checkpoint_path};
use crate::config::Duration;
use crate::journal::{Journal, PendingRecord};

fn call(minute: i64, i: i64, error: bool) -> Record {
    let mut r = Record::new(
        "app.onprem.internal",
        "Login",
        "AwsApiCall",
        "us-east-1",
        "123456789012",
    );
    r.event_time = groundtrail_common::time::json_time(
        Utc::now().duration_trunc(TimeDelta::minutes(1)).unwrap() - TimeDelta::minutes(minute)
            + TimeDelta::seconds(i),
    );
    r.user_identity = Some(UserIdentity::default());
    r.read_only = Some(true);
    if error {
        r.error_code = Some("AccessDenied".into());
    }
    r
}

fn section() -> InsightsSection {
    InsightsSection {
        types: vec!["ApiErrorRateInsight".into()],
        close_idle_after: Duration(StdDuration::from_millis(300)),
        checkpoint_interval: Duration::from_secs(3600),
        model: InsightsConfig {
            baseline_minutes: 60,
            min_history_minutes: 60,
            ..InsightsConfig::default()
        },
    }
}

/// Runs a reader until `n` records reached the batcher's queue (or `wait` passed), then stops
/// it (saving its checkpoint); returns what reached the queue.
async fn run_reader(
    journal: &Arc<Journal>,
    dir: &std::path::Path,
    n: usize,
    wait: StdDuration,
) -> Vec<PendingRecord> {
    let (tx, mut rx) = mpsc::channel(64);
    let reader =
        InsightsReader::open(journal.clone(), tx, section(), checkpoint_path(dir)).unwrap();
    let (stop, _) = broadcast::channel(1);
    let task = tokio::spawn(reader.run(Shutdown::new(stop.subscribe())));
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(batch)) => got.extend(batch),
            _ => break,
        }
    }
    // Two more idle periods (each one judges the minutes up to now): nothing else may come.
    tokio::time::sleep(StdDuration::from_millis(700)).await;
    while let Ok(batch) = rx.try_recv() {
        got.extend(batch);
    }
    stop.send(()).unwrap();
    task.await.unwrap();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_are_committed_once_across_a_lost_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(&dir.path().join("j")).unwrap());
    // Two hours of one failure every 10 minutes, then 5 minutes of 12 a minute, ending 10
    // minutes ago.
    let mut records: Vec<Record> = (16..136)
        .rev()
        .filter(|m| m % 10 == 0)
        .map(|m| call(m, 0, true))
        .collect();
    for m in (11..16).rev() {
        records.extend((0..12).map(|i| call(m, i, true)));
    }
    journal.commit(&records, &[], Utc::now()).unwrap();
    journal.flush().await.unwrap();

    let first = run_reader(&journal, dir.path(), 2, StdDuration::from_secs(60)).await;
    let states: Vec<String> = first
        .iter()
        .map(|p| {
            let v: serde_json::Value = serde_json::from_slice(&p.json).unwrap();
            assert_eq!(v["insightDetails"]["insightType"], "ApiErrorRateInsight");
            v["insightDetails"]["state"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(states, ["Start", "End"]);
    assert!(
        first
            .iter()
            .all(|p| p.kind == groundtrail_common::trail::FileKind::Insight)
    );
    assert!(checkpoint_path(dir.path()).exists());
    // The journal has them: pending, as no batcher filed them.
    let pending_insights = |j: &Journal| {
        j.pending()
            .unwrap()
            .into_iter()
            .filter(|p| p.kind == groundtrail_common::trail::FileKind::Insight)
            .count()
    };
    assert_eq!(pending_insights(&journal), 2);

    // Restarted from the checkpoint: nothing new.
    assert!(
        run_reader(&journal, dir.path(), 1, StdDuration::from_secs(2))
            .await
            .is_empty()
    );
    // A crash that lost the checkpoint: the log is read again from its start, the same two
    // records are found and the journal drops them as repeats.
    std::fs::remove_file(checkpoint_path(dir.path())).unwrap();
    assert!(
        run_reader(&journal, dir.path(), 1, StdDuration::from_secs(2))
            .await
            .is_empty()
    );
    assert_eq!(pending_insights(&journal), 2);
}

/// Findings a checkpoint carries as not known to be committed (a flush's, saved before its
/// commit) are committed first on the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_carried_by_the_checkpoint_are_committed_first() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(Journal::open(&dir.path().join("j")).unwrap());
    let det = groundtrail_detection::insights::Detector::new(section().model).unwrap();
    let end = serde_json::json!({
        "eventVersion": "1.07", "eventTime": "2026-12-07T09:25:00Z", "awsRegion": "us-east-1",
        "eventID": "1aa9f2fe-0810-8086-921a-9c49a5b6da93", "eventType": "AwsCloudTrailInsight",
        "recipientAccountId": "123456789012", "sharedEventID": "fd16a2d5-b1ba-876f-a24e-bb419e30e4e2",
        "insightDetails": {"state": "End", "eventSource": "app.onprem.internal",
            "eventName": "Login", "insightType": "ApiErrorRateInsight"},
        "eventCategory": "Insight"
    });
    let mut c = super::checkpoint::Checkpoint::new(journal.durable_end_now(), det);
    c.pending = vec![end];
    super::checkpoint::save(&checkpoint_path(dir.path()), &c).unwrap();
    let got = run_reader(&journal, dir.path(), 1, StdDuration::from_secs(60)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind, groundtrail_common::trail::FileKind::Insight);
    // Once in, the next checkpoint carries nothing: a second start adds nothing.
    assert!(
        run_reader(&journal, dir.path(), 1, StdDuration::from_secs(2))
            .await
            .is_empty()
    );
}
