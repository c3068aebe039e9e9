//! A shard's durable state, and the compare-and-set that fences a stale owner.
//!
//! Everything a shard writer must not forget lives in one KV entry, `GT_SHARDS`
//! `shard.<n>` ([`ShardState`], zstd-compressed JSON): how far the shard's records are filed,
//! the files it is uploading, and its digest chains. One entry means one compare-and-set per
//! step, so a step is atomic without multi-key transactions. Its size is bounded by the
//! writer, which signs digests early (emptying the chains' waiting lists) once the entry
//! passes a quarter of NATS's 1 MiB message limit.
//!
//! # The fence
//!
//! A lease says who *should* write a shard; it cannot stop a collector that was paused (or
//! cut off) past its lease from going on once it wakes, believing it still holds it. The entry's
//! revision does. A new owner first rewrites the entry with `epoch + 1` and its own name
//! ([`ShardStore::take_over`]); every later step of any owner is an update that names the
//! revision it read ([`ShardStore::commit`]). After a takeover, the old owner's next update
//! names a revision that is no longer the newest, NATS refuses it, and the old owner stops
//! ([`CommitError::Fenced`]). What it may still do before noticing is finish an upload whose
//! file was recorded before the takeover: the new owner uploads the same bytes to the same key
//! (see [`super::intent`]), so that write changes nothing.
//!
//! An update that times out may still have been stored. The writer never moves past a state it
//! has not seen committed: it retries the same state, and an update refused for a revision that
//! it wrote itself (same epoch and owner) is adopted, not mistaken for a takeover.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use crate::journal::{Chain, PendingDigest};

/// What a shard's owner has made durable, as stored in `shard.<n>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardState {
    /// Bumped by every takeover; the owner's name beside it.
    pub epoch: u64,
    pub owner: String,
    /// Every chunk of this shard with a stream sequence below this is filed (or is a duplicate).
    pub next_seq: u64,
    /// The files being uploaded, if any: recorded before their first upload.
    pub intent: Option<Intent>,
    /// The digest chains of this shard, keyed by [`chain_key`].
    pub chains: BTreeMap<String, Chain>,
    /// The next file id (the key of a file in its chains' waiting lists).
    pub next_file: u64,
    /// Signed digests not yet uploaded, by [`chain_key`]: exactly these bytes go out.
    pub pending_digests: BTreeMap<String, PendingDigest>,
    /// Chains that exist before their first file (the trail's own account and home region, so
    /// an idle trail has digests too), with when they started (CloudTrail JSON time).
    pub started: BTreeMap<String, String>,
}

/// The log files made from one range of the shard's chunks, recorded before any upload.
///
/// A file is a pure function of its range: the records of its (account, region) in the chunks
/// from `from_seq` to `to_seq`, in stream order, minus the positions in `skipped`. So whoever
/// uploads it (the owner that recorded it, or the one that took over) uploads the same bytes,
/// and checks them against `sha256` first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub from_seq: u64,
    pub to_seq: u64,
    /// When the range was closed (CloudTrail JSON time): the files' key time.
    pub created: String,
    pub files: Vec<IntentFile>,
}

/// One log file of an [`Intent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentFile {
    pub id: u64,
    pub account: String,
    pub region: String,
    /// The object key, the same at every destination.
    pub key: String,
    /// Hex SHA-256 of the uncompressed JSON (the digest's `hashValue`).
    pub sha256: String,
    pub records: u32,
    /// (stream sequence, line) of records left out as duplicates.
    pub skipped: Vec<(u64, u32)>,
    pub oldest_event_time: String,
    pub newest_event_time: String,
}

/// The key of a chain in [`ShardState::chains`].
pub fn chain_key(destination: &str, account: &str, region: &str) -> String {
    format!("{destination}\t{account}\t{region}")
}

/// The parts of a [`chain_key`].
pub fn chain_parts(key: &str) -> Option<(&str, &str, &str)> {
    let mut it = key.splitn(3, '\t');
    Some((it.next()?, it.next()?, it.next()?))
}

/// Why a state update did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another collector took the shard over: stop writing it.
    #[error("shard {shard}: taken over by {owner} (epoch {epoch})")]
    Fenced {
        shard: u32,
        owner: String,
        epoch: u64,
    },
    /// NATS did not answer in time or failed; the same state may be committed again.
    #[error("shard {shard}: state update failed: {message}")]
    Unavailable { shard: u32, message: String },
}

/// The KV entry of one shard, as seen by its owner.
pub struct ShardStore {
    kv: kv::Store,
    shard: u32,
    key: String,
    revision: u64,
    epoch: u64,
    node: String,
    /// Bytes of the last state written.
    last_len: usize,
}

