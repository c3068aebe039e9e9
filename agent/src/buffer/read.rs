//! Reading the head of the queue, and acknowledging it.
//!
//! Guarantees kept here (see the invariants in `mod.rs`):
//! - **Read in order, only what is durable** (invariant 4): readers stop at the highest
//!   sequence number a completed flush covers, so nothing reaches the collector that a crash
//!   could still take back and renumber.
//! - **Deleted only up to the commit point** (invariant 5): [`Buffer::ack_up_to`] removes the
//!   chunks wholly at or below the collector's commit point and records the point itself in
//!   the same batch; records `<= acked` inside a chunk still stored are skipped by every reader.
//!   The deletion is not flushed on its own: the next flush (the next append's, or shutdown's)
//!   makes it durable, and sled keeps operations in order, so what a crash can leave on disk is
//!   an earlier state of the queue, never a later one. A crash before that flush only brings
//!   committed records back; they are sent again and the collector drops them as duplicates
//!   (transport is at-least-once, DESIGN.md). An fsync per acknowledgement was a tenth of the
//!   agent's CPU at 1,000 records/s. Loss records written during the acknowledgement are
//!   flushed at once, as they must be before a reader may see them (invariant 4).
//! - **Corrupt values are removed and reported, not fatal** (invariant 8): a value met on the
//!   way that does not decode is removed, with the sequence range its header names added to
//!   the pending loss in the same batch (invariant 7).

use std::sync::atomic::Ordering;

use super::chunk::{VALUE_LINES, appended_ms_of, chunk_last, chunk_len, lines_json_bytes, live};
use super::loss::PendingLoss;
use super::{
    Buffer, BufferError, Entry, META_ACKED, META_LOSS, META_NEXT_SEQ, now_ms, rkey, seq_of,
};
use crate::ship_batch::{Batch, Segment, SegmentData};

/// A chunk read back that cannot be decoded: removed and reported as loss.
struct Corrupt {
    key: Vec<u8>,
    first: Option<u64>,
    n: u64,
    len: u64,
}

impl Buffer {
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
        // Not flushed unless loss records were written (module doc).
        if wrote {
            self.flush_now()?;
        }
        self.inner.space.notify_waiters();
        if wrote {
            self.inner.appended.notify_waiters();
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::testutil::*;
    use crate::buffer::*;
    use serde_json::json;

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
}
