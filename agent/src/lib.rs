//! groundtrail-agent: captures a host's admin actions and API calls as CloudTrail records and
//! buffers them durably until the collector has committed them.

pub mod agent_events;
pub mod app_events;
pub mod buffer;
pub mod buffer_tools;
pub mod cli;
pub mod config;
pub mod control;
pub mod http_util;
pub mod identity;
pub mod metrics;
pub mod runtime;
pub mod ship_batch;
pub mod shipper;
pub mod sidecar;
pub mod sink;
pub mod sources;
pub mod tail;
