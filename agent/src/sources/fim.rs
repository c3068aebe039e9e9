//! stub
use super::{Env, FimConfig, SourceStats};
use crate::sink::RecordSink;
use groundtrail_common::shutdown::Shutdown;
use std::sync::Arc;
pub static STATS: SourceStats = SourceStats::new();
pub fn spawn(
    _c: FimConfig,
    _e: Arc<Env>,
    _s: Arc<dyn RecordSink>,
    _sh: Shutdown,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {})
}
