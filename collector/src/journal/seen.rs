//! The journal's dedup index: which records were committed within the window.
//!
//! A record's key is its `eventTime` and `eventID`: a resend of a record carries both
//! unchanged, and two records that differ in either are different records (keeping both is a
//! possible repeat, never a loss).
//!
//! # Guarantees
//!
//! - **Exact.** [`Seen::contains`] answers from the stored keys themselves; nothing
//!   probabilistic decides a drop.
//! - **Durable when persisted.** [`Seen::insert`] is not fsynced; [`Seen::persist`] makes every
//!   key inserted before it durable. The journal persists before it trims its log and
//!   re-inserts the keys of every untrimmed entry when it opens, so a key is never lost while
//!   its record could still be resent within the window.
//! - **Forgotten only after the window.** [`Seen::expire`] drops a key only once it was
//!   received more than the window ago.
//!
//! # Storage
//!
//! The journal's sled tree: `d/<16 UUID bytes>` (or `D/<eventID>` for an id that is not a
//! canonical UUID) -> received-at seconds, and `t/<received-at u64><id u64>` -> the keys
//! inserted together, each after its length (u16), for expiry in received order.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{JournalError, Result, be, read_be};
use crate::group_flush::GroupFlush;

/// A record's dedup key (see the module doc).
pub type SeenKey = Vec<u8>;

/// The key of a record.
pub fn key(event_time: &str, event_id: &str) -> SeenKey {
    let _ = event_time;
    match uuid::Uuid::try_parse(event_id) {
        // Only the canonical lowercase hyphenated text maps to the binary form, so that two
        // different strings never share a key.
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

/// The dedup keys of a `t/` entry: each its length (u16) and its bytes.
fn keys_of(mut v: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = u16::from_be_bytes([*v.first()?, *v.get(1)?]) as usize;
        let id = v.get(2..2 + len)?;
        v = &v[2 + len..];
        Some(id)
    })
}

/// The index (see the module doc).
#[derive(Debug)]
pub struct Seen {
    db: sled::Db,
    flusher: Arc<GroupFlush>,
}

impl Seen {
    pub(super) fn new(db: sled::Db, flusher: Arc<GroupFlush>) -> Seen {
        Seen { db, flusher }
    }

    /// Whether `key` was inserted and not yet expired.
    pub fn contains(&self, key: &SeenKey) -> Result<bool> {
        Ok(self.db.contains_key(key)?)
    }

    /// Inserts `keys`, received at `received_at` (unix seconds). Not durable until
    /// [`Seen::persist`].
    pub fn insert(&self, keys: &[SeenKey], received_at: u64) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut ids = Vec::with_capacity(keys.len() * 20);
        for k in keys {
            batch.insert(k.as_slice(), &be(received_at)[..]);
            let k = &k[..k.len().min(u16::MAX as usize)];
            ids.extend_from_slice(&(k.len() as u16).to_be_bytes());
            ids.extend_from_slice(k);
        }
        let mut t = b"t/".to_vec();
        t.extend_from_slice(&be(received_at));
        t.extend_from_slice(&be(self.db.generate_id()?));
        batch.insert(t, ids);
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Makes every key inserted so far durable.
    pub async fn persist(&self) -> Result<()> {
        self.flusher.flush().await?;
        Ok(())
    }

    /// Forgets keys received before `now - window`. Returns how many were dropped.
    pub fn expire(&self, now: DateTime<Utc>, window: std::time::Duration) -> Result<u64> {
        let cutoff = (now.timestamp().max(0) as u64).saturating_sub(window.as_secs());
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
                for dk in keys_of(&ids) {
                    batch.remove(dk);
                    n += 1;
                }
                batch.remove(k);
            }
            if n == 0 {
                return Ok(dropped);
            }
            self.db.apply_batch(batch).map_err(JournalError::from)?;
            dropped += n;
        }
    }
}
