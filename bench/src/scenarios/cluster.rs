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

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use super::{EXPECTED, fig, rates};
use crate::Ctx;
use crate::generator::Rng;
use crate::harness::{self, HttpConn};
use crate::proc::cpu_seconds;
use crate::report::num;
use groundtrail_tests::nats::{NatsCluster, NatsOptions};

const AGENTS: usize = 6;
const BATCH: usize = 1000;
const SHARDS: u32 = 16;
const FILE_INTERVAL: &str = "1s";
/// Below the NATS servers' `max_file_store` (1 GiB in the kit), as the config asks.
const STREAM_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Longest wait for the cluster to spread its shards, or for records to be delivered.
const WAIT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(50);

/// The `nats-server` executable: `NATS_SERVER`, else `.venv-nats/bin/nats-server` of this
/// source tree (what `scripts/test.sh` installs) or of the current directory.
pub fn nats_server() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("NATS_SERVER={} is not a file", p.display()))
        };
    }
    let venv = Path::new(".venv-nats/bin/nats-server");
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(venv);
    [tree, venv.to_path_buf()]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "no nats-server: set NATS_SERVER, or run scripts/test.sh once (it installs .venv-nats)"
                .to_string()
        })
}

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

/// Reads `/metrics` of one collector over mTLS.
struct Metrics(HttpConn);

impl Metrics {
    fn new(ctx: &Ctx, addr: std::net::SocketAddr) -> anyhow::Result<Metrics> {
        let (cert, key) = ctx.pki.agent(&agent_names()[0])?;
        Ok(Metrics(HttpConn::tls(addr, &ctx.pki.ca(), &cert, &key)?))
    }

    /// The value of the unlabelled metric `name` (0 when absent).
    async fn get(&mut self, name: &str) -> anyhow::Result<f64> {
        let (status, body) = self.0.request("GET", "/metrics", Vec::new(), &[]).await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        let text = String::from_utf8_lossy(&body);
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0))
    }
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

/// Three NATS servers under `dir`; a panic of the kit (it panics when the cluster does not
/// come up) becomes an error.
async fn start_nats(bin: &Path, dir: &Path) -> anyhow::Result<NatsCluster> {
    let (bin, dir) = (bin.to_path_buf(), dir.to_path_buf());
    tokio::spawn(async move { NatsCluster::start(&bin, &dir, 3, NatsOptions::default()).await })
        .await
        .map_err(|e| {
            let why = e
                .try_into_panic()
                .ok()
                .and_then(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                })
                .unwrap_or_else(|| "cancelled".into());
            anyhow!("the NATS servers did not start: {why}")
        })
}

/// A cluster collector and its `/metrics`.
struct Node {
    name: String,
    c: harness::Collector,
    m: Metrics,
}

/// Starts collectors `c0..c<k>` on `nats`, sharing one signing key and the destination
/// `trail`.
async fn start_collectors(
    ctx: &Ctx,
    dir: &Path,
    nats: &NatsCluster,
    k: usize,
    lease_ttl: u64,
) -> anyhow::Result<Vec<Node>> {
    let key = groundtrail_common::trail::SigningKey::generate()?.to_pem()?;
    let urls: Vec<String> = nats
        .client_urls()
        .iter()
        .map(|u| format!("{u:?}"))
        .collect();
    let trail = dir.join("trail");
    let mut nodes = Vec::new();
    for i in 0..k {
        let name = format!("c{i}");
        let cdir = dir.join(&name);
        std::fs::create_dir_all(&cdir)?;
        let key_file = cdir.join("signing-key.pem");
        std::fs::write(&key_file, &key)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
        let extra = format!(
            "[detection]\nenabled = false\n\n[cluster]\nnats = [{}]\nnode_id = \"{name}\"\nshards = {SHARDS}\nlease_ttl = \"{lease_ttl}s\"\nstream_max_bytes = {STREAM_MAX_BYTES}\n",
            urls.join(", ")
        );
        let c = harness::start_collector_at(
            &ctx.bins,
            &ctx.pki,
            &cdir,
            FILE_INTERVAL,
            &agent_names(),
            &trail,
            &extra,
        )
        .await
        .with_context(|| format!("start collector {name}"))?;
        let m = Metrics::new(ctx, c.addr)?;
        nodes.push(Node { name, c, m });
    }
    Ok(nodes)
}

/// Shards each node owns now.
async fn owned(nodes: &mut [Node]) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n.m.get("groundtrail_cluster_shards_owned").await? as u64);
    }
    Ok(out)
}

