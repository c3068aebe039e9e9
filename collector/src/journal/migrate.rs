//! Opening a journal: the log beside the sled tree, and the move of a journal from before the
//! log (records as `p/<chunk>` values in sled) into it.
//!
//! # The move, and why it is safe to repeat
//!
//! 1. Every record of every `p/` chunk that its `c/` entry does not mark filed is appended to
//!    the log, one entry per chunk, and the log is synced.
//! 2. One sled batch removes every `p/` and `c/` entry and writes `l/format`, `l/floor` (the
//!    log's start) and `l/agents`; sled is flushed.
//!
//! A crash between 1 and 2 leaves the `p/` values in place and no `l/format`: the next open
//! finds entries in the log that only the move can have written (nothing else writes to a
//! journal before it is open), empties the log and moves again. A journal that has
//! `l/format` *and* `p/` values was opened by an older collector after this one: refused,
//! since the two cannot be merged without risking a loss or a repeat.

use std::path::Path;
use std::sync::Arc;

use super::{CHUNK_INDEX_MASK, ChunkState, JournalError, Result, be, frame, read_be};
use crate::log::{Log, SegmentLog, SegmentLogSettings};

/// The journal format this collector writes.
const FORMAT: &[u8] = b"2";

/// Opens the log in `dir` for the journal in `db`, moving an old journal's records into it
/// first (see the module doc).
pub(super) fn prepare(
    db: &sled::Db,
    dir: &Path,
    settings: SegmentLogSettings,
) -> Result<Arc<dyn Log>> {
    let old = db.scan_prefix(b"p/").next().transpose()?.is_some();
    let format = db.get(b"l/format")?;
    if !old {
        let log = SegmentLog::open(dir, settings)?;
        if format.is_none() {
            db.insert(b"l/format", FORMAT)?;
            db.flush()?;
        }
        return Ok(Arc::new(log));
    }
    if format.is_some() {
        return Err(JournalError::Corrupt {
            key: "p/".into(),
            why: "this journal holds records written by an older collector after this version \
                  had already moved it to its log; start the older version to deliver them \
                  (it files and delivers what it wrote), stop it once its backlog is empty, \
                  then start this version again"
                .into(),
        });
    }
    let mut log = SegmentLog::open(dir, settings)?;
    if log.end() > log.start() {
        tracing::warn!(
            "journal: an earlier move of old pending records into the log was interrupted; \
             starting it again"
        );
        drop(log);
        std::fs::remove_dir_all(dir).map_err(|e| JournalError::Other(e.to_string()))?;
        log = SegmentLog::open(dir, settings)?;
    }
    let mut moved = 0usize;
    let mut batch = sled::Batch::default();
    for item in db.scan_prefix(b"p/") {
        let (k, blob) = item?;
        batch.remove(k.clone());
        let Some(chunk) = read_be(&k[2..]) else {
            // The old journal logged and kept such a key; it held nothing it could read.
            tracing::error!(key = ?k, "journal: damaged pending key dropped during the move");
            continue;
        };
        let ck = {
            let mut ck = b"c/".to_vec();
            ck.extend_from_slice(&be(chunk));
            ck
        };
        let mut filed = match db.get(&ck)? {
            Some(c) => ChunkState::decode(&c).filed,
            None => Vec::new(),
        };
        filed.sort_unstable();
        let mut records = Vec::new();
        for (index, line) in blob.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() || filed.binary_search(&(index as u32)).is_ok() {
                continue;
            }
            records.extend_from_slice(line);
            records.push(b'\n');
            moved += 1;
        }
        if !records.is_empty() {
            debug_assert!((records.len() as u64) > 0 && CHUNK_INDEX_MASK > 0);
            log.append(&frame::encode(0, &[], &records))?;
        }
    }
    for k in db.scan_prefix(b"c/").keys() {
        batch.remove(k?);
    }
    log.sync()?;
    batch.insert(&b"l/format"[..], FORMAT);
    batch.insert(&b"l/floor"[..], &be(log.start())[..]);
    batch.insert(&b"l/agents"[..], &be(log.start())[..]);
    db.apply_batch(batch)?;
    db.flush()?;
    tracing::info!("journal: moved {moved} pending records of the old format into the log");
    Ok(Arc::new(log))
}
