//! Webhook notifications of delivered log files, the way a trail notifies its SNS topic:
//! `POST <url>` (HTTP, or HTTPS verified against the system's roots and `ca_file`, through
//! [`crate::http_post`], as the alert notifiers send) with CloudTrail's notification JSON
//! `{"s3Bucket": "<bucket>", "s3ObjectKey": ["<key>"]}` (`content-type: application/json`).
//!
//! Durable and at-least-once: the notification is queued in the journal in the same atomic
//! batch that marks the file delivered ([`crate::journal::Journal::mark_delivered`]), and leaves
//! the queue only after the webhook answered 2xx. Each webhook has its own queue, sent in
//! order; a failure (connection error, timeout, non-2xx) is retried with backoff (capped at a
//! minute) without holding up the other webhooks, also across restarts.
//!
//! Bounded: a webhook that never answers would otherwise grow its queue by one entry per
//! delivered file for ever. Before each round of sending, a queue longer than the webhook's
//! `max_queued` loses its oldest entries. That is a loss, so it is never silent: each drop is
//! logged as an error, counted in `groundtrail_notifications_dropped_total`, and named in
//! `GetTrailStatus` as `LatestNotificationError` until a later notification gets through. The
//! log files those notifications named are in the trail regardless (a notification only says
//! that a file arrived; the digest chain is what proves the set of files).

use std::sync::Arc;
use std::time::Duration;

use groundtrail_common::shutdown::Shutdown;
use tokio::sync::Notify;

use crate::config::NotificationConfig;
use crate::delivery::backoff;
use crate::http_post::Endpoint;
use crate::journal::Journal;

/// Sends queued notifications to every configured webhook.
pub struct Notifier {
    journal: Arc<Journal>,
    hooks: Vec<NotificationConfig>,
    wake: Arc<Notify>,
}

impl Notifier {
    pub fn new(
        journal: Arc<Journal>,
        hooks: Vec<NotificationConfig>,
        wake: Arc<Notify>,
    ) -> Notifier {
        Notifier {
            journal,
            hooks,
            wake,
        }
    }

    /// Runs until shutdown: one task per webhook.
    pub async fn run(self, shutdown: Shutdown) {
        let mut tasks = Vec::new();
        for hook in self.hooks {
            let journal = self.journal.clone();
            let wake = self.wake.clone();
            let s = shutdown.clone();
            tasks.push(tokio::spawn(run_hook(journal, hook, wake, s)));
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

async fn run_hook(
    journal: Arc<Journal>,
    hook: NotificationConfig,
    wake: Arc<Notify>,
    mut shutdown: Shutdown,
) {
    let name = hook.name();
    // Checked with the config at start-up; a CA file that went away since is said here.
    let endpoint = match hook.endpoint() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(webhook = %name, "notifications not sent: {e}");
            return;
        }
    };
    let mut failures = 0u32;
    while !shutdown.is_shutdown() {
        trim(&journal, &hook, &name);
        let wait = match send_pending(&journal, &endpoint, &name).await {
            Ok(()) => {
                failures = 0;
                None
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let d = backoff(failures);
                tracing::warn!(webhook = %name, "notification failed, retry in {d:?}: {e}");
                Some(d)
            }
        };
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = wake.notified(), if wait.is_none() => {}
            _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(5))) => {}
        }
    }
}

/// The status name under which dropped notifications are reported.
const DROPPED_STATUS: &str = "LatestNotificationError";

/// Keeps the queue within `max_queued`, reporting what it drops.
fn trim(journal: &Journal, hook: &NotificationConfig, name: &str) {
    match journal.trim_notifications(name, hook.max_queued) {
        Ok(0) => {}
        Ok(dropped) => {
            crate::metrics::Metrics::add(&crate::metrics::metrics().notifications_dropped, dropped);
            let message = format!(
                "{dropped} queued notifications for webhook {name} dropped: the queue reached max_queued = {} while the webhook did not answer",
                hook.max_queued
            );
            tracing::error!(webhook = %name, dropped, "{message}");
            let _ = journal.set_status(DROPPED_STATUS, &message);
        }
        Err(e) => tracing::warn!(webhook = %name, "cannot trim the notification queue: {e}"),
    }
}

/// Sends this webhook's queue in order until it is empty or a send fails.
async fn send_pending(journal: &Journal, endpoint: &Endpoint, name: &str) -> Result<(), String> {
    loop {
        let batch = journal
            .pending_notifications(name, 100)
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Ok(());
        }
        for (key, body) in batch {
            endpoint
                .post(&[("content-type", "application/json".into())], body)
                .await
                .map_err(|e| format!("{}: {e}", endpoint.url()))?;
            journal.notification_sent(&key).map_err(|e| e.to_string())?;
            let _ = journal.clear_status(DROPPED_STATUS);
            tracing::debug!(webhook = %name, "notification sent");
        }
    }
}
