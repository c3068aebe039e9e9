//! Counters and gauges, rendered in the Prometheus text format (`GET /metrics` on the control
//! socket, and on a loopback address if configured).
//!
//! Plain atomics rather than a metrics crate: a dozen numbers do not justify a dependency in an
//! agent that must stay small.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::buffer::BufferStatus;

/// Shared by the shipper, the app-events endpoint and the control socket.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records the collector committed (new, not duplicates).
    pub shipped_records: AtomicU64,
    /// Records the collector already had (re-sends after a crash or lost answer).
    pub shipped_duplicates: AtomicU64,
    /// Batches answered 200.
    pub shipped_batches: AtomicU64,
    /// Bytes sent on the wire (after compression) in committed batches.
    pub shipped_bytes: AtomicU64,
    /// Failed send attempts that will be (or were) retried.
    pub retries: AtomicU64,
    /// Records the collector refused and the shipper moved aside.
    pub rejected: AtomicU64,
    /// End-to-end lag of the oldest record of the last committed batch (append -> commit), ms.
    pub last_lag_ms: AtomicU64,
    /// Sum of end-to-end lags of all committed records, ms (with `shipped_records` + duplicates
    /// this gives the mean).
    pub lag_ms_sum: AtomicU64,
    /// PutAuditEvents events accepted / failed.
    pub app_events_accepted: AtomicU64,
    pub app_events_failed: AtomicU64,
    /// What the shipper last saw of the collector.
    pub health: Mutex<CollectorHealth>,
}

