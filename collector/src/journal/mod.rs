//! The collector's journal: durable receipt, dedup, and the state of every file and digest
//! between "committed to an agent" and "stored at every destination".
//!
//! Received records live in a [`Log`] (one entry per commit, see [`frame`]); everything else
//! the journal knows (which records are filed, the closed files, their deliveries, the digest
//! chains) is small metadata in one sled tree. Ingest therefore writes no per-record key: a
//! commit is one log append, and its `200` waits for one shared fsync of the log.
//!
//! # Invariants
//!
//! 1. **A record acknowledged to an agent is durable.** Ingest appends a batch's records as one
//!    log entry ([`Journal::commit`]) and answers `200` only after [`Journal::sync_commits`]
//!    (or [`Journal::flush`]) returned. A crash after the `200` finds every record again,
//!    either still pending in the log or inside a closed log file.
//! 2. **Each record is committed at most once per dedup window.** A record's dedup key is its
//!    `eventTime` and `eventID` (a resend carries both unchanged). The check and the claim
//!    happen under one lock ([`Journal::commit`]): a key is claimed *in flight* until its entry
//!    is durable, then moves to the dedup index ([`seen`]). A key reaches the index only once
//!    its entry is durable, so a crash can never leave an index entry for a record that was
//!    lost (its resend would be dropped: a loss). Keys of entries not yet trimmed from the log
//!    are inserted again when the journal opens, so the index need not be durable before the
//!    log is trimmed, and it is made durable before every trim ([`Journal::trim`]).
//! 3. **A record is in exactly one place:** pending (in a log entry at or above the *floor*,
//!    and not marked filed in its `c/` entry), inside exactly one closed file (`f/`), or
//!    passed over: marked filed with no file because the trail does not record it (its event
//!    selectors do not take it, or it is not logging: [`Journal::pass_over`]).
//!    [`Journal::close_file`] marks the file's records filed and records the file (its final
//!    key, its gzip bytes, its hash) in the same atomic sled batch, which also moves the floor
//!    past every entry whose records are all filed. The log is trimmed only below the floor and
//!    below every reader's position ([`Journal::set_reader`]), after the sled batch is durable.
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
//! A commit is durable when [`Journal::sync_commits`] returns (one `fdatasync` of the log,
//! shared by concurrent callers). Every sled method applies one `Batch` (atomic: all or
//! nothing, also across a crash) without fsync; [`Journal::flush`] makes both durable. The
//! batcher and the digest writer flush after recording a file or digest, and a delivery pass
//! flushes between reading what to upload and uploading it, so a key or a signature is never
//! visible at a destination before it is durable here. Anything not yet flushed may be lost by
//! a crash *as a whole batch*, and nothing built on it was made visible, so losing it is safe:
//! the agent resends, the batcher rebuilds the file. Agent states travel inside the log
//! entries and are copied to sled (`a/`) before the entries that carry them are trimmed.
//!
//! # On-disk layout
//!
//! The log's segments are in `<journal>/log/` (see [`crate::log::SegmentLog`]), the dedup
//! index in `<journal>/dedup/` (see [`seen`] and [`crate::dedup`]). The sled tree
//! (the default one, so that a single `Batch` is atomic across all of it) holds:
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `l/format` | `2` | the journal keeps its records in the log (written at creation or migration) |
//! | `l/floor` | u64 | every log entry below it is filed completely |
//! | `l/agents` | u64 | the `a/` entries hold the agent states of every log entry below it |
//! | `c/<entry u64>` | record count (u32), then the index (u32) of each record already filed; or `done` | which records of a log entry at or above the floor are filed |
//! | `d/<eventID as 16 UUID bytes>`, `D/<eventID>`, `t/...` | | the dedup index of journals from before the log, until it expires (see [`seen`]) |
//! | `f/<file u64>` | [`FileEntry`] JSON | a closed log file: key, hash, event times |
//! | `b/<file u64>` | gzip bytes | the file's exact bytes, until every destination has them |
//! | `x/<file u64><destination>` | empty | not yet delivered to that destination |
//! | `g/<dest>\0<account>\0<region>\0<file u64>` | [`DeliveredFile`] JSON | delivered, awaiting the next digest of that chain |
//! | `h/<dest>\0<account>\0<region>` | [`ChainHead`] JSON | the newest digest of that chain |
//! | `q/<dest>\0<digest u64>` | [`PendingDigest`] JSON | a signed digest not yet uploaded |
//! | `a/<agent>` | [`AgentState`] JSON | an agent's last sequence number and last contact |
//! | `n/<webhook>\0<id u64>` | notification JSON | a delivered log file not yet announced to that webhook |
//! | `s/<name>` | text | delivery status for `GetTrailStatus` (latest delivery times and errors) |
//! | `z/<entry u64><index u32>` | the record's bytes | a pending record that could no longer be read, set aside for an operator (logged) |
//! | `o/trail` | [`crate::trail_control`] JSON | the trail's logging state and event selectors as last set through the API |
//! | `o/feed` | u64 | a trail journal only: the next entry of the collector's journal its feed reads (see [`crate::trails`]) |
//! | `k/signing` | [`SigningKeyRecord`] JSON | the key that signs the digest chains (public part only), so a missing or changed key file is noticed at start-up |
//!
//! Integers are big-endian so byte order is numeric order; `\0` separates string parts. File
//! and digest ids come from sled's `generate_id`, which never repeats across restarts. A
//! pending record's `seq` is `entry << 20 | index in the entry`, so seq order is commit order.
//!
//! # Upgrading a journal from before the log
//!
//! Older collectors kept each commit's records as a sled value (`p/<chunk>`). Opening such a
//! journal moves every record not yet filed into the log, then removes the old values in one
//! batch (see [`migrate`]); a crash in between repeats the move from the start. The old dedup
//! entries stay in sled and are still consulted until the window has passed over them.

mod frame;
mod migrate;
pub mod seen;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use groundtrail_common::Record;
use groundtrail_common::trail::{DigestLogFile, FileKind};
use serde::{Deserialize, Serialize};

use crate::group_flush::GroupFlush;
use crate::log::{Log, LogError, Position, SegmentLogSettings};
use seen::{Seen, SeenKey};

