//! groundtrail-collector: receives agent batches, deduplicates them, writes CloudTrail log files
//! and signs the digest chain.

pub mod config;
pub mod destination;
pub mod validate;
pub mod journal;
pub mod internal_events;
pub mod metrics;
pub mod batcher;
pub mod delivery;
pub mod digest;
