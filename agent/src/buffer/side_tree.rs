//! The side tree: records the collector refuses, moved out of the queue's way.
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
//! Setting aside a record inside a chunk rewrites the chunk without it, in the batch that
//! writes its `x` key (invariant 5 in `mod.rs`).

use std::sync::atomic::Ordering;

use super::chunk::{MAX_CHUNK_RECORDS, chunk_last, chunk_len};
use super::loss::Rejected;
use super::{
    Buffer, BufferError, BufferOptions, Entry, K_ASIDE, META_LOSS, META_NEXT_SEQ, now_ms, rkey,
    seq_of, xkey,
};

/// Most refused records described in one pending loss.
const MAX_REJECTED: usize = 64;
/// The side tree never takes more than this share of `max_bytes` (1/4), so that refused
/// records cannot crowd out the queue.
const SET_ASIDE_SHARE: u64 = 4;

impl BufferOptions {
    /// The side tree's effective bound.
    pub fn set_aside_limit(&self) -> u64 {
        self.set_aside_max_bytes
            .min(self.max_bytes / SET_ASIDE_SHARE)
    }
}

impl Buffer {
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
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::buffer::testutil::*;
    use crate::buffer::*;

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
        let (b, _) = open_with(&path, o);
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
