//! What both sides of Groundtrail agree on.
//!
//! The agent and the collector are separate binaries that may be upgraded at different times, so
//! everything that crosses between them — the CloudTrail record, the batch protocol, the key names
//! and digest format of the trail, the TLS setup — lives here and nowhere else.

pub mod audit_events;
pub mod compact_json;
pub mod config_doc;
pub mod connections;
pub mod event;
pub mod fit;
pub mod json_split;
pub mod listener;
pub mod percent;
pub mod sd_notify;
pub mod shutdown;
pub mod time;
pub mod tls;
pub mod trail;
pub mod wire;

pub use event::{Record, RecordError, Resource, UserIdentity};
