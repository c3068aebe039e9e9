//! Which collector writes which shard: leases, liveness, and a fair share each.
//!
//! Every `lease_ttl / 3` each collector
//! 1. renews its liveness key `node.<id>` in `GT_LEASES` (the bucket's `max_age` is
//!    `lease_ttl`, so a collector that stops renewing disappears from it);
//! 2. renews the lease `shard.<n>` of each shard it writes with a compare-and-set on the
//!    lease's revision; a lease it cannot renew is given up and its writer stopped at once;
//! 3. takes free shards (a lease that expired or was released) up to its fair share,
//!    `ceil(shards / live collectors)`, preferring the shards that rank it highest by
//!    rendezvous hashing, so that placement stays put as collectors come and go;
//! 4. hands back the shards above its fair share (lowest ranked first), so a collector that
//!    joins gets work without anyone failing.
//!
//! A lease only says who should write. What stops a collector that lost its lease without
//! noticing (paused, cut off) is the fence on the shard's state ([`super::state`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use groundtrail_common::shutdown::Shutdown;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::metrics::{add, metrics};
use super::nats::Nats;
use super::writer::{Exit, Stop, Writer, WriterSettings};

/// A shard this collector holds.
struct Held {
    revision: u64,
    /// When the lease was last created or renewed.
    renewed: Instant,
    stop: watch::Sender<Stop>,
    task: JoinHandle<Exit>,
    /// Asked to hand the shard back; its lease is kept (renewed) until its writer ended.
    releasing: bool,
}

/// The shard assignment loop of one collector.
pub struct Membership {
    nats: Nats,
    settings: Arc<WriterSettings>,
    lease_ttl: Duration,
    held: BTreeMap<u32, Held>,
    /// Shards whose writer failed here, not to be taken again before the instant given: a
    /// failure that retrying does not fix (a damaged chunk, a range no longer in the stream)
    /// must not become a loop of takeovers on one collector (it is logged each time).
    cooldown: BTreeMap<u32, Instant>,
}

/// How long a shard whose writer failed is left to the other collectors.
const COOLDOWN: Duration = Duration::from_secs(60);

