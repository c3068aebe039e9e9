//! From a range of a shard's chunks to log files, the same bytes on every collector.
//!
//! [`form`] decides which records of a range go into which file, dropping records already
//! filed within the dedup window, and records that decision as [`IntentFile`]s. [`assemble`]
//! turns a file's decision and the range's chunks into the file's JSON. The owner that formed
//! the files and any owner that takes over later both call [`assemble`] on the same chunks (the
//! stream keeps them until the files are delivered), so they upload the same bytes under the
//! same key; the recorded SHA-256 is checked before every upload.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::digest;
use chrono::{DateTime, Utc};
use groundtrail_common::trail::{TrailLayout, unique16};
use serde::Deserialize;

use super::state::IntentFile;
use crate::dedup::{DedupError, DedupIndex, DedupKey, DedupSettings};

const HEAD: &[u8] = b"{\"Records\":[";
const TAIL: &[u8] = b"]}";

/// One chunk of records as read from `GT_RECORDS`.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Its stream sequence.
    pub seq: u64,
    pub account: String,
    pub region: String,
    /// When the stream stored it (Unix seconds): the records' receipt time.
    pub stored_at: i64,
    /// Each record's compact JSON.
    pub records: Vec<Vec<u8>>,
}

/// Why a chunk could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk {seq}: subject {subject:?} is not gt.rec.<shard>.<account>.<region>")]
    Subject { seq: u64, subject: String },
    #[error("chunk {seq}: {message}")]
    Body { seq: u64, message: String },
}

impl Chunk {
    /// Decodes a chunk's subject and zstd NDJSON body.
    pub fn decode(
        seq: u64,
        subject: &str,
        stored_at: i64,
        body: &[u8],
    ) -> Result<Chunk, ChunkError> {
        let mut parts = subject.splitn(5, '.');
        let (Some("gt"), Some("rec"), Some(_shard), Some(account), Some(region)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(ChunkError::Subject {
                seq,
                subject: subject.to_string(),
            });
        };
        let text = zstd::stream::decode_all(body).map_err(|e| ChunkError::Body {
            seq,
            message: format!("zstd: {e}"),
        })?;
        let records = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        Ok(Chunk {
            seq,
            account: account.to_string(),
            region: region.to_string(),
            stored_at,
            records,
        })
    }

    /// The encoded body of records (each one compact JSON).
    pub fn encode<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        let mut text = Vec::new();
        for r in records {
            text.extend_from_slice(r);
            text.push(b'\n');
        }
        zstd::bulk::compress(&text, 3).expect("compressing to memory does not fail")
    }
}

/// The part of a record that dedup and the digest need.
#[derive(Deserialize)]
struct Slim<'a> {
    #[serde(rename = "eventTime", borrow)]
    event_time: &'a str,
    #[serde(rename = "eventID", borrow)]
    event_id: &'a str,
}

/// What a shard owner remembers for dedup: the `(eventTime, eventID)` key of every record
/// filed within `[journal] dedup_window`, in the same on-disk index single-node mode uses
/// ([`crate::dedup`]), so memory does not grow with the window. One index serves every shard a
/// collector writes (a record's key belongs to one shard: its account and region).
///
/// The index is a cache of `GT_SEEN`: a new owner loads the shard's keys from there before it
/// files anything, and a key is in the index only for a record that is filed, or that is in a
/// recorded range and will be filed by whoever writes the shard next.
#[derive(Clone)]
pub struct Seen {
    index: Arc<DedupIndex>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen").finish_non_exhaustive()
    }
}

impl Seen {
    /// Opens (or creates) the index at `path`.
    pub fn open(path: &Path, settings: &DedupSettings) -> Result<Seen, DedupError> {
        Ok(Seen {
            index: Arc::new(DedupIndex::open(path, settings)?),
        })
    }

    pub fn contains(&self, key: &DedupKey) -> Result<bool, DedupError> {
        self.index.contains(key)
    }

    /// Remembers `keys`, received at `at` (Unix seconds).
    pub fn insert(&self, keys: &[DedupKey], at: i64) -> Result<(), DedupError> {
        self.index.insert(keys, at.max(0) as u64)
    }

    /// Remembers each key with its own receipt time.
    pub fn insert_all(&self, keys: &[(DedupKey, i64)]) -> Result<(), DedupError> {
        let mut start = 0;
        while start < keys.len() {
            let at = keys[start].1;
            let end = start + keys[start..].iter().take_while(|(_, t)| *t == at).count();
            let run: Vec<DedupKey> = keys[start..end].iter().map(|(k, _)| k.clone()).collect();
            self.insert(&run, at)?;
            start = end;
        }
        Ok(())
    }

    /// Forgets what is older than the window (whole partitions at a time).
    pub fn expire(&self, now: i64) -> Result<u64, DedupError> {
        self.index.expire(now.max(0) as u64)
    }

    /// Makes every key inserted so far survive a crash.
    pub fn persist(&self) -> Result<(), DedupError> {
        self.index.persist()
    }
}

