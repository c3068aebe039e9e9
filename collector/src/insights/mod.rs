//! CloudTrail Insights in the collector: the detector of [`groundtrail_detection::insights`]
//! follows the journal's log, and the Insights records it finds are committed back into the
//! journal, so they are filed, delivered, signed, indexed and matched by detection rules like
//! every other record.
//!
//! ```text
//! journal log -> InsightsReader (Detector::observe, idle flush) -> journal.commit -> batcher
//!   -> CloudTrail-Insight/ files -> the region's digest chain, LookupEvents, detection rules
//! ```
//!
//! # Guarantees
//!
//! - **Every committed record is read once, in log order, without slowing a `200`.** The reader
//!   runs behind the log like the history indexer; it registers its position with the journal
//!   ([`Journal::set_reader`]) so the log is kept from its last checkpoint on, up to the
//!   journal's reader bound (entries trimmed before it read them are logged and counted).
//! - **An Insights record is in the trail exactly once.** It is committed through the journal
//!   (durable before anything else happens) and filed like any record, into its own
//!   `CloudTrail-Insight/` file ([`crate::batcher`]), listed in the digest chain of its
//!   account and region. Its `eventID` is a hash of what it is about, so the same finding
//!   made again (a replay after a crash) is the same record, and the journal's dedup drops it.
//! - **A crash loses no finding and repeats none.** The detector and the log position are saved
//!   together ([`checkpoint`]) only once every record found up to that position is durable.
//!   A restart replays the log from the checkpoint with the saved detector: the same records
//!   in the same order give the same Insights records (the detector reads no clock), which the
//!   journal drops as repeats.
//! - **Quiet APIs still end their insights.** When nothing has been committed for
//!   `[insights] close_idle_after`, the minutes up to now (less the model's lateness) are
//!   judged. This is the one input that is not a record, so a replay of the log would not
//!   repeat it: its findings are saved in the checkpoint with the detector that made them
//!   before they are committed, and a restart commits them first (the journal drops them if
//!   they were in). A record arriving later for a judged minute is counted as late
//!   (`groundtrail_insights_late_records_total`) and in no rate.
//! - **Only what the trail selects is written**: the detector runs both series, and records of
//!   a type not in `[insights] types` are not committed.
//!
//! Senders cannot write Insights records: ingest refuses `eventType: AwsCloudTrailInsight`
//! ([`crate::ingest`]), so everything under `CloudTrail-Insight/` is the collector's own.
//!
//! [`Journal::set_reader`]: crate::journal::Journal::set_reader

pub mod checkpoint;
pub mod config;
mod reader;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use groundtrail_detection::insights::ConfigError;
use tokio::sync::mpsc;

pub use reader::{InsightsReader, READER};

use crate::journal::{Journal, PendingRecord};
use config::InsightsSection;

/// Where the detector's checkpoint lives: beside the journal it reads.
pub fn checkpoint_path(journal_dir: &Path) -> PathBuf {
    journal_dir.join("insights.json")
}

/// Opens the Insights reader, registered with the journal from here on (so call it before
/// anything can trim the log). Start it with [`InsightsReader::run`] only after the batcher
/// has reloaded the journal's pending records: a finding committed before that reload would
/// reach the batcher twice (once reloaded, once from its queue). The task holds a sender of
/// the batcher's queue, so it must end before the batcher can.
pub fn open(
    journal: Arc<Journal>,
    batcher: mpsc::Sender<Vec<PendingRecord>>,
    section: InsightsSection,
    journal_dir: &Path,
) -> Result<InsightsReader, ConfigError> {
    InsightsReader::open(journal, batcher, section, checkpoint_path(journal_dir))
}
