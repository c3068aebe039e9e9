//! The value formats: how the records of one append become one stored chunk, and the one
//! decoder that reads every format back.
//!
//! Guarantees kept here (see the invariants in `mod.rs`):
//! - **One append, one chunk** (invariant 2): an append's records are one zstd frame, so an
//!   append costs one sled insert and one compression whatever its size (a huge append is a
//!   few chunks of at most [`MAX_CHUNK_RECORDS`], still in its one batch).
//! - **A value that does not decode is corrupt, never a crash** (invariant 8): the decoder
//!   returns why a value is not one (short header, bad frame, wrong record count, unknown
//!   kind) and callers remove and report it. Earlier formats (`0x01` one-record values,
//!   `0x02` length-prefixed chunks) are still read.
//! - **The agent and its offline tools judge a value alike**: [`decode_value`] is shared with
//!   `buffer_tools`, and counting uses [`chunk_len`] alone everywhere.

use std::sync::Mutex;

use super::{Buffer, BufferError, u64_of};

/// The earlier format: one record per value (still read).
pub(crate) const VALUE_SINGLE: u8 = 1;
pub(crate) const SINGLE_HEADER: usize = 9;
/// A chunk: the records of one append, each preceded by its length (still read; written only
/// for records that contain a newline byte, which no compact JSON does).
pub(crate) const VALUE_CHUNK: u8 = 2;
/// A chunk whose frame holds the records as ndjson, exactly the collector's wire form, so that
/// the shipper can send the frame as it is stored (see `ship_batch`).
pub(crate) const VALUE_LINES: u8 = 3;
/// Header length of both chunk formats (kind, append time, record count).
pub(crate) const CHUNK_HEADER: usize = 13;
/// Most records in one chunk; a larger append is stored as several chunks in its one batch.
pub(crate) const MAX_CHUNK_RECORDS: usize = 4096;
/// zstd level of chunks: the agent is CPU-bound long before the buffer is space-bound, and
/// whole appends of similar JSON compress well even at level 1.
const ZSTD_LEVEL: i32 = 1;

/// The compressor of chunks (one per buffer, reused for every append): [`ZSTD_LEVEL`], with
/// the frame's content checksum. Public so that the micro benchmark times this very setup.
pub fn chunk_compressor() -> std::io::Result<zstd::bulk::Compressor<'static>> {
    let mut compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
    compressor.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
    Ok(compressor)
}
/// A decompressed record larger than this is treated as corrupt (records are <= 256 KB).
const MAX_DECODED: usize = 16 * 1024 * 1024;
/// A decompressed chunk larger than this is treated as corrupt.
const MAX_CHUNK_DECODED: usize = 256 * 1024 * 1024;

/// The number of records a stored chunk holds, from its header alone; 1 when the header does
/// not parse. Opening, acknowledging and discarding all count with this one function, so the
/// counters stay consistent even for a damaged value.
pub(crate) fn chunk_len(v: &[u8]) -> u64 {
    if v.len() > CHUNK_HEADER && (v[0] == VALUE_CHUNK || v[0] == VALUE_LINES) {
        let n = u64::from(u32::from_be_bytes([v[9], v[10], v[11], v[12]]));
        if (1..=MAX_CHUNK_RECORDS as u64).contains(&n) {
            return n;
        }
    }
    1
}

/// The JSON bytes (without newlines) of a `VALUE_LINES` chunk of `n` records, from its zstd
/// frame's declared content size (no decompression); `None` if the frame header does not say.
pub(super) fn lines_json_bytes(v: &[u8], n: u64) -> Option<usize> {
    let size = zstd::zstd_safe::get_frame_content_size(v.get(CHUNK_HEADER..)?).ok()??;
    usize::try_from(size.checked_sub(n)?).ok()
}

/// The append time in a value's header (both formats).
pub(super) fn appended_ms_of(v: &[u8]) -> Option<u64> {
    v.get(1..SINGLE_HEADER).and_then(u64_of)
}

