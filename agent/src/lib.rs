//! groundtrail-agent: captures a host's admin actions and API calls as CloudTrail records and
//! buffers them durably until the collector has committed them.

pub mod app_events;
pub mod buffer;
pub mod config;
pub mod identity;
pub mod metrics;
pub mod shipper;
pub mod sink;
pub mod sources;
pub mod tail;
