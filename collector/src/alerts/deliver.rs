//! Delivery: one task per notifier, sending that notifier's queue in order.
//!
//! # Guarantees
//!
//! - **At least once, in order.** A task sends its queue's oldest entry, and only after a
//!   2xx answer removes it ([`AlertStore`]'s guarantee 5) and moves to the next. A failure
//!   (refused connection, TLS error, timeout, non-2xx) stops the pass; the same entry is
//!   retried after [`crate::delivery::backoff`] (capped at 10 s), for as long as it takes.
//!   The queue is in the store, so a restart (or kill -9) resumes where it stopped; only an
//!   alert answered 2xx just before a crash may be sent again.
//! - **Isolated.** Tasks share nothing but the store: a notifier that is down, slow or
//!   hanging (each attempt has its `timeout`) holds only its own queue, never another
//!   notifier and never the detector or ingest, which only append to queues.
//! - **Prompt.** A commit that queued something wakes every task (the store signals it once
//!   the entries are durable); without a wake-up, a task looks again every 5 s anyway.

use std::sync::Arc;
use std::time::Duration;

use groundtrail_common::shutdown::Shutdown;

use crate::alerts::{AlertStore, Notifier};
use crate::delivery::backoff;

/// How long an idle task waits before looking at its queue unprompted.
const IDLE_POLL: Duration = Duration::from_secs(5);
/// Queue entries read per step.
const BATCH: usize = 100;

/// Starts one delivery task per notifier; each returns at `shutdown` (an attempt under way is
/// abandoned, and its entry stays queued).
pub fn spawn(
    store: Arc<AlertStore>,
    notifiers: Vec<Notifier>,
    shutdown: Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    for n in &notifiers {
        if !store.routes().iter().any(|r| r.name == n.name()) {
            tracing::warn!(notifier = %n.name(), "the alert store queues nothing for notifier {:?}: it was opened without it", n.name());
        }
    }
    notifiers
        .into_iter()
        .map(|n| tokio::spawn(run(store.clone(), Arc::new(n), shutdown.clone())))
        .collect()
}

async fn run(store: Arc<AlertStore>, notifier: Arc<Notifier>, mut shutdown: Shutdown) {
    let name = notifier.name().to_string();
    let mut failures = 0u32;
    while !shutdown.is_shutdown() {
        // Registered before looking at the queue, so a commit made while this pass runs
        // wakes the wait below instead of being missed.
        let committed = store.queued().notified();
        tokio::pin!(committed);
        committed.as_mut().enable();
        let pass = tokio::select! {
            r = send_pending(&store, &notifier) => r,
            _ = shutdown.recv() => break,
        };
        let wait = match pass {
            Ok(()) => {
                failures = 0;
                None
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let d = backoff(failures);
                tracing::warn!(notifier = %name, url = %notifier.url(), "alert delivery failed (attempt {failures}), retry in {d:?}: {e}");
                Some(d)
            }
        };
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = &mut committed, if wait.is_none() => {}
            _ = tokio::time::sleep(wait.unwrap_or(IDLE_POLL)) => {}
        }
    }
}

