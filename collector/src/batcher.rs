//! Turns committed records into CloudTrail log files.
//!
//! There is one open file per (account, region), held in memory; its records are also pending
//! in the journal, so losing the memory (a crash) loses nothing: the next start reloads them.
//! A file closes `[trail] log_file_interval` after its first record or before its uncompressed JSON
//! would pass `max_bytes`, whichever comes first.
//!
//! Closing is where exactly-once delivery is decided. The file's bytes are built once
//! (`{"Records":[...]}` compact, one gzip member), its key is chosen
//! (`TrailLayout::log_file_key` with a fresh `unique16`), and key, bytes and hash are recorded
//! in the journal in the same atomic batch that removes its records from the pending set
//! ([`Journal::close_file`]), then flushed. Only after that can any destination see the key.
//! A crash before the flush leaves the records pending (the file is rebuilt under a new key
//! that was never uploaded); a crash after it re-uploads the same key with the same bytes.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use groundtrail_common::shutdown::Shutdown;
use groundtrail_common::trail::{TrailLayout, sha256_hex, unique16};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::internal_events::{InternalEvent, LogFileClosed};
use crate::journal::{FileEntry, Journal, JournalError, PendingRecord};

/// The open log file of one (account, region).
#[derive(Debug)]
struct OpenFile {
    opened: Instant,
    seqs: Vec<u64>,
    /// `{"Records":[` followed by the records so far, comma-separated.
    body: Vec<u8>,
    newest: String,
    oldest: String,
}

const HEAD: &[u8] = b"{\"Records\":[";
const TAIL: &[u8] = b"]}";

impl OpenFile {
    fn new(now: Instant) -> OpenFile {
        OpenFile {
            opened: now,
            seqs: Vec::new(),
            body: HEAD.to_vec(),
            newest: String::new(),
            oldest: String::new(),
        }
    }

    /// The size of the finished JSON if `json` were added.
    fn size_with(&self, json: &[u8]) -> usize {
        self.body.len() + usize::from(!self.seqs.is_empty()) + json.len() + TAIL.len()
    }

    fn push(&mut self, r: &PendingRecord) {
        if !self.seqs.is_empty() {
            self.body.push(b',');
        }
        self.body.extend_from_slice(&r.json);
        self.seqs.push(r.seq);
        if self.newest.is_empty() || r.event_time > self.newest {
            self.newest = r.event_time.clone();
        }
        if self.oldest.is_empty() || r.event_time < self.oldest {
            self.oldest = r.event_time.clone();
        }
    }
}

/// A finished log file: the uncompressed JSON, its gzip and hash.
#[derive(Debug, Clone)]
pub struct BuiltFile {
    /// `{"Records":[...]}` exactly as hashed.
    pub json: Vec<u8>,
    /// One gzip member of `json`.
    pub gzip: Vec<u8>,
    /// Hex SHA-256 of `json`.
    pub sha256: String,
}

