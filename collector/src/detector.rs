//! The detector: follows the journal's log and evaluates every committed record against the
//! loaded detection rules ([`groundtrail_detection::rules`]); what fires becomes an [`Alert`],
//! stored and queued for the notifiers by the [`AlertStore`].
//!
//! # Guarantees
//!
//! - **Every committed record is evaluated, within seconds, without slowing a `200`.** The
//!   detector reads what is durable in the log (the same records the trail will hold, not the
//!   5-minute log files) on its own task, woken as soon as the log grows.
//! - **An alert is durable before it is announced.** One store commit holds, atomically and
//!   fsynced: the new alerts, their place in every notifier's queue, the rules' window state,
//!   and the log position evaluated up to. Only after it are the notifiers woken and the
//!   journal told the position ([`Journal::set_reader`]), so the log is never trimmed below a
//!   record that was not evaluated.
//! - **A crash changes nothing that was announced.** A restart resumes from the stored
//!   position with the stored window state, so the records after it are evaluated again with
//!   the same state and raise the same alerts. Alert ids are deterministic
//!   (`<rule id>/<eventID>`), so an alert raised again is stored and queued once. A commit
//!   that fails is retried with the same alerts, state and position until the store takes
//!   it; nothing after it is evaluated meanwhile.
//! - **Bounded lag.** Like the history indexer, the detector holds the log back only up to the
//!   journal's reader bound; entries trimmed before it read them are logged and counted
//!   (`groundtrail_detection_skipped_entries_total`). Lag is on `/metrics`.
//! - **Rules change without a restart.** SIGHUP, or a change in `[detection] rules_dir` (seen
//!   within [`WATCH_INTERVAL`]), reloads the rules. A rule set that does not load leaves the
//!   old one running; the error (file, rule, position) is logged, counted and shown by
//!   `ListRules`. Window state of unchanged rules carries over.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use groundtrail_common::shutdown::Shutdown;
use groundtrail_detection::rules::{Engine, Firing, RuleSet};
use serde_json::{Value, json};

use crate::alerts::config::DetectionConfig;
use crate::alerts::store::{AlertStore, StateWrite};
use crate::alerts::{Alert, AlertGroup};
use crate::journal::{CommittedEntry, Journal, JournalError};
use crate::log::LogError;
use crate::metrics::metrics;

/// The journal reader name the detector registers as.
pub const READER: &str = "detection";
/// Log bytes read per step at most.
const READ_BYTES: usize = 4 * 1024 * 1024;
/// How long a failed step waits before the next try.
const RETRY: Duration = Duration::from_secs(1);
/// How often `rules_dir` is checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// eventIDs (and LookupEvents inputs) an alert carries at most.
const MAX_EVENT_IDS: usize = 100;

/// Why the detector could not start.
#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error("[detection] rules: {0}")]
    Rules(#[from] groundtrail_detection::rules::LoadError),
    #[error("[detection] alert store: {0}")]
    Store(String),
}

/// What the last rules load did, for `ListRules` and the logs.
#[derive(Debug, Clone)]
pub struct RulesStatus {
    /// When the running rule set was loaded.
    pub loaded_at: DateTime<Utc>,
    /// The last failed load (the running set is older), with when it failed.
    pub last_error: Option<(DateTime<Utc>, String)>,
}

/// The rule engine and where its alerts go.
pub struct Detector {
    config: DetectionConfig,
    engine: Mutex<Engine>,
    rules: RwLock<(RuleSet, RulesStatus)>,
    store: Arc<AlertStore>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector").finish_non_exhaustive()
    }
}

/// Loads the rule set `config` names: its packs and its rules directory.
pub fn load_rules(
    config: &DetectionConfig,
) -> Result<RuleSet, groundtrail_detection::rules::LoadError> {
    RuleSet::load(&config.packs, config.rules_dir.as_deref())
}

