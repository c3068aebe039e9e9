//! The writer of one shard: from the shard's chunks in `GT_RECORDS` to delivered log files and
//! signed digest chains, on whichever collector holds the shard.
//!
//! # Guarantees
//!
//! Each step below is one compare-and-set of the shard's state ([`super::state`]) and nothing
//! is visible at a destination before the step that names it is committed:
//!
//! 1. **Close a range.** The chunks read since `next_seq` become files ([`super::intent::form`]):
//!    their keys, hashes and left-out duplicates are committed as the shard's *intent* before
//!    any upload. A crash before the commit leaves the chunks in the stream above `next_seq`;
//!    the next owner forms them into files under keys never seen.
//! 2. **Deliver the intent.** Every file goes to every destination, then the files' dedup keys
//!    to `GT_SEEN`, then one commit moves `next_seq` past the range, adds the files to their
//!    digest chains and clears the intent. A crash in between leaves the intent: the next
//!    owner rebuilds the same bytes from the same chunks, checks their SHA-256 against the
//!    intent, and uploads them again under the same keys. Every file is therefore delivered,
//!    once, to every destination, and listed once in its chain.
//! 3. **Sign a digest.** The next digest of a chain (its exact bytes and signature) is
//!    committed with the new chain head, then uploaded, then cleared: a retried upload stores
//!    the same object, and the chain continues on any owner from its committed head.
//! 4. **Purge.** The shard's chunks below `next_seq` and below every collector's event-history
//!    floor are purged from `GT_RECORDS`; nothing is purged that a file or a history needs.
//!
//! Dedup is by `eventTime` and `eventID`, per shard (so per account and region), over `[journal]
//! dedup_window`: a new owner loads the keys of every range filed in the window from `GT_SEEN`
//! before it files anything.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use groundtrail_common::time::{json_time, now_secs, parse_json_time};
use groundtrail_common::trail::DigestLogFile;
use groundtrail_common::trail::TrailLayout;
use groundtrail_common::trail::digest::{HASH_ALGORITHM, SIGNATURE_ALGORITHM};
use tokio::sync::watch;
use tokio::time::Instant;

use super::intent::{self, Chunk, Formed, Seen};
use super::metrics::{add, metrics};
use super::nats::{Nats, seen_subject, shard_filter};
use super::read::{Reader, last_seq, read_through};
use super::state::{CommitError, Intent, ShardState, ShardStore, chain_key, chain_parts};
use crate::delivery::gzip;
use crate::destination::{Destination, Metadata};
use crate::digest::ChainSigner;
use crate::journal::{DeliveredFile, PendingDigest};

/// What every shard writer of this collector shares.
pub struct WriterSettings {
    pub node: String,
    pub shards: u32,
    pub file_interval: Duration,
    pub max_bytes: usize,
    pub signer: ChainSigner,
    pub layout: TrailLayout,
    pub destinations: Vec<Arc<dyn Destination>>,
    /// The dedup index every shard writer of this collector shares.
    pub seen: Seen,
    /// The trail's own account and home region: its chains start at once, so an idle trail
    /// has digests too (as in single-node mode).
    pub seed: Option<(String, String)>,
}

/// How a writer is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep writing.
    Run,
    /// Hand the shard over: stop after the current step (another collector goes on).
    Release,
    /// The collector is stopping: file what was read, deliver it and write the covering
    /// digests, then stop (the caller bounds this by `[server] shutdown_grace`).
    Shutdown,
}

/// Why a writer stopped.
#[derive(Debug)]
pub enum Exit {
    /// Asked to.
    Stopped,
    /// Another collector took the shard over.
    Fenced(String),
    /// Something that retrying does not fix; logged, and the shard is released.
    Failed(String),
}

impl From<CommitError> for Exit {
    fn from(e: CommitError) -> Exit {
        match e {
            CommitError::Fenced { .. } => Exit::Fenced(e.to_string()),
            CommitError::Unavailable { .. } => Exit::Failed(e.to_string()),
        }
    }
}

