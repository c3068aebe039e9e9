//! Turns committed records into CloudTrail log files.
//!
//! There is one open file per (account, region, kind): Insights records
//! (`eventType: AwsCloudTrailInsight`) go to files of their own under `CloudTrail-Insight/`,
//! as AWS delivers them, and are otherwise handled exactly like log files (the same journal
//! bookkeeping, deliveries and digest chains). A file's records are also pending in the journal,
//! so losing the memory (a crash) loses nothing: the next start reloads them. A file closes
//! `[trail] log_file_interval` after its first record or before its uncompressed JSON would
//! pass `max_bytes`, whichever comes first.
//!
//! Only what the trail records is filed: with event selectors put or configured, or logging
//! stopped ([`TrailControl`]), a record the trail does not take is passed over (marked filed
//! with no file, [`Journal::pass_over`]). With the default selectors and logging on, records
//! are not even read.
//!
//! # Memory
//!
//! An open file is compressed and hashed as its records arrive: past its first 256 KiB it
//! holds one gzip member in progress (the deflate state, about 300 KiB, and the compressed
//! bytes so far) and a running SHA-256, never the uncompressed JSON. So a collector with many
//! accounts and regions open holds roughly `max_bytes / gzip ratio` per busy file rather than
//! `max_bytes` (about 6 MiB instead of 32 MiB for a full file of typical records), and at most
//! 256 KiB per quiet one. Closing a file only finishes the member: the gzip work is spread over
//! ingest instead of falling on the close, which is why a shutdown delivers its last files
//! quickly. The compression runs under `block_in_place`, so the other async workers go on
//! serving ingest meanwhile.
//!
//! # Exactly once
//!
//! Closing is where exactly-once delivery is decided. A file is first *sealed*: the member is
//! finished (`{"Records":[...]}` compact, one gzip member) and its hash taken. Then its key is
//! chosen (`TrailLayout::log_file_key` with a fresh `unique16`), and key, bytes and hash are
//! recorded in the journal in the same atomic batch that removes its records from the pending
//! set ([`Journal::close_file`]), then flushed. Only after that can any destination see the
//! key. A crash before the flush leaves the records pending (the file is rebuilt under a new
//! key that was never uploaded); a crash after it re-uploads the same key with the same bytes.
//! A sealed file whose recording fails is kept, unchanged, and recorded again on the next tick;
//! its (account, region) meanwhile opens a new file.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use flate2::Compression;
use flate2::write::GzEncoder;
use groundtrail_common::shutdown::Shutdown;
use groundtrail_common::trail::{FileKind, TrailLayout, unique16};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::internal_events::{InternalEvent, LogFileClosed};
use crate::journal::{FileEntry, Journal, JournalError, PendingRecord};
use crate::trail_control::TrailControl;

const HEAD: &[u8] = b"{\"Records\":[";
const TAIL: &[u8] = b"]}";

/// What an open file is for: (account, region, kind).
type Part = (String, String, FileKind);

/// The open log file of one (account, region), compressed and hashed as records arrive.
struct OpenFile {
    opened: Instant,
    seqs: Vec<u64>,
    /// `{"Records":[` and the records so far, comma-separated: plain while the file is small,
    /// then one gzip member in progress.
    body: Body,
    /// SHA-256 of the same uncompressed bytes.
    sha: digest::Context,
    /// Length of the uncompressed bytes so far.
    json_len: usize,
    newest: String,
    oldest: String,
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile")
            .field("records", &self.seqs.len())
            .field("json_len", &self.json_len)
            .field("held", &self.body.held())
            .finish_non_exhaustive()
    }
}

impl OpenFile {
    fn new(now: Instant) -> OpenFile {
        let mut file = OpenFile {
            opened: now,
            seqs: Vec::new(),
            body: Body::Plain(Vec::new()),
            sha: digest::Context::new(&digest::SHA256),
            json_len: 0,
            newest: String::new(),
            oldest: String::new(),
        };
        file.write(HEAD);
        file
    }