/// The last sequence number of the chunk at `first` holding `n` records.
pub(crate) fn chunk_last(first: u64, n: u64) -> u64 {
    first.saturating_add(n.saturating_sub(1))
}

/// How many records of the chunk `first ..= first + n - 1` are still in the queue (`> acked`).
pub(crate) fn live(first: u64, n: u64, acked: u64) -> u64 {
    let last = chunk_last(first, n);
    if last <= acked {
        0
    } else {
        last - first.max(acked.saturating_add(1)) + 1
    }
}

pub(super) fn zstd_err(e: std::io::Error) -> BufferError {
    BufferError::Storage(format!("zstd: {e}"))
}

impl Buffer {
    /// Encodes records (compact JSON) as one chunk value: ndjson ([`VALUE_LINES`]), or
    /// length-prefixed ([`VALUE_CHUNK`]) if a record holds a newline byte and so could not be
    /// told apart from the next one in ndjson.
    pub(super) fn encode_chunk<J: AsRef<[u8]>>(
        &self,
        jsons: &[J],
        appended_ms: u64,
    ) -> Result<Vec<u8>, BufferError> {
        debug_assert!(!jsons.is_empty() && jsons.len() <= MAX_CHUNK_RECORDS);
        let lines = !jsons.iter().any(|j| j.as_ref().contains(&b'\n'));
        let size: usize = jsons.iter().map(|j| 4 + j.as_ref().len()).sum();
        let mut payload = Vec::with_capacity(size);
        for j in jsons {
            let j = j.as_ref();
            if lines {
                payload.extend_from_slice(j);
                payload.push(b'\n');
                continue;
            }
            let len = u32::try_from(j.len())
                .map_err(|_| BufferError::Storage("record larger than 4 GiB".into()))?;
            payload.extend_from_slice(&len.to_be_bytes());
            payload.extend_from_slice(j);
        }
        let frame = self
            .inner
            .compressor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .compress(&payload)
            .map_err(zstd_err)?;
        let mut v = Vec::with_capacity(CHUNK_HEADER + frame.len());
        v.push(if lines { VALUE_LINES } else { VALUE_CHUNK });
        v.extend_from_slice(&appended_ms.to_be_bytes());
        v.extend_from_slice(&(jsons.len() as u32).to_be_bytes());
        v.extend_from_slice(&frame);
        Ok(v)
    }

    /// Encodes records as chunks of at most [`MAX_CHUNK_RECORDS`]: (value, records in it).
    pub(super) fn encode_chunks<J: AsRef<[u8]>>(
        &self,
        jsons: &[J],
        appended_ms: u64,
    ) -> Result<Vec<(Vec<u8>, u64)>, BufferError> {
        jsons
            .chunks(MAX_CHUNK_RECORDS)
            .map(|c| Ok((self.encode_chunk(c, appended_ms)?, c.len() as u64)))
            .collect()
    }

    /// Decodes a chunk (or an earlier one-record value): its append time and its records'
    /// JSON in sequence order; `None` if it is not one (corrupt).
    pub(super) fn decode_chunk(&self, v: &[u8]) -> Option<(u64, Vec<Vec<u8>>)> {
        decode_value(&self.inner.decompressor, v).ok()
    }
}

