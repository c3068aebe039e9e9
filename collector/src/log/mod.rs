//! The durable log under the journal: an append-only sequence of entries, each one received
//! batch, numbered from 0 upwards.
//!
//! This is the seam between the collector and where its received records live before they are
//! in closed log files. The single-binary collector uses [`SegmentLog`] (files on local disk,
//! group-commit fsync); a cluster puts a replicated stream behind the same four operations.
//!
//! # Contract of every implementation
//!
//! 1. **Positions are entry numbers.** [`Log::append`] returns the entry's number; numbers
//!    increase by one per entry and never repeat for an entry that was ever made durable.
//! 2. **Durable means synced.** An entry is durable once a [`Log::sync`] that began after its
//!    append has returned `Ok`. Only durable entries are readable: [`Log::read`] never returns
//!    an entry that a crash could still take away, so nothing downstream (a log file, the event
//!    history, an alert) is built on a record the collector might lose.
//! 3. **Durable entries stay, byte for byte, until trimmed.** [`Log::trim_below`] is the only
//!    way an entry leaves, and it may keep more than asked (whole segments are dropped), never
//!    less.
//! 4. **A failed sync is final.** After a failed fsync the log refuses every later append and
//!    sync with the same error (the kernel may have dropped the dirty pages, so a later
//!    "successful" fsync would prove nothing); [`crate::store_health`] restarts the collector,
//!    which reopens the log and finds exactly the entries that reached the disk. A failed
//!    append (a full disk) is not final: nothing advanced, and the next append overwrites what
//!    it left. The journal counts such failures towards a stuck store.

mod segments;

pub use segments::{SegmentLog, SegmentLogSettings};

/// An entry's number in the log.
pub type Position = u64;

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Reading or writing the log's files failed.
    #[error("log {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// An entry below the durable end does not read back as written (disk damage).
    #[error("log {path}: entry {position} is damaged: {why}")]
    Corrupt {
        path: String,
        position: Position,
        why: String,
    },
    /// An earlier write or sync failed; the log accepts nothing more until it is reopened.
    #[error("log: stopped after an earlier failure: {0}")]
    Failed(String),
    /// A read below [`Log::start`]: those entries were trimmed.
    #[error("log: entry {0} was trimmed")]
    Trimmed(Position),
    /// An entry too large for the log's framing.
    #[error("log: an entry of {0} bytes is larger than the log accepts")]
    TooLarge(usize),
}

/// One entry read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its number.
    pub position: Position,
    /// Its bytes, exactly as appended.
    pub data: Vec<u8>,
}

/// The log's four operations (see the module doc for what every implementation guarantees).
pub trait Log: Send + Sync + std::fmt::Debug {
    /// Appends one entry and returns its position. Not durable until [`Log::sync`].
    fn append(&self, data: &[u8]) -> Result<Position, LogError>;

    /// Makes every entry appended before this call durable. Concurrent callers share one fsync
    /// (group commit). Returns the durable end: the position after the last durable entry.
    fn sync(&self) -> Result<Position, LogError>;

    /// Durable entries at or after `from`, in order, stopping after `max_bytes` of data (at
    /// least one entry is returned when there is one). `Err(Trimmed)` when `from` is below
    /// [`Log::start`].
    fn read(&self, from: Position, max_bytes: usize) -> Result<Vec<Entry>, LogError>;

    /// Lets entries below `position` go (some may stay: see the contract).
    fn trim_below(&self, position: Position) -> Result<(), LogError>;

    /// The oldest entry still kept.
    fn start(&self) -> Position;

    /// The position after the last durable entry.
    fn durable_end(&self) -> Position;

    /// The position the next append gets.
    fn end(&self) -> Position;

    /// Bytes the log occupies on disk.
    fn size_on_disk(&self) -> u64;
}
