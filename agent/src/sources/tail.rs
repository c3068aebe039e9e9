//! Rotation-aware file follower with checkpoints that travel with the records.
//!
//! The contract (DESIGN.md, "Data flow and guarantees"): a source's position moves only together
//! with the records it produced, in one [`RecordSink::append`]. The follower therefore
//!
//! - reads only *complete* lines (ending in `\n`); a half-written line waits for its end;
//! - identifies the file by device, inode and a hash of its first line ([`FileId`]), because
//!   an inode is reused after delete and a `copytruncate` keeps the inode but restarts content;
//! - derives every `eventID` from host, file identity and the line's byte offset
//!   ([`event_id`]), so re-reading after a crash yields the same IDs and the collector's dedup
//!   drops the repeats;
//! - stores `{file, offset}` as JSON in [`Checkpoint::state`] with each batch, and on start
//!   resumes there — also when the checkpointed file was rotated away meanwhile (it finds the
//!   old inode in the same directory, e.g. `auth.log.1`, and finishes it first);
//! - notices rotation by rename (the path names a new inode: the old one is drained, then the
//!   new one read from 0) and by copytruncate (same inode, but shorter or a different first
//!   line: read again from 0), and waits for files that do not exist yet.
//!
//! Wake-ups come from `notify` (inotify on Linux) on the parent directory, with a poll
//! interval as fallback for file systems without events and for a parent that is missing.
//!
//! Multi-line inputs (auditd, apt history) keep unfinished groups inside their
//! [`LineHandler`]; [`LineHandler::pending_from`] holds the checkpoint back to the first line
//! of the oldest unfinished group, so a restart re-reads it. Groups that were already emitted
//! and get re-read produce the same eventIDs (derived from their first line) and are dropped
//! by the collector's dedup.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use groundtrail_common::Record;
use groundtrail_common::shutdown::Shutdown;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::sink::{Checkpoint, RecordSink, SinkError};

/// How many bytes of the first line identify a file's content (longer first lines are cut).
pub const HEAD_MAX: usize = 1024;

/// Namespace of all Groundtrail file-derived eventIDs (UUID v5).
pub const EVENT_ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_bytes([
    0x6a, 0x1f, 0x0e, 0x52, 0x3c, 0x2b, 0x4d, 0x8e, 0x9a, 0x57, 0x11, 0xc4, 0x2e, 0x80, 0x3d, 0x19,
]);

/// Which file a position belongs to: `dev`+`ino` say which inode, the hash of the first line
/// says which *content* (inode reuse, copytruncate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    /// Bytes of the file covered by `head` (the first line including its `\n`, at most
    /// [`HEAD_MAX`]).
    pub head_len: u32,
    /// First 16 hex digits of the SHA-256 of those bytes.
    pub head: String,
}

impl FileId {
    /// The stable text that goes into eventIDs.
    pub fn key(&self) -> String {
        format!("{}:{}:{}", self.dev, self.ino, self.head)
    }
}

/// What a file source stores in [`Checkpoint::state`] (as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailCheckpoint {
    pub file: FileId,
    /// Byte offset of the first line not yet turned into records.
    pub offset: u64,
}

/// The deterministic eventID of the line (or group of lines) starting at `offset`.
pub fn event_id(host: &str, file: &FileId, offset: u64) -> String {
    let name = format!("{host}|{}|{offset}", file.key());
    uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes()).to_string()
}

/// Where a line came from; hands out its eventID.
#[derive(Debug, Clone, Copy)]
pub struct LineRef<'a> {
    pub host: &'a str,
    pub file: &'a FileId,
    pub offset: u64,
}

impl LineRef<'_> {
    /// [`event_id`] of this line.
    pub fn event_id(&self) -> String {
        event_id(self.host, self.file, self.offset)
    }
}