/// An intent's files' JSON (in the intent's order) and the keys of their records.
type Built = (Vec<Vec<u8>>, Vec<(crate::dedup::DedupKey, i64)>);

/// Wait between retries of a failed upload or state update.
const RETRY: Duration = Duration::from_millis(500);
/// Purges of the stream at most this often.
const PURGE_EVERY: Duration = Duration::from_secs(5);
/// Dedup keys per `GT_SEEN` message at most: 30,000 keys of at most ~40 bytes each.
const SEEN_PART: usize = 30_000;
/// Past this many bytes of encoded state, every chain with waiting files gets its digest now
/// rather than at its interval, so the state stays well under NATS's 1 MiB message limit.
const STATE_SOFT_LIMIT: usize = 256 * 1024;

/// One shard being written.
pub struct Writer {
    shard: u32,
    nats: Nats,
    settings: Arc<WriterSettings>,
    store: ShardStore,
    state: ShardState,
    /// Chunks read since `next_seq`, not yet in an intent.
    pending: Vec<Chunk>,
    pending_bytes: usize,
    /// When the first pending chunk was read.
    opened: Option<Instant>,
    /// The current intent's files and keys as this writer formed them, when it did: saves
    /// reading the range back and assembling and parsing its records a second time.
    formed: Option<Built>,
    last_purge: Instant,
    stop: watch::Receiver<Stop>,
}

impl Writer {
    /// Takes the shard over (see [`ShardStore::take_over`]) and loads its dedup keys.
    pub async fn start(
        shard: u32,
        nats: Nats,
        settings: Arc<WriterSettings>,
        stop: watch::Receiver<Stop>,
    ) -> Result<Writer, Exit> {
        let (store, mut state) =
            ShardStore::take_over(nats.shards.clone(), shard, &settings.node).await?;
        add(&metrics().takeovers, 1);
        let mut seeded = false;
        if let Some((account, region)) = &settings.seed
            && super::nats::shard_of(account, region, settings.shards) == shard
        {
            let now = json_time(now_secs());
            for d in &settings.destinations {
                let key = chain_key(d.name(), account, region);
                if !state.chains.contains_key(&key) {
                    state.chains.insert(key.clone(), Default::default());
                    state.started.insert(key, now.clone());
                    seeded = true;
                }
            }
        }
        tracing::info!(
            shard,
            epoch = store.epoch(),
            next_seq = state.next_seq,
            intent = state.intent.is_some(),
            "cluster: writing shard"
        );
        let mut writer = Writer {
            shard,
            nats,
            settings,
            store,
            state,
            pending: Vec::new(),
            pending_bytes: 0,
            opened: None,
            formed: None,
            last_purge: Instant::now(),
            stop,
        };
        if seeded {
            // Committed now, so that the chain's start survives an early takeover.
            writer.commit().await?;
        }
        writer.load_seen().await?;
        Ok(writer)
    }

    /// Loads the dedup keys of every range filed in the window.
    async fn load_seen(&mut self) -> Result<(), Exit> {
        let subject = seen_subject(self.shard);
        let Some(last) = last_seq(&self.nats.seen, &subject)
            .await
            .map_err(Exit::Failed)?
        else {
            return Ok(());
        };
        let messages = read_through(&self.nats.seen, &subject, 0, last)
            .await
            .map_err(|e| Exit::Failed(format!("shard {}: loading dedup keys: {e}", self.shard)))?;
        for m in messages {
            self.settings
                .seen
                .insert(&intent::decode_seen(&m.payload), m.stored_at)
                .map_err(|e| Exit::Failed(e.to_string()))?;
        }
        tracing::debug!(
            shard = self.shard,
            through = last,
            "cluster: dedup keys loaded"
        );
        Ok(())
    }

