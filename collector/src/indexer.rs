//! The event history's indexer: follows the journal's log and indexes every committed record
//! into the [`History`], behind ingest rather than in front of it.
//!
//! # Guarantees
//!
//! - **Never slows a `200`.** Ingest appends to the log and returns; the indexer reads what is
//!   durable in the log on its own task, at its own pace.
//! - **Nothing committed is missing from the history after a crash.** The indexer records in
//!   the history store the log position it has indexed up to, in the same store and made
//!   durable by the same flush as the entries; only then does it tell the journal
//!   ([`Journal::set_reader`]), which never trims the log below it. A restart resumes from the
//!   recorded position; entries indexed twice are written once (the history is keyed by
//!   `eventID`).
//! - **Complete after a clean stop.** Once ingest and the batcher have stopped, [`drain`]
//!   indexes what the log holds (within the shutdown grace) before the collector exits.
//! - **Bounded lag.** How far it is behind is reported on `/metrics`
//!   (`groundtrail_history_lag_entries`, `groundtrail_history_lag_seconds`). The log keeps
//!   what the indexer has not read only up to [`crate::journal`]'s reader bound: a history that
//!   is broken for good must not fill the journal's disk and stop the trail. Entries trimmed
//!   before it read them are counted (`groundtrail_history_skipped_batches_total`) and logged;
//!   the trail itself is complete either way.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::history::History;
use crate::journal::{Journal, JournalError};
use crate::log::LogError;
use crate::metrics::metrics;
use groundtrail_common::shutdown::Shutdown;

/// The journal reader name the indexer registers as.
pub const READER: &str = "history";

/// Log bytes read per step at most (held twice while a step runs: the entries and their
/// records).
const READ_BYTES: usize = 8 * 1024 * 1024;
/// Records inserted in one store batch at most: index groups are per insert, so larger ones
/// pack better, and one insert is one flush.
const INDEX_BATCH: usize = 20_000;
/// How long a failed step waits before the next try.
const RETRY: Duration = Duration::from_secs(1);

/// Starts the indexer; it runs until `shutdown`. It registers as a reader of the journal
/// before it returns, so nothing trims the log below its position in between.
pub fn spawn(
    journal: Arc<Journal>,
    history: Arc<History>,
    retention: Duration,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    // A new (or cleared) history has none: everything the log still has.
    let recorded = history.indexed_position().unwrap_or_else(|e| {
        tracing::error!(
            "event history: cannot read the indexed position ({e}); from the log's start"
        );
        None
    });
    let position = journal.resume_reader(READER, recorded);
    tokio::spawn(run(journal, history, retention, shutdown, position))
}

/// At a clean stop, once ingest and the batcher are done: indexes what the log holds (for at
/// most `grace`), so that the history is complete when the collector exits.
pub async fn drain(
    journal: &Arc<Journal>,
    history: &Arc<History>,
    retention: Duration,
    grace: Duration,
) {
    let deadline = tokio::time::Instant::now() + grace;
    let mut position = journal
        .reader(READER)
        .unwrap_or_else(|| journal.log_start());
    loop {
        match tokio::time::timeout_at(deadline, step(journal, history, position, retention)).await {
            Ok(Ok(Some(next))) => {
                position = next;
                journal.set_reader(READER, position);
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                tracing::error!("event history indexer, at shutdown: {e}");
                break;
            }
            Err(_) => {
                tracing::warn!(
                    "event history: shutdown grace ran out while indexing; the next start goes \
                     on from log entry {position}"
                );
                break;
            }
        }
    }
    report_lag(position, journal.durable_end_now());
}

async fn run(
    journal: Arc<Journal>,
    history: Arc<History>,
    retention: Duration,
    mut shutdown: Shutdown,
    mut position: u64,
) {
    let mut durable = journal.durable_end();
    loop {
        if shutdown.is_shutdown() {
            return;
        }
        match step(&journal, &history, position, retention).await {
            Ok(Some(next)) => {
                position = next;
                journal.set_reader(READER, position);
                report_lag(position, *durable.borrow());
                continue;
            }
            Ok(None) => report_lag(position, *durable.borrow()),
            Err(JournalError::Log(LogError::Trimmed(_))) => {
                let start = journal.resume_reader(READER, None);
                tracing::error!(
                    "event history: log entries {position}..{start} were trimmed before they \
                     were indexed (the indexer fell behind the journal's bound); LookupEvents \
                     will not find their records, the trail has them"
                );
                metrics()
                    .history_skipped_batches
                    .fetch_add(start.saturating_sub(position), Ordering::Relaxed);
                position = start;
                continue;
            }
            Err(e) => {
                tracing::error!("event history indexer: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = shutdown.recv() => return,
                }
                continue;
            }
        }
        // Caught up: wait for the log to grow.
        tokio::select! {
            changed = durable.changed() => if changed.is_err() { return },
            _ = shutdown.recv() => return,
        }
    }
}

/// Indexes what the log has from `position`; `Ok(Some(next))` after indexing (and making
/// durable) entries up to `next`, `Ok(None)` when there was nothing new.
async fn step(
    journal: &Arc<Journal>,
    history: &Arc<History>,
    position: u64,
    retention: Duration,
) -> Result<Option<u64>, JournalError> {
    let j = journal.clone();
    let entries = tokio::task::spawn_blocking(move || j.read_committed(position, READ_BYTES))
        .await
        .map_err(|e| JournalError::Other(e.to_string()))??;
    let Some(last) = entries.last() else {
        return Ok(None);
    };
    let next = last.position + 1;
    let oldest = entries.first().map(|e| e.received_at).unwrap_or(0);
    metrics().history_lag_seconds.store(
        (groundtrail_common::time::now_secs().timestamp().max(0) as u64).saturating_sub(oldest),
        Ordering::Relaxed,
    );
    let records: Vec<Vec<u8>> = entries.into_iter().flat_map(|e| e.records).collect();
    let count = records.len() as u64;
    let cutoff = (groundtrail_common::time::now_secs().timestamp().max(0) as u64)
        .saturating_sub(retention.as_secs());
    let h = history.clone();
    tokio::task::spawn_blocking(move || {
        for part in records.chunks(INDEX_BATCH) {
            h.insert(part.iter().map(|j| j.as_slice()), cutoff)?;
        }
        h.set_indexed_position(next)
    })
    .await
    .map_err(|e| JournalError::Other(e.to_string()))?
    .map_err(|e| JournalError::Other(format!("event history: {e}")))?;
    history
        .flush()
        .await
        .map_err(|e| JournalError::Other(format!("event history flush: {e}")))?;
    metrics()
        .history_indexed
        .fetch_add(count, Ordering::Relaxed);
    Ok(Some(next))
}

fn report_lag(position: u64, durable: u64) {
    let lag = durable.saturating_sub(position);
    metrics().history_lag_entries.store(lag, Ordering::Relaxed);
    if lag == 0 {
        metrics().history_lag_seconds.store(0, Ordering::Relaxed);
    }
}
