//! Uploads closed log files and signed digests to one destination.
//!
//! Each destination has its own [`Deliverer`], so a bucket that is down holds only its own
//! queue: the others keep receiving. Within a destination, uploads go strictly in journal
//! order and a failure stops the pass — a file is never skipped, and a digest is never
//! uploaded before the files it lists (it can only list files already delivered there). The
//! pass is retried with jittered exponential backoff for as long as it takes; nothing is
//! dropped, because everything stays in the journal until the destination acknowledged it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use groundtrail_common::shutdown::Shutdown;
use groundtrail_common::trail::digest::SIGNATURE_ALGORITHM;
use rand::RngExt;
use tokio::sync::Notify;

use crate::destination::{Destination, DestinationError, Metadata};
use crate::internal_events::{DeliveryFailed, DigestDelivered, InternalEvent, LogFileDelivered};
use crate::journal::{Journal, JournalError};

/// Why a delivery pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Destination(#[from] DestinationError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("gzip: {0}")]
    Gzip(std::io::Error),
}

/// First retry delay; doubles per consecutive failure up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between attempts: an S3 outage should end in delivery within seconds of its end.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The delay before retry number `attempt` (1-based): exponential, capped, with "equal
/// jitter" (half fixed, half random) so many collectors do not retry in lock step.
pub fn backoff(attempt: u32) -> Duration {
    let exp = BASE_BACKOFF.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(MAX_BACKOFF);
    let half = capped / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

/// Delivers to one destination.
pub struct Deliverer {
    journal: Arc<Journal>,
    destination: Arc<dyn Destination>,
    /// Woken when there is something new to deliver.
    wake: Arc<Notify>,
    /// Webhooks to tell about each delivered log file, and the notifier's wake-up.
    notify: Vec<String>,
    notifier: Option<Arc<Notify>>,
}

impl Deliverer {
    pub fn new(
        journal: Arc<Journal>,
        destination: Arc<dyn Destination>,
        wake: Arc<Notify>,
    ) -> Deliverer {
        Deliverer {
            journal,
            destination,
            wake,
            notify: Vec::new(),
            notifier: None,
        }
    }

    /// Queues a notification for each of `webhooks` whenever a log file is delivered, and
    /// wakes `notifier`.
    pub fn with_notifications(mut self, webhooks: Vec<String>, notifier: Arc<Notify>) -> Deliverer {
        self.notify = webhooks;
        self.notifier = Some(notifier);
        self
    }

    /// Records a status value for `GetTrailStatus`; a failure here only loses the status.
    fn status(&self, name: &str, value: Option<&str>) {
        let r = match value {
            Some(v) => self.journal.set_status(name, v),
            None => self.journal.clear_status(name),
        };
        if let Err(e) = r {
            tracing::debug!("delivery status: {e}");
        }
    }

    /// The destination's name.
    pub fn name(&self) -> &str {
        self.destination.name()
    }

    /// Uploads everything pending for this destination, in order: log files first, then
    /// digests. Stops at the first failure. Returns how many objects were stored.
    pub async fn pass(&self) -> Result<usize, DeliveryError> {
        let name = self.destination.name().to_string();
        let mut stored = 0;
        // Read, then flush, then upload: everything read here was written before the flush
        // began, so no key reaches a destination before it is durable in the journal — even
        // one this pass happens to see between the batcher's write and its own flush.
        let files = self.journal.undelivered(&name)?;
        let digests = self.journal.pending_digests(&name)?;
        if !files.is_empty() || !digests.is_empty() {
            self.journal.flush().await?;
        }
        for (id, entry) in files {
            let gzip = self.journal.file_body(id)?;
            let put = self
                .destination
                .put(&entry.key, Bytes::from(gzip), &Metadata::new())
                .await;
            let now = groundtrail_common::time::now_secs();
            let now_text = now.timestamp().to_string();
            self.status("LatestDeliveryAttemptTime", Some(&now_text));
            if let Err(e) = put {
                self.failed(&entry.key, &e);
                self.status("LatestDeliveryError", Some(&e.to_string()));
                self.status("LatestDeliveryAttemptSucceeded", None);
                return Err(e.into());
            }
            self.journal
                .mark_delivered(id, &name, self.destination.bucket(), now, &self.notify)?;
            self.status("LatestDeliveryTime", Some(&now_text));
            self.status("LatestDeliveryAttemptSucceeded", Some(&now_text));
            self.status("LatestDeliveryError", None);
            if let Some(n) = &self.notifier {
                n.notify_one();
            }
            LogFileDelivered {
                destination: &name,
                key: &entry.key,
            }
            .emit();
            stored += 1;
        }
        for (id, digest) in digests {
            let gzip = gzip(digest.document.as_bytes()).map_err(DeliveryError::Gzip)?;
            let mut meta = Metadata::new();
            meta.insert("signature".into(), digest.signature.clone());
            meta.insert("signature-algorithm".into(), SIGNATURE_ALGORITHM.into());
            if let Err(e) = self
                .destination
                .put(&digest.key, Bytes::from(gzip), &meta)
                .await
            {
                self.failed(&digest.key, &e);
                self.status("LatestDigestDeliveryError", Some(&e.to_string()));
                return Err(e.into());
            }
            self.journal.digest_uploaded(&name, id)?;
            let now_text = groundtrail_common::time::now_secs().timestamp().to_string();
            self.status("LatestDigestDeliveryTime", Some(&now_text));
            self.status("LatestDigestDeliveryError", None);
            DigestDelivered {
                destination: &name,
                key: &digest.key,
            }
            .emit();
            stored += 1;
        }
        Ok(stored)
    }

    fn failed(&self, key: &str, e: &DestinationError) {
        DeliveryFailed {
            destination: self.destination.name(),
            key,
            error: &e.to_string(),
        }
        .emit();
    }

    /// Whether anything is waiting for this destination.
    pub fn has_pending(&self) -> Result<bool, JournalError> {
        let name = self.destination.name();
        Ok(!self.journal.undelivered(name)?.is_empty()
            || !self.journal.pending_digests(name)?.is_empty())
    }

    /// Delivers until shutdown: a pass whenever woken (and every few seconds anyway), with
    /// backoff after failures.
    pub async fn run(&self, mut shutdown: Shutdown) {
        let mut failures = 0u32;
        while !shutdown.is_shutdown() {
            let wait = match self.pass().await {
                Ok(_) => {
                    failures = 0;
                    None
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let d = backoff(failures);
                    tracing::debug!(destination = self.name(), "retry in {d:?} after: {e}");
                    Some(d)
                }
            };
            tokio::select! {
                _ = shutdown.recv() => break,
                _ = self.wake.notified(), if wait.is_none() => {}
                _ = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(5))) => {}
            }
        }
    }

    /// Delivers everything pending, retrying with backoff, until done or `deadline` (shutdown).
    /// Returns whether everything was delivered.
    pub async fn drain(&self, deadline: tokio::time::Instant) -> bool {
        let mut failures = 0u32;
        loop {
            if self.pass().await.is_ok() {
                match self.has_pending() {
                    Ok(false) => return true,
                    Ok(true) => continue,
                    Err(e) => tracing::error!("{e}"),
                }
            }
            failures = failures.saturating_add(1);
            let d = backoff(failures);
            if tokio::time::Instant::now() + d > deadline {
                return false;
            }
            tokio::time::sleep(d).await;
        }
    }
}

