//! groundtrail-collector: receives agent batches, deduplicates them, writes CloudTrail log files
//! and signs the digest chain.

pub mod agents;
pub mod batcher;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod destination;
pub mod digest;
pub mod ingest;
pub mod internal_events;
pub mod journal;
pub mod keys;
pub mod metrics;
pub mod pki;
pub mod server;
pub mod service;
pub mod validate;
