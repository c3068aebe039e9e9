//! The Insights detector as a reader of the journal's log: committed records in, Insights
//! records committed back into the journal (see the module doc of [`crate::insights`]).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use groundtrail_common::Record;
use groundtrail_common::shutdown::Shutdown;
use groundtrail_detection::insights::{ConfigError, Detector};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::checkpoint::{self, Checkpoint};
use super::config::InsightsSection;
use crate::journal::{Journal, JournalError, PendingRecord, Prepared};
use crate::log::LogError;
use crate::metrics::metrics;

/// The journal reader name the Insights detector registers as.
pub const READER: &str = "insights";
/// Log bytes read per step at most.
const READ_BYTES: usize = 4 * 1024 * 1024;
/// How long a failed step waits before the next try.
const RETRY: Duration = Duration::from_secs(1);

/// The detector, where it has read to, and where its findings go.
pub struct InsightsReader {
    journal: Arc<Journal>,
    batcher: mpsc::Sender<Vec<PendingRecord>>,
    section: InsightsSection,
    path: PathBuf,
    detector: Arc<Mutex<Detector>>,
    /// The next log entry to read.
    position: u64,
    /// Whether the detector moved since the last checkpoint.
    dirty: bool,
    saved_at: Instant,
    /// Findings the last checkpoint holds as not known to be committed: committed first.
    carried: Vec<Value>,
}