/// Rendezvous score of (node, shard): each node ranks the shards by it.
fn score(node: &str, shard: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain(shard.to_be_bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn lease_key(shard: u32) -> String {
    format!("shard.{shard}")
}

impl Membership {
    pub fn new(nats: Nats, settings: Arc<WriterSettings>, lease_ttl: Duration) -> Membership {
        metrics().on.store(true, Ordering::Relaxed);
        Membership {
            nats,
            settings,
            lease_ttl,
            held: BTreeMap::new(),
            cooldown: BTreeMap::new(),
        }
    }

    /// Runs until `shutdown`; then every writer files, delivers and digests what it read
    /// (within `grace`) and its lease is released, so another collector takes over at once.
    pub async fn run(mut self, mut shutdown: Shutdown, grace: Duration) {
        let tick = self.lease_ttl / 3;
        // The first round only announces this collector, so that collectors started together
        // see each other before taking shards.
        self.announce().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.recv() => break,
            }
            // A round can wait on NATS timeouts; a stop does not wait for it (what a cut round
            // leaves behind is a lease that expires, or a writer told to stop below).
            tokio::select! {
                _ = self.round() => {}
                _ = shutdown.recv() => break,
            }
        }
        self.stop_all(Stop::Shutdown, grace).await;
        let key = format!("node.{}", self.settings.node);
        let _ = self.nats.leases.delete(key).await;
    }

    async fn announce(&self) {
        let key = format!("node.{}", self.settings.node);
        if let Err(e) = self.nats.leases.put(key, "alive".into()).await {
            tracing::warn!("cluster: announcing this collector: {e}");
        }
    }

    /// The collectors alive now.
    async fn live(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.nats.leases.keys().await {
            Ok(mut keys) => {
                while let Some(Ok(k)) = keys.next().await {
                    if let Some(node) = k.strip_prefix("node.") {
                        out.push(node.to_string());
                    }
                }
            }
            Err(e) => tracing::warn!("cluster: listing collectors: {e}"),
        }
        out
    }

    async fn round(&mut self) {
        self.announce().await;
        self.reap().await;
        self.renew().await;
        let live = self.live().await;
        let count = live.len().max(1) as u32;
        let shards = self.settings.shards;
        let fair = shards.div_ceil(count) as usize;
        let node = self.settings.node.clone();
        let working = self.held.values().filter(|h| !h.releasing).count();
        if working < fair && self.held.len() < fair {
            let mut free: Vec<u32> = (0..shards).filter(|s| !self.held.contains_key(s)).collect();
            free.sort_by_key(|s| std::cmp::Reverse(score(&node, *s)));
            for shard in free {
                if self.held.len() >= fair {
                    break;
                }
                if !self.try_take(shard).await {
                    // NATS did not answer: the next round tries again.
                    break;
                }
            }
        } else if working > fair {
            let mut mine: Vec<u32> = self
                .held
                .iter()
                .filter(|(_, h)| !h.releasing)
                .map(|(s, _)| *s)
                .collect();
            mine.sort_by_key(|s| score(&node, *s));
            for shard in mine.into_iter().take(working - fair) {
                if let Some(h) = self.held.get_mut(&shard) {
                    tracing::info!(shard, "cluster: handing the shard back (fair share)");
                    h.releasing = true;
                    let _ = h.stop.send(Stop::Release);
                }
            }
        }
        let working = self.held.values().filter(|h| !h.releasing).count();
        metrics()
            .shards_owned
            .store(working as u64, Ordering::Relaxed);
    }

    /// Takes a shard whose lease is free, and starts its writer. `false` when NATS did not
    /// answer (no point asking for the next shard in this round).
    async fn try_take(&mut self, shard: u32) -> bool {
        if self
            .cooldown
            .get(&shard)
            .is_some_and(|until| Instant::now() < *until)
        {
            return true;
        }
        let revision = match self
            .nats
            .leases
            .create(lease_key(shard), self.settings.node.clone().into())
            .await
        {
            Ok(r) => r,
            // A create that timed out may have landed: the lease is ours if it names us.
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                match self.nats.leases.entry(lease_key(shard)).await {
                    Ok(Some(entry))
                        if entry.operation == kv::Operation::Put
                            && entry.value.as_ref() == self.settings.node.as_bytes() =>
                    {
                        entry.revision
                    }
                    Ok(_) => return true,
                    Err(_) => return false,
                }
            }
            Err(e) => {
                tracing::debug!(shard, "cluster: lease: {e}");
                return false;
            }
        };
        let (stop, stop_rx) = watch::channel(Stop::Run);
        let nats = self.nats.clone();
        let settings = self.settings.clone();
        let task = tokio::spawn(async move {
            match Writer::start(shard, nats, settings, stop_rx).await {
                Ok(writer) => writer.run().await,
                Err(e) => e,
            }
        });
        self.held.insert(
            shard,
            Held {
                revision,
                renewed: Instant::now(),
                stop,
                task,
                releasing: false,
            },
        );
        true
    }

    /// Renews every held lease (all at once: one slow answer must not let the others
    /// expire). A lease is given up, and its writer stopped, when it is someone else's now (a
    /// refused revision), or when it could not be renewed for two thirds of `lease_ttl` (it may
    /// expire any moment). A failure short of that (a NATS leader election takes seconds) is
    /// retried at the next round.
    async fn renew(&mut self) {
        let leases = &self.nats.leases;
        let node = &self.settings.node;
        let renewals = self.held.iter().map(|(shard, h)| async move {
            let renewed = leases
                .update(lease_key(*shard), node.clone().into(), h.revision)
                .await;
            (*shard, renewed)
        });
        for (shard, renewed) in futures_util::future::join_all(renewals).await {
            match renewed {
                Ok(r) => {
                    if let Some(h) = self.held.get_mut(&shard) {
                        h.revision = r;
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        shard,
                        "cluster: lease not renewed ({e}); stopping its writer"
                    );
                    add(&metrics().leases_lost, 1);
                    if let Some(h) = self.held.remove(&shard) {
                        h.task.abort();
                    }
                }
            }
        }
    }

    /// Notices writers that ended on their own (fenced, failed) and frees their leases.
    async fn reap(&mut self) {
        let ended: Vec<u32> = self
            .held
            .iter()
            .filter(|(_, h)| h.task.is_finished())
            .map(|(s, _)| *s)
            .collect();
        for shard in ended {
            let Some(h) = self.held.remove(&shard) else {
                continue;
            };
            match h.task.await {
                Ok(Exit::Fenced(why)) => {
                    add(&metrics().fenced, 1);
                    tracing::warn!(shard, "cluster: stopped writing: {why}");
                    // The lease is someone else's now, or about to expire: leave it.
                }
                Ok(Exit::Failed(why)) => {
                    tracing::error!(
                        shard,
                        "cluster: shard writer failed: {why}; releasing it to the other collectors for {}s",
                        COOLDOWN.as_secs()
                    );
                    self.cooldown.insert(shard, Instant::now() + COOLDOWN);
                    self.release_lease(shard, h.revision).await;
                }
                Ok(Exit::Stopped) if h.releasing => {
                    self.release_lease(shard, h.revision).await;
                }
                Ok(Exit::Stopped) | Err(_) => {}
            }
        }
    }

    /// Deletes this collector's lease of `shard`, if it is still the revision it holds (a
    /// lease another collector took meanwhile stays). Best effort: an undeleted lease expires.
    async fn release_lease(&self, shard: u32, revision: u64) {
        let _ = self
            .nats
            .leases
            .delete_expect_revision(lease_key(shard), Some(revision))
            .await;
    }

    /// Tells every writer to stop `how`, keeps their leases renewed while they finish (within
    /// `grace`), and releases each lease once its writer is done.
    async fn stop_all(&mut self, how: Stop, grace: Duration) {
        let deadline = Instant::now() + grace;
        for h in self.held.values() {
            let _ = h.stop.send(how);
        }
        let tick = self.lease_ttl / 3;
        loop {
            let done: Vec<u32> = self
                .held
                .iter()
                .filter(|(_, h)| h.task.is_finished())
                .map(|(s, _)| *s)
                .collect();
            for shard in done {
                let Some(h) = self.held.remove(&shard) else {
                    continue;
                };
                if let Ok(Exit::Stopped) = h.task.await {
                    self.release_lease(shard, h.revision).await;
                }
            }
            if self.held.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                for (shard, h) in std::mem::take(&mut self.held) {
                    tracing::warn!(
                        shard,
                        "cluster: shutdown grace ran out; the next owner goes on from the shard's state"
                    );
                    h.task.abort();
                }
                break;
            }
            tokio::time::sleep(tick.min(Duration::from_millis(200))).await;
            if self.held.values().any(|h| h.renewed.elapsed() >= tick) {
                self.renew().await;
            }
        }
        metrics().shards_owned.store(0, Ordering::Relaxed);
    }
}
