//! Pending loss, and the agent's own records that report it.
//!
//! Guarantee kept here: **loss is recorded, durably, then reported** (invariant 7 in
//! `mod.rs`). Whatever loses records (a drop under `drop_newest`, a corrupt value removed, a
//! directory quarantined, a record set aside, a storage failure that is over) adds itself to
//! [`PendingLoss`] under `m loss` in the same batch that makes the loss happen. As soon as
//! there is room, [`Buffer::write_loss_locked`] turns it into records (`RecordsDropped`,
//! `BufferCorruption`, `RecordsRejected`, `BufferStorageFailure`, built with
//! `HostIdentity::agent_record` like every record of the agent's own, see `agent_events`) and
//! clears it in one batch, so a crash in between loses neither the loss nor its report.
//!
//! The records are built here rather than in `agent_events` because they are a view of
//! [`PendingLoss`]; `agent_events` would otherwise depend on the buffer that depends on it.

use std::sync::atomic::Ordering;

use groundtrail_common::Record;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::commit::StorageFailure;
use super::{Buffer, BufferError, FullPolicy, META_LOSS, SeqRange, State, now_ms, rkey};
use crate::host_identity::HostIdentity;

/// Most sequence ranges kept per loss kind; beyond, only counts grow (`rangesTruncated`).
const MAX_RANGES: usize = 64;

/// A record the collector refused and the shipper moved aside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    pub seq: u64,
    #[serde(rename = "eventID", skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub error_code: String,
    pub message: String,
    /// Whether it is kept in the side tree (false: the side tree was full, the record is gone).
    #[serde(default = "yes")]
    pub kept: bool,
}

fn yes() -> bool {
    true
}

/// A buffer directory moved aside because it could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quarantined {
    pub path: String,
    pub error: String,
}

/// Loss known but not yet written to the trail (persisted under `m loss`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PendingLoss {
    pub dropped: u64,
    pub dropped_ranges: Vec<SeqRange>,
    pub corrupt: u64,
    pub corrupt_ranges: Vec<SeqRange>,
    pub ranges_truncated: bool,
    pub rejected: Vec<Rejected>,
    pub rejected_truncated: u64,
    pub quarantined: Vec<Quarantined>,
    /// A storage failure that is over, not yet written to the trail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_failure: Option<StorageFailure>,
}

impl PendingLoss {
    pub(super) fn is_empty(&self) -> bool {
        self.dropped == 0
            && self.corrupt == 0
            && self.rejected.is_empty()
            && self.rejected_truncated == 0
            && self.quarantined.is_empty()
            && self.storage_failure.is_none()
    }

    pub(super) fn add_range(ranges: &mut Vec<SeqRange>, truncated: &mut bool, r: SeqRange) {
        if let Some(last) = ranges.last_mut()
            && last.1.checked_add(1) == Some(r.0)
        {
            last.1 = r.1;
            return;
        }
        if ranges.len() < MAX_RANGES {
            ranges.push(r);
        } else {
            *truncated = true;
        }
    }

    /// The agent records that report this loss.
    fn records(&self, id: &HostIdentity, policy: FullPolicy, max_bytes: u64) -> Vec<Record> {
        let mut out = Vec::new();
        if self.dropped > 0 {
            out.push(id.agent_record(
                "RecordsDropped",
                json!({
                    "host": id.host,
                    "count": self.dropped,
                    "seqRanges": self.dropped_ranges,
                    "rangesTruncated": self.ranges_truncated,
                    "reason": "buffer full",
                    "fullPolicy": match policy { FullPolicy::Block => "block", FullPolicy::DropNewest => "drop_newest" },
                    "maxBytes": max_bytes,
                }),
            ));
        }
        if self.corrupt > 0 || !self.quarantined.is_empty() {
            out.push(id.agent_record(
                "BufferCorruption",
                json!({
                    "host": id.host,
                    "corruptEntries": self.corrupt,
                    "seqRanges": self.corrupt_ranges,
                    "rangesTruncated": self.ranges_truncated,
                    "quarantined": self.quarantined,
                    "lostUnknown": !self.quarantined.is_empty(),
                }),
            ));
        }
        if !self.rejected.is_empty() || self.rejected_truncated > 0 {
            out.push(id.agent_record(
                "RecordsRejected",
                json!({
                    "host": id.host,
                    "count": self.rejected.len() as u64 + self.rejected_truncated,
                    "records": self.rejected,
                    "setAside": "records with kept=true wait in the agent's side tree under their sequence number and are resent when the collector accepts them (groundtrail-agent resend-set-aside)",
                }),
            ));
        }
        if let Some(f) = &self.storage_failure {
            let mut params = serde_json::to_value(f).unwrap_or_default();
            if let Some(o) = params.as_object_mut() {
                o.insert("host".into(), json!(id.host));
            }
            out.push(id.agent_record("BufferStorageFailure", params));
        }
        out
    }
}

