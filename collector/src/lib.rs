//! groundtrail-collector: receives agent batches, deduplicates them, writes CloudTrail log files
//! and signs the digest chain.
//!
//! ```text
//! agent --POST /v1/events--> server (listener, TLS, connection cap)
//!                              -> ingest (authn, authz, limits, parse)
//!                              -> agents (sequence gaps) + journal (dedup, commit, flush) -> 200
//! journal -> batcher (per account+region file; key + bytes recorded before upload)
//!         -> delivery (one queue per destination, in order, retried with backoff)
//!         -> digest (per destination+account+region chain, signed, head in the journal)
//!         -> delivery again (the digest objects)
//! journal -> indexer (event history, LookupEvents)
//!         -> detector (rules; alerts stored, then queued) -> alerts::deliver (one queue per notifier)
//!         -> insights (unusual call and error rates) -> journal again (CloudTrail-Insight/ files)
//! ```
//!
//! The journal is the only state; every other part can be rebuilt from it after a crash, which
//! is what makes delivery exactly-once: see [`journal`] for the invariants and [`digest`] for the
//! chain's guarantees. [`service::serve`] wires the parts and owns the shutdown order.

pub mod agents;
pub mod alerts;
pub mod alerts_cli;
pub mod api;
pub mod batcher;
pub mod budget;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod dedup;
pub mod delivery;
pub mod destination;
pub mod detection_api;
pub mod detector;
pub mod digest;
pub mod file_notifications;
pub mod group_flush;
pub mod history;
pub mod http_post;
pub mod indexer;
pub mod ingest;
pub mod insights;
pub mod internal_events;
pub mod journal;
pub mod log;
pub mod lookup_cli;
pub mod metrics;
pub mod pki;
pub mod put_audit_events;
pub mod selectors;
pub mod server;
pub mod service;
pub mod signing_key;
pub mod sigv4;
pub mod store_health;
pub mod trail_control;
pub mod trails;
pub mod validate;
