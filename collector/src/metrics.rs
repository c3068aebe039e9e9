//! The collector's counters, exposed as Prometheus text on `GET /metrics`.
//!
//! Counters are plain atomics in one process-wide registry: emitting an event (see
//! [`crate::internal_events`]) is a few atomic adds, cheap enough for the ingest hot path, and
//! needs no handle threaded through every function. Counters labelled by destination live in a
//! small map behind a mutex; there are only a handful of destinations.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Every counter the collector keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records received in well-formed batches (before dedup).
    pub records_received: AtomicU64,
    /// Records newly written to the journal.
    pub records_committed: AtomicU64,
    /// Records dropped as duplicates of a known `eventID`.
    pub records_duplicate: AtomicU64,
    /// Batches refused, by error code.
    refused: Mutex<BTreeMap<String, u64>>,
    /// Log files closed (recorded in the journal).
    pub files_closed: AtomicU64,
    /// Per destination: files delivered, delivery errors, digests delivered.
    destinations: Mutex<BTreeMap<String, DestinationCounters>>,
    /// Digests signed and recorded.
    pub digests_written: AtomicU64,
    /// Audit records written about agents (gaps, silence).
    pub agent_audit_records: AtomicU64,
    /// Connections closed at once because their peer held `max_connections_per_peer`.
    pub connections_refused: AtomicU64,
    /// Queued webhook notifications dropped because a queue reached `max_queued`.
    pub notifications_dropped: AtomicU64,
    /// Stores (journal, history) found stuck: each one stops the watchdog and the process.
    pub stores_stuck: AtomicU64,
    /// Records indexed into the event history.
    pub history_indexed: AtomicU64,
    /// Committed batches the event history's indexer skipped because the log was trimmed past
    /// it (see [`crate::indexer`]).
    pub history_skipped_batches: AtomicU64,
    /// Log entries committed but not yet indexed into the event history (a gauge).
    pub history_lag_entries: AtomicU64,
    /// Seconds between the oldest entry not yet indexed and now, as of the indexer's last
    /// step (a gauge; 0 when caught up).
    pub history_lag_seconds: AtomicU64,
    /// Alerts newly stored by detection (silenced ones included).
    pub alerts_raised: AtomicU64,
    /// Alerts stored silenced, so sent to no notifier.
    pub alerts_silenced: AtomicU64,
    /// Per alert notifier: deliveries, failed attempts, drops, and the queue length.
    alert_notifiers: Mutex<BTreeMap<String, AlertNotifierCounters>>,
    /// Records the detection rules were evaluated on (see [`crate::detector`]).
    pub detection_evaluated: AtomicU64,
    /// Log entries trimmed before the detector evaluated them.
    pub detection_skipped_entries: AtomicU64,
    /// Log entries committed but not yet evaluated (a gauge).
    pub detection_lag_entries: AtomicU64,
    /// Age of the oldest entry not yet evaluated, as of the detector's last step (a gauge).
    pub detection_lag_seconds: AtomicU64,
    /// Rules loaded (a gauge).
    pub detection_rules_loaded: AtomicU64,
    /// Rule reloads refused (the previous rules kept running).
    pub detection_reload_failures: AtomicU64,
    /// Records the rule engine failed on (skipped, logged).
    pub detection_record_errors: AtomicU64,
    /// Records the Insights detector read (see [`crate::insights`]).
    pub insights_read: AtomicU64,
    /// Insights records committed to the trail (Start and End).
    pub insights_written: AtomicU64,
    /// Records that came for a minute the Insights detector had already judged (a gauge of
    /// the detector's own count, which survives restarts with its state).
    pub insights_late: AtomicU64,
    /// Log entries trimmed before the Insights detector read them.
    pub insights_skipped_entries: AtomicU64,
    /// Log entries committed but not yet read by the Insights detector (a gauge).
    pub insights_lag_entries: AtomicU64,
    /// Records the trail did not record (its event selectors did not take them, or it was
    /// not logging): in the event history, in no log file.
    pub records_passed_over: AtomicU64,
    /// Per `[[trails]]` trail: what its feed read, took and skipped (see [`crate::trails`]).
    trail_feeds: Mutex<BTreeMap<String, FeedCounters>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct FeedCounters {
    read: u64,
    taken: u64,
    skipped_entries: u64,
    lag_entries: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct AlertNotifierCounters {
    delivered: u64,
    failed: u64,
    dropped: u64,
    /// A gauge: entries in the notifier's queue.
    queued: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct DestinationCounters {
    files: u64,
    digests: u64,
    errors: u64,
}

/// The process-wide registry.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::default)
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn connection_refused(&self) {
        Self::add(&self.connections_refused, 1);
    }

    pub(crate) fn refused(&self, code: &str) {
        let mut m = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(code.to_string()).or_default() += 1;
    }

    fn feed(&self, trail: &str, f: impl FnOnce(&mut FeedCounters)) {
        let mut m = self.trail_feeds.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(trail.to_string()).or_default());
    }

    /// A trail's feed read `read` records of the collector's journal and took `taken`.
    pub(crate) fn feed_read(&self, trail: &str, read: u64, taken: u64) {
        self.feed(trail, |c| {
            c.read += read;
            c.taken += taken;
        });
    }

    /// A trail's feed found `entries` log entries trimmed before it read them.
    pub(crate) fn feed_skipped(&self, trail: &str, entries: u64) {
        self.feed(trail, |c| c.skipped_entries += entries);
    }

    /// A trail's feed is `entries` log entries behind the journal's end.
    pub(crate) fn feed_lag(&self, trail: &str, entries: u64) {
        self.feed(trail, |c| c.lag_entries = entries);
    }

    fn destination(&self, name: &str, f: impl FnOnce(&mut DestinationCounters)) {
        let mut m = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(name.to_string()).or_default());
    }

    pub(crate) fn file_delivered(&self, destination: &str) {
        self.destination(destination, |c| c.files += 1);
    }

    pub(crate) fn digest_delivered(&self, destination: &str) {
        self.destination(destination, |c| c.digests += 1);
    }

    pub(crate) fn delivery_error(&self, destination: &str) {
        self.destination(destination, |c| c.errors += 1);
    }

    fn alert_notifier(&self, name: &str, f: impl FnOnce(&mut AlertNotifierCounters)) {
        let mut m = self
            .alert_notifiers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f(m.entry(name.to_string()).or_default());
    }

    pub(crate) fn alert_delivered(&self, notifier: &str) {
        self.alert_notifier(notifier, |c| c.delivered += 1);
    }

    pub(crate) fn alert_failed(&self, notifier: &str) {
        self.alert_notifier(notifier, |c| c.failed += 1);
    }

    pub(crate) fn alert_dropped(&self, notifier: &str, n: u64) {
        self.alert_notifier(notifier, |c| c.dropped += n);
    }

    pub(crate) fn alert_queued(&self, notifier: &str, queued: u64) {
        self.alert_notifier(notifier, |c| c.queued = queued);
    }

    /// (delivered, failed attempts, dropped, queued) so far for an alert notifier.
    pub fn alert_notifier_counts(&self, notifier: &str) -> (u64, u64, u64, u64) {
        let m = self
            .alert_notifiers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        m.get(notifier)
            .map(|c| (c.delivered, c.failed, c.dropped, c.queued))
            .unwrap_or_default()
    }

    /// Delivery errors so far for `destination`.
    pub fn delivery_errors(&self, destination: &str) -> u64 {
        let m = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
        m.get(destination).map(|c| c.errors).unwrap_or(0)
    }

    /// The Prometheus text exposition (format 0.0.4). `gauges` are extra point-in-time values
    /// (journal backlog) computed by the caller.
    pub fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            &mut out,
            "groundtrail_records_received_total",
            "Records received in well-formed batches.",
            get(&self.records_received),
        );
        counter(
            &mut out,
            "groundtrail_records_committed_total",
            "Records newly written to the journal.",
            get(&self.records_committed),
        );
        counter(
            &mut out,
            "groundtrail_records_duplicate_total",
            "Records dropped as duplicates by eventID.",
            get(&self.records_duplicate),
        );
        counter(
            &mut out,
            "groundtrail_log_files_closed_total",
            "Log files closed and recorded for delivery.",
            get(&self.files_closed),
        );
        counter(
            &mut out,
            "groundtrail_digests_written_total",
            "Digests signed and recorded.",
            get(&self.digests_written),
        );
        counter(
            &mut out,
            "groundtrail_agent_audit_records_total",
            "AgentSequenceGap and AgentSilent records written.",
            get(&self.agent_audit_records),
        );
        counter(
            &mut out,
            "groundtrail_connections_refused_total",
            "Connections closed at once: their peer address held max_connections_per_peer.",
            get(&self.connections_refused),
        );
        counter(
            &mut out,
            "groundtrail_notifications_dropped_total",
            "Queued webhook notifications dropped because the queue reached max_queued.",
            get(&self.notifications_dropped),
        );
        counter(
            &mut out,
            "groundtrail_stores_stuck_total",
            "Journal or history found failing every write (the collector then restarts).",
            get(&self.stores_stuck),
        );
        counter(
            &mut out,
            "groundtrail_history_indexed_records_total",
            "Records indexed into the event history (LookupEvents).",
            get(&self.history_indexed),
        );
        counter(
            &mut out,
            "groundtrail_history_skipped_batches_total",
            "Committed batches never indexed: the log was trimmed past the history's indexer.",
            get(&self.history_skipped_batches),
        );
        counter(
            &mut out,
            "groundtrail_alerts_raised_total",
            "Alerts raised by detection and stored (silenced ones included).",
            get(&self.alerts_raised),
        );
        counter(
            &mut out,
            "groundtrail_alerts_silenced_total",
            "Alerts stored silenced, so sent to no notifier.",
            get(&self.alerts_silenced),
        );
        counter(
            &mut out,
            "groundtrail_detection_records_evaluated_total",
            "Committed records the detection rules were evaluated on.",
            get(&self.detection_evaluated),
        );
        counter(
            &mut out,
            "groundtrail_detection_skipped_entries_total",
            "Committed batches never evaluated: the log was trimmed past the detector.",
            get(&self.detection_skipped_entries),
        );
        counter(
            &mut out,
            "groundtrail_detection_reload_failures_total",
            "Rule reloads refused; the previous rules kept running.",
            get(&self.detection_reload_failures),
        );
        counter(
            &mut out,
            "groundtrail_detection_record_errors_total",
            "Records the rule engine failed on: skipped, and logged.",
            get(&self.detection_record_errors),
        );
        counter(
            &mut out,
            "groundtrail_records_passed_over_total",
            "Records the trail did not record (event selectors, or logging stopped): in the event history, in no log file.",
            get(&self.records_passed_over),
        );
        counter(
            &mut out,
            "groundtrail_insights_records_read_total",
            "Committed records the Insights detector read.",
            get(&self.insights_read),
        );
        counter(
            &mut out,
            "groundtrail_insights_written_total",
            "Insights records (Start and End) committed to the trail.",
            get(&self.insights_written),
        );
        counter(
            &mut out,
            "groundtrail_insights_late_records_total",
            "Records for a minute the Insights detector had already judged: in the trail, in no rate.",
            get(&self.insights_late),
        );
        counter(
            &mut out,
            "groundtrail_insights_skipped_entries_total",
            "Committed batches the Insights detector never read: the log was trimmed past it.",
            get(&self.insights_skipped_entries),
        );
        for (name, help, v) in [
            (
                "groundtrail_insights_lag_entries",
                "Committed batches not yet read by the Insights detector.",
                get(&self.insights_lag_entries),
            ),
            (
                "groundtrail_detection_lag_entries",
                "Committed batches not yet evaluated by the detection rules.",
                get(&self.detection_lag_entries),
            ),
            (
                "groundtrail_detection_lag_seconds",
                "Age of the oldest committed batch not yet evaluated by the detection rules.",
                get(&self.detection_lag_seconds),
            ),
            (
                "groundtrail_detection_rules",
                "Detection rules loaded.",
                get(&self.detection_rules_loaded),
            ),
            (
                "groundtrail_history_lag_entries",
                "Committed batches not yet indexed into the event history.",
                get(&self.history_lag_entries),
            ),
            (
                "groundtrail_history_lag_seconds",
                "Age of the oldest committed batch not yet indexed into the event history.",
                get(&self.history_lag_seconds),
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP groundtrail_batches_refused_total Batches refused, by error code.\n# TYPE groundtrail_batches_refused_total counter"
        );
        for (code, n) in self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "groundtrail_batches_refused_total{{code=\"{}\"}} {n}",
                escape(code)
            );
        }
        let dests = self
            .destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (name, help, pick) in [
            (
                "groundtrail_files_delivered_total",
                "Log files stored at a destination.",
                (|c: &DestinationCounters| c.files) as fn(&DestinationCounters) -> u64,
            ),
            (
                "groundtrail_digests_delivered_total",
                "Digests stored at a destination.",
                |c| c.digests,
            ),
            (
                "groundtrail_delivery_errors_total",
                "Failed uploads to a destination (each is retried).",
                |c| c.errors,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (d, c) in &dests {
                let _ = writeln!(out, "{name}{{destination=\"{}\"}} {}", escape(d), pick(c));
            }
        }
        let feeds = self
            .trail_feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (name, help, kind, pick) in [
            (
                "groundtrail_trail_records_read_total",
                "Records a [[trails]] trail's feed read from the collector's journal.",
                "counter",
                (|c: &FeedCounters| c.read) as fn(&FeedCounters) -> u64,
            ),
            (
                "groundtrail_trail_records_taken_total",
                "Records a [[trails]] trail's selectors took into its journal.",
                "counter",
                |c| c.taken,
            ),
            (
                "groundtrail_trail_skipped_entries_total",
                "Log entries trimmed before a [[trails]] trail's feed read them (records it lacks).",
                "counter",
                |c| c.skipped_entries,
            ),
            (
                "groundtrail_trail_lag_entries",
                "Log entries a [[trails]] trail's feed has not read yet.",
                "gauge",
                |c| c.lag_entries,
            ),
        ] {
            if feeds.is_empty() {
                break;
            }
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (t, c) in &feeds {
                let _ = writeln!(out, "{name}{{trail=\"{}\"}} {}", escape(t), pick(c));
            }
        }
        let notifiers = self
            .alert_notifiers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (name, help, kind, pick) in [
            (
                "groundtrail_alert_notifications_delivered_total",
                "Alerts a notifier answered 2xx to.",
                "counter",
                (|c: &AlertNotifierCounters| c.delivered) as fn(&AlertNotifierCounters) -> u64,
            ),
            (
                "groundtrail_alert_notifications_failed_total",
                "Failed attempts to send an alert to a notifier (each is retried).",
                "counter",
                |c| c.failed,
            ),
            (
                "groundtrail_alert_notifications_dropped_total",
                "Queued alerts dropped from a notifier's queue because it reached max_queued.",
                "counter",
                |c| c.dropped,
            ),
            (
                "groundtrail_alert_notifications_queued",
                "Alerts queued for a notifier, not yet delivered.",
                "gauge",
                |c| c.queued,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (n, c) in &notifiers {
                let _ = writeln!(out, "{name}{{notifier=\"{}\"}} {}", escape(n), pick(c));
            }
        }
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        crate::cluster::metrics::render(&mut out);
        out
    }
}