impl Detector {
    /// Loads the rules and restores the window state the store kept. (The store itself wakes
    /// the notifiers once queued alerts are durable.)
    pub fn new(config: DetectionConfig, store: Arc<AlertStore>) -> Result<Detector, DetectorError> {
        let rules = load_rules(&config)?;
        let mut engine = Engine::new(rules.clone());
        engine.restore_state(
            store
                .window_state()
                .map_err(|e| DetectorError::Store(e.to_string()))?,
        );
        metrics()
            .detection_rules_loaded
            .store(rules.len() as u64, Ordering::Relaxed);
        tracing::info!(rules = rules.len(), "detection rules loaded");
        let status = RulesStatus {
            loaded_at: groundtrail_common::time::now_secs(),
            last_error: None,
        };
        Ok(Detector {
            config,
            engine: Mutex::new(engine),
            rules: RwLock::new((rules, status)),
            store,
        })
    }

    /// The alert store.
    pub fn store(&self) -> &Arc<AlertStore> {
        &self.store
    }

    /// The running rule set and the status of the last load.
    pub fn rules(&self) -> (RuleSet, RulesStatus) {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Loads the rules again (SIGHUP, a changed rules directory). On error the running rules
    /// stay, and the error is kept for `ListRules`.
    pub fn reload(&self) -> Result<usize, String> {
        match load_rules(&self.config) {
            Ok(rules) => {
                let n = rules.len();
                self.lock_engine().replace_rules(rules.clone());
                *self.rules.write().unwrap_or_else(|p| p.into_inner()) = (
                    rules,
                    RulesStatus {
                        loaded_at: groundtrail_common::time::now_secs(),
                        last_error: None,
                    },
                );
                metrics()
                    .detection_rules_loaded
                    .store(n as u64, Ordering::Relaxed);
                tracing::info!(rules = n, "detection rules reloaded");
                Ok(n)
            }
            Err(e) => {
                let message = e.to_string();
                metrics()
                    .detection_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "detection rules not reloaded, the previous rules keep running: {message}"
                );
                let mut guard = self.rules.write().unwrap_or_else(|p| p.into_inner());
                guard.1.last_error = Some((groundtrail_common::time::now_secs(), message.clone()));
                Err(message)
            }
        }
    }

    fn lock_engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Evaluates the entries' records; the alerts raised and the window-state changes.
    fn evaluate(&self, entries: &[CommittedEntry]) -> (Vec<Alert>, Vec<StateWrite>, u64) {
        let now =
            groundtrail_common::time::now_secs().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut engine = self.lock_engine();
        let mut alerts = Vec::new();
        let mut evaluated = 0u64;
        for entry in entries {
            for json in &entry.records {
                let Ok(record) = serde_json::from_slice::<Value>(json) else {
                    // Committed records were validated JSON; a record that is not cannot match.
                    continue;
                };
                evaluated += 1;
                // A record that makes the engine panic must not stall detection (and hold the
                // journal's log) for good: it is skipped, logged and counted.
                let fired = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    engine.evaluate(&record)
                }));
                match fired {
                    Ok(firings) => alerts.extend(
                        firings
                            .into_iter()
                            .map(|f| alert(f, &record, &now, self.config.include_record)),
                    ),
                    Err(_) => {
                        metrics()
                            .detection_record_errors
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            event_id = record["eventID"].as_str().unwrap_or("?"),
                            "detection: the rule engine failed on a record; it was skipped"
                        );
                    }
                }
            }
        }
        (alerts, engine.take_state_changes(), evaluated)
    }
}

/// Builds the alert for one firing of a rule on `record`.
fn alert(firing: Firing, record: &Value, now: &str, include_record: bool) -> Alert {
    let lookup = firing
        .event_ids
        .iter()
        .rev()
        .take(MAX_EVENT_IDS)
        .map(|id| json!({"LookupAttributes": [{"AttributeKey": "EventId", "AttributeValue": id}]}))
        .collect();
    let records = if include_record {
        vec![record.clone()]
    } else {
        Vec::new()
    };
    Alert {
        id: firing.id,
        rule_id: firing.rule.id.clone(),
        rule_title: firing.rule.title.clone(),
        severity: firing.rule.severity.to_string(),
        language: firing.rule.language.to_string(),
        rule_origin: firing.rule.origin.clone(),
        detected_at: now.to_string(),
        first_event_time: firing.first_event_time,
        last_event_time: firing.last_event_time,
        group: firing
            .group
            .map(|(field, value)| AlertGroup { field, value }),
        count: firing.count,
        event_ids: firing.event_ids,
        records,
        summary: firing.summary,
        lookup,
        silenced_by: None,
    }
}

