//! Scenario 7: detection (issue 17) and the Insights detector (issue 18).
//!
//! - **Insights detector, in process**: the generator's records parsed and observed one by one
//!   (both series, the default model); nanoseconds per record, and that cost as a share of the
//!   collector's CPU per record (detection off), an estimate of what `[insights]` adds.
//! - **Engine, in process**: the default packs loaded (CIS, host, SigmaHQ CloudTrail medium+), the
//!   generator's records parsed from JSON and evaluated one by one on one thread; nanoseconds
//!   per record, and the JSON parse alone beside it.
//! - **Collector at a steady rate**: simulated agents post zstd batches at a steady rate for
//!   a fixed time to a fresh collector twice, once with `[detection] enabled = false` and once
//!   with the default packs plus a rule on a marker record (1 in 100) and a webhook notifier on a
//!   receiver in this process. The detection share is the difference in the collector's CPU
//!   per record between the two runs, over the run without. Alert latency is from the `200`
//!   answering the batch that carried a marker record to the receiver's receipt of its alert.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use groundtrail_detection::rules::{Engine, RuleSet};

use super::fig;
use crate::Ctx;
use crate::generator::Rng;
use crate::harness::{self, HttpConn};
use crate::report::Goal;

/// The marker rule's event name.
const MARKER: &str = "GroundtrailBenchMarker";

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    engine(ctx)?;
    let insights_ns = insights(ctx)?;
    let rate = ctx.size(5_000usize, 500);
    let secs = ctx.secs(20.0, 2.0);
    let off = steady(ctx, false, rate, secs).await?;
    fig(
        ctx,
        "insights.cpu_share_percent_estimated",
        insights_ns / (off.cpu_per_record * 1e9) * 100.0,
        "%",
        None,
        "parse + detector per record over the collector's CPU per record (detection off)",
    );
    let on = steady(ctx, true, rate, secs).await?;
    let share = (on.cpu_per_record - off.cpu_per_record) / off.cpu_per_record * 100.0;
    fig(
        ctx,
        "detection.cpu_share_percent",
        share,
        "%",
        Some(Goal::AtMost(5.0)),
        "< 5% of the collector's per-record CPU",
    );
    fig(
        ctx,
        "detection.collector_cpu_us_per_record_off",
        off.cpu_per_record * 1e6,
        "us",
        None,
        "",
    );
    fig(
        ctx,
        "detection.collector_cpu_us_per_record_on",
        on.cpu_per_record * 1e6,
        "us",
        None,
        "",
    );
    let mut lat = on.latencies_ms.clone();
    lat.sort_by(f64::total_cmp);
    if lat.is_empty() {
        super::not_measured(ctx, "detection.alert_p50_ms", "no alert arrived");
        super::not_measured(ctx, "detection.alert_p99_ms", "no alert arrived");
    } else {
        fig(
            ctx,
            "detection.alert_p50_ms",
            harness::quantile(&lat, 0.50),
            "ms",
            None,
            "",
        );
        fig(
            ctx,
            "detection.alert_p99_ms",
            harness::quantile(&lat, 0.99),
            "ms",
            Some(Goal::AtMost(2000.0)),
            "p99 < 2 s",
        );
    }
    ctx.report.note(format!(
        "detection: engine in process over {} generator records; collector at {rate} records/s for {} s in zstd batches of 100 (10 per second), detection off then on (default packs cis, host, sigma; a marker rule on 1 record in 100, one webhook notifier in this process); CPU from /proc; {} of {} marker alerts received",
        ctx.templates.len(),
        secs.as_secs(),
        on.latencies_ms.len(),
        on.markers
    ));
    Ok(())
}

