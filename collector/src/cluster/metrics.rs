//! Cluster mode's counters on `/metrics` (rendered only when cluster mode ran), so an operator
//! sees which shards a collector writes and whether takeovers and refusals happen.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Cluster counters of this process.
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    pub on: AtomicBool,
    /// Shards this collector writes now.
    pub shards_owned: AtomicU64,
    /// Shards this collector took over (including at start-up).
    pub takeovers: AtomicU64,
    /// Shards this collector stopped writing because another took them over.
    pub fenced: AtomicU64,
    /// Leases this collector failed to renew in time.
    pub leases_lost: AtomicU64,
    /// Shard state updates committed.
    pub commits: AtomicU64,
    /// Log files uploaded (each destination counted).
    pub files_uploaded: AtomicU64,
    /// Digests uploaded (each destination counted).
    pub digests_uploaded: AtomicU64,
    /// Records filed into log files by this collector's shard writers.
    pub records_filed: AtomicU64,
    /// Records left out by the shard writers as duplicates.
    pub records_duplicate: AtomicU64,
    /// Records published by ingest (chunks acknowledged as new).
    pub records_published: AtomicU64,
    /// Batches refused by ingest because the stream refused or did not acknowledge.
    pub publish_failures: AtomicU64,
    /// Records indexed into this collector's event history from the stream.
    pub history_indexed: AtomicU64,
}

/// This process's cluster counters.
pub fn metrics() -> &'static ClusterMetrics {
    static M: std::sync::OnceLock<ClusterMetrics> = std::sync::OnceLock::new();
    M.get_or_init(ClusterMetrics::default)
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Appends the cluster metrics to a Prometheus text exposition.
pub fn render(out: &mut String) {
    let m = metrics();
    if !m.on.load(Ordering::Relaxed) {
        return;
    }
    let rows: [(&str, &str, &str, &AtomicU64); 13] = [
        (
            "groundtrail_cluster_shards_owned",
            "gauge",
            "Shards this collector writes now.",
            &m.shards_owned,
        ),
        (
            "groundtrail_cluster_takeovers_total",
            "counter",
            "Shards this collector took over.",
            &m.takeovers,
        ),
        (
            "groundtrail_cluster_fenced_total",
            "counter",
            "Shards this collector stopped writing because another collector took them over.",
            &m.fenced,
        ),
        (
            "groundtrail_cluster_leases_lost_total",
            "counter",
            "Shard leases this collector failed to renew in time.",
            &m.leases_lost,
        ),
        (
            "groundtrail_cluster_state_commits_total",
            "counter",
            "Shard state updates committed.",
            &m.commits,
        ),
        (
            "groundtrail_cluster_files_uploaded_total",
            "counter",
            "Log file uploads by this collector's shard writers (each destination counted).",
            &m.files_uploaded,
        ),
        (
            "groundtrail_cluster_digests_uploaded_total",
            "counter",
            "Digest uploads by this collector's shard writers (each destination counted).",
            &m.digests_uploaded,
        ),
        (
            "groundtrail_cluster_records_filed_total",
            "counter",
            "Records filed into log files by this collector's shard writers.",
            &m.records_filed,
        ),
        (
            "groundtrail_cluster_records_duplicate_total",
            "counter",
            "Records the shard writers left out as already filed.",
            &m.records_duplicate,
        ),
        (
            "groundtrail_cluster_records_published_total",
            "counter",
            "Records ingest published to the cluster's stream.",
            &m.records_published,
        ),
        (
            "groundtrail_cluster_publish_failures_total",
            "counter",
            "Batches refused with 503 because the stream refused or did not acknowledge them.",
            &m.publish_failures,
        ),
        (
            "groundtrail_cluster_history_indexed_total",
            "counter",
            "Records indexed into this collector's event history from the stream.",
            &m.history_indexed,
        ),
        (
            "groundtrail_cluster_up",
            "gauge",
            "1: cluster mode is on.",
            &AtomicU64::new(1),
        ),
    ];
    for (name, kind, help, v) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
            v.load(Ordering::Relaxed)
        );
    }
}
