//! One module per scenario. Every figure a scenario reports is listed in [`EXPECTED`] (its
//! stable id, section and label), so a failed scenario still shows each of its figures as
//! "not measured" with the reason, and the smoke test can check that a run has them all.

pub mod agent_buffer;
pub mod agent_e2e;
pub mod cluster;
pub mod collector;
pub mod detection;
pub mod fanin;
pub mod footprint;
pub mod history;
pub mod latency;

use crate::Ctx;
use crate::report::{Goal, Report};

pub const S_COLLECTOR: &str = "1. collector: records in -> delivered log files (simulated agents over the real wire protocol)";
pub const S_AGENT: &str =
    "2. agent: durable appends (in-process Buffer) and end to end (real agent binary)";
pub const S_LATENCY: &str = "3. delivery latency: capture -> record in a delivered log file";
pub const S_FOOTPRINT: &str = "4. footprint (VmRSS, CPU from /proc)";
pub const S_FANIN: &str = "5. fan-in: simulated agents into one collector";
pub const S_DETECTION: &str = "7. detection: rule engine cost (default packs), alert latency at a steady rate (real collector, webhook), Insights detector cost";
pub const S_CLUSTER: &str = "8. cluster mode: three NATS servers (R3, fsync always) and 1-3 collectors on this machine, beside one collector without [cluster]; takeover after kill -9";
pub const S_HISTORY: &str = "6. event history: indexing and LookupEvents first pages (in-process History, generator records)";

