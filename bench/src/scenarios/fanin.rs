//! Scenario 5: Fan-in: 1, 10 and 100 simulated agents into one collector (a fresh one per level). Each
//! simulated agent has its own client certificate (`groundtrail-collector pki agent`), its own
//! `[[agents]]` entry and its own TLS connection, and posts zstd batches of 100 records with
//! contiguous sequence numbers over the real wire protocol, one request at a time; the same
//! number of records per level. Acknowledged = the last `200`; delivered = the collector,
//! sent SIGTERM then, has written every log file and exited 0.

use std::time::Instant;

use anyhow::bail;

use super::fig;
use crate::Ctx;
use crate::generator::Rng;
use crate::harness::{self, HttpConn};

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let total = ctx.size(20_000, 1_000);
    let batch = ctx.size(100, 10);
    let mut notes = Vec::new();
    ctx.step("fanin: minting 100 agent certificates (groundtrail-collector pki agent)");
    let names: Vec<String> = (0..100).map(|i| format!("fan-{i}")).collect();
    let pki = ctx.pki.clone();
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            let handles: Vec<_> = names
                .chunks(25)
                .map(|chunk| {
                    let pki = &pki;
                    s.spawn(move || chunk.iter().try_for_each(|n| pki.agent(n).map(|_| ())))
                })
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().expect("pki thread"))
        })
    })?;
    for agents in [1usize, 10, 100] {
        match level(ctx, agents, total, batch).await {
            Ok(l) => {
                notes.push(format!(
                    "{agents}: {} requests, p50 {:.1} ms",
                    l.requests, l.p50_ms
                ));
                fig(
                    ctx,
                    &format!("fanin.{agents}.acked_records_per_s"),
                    l.acked,
                    "records/s",
                    None,
                    "",
                );
                fig(
                    ctx,
                    &format!("fanin.{agents}.delivered_records_per_s"),
                    l.delivered,
                    "records/s",
                    None,
                    "",
                );
                fig(
                    ctx,
                    &format!("fanin.{agents}.p99_request_ms"),
                    l.p99_ms,
                    "ms",
                    None,
                    "",
                );
            }
            Err(e) => {
                let why = format!("{e:#}");
                notes.push(format!("{agents}: FAILED: {why}"));
                for f in [
                    "acked_records_per_s",
                    "delivered_records_per_s",
                    "p99_request_ms",
                ] {
                    super::not_measured(ctx, &format!("fanin.{agents}.{f}"), &why);
                }
            }
        }
    }
    ctx.report.note(format!(
        "fanin: {total} records per level in zstd batches of {batch}, simulated agents (own certificates and TLS connections) posting straight to /v1/events (not the agent binary), one request at a time each; {}",
        notes.join("; ")
    ));
    Ok(())
}

struct Level {
    requests: usize,
    acked: f64,
    delivered: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn level(ctx: &mut Ctx, agents: usize, total: usize, batch: usize) -> anyhow::Result<Level> {
    ctx.step(format!("fanin: {agents} agents: certificates"));
    let names: Vec<String> = (0..agents).map(|i| format!("fan-{i}")).collect();
    let mut conns = Vec::new();
    for name in &names {
        let (cert, key) = ctx.pki.agent(name)?;
        conns.push((cert, key));
    }
    let dir = ctx.dir(&format!("fanin-{agents}"))?;
    let mut collector = harness::start_collector(&ctx.bins, &ctx.pki, &dir, "1h", &names).await?;
    let mut rng = Rng::new(ctx.seed ^ 0xFA11 ^ agents as u64);
    let per_agent = total / agents;
    let mut work = Vec::new();
    let mut ids = Vec::new();
    for (cert, key) in &conns {
        let mut batches = Vec::new();
        let mut seq = 1u64;
        let mut left = per_agent;
        while left > 0 {
            let k = left.min(batch);
            let recs: Vec<Vec<u8>> = (0..k)
                .map(|_| {
                    let id = rng.uuid();
                    let t = &ctx.templates[rng.next_u64() as usize % ctx.templates.len()];
                    let r = t.with_id(&id);
                    ids.push(id);
                    r
                })
                .collect();
            batches.push((harness::zstd_batch(&recs), seq, seq + k as u64 - 1));
            seq += k as u64;
            left -= k;
        }
        work.push((
            HttpConn::tls(collector.addr, &ctx.pki.ca(), cert, key)?,
            batches,
        ));
    }
    let n_batches: usize = work.iter().map(|w| w.1.len()).sum();
    ctx.step(format!(
        "fanin: {agents} agents posting {} records",
        ids.len()
    ));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (mut conn, batches) in work {
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for (body, first, last) in batches {
                let t = Instant::now();
                conn.post_batch(body, first, last).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        match t.await? {
            Ok(l) => lat.extend(l),
            Err(e) => bail!(
                "{e:#} ({} of {n_batches} batches answered before)",
                answered.load(std::sync::atomic::Ordering::Relaxed)
            ),
        }
    }
    let acked = t0.elapsed().as_secs_f64();
    collector.deliver_and_exit()?;
    let delivered = t0.elapsed().as_secs_f64();
    let found = harness::delivered_ids(&collector.trail)?;
    let missing = ids.iter().filter(|id| !found.contains(*id)).count();
    if missing > 0 {
        bail!("{missing} records not delivered");
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let n = ids.len() as f64;
    Ok(Level {
        requests: lat.len(),
        acked: n / acked,
        delivered: n / delivered,
        p50_ms: harness::quantile(&lat, 0.5),
        p99_ms: harness::quantile(&lat, 0.99),
    })
}