fn key_of(json: &[u8]) -> Option<DedupKey> {
    let slim = serde_json::from_slice::<Slim>(json).ok()?;
    Some(DedupKey::new(slim.event_time, slim.event_id))
}

/// Files formed from a range: the decisions, and the keys of the records they take.
#[derive(Debug)]
pub struct Formed {
    pub files: Vec<IntentFile>,
    /// Each file's JSON, in the order of `files` (what its `sha256` is of).
    pub jsons: Vec<Vec<u8>>,
    /// The keys of the records the files take, each with its chunk's receipt time.
    pub accepted: Vec<(DedupKey, i64)>,
}

/// Decides the files of `chunks` (one range of one shard, in stream order): one file per
/// (account, region), records already in `seen` (or earlier in the range) left out. Only
/// reads `seen`: the caller adds the accepted keys once the range is recorded (a key in the
/// index for a range that was never recorded would drop those records when the range is
/// formed again). A record that does not parse is filed as it is (ingest validated it; it
/// cannot be deduplicated).
pub fn form(
    chunks: &[Chunk],
    seen: &Seen,
    layout: &TrailLayout,
    created: DateTime<Utc>,
    next_file: &mut u64,
) -> Result<Formed, DedupError> {
    let mut order: Vec<(&str, &str)> = Vec::new();
    let mut skipped: HashMap<(&str, &str), Vec<(u64, u32)>> = HashMap::new();
    let mut accepted = Vec::new();
    let mut in_range: HashSet<DedupKey> = HashSet::new();
    for chunk in chunks {
        let pair = (chunk.account.as_str(), chunk.region.as_str());
        if let std::collections::hash_map::Entry::Vacant(slot) = skipped.entry(pair) {
            order.push(pair);
            slot.insert(Vec::new());
        }
        let mut fresh = Vec::new();
        for (i, json) in chunk.records.iter().enumerate() {
            let Some(key) = key_of(json) else {
                continue;
            };
            if in_range.contains(&key) || seen.contains(&key)? {
                if let Some(s) = skipped.get_mut(&pair) {
                    s.push((chunk.seq, i as u32));
                }
            } else {
                in_range.insert(key.clone());
                fresh.push(key);
            }
        }
        accepted.extend(fresh.into_iter().map(|k| (k, chunk.stored_at)));
    }
    let mut files = Vec::new();
    let mut jsons = Vec::new();
    for pair in order {
        let skip: HashSet<(u64, u32)> = skipped[&pair].iter().copied().collect();
        let Some(built) = assemble(chunks, pair.0, pair.1, &skip) else {
            continue;
        };
        let key = layout.log_file_key(pair.0, pair.1, created, &unique16());
        files.push(IntentFile {
            id: *next_file,
            account: pair.0.to_string(),
            region: pair.1.to_string(),
            key,
            sha256: built.sha256,
            records: built.records,
            skipped: skipped[&pair].clone(),
            oldest_event_time: built.oldest,
            newest_event_time: built.newest,
        });
        jsons.push(built.json);
        *next_file += 1;
    }
    Ok(Formed {
        files,
        jsons,
        accepted,
    })
}

/// A file's JSON and what the digest says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    pub json: Vec<u8>,
    pub sha256: String,
    pub records: u32,
    pub oldest: String,
    pub newest: String,
}

/// The JSON of the file of (`account`, `region`) in `chunks`, without the records at
/// `skip`; `None` when no record is left.
pub fn assemble(
    chunks: &[Chunk],
    account: &str,
    region: &str,
    skip: &HashSet<(u64, u32)>,
) -> Option<Assembled> {
    let mut json = HEAD.to_vec();
    let mut records = 0u32;
    let (mut oldest, mut newest): (Option<String>, Option<String>) = (None, None);
    for chunk in chunks
        .iter()
        .filter(|c| c.account == account && c.region == region)
    {
        for (i, record) in chunk.records.iter().enumerate() {
            if skip.contains(&(chunk.seq, i as u32)) {
                continue;
            }
            if records > 0 {
                json.push(b',');
            }
            json.extend_from_slice(record);
            records += 1;
            if let Ok(slim) = serde_json::from_slice::<Slim>(record) {
                let t = slim.event_time;
                if oldest.as_deref().is_none_or(|o| t < o) {
                    oldest = Some(t.to_string());
                }
                if newest.as_deref().is_none_or(|n| t > n) {
                    newest = Some(t.to_string());
                }
            }
        }
    }
    if records == 0 {
        return None;
    }
    json.extend_from_slice(TAIL);
    let sha256 = hex::encode(digest::digest(&digest::SHA256, &json));
    Some(Assembled {
        json,
        sha256,
        records,
        oldest: oldest.unwrap_or_default(),
        newest: newest.unwrap_or_default(),
    })
}