/// (scenario, figure id, section, label).
pub const EXPECTED: &[(&str, &str, &str, &str)] = &[
    (
        "detection",
        "detection.engine_ns_per_record",
        S_DETECTION,
        "engine, default packs: JSON parse + evaluate, per record (one thread)",
    ),
    (
        "detection",
        "detection.parse_ns_per_record",
        S_DETECTION,
        "of which the JSON parse alone",
    ),
    (
        "detection",
        "detection.collector_cpu_us_per_record_off",
        S_DETECTION,
        "collector CPU per record at a steady rate, detection off",
    ),
    (
        "detection",
        "detection.collector_cpu_us_per_record_on",
        S_DETECTION,
        "collector CPU per record at a steady rate, detection on (default packs)",
    ),
    (
        "detection",
        "detection.cpu_share_percent",
        S_DETECTION,
        "detection's share of the collector's per-record CPU",
    ),
    (
        "detection",
        "detection.alert_p50_ms",
        S_DETECTION,
        "alert latency: batch's 200 -> webhook receipt, p50",
    ),
    (
        "detection",
        "detection.alert_p99_ms",
        S_DETECTION,
        "alert latency: batch's 200 -> webhook receipt, p99",
    ),
    (
        "detection",
        "insights.parse_and_detect_ns_per_record",
        S_DETECTION,
        "Insights detector (both series, default model): the counted members parsed + observe, per record (as the reader does)",
    ),
    (
        "detection",
        "insights.whole_parse_and_detect_ns_per_record",
        S_DETECTION,
        "the same with the whole record parsed into a serde_json::Value first",
    ),
    (
        "detection",
        "insights.cpu_share_percent_estimated",
        S_DETECTION,
        "Insights' estimated share of the collector's per-record CPU (in-process cost / CPU per record, detection off)",
    ),
    (
        "cluster",
        "cluster.single.delivered_records_per_s",
        S_CLUSTER,
        "single node (no [cluster]), same records, settings and measurement: delivered",
    ),
    (
        "cluster",
        "cluster.single.cpu_us_per_record",
        S_CLUSTER,
        "single node: collector CPU per record",
    ),
    (
        "cluster",
        "cluster.1.acked_records_per_s",
        S_CLUSTER,
        "1 collector: acknowledged (200 after every chunk's R3 publish)",
    ),
    (
        "cluster",
        "cluster.1.delivered_records_per_s",
        S_CLUSTER,
        "1 collector: delivered",
    ),
    (
        "cluster",
        "cluster.1.total_cpu_us_per_record",
        S_CLUSTER,
        "1 collector: CPU per record, every process (collectors + NATS servers)",
    ),
    (
        "cluster",
        "cluster.1.collectors_cpu_us_per_record",
        S_CLUSTER,
        "1 collector: CPU per record, the collectors together",
    ),
    (
        "cluster",
        "cluster.1.nats_cpu_us_per_record",
        S_CLUSTER,
        "1 collector: CPU per record, the three NATS servers together",
    ),
    (
        "cluster",
        "cluster.1.per_collector_cpu_us_per_record",
        S_CLUSTER,
        "1 collector: CPU per record, per collector (mean)",
    ),
    (
        "cluster",
        "cluster.1.per_nats_cpu_us_per_record",
        S_CLUSTER,
        "1 collector: CPU per record, per NATS server (mean)",
    ),
    (
        "cluster",
        "cluster.2.acked_records_per_s",
        S_CLUSTER,
        "2 collectors: acknowledged (200 after every chunk's R3 publish)",
    ),
    (
        "cluster",
        "cluster.2.delivered_records_per_s",
        S_CLUSTER,
        "2 collectors: delivered",
    ),
    (
        "cluster",
        "cluster.2.total_cpu_us_per_record",
        S_CLUSTER,
        "2 collectors: CPU per record, every process (collectors + NATS servers)",
    ),
    (
        "cluster",
        "cluster.2.collectors_cpu_us_per_record",
        S_CLUSTER,
        "2 collectors: CPU per record, the collectors together",
    ),
    (
        "cluster",
        "cluster.2.nats_cpu_us_per_record",
        S_CLUSTER,
        "2 collectors: CPU per record, the three NATS servers together",
    ),
    (
        "cluster",
        "cluster.2.per_collector_cpu_us_per_record",
        S_CLUSTER,
        "2 collectors: CPU per record, per collector (mean)",
    ),
    (
        "cluster",
        "cluster.2.per_nats_cpu_us_per_record",
        S_CLUSTER,
        "2 collectors: CPU per record, per NATS server (mean)",
    ),
    (
        "cluster",
        "cluster.3.acked_records_per_s",
        S_CLUSTER,
        "3 collectors: acknowledged (200 after every chunk's R3 publish)",
    ),
    (
        "cluster",
        "cluster.3.delivered_records_per_s",
        S_CLUSTER,
        "3 collectors: delivered",
    ),
    (
        "cluster",
        "cluster.3.total_cpu_us_per_record",
        S_CLUSTER,
        "3 collectors: CPU per record, every process (collectors + NATS servers)",
    ),
    (
        "cluster",
        "cluster.3.collectors_cpu_us_per_record",
        S_CLUSTER,
        "3 collectors: CPU per record, the collectors together",
    ),
    (
        "cluster",
        "cluster.3.nats_cpu_us_per_record",
        S_CLUSTER,
        "3 collectors: CPU per record, the three NATS servers together",
    ),
    (
        "cluster",
        "cluster.3.per_collector_cpu_us_per_record",
        S_CLUSTER,
        "3 collectors: CPU per record, per collector (mean)",
    ),
    (
        "cluster",
        "cluster.3.per_nats_cpu_us_per_record",
        S_CLUSTER,
        "3 collectors: CPU per record, per NATS server (mean)",
    ),
    (
        "cluster",
        "cluster.takeover.all_shards_s",
        S_CLUSTER,
        "takeover after kill -9 of a shard's owner (2 collectors): kill -> the survivor owns every shard",
    ),
    (
        "cluster",
        "cluster.takeover.first_record_s",
        S_CLUSTER,
        "takeover: kill -> the first record of that shard posted after the kill is in a delivered file",
    ),
    (
        "collector",
        "collector.acked_records_per_s",
        S_COLLECTOR,
        "collector acknowledged (200 after journal flush)",
    ),
    (
        "collector",
        "collector.acked_mb_per_s",
        S_COLLECTOR,
        "collector acknowledged, input JSON",
    ),
    (
        "collector",
        "collector.delivered_records_per_s",
        S_COLLECTOR,
        "collector delivered (first POST -> every log file written)",
    ),
    (
        "collector",
        "collector.delivered_mb_per_s",
        S_COLLECTOR,
        "collector delivered, input JSON",
    ),
    (
        "collector",
        "collector.two_trails_delivered_records_per_s",
        S_COLLECTOR,
        "two trails (a [[trails]] trail taking every record): delivered",
    ),
    (
        "collector",
        "collector.two_trails_records_per_cpu_second",
        S_COLLECTOR,
        "two trails: collector records per CPU-second",
    ),
    (
        "collector",
        "collector.second_trail_cpu_us_per_record",
        S_COLLECTOR,
        "CPU per record the second trail adds",
    ),
    (
        "collector",
        "collector.cpu_seconds",
        S_COLLECTOR,
        "collector CPU time for the run (user+sys)",
    ),
    (
        "collector",
        "collector.records_per_cpu_second",
        S_COLLECTOR,
        "collector records per CPU-second (= per core)",
    ),
    (
        "collector",
        "collector.gzip_share_percent",
        S_COLLECTOR,
        "collector delivered rate / raw gzip rate",
    ),
    (
        "collector",
        "collector.raw_gzip_records_per_s",
        S_COLLECTOR,
        "raw gzip (flate2, level 6) of the same {\"Records\":[...]}",
    ),
    (
        "collector",
        "collector.raw_gzip_mb_per_s",
        S_COLLECTOR,
        "raw gzip, input JSON",
    ),
    (
        "collector",
        "collector.serde_value_records_per_s",
        S_COLLECTOR,
        "serde_json parse + serialize (Value), same records",
    ),
    (
        "collector",
        "collector.serde_record_records_per_s",
        S_COLLECTOR,
        "serde_json parse + validate + serialize (Record)",
    ),
    (
        "agent-buffer",
        "agent.raw_sled_appends_per_s",
        S_AGENT,
        "raw sled insert + flush, 1 record each",
    ),
    (
        "agent-buffer",
        "agent.buffer_1_appends_per_s",
        S_AGENT,
        "agent buffer, 1 record per durable append",
    ),
    (
        "agent-buffer",
        "agent.buffer_batch_records_per_s",
        S_AGENT,
        "agent buffer, 100 records per durable append",
    ),
    (
        "agent-buffer",
        "agent.buffer_concurrent_appends_per_s",
        S_AGENT,
        "agent buffer, 4 concurrent appenders, 1 record each",
    ),
    (
        "agent-e2e",
        "agent.e2e_accepted_records_per_s",
        S_AGENT,
        "agent PutAuditEvents accepted (durable in its buffer)",
    ),
    (
        "agent-e2e",
        "agent.e2e_committed_records_per_s",
        S_AGENT,
        "agent -> collector committed (agent buffer empty)",
    ),
    (
        "agent-e2e",
        "agent.e2e_delivered_records_per_s",
        S_AGENT,
        "agent -> delivered log files, end to end",
    ),
    (
        "latency",
        "latency.p50_s",
        S_LATENCY,
        "delivery latency p50",
    ),
    (
        "latency",
        "latency.p99_s",
        S_LATENCY,
        "delivery latency p99",
    ),
    (
        "latency",
        "latency.max_s",
        S_LATENCY,
        "delivery latency max",
    ),
    (
        "footprint",
        "footprint.agent_idle_rss_mib",
        S_FOOTPRINT,
        "agent idle: RSS (mean over window)",
    ),
    (
        "footprint",
        "footprint.agent_idle_rss_anon_mib",
        S_FOOTPRINT,
        "agent idle: of it anonymous (RssAnon)",
    ),
    (
        "footprint",
        "footprint.agent_idle_cpu_percent",
        S_FOOTPRINT,
        "agent idle: CPU",
    ),
    (
        "footprint",
        "footprint.agent_1k_rate",
        S_FOOTPRINT,
        "agent loaded: achieved input rate",
    ),
    (
        "footprint",
        "footprint.agent_1k_rss_mib",
        S_FOOTPRINT,
        "agent at 1k records/s: RSS (max over window)",
    ),
    (
        "footprint",
        "footprint.agent_1k_cpu_percent",
        S_FOOTPRINT,
        "agent at 1k records/s: CPU",
    ),
    (
        "footprint",
        "footprint.collector_10k_rate",
        S_FOOTPRINT,
        "collector loaded: achieved input rate",
    ),
    (
        "footprint",
        "footprint.collector_10k_rss_mib",
        S_FOOTPRINT,
        "collector at 10k records/s: RSS (max over window)",
    ),
    (
        "footprint",
        "footprint.collector_10k_cpu_percent",
        S_FOOTPRINT,
        "collector at 10k records/s: CPU",
    ),
    (
        "fanin",
        "fanin.1.acked_records_per_s",
        S_FANIN,
        "1 agent: acknowledged",
    ),
    (
        "fanin",
        "fanin.1.delivered_records_per_s",
        S_FANIN,
        "1 agent: delivered",
    ),
    (
        "fanin",
        "fanin.1.p99_request_ms",
        S_FANIN,
        "1 agent: request latency p99",
    ),
    (
        "fanin",
        "fanin.10.acked_records_per_s",
        S_FANIN,
        "10 agents: acknowledged",
    ),
    (
        "fanin",
        "fanin.10.delivered_records_per_s",
        S_FANIN,
        "10 agents: delivered",
    ),
    (
        "fanin",
        "fanin.10.p99_request_ms",
        S_FANIN,
        "10 agents: request latency p99",
    ),
    (
        "fanin",
        "fanin.100.acked_records_per_s",
        S_FANIN,
        "100 agents: acknowledged",
    ),
    (
        "fanin",
        "fanin.100.delivered_records_per_s",
        S_FANIN,
        "100 agents: delivered",
    ),
    (
        "fanin",
        "fanin.100.p99_request_ms",
        S_FANIN,
        "100 agents: request latency p99",
    ),
    (
        "history",
        "history.1m.index_events_per_s",
        S_HISTORY,
        "1M events: indexing (insert + flush)",
    ),
    (
        "history",
        "history.1m.index_mb_per_s",
        S_HISTORY,
        "1M events: indexing, record JSON",
    ),
    (
        "history",
        "history.1m.bytes_per_event",
        S_HISTORY,
        "1M events: store on disk per event",
    ),
    (
        "history",
        "history.1m.lookup_p50_ms",
        S_HISTORY,
        "1M events: LookupEvents page p50 (query mix)",
    ),
    (
        "history",
        "history.1m.lookup_p99_ms",
        S_HISTORY,
        "1M events: LookupEvents page p99 (query mix)",
    ),
    (
        "history",
        "history.1m.console_p99_ms",
        S_HISTORY,
        "1M events: console first page p99 (combined filters)",
    ),
    (
        "history",
        "history.3m.index_events_per_s",
        S_HISTORY,
        "1M -> 3M events: indexing (insert + flush)",
    ),
    (
        "history",
        "history.3m.index_mb_per_s",
        S_HISTORY,
        "1M -> 3M events: indexing, record JSON",
    ),
    (
        "history",
        "history.3m.bytes_per_event",
        S_HISTORY,
        "3M events: store on disk per event",
    ),
    (
        "history",
        "history.3m.lookup_p50_ms",
        S_HISTORY,
        "3M events: LookupEvents page p50 (query mix)",
    ),
    (
        "history",
        "history.3m.lookup_p99_ms",
        S_HISTORY,
        "3M events: LookupEvents page p99 (query mix)",
    ),
    (
        "history",
        "history.3m.console_p99_ms",
        S_HISTORY,
        "3M events: console first page p99 (combined filters)",
    ),
];

