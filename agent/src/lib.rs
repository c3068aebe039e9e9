//! groundtrail-agent: captures a host's admin actions and API calls as CloudTrail records and
//! buffers them durably until the collector has committed them.
//!
//! ```text
//! sources/ (every input; sources::registry::REGISTRY starts them in this order, endpoints
//! bound before READY):
//! apps --POST /PutAuditEvents--> app_events --------------+
//! host logs --tail (files: rotation-aware, checkpoints) --+
//! journalctl, audit.log, dpkg/apt/yum logs, /etc (fim)    |
//!   who: host_accounts (uid -> userIdentity)              |
//! HTTP clients --> sidecar (reverse proxy) --> upstream   |
//!   who: sidecar::caller_identity \-- a record per call --+
//!                                                         v
//!                    sink::Fitted (records fit the collector's limits)
//!                                                         v
//!     buffer/ (sled): append = records + checkpoint in one atomic write, then commit (group fsync);
//!     read/ack: only what is durable, deleted up to the commit point; side_tree: refused
//!     records; loss: every loss becomes a record of the agent's own
//!                                                         v
//!     shipper --zstd ndjson over mTLS, sequence numbers--> collector (acknowledged -> deleted)
//!
//! control.sock / [control] metrics_listen: status, metrics, resend-set-aside (control)
//! config (the file's shape) --Config::validate--> settings::Settings: typed, checked, the
//!   only thing runtime::run and the CLI take; its identity is the one
//!   host_identity::HostIdentity, copied by every part above
//! ```
//!
//! `runtime::run` wires these together and owns the shutdown order: inputs stop, the agent's
//! stop record is buffered, the shipper sends what it can, the buffer is flushed. Every part
//! names records after the one [`host_identity::HostIdentity`] of the [`settings::Settings`];
//! who a record names as `userIdentity` comes from `sources::host_accounts` (host accounts) and
//! `sources::sidecar::caller_identity` (HTTP callers); every loss the agent knows of becomes a record of
//! its own ([`agent_events`], and `buffer/loss.rs` for the buffer's). The config and the
//! settings depend on the parts they configure, never the reverse. docs/agent.md,
//! "Architecture", walks the same path and lists every module.

pub mod agent_events;
pub mod buffer;
pub mod buffer_tools;
pub mod cli;
pub mod config;
pub mod control;
pub mod host_identity;
pub mod http_util;
pub mod metrics;
pub mod runtime;
pub mod settings;
pub mod ship_batch;
pub mod shipper;
pub mod sink;
pub mod sources;
