//! The NATS side of cluster mode: connecting, and the JetStream objects every collector of a
//! cluster shares (created by whichever collector starts first, checked by the others).
//!
//! | object | kind | holds |
//! |---|---|---|
//! | `GT_RECORDS` | stream, subjects `gt.rec.<shard>.<account>.<region>` | received records, zstd NDJSON chunks, until every reader is past them |
//! | `GT_SEEN` | stream, subjects `gt.seen.<shard>`, `max_age` = `[journal] dedup_window` | the dedup keys of each filed range, so a new shard owner knows what was filed |
//! | `GT_SHARDS` | KV | `meta` (the cluster's fixed settings), `shard.<n>` ([`super::state::ShardState`]) |
//! | `GT_LEASES` | KV, `max_age` = `lease_ttl` | `shard.<n>`: which collector holds a shard; `node.<id>`: which collectors are alive |
//! | `GT_FLOORS` | KV, `max_age` = 1 day | `floor.<node>`: how far each collector's event history has read `GT_RECORDS` |
//!
//! `GT_RECORDS` is created with `discard: new` and no `max_age`: when it is full, a publish is
//! refused (ingest answers `503`, agents keep their records) instead of the oldest records
//! being dropped, and nothing ages out while a destination is down.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use serde::{Deserialize, Serialize};

use super::config::ClusterSettings;

pub const RECORDS: &str = "GT_RECORDS";
pub const SEEN: &str = "GT_SEEN";
pub const SHARDS: &str = "GT_SHARDS";
pub const LEASES: &str = "GT_LEASES";
pub const FLOORS: &str = "GT_FLOORS";

/// How long a collector that stopped indexing the stream keeps holding back its purge.
pub const FLOOR_TTL: Duration = Duration::from_secs(24 * 3600);

/// The oldest NATS server cluster mode runs on: 2.12.3 carries the Raft membership fixes the
/// replicated stream's guarantees depend on (see docs/cluster.md).
pub const MIN_SERVER: (u64, u64, u64) = (2, 12, 3);

/// Why cluster mode could not start or lost its footing.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to the NATS servers {urls:?}: {message}")]
    Connect { urls: Vec<String>, message: String },
    #[error(
        "NATS server {server} is version {version}; cluster mode needs {}.{}.{} or newer",
        MIN_SERVER.0, MIN_SERVER.1, MIN_SERVER.2
    )]
    OldServer { server: String, version: String },
    #[error("JetStream {object}: {message}")]
    Object { object: String, message: String },
    #[error(
        "the cluster was set up with {existing}; this collector has {configured}: every collector must have the same [cluster] shards, signing key, [trail] naming and [[destinations]] (to change them for good, stop every collector, let the shards' files be delivered, and delete the key: nats kv del GT_SHARDS meta)"
    )]
    Mismatch {
        existing: String,
        configured: String,
    },
    #[error(
        "JetStream stream {RECORDS} exists with {found}; cluster mode needs {needed} (so that nothing is dropped to make room): fix it with `nats stream edit {RECORDS}`, or delete it while it is empty"
    )]
    StreamSettings { found: String, needed: String },
}

/// What every collector of a cluster must agree on, kept in `GT_SHARDS` under `meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    pub shards: u32,
    /// The digest signing key's fingerprint: every shard writer signs its chains with it.
    pub key_fingerprint: String,
    /// The trail as the shard writers name its files and digests, and where they deliver it
    /// (trail name, home region, key prefix, organization, each destination and bucket): a
    /// chain continued by a collector that differed here would break.
    pub trail: String,
    /// When `GT_RECORDS` was created (RFC 3339): the shards' positions are sequences of that
    /// stream, and mean nothing in a stream created again.
    #[serde(default)]
    pub records_created: String,
}

/// A connected collector's handles on the shared objects.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub records: stream::Stream,
    pub seen: stream::Stream,
    pub shards: kv::Store,
    pub leases: kv::Store,
    pub floors: kv::Store,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats").finish_non_exhaustive()
    }
}

/// The subject of a record chunk.
pub fn record_subject(shard: u32, account: &str, region: &str) -> String {
    format!("gt.rec.{shard}.{account}.{region}")
}

/// The subjects of one shard's chunks.
pub fn shard_filter(shard: u32) -> String {
    format!("gt.rec.{shard}.>")
}

/// The subject of one shard's dedup keys.
pub fn seen_subject(shard: u32) -> String {
    format!("gt.seen.{shard}")
}

