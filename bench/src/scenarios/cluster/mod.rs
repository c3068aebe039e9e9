//! Scenario 8: cluster mode (issue 16): three NATS servers (R3, `sync_interval: always`) and
//! one, two and three collectors on this machine, beside a single collector measured the same
//! way in the same run; then the takeover time after `kill -9` of a shard's owner.
//!
//! Throughput: the collector scenario's records (generator, fresh `eventID`s) posted by six
//! simulated agents (own client certificates, zstd batches of 1,000 over mTLS), agent `i` to
//! collector `i mod k` as agents spread over a cluster would. Every level gets fresh NATS
//! servers and collectors, and waits until the shards are spread before the clock starts.
//! *Acknowledged* stops at the last `200`; *delivered* when every record is in a delivered log
//! file by the collectors' own count (`groundtrail_cluster_records_filed_total` summed; single
//! node: `groundtrail_journal_pending_records` and `..._undelivered_files` both 0), then every
//! `eventID` is checked present exactly once in the files. CPU: utime + stime from `/proc` of
//! every collector and NATS server over the same window (the benchmark's own CPU not counted).
//!
//! Both setups run with `[detection] enabled = false` (cluster mode does not evaluate rules
//! yet) and `log_file_interval = 1s` (a cluster writer closes files by time, not at SIGTERM),
//! so the single-node figures here differ from scenario 1's. All collectors share one local
//! destination directory: a benchmark shortcut, where a real cluster writes to S3.
//!
//! Takeover: two collectors and a trickle of records to the one that stays; the owner of the
//! busiest (account, region)'s shard (read from its lease in `GT_LEASES`) is killed with
//! SIGKILL, and the clock runs from the kill until the survivor's `groundtrail_cluster_shards_
//! owned` is every shard, and until the first record of that shard posted after the kill is in a
//! delivered file. Every trickle record is then checked present exactly once.

mod nodes;
mod takeover;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use super::{EXPECTED, fig, rates};
use crate::Ctx;
use crate::generator::Rng;
use crate::harness::{self, HttpConn};
use crate::proc::cpu_seconds;
use crate::report::num;
use nodes::{Metrics, nats_server, start_collectors, start_nats, wait_spread};
use takeover::takeover;

