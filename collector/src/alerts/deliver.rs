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
//! - **Prompt.** A commit that queued something wakes every task (the store's own signal,
//!   plus the `wake` handed in); without a wake-up, a task looks again every 5 s anyway.

use std::sync::Arc;
use std::time::Duration;

use groundtrail_common::shutdown::Shutdown;
use tokio::sync::Notify;

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
    wake: Arc<Notify>,
    shutdown: Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    notifiers
        .into_iter()
        .map(|n| {
            tokio::spawn(run(
                store.clone(),
                Arc::new(n),
                wake.clone(),
                shutdown.clone(),
            ))
        })
        .collect()
}

async fn run(
    store: Arc<AlertStore>,
    notifier: Arc<Notifier>,
    wake: Arc<Notify>,
    mut shutdown: Shutdown,
) {
    let name = notifier.name().to_string();
    let mut failures = 0u32;
    while !shutdown.is_shutdown() {
        // Registered before looking at the queue, so a commit made while this pass runs
        // wakes the wait below instead of being missed.
        let committed = store.queued().notified();
        let woken = wake.notified();
        tokio::pin!(committed, woken);
        committed.as_mut().enable();
        woken.as_mut().enable();
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
            _ = &mut woken, if wait.is_none() => {}
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
