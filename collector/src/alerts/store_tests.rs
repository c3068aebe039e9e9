//! Tests of the alert store (`store.rs`): one per guarantee in its module docs.

use super::*;
use crate::alerts::testing::alert;
use std::sync::Arc;

fn at(min: u32, sec: u32) -> String {
    format!("2026-12-07T10:{min:02}:{sec:02}Z")
}

fn ids(alerts: &[Alert]) -> Vec<&str> {
    alerts.iter().map(|a| a.id.as_str()).collect()
}

fn queue(store: &AlertStore, n: &str) -> Vec<String> {
    store
        .pending(n, 1000)
        .unwrap()
        .into_iter()
        .map(|(_, a)| a.id)
        .collect()
}

fn two(dir: &Path) -> AlertStore {
    AlertStore::open(dir, &["a".to_string(), "b".to_string()]).unwrap()
}

#[tokio::test]
async fn an_alert_id_is_stored_and_queued_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = two(dir.path());
    let x = alert("x", "r1", "high", &at(0, 1));
    let y = alert("y", "r1", "high", &at(0, 2));
    let new = store
        .commit(1, vec![x.clone(), y.clone(), x.clone()], vec![])
        .await
        .unwrap();
    assert_eq!(ids(&new), ["x", "y"]);
    // Again, as after a crash or a retried commit: only z is new.
    let z = alert("z", "r1", "high", &at(0, 3));
    let new = store
        .commit(2, vec![y.clone(), z.clone(), x.clone()], vec![])
        .await
        .unwrap();
    assert_eq!(ids(&new), ["z"]);
    for n in ["a", "b"] {
        assert_eq!(queue(&store, n), ["x", "y", "z"]);
    }
    assert_eq!(store.get("x").unwrap().unwrap(), x);
    let status = store.delivery_status().unwrap();
    assert_eq!(status[0].pending, 3);
    assert_eq!(status[1].pending, 3);
    // Delivered to a: gone from a's queue only.
    let (k, _) = store.pending("a", 1).unwrap().remove(0);
    store.delivered("a", &k).unwrap();
    store.delivered("a", &k).unwrap(); // twice is harmless
    assert_eq!(queue(&store, "a"), ["y", "z"]);
    assert_eq!(queue(&store, "b"), ["x", "y", "z"]);
    let s = store.delivery_status().unwrap();
    assert_eq!((s[0].pending, s[0].delivered_total), (2, 1));
    assert!(s[0].last_success.is_some());
}

#[tokio::test]
async fn a_bad_alert_fails_the_whole_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = two(dir.path());
    store
        .commit(5, vec![], vec![(b"k".to_vec(), Some(b"v5".to_vec()))])
        .await
        .unwrap();
    let good = alert("good", "r1", "high", &at(0, 1));
    let bad = alert("bad", "r1", "high", "yesterday");
    let err = store
        .commit(
            9,
            vec![good, bad],
            vec![(b"k".to_vec(), Some(b"v9".to_vec()))],
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"bad\""), "{err}");
    assert_eq!(store.position().unwrap(), Some(5));
    assert!(store.get("good").unwrap().is_none());
    assert!(queue(&store, "a").is_empty());
    assert_eq!(
        store.window_state().unwrap(),
        [(b"k".to_vec(), b"v5".to_vec())]
    );
    let empty = alert("", "r1", "high", &at(0, 1));
    assert!(store.commit(9, vec![empty], vec![]).await.is_err());
}