/// Starts the detector; it runs until `shutdown`. It registers as a reader of the journal
/// before it returns, so nothing trims the log below its position in between.
pub fn spawn(
    journal: Arc<Journal>,
    detector: Arc<Detector>,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    // A new alert store has none: everything the log still holds (records not yet filed).
    let recorded = detector.store.position().unwrap_or_else(|e| {
        tracing::error!(
            "detection: cannot read the evaluated position ({e}); from the log's start"
        );
        None
    });
    let position = journal.resume_reader(READER, recorded);
    tokio::spawn(run(journal, detector, shutdown, position))
}

async fn run(
    journal: Arc<Journal>,
    detector: Arc<Detector>,
    mut shutdown: Shutdown,
    mut position: u64,
) {
    let mut durable = journal.durable_end();
    // Evaluated and not yet stored. The engine has moved past it, so it is never evaluated
    // again in this process: it is committed as it is, however many tries that takes.
    let mut pending: Option<Evaluated> = None;
    loop {
        if shutdown.is_shutdown() {
            return;
        }
        let batch = match pending.take() {
            Some(batch) => batch,
            None => match evaluate(&journal, &detector, position).await {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    report_lag(position, *durable.borrow());
                    tokio::select! {
                        changed = durable.changed() => if changed.is_err() { return },
                        _ = shutdown.recv() => return,
                    }
                    continue;
                }
                Err(JournalError::Log(LogError::Trimmed(_))) => {
                    let start = journal.resume_reader(READER, None);
                    tracing::error!(
                        "detection: log entries {position}..{start} were trimmed before they \
                         were evaluated (the detector fell behind the journal's bound); no \
                         rule saw their records, the trail has them"
                    );
                    metrics()
                        .detection_skipped_entries
                        .fetch_add(start.saturating_sub(position), Ordering::Relaxed);
                    position = start;
                    continue;
                }
                Err(e) => {
                    tracing::error!("detection: reading the journal: {e}");
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = shutdown.recv() => return,
                    }
                    continue;
                }
            },
        };
        match commit(&detector, &batch).await {
            Ok(()) => {
                position = batch.next;
                journal.set_reader(READER, position);
                report_lag(position, *durable.borrow());
            }
            Err(e) => {
                tracing::error!(
                    "detection: the alert store refused a commit ({e}); retrying the same \
                     alerts and state"
                );
                pending = Some(batch);
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = shutdown.recv() => return,
                }
            }
        }
    }
}

/// One step's evaluation, to be committed as a whole.
struct Evaluated {
    /// The log position after the step's entries.
    next: u64,
    alerts: Vec<Alert>,
    state: Vec<StateWrite>,
    /// Records evaluated.
    records: u64,
}

/// Evaluates what the log has from `position`; `Ok(None)` when there is nothing new.
async fn evaluate(
    journal: &Arc<Journal>,
    detector: &Arc<Detector>,
    position: u64,
) -> Result<Option<Evaluated>, JournalError> {
    let j = journal.clone();
    let entries = tokio::task::spawn_blocking(move || j.read_committed(position, READ_BYTES))
        .await
        .map_err(|e| JournalError::Other(e.to_string()))??;
    let Some(last) = entries.last() else {
        return Ok(None);
    };
    let next = last.position + 1;
    let oldest = entries.first().map(|e| e.received_at).unwrap_or(0);
    metrics()
        .detection_lag_seconds
        .store(now_unix().saturating_sub(oldest), Ordering::Relaxed);
    let d = detector.clone();
    let (alerts, state, records) = tokio::task::spawn_blocking(move || d.evaluate(&entries))
        .await
        .map_err(|e| JournalError::Other(format!("detection task: {e}")))?;
    Ok(Some(Evaluated {
        next,
        alerts,
        state,
        records,
    }))
}

