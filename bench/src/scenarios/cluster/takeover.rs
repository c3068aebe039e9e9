//! Takeover after `kill -9` of a shard's owner: a steady trickle, the kill, and the clocks
//! (see the parent module's doc).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use super::nodes::{start_collectors, start_nats, wait_spread};
use super::{FILE_INTERVAL, POLL, SHARDS, WAIT, agent_names, fig};
use crate::Ctx;
use crate::generator::Rng;
use crate::harness::{self, HttpConn};

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
pub(super) async fn takeover(ctx: &mut Ctx, nats_bin: &Path, lease_ttl: u64) -> anyhow::Result<()> {
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
                .metric("groundtrail_cluster_shards_owned")
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