/// Escapes a Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        Metrics::add(&m.records_committed, 3);
        m.refused("InvalidData");
        m.delivery_error("s3:\"x\"");
        let text = m.render(&[(
            "groundtrail_journal_pending_records",
            "Records not yet in a file.",
            7,
        )]);
        assert!(text.contains("groundtrail_records_committed_total 3\n"));
        assert!(text.contains("groundtrail_batches_refused_total{code=\"InvalidData\"} 1\n"));
        assert!(
            text.contains("groundtrail_delivery_errors_total{destination=\"s3:\\\"x\\\"\"} 1\n")
        );
        assert!(text.contains("# TYPE groundtrail_journal_pending_records gauge\ngroundtrail_journal_pending_records 7\n"));
        assert_eq!(m.delivery_errors("s3:\"x\""), 1);
        Metrics::add(&m.alerts_raised, 2);
        m.alert_delivered("soc");
        m.alert_failed("soc");
        m.alert_queued("soc", 4);
        let text = m.render(&[]);
        assert!(text.contains("groundtrail_alerts_raised_total 2\n"));
        assert!(
            text.contains("groundtrail_alert_notifications_delivered_total{notifier=\"soc\"} 1\n")
        );
        assert!(
            text.contains("groundtrail_alert_notifications_failed_total{notifier=\"soc\"} 1\n")
        );
        assert!(text.contains("# TYPE groundtrail_alert_notifications_queued gauge\ngroundtrail_alert_notifications_queued{notifier=\"soc\"} 4\n"));
    }
}