    /// Adds uncompressed bytes to the body and the hash.
    fn write(&mut self, bytes: &[u8]) {
        self.body.write(bytes);
        self.sha.update(bytes);
        self.json_len += bytes.len();
    }

    /// The size of the finished JSON if a record of `json_len` bytes were added.
    fn size_with(&self, json_len: usize) -> usize {
        self.json_len + usize::from(!self.seqs.is_empty()) + json_len + TAIL.len()
    }

    fn push(&mut self, r: &PendingRecord) {
        if !self.seqs.is_empty() {
            self.write(b",");
        }
        self.write(&r.json);
        self.seqs.push(r.seq);
        if self.newest.is_empty() || r.event_time > self.newest {
            self.newest = r.event_time.clone();
        }
        if self.oldest.is_empty() || r.event_time < self.oldest {
            self.oldest = r.event_time.clone();
        }
    }

    /// Finishes the member: the file's bytes and hash are final from here on.
    fn seal(mut self, part: Part) -> SealedFile {
        self.write(TAIL);
        let gzip = self.body.finish();
        SealedFile {
            part,
            json_len: self.json_len,
            gzip,
            sha256: hex::encode(self.sha.finish()),
            seqs: self.seqs,
            newest: self.newest,
            oldest: self.oldest,
        }
    }
}

/// Below this many bytes a file is held plain: a deflate stream costs about 300 KiB of state
/// whatever it holds, so a collector with many quiet (account, region) files would pay that
/// for each. Above it the compressed bytes are smaller than the plain ones would be.
const PLAIN_LIMIT: usize = 256 << 10;

/// The bytes of an open file.
///
/// Deflating into a `Vec` has no I/O that can fail, and flate2 reports an error from the
/// compressor only for a stream used after it was finished, which `Body` never does (`finish`
/// consumes it); so a failure here is a bug, not a condition to recover from.
enum Body {
    Plain(Vec<u8>),
    Deflating(Box<GzEncoder<Vec<u8>>>),
}

impl Body {
    fn write(&mut self, bytes: &[u8]) {
        match self {
            Body::Plain(plain) if plain.len() + bytes.len() <= PLAIN_LIMIT => {
                plain.extend_from_slice(bytes);
            }
            Body::Plain(plain) => {
                let mut gz = Body::deflating(plain);
                gz.write_all(bytes)
                    .expect("deflate into memory cannot fail");
                *self = Body::Deflating(Box::new(gz));
            }
            Body::Deflating(gz) => gz
                .write_all(bytes)
                .expect("deflate into memory cannot fail"),
        }
    }

    /// The bytes held in memory (not counting the deflate state).
    fn held(&self) -> usize {
        match self {
            Body::Plain(plain) => plain.len(),
            Body::Deflating(gz) => gz.get_ref().len(),
        }
    }

    /// A gzip member in progress that starts with `plain`.
    fn deflating(plain: &[u8]) -> GzEncoder<Vec<u8>> {
        let mut gz = GzEncoder::new(
            Vec::with_capacity(plain.len() / 4 + 64),
            Compression::default(),
        );
        gz.write_all(plain)
            .expect("deflate into memory cannot fail");
        gz
    }

    /// The finished gzip member.
    fn finish(self) -> Vec<u8> {
        let gz = match self {
            Body::Plain(plain) => Body::deflating(&plain),
            Body::Deflating(gz) => *gz,
        };
        gz.finish().expect("deflate into memory cannot fail")
    }
}

/// A file whose member is finished and whose records are fixed, not yet recorded in the
/// journal.
#[derive(Debug)]
struct SealedFile {
    part: Part,
    /// Length of `{"Records":[...]}`, the bytes that were hashed and compressed.
    json_len: usize,
    /// One gzip member of the JSON.
    gzip: Vec<u8>,
    /// Hex SHA-256 of the JSON.
    sha256: String,
    seqs: Vec<u64>,
    newest: String,
    oldest: String,
}