/// One gzip member of `bytes`.
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::local::LocalDestination;
    use crate::destination::{BoxFuture, Object};
    use crate::journal::FileEntry;
    use chrono::Utc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A real local destination that can be switched to refuse, like a bucket with a broken
    /// policy.
    struct Flaky {
        inner: LocalDestination,
        down: AtomicBool,
    }

    impl Destination for Flaky {
        fn name(&self) -> &str {
            self.inner.name()
        }
        fn bucket(&self) -> &str {
            self.inner.bucket()
        }
        fn put<'a>(
            &'a self,
            key: &'a str,
            body: Bytes,
            metadata: &'a Metadata,
        ) -> BoxFuture<'a, Result<(), DestinationError>> {
            if self.down.load(Ordering::SeqCst) {
                return Box::pin(async {
                    Err(DestinationError::Refused {
                        destination: "flaky".into(),
                        message: "403 AccessDenied".into(),
                    })
                });
            }
            self.inner.put(key, body, metadata)
        }
        fn get<'a>(
            &'a self,
            key: &'a str,
        ) -> BoxFuture<'a, Result<Option<Object>, DestinationError>> {
            self.inner.get(key)
        }
        fn list<'a>(
            &'a self,
            prefix: &'a str,
            start_after: Option<&'a str>,
        ) -> BoxFuture<'a, Result<Vec<String>, DestinationError>> {
            self.inner.list(prefix, start_after)
        }
    }

    #[tokio::test]
    async fn a_refusing_destination_holds_delivery_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(&dir.path().join("j")).unwrap());
        let flaky = Arc::new(Flaky {
            inner: LocalDestination::open("flaky".into(), &dir.path().join("t"), "b".into())
                .unwrap(),
            down: AtomicBool::new(true),
        });
        for n in 0..2 {
            let entry = FileEntry {
                key: format!("AWSLogs/111122223333/CloudTrail/us-east-1/2026/01/01/f{n}.json.gz"),
                account: "111122223333".into(),
                region: "us-east-1".into(),
                sha256: "00".into(),
                newest_event_time: "2026-01-01T00:00:00Z".into(),
                oldest_event_time: "2026-01-01T00:00:00Z".into(),
                records: 1,
            };
            journal
                .close_file(&entry, &gzip(b"{}").unwrap(), &[], &["flaky".into()])
                .unwrap();
        }
        let d = Deliverer::new(journal.clone(), flaky.clone(), Arc::new(Notify::new()));
        let before = crate::metrics::metrics().delivery_errors("flaky");
        assert!(d.pass().await.is_err());
        assert!(crate::metrics::metrics().delivery_errors("flaky") > before);
        assert_eq!(
            journal.undelivered("flaky").unwrap().len(),
            2,
            "nothing dropped"
        );
        flaky.down.store(false, Ordering::SeqCst);
        assert_eq!(d.pass().await.unwrap(), 2);
        assert!(!d.has_pending().unwrap());
        let keys = flaky.list("AWSLogs/", None).await.unwrap();
        assert_eq!(keys.len(), 2);
        let chains = journal.chains("flaky").unwrap();
        assert_eq!(chains.values().next().unwrap().waiting.len(), 2);
        let _ = Utc::now();
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 1..40 {
            let d = backoff(attempt);
            assert!(d <= MAX_BACKOFF);
        }
        assert!(backoff(1) <= BASE_BACKOFF);
        assert!(backoff(30) >= MAX_BACKOFF / 2);
    }
}
