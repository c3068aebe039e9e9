//! The event history in cluster mode: every collector indexes the whole stream into its own
//! history, so `LookupEvents` and the console answer from any collector.
//!
//! Why a copy per collector and not one shared index: the history is read far more than it is
//! written, an API limited to a few requests a second per account needs no scatter-gather, and
//! each copy is the same single-node store (`crate::history`), tested once. Indexing is
//! idempotent (the history is keyed by `eventID`), so a record stored twice in the stream is
//! listed once.
//!
//! # Guarantees
//!
//! - **Nothing is purged before this collector indexed it.** The indexer records how far it
//!   has indexed in its history store (durable by the same flush as the entries), then
//!   publishes that position as its *floor* in `GT_FLOORS` (again every couple of seconds,
//!   also while idle); shard writers purge only below every floor, and not at all while some
//!   floor is at the stream's start. A floor not renewed for a day
//!   ([`super::nats::FLOOR_TTL`]) expires: a collector stopped that long no longer holds the
//!   stream back, and misses what was purged meanwhile (the trail has it). Until then a
//!   stopped collector's floor holds the purge back: a collector taken out of the cluster for
//!   good should have its floor deleted (`nats kv del GT_FLOORS floor.<node_id>`).
//! - **Eventually complete.** `LookupEvents` on a collector lists a record once that
//!   collector's indexer has read its chunk, typically within a second, as CloudTrail's own
//!   event history lags its API calls.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use groundtrail_common::shutdown::Shutdown;

use super::intent::Chunk;
use super::metrics::{add, metrics};
use super::nats::Nats;
use super::read::Reader;
use crate::history::History;

/// Records indexed in one history batch at most.
const BATCH_RECORDS: usize = 20_000;
/// How often the floor is published while the indexer makes progress.
const FLOOR_EVERY: Duration = Duration::from_secs(2);

/// The lowest floor of every collector's history, if any has one.
pub async fn lowest_floor(nats: &Nats) -> Result<Option<u64>, String> {
    let mut keys = nats.floors.keys().await.map_err(|e| e.to_string())?;
    let mut lowest: Option<u64> = None;
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| e.to_string())?;
        let Some(value) = nats.floors.get(&key).await.map_err(|e| e.to_string())? else {
            continue;
        };
        if let Ok(bytes) = <[u8; 8]>::try_from(value.as_ref()) {
            let floor = u64::from_be_bytes(bytes);
            lowest = Some(lowest.map_or(floor, |l| l.min(floor)));
        }
    }
    Ok(lowest)
}

/// Indexes the stream into `history` until `shutdown`, then for at most `grace` more (what
/// ingest published before it stopped).
pub fn spawn(
    nats: Nats,
    history: Arc<History>,
    retention: Duration,
    node: String,
    grace: Duration,
    shutdown: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut indexer = Indexer {
            nats,
            history,
            retention,
            node,
        };
        indexer.run(grace, shutdown).await
    })
}

struct Indexer {
    nats: Nats,
    history: Arc<History>,
    retention: Duration,
    node: String,
}

impl Indexer {
    async fn put_floor(&self, position: u64) {
        let key = format!("floor.{}", self.node);
        if let Err(e) = self
            .nats
            .floors
            .put(key, position.to_be_bytes().to_vec().into())
            .await
        {
            tracing::debug!("cluster history: publishing the floor: {e}");
        }
    }

    async fn run(&mut self, grace: Duration, mut shutdown: Shutdown) {
        let mut position = match self.history.stream_position() {
            Ok(p) => p.unwrap_or(0),
            Err(e) => {
                tracing::error!(
                    "cluster history: cannot read the indexed position ({e}); from the stream's start"
                );
                0
            }
        };
        self.put_floor(position).await;
        let mut deadline: Option<tokio::time::Instant> = None;
        'open: loop {
            let mut reader = match Reader::open(&self.nats.records, "gt.rec.>", position).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("cluster history: {e}; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue 'open,
                        _ = shutdown.recv() => return,
                    }
                }
            };
            let mut last_floor = tokio::time::Instant::now();
            loop {
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    return;
                }
                let mut batch: Vec<Vec<u8>> = Vec::new();
                let mut next = position;
                let mut caught_up = false;
                while batch.len() < BATCH_RECORDS {
                    let wait = if batch.is_empty() {
                        Duration::from_millis(500)
                    } else {
                        Duration::from_millis(50)
                    };
                    let read = tokio::select! {
                        r = reader.next(wait) => r,
                        _ = shutdown.recv(), if deadline.is_none() => {
                            deadline = Some(tokio::time::Instant::now() + grace);
                            Ok(None)
                        }
                    };
                    match read {
                        Ok(Some(m)) => {
                            next = m.seq + 1;
                            match Chunk::decode(m.seq, &m.subject, m.stored_at, &m.payload) {
                                Ok(c) => batch.extend(c.records),
                                Err(e) => tracing::error!("cluster history: {e}; skipped"),
                            }
                            if m.pending == 0 {
                                caught_up = true;
                                break;
                            }
                        }
                        Ok(None) => {
                            caught_up = true;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!("cluster history: {e}; reopening");
                            continue 'open;
                        }
                    }
                }
                let progressed = next > position;
                if progressed {
                    if let Err(e) = self.index(batch, next).await {
                        tracing::error!("cluster history: {e}; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue 'open;
                    }
                    position = next;
                }
                // Also renewed while idle: the floor's key expires after FLOOR_TTL without it.
                if last_floor.elapsed() >= FLOOR_EVERY || (caught_up && progressed) {
                    self.put_floor(position).await;
                    last_floor = tokio::time::Instant::now();
                }
                if caught_up && deadline.is_some() {
                    return;
                }
            }
        }
    }

    async fn index(&self, records: Vec<Vec<u8>>, next: u64) -> Result<(), String> {
        let count = records.len() as u64;
        let cutoff = (groundtrail_common::time::now_secs().timestamp().max(0) as u64)
            .saturating_sub(self.retention.as_secs());
        let h = self.history.clone();
        tokio::task::spawn_blocking(move || {
            h.insert(records.iter().map(Vec::as_slice), cutoff)?;
            h.set_stream_position(next)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        self.history.flush().await.map_err(|e| e.to_string())?;
        add(&metrics().history_indexed, count);
        Ok(())
    }
}