/// Waits until every node owns its fair share (together every shard).
async fn wait_spread(nodes: &mut [Node]) -> anyhow::Result<()> {
    let fair = SHARDS.div_ceil(nodes.len() as u32) as u64;
    let start = Instant::now();
    loop {
        let o = owned(nodes).await?;
        if o.iter().sum::<u64>() == u64::from(SHARDS) && o.iter().all(|&s| s <= fair) {
            return Ok(());
        }
        if start.elapsed() > WAIT {
            bail!("shards not spread within {WAIT:?}: owned {o:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
                .m
                .get("groundtrail_cluster_records_filed_total")
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
                    node.m
                        .get("groundtrail_cluster_history_indexed_total")
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

/// When a trickle batch was sent, and its records: (eventID, of the target pair).
type SentBatch = (Instant, Vec<(String, bool)>);

/// A steady trickle to one collector: every 100 ms a batch of 10 records, cycling through the
/// generator's templates. Keeps (when the batch was sent, its ids) for each answered batch.
struct Trickle {
    sent: Arc<Mutex<Vec<SentBatch>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Trickle {
    fn start(
        ctx: &Ctx,
        addr: std::net::SocketAddr,
        target: (String, String),
    ) -> anyhow::Result<Trickle> {
        let (cert, key) = ctx.pki.agent(&agent_names()[1])?;
        let mut conn = HttpConn::tls(addr, &ctx.pki.ca(), &cert, &key)?;
        let templates = ctx.templates.clone();
        let mut rng = Rng::new(ctx.seed ^ 0x7A_CE0F);
        let sent = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sent2, stop2) = (sent.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut next, mut seq) = (0usize, 1u64);
            while !stop2.load(std::sync::atomic::Ordering::Acquire) {
                tick.tick().await;
                let mut recs = Vec::new();
                let mut ids = Vec::new();
                for _ in 0..10 {
                    let t = &templates[next % templates.len()];
                    next += 1;
                    let id = rng.uuid();
                    recs.push(t.with_id(&id));
                    ids.push((id, t.account == target.0 && t.region == target.1));
                }
                let at = Instant::now();
                conn.post_batch(harness::zstd_batch(&recs), seq, seq + 9)
                    .await?;
                seq += 10;
                sent2.lock().expect("not poisoned").push((at, ids));
            }
            Ok(())
        });
        Ok(Trickle { sent, stop, task })
    }

    /// The first record of the target pair sent at or after `after`.
    fn first_target_after(&self, after: Instant) -> Option<String> {
        let sent = self.sent.lock().expect("not poisoned");
        sent.iter()
            .filter(|(at, _)| *at >= after)
            .flat_map(|(_, ids)| ids.iter())
            .find(|(_, target)| *target)
            .map(|(id, _)| id.clone())
    }

    async fn finish(self) -> anyhow::Result<Vec<String>> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.task.await??;
        let sent = self.sent.lock().expect("not poisoned");
        Ok(sent
            .iter()
            .flat_map(|(_, ids)| ids.iter().map(|(id, _)| id.clone()))
            .collect())
    }
}

/// Watches a local destination: when each `eventID` was first seen, and how often.
struct Watch {
    root: PathBuf,
    read: HashSet<PathBuf>,
    seen: HashMap<String, (Instant, u32)>,
}

impl Watch {
    fn new(root: &Path) -> Watch {
        Watch {
            root: root.to_path_buf(),
            read: HashSet::new(),
            seen: HashMap::new(),
        }
    }

    /// Reads the log files not read yet.
    fn poll(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        for f in harness::log_files(&self.root) {
            if self.read.contains(&f) {
                continue;
            }
            for id in harness::file_event_ids(&f)? {
                self.seen.entry(id).or_insert((now, 0)).1 += 1;
            }
            self.read.insert(f);
        }
        Ok(())
    }

    fn seen_at(&self, id: &str) -> Option<Instant> {
        self.seen.get(id).map(|s| s.0)
    }
}

/// Two collectors, a trickle, `kill -9` of the owner of the busiest pair's shard.
async fn takeover(ctx: &mut Ctx, nats_bin: &Path, lease_ttl: u64) -> anyhow::Result<()> {
    ctx.step("cluster: takeover: three NATS servers and two collectors");
    let dir = ctx.dir("cluster-takeover")?;
    let nats = start_nats(nats_bin, &dir.join("nats")).await?;
    let mut nodes = start_collectors(ctx, &dir, &nats, 2, lease_ttl).await?;
    wait_spread(&mut nodes).await?;

    // The busiest (account, region) of the records, its shard, and that shard's owner.
    let mut pairs: HashMap<(String, String), usize> = HashMap::new();
    for t in ctx.templates.iter() {
        *pairs
            .entry((t.account.clone(), t.region.clone()))
            .or_default() += 1;
    }
    let target = pairs
        .into_iter()
        .max_by_key(|(p, c)| (*c, std::cmp::Reverse(p.clone())))
        .map(|(p, _)| p)
        .ok_or_else(|| anyhow!("no records"))?;
    let shard = groundtrail_collector::cluster::nats::shard_of(&target.0, &target.1, SHARDS);
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(nats.client_urls())
        .await
        .context("connect to NATS")?;
    let leases = async_nats::jetstream::new(client)
        .get_key_value(groundtrail_collector::cluster::nats::LEASES)
        .await
        .context("the leases bucket")?;
    let owner = leases
        .get(format!("shard.{shard}"))
        .await
        .context("read the shard's lease")?
        .map(|v| String::from_utf8_lossy(&v).to_string())
        .ok_or_else(|| anyhow!("shard {shard} has no lease"))?;
    let victim = nodes
        .iter()
        .position(|n| n.name == owner)
        .ok_or_else(|| anyhow!("shard {shard} is leased to {owner:?}, not a collector here"))?;
    let survivor = 1 - victim;

    let trail = dir.join("trail");
    let mut watch = Watch::new(&trail);
    let trickle = Trickle::start(ctx, nodes[survivor].c.addr, target.clone())?;
    ctx.step(format!(
        "cluster: takeover: trickle running, waiting until {owner} delivers shard {shard}"
    ));
    // Steady state: a record of the shard sent after the trickle began is delivered.
    let started = Instant::now();
    loop {
        watch.poll()?;
        if let Some(id) = trickle.first_target_after(started)
            && watch.seen_at(&id).is_some()
        {
            break;
        }
        if started.elapsed() > WAIT {
            bail!("the trickle's records of shard {shard} were not delivered within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ctx.step(format!(
        "cluster: takeover: kill -9 {owner}, waiting for the survivor"
    ));
    let killed = Instant::now();
    nodes[victim].c.proc.kill9();
    let (mut all_owned, mut first_delivered) = (None, None);
    while all_owned.is_none() || first_delivered.is_none() {
        if all_owned.is_none() {
            let o = nodes[survivor]
                .m
                .get("groundtrail_cluster_shards_owned")
                .await? as u32;
            if o == SHARDS {
                all_owned = Some(killed.elapsed().as_secs_f64());
            }
        }
        if first_delivered.is_none() {
            watch.poll()?;
            if let Some(id) = trickle.first_target_after(killed)
                && let Some(at) = watch.seen_at(&id)
            {
                first_delivered = Some(at.duration_since(killed).as_secs_f64());
            }
        }
        if killed.elapsed() > WAIT {
            bail!("no takeover within {WAIT:?} of the kill");
        }
        tokio::time::sleep(POLL).await;
    }
    let ids = trickle.finish().await?;
    // Every trickle record, before and after the kill, exactly once.
    let start = Instant::now();
    loop {
        watch.poll()?;
        if ids.iter().all(|id| watch.seen.contains_key(id)) {
            break;
        }
        if start.elapsed() > WAIT {
            bail!("trickle records missing after the takeover");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let twice = watch.seen.values().filter(|s| s.1 > 1).count();
    if twice > 0 || watch.seen.len() != ids.len() {
        bail!(
            "after the takeover: {twice} records delivered more than once, {} records in the files for {} sent",
            watch.seen.len(),
            ids.len()
        );
    }
    nodes[survivor].c.proc.kill9();
    drop(nats);

    let ttl = lease_ttl as f64;
    let bound = ttl + ttl / 3.0;
    let (owned_s, first_s) = (
        all_owned.expect("loop ends when set"),
        first_delivered.expect("loop ends when set"),
    );
    ctx.report.note(format!(
        "cluster takeover: two collectors, lease_ttl {lease_ttl}s (renewed every lease_ttl/3), a trickle of 100 records/s (batches of 10 every 100 ms) to the surviving collector only; {owner} owned shard {shard} of ({}, {}), the busiest (account, region), and was killed with SIGKILL; all {} trickle records (before and after the kill) found exactly once in the delivered files",
        target.0,
        target.1,
        ids.len()
    ));
    fig(
        ctx,
        "cluster.takeover.all_shards_s",
        owned_s,
        "s",
        None,
        &format!("lease_ttl {lease_ttl} s; expected about lease_ttl + lease_ttl/3 = {bound:.1} s"),
    );
    fig(
        ctx,
        "cluster.takeover.first_record_s",
        first_s,
        "s",
        None,
        &format!(
            "expected about the above + log_file_interval {FILE_INTERVAL} (polled every {} ms)",
            POLL.as_millis()
        ),
    );
    Ok(())
}
