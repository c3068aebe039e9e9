//! Ingest in cluster mode: a validated batch becomes chunks in `GT_RECORDS`, and the agent's
//! `200` waits for every chunk's acknowledgement.
//!
//! # Guarantees
//!
//! - **A `200` means replicated.** [`Publisher::publish`] returns only when JetStream has
//!   acknowledged every chunk of the batch; with `[cluster] replicas = 3` on servers that
//!   fsync before acknowledging (`sync_interval: always`, see docs/cluster.md), each chunk is
//!   then on disk on a majority of the servers. Any failure (no quorum, a full stream, a
//!   timeout) fails the batch: ingest answers `503` and the agent keeps its records and
//!   resends them.
//! - **A resend is stored once.** A batch is cut into chunks the same way every time (grouped
//!   by account and region in the order sent, cut at [`CHUNK_BYTES`]), and each chunk's
//!   `Nats-Msg-Id` is the hash of its subject and body: a resend within `[cluster]
//!   duplicate_window` is dropped by JetStream, one after it by the shard writer's dedup. A
//!   batch that failed half-way is resent whole, and its stored half is dropped the same way.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind};
use aws_lc_rs::digest;
use groundtrail_common::Record;

use super::intent::Chunk;
use super::nats::{record_subject, shard_of};

/// The most record JSON in one chunk, before compression: well under JetStream's default
/// 1 MiB message limit even for records that do not compress.
pub const CHUNK_BYTES: usize = 900 * 1024;

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// `GT_RECORDS` is at `[cluster] stream_max_bytes`: records wait at the agents until the
    /// shard writers have delivered (and purged) older ones.
    #[error("the cluster's record stream is full ([cluster] stream_max_bytes): {0}")]
    Full(String),
    /// No acknowledgement: NATS is unreachable, has no quorum, or answered an error.
    #[error("the cluster did not acknowledge the batch: {0}")]
    Unavailable(String),
}

/// What a stored batch came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Published {
    /// Records in chunks JetStream stored now.
    pub stored: u64,
    /// Records in chunks JetStream had already stored (a resend).
    pub duplicates: u64,
}

/// Publishes batches to the cluster's stream.
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    shards: u32,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

/// One chunk to publish.
struct Outgoing {
    subject: String,
    body: Vec<u8>,
    records: u64,
}

/// Cuts records into chunks: grouped by (account, region) in the order they come, each
/// chunk's records in order, at most [`CHUNK_BYTES`] of JSON (a single larger record is a
/// chunk of its own).
fn chunks(records: &[Record], shards: u32) -> Vec<Outgoing> {
    // (account, region) → its records' JSON, in the order the pairs first appear.
    type Group<'a> = ((&'a str, &'a str), Vec<Vec<u8>>);
    let mut groups: Vec<Group> = Vec::new();
    for r in records {
        let pair = (r.account(), r.aws_region.as_str());
        let json = r.to_json();
        match groups.iter_mut().find(|(p, _)| *p == pair) {
            Some((_, v)) => v.push(json),
            None => groups.push((pair, vec![json])),
        }
    }
    let mut out = Vec::new();
    for ((account, region), jsons) in groups {
        let subject = record_subject(shard_of(account, region, shards), account, region);
        let mut start = 0;
        while start < jsons.len() {
            let mut end = start;
            let mut size = 0;
            while end < jsons.len() && (end == start || size + jsons[end].len() < CHUNK_BYTES) {
                size += jsons[end].len() + 1;
                end += 1;
            }
            let body = Chunk::encode(jsons[start..end].iter().map(Vec::as_slice));
            out.push(Outgoing {
                subject: subject.clone(),
                body,
                records: (end - start) as u64,
            });
            start = end;
        }
    }
    out
}

/// A chunk's `Nats-Msg-Id`: the same for the same records on the same subject.
fn message_id(subject: &str, body: &[u8]) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(subject.as_bytes());
    ctx.update(&[0]);
    ctx.update(body);
    hex::encode(&ctx.finish().as_ref()[..16])
}

fn classify(e: impl std::fmt::Display, kind: Option<PublishErrorKind>) -> PublishError {
    let text = e.to_string();
    // JetStream's answer for a stream at its max_bytes with discard new (error code 10077).
    if text.contains("maximum bytes") || text.contains("10077") {
        return PublishError::Full(text);
    }
    match kind {
        Some(k) => PublishError::Unavailable(format!("{k}: {text}")),
        None => PublishError::Unavailable(text),
    }
}

impl Publisher {
    pub fn new(js: jetstream::Context, shards: u32) -> Arc<Publisher> {
        Arc::new(Publisher { js, shards })
    }

    /// Stores `records` in the stream; returns once every chunk is acknowledged.
    pub async fn publish(&self, records: &[Record]) -> Result<Published, PublishError> {
        let outgoing = chunks(records, self.shards);
        let mut acks = Vec::with_capacity(outgoing.len());
        for chunk in outgoing {
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                message_id(&chunk.subject, &chunk.body).as_str(),
            );
            let ack = self
                .js
                .publish_with_headers(chunk.subject, headers, chunk.body.into())
                .await
                .map_err(|e| {
                    let kind = e.kind();
                    classify(e, Some(kind))
                })?;
            acks.push((ack, chunk.records));
        }
        let mut published = Published::default();
        for (ack, records) in acks {
            let ack = ack.await.map_err(|e| {
                let kind = e.kind();
                classify(e, Some(kind))
            })?;
            if ack.duplicate {
                published.duplicates += records;
            } else {
                published.stored += records;
            }
        }
        super::metrics::add(
            &super::metrics::metrics().records_published,
            published.stored,
        );
        Ok(published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize, region: &str, pad: usize) -> Record {
        let json = format!(
            r#"{{"eventVersion":"1.08","userIdentity":{{"type":"IAMUser"}},"eventTime":"2026-12-07T10:00:00Z","eventSource":"s.amazonaws.com","eventName":"E","awsRegion":"{region}","sourceIPAddress":"10.0.0.1","requestParameters":{{"pad":"{}"}},"eventID":"{}","eventType":"AwsApiCall","recipientAccountId":"111122223333","readOnly":true}}"#,
            "u".repeat(pad),
            uuid::Uuid::from_u128(n as u128)
        );
        Record::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn batches_cut_the_same_way_every_time() {
        let mut records: Vec<Record> = (0..10).map(|n| record(n, "eu-west-1", 10)).collect();
        records.insert(3, record(99, "us-east-1", 10));
        let a = chunks(&records, 16);
        let b = chunks(&records, 16);
        assert_eq!(a.len(), 2, "one chunk per (account, region)");
        assert_eq!((a[0].records, a[1].records), (10, 1));
        assert!(a[0].subject.ends_with(".111122223333.eu-west-1"));
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                message_id(&x.subject, &x.body),
                message_id(&y.subject, &y.body)
            );
        }
        // Large records are cut at CHUNK_BYTES, and every record is in exactly one chunk.
        let big: Vec<Record> = (0..40).map(|n| record(n, "eu-west-1", 60_000)).collect();
        let cut = chunks(&big, 16);
        assert!(cut.len() >= 3, "{} chunks", cut.len());
        assert_eq!(cut.iter().map(|c| c.records).sum::<u64>(), 40);
        let decoded: usize = cut
            .iter()
            .map(|c| {
                Chunk::decode(1, &c.subject, 0, &c.body)
                    .unwrap()
                    .records
                    .len()
            })
            .sum();
        assert_eq!(decoded, 40);
        assert!(cut.iter().all(|c| c.body.len() < 1024 * 1024));
    }
}