    fn stopping(&self) -> Stop {
        *self.stop.borrow()
    }

    /// Writes the shard until asked to stop or fenced.
    pub async fn run(mut self) -> Exit {
        match self.run_inner().await {
            Ok(()) => Exit::Stopped,
            Err(e) => e,
        }
    }

    async fn run_inner(&mut self) -> Result<(), Exit> {
        self.finish_intent().await?;
        let mut reader = self.open_reader().await?;
        loop {
            self.digests(false).await?;
            self.purge().await;
            match self.stopping() {
                Stop::Run => {}
                Stop::Release => return Ok(()),
                Stop::Shutdown => {
                    // Whatever the stream still has for this shard is left for the next start.
                    self.close_range().await?;
                    self.finish_intent().await?;
                    self.digests(true).await?;
                    return Ok(());
                }
            }
            let now = Instant::now();
            let close_at = self.opened.map(|o| o + self.settings.file_interval);
            let wait = close_at
                .map(|at| at.saturating_duration_since(now))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            let read = tokio::select! {
                r = reader.next(wait) => r,
                _ = self.stop.changed() => Ok(None),
            };
            match read {
                Ok(Some(m)) => {
                    let chunk = Chunk::decode(m.seq, &m.subject, m.stored_at, &m.payload)
                        .map_err(|e| Exit::Failed(e.to_string()))?;
                    self.pending_bytes += chunk.records.iter().map(|r| r.len() + 1).sum::<usize>();
                    self.pending.push(chunk);
                    self.opened.get_or_insert_with(Instant::now);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(
                        shard = self.shard,
                        "cluster: reading the stream: {e}; reopening"
                    );
                    tokio::time::sleep(RETRY).await;
                    reader = self.open_reader().await?;
                    self.pending.clear();
                    self.pending_bytes = 0;
                    self.opened = None;
                    continue;
                }
            }
            let due = self
                .opened
                .is_some_and(|o| o + self.settings.file_interval <= Instant::now());
            if due || self.pending_bytes >= self.settings.max_bytes {
                self.close_range().await?;
                self.finish_intent().await?;
            }
        }
    }