#[tokio::test]
async fn position_state_and_queues_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = two(dir.path());
        assert_eq!(store.position().unwrap(), None);
        store
            .commit(
                42,
                vec![alert("x", "r", "low", &at(1, 0))],
                vec![
                    (b"k1".to_vec(), Some(b"one".to_vec())),
                    (b"k2".to_vec(), Some(b"two".to_vec())),
                ],
            )
            .await
            .unwrap();
    }
    let store = two(dir.path());
    assert_eq!(store.position().unwrap(), Some(42));
    assert_eq!(
        store.window_state().unwrap(),
        [
            (b"k1".to_vec(), b"one".to_vec()),
            (b"k2".to_vec(), b"two".to_vec())
        ]
    );
    assert_eq!(queue(&store, "a"), ["x"]);
    assert_eq!(store.delivery_status().unwrap()[1].pending, 1);
    store
        .commit(43, vec![], vec![(b"k1".to_vec(), None)])
        .await
        .unwrap();
    drop(store);
    let store = two(dir.path());
    assert_eq!(store.position().unwrap(), Some(43));
    assert_eq!(
        store.window_state().unwrap(),
        [(b"k2".to_vec(), b"two".to_vec())]
    );
}

#[tokio::test]
async fn silences_apply_at_commit_and_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = two(dir.path());
    let silence = Silence {
        id: "s1".into(),
        rule_id: "r1".into(),
        starts: at(0, 0),
        ends: "2026-12-07T11:00:00Z".into(),
        created_by: "alice".into(),
        reason: "pen test".into(),
        created_at: at(0, 0),
        ended_by: None,
    };
    store.add_silence(silence.clone()).await.unwrap();
    for (bad, want) in [
        (Silence { ..silence.clone() }, "exists"),
        (
            Silence {
                id: "s2".into(),
                reason: " ".into(),
                ..silence.clone()
            },
            "reason",
        ),
        (
            Silence {
                id: "s2".into(),
                ends: at(0, 0),
                ..silence.clone()
            },
            "before ends",
        ),
        (
            Silence {
                id: "s2".into(),
                starts: "soon".into(),
                ..silence.clone()
            },
            "RFC 3339",
        ),
        (
            Silence {
                id: "s2".into(),
                rule_id: "".into(),
                ..silence.clone()
            },
            "rule_id",
        ),
    ] {
        let err = store.add_silence(bad).await.unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
    let raised = crate::metrics::metrics()
        .alerts_silenced
        .load(Ordering::Relaxed);
    let new = store
        .commit(
            1,
            vec![
                alert("in", "r1", "high", &at(30, 0)),
                alert("other-rule", "r2", "high", &at(30, 0)),
                alert("after", "r1", "high", "2026-12-07T11:00:00Z"),
                alert("before", "r1", "high", "2026-12-07T09:59:59Z"),
            ],
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(new[0].silenced_by.as_deref(), Some("s1"));
    assert!(new[1..].iter().all(|a| a.silenced_by.is_none()));
    assert_eq!(
        store.get("in").unwrap().unwrap().silenced_by.as_deref(),
        Some("s1")
    );
    assert_eq!(queue(&store, "a"), ["other-rule", "after", "before"]);
    assert!(
        crate::metrics::metrics()
            .alerts_silenced
            .load(Ordering::Relaxed)
            > raised
    );
    // Listed even though silenced.
    assert_eq!(store.list(&AlertQuery::default()).unwrap().0.len(), 4);
    drop(store);
    let store = two(dir.path());
    assert_eq!(store.silences().unwrap(), [silence]);
    let end = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    let ended = store
        .end_silence("s1", "bob", end(&at(30, 0)))
        .await
        .unwrap()
        .expect("s1 exists");
    assert_eq!(
        (ended.ends.as_str(), ended.ended_by.as_deref()),
        (at(30, 0).as_str(), Some("bob"))
    );
    assert!(
        store
            .end_silence("nope", "bob", end(&at(30, 0)))
            .await
            .unwrap()
            .is_none()
    );
    // Kept, as ended, across a reopen.
    drop(store);
    let store = two(dir.path());
    assert_eq!(store.silences().unwrap(), [ended]);
    let new = store
        .commit(2, vec![alert("in2", "r1", "high", &at(31, 0))], vec![])
        .await
        .unwrap();
    assert!(new[0].silenced_by.is_none());
}

#[tokio::test]
async fn list_pages_newest_first_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = two(dir.path());
    // 25 alerts a minute apart, alternately r1 and r2, committed in two batches and
    // out of order within a batch.
    let all: Vec<Alert> = (0..25)
        .map(|i| {
            alert(
                &format!("a{i:02}"),
                if i % 2 == 0 { "r1" } else { "r2" },
                "low",
                &at(i, 0),
            )
        })
        .collect();
    let mut first: Vec<Alert> = all[..12].to_vec();
    first.reverse();
    store.commit(1, first, vec![]).await.unwrap();
    store.commit(2, all[12..].to_vec(), vec![]).await.unwrap();
    let mut q = AlertQuery {
        limit: 10,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let (page, token) = store.list(&q).unwrap();
        pages += 1;
        seen.extend(page.into_iter().map(|a| a.id));
        match token {
            Some(t) => q.next_token = Some(t),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).rev().map(|i| format!("a{i:02}")).collect();
    assert_eq!(seen, want);
    // Filters: rule, and a detected_at window (both ends inclusive).
    let q = AlertQuery {
        rule_id: Some("r2".into()),
        since: Some(at(5, 0)),
        until: Some(at(9, 0)),
        ..Default::default()
    };
    assert_eq!(ids(&store.list(&q).unwrap().0), ["a09", "a07", "a05"]);
    // Exactly one page's worth: no token.
    let q = AlertQuery {
        limit: 25,
        ..Default::default()
    };
    assert!(store.list(&q).unwrap().1.is_none());
    for bad in [
        AlertQuery {
            limit: 1001,
            ..Default::default()
        },
        AlertQuery {
            next_token: Some("zz".into()),
            ..Default::default()
        },
        AlertQuery {
            since: Some("today".into()),
            ..Default::default()
        },
    ] {
        assert!(matches!(store.list(&bad), Err(AlertError::InvalidQuery(_))));
    }
}

#[tokio::test]
async fn min_severity_and_the_queue_bound() {
    let dir = tempfile::tempdir().unwrap();
    let routes = vec![
        Route {
            name: "pager".into(),
            min_severity: Some("high".into()),
            max_queued: 100,
        },
        Route {
            name: "small".into(),
            min_severity: None,
            max_queued: 3,
        },
    ];
    let store = AlertStore::open_routes(dir.path(), routes.clone()).unwrap();
    let sevs = ["low", "high", "critical", "medium", "high"];
    let alerts: Vec<Alert> = sevs
        .iter()
        .enumerate()
        .map(|(i, s)| alert(&format!("a{i}"), "r", s, &at(0, i as u32)))
        .collect();
    store.commit(1, alerts[..2].to_vec(), vec![]).await.unwrap();
    store.commit(2, alerts[2..].to_vec(), vec![]).await.unwrap();
    assert_eq!(queue(&store, "pager"), ["a1", "a2", "a4"]);
    // The oldest two left the small queue, loudly.
    assert_eq!(queue(&store, "small"), ["a2", "a3", "a4"]);
    let s = &store.delivery_status().unwrap()[1];
    assert_eq!((s.pending, s.dropped_total), (3, 2));
    assert!(s.last_error.as_deref().unwrap().contains("max_queued = 3"));
    assert!(crate::metrics::metrics().alert_notifier_counts("small").2 >= 2);
    // One commit larger than the bound keeps its newest entries.
    let more: Vec<Alert> = (10..15)
        .map(|i| alert(&format!("a{i}"), "r", "low", &at(1, i)))
        .collect();
    store.commit(3, more, vec![]).await.unwrap();
    assert_eq!(queue(&store, "small"), ["a12", "a13", "a14"]);
    drop(store);
    let store = AlertStore::open_routes(dir.path(), routes).unwrap();
    let s = &store.delivery_status().unwrap()[1];
    assert_eq!((s.pending, s.dropped_total), (3, 7));
}

#[tokio::test]
async fn prune_keeps_what_is_still_queued() {
    let dir = tempfile::tempdir().unwrap();
    let store = two(dir.path());
    let alerts: Vec<Alert> = (0..6)
        .map(|i| alert(&format!("a{i}"), "r", "low", &at(i, 0)))
        .collect();
    store.commit(1, alerts, vec![]).await.unwrap();
    // a0 and a1 delivered everywhere; a2 still queued for b.
    for n in ["a", "b"] {
        for (k, a) in store.pending(n, 3).unwrap() {
            if n == "a" || a.id != "a2" {
                store.delivered(n, &k).unwrap();
            }
        }
    }
    assert_eq!(store.prune(&at(4, 0)).unwrap(), 2);
    assert!(store.get("a0").unwrap().is_none());
    assert!(store.get("a2").unwrap().is_some());
    let (left, _) = store.list(&AlertQuery::default()).unwrap();
    assert_eq!(ids(&left), ["a5", "a4", "a3", "a2"]);
    assert!(store.prune("never").is_err());
}

/// Not a test on its own: the child process of `kill_9_loses_no_committed_alert`, which
/// commits until it is killed, printing each position once its commit returned.
#[tokio::test]
#[ignore]
async fn child_commit_loop() {
    let Ok(dir) = std::env::var("GT_ALERTS_CHILD_DIR") else {
        return;
    };
    let store = two(Path::new(&dir));
    let start = store.position().unwrap().unwrap_or(0);
    for p in start + 1.. {
        let alerts = (0..3)
            .map(|i| alert(&format!("p{p}-{i}"), "r", "high", &at(0, 0)))
            .collect();
        let state = vec![(b"pos".to_vec(), Some(p.to_be_bytes().to_vec()))];
        store.commit(p, alerts, state).await.unwrap();
        println!("committed {p}");
    }
}

/// kill -9 in the middle of commits: every commit that returned is there whole, and no
/// commit is there in part.
#[test]
fn kill_9_loses_no_committed_alert() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "alerts::store::tests::child_commit_loop",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GT_ALERTS_CHILD_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut last = 0u64;
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        let line = line.unwrap();
        if let Some(p) = line.strip_prefix("committed ") {
            last = p.parse().unwrap();
            if last == 40 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(last, 40, "the child stopped early");
    let store = two(dir.path());
    let pos = store.position().unwrap().unwrap();
    assert!(
        pos >= last,
        "commit {last} returned but the position is {pos}"
    );
    let state = store.window_state().unwrap();
    assert_eq!(state, [(b"pos".to_vec(), pos.to_be_bytes().to_vec())]);
    let want: Vec<String> = (1..=pos)
        .flat_map(|p| (0..3).map(move |i| format!("p{p}-{i}")))
        .collect();
    for n in ["a", "b"] {
        assert_eq!(queue(&store, n), want, "queue {n}");
    }
    assert!(store.get(&format!("p{}-0", pos + 1)).unwrap().is_none());
    let (listed, _) = store
        .list(&AlertQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(listed.len(), want.len());
    // And what was queued before the kill is delivered after it, in order.
    drop(store);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Arc::new(two(dir.path()));
        let rx = crate::alerts::testing::Receiver::https(&dir.path().join("pki"), 0).await;
        let cfg = crate::alerts::testing::webhook_config(dir.path(), "a", &rx);
        let (stop, rx_stop) = tokio::sync::broadcast::channel(1);
        let tasks = crate::alerts::deliver::spawn(
            store.clone(),
            vec![crate::alerts::Notifier::new(&cfg).unwrap()],
            groundtrail_common::shutdown::Shutdown::new(rx_stop),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while crate::alerts::testing::accepted_ids(&rx).len() < want.len() {
            assert!(
                std::time::Instant::now() < deadline,
                "not delivered in 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(crate::alerts::testing::accepted_ids(&rx), want);
        let _ = stop.send(());
        for t in tasks {
            t.await.unwrap();
        }
    });
}