/// Turns lines of one file into records. Implemented by each file source.
pub trait LineHandler: Send {
    /// One complete line (without its `\n`). Finished records go to `out` (with their eventID
    /// set, normally from `at.event_id()`).
    fn line(&mut self, line: &[u8], at: LineRef<'_>, out: &mut Vec<Record>);
    /// Offset of the first line of the oldest group still open (not yet in `out`), if any.
    fn pending_from(&self) -> Option<u64> {
        None
    }
    /// The file ends (rotation, truncation): emit whatever groups are open.
    fn flush(&mut self, _out: &mut Vec<Record>) {}
    /// The input has been quiet for [`TailOptions::idle_flush`]: emit the groups that cannot
    /// grow any more. By default all of them ([`LineHandler::flush`]); a handler whose groups
    /// may still grow after a pause keeps those (its `pending_from` holds the checkpoint).
    fn idle(&mut self, out: &mut Vec<Record>) {
        self.flush(out)
    }
    /// A new file (or truncated content) starts; drop open groups (already flushed).
    fn reset(&mut self) {}
}

/// Tuning of a follower. Defaults suit a log file written by syslog.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Fallback wake-up when no file event arrives.
    pub poll_interval: Duration,
    /// Records per `append` at most (a burst becomes several appends).
    pub batch_max: usize,
    /// After a file event, wait this long before reading, so that a trickle of lines becomes
    /// one append (one durable flush) instead of one per line.
    pub batch_delay: Duration,
    /// Lines longer than this are skipped (counted by the caller's `on_oversize`).
    pub max_line: usize,
    /// Without a checkpoint, start at the end of the existing file instead of its beginning.
    pub start_at_end: bool,
    /// After a rename is seen, how long the old file keeps being drained (a writer may still
    /// hold it open until it is told to reopen).
    pub rotate_grace: Duration,
    /// An open multi-line group is flushed after the input has been quiet this long.
    pub idle_flush: Duration,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            poll_interval: Duration::from_millis(250),
            batch_max: 2000,
            batch_delay: Duration::from_millis(100),
            max_line: 256 * 1024,
            start_at_end: false,
            rotate_grace: Duration::from_secs(1),
            idle_flush: Duration::from_secs(2),
        }
    }
}

/// Why a follower stopped (it otherwise runs until shutdown).
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("the sink is closed")]
    Closed,
}

/// The file currently being read.
struct Open {
    file: File,
    dev: u64,
    ino: u64,
    /// Known once the first line is complete.
    id: Option<FileId>,
    /// Offset of the first byte of `buf`: everything before it is consumed.
    offset: u64,
    /// Bytes read past `offset` (a partial line at most, between reads).
    buf: Vec<u8>,
    /// Set when the path no longer names this inode.
    rotated_at: Option<Instant>,
    /// Skipping the rest of an over-long line.
    skipping: bool,
    last_len: u64,
    last_mtime: i64,
}

impl Open {
    fn at(path: &Path, offset: u64) -> io::Result<Open> {
        let mut file = File::open(path)?;
        let meta = file.metadata()?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Open {
            file,
            dev: meta.dev(),
            ino: meta.ino(),
            id: None,
            offset,
            buf: Vec::new(),
            rotated_at: None,
            skipping: false,
            last_len: u64::MAX,
            last_mtime: i64::MIN,
        })
    }

    fn read_pos(&self) -> u64 {
        self.offset + self.buf.len() as u64
    }
}

/// Reads the identity of an open file; `None` while its first line is incomplete.
fn file_id(file: &File) -> io::Result<Option<FileId>> {
    let meta = file.metadata()?;
    let mut head = vec![0u8; HEAD_MAX];
    let mut n = 0;
    while n < HEAD_MAX {
        let got = file.read_at(&mut head[n..], n as u64)?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let len = match head[..n].iter().position(|&b| b == b'\n') {
        Some(i) => i + 1,
        None if n == HEAD_MAX => HEAD_MAX,
        None => return Ok(None),
    };
    Ok(Some(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
        head_len: len as u32,
        head: head_hash(&head[..len]),
    }))
}

fn head_hash(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    hex::encode(&d.as_ref()[..8])
}

/// True if `file` still starts with the content `id` describes.
fn same_head(file: &File, id: &FileId) -> bool {
    let mut buf = vec![0u8; id.head_len as usize];
    match file.read_exact_at(&mut buf, 0) {
        Ok(()) => head_hash(&buf) == id.head,
        Err(_) => false,
    }
}

