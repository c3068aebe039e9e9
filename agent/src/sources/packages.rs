//! stub
use super::{Env, PackagesConfig, SourceStats};
use crate::sink::RecordSink;
use groundtrail_common::shutdown::Shutdown;
use std::sync::Arc;
pub static STATS: SourceStats = SourceStats::new();
pub fn spawn(
    _c: &PackagesConfig,
    _e: Arc<Env>,
    _s: Arc<dyn RecordSink>,
    _sh: Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    Vec::new()
}
