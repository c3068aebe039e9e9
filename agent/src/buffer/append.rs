//! Appending: records and a source's checkpoint in one durable step, within the bound.
//!
//! Guarantees kept here (see the invariants in `mod.rs`):
//! - **Records and checkpoint are atomic** (invariant 2): one append is one `sled::Batch`
//!   holding its chunks, its checkpoint and, when there is room, the pending loss report; or
//!   one insert when it is a single chunk and nothing else (a batch would cost a second disk
//!   write and sync for its manifest).
//! - **Bounded** (invariant 6): chunks and set-aside records never exceed `max_bytes`, except
//!   that one append is always admitted into an empty queue. When full, `block` makes
//!   [`Buffer::append`] wait for space (and leaves nothing behind); `drop_newest` consumes the
//!   numbers, records the loss durably (invariant 7) and returns [`Appended::Dropped`].
//! - The append returns only after its group commit (invariant 1, `commit.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard};

use groundtrail_common::Record;

use super::loss::PendingLoss;
use super::{
    Appended, Buffer, BufferError, FullPolicy, META_LOSS, META_NEXT_SEQ, State, ckey, now_ms, rkey,
};
use crate::sink::{BoxFuture, Checkpoint, RecordSink, SinkError};

impl Buffer {
    /// Whether `extra` bytes fit under `max_bytes` (the side tree counts, invariant 6); an
    /// append into an empty queue always does, so that an oversized one cannot wedge it.
    pub(super) fn fits(&self, state: &State, extra: u64) -> bool {
        state.bytes <= state.set_aside_bytes
            || state.bytes.saturating_add(extra) <= self.inner.opts.max_bytes
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
        let mut writes = Vec::with_capacity(chunks.len() + 1);
        let mut seq = st.next_seq;
        let mut added = 0u64;
        for (v, n) in loss.into_iter().chain(chunks) {
            writes.push((rkey(seq), v));
            seq += n;
            added += n;
        }
        let n_loss = added - records.len() as u64;
        // No `next_seq` write: the chunk keys and headers carry the numbering (see open).
        match (&writes[..], checkpoint) {
            // The usual append (one chunk, nothing else) is one insert, atomic by itself: a
            // `sled::Batch` would add a manifest that sled writes and syncs on its own, a
            // second disk write and wake of its I/O threads for every acknowledged call.
            ([(key, value)], None) if n_loss == 0 => self.insert(key, value)?,
            _ => {
                let mut batch = sled::Batch::default();
                for (key, value) in writes {
                    batch.insert(&key, value);
                }
                if n_loss > 0 {
                    batch.remove(META_LOSS);
                }
                if let Some(cp) = checkpoint {
                    batch.insert(ckey(&cp.source), cp.state.as_slice());
                }
                self.apply(batch)?;
            }
        }
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
}

struct WaitingGuard<'a>(&'a AtomicU64);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
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
mod tests {
    use super::*;
    use crate::buffer::testutil::*;
    use crate::buffer::*;
    use serde_json::json;

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
}
