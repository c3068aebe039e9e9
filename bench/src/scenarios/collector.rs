//! Scenario 1: Collector throughput: records in -> delivered log files, beside raw gzip and serde_json
//! on the same records.
//!
//! Four simulated agents (each its own client certificate and TLS connection) post the
//! records over the real wire protocol (ndjson, zstd, `POST /v1/events`, sequence headers),
//! batches of 1000 (the agent's default `batch_max_records`), compressed before the clock
//! starts. "Acknowledged" stops at the last `200` (journal flushed); "delivered" stops when the
//! collector, sent SIGTERM right after, has closed, gzipped and written every log file and its
//! digest and exited 0. Every record is then looked up in the delivered files.

use std::time::Instant;

use anyhow::bail;

use super::{fig, limit, rates};
use crate::Ctx;
use crate::generator::Rng;
use crate::harness::{self, HttpConn};
use crate::limits;
use crate::report::{Goal, num};

const AGENTS: usize = 4;
const BATCH: usize = 1000;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let n = ctx.size(60_000, 3_000);
    let mut rng = Rng::new(ctx.seed ^ 0xC011_EC70);
    let ids: Vec<String> = (0..n).map(|_| rng.uuid()).collect();
    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| ctx.templates[i % ctx.templates.len()].with_id(&ids[i]))
        .collect();
    let bytes: usize = records.iter().map(Vec::len).sum();

    ctx.step(format!(
        "collector: raw gzip and serde_json over {n} records"
    ));
    let json = limits::log_file_json(&records);
    let (gz, gz_len) = limits::gzip(&json, n);
    drop(json);
    let sv = limits::serde_value(&records);
    let sr = limits::serde_record(&records);

    let one = post_and_deliver(ctx, &records, &ids, "collector", "").await?;
    let Run {
        acked,
        delivered,
        cpu,
        files,
    } = one;
    ctx.step("collector: again with a second trail ([[trails]]) taking every record");
    let two_dir = ctx.dir("collector-two-trails")?;
    let second = two_dir.join("second-trail");
    let extra = format!(
        "[[trails]]\nname = \"second\"\n\n[[trails.destinations]]\ntype = \"local\"\nname = \"second\"\npath = {}\nbucket = \"bench-second\"\n",
        serde_json::to_string(&second.display().to_string())?
    );
    let two = post_and_deliver(ctx, &records, &ids, "collector-two-trails", &extra).await?;
    let found = harness::delivered_ids(&second)?;
    let missing = ids.iter().filter(|id| !found.contains(*id)).count();
    if missing > 0 {
        bail!("{missing} of {n} records are not in the second trail's log files");
    }
    drop(records);

    let (ack_r, ack_mb) = rates(n, bytes, acked);
    let (del_r, del_mb) = rates(n, bytes, delivered);
    ctx.report.note(format!(
        "collector: {n} records, {:.1} MB of JSON, {AGENTS} simulated agents (own client certificates) posting zstd batches of {BATCH} over mTLS straight to /v1/events (not the agent binary); log_file_interval 1h so files close at SIGTERM; {files} log files, every record found in them; gzip ratio {:.1}",
        bytes as f64 / 1e6,
        bytes as f64 / gz_len as f64
    ));
    fig(
        ctx,
        "collector.acked_records_per_s",
        ack_r,
        "records/s",
        None,
        "",
    );
    fig(ctx, "collector.acked_mb_per_s", ack_mb, "MB/s", None, "");
    fig(
        ctx,
        "collector.delivered_records_per_s",
        del_r,
        "records/s",
        None,
        "",
    );
    fig(
        ctx,
        "collector.delivered_mb_per_s",
        del_mb,
        "MB/s",
        None,
        "",
    );
    fig(
        ctx,
        "collector.cpu_seconds",
        cpu,
        "s",
        None,
        &format!("over {delivered:.1} s wall"),
    );
    fig(
        ctx,
        "collector.records_per_cpu_second",
        n as f64 / cpu,
        "records/CPU-s",
        Some(Goal::AtLeast(100_000.0)),
        "goal >= 100,000 per core",
    );
    fig(
        ctx,
        "collector.gzip_share_percent",
        100.0 * del_r / gz.per_sec(),
        "%",
        Some(Goal::AtLeast(70.0)),
        &format!(
            "goal >= 70% of raw gzip ({} records/s)",
            num(gz.per_sec(), 0)
        ),
    );
    limit(
        ctx,
        "collector.raw_gzip_records_per_s",
        gz.per_sec(),
        "records/s",
    );
    let (two_del_r, _) = rates(n, bytes, two.delivered);
    fig(
        ctx,
        "collector.two_trails_delivered_records_per_s",
        two_del_r,
        "records/s",
        None,
        &format!("{} log files in each trail", two.files),
    );
    fig(
        ctx,
        "collector.two_trails_records_per_cpu_second",
        n as f64 / two.cpu,
        "records/CPU-s",
        None,
        &format!("one trail: {}", num(n as f64 / cpu, 0)),
    );
    fig(
        ctx,
        "collector.second_trail_cpu_us_per_record",
        (two.cpu - cpu) / n as f64 * 1e6,
        "us",
        None,
        "what a trail taking every record adds (its feed, journal, files, digests)",
    );
    limit(ctx, "collector.raw_gzip_mb_per_s", gz.mb_per_sec(), "MB/s");
    limit(
        ctx,
        "collector.serde_value_records_per_s",
        sv.per_sec(),
        "records/s",
    );
    limit(
        ctx,
        "collector.serde_record_records_per_s",
        sr.per_sec(),
        "records/s",
    );
    Ok(())
}