/// Builds the bytes of a log file from its `{"Records":[...` prefix.
pub fn build_file(mut body: Vec<u8>) -> std::io::Result<BuiltFile> {
    body.extend_from_slice(TAIL);
    let sha256 = sha256_hex(&body);
    let mut enc = GzEncoder::new(
        Vec::with_capacity(body.len() / 8 + 64),
        Compression::default(),
    );
    enc.write_all(&body)?;
    let gzip = enc.finish()?;
    Ok(BuiltFile {
        json: body,
        gzip,
        sha256,
    })
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
    open: HashMap<(String, String), OpenFile>,
    /// The event history's indexer: every record added is sent there.
    history: Option<mpsc::Sender<crate::history::IndexMsg>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("open", &self.open.len())
            .finish_non_exhaustive()
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
            history: None,
        }
    }

    /// Sends every record added to the history indexer (see [`crate::history::Indexer`]).
    pub fn with_history(mut self, indexer: mpsc::Sender<crate::history::IndexMsg>) -> Batcher {
        self.history = Some(indexer);
        self
    }

    /// Hands records to the history indexer. A stopped indexer is logged, not returned: the
    /// history is a read model, and a broken index must not stop the trail.
    async fn index(&self, records: &[PendingRecord]) {
        let Some(tx) = &self.history else {
            return;
        };
        let jsons: Vec<Vec<u8>> = records.iter().map(|r| r.json.clone()).collect();
        if tx
            .send(crate::history::IndexMsg::Records(jsons))
            .await
            .is_err()
        {
            tracing::error!("event history indexer has stopped");
        }
    }

    /// Number of records in open files.
    pub fn open_records(&self) -> usize {
        self.open.values().map(|f| f.seqs.len()).sum()
    }

    /// Adds committed records, closing files that would grow past `max_bytes`.
    ///
    /// Every record is added even when closing a full file fails: that file then stays open
    /// (and over its size bound) until a later close succeeds, rather than leaving records
    /// pending in the journal with no open file to carry them. The first error is returned.
    pub async fn add(&mut self, records: Vec<PendingRecord>) -> Result<(), JournalError> {
        self.index(&records).await;
        let now = Instant::now();
        let mut first_error = None;
        for r in records {
            let part = (r.account.clone(), r.region.clone());
            let full = self
                .open
                .get(&part)
                .is_some_and(|f| !f.seqs.is_empty() && f.size_with(&r.json) > self.max_bytes);
            if full && let Err(e) = self.close(&part).await {
                first_error.get_or_insert(e);
            }
            self.open
                .entry(part)
                .or_insert_with(|| OpenFile::new(now))
                .push(&r);
        }
        first_error.map_or(Ok(()), Err)
    }

    /// When the next open file is due to close.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|f| f.opened + self.interval).min()
    }

    /// Closes every file whose interval has passed.
    pub async fn close_due(&mut self, now: Instant) -> Result<usize, JournalError> {
        let due: Vec<_> = self
            .open
            .iter()
            .filter(|(_, f)| f.opened + self.interval <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for part in &due {
            self.close(part).await?;
        }
        Ok(due.len())
    }

    /// Closes every open file (shutdown).
    pub async fn close_all(&mut self) -> Result<usize, JournalError> {
        let all: Vec<_> = self.open.keys().cloned().collect();
        for part in &all {
            self.close(part).await?;
        }
        Ok(all.len())
    }

    /// Builds, records and flushes one file. On failure the file stays open (its records stay
    /// pending in the journal either way) and the next attempt builds it afresh.
    async fn close(&mut self, part: &(String, String)) -> Result<(), JournalError> {
        let Some(file) = self.open.remove(part) else {
            return Ok(());
        };
        if file.seqs.is_empty() {
            return Ok(());
        }
        let body = file.body.clone();
        let built = match tokio::task::spawn_blocking(move || build_file(body)).await {
            Ok(Ok(built)) => built,
            failed => {
                self.open.insert(part.clone(), file);
                return Err(JournalError::Other(match failed {
                    Ok(Err(e)) => format!("gzip failed: {e}"),
                    Err(e) => format!("gzip task failed: {e}"),
                    Ok(Ok(_)) => String::new(),
                }));
            }
        };
        // The history entries of these records become durable before the file is recorded:
        // a crash after this point cannot leave filed records out of the history.
        if let Some(tx) = &self.history {
            let (done, wait) = tokio::sync::oneshot::channel();
            if tx
                .send(crate::history::IndexMsg::Barrier(done))
                .await
                .is_err()
                || wait.await.is_err()
            {
                tracing::error!("event history indexer has stopped");
            }
        }
        let (account, region) = part;
        let key = self.layout.log_file_key(
            account,
            region,
            groundtrail_common::time::now_secs(),
            &unique16(),
        );
        let entry = FileEntry {
            key: key.clone(),
            account: account.clone(),
            region: region.clone(),
            sha256: built.sha256.clone(),
            newest_event_time: file.newest.clone(),
            oldest_event_time: file.oldest.clone(),
            records: file.seqs.len() as u64,
        };
        let recorded = self
            .journal
            .close_file(&entry, &built.gzip, &file.seqs, &self.destinations);
        if let Err(e) = recorded {
            self.open.insert(part.clone(), file);
            return Err(e);
        }
        // Only a flushed key may reach a destination (invariant 4 of the journal).
        self.journal.flush().await?;
        LogFileClosed {
            key: &key,
            records: entry.records,
            bytes: built.json.len(),
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
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
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
}