/// Owns the open log files. Driven by [`Batcher::run`].
pub struct Batcher {
    journal: Arc<Journal>,
    layout: TrailLayout,
    /// A file closes this long after its first record.
    interval: Duration,
    /// ... or before its JSON would pass this many bytes.
    max_bytes: usize,
    /// Destination names: each closed file gets an undelivered marker for each.
    destinations: Vec<String>,
    /// Woken when a file is closed, one per destination's delivery task.
    wake: Vec<Arc<Notify>>,
    open: HashMap<Part, OpenFile>,
    /// Sealed files the journal has not recorded yet (it failed): retried on every tick.
    unrecorded: Vec<SealedFile>,
    /// Whether a trim of the journal's log is running (see `record_all`).
    trimming: Arc<std::sync::atomic::AtomicBool>,
    /// What the trail records (logging, event selectors); `None`: everything.
    control: Option<Arc<TrailControl>>,
    /// Records to pass over whose marking the journal refused: retried on every tick (they
    /// also stay pending in the journal meanwhile).
    unpassed: Vec<u64>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("open", &self.open.len())
            .field("unrecorded", &self.unrecorded.len())
            .finish_non_exhaustive()
    }
}

/// How long a sealed file the journal failed to record waits before the next attempt.
const RETRY: Duration = Duration::from_secs(1);

