//! Host sources: each turns raw host activity into CloudTrail records. (Being written; the
//! types below are the seam between the sources and the agent runtime.)

use std::sync::Arc;

use groundtrail_common::shutdown::Shutdown;
use serde::{Deserialize, Serialize};

use crate::sink::RecordSink;

/// `[sources]` in the agent config: which sources run and what they read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {}

/// What every source needs to know about the host it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceContext {
    /// Host name, a path element in ARNs and part of deterministic event IDs.
    pub host: String,
    /// `recipientAccountId` of every record.
    pub account_id: String,
    /// `awsRegion` of every record.
    pub region: String,
    /// `<domain>` in event sources (`sshd.<domain>`), default `onprem.internal`.
    pub domain: String,
    /// ARN partition, default `aws`.
    pub partition: String,
}

/// Starts every enabled source. Each task runs until `shutdown` fires; a source whose input is
/// missing or unreadable reports that and waits for it, it does not end the agent.
pub fn spawn_all(
    config: &SourcesConfig,
    ctx: &SourceContext,
    sink: Arc<dyn RecordSink>,
    shutdown: Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    let _ = (config, ctx, sink, shutdown);
    Vec::new()
}