/// Why a journal operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The store itself failed (I/O error, corruption).
    #[error("journal: {0}")]
    Sled(#[from] sled::Error),
    /// The log of received records failed.
    #[error("journal: {0}")]
    Log(#[from] LogError),
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
    /// Its journal sequence number: `entry << 20 | index` (see the module doc).
    pub seq: u64,
    /// `recipientAccountId`.
    pub account: String,
    /// `awsRegion`.
    pub region: String,
    /// `eventTime` (CloudTrail JSON time, comparable as a string).
    pub event_time: String,
    /// Which file it goes in: a log file, or (an Insights record) an Insights file.
    pub kind: FileKind,
    /// The record's compact JSON, exactly as it will appear in the log file.
    pub json: Vec<u8>,
}

impl PendingRecord {
    fn from_record(seq: u64, record: &Record, json: Vec<u8>) -> PendingRecord {
        PendingRecord {
            seq,
            account: record.account().to_string(),
            region: record.aws_region.clone(),
            event_time: record.event_time.clone(),
            kind: FileKind::of_event_type(&record.event_type),
            json,
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
/// back for `[[signing.retired_keys]]` (see [`crate::signing_key`]).
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

/// Records of one log entry, for a reader that follows the log (the event history's indexer).
#[derive(Debug)]
pub struct CommittedEntry {
    /// The entry's position; the reader's next position is one more.
    pub position: Position,
    /// When it was received (unix seconds).
    pub received_at: u64,
    /// Its records' JSON, exactly as committed.
    pub records: Vec<Vec<u8>>,
}

/// How a journal is laid out and sized.
#[derive(Debug, Clone, Default)]
pub struct JournalSettings {
    /// The log of received records.
    pub log: SegmentLogSettings,
    /// The dedup index (its window and memory).
    pub dedup: crate::dedup::DedupSettings,
}

/// What the journal holds in memory, under its one lock.
#[derive(Debug, Default)]
struct Live {
    /// Log entries at or above the floor that still have unfiled records.
    chunks: BTreeMap<Position, ChunkState>,
    /// Every entry below it is filed completely (persisted as `l/floor`).
    floor: Position,
    /// Dedup keys claimed by entries not yet durable (invariant 2).
    in_flight: HashSet<SeenKey>,
    /// The same keys by entry, to move them to the index once the entry is durable.
    in_flight_by_entry: BTreeMap<Position, (u64, Vec<SeenKey>)>,
    /// Every agent's state as of the newest entry.
    agents: BTreeMap<String, AgentState>,
    /// Readers of the log and the position each has durably consumed up to.
    readers: BTreeMap<String, Position>,
}

/// The journal. Cheap to share behind an `Arc`; every method is safe to call concurrently.
pub struct Journal {
    db: sled::Db,
    /// Group commit of the sled metadata (see [`GroupFlush`]).
    flusher: Arc<GroupFlush>,
    /// The received records (see the module doc).
    log: Arc<dyn Log>,
    /// The dedup index.
    seen: Seen,
    /// Serializes read-check-write sequences (dedup, filing, delivery bookkeeping, digests)
    /// and guards what the journal keeps in memory. fsync happens outside it, except when an
    /// append starts a new log segment (the full one is fsynced first: once per 64 MiB).
    live: Mutex<Live>,
    /// The log's durable end, for readers waiting for new entries.
    durable: tokio::sync::watch::Sender<Position>,
    /// Held by a settle from taking keys out of flight until they are in the index.
    settling: Mutex<()>,
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

/// Decodes a log entry's frame; a frame that does not decode is damage to report, by position.
fn decode_entry(e: &crate::log::Entry) -> Result<frame::Frame<'_>> {
    frame::decode(&e.data).map_err(|why| JournalError::Corrupt {
        key: format!("log entry {}", e.position),
        why,
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
    records: Vec<(SeenKey, PendingRecord)>,
    keys: HashSet<SeenKey>,
    duplicates: u64,
    bytes: usize,
}

impl Prepared {
    /// Adds a record (dropped as a duplicate if it came earlier in this batch).
    pub fn push(&mut self, record: &Record) {
        self.push_json(record, record.to_json());
    }

    /// Adds a record whose compact JSON the caller already has (it must be `record`'s).
    pub fn push_json(&mut self, record: &Record, json: Vec<u8>) {
        let dk = seen::key(&record.event_time, &record.event_id);
        if !self.keys.insert(dk.clone()) {
            self.duplicates += 1;
            return;
        }
        let pending = PendingRecord::from_record(0, record, json);
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

/// sled's page cache for the journal's metadata. sled's default is 1 GiB; with the records in
/// the log, the tree holds only file, delivery and chain bookkeeping (and, for a while after an
/// upgrade, the old dedup entries).
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Bits of a pending record's `seq` that hold its index inside its log entry.
const CHUNK_INDEX_BITS: u32 = 20;
const CHUNK_INDEX_MASK: u64 = (1 << CHUNK_INDEX_BITS) - 1;

/// How many entries a reader may fall behind the floor before the log is trimmed without it
/// (see [`crate::indexer`]): a reader broken for good must not fill the journal's disk and stop
/// the trail. At the agents' default of 1,000 records a batch this is 20 million records.
const READER_MAX_LAG: u64 = 20_000;

/// Log bytes read per step while replaying the log at open.
const REPLAY_BYTES: usize = 32 * 1024 * 1024;

/// The `c/` entry of a log entry: how many records it holds and which are already filed.
#[derive(Debug, Default, PartialEq)]
struct ChunkState {
    records: u32,
    filed: Vec<u32>,
}

/// The `c/` value of an entry whose records are all filed.
const DONE: &[u8] = b"done";

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

    fn pending(&self) -> usize {
        (self.records as usize).saturating_sub(self.filed.len())
    }

    /// Its `c/` value: `done` once every record is filed.
    fn value(&self) -> Vec<u8> {
        if self.pending() == 0 {
            DONE.to_vec()
        } else {
            self.encode()
        }
    }
}

fn get_u64(db: &sled::Db, k: &[u8]) -> Result<Option<u64>> {
    Ok(db.get(k)?.and_then(|v| read_be(&v)))
}

impl Journal {
    /// Opens (creating) the journal at `path`, with its log in `path/log`.
    pub fn open(path: &Path) -> Result<Journal> {
        Self::open_with(path, SegmentLogSettings::default())
    }

    /// [`Journal::open`] with the log's settings (and the default dedup index).
    pub fn open_with(path: &Path, log: SegmentLogSettings) -> Result<Journal> {
        Self::open_with_settings(
            path,
            &JournalSettings {
                log,
                ..JournalSettings::default()
            },
        )
    }

    /// [`Journal::open`] with every setting.
    pub fn open_with_settings(path: &Path, settings: &JournalSettings) -> Result<Journal> {
        let log = settings.log;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| JournalError::Sled(e.into()))?;
        }
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()?;
        let log_dir = path.join("log");
        let log = migrate::prepare(&db, &log_dir, log)?;
        let flusher = GroupFlush::new(db.clone());
        let journal = Journal {
            seen: Seen::open(&path.join("dedup"), &settings.dedup, db.clone())?,
            flusher,
            db,
            durable: tokio::sync::watch::Sender::new(log.durable_end()),
            log,
            live: Mutex::new(Live::default()),
            settling: Mutex::new(()),
        };
        journal.replay()?;
        Ok(journal)
    }

    /// Rebuilds what the journal keeps in memory from sled and the log: the unfiled entries,
    /// the agents' states, and the dedup keys of every entry not yet trimmed (invariant 2).
    fn replay(&self) -> Result<()> {
        let floor = get_u64(&self.db, b"l/floor")?
            .unwrap_or(0)
            .max(self.log.start());
        let agents_at = get_u64(&self.db, b"l/agents")?.unwrap_or(0);
        let end = self.log.durable_end();
        if floor > end {
            return Err(JournalError::Corrupt {
                key: "l/floor".into(),
                why: format!(
                    "the journal's records up to entry {floor} are gone from its log, which ends at \
                     {end}: the log directory was replaced or deleted; restore it from a backup \
                     (pending records would otherwise be lost)"
                ),
            });
        }
        let mut states = BTreeMap::new();
        let mut stale = sled::Batch::default();
        let mut any_stale = false;
        for item in self
            .db
            .range(key(b"c/", &[&be(floor)])..key(b"c/", &[&be(u64::MAX)]))
        {
            let (k, v) = item?;
            match read_be(&k[2..]) {
                // Bookkeeping of an entry that never became durable (a crash took it): the
                // position will be reused by a new entry, which this must not describe.
                Some(entry) if entry >= end => {
                    stale.remove(k);
                    any_stale = true;
                }
                Some(entry) => {
                    states.insert(entry, v);
                }
                None => {}
            }
        }
        if any_stale {
            self.db.apply_batch(stale)?;
            self.db.flush()?;
        }
        let mut live = self.guard();
        live.floor = floor;
        live.agents = self.stored_agents()?;
        // Every entry still in the log: their dedup keys may not have been persisted (see
        // invariant 2), and the agents' states of those at or above `l/agents`.
        let mut keys = Vec::new();
        self.each_frame(self.log.start(), |position, f| {
            if position >= agents_at {
                for (name, state) in f.agents {
                    live.agents.insert(name, state);
                }
            }
            for line in &f.records {
                match seen::key_of_json(line) {
                    Some(k) => keys.push(k),
                    None => tracing::error!(
                        "journal: a record of log entry {position} has no eventTime/eventID"
                    ),
                }
            }
            if f.records.is_empty() || position < floor {
                return Ok(());
            }
            let state = match states.get(&position) {
                Some(v) if v.as_ref() == DONE => return Ok(()),
                Some(v) => ChunkState::decode(v),
                None => ChunkState::default(),
            };
            live.chunks.insert(
                position,
                ChunkState {
                    records: f.records.len() as u32,
                    filed: state.filed,
                },
            );
            Ok(())
        })?;
        drop(live);
        self.seen.insert(
            &keys,
            groundtrail_common::time::now_secs().timestamp().max(0) as u64,
        )?;
        Ok(())
    }

    /// Calls `f` with every durable log entry from `from` on, decoded, in order (read
    /// [`REPLAY_BYTES`] at a time).
    fn each_frame(
        &self,
        from: Position,
        mut f: impl FnMut(Position, frame::Frame<'_>) -> Result<()>,
    ) -> Result<()> {
        let end = self.log.durable_end();
        let mut at = from;
        while at < end {
            let entries = self.log.read(at, REPLAY_BYTES)?;
            let Some(last) = entries.last() else { break };
            at = last.position + 1;
            for e in &entries {
                f(e.position, decode_entry(e)?)?;
            }
        }
        Ok(())
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, Live> {
        // A panic while holding the lock cannot leave sled half-written (batches are atomic),
        // so a poisoned lock is safe to take over.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The error that left the journal stuck (every write fails until the process restarts;
    /// see [`crate::store_health`]), once it is.
    pub fn stuck(&self) -> Option<&str> {
        self.flusher.stuck()
    }

    /// Makes every commit so far durable (one shared fsync of the log) and moves their dedup
    /// keys to the index. What ingest waits for before its `200`.
    pub async fn sync_commits(&self) -> Result<()> {
        let log = self.log.clone();
        let durable = tokio::task::spawn_blocking(move || log.sync())
            .await
            .map_err(|e| JournalError::Other(e.to_string()))?;
        let durable = match durable {
            Ok(d) => d,
            Err(e) => {
                self.flusher.mark_stuck(e.to_string());
                return Err(e.into());
            }
        };
        self.settle(durable)
    }

    /// The blocking [`Journal::sync_commits`].
    fn sync_commits_blocking(&self) -> Result<()> {
        let durable = self.log.sync().inspect_err(|e| {
            self.flusher.mark_stuck(e.to_string());
        })?;
        self.settle(durable)
    }

    /// Moves the dedup keys of entries below `durable` from in flight to the index, and tells
    /// readers the log grew.
    fn settle(&self, durable: Position) -> Result<()> {
        // Held until the keys are in the index (see `trim`).
        let _settling = self.settling.lock().unwrap_or_else(|p| p.into_inner());
        let settled = {
            let mut live = self.guard();
            let rest = live.in_flight_by_entry.split_off(&durable);
            std::mem::replace(&mut live.in_flight_by_entry, rest)
        };
        if !settled.is_empty() {
            for (received_at, keys) in settled.values() {
                self.seen.insert(keys, *received_at)?;
            }
            let mut live = self.guard();
            for (_, keys) in settled.values() {
                for k in keys {
                    live.in_flight.remove(k);
                }
            }
        }
        self.durable.send_if_modified(|d| {
            let grew = durable > *d;
            *d = (*d).max(durable);
            grew
        });
        Ok(())
    }

    /// Makes everything written so far durable: the log's commits and the sled metadata.
    /// Nothing may be acknowledged or uploaded on the strength of a write before this returns.
    pub async fn flush(&self) -> Result<()> {
        self.sync_commits().await?;
        self.flusher.flush().await?;
        Ok(())
    }

    /// Marks the store stuck (see [`crate::store_health`]): a probe that did not finish.
    pub fn mark_stuck(&self, error: String) {
        self.flusher.mark_stuck(error);
    }

    /// The store-health probe, for a thread outside the runtime: waits for the journal's lock
    /// (a commit blocked inside the store holds it for good) and releases it at once, then
    /// syncs the log and flushes sled ([`GroupFlush::flush_blocking`]). A probe that does not
    /// return is a wedged journal.
    pub fn probe_blocking(&self) -> Result<()> {
        drop(self.guard());
        self.sync_commits_blocking()?;
        self.flusher.flush_blocking()?;
        Ok(())
    }

    /// Writes `records` that are not duplicates, and the given agent states, as one log entry.
    /// Duplicates are records already in the dedup index or in flight, or repeated earlier in
    /// `records`. Not durable until [`Journal::sync_commits`].
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
        let now_secs = now.timestamp().max(0) as u64;
        let mut live = self.guard();
        let mut entry = frame::start(now_secs, agents, prepared.bytes);
        let mut keys = Vec::with_capacity(prepared.records.len());
        for (dk, pending) in prepared.records {
            if live.in_flight.contains(&dk) || self.seen.contains(&dk)? {
                outcome.duplicates += 1;
                continue;
            }
            if outcome.committed.len() as u64 > CHUNK_INDEX_MASK {
                return Err(JournalError::Other(format!(
                    "more than {CHUNK_INDEX_MASK} records in one commit"
                )));
            }
            entry.extend_from_slice(&pending.json);
            entry.push(b'\n');
            keys.push(dk);
            outcome.committed.push(pending);
        }
        if outcome.committed.is_empty() && agents.is_empty() {
            return Ok(outcome);
        }
        let position = match self.log.append(&entry) {
            Ok(p) => p,
            Err(e) => {
                self.flusher.write_failed(&e.to_string());
                return Err(e.into());
            }
        };
        self.flusher.write_succeeded();
        for (index, pending) in outcome.committed.iter_mut().enumerate() {
            pending.seq = position << CHUNK_INDEX_BITS | index as u64;
        }
        if !keys.is_empty() {
            live.chunks.insert(
                position,
                ChunkState {
                    records: keys.len() as u32,
                    filed: Vec::new(),
                },
            );
            live.in_flight.extend(keys.iter().cloned());
            live.in_flight_by_entry.insert(position, (now_secs, keys));
        }
        for (name, state) in agents {
            live.agents.insert(name.clone(), state.clone());
        }
        Ok(outcome)
    }

    /// Whether a record with this `eventTime` and `eventID` was committed within the window.
    pub fn is_known(&self, event_time: &str, event_id: &str) -> Result<bool> {
        let k = seen::key(event_time, event_id);
        if self.guard().in_flight.contains(&k) {
            return Ok(true);
        }
        self.seen.contains(&k)
    }

    /// Forgets dedup keys received before `now - window`. Returns how many were dropped.
    pub fn expire_dedup(&self, now: DateTime<Utc>, window: std::time::Duration) -> Result<u64> {
        self.seen.expire(now, window)
    }

    /// Every pending record, in commit order: what the batcher reloads after a restart.
    ///
    /// A record that no longer parses (disk damage, or a record older versions accepted) is
    /// logged and left where it is rather than failing start-up: a collector that refuses to
    /// start on its own data would stop the whole fleet's trail, and dropping the record would
    /// lose it silently. Its entry stays in the log for an operator to inspect.
    pub fn pending(&self) -> Result<Vec<PendingRecord>> {
        let chunks: BTreeMap<Position, Vec<u32>> = {
            let live = self.guard();
            live.chunks
                .iter()
                .map(|(p, s)| {
                    let mut f = s.filed.clone();
                    f.sort_unstable();
                    (*p, f)
                })
                .collect()
        };
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        let Some(&first) = chunks.keys().next() else {
            return Ok(out);
        };
        self.each_frame(first, |position, f| {
            let Some(filed) = chunks.get(&position) else {
                return Ok(());
            };
            for (index, line) in f.records.iter().enumerate() {
                if filed.binary_search(&(index as u32)).is_ok() {
                    continue;
                }
                let seq = position << CHUNK_INDEX_BITS | index as u64;
                match Record::from_json(line) {
                    Ok(record) => out.push(PendingRecord::from_record(seq, &record, line.to_vec())),
                    Err(err) => {
                        tracing::error!(
                            "journal: pending record {index} of log entry {position} cannot be \
                             read ({err}); set aside as z/{position}/{index} in the journal for \
                             an operator"
                        );
                        damaged.push((position, index as u32, line.to_vec()));
                    }
                }
            }
            Ok(())
        })?;
        self.set_aside(damaged)?;
        Ok(out)
    }

    /// Moves records that can no longer be read out of the pending set into `z/<entry><index>`
    /// (their bytes, kept for an operator): left pending, one such record would hold the floor,
    /// and with it every later log segment, for good.
    fn set_aside(&self, damaged: Vec<(Position, u32, Vec<u8>)>) -> Result<()> {
        if damaged.is_empty() {
            return Ok(());
        }
        let mut live = self.guard();
        let mut batch = sled::Batch::default();
        let mut changed = BTreeMap::new();
        for (position, index, line) in damaged {
            batch.insert(key(b"z/", &[&be(position), &index.to_be_bytes()]), line);
            let Some(state) = live.chunks.get(&position) else {
                continue;
            };
            let state = changed.entry(position).or_insert_with(|| ChunkState {
                records: state.records,
                filed: state.filed.clone(),
            });
            if !state.filed.contains(&index) {
                state.filed.push(index);
            }
        }
        for (position, state) in &changed {
            batch.insert(key(b"c/", &[&be(*position)]), state.value());
        }
        self.db.apply_batch(batch)?;
        for (position, state) in changed {
            if state.pending() == 0 {
                live.chunks.remove(&position);
            } else {
                live.chunks.insert(position, state);
            }
        }
        Ok(())
    }

    /// Committed entries at or after `from` (durable ones only), for a reader following the
    /// log. `Err(Log(Trimmed))` when `from` was trimmed (see [`Journal::set_reader`]).
    pub fn read_committed(&self, from: Position, max_bytes: usize) -> Result<Vec<CommittedEntry>> {
        let mut out = Vec::new();
        for e in self.log.read(from, max_bytes)? {
            let f = decode_entry(&e)?;
            out.push(CommittedEntry {
                position: e.position,
                received_at: f.received_at,
                records: f.records.iter().map(|r| r.to_vec()).collect(),
            });
        }
        Ok(out)
    }

    /// The log's durable end, as a watch: readers wait on it for new entries.
    pub fn durable_end(&self) -> tokio::sync::watch::Receiver<Position> {
        self.durable.subscribe()
    }

    /// The oldest entry the log still has.
    pub fn log_start(&self) -> Position {
        self.log.start()
    }

    /// Bytes the log occupies on disk.
    pub fn log_size_on_disk(&self) -> u64 {
        self.log.size_on_disk()
    }

    /// What the dedup index holds in memory and on disk.
    pub fn dedup_stats(&self) -> crate::dedup::DedupStats {
        self.seen.stats()
    }

    /// Records that reader `name` has durably consumed every entry below `position`: the log
    /// is not trimmed below it while the reader is registered. A reader registers with its
    /// first call.
    pub fn set_reader(&self, name: &str, position: Position) {
        self.guard().readers.insert(name.to_string(), position);
    }

    /// Registers reader `name` where it left off: `recorded` (the position it stored with its
    /// own output), or the log's start when it has none, or when `recorded` is past the log's
    /// end (the journal was replaced under it). Returns the position to read from. Called before
    /// the reader's task starts, so nothing trims the log below it in between.
    pub fn resume_reader(&self, name: &str, recorded: Option<Position>) -> Position {
        let start = self.log_start();
        let end = self.durable_end_now();
        let position = match recorded {
            Some(p) if p > end => {
                tracing::warn!(
                    "journal reader {name}: stored position {p} is past the log's end ({end}): \
                     the journal was replaced; reading its log from the start"
                );
                start
            }
            Some(p) => p,
            None => start,
        };
        self.set_reader(name, position);
        position
    }

    /// The position reader `name` last reported, if it is registered.
    pub fn reader(&self, name: &str) -> Option<Position> {
        self.guard().readers.get(name).copied()
    }

    /// The log's durable end now.
    pub fn durable_end_now(&self) -> Position {
        self.log.durable_end()
    }

    /// Forgets reader `name`: the log no longer waits for it.
    pub fn drop_reader(&self, name: &str) {
        self.guard().readers.remove(name);
    }

    /// Records a closed log file in one atomic batch: its entry and gzip bytes, an undelivered
    /// marker per destination, and the filing of its records (`seqs`); the floor moves past
    /// every entry now filed completely. Returns the file's id. Call [`Journal::flush`] before
    /// uploading, and [`Journal::trim`] after.
    pub fn close_file(
        &self,
        entry: &FileEntry,
        gzip: &[u8],
        seqs: &[u64],
        destinations: &[String],
    ) -> Result<u64> {
        let mut live = self.guard();
        let id = self.db.generate_id()?;
        let mut batch = sled::Batch::default();
        batch.insert(key(b"f/", &[&be(id)]), encode(entry));
        batch.insert(key(b"b/", &[&be(id)]), gzip);
        for d in destinations {
            batch.insert(key(b"x/", &[&be(id), d.as_bytes()]), &[][..]);
        }
        self.file_in(&mut live, batch, seqs)?;
        Ok(id)
    }

    /// Marks records filed without a file: the trail does not record them (its event
    /// selectors do not take them, or it is not logging). One atomic batch, which moves the
    /// floor like [`Journal::close_file`]; the records stay in the log (and so in the event
    /// history and detection) until it is trimmed. Not durable until [`Journal::flush`]; a
    /// crash before it leaves them pending, and the batcher judges them again.
    pub fn pass_over(&self, seqs: &[u64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut live = self.guard();
        self.file_in(&mut live, sled::Batch::default(), seqs)
    }

    /// Adds the filing of `seqs` (and the floor it moves) to `batch` and applies it, then
    /// updates the in-memory state.
    fn file_in(&self, live: &mut Live, mut batch: sled::Batch, seqs: &[u64]) -> Result<()> {
        let mut by_chunk: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for s in seqs {
            by_chunk
                .entry(s >> CHUNK_INDEX_BITS)
                .or_default()
                .push((s & CHUNK_INDEX_MASK) as u32);
        }
        // Computed on copies, applied to memory only once the batch is in.
        let mut changed = Vec::new();
        for (chunk, indexes) in by_chunk {
            let Some(state) = live.chunks.get(&chunk) else {
                // Already filed completely (not reachable through the batcher, which files a
                // record once): nothing to record.
                tracing::error!("journal: records of log entry {chunk} filed twice");
                continue;
            };
            let mut filed = state.filed.clone();
            filed.extend(indexes);
            filed.sort_unstable();
            filed.dedup();
            changed.push((
                chunk,
                ChunkState {
                    records: state.records,
                    filed,
                },
            ));
        }
        let mut after: BTreeMap<Position, usize> =
            live.chunks.iter().map(|(p, s)| (*p, s.pending())).collect();
        for (chunk, state) in &changed {
            after.insert(*chunk, state.pending());
        }
        let floor = after
            .iter()
            .find(|(_, pending)| **pending > 0)
            .map(|(p, _)| *p)
            // Not `end`: an entry appended but not yet durable (a duplicate-only batch waiting
            // for its fsync) must not end up below a durable floor.
            .unwrap_or_else(|| self.log.durable_end())
            .max(live.floor);
        for (chunk, state) in &changed {
            let ck = key(b"c/", &[&be(*chunk)]);
            if *chunk < floor {
                batch.remove(ck);
            } else {
                batch.insert(ck, state.value());
            }
        }
        if floor > live.floor {
            batch.insert(&b"l/floor"[..], &be(floor)[..]);
            for k in self
                .db
                .range(key(b"c/", &[&be(0)])..key(b"c/", &[&be(floor)]))
                .keys()
            {
                batch.remove(k?);
            }
        }
        self.db.apply_batch(batch)?;
        for (chunk, state) in changed {
            if state.pending() == 0 {
                live.chunks.remove(&chunk);
            } else {
                live.chunks.insert(chunk, state);
            }
        }
        live.floor = floor;
        Ok(())
    }

    /// Lets the log go below the floor and below every reader: first the agents' states and
    /// the dedup index are made durable (they would otherwise be rebuilt from the entries about
    /// to go), then whole segments are deleted. Called after a flush that made the floor
    /// durable; safe to call at any time.
    pub async fn trim(&self) -> Result<()> {
        let (agents, upto, floor) = {
            let live = self.guard();
            // The floor as made durable by the flush below, not as a later close_file moves it.
            (live.agents.clone(), self.log.end(), live.floor)
        };
        // The states above are those of every entry below `upto`; those entries must be
        // durable before the states are recorded as covering them.
        self.sync_commits().await?;
        let mut batch = sled::Batch::default();
        for (name, state) in &agents {
            batch.insert(key(b"a/", &[name.as_bytes()]), encode(state));
        }
        batch.insert(&b"l/agents"[..], &be(upto)[..]);
        self.db.apply_batch(batch)?;
        self.flusher.flush().await?;
        // A settle that took keys out of flight before our sync must have put them in the
        // index before it is persisted.
        drop(self.settling.lock().unwrap_or_else(|p| p.into_inner()));
        self.seen.persist().await?;
        let below = {
            let live = self.guard();
            let floor = floor.min(upto);
            live.readers
                .values()
                .copied()
                .filter(|r| r.saturating_add(READER_MAX_LAG) >= floor)
                .chain([floor])
                .min()
                .unwrap_or(0)
        };
        self.log.trim_below(below)?;
        Ok(())
    }

    fn stored_agents(&self) -> Result<BTreeMap<String, AgentState>> {
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

    /// The trail's settings changed through the API (logging, event selectors): the JSON
    /// [`crate::trail_control`] stored, if any.
    pub fn trail_settings(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(b"o/trail")?.map(|v| v.to_vec()))
    }

    /// Stores the trail's settings. Not durable until [`Journal::flush`].
    pub fn set_trail_settings(&self, json: &[u8]) -> Result<()> {
        self.db.insert(&b"o/trail"[..], json)?;
        Ok(())
    }

    /// Removes the trail's stored settings (the config's apply).
    pub fn clear_trail_settings(&self) -> Result<()> {
        self.db.remove(b"o/trail")?;
        Ok(())
    }

    /// A trail journal's feed position: the next entry of the collector's journal to read
    /// (see [`crate::trails`]).
    pub fn feed_position(&self) -> Result<Option<u64>> {
        get_u64(&self.db, b"o/feed")
    }

    /// Stores the feed position. Not durable until [`Journal::flush`].
    pub fn set_feed_position(&self, position: u64) -> Result<()> {
        self.db
            .insert(&b"o/feed"[..], &position.to_be_bytes()[..])?;
        Ok(())
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
        Ok(self.guard().agents.clone())
    }

    /// How many records are pending and files undelivered (for metrics and shutdown).
    pub fn backlog(&self) -> (usize, usize) {
        let pending = self.guard().chunks.values().map(ChunkState::pending).sum();
        (pending, self.db.scan_prefix(b"x/").count())
    }
}

/// One digest chain's state: in the journal, or (cluster mode) in its shard's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    use crate::log::SegmentLog;
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
        r.event_time = TIME.to_string();
        r.user_identity = Some(UserIdentity::default());
        r
    }

    const TIME: &str = "2027-01-15T08:00:00Z";

    fn known(j: &Journal, id: &str) -> bool {
        j.is_known(TIME, id).unwrap()
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
            assert!(known(&j, &id(n)));
        }
    }

    /// A journal whose dedup window is 60 s, cut into 60 partitions (expiry is exact to 1 s).
    fn open_60s(path: &Path) -> Journal {
        Journal::open_with_settings(
            path,
            &JournalSettings {
                dedup: crate::dedup::DedupSettings {
                    window: std::time::Duration::from_secs(60),
                    partitions: 60,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// Invariant 2: the index forgets records only after the window.
    #[test]
    fn dedup_expires_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let j = open_60s(&dir.path().join("j"));
        j.commit(&[record(&id(1), "111122223333", "us-east-1")], &[], t(0))
            .unwrap();
        j.commit(&[record(&id(2), "111122223333", "us-east-1")], &[], t(100))
            .unwrap();
        j.sync_commits_blocking().unwrap();
        let window = std::time::Duration::from_secs(60);
        j.expire_dedup(t(59), window).unwrap();
        assert!(known(&j, &id(1)), "kept for the whole window");
        j.expire_dedup(t(62), window).unwrap();
        assert!(!known(&j, &id(1)));
        assert!(known(&j, &id(2)));
    }

    /// An eventID that is not a canonical UUID (only internal callers can produce one) gets its
    /// own key space, so it can neither collide with a UUID's binary key nor outlive the window.
    #[test]
    fn a_non_uuid_event_id_is_deduplicated_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let j = open_60s(&dir.path().join("j"));
        let upper = id(0xabc).to_uppercase();
        for weird in ["not-a-uuid", "0123456789abcdef", upper.as_str()] {
            let out = j
                .commit(&[record(weird, "111122223333", "us-east-1")], &[], t(0))
                .unwrap();
            assert_eq!(out.committed.len(), 1, "{weird}");
            assert!(known(&j, weird), "in flight");
            j.sync_commits_blocking().unwrap();
            assert!(known(&j, weird), "in the index");
        }
        assert!(!known(&j, &id(0xabc)), "upper case is another id");
        let window = std::time::Duration::from_secs(60);
        j.expire_dedup(t(62), window).unwrap();
        for weird in ["not-a-uuid", "0123456789abcdef", upper.as_str()] {
            assert!(!known(&j, weird), "{weird}");
        }
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
        let good = record(&id(1), "111122223333", "us-east-1").to_json();
        let mut lines = b"{broken\n".to_vec();
        lines.extend_from_slice(&good);
        lines.push(b'\n');
        let p = j.log.append(&frame::encode(0, &[], &lines)).unwrap();
        j.guard().chunks.insert(
            p,
            ChunkState {
                records: 2,
                filed: Vec::new(),
            },
        );
        j.sync_commits_blocking().unwrap();
        let pending = j.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].json, good);
        assert_eq!(pending[0].seq, p << CHUNK_INDEX_BITS | 1);
        // Set aside with its bytes, so that it does not hold the floor (and the log) forever.
        assert_eq!(j.backlog().0, 1);
        let kept =
            j.db.get(key(b"z/", &[&be(p), &0u32.to_be_bytes()]))
                .unwrap();
        assert_eq!(kept.as_deref(), Some(&b"{broken"[..]));
        j.close_file(&entry("a"), b"gz", &[pending[0].seq], &["d".to_string()])
            .unwrap();
        assert_eq!(j.backlog().0, 0);
        assert!(j.guard().floor > p, "the floor moved past the entry");
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

    fn segments(path: &Path) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(path.join("log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        v.sort();
        v
    }

    /// Invariants 1 and 2 across a crash inside an append: the acknowledged commit is found
    /// again; the one whose entry was torn is gone, and its key was never claimed in the index
    /// (even though sled was flushed after it), so the agent's resend is taken, not dropped.
    #[tokio::test]
    async fn a_torn_append_loses_only_the_unacknowledged_commit_and_its_claim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        {
            let j = Journal::open(&path).unwrap();
            j.commit(&[record(&id(1), "111122223333", "us-east-1")], &[], t(0))
                .unwrap();
            j.sync_commits().await.unwrap();
            j.commit(&[record(&id(2), "111122223333", "us-east-1")], &[], t(1))
                .unwrap();
            assert!(known(&j, &id(2)), "claimed while in flight");
            j.flusher.flush().await.unwrap();
        }
        // The crash: the second entry's frame is cut in the middle.
        let seg = segments(&path).pop().unwrap();
        let len = std::fs::metadata(&seg).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 10)
            .unwrap();
        let j = Journal::open(&path).unwrap();
        let pending = j.pending().unwrap();
        assert_eq!(pending.len(), 1);
        assert!(known(&j, &id(1)));
        assert!(!known(&j, &id(2)), "a lost record must not stay claimed");
        let resend = j
            .commit(&[record(&id(2), "111122223333", "us-east-1")], &[], t(2))
            .unwrap();
        assert_eq!(resend.committed.len(), 1);
    }

    /// Invariant 3 and the trim: the log keeps every entry at or above the floor and above a
    /// reader's position (up to the reader bound), and lets whole segments below both go.
    #[tokio::test]
    async fn the_log_is_trimmed_only_below_the_floor_and_every_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let j = Journal::open_with(&path, SegmentLogSettings { segment_bytes: 512 }).unwrap();
        let dests = ["local".to_string()];
        let mut seqs = Vec::new();
        for n in 0..20 {
            let out = j
                .commit(&[record(&id(n), "111122223333", "us-east-1")], &[], t(0))
                .unwrap();
            seqs.push(out.committed[0].seq);
        }
        j.flush().await.unwrap();
        j.set_reader("history", 5);
        // Entries 0..10 filed: the floor moves to 10, the reader holds the log at 5.
        j.close_file(&entry("a"), b"gz", &seqs[..10], &dests)
            .unwrap();
        j.flush().await.unwrap();
        j.trim().await.unwrap();
        let start = j.log_start();
        assert!(start > 0 && start <= 5, "start {start}");
        // The reader moves on: the log may go up to the floor, never past it.
        j.set_reader("history", 20);
        j.trim().await.unwrap();
        let start = j.log_start();
        assert!(start > 5 && start <= 10, "start {start}");
        assert_eq!(j.pending().unwrap().len(), 10);
        // A reader that falls behind again (within the bound) holds the log where it is.
        let before = j.log_start();
        j.set_reader("history", 0);
        j.close_file(&entry("b"), b"gz", &seqs[10..], &dests)
            .unwrap();
        j.flush().await.unwrap();
        j.trim().await.unwrap();
        assert_eq!(j.log_start(), before);
        // Reopen: only the unfiled entries come back (none), positions continue.
        drop(j);
        let j = Journal::open_with(&path, SegmentLogSettings { segment_bytes: 512 }).unwrap();
        assert!(j.pending().unwrap().is_empty());
        assert_eq!(j.backlog().0, 0);
        let out = j
            .commit(&[record(&id(99), "111122223333", "us-east-1")], &[], t(0))
            .unwrap();
        assert_eq!(out.committed[0].seq >> CHUNK_INDEX_BITS, 20);
        assert!(
            known(&j, &id(3)),
            "keys of trimmed entries stay in the index"
        );
    }

    /// Agent states travel in the log entries and are copied to sled before their entries
    /// go: a reopen finds the newest state either way.
    #[tokio::test]
    async fn agent_states_survive_reopen_before_and_after_a_trim() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let state = |seq| AgentState {
            last_seq: Some(seq),
            last_seen: "2026-01-01T00:00:00Z".into(),
            account: "111122223333".into(),
            region: "us-east-1".into(),
            silent_reported: false,
        };
        {
            let j = Journal::open(&path).unwrap();
            j.commit(&[], &[("web-1".into(), state(1))], t(0)).unwrap();
            j.commit(&[], &[("web-1".into(), state(2))], t(0)).unwrap();
            j.flush().await.unwrap();
        }
        {
            let j = Journal::open(&path).unwrap();
            assert_eq!(j.agents().unwrap()["web-1"], state(2), "from the log");
            j.trim().await.unwrap();
            j.commit(&[], &[("web-2".into(), state(7))], t(0)).unwrap();
            j.flush().await.unwrap();
        }
        let j = Journal::open(&path).unwrap();
        let agents = j.agents().unwrap();
        assert_eq!(agents["web-1"], state(2), "from sled");
        assert_eq!(agents["web-2"], state(7), "from the log after the copy");
    }

    /// Writes a journal as collectors before the log kept it: records as `p/` chunks.
    fn old_journal(path: &Path) -> Vec<Vec<u8>> {
        let db = sled::open(path).unwrap();
        let lines: Vec<Vec<u8>> = (0..3)
            .map(|n| record(&id(n), "111122223333", "us-east-1").to_json())
            .collect();
        let mut blob = Vec::new();
        for l in &lines {
            blob.extend_from_slice(l);
            blob.push(b'\n');
        }
        db.insert(key(b"p/", &[&be(7)]), blob).unwrap();
        // Record 1 of the chunk was filed already.
        let mut c = 3u32.to_be_bytes().to_vec();
        c.extend_from_slice(&1u32.to_be_bytes());
        db.insert(key(b"c/", &[&be(7)]), c).unwrap();
        // Its dedup index: one key, and the expiry entry that lists it.
        let legacy = seen::legacy_key(&id(0));
        db.insert(&legacy, &be(1_800_000_000)[..]).unwrap();
        let mut listed = (legacy.len() as u16).to_be_bytes().to_vec();
        listed.extend_from_slice(&legacy);
        db.insert(key(b"t/", &[&be(1_800_000_000), &be(1)]), listed)
            .unwrap();
        db.flush().unwrap();
        vec![lines[0].clone(), lines[2].clone()]
    }

    /// The upgrade: pending records of the old format move into the log (only the unfiled
    /// ones), the old values go, the old dedup entries still count; an interrupted move is
    /// redone without doubling anything.
    #[tokio::test]
    async fn an_old_journal_moves_its_pending_records_into_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let expected = old_journal(&path);
        // An interrupted move: entries in the log, the old values still there.
        {
            let log = SegmentLog::open(&path.join("log"), SegmentLogSettings::default()).unwrap();
            log.append(&frame::encode(0, &[], b"{\"half\":1}\n"))
                .unwrap();
            log.sync().unwrap();
        }
        let j = Journal::open(&path).unwrap();
        let pending: Vec<Vec<u8>> = j.pending().unwrap().into_iter().map(|p| p.json).collect();
        assert_eq!(pending, expected);
        assert_eq!(j.db.scan_prefix(b"p/").count(), 0);
        assert!(known(&j, &id(0)), "the old dedup entry still counts");
        drop(j);
        let j = Journal::open(&path).unwrap();
        assert_eq!(j.pending().unwrap().len(), 2, "moved once");
        // The old keys go once the window has passed over them.
        let window = std::time::Duration::from_secs(60);
        j.expire_dedup(t(61), window).unwrap();
        assert!(!known(&j, &id(0)));
        drop(j);
        // An older collector writing `p/` again after the move is refused with what to do.
        let db = sled::open(&path).unwrap();
        db.insert(key(b"p/", &[&be(9)]), &b"{}\n"[..]).unwrap();
        db.flush().unwrap();
        drop(db);
        let err = Journal::open(&path).unwrap_err().to_string();
        assert!(err.contains("start the older version"), "{err}");
    }

    /// A batch of the kill -9 test: 50 records of ~4 KiB, so that an append takes long
    /// enough for a kill to land inside it.
    fn big_batch(n: u64) -> Vec<Record> {
        (0..50)
            .map(|i| {
                let mut r = record(
                    &format!("00000000-0000-4000-8000-{:012x}", n * 50 + i),
                    "111122223333",
                    "us-east-1",
                );
                r.request_parameters = Some(serde_json::json!({ "pad": "x".repeat(4000) }));
                r
            })
            .collect()
    }

    /// The child of the kill -9 test: commits batches until killed, printing each one's number
    /// once `sync_commits` returned (what ingest's `200` waits for).
    #[test]
    #[ignore = "run by kill9_mid_append_keeps_every_acknowledged_record"]
    fn append_child() {
        use std::io::Write;
        let Ok(dir) = std::env::var("GROUNDTRAIL_JOURNAL_KILL_DIR") else {
            return;
        };
        let j = Journal::open(Path::new(&dir)).unwrap();
        let mut out = std::io::stdout().lock();
        for n in 0.. {
            j.commit(&big_batch(n), &[], t(0)).unwrap();
            j.sync_commits_blocking().unwrap();
            writeln!(out, "acked {n}").unwrap();
            out.flush().unwrap();
        }
    }

    /// Invariants 1 and 2 against a real kill -9, landing at random points of a stream of
    /// appends: every acknowledged batch is pending after the restart, each exactly once; the
    /// batch in flight at the kill is there whole or not at all, and its resend is dropped
    /// exactly when it is there.
    #[test]
    fn kill9_mid_append_keeps_every_acknowledged_record() {
        use std::io::BufRead;
        for round in 0..3u64 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("j");
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "journal::tests::append_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("GROUNDTRAIL_JOURNAL_KILL_DIR", &path)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
            let mut acked = Vec::new();
            // A different point of the stream each round, then a kill while it appends.
            while acked.len() < 5 + 7 * round as usize {
                let line = lines.next().expect("the child stopped").unwrap();
                if let Some(n) = line.strip_prefix("acked ") {
                    acked.push(n.parse::<u64>().unwrap());
                }
            }
            std::thread::sleep(std::time::Duration::from_micros(300 * round));
            child.kill().unwrap();
            child.wait().unwrap();
            for line in lines {
                if let Some(n) = line.unwrap().strip_prefix("acked ") {
                    acked.push(n.parse::<u64>().unwrap());
                }
            }
            let j = Journal::open(&path).unwrap();
            let pending = j.pending().unwrap();
            let mut ids: Vec<String> = pending
                .iter()
                .map(|p| {
                    let v: serde_json::Value = serde_json::from_slice(&p.json).unwrap();
                    v["eventID"].as_str().unwrap().to_string()
                })
                .collect();
            let total = ids.len();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), total, "round {round}: a record is pending twice");
            let last = *acked.last().unwrap();
            for n in 0..=last {
                for r in big_batch(n) {
                    assert!(
                        ids.binary_search(&r.event_id).is_ok(),
                        "round {round}: acknowledged batch {n} lost"
                    );
                }
            }
            // The batch in flight: all there or none, and its resend agrees.
            let next = big_batch(last + 1);
            let present = next
                .iter()
                .filter(|r| ids.binary_search(&r.event_id).is_ok())
                .count();
            assert!(
                present == 0 || present == 50,
                "round {round}: torn batch, {present} of 50"
            );
            let resend = j.commit(&next, &[], t(1)).unwrap();
            assert_eq!(resend.duplicates as usize, present, "round {round}");
            assert_eq!(ids.len(), (last as usize + 1) * 50 + present);
        }
    }
}
