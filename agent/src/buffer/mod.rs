//! The agent's durable queue: records wait here, on disk, until the collector has committed them.
//!
//! # Invariants
//!
//! 1. **Acknowledged means flushed.** [`Buffer::append`] (and so every source's and every
//!    application's acknowledgement) returns only after the records *and* the source checkpoint
//!    that goes with them are on disk (`sled::Db::flush`, i.e. fsync). Concurrent appends may
//!    share one flush (group commit, `flush_delay_ms`), but none returns before its own data is
//!    covered by a completed flush.
//! 2. **Records and checkpoint are atomic.** One append is one `sled::Batch` on one tree, or,
//!    when it is a single chunk with nothing else (no checkpoint, no loss report: a
//!    PutAuditEvents call, unless a loss report goes with it), one insert, which sled makes
//!    atomic by itself: after a
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
//!    `side_tree.rs`).
//!    A chunk is deleted once *all* its records are acknowledged; until then the records
//!    `<= acked` inside it are skipped by every reader and not counted (`m acked` is written in
//!    the same batch as the deletions, so the two agree after a crash). Deletions are made durable
//!    by the next flush, not one of their own: a crash can bring committed records back (sent
//!    again, dropped by the collector), never take an uncommitted one away. Setting aside a record
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
//! # Where each part lives
//!
//! Each file states at its top the guarantees it keeps, and holds their tests.
//!
//! | file | what | invariants |
//! |---|---|---|
//! | `mod.rs` | this essay, the key layout, the [`Buffer`] handle, its counters and status | |
//! | `chunk.rs` | the value formats: encoding, and the one decoder the tools share | 2, 8 |
//! | `open.rs` | opening, recovering the counters, moving a damaged directory aside | 3, 8, 9 |
//! | `commit.rs` | group commit, and noticing a store that fails | 1, 10 |
//! | `append.rs` | appends, the bound, `block` and `drop_newest`, the `RecordSink` | 2, 6 |
//! | `read.rs` | reading the head, acknowledging it, removing corrupt values | 4, 5, 8 |
//! | `side_tree.rs` | records the collector refuses: moved aside, bounded, resent | 5 |
//! | `loss.rs` | pending loss, and the agent's records that report it | 7 |
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
//! - after the next flush that follows `ack_up_to` (the next append's, or shutdown's): the
//!   deletion (a crash before it only means a re-send, which the collector de-duplicates by
//!   `eventID`);
//! - the byte and record counts are not stored; they are recomputed by a scan of the chunk keys
//!   and headers at open (no decompression).

mod append;
mod chunk;
mod commit;
mod loss;
mod open;
mod read;
mod side_tree;
#[cfg(test)]
pub(crate) mod testutil;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host_identity::HostIdentity;

use chunk::appended_ms_of;
pub use chunk::chunk_compressor;
pub(crate) use chunk::{
    CHUNK_HEADER, SINGLE_HEADER, VALUE_CHUNK, VALUE_LINES, VALUE_SINGLE, chunk_last, chunk_len,
    decode_value, live,
};
pub use commit::StorageFailure;
pub use loss::{PendingLoss, Quarantined, Rejected};
pub use open::OpenReport;
pub(crate) use open::{is_environment_error, try_open_sled};

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

/// What the buffer does when it holds `max_bytes` (`[buffer] full_policy`). Defined here, not
/// in `config`, because it is the buffer's behaviour; the config only names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Sources and applications wait until the shipper frees space: nothing is lost, capture
    /// stalls (log-file sources catch up later from their checkpoints).
    #[default]
    Block,
    /// New records are dropped and counted; once there is room again, the loss is written to
    /// the trail as a `RecordsDropped` record with counts and sequence ranges.
    DropNewest,
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

impl Buffer {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave sled inconsistent (batches are atomic);
        // keep going with the counters as they are.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::testutil::*;
    use groundtrail_common::Record;

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
}
