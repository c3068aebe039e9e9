//! Group commit, and noticing a store that fails.
//!
//! Guarantees kept here (see the invariants in `mod.rs`):
//! - **Acknowledged means flushed** (invariant 1): [`Buffer::flush_through`] returns only once
//!   a completed flush covers the caller's sequence number. Concurrent appenders share one
//!   flush: the first to take the flush lock flushes (after `flush_delay`) for everyone
//!   waiting, the others find their data already durable.
//! - **A stuck store is detected** (invariant 10): every failed write or flush goes through
//!   [`Buffer::note`], which remembers the first error; a successful flush clears it and puts
//!   the episode in the pending loss (a `BufferStorageFailure` record). [`Buffer::stuck`] tells
//!   the watchdog when writes have been failing for longer than `stuck_after`.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::{Buffer, BufferError, META_LOSS, META_PROBE, now_ms};

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

impl Buffer {
    /// Waits until every write applied so far with a sequence number `<= seq` is on disk;
    /// concurrent callers share one flush (group commit).
    pub(super) fn flush_through(&self, seq: u64) -> Result<(), BufferError> {
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
    pub(super) fn flush_now(&self) -> Result<(), BufferError> {
        let _leader = self
            .inner
            .flush_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.flush_locked()
    }

    pub(super) fn flush_locked(&self) -> Result<(), BufferError> {
        let target = self.inner.written.load(Ordering::Acquire);
        let r = self.inner.db.flush();
        self.note(r)?;
        self.inner.durable.fetch_max(target, Ordering::AcqRel);
        self.storage_recovered();
        Ok(())
    }

    /// Applies a batch to the tree, noting a failure (invariant 10).
    pub(super) fn apply(&self, batch: sled::Batch) -> Result<(), BufferError> {
        let r = self.inner.tree.apply_batch(batch);
        self.note(r)
    }

    /// Inserts one key, noting a failure (invariant 10).
    pub(super) fn insert(&self, key: &[u8], value: &[u8]) -> Result<(), BufferError> {
        let r = self.inner.tree.insert(key, value).map(drop);
        self.note(r)
    }

    /// Passes a storage result on, remembering a failure (invariant 10).
    pub(super) fn note<T>(&self, r: Result<T, sled::Error>) -> Result<T, BufferError> {
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
    pub(super) fn storage_recovered(&self) {
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
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::buffer::testutil::*;
    use crate::buffer::*;

    /// Invariants 1 and 3 across a real crash: a child process appends, reports each
    /// acknowledged append, and aborts without any clean shutdown; everything acknowledged is
    /// there afterwards, and numbering continues above it. Every other append has no
    /// checkpoint, so both ways an append is written are covered: one batch, and the lone
    /// insert of a chunk (what PutAuditEvents does).
    #[test]
    fn acknowledged_appends_survive_a_crash() {
        if let Ok(dir) = std::env::var("GT_BUFFER_CRASH_CHILD") {
            let (b, _) = open(Path::new(&dir), 1 << 24, FullPolicy::Block);
            for i in 0..50u64 {
                let checkpoint = (i % 2 == 0).then(|| cp("src", &i.to_string()));
                b.try_append(&[rec(i), rec(i + 1000)], checkpoint.as_ref())
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
                "buffer::commit::tests::acknowledged_appends_survive_a_crash",
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
        assert_eq!(b.get_checkpoint("src").unwrap().unwrap(), b"48");
        let last = entries.last().unwrap().seq;
        let Appended::Stored(Some((s, _))) = b.try_append(&[rec(0)], None).unwrap() else {
            panic!()
        };
        assert!(s > last);
    }
}