/// Decodes a stored value (a chunk, or an earlier one-record value): its append time and its
/// records' JSON in sequence order, or why it is not one. The one decoder, shared with the
/// offline tools (`buffer_tools`), so that they judge a value exactly as the agent does.
pub(crate) fn decode_value(
    decompressor: &Mutex<zstd::bulk::Decompressor<'static>>,
    v: &[u8],
) -> Result<(u64, Vec<Vec<u8>>), String> {
    let appended_ms = appended_ms_of(v).ok_or("value shorter than its header")?;
    let mut d = decompressor.lock().unwrap_or_else(|p| p.into_inner());
    match v[0] {
        VALUE_SINGLE if v.len() > SINGLE_HEADER => {
            let json = d
                .decompress(&v[SINGLE_HEADER..], MAX_DECODED)
                .map_err(|e| format!("zstd frame does not decode: {e}"))?;
            Ok((appended_ms, vec![json]))
        }
        VALUE_LINES if v.len() > CHUNK_HEADER => {
            let n = declared_len(v)?;
            let payload = d
                .decompress(&v[CHUNK_HEADER..], MAX_CHUNK_DECODED)
                .map_err(|e| format!("zstd frame does not decode: {e}"))?;
            drop(d);
            let body = payload
                .strip_suffix(b"\n")
                .ok_or("the last record does not end with a newline")?;
            let out: Vec<Vec<u8>> = body.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
            if out.len() != n {
                return Err(format!(
                    "frame holds {} records, header declares {n}",
                    out.len()
                ));
            }
            Ok((appended_ms, out))
        }
        VALUE_CHUNK if v.len() > CHUNK_HEADER => {
            let n = declared_len(v)?;
            let payload = d
                .decompress(&v[CHUNK_HEADER..], MAX_CHUNK_DECODED)
                .map_err(|e| format!("zstd frame does not decode: {e}"))?;
            drop(d);
            let mut out = Vec::with_capacity(n);
            let mut rest = payload.as_slice();
            while rest.len() >= 4 {
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let json = rest.get(4..4 + len).ok_or_else(|| {
                    format!("record {} runs past the end of the frame", out.len())
                })?;
                out.push(json.to_vec());
                rest = &rest[4 + len..];
            }
            if !rest.is_empty() {
                return Err("stray bytes after the last record".into());
            }
            if out.len() != n {
                return Err(format!(
                    "frame holds {} records, header declares {n}",
                    out.len()
                ));
            }
            Ok((appended_ms, out))
        }
        VALUE_SINGLE | VALUE_CHUNK | VALUE_LINES => Err("value shorter than its header".into()),
        other => Err(format!("unknown value format 0x{other:02x}")),
    }
}

/// The record count a chunk's header declares, if it is in range.
fn declared_len(v: &[u8]) -> Result<usize, String> {
    let n = chunk_len(v) as usize;
    let declared = u32::from_be_bytes([v[9], v[10], v[11], v[12]]);
    if n as u32 != declared {
        return Err(format!(
            "header declares {declared} records (1..={MAX_CHUNK_RECORDS} allowed)"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::testutil::*;
    use crate::buffer::*;

    /// Invariant 8: a value of the earlier one-record format is still read.
    #[test]
    fn earlier_one_record_values_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let (b, _) = open(&path, 1 << 20, FullPolicy::Block);
        b.try_append(&[rec(0)], None).unwrap();
        let seq = b.status().next_seq;
        let json = rec(1).to_json();
        let mut v = vec![VALUE_SINGLE];
        v.extend_from_slice(&7u64.to_be_bytes());
        v.extend_from_slice(&zstd::bulk::compress(&json, 3).unwrap());
        b.raw_tree().insert(rkey(seq), v).unwrap();
        b.flush().unwrap();
        drop(b);
        let (b, report) = open(&path, 1 << 20, FullPolicy::Block);
        assert_eq!(report.depth, 2);
        let got = all(&b);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[1].seq, got[1].appended_ms, &got[1].json),
            (seq, 7, &json)
        );
        assert_eq!(b.status().next_seq, seq + 1);
    }

    /// An append larger than one chunk is several chunks in one batch, read back in order.
    #[test]
    fn a_huge_append_is_several_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (b, _) = open(&dir.path().join("b"), 1 << 30, FullPolicy::Block);
        let n = MAX_CHUNK_RECORDS + 10;
        let Appended::Stored(Some((f, l))) = b
            .try_append(&(0..n as u64).map(rec).collect::<Vec<_>>(), None)
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(l - f + 1, n as u64);
        assert_eq!(b.raw_tree().scan_prefix([K_RECORD]).count(), 2);
        let e = all(&b);
        assert_eq!(e.len(), n);
        assert!(e.iter().enumerate().all(|(i, x)| x.seq == f + i as u64));
        assert!(b.set_aside(f + 5, "InvalidData", "x").unwrap());
        assert_eq!(all(&b).len(), n);
    }
}