/// The stored form of a state: zstd-compressed JSON (the file and digest lists repeat keys,
/// prefixes and times, and compress several times over).
fn encode(state: &ShardState) -> bytes::Bytes {
    let json = serde_json::to_vec(state).expect("a ShardState always serializes");
    zstd::bulk::compress(&json, 3)
        .expect("compressing to memory does not fail")
        .into()
}

fn decode(bytes: &[u8]) -> Result<ShardState, String> {
    let json = zstd::stream::decode_all(bytes).map_err(|e| format!("zstd: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| e.to_string())
}

impl ShardStore {
    /// Takes shard `shard` over for `node`: reads its state and writes it back with the next
    /// epoch. From here on, the previous owner's updates are refused.
    pub async fn take_over(
        kv: kv::Store,
        shard: u32,
        node: &str,
    ) -> Result<(ShardStore, ShardState), CommitError> {
        let key = format!("shard.{shard}");
        let unavailable = |e: &dyn std::fmt::Display| CommitError::Unavailable {
            shard,
            message: e.to_string(),
        };
        for _ in 0..10 {
            let entry = kv.entry(key.clone()).await.map_err(|e| unavailable(&e))?;
            let (mut state, revision) = match entry {
                Some(e) if e.operation == kv::Operation::Put => {
                    let state = decode(&e.value)
                        .map_err(|e| unavailable(&format!("undecodable state: {e}")))?;
                    (state, Some(e.revision))
                }
                _ => (ShardState::default(), None),
            };
            state.epoch += 1;
            state.owner = node.to_string();
            let written = match revision {
                Some(r) => kv
                    .update(&key, encode(&state), r)
                    .await
                    .map_err(|e| e.to_string()),
                None => kv
                    .create(&key, encode(&state))
                    .await
                    .map_err(|e| e.to_string()),
            };
            match written {
                Ok(revision) => {
                    let store = ShardStore {
                        kv,
                        shard,
                        key,
                        revision,
                        epoch: state.epoch,
                        node: node.to_string(),
                        last_len: encode(&state).len(),
                    };
                    return Ok((store, state));
                }
                // Someone wrote in between (a previous owner finishing a step): read again.
                Err(e) => tracing::debug!(shard, "take-over raced: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(unavailable(&"the state kept changing while taking over"))
    }

    /// Writes `state` if nobody took the shard over since this store's last commit.
    pub async fn commit(&mut self, state: &ShardState) -> Result<(), CommitError> {
        let value = encode(state);
        self.last_len = value.len();
        match self
            .kv
            .update(&self.key, value.clone(), self.revision)
            .await
        {
            Ok(revision) => {
                self.revision = revision;
                return Ok(());
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
            Err(e) => {
                return Err(CommitError::Unavailable {
                    shard: self.shard,
                    message: e.to_string(),
                });
            }
        }
        // Refused for the revision: either our own earlier update landed after timing out, or
        // the shard was taken over.
        let unavailable = |e: &dyn std::fmt::Display| CommitError::Unavailable {
            shard: self.shard,
            message: e.to_string(),
        };
        let entry = self
            .kv
            .entry(self.key.clone())
            .await
            .map_err(|e| unavailable(&e))?
            .ok_or_else(|| unavailable(&"the state entry is gone"))?;
        let current = decode(&entry.value).map_err(|e| unavailable(&e))?;
        if current.epoch != self.epoch || current.owner != self.node {
            return Err(CommitError::Fenced {
                shard: self.shard,
                owner: current.owner,
                epoch: current.epoch,
            });
        }
        self.revision = entry.revision;
        if entry.value == value {
            return Ok(());
        }
        match self.kv.update(&self.key, value, self.revision).await {
            Ok(revision) => {
                self.revision = revision;
                Ok(())
            }
            Err(e) => Err(unavailable(&e)),
        }
    }

    /// The shard's number.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// Bytes of the state as last written (the entry must stay under NATS's 1 MiB limit).
    pub fn last_len(&self) -> usize {
        self.last_len
    }

    /// The epoch this store writes under.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_keys_round_trip_and_state_serializes() {
        let k = chain_key("s3", "111122223333", "eu-west-1");
        assert_eq!(chain_parts(&k), Some(("s3", "111122223333", "eu-west-1")));
        let mut state = ShardState {
            epoch: 3,
            owner: "a".into(),
            next_seq: 17,
            ..ShardState::default()
        };
        state.chains.insert(k, Chain::default());
        let back = decode(&encode(&state)).unwrap();
        assert_eq!(back, state);
        assert!(encode(&state).len() < serde_json::to_vec(&state).unwrap().len());
    }
}
