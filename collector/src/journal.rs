//! The collector's journal: durable receipt, dedup index, and the state of every file and
//! digest between "committed to an agent" and "stored at every destination".
//!
//! # Invariants
//!
//! 1. **A record acknowledged to an agent is durable.** Ingest writes a batch's records with
//!    one atomic sled batch ([`Journal::commit`]) and answers `200` only after
//!    [`Journal::flush`] returned. A crash after the `200` finds every record again, either
//!    still pending or inside a closed log file.
//! 2. **Each `eventID` is committed at most once per dedup window.** The dedup check and the
//!    insert happen under one lock ([`Journal::commit`]), so two batches racing with the same
//!    `eventID` yield one copy. The index entry is removed only after the window
//!    ([`Journal::expire_dedup`]).
//! 3. **A record is in exactly one place:** pending (in a `p/` chunk and not marked filed in
//!    its `c/` entry), or inside exactly one closed file (`f/`). [`Journal::close_file`] marks
//!    the file's records filed (dropping a chunk once all of its records are) and records the
//!    file (its final key, its gzip bytes, its hash) in the same atomic batch.
//! 4. **A file's key never changes once recorded.** The key is chosen before the first upload
//!    and stored with the bytes, so a retried or post-crash upload overwrites the same object
//!    with the same bytes: no second copy, no lost file.
//! 5. **Every destination gets every file.** Closing a file writes one "undelivered" marker per
//!    destination (`x/`); only a successful upload to that destination removes its marker, and
//!    in the same batch adds the file to that destination's next digest (`g/`). The bytes are
//!    dropped once no marker is left.
//! 6. **Each delivered file is listed in exactly one digest of its chain**, and the chain head
//!    moves in the same atomic batch that takes those files out of `g/` and records the new
//!    digest's exact bytes and signature as pending upload (`q/`) ([`Journal::record_digest`]).
//!    The chain therefore continues across restarts, and a digest, once signed, is uploaded
//!    unchanged however often the upload is retried.
//!
//! # What is durable when
//!
//! Every mutating method applies one sled `Batch` (atomic: all or nothing, also across a
//! crash) but does not fsync. Durability comes from [`Journal::flush`]. Ingest flushes before
//! answering; the batcher and the digest writer flush after recording a file or digest, and a
//! delivery pass flushes between reading what to upload and uploading it, so a key or a
//! signature is never visible at a destination before it is durable here. Anything not yet
//! flushed may be lost by a crash *as a whole batch* — and nothing built on it was made
//! visible, so losing it is safe: the agent resends, the batcher rebuilds the file.
//!
//! # On-disk layout
//!
//! One sled tree (the default one), so that a single `Batch` is atomic across all of it. Keys
//! start with a one-letter kind and `/`; integers are big-endian so byte order is numeric
//! order; `\0` separates string parts (names never contain NUL).
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `p/<chunk u64>` | the records of one commit, compact JSON, each followed by `\n` | committed records (a *chunk*) |
//! | `c/<chunk u64>` | record count (u32), then the index (u32) of each record already filed | which records of the chunk are still pending |
//! | `d/<eventID as 16 UUID bytes>` | received-at seconds (u64) | dedup index |
//! | `D/<eventID>` | received-at seconds (u64) | dedup index of an `eventID` that is not a UUID (not reachable through ingest, which requires UUIDs) |
//! | `t/<received-at u64><chunk u64>` | the chunk's dedup keys (`d/...` or `D/...`), each after its length (u16) | dedup index by age, for expiry |
//! | `f/<file u64>` | [`FileEntry`] JSON | a closed log file: key, hash, event times |
//! | `b/<file u64>` | gzip bytes | the file's exact bytes, until every destination has them |
//! | `x/<file u64><destination>` | empty | not yet delivered to that destination |
//! | `g/<dest>\0<account>\0<region>\0<file u64>` | [`DeliveredFile`] JSON | delivered, awaiting the next digest of that chain |
//! | `h/<dest>\0<account>\0<region>` | [`ChainHead`] JSON | the newest digest of that chain |
//! | `q/<dest>\0<digest u64>` | [`PendingDigest`] JSON | a signed digest not yet uploaded |
//! | `a/<agent>` | [`AgentState`] JSON | an agent's last sequence number and last contact |
//! | `n/<webhook>\0<id u64>` | notification JSON | a delivered log file not yet announced to that webhook |
//! | `s/<name>` | text | delivery status for `GetTrailStatus` (latest delivery times and errors) |
//! | `k/signing` | [`SigningKeyRecord`] JSON | the key that signs the digest chains (public part only), so a missing or changed key file is noticed at start-up |
//!
//! Sequence numbers (`chunk`, `file`, `digest`) come from sled's `generate_id`, which never
//! repeats across restarts. A pending record's `seq` is `chunk << 20 | index in the chunk`, so
//! seq order is commit order.
//!
//! # Why chunks
//!
//! One commit (an agent's batch, up to 10,000 records) is one `p/` value, one `c/` and one
//! `t/` entry, plus one `d/` entry per record. Writing each record under its own key cost three
//! sled inserts per record, each copying its ~1 KB value through sled's page consolidation;
//! that capped ingest at about 15,000 records/s on two cores (see BENCHMARKS.md). A chunk
//! leaves the journal once every one of its records is in a closed file; in the common case a
//! batch's records share one account and region and so one file, and the chunk goes in one
//! step.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use groundtrail_common::Record;
use groundtrail_common::trail::DigestLogFile;
use serde::{Deserialize, Serialize};

use crate::group_flush::GroupFlush;

