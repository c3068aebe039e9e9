//! The processes of a cluster run: NATS servers from the black-box tests' kit, collectors
//! with `[cluster]`, and what the benchmark reads of them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use groundtrail_tests::nats::{NatsCluster, NatsOptions};

use super::{FILE_INTERVAL, SHARDS, STREAM_MAX_BYTES, WAIT, agent_names};
use crate::Ctx;
use crate::harness::{self, HttpConn};

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

/// Reads `/metrics` of one collector over mTLS.
pub(super) struct Metrics(HttpConn);

impl Metrics {
    pub(super) fn new(ctx: &Ctx, addr: std::net::SocketAddr) -> anyhow::Result<Metrics> {
        let (cert, key) = ctx.pki.agent(&agent_names()[0])?;
        Ok(Metrics(HttpConn::tls(addr, &ctx.pki.ca(), &cert, &key)?))
    }

    /// The value of the unlabelled metric `name` (0 when absent).
    pub(super) async fn get(&mut self, name: &str) -> anyhow::Result<f64> {
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

/// Three NATS servers under `dir`; a panic of the kit (it panics when the cluster does not
/// come up) becomes an error.
pub(super) async fn start_nats(bin: &Path, dir: &Path) -> anyhow::Result<NatsCluster> {
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
pub(super) struct Node {
    pub(super) name: String,
    pub(super) c: harness::Collector,
    pub(super) m: Metrics,
}

/// Starts collectors `c0..c<k>` on `nats`, sharing one signing key and the destination
/// `trail`.
pub(super) async fn start_collectors(
    ctx: &mut Ctx,
    dir: &Path,
    nats: &NatsCluster,
    k: usize,
    lease_ttl: u64,
) -> anyhow::Result<Vec<Node>> {
    let mut restarts = Vec::new();
    let nodes = start_nodes(ctx, dir, nats, k, lease_ttl, &mut restarts).await;
    for r in restarts {
        ctx.report.note(r);
    }
    nodes
}

async fn start_nodes(
    ctx: &Ctx,
    dir: &Path,
    nats: &NatsCluster,
    k: usize,
    lease_ttl: u64,
    restarts: &mut Vec<String>,
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
        let start = async || {
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
            anyhow::Ok(Node {
                name: name.clone(),
                c,
                m,
            })
        };
        // Ready is its `READY=1`, sent once it is connected to NATS and its streams and
        // buckets are there, so the next one starts after that. A collector that exits on the
        // way is started once more, and the run says so. On a fresh NATS cluster the first
        // collector used to exit with "JetStream GT_SHARDS: ... 503 no responders" (the bucket
        // it had just created had no leader yet); the collector now retries that check
        // (`cluster/nats.rs`), so a restart reported here is a start-up bug again, reported
        // rather than hidden.
        let mut node = match start().await {
            Ok(node) => node,
            Err(e) => {
                let e = format!("{e:#}");
                if !e.contains("before it was ready") {
                    bail!(e);
                }
                restarts.push(format!(
                    "cluster: collector {name} exited at start-up and was started again (a collector start-up bug, see the bench's cluster/nodes.rs): {}",
                    e.lines().last().unwrap_or_default()
                ));
                start().await?
            }
        };
        node.metric("groundtrail_cluster_shards_owned").await?;
        nodes.push(node);
    }
    Ok(nodes)
}

impl Node {
    /// One metric of this collector; an error says which collector and ends with its log.
    pub(super) async fn metric(&mut self, name: &str) -> anyhow::Result<f64> {
        let (node, c) = (&self.name, &self.c);
        self.m
            .get(name)
            .await
            .with_context(|| format!("collector {node}: {name}; log:\n{}", c.proc.log_tail()))
    }
}

/// Shards each node owns now.
async fn owned(nodes: &mut [Node]) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::new();
    for n in nodes {
        out.push(n.metric("groundtrail_cluster_shards_owned").await? as u64);
    }
    Ok(out)
}

/// Waits until every node owns its fair share (together every shard).
pub(super) async fn wait_spread(nodes: &mut [Node]) -> anyhow::Result<()> {
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