    async fn open_reader(&self) -> Result<Reader, Exit> {
        let filter = shard_filter(self.shard);
        let mut delay = RETRY;
        loop {
            match Reader::open(&self.nats.records, &filter, self.state.next_seq).await {
                Ok(r) => return Ok(r),
                Err(e) if self.stopping() == Stop::Run => {
                    tracing::warn!(shard = self.shard, "cluster: {e}; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(Exit::Failed(e)),
            }
        }
    }

    /// Commits the state, retrying while NATS is unavailable (a takeover ends the writer).
    async fn commit(&mut self) -> Result<(), Exit> {
        let mut delay = RETRY;
        loop {
            match self.store.commit(&self.state).await {
                Ok(()) => {
                    add(&metrics().commits, 1);
                    return Ok(());
                }
                Err(e @ CommitError::Fenced { .. }) => return Err(e.into()),
                Err(e) => {
                    if self.stopping() != Stop::Run && delay >= Duration::from_secs(4) {
                        return Err(e.into());
                    }
                    tracing::warn!(shard = self.shard, "cluster: {e}; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Step 1: the pending chunks become the shard's intent.
    async fn close_range(&mut self) -> Result<(), Exit> {
        let Some(last) = self.pending.last().map(|c| c.seq) else {
            return Ok(());
        };
        let created = now_secs();
        // CPU work (hashing, dedup lookups, gzip-free JSON assembly): off the async workers'
        // turn, so lease renewals and ingest go on meanwhile.
        let formed = tokio::task::block_in_place(|| {
            intent::form(
                &self.pending,
                &self.settings.seen,
                &self.settings.layout,
                created,
                &mut self.state.next_file,
            )
        })
        .map_err(|e| Exit::Failed(e.to_string()))?;
        let Formed {
            files,
            jsons,
            accepted,
        } = formed;
        let total: u64 = self.pending.iter().map(|c| c.records.len() as u64).sum();
        let filed: u64 = files.iter().map(|f| u64::from(f.records)).sum();
        add(&metrics().records_duplicate, total - filed);
        self.pending.clear();
        self.pending_bytes = 0;
        self.opened = None;
        if files.is_empty() {
            self.state.next_seq = last + 1;
            return self.commit().await;
        }
        self.state.intent = Some(Intent {
            from_seq: self.state.next_seq,
            to_seq: last,
            created: json_time(created),
            files,
        });
        self.commit().await?;
        // Recorded: from now on these records are filed by whoever writes the shard.
        self.settings
            .seen
            .insert_all(&accepted)
            .map_err(|e| Exit::Failed(e.to_string()))?;
        self.formed = Some((jsons, accepted));
        Ok(())
    }

    /// Reads the chunks of a range back from the stream (an intent formed by another owner).
    async fn read_range(&self, from: u64, to: u64) -> Result<Vec<Chunk>, Exit> {
        let messages = read_through(&self.nats.records, &shard_filter(self.shard), from, to)
            .await
            .map_err(|e| {
                Exit::Failed(format!(
                    "shard {}: the recorded range {from}..={to} is no longer complete in the stream ({e})",
                    self.shard
                ))
            })?;
        let chunks = messages
            .iter()
            .map(|m| Chunk::decode(m.seq, &m.subject, m.stored_at, &m.payload))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Exit::Failed(e.to_string()))?;
        Ok(chunks)
    }

    /// Step 2: delivers the intent's files everywhere, records their dedup keys, and moves
    /// `next_seq` past the range.
    async fn finish_intent(&mut self) -> Result<(), Exit> {
        let Some(intent) = self.state.intent.clone() else {
            return Ok(());
        };
        // The files' JSON and keys: as formed here, or rebuilt from the recorded range (another
        // owner formed it) and checked against the recorded hashes before any upload.
        let formed_here = self.formed.is_some();
        let (jsons, keys) = match self.formed.take() {
            Some(built) => built,
            None => {
                let chunks = self.read_range(intent.from_seq, intent.to_seq).await?;
                tokio::task::block_in_place(|| self.rebuild(&intent, &chunks))?
            }
        };
        let mut records = 0u64;
        for (file, json) in intent.files.iter().zip(&jsons) {
            let body = tokio::task::block_in_place(|| gzip(json))
                .map_err(|e| Exit::Failed(e.to_string()))?;
            let body = Bytes::from(body);
            for d in &self.settings.destinations {
                self.put(d.as_ref(), &file.key, body.clone(), &Metadata::new(), false)
                    .await?;
                add(&metrics().files_uploaded, 1);
            }
            records += u64::from(file.records);
        }
        self.record_seen(&intent, &keys).await?;
        let delivered_at = json_time(now_secs());
        for file in &intent.files {
            for d in &self.settings.destinations {
                let chain = self
                    .state
                    .chains
                    .entry(chain_key(d.name(), &file.account, &file.region))
                    .or_default();
                chain.waiting.insert(
                    file.id,
                    DeliveredFile {
                        entry: DigestLogFile {
                            s3_bucket: d.bucket().to_string(),
                            s3_object: file.key.clone(),
                            hash_value: file.sha256.clone(),
                            hash_algorithm: HASH_ALGORITHM.to_string(),
                            newest_event_time: file.newest_event_time.clone(),
                            oldest_event_time: file.oldest_event_time.clone(),
                        },
                        delivered_at: delivered_at.clone(),
                    },
                );
            }
        }
        self.state.next_seq = intent.to_seq + 1;
        self.state.intent = None;
        self.commit().await?;
        if !formed_here {
            // A range another owner recorded: its keys join this collector's index.
            self.settings
                .seen
                .insert_all(&keys)
                .map_err(|e| Exit::Failed(e.to_string()))?;
        }
        add(&metrics().records_filed, records);
        Ok(())
    }

    /// The files of an intent another owner formed, rebuilt from its range: each file's JSON
    /// (refused unless it hashes to the recorded SHA-256) and the keys of their records.
    fn rebuild(&self, intent: &Intent, chunks: &[Chunk]) -> Result<Built, Exit> {
        let mut jsons = Vec::new();
        let mut keys = Vec::new();
        for file in &intent.files {
            let skip: HashSet<(u64, u32)> = file.skipped.iter().copied().collect();
            let built = intent::assemble(chunks, &file.account, &file.region, &skip)
                .filter(|b| b.sha256 == file.sha256)
                .ok_or_else(|| {
                    Exit::Failed(format!(
                        "shard {}: {} does not rebuild to its recorded SHA-256 {}; not uploading it",
                        self.shard, file.key, file.sha256
                    ))
                })?;
            jsons.push(built.json);
            keys.extend(intent::keys_of(chunks, file));
        }
        Ok((jsons, keys))
    }

    /// Publishes the dedup keys of a delivered range, in parts of at most [`SEEN_PART`] keys
    /// (a message stays under JetStream's 1 MiB limit however many records a range holds).
    /// Idempotent: each part's message id is the range's and the part's, and the keys are a set.
    async fn record_seen(
        &self,
        intent: &Intent,
        keys: &[(crate::dedup::DedupKey, i64)],
    ) -> Result<(), Exit> {
        for (part, keys) in keys.chunks(SEEN_PART).enumerate() {
            let body = Bytes::from(intent::encode_seen(keys.iter().map(|(k, _)| k)));
            let id = format!("seen-{}-{}-{part}", self.shard, intent.from_seq);
            let mut delay = RETRY;
            loop {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
                let sent = match self
                    .nats
                    .js
                    .publish_with_headers(seen_subject(self.shard), headers, body.clone())
                    .await
                {
                    Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match sent {
                    Ok(()) => break,
                    Err(e) if self.stopping() == Stop::Run || delay < Duration::from_secs(4) => {
                        tracing::warn!(shard = self.shard, "cluster: recording dedup keys: {e}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => return Err(Exit::Failed(e)),
                }
            }
        }
        Ok(())
    }

    /// Uploads one object, retrying until it is stored (or the writer is told to stop), and
    /// records the outcome for `GetTrailStatus` ([`super::status`]).
    async fn put(
        &self,
        destination: &dyn Destination,
        key: &str,
        body: Bytes,
        metadata: &Metadata,
        digest: bool,
    ) -> Result<(), Exit> {
        let mut delay = RETRY;
        loop {
            let put = destination.put(key, body.clone(), metadata).await;
            let now = now_secs().timestamp().to_string();
            let error = put.as_ref().err().map(|e| e.to_string());
            let values: Vec<(&str, Option<&str>)> = match (digest, &error) {
                (false, None) => vec![
                    ("LatestDeliveryTime", Some(&now)),
                    ("LatestDeliveryAttemptTime", Some(&now)),
                    ("LatestDeliveryAttemptSucceeded", Some(&now)),
                    ("LatestDeliveryError", None),
                ],
                (false, Some(e)) => vec![
                    ("LatestDeliveryAttemptTime", Some(&now)),
                    ("LatestDeliveryError", Some(e)),
                    ("LatestDeliveryAttemptSucceeded", None),
                ],
                (true, None) => vec![
                    ("LatestDigestDeliveryTime", Some(&now)),
                    ("LatestDigestDeliveryError", None),
                ],
                (true, Some(e)) => vec![("LatestDigestDeliveryError", Some(e))],
            };
            super::status::record(&self.nats, &values).await;
            match put {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(shard = self.shard, "cluster: upload of {key}: {e}");
                    if self.stopping() == Stop::Release {
                        return Err(Exit::Stopped);
                    }
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Step 3: signs the digests that are due (with `force`, also every chain with delivered
    /// files not yet in a digest), commits them, uploads them, and clears them.
    async fn digests(&mut self, force: bool) -> Result<(), Exit> {
        let now = now_secs();
        let force = force || self.store.last_len() > STATE_SOFT_LIMIT;
        let signer = &self.settings.signer;
        let mut signed_any = false;
        let keys: Vec<String> = self.state.chains.keys().cloned().collect();
        for key in keys {
            if self.state.pending_digests.contains_key(&key) {
                continue;
            }
            let Some((dest, account, region)) = chain_parts(&key) else {
                continue;
            };
            let Some(destination) = self.settings.destinations.iter().find(|d| d.name() == dest)
            else {
                continue;
            };
            let chain = &self.state.chains[&key];
            let started = self
                .state
                .started
                .get(&key)
                .and_then(|t| parse_json_time(t))
                .map(|t| t + signer.interval());
            let due = signer.due_at(chain).or(started).is_some_and(|at| at <= now)
                || (force && !chain.waiting.is_empty());
            if !due {
                continue;
            }
            let signed = signer
                .sign(destination.bucket(), account, region, chain, now)
                .map_err(|e| Exit::Failed(e.to_string()))?;
            let (head, pending) = signed.into_head();
            let chain = self.state.chains.entry(key.clone()).or_default();
            chain.head = Some(head);
            chain.waiting.clear();
            self.state.started.remove(&key);
            self.state.pending_digests.insert(key, pending);
            signed_any = true;
        }
        if signed_any {
            self.commit().await?;
        }
        if self.state.pending_digests.is_empty() {
            return Ok(());
        }
        let pending: Vec<(String, PendingDigest)> = self
            .state
            .pending_digests
            .iter()
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        let mut uploaded = BTreeSet::new();
        for (key, digest) in pending {
            let Some((dest, _, _)) = chain_parts(&key) else {
                continue;
            };
            let Some(destination) = self
                .settings
                .destinations
                .iter()
                .find(|d| d.name() == dest)
                .cloned()
            else {
                continue;
            };
            let body = Bytes::from(
                gzip(digest.document.as_bytes()).map_err(|e| Exit::Failed(e.to_string()))?,
            );
            let mut meta = Metadata::new();
            meta.insert("signature".into(), digest.signature.clone());
            meta.insert("signature-algorithm".into(), SIGNATURE_ALGORITHM.into());
            self.put(destination.as_ref(), &digest.key, body, &meta, true)
                .await?;
            add(&metrics().digests_uploaded, 1);
            uploaded.insert(key);
        }
        if uploaded.is_empty() {
            return Ok(());
        }
        self.state
            .pending_digests
            .retain(|k, _| !uploaded.contains(k));
        self.commit().await
    }

    /// Step 4: purges what no one needs any more (at most every [`PURGE_EVERY`]).
    async fn purge(&mut self) {
        if self.last_purge.elapsed() < PURGE_EVERY || self.state.next_seq <= 1 {
            return;
        }
        self.last_purge = Instant::now();
        let floor = match super::history::lowest_floor(&self.nats).await {
            Ok(f) => f.map_or(self.state.next_seq, |f| f.min(self.state.next_seq)),
            Err(e) => {
                tracing::debug!(shard = self.shard, "cluster: no purge: {e}");
                return;
            }
        };
        // JetStream reads a purge up to sequence 0 or 1 as "no bound": the whole shard. A floor
        // that low means some collector's history still needs everything.
        if floor <= 1 {
            return;
        }
        if let Err(e) = self
            .nats
            .records
            .purge()
            .filter(shard_filter(self.shard))
            .sequence(floor)
            .await
        {
            tracing::debug!(shard = self.shard, "cluster: purge below {floor}: {e}");
        }
    }
}