/// Why a journal operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The store itself failed (I/O error, corruption).
    #[error("journal: {0}")]
    Sled(#[from] sled::Error),
    /// A value in the journal could not be decoded: the journal was damaged or written by an
    /// incompatible version.
    #[error("journal: damaged entry {key}: {why}")]
    Corrupt { key: String, why: String },
    /// A transaction could not complete.
    #[error("journal: {0}")]
    Other(String),
}

type Result<T> = std::result::Result<T, JournalError>;

/// A committed record that is not yet in a closed log file.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRecord {
    /// Its journal sequence number: `chunk << 20 | index` (see the module doc).
    pub seq: u64,
    /// `recipientAccountId`.
    pub account: String,
    /// `awsRegion`.
    pub region: String,
    /// `eventTime` (CloudTrail JSON time, comparable as a string).
    pub event_time: String,
    /// The record's compact JSON, exactly as it will appear in the log file.
    pub json: Vec<u8>,
}

impl PendingRecord {
    fn from_record(seq: u64, record: &Record) -> PendingRecord {
        PendingRecord {
            seq,
            account: record.account().to_string(),
            region: record.aws_region.clone(),
            event_time: record.event_time.clone(),
            json: record.to_json(),
        }
    }
}

/// A closed log file as recorded before its first upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Its object key (without bucket), fixed for good.
    pub key: String,
    pub account: String,
    pub region: String,
    /// Hex SHA-256 of the uncompressed JSON.
    pub sha256: String,
    /// Newest `eventTime` inside.
    pub newest_event_time: String,
    /// Oldest `eventTime` inside.
    pub oldest_event_time: String,
    /// How many records it holds.
    pub records: u64,
}

/// A file delivered to one destination, waiting for that chain's next digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredFile {
    /// The `logFiles[]` entry, with the destination's bucket.
    pub entry: DigestLogFile,
    /// When the upload was acknowledged (CloudTrail JSON time).
    pub delivered_at: String,
}

/// The newest digest of one chain: what the next digest links to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Its `digestEndTime`: the next digest's `digestStartTime`.
    pub end_time: String,
    pub bucket: String,
    pub key: String,
    /// Hex SHA-256 of its uncompressed bytes.
    pub sha256: String,
    /// Its hex signature.
    pub signature: String,
}

/// The signing key the journal's digest chains are signed with: its public half, so that a
/// start-up with a missing or different key file can be refused and the old public key handed
/// back for `[[signing.retired_keys]]` (see [`crate::keys`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    /// MD5 fingerprint of the PKCS#1 DER public key (as in digests).
    pub fingerprint: String,
    /// The public key as PEM (`RSA PUBLIC KEY`, PKCS#1).
    pub public_key_pem: String,
    /// When the collector first signed with it (CloudTrail JSON time).
    pub since: String,
}

/// A signed digest recorded before its upload: exactly these bytes go out, however often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDigest {
    pub key: String,
    /// The uncompressed digest JSON (what was hashed and signed).
    pub document: String,
    pub signature: String,
}

/// What the collector knows about one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AgentState {
    /// Highest sequence number received, if the agent sends them.
    pub last_seq: Option<u64>,
    /// Last contact (CloudTrail JSON time).
    pub last_seen: String,
    /// Account and region of its most recent record: where audit records about it go.
    pub account: String,
    pub region: String,
    /// Whether an `AgentSilent` record was written since it last spoke.
    pub silent_reported: bool,
}

/// What [`Journal::commit`] did.
#[derive(Debug, Default)]
pub struct CommitOutcome {
    /// The records newly written, in order.
    pub committed: Vec<PendingRecord>,
    /// Records dropped because their `eventID` was known (or repeated within the batch).
    pub duplicates: u64,
}

/// The journal. Cheap to share behind an `Arc`; every method is safe to call concurrently.
pub struct Journal {
    db: sled::Db,
    /// Group commit: concurrent ingest requests share one fsync (see [`GroupFlush`]).
    flusher: Arc<GroupFlush>,
    /// Serializes read-check-write sequences (dedup, delivery bookkeeping, digests). Each is a
    /// few in-memory sled operations; fsync happens outside it in [`Journal::flush`].
    lock: Mutex<()>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

fn read_be(bytes: &[u8]) -> Option<u64> {
    bytes.get(..8)?.try_into().ok().map(u64::from_be_bytes)
}

fn key(kind: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut k = kind.to_vec();
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn chain_prefix(dest: &str, account: &str, region: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(dest.len() + account.len() + region.len() + 3);
    k.extend_from_slice(dest.as_bytes());
    k.push(0);
    k.extend_from_slice(account.as_bytes());
    k.push(0);
    k.extend_from_slice(region.as_bytes());
    k
}

fn decode<T: for<'de> Deserialize<'de>>(k: &[u8], v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| JournalError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        why: e.to_string(),
    })
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain structs of strings and numbers always serialize.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Records ready for [`Journal::commit_prepared`]: serialized, their dedup keys computed, and
/// repeats within the batch dropped. Building it is most of a commit's CPU and needs neither
/// the journal's lock nor the agent tracker's, so it is done before either is taken.
#[derive(Debug, Default)]
pub struct Prepared {
    records: Vec<(Vec<u8>, PendingRecord)>,
    seen: std::collections::HashSet<Vec<u8>>,
    duplicates: u64,
    bytes: usize,
}

impl Prepared {
    /// Adds a record (dropped as a duplicate if its `eventID` came earlier in this batch).
    pub fn push(&mut self, record: &Record) {
        let dk = dedup_key(&record.event_id);
        if !self.seen.insert(dk.clone()) {
            self.duplicates += 1;
            return;
        }
        let pending = PendingRecord::from_record(0, record);
        self.bytes += pending.json.len() + 1;
        self.records.push((dk, pending));
    }

