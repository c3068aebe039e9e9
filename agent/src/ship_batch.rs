//! A batch as the shipper sends it: the head of the buffer as runs of records, each run either
//! a chunk's stored zstd frame, sent as it is, or records decoded from a chunk.
//!
//! # Why stored frames are sent as they are
//!
//! The buffer stores each append as one chunk whose zstd frame holds the records as ndjson
//! (`VALUE_LINES`, see `buffer`): exactly what the collector's `POST /v1/events` takes. A zstd
//! body made of concatenated frames decodes as the concatenation of their contents (the
//! collector's decoder reads frame after frame, and its `max_decompressed_bytes` cap counts the
//! whole body). So a batch of whole chunks is their stored frames one after the other, with no
//! decompression and no compression in the agent: that was ~7 us of ~42 us per record at 1k
//! records/s (BENCHMARKS.md). The wire protocol is unchanged (a collector that decoded one frame
//! per body would have refused such a body with `InvalidData`; ours never did: the stream
//! decoder it uses reads every frame), so old agents and old collectors keep working.
//!
//! # What is sent as stored, and what is not
//!
//! A chunk goes out as its stored frame ([`SegmentData::Stored`]) only if the batch takes all of
//! its records. Its records are decoded and the part the batch takes is compressed again
//! ([`SegmentData::Records`]) when:
//!
//! - some of its records are already acknowledged (a partial commit point, a batch limit that
//!   ended inside it last time);
//! - the batch's record or byte limit ends inside it and the batch holds nothing before it (a
//!   batch that already has records ends before such a chunk instead, and counts as full:
//!   cutting it would cost a decompression and two compressions for a few records more);
//! - part of it is not durable yet (never, since an append is flushed whole, but not assumed);
//! - it is in an earlier format (`VALUE_SINGLE`, `VALUE_CHUNK`);
//! - the shipper asked for decoded records: while it narrows down a refused batch (a smaller
//!   `max_records` than configured), every chunk is decoded by the buffer.
//!
//! # Why the shipper's guarantees are unchanged
//!
//! - **The head of the buffer, in order, within the limits.** [`crate::buffer::Buffer::read_batch`]
//!   takes the records [`crate::buffer::Buffer::read_from`] would (the same start, durability
//!   cut, corrupt chunks removed on the way), or a prefix of them when the batch ends at a chunk
//!   boundary; never more than `batch_max_records` and about `batch_max_bytes` of JSON.
//! - **Sequence headers.** A stored chunk's records are `first ..= first + n - 1` from its key
//!   and header; chunks hold contiguous numbers (a set-aside rewrites a chunk in two), and
//!   [`Batch::cut_at_hole`] ends the batch at the first gap between runs, so
//!   `X-Groundtrail-Seq-First..Last` still describes a contiguous run.
//! - **Line numbers.** Every record is one line (`VALUE_LINES` is written only for records
//!   without a newline byte) and no line is empty, so the collector's line `N` is the record
//!   `first + N - 1` ([`Batch::seq_at_line`]), as before.
//! - **Damage.** A stored frame is not decompressed by the agent, so a damaged one (content
//!   checksum) is found by the collector, which refuses the batch with `InvalidData` and no
//!   line; the shipper then sends one record per batch, decoded by the buffer, which removes
//!   and reports the damaged chunk (buffer invariant 8) instead of ever sending it again. A
//!   damaged chunk therefore costs one refused request more than before, never a record.

use crate::buffer::CHUNK_HEADER;

/// zstd level of the frames the shipper builds itself (decoded runs): as before this module.
const ZSTD_LEVEL: i32 = 3;

/// A run of consecutive records of one chunk.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Sequence number of its first record.
    pub first: u64,
    /// Records in it (>= 1).
    pub n: u64,
    /// When its chunk was appended (unix milliseconds).
    pub appended_ms: u64,
    /// Bytes of its records' JSON, without newlines.
    pub json_bytes: usize,
    pub data: SegmentData,
}

/// How a run's records are held.
#[derive(Debug, Clone)]
pub enum SegmentData {
    /// A whole `VALUE_LINES` chunk as stored: header, then its zstd frame of ndjson.
    Stored(sled::IVec),
    /// Records decoded from a chunk: their compact JSON.
    Records(Vec<Vec<u8>>),
}

