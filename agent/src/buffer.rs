//! The agent's durable queue: records wait here, on disk, until the collector has committed them.
//!
//! # Invariants
//!
//! 1. **Acknowledged means flushed.** [`Buffer::append`] (and so every source's and every
//!    application's acknowledgement) returns only after the records *and* the source checkpoint
//!    that goes with them are on disk (`sled::Db::flush`, i.e. fsync). Concurrent appends may
//!    share one flush (group commit, `flush_delay_ms`), but none returns before its own data is
//!    covered by a completed flush.
//! 2. **Records and checkpoint are atomic.** One append is one `sled::Batch` on one tree: after a
//!    crash either all of its records and its checkpoint are there, or none is. A source that
//!    resumes from its checkpoint therefore neither loses nor repeats a record. The records of
//!    one append are stored together, as one *chunk* value (a few chunks for a huge append),
//!    so that an append costs one sled insert and one zstd frame whatever its size.
//! 3. **Sequence numbers are per host, strictly increasing, never reused** — across restarts,
//!    crashes, and even a buffer that had to be quarantined: a fresh buffer starts at the current
//!    time in microseconds, above anything an earlier buffer on this host can have reached.
//!    Records dropped under `drop_newest` consume their numbers, so the gap is visible to the
//!    collector too.
//! 4. **Read in order, only what is durable.** [`Buffer::read_from`] yields records in sequence
//!    order and never a record whose append has not been flushed yet (so nothing reaches the
//!    collector that a crash could still take back and renumber).
//! 5. **Deleted only up to the commit point.** Records leave the queue only through
//!    [`Buffer::ack_up_to`] with the collector's commit point (everything `<=` it), or through
//!    [`Buffer::set_aside`] (a record the collector refused, moved to the side tree; see
//!    "The side tree" below).
//!    A chunk is deleted once *all* its records are acknowledged; until then the records
//!    `<= acked` inside it are skipped by every reader and not counted (`m acked` is written in
//!    the same batch as the deletions, so the two agree after a crash). Setting aside a record
//!    inside a chunk rewrites the chunk without it (the records before it from their own key, the
//!    records after it under the key of the next one) in the same batch that writes the `x` key.
//! 6. **Bounded.** The compressed chunks held (a partly acknowledged chunk counts whole, as it
//!    is stored) *and the records set aside* never exceed `max_bytes` (except that one append
//!    is always admitted into an empty buffer, so an oversized append cannot wedge it). When full,
//!    `block` makes appends wait for space; `drop_newest` refuses the append, counts it, and
//!    records its sequence range.
//! 7. **Loss is recorded, durably, then reported.** Dropped records, corrupt entries and a
//!    quarantined buffer are added to a persistent "pending loss" entry in the same batch that
//!    makes the loss happen; as soon as there is room, the pending loss is turned into the
//!    agent's own CloudTrail records (`RecordsDropped`, `BufferCorruption`, `RecordsRejected`)
//!    and cleared in one batch. A crash in between loses neither the loss nor its report.
//! 8. **The agent never crash-loops on its own data.** An undecodable value is removed, counted
//!    and reported (invariant 7) instead of failing the reader: a chunk whose frame does not
//!    decode (zstd content checksum) is lost as a whole, with the sequence range its header
//!    names (a header that does not parse counts as one record). Values of the earlier
//!    one-record-per-key format (`0x01`) and length-prefixed chunks (`0x02`) are still read. A directory sled cannot open (or
//!    panics on) is renamed to `<dir>.quarantined-<time>` and a fresh buffer starts, with the
//!    loss reported. Only "locked by another process" is an error: that is another agent.
//!
//! 9. **A failing disk is an error, not damage.** An I/O error from the operating system (EIO,
//!    EDQUOT, EMFILE, ENOSPC, EACCES, ...) while opening is returned as an error, so the agent
//!    exits and is restarted; only sled's own verdict that the files are damaged (corruption,
//!    a panic, a truncated file) moves the directory aside. A damaged directory is worth
//!    setting aside; a full or flaky disk is not a reason to abandon the whole backlog.
//! 10. **A stuck store is detected.** sled fails every write after one failed write until the
//!     process restarts. Every failed write or flush is counted and remembered
//!     ([`Buffer::storage_failure`]); a successful flush clears it. While writes have been failing
//!     for longer than `stuck_after`, [`Buffer::stuck`] says so: the agent then stops its systemd
//!     watchdog pings, so that systemd restarts it (the only way to reopen sled), and `status`
//!     shows the error. When writes work again, the failure is written to the trail as a
//!     `BufferStorageFailure` record (first error, failed operations, how long).
//!
//! # The side tree
//!
//! A record the collector refuses (its own marked verdict, see `shipper`) would block every
//! later record if it stayed at the head, so it is moved to the side tree (`x` keys, under its
//! own sequence number). The rules:
//!
//! - **Counted within `max_bytes`.** Its bytes count towards `max_bytes` like queued records
//!   (`status.bytes` is everything held; `status.setAsideBytes` the side tree's part), so the
//!   disk bound is one number.
//! - **Bounded.** The side tree holds at most `set_aside_max_bytes` (and never more than a
//!   quarter of `max_bytes`, whatever that says). A refused record that does not fit any more
//!   is not kept: it leaves the queue all the same (nothing blocks the head) and its report in
//!   the trail says `"kept": false`, so the loss is not silent.
//! - **Reported.** Every record set aside (kept or not) is named, with the collector's error
//!   code and message and its `eventID`, in a `RecordsRejected` record (invariant 7).
//! - **Resent, not kept forever.** The shipper offers the records of the side tree to the
//!   collector again (each on its own, without sequence headers, the collector de-duplicating
//!   by `eventID`) periodically with backoff and on `groundtrail-agent resend-set-aside`; each
//!   one the collector accepts is removed ([`Buffer::remove_set_aside`]) and counted. A record
//!   therefore never has to be deleted by hand: once the collector accepts it (for instance
//!   after its limits were raised), it is in the trail.
//!
//! # On-disk layout
//!
//! One sled database in `<data_dir>/buffer`, one tree `queue`; the first key byte is the kind,
//! so that a single `sled::Batch` (atomic on one tree) can cover records, checkpoint and meta:
//!
//! | key | value |
//! |---|---|
//! | `r` + seq (u64 big-endian) | chunk: the records `seq ..= seq + n - 1` of one append: `0x03`, append time (unix ms, u64 BE), `n` (u32 BE, 1..=4096), zstd frame (with content checksum and content size) of the `n` records' compact JSON, each followed by `\n` (ndjson: what the collector takes, so the shipper sends the frame as stored, see `ship_batch`). A record holding a newline byte (never compact JSON) makes its chunk the earlier `0x02` form instead: the frame holds `n` times (length u32 BE, the JSON). Both are read, and `0x01` one-record values too, so data directories of earlier agents keep working. The reverse does not hold: an earlier agent takes `0x03` chunks for damaged ones and removes them, reported as `BufferCorruption` (and its `buffer` tools refuse the directory as an unknown format): drain the buffer before downgrading |
//! | `c` + source name (UTF-8) | the source's checkpoint, opaque bytes |
//! | `m` `next_seq` | a lower bound of the next sequence number (u64 BE): written at open and whenever numbers are used up without a record key (drops, corrupt entries removed); appends do not write it, the next number is the highest of it, the last chunk's last record + 1, the last `x` key + 1 and `acked` + 1 |
//! | `m` `acked` | highest commit point acknowledged by the collector (u64 BE); records `<=` it in a chunk still stored are gone |
//! | `m` `loss` | pending loss not yet written as records (JSON [`PendingLoss`]) |
//! | `x` + seq (u64 BE) | a record the collector refused, moved aside (a one-record chunk) |
//!
//! Big-endian sequence keys make sled's byte order the sequence order.
//!
//! # What is durable when
//!
//! - after `append` returns `Ok`: its records and checkpoint (and so its sequence numbers);
//! - after `append` returns `Dropped`: the drop is in the pending loss and `next_seq` moved;
//! - after `ack_up_to` returns: the deletion (a crash before it only means a re-send, which the
//!   collector de-duplicates by `eventID`);
//! - the byte and record counts are not stored; they are recomputed by a scan of the chunk keys
//!   and headers at open (no decompression).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use groundtrail_common::Record;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::config::FullPolicy;
use crate::host_identity::HostIdentity;
use crate::ship_batch::{Batch, Segment, SegmentData};
use crate::sink::{BoxFuture, Checkpoint, RecordSink, SinkError};

pub(crate) const TREE: &str = "queue";
pub(crate) const K_RECORD: u8 = b'r';
pub(crate) const K_CHECKPOINT: u8 = b'c';
pub(crate) const K_META: u8 = b'm';
pub(crate) const K_ASIDE: u8 = b'x';
pub(crate) const META_NEXT_SEQ: &[u8] = b"mnext_seq";
pub(crate) const META_ACKED: &[u8] = b"macked";
pub(crate) const META_LOSS: &[u8] = b"mloss";
/// Written only to find out whether a failing store works again (invariant 10).
pub(crate) const META_PROBE: &[u8] = b"mprobe";
const _: () =
    assert!(META_NEXT_SEQ[0] == K_META && META_ACKED[0] == K_META && META_LOSS[0] == K_META);
/// The earlier format: one record per value (still read).
pub(crate) const VALUE_SINGLE: u8 = 1;
pub(crate) const SINGLE_HEADER: usize = 9;
/// A chunk: the records of one append, each preceded by its length (still read; written only
/// for records that contain a newline byte, which no compact JSON does).
pub(crate) const VALUE_CHUNK: u8 = 2;
/// A chunk whose frame holds the records as ndjson, exactly the collector's wire form, so that
/// the shipper can send the frame as it is stored (see `ship_batch`).
pub(crate) const VALUE_LINES: u8 = 3;
/// Header length of both chunk formats (kind, append time, record count).
pub(crate) const CHUNK_HEADER: usize = 13;
/// Most records in one chunk; a larger append is stored as several chunks in its one batch.
pub(crate) const MAX_CHUNK_RECORDS: usize = 4096;
/// zstd level of chunks: the agent is CPU-bound long before the buffer is space-bound, and
/// whole appends of similar JSON compress well even at level 1.
const ZSTD_LEVEL: i32 = 1;
/// sled's page cache.
const SLED_CACHE_BYTES: u64 = 4 * 1024 * 1024;
/// A decompressed record larger than this is treated as corrupt (records are <= 256 KB).
const MAX_DECODED: usize = 16 * 1024 * 1024;
/// A decompressed chunk larger than this is treated as corrupt.
const MAX_CHUNK_DECODED: usize = 256 * 1024 * 1024;
/// Most sequence ranges kept per loss kind; beyond, only counts grow (`rangesTruncated`).
const MAX_RANGES: usize = 64;
/// Most refused records described in one pending loss.
const MAX_REJECTED: usize = 64;
/// The side tree never takes more than this share of `max_bytes` (1/4), so that refused
/// records cannot crowd out the queue.
const SET_ASIDE_SHARE: u64 = 4;

/// What went wrong in the buffer.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer directory {path} is in use by another process (is an agent already running?)")]
    Locked { path: String },
    #[error("buffer storage error: {0}")]
    Storage(String),
    #[error("commit point {commit} is beyond the last sequence number assigned ({last})")]
    CommitBeyondEnd { commit: u64, last: u64 },
    #[error("the buffer is closed")]
    Closed,
}

impl From<sled::Error> for BufferError {
    fn from(e: sled::Error) -> Self {
        BufferError::Storage(e.to_string())
    }
}

/// Buffer settings (from `[buffer]`).
#[derive(Debug, Clone)]
pub struct BufferOptions {
    pub max_bytes: u64,
    pub full_policy: FullPolicy,
    /// Group-commit window before a flush.
    pub flush_delay: Duration,
    /// Most bytes the side tree holds (capped at a quarter of `max_bytes`).
    pub set_aside_max_bytes: u64,
    /// How long writes may fail before the store counts as stuck (invariant 10).
    pub stuck_after: Duration,
}