/// Stores a step's alerts, state and position (one fsynced commit; the same batch committed
/// again changes nothing), then counts and logs the new alerts.
async fn commit(detector: &Arc<Detector>, batch: &Evaluated) -> Result<(), String> {
    let new = detector
        .store
        .commit(batch.next, batch.alerts.clone(), batch.state.clone())
        .await
        .map_err(|e| e.to_string())?;
    metrics()
        .detection_evaluated
        .fetch_add(batch.records, Ordering::Relaxed);
    if !new.is_empty() {
        for a in &new {
            // Medium and above in the log at warn; the rest (package installs, hunting rules)
            // at debug, so that a busy host's routine alerts do not flood the log.
            if crate::alerts::meets(&a.severity, Some("medium")) {
                tracing::warn!(
                    alert = %a.id,
                    rule = %a.rule_id,
                    severity = %a.severity,
                    silenced = a.silenced_by.is_some(),
                    "alert: {}",
                    a.summary
                );
            } else {
                tracing::debug!(alert = %a.id, rule = %a.rule_id, severity = %a.severity, "alert: {}", a.summary);
            }
        }
    }
    Ok(())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn report_lag(position: u64, durable: u64) {
    let lag = durable.saturating_sub(position);
    metrics()
        .detection_lag_entries
        .store(lag, Ordering::Relaxed);
    if lag == 0 {
        metrics().detection_lag_seconds.store(0, Ordering::Relaxed);
    }
}

/// Reloads the rules on SIGHUP and when a file of `rules_dir` changes, until `shutdown`.
pub async fn watch_rules(detector: Arc<Detector>, mut shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(
                "detection: cannot listen for SIGHUP ({e}); rules reload on change only"
            );
            None
        }
    };
    let dir = detector.config.rules_dir.clone();
    let mut seen = dir.as_deref().map(dir_fingerprint);
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let hangup = async {
            match hup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = hangup => {
                tracing::info!("SIGHUP: reloading the detection rules");
                let _ = detector.reload();
                seen = dir.as_deref().map(dir_fingerprint);
            }
            _ = tick.tick() => {
                let Some(dir) = dir.as_deref() else { continue };
                let now = dir_fingerprint(dir);
                if seen.as_ref() != Some(&now) {
                    seen = Some(now);
                    tracing::info!("{}: changed, reloading the detection rules", dir.display());
                    let _ = detector.reload();
                }
            }
        }
    }
}

/// Names, sizes and modification times of a directory's files: what a reload is keyed on.
fn dir_fingerprint(dir: &std::path::Path) -> Vec<(String, u64, Option<SystemTime>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.modified().ok(),
            ))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An alert is built from a real firing: its id, rule and lookup inputs, and the record
    /// only when `include_record` is on.
    #[test]
    fn an_alert_carries_the_record_unless_told_not_to() {
        let rules = RuleSet::from_text(
            "t.yaml",
            "rules:\n  - id: stop\n    title: Trail stopped\n    severity: high\n    filter_pattern: '{ $.eventName = \"StopLogging\" }'\n",
        )
        .unwrap();
        let mut engine = Engine::new(rules);
        let rec = json!({
            "eventID": "e-1", "eventTime": "2026-12-07T10:00:00Z", "eventName": "StopLogging"
        });
        assert!(
            engine
                .evaluate(&json!({"eventID": "e-0", "eventTime": "2026-12-07T10:00:00Z", "eventName": "StartLogging"}))
                .is_empty()
        );
        let firing = engine.evaluate(&rec).pop().expect("the rule fires");
        let a = alert(firing.clone(), &rec, "2026-12-07T10:00:01Z", true);
        assert_eq!(a.id, "stop/e-1");
        assert_eq!(
            (a.rule_id.as_str(), a.severity.as_str(), a.language.as_str()),
            ("stop", "high", "filter-pattern")
        );
        assert_eq!(a.records, vec![rec.clone()]);
        assert_eq!(a.event_ids, vec!["e-1".to_string()]);
        assert_eq!(
            a.lookup,
            vec![
                json!({"LookupAttributes": [{"AttributeKey": "EventId", "AttributeValue": "e-1"}]})
            ]
        );
        assert_eq!(a.detected_at, "2026-12-07T10:00:01Z");
        let b = alert(firing, &rec, "2026-12-07T10:00:01Z", false);
        assert!(b.records.is_empty());
        assert_eq!(b.event_ids, a.event_ids);
    }
}
