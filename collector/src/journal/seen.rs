//! The journal's dedup index: which records were committed within the window.
//!
//! A record's key is its `eventTime` and `eventID` ([`DedupKey`]): a resend of a record carries
//! both unchanged, and two records that differ in either are different records (keeping both is
//! a possible repeat, never a loss).
//!
//! # Guarantees
//!
//! - **Exact.** [`Seen::contains`] answers from the stored keys themselves (see
//!   [`crate::dedup`]); nothing probabilistic decides a drop.
//! - **Durable when persisted.** [`Seen::insert`] is not fsynced; [`Seen::persist`] makes every
//!   key inserted before it durable. The journal persists before it trims its log and
//!   re-inserts the keys of every untrimmed entry when it opens, so a key is never lost while
//!   its record could still be resent within the window.
//! - **Forgotten only after the window** ([`crate::dedup`], guarantee 2).
//!
//! # Storage
//!
//! The [`DedupIndex`] in `<journal>/dedup/`. A journal from before it kept one sled key per
//! `eventID` (`d/<16 UUID bytes>` or `D/<eventID>`, with `t/<received-at><id>` entries for
//! expiry): those keys have no `eventTime`, so they cannot move into the index; they are
//! consulted as they are until the window has passed over them and expiry has removed them
//! all, after which the sled lookup stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{JournalError, Result, read_be};
use crate::dedup::{DedupError, DedupIndex, DedupKey, DedupSettings};

/// A record's dedup key, with its `eventID` for the index of journals from before the
/// [`DedupIndex`] (see the module doc).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct SeenKey {
    key: DedupKey,
    event_id: Box<str>,
}

/// The key of a record.
pub fn key(event_time: &str, event_id: &str) -> SeenKey {
    SeenKey {
        key: DedupKey::new(event_time, event_id),
        event_id: event_id.into(),
    }
}

/// The key of a record's JSON, read without parsing the rest of it.
pub fn key_of_json(json: &[u8]) -> Option<SeenKey> {
    #[derive(Deserialize)]
    struct Ids<'a> {
        #[serde(rename = "eventTime", borrow)]
        event_time: std::borrow::Cow<'a, str>,
        #[serde(rename = "eventID", borrow)]
        event_id: std::borrow::Cow<'a, str>,
    }
    let ids: Ids = serde_json::from_slice(json).ok()?;
    Some(key(&ids.event_time, &ids.event_id))
}

/// Where the sled index of older journals kept `event_id`.
pub(super) fn legacy_key(event_id: &str) -> Vec<u8> {
    match uuid::Uuid::try_parse(event_id) {
        Ok(u) if event_id.len() == 36 && !event_id.bytes().any(|b| b.is_ascii_uppercase()) => {
            let mut k = b"d/".to_vec();
            k.extend_from_slice(u.as_bytes());
            k
        }
        _ => {
            let mut k = b"D/".to_vec();
            k.extend_from_slice(event_id.as_bytes());
            k
        }
    }
}

/// The dedup keys of a legacy `t/` entry: each its length (u16) and its bytes.
fn legacy_keys(mut v: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = u16::from_be_bytes([*v.first()?, *v.get(1)?]) as usize;
        let id = v.get(2..2 + len)?;
        v = &v[2 + len..];
        Some(id)
    })
}

impl From<DedupError> for JournalError {
    fn from(e: DedupError) -> Self {
        JournalError::Other(e.to_string())
    }
}

/// The index (see the module doc).
pub struct Seen {
    index: Arc<DedupIndex>,
    /// The journal's sled tree, for the keys of older journals.
    db: sled::Db,
    /// Whether the sled tree may still hold keys of an older journal.
    legacy: AtomicBool,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("legacy", &self.legacy)
            .finish_non_exhaustive()
    }
}

impl Seen {
    pub(super) fn open(
        path: &std::path::Path,
        settings: &DedupSettings,
        db: sled::Db,
    ) -> Result<Seen> {
        let index = DedupIndex::open(path, settings)?;
        let legacy = db.scan_prefix(b"t/").next().transpose()?.is_some();
        Ok(Seen {
            index: Arc::new(index),
            db,
            legacy: AtomicBool::new(legacy),
        })
    }

    /// Whether `key` was inserted and not yet expired.
    pub fn contains(&self, key: &SeenKey) -> Result<bool> {
        if self.index.contains(&key.key)? {
            return Ok(true);
        }
        if self.legacy.load(Ordering::Relaxed) {
            return Ok(self.db.contains_key(legacy_key(&key.event_id))?);
        }
        Ok(false)
    }

    /// Inserts `keys`, received at `received_at` (unix seconds). Not durable until
    /// [`Seen::persist`].
    pub fn insert(&self, keys: &[SeenKey], received_at: u64) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys: Vec<DedupKey> = keys.iter().map(|k| k.key.clone()).collect();
        self.index.insert(&keys, received_at)?;
        Ok(())
    }

    /// Makes every key inserted so far durable.
    pub async fn persist(&self) -> Result<()> {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || index.persist())
            .await
            .map_err(|e| JournalError::Other(e.to_string()))??;
        Ok(())
    }

    /// What the index holds in memory and on disk.
    pub fn stats(&self) -> crate::dedup::DedupStats {
        self.index.stats()
    }

    /// Forgets keys received before `now - window`. Returns how many were dropped.
    pub fn expire(&self, now: DateTime<Utc>, window: std::time::Duration) -> Result<u64> {
        let now_secs = now.timestamp().max(0) as u64;
        let mut dropped = self.index.expire(now_secs)?;
        if self.legacy.load(Ordering::Relaxed) {
            dropped += self.expire_legacy(now_secs.saturating_sub(window.as_secs()))?;
        }
        Ok(dropped)
    }

    fn expire_legacy(&self, cutoff: u64) -> Result<u64> {
        let mut dropped = 0;
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            for item in self.db.scan_prefix(b"t/") {
                let (k, ids) = item?;
                let Some(at) = read_be(&k[2..]) else { continue };
                if at >= cutoff || n >= 10_000 {
                    break;
                }
                for dk in legacy_keys(&ids) {
                    batch.remove(dk);
                    n += 1;
                }
                batch.remove(k);
            }
            if n == 0 {
                if self.db.scan_prefix(b"t/").next().transpose()?.is_none() {
                    self.legacy.store(false, Ordering::Relaxed);
                }
                return Ok(dropped);
            }
            self.db.apply_batch(batch)?;
            dropped += n;
        }
    }
}
