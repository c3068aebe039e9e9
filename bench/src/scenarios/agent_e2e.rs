//! Scenario 2b: Agent end to end: the real agent binary, fed through its PutAuditEvents endpoint
//! (loopback HTTP, 100 events per call, 4 concurrent callers), shipping over mTLS to the real
//! collector. Accepted = every call answered (events durable in the agent's buffer); committed
//! = the agent's buffer empty again (the collector acknowledged everything); delivered = the
//! collector, sent SIGTERM then, has written every log file and exited 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{fig, rates};
use crate::Ctx;
use crate::harness::{self, AGENT_ACCOUNT, HttpConn};

/// `eventData` strings from the generator's records (what an in-house platform would post).
pub fn app_data(ctx: &Ctx) -> Arc<Vec<String>> {
    Arc::new(
        ctx.templates
            .iter()
            .take(2000)
            .map(|t| t.app_event_data(AGENT_ACCOUNT))
            .collect(),
    )
}

/// Posts `n` events (ids `<prefix><i>`) with `posters` concurrent callers, `per_call` per call;
/// returns the accepted `eventID`s.
pub async fn post_all(
    addr: SocketAddr,
    data: Arc<Vec<String>>,
    prefix: &str,
    n: usize,
    posters: usize,
    per_call: usize,
) -> anyhow::Result<Vec<String>> {
    let calls = n.div_ceil(per_call);
    let mut tasks = Vec::new();
    for p in 0..posters {
        let data = data.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::plain(addr);
            let mut ids = Vec::new();
            for c in (p..calls).step_by(posters) {
                let events: Vec<(String, String)> = (c * per_call..((c + 1) * per_call).min(n))
                    .map(|i| (format!("{prefix}{i}"), data[i % data.len()].clone()))
                    .collect();
                ids.extend(conn.put_audit_events(&events).await?);
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await??);
    }
    Ok(ids)
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let n = ctx.size(20_000, 1_000);
    let data = app_data(ctx);
    let bytes: usize = (0..n).map(|i| data[i % data.len()].len()).sum();
    let dir = ctx.dir("agent-e2e")?;
    ctx.step("agent-e2e: starting collector and agent");
    let mut collector = harness::start_collector(
        &ctx.bins,
        &ctx.pki,
        &dir.join("collector"),
        "1h",
        &["bench-agent".to_string()],
    )
    .await?;
    let mut agent = harness::start_agent(
        &ctx.bins,
        &ctx.pki,
        &dir.join("agent"),
        "bench-agent",
        collector.addr,
    )
    .await?;
    agent.wait_drained(Duration::from_secs(60)).await?;

    ctx.step(format!(
        "agent-e2e: posting {n} events through PutAuditEvents"
    ));
    let t0 = Instant::now();
    let ids = post_all(agent.app_addr, data, "e2e-", n, 4, 100).await?;
    let accepted = t0.elapsed().as_secs_f64();
    if ids.len() != n {
        bail!("{} of {n} events accepted", ids.len());
    }
    ctx.step("agent-e2e: waiting for the agent's buffer to drain");
    agent.wait_drained(Duration::from_secs(600)).await?;
    let committed = t0.elapsed().as_secs_f64();
    ctx.step("agent-e2e: SIGTERM to the collector, waiting for delivery");
    collector.deliver_and_exit()?;
    let delivered = t0.elapsed().as_secs_f64();
    let _ = tokio::task::block_in_place(|| agent.proc.terminate(Duration::from_secs(30)));
    let found = harness::delivered_ids(&collector.trail)?;
    let missing = ids.iter().filter(|id| !found.contains(*id)).count();
    if missing > 0 {
        bail!("{missing} of {n} records are not in the delivered log files");
    }
    ctx.report.note(format!(
        "agent-e2e: {n} PutAuditEvents events ({:.1} MB of eventData) into the real agent binary over loopback HTTP (4 callers, 100 per call), default buffer and shipper settings, mTLS to the collector; every record found in the delivered files",
        bytes as f64 / 1e6
    ));
    fig(
        ctx,
        "agent.e2e_accepted_records_per_s",
        rates(n, bytes, accepted).0,
        "records/s",
        None,
        "",
    );
    fig(
        ctx,
        "agent.e2e_committed_records_per_s",
        rates(n, bytes, committed).0,
        "records/s",
        None,
        "",
    );
    fig(
        ctx,
        "agent.e2e_delivered_records_per_s",
        rates(n, bytes, delivered).0,
        "records/s",
        None,
        "",
    );
    Ok(())
}
