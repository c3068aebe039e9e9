//! Cluster mode: several collectors write one trail through a NATS JetStream cluster, and any
//! of them may die without a record lost or doubled.
//!
//! Without `[cluster]` none of this runs: a collector is one process on its own journal. With
//! it, every collector does every job, and the jobs meet only in JetStream:
//!
//! ```text
//!  agents ──POST /v1/events──▶ any collector: validate, cut into chunks by (account, region)
//!                                   │ publish; 200 only when every chunk is acknowledged
//!                                   ▼
//!            GT_RECORDS  gt.rec.<shard>.<account>.<region>   (R3, discard new, no max_age)
//!                 │ one reader per shard                      │ every collector
//!                 ▼                                           ▼
//!   shard writer (one collector per shard,            event history (its own copy)
//!   lease in GT_LEASES, fenced by GT_SHARDS)           → LookupEvents, console
//!     range ▸ intent ▸ upload ▸ GT_SEEN ▸ digest chain
//!                 ▼
//!       S3 / destinations
//! ```
//!
//! # Guarantees, and where each is kept
//!
//! - **A `200` means replicated** ([`publish`]): JetStream acknowledged every chunk of the
//!   batch. With three replicas on servers that fsync before acknowledging, that is on disk on
//!   two machines. Otherwise the answer is `503` and the agent resends.
//! - **Exactly once in the trail** ([`writer`], [`intent`]): a resend inside the duplicate window
//!   is dropped by JetStream; later ones by the shard writer's dedup by `eventTime` and
//!   `eventID` over `[journal] dedup_window`, whose keys are in `GT_SEEN` for whoever writes the
//!   shard next. A file's key, hash and contents are committed before its first upload and are
//!   a pure function of a stream range, so a new owner uploads the same bytes.
//! - **One writer per shard, even when a lease is wrong** ([`state`], [`membership`]): leases
//!   spread the shards; the compare-and-set on the shard's state stops a stale owner at its next
//!   step, and what it could still upload is byte-identical to what the new owner uploads.
//! - **An unbroken digest chain across owners** ([`writer`]): the chain head and a signed
//!   digest's exact bytes are in the shard's state, so a new owner continues the chain.
//! - **Nothing expires** ([`nats`], [`history`]): the stream has no age limit and refuses
//!   publishes when full; a shard's chunks are purged only below its filed position and every
//!   collector's event-history floor.
//!
//! What cluster mode does not do yet (single-node only; refused by the config check, or said
//! at start-up): `[[trails]]`, event selectors and `StartLogging`/`StopLogging`, Insights,
//! webhooks (refused); detection rules and the agent sequence-gap and silence records (logged).
//! docs/cluster.md is the operator's guide.

pub mod config;
pub mod history;
pub mod intent;
pub mod membership;
pub mod metrics;
pub mod nats;
pub mod publish;
pub mod read;
pub mod service;
pub mod state;
pub mod status;
pub mod writer;