impl Buffer {
    /// Encodes the pending-loss records as one chunk (to go at `state.next_seq`). Returns the
    /// value and its record count; nothing is changed.
    pub(super) fn loss_chunk(
        &self,
        state: &State,
        now: u64,
    ) -> Result<Option<(Vec<u8>, u64)>, BufferError> {
        if state.loss.is_empty() {
            return Ok(None);
        }
        let records = state.loss.records(
            &self.inner.id,
            self.inner.opts.full_policy,
            self.inner.opts.max_bytes,
        );
        if records.is_empty() {
            return Ok(None);
        }
        let jsons: Vec<Vec<u8>> = records.iter().map(Record::to_json).collect();
        Ok(Some((self.encode_chunk(&jsons, now)?, jsons.len() as u64)))
    }

    /// Writes the pending loss as records if it fits. The caller flushes.
    pub(super) fn write_loss_locked(&self, st: &mut State, now: u64) -> Result<bool, BufferError> {
        let Some((value, n)) = self.loss_chunk(st, now)? else {
            return Ok(false);
        };
        let bytes = value.len() as u64;
        if !self.fits(st, bytes) {
            return Ok(false);
        }
        let mut batch = sled::Batch::default();
        batch.insert(&rkey(st.next_seq), value);
        batch.remove(META_LOSS);
        self.apply(batch)?;
        let seq = st.next_seq + n;
        st.next_seq = seq;
        st.bytes += bytes;
        st.count += n;
        st.loss = PendingLoss::default();
        self.inner.written.fetch_max(seq - 1, Ordering::AcqRel);
        Ok(true)
    }

    /// Writes pending loss records now if there is room, and flushes.
    pub fn report_loss(&self) -> Result<(), BufferError> {
        let mut st = self.state();
        let wrote = self.write_loss_locked(&mut st, now_ms())?;
        drop(st);
        self.flush_now()?;
        if wrote {
            self.inner.appended.notify_waiters();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::testutil::id;

    /// Every kind of loss the buffer knows becomes one valid CloudTrail record of the agent's
    /// own, naming the host and the numbers concerned; an empty pending loss becomes none.
    #[test]
    fn every_kind_of_loss_is_one_valid_record() {
        assert!(PendingLoss::default().is_empty());
        assert!(
            PendingLoss::default()
                .records(&id(), FullPolicy::Block, 1)
                .is_empty()
        );
        let mut ranges = Vec::new();
        let mut truncated = false;
        PendingLoss::add_range(&mut ranges, &mut truncated, (5, 6));
        PendingLoss::add_range(&mut ranges, &mut truncated, (7, 9));
        assert_eq!(ranges, vec![(5, 9)], "adjacent ranges merge");
        let loss = PendingLoss {
            dropped: 5,
            dropped_ranges: ranges,
            corrupt: 1,
            corrupt_ranges: vec![(20, 20)],
            rejected: vec![Rejected {
                seq: 30,
                event_id: Some("e-30".into()),
                error_code: "InvalidData".into(),
                message: "no".into(),
                kept: false,
            }],
            quarantined: vec![Quarantined {
                path: "/var/lib/x.quarantined-1".into(),
                error: "corrupt".into(),
            }],
            storage_failure: Some(StorageFailure {
                error: "EIO".into(),
                since_ms: 1,
                failed_operations: 2,
                recovered_ms: Some(3),
            }),
            ..PendingLoss::default()
        };
        assert!(!loss.is_empty());
        let records = loss.records(&id(), FullPolicy::DropNewest, 1 << 20);
        let names: Vec<&str> = records.iter().map(|r| r.event_name.as_str()).collect();
        assert_eq!(
            names,
            [
                "RecordsDropped",
                "BufferCorruption",
                "RecordsRejected",
                "BufferStorageFailure"
            ]
        );
        for r in &records {
            r.validate().unwrap();
            let p = r.request_parameters.as_ref().unwrap();
            assert_eq!(p["host"], "test-host", "{}", r.event_name);
        }
        let p = |i: usize| records[i].request_parameters.clone().unwrap();
        assert_eq!(p(0)["seqRanges"], json!([[5, 9]]));
        assert_eq!(p(0)["fullPolicy"], "drop_newest");
        assert_eq!(p(1)["lostUnknown"], true);
        assert_eq!(p(2)["records"][0]["eventID"], "e-30");
        assert_eq!(p(2)["records"][0]["kept"], false);
        assert_eq!(p(3)["failedOperations"], 2);
    }
}
