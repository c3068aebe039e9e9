//! What one trail runs once records are in its journal: the batcher (its log files), one
//! deliverer per destination, and the digest writer (its chains). The primary trail and every
//! `[[trails]]` trail run the same pipeline; they differ only in where their journal's records
//! come from (ingest, or the trail's feed).

use std::sync::Arc;

use groundtrail_common::shutdown::Shutdown;
use groundtrail_common::trail::{SigningKey, TrailLayout};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use super::TrailSpec;
use crate::batcher::Batcher;
use crate::config::Config;
use crate::delivery::Deliverer;
use crate::digest::{DigestTarget, DigestWriter};
use crate::journal::{Journal, JournalError, PendingRecord};
use crate::service::ServeError;
use crate::trail_control::TrailControl;

/// A running trail.
pub struct Pipeline {
    /// What the trail is.
    pub spec: TrailSpec,
    /// Its journal: the collector's for the primary trail, its own for the others.
    pub journal: Arc<Journal>,
    /// Its logging state and event selectors, as changed through the API.
    pub control: Arc<TrailControl>,
    /// Its destinations' names.
    pub destinations: Vec<String>,
    batcher: Option<JoinHandle<Result<(), JournalError>>>,
    deliverers: Vec<Arc<Deliverer>>,
    digests: Option<Arc<DigestWriter>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("trail", &self.spec.name)
            .field("destinations", &self.destinations)
            .finish_non_exhaustive()
    }
}

/// What a trail's pipeline is started with besides its journal.
pub struct Start<'a> {
    pub config: &'a Config,
    pub key: Arc<SigningKey>,
    /// The control the trail's API calls change (loaded from its journal).
    pub control: Arc<TrailControl>,
    /// Records committed to the trail's journal, for the batcher. The pipeline ends when every
    /// sender is dropped.
    pub records: mpsc::Receiver<Vec<PendingRecord>>,
    /// Whether the batcher itself judges records by `control` (the primary trail: its journal
    /// holds every received record). A `[[trails]]` trail's feed judged them already.
    pub judge: bool,
    /// The webhooks told about delivered files, and the notifier's wake (the primary trail).
    pub notifications: Option<(Vec<String>, Arc<Notify>)>,
}

impl Pipeline {
    /// Opens the trail's destinations, reloads its pending records into the batcher and starts
    /// its tasks (pushed to `background`). Nothing is sent to a destination here: a store that
    /// is down delays delivery, it does not stop the collector.
    pub async fn start(
        spec: TrailSpec,
        journal: Arc<Journal>,
        start: Start<'_>,
        background: &mut Vec<JoinHandle<()>>,
        shutdown: &Shutdown,
    ) -> Result<Pipeline, ServeError> {
        let Start {
            config,
            key,
            control,
            records,
            judge,
            notifications,
        } = start;
        let mut destinations = Vec::new();
        for d in &spec.destinations {
            let dest = crate::destination::open(d)
                .await
                .map_err(|e| ServeError::Destination {
                    name: d.name(),
                    why: format!("{e:#}"),
                })?;
            destinations.push(dest);
        }
        let wakes: Vec<Arc<Notify>> = destinations
            .iter()
            .map(|_| Arc::new(Notify::new()))
            .collect();
        let names: Vec<String> = destinations.iter().map(|d| d.name().to_string()).collect();
        for orphan in journal.destinations_with_backlog()? {
            if !names.contains(&orphan) {
                tracing::warn!(
                    trail = %spec.name,
                    destination = %orphan,
                    "the journal holds undelivered files for a destination that is no longer configured; they wait until it is configured again"
                );
            }
        }
        let layout = TrailLayout::new(&spec.s3_key_prefix, spec.organization_id.as_deref());
        let t = &config.trail;
        let mut batcher = Batcher::new(
            journal.clone(),
            layout.clone(),
            t.log_file_interval.get(),
            t.log_file_max_bytes,
            names.clone(),
            wakes.clone(),
        );
        if judge {
            batcher = batcher.with_control(control.clone());
        }
        let reloaded = journal.pending()?;
        if !reloaded.is_empty() {
            tracing::info!(
                trail = %spec.name,
                records = reloaded.len(),
                "reloaded pending records from the journal"
            );
            batcher.add(reloaded).await?;
        }
        let batcher = tokio::spawn(batcher.run(records, shutdown.clone()));

        let deliverers: Vec<Arc<Deliverer>> = destinations
            .iter()
            .zip(&wakes)
            .map(|(d, w)| {
                let d = Deliverer::new(journal.clone(), d.clone(), w.clone());
                Arc::new(match &notifications {
                    Some((webhooks, wake)) => d.with_notifications(webhooks.clone(), wake.clone()),
                    None => d,
                })
            })
            .collect();
        for d in &deliverers {
            let d = d.clone();
            let s = shutdown.clone();
            background.push(tokio::spawn(async move { d.run(s).await }));
        }
        let digests = if spec.log_file_validation {
            let writer = DigestWriter::new(
                journal.clone(),
                key,
                layout,
                spec.name.clone(),
                spec.home_region.clone(),
                t.digest_interval.get(),
                destinations
                    .iter()
                    .zip(&wakes)
                    .map(|(d, w)| DigestTarget {
                        name: d.name().to_string(),
                        bucket: d.bucket().to_string(),
                        wake: w.clone(),
                    })
                    .collect(),
            );
            let writer = Arc::new(if t.account_id.is_empty() {
                writer
            } else {
                writer.with_seed(
                    &t.account_id,
                    &spec.home_region,
                    groundtrail_common::time::now_secs(),
                )
            });
            let w = writer.clone();
            let s = shutdown.clone();
            background.push(tokio::spawn(async move { w.run(s).await }));
            Some(writer)
        } else {
            tracing::info!(trail = %spec.name, "log file validation is off: no digests");
            None
        };
        Ok(Pipeline {
            spec,
            journal,
            control,
            destinations: names,
            batcher: Some(batcher),
            deliverers,
            digests,
        })
    }

    /// Waits for the batcher to close every open file (its senders must be gone).
    pub async fn close_files(&mut self) {
        let Some(task) = self.batcher.take() else {
            return;
        };
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(
                trail = %self.spec.name,
                "closing log files failed: {e}; their records stay pending"
            ),
            Err(e) => tracing::error!(trail = %self.spec.name, "batcher task failed: {e}"),
        }
    }

    /// Delivers what is pending, writes the digests covering it and delivers those, until
    /// `deadline`. Returns whether everything went out.
    pub async fn deliver(&self, deadline: tokio::time::Instant) -> bool {
        let files = drain(&self.deliverers, deadline).await;
        if let Some(digests) = &self.digests
            && let Err(e) = digests
                .write_due(groundtrail_common::time::now_secs(), true)
                .await
        {
            tracing::error!(trail = %self.spec.name, "final digest failed: {e}");
        }
        let digests = drain(&self.deliverers, deadline).await;
        files && digests
    }
}

async fn drain(deliverers: &[Arc<Deliverer>], deadline: tokio::time::Instant) -> bool {
    let results =
        futures_util::future::join_all(deliverers.iter().map(|d| d.drain(deadline))).await;
    results.into_iter().all(|ok| ok)
}