    /// Records added and not repeated.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// sled's page cache for the journal. sled's default is 1 GiB; the journal's hot set is the
/// newest pending chunks and the upper levels of the dedup index, and the collector's memory
/// is better left to the batcher's open files and the event history's cache.
const CACHE_BYTES: u64 = 128 * 1024 * 1024;

/// Bits of a pending record's `seq` that hold its index inside its chunk.
const CHUNK_INDEX_BITS: u32 = 20;
const CHUNK_INDEX_MASK: u64 = (1 << CHUNK_INDEX_BITS) - 1;

/// The `c/` entry of a chunk: how many records it holds and which are already filed.
#[derive(Debug, Default, PartialEq)]
struct ChunkState {
    records: u32,
    filed: Vec<u32>,
}

impl ChunkState {
    /// A damaged entry decodes as "nothing filed" and never complete: its records are reloaded
    /// and the chunk is kept for an operator, since a possible repeat beats a loss.
    fn decode(v: &[u8]) -> ChunkState {
        let mut words = v
            .chunks_exact(4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
        ChunkState {
            records: words.next().unwrap_or(u32::MAX),
            filed: words.collect(),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + 4 * self.filed.len());
        v.extend_from_slice(&self.records.to_be_bytes());
        for i in &self.filed {
            v.extend_from_slice(&i.to_be_bytes());
        }
        v
    }
}

/// Where `event_id` is in the dedup index. A UUID (every eventID ingest accepts) is stored as
/// its 16 bytes: half the key of its text, and measurably cheaper for sled to look up and
/// insert, which it does once per record.
fn dedup_key(event_id: &str) -> Vec<u8> {
    match uuid::Uuid::try_parse(event_id) {
        // Only the canonical lowercase hyphenated text maps to the binary form, so that two
        // different strings never share a key.
        Ok(u) if event_id.len() == 36 && !event_id.bytes().any(|b| b.is_ascii_uppercase()) => {
            key(b"d/", &[u.as_bytes()])
        }
        _ => key(b"D/", &[event_id.as_bytes()]),
    }
}

/// The dedup keys of a `t/` entry: each its length (u16) and its bytes.
fn dedup_keys(mut v: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = u16::from_be_bytes([*v.first()?, *v.get(1)?]) as usize;
        let id = v.get(2..2 + len)?;
        v = &v[2 + len..];
        Some(id)
    })
}

impl Journal {
    /// Opens (creating) the journal at `path`.
    pub fn open(path: &Path) -> Result<Journal> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| JournalError::Sled(e.into()))?;
        }
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()?;
        Ok(Journal {
            flusher: GroupFlush::new(db.clone()),
            db,
            lock: Mutex::new(()),
        })
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        // A panic while holding the lock cannot leave sled half-written (batches are atomic),
        // so a poisoned lock is safe to take over.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The error that left the journal stuck (every write fails until the process restarts;
    /// see [`crate::store_health`]), once it is.
    pub fn stuck(&self) -> Option<&str> {
        self.flusher.stuck()
    }

    /// Makes everything written so far durable (fsync). Nothing may be acknowledged or
    /// uploaded on the strength of a write before this returns.
    pub async fn flush(&self) -> Result<()> {
        self.flusher.flush().await?;
        Ok(())
    }

    /// Marks the store stuck (see [`crate::store_health`]): a probe that did not finish.
    pub fn mark_stuck(&self, error: String) {
        self.flusher.mark_stuck(error);
    }

    /// The store-health probe, for a thread outside the runtime: waits for the journal's lock
    /// (a commit blocked inside sled holds it for good) and releases it at once, then flushes
    /// ([`GroupFlush::flush_blocking`]). A probe that does not return is a wedged journal.
    pub fn probe_blocking(&self) -> Result<()> {
        drop(self.guard());
        self.flusher.flush_blocking()?;
        Ok(())
    }

    /// Writes `records` that are not duplicates, and the given agent states, in one atomic
    /// batch. Duplicates are `eventID`s already in the index or repeated earlier in `records`.
    /// Not durable until [`Journal::flush`].
    pub fn commit(
        &self,
        records: &[Record],
        agents: &[(String, AgentState)],
        now: DateTime<Utc>,
    ) -> Result<CommitOutcome> {
        let mut prepared = Prepared::default();
        for r in records {
            prepared.push(r);
        }
        self.commit_prepared(prepared, agents, now)
    }

    /// [`Journal::commit`] of records already [`Prepared`] (serialized without any lock held).
    pub fn commit_prepared(
        &self,
        prepared: Prepared,
        agents: &[(String, AgentState)],
        now: DateTime<Utc>,
    ) -> Result<CommitOutcome> {
        let mut outcome = CommitOutcome {
            committed: Vec::with_capacity(prepared.records.len()),
            duplicates: prepared.duplicates,
        };
        let _g = self.guard();
        let now_secs = now.timestamp().max(0) as u64;
        let mut batch = sled::Batch::default();
        let chunk = self.db.generate_id()?;
        let mut blob = Vec::with_capacity(prepared.bytes);
        let mut ids = Vec::new();
        for (dk, mut pending) in prepared.records {
            if self.db.contains_key(&dk)? {
                outcome.duplicates += 1;
                continue;
            }
            let index = outcome.committed.len() as u64;
            if index > CHUNK_INDEX_MASK {
                return Err(JournalError::Other(format!(
                    "more than {CHUNK_INDEX_MASK} records in one commit"
                )));
            }
            blob.extend_from_slice(&pending.json);
            blob.push(b'\n');
            // A member is at most 1 KiB (the record model's limit), well within a u16.
            ids.extend_from_slice(&(dk.len().min(u16::MAX as usize) as u16).to_be_bytes());
            ids.extend_from_slice(&dk[..dk.len().min(u16::MAX as usize)]);
            batch.insert(dk, &be(now_secs)[..]);
            pending.seq = chunk << CHUNK_INDEX_BITS | index;
            outcome.committed.push(pending);
        }
        if !outcome.committed.is_empty() {
            batch.insert(key(b"p/", &[&be(chunk)]), blob);
            batch.insert(
                key(b"c/", &[&be(chunk)]),
                &(outcome.committed.len() as u32).to_be_bytes()[..],
            );
            batch.insert(key(b"t/", &[&be(now_secs), &be(chunk)]), ids);
        }
        for (name, state) in agents {
            batch.insert(key(b"a/", &[name.as_bytes()]), encode(state));
        }
        match self.db.apply_batch(batch) {
            Ok(()) => self.flusher.write_succeeded(),
            Err(e) => {
                self.flusher.write_failed(&e);
                return Err(e.into());
            }
        }
        Ok(outcome)
    }

    /// Whether `event_id` is in the dedup index.
    pub fn is_known(&self, event_id: &str) -> Result<bool> {
        Ok(self.db.contains_key(dedup_key(event_id))?)
    }

    /// Forgets `eventID`s received before `now - window`. Returns how many were dropped.
    pub fn expire_dedup(&self, now: DateTime<Utc>, window: std::time::Duration) -> Result<u64> {
        let cutoff = (now.timestamp().max(0) as u64).saturating_sub(window.as_secs());
        let mut dropped = 0;
        loop {
            let _g = self.guard();
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for item in self.db.scan_prefix(b"t/") {
                let (k, ids) = item?;
                let Some(at) = read_be(&k[2..]) else { continue };
                if at >= cutoff || n >= 10_000 {
                    break;
                }
                // The `d/` entries may have been renewed by nothing else: ids are committed once.
                for dk in dedup_keys(&ids) {
                    batch.remove(dk);
                    n += 1;
                }
                batch.remove(k);
            }
            if n == 0 {
                return Ok(dropped);
            }
            self.db.apply_batch(batch)?;
            dropped += n;
        }
    }

    /// Every pending record, in commit order: what the batcher reloads after a restart.
    ///
    /// An entry that no longer parses (disk damage) is logged and left where it is rather than
    /// failing start-up: a collector that refuses to start on its own data would stop the whole
    /// fleet's trail, and deleting the entry would lose a record silently. It stays in the
    /// journal for an operator to inspect.
    pub fn pending(&self) -> Result<Vec<PendingRecord>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(b"p/") {
            let (k, blob) = item?;
            let Some(chunk) = read_be(&k[2..]) else {
                tracing::error!(key = ?k, "journal: damaged pending key skipped");
                continue;
            };
            let mut filed = match self.db.get(key(b"c/", &[&be(chunk)]))? {
                Some(c) => ChunkState::decode(&c).filed,
                None => {
                    tracing::error!("journal: chunk p/{chunk} has no c/ entry; all of it reloaded");
                    Vec::new()
                }
            };
            filed.sort_unstable();
            for (index, line) in blob.split(|b| *b == b'\n').enumerate() {
                if line.is_empty() || filed.binary_search(&(index as u32)).is_ok() {
                    continue;
                }
                let seq = chunk << CHUNK_INDEX_BITS | index as u64;
                match Record::from_json(line) {
                    Ok(record) => out.push(PendingRecord::from_record(seq, &record)),
                    Err(e) => tracing::error!(
                        "journal: pending record {index} of chunk p/{chunk} is damaged ({e}); \
                         kept, not filed"
                    ),
                }
            }
        }
        Ok(out)
    }

    /// Records a closed log file in one atomic batch: its entry and gzip bytes, an undelivered
    /// marker per destination, and the removal of its records (`seqs`) from the pending set.
    /// Returns the file's id. Call [`Journal::flush`] before uploading.
    pub fn close_file(
        &self,
        entry: &FileEntry,
        gzip: &[u8],
        seqs: &[u64],
        destinations: &[String],
    ) -> Result<u64> {
        let _g = self.guard();
        let id = self.db.generate_id()?;
        let mut batch = sled::Batch::default();
        batch.insert(key(b"f/", &[&be(id)]), encode(entry));
        batch.insert(key(b"b/", &[&be(id)]), gzip);
        for d in destinations {
            batch.insert(key(b"x/", &[&be(id), d.as_bytes()]), &[][..]);
        }
        let mut by_chunk: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for s in seqs {
            by_chunk
                .entry(s >> CHUNK_INDEX_BITS)
                .or_default()
                .push((s & CHUNK_INDEX_MASK) as u32);
        }
        for (chunk, indexes) in by_chunk {
            let ck = key(b"c/", &[&be(chunk)]);
            let Some(c) = self.db.get(&ck)? else {
                // Not reachable through this API (a chunk goes only when all of it is filed);
                // dropping the records' bookkeeping is safe, they are in this file now.
                tracing::error!("journal: chunk p/{chunk} has no c/ entry");
                batch.remove(key(b"p/", &[&be(chunk)]));
                continue;
            };
            let mut state = ChunkState::decode(&c);
            state.filed.extend(indexes);
            if state.filed.len() >= state.records as usize {
                batch.remove(key(b"p/", &[&be(chunk)]));
                batch.remove(ck);
            } else {
                batch.insert(ck, state.encode());
            }
        }
        self.db.apply_batch(batch)?;
        Ok(id)
    }

    /// Files not yet delivered to `destination`, oldest first (without their bytes, so a long
    /// outage does not pull every waiting file into memory at once; see [`Journal::file_body`]).
    pub fn undelivered(&self, destination: &str) -> Result<Vec<(u64, FileEntry)>> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(b"x/") {
            let (k, _) = item?;
            let Some(id) = read_be(&k[2..]) else { continue };
            if &k[10..] != destination.as_bytes() {
                continue;
            }
            let fk = key(b"f/", &[&be(id)]);
            let Some(f) = self.db.get(&fk)? else {
                return Err(JournalError::Corrupt {
                    key: format!("x/{id}/{destination}"),
                    why: "marker without file entry".into(),
                });
            };
            out.push((id, decode(&fk, &f)?));
        }
        Ok(out)
    }

    /// Every destination name that still has undelivered files. A name that is no longer in
    /// the config keeps its files' bytes in the journal until it comes back.
    pub fn destinations_with_backlog(&self) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for k in self.db.scan_prefix(b"x/").keys() {
            let k = k?;
            if k.len() > 10 {
                out.insert(String::from_utf8_lossy(&k[10..]).into_owned());
            }
        }
        Ok(out)
    }

    /// The gzip bytes of closed file `id`, while some destination still lacks it.
    pub fn file_body(&self, id: u64) -> Result<Vec<u8>> {
        self.db
            .get(key(b"b/", &[&be(id)]))?
            .map(|b| b.to_vec())
            .ok_or_else(|| JournalError::Corrupt {
                key: format!("b/{id}"),
                why: "file bytes missing".into(),
            })
    }

    /// Marks file `id` delivered to `destination` (bucket `bucket`): removes its marker, adds it
    /// to that chain's next digest, queues its notification for each webhook in `notify`
    /// (invariant: a delivered file is announced to every webhook, even across a crash, because
    /// the queue entry is written in the same batch), and drops the bytes when no destination
    /// is left.
    pub fn mark_delivered(
        &self,
        id: u64,
        destination: &str,
        bucket: &str,
        delivered_at: DateTime<Utc>,
        notify: &[String],
    ) -> Result<()> {
        let _g = self.guard();
        let marker = key(b"x/", &[&be(id), destination.as_bytes()]);
        if !self.db.contains_key(&marker)? {
            return Ok(());
        }
        let fk = key(b"f/", &[&be(id)]);
        let Some(f) = self.db.get(&fk)? else {
            return Err(JournalError::Corrupt {
                key: format!("f/{id}"),
                why: "missing".into(),
            });
        };
        let entry: FileEntry = decode(&fk, &f)?;
        let mut batch = sled::Batch::default();
        batch.remove(marker.clone());
        let delivered = DeliveredFile {
            entry: DigestLogFile {
                s3_bucket: bucket.to_string(),
                s3_object: entry.key.clone(),
                hash_value: entry.sha256.clone(),
                hash_algorithm: groundtrail_common::trail::digest::HASH_ALGORITHM.to_string(),
                newest_event_time: entry.newest_event_time.clone(),
                oldest_event_time: entry.oldest_event_time.clone(),
            },
            delivered_at: groundtrail_common::time::json_time(delivered_at),
        };
        let mut gk = b"g/".to_vec();
        gk.extend_from_slice(&chain_prefix(destination, &entry.account, &entry.region));
        gk.push(0);
        gk.extend_from_slice(&be(id));
        batch.insert(gk, encode(&delivered));
        if !notify.is_empty() {
            let body = encode(&serde_json::json!({
                "s3Bucket": bucket,
                "s3ObjectKey": [entry.key],
            }));
            for hook in notify {
                let mut nk = b"n/".to_vec();
                nk.extend_from_slice(hook.as_bytes());
                nk.push(0);
                nk.extend_from_slice(&be(self.db.generate_id()?));
                batch.insert(nk, body.clone());
            }
        }
        let others = self
            .db
            .scan_prefix(key(b"x/", &[&be(id)]))
            .keys()
            .filter(|k| {
                k.as_ref()
                    .map(|k| k.as_ref() != marker.as_slice())
                    .unwrap_or(true)
            })
            .count();
        if others == 0 {
            batch.remove(fk);
            batch.remove(key(b"b/", &[&be(id)]));
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// The chains of `destination`: every (account, region) with a head or with delivered
    /// files waiting, with its head and its waiting files (keyed by file id).
    pub fn chains(&self, destination: &str) -> Result<BTreeMap<(String, String), Chain>> {
        let mut out: BTreeMap<(String, String), Chain> = BTreeMap::new();
        let mut prefix = b"h/".to_vec();
        prefix.extend_from_slice(destination.as_bytes());
        prefix.push(0);
        for item in self.db.scan_prefix(&prefix) {
            let (k, v) = item?;
            let rest = &k[prefix.len()..];
            let Some((account, region)) = split2(rest) else {
                continue;
            };
            out.entry((account, region)).or_default().head = Some(decode(&k, &v)?);
        }
        let mut prefix = b"g/".to_vec();
        prefix.extend_from_slice(destination.as_bytes());
        prefix.push(0);
        for item in self.db.scan_prefix(&prefix) {
            let (k, v) = item?;
            let rest = &k[prefix.len()..];
            if rest.len() < 9 {
                continue;
            }
            let (names, id) = rest.split_at(rest.len() - 9);
            let Some(id) = read_be(&id[1..]) else {
                continue;
            };
            let Some((account, region)) = split2(names) else {
                continue;
            };
            out.entry((account, region))
                .or_default()
                .waiting
                .insert(id, decode(&k, &v)?);
        }
        Ok(out)
    }

    /// Records a signed digest in one atomic batch: the files it lists leave the waiting set,
    /// the chain head moves to it, and it becomes pending upload. Returns its id. Call
    /// [`Journal::flush`] before uploading.
    pub fn record_digest(
        &self,
        destination: &str,
        account: &str,
        region: &str,
        listed: &[u64],
        head: &ChainHead,
        pending: &PendingDigest,
    ) -> Result<u64> {
        let _g = self.guard();
        let id = self.db.generate_id()?;
        let chain = chain_prefix(destination, account, region);
        let mut batch = sled::Batch::default();
        for file in listed {
            let mut gk = b"g/".to_vec();
            gk.extend_from_slice(&chain);
            gk.push(0);
            gk.extend_from_slice(&be(*file));
            batch.remove(gk);
        }
        batch.insert(key(b"h/", &[&chain]), encode(head));
        let mut qk = b"q/".to_vec();
        qk.extend_from_slice(destination.as_bytes());
        qk.push(0);
        qk.extend_from_slice(&be(id));
        batch.insert(qk, encode(pending));
        self.db.apply_batch(batch)?;
        Ok(id)
    }

    /// Digests of `destination` recorded but not yet uploaded, oldest first.
    pub fn pending_digests(&self, destination: &str) -> Result<Vec<(u64, PendingDigest)>> {
        let mut prefix = b"q/".to_vec();
        prefix.extend_from_slice(destination.as_bytes());
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.db.scan_prefix(&prefix) {
            let (k, v) = item?;
            let Some(id) = read_be(&k[prefix.len()..]) else {
                continue;
            };
            out.push((id, decode(&k, &v)?));
        }
        Ok(out)
    }

    /// Forgets a digest once `destination` stored it.
    pub fn digest_uploaded(&self, destination: &str, id: u64) -> Result<()> {
        let mut qk = b"q/".to_vec();
        qk.extend_from_slice(destination.as_bytes());
        qk.push(0);
        qk.extend_from_slice(&be(id));
        self.db.remove(qk)?;
        Ok(())
    }

    /// Notifications queued for `webhook`, oldest first: (queue key, JSON body).
    pub fn pending_notifications(
        &self,
        webhook: &str,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut prefix = b"n/".to_vec();
        prefix.extend_from_slice(webhook.as_bytes());
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.db.scan_prefix(&prefix).take(limit) {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Forgets a notification once its webhook answered 2xx.
    pub fn notification_sent(&self, queue_key: &[u8]) -> Result<()> {
        if queue_key.starts_with(b"n/") {
            self.db.remove(queue_key)?;
        }
        Ok(())
    }

    /// Drops the oldest notifications queued for `webhook` beyond the newest `keep`. Returns
    /// how many were dropped (the caller reports them: this is a loss, never a silent one).
    pub fn trim_notifications(&self, webhook: &str, keep: usize) -> Result<u64> {
        let mut prefix = b"n/".to_vec();
        prefix.extend_from_slice(webhook.as_bytes());
        prefix.push(0);
        let queued = self.db.scan_prefix(&prefix).keys().count();
        let excess = queued.saturating_sub(keep);
        let mut batch = sled::Batch::default();
        for k in self.db.scan_prefix(&prefix).keys().take(excess) {
            batch.remove(k?);
        }
        self.db.apply_batch(batch)?;
        Ok(excess as u64)
    }

    /// Records a delivery status value (`LatestDeliveryTime`, `LatestDeliveryError`, ...).
    /// Not flushed on its own: it is informational and rides on the next flush.
    pub fn set_status(&self, name: &str, value: &str) -> Result<()> {
        self.db
            .insert(key(b"s/", &[name.as_bytes()]), value.as_bytes())?;
        Ok(())
    }

    /// Removes a delivery status value (an error that no longer holds).
    pub fn clear_status(&self, name: &str) -> Result<()> {
        self.db.remove(key(b"s/", &[name.as_bytes()]))?;
        Ok(())
    }

    /// Every delivery status value.
    pub fn status(&self) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for item in self.db.scan_prefix(b"s/") {
            let (k, v) = item?;
            out.insert(
                String::from_utf8_lossy(&k[2..]).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
        Ok(out)
    }

    /// Whether any digest was ever signed into this journal: a chain head or a signed digest
    /// waiting for upload exists.
    pub fn has_digests(&self) -> Result<bool> {
        Ok(self.db.scan_prefix(b"h/").next().transpose()?.is_some()
            || self.db.scan_prefix(b"q/").next().transpose()?.is_some())
    }

    /// The key the digest chains are signed with, if one was recorded.
    pub fn signing_key(&self) -> Result<Option<SigningKeyRecord>> {
        match self.db.get(b"k/signing")? {
            Some(v) => Ok(Some(decode(b"k/signing", &v)?)),
            None => Ok(None),
        }
    }

    /// Records the key the digest chains are signed with from now on. Not durable until
    /// [`Journal::flush`].
    pub fn set_signing_key(&self, record: &SigningKeyRecord) -> Result<()> {
        self.db.insert(b"k/signing", encode(record))?;
        Ok(())
    }

    /// Every known agent's state.
    pub fn agents(&self) -> Result<BTreeMap<String, AgentState>> {
        let mut out = BTreeMap::new();
        for item in self.db.scan_prefix(b"a/") {
            let (k, v) = item?;
            out.insert(
                String::from_utf8_lossy(&k[2..]).into_owned(),
                decode(&k, &v)?,
            );
        }
        Ok(out)
    }

    /// How many records are pending and files undelivered (for metrics and shutdown).
    pub fn backlog(&self) -> (usize, usize) {
        let pending = self
            .db
            .scan_prefix(b"c/")
            .values()
            .filter_map(|v| v.ok())
            .map(|v| {
                let s = ChunkState::decode(&v);
                (s.records as usize).saturating_sub(s.filed.len())
            })
            .sum();
        (pending, self.db.scan_prefix(b"x/").count())
    }
}

/// One digest chain's state in the journal.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    pub head: Option<ChainHead>,
    pub waiting: BTreeMap<u64, DeliveredFile>,
}

fn split2(bytes: &[u8]) -> Option<(String, String)> {
    let mut it = bytes.splitn(2, |b| *b == 0);
    let a = std::str::from_utf8(it.next()?).ok()?.to_string();
    let b = std::str::from_utf8(it.next()?).ok()?.to_string();
    Some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use groundtrail_common::UserIdentity;

    fn record(id: &str, account: &str, region: &str) -> Record {
        let mut r = Record::new(
            "test.onprem.internal",
            "Test",
            "AwsApiCall",
            region,
            account,
        );
        r.event_id = id.to_string();
        r.user_identity = Some(UserIdentity::default());
        r
    }

    fn id(n: u32) -> String {
        format!("00000000-0000-4000-8000-{n:012x}")
    }

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn entry(key: &str) -> FileEntry {
        FileEntry {
            key: key.into(),
            account: "111122223333".into(),
            region: "us-east-1".into(),
            sha256: "ab".into(),
            newest_event_time: "2026-01-01T00:00:01Z".into(),
            oldest_event_time: "2026-01-01T00:00:00Z".into(),
            records: 1,
        }
    }

    /// Invariants 1 and 2: committed records and the dedup index survive a reopen; a repeat
    /// (across batches and inside one) is dropped.
    #[tokio::test]
    async fn commit_is_durable_and_deduplicated_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        {
            let j = Journal::open(&path).unwrap();
            let recs = [
                record(&id(1), "111122223333", "us-east-1"),
                record(&id(2), "111122223333", "eu-west-1"),
                record(&id(1), "111122223333", "us-east-1"),
            ];
            let out = j.commit(&recs, &[], t(0)).unwrap();
            assert_eq!(out.committed.len(), 2);
            assert_eq!(out.duplicates, 1);
            j.flush().await.unwrap();
        }
        let j = Journal::open(&path).unwrap();
        let pending = j.pending().unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[1].region, "eu-west-1");
        assert!(pending[0].seq < pending[1].seq);
        let again = j
            .commit(&[record(&id(2), "111122223333", "eu-west-1")], &[], t(1))
            .unwrap();
        assert_eq!((again.committed.len(), again.duplicates), (0, 1));
    }

    /// Invariant 3 with chunks: a commit whose records go to two files stays in the journal
    /// until both are closed; after a reopen only the unfiled records come back, and once the
    /// last one is filed the chunk and its bookkeeping are gone.
    #[tokio::test]
    async fn a_chunk_leaves_only_when_every_record_is_filed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let dests = ["local".to_string()];
        let east_seqs: Vec<u64>;
        {
            let j = Journal::open(&path).unwrap();
            let recs = [
                record(&id(1), "111122223333", "us-east-1"),
                record(&id(2), "111122223333", "eu-west-1"),
                record(&id(3), "111122223333", "us-east-1"),
            ];
            let out = j.commit(&recs, &[], t(0)).unwrap();
            assert_eq!(j.backlog().0, 3);
            east_seqs = out
                .committed
                .iter()
                .filter(|r| r.region == "us-east-1")
                .map(|r| r.seq)
                .collect();
            j.close_file(&entry("east"), b"gz", &east_seqs, &dests)
                .unwrap();
            j.flush().await.unwrap();
        }
        let j = Journal::open(&path).unwrap();
        let pending = j.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].region, "eu-west-1");
        assert!(!east_seqs.contains(&pending[0].seq));
        assert_eq!(j.backlog().0, 1);
        j.close_file(&entry("west"), b"gz", &[pending[0].seq], &dests)
            .unwrap();
        assert!(j.pending().unwrap().is_empty());
        assert_eq!(j.backlog().0, 0);
        assert_eq!(j.db.scan_prefix(b"p/").count(), 0);
        assert_eq!(j.db.scan_prefix(b"c/").count(), 0);
        // The dedup index still knows all three.
        for n in 1..=3 {
            assert!(j.is_known(&id(n)).unwrap());
        }
    }

    /// Invariant 2: the index forgets ids only after the window.
    #[test]
    fn dedup_expires_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j")).unwrap();
        j.commit(&[record(&id(1), "111122223333", "us-east-1")], &[], t(0))
            .unwrap();
        j.commit(&[record(&id(2), "111122223333", "us-east-1")], &[], t(100))
            .unwrap();
        let window = std::time::Duration::from_secs(60);
        assert_eq!(j.expire_dedup(t(59), window).unwrap(), 0);
        assert_eq!(j.expire_dedup(t(61), window).unwrap(), 1);
        assert!(!j.is_known(&id(1)).unwrap());
        assert!(j.is_known(&id(2)).unwrap());
    }

    /// An eventID that is not a canonical UUID (only internal callers can produce one) gets its
    /// own key space, so it can neither collide with a UUID's binary key nor outlive the window.
    #[test]
    fn a_non_uuid_event_id_is_deduplicated_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j")).unwrap();
        let upper = id(0xabc).to_uppercase();
        for weird in ["not-a-uuid", "0123456789abcdef", upper.as_str()] {
            let out = j
                .commit(&[record(weird, "111122223333", "us-east-1")], &[], t(0))
                .unwrap();
            assert_eq!(out.committed.len(), 1, "{weird}");
            assert!(j.is_known(weird).unwrap());
        }
        assert!(!j.is_known(&id(0xabc)).unwrap(), "upper case is another id");
        let window = std::time::Duration::from_secs(60);
        assert_eq!(j.expire_dedup(t(61), window).unwrap(), 3);
        assert!(!j.is_known("not-a-uuid").unwrap());
        assert_eq!(j.db.scan_prefix(b"D/").count(), 0);
    }

    /// Invariants 3, 4, 5: closing a file moves its records out of pending atomically, keeps key
    /// and bytes across reopen, and drops the bytes only once every destination has them.
    #[tokio::test]
    async fn closed_files_survive_reopen_until_every_destination_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let dests = vec!["a".to_string(), "b".to_string()];
        let file_id;
        {
            let j = Journal::open(&path).unwrap();
            let out = j
                .commit(
                    &[
                        record(&id(1), "111122223333", "us-east-1"),
                        record(&id(2), "111122223333", "us-east-1"),
                    ],
                    &[],
                    t(0),
                )
                .unwrap();
            let seqs: Vec<u64> = out.committed.iter().map(|p| p.seq).collect();
            file_id = j
                .close_file(&entry("k1"), b"gz", &seqs[..1], &dests)
                .unwrap();
            j.flush().await.unwrap();
        }
        let j = Journal::open(&path).unwrap();
        assert_eq!(
            j.pending().unwrap().len(),
            1,
            "only the unfiled record is pending"
        );
        let a = j.undelivered("a").unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].1.key, "k1");
        assert_eq!(j.file_body(a[0].0).unwrap(), b"gz");
        j.mark_delivered(file_id, "a", "bucket-a", t(5), &[])
            .unwrap();
        assert!(j.undelivered("a").unwrap().is_empty());
        assert_eq!(
            j.undelivered("b").unwrap().len(),
            1,
            "b still gets the bytes"
        );
        j.mark_delivered(file_id, "b", "bucket-b", t(6), &[])
            .unwrap();
        assert!(j.undelivered("b").unwrap().is_empty());
        assert!(j.db.get(key(b"b/", &[&be(file_id)])).unwrap().is_none());
        let chains = j.chains("a").unwrap();
        let chain = &chains[&("111122223333".to_string(), "us-east-1".to_string())];
        assert_eq!(chain.waiting[&file_id].entry.s3_bucket, "bucket-a");
        // Marking twice is harmless.
        j.mark_delivered(file_id, "a", "bucket-a", t(7), &[])
            .unwrap();
        assert_eq!(j.chains("a").unwrap().len(), 1);
    }

    /// Invariant 6: recording a digest takes its files out of the waiting set, moves the head
    /// and keeps the pending digest across reopen until uploaded.
    #[tokio::test]
    async fn digest_recording_moves_head_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        {
            let j = Journal::open(&path).unwrap();
            let out = j
                .commit(&[record(&id(1), "111122223333", "us-east-1")], &[], t(0))
                .unwrap();
            let f = j
                .close_file(&entry("k1"), b"gz", &[out.committed[0].seq], &["a".into()])
                .unwrap();
            j.mark_delivered(f, "a", "bkt", t(1), &[]).unwrap();
            let head = ChainHead {
                end_time: "2026-01-01T01:00:00Z".into(),
                bucket: "bkt".into(),
                key: "dk".into(),
                sha256: "00".into(),
                signature: "ff".into(),
            };
            let pending = PendingDigest {
                key: "dk".into(),
                document: "{}".into(),
                signature: "ff".into(),
            };
            j.record_digest("a", "111122223333", "us-east-1", &[f], &head, &pending)
                .unwrap();
            j.flush().await.unwrap();
        }
        let j = Journal::open(&path).unwrap();
        let chains = j.chains("a").unwrap();
        let chain = &chains[&("111122223333".to_string(), "us-east-1".to_string())];
        assert!(chain.waiting.is_empty());
        assert_eq!(chain.head.as_ref().unwrap().key, "dk");
        let q = j.pending_digests("a").unwrap();
        assert_eq!(q.len(), 1);
        j.digest_uploaded("a", q[0].0).unwrap();
        assert!(j.pending_digests("a").unwrap().is_empty());
    }

    #[test]
    fn a_damaged_pending_record_is_kept_but_does_not_block_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j")).unwrap();
        j.commit(&[record(&id(1), "111122223333", "us-east-1")], &[], t(0))
            .unwrap();
        j.db.insert(key(b"p/", &[&be(u64::MAX)]), &b"{broken"[..])
            .unwrap();
        assert_eq!(j.pending().unwrap().len(), 1);
        assert!(j.db.contains_key(key(b"p/", &[&be(u64::MAX)])).unwrap());
    }

    #[test]
    fn agent_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j")).unwrap();
        let state = AgentState {
            last_seq: Some(9),
            last_seen: "2026-01-01T00:00:00Z".into(),
            account: "111122223333".into(),
            region: "us-east-1".into(),
            silent_reported: false,
        };
        j.commit(&[], &[("web-1".into(), state.clone())], t(0))
            .unwrap();
        assert_eq!(j.agents().unwrap()["web-1"], state);
    }
}