/// The head of the buffer, in sequence order.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub segments: Vec<Segment>,
    /// The read stopped at the record or byte limit (not at the end of what is durable): the
    /// batch is as full as it gets, even if it holds fewer records than the limit because it
    /// ended at a chunk boundary.
    pub full: bool,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.segments.iter().map(|s| s.n as usize).sum()
    }

    /// Bytes of the records' JSON, without newlines.
    pub fn json_bytes(&self) -> usize {
        self.segments.iter().map(|s| s.json_bytes).sum()
    }

    /// First sequence number (0 when empty).
    pub fn first(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.first)
    }

    /// Last sequence number (0 when empty).
    pub fn last(&self) -> u64 {
        self.segments
            .last()
            .map_or(0, |s| s.first + s.n.saturating_sub(1))
    }

    /// When the oldest record was appended.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.segments.first().map(|s| s.appended_ms)
    }

    /// Records sent as stored frames (the rest are compressed by the shipper).
    pub fn stored_records(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| matches!(s.data, SegmentData::Stored(_)))
            .map(|s| s.n)
            .sum()
    }

    /// Ends the batch at the first gap in the sequence numbers (see the module docs). Returns
    /// whether it cut anything.
    pub fn cut_at_hole(&mut self) -> bool {
        let cut = self
            .segments
            .windows(2)
            .position(|w| w[1].first != w[0].first + w[0].n);
        if let Some(i) = cut {
            self.segments.truncate(i + 1);
        }
        cut.is_some()
    }

    /// The sequence number of the body's 1-based line `line`, if the batch has it.
    pub fn seq_at_line(&self, line: usize) -> Option<u64> {
        (line >= 1 && line <= self.len()).then(|| self.first() + line as u64 - 1)
    }

    /// Sum over the records `<= commit` of how long they waited (`now` minus append time).
    pub fn lag_sum(&self, now: u64, commit: u64) -> u64 {
        self.segments
            .iter()
            .map(|s| {
                let upto = (s.first + s.n - 1).min(commit);
                let n = if upto < s.first {
                    0
                } else {
                    upto - s.first + 1
                };
                n * now.saturating_sub(s.appended_ms)
            })
            .sum()
    }

    /// The request body: ndjson, zstd-compressed if `compress`. Stored frames are copied as
    /// they are; each run of decoded records becomes one frame of its own.
    pub fn body(&self, compress: bool) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let flush = |pending: &mut Vec<u8>, out: &mut Vec<u8>| -> std::io::Result<()> {
            if !pending.is_empty() {
                out.extend_from_slice(&zstd::bulk::compress(pending, ZSTD_LEVEL)?);
                pending.clear();
            }
            Ok(())
        };
        for s in &self.segments {
            match &s.data {
                SegmentData::Stored(v) => {
                    let frame = &v[CHUNK_HEADER..];
                    if compress {
                        flush(&mut pending, &mut out)?;
                        out.extend_from_slice(frame);
                    } else {
                        let ndjson = s.json_bytes + s.n as usize;
                        out.extend_from_slice(&zstd::bulk::decompress(frame, ndjson)?);
                    }
                }
                SegmentData::Records(jsons) => {
                    let to = if compress { &mut pending } else { &mut out };
                    for j in jsons {
                        to.extend_from_slice(j);
                        to.push(b'\n');
                    }
                }
            }
        }
        flush(&mut pending, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(first: u64, jsons: &[&str]) -> Segment {
        Segment {
            first,
            n: jsons.len() as u64,
            appended_ms: 1_000,
            json_bytes: jsons.iter().map(|j| j.len()).sum(),
            data: SegmentData::Records(jsons.iter().map(|j| j.as_bytes().to_vec()).collect()),
        }
    }

    fn stored(first: u64, jsons: &[&str]) -> Segment {
        let ndjson: String = jsons.iter().map(|j| format!("{j}\n")).collect();
        let mut v = vec![crate::buffer::VALUE_LINES];
        v.extend_from_slice(&2_000u64.to_be_bytes());
        v.extend_from_slice(&(jsons.len() as u32).to_be_bytes());
        v.extend(zstd::bulk::compress(ndjson.as_bytes(), 1).unwrap());
        Segment {
            first,
            n: jsons.len() as u64,
            appended_ms: 2_000,
            json_bytes: jsons.iter().map(|j| j.len()).sum(),
            data: SegmentData::Stored(v.into()),
        }
    }

    #[test]
    fn body_is_the_ndjson_of_every_run_in_order() {
        let b = Batch {
            segments: vec![
                records(5, &["{\"a\":5}"]),
                stored(6, &["{\"a\":6}", "{\"a\":7}"]),
                records(8, &["{\"a\":8}", "{\"a\":9}"]),
            ],
            full: false,
        };
        let want = "{\"a\":5}\n{\"a\":6}\n{\"a\":7}\n{\"a\":8}\n{\"a\":9}\n";
        let z = b.body(true).unwrap();
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), want.as_bytes());
        // The stored frame is in the body byte for byte.
        let SegmentData::Stored(v) = &b.segments[1].data else {
            unreachable!()
        };
        let frame = &v[CHUNK_HEADER..];
        assert!(z.windows(frame.len()).any(|w| w == frame));
        assert_eq!(b.body(false).unwrap(), want.as_bytes());
        assert_eq!((b.first(), b.last(), b.len()), (5, 9, 5));
        assert_eq!(b.stored_records(), 2);
        assert_eq!(b.seq_at_line(3), Some(7));
        assert_eq!(b.seq_at_line(6), None);
        assert_eq!(b.seq_at_line(0), None);
        // Records 5..=7 waited: one appended at 1000, two at 2000.
        assert_eq!(b.lag_sum(3_000, 7), 2_000 + 2 * 1_000);
    }

    #[test]
    fn a_batch_ends_at_the_first_hole() {
        let mut b = Batch {
            segments: vec![
                stored(1, &["{}", "{}"]),
                records(3, &["{}"]),
                stored(5, &["{}"]),
                records(6, &["{}"]),
            ],
            full: false,
        };
        assert!(b.cut_at_hole());
        assert_eq!((b.first(), b.last(), b.len()), (1, 3, 3));
        assert!(!b.cut_at_hole());
    }
}