impl Default for BufferOptions {
    fn default() -> Self {
        BufferOptions {
            max_bytes: 64 * 1000 * 1000,
            full_policy: FullPolicy::Block,
            flush_delay: Duration::ZERO,
            set_aside_max_bytes: 4 * 1000 * 1000,
            stuck_after: Duration::from_secs(60),
        }
    }
}

impl BufferOptions {
    /// The side tree's effective bound.
    pub fn set_aside_limit(&self) -> u64 {
        self.set_aside_max_bytes
            .min(self.max_bytes / SET_ASIDE_SHARE)
    }
}

/// A record read back from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    /// When it was appended (unix milliseconds): for the end-to-end lag.
    pub appended_ms: u64,
    /// The record's compact JSON, exactly as appended.
    pub json: Vec<u8>,
}

/// An inclusive range of sequence numbers.
pub type SeqRange = (u64, u64);

/// A record the collector refused and the shipper moved aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    pub seq: u64,
    #[serde(rename = "eventID", skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub error_code: String,
    pub message: String,
    /// Whether it is kept in the side tree (false: the side tree was full, the record is gone).
    #[serde(default = "yes")]
    pub kept: bool,
}

fn yes() -> bool {
    true
}

/// Writes to the buffer's storage that failed, until one succeeded again (invariant 10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageFailure {
    /// The first error.
    pub error: String,
    /// Unix ms of the first failure.
    pub since_ms: u64,
    /// Failed operations (writes, flushes, deletions) so far.
    pub failed_operations: u64,
    /// Unix ms when a flush succeeded again (in the trail record only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered_ms: Option<u64>,
}

/// A buffer directory moved aside because it could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quarantined {
    pub path: String,
    pub error: String,
}

/// Loss known but not yet written to the trail (persisted under `m loss`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PendingLoss {
    pub dropped: u64,
    pub dropped_ranges: Vec<SeqRange>,
    pub corrupt: u64,
    pub corrupt_ranges: Vec<SeqRange>,
    pub ranges_truncated: bool,
    pub rejected: Vec<Rejected>,
    pub rejected_truncated: u64,
    pub quarantined: Vec<Quarantined>,
    /// A storage failure that is over, not yet written to the trail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_failure: Option<StorageFailure>,
}

impl PendingLoss {
    fn is_empty(&self) -> bool {
        self.dropped == 0
            && self.corrupt == 0
            && self.rejected.is_empty()
            && self.rejected_truncated == 0
            && self.quarantined.is_empty()
            && self.storage_failure.is_none()
    }

    fn add_range(ranges: &mut Vec<SeqRange>, truncated: &mut bool, r: SeqRange) {
        if let Some(last) = ranges.last_mut()
            && last.1.checked_add(1) == Some(r.0)
        {
            last.1 = r.1;
            return;
        }
        if ranges.len() < MAX_RANGES {
            ranges.push(r);
        } else {
            *truncated = true;
        }
    }

    /// The agent records that report this loss.
    fn records(&self, id: &HostIdentity, policy: FullPolicy, max_bytes: u64) -> Vec<Record> {
        let mut out = Vec::new();
        if self.dropped > 0 {
            out.push(id.agent_record(
                "RecordsDropped",
                json!({
                    "host": id.host,
                    "count": self.dropped,
                    "seqRanges": self.dropped_ranges,
                    "rangesTruncated": self.ranges_truncated,
                    "reason": "buffer full",
                    "fullPolicy": match policy { FullPolicy::Block => "block", FullPolicy::DropNewest => "drop_newest" },
                    "maxBytes": max_bytes,
                }),
            ));
        }
        if self.corrupt > 0 || !self.quarantined.is_empty() {
            out.push(id.agent_record(
                "BufferCorruption",
                json!({
                    "host": id.host,
                    "corruptEntries": self.corrupt,
                    "seqRanges": self.corrupt_ranges,
                    "rangesTruncated": self.ranges_truncated,
                    "quarantined": self.quarantined,
                    "lostUnknown": !self.quarantined.is_empty(),
                }),
            ));
        }
        if !self.rejected.is_empty() || self.rejected_truncated > 0 {
            out.push(id.agent_record(
                "RecordsRejected",
                json!({
                    "host": id.host,
                    "count": self.rejected.len() as u64 + self.rejected_truncated,
                    "records": self.rejected,
                    "setAside": "records with kept=true wait in the agent's side tree under their sequence number and are resent when the collector accepts them (groundtrail-agent resend-set-aside)",
                }),
            ));
        }
        if let Some(f) = &self.storage_failure {
            let mut params = serde_json::to_value(f).unwrap_or_default();
            if let Some(o) = params.as_object_mut() {
                o.insert("host".into(), json!(id.host));
            }
            out.push(id.agent_record("BufferStorageFailure", params));
        }
        out
    }
}

/// A snapshot for `status` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BufferStatus {
    pub depth: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub full_policy: String,
    pub next_seq: u64,
    pub oldest_seq: Option<u64>,
    pub oldest_age_ms: Option<u64>,
    pub last_commit_point: Option<u64>,
    pub set_aside: u64,
    /// Bytes of the side tree (part of `bytes`).
    pub set_aside_bytes: u64,
    /// The side tree's bound.
    pub set_aside_max_bytes: u64,
    /// Refused records not kept because the side tree was full, since start.
    pub set_aside_discarded_total: u64,
    /// Set-aside records the collector accepted on a resend, since start.
    pub set_aside_resent_total: u64,
    /// Writes are failing right now (invariant 10): the first error, since when, how many.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_failure: Option<StorageFailure>,
    /// Failed storage operations since start.
    pub storage_errors_total: u64,
    pub pending_loss: PendingLoss,
    pub appended_total: u64,
    pub dropped_total: u64,
    pub corrupt_total: u64,
    pub rejected_total: u64,
    /// Appends waiting for space right now (`block` policy, buffer full).
    pub waiting_appends: u64,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored and flushed; `(first, last)` sequence numbers, `None` for a checkpoint-only append.
    Stored(Option<SeqRange>),
    /// Refused under `drop_newest`; the numbers were consumed and the loss recorded.
    Dropped(SeqRange),
    /// No room under `block`: nothing happened, wait for space and try again.
    Full,
}

struct State {
    next_seq: u64,
    bytes: u64,
    count: u64,
    acked: u64,
    set_aside: u64,
    set_aside_bytes: u64,
    loss: PendingLoss,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    opts: BufferOptions,
    id: HostIdentity,
    state: Mutex<State>,
    /// `State::acked`, for readers that do not take the state lock.
    acked: AtomicU64,
    /// One zstd context each way, reused by every append and read (not one per thread).
    compressor: Mutex<zstd::bulk::Compressor<'static>>,
    decompressor: Mutex<zstd::bulk::Decompressor<'static>>,
    /// Highest sequence number whose batch has been applied (not necessarily flushed).
    written: AtomicU64,
    /// Highest sequence number covered by a completed flush.
    durable: AtomicU64,
    flush_lock: Mutex<()>,
    closed: AtomicBool,
    space: tokio::sync::Notify,
    appended: tokio::sync::Notify,
    appended_total: AtomicU64,
    dropped_total: AtomicU64,
    corrupt_total: AtomicU64,
    rejected_total: AtomicU64,
    waiting_appends: AtomicU64,
    discarded_total: AtomicU64,
    resent_total: AtomicU64,
    storage_errors_total: AtomicU64,
    /// Writes failing since (invariant 10), with the monotonic time of the first failure.
    failing: Mutex<Option<(std::time::Instant, StorageFailure)>>,
}

/// The durable queue. Cheap to clone; all clones share one sled database.
#[derive(Clone)]
pub struct Buffer {
    inner: Arc<Inner>,
}

/// What happened while opening.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Set when the directory was damaged and moved aside: where it went and why.
    pub quarantined: Option<Quarantined>,
    /// Records found waiting from an earlier run.
    pub depth: u64,
}

