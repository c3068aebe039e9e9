//! The single-node collector's background tasks beside the pipelines: detection, the
//! retention of alerts, history and dedup keys, and the silent-agent watch.

use std::sync::Arc;
use std::time::Duration;

use groundtrail_common::shutdown::Shutdown;
use tokio::sync::mpsc;

use super::ServeError;
use crate::agents::AgentTracker;
use crate::config::Config;
use crate::history::History;
use crate::journal::Journal;

/// Starts the rule engine, the alert notifiers and the rules watch (`[detection]`), unless
/// detection is off. A rule set or a notifier that does not load stops the start with its error:
/// a collector must not run believing it watches what it does not.
pub(super) fn start_detection(
    config: &Config,
    journal: &Arc<Journal>,
    shutdown: &Shutdown,
    background: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Option<Arc<crate::detector::Detector>>, ServeError> {
    use crate::detector::{Detector, DetectorError};
    let d = &config.detection;
    if !d.enabled {
        tracing::info!("detection: off ([detection] enabled = false)");
        return Ok(None);
    }
    let store_err = |e: crate::alerts::AlertError| DetectorError::Store(e.to_string());
    let notifiers = d
        .notifiers
        .iter()
        .map(crate::alerts::notifier::Notifier::new)
        .collect::<Result<Vec<_>, _>>()
        .map_err(store_err)?;
    let store = Arc::new(
        crate::alerts::store::AlertStore::open_for(&config.alerts_path(), d).map_err(store_err)?,
    );
    let detector = Arc::new(Detector::new(d.clone(), store.clone())?);
    background.push(crate::detector::spawn(
        journal.clone(),
        detector.clone(),
        shutdown.clone(),
    ));
    background.push(tokio::spawn(crate::detector::watch_rules(
        detector.clone(),
        shutdown.clone(),
    )));
    background.push(tokio::spawn(expire_alerts(
        store.clone(),
        d.retention.get(),
        shutdown.clone(),
    )));
    background.extend(crate::alerts::deliver::spawn(
        store,
        notifiers,
        shutdown.clone(),
    ));
    Ok(Some(detector))
}

/// Deletes stored alerts older than `[detection] retention` (and no longer queued), hourly.
async fn expire_alerts(
    store: Arc<crate::alerts::store::AlertStore>,
    retention: Duration,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        let cutoff = groundtrail_common::time::now_secs()
            - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let before = cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.prune(&before)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "alerts past [detection] retention deleted"),
            Ok(Err(e)) => tracing::error!("alert retention: {e}"),
            Err(e) => tracing::error!("alert retention task: {e}"),
        }
    }
}

/// Drops history events older than the retention, every minute (in slices of 10,000 so a
/// large expiry does not hold the store).
pub(super) async fn expire_history(
    history: Arc<History>,
    retention: Duration,
    mut shutdown: Shutdown,
) {
    loop {
        let cutoff = (groundtrail_common::time::now_secs().timestamp().max(0) as u64)
            .saturating_sub(retention.as_secs());
        loop {
            let h = history.clone();
            match tokio::task::spawn_blocking(move || h.expire(cutoff, 10_000)).await {
                Ok(Ok(n)) if n >= 10_000 => continue,
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => {
                    tracing::debug!(expired = n, "event history pruned");
                    break;
                }
                Ok(Err(e)) => {
                    tracing::error!("event history expiry: {e}");
                    break;
                }
                Err(e) => {
                    tracing::error!("event history expiry task: {e}");
                    break;
                }
            }
        }
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
}

/// Forgets `eventID`s older than the dedup window, every tenth of it (at most every minute).
pub(super) async fn expire_dedup(journal: Arc<Journal>, window: Duration, mut shutdown: Shutdown) {
    let every = (window / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match journal.expire_dedup(groundtrail_common::time::now_secs(), window) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(expired = n, "dedup index pruned"),
            Err(e) => tracing::error!("dedup expiry: {e}"),
        }
    }
}

/// Writes `AgentSilent` records for agents silent too long.
pub(super) async fn watch_silence(
    journal: Arc<Journal>,
    tracker: Arc<AgentTracker>,
    silence: Duration,
    batcher: mpsc::Sender<Vec<crate::journal::PendingRecord>>,
    mut shutdown: Shutdown,
) {
    let every = (silence / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let outcome = match tracker.check_silence(&journal, groundtrail_common::time::now_secs()) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!("agent silence check: {e}");
                continue;
            }
        };
        if outcome.committed.is_empty() {
            continue;
        }
        if let Err(e) = journal.flush().await {
            // Not durable: the batcher must not file them (the journal restarts and finds
            // them, or not, in its log).
            tracing::error!("agent silence check: {e}");
            continue;
        }
        let _ = batcher.send(outcome.committed).await;
    }
}