/// Sends the queue in order until it is empty or an attempt fails.
async fn send_pending(store: &AlertStore, notifier: &Notifier) -> Result<(), String> {
    let name = notifier.name();
    loop {
        let batch = store.pending(name, BATCH).map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Ok(());
        }
        for (key, alert) in batch {
            if let Err(e) = notifier.send(&alert).await {
                let why = format!("alert {}: {e}", alert.id);
                if let Err(se) = store.failed(name, &why) {
                    tracing::warn!(notifier = %name, "cannot record the failure: {se}");
                }
                return Err(why);
            }
            store.delivered(name, &key).map_err(|e| e.to_string())?;
            tracing::debug!(notifier = %name, alert = %alert.id, "alert delivered");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::config::{NotifierConfig, NotifierKind};
    use crate::alerts::testing::{Receiver, accepted_ids, alert};
    use crate::alerts::{Alert, AlertStore};
    use std::path::Path;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn notifier(dir: &Path, name: &str, url: String, ca: Option<&Path>) -> Notifier {
        notifier_with(dir, name, url, ca, "2s")
    }

    fn notifier_with(
        dir: &Path,
        name: &str,
        url: String,
        ca: Option<&Path>,
        timeout: &str,
    ) -> Notifier {
        let secret = dir.join("secret");
        std::fs::write(&secret, SECRET).unwrap();
        Notifier::new(&NotifierConfig {
            name: name.into(),
            kind: NotifierKind::Webhook,
            url,
            secret_file: Some(secret),
            ca_file: ca.map(Path::to_path_buf),
            topic_arn: None,
            min_severity: None,
            timeout: timeout.parse().unwrap(),
            max_queued: 100_000,
        })
        .unwrap()
    }

    /// Delivery of `store`'s queue `soc` to `rx`, over HTTPS with `rx`'s CA.
    fn deliver_to_soc(
        dir: &Path,
        store: &Arc<AlertStore>,
        rx: &Receiver,
        sd: Shutdown,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        spawn(
            store.clone(),
            vec![notifier(dir, "soc", rx.url("https"), Some(&rx.ca_file))],
            sd,
        )
    }

    fn batch(from: usize, n: usize) -> Vec<Alert> {
        (from..from + n)
            .map(|i| alert(&format!("al-{i:03}"), "r", "high", "2026-12-07T10:00:00Z"))
            .collect()
    }

    async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn shutdown() -> (tokio::sync::broadcast::Sender<()>, Shutdown) {
        let (tx, rx) = tokio::sync::broadcast::channel(1);
        (tx, Shutdown::new(rx))
    }

    /// A receiver that answers 500, then is gone (connection refused), then is back on the
    /// same port: afterwards it has every alert, in commit order, each accepted exactly once.
    #[tokio::test]
    async fn an_outage_ends_with_every_alert_in_order_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(AlertStore::open(&dir.path().join("alerts"), &["soc".to_string()]).unwrap());
        let rx = Receiver::https(dir.path(), 0).await;
        let port = rx.addr.port();
        rx.status.store(500, Ordering::SeqCst);
        let (stop, sd) = shutdown();
        let tasks = deliver_to_soc(dir.path(), &store, &rx, sd);
        store.commit(1, batch(0, 5), vec![]).await.unwrap();
        until("two refused attempts", 10, || rx.all().len() >= 2).await;
        assert!(rx.accepted().is_empty());
        // Down: nothing listens on the port.
        rx.stop();
        store.commit(2, batch(5, 5), vec![]).await.unwrap();
        let failed = crate::metrics::metrics().alert_notifier_counts("soc").1;
        until("failed connection attempts", 10, || {
            crate::metrics::metrics().alert_notifier_counts("soc").1 >= failed + 2
        })
        .await;
        let s = &store.delivery_status().unwrap()[0];
        assert_eq!(s.pending, 10);
        assert!(
            s.last_error.as_deref().unwrap().contains("connect"),
            "{s:?}"
        );
        // Back, on the same port and certificate.
        let rx = Receiver::https(dir.path(), port).await;
        store.commit(3, batch(10, 5), vec![]).await.unwrap();
        until("every alert", 30, || accepted_ids(&rx).len() >= 15).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let want: Vec<String> = batch(0, 15).into_iter().map(|a| a.id).collect();
        assert_eq!(accepted_ids(&rx), want);
        let s = &store.delivery_status().unwrap()[0];
        assert_eq!((s.pending, s.delivered_total), (0, 15));
        // Every one signed, checked as a receiver would.
        let now = chrono::Utc::now().timestamp();
        for r in rx.accepted() {
            let sig = r.headers["x-groundtrail-signature"].to_str().unwrap();
            assert!(crate::alerts::notifier::verify(
                SECRET.as_bytes(),
                sig,
                &r.body,
                now,
                300
            ));
        }
        let _ = stop.send(());
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// One notifier down does not hold the other: it gets each alert at once.
    #[tokio::test]
    async fn a_down_notifier_does_not_delay_another() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["down".to_string(), "up".to_string()];
        let store = Arc::new(AlertStore::open(&dir.path().join("alerts"), &names).unwrap());
        let rx = Receiver::https(dir.path(), 0).await;
        // A port nothing listens on.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead_url = format!("http://127.0.0.1:{}/", dead.local_addr().unwrap().port());
        drop(dead);
        // A receiver that accepts connections and never answers, to be sure a hanging
        // notifier holds nobody either.
        let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hang_url = format!("http://127.0.0.1:{}/", hang.local_addr().unwrap().port());
        let store2 = Arc::new(AlertStore::open(&dir.path().join("alerts2"), &names).unwrap());
        let (stop, sd) = shutdown();
        let mut tasks = spawn(
            store.clone(),
            vec![
                notifier(dir.path(), "down", dead_url, None),
                notifier(dir.path(), "up", rx.url("https"), Some(&rx.ca_file)),
            ],
            sd.clone(),
        );
        let rx2 = Receiver::https(&dir.path().join("pki2"), 0).await;
        tasks.extend(spawn(
            store2.clone(),
            vec![
                // Hangs for 30 s per attempt: were "up" held by it, a round would take that.
                notifier_with(dir.path(), "down", hang_url, None, "30s"),
                notifier(dir.path(), "up", rx2.url("https"), Some(&rx2.ca_file)),
            ],
            sd,
        ));
        for round in 0..3 {
            let alerts = batch(round * 2, 2);
            let started = Instant::now();
            store
                .commit(round as u64, alerts.clone(), vec![])
                .await
                .unwrap();
            store2.commit(round as u64, alerts, vec![]).await.unwrap();
            until("the up notifier", 20, || {
                accepted_ids(&rx).len() == (round + 1) * 2
                    && accepted_ids(&rx2).len() == (round + 1) * 2
            })
            .await;
            // Far below the 30 s a held queue would take, with room for a loaded 2-core CI
            // machine doing two TLS handshakes per round in a debug build.
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "round {round} took {:?}",
                started.elapsed()
            );
        }
        let want: Vec<String> = batch(0, 6).into_iter().map(|a| a.id).collect();
        assert_eq!(accepted_ids(&rx), want);
        assert_eq!(accepted_ids(&rx2), want);
        for s in [&store, &store2] {
            // The receiver records a request before it answers, and the entry leaves the
            // queue after the answer.
            until("the queue to empty", 5, || {
                s.delivery_status().unwrap()[1].pending == 0
            })
            .await;
            let st = s.delivery_status().unwrap();
            assert_eq!((st[0].name.as_str(), st[0].pending), ("down", 6));
            assert_eq!((st[1].name.as_str(), st[1].pending), ("up", 0));
        }
        let _ = stop.send(());
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .unwrap()
                .unwrap();
        }
        drop(hang);
    }

    /// Not run by default: time from `commit` returning to the receiver's receipt, one alert
    /// per commit at a steady rate, over HTTPS (a new connection per alert).
    /// `cargo test -p groundtrail-collector --lib alerts::deliver::tests::latency -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn latency() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(AlertStore::open(&dir.path().join("alerts"), &["soc".to_string()]).unwrap());
        let rx = Receiver::https(dir.path(), 0).await;
        let (stop, sd) = shutdown();
        let tasks = deliver_to_soc(dir.path(), &store, &rx, sd);
        let n = 500;
        let rate = 50.0; // alerts per second
        let mut committed = Vec::new();
        let t0 = Instant::now();
        for i in 0..n {
            let due = t0 + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
            store.commit(i as u64, batch(i, 1), vec![]).await.unwrap();
            committed.push(Instant::now());
        }
        until("every alert", 60, || rx.accepted().len() >= n).await;
        let got = rx.accepted();
        let mut lat: Vec<Duration> = committed
            .iter()
            .zip(&got)
            .map(|(c, r)| r.at.saturating_duration_since(*c))
            .collect();
        lat.sort();
        println!(
            "latency over {n} alerts at {rate}/s: p50 {:?} p99 {:?} max {:?}",
            lat[n / 2],
            lat[n * 99 / 100],
            lat[n - 1]
        );
        let t1 = Instant::now();
        store
            .commit(n as u64, batch(n, 1000), vec![])
            .await
            .unwrap();
        until("a burst of 1000", 120, || rx.accepted().len() >= n + 1000).await;
        println!("burst: 1000 alerts delivered in {:?}", t1.elapsed());
        let _ = stop.send(());
        for t in tasks {
            t.await.unwrap();
        }
    }

    /// Queued alerts survive the store being closed and opened again (a restart), and are
    /// sent by the new tasks.
    #[tokio::test]
    async fn the_queue_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts");
        let names = ["soc".to_string()];
        {
            let store = AlertStore::open(&path, &names).unwrap();
            store.commit(1, batch(0, 4), vec![]).await.unwrap();
        }
        let rx = Receiver::https(dir.path(), 0).await;
        let store = Arc::new(AlertStore::open(&path, &names).unwrap());
        assert_eq!(store.delivery_status().unwrap()[0].pending, 4);
        let (stop, sd) = shutdown();
        let tasks = deliver_to_soc(dir.path(), &store, &rx, sd);
        until("the queued alerts", 10, || accepted_ids(&rx).len() >= 4).await;
        let want: Vec<String> = batch(0, 4).into_iter().map(|a| a.id).collect();
        assert_eq!(accepted_ids(&rx), want);
        let _ = stop.send(());
        for t in tasks {
            t.await.unwrap();
        }
    }
}