fn rkey(seq: u64) -> [u8; 9] {
    let mut k = [K_RECORD; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn xkey(seq: u64) -> [u8; 9] {
    let mut k = [K_ASIDE; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn ckey(source: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(source.len() + 1);
    k.push(K_CHECKPOINT);
    k.extend_from_slice(source.as_bytes());
    k
}

pub(crate) fn seq_of(key: &[u8]) -> Option<u64> {
    if key.len() != 9 {
        return None;
    }
    Some(u64::from_be_bytes(key[1..].try_into().ok()?))
}

pub(crate) fn u64_of(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
}

/// The number of records a stored chunk holds, from its header alone; 1 when the header does
/// not parse. Opening, acknowledging and discarding all count with this one function, so the
/// counters stay consistent even for a damaged value.
pub(crate) fn chunk_len(v: &[u8]) -> u64 {
    if v.len() > CHUNK_HEADER && (v[0] == VALUE_CHUNK || v[0] == VALUE_LINES) {
        let n = u64::from(u32::from_be_bytes([v[9], v[10], v[11], v[12]]));
        if (1..=MAX_CHUNK_RECORDS as u64).contains(&n) {
            return n;
        }
    }
    1
}

/// The JSON bytes (without newlines) of a `VALUE_LINES` chunk of `n` records, from its zstd
/// frame's declared content size (no decompression); `None` if the frame header does not say.
fn lines_json_bytes(v: &[u8], n: u64) -> Option<usize> {
    let size = zstd::zstd_safe::get_frame_content_size(v.get(CHUNK_HEADER..)?).ok()??;
    usize::try_from(size.checked_sub(n)?).ok()
}

/// The append time in a value's header (both formats).
fn appended_ms_of(v: &[u8]) -> Option<u64> {
    v.get(1..SINGLE_HEADER).and_then(u64_of)
}

/// The last sequence number of the chunk at `first` holding `n` records.
pub(crate) fn chunk_last(first: u64, n: u64) -> u64 {
    first.saturating_add(n.saturating_sub(1))
}

/// How many records of the chunk `first ..= first + n - 1` are still in the queue (`> acked`).
pub(crate) fn live(first: u64, n: u64, acked: u64) -> u64 {
    let last = chunk_last(first, n);
    if last <= acked {
        0
    } else {
        last - first.max(acked.saturating_add(1)) + 1
    }
}

fn zstd_err(e: std::io::Error) -> BufferError {
    BufferError::Storage(format!("zstd: {e}"))
}

/// A chunk read back that cannot be decoded: removed and reported as loss.
struct Corrupt {
    key: Vec<u8>,
    first: Option<u64>,
    n: u64,
    len: u64,
}

pub(crate) fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// Errors that are not damage to our files: quarantining would not help and could hide a
/// misconfiguration (permissions, a full or read-only disk).
/// Any error the operating system reports (EIO, EDQUOT, EMFILE, ENOSPC, EACCES, ...) is one of
/// these (invariant 9): only sled's own finding of damage (corruption, a panic, a file cut
/// short) is a reason to move the backlog aside.
pub(crate) fn is_environment_error(e: &sled::Error) -> bool {
    use std::io::ErrorKind::*;
    match e {
        sled::Error::Io(io) => {
            io.raw_os_error().is_some()
                || matches!(
                    io.kind(),
                    PermissionDenied | NotFound | StorageFull | ReadOnlyFilesystem | OutOfMemory
                )
        }
        _ => false,
    }
}

pub(crate) fn try_open_sled(dir: &Path) -> Result<sled::Db, sled::Error> {
    let dir = dir.to_path_buf();
    // sled 0.34 panics on some kinds of damage instead of returning an error.
    // sled's default page cache is 1 GiB; the agent must stay small on edge devices, and the
    // buffer is read once, front to back, so a small cache costs nothing. Every change is
    // flushed explicitly (invariant 1), so sled's own periodic flusher thread is not needed.
    let open = move || {
        sled::Config::new()
            .path(dir)
            .cache_capacity(SLED_CACHE_BYTES)
            .flush_every_ms(None)
            .open()
    };
    match std::panic::catch_unwind(open) {
        Ok(r) => r,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".to_string());
            Err(sled::Error::Unsupported(format!("sled panicked: {why}")))
        }
    }
}

impl Buffer {
    /// Opens (or creates) the buffer in `dir`. A damaged directory is moved aside and replaced
    /// by a fresh one (see [`OpenReport::quarantined`]); a directory locked by another process
    /// is an error.
    pub fn open(
        dir: &Path,
        opts: BufferOptions,
        id: HostIdentity,
    ) -> Result<(Buffer, OpenReport), BufferError> {
        if let Some(parent) = dir.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                BufferError::Storage(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let mut report = OpenReport::default();
        let db = match try_open_sled(dir) {
            Ok(db) => db,
            Err(e) if is_lock_error(&e) => {
                return Err(BufferError::Locked {
                    path: dir.display().to_string(),
                });
            }
            Err(e) if is_environment_error(&e) => {
                return Err(BufferError::Storage(format!(
                    "cannot open {}: {e}",
                    dir.display()
                )));
            }
            Err(e) => {
                let aside = quarantine_name(dir);
                tracing::error!(
                    dir = %dir.display(), aside = %aside.display(), error = %e,
                    "buffer cannot be opened; moving it aside and starting a fresh one"
                );
                std::fs::rename(dir, &aside).map_err(|re| {
                    BufferError::Storage(format!(
                        "cannot open {} ({e}) and cannot move it aside to {}: {re}",
                        dir.display(),
                        aside.display()
                    ))
                })?;
                report.quarantined = Some(Quarantined {
                    path: aside.display().to_string(),
                    error: e.to_string(),
                });
                try_open_sled(dir).map_err(|e| {
                    BufferError::Storage(format!("cannot create {}: {e}", dir.display()))
                })?
            }
        };
        let tree = db.open_tree(TREE)?;

        // Recover the counters with a scan of keys and chunk headers; chunks are decompressed
        // lazily by read_from.
        let acked = tree.get(META_ACKED)?.and_then(|v| u64_of(&v)).unwrap_or(0);
        let mut bytes = 0u64;
        let mut count = 0u64;
        let mut last_seq = 0u64;
        let mut bad_keys = Vec::new();
        for item in tree.scan_prefix([K_RECORD]) {
            let (k, v) = item?;
            match seq_of(&k) {
                Some(first) => {
                    let n = chunk_len(&v);
                    bytes += v.len() as u64;
                    count += live(first, n, acked);
                    last_seq = chunk_last(first, n);
                }
                None => bad_keys.push(k),
            }
        }
        let mut set_aside = 0u64;
        let mut set_aside_bytes = 0u64;
        let mut last_aside = 0u64;
        for item in tree.scan_prefix([K_ASIDE]) {
            let (k, v) = item?;
            set_aside += 1;
            set_aside_bytes += v.len() as u64;
            last_aside = last_aside.max(seq_of(&k).unwrap_or(0));
        }
        bytes += set_aside_bytes;
        let stored_next = tree.get(META_NEXT_SEQ)?.and_then(|v| u64_of(&v));
        let mut loss: PendingLoss = match tree.get(META_LOSS)? {
            Some(v) => serde_json::from_slice(&v).unwrap_or_else(|e| {
                tracing::error!(error = %e, "pending-loss entry unreadable; reporting it as corruption");
                PendingLoss {
                    corrupt: 1,
                    ..PendingLoss::default()
                }
            }),
            None => PendingLoss::default(),
        };
        let fresh = stored_next.is_none() && last_seq == 0;
        let next_seq = if fresh {
            // Invariant 3: above anything an earlier buffer on this host can have reached.
            now_us().max(1)
        } else {
            stored_next
                .unwrap_or(1)
                .max(last_seq.saturating_add(1))
                .max(last_aside.saturating_add(1))
                .max(acked.saturating_add(1))
        };
        if !bad_keys.is_empty() {
            loss.corrupt += bad_keys.len() as u64;
        }
        if let Some(q) = &report.quarantined {
            loss.quarantined.push(q.clone());
        }
        let mut batch = sled::Batch::default();
        batch.insert(META_NEXT_SEQ, &next_seq.to_be_bytes());
        for k in &bad_keys {
            batch.remove(k);
        }
        if !loss.is_empty() {
            batch.insert(META_LOSS, serde_json::to_vec(&loss).unwrap_or_default());
        }
        tree.apply_batch(batch)?;
        db.flush()?;

        report.depth = count;
        let last = next_seq - 1;
        let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(zstd_err)?;
        compressor
            .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .map_err(zstd_err)?;
        let decompressor = zstd::bulk::Decompressor::new().map_err(zstd_err)?;
        let inner = Inner {
            db,
            tree,
            opts,
            id,
            state: Mutex::new(State {
                next_seq,
                bytes,
                count,
                acked,
                set_aside,
                set_aside_bytes,
                loss,
            }),
            acked: AtomicU64::new(acked),
            compressor: Mutex::new(compressor),
            decompressor: Mutex::new(decompressor),
            written: AtomicU64::new(last),
            durable: AtomicU64::new(last),
            flush_lock: Mutex::new(()),
            closed: AtomicBool::new(false),
            space: tokio::sync::Notify::new(),
            appended: tokio::sync::Notify::new(),
            appended_total: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
            corrupt_total: AtomicU64::new(bad_keys.len() as u64),
            rejected_total: AtomicU64::new(0),
            waiting_appends: AtomicU64::new(0),
            discarded_total: AtomicU64::new(0),
            resent_total: AtomicU64::new(0),
            storage_errors_total: AtomicU64::new(0),
            failing: Mutex::new(None),
        };
        let buffer = Buffer {
            inner: Arc::new(inner),
        };
        buffer.report_loss()?;
        Ok((buffer, report))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave sled inconsistent (batches are atomic);
        // keep going with the counters as they are.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Encodes records (compact JSON) as one chunk value: ndjson ([`VALUE_LINES`]), or
    /// length-prefixed ([`VALUE_CHUNK`]) if a record holds a newline byte and so could not be
    /// told apart from the next one in ndjson.
    fn encode_chunk<J: AsRef<[u8]>>(
        &self,
        jsons: &[J],
        appended_ms: u64,
    ) -> Result<Vec<u8>, BufferError> {
        debug_assert!(!jsons.is_empty() && jsons.len() <= MAX_CHUNK_RECORDS);
        let lines = !jsons.iter().any(|j| j.as_ref().contains(&b'\n'));
        let size: usize = jsons.iter().map(|j| 4 + j.as_ref().len()).sum();
        let mut payload = Vec::with_capacity(size);
        for j in jsons {
            let j = j.as_ref();
            if lines {
                payload.extend_from_slice(j);
                payload.push(b'\n');
                continue;
            }
            let len = u32::try_from(j.len())
                .map_err(|_| BufferError::Storage("record larger than 4 GiB".into()))?;
            payload.extend_from_slice(&len.to_be_bytes());
            payload.extend_from_slice(j);
        }
        let frame = self
            .inner
            .compressor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .compress(&payload)
            .map_err(zstd_err)?;
        let mut v = Vec::with_capacity(CHUNK_HEADER + frame.len());
        v.push(if lines { VALUE_LINES } else { VALUE_CHUNK });
        v.extend_from_slice(&appended_ms.to_be_bytes());
        v.extend_from_slice(&(jsons.len() as u32).to_be_bytes());
        v.extend_from_slice(&frame);
        Ok(v)
    }

    /// Encodes records as chunks of at most [`MAX_CHUNK_RECORDS`]: (value, records in it).
    fn encode_chunks<J: AsRef<[u8]>>(
        &self,
        jsons: &[J],
        appended_ms: u64,
    ) -> Result<Vec<(Vec<u8>, u64)>, BufferError> {
        jsons
            .chunks(MAX_CHUNK_RECORDS)
            .map(|c| Ok((self.encode_chunk(c, appended_ms)?, c.len() as u64)))
            .collect()
    }

    /// Decodes a chunk (or an earlier one-record value): its append time and its records'
    /// JSON in sequence order; `None` if it is not one (corrupt).
    fn decode_chunk(&self, v: &[u8]) -> Option<(u64, Vec<Vec<u8>>)> {
        decode_value(&self.inner.decompressor, v).ok()
    }

    /// Waits until every write applied so far with a sequence number `<= seq` is on disk;
    /// concurrent callers share one flush (group commit).
    fn flush_through(&self, seq: u64) -> Result<(), BufferError> {
        if self.inner.durable.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let _leader = self
            .inner
            .flush_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if self.inner.durable.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        if !self.inner.opts.flush_delay.is_zero() {
            std::thread::sleep(self.inner.opts.flush_delay);
        }
        self.flush_locked()
    }

    /// Flushes everything applied so far, whatever its kind (deletions, meta).
    fn flush_now(&self) -> Result<(), BufferError> {
        let _leader = self
            .inner
            .flush_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.flush_locked()
    }

    fn flush_locked(&self) -> Result<(), BufferError> {
        let target = self.inner.written.load(Ordering::Acquire);
        let r = self.inner.db.flush();
        self.note(r)?;
        self.inner.durable.fetch_max(target, Ordering::AcqRel);
        self.storage_recovered();
        Ok(())
    }

    /// Applies a batch to the tree, noting a failure (invariant 10).
    fn apply(&self, batch: sled::Batch) -> Result<(), BufferError> {
        let r = self.inner.tree.apply_batch(batch);
        self.note(r)
    }

    /// Passes a storage result on, remembering a failure (invariant 10).
    fn note<T>(&self, r: Result<T, sled::Error>) -> Result<T, BufferError> {
        r.map_err(|e| {
            self.inner
                .storage_errors_total
                .fetch_add(1, Ordering::Relaxed);
            let mut f = self.inner.failing.lock().unwrap_or_else(|p| p.into_inner());
            match f.as_mut() {
                Some((_, failure)) => failure.failed_operations += 1,
                None => {
                    tracing::error!(error = %e, "buffer storage failed");
                    *f = Some((
                        std::time::Instant::now(),
                        StorageFailure {
                            error: e.to_string(),
                            since_ms: now_ms(),
                            failed_operations: 1,
                            recovered_ms: None,
                        },
                    ));
                }
            }
            BufferError::from(e)
        })
    }

    /// After a successful flush: a failure that was going on is over; it goes to the trail
    /// with the next loss report.
    fn storage_recovered(&self) {
        let over = self
            .inner
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some((_, mut failure)) = over {
            failure.recovered_ms = Some(now_ms());
            tracing::warn!(
                error = %failure.error,
                failed_operations = failure.failed_operations,
                "buffer storage works again"
            );
            let mut st = self.state();
            st.loss.storage_failure = Some(failure);
            let mut batch = sled::Batch::default();
            batch.insert(META_LOSS, serde_json::to_vec(&st.loss).unwrap_or_default());
            // Persisted with the next flush; reported as soon as there is room.
            if self.inner.tree.apply_batch(batch).is_ok() {
                let _ = self.write_loss_locked(&mut st, now_ms());
            }
        }
    }

    /// Writes have been failing since this failure, if they are (invariant 10).
    pub fn storage_failure(&self) -> Option<StorageFailure> {
        self.inner
            .failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, f)| f.clone())
    }

    /// Whether writes have been failing for longer than `stuck_after` (invariant 10): the
    /// first error if so.
    pub fn stuck(&self) -> Option<String> {
        let f = self.inner.failing.lock().unwrap_or_else(|p| p.into_inner());
        match f.as_ref() {
            Some((since, failure)) if since.elapsed() >= self.inner.opts.stuck_after => {
                Some(failure.error.clone())
            }
            _ => None,
        }
    }

    /// While writes are failing: one small write and a flush, to find out whether the store
    /// works again (so an idle agent does not count as stuck after a passing error).
    pub fn probe(&self) -> Result<(), BufferError> {
        if self
            .inner
            .failing
            .lock()
            .map(|f| f.is_none())
            .unwrap_or(false)
        {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        batch.insert(META_PROBE, &now_ms().to_be_bytes());
        self.apply(batch)?;
        self.flush_now()
    }

    /// Whether `extra` bytes fit under `max_bytes` (the side tree counts, invariant 6); an
    /// append into an empty queue always does, so that an oversized one cannot wedge it.
    fn fits(&self, state: &State, extra: u64) -> bool {
        state.bytes <= state.set_aside_bytes
            || state.bytes.saturating_add(extra) <= self.inner.opts.max_bytes
    }

    /// Encodes the pending-loss records as one chunk (to go at `state.next_seq`). Returns the
    /// value and its record count; nothing is changed.
    fn loss_chunk(&self, state: &State, now: u64) -> Result<Option<(Vec<u8>, u64)>, BufferError> {
        if state.loss.is_empty() {
            return Ok(None);
        }
        let records = state.loss.records(
            &self.inner.id,
            self.inner.opts.full_policy,
            self.inner.opts.max_bytes,
        );
        if records.is_empty() {
            return Ok(None);
        }
        let jsons: Vec<Vec<u8>> = records.iter().map(Record::to_json).collect();
        Ok(Some((self.encode_chunk(&jsons, now)?, jsons.len() as u64)))
    }

    /// One append attempt, without waiting (blocking I/O: call from a blocking context).
    pub fn try_append(
        &self,
        records: &[Record],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<Appended, BufferError> {
        let jsons: Vec<Vec<u8>> = records.iter().map(Record::to_json).collect();
        self.try_append_json(&jsons, checkpoint)
    }

    /// [`Buffer::try_append`] of records already serialized: each one a record's compact JSON
    /// ([`Record::to_json`]), as the collector will parse it.
    pub fn try_append_json(
        &self,
        records: &[Vec<u8>],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<Appended, BufferError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(BufferError::Closed);
        }
        let now = now_ms();
        // Encoded before taking the state lock, so that concurrent appenders compress in
        // parallel with each other's sled work.
        let chunks = self.encode_chunks(records, now)?;
        let new_bytes: u64 = chunks.iter().map(|(v, _)| v.len() as u64).sum();
        let mut st = self.state();
        let mut loss = self.loss_chunk(&st, now)?;
        let mut loss_bytes = loss.as_ref().map_or(0, |(v, _)| v.len() as u64);
        if loss.is_some() && !self.fits(&st, new_bytes + loss_bytes) {
            // Report the loss later (after the next ack) rather than refuse these records.
            loss = None;
            loss_bytes = 0;
        }
        if !records.is_empty() && !self.fits(&st, new_bytes + loss_bytes) {
            return match self.inner.opts.full_policy {
                FullPolicy::Block => Ok(Appended::Full),
                FullPolicy::DropNewest => {
                    let (outcome, wrote) = self.drop_locked(&mut st, records.len() as u64, now)?;
                    drop(st);
                    self.flush_now()?;
                    if wrote {
                        self.inner.appended.notify_waiters();
                    }
                    Ok(outcome)
                }
            };
        }
        let mut batch = sled::Batch::default();
        let mut seq = st.next_seq;
        let mut added = 0u64;
        for (v, n) in loss.into_iter().chain(chunks) {
            batch.insert(&rkey(seq), v);
            seq += n;
            added += n;
        }
        let n_loss = added - records.len() as u64;
        if n_loss > 0 {
            batch.remove(META_LOSS);
        }
        if let Some(cp) = checkpoint {
            batch.insert(ckey(&cp.source), cp.state.as_slice());
        }
        // No `next_seq` write: the chunk keys and headers carry the numbering (see open).
        self.apply(batch)?;
        let range = (!records.is_empty()).then(|| (seq - records.len() as u64, seq - 1));
        st.next_seq = seq;
        st.bytes += new_bytes + loss_bytes;
        st.count += added;
        if n_loss > 0 {
            st.loss = PendingLoss::default();
        }
        let last = seq - 1;
        self.inner.written.fetch_max(last, Ordering::AcqRel);
        drop(st);
        if checkpoint.is_some() && added == 0 {
            self.flush_now()?;
        } else {
            self.flush_through(last)?;
        }
        if added > 0 {
            self.inner
                .appended_total
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            self.inner.appended.notify_waiters();
        }
        Ok(Appended::Stored(range))
    }

    /// drop_newest: consume `n` sequence numbers, record the loss durably, and if the loss
    /// report itself fits, write it at once.
    fn drop_locked(
        &self,
        st: &mut MutexGuard<'_, State>,
        n: u64,
        now: u64,
    ) -> Result<(Appended, bool), BufferError> {
        let first = st.next_seq;
        let last = first + n - 1;
        let mut loss = st.loss.clone();
        loss.dropped += n;
        let mut truncated = loss.ranges_truncated;
        PendingLoss::add_range(&mut loss.dropped_ranges, &mut truncated, (first, last));
        loss.ranges_truncated = truncated;
        let mut batch = sled::Batch::default();
        batch.insert(META_NEXT_SEQ, &(last + 1).to_be_bytes());
        batch.insert(META_LOSS, serde_json::to_vec(&loss).unwrap_or_default());
        self.apply(batch)?;
        st.next_seq = last + 1;
        st.loss = loss;
        self.inner.dropped_total.fetch_add(n, Ordering::Relaxed);
        self.inner.written.fetch_max(last, Ordering::AcqRel);
        tracing::warn!(
            dropped = n,
            first,
            last,
            "buffer full (drop_newest): records dropped"
        );
        let wrote = self.write_loss_locked(st, now)?;
        Ok((Appended::Dropped((first, last)), wrote))
    }

    /// Writes the pending loss as records if it fits. The caller flushes.
    fn write_loss_locked(&self, st: &mut State, now: u64) -> Result<bool, BufferError> {
        let Some((value, n)) = self.loss_chunk(st, now)? else {
            return Ok(false);
        };
        let bytes = value.len() as u64;
        if !self.fits(st, bytes) {
            return Ok(false);
        }
        let mut batch = sled::Batch::default();
        batch.insert(&rkey(st.next_seq), value);
        batch.remove(META_LOSS);
        self.apply(batch)?;
        let seq = st.next_seq + n;
        st.next_seq = seq;
        st.bytes += bytes;
        st.count += n;
        st.loss = PendingLoss::default();
        self.inner.written.fetch_max(seq - 1, Ordering::AcqRel);
        Ok(true)
    }

    /// Writes pending loss records now if there is room, and flushes.
    pub fn report_loss(&self) -> Result<(), BufferError> {
        let mut st = self.state();
        let wrote = self.write_loss_locked(&mut st, now_ms())?;
        drop(st);
        self.flush_now()?;
        if wrote {
            self.inner.appended.notify_waiters();
        }
        Ok(())
    }

    /// Appends `records` and `checkpoint` atomically and durably. Under `block` waits for space;
    /// under `drop_newest` returns [`Appended::Dropped`] when full.
    pub async fn append(
        &self,
        records: Vec<Record>,
        checkpoint: Option<Checkpoint>,
    ) -> Result<Appended, BufferError> {
        let jsons = records.iter().map(Record::to_json).collect();
        drop(records);
        self.append_json(jsons, checkpoint).await
    }

    /// [`Buffer::append`] of records already serialized (see [`Buffer::try_append_json`]).
    pub async fn append_json(
        &self,
        records: Vec<Vec<u8>>,
        checkpoint: Option<Checkpoint>,
    ) -> Result<Appended, BufferError> {
        let records = Arc::new(records);
        let checkpoint = Arc::new(checkpoint);
        loop {
            let space = self.inner.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            let this = self.clone();
            let (r, c) = (records.clone(), checkpoint.clone());
            let outcome =
                tokio::task::spawn_blocking(move || this.try_append_json(&r, c.as_ref().as_ref()))
                    .await
                    .map_err(|e| BufferError::Storage(format!("append task failed: {e}")))??;
            match outcome {
                Appended::Full => {
                    if self.inner.closed.load(Ordering::Acquire) {
                        return Err(BufferError::Closed);
                    }
                    self.inner.waiting_appends.fetch_add(1, Ordering::AcqRel);
                    // Decrements even if this future is dropped while waiting.
                    let _waiting = WaitingGuard(&self.inner.waiting_appends);
                    space.await;
                }
                other => return Ok(other),
            }
        }
    }

    /// Up to `max_records` records (and about `max_bytes` of JSON, at least one record) with
    /// sequence numbers `>= from`, in order, durable ones only. Corrupt values met on the way
    /// are removed and reported as loss (there is then a hole in the sequence).
    pub fn read_from(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, BufferError> {
        let batch = self.read_segments(from, max_records, max_bytes, false)?;
        let mut out = Vec::with_capacity(batch.len());
        for s in batch.segments {
            if let SegmentData::Records(jsons) = s.data {
                out.extend((s.first..).zip(jsons).map(|(seq, json)| Entry {
                    seq,
                    appended_ms: s.appended_ms,
                    json,
                }));
            }
        }
        Ok(out)
    }

    /// The head of the queue as the shipper sends it: the records [`Buffer::read_from`]`(0,
    /// max_records, max_bytes)` would give, with every chunk the batch takes whole and stored
    /// as ndjson left as it is stored (not decompressed) when `stored` is set; see
    /// `ship_batch` for when a chunk is decoded instead.
    pub fn read_batch(
        &self,
        max_records: usize,
        max_bytes: usize,
        stored: bool,
    ) -> Result<Batch, BufferError> {
        self.read_segments(0, max_records, max_bytes, stored)
    }

    fn read_segments(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        stored: bool,
    ) -> Result<Batch, BufferError> {
        let durable = self.inner.durable.load(Ordering::Acquire);
        let start = from.max(self.inner.acked.load(Ordering::Acquire).saturating_add(1));
        let mut out = Batch::default();
        let mut records = 0usize;
        let mut bytes = 0usize;
        let mut corrupt = Vec::new();
        // The chunk holding `start` begins at or before it.
        let begin = match self.inner.tree.range(rkey(0)..=rkey(start)).next_back() {
            Some(item) => {
                let (k, _) = item?;
                if seq_of(&k).is_some() {
                    k.to_vec()
                } else {
                    rkey(start).to_vec()
                }
            }
            None => rkey(start).to_vec(),
        };
        for item in self.inner.tree.range(begin..=rkey(u64::MAX).to_vec()) {
            let (k, v) = item?;
            let Some(first) = seq_of(&k) else {
                corrupt.push(Corrupt {
                    key: k.to_vec(),
                    first: None,
                    n: 0,
                    len: v.len() as u64,
                });
                continue;
            };
            if first > durable {
                break;
            }
            let n = chunk_len(&v);
            let last = chunk_last(first, n);
            if last < start {
                continue;
            }
            let whole =
                (stored && v.first() == Some(&VALUE_LINES) && first >= start && last <= durable)
                    .then(|| lines_json_bytes(&v, n))
                    .flatten();
            if let Some(json_bytes) = whole {
                let fits = records.saturating_add(n as usize) <= max_records
                    && bytes + json_bytes <= max_bytes;
                if !fits && records > 0 {
                    // The batch ends at this chunk rather than inside it: cutting a chunk
                    // would cost a decompression now and two compressions (this batch's part
                    // and the next one's), for a batch that is as good as full anyway.
                    out.full = true;
                    break;
                }
            }
            if let Some(json_bytes) = whole
                && records.saturating_add(n as usize) <= max_records
                && bytes + json_bytes <= max_bytes
            {
                records += n as usize;
                bytes += json_bytes;
                out.segments.push(Segment {
                    first,
                    n,
                    appended_ms: appended_ms_of(&v).unwrap_or(0),
                    json_bytes,
                    data: SegmentData::Stored(v),
                });
                if records >= max_records {
                    out.full = true;
                    break;
                }
                continue;
            }
            let Some((appended_ms, jsons)) = self.decode_chunk(&v) else {
                corrupt.push(Corrupt {
                    key: k.to_vec(),
                    first: Some(first),
                    n,
                    len: v.len() as u64,
                });
                continue;
            };
            let mut taken = Vec::new();
            let mut taken_first = None;
            let mut taken_bytes = 0;
            let mut stop = false;
            for (seq, json) in (first..).zip(jsons) {
                if seq < start {
                    continue;
                }
                if seq > durable {
                    stop = true;
                    break;
                }
                if records > 0 && bytes + json.len() > max_bytes {
                    (stop, out.full) = (true, true);
                    break;
                }
                taken_first.get_or_insert(seq);
                bytes += json.len();
                taken_bytes += json.len();
                records += 1;
                taken.push(json);
                if records >= max_records {
                    (stop, out.full) = (true, true);
                    break;
                }
            }
            if let Some(first) = taken_first {
                out.segments.push(Segment {
                    first,
                    n: taken.len() as u64,
                    appended_ms,
                    json_bytes: taken_bytes,
                    data: SegmentData::Records(taken),
                });
            }
            if stop {
                break;
            }
        }
        if !corrupt.is_empty() {
            self.discard_corrupt(corrupt)?;
        }
        Ok(out)
    }

    fn discard_corrupt(&self, corrupt: Vec<Corrupt>) -> Result<(), BufferError> {
        let mut st = self.state();
        let mut loss = st.loss.clone();
        let mut batch = sled::Batch::default();
        let mut freed = 0;
        let mut lost = 0;
        let mut truncated = loss.ranges_truncated;
        for c in &corrupt {
            tracing::error!(first_seq = ?c.first, records = c.n, "corrupt buffer entry skipped");
            batch.remove(c.key.as_slice());
            freed += c.len;
            match c.first {
                Some(first) => {
                    let n = live(first, c.n, st.acked);
                    if n > 0 {
                        let last = chunk_last(first, c.n);
                        PendingLoss::add_range(
                            &mut loss.corrupt_ranges,
                            &mut truncated,
                            (last + 1 - n, last),
                        );
                    }
                    lost += n;
                    st.count = st.count.saturating_sub(n);
                }
                // A key that is not a chunk key: one entry, not counted in the depth.
                None => lost += 1,
            }
        }
        loss.corrupt += lost;
        loss.ranges_truncated = truncated;
        batch.insert(META_LOSS, serde_json::to_vec(&loss).unwrap_or_default());
        // The removed keys may have been the highest: keep their numbers used.
        batch.insert(META_NEXT_SEQ, &st.next_seq.to_be_bytes());
        self.apply(batch)?;
        st.loss = loss;
        st.bytes = st.bytes.saturating_sub(freed);
        self.inner.corrupt_total.fetch_add(lost, Ordering::Relaxed);
        let wrote = self.write_loss_locked(&mut st, now_ms())?;
        drop(st);
        self.flush_now()?;
        self.inner.space.notify_waiters();
        if wrote {
            self.inner.appended.notify_waiters();
        }
        Ok(())
    }

    /// Deletes every record with a sequence number `<= commit` (the collector's commit point),
    /// then reports pending loss if there is now room. Returns the number of records that left
    /// the queue. A chunk only partly covered stays stored, its acknowledged records skipped.
    pub fn ack_up_to(&self, commit: u64) -> Result<u64, BufferError> {
        let mut st = self.state();
        if commit >= st.next_seq {
            return Err(BufferError::CommitBeyondEnd {
                commit,
                last: st.next_seq - 1,
            });
        }
        let mut batch = sled::Batch::default();
        let mut freed = 0u64;
        let mut removed = 0u64;
        let old = st.acked;
        let acked = old.max(commit);
        for item in self.inner.tree.range(rkey(0)..=rkey(commit)) {
            let (k, v) = item?;
            let Some(first) = seq_of(&k) else {
                batch.remove(k);
                freed += v.len() as u64;
                continue;
            };
            let n = chunk_len(&v);
            removed += live(first, n, old) - live(first, n, acked);
            if chunk_last(first, n) <= acked {
                batch.remove(k);
                freed += v.len() as u64;
            }
        }
        batch.insert(META_ACKED, &acked.to_be_bytes());
        self.apply(batch)?;
        st.acked = acked;
        self.inner.acked.store(acked, Ordering::Release);
        st.bytes = st.bytes.saturating_sub(freed);
        st.count = st.count.saturating_sub(removed);
        let wrote = self.write_loss_locked(&mut st, now_ms())?;
        drop(st);
        self.flush_now()?;
        self.inner.space.notify_waiters();
        if wrote {
            self.inner.appended.notify_waiters();
        }
        Ok(removed)
    }

    /// Moves the record `seq` out of the queue into the side tree, because the collector refuses
    /// it (it would otherwise block every later record forever), and records that as loss. When
    /// the side tree is full, the record leaves the queue without being kept (reported with
    /// `"kept": false`). Returns whether the record left the queue.
    pub fn set_aside(
        &self,
        seq: u64,
        error_code: &str,
        message: &str,
    ) -> Result<bool, BufferError> {
        let mut st = self.state();
        if seq <= st.acked {
            return Ok(false);
        }
        let Some(item) = self.inner.tree.range(rkey(0)..=rkey(seq)).next_back() else {
            return Ok(false);
        };
        let (key, value) = item?;
        let Some(first) = seq_of(&key) else {
            return Ok(false);
        };
        if chunk_last(first, chunk_len(&value)) < seq {
            return Ok(false);
        }
        // An undecodable chunk cannot be split; the next read removes and reports it.
        let Some((appended_ms, jsons)) = self.decode_chunk(&value) else {
            return Ok(false);
        };
        let idx = (seq - first) as usize;
        let mut batch = sled::Batch::default();
        batch.remove(&key);
        let mut kept = 0u64;
        // The records before it (still queued) under their first key, the ones after it under
        // the next key: the chunk without it.
        let lo = first.max(st.acked + 1);
        if lo < seq {
            let v = self.encode_chunk(&jsons[(lo - first) as usize..idx], appended_ms)?;
            kept += v.len() as u64;
            batch.insert(&rkey(lo), v);
        }
        for (i, (v, n)) in self
            .encode_chunks(&jsons[idx + 1..], appended_ms)?
            .into_iter()
            .enumerate()
        {
            let at = seq + 1 + i as u64 * MAX_CHUNK_RECORDS as u64;
            debug_assert!(n >= 1);
            kept += v.len() as u64;
            batch.insert(&rkey(at), v);
        }
        let aside = self.encode_chunk(&jsons[idx..=idx], appended_ms)?;
        let aside_len = aside.len() as u64;
        let keep = st.set_aside_bytes + aside_len <= self.inner.opts.set_aside_limit();
        let event_id = Some(&jsons[idx]).and_then(|json| {
            serde_json::from_slice::<serde_json::Value>(json)
                .ok()?
                .get("eventID")?
                .as_str()
                .map(str::to_string)
        });
        let mut loss = st.loss.clone();
        if loss.rejected.len() < MAX_REJECTED {
            let mut message = message.to_string();
            message.truncate(1000);
            loss.rejected.push(Rejected {
                seq,
                event_id,
                error_code: error_code.to_string(),
                message,
                kept: keep,
            });
        } else {
            loss.rejected_truncated += 1;
        }
        if keep {
            batch.insert(&xkey(seq), aside);
        } else {
            tracing::error!(
                seq,
                set_aside_bytes = st.set_aside_bytes,
                limit = self.inner.opts.set_aside_limit(),
                "side tree full: the refused record is not kept"
            );
            // Its number must stay used even if it was the highest.
            batch.insert(META_NEXT_SEQ, &st.next_seq.to_be_bytes());
        }
        batch.insert(META_LOSS, serde_json::to_vec(&loss).unwrap_or_default());
        self.apply(batch)?;
        st.loss = loss;
        st.bytes = st.bytes.saturating_sub(value.len() as u64) + kept;
        st.count = st.count.saturating_sub(1);
        if keep {
            st.bytes += aside_len;
            st.set_aside += 1;
            st.set_aside_bytes += aside_len;
        } else {
            self.inner.discarded_total.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.rejected_total.fetch_add(1, Ordering::Relaxed);
        let wrote = self.write_loss_locked(&mut st, now_ms())?;
        drop(st);
        self.flush_now()?;
        self.inner.space.notify_waiters();
        if wrote {
            self.inner.appended.notify_waiters();
        }
        Ok(true)
    }

    /// Removes a set-aside record the collector has now accepted (see "The side tree").
    /// Returns whether it was there.
    pub fn remove_set_aside(&self, seq: u64) -> Result<bool, BufferError> {
        let mut st = self.state();
        let key = xkey(seq);
        let Some(v) = self.inner.tree.get(key)? else {
            return Ok(false);
        };
        let mut batch = sled::Batch::default();
        batch.remove(&key);
        self.apply(batch)?;
        let len = v.len() as u64;
        st.bytes = st.bytes.saturating_sub(len);
        st.set_aside = st.set_aside.saturating_sub(1);
        st.set_aside_bytes = st.set_aside_bytes.saturating_sub(len);
        self.inner.resent_total.fetch_add(1, Ordering::Relaxed);
        drop(st);
        self.flush_now()?;
        self.inner.space.notify_waiters();
        Ok(true)
    }

    /// The records set aside (sequence number and JSON), for inspection, resending and tests.
    pub fn set_aside_records(&self) -> Result<Vec<Entry>, BufferError> {
        let mut out = Vec::new();
        for item in self.inner.tree.scan_prefix([K_ASIDE]) {
            let (k, v) = item?;
            if let (Some(seq), Some((appended_ms, jsons))) = (seq_of(&k), self.decode_chunk(&v)) {
                out.extend((seq..).zip(jsons).map(|(seq, json)| Entry {
                    seq,
                    appended_ms,
                    json,
                }));
            }
        }
        Ok(out)
    }

    /// The last checkpoint stored for `source`.
    pub fn get_checkpoint(&self, source: &str) -> Result<Option<Vec<u8>>, BufferError> {
        Ok(self.inner.tree.get(ckey(source))?.map(|v| v.to_vec()))
    }

    /// Resolves when an append (or loss report) may have added records.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.inner.appended.notified()
    }

    /// Refuses further appends and wakes every waiting appender (they get `Closed`).
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.space.notify_waiters();
        self.inner.appended.notify_waiters();
    }

    /// Lets appends in again after [`Buffer::close`] (used to write `AgentStop` last).
    pub fn reopen_for_final_records(&self) {
        self.inner.closed.store(false, Ordering::Release);
    }

    /// Records in the queue (cheap: no scan).
    pub fn depth(&self) -> u64 {
        self.state().count
    }

    /// Records appended since the buffer was opened (cheap).
    pub fn appended_total(&self) -> u64 {
        self.inner.appended_total.load(Ordering::Relaxed)
    }

    /// A snapshot of the counters.
    pub fn status(&self) -> BufferStatus {
        let st = self.state();
        let (oldest_seq, oldest_age_ms) = match self.inner.tree.scan_prefix([K_RECORD]).next() {
            Some(Ok((k, v))) => {
                let age = appended_ms_of(&v).map(|t| now_ms().saturating_sub(t));
                (seq_of(&k).map(|s| s.max(st.acked + 1)), age)
            }
            _ => (None, None),
        };
        BufferStatus {
            depth: st.count,
            bytes: st.bytes,
            max_bytes: self.inner.opts.max_bytes,
            full_policy: match self.inner.opts.full_policy {
                FullPolicy::Block => "block".into(),
                FullPolicy::DropNewest => "drop_newest".into(),
            },
            next_seq: st.next_seq,
            oldest_seq,
            oldest_age_ms,
            last_commit_point: (st.acked > 0).then_some(st.acked),
            set_aside: st.set_aside,
            set_aside_bytes: st.set_aside_bytes,
            set_aside_max_bytes: self.inner.opts.set_aside_limit(),
            set_aside_discarded_total: self.inner.discarded_total.load(Ordering::Relaxed),
            set_aside_resent_total: self.inner.resent_total.load(Ordering::Relaxed),
            storage_failure: self.storage_failure(),
            storage_errors_total: self.inner.storage_errors_total.load(Ordering::Relaxed),
            pending_loss: st.loss.clone(),
            appended_total: self.inner.appended_total.load(Ordering::Relaxed),
            dropped_total: self.inner.dropped_total.load(Ordering::Relaxed),
            corrupt_total: self.inner.corrupt_total.load(Ordering::Relaxed),
            rejected_total: self.inner.rejected_total.load(Ordering::Relaxed),
            waiting_appends: self.inner.waiting_appends.load(Ordering::Acquire),
        }
    }

    /// Flushes everything (clean shutdown).
    pub fn flush(&self) -> Result<(), BufferError> {
        self.flush_now()
    }

    /// The raw sled tree, for tests that damage entries on purpose.
    #[doc(hidden)]
    pub fn raw_tree(&self) -> &sled::Tree {
        &self.inner.tree
    }
}

struct WaitingGuard<'a>(&'a AtomicU64);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Decodes a stored value (a chunk, or an earlier one-record value): its append time and its
/// records' JSON in sequence order, or why it is not one. The one decoder, shared with the
/// offline tools (`buffer_tools`), so that they judge a value exactly as the agent does.
pub(crate) fn decode_value(
    decompressor: &Mutex<zstd::bulk::Decompressor<'static>>,
    v: &[u8],
) -> Result<(u64, Vec<Vec<u8>>), String> {
    let appended_ms = appended_ms_of(v).ok_or("value shorter than its header")?;
    let mut d = decompressor.lock().unwrap_or_else(|p| p.into_inner());
    match v[0] {
        VALUE_SINGLE if v.len() > SINGLE_HEADER => {
            let json = d
                .decompress(&v[SINGLE_HEADER..], MAX_DECODED)
                .map_err(|e| format!("zstd frame does not decode: {e}"))?;
            Ok((appended_ms, vec![json]))
        }
        VALUE_LINES if v.len() > CHUNK_HEADER => {
            let n = declared_len(v)?;
            let payload = d
                .decompress(&v[CHUNK_HEADER..], MAX_CHUNK_DECODED)
                .map_err(|e| format!("zstd frame does not decode: {e}"))?;
            drop(d);
            let body = payload
                .strip_suffix(b"\n")
                .ok_or("the last record does not end with a newline")?;
            let out: Vec<Vec<u8>> = body.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
            if out.len() != n {
                return Err(format!(
                    "frame holds {} records, header declares {n}",
                    out.len()
                ));
            }
            Ok((appended_ms, out))
        }
        VALUE_CHUNK if v.len() > CHUNK_HEADER => {
            let n = declared_len(v)?;
            let payload = d
                .decompress(&v[CHUNK_HEADER..], MAX_CHUNK_DECODED)
                .map_err(|e| format!("zstd frame does not decode: {e}"))?;
            drop(d);
            let mut out = Vec::with_capacity(n);
            let mut rest = payload.as_slice();
            while rest.len() >= 4 {
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let json = rest.get(4..4 + len).ok_or_else(|| {
                    format!("record {} runs past the end of the frame", out.len())
                })?;
                out.push(json.to_vec());
                rest = &rest[4 + len..];
            }
            if !rest.is_empty() {
                return Err("stray bytes after the last record".into());
            }
            if out.len() != n {
                return Err(format!(
                    "frame holds {} records, header declares {n}",
                    out.len()
                ));
            }
            Ok((appended_ms, out))
        }
        VALUE_SINGLE | VALUE_CHUNK | VALUE_LINES => Err("value shorter than its header".into()),
        other => Err(format!("unknown value format 0x{other:02x}")),
    }
}

/// The record count a chunk's header declares, if it is in range.
fn declared_len(v: &[u8]) -> Result<usize, String> {
    let n = chunk_len(v) as usize;
    let declared = u32::from_be_bytes([v[9], v[10], v[11], v[12]]);
    if n as u32 != declared {
        return Err(format!(
            "header declares {declared} records (1..={MAX_CHUNK_RECORDS} allowed)"
        ));
    }
    Ok(n)
}

fn quarantine_name(dir: &Path) -> PathBuf {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "buffer".to_string());
    let mut candidate = dir.with_file_name(format!("{name}.quarantined-{stamp}"));
    let mut n = 1;
    while candidate.exists() {
        candidate = dir.with_file_name(format!("{name}.quarantined-{stamp}-{n}"));
        n += 1;
    }
    candidate
}

fn sink_result(r: Result<Appended, BufferError>) -> Result<(), SinkError> {
    match r {
        Ok(Appended::Stored(_)) => Ok(()),
        Ok(Appended::Dropped((first, last))) => Err(SinkError::Dropped {
            dropped: last - first + 1,
        }),
        Ok(Appended::Full) => Err(SinkError::Storage("buffer full".into())),
        Err(BufferError::Closed) => Err(SinkError::Closed),
        Err(e) => Err(SinkError::Storage(e.to_string())),
    }
}

impl RecordSink for Buffer {
    fn append(
        &self,
        records: Vec<Record>,
        checkpoint: Option<Checkpoint>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move { sink_result(Buffer::append(self, records, checkpoint).await) })
    }

    fn append_json(
        &self,
        records: Vec<Vec<u8>>,
        checkpoint: Option<Checkpoint>,
    ) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move { sink_result(Buffer::append_json(self, records, checkpoint).await) })
    }

    fn checkpoint(&self, source: &str) -> Option<Vec<u8>> {
        self.get_checkpoint(source).ok().flatten()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::Value;

    /// The identity the buffer tests (and `buffer_tools`' tests) write records as.
    pub(crate) fn id() -> HostIdentity {
        HostIdentity {
            host: "test-host".into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            domain: "onprem.internal".into(),
            partition: "aws".into(),
        }
    }

    fn opts(max_bytes: u64, full_policy: FullPolicy) -> BufferOptions {
        BufferOptions {
            max_bytes,
            full_policy,
            flush_delay: Duration::ZERO,
            ..BufferOptions::default()
        }
    }

    fn open(dir: &Path, max: u64, policy: FullPolicy) -> (Buffer, OpenReport) {
        Buffer::open(dir, opts(max, policy), id()).unwrap()
    }

    fn rec(i: u64) -> Record {
        id().agent_record("TestEvent", json!({ "i": i }))
    }

    fn json_of(e: &Entry) -> Value {
        serde_json::from_slice(&e.json).unwrap()
    }

    fn names(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| json_of(e)["eventName"].as_str().unwrap().to_string())
            .collect()
    }

    fn cp(source: &str, state: &str) -> Checkpoint {
        Checkpoint {
            source: source.into(),
            state: state.as_bytes().to_vec(),
        }
    }

    fn all(b: &Buffer) -> Vec<Entry> {
        b.read_from(0, usize::MAX, usize::MAX).unwrap()
    }

    /// Invariants 1-4: appended records come back in order, byte for byte, with strictly
    /// increasing sequence numbers, together with their checkpoint, after the buffer is
    /// dropped and reopened.
    #[test]
    fn append_read_in_order_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buffer");
        let (b, report) = open(&path, 1 << 20, FullPolicy::Block);
        assert_eq!(report.depth, 0);
        let first_batch: Vec<Record> = (0..3).map(rec).collect();
        let expect: Vec<Vec<u8>> = first_batch.iter().map(|r| r.to_json()).collect();
        let Appended::Stored(Some((a, z))) = b
            .try_append(&first_batch, Some(&cp("src", "offset=3")))
            .unwrap()
        else {
            panic!("not stored")
        };
        assert_eq!(z - a, 2);
        b.try_append(&[rec(3)], Some(&cp("src", "offset=4")))
            .unwrap();
        let entries = all(&b);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].seq, a);
        assert!(entries.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        for (e, want) in entries.iter().zip(&expect) {
            assert_eq!(&e.json, want);
        }
        assert_eq!(b.get_checkpoint("src").unwrap().unwrap(), b"offset=4");
        let next = b.status().next_seq;
        drop(b);

        let (b, report) = open(&path, 1 << 20, FullPolicy::Block);
        assert_eq!(report.depth, 4);
        assert_eq!(all(&b), entries);
        assert_eq!(b.get_checkpoint("src").unwrap().unwrap(), b"offset=4");
        assert_eq!(b.status().next_seq, next);
        let Appended::Stored(Some((s, _))) = b.try_append(&[rec(9)], None).unwrap() else {
            panic!()
        };
        assert_eq!(s, next, "numbering continues after a reopen");
        // read_from honours its limits and start point.
        let two = b.read_from(entries[1].seq, 2, usize::MAX).unwrap();
        assert_eq!(
            two.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![entries[1].seq, entries[2].seq]
        );
        let one = b.read_from(0, 100, 1).unwrap();
        assert_eq!(one.len(), 1, "at least one record even over max_bytes");
    }

    /// Invariant 2: a checkpoint-only append moves the checkpoint without adding records.
    #[test]
    fn checkpoint_only_append() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _) = open(&dir.path().join("b"), 1 << 20, FullPolicy::Block);
        assert_eq!(
            b.try_append(&[], Some(&cp("s", "7"))).unwrap(),
            Appended::Stored(None)
        );
        assert_eq!(b.get_checkpoint("s").unwrap().unwrap(), b"7");
        assert_eq!(b.status().depth, 0);
        assert_eq!(RecordSink::checkpoint(&b, "s"), Some(b"7".to_vec()));
        assert_eq!(RecordSink::checkpoint(&b, "other"), None);
    }

    /// Invariants 1 and 3 across a real crash: a child process appends, reports each
    /// acknowledged append, and aborts without any clean shutdown; everything acknowledged is
    /// there afterwards, and numbering continues above it.
    #[test]
    fn acknowledged_appends_survive_a_crash() {
        if let Ok(dir) = std::env::var("GT_BUFFER_CRASH_CHILD") {
            let (b, _) = open(Path::new(&dir), 1 << 24, FullPolicy::Block);
            for i in 0..50u64 {
                b.try_append(&[rec(i), rec(i + 1000)], Some(&cp("src", &i.to_string())))
                    .unwrap();
                println!("acked {i}");
            }
            std::process::abort();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buffer");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "buffer::tests::acknowledged_appends_survive_a_crash",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("GT_BUFFER_CRASH_CHILD", &path)
            .output()
            .unwrap();
        assert!(!out.status.success(), "the child must die by abort");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let acked = stdout.matches("acked ").count() as u64;
        assert_eq!(acked, 50, "child output: {stdout}");
        let (b, report) = open(&path, 1 << 24, FullPolicy::Block);
        assert_eq!(report.depth, acked * 2);
        let entries = all(&b);
        assert_eq!(entries.len() as u64, acked * 2);
        let is: Vec<u64> = entries
            .iter()
            .map(|e| json_of(e)["requestParameters"]["i"].as_u64().unwrap())
            .collect();
        let want: Vec<u64> = (0..acked).flat_map(|i| [i, i + 1000]).collect();
        assert_eq!(is, want);
        assert_eq!(b.get_checkpoint("src").unwrap().unwrap(), b"49");
        let last = entries.last().unwrap().seq;
        let Appended::Stored(Some((s, _))) = b.try_append(&[rec(0)], None).unwrap() else {
            panic!()
        };
        assert!(s > last);
    }

    /// Invariant 5: ack deletes exactly the records up to the commit point, and refuses a commit
    /// point beyond what was ever assigned.
    #[test]
    fn ack_deletes_only_up_to_the_commit_point() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        b.try_append(&(0..5).map(rec).collect::<Vec<_>>(), None)
            .unwrap();
        let entries = all(&b);
        let commit = entries[2].seq;
        assert_eq!(b.ack_up_to(commit).unwrap(), 3);
        assert_eq!(all(&b), entries[3..].to_vec());
        assert_eq!(b.status().last_commit_point, Some(commit));
        assert!(matches!(
            b.ack_up_to(entries[4].seq + 1),
            Err(BufferError::CommitBeyondEnd { .. })
        ));
        assert_eq!(all(&b).len(), 2);
        assert_eq!(b.ack_up_to(commit).unwrap(), 0, "acks are idempotent");
        drop(b);
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        assert_eq!(all(&b), entries[3..].to_vec());
        assert_eq!(b.status().last_commit_point, Some(commit));
    }

    fn fill(b: &Buffer) -> u64 {
        let mut n = 0;
        loop {
            match b.try_append(&[rec(n)], None).unwrap() {
                Appended::Stored(_) => n += 1,
                _ => return n,
            }
        }
    }

    /// Invariant 6 under `block`: a full buffer refuses without side effects, and an append
    /// waiting for space completes once the collector's commit frees it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn block_policy_waits_for_space() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _) = open(&dir.path().join("b"), 64 * 1024, FullPolicy::Block);
        let n = fill(&b);
        assert!(n > 10);
        let st = b.status();
        assert!(st.bytes <= st.max_bytes);
        assert_eq!(b.try_append(&[rec(0)], None).unwrap(), Appended::Full);
        assert_eq!(b.status().next_seq, st.next_seq, "nothing consumed");
        let b2 = b.clone();
        let waiter =
            tokio::spawn(async move { b2.append(vec![rec(999)], Some(cp("s", "x"))).await });
        while b.status().waiting_appends == 0 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "waits while the buffer is full");
        let head = all(&b);
        b.ack_up_to(head[head.len() / 2].seq).unwrap();
        let outcome = waiter.await.unwrap().unwrap();
        assert!(matches!(outcome, Appended::Stored(Some(_))));
        assert_eq!(b.get_checkpoint("s").unwrap().unwrap(), b"x");
        assert_eq!(b.status().dropped_total, 0);
        // Closing wakes a blocked appender with Closed.
        fill(&b);
        let b3 = b.clone();
        let blocked = tokio::spawn(async move { b3.append(vec![rec(1)], None).await });
        tokio::task::yield_now().await;
        b.close();
        assert!(matches!(blocked.await.unwrap(), Err(BufferError::Closed)));
    }

    /// Invariants 6 and 7 under `drop_newest`: the append is refused and counted, its sequence
    /// numbers consumed; the loss survives a reopen, and once there is room it becomes a
    /// `RecordsDropped` record with the count and the range.
    #[test]
    fn drop_newest_counts_and_reports_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (b, _) = open(&path, 64 * 1024, FullPolicy::DropNewest);
        fill(&b);
        let before = b.status().next_seq;
        // fill() already dropped one; drop two more in one call.
        let Appended::Dropped((f, l)) = b
            .try_append(&[rec(1), rec(2)], Some(&cp("s", "1")))
            .unwrap()
        else {
            panic!("not dropped")
        };
        assert_eq!((f, l), (before, before + 1));
        assert_eq!(
            b.get_checkpoint("s").unwrap(),
            None,
            "nothing of a dropped call is stored"
        );
        let st = b.status();
        assert_eq!(st.dropped_total, 3);
        assert_eq!(st.pending_loss.dropped, 3);
        assert_eq!(
            st.pending_loss.dropped_ranges,
            vec![(before - 1, before + 1)]
        );
        drop(b);

        let (b, _) = open(&path, 64 * 1024, FullPolicy::DropNewest);
        assert_eq!(
            b.status().pending_loss.dropped,
            3,
            "pending loss is durable"
        );
        let entries = all(&b);
        assert!(names(&entries).iter().all(|n| n == "TestEvent"));
        b.ack_up_to(entries.last().unwrap().seq).unwrap();
        let entries = all(&b);
        assert_eq!(names(&entries), vec!["RecordsDropped"]);
        let p = &json_of(&entries[0])["requestParameters"];
        assert_eq!(p["count"], 3);
        assert_eq!(p["seqRanges"], json!([[before - 1, before + 1]]));
        assert_eq!(entries[0].seq, before + 2, "the report follows the gap");
        assert!(b.status().pending_loss.dropped == 0);
        Record::from_json(&entries[0].json).unwrap();
    }

    /// Invariants 7 and 8: a corrupt value is skipped (not returned, not fatal), counted, and
    /// reported as `BufferCorruption` with its sequence number; its neighbours are intact.
    #[test]
    fn corrupt_entry_is_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        // One record per append: one chunk each.
        for i in 0..4 {
            b.try_append(&[rec(i)], None).unwrap();
        }
        let entries = all(&b);
        let bad = entries[1].seq;
        // Damage the stored value: valid header, garbage where the zstd frame was.
        let mut v = b.raw_tree().get(rkey(bad)).unwrap().unwrap().to_vec();
        let n = v.len();
        v[n - 4..].copy_from_slice(b"\xde\xad\xbe\xef");
        b.raw_tree().insert(rkey(bad), v).unwrap();
        b.raw_tree()
            .insert(rkey(entries[2].seq), &b"x"[..])
            .unwrap();
        b.flush().unwrap();
        drop(b);

        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        let got = all(&b);
        let seqs: Vec<u64> = got.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [entries[0].seq, entries[3].seq]);
        // The report is appended once the read has found the damage.
        let got = all(&b);
        assert_eq!(
            names(&got),
            vec!["TestEvent", "TestEvent", "BufferCorruption"]
        );
        let p = &json_of(&got[2])["requestParameters"];
        assert_eq!(p["corruptEntries"], 2);
        assert_eq!(p["seqRanges"], json!([[bad, bad + 1]]));
        assert_eq!(b.status().corrupt_total, 2);
        assert_eq!(b.status().depth, 3);
        // Reported once, not on every read.
        assert_eq!(all(&b).len(), 3);
    }

    /// Invariant 8: a directory sled cannot open is moved aside, a fresh buffer starts with
    /// numbers above the old ones, and the loss is reported.
    #[test]
    fn damaged_directory_is_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buffer");
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        b.try_append(&[rec(1)], None).unwrap();
        let old_last = all(&b)[0].seq;
        drop(b);
        // Damage every file sled keeps.
        for entry in std::fs::read_dir(&path).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                std::fs::write(&p, vec![0xA5u8; 4096]).unwrap();
            }
        }
        let (b, report) = open(&path, 1 << 20, FullPolicy::Block);
        let q = report.quarantined.expect("quarantined");
        assert!(q.path.contains("buffer.quarantined-"), "{}", q.path);
        assert!(Path::new(&q.path).exists());
        let got = all(&b);
        assert_eq!(names(&got), vec!["BufferCorruption"]);
        let p = &json_of(&got[0])["requestParameters"];
        assert_eq!(p["quarantined"][0]["path"], q.path.as_str());
        assert_eq!(p["lostUnknown"], true);
        assert!(got[0].seq > old_last);
        drop(b);
        // And the fresh buffer opens normally afterwards.
        let (_, report) = open(&path, 1 << 20, FullPolicy::Block);
        assert!(report.quarantined.is_none());
    }

    /// Only a lock held by another opener is an error; the directory is left alone.
    #[test]
    fn a_locked_buffer_is_an_error_not_a_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (_b, _) = open(&path, 1 << 20, FullPolicy::Block);
        let err = Buffer::open(&path, opts(1 << 20, FullPolicy::Block), id())
            .err()
            .expect("second open must fail");
        assert!(matches!(err, BufferError::Locked { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Invariant 5 and 7 for refused records: set aside (kept, out of the queue), reported.
    #[test]
    fn set_aside_keeps_the_record_and_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _) = open(&dir.path().join("b"), 1 << 20, FullPolicy::Block);
        b.try_append(&(0..3).map(rec).collect::<Vec<_>>(), None)
            .unwrap();
        let entries = all(&b);
        assert!(
            b.set_aside(entries[1].seq, "InvalidData", "bad field")
                .unwrap()
        );
        assert!(!b.set_aside(entries[1].seq, "InvalidData", "again").unwrap());
        let aside = b.set_aside_records().unwrap();
        assert_eq!(aside, vec![entries[1].clone()]);
        let got = all(&b);
        assert_eq!(got[..2], [entries[0].clone(), entries[2].clone()]);
        assert_eq!(names(&got)[2], "RecordsRejected");
        let p = &json_of(&got[2])["requestParameters"];
        assert_eq!(p["count"], 1);
        assert_eq!(p["records"][0]["seq"], entries[1].seq);
        assert_eq!(p["records"][0]["errorCode"], "InvalidData");
        assert_eq!(p["records"][0]["eventID"], json_of(&entries[1])["eventID"]);
    }

    /// The `RecordSink` face that sources use: stored means durable with its checkpoint;
    /// dropped means nothing of the call was stored and the loss was counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn record_sink_contract() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _) = open(&dir.path().join("b"), 64 * 1024, FullPolicy::DropNewest);
        let sink: Arc<dyn RecordSink> = Arc::new(b.clone());
        sink.append(vec![rec(1)], Some(cp("auth", "10")))
            .await
            .unwrap();
        assert_eq!(sink.checkpoint("auth"), Some(b"10".to_vec()));
        fill(&b);
        let err = sink
            .append(vec![rec(2), rec(3)], Some(cp("auth", "20")))
            .await
            .unwrap_err();
        assert!(matches!(err, SinkError::Dropped { dropped: 2 }), "{err}");
        assert_eq!(sink.checkpoint("auth"), Some(b"10".to_vec()));
        b.close();
        assert!(matches!(
            sink.append(vec![rec(4)], None).await.unwrap_err(),
            SinkError::Closed
        ));
    }

    /// Invariants 2, 5 and 6 for chunks: one append is one chunk; a partly acknowledged chunk
    /// stays stored but its acknowledged records are neither read nor counted, across reopen;
    /// it is deleted once fully acknowledged.
    #[test]
    fn partly_acknowledged_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        b.try_append(&(0..10).map(rec).collect::<Vec<_>>(), None)
            .unwrap();
        b.try_append(&(10..12).map(rec).collect::<Vec<_>>(), None)
            .unwrap();
        assert_eq!(b.raw_tree().scan_prefix([K_RECORD]).count(), 2);
        let e = all(&b);
        assert_eq!(e.len(), 12);
        assert_eq!(b.ack_up_to(e[3].seq).unwrap(), 4);
        assert_eq!(all(&b), e[4..].to_vec());
        assert_eq!(
            b.read_from(e[6].seq, 2, usize::MAX).unwrap(),
            e[6..8].to_vec()
        );
        assert_eq!(b.read_from(0, 1, usize::MAX).unwrap(), e[4..5].to_vec());
        let st = b.status();
        assert_eq!((st.depth, st.oldest_seq), (8, Some(e[4].seq)));
        drop(b);
        let (b, report) = open(&path, 1 << 20, FullPolicy::Block);
        assert_eq!(report.depth, 8);
        assert_eq!(all(&b), e[4..].to_vec());
        assert_eq!(b.status().bytes, st.bytes);
        // The first chunk goes once all of it is acknowledged; the second one stays.
        assert_eq!(b.ack_up_to(e[10].seq).unwrap(), 7);
        assert_eq!(b.raw_tree().scan_prefix([K_RECORD]).count(), 1);
        assert_eq!(all(&b), e[11..].to_vec());
        assert_eq!(b.status().depth, 1);
        assert_eq!(b.ack_up_to(e[11].seq).unwrap(), 1);
        let st = b.status();
        assert_eq!((st.depth, st.bytes, st.oldest_seq), (0, 0, None));
    }

    /// The shipper's read (`ship_batch`): the same records as `read_from`, whole ndjson chunks
    /// as stored, the rest (a chunk cut by the limits, partly acknowledged, or in the earlier
    /// length-prefixed format) decoded.
    #[test]
    fn read_batch_takes_whole_chunks_as_stored() {
        use crate::ship_batch::SegmentData;
        let dir = tempfile::tempdir().unwrap();
        let (b, _) = open(&dir.path().join("b"), 1 << 20, FullPolicy::Block);
        for a in 0..3 {
            b.try_append(&(a * 3..a * 3 + 3).map(rec).collect::<Vec<_>>(), None)
                .unwrap();
        }
        // A record holding a newline byte cannot be one ndjson line: stored length-prefixed.
        let odd = br#"{"eventName":"Odd","x":"a"}"#.to_vec();
        let with_newline = [odd[..10].to_vec(), b"\n".to_vec(), odd[10..].to_vec()].concat();
        b.try_append_json(std::slice::from_ref(&with_newline), None)
            .unwrap();
        let formats: Vec<u8> = b
            .raw_tree()
            .scan_prefix([K_RECORD])
            .map(|kv| kv.unwrap().1[0])
            .collect();
        assert_eq!(
            formats,
            [VALUE_LINES, VALUE_LINES, VALUE_LINES, VALUE_CHUNK]
        );
        let e = all(&b);
        assert_eq!(e[9].json, with_newline);
        let kinds = |batch: &Batch| -> Vec<(u64, u64, bool)> {
            batch
                .segments
                .iter()
                .map(|s| (s.first, s.n, matches!(s.data, SegmentData::Stored(_))))
                .collect()
        };
        let ndjson = |entries: &[Entry]| -> Vec<u8> {
            entries
                .iter()
                .flat_map(|e| [e.json.as_slice(), b"\n"].concat())
                .collect()
        };
        let s0 = e[0].seq;
        let whole = b.read_batch(100, usize::MAX, true).unwrap();
        assert_eq!(
            kinds(&whole),
            [
                (s0, 3, true),
                (s0 + 3, 3, true),
                (s0 + 6, 3, true),
                (s0 + 9, 1, false)
            ]
        );
        assert_eq!(whole.body(false).unwrap(), ndjson(&e));
        let z = whole.body(true).unwrap();
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), ndjson(&e));
        let json_bytes: usize = e.iter().map(|e| e.json.len()).sum();
        assert_eq!(whole.json_bytes(), json_bytes);
        assert!(!whole.full);
        // A record limit inside the second chunk: the batch ends before it, full.
        let cut = b.read_batch(5, usize::MAX, true).unwrap();
        assert_eq!(kinds(&cut), [(s0, 3, true)]);
        assert!(cut.full);
        // A limit inside the first chunk: it is decoded and cut.
        let first = b.read_batch(2, usize::MAX, true).unwrap();
        assert_eq!(kinds(&first), [(s0, 2, false)]);
        assert!(first.full);
        assert_eq!(first.body(false).unwrap(), ndjson(&e[..2]));
        // A byte limit likewise (read_from cuts inside the chunk; the shipper's read does not).
        let limit = e[..4].iter().map(|e| e.json.len()).sum::<usize>();
        let by_bytes = b.read_batch(100, limit, true).unwrap();
        assert_eq!(kinds(&by_bytes), [(s0, 3, true)]);
        assert!(by_bytes.full);
        assert_eq!(b.read_from(0, 100, limit).unwrap(), e[..4].to_vec());
        let limit = e[..2].iter().map(|e| e.json.len()).sum::<usize>();
        let by_bytes = b.read_batch(100, limit, true).unwrap();
        assert_eq!(kinds(&by_bytes), [(s0, 2, false)]);
        // Without `stored`, every chunk is decoded.
        let decoded = b.read_batch(100, usize::MAX, false).unwrap();
        assert_eq!(decoded.stored_records(), 0);
        assert_eq!(decoded.body(false).unwrap(), ndjson(&e));
        // A partly acknowledged chunk is decoded from its first live record on.
        b.ack_up_to(e[4].seq).unwrap();
        let rest = b.read_batch(100, usize::MAX, true).unwrap();
        assert_eq!(
            kinds(&rest),
            [(s0 + 5, 1, false), (s0 + 6, 3, true), (s0 + 9, 1, false)]
        );
        assert_eq!(rest.body(false).unwrap(), ndjson(&e[5..]));
    }

    /// Invariant 8 on the shipper's read: a value too short to have a header (here: empty) is
    /// removed and reported like any damaged chunk, not a panic.
    #[test]
    fn read_batch_survives_an_empty_value() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _) = open(&dir.path().join("b"), 1 << 20, FullPolicy::Block);
        b.try_append(&[rec(0)], None).unwrap();
        b.try_append(&[rec(1)], None).unwrap();
        let e = all(&b);
        b.raw_tree().insert(rkey(e[0].seq), &b""[..]).unwrap();
        let batch = b.read_batch(100, usize::MAX, true).unwrap();
        assert_eq!((batch.first(), batch.len()), (e[1].seq, 1));
        assert_eq!(b.status().corrupt_total, 1);
    }

    /// Invariants 5 and 6: setting aside a record inside a partly acknowledged chunk keeps every
    /// other record of it, in order, under consistent counters, across reopen.
    #[test]
    fn set_aside_inside_a_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        b.try_append(&(0..8).map(rec).collect::<Vec<_>>(), None)
            .unwrap();
        let e = all(&b);
        b.ack_up_to(e[1].seq).unwrap();
        assert!(b.set_aside(e[4].seq, "InvalidData", "x").unwrap());
        assert!(!b.set_aside(e[0].seq, "InvalidData", "acked").unwrap());
        assert_eq!(b.set_aside_records().unwrap(), vec![e[4].clone()]);
        let want: Vec<Entry> = [2, 3, 5, 6, 7].iter().map(|&i| e[i].clone()).collect();
        let got = all(&b);
        assert_eq!(got[..5], want[..]);
        assert_eq!(names(&got[5..]), vec!["RecordsRejected"]);
        // Set aside the first and the last remaining records too.
        assert!(b.set_aside(e[2].seq, "InvalidData", "x").unwrap());
        assert!(b.set_aside(e[7].seq, "InvalidData", "x").unwrap());
        let got: Vec<Entry> = all(&b).into_iter().filter(|x| x.seq <= e[7].seq).collect();
        assert_eq!(got, vec![e[3].clone(), e[5].clone(), e[6].clone()]);
        let st = b.status();
        drop(b);
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        let st2 = b.status();
        assert_eq!(
            (st.depth, st.bytes, st.set_aside),
            (st2.depth, st2.bytes, 3)
        );
        assert_eq!(b.set_aside_records().unwrap().len(), 3);
    }

    /// Invariant 8 for a chunk: a damaged frame loses the whole chunk, counted with the range
    /// its header names (minus what was already acknowledged).
    #[test]
    fn corrupt_chunk_is_reported_with_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        b.try_append(&(0..5).map(rec).collect::<Vec<_>>(), None)
            .unwrap();
        b.try_append(&[rec(5)], None).unwrap();
        let e = all(&b);
        b.ack_up_to(e[0].seq).unwrap();
        let mut v = b.raw_tree().get(rkey(e[0].seq)).unwrap().unwrap().to_vec();
        let n = v.len();
        v[n - 4..].copy_from_slice(b"\xde\xad\xbe\xef");
        b.raw_tree().insert(rkey(e[0].seq), v).unwrap();
        b.flush().unwrap();
        drop(b);
        let (b, report) = open(&path, 1 << 20, FullPolicy::Block);
        assert_eq!(report.depth, 5);
        assert_eq!(all(&b), vec![e[5].clone()]);
        let got = all(&b);
        assert_eq!(names(&got), vec!["TestEvent", "BufferCorruption"]);
        let p = &json_of(&got[1])["requestParameters"];
        assert_eq!(p["corruptEntries"], 4);
        assert_eq!(p["seqRanges"], json!([[e[1].seq, e[4].seq]]));
        assert_eq!(b.status().depth, 2);
    }

    /// Invariant 8: a value of the earlier one-record format is still read.
    #[test]
    fn earlier_one_record_values_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        b.try_append(&[rec(0)], None).unwrap();
        let seq = b.status().next_seq;
        let json = rec(1).to_json();
        let mut v = vec![VALUE_SINGLE];
        v.extend_from_slice(&7u64.to_be_bytes());
        v.extend_from_slice(&zstd::bulk::compress(&json, 3).unwrap());
        b.raw_tree().insert(rkey(seq), v).unwrap();
        b.flush().unwrap();
        drop(b);
        let (b, report) = open(&path, 1 << 20, FullPolicy::Block);
        assert_eq!(report.depth, 2);
        let got = all(&b);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[1].seq, got[1].appended_ms, &got[1].json),
            (seq, 7, &json)
        );
        assert_eq!(b.status().next_seq, seq + 1);
    }

    /// An append larger than one chunk is several chunks in one batch, read back in order.
    #[test]
    fn a_huge_append_is_several_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _) = open(&dir.path().join("b"), 1 << 30, FullPolicy::Block);
        let n = MAX_CHUNK_RECORDS + 10;
        let Appended::Stored(Some((f, l))) = b
            .try_append(&(0..n as u64).map(rec).collect::<Vec<_>>(), None)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(l - f + 1, n as u64);
        assert_eq!(b.raw_tree().scan_prefix([K_RECORD]).count(), 2);
        let e = all(&b);
        assert_eq!(e.len(), n);
        assert!(e.iter().enumerate().all(|(i, x)| x.seq == f + i as u64));
        assert!(b.set_aside(f + 5, "InvalidData", "x").unwrap());
        assert_eq!(all(&b).len(), n);
    }

    /// Invariant 6: the byte accounting matches what is stored, across reopen.
    #[test]
    fn byte_accounting_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        b.try_append(&(0..20).map(rec).collect::<Vec<_>>(), None)
            .unwrap();
        let e = all(&b);
        b.ack_up_to(e[4].seq).unwrap();
        let st = b.status();
        drop(b);
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        let st2 = b.status();
        assert_eq!((st.depth, st.bytes), (st2.depth, st2.bytes));
        assert_eq!(st2.depth, 15);
        assert_eq!(st2.oldest_seq, Some(e[5].seq));
    }

    /// Invariant 9: errors the operating system reports are the environment's, never a reason
    /// to quarantine; sled's own findings of damage are.
    #[test]
    fn os_errors_are_not_damage() {
        for errno in [
            libc::EIO,
            libc::EDQUOT,
            libc::EMFILE,
            libc::ENOSPC,
            libc::EACCES,
        ] {
            let e = sled::Error::Io(std::io::Error::from_raw_os_error(errno));
            assert!(is_environment_error(&e), "errno {errno}");
        }
        let damage = [
            sled::Error::Corruption { at: None, bt: () },
            sled::Error::Unsupported("sled panicked: x".into()),
            sled::Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file cut short",
            )),
        ];
        for e in damage {
            assert!(!is_environment_error(&e), "{e}");
        }
    }

    /// The side tree: bounded by `set_aside_max_bytes` (a refused record that does not fit is
    /// reported with kept=false and leaves the queue), counted within `bytes`, and emptied by
    /// `remove_set_aside`; the counts survive a reopen.
    #[test]
    fn the_side_tree_is_bounded_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let noisy = |i: u64| {
            let noise: String = (0..40)
                .map(|_| uuid::Uuid::new_v4().simple().to_string())
                .collect();
            id().agent_record("TestEvent", json!({ "i": i, "noise": noise }))
        };
        let o = BufferOptions {
            set_aside_max_bytes: 2500,
            ..opts(1 << 20, FullPolicy::Block)
        };
        let (b, _) = Buffer::open(&path, o.clone(), id()).unwrap();
        b.try_append(&(0..4).map(noisy).collect::<Vec<_>>(), None)
            .unwrap();
        let e = all(&b);
        for x in &e {
            assert!(b.set_aside(x.seq, "InvalidData", "no").unwrap());
        }
        let st = b.status();
        assert!(
            names(&all(&b)).iter().all(|n| n == "RecordsRejected"),
            "only the loss reports are queued"
        );
        assert!(st.set_aside >= 1 && st.set_aside < 4, "{st:?}");
        assert!(st.set_aside_bytes <= 2500 && st.set_aside_bytes > 0);
        assert_eq!(st.set_aside_discarded_total, 4 - st.set_aside);
        let kept: Vec<bool> = b
            .status()
            .pending_loss
            .rejected
            .iter()
            .map(|r| r.kept)
            .collect();
        let reported: Vec<Value> = all(&b)
            .iter()
            .map(json_of)
            .filter(|r| r["eventName"] == "RecordsRejected")
            .flat_map(|r| {
                r["requestParameters"]["records"]
                    .as_array()
                    .unwrap()
                    .clone()
            })
            .collect();
        assert!(kept.is_empty(), "the loss was written as records");
        assert_eq!(reported.len(), 4);
        assert_eq!(
            reported.iter().filter(|r| r["kept"] == false).count() as u64,
            st.set_aside_discarded_total
        );
        let queued = st.bytes - st.set_aside_bytes;
        drop(b);
        let (b, _) = Buffer::open(&path, o, id()).unwrap();
        let st2 = b.status();
        assert_eq!(
            (st2.set_aside, st2.set_aside_bytes, st2.bytes),
            (st.set_aside, st.set_aside_bytes, st.bytes)
        );
        for x in b.set_aside_records().unwrap() {
            assert!(b.remove_set_aside(x.seq).unwrap());
        }
        let st3 = b.status();
        assert_eq!((st3.set_aside, st3.set_aside_bytes), (0, 0));
        assert_eq!(st3.bytes, queued);
        assert_eq!(st3.set_aside_resent_total, st.set_aside);
    }
}