/// The engine alone, in process.
fn engine(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.step("detection: engine with the default packs, in process");
    let packs: Vec<String> = ["cis", "host", "sigma"].map(String::from).to_vec();
    let rules = RuleSet::load(&packs, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let n_rules = rules.len();
    let mut engine = Engine::new(rules);
    let records = records(ctx, 0xDE7E);
    let t = Instant::now();
    let mut parsed = 0usize;
    for r in &records {
        let v: serde_json::Value = serde_json::from_slice(r)?;
        parsed += std::hint::black_box(&v).is_object() as usize;
    }
    let parse_ns = t.elapsed().as_nanos() as f64 / records.len() as f64;
    let t = Instant::now();
    let mut fired = 0usize;
    let mut by_rule: HashMap<String, usize> = HashMap::new();
    for r in &records {
        let v: serde_json::Value = serde_json::from_slice(r)?;
        for f in engine.evaluate(&v) {
            fired += 1;
            *by_rule.entry(f.rule.id).or_default() += 1;
        }
    }
    let total_ns = t.elapsed().as_nanos() as f64 / records.len() as f64;
    let mut top: Vec<(String, usize)> = by_rule.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let top: Vec<String> = top
        .iter()
        .take(8)
        .map(|(id, n)| format!("{id} {n}"))
        .collect();
    let _ = engine.take_state_changes();
    fig(
        ctx,
        "detection.engine_ns_per_record",
        total_ns,
        "ns",
        None,
        "",
    );
    fig(
        ctx,
        "detection.parse_ns_per_record",
        parse_ns,
        "ns",
        None,
        "",
    );
    ctx.report.note(format!(
        "detection engine: {n_rules} rules, {} records, {fired} firings (most: {}), {parsed} parsed",
        records.len(),
        top.join(", ")
    ));
    Ok(())
}

/// The generator's records (200,000; 5,000 with `--quick`), with fresh eventIDs from `seed`.
fn records(ctx: &Ctx, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(ctx.seed ^ seed);
    (0..ctx.size(200_000usize, 5_000))
        .map(|_| {
            let t = &ctx.templates[rng.next_u64() as usize % ctx.templates.len()];
            t.with_id(&rng.uuid())
        })
        .collect()
}

/// The Insights detector in process (both series, the default model) on the generator's
/// records: nanoseconds per record for the parse and the detector together, as the
/// collector's Insights reader spends them. Returns that figure.
fn insights(ctx: &mut Ctx) -> anyhow::Result<f64> {
    use groundtrail_detection::insights::{Detector, InsightsConfig};
    ctx.step("insights: the detector, in process");
    let mut det = Detector::new(InsightsConfig::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let records = records(ctx, 0x1A51);
    // As the collector's reader does it: only the members the detector counts are parsed.
    let t = Instant::now();
    let mut found = 0usize;
    for r in &records {
        found += det.observe_json(r).len();
    }
    let ns = t.elapsed().as_nanos() as f64 / records.len() as f64;
    // The same with the whole record parsed first, for comparison.
    let mut whole = Detector::new(InsightsConfig::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = Instant::now();
    for r in &records {
        let v: serde_json::Value = serde_json::from_slice(r)?;
        std::hint::black_box(whole.observe(&v));
    }
    let whole_ns = t.elapsed().as_nanos() as f64 / records.len() as f64;
    fig(
        ctx,
        "insights.parse_and_detect_ns_per_record",
        ns,
        "ns",
        None,
        "",
    );
    fig(
        ctx,
        "insights.whole_parse_and_detect_ns_per_record",
        whole_ns,
        "ns",
        None,
        "",
    );
    ctx.report.note(format!(
        "insights detector: {} records, {} keys, {found} Insights records, {:?}",
        records.len(),
        det.key_count(),
        det.stats()
    ));
    Ok(ns)
}

struct Steady {
    cpu_per_record: f64,
    latencies_ms: Vec<f64>,
    markers: usize,
}

/// The collector at `rate` records/s for `secs`, detection on or off.
async fn steady(ctx: &mut Ctx, on: bool, rate: usize, secs: Duration) -> anyhow::Result<Steady> {
    let label = if on { "on" } else { "off" };
    ctx.step(format!(
        "detection: collector at {rate} records/s, detection {label}"
    ));
    let dir = ctx.dir(&format!("detection-{label}"))?;
    let receiver = Receiver::start().await?;
    let extra = if on {
        let rules = dir.join("rules");
        std::fs::create_dir_all(&rules)?;
        std::fs::write(
            rules.join("marker.yaml"),
            format!(
                "rules:\n  - id: bench-marker\n    title: Bench marker\n    severity: high\n    filter_pattern: '{{ $.eventName = \"{MARKER}\" }}'\n"
            ),
        )?;
        let secret = dir.join("hmac.secret");
        std::fs::write(&secret, "bench-secret-0123456789")?;
        format!(
            "[detection]\nrules_dir = {:?}\n\n[[detection.notifiers]]\nname = \"bench\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook\"\nsecret_file = {:?}\nmin_severity = \"high\"\n",
            rules.display().to_string(),
            receiver.port,
            secret.display().to_string()
        )
    } else {
        "[detection]\nenabled = false\n".to_string()
    };
    let agent = "detect-agent".to_string();
    let mut collector = harness::start_collector_with(
        &ctx.bins,
        &ctx.pki,
        &dir,
        "1h",
        std::slice::from_ref(&agent),
        &extra,
    )
    .await?;
    let (cert, key) = ctx.pki.agent(&agent)?;
    let mut conn = HttpConn::tls(collector.addr, &ctx.pki.ca(), &cert, &key)?;
    let mut rng = Rng::new(ctx.seed ^ 0x5EAD ^ on as u64);
    let per_tick = rate / 10;
    let batch = 100usize.min(per_tick.max(1));
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut markers = 0usize;
    let mut seq = 1u64;
    let mut n = 0usize;
    let cpu0 = crate::proc::cpu_seconds(collector.proc.pid).unwrap_or(0.0);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let start = Instant::now();
    while start.elapsed() < secs {
        tick.tick().await;
        let mut left = per_tick;
        while left > 0 {
            let k = left.min(batch);
            let mut ids = Vec::new();
            let recs: Vec<Vec<u8>> = (0..k)
                .map(|_| {
                    let id = rng.uuid();
                    let t = &ctx.templates[rng.next_u64() as usize % ctx.templates.len()];
                    n += 1;
                    if n.is_multiple_of(100) {
                        let mut v: serde_json::Value =
                            serde_json::from_slice(&t.with_id(&id)).expect("generator JSON");
                        v["eventName"] = serde_json::json!(MARKER);
                        ids.push(id);
                        serde_json::to_vec(&v).expect("JSON")
                    } else {
                        t.with_id(&id)
                    }
                })
                .collect();
            conn.post_batch(harness::zstd_batch(&recs), seq, seq + k as u64 - 1)
                .await?;
            let at = Instant::now();
            markers += ids.len();
            for id in ids {
                sent.insert(id, at);
            }
            seq += k as u64;
            left -= k;
        }
    }
    let cpu1 = crate::proc::cpu_seconds(collector.proc.pid).unwrap_or(0.0);
    if on {
        let deadline = Instant::now() + Duration::from_secs(30);
        while receiver.count() < markers && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let latencies_ms = receiver
        .arrivals()
        .into_iter()
        .filter_map(|(id, at)| {
            let event = id.strip_prefix("bench-marker/")?;
            let sent = sent.get(event)?;
            Some(at.saturating_duration_since(*sent).as_secs_f64() * 1e3)
        })
        .collect();
    collector.deliver_and_exit()?;
    Ok(Steady {
        cpu_per_record: (cpu1 - cpu0) / n.max(1) as f64,
        latencies_ms,
        markers,
    })
}

/// A webhook receiver in this process: the arrival time of each alert id.
struct Receiver {
    port: u16,
    arrivals: Arc<Mutex<Vec<(String, Instant)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Receiver> {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let arrivals: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let a = arrivals.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let a = a.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let a = a.clone();
                            async move {
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|c| c.to_bytes())
                                    .unwrap_or_default();
                                let at = Instant::now();
                                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body)
                                    && let Some(id) = v["alert"]["id"].as_str()
                                {
                                    a.lock().expect("lock").push((id.to_string(), at));
                                }
                                Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::new()),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(Receiver {
            port,
            arrivals,
            task,
        })
    }

    fn count(&self) -> usize {
        self.arrivals.lock().expect("lock").len()
    }

    fn arrivals(&self) -> Vec<(String, Instant)> {
        self.arrivals.lock().expect("lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