/// Runs CPU-bound work without stalling the async workers: on a multi-threaded runtime (the
/// collector's) the worker hands its other tasks to the rest of the pool while `f` runs.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl Batcher {
    pub fn new(
        journal: Arc<Journal>,
        layout: TrailLayout,
        interval: Duration,
        max_bytes: usize,
        destinations: Vec<String>,
        wake: Vec<Arc<Notify>>,
    ) -> Batcher {
        Batcher {
            journal,
            layout,
            interval,
            max_bytes,
            destinations,
            wake,
            open: HashMap::new(),
            unrecorded: Vec::new(),
            trimming: Arc::default(),
            control: None,
            unpassed: Vec::new(),
        }
    }

    /// Files only what `control` says the trail records; the rest is passed over
    /// ([`Journal::pass_over`]).
    pub fn with_control(mut self, control: Arc<TrailControl>) -> Batcher {
        self.control = Some(control);
        self
    }

    /// Number of records in open files.
    pub fn open_records(&self) -> usize {
        self.open.values().map(|f| f.seqs.len()).sum()
    }

    /// Bytes the open files hold in memory (compressed so far), and their uncompressed size.
    pub fn open_bytes(&self) -> (usize, usize) {
        self.open.values().fold((0, 0), |(gz, json), f| {
            (gz + f.body.held(), json + f.json_len)
        })
    }

    /// Adds committed records, closing files that would grow past `max_bytes`.
    ///
    /// Every record is added, in order; a full file is sealed and the record starts the next
    /// file of its (account, region). Sealed files are then recorded; one the journal fails to
    /// record is kept and retried (see [`Batcher::close_due`]). The first error is returned.
    pub async fn add(&mut self, records: Vec<PendingRecord>) -> Result<(), JournalError> {
        let mut passing = Ok(());
        // One state for the whole batch, read once.
        let judge = self.control.as_ref().map(|c| c.snapshot());
        let records = match judge {
            Some(j) if !j.takes_everything() => {
                let (taken, passed): (Vec<_>, Vec<_>) =
                    blocking(|| records.into_iter().partition(|r| j.takes(&r.json)));
                self.unpassed.extend(passed.iter().map(|r| r.seq));
                passing = self.pass_over_unpassed();
                taken
            }
            _ => records,
        };
        let now = Instant::now();
        let max_bytes = self.max_bytes;
        let open = &mut self.open;
        let sealed = blocking(|| {
            let mut sealed = Vec::new();
            for r in &records {
                let part = (r.account.clone(), r.region.clone(), r.kind);
                let full = open
                    .get(&part)
                    .is_some_and(|f| !f.seqs.is_empty() && f.size_with(r.json.len()) > max_bytes);
                if full && let Some(file) = open.remove(&part) {
                    sealed.push(file.seal(part.clone()));
                }
                open.entry(part)
                    .or_insert_with(|| OpenFile::new(now))
                    .push(r);
            }
            sealed
        });
        drop(records);
        let recorded = self.record_all(sealed).await.map(|_| ());
        passing.and(recorded)
    }

    /// Marks the records waiting in `unpassed` as passed over; on failure they wait for the
    /// next tick.
    fn pass_over_unpassed(&mut self) -> Result<(), JournalError> {
        if self.unpassed.is_empty() {
            return Ok(());
        }
        self.journal.pass_over(&self.unpassed)?;
        crate::metrics::metrics().records_passed_over.fetch_add(
            self.unpassed.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.unpassed.clear();
        self.trim_soon();
        Ok(())
    }

    /// When the next open file is due to close (or a failed recording to be retried).
    pub fn next_deadline(&self) -> Option<Instant> {
        let retry = (!self.unrecorded.is_empty() || !self.unpassed.is_empty())
            .then(|| Instant::now() + RETRY);
        self.open
            .values()
            .map(|f| f.opened + self.interval)
            .chain(retry)
            .min()
    }

    /// Records sealed files whose recording failed before, then closes every file whose
    /// interval has passed. Returns how many files were recorded.
    pub async fn close_due(&mut self, now: Instant) -> Result<usize, JournalError> {
        let due: Vec<_> = self
            .open
            .iter()
            .filter(|(_, f)| f.opened + self.interval <= now)
            .map(|(k, _)| k.clone())
            .collect();
        self.close_parts(due).await
    }

    /// Closes every open file (shutdown), and records any sealed file still unrecorded.
    pub async fn close_all(&mut self) -> Result<usize, JournalError> {
        let all: Vec<_> = self.open.keys().cloned().collect();
        self.close_parts(all).await
    }

    async fn close_parts(&mut self, parts: Vec<Part>) -> Result<usize, JournalError> {
        let passing = self.pass_over_unpassed();
        let mut sealed = std::mem::take(&mut self.unrecorded);
        let open = &mut self.open;
        blocking(|| {
            for part in parts {
                if let Some(file) = open.remove(&part) {
                    sealed.push(file.seal(part));
                }
            }
        });
        let recorded = self.record_all(sealed).await;
        passing.and(recorded)
    }

    /// Records every sealed file, in order; one that fails is kept for the next tick and the
    /// rest are still tried. Returns how many were recorded, or the first error.
    async fn record_all(&mut self, sealed: Vec<SealedFile>) -> Result<usize, JournalError> {
        if sealed.is_empty() {
            return Ok(0);
        }
        let mut recorded = 0;
        let mut first_error = None;
        for file in sealed {
            match self.record(file).await {
                Ok(()) => recorded += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if recorded > 0 {
            self.trim_soon();
        }
        first_error.map_or(Ok(recorded), Err)
    }

    /// Lets the filed records' log entries go. On a task of its own: a trim waits for several
    /// fsyncs, and the batcher would meanwhile stop taking records (and hold up ingest behind
    /// its queue). A failed trim only keeps the entries longer; one already running covers
    /// this one's purpose next time. (A trim flushes before it deletes anything, so passed-over
    /// records, whose filing is not flushed on its own, are durable before their entries go.)
    fn trim_soon(&self) {
        if !self
            .trimming
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let journal = self.journal.clone();
            let trimming = self.trimming.clone();
            tokio::spawn(async move {
                if let Err(e) = journal.trim().await {
                    tracing::error!("journal: trimming the log: {e}");
                }
                trimming.store(false, std::sync::atomic::Ordering::SeqCst);
            });
        }
    }

    /// Records one sealed file in the journal and flushes. On failure the file is kept in
    /// `unrecorded`, bytes and records unchanged (they also stay pending in the journal), and
    /// the next tick tries again.
    async fn record(&mut self, file: SealedFile) -> Result<(), JournalError> {
        let (account, region, kind) = &file.part;
        let key = self.layout.file_key(
            *kind,
            account,
            region,
            groundtrail_common::time::now_secs(),
            &unique16(),
        );
        let entry = FileEntry {
            key: key.clone(),
            account: account.clone(),
            region: region.clone(),
            sha256: file.sha256.clone(),
            newest_event_time: file.newest.clone(),
            oldest_event_time: file.oldest.clone(),
            records: file.seqs.len() as u64,
        };
        if let Err(e) = self
            .journal
            .close_file(&entry, &file.gzip, &file.seqs, &self.destinations)
        {
            self.unrecorded.push(file);
            return Err(e);
        }
        // Only a flushed key may reach a destination (invariant 4 of the journal).
        self.journal.flush().await?;
        LogFileClosed {
            key: &key,
            records: entry.records,
            bytes: file.json_len,
        }
        .emit();
        for w in &self.wake {
            w.notify_one();
        }
        Ok(())
    }

    /// Runs until `records` closes (every sender dropped: ingest has stopped), then closes every
    /// open file. `shutdown` is only used to stop retrying a failing journal.
    pub async fn run(
        mut self,
        mut records: mpsc::Receiver<Vec<PendingRecord>>,
        mut shutdown: Shutdown,
    ) -> Result<(), JournalError> {
        loop {
            let deadline = self
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                batch = records.recv() => match batch {
                    Some(batch) => {
                        if let Err(e) = self.add(batch).await {
                            tracing::error!("batcher: {e}; records stay pending in the journal");
                        }
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    if let Err(e) = self.close_due(Instant::now()).await {
                        tracing::error!("batcher: closing a log file failed: {e}; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY) => {}
                            _ = shutdown.recv() => {}
                        }
                    }
                }
            }
        }
        self.close_all().await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use groundtrail_common::trail::sha256_hex;
    use groundtrail_common::{Record, UserIdentity};
    use std::io::Read;

    fn record(n: u32, region: &str, time: &str) -> Record {
        let mut r = Record::new(
            "t.onprem.internal",
            "T",
            "AwsApiCall",
            region,
            "111122223333",
        );
        r.event_id = format!("00000000-0000-4000-8000-{n:012x}");
        r.event_time = time.into();
        r.user_identity = Some(UserIdentity::default());
        r
    }

    fn gunzip_one_member(gz: &[u8]) -> Vec<u8> {
        // `GzDecoder` reads exactly one member; anything after it would be left over.
        let mut d = flate2::read::GzDecoder::new(gz);
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        let rest = d.into_inner();
        assert!(rest.is_empty(), "exactly one gzip member");
        out
    }

    #[tokio::test]
    async fn files_are_per_region_single_member_and_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(&dir.path().join("j")).unwrap());
        let out = journal
            .commit(
                &[
                    record(1, "us-east-1", "2026-01-01T00:00:05Z"),
                    record(2, "us-east-1", "2026-01-01T00:00:01Z"),
                    record(3, "eu-west-1", "2026-01-01T00:00:03Z"),
                ],
                &[],
                Utc::now(),
            )
            .unwrap();
        let layout = TrailLayout::new("pfx", None);
        let mut b = Batcher::new(
            journal.clone(),
            layout,
            Duration::from_secs(300),
            1 << 20,
            vec!["d".into()],
            vec![],
        );
        b.add(out.committed).await.unwrap();
        assert_eq!(b.close_all().await.unwrap(), 2);
        assert!(journal.pending().unwrap().is_empty());
        let files = journal.undelivered("d").unwrap();
        assert_eq!(files.len(), 2);
        let us = files.iter().find(|f| f.1.region == "us-east-1").unwrap();
        let us = (us.0, us.1.clone(), journal.file_body(us.0).unwrap());
        assert!(
            us.1.key
                .starts_with("pfx/AWSLogs/111122223333/CloudTrail/us-east-1/")
        );
        assert!(us.1.key.ends_with(".json.gz"));
        let json = gunzip_one_member(&us.2);
        assert_eq!(sha256_hex(&json), us.1.sha256);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["Records"].as_array().unwrap().len(), 2);
        assert!(json.starts_with(b"{\"Records\":[{\"eventVersion\":\"1.11\""));
        assert_eq!(us.1.newest_event_time, "2026-01-01T00:00:05Z");
        assert_eq!(us.1.oldest_event_time, "2026-01-01T00:00:01Z");
    }

    /// A journal in `dir` holding `records` (committed), and a batcher over it with the
    /// default layout, 5-minute files of up to 1 MiB and one destination `d`.
    fn journal_and_batcher(
        dir: &std::path::Path,
        records: &[Record],
    ) -> (Arc<Journal>, Vec<PendingRecord>, Batcher) {
        let journal = Arc::new(Journal::open(&dir.join("j")).unwrap());
        let out = journal.commit(records, &[], Utc::now()).unwrap();
        let b = Batcher::new(
            journal.clone(),
            TrailLayout::default(),
            Duration::from_secs(300),
            1 << 20,
            vec!["d".into()],
            vec![],
        );
        (journal, out.committed, b)
    }

    /// An Insights record goes to an Insights file of its own region, never into a log file,
    /// and both are recorded for delivery alike.
    #[tokio::test]
    async fn insights_records_get_files_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut insight = record(9, "us-east-1", "2026-01-01T00:01:00Z");
        insight.event_type = "AwsCloudTrailInsight".into();
        insight.event_category = Some("Insight".into());
        insight.user_identity = None;
        let (journal, committed, mut b) = journal_and_batcher(
            dir.path(),
            &[
                record(1, "us-east-1", "2026-01-01T00:00:05Z"),
                insight,
                record(2, "us-east-1", "2026-01-01T00:00:07Z"),
            ],
        );
        b.add(committed).await.unwrap();
        assert_eq!(b.close_all().await.unwrap(), 2);
        let files = journal.undelivered("d").unwrap();
        let (logs, insights): (Vec<_>, Vec<_>) =
            files.iter().partition(|f| f.1.key.contains("/CloudTrail/"));
        assert_eq!((logs.len(), insights.len()), (1, 1));
        assert_eq!(logs[0].1.records, 2);
        let i = &insights[0].1;
        assert!(
            i.key
                .starts_with("AWSLogs/111122223333/CloudTrail-Insight/us-east-1/")
                && i.key
                    .contains("/111122223333_CloudTrail-Insight_us-east-1_"),
            "{}",
            i.key
        );
        let json = gunzip_one_member(&journal.file_body(insights[0].0).unwrap());
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["Records"][0]["eventType"], "AwsCloudTrailInsight");
        assert_eq!(v["Records"].as_array().unwrap().len(), 1);
    }

    /// With selectors, only the records they take are filed; the others are passed over
    /// (pending no more, so the log can be trimmed) and counted.
    #[tokio::test]
    async fn records_the_selectors_do_not_take_are_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = record(2, "us-east-1", "2026-01-01T00:00:02Z");
        other.event_source = "sshd.onprem.internal".into();
        let (journal, committed, b) = journal_and_batcher(
            dir.path(),
            &[
                record(1, "us-east-1", "2026-01-01T00:00:01Z"),
                other,
                record(3, "us-east-1", "2026-01-01T00:00:03Z"),
            ],
        );
        let input = serde_json::json!({"AdvancedEventSelectors": [{"FieldSelectors": [
            {"Field": "eventSource", "Equals": ["t.onprem.internal"]}
        ]}]});
        let selectors = crate::selectors::Selectors::from_api(input.as_object().unwrap()).unwrap();
        let control = Arc::new(
            TrailControl::load(
                journal.clone(),
                "groundtrail",
                crate::selectors::Selectors::everything(),
            )
            .unwrap(),
        );
        control.put_selectors(selectors).await.unwrap();
        let mut b = b.with_control(control);
        b.add(committed).await.unwrap();
        assert_eq!(b.close_all().await.unwrap(), 1);
        assert!(
            journal.pending().unwrap().is_empty(),
            "nothing left pending"
        );
        let files = journal.undelivered("d").unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].1.records, 2);
        let json = gunzip_one_member(&journal.file_body(files[0].0).unwrap());
        assert!(!String::from_utf8_lossy(&json).contains("sshd.onprem.internal"));
    }

    #[tokio::test]
    async fn size_bound_splits_files_and_interval_closes_them() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(&dir.path().join("j")).unwrap());
        let recs: Vec<_> = (0..5)
            .map(|n| record(n, "us-east-1", "2026-01-01T00:00:00Z"))
            .collect();
        let one = recs[0].to_json().len();
        let out = journal.commit(&recs, &[], Utc::now()).unwrap();
        // Room for two records per file.
        let max = HEAD.len() + 2 * one + 1 + TAIL.len();
        let mut b = Batcher::new(
            journal.clone(),
            TrailLayout::default(),
            Duration::from_secs(60),
            max,
            vec!["d".into()],
            vec![],
        );
        b.add(out.committed).await.unwrap();
        assert_eq!(
            journal.undelivered("d").unwrap().len(),
            2,
            "two full files closed"
        );
        assert_eq!(b.open_records(), 1);
        let later = Instant::now() + Duration::from_secs(61);
        assert_eq!(b.close_due(later).await.unwrap(), 1);
        let files = journal.undelivered("d").unwrap();
        assert_eq!(files.len(), 3);
        for (id, entry) in &files {
            let gz = journal.file_body(*id).unwrap();
            assert!(gunzip_one_member(&gz).len() <= max);
            assert!(entry.records >= 1);
        }
        assert_eq!(files.iter().map(|f| f.1.records).sum::<u64>(), 5);
    }

    /// A busy open file holds its records compressed, and the member it finishes is exactly the
    /// records' JSON, in order, between `{"Records":[` and `]}`, with the hash of those bytes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_files_are_held_compressed_and_finish_to_the_exact_json() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Arc::new(Journal::open(&dir.path().join("j")).unwrap());
        let recs: Vec<_> = (0..2000)
            .map(|n| record(n, "us-east-1", "2026-01-01T00:00:00Z"))
            .collect();
        let out = journal.commit(&recs, &[], Utc::now()).unwrap();
        let expected = {
            let mut b = HEAD.to_vec();
            for (i, r) in out.committed.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                b.extend_from_slice(&r.json);
            }
            b.extend_from_slice(TAIL);
            b
        };
        let mut b = Batcher::new(
            journal.clone(),
            TrailLayout::default(),
            Duration::from_secs(60),
            32 << 20,
            vec!["d".into()],
            vec![],
        );
        // A quiet file is held plain: no deflate state for a handful of records.
        let mut committed = out.committed;
        let rest = committed.split_off(10);
        b.add(std::mem::replace(&mut committed, rest))
            .await
            .unwrap();
        let (held, json) = b.open_bytes();
        assert_eq!(held, json);
        assert!(json < PLAIN_LIMIT);
        // The rest in several adds, as ingest hands them over.
        while !committed.is_empty() {
            let rest = committed.split_off(committed.len().min(300));
            b.add(std::mem::replace(&mut committed, rest))
                .await
                .unwrap();
        }
        let (gz, json) = b.open_bytes();
        assert_eq!(json, expected.len() - TAIL.len());
        assert!(
            gz * 5 < json,
            "open file holds {gz} bytes for {json} bytes of JSON"
        );
        assert_eq!(b.close_all().await.unwrap(), 1);
        let files = journal.undelivered("d").unwrap();
        assert_eq!(files.len(), 1);
        let body = gunzip_one_member(&journal.file_body(files[0].0).unwrap());
        assert!(body == expected, "the member is exactly the records' JSON");
        assert_eq!(files[0].1.sha256, sha256_hex(&expected));
        assert_eq!(files[0].1.records, 2000);
    }
}