impl std::fmt::Debug for InsightsReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InsightsReader")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl InsightsReader {
    /// Restores the detector from the checkpoint at `path` (or starts one without history)
    /// and registers as a reader of the journal where the checkpoint left off, so nothing
    /// trims the log below it from here on.
    pub fn open(
        journal: Arc<Journal>,
        batcher: mpsc::Sender<Vec<PendingRecord>>,
        section: InsightsSection,
        path: PathBuf,
    ) -> Result<InsightsReader, ConfigError> {
        let mut carried = Vec::new();
        let (detector, recorded) = match checkpoint::load(&path) {
            Some(c) => {
                carried = c.pending;
                let mut d = c.detector;
                if d.config() != &section.model {
                    tracing::info!(
                        "insights: the model's settings changed; the counts carry over and the new settings judge every minute from here"
                    );
                }
                d.reconfigure(section.model.clone())?;
                (d, Some(c.position))
            }
            None => (Detector::new(section.model.clone())?, None),
        };
        let position = journal.resume_reader(READER, recorded);
        tracing::info!(
            types = ?section.types,
            keys = detector.key_count(),
            position,
            "insights: detector running"
        );
        Ok(InsightsReader {
            journal,
            batcher,
            section,
            path,
            detector: Arc::new(Mutex::new(detector)),
            position,
            dirty: recorded.is_none(),
            saved_at: Instant::now(),
            carried,
        })
    }

    /// Runs until `shutdown`, then saves a last checkpoint (when everything found is
    /// committed).
    pub async fn run(mut self, mut shutdown: Shutdown) {
        let mut durable = self.journal.durable_end();
        let idle_after = self.section.close_idle_after.get();
        let mut last_read = Instant::now();
        // Found and not yet committed: the detector has moved past them, so they are
        // committed as they are, however many tries that takes, before anything else.
        let mut found: Vec<Value> = std::mem::take(&mut self.carried);
        loop {
            // Checked on every turn, also while catching up with a long log.
            if shutdown.is_shutdown() || shutdown.recv().now_or_never().is_some() {
                break;
            }
            if !found.is_empty() {
                if let Err(e) = self.commit(&found).await {
                    tracing::error!("insights: committing Insights records failed ({e}); retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = shutdown.recv() => break,
                    }
                    continue;
                }
                found.clear();
            }
            self.checkpoint_if_due(false).await;
            match self.read().await {
                Ok(Some(more)) => {
                    found = more;
                    last_read = Instant::now();
                }
                Ok(None) => {
                    let lag = durable.borrow().saturating_sub(self.position);
                    metrics().insights_lag_entries.store(lag, Ordering::Relaxed);
                    if last_read.elapsed() >= idle_after {
                        // Nothing new for a while: judge the minutes up to now. A replay of
                        // the log would not repeat this (the clock is not in the log), so its
                        // findings are saved with the detector before they are committed.
                        found = self.flush_to_now();
                        if !found.is_empty() {
                            self.save(found.clone()).await;
                        }
                        last_read = Instant::now();
                        continue;
                    }
                    let checkpoint_due = self.saved_at + self.section.checkpoint_interval.get();
                    tokio::select! {
                        changed = durable.changed() => if changed.is_err() { break },
                        _ = tokio::time::sleep_until(last_read + idle_after) => {}
                        _ = tokio::time::sleep_until(checkpoint_due), if self.dirty => {}
                        _ = shutdown.recv() => break,
                    }
                }
                Err(JournalError::Log(LogError::Trimmed(_))) => {
                    let start = self.journal.resume_reader(READER, None);
                    tracing::error!(
                        "insights: log entries {}..{start} were trimmed before the Insights \
                         detector read them (it fell behind the journal's bound); their records \
                         are in the trail and in no rate",
                        self.position
                    );
                    metrics()
                        .insights_skipped_entries
                        .fetch_add(start.saturating_sub(self.position), Ordering::Relaxed);
                    self.position = start;
                    self.dirty = true;
                }
                Err(e) => {
                    tracing::error!("insights: reading the journal: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = shutdown.recv() => break,
                    }
                }
            }
        }
        if found.is_empty() {
            self.checkpoint_if_due(true).await;
        } else {
            tracing::warn!(
                "insights: stopping with Insights records not committed; the next start finds them again from the last checkpoint"
            );
        }
    }

    /// Reads and analyses what the log has from the position; `Ok(None)` when there is
    /// nothing new. Returns the Insights records found, of the selected types.
    async fn read(&mut self) -> Result<Option<Vec<Value>>, JournalError> {
        let j = self.journal.clone();
        let from = self.position;
        let entries = tokio::task::spawn_blocking(move || j.read_committed(from, READ_BYTES))
            .await
            .map_err(|e| JournalError::Other(e.to_string()))??;
        let Some(last) = entries.last() else {
            return Ok(None);
        };
        let next = last.position + 1;
        let detector = self.detector.clone();
        let (found, read, late) = tokio::task::spawn_blocking(move || {
            let mut d = detector.lock().unwrap_or_else(|p| p.into_inner());
            let mut found = Vec::new();
            let mut read = 0u64;
            for entry in &entries {
                for (index, json) in entry.records.iter().enumerate() {
                    read += 1;
                    // A record the detector panics on must not stop Insights (and hold the
                    // journal's log) for good: it is skipped and logged.
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        d.observe_json(json)
                    })) {
                        Ok(out) => found.extend(out),
                        Err(_) => tracing::error!(
                            entry = entry.position,
                            index,
                            "insights: the detector failed on a record; it was skipped"
                        ),
                    }
                }
            }
            (found, read, d.stats().late)
        })
        .await
        .map_err(|e| JournalError::Other(format!("insights task: {e}")))?;
        metrics().insights_read.fetch_add(read, Ordering::Relaxed);
        metrics().insights_late.store(late, Ordering::Relaxed);
        self.position = next;
        self.dirty = true;
        Ok(Some(self.selected(found)))
    }

    /// Judges every minute up to now, less the model's lateness.
    fn flush_to_now(&mut self) -> Vec<Value> {
        let now_ms = groundtrail_common::time::now_secs().timestamp_millis();
        let mut d = self.detector.lock().unwrap_or_else(|p| p.into_inner());
        let lateness_ms = d.config().lateness_minutes * 60_000;
        let found = d.flush_until(now_ms - lateness_ms);
        drop(d);
        self.dirty = true;
        self.selected(found)
    }

    /// Keeps the records of the insight types the trail selects.
    fn selected(&self, found: Vec<Value>) -> Vec<Value> {
        found
            .into_iter()
            .filter(|r| {
                r.pointer("/insightDetails/insightType")
                    .and_then(Value::as_str)
                    .is_some_and(|t| self.section.selects(t))
            })
            .collect()
    }

    /// Commits Insights records to the journal (a repeat from a replay is dropped there, as
    /// their ids are deterministic), waits until they are durable, and hands them to the
    /// batcher.
    async fn commit(&self, found: &[Value]) -> Result<(), JournalError> {
        let mut prepared = Prepared::default();
        let mut described = Vec::new();
        for v in found {
            let record: Record = match serde_json::from_value(v.clone()) {
                Ok(r) => r,
                Err(e) => {
                    // The detector's own output always fits the record model; a mismatch is
                    // a bug to report, not a reason to stall.
                    tracing::error!(
                        "insights: an Insights record does not fit the record model ({e}); dropped: {v}"
                    );
                    continue;
                }
            };
            // The detector's bytes, which keep AWS's member order.
            prepared.push_json(&record, serde_json::to_vec(v).unwrap_or_default());
            described.push(describe(v));
        }
        let journal = self.journal.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            journal.commit_prepared(prepared, &[], groundtrail_common::time::now_secs())
        })
        .await
        .map_err(|e| JournalError::Other(e.to_string()))??;
        self.journal.sync_commits().await?;
        metrics()
            .insights_written
            .fetch_add(outcome.committed.len() as u64, Ordering::Relaxed);
        if outcome.committed.len() == described.len() {
            for d in described {
                tracing::warn!("insight: {d}");
            }
        }
        if !outcome.committed.is_empty() && self.batcher.send(outcome.committed).await.is_err() {
            tracing::debug!("batcher gone; Insights records stay pending in the journal");
        }
        Ok(())
    }

    /// Saves the detector and its position when the interval has passed (or `now`), and then
    /// tells the journal the position, so the log is kept from the checkpoint on.
    async fn checkpoint_if_due(&mut self, now: bool) {
        let due = self.saved_at.elapsed() >= self.section.checkpoint_interval.get();
        if !self.dirty || !(now || due) {
            return;
        }
        self.save(Vec::new()).await;
    }

    /// Saves the detector, its position and `pending` (findings not yet committed), then
    /// tells the journal the position.
    async fn save(&mut self, pending: Vec<Value>) {
        let snapshot = {
            let d = self.detector.lock().unwrap_or_else(|p| p.into_inner());
            let mut c = Checkpoint::new(self.position, d.clone());
            c.pending = pending;
            c
        };
        let path = self.path.clone();
        let saved = tokio::task::spawn_blocking(move || checkpoint::save(&path, &snapshot))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        self.saved_at = Instant::now();
        match saved {
            Ok(()) => {
                self.dirty = false;
                self.journal.set_reader(READER, self.position);
            }
            Err(e) => tracing::error!(
                "insights: saving the checkpoint failed ({e}); the log is kept from the previous one"
            ),
        }
    }
}

/// One line about an Insights record, for the log.
fn describe(v: &Value) -> String {
    let s = |p: &str| v.pointer(p).map(|x| x.to_string()).unwrap_or_default();
    format!(
        "{} {} {} {} at {} (insight average {}/min, baseline {}/min)",
        s("/insightDetails/state"),
        s("/insightDetails/insightType"),
        s("/insightDetails/eventSource"),
        s("/insightDetails/eventName"),
        s("/eventTime"),
        s("/insightDetails/insightContext/statistics/insight/average"),
        s("/insightDetails/insightContext/statistics/baseline/average"),
    )
}
