//! Group commit for a sled database: many concurrent "make my writes durable" calls share one
//! fsync, and at most one flush runs at a time.
//!
//! # Why not `sled::Db::flush_async`
//!
//! `flush_async` runs the blocking flush on sled's own small I/O thread pool, and a flush
//! waits for log buffers whose writes are queued on that same pool. With more concurrent
//! callers than pool threads (ten agents posting at once were enough), every pool thread sits
//! in a flush waiting for a write that no free thread can run: the collector stopped answering,
//! with no error. `groundtrail-bench`'s fan-in scenario found it. Here a flush is one blocking
//! `Db::flush` on tokio's blocking pool, and concurrent callers wait for it instead of starting
//! their own, so the sled pool only ever sees one flush.
//!
//! # Guarantee
//!
//! [`GroupFlush::flush`] returns `Ok` only after a flush that *started after the call began*
//! has completed, so every write made before the call is durable. Flushes are numbered as they
//! start and complete in that order (one at a time); a caller that finds a flush numbered
//! above the count it saw on entry already completed is covered by it and returns at once.
//!
//! # A stuck store
//!
//! sled keeps the first I/O error of its write path (a full disk, EIO) as a global error and
//! fails every later operation with it until the database is opened again (sled 0.34:
//! `Config::set_global_error`, reset only by `open`). A failed flush is therefore followed at
//! once by a second one: when that fails too, the store is *stuck* for the life of the process
//! and [`GroupFlush::stuck`] says so with the error. A commit can also fail before any flush
//! (the journal's log append on a full disk): after [`STUCK_AFTER`] such failures in a row,
//! with no success between them ([`GroupFlush::write_failed`]), the store counts as stuck too.
//! [`crate::store_health`] acts on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Consecutive failed writes ([`GroupFlush::write_failed`]) after which a store is stuck.
pub const STUCK_AFTER: u32 = 3;

/// Shared by every writer of one sled database.
#[derive(Debug)]
pub struct GroupFlush {
    db: sled::Db,
    /// Flushes started so far; a flush's number is the count after it started.
    started: AtomicU64,
    /// The number of the newest completed flush.
    completed: AtomicU64,
    /// Held while a flush runs: the others wait here and usually find themselves covered.
    running: tokio::sync::Mutex<()>,
    /// The error that left the store stuck (see the module doc), once it is.
    stuck: std::sync::OnceLock<String>,
    /// Failed writes in a row (see the module doc).
    failed_writes: std::sync::atomic::AtomicU32,
}

impl GroupFlush {
    pub fn new(db: sled::Db) -> Arc<GroupFlush> {
        Arc::new(GroupFlush {
            db,
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            running: tokio::sync::Mutex::new(()),
            stuck: std::sync::OnceLock::new(),
            failed_writes: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// A write (an applied batch) of this store succeeded.
    pub fn write_succeeded(&self) {
        self.failed_writes.store(0, Ordering::SeqCst);
    }

    /// A write of this store (the journal's log appends) failed with an I/O error; the
    /// [`STUCK_AFTER`]th in a row makes it stuck, so a log on a full disk stops the collector.
    pub fn write_failed(&self, error: &str) {
        if self.failed_writes.fetch_add(1, Ordering::SeqCst) + 1 >= STUCK_AFTER {
            let _ = self.stuck.set(error.to_string());
        }
    }

    /// Marks the store stuck from outside (a probe flush that never returned, see
    /// [`crate::store_health`]); the first error set stays.
    pub fn mark_stuck(&self, error: String) {
        let _ = self.stuck.set(error);
    }

    /// The error that left the store stuck, once a flush and the retry right after it failed.
    pub fn stuck(&self) -> Option<&str> {
        self.stuck.get().map(String::as_str)
    }

    /// Makes every write made before this call durable.
    pub async fn flush(&self) -> sled::Result<()> {
        let seen = self.started.load(Ordering::SeqCst);
        let _running = self.running.lock().await;
        if self.completed.load(Ordering::SeqCst) > seen {
            return Ok(());
        }
        let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || flush_twice(&db))
            .await
            .map_err(|e| (sled::Error::ReportableBug(format!("flush task: {e}")), None))
            .and_then(|r| r);
        self.finish(number, result)
    }

    /// [`GroupFlush::flush`] for a thread outside the tokio runtime (the store-health
    /// watch): blocks the calling thread, which must not be a runtime thread.
    pub fn flush_blocking(&self) -> sled::Result<()> {
        let seen = self.started.load(Ordering::SeqCst);
        let _running = self.running.blocking_lock();
        if self.completed.load(Ordering::SeqCst) > seen {
            return Ok(());
        }
        let number = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        self.finish(number, flush_twice(&self.db))
    }

    fn finish(
        &self,
        number: u64,
        result: Result<usize, (sled::Error, Option<sled::Error>)>,
    ) -> sled::Result<()> {
        match result {
            Ok(_) => {
                self.completed.store(number, Ordering::SeqCst);
                Ok(())
            }
            Err((first, again)) => {
                if let Some(again) = again {
                    let _ = self.stuck.set(again.to_string());
                }
                Err(first)
            }
        }
    }
}

/// One blocking flush, retried once: a store that fails again keeps failing (see the module
/// doc).
fn flush_twice(db: &sled::Db) -> Result<usize, (sled::Error, Option<sled::Error>)> {
    match db.flush() {
        Ok(n) => Ok(n),
        Err(first) => db.flush().map_err(|again| (first, Some(again))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many more concurrent flushers than sled has I/O threads, each after its own write: all
    /// return, and everything written is there after a reopen. With `flush_async` in place of
    /// `GroupFlush::flush` this hangs so hard that the runtime's own timers stop, so the work
    /// runs on a thread of its own and the test gives up waiting on a plain channel.
    #[test]
    fn many_concurrent_flushes_finish_and_cover_their_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let (done, finished) = std::sync::mpsc::channel();
        let work_path = path.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(4)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let db = sled::Config::new().path(&work_path).open().unwrap();
                let flusher = GroupFlush::new(db.clone());
                let mut tasks = Vec::new();
                for t in 0..64u32 {
                    let (db, flusher) = (db.clone(), flusher.clone());
                    tasks.push(tokio::spawn(async move {
                        for i in 0..20u32 {
                            let k = [t.to_be_bytes(), i.to_be_bytes()].concat();
                            db.insert(k, vec![7u8; 4096]).unwrap();
                            flusher.flush().await.unwrap();
                        }
                    }));
                }
                for task in tasks {
                    task.await.unwrap();
                }
            });
            done.send(()).unwrap();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("concurrent flushes hung");
        let db = sled::Config::new().path(&path).open().unwrap();
        assert_eq!(db.len(), 64 * 20);
    }
}