fn lookup(id: &str) -> (&'static str, &'static str) {
    EXPECTED
        .iter()
        .find(|e| e.1 == id)
        .map(|e| (e.2, e.3))
        .unwrap_or_else(|| panic!("figure {id} is not in EXPECTED"))
}

/// Reports a measured figure (section and label from [`EXPECTED`]).
pub fn fig(ctx: &mut Ctx, id: &str, value: f64, unit: &str, goal: Option<Goal>, beside: &str) {
    let (section, label) = lookup(id);
    ctx.report
        .value(id, section, label, value, unit, goal, beside, "");
}

/// Reports a reference rate the system cannot beat.
pub fn limit(ctx: &mut Ctx, id: &str, value: f64, unit: &str) {
    let (section, label) = lookup(id);
    ctx.report.limit(id, section, label, value, unit);
}

/// Reports a figure as not measured, and why.
pub fn not_measured(ctx: &mut Ctx, id: &str, why: &str) {
    let (section, label) = lookup(id);
    ctx.report.not_measured(id, section, label, why);
}

/// After a scenario failed: every figure of it not yet reported becomes "not measured".
pub fn mark_failed(report: &mut Report, scenario: &str, why: &str) {
    for (s, id, section, label) in EXPECTED {
        if *s == scenario && !report.figures.iter().any(|f| f.id == *id) {
            report.not_measured(id, section, label, &format!("scenario failed: {why}"));
        }
    }
}

/// Records per second and MB (10^6 bytes) per second.
pub fn rates(records: usize, bytes: usize, secs: f64) -> (f64, f64) {
    (records as f64 / secs, bytes as f64 / secs / 1e6)
}