/// One run's figures.
struct Run {
    acked: f64,
    delivered: f64,
    cpu: f64,
    files: usize,
}

/// Starts a collector (config `extra` appended), posts `records` as four simulated agents,
/// sends SIGTERM, and checks every record is in the delivered log files.
async fn post_and_deliver(
    ctx: &mut Ctx,
    records: &[Vec<u8>],
    ids: &[String],
    dir_name: &str,
    extra: &str,
) -> anyhow::Result<Run> {
    let n = records.len();
    ctx.step("collector: minting certificates, starting the collector");
    let names: Vec<String> = (0..AGENTS).map(|i| format!("sim-collector-{i}")).collect();
    let dir = ctx.dir(dir_name)?;
    let mut collector =
        harness::start_collector_with(&ctx.bins, &ctx.pki, &dir, "1h", &names, extra).await?;
    // Batches, compressed as the agent's shipper would, before the clock starts.
    let mut per_agent: Vec<Vec<(Vec<u8>, u64, u64)>> = vec![Vec::new(); AGENTS];
    for (i, chunk) in records.chunks(BATCH).enumerate() {
        let a = i % AGENTS;
        let first = per_agent[a].last().map_or(1, |b| b.2 + 1);
        per_agent[a].push((
            harness::zstd_batch(chunk),
            first,
            first + chunk.len() as u64 - 1,
        ));
    }
    let mut conns = Vec::new();
    for name in &names {
        let (cert, key) = ctx.pki.agent(name)?;
        conns.push(HttpConn::tls(collector.addr, &ctx.pki.ca(), &cert, &key)?);
    }

    ctx.step(format!("collector: posting {n} records ({dir_name})"));
    let cpu0 = crate::proc::cpu_seconds(collector.proc.pid).unwrap_or(0.0);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (mut conn, batches) in conns.into_iter().zip(per_agent) {
        tasks.push(tokio::spawn(async move {
            for (body, first, last) in batches {
                conn.post_batch(body, first, last).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let acked = t0.elapsed().as_secs_f64();
    ctx.step("collector: SIGTERM, waiting for every log file to be delivered");
    let exit = collector.deliver_and_exit()?;
    let delivered = t0.elapsed().as_secs_f64();
    let cpu = exit.cpu_seconds - cpu0;
    let found = harness::delivered_ids(&collector.trail)?;
    let missing = ids.iter().filter(|id| !found.contains(*id)).count();
    if missing > 0 {
        bail!("{missing} of {n} records are not in the delivered log files");
    }
    let files = harness::log_files(&collector.trail).len();

    Ok(Run {
        acked,
        delivered,
        cpu,
        files,
    })
}