/// Collector reachability, as the shipper last saw it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectorHealth {
    /// The URL in use.
    pub url: Option<String>,
    /// True after a 200, false after a failed attempt; `None` before the first attempt.
    pub reachable: Option<bool>,
    /// Unix ms of the last 200.
    pub last_success_ms: Option<u64>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u64,
    /// The last commit point the collector returned.
    pub last_commit_point: Option<u64>,
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn health(&self) -> CollectorHealth {
        self.health
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    pub fn update_health(&self, f: impl FnOnce(&mut CollectorHealth)) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut h);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, buffer: &BufferStatus) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metric(
            "groundtrail_agent_buffer_records",
            "gauge",
            "Records in the buffer, not yet committed by the collector.",
            buffer.depth,
        );
        metric(
            "groundtrail_agent_buffer_bytes",
            "gauge",
            "Compressed bytes of records in the buffer (queue and side tree).",
            buffer.bytes,
        );
        metric(
            "groundtrail_agent_buffer_max_bytes",
            "gauge",
            "The buffer's size limit.",
            buffer.max_bytes,
        );
        metric(
            "groundtrail_agent_buffer_oldest_age_seconds",
            "gauge",
            "Age of the oldest record not yet committed.",
            buffer.oldest_age_ms.unwrap_or(0) / 1000,
        );
        metric(
            "groundtrail_agent_buffer_waiting_appends",
            "gauge",
            "Appends waiting for space (buffer full, block policy).",
            buffer.waiting_appends,
        );
        metric(
            "groundtrail_agent_commit_point",
            "gauge",
            "Last sequence number the collector committed.",
            buffer.last_commit_point.unwrap_or(0),
        );
        metric(
            "groundtrail_agent_next_seq",
            "gauge",
            "Next sequence number the buffer assigns.",
            buffer.next_seq,
        );
        metric(
            "groundtrail_agent_appended_records_total",
            "counter",
            "Records appended to the buffer since start.",
            buffer.appended_total,
        );
        metric(
            "groundtrail_agent_dropped_records_total",
            "counter",
            "Records dropped because the buffer was full (drop_newest).",
            buffer.dropped_total,
        );
        metric(
            "groundtrail_agent_corrupt_entries_total",
            "counter",
            "Corrupt buffer entries skipped.",
            buffer.corrupt_total,
        );
        metric(
            "groundtrail_agent_rejected_records_total",
            "counter",
            "Records the collector refused (set aside, or not kept when the side tree was full).",
            get(&self.rejected),
        );
        metric(
            "groundtrail_agent_set_aside_records",
            "gauge",
            "Records in the side tree (refused by the collector, waiting to be resent).",
            buffer.set_aside,
        );
        metric(
            "groundtrail_agent_set_aside_bytes",
            "gauge",
            "Bytes of the side tree (counted within the buffer's bytes and max_bytes).",
            buffer.set_aside_bytes,
        );
        metric(
            "groundtrail_agent_set_aside_max_bytes",
            "gauge",
            "The side tree's bound.",
            buffer.set_aside_max_bytes,
        );
        metric(
            "groundtrail_agent_set_aside_discarded_total",
            "counter",
            "Refused records not kept because the side tree was full.",
            buffer.set_aside_discarded_total,
        );
        metric(
            "groundtrail_agent_set_aside_resent_total",
            "counter",
            "Set-aside records the collector accepted on a resend.",
            buffer.set_aside_resent_total,
        );
        metric(
            "groundtrail_agent_buffer_storage_errors_total",
            "counter",
            "Failed buffer storage operations (writes, flushes, deletions).",
            buffer.storage_errors_total,
        );
        metric(
            "groundtrail_agent_buffer_storage_failing",
            "gauge",
            "1 while buffer writes are failing (a stuck store stops the systemd watchdog).",
            u64::from(buffer.storage_failure.is_some()),
        );
        metric(
            "groundtrail_agent_shipped_records_total",
            "counter",
            "Records the collector committed.",
            get(&self.shipped_records),
        );
        metric(
            "groundtrail_agent_shipped_duplicates_total",
            "counter",
            "Records the collector already had.",
            get(&self.shipped_duplicates),
        );
        metric(
            "groundtrail_agent_shipped_batches_total",
            "counter",
            "Batches the collector committed.",
            get(&self.shipped_batches),
        );
        metric(
            "groundtrail_agent_shipped_bytes_total",
            "counter",
            "Bytes sent in committed batches (on the wire).",
            get(&self.shipped_bytes),
        );
        metric(
            "groundtrail_agent_retries_total",
            "counter",
            "Failed send attempts (retried).",
            get(&self.retries),
        );
        metric(
            "groundtrail_agent_lag_seconds",
            "gauge",
            "End-to-end lag (append to commit) of the oldest record of the last committed batch.",
            get(&self.last_lag_ms) / 1000,
        );
        metric(
            "groundtrail_agent_lag_milliseconds_sum",
            "counter",
            "Sum of the end-to-end lags of committed records, in ms.",
            get(&self.lag_ms_sum),
        );
        metric(
            "groundtrail_agent_app_events_accepted_total",
            "counter",
            "PutAuditEvents events stored.",
            get(&self.app_events_accepted),
        );
        metric(
            "groundtrail_agent_app_events_failed_total",
            "counter",
            "PutAuditEvents events refused.",
            get(&self.app_events_failed),
        );
        metric(
            "groundtrail_records_truncated_total",
            "counter",
            "Records cut to fit the collector's limits before they were stored (marked in additionalEventData.groundtrailTruncated).",
            get(&crate::sink::TRUNCATED),
        );
        let health = self.health();
        metric(
            "groundtrail_agent_collector_reachable",
            "gauge",
            "1 if the last send attempt succeeded.",
            u64::from(health.reachable == Some(true)),
        );
        let tail = &crate::sources::tail::TOTALS;
        for (name, help, c) in [
            ("lines", "Lines the file followers read.", &tail.lines),
            (
                "oversize",
                "Lines skipped for being too long.",
                &tail.oversize,
            ),
            (
                "rotations",
                "Rotations by rename followed.",
                &tail.rotations,
            ),
            (
                "truncations",
                "Truncations (copytruncate) noticed.",
                &tail.truncations,
            ),
        ] {
            metric(
                &format!("groundtrail_tail_{name}_total"),
                "counter",
                help,
                get(c),
            );
        }
        let sc = &crate::sources::sidecar::STATS;
        for (name, help, c) in [
            ("requests", "Calls the sidecar received.", &sc.requests),
            (
                "records_written",
                "Sidecar records the buffer confirmed.",
                &sc.records_written,
            ),
            (
                "records_lost",
                "Sidecar records lost (and counted).",
                &sc.records_lost,
            ),
            (
                "refused",
                "Calls refused with 503 under fail_closed.",
                &sc.refused,
            ),
            (
                "upstream_errors",
                "Calls answered 502/504: the upstream failed.",
                &sc.upstream_errors,
            ),
            (
                "connections_refused",
                "Connections closed at once: max_connections reached.",
                &sc.connections_refused,
            ),
        ] {
            metric(
                &format!("groundtrail_sidecar_{name}_total"),
                "counter",
                help,
                get(c),
            );
        }
        // Every line (auditd: event) of every host source, by outcome: a shape no parser
        // knows is counted here, never an error.
        let name = "groundtrail_source_lines_total";
        let _ = writeln!(
            out,
            "# HELP {name} Lines each host source read, by outcome (records, ignored, unrecognized, malformed)."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (source, s) in crate::sources::stats() {
            for (outcome, v) in [
                ("records", s.records),
                ("ignored", s.ignored),
                ("unrecognized", s.unrecognized),
                ("malformed", s.malformed),
            ] {
                let _ = writeln!(
                    out,
                    "{name}{{source=\"{source}\",outcome=\"{outcome}\"}} {v}"
                );
            }
        }
        out
    }
}