/// Looks in `path`'s directory for the inode a checkpoint names (the file was rotated while
/// the agent was down, e.g. to `auth.log.1`).
fn find_rotated(path: &Path, id: &FileId) -> Option<PathBuf> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty())?;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() && meta.dev() == id.dev && meta.ino() == id.ino {
            let p = entry.path();
            if File::open(&p).is_ok_and(|f| same_head(&f, id)) {
                return Some(p);
            }
        }
    }
    None
}

/// Counters over all followers of the process, for the metrics page
/// (`groundtrail_tail_{lines,oversize,rotations,truncations}_total`).
#[derive(Debug, Default)]
pub struct TailTotals {
    pub lines: AtomicU64,
    pub oversize: AtomicU64,
    pub rotations: AtomicU64,
    pub truncations: AtomicU64,
}

/// See [`TailTotals`].
pub static TOTALS: TailTotals = TailTotals {
    lines: AtomicU64::new(0),
    oversize: AtomicU64::new(0),
    rotations: AtomicU64::new(0),
    truncations: AtomicU64::new(0),
};

/// A copy of [`TOTALS`] as `(lines, oversize, rotations, truncations)` in a [`TailStats`].
pub fn totals() -> TailStats {
    TailStats {
        lines: TOTALS.lines.load(Ordering::Relaxed),
        oversize: TOTALS.oversize.load(Ordering::Relaxed),
        rotations: TOTALS.rotations.load(Ordering::Relaxed),
        truncations: TOTALS.truncations.load(Ordering::Relaxed),
    }
}

/// Statistics a follower keeps (per instance; [`TOTALS`] sums all followers).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TailStats {
    pub lines: u64,
    pub oversize: u64,
    pub rotations: u64,
    pub truncations: u64,
}

/// Follows one path.
pub struct Follower {
    path: PathBuf,
    source_key: String,
    host: String,
    opts: TailOptions,
    sink: Arc<dyn RecordSink>,
    cur: Option<Open>,
    /// After a restart: the rotated file to finish before `path`.
    resume_rotated: Option<(PathBuf, FileId, u64)>,
    records: Vec<Record>,
    last_data: Instant,
    /// Open groups were already flushed for the current quiet period.
    idle_flushed: bool,
    /// Why `path` could not be opened last time, so each new reason is reported once (an
    /// agent without the rights to a log must say so, not wait in silence).
    open_error: Option<io::ErrorKind>,
    pub stats: TailStats,
}

impl Follower {
    /// A follower of `path` whose checkpoints are stored under `source_key`.
    pub fn new(
        path: impl Into<PathBuf>,
        source_key: impl Into<String>,
        host: impl Into<String>,
        sink: Arc<dyn RecordSink>,
        opts: TailOptions,
    ) -> Follower {
        Follower {
            path: path.into(),
            source_key: source_key.into(),
            host: host.into(),
            opts,
            sink,
            cur: None,
            resume_rotated: None,
            records: Vec::new(),
            last_data: Instant::now(),
            idle_flushed: false,
            open_error: None,
            stats: TailStats::default(),
        }
    }

    /// Runs until `shutdown` (or the sink closes). Never returns an error for a missing or
    /// unreadable file: it waits for it.
    pub async fn run(
        mut self,
        handler: &mut dyn LineHandler,
        mut shutdown: Shutdown,
    ) -> Result<TailStats, TailError> {
        let notify = Arc::new(Notify::new());
        let _watcher = self.watch(notify.clone());
        if self.cur.is_none() && self.resume_rotated.is_none() {
            self.restore();
        }
        loop {
            match self.step(handler).await {
                Ok(()) => {}
                Err(TailError::Closed) => return Err(TailError::Closed),
            }
            tokio::select! {
                _ = shutdown.recv() => return Ok(self.stats),
                _ = notify.notified() => {
                    tokio::select! {
                        _ = shutdown.recv() => return Ok(self.stats),
                        _ = tokio::time::sleep(self.opts.batch_delay) => {}
                    }
                }
                _ = tokio::time::sleep(self.opts.poll_interval) => {}
            }
        }
    }