/// The shard of an (account, region): FNV-1a (32 bit) of the two concatenated, modulo the
/// shard count — the hash NATS's own `partition()` subject transform uses, so an operator can
/// reproduce the placement with NATS tools.
pub fn shard_of(account: &str, region: &str, shards: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in account.bytes().chain(region.bytes()) {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % shards
}

fn object(name: &str, e: impl std::fmt::Display) -> NatsError {
    NatsError::Object {
        object: name.to_string(),
        message: e.to_string(),
    }
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut it = v
        .trim_start_matches('v')
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

/// Connects and makes sure the shared objects exist with this cluster's settings.
/// `dedup_window` is the `GT_SEEN` retention; `key_fingerprint` must match the cluster's.
pub async fn connect(
    settings: &ClusterSettings,
    dedup_window: Duration,
    mut meta: Meta,
) -> Result<Nats, NatsError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("groundtrail-collector {}", settings.node_id))
        .connection_timeout(settings.request_timeout)
        .request_timeout(Some(settings.request_timeout))
        .retry_on_initial_connect();
    if let Some(tls) = &settings.tls {
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    let urls: Vec<async_nats::ServerAddr> = settings
        .urls
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e: std::io::Error| NatsError::Connect {
            urls: settings.urls.clone(),
            message: e.to_string(),
        })?;
    let client = options
        .connect(urls)
        .await
        .map_err(|e| NatsError::Connect {
            urls: settings.urls.clone(),
            message: e.to_string(),
        })?;
    // `retry_on_initial_connect` returns before the first connection: wait for it, so the
    // version check below sees a real server.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() > deadline {
            return Err(NatsError::Connect {
                urls: settings.urls.clone(),
                message: "no server answered within 120s".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = client.server_info();
    if parse_version(&info.version).is_none_or(|v| v < MIN_SERVER) {
        return Err(NatsError::OldServer {
            server: info.server_name,
            version: info.version,
        });
    }
    let mut js = jetstream::new(client.clone());
    js.set_timeout(settings.request_timeout);
    let records = ensure_stream(
        &js,
        stream::Config {
            name: RECORDS.into(),
            subjects: vec!["gt.rec.>".into()],
            max_bytes: settings.stream_max_bytes as i64,
            discard: stream::DiscardPolicy::New,
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.replicas,
            storage: stream::StorageType::File,
            max_message_size: 1024 * 1024,
            ..Default::default()
        },
    )
    .await?;
    let seen = ensure_stream(
        &js,
        stream::Config {
            name: SEEN.into(),
            subjects: vec!["gt.seen.*".into()],
            max_age: dedup_window,
            duplicate_window: settings.duplicate_window.min(dedup_window),
            num_replicas: settings.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        },
    )
    .await?;
    let shards = ensure_kv(&js, SHARDS, settings.replicas, Duration::ZERO).await?;
    let leases = ensure_kv(&js, LEASES, settings.replicas, settings.lease_ttl).await?;
    let floors = ensure_kv(&js, FLOORS, settings.replicas, FLOOR_TTL).await?;
    let mut records = records;
    let info = records
        .info()
        .await
        .map_err(|e| object(RECORDS, e))?
        .clone();
    check_records(&info.config, settings)?;
    meta.records_created = info.created.to_rfc3339();
    // A bucket just created may have no leader yet ("no responders"): retried like the
    // objects above; a disagreement is final.
    let mut attempt = 0;
    loop {
        match check_meta(&shards, &meta).await {
            Ok(()) => break,
            Err(e @ NatsError::Mismatch { .. }) => return Err(e),
            Err(e) if attempt >= 60 => return Err(e),
            Err(e) => tracing::debug!("cluster meta: {e}; retrying"),
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(Nats {
        client,
        js,
        records,
        seen,
        shards,
        leases,
        floors,
    })
}

/// Creates the stream, or takes the existing one as it is (its limits may have been raised
/// by an operator; its name and subjects are what matter).
async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, NatsError> {
    let name = config.name.clone();
    let mut last = String::new();
    // A cluster that just formed may not have a JetStream meta leader yet.
    for _ in 0..60 {
        match js.get_or_create_stream(config.clone()).await {
            Ok(s) => return Ok(s),
            Err(e) if no_room(&e) => {
                return Err(object(
                    &name,
                    format!(
                        "{e}: the stream needs {} bytes on every server that holds one of its {} replicas; lower [cluster] stream_max_bytes or raise the servers' jetstream max_file_store",
                        config.max_bytes, config.num_replicas
                    ),
                ));
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(object(&name, last))
}

/// The servers cannot place the stream at its size: a configuration error, not a cluster still
/// forming, so it is not retried. A single server answers "insufficient storage resources
/// available" (error code 10047); a cluster answers "no suitable peers for placement" (10005)
/// with its reasons after it. Only "insufficient storage" alone is final: the server reports it
/// for peers whose limits it knows, while "peer offline" beside it may be a cluster still
/// forming, so that is retried. Both answers are pinned by
/// `cluster::a_stream_larger_than_the_servers_store_is_refused_at_start_up`.
fn no_room(e: &jetstream::context::CreateStreamError) -> bool {
    let jetstream::context::CreateStreamErrorKind::JetStream(js) = e.kind() else {
        return false;
    };
    match js.error_code() {
        jetstream::ErrorCode::STORAGE_RESOURCES_EXCEEDED => true,
        // The client keeps the description private; its Display starts with it.
        jetstream::ErrorCode::CLUSTER_NO_PEERS => {
            let reasons = js.to_string();
            reasons.contains("insufficient storage") && !reasons.contains("offline")
        }
        _ => false,
    }
}

async fn ensure_kv(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
    max_age: Duration,
) -> Result<kv::Store, NatsError> {
    let mut last = String::new();
    for _ in 0..60 {
        if let Ok(store) = js.get_key_value(bucket).await {
            return Ok(store);
        }
        match js
            .create_key_value(kv::Config {
                bucket: bucket.into(),
                history: 1,
                max_age,
                num_replicas: replicas,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
        {
            Ok(store) => return Ok(store),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(object(bucket, last))
}

/// Refuses a `GT_RECORDS` made (or edited) with settings that could drop records.
fn check_records(config: &stream::Config, settings: &ClusterSettings) -> Result<(), NatsError> {
    let mut found = Vec::new();
    if config.discard != stream::DiscardPolicy::New {
        found.push("discard: old".to_string());
    }
    if !config.max_age.is_zero() {
        found.push(format!("max_age {:?}", config.max_age));
    }
    if config.num_replicas < settings.replicas {
        found.push(format!("{} replicas", config.num_replicas));
    }
    if found.is_empty() {
        return Ok(());
    }
    Err(NatsError::StreamSettings {
        found: found.join(", "),
        needed: format!(
            "discard: new, no max_age, at least {} replicas ([cluster] replicas)",
            settings.replicas
        ),
    })
}

/// Records `meta` if the cluster has none yet, else refuses a collector that disagrees.
async fn check_meta(store: &kv::Store, meta: &Meta) -> Result<(), NatsError> {
    let bytes = serde_json::to_vec(meta).unwrap_or_default();
    match store.create("meta", bytes.into()).await {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(e) => return Err(object(SHARDS, e)),
    }
    let existing = store
        .get("meta")
        .await
        .map_err(|e| object(SHARDS, e))?
        .ok_or_else(|| object(SHARDS, "meta vanished"))?;
    let existing: Meta = serde_json::from_slice(&existing).map_err(|e| object(SHARDS, e))?;
    let describe = |m: &Meta| {
        format!(
            "{} shards, signing key {}, {}",
            m.shards, m.key_fingerprint, m.trail
        )
    };
    if existing.shards != meta.shards
        || existing.key_fingerprint != meta.key_fingerprint
        || existing.trail != meta.trail
    {
        return Err(NatsError::Mismatch {
            existing: describe(&existing),
            configured: describe(meta),
        });
    }
    if existing.records_created != meta.records_created {
        return Err(NatsError::Mismatch {
            existing: format!("stream {RECORDS} created {}", existing.records_created),
            configured: format!(
                "stream {RECORDS} created {} (the stream was made again; the shards' positions refer to the old one)",
                meta.records_created
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_spread_and_are_stable() {
        // FNV-1a 32 of "" is the offset basis.
        assert_eq!(shard_of("", "", u32::MAX), 0x811c_9dc5);
        let a = shard_of("111122223333", "eu-west-1", 16);
        assert_eq!(a, shard_of("111122223333", "eu-west-1", 16));
        let used: std::collections::HashSet<u32> = [
            "us-east-1",
            "us-east-2",
            "us-west-1",
            "us-west-2",
            "eu-west-1",
            "eu-central-1",
            "ap-south-1",
            "sa-east-1",
        ]
        .iter()
        .map(|r| shard_of("111122223333", r, 16))
        .collect();
        assert!(used.len() >= 4, "eight regions land on {used:?}");
    }

    #[test]
    fn versions_compare() {
        assert!(parse_version("2.15.1").unwrap() >= MIN_SERVER);
        assert!(parse_version("v2.12.3").unwrap() >= MIN_SERVER);
        assert!(parse_version("2.9.10").unwrap() < MIN_SERVER);
        assert!(parse_version("2.12.2-beta").unwrap() < MIN_SERVER);
        assert_eq!(parse_version("x"), None);
    }
}
