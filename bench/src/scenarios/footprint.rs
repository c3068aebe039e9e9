//! Scenario 4: Footprint: resident memory (`VmRSS`) and CPU (utime + stime over wall time, percent of
//! one core) sampled from /proc every 200 ms.
//!
//! - agent idle: the real agent with its default sources (auth log, auditd, packages, FIM)
//!   watching empty files in the work directory, connected to a collector, nothing happening;
//! - agent at 1k records/s: the same agent receiving 100 PutAuditEvents events every 100 ms
//!   over loopback HTTP (and shipping them). `GROUNDTRAIL_BENCH_FOOTPRINT_PER_CALL=n` (1 to
//!   100) sends `n` events every `n` ms instead: the same rate in more calls (one after
//!   another, so a small `n` may fall short: the achieved rate is printed), which separates
//!   what a call costs from what a record costs;
//! - collector at 10k records/s: 10 simulated agents (own certificates, own TLS connections)
//!   each posting a zstd batch of 100 records every 100 ms over the real wire protocol.

use std::time::{Duration, Instant};

use super::fig;
use crate::Ctx;
use crate::generator::Rng;
use crate::harness::{self, HttpConn};
use crate::proc::Sampler;
use crate::report::Goal;

const MIB: f64 = 1024.0 * 1024.0;

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let per_call = per_call(ctx)?;
    let settle = ctx.secs(3.0, 0.5);
    let idle_for = ctx.secs(15.0, 1.0);
    let load_for = ctx.secs(20.0, 1.0);
    let sims: Vec<String> = (0..10).map(|i| format!("sim-footprint-{i}")).collect();
    let mut names = sims.clone();
    names.push("footprint-agent".into());
    let dir = ctx.dir("footprint")?;
    ctx.step("footprint: starting collector and agent");
    let mut collector =
        harness::start_collector(&ctx.bins, &ctx.pki, &dir.join("collector"), "1m", &names).await?;
    let mut agent = harness::start_agent(
        &ctx.bins,
        &ctx.pki,
        &dir.join("agent"),
        "footprint-agent",
        collector.addr,
    )
    .await?;
    agent.wait_drained(Duration::from_secs(60)).await?;
    tokio::time::sleep(settle).await;

    ctx.step(format!(
        "footprint: agent idle for {} s",
        idle_for.as_secs()
    ));
    let s = Sampler::start(agent.proc.pid);
    tokio::time::sleep(idle_for).await;
    let idle = s.stop().ok_or_else(|| anyhow::anyhow!("agent exited"))?;

    ctx.step(format!(
        "footprint: agent at 1k records/s for {} s",
        load_for.as_secs()
    ));
    let data = super::agent_e2e::app_data(ctx);
    let mut conn = HttpConn::plain(agent.app_addr);
    let mut tick = tokio::time::interval(Duration::from_millis(per_call as u64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let s = Sampler::start(agent.proc.pid);
    let start = Instant::now();
    let mut sent = 0usize;
    while start.elapsed() < load_for {
        tick.tick().await;
        let events: Vec<(String, String)> = (sent..sent + per_call)
            .map(|k| (format!("fp-{k}"), data[k % data.len()].clone()))
            .collect();
        conn.put_audit_events(&events).await?;
        sent += per_call;
    }
    let agent_rate = sent as f64 / start.elapsed().as_secs_f64();
    let loaded = s.stop().ok_or_else(|| anyhow::anyhow!("agent exited"))?;
    agent.wait_drained(Duration::from_secs(120)).await?;
    let _ = tokio::task::block_in_place(|| agent.proc.terminate(Duration::from_secs(30)));

    ctx.report.note(format!(
        "footprint: agent idle {:.0} s with its default sources (auth log, auditd, packages, FIM) watching empty files; agent loaded {:.0} s at {agent_rate:.0} records/s of PutAuditEvents ({per_call} per call every {per_call} ms); CPU in percent of one core",
        idle.seconds, loaded.seconds
    ));
    fig(
        ctx,
        "footprint.agent_idle_rss_mib",
        idle.rss_mean_bytes / MIB,
        "MiB",
        // The goal is in decimal megabytes; the figure is in MiB.
        Some(Goal::AtMost(15e6 / MIB)),
        "goal <= 15 MB (14.31 MiB)",
    );
    fig(
        ctx,
        "footprint.agent_idle_rss_anon_mib",
        idle.rss_anon_mean_bytes / MIB,
        "MiB",
        None,
        "heap and stacks, without the binary's mapped pages",
    );
    fig(
        ctx,
        "footprint.agent_idle_cpu_percent",
        idle.cpu_percent,
        "% of a core",
        None,
        "",
    );
    fig(
        ctx,
        "footprint.agent_1k_rate",
        agent_rate,
        "records/s",
        None,
        "target 1,000",
    );
    fig(
        ctx,
        "footprint.agent_1k_rss_mib",
        loaded.rss_max_bytes as f64 / MIB,
        "MiB",
        None,
        "",
    );
    fig(
        ctx,
        "footprint.agent_1k_cpu_percent",
        loaded.cpu_percent,
        "% of a core",
        Some(Goal::AtMost(2.0)),
        "goal <= 2% of a core",
    );
    ctx.step(format!(
        "footprint: collector at 10k records/s for {} s",
        load_for.as_secs()
    ));
    let s = Sampler::start(collector.proc.pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (a, name) in sims.iter().enumerate() {
        let (cert, key) = ctx.pki.agent(name)?;
        let mut conn = HttpConn::tls(collector.addr, &ctx.pki.ca(), &cert, &key)?;
        let templates = ctx.templates.clone();
        let mut rng = Rng::new(ctx.seed ^ 0xF00 ^ a as u64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seq = 1u64;
            while start.elapsed() < load_for {
                tick.tick().await;
                let batch: Vec<Vec<u8>> = (0..100)
                    .map(|_| {
                        let t = &templates[rng.next_u64() as usize % templates.len()];
                        t.with_id(&rng.uuid())
                    })
                    .collect();
                let body = harness::zstd_batch(&batch);
                conn.post_batch(body, seq, seq + 99).await?;
                seq += 100;
            }
            anyhow::Ok(seq - 1)
        }));
    }
    let mut posted = 0u64;
    for t in tasks {
        posted += t
            .await?
            .map_err(|e| anyhow::anyhow!("collector at 10k records/s: {e:#}"))?;
    }
    let collector_rate = posted as f64 / start.elapsed().as_secs_f64();
    let busy = s
        .stop()
        .ok_or_else(|| anyhow::anyhow!("collector exited"))?;
    let _ = tokio::task::block_in_place(|| collector.proc.terminate(Duration::from_secs(300)));
    ctx.report.note(format!(
        "footprint: collector loaded {:.0} s at {collector_rate:.0} records/s from 10 simulated agents (own certificates, zstd batches of 100 every 100 ms) over mTLS, log_file_interval 1m",
        busy.seconds
    ));

    fig(
        ctx,
        "footprint.collector_10k_rate",
        collector_rate,
        "records/s",
        None,
        "target 10,000",
    );
    fig(
        ctx,
        "footprint.collector_10k_rss_mib",
        busy.rss_max_bytes as f64 / MIB,
        "MiB",
        None,
        "",
    );
    fig(
        ctx,
        "footprint.collector_10k_cpu_percent",
        busy.cpu_percent,
        "% of a core",
        None,
        "",
    );
    Ok(())
}

/// Events per PutAuditEvents call in the loaded phase, one call every as many milliseconds: 100
/// unless `GROUNDTRAIL_BENCH_FOOTPRINT_PER_CALL` says otherwise (noted in the report).
fn per_call(ctx: &mut Ctx) -> anyhow::Result<usize> {
    let text = match std::env::var("GROUNDTRAIL_BENCH_FOOTPRINT_PER_CALL") {
        Ok(text) => text,
        Err(std::env::VarError::NotPresent) => return Ok(100),
        Err(e) => anyhow::bail!("GROUNDTRAIL_BENCH_FOOTPRINT_PER_CALL: {e}"),
    };
    let n: usize = text
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=100).contains(n))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "GROUNDTRAIL_BENCH_FOOTPRINT_PER_CALL: events per call, 1 to 100 (PutAuditEvents takes at most 100), not {text:?}"
            )
        })?;
    ctx.report.note(format!(
        "footprint: GROUNDTRAIL_BENCH_FOOTPRINT_PER_CALL: {n} events every {n} ms in place of 100 every 100 ms"
    ));
    Ok(n)
}