    fn watch(&self, notify: Arc<Notify>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())?
            .to_path_buf();
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if is_change(&res) {
                notify.notify_one();
            }
        })
        .ok()?;
        // A missing directory is fine: the poll interval covers it.
        w.watch(&dir, notify::RecursiveMode::NonRecursive).ok()?;
        Some(w)
    }

    /// Loads the checkpoint and decides where to start.
    fn restore(&mut self) {
        let Some(state) = self.sink.checkpoint(&self.source_key) else {
            if self.opts.start_at_end {
                self.start_at_end();
            }
            return;
        };
        let Ok(ck) = serde_json::from_slice::<TailCheckpoint>(&state) else {
            tracing::warn!(source = %self.source_key, "unreadable checkpoint; starting over");
            return;
        };
        if let Ok(f) = File::open(&self.path)
            && let Ok(meta) = f.metadata()
            && meta.dev() == ck.file.dev
            && meta.ino() == ck.file.ino
            && same_head(&f, &ck.file)
        {
            let offset = if ck.offset > meta.len() { 0 } else { ck.offset };
            if let Ok(mut open) = Open::at(&self.path, offset) {
                open.id = Some(ck.file.clone());
                self.cur = Some(open);
            }
            return;
        }
        if let Some(p) = find_rotated(&self.path, &ck.file) {
            self.resume_rotated = Some((p, ck.file, ck.offset));
        }
    }

    /// Logs why `path` cannot be opened, once per distinct reason: a missing file is normal
    /// (not created yet, or a distribution without it) and said at info; anything else, such as
    /// permission denied for an agent running without CAP_DAC_READ_SEARCH, is a warning. The
    /// follower keeps retrying either way.
    fn report_open_error(&mut self, e: &io::Error) {
        if self.open_error == Some(e.kind()) {
            return;
        }
        self.open_error = Some(e.kind());
        if e.kind() == io::ErrorKind::NotFound {
            tracing::info!(path = %self.path.display(), source = %self.source_key, "waiting for the file to appear");
        } else {
            tracing::warn!(path = %self.path.display(), source = %self.source_key, error = %e, "cannot read; this source records nothing until it can (retrying)");
        }
    }

    /// Without a checkpoint and asked to: skip what the file holds now (a file that appears
    /// later is read from its start). A partial last line is skipped up to its end.
    fn start_at_end(&mut self) {
        let Ok(file) = File::open(&self.path) else {
            return;
        };
        let end = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut last = [0u8; 1];
        let mid_line =
            end > 0 && file.read_exact_at(&mut last, end - 1).is_ok() && last[0] != b'\n';
        if let Ok(mut open) = Open::at(&self.path, end) {
            open.skipping = mid_line;
            self.cur = Some(open);
        }
    }

    /// One wake-up: notice rotation/truncation, read what is new, append it.
    async fn step(&mut self, handler: &mut dyn LineHandler) -> Result<(), TailError> {
        if self.cur.is_none() {
            if let Some((p, id, offset)) = self.resume_rotated.take() {
                if let Ok(mut open) = Open::at(&p, offset) {
                    open.id = Some(id);
                    open.rotated_at = Some(Instant::now());
                    self.cur = Some(open);
                }
            } else {
                match Open::at(&self.path, 0) {
                    Ok(open) => {
                        if self.open_error.take().is_some() {
                            tracing::info!(path = %self.path.display(), source = %self.source_key, "now readable");
                        }
                        self.cur = Some(open);
                    }
                    Err(e) => self.report_open_error(&e),
                }
            }
        }
        let Some(cur) = self.cur.as_mut() else {
            return Ok(());
        };

        // Rename: the path names another inode (or nothing) now.
        if cur.rotated_at.is_none() {
            let renamed = match std::fs::metadata(&self.path) {
                Ok(m) => m.dev() != cur.dev || m.ino() != cur.ino,
                Err(_) => true,
            };
            if renamed {
                cur.rotated_at = Some(Instant::now());
            }
        }
        // Copytruncate: same inode, but shorter than what we read, or other first line.
        if let Ok(meta) = cur.file.metadata() {
            let changed = meta.len() != cur.last_len || meta.mtime_nsec() != cur.last_mtime;
            cur.last_len = meta.len();
            cur.last_mtime = meta.mtime_nsec();
            let truncated = meta.len() < cur.read_pos()
                || (changed && cur.id.as_ref().is_some_and(|id| !same_head(&cur.file, id)));
            if truncated {
                self.stats.truncations += 1;
                TOTALS.truncations.fetch_add(1, Ordering::Relaxed);
                handler.flush(&mut self.records);
                handler.reset();
                let cur = self.cur.as_mut().expect("checked above");
                cur.offset = 0;
                cur.buf.clear();
                cur.id = None;
                cur.skipping = false;
                let _ = cur.file.seek(SeekFrom::Start(0));
            }
        }

        let got = self.read_available(handler).await?;
        if got {
            self.last_data = Instant::now();
            self.idle_flushed = false;
        }

        let cur = self.cur.as_mut().expect("still open");
        if let Some(at) = cur.rotated_at {
            if !got && at.elapsed() >= self.opts.rotate_grace {
                // The old file is finished: emit its open groups and move to the new one.
                handler.flush(&mut self.records);
                handler.reset();
                self.stats.rotations += 1;
                TOTALS.rotations.fetch_add(1, Ordering::Relaxed);
                let next = Open::at(&self.path, 0).ok();
                self.cur = next;
                self.commit(handler.pending_from(), true).await?;
                if self.cur.is_some() {
                    // Read the new file right away (it may already hold lines).
                    return Box::pin(self.step(handler)).await;
                }
            }
        } else if !got
            && !self.idle_flushed
            && handler.pending_from().is_some()
            && self.last_data.elapsed() >= self.opts.idle_flush
        {
            self.idle_flushed = true;
            handler.idle(&mut self.records);
            self.commit(handler.pending_from(), true).await?;
        }
        Ok(())
    }

    /// Reads to EOF, turning complete lines into records and appending in batches.
    /// Returns whether any bytes were read.
    async fn read_available(&mut self, handler: &mut dyn LineHandler) -> Result<bool, TailError> {
        let mut any = false;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let cur = self.cur.as_mut().expect("open");
            let n = match cur.file.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "read failed");
                    break;
                }
            };
            any = true;
            cur.buf.extend_from_slice(&chunk[..n]);
            if cur.id.is_none() {
                cur.id = file_id(&cur.file).ok().flatten();
                if cur.id.is_none() {
                    // First line incomplete: wait, keep the bytes.
                    continue;
                }
            }
            self.consume_lines(handler);
            if self.records.len() >= self.opts.batch_max {
                self.commit(handler.pending_from(), false).await?;
            }
        }
        if any {
            self.commit(handler.pending_from(), false).await?;
        }
        Ok(any)
    }

    /// Splits the buffer into complete lines and feeds them to the handler.
    fn consume_lines(&mut self, handler: &mut dyn LineHandler) {
        let cur = self.cur.as_mut().expect("open");
        let Some(id) = cur.id.clone() else { return };
        let mut start = 0usize;
        while let Some(rel) = memchr(&cur.buf[start..]) {
            let end = start + rel;
            let line_offset = cur.offset + start as u64;
            if cur.skipping {
                cur.skipping = false;
            } else {
                let mut line = &cur.buf[start..end];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                self.stats.lines += 1;
                TOTALS.lines.fetch_add(1, Ordering::Relaxed);
                let at = LineRef {
                    host: &self.host,
                    file: &id,
                    offset: line_offset,
                };
                handler.line(line, at, &mut self.records);
            }
            start = end + 1;
        }
        cur.buf.drain(..start);
        cur.offset += start as u64;
        if cur.buf.len() > self.opts.max_line {
            // An over-long line: drop what we have and skip to its end.
            self.stats.oversize += 1;
            TOTALS.oversize.fetch_add(1, Ordering::Relaxed);
            cur.offset += cur.buf.len() as u64;
            cur.buf.clear();
            cur.skipping = true;
        }
    }

    /// Appends the collected records with the checkpoint they bring us to. Retries storage
    /// errors (the records stay collected); gives up only when the sink is closed.
    async fn commit(&mut self, pending: Option<u64>, force: bool) -> Result<(), TailError> {
        let Some(cur) = self.cur.as_ref() else {
            if self.records.is_empty() {
                return Ok(());
            }
            // The file went away with records in hand: store them without moving the
            // checkpoint (the last one still describes the finished file).
            return self.append(None).await;
        };
        let Some(id) = cur.id.clone() else {
            // A new file without a complete first line yet: store records flushed from the
            // previous file now, keeping the old checkpoint (a re-read yields the same IDs).
            if self.records.is_empty() {
                return Ok(());
            }
            return self.append(None).await;
        };
        if self.records.is_empty() && !force && cur.buf.is_empty() && cur.offset == 0 {
            return Ok(());
        }
        let offset = pending.map_or(cur.offset, |p| p.min(cur.offset));
        let ck = TailCheckpoint { file: id, offset };
        let state = serde_json::to_vec(&ck).unwrap_or_default();
        self.append(Some(Checkpoint {
            source: self.source_key.clone(),
            state,
        }))
        .await
    }

    async fn append(&mut self, ck: Option<Checkpoint>) -> Result<(), TailError> {
        let mut delay = Duration::from_millis(100);
        loop {
            let records = self.records.clone();
            match self.sink.append(records, ck.clone()).await {
                Ok(()) => {
                    self.records.clear();
                    return Ok(());
                }
                Err(SinkError::Dropped { .. }) => {
                    // The buffer counted the loss; move on so the source does not stall.
                    self.records.clear();
                    return Ok(());
                }
                Err(SinkError::Closed) => return Err(TailError::Closed),
                Err(SinkError::Storage(e)) => {
                    tracing::warn!(source = %self.source_key, error = %e, "append failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

fn memchr(hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == b'\n')
}

/// An in-memory [`RecordSink`] that stores records and checkpoints together, for tests,
/// examples and benches (the agent's real sink is the sled buffer).
#[derive(Default)]
pub struct MemorySink {
    inner: std::sync::Mutex<MemoryState>,
    /// Wakes waiters on every append.
    pub appended: Notify,
}

#[derive(Default)]
struct MemoryState {
    records: Vec<Record>,
    checkpoints: std::collections::HashMap<String, Vec<u8>>,
    appends: u64,
}

impl MemorySink {
    pub fn new() -> Arc<MemorySink> {
        Arc::new(MemorySink::default())
    }

    /// Everything appended so far.
    pub fn records(&self) -> Vec<Record> {
        self.inner
            .lock()
            .map(|s| s.records.clone())
            .unwrap_or_default()
    }

    /// Number of records appended so far.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|s| s.records.len()).unwrap_or(0)
    }

    /// True when nothing was appended yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of `append` calls.
    pub fn appends(&self) -> u64 {
        self.inner.lock().map(|s| s.appends).unwrap_or(0)
    }

    /// Waits until at least `n` records are stored.
    pub async fn wait_for(&self, n: usize) {
        loop {
            let notified = self.appended.notified();
            if self.len() >= n {
                return;
            }
            notified.await;
        }
    }

    /// Waits until `pred` holds for the stored records.
    pub async fn wait_until(&self, pred: impl Fn(&[Record]) -> bool) {
        loop {
            let notified = self.appended.notified();
            if let Ok(s) = self.inner.lock()
                && pred(&s.records)
            {
                return;
            }
            notified.await;
        }
    }
}

impl RecordSink for MemorySink {
    fn append(
        &self,
        records: Vec<Record>,
        checkpoint: Option<Checkpoint>,
    ) -> crate::sink::BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            {
                let mut s = self
                    .inner
                    .lock()
                    .map_err(|_| SinkError::Storage("poisoned".into()))?;
                s.records.extend(records);
                if let Some(ck) = checkpoint {
                    s.checkpoints.insert(ck.source, ck.state);
                }
                s.appends += 1;
            }
            self.appended.notify_waiters();
            Ok(())
        })
    }

    fn checkpoint(&self, source: &str) -> Option<Vec<u8>> {
        self.inner
            .lock()
            .ok()
            .and_then(|s| s.checkpoints.get(source).cloned())
    }
}

/// Whether a watcher event can mean that a file changed. notify also reports opens, reads and
/// read-only closes; in a directory such as `/etc` or `/var/log` those come with every process
/// start (`/etc/ld.so.cache`) and every reader, and reacting to them cost a busy host's agent
/// a rescan or a read per event. Errors count as changes (a rescan is the safe answer).
pub(crate) fn is_change(res: &notify::Result<notify::Event>) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match res {
        Ok(e) => match e.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        },
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests;