const AGENTS: usize = 6;
const BATCH: usize = 1000;
const SHARDS: u32 = 16;
const FILE_INTERVAL: &str = "1s";
/// Below the NATS servers' `max_file_store` (1 GiB in the kit), as the config asks.
const STREAM_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Longest wait for the cluster to spread its shards, or for records to be delivered.
const WAIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(50);

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let nats_bin = match nats_server() {
        Ok(b) => b,
        Err(why) => {
            ctx.report.note(format!("cluster: SKIPPED: {why}"));
            for (s, id, _, _) in EXPECTED {
                if *s == "cluster" {
                    super::not_measured(ctx, id, &format!("skipped: {why}"));
                }
            }
            return Ok(());
        }
    };
    let lease_ttl = ctx.size(5, 2);
    let n = ctx.size(120_000, 3_000);
    let mut rng = Rng::new(ctx.seed ^ 0xC1_057E);
    let ids: Vec<String> = (0..n).map(|_| rng.uuid()).collect();
    let records: Vec<Vec<u8>> = (0..n)
        .map(|i| ctx.templates[i % ctx.templates.len()].with_id(&ids[i]))
        .collect();
    let bytes: usize = records.iter().map(Vec::len).sum();
    let batches = agent_batches(&records);
    drop(records);

    let single = single_node(ctx, &batches, &ids).await?;
    let mut levels = Vec::new();
    for k in 1..=3 {
        levels.push(cluster_level(ctx, &nats_bin, k, lease_ttl, &batches, &ids).await?);
    }
    drop(batches);

    ctx.report.note(format!(
        "cluster: {n} records ({:.1} MB of JSON) per run from {AGENTS} simulated agents (own certificates, zstd batches of {BATCH}, mTLS), agent i to collector i mod k; three nats-server processes (R3, sync_interval always, stores on the work directory's disk) and k collectors, all on this machine; {SHARDS} shards, lease_ttl {lease_ttl}s, log_file_interval {FILE_INTERVAL}, [detection] off; one local-directory destination shared by every collector (a benchmark shortcut: a real cluster writes to S3); the single node is a collector without [cluster] on the same records, settings and measurement (not scenario 1's figures); every eventID found exactly once in the delivered files after each run; delivered = first POST until the collectors count every record filed and delivered (records_filed summed; single node: journal pending and undelivered both 0); CPU from /proc of every collector and NATS server from the first POST until every collector's event history has indexed every record as well",
        bytes as f64 / 1e6
    ));
    let (single_r, _) = rates(n, bytes, single.delivered);
    let single_us = single.collectors.iter().sum::<f64>() / n as f64 * 1e6;
    fig(
        ctx,
        "cluster.single.delivered_records_per_s",
        single_r,
        "records/s",
        None,
        &format!("acknowledged {}", num(n as f64 / single.acked, 0)),
    );
    fig(
        ctx,
        "cluster.single.cpu_us_per_record",
        single_us,
        "us",
        None,
        &format!(
            "CPU over {:.1} s: first POST to every record indexed",
            single.indexed
        ),
    );
    for (k, l) in (1..=3).zip(&levels) {
        let (ack_r, _) = rates(n, bytes, l.acked);
        let (del_r, _) = rates(n, bytes, l.delivered);
        let col = l.collectors.iter().sum::<f64>() / n as f64 * 1e6;
        let nats = l.nats.iter().sum::<f64>() / n as f64 * 1e6;
        let busiest = l.nats.iter().copied().fold(0.0, f64::max) / n as f64 * 1e6;
        let id = |what: &str| format!("cluster.{k}.{what}");
        fig(
            ctx,
            &id("acked_records_per_s"),
            ack_r,
            "records/s",
            None,
            &format!("single node: {}", num(n as f64 / single.acked, 0)),
        );
        fig(
            ctx,
            &id("delivered_records_per_s"),
            del_r,
            "records/s",
            None,
            &format!(
                "single node: {} ({:.2}x)",
                num(single_r, 0),
                del_r / single_r
            ),
        );
        fig(
            ctx,
            &id("total_cpu_us_per_record"),
            col + nats,
            "us",
            None,
            &format!(
                "single node: {} us ({:.1}x)",
                num(single_us, 1),
                (col + nats) / single_us
            ),
        );
        fig(
            ctx,
            &id("collectors_cpu_us_per_record"),
            col,
            "us",
            None,
            &format!(
                "CPU over {:.1} s: first POST to every history indexed",
                l.indexed
            ),
        );
        fig(ctx, &id("nats_cpu_us_per_record"), nats, "us", None, "");
        fig(
            ctx,
            &id("per_collector_cpu_us_per_record"),
            col / k as f64,
            "us",
            None,
            &format!(
                "each: {}",
                l.collectors
                    .iter()
                    .map(|c| format!("{:.0}", c / n as f64 * 1e6))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        fig(
            ctx,
            &id("per_nats_cpu_us_per_record"),
            nats / 3.0,
            "us",
            None,
            &format!("busiest server: {busiest:.0} us"),
        );
    }
    scaling_note(ctx, n, &levels);

    takeover(ctx, &nats_bin, lease_ttl).await
}

/// The records as each simulated agent sends them: (zstd body, first seq, last seq).
type Batches = Vec<Vec<(Vec<u8>, u64, u64)>>;

fn agent_batches(records: &[Vec<u8>]) -> Batches {
    let mut per_agent: Batches = vec![Vec::new(); AGENTS];
    for (i, chunk) in records.chunks(BATCH).enumerate() {
        let a = i % AGENTS;
        let first = per_agent[a].last().map_or(1, |b| b.2 + 1);
        per_agent[a].push((
            harness::zstd_batch(chunk),
            first,
            first + chunk.len() as u64 - 1,
        ));
    }
    per_agent
}

fn agent_names() -> Vec<String> {
    (0..AGENTS).map(|i| format!("sim-cluster-{i}")).collect()
}

/// One run's figures: seconds from the first POST, CPU seconds per process over the run
/// (which ends at `indexed`).
struct Level {
    acked: f64,
    delivered: f64,
    indexed: f64,
    collectors: Vec<f64>,
    nats: Vec<f64>,
}

/// CPU seconds of each process now (0 for one that is gone).
fn cpu(pids: &[u32]) -> Vec<f64> {
    pids.iter()
        .map(|p| cpu_seconds(*p).unwrap_or(0.0))
        .collect()
}

fn diff(after: &[f64], before: &[f64]) -> Vec<f64> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

/// Posts every agent's batches, agent `i` to `addrs[i % addrs.len()]`; returns when the last
/// is answered `200`.
async fn post_all(
    ctx: &Ctx,
    addrs: &[std::net::SocketAddr],
    batches: &Batches,
) -> anyhow::Result<()> {
    let mut tasks = Vec::new();
    for (i, (name, agent)) in agent_names().iter().zip(batches).enumerate() {
        let (cert, key) = ctx.pki.agent(name)?;
        let mut conn = HttpConn::tls(addrs[i % addrs.len()], &ctx.pki.ca(), &cert, &key)?;
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            for (body, first, last) in agent {
                conn.post_batch(body, first, last).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Checks that the log files under `trail` hold every id of `ids` exactly once and nothing
/// else; returns how many files there are.
fn exactly_once(trail: &Path, ids: &[String]) -> anyhow::Result<usize> {
    let files = harness::log_files(trail);
    let mut seen = HashSet::with_capacity(ids.len());
    let mut total = 0usize;
    for f in &files {
        for id in harness::file_event_ids(f)? {
            total += 1;
            seen.insert(id);
        }
    }
    let missing = ids.iter().filter(|id| !seen.contains(*id)).count();
    if missing > 0 || total != ids.len() || seen.len() != ids.len() {
        bail!(
            "{missing} of {} records missing from the delivered files, which hold {total} records ({} distinct)",
            ids.len(),
            seen.len()
        );
    }
    Ok(files.len())
}

/// Waits until `done` says every record is delivered, then until the files hold them; the
/// seconds since `t0` at which both were true.
async fn wait_delivered(
    t0: Instant,
    trail: &Path,
    ids: &[String],
    mut done: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<f64> {
    while !done().await? {
        if t0.elapsed() > WAIT {
            bail!("records not delivered within {WAIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    let mut at = t0.elapsed().as_secs_f64();
    // The collectors' count says delivered; the files must agree (read after the clock
    // stopped, unless they do not yet).
    let mut last = exactly_once(trail, ids);
    while let Err(e) = &last {
        if t0.elapsed() > WAIT {
            bail!("{e:#}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        at = t0.elapsed().as_secs_f64();
        last = exactly_once(trail, ids);
    }
    Ok(at)
}

/// Waits until `indexed` (the fewest records any collector's event history has indexed) is at
/// least `n`: the history runs behind delivery, and its work is part of each record's cost.
async fn wait_indexed(
    t0: Instant,
    mut indexed: impl AsyncFnMut() -> anyhow::Result<f64>,
    n: usize,
) -> anyhow::Result<()> {
    while indexed().await? < n as f64 {
        if t0.elapsed() > WAIT {
            bail!("records not indexed into the event history within {WAIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// One collector without `[cluster]`, same records, settings and measurement.
async fn single_node(ctx: &mut Ctx, batches: &Batches, ids: &[String]) -> anyhow::Result<Level> {
    ctx.step("cluster: the single-node collector, for comparison");
    let dir = ctx.dir("cluster-single")?;
    let mut c = harness::start_collector_with(
        &ctx.bins,
        &ctx.pki,
        &dir,
        FILE_INTERVAL,
        &agent_names(),
        "[detection]\nenabled = false\n",
    )
    .await?;
    let mut m = Metrics::new(ctx, c.addr)?;
    let pid = c.proc.pid;
    ctx.step(format!(
        "cluster: posting {} records (single node)",
        ids.len()
    ));
    let cpu0 = cpu(&[pid]);
    let t0 = Instant::now();
    post_all(ctx, &[c.addr], batches).await?;
    let acked = t0.elapsed().as_secs_f64();
    let delivered = wait_delivered(t0, &c.trail, ids, async || {
        Ok(m.get("groundtrail_journal_pending_records").await? == 0.0
            && m.get("groundtrail_journal_undelivered_files").await? == 0.0)
    })
    .await?;
    wait_indexed(
        t0,
        async || m.get("groundtrail_history_indexed_records_total").await,
        ids.len(),
    )
    .await?;
    let indexed = t0.elapsed().as_secs_f64();
    let used = diff(&cpu(&[pid]), &cpu0);
    c.proc.kill9();
    Ok(Level {
        acked,
        delivered,
        indexed,
        collectors: used,
        nats: Vec::new(),
    })
}

/// One throughput run with `k` collectors.
async fn cluster_level(
    ctx: &mut Ctx,
    nats_bin: &Path,
    k: usize,
    lease_ttl: u64,
    batches: &Batches,
    ids: &[String],
) -> anyhow::Result<Level> {
    ctx.step(format!("cluster: three NATS servers and {k} collector(s)"));
    let dir = ctx.dir(&format!("cluster-{k}"))?;
    let nats = start_nats(nats_bin, &dir.join("nats")).await?;
    let mut nodes = start_collectors(ctx, &dir, &nats, k, lease_ttl).await?;
    ctx.step(format!("cluster: {k} collector(s): waiting for the shards"));
    wait_spread(&mut nodes).await?;
    let addrs: Vec<_> = nodes.iter().map(|n| n.c.addr).collect();
    let pids: Vec<u32> = nodes.iter().map(|n| n.c.proc.pid).collect();
    let nats_pids: Vec<u32> = (0..nats.len())
        .map(|i| {
            nats.pid(i)
                .ok_or_else(|| anyhow!("NATS n{i} is not running"))
        })
        .collect::<anyhow::Result<_>>()?;
    let trail = dir.join("trail");
    ctx.step(format!(
        "cluster: {k} collector(s): posting {} records",
        ids.len()
    ));
    let (cpu0, ncpu0) = (cpu(&pids), cpu(&nats_pids));
    let t0 = Instant::now();
    post_all(ctx, &addrs, batches).await?;
    let acked = t0.elapsed().as_secs_f64();
    let n = ids.len() as f64;
    let delivered = wait_delivered(t0, &trail, ids, async || {
        let mut filed = 0.0;
        for node in nodes.iter_mut() {
            filed += node
                .metric("groundtrail_cluster_records_filed_total")
                .await?;
        }
        Ok(filed >= n)
    })
    .await?;
    wait_indexed(
        t0,
        async || {
            let mut least = f64::MAX;
            for node in nodes.iter_mut() {
                least = least.min(
                    node.metric("groundtrail_cluster_history_indexed_total")
                        .await?,
                );
            }
            Ok(least)
        },
        ids.len(),
    )
    .await?;
    let indexed = t0.elapsed().as_secs_f64();
    let (cpu1, ncpu1) = (cpu(&pids), cpu(&nats_pids));
    for node in &mut nodes {
        node.c.proc.kill9();
    }
    drop(nats);
    Ok(Level {
        acked,
        delivered,
        indexed,
        collectors: diff(&cpu1, &cpu0),
        nats: diff(&ncpu1, &ncpu0),
    })
}

/// The note: on two cores these figures show overhead, not scaling; the per-node cost
/// that predicts scaling on larger machines.
fn scaling_note(ctx: &mut Ctx, n: usize, levels: &[Level]) {
    let us = |v: &[f64]| v.iter().sum::<f64>() / n as f64 * 1e6;
    // Collectors together, per record: a + b*k. Every collector indexes every record into its
    // own event history (b, paid k times); ingest and shard writing are split (a, paid once).
    let pts: Vec<(f64, f64)> = levels
        .iter()
        .enumerate()
        .map(|(i, l)| ((i + 1) as f64, us(&l.collectors)))
        .collect();
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / pts.len() as f64;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / pts.len() as f64;
    let b = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
        / pts.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
    let a = my - b * mx;
    let nats_per_server = levels.iter().map(|l| us(&l.nats) / 3.0).sum::<f64>() / 3.0;
    let nats_busiest = levels
        .iter()
        .map(|l| l.nats.iter().copied().fold(0.0, f64::max) / n as f64 * 1e6)
        .sum::<f64>()
        / 3.0;
    ctx.report.note(format!(
        "cluster: on this 2-core machine the three NATS servers and every collector share the same two cores, so more collectors add overhead, not throughput: these figures show the cost of the cluster, not how it scales. Per node, per record of the cluster (mean over 1-3 collectors): a NATS server {nats_per_server:.0} us of CPU (the busiest {nats_busiest:.0} us; every server stores every record at R3, so this does not shrink with more collectors); the collectors together a + b*k us with a = {a:.0} us (ingest, publish, shard writing and gzip: split among them) and b = {b:.0} us (what each collector pays for every record, chiefly its own event history of the whole stream){}. On machines of c cores per node that predicts about c x 10^6 / max(a/k + b, {nats_busiest:.0}) records/s for k collectors: a model from these figures (fitted over three points on a contended machine), not a measurement",
        if b < 0.0 {
            "; b < 0 here: the run's noise is larger than what a collector adds, so the fit says little"
        } else {
            ""
        }
    ));
}