/// The keys of the records a recorded file takes, with their chunk's receipt time (for an
/// owner that takes over a range another one formed).
pub fn keys_of(chunks: &[Chunk], file: &IntentFile) -> Vec<(DedupKey, i64)> {
    let skip: HashSet<(u64, u32)> = file.skipped.iter().copied().collect();
    let mut out = Vec::new();
    for chunk in chunks
        .iter()
        .filter(|c| c.account == file.account && c.region == file.region)
    {
        for (i, json) in chunk.records.iter().enumerate() {
            if skip.contains(&(chunk.seq, i as u32)) {
                continue;
            }
            if let Some(key) = key_of(json) {
                out.push((key, chunk.stored_at));
            }
        }
    }
    out
}

/// A `GT_SEEN` message body: each key as a 2-byte big-endian length and its bytes.
pub fn encode_seen<'a>(keys: impl IntoIterator<Item = &'a DedupKey>) -> Vec<u8> {
    let mut out = Vec::new();
    for k in keys {
        let b = k.as_bytes();
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// The keys of a `GT_SEEN` message body (a truncated tail is ignored).
pub fn decode_seen(mut body: &[u8]) -> Vec<DedupKey> {
    let mut out = Vec::new();
    while body.len() >= 2 {
        let len = u16::from_be_bytes([body[0], body[1]]) as usize;
        let Some(k) = body.get(2..2 + len) else {
            break;
        };
        out.push(DedupKey::from_bytes(k));
        body = &body[2 + len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, time: &str) -> Vec<u8> {
        format!(r#"{{"eventVersion":"1.08","eventTime":"{time}","eventID":"{id}","x":1}}"#)
            .into_bytes()
    }

    fn chunk(seq: u64, region: &str, records: Vec<Vec<u8>>) -> Chunk {
        let body = Chunk::encode(records.iter().map(Vec::as_slice));
        Chunk::decode(seq, &format!("gt.rec.3.111122223333.{region}"), 100, &body).unwrap()
    }

    #[test]
    fn a_range_files_each_record_once_and_rebuilds_byte_for_byte() {
        let a = rec("a", "2026-12-07T10:00:00Z");
        let b = rec("b", "2026-12-07T10:00:02Z");
        let c = rec("c", "2026-12-07T09:59:00Z");
        // A resend of `a` in a later chunk, and `c` filed by an earlier range.
        let chunks = vec![
            chunk(5, "eu-west-1", vec![a.clone(), b.clone()]),
            chunk(9, "us-east-1", vec![c.clone()]),
            chunk(12, "eu-west-1", vec![a.clone()]),
        ];
        let dir = tempfile::tempdir().unwrap();
        let seen = Seen::open(dir.path(), &DedupSettings::default()).unwrap();
        seen.insert_all(&[(DedupKey::new("2026-12-07T09:59:00Z", "c"), 90)])
            .unwrap();
        let layout = TrailLayout::new("", None);
        let mut next = 7;
        let formed = form(&chunks, &seen, &layout, Utc::now(), &mut next).unwrap();
        // us-east-1 held only a duplicate: no file for it.
        assert_eq!(formed.files.len(), 1);
        let f = &formed.files[0];
        assert_eq!((f.id, next, f.records), (7, 8, 2));
        assert_eq!(f.skipped, vec![(12, 0)]);
        assert_eq!(formed.accepted.len(), 2);
        assert_eq!(
            (f.oldest_event_time.as_str(), f.newest_event_time.as_str()),
            ("2026-12-07T10:00:00Z", "2026-12-07T10:00:02Z")
        );
        assert!(f.key.contains("/CloudTrail/eu-west-1/"), "{}", f.key);
        // Another owner rebuilds the same bytes from the same chunks and the decision alone.
        let skip = f.skipped.iter().copied().collect();
        let rebuilt = assemble(&chunks, &f.account, &f.region, &skip).unwrap();
        assert_eq!(rebuilt.sha256, f.sha256);
        let mut expected = b"{\"Records\":[".to_vec();
        expected.extend_from_slice(&a);
        expected.push(b',');
        expected.extend_from_slice(&b);
        expected.extend_from_slice(b"]}");
        assert_eq!(rebuilt.json, expected);
        assert_eq!(keys_of(&chunks, f).len(), 2);
        // Forming only reads the index: the same range formed again (its intent never
        // recorded) files the same records.
        let again = form(&chunks, &seen, &layout, Utc::now(), &mut next).unwrap();
        assert_eq!(again.files[0].sha256, f.sha256);
        // The keys travel through GT_SEEN and come back the same; once in the index, the range
        // files nothing twice.
        let keys: Vec<DedupKey> = formed.accepted.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(decode_seen(&encode_seen(&keys)), keys);
        seen.insert_all(&formed.accepted).unwrap();
        let after = form(&chunks, &seen, &layout, Utc::now(), &mut next).unwrap();
        assert!(after.files.is_empty());
    }

    #[test]
    fn bad_chunks_are_named() {
        assert!(matches!(
            Chunk::decode(1, "gt.rec.1.acct", 0, b""),
            Err(ChunkError::Subject { .. })
        ));
        assert!(matches!(
            Chunk::decode(2, "gt.rec.1.a.r", 0, b"not zstd"),
            Err(ChunkError::Body { seq: 2, .. })
        ));
    }
}
