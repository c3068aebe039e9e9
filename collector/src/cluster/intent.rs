//! From a range of a shard's chunks to log files, the same bytes on every collector.
//!
//! [`form`] decides which records of a range go into which file, dropping records already
//! filed within the dedup window, and records that decision as [`IntentFile`]s. [`assemble`]
//! turns a file's decision and the range's chunks into the file's JSON. The owner that formed
//! the files and any owner that takes over later both call [`assemble`] on the same chunks (the
//! stream keeps them until the files are delivered), so they upload the same bytes under the
//! same key; the recorded SHA-256 is checked before every upload.

use std::collections::{HashMap, HashSet};

use aws_lc_rs::digest;
use chrono::{DateTime, Utc};
use groundtrail_common::trail::{TrailLayout, unique16};
use serde::Deserialize;

use super::state::IntentFile;

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
        zstd::bulk::compress(&text, 3).unwrap_or_default()
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

/// A record's dedup key: its `eventTime` and `eventID` (a resend carries both unchanged), as
/// 16 bytes of their SHA-256.
pub type SeenKey = [u8; 16];

fn seen_key(event_time: &str, event_id: &str) -> SeenKey {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(event_time.as_bytes());
    ctx.update(&[0]);
    ctx.update(event_id.as_bytes());
    let d = ctx.finish();
    let mut key = [0u8; 16];
    key.copy_from_slice(&d.as_ref()[..16]);
    key
}

/// What a shard's owner remembers for dedup: each filed record's key and when it was
/// received, for the dedup window.
#[derive(Debug, Default)]
pub struct Seen {
    keys: HashMap<SeenKey, i64>,
}

impl Seen {
    pub fn insert(&mut self, key: SeenKey, at: i64) -> bool {
        self.keys.insert(key, at).is_none()
    }
    pub fn contains(&self, key: &SeenKey) -> bool {
        self.keys.contains_key(key)
    }
    /// Forgets keys received before `cutoff`.
    pub fn expire(&mut self, cutoff: i64) {
        self.keys.retain(|_, at| *at >= cutoff);
    }
    pub fn len(&self) -> usize {
        self.keys.len()
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Files formed from a range: the decisions, and the keys of the records they take.
#[derive(Debug)]
pub struct Formed {
    pub files: Vec<IntentFile>,
    pub accepted: Vec<SeenKey>,
}

/// Decides the files of `chunks` (one range of one shard, in stream order): one file per
/// (account, region), records already in `seen` (or earlier in the range) left out. Adds the
/// accepted keys to `seen`. A record that does not parse is filed as it is (ingest validated
/// it; it cannot be deduplicated).
pub fn form(
    chunks: &[Chunk],
    seen: &mut Seen,
    layout: &TrailLayout,
    created: DateTime<Utc>,
    next_file: &mut u64,
) -> Formed {
    let mut order: Vec<(&str, &str)> = Vec::new();
    let mut skipped: HashMap<(&str, &str), Vec<(u64, u32)>> = HashMap::new();
    let mut accepted = Vec::new();
    for chunk in chunks {
        let pair = (chunk.account.as_str(), chunk.region.as_str());
        if !skipped.contains_key(&pair) {
            order.push(pair);
            skipped.insert(pair, Vec::new());
        }
        for (i, json) in chunk.records.iter().enumerate() {
            let Ok(slim) = serde_json::from_slice::<Slim>(json) else {
                continue;
            };
            let key = seen_key(slim.event_time, slim.event_id);
            if seen.insert(key, chunk.stored_at) {
                accepted.push(key);
            } else if let Some(s) = skipped.get_mut(&pair) {
                s.push((chunk.seq, i as u32));
            }
        }
    }
    let mut files = Vec::new();
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
        *next_file += 1;
    }
    Formed { files, accepted }
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

/// The keys of the records a recorded file takes (for an owner that takes over a range
/// another one formed).
pub fn keys_of(chunks: &[Chunk], file: &IntentFile) -> Vec<(SeenKey, i64)> {
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
            if let Ok(slim) = serde_json::from_slice::<Slim>(json) {
                out.push((seen_key(slim.event_time, slim.event_id), chunk.stored_at));
            }
        }
    }
    out
}

/// The dedup keys of a `GT_SEEN` message body.
pub fn decode_seen(body: &[u8]) -> impl Iterator<Item = SeenKey> + '_ {
    body.chunks_exact(16).map(|c| {
        let mut k = [0u8; 16];
        k.copy_from_slice(c);
        k
    })
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
        let mut seen = Seen::default();
        seen.insert(seen_key("2026-12-07T09:59:00Z", "c"), 90);
        let layout = TrailLayout::new("", None);
        let mut next = 7;
        let formed = form(&chunks, &mut seen, &layout, Utc::now(), &mut next);
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
        // Forming the range again with what was accepted files nothing twice.
        let again = form(&chunks, &mut seen, &layout, Utc::now(), &mut next);
        assert!(again.files.is_empty());
        seen.expire(101);
        assert!(seen.is_empty());
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
