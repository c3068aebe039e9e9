//! Alerts: what detection raised, kept durably and delivered at least once to every notifier.
//!
//! ```text
//! journal reader -> rules -> AlertStore::commit (one atomic, fsynced sled batch:
//!                            alerts + per-notifier queue entries + window state + position)
//!                         -> deliver: one task per notifier, its queue in order -> Notifier::send
//! ```
//!
//! # Guarantees
//!
//! - **Durable before announced.** An alert reaches a notifier's queue only inside the batch
//!   that stores it, and [`AlertStore::commit`] returns after that batch is on disk; the
//!   delivery tasks read only the queue. See [`store`].
//! - **Exactly-once raising, per id.** The batch also moves the detector's journal position:
//!   after a crash the detector resumes from the stored position, so records before it are
//!   never evaluated twice, and an alert id already stored is never stored or queued again.
//! - **At least once per notifier, in order.** A queue entry leaves only after a 2xx from
//!   that notifier; the removal is not fsynced at once, so a crash may repeat the deliveries
//!   of the last half second or so. See [`deliver`]. Receivers
//!   dedup on [`Alert::id`] (`X-Groundtrail-Alert-Id`, or SNS's `MessageId`).
//! - **Isolated.** Each notifier has its own queue and task; a down notifier delays nobody.
//! - **Bounded, never silently.** A queue holds at most `max_queued` entries; past it the
//!   oldest entry is dropped, counted, logged and shown in the delivery status.

pub mod config;
pub mod deliver;
pub mod notifier;
pub mod store;
#[cfg(test)]
mod testing;

use serde::{Deserialize, Serialize};

pub use config::{DetectionConfig, NotifierConfig, NotifierKind};
pub use notifier::{Notifier, SendError};
pub use store::{AlertQuery, AlertStore, NotifierStatus};

/// One detection: a rule that matched one record, or a count rule whose threshold was
/// crossed by a group of records.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Alert {
    /// Unique and stable: the same detection raised again (after a crash) has the same id,
    /// which is what makes [`AlertStore::commit`] idempotent.
    pub id: String,
    pub rule_id: String,
    pub rule_title: String,
    /// `info`, `low`, `medium`, `high` or `critical` (the rule engine's levels).
    pub severity: String,
    /// The rule's language: `filter-pattern`, `event-pattern` or `sigma`.
    pub language: String,
    /// Where the rule came from: a pack name or a file path.
    pub rule_origin: String,
    /// RFC 3339, the collector's clock when the alert was raised.
    pub detected_at: String,
    pub first_event_time: String,
    pub last_event_time: String,
    /// For a count rule grouped by a field: the field and the group's value.
    pub group: Option<AlertGroup>,
    /// Records that matched (1 for a single-record rule).
    pub count: u64,
    /// The eventIDs of the matching records, oldest first (for a count rule, the window's,
    /// at most 100: the newest).
    pub event_ids: Vec<String>,
    /// The record that made the rule fire (none with `[detection] include_record = false`).
    pub records: Vec<serde_json::Value>,
    pub summary: String,
    /// `LookupEvents` inputs that find the records, e.g.
    /// `{"LookupAttributes":[{"AttributeKey":"EventId","AttributeValue":"..."}]}`.
    pub lookup: Vec<serde_json::Value>,
    /// The silence in force when the alert was committed: it is stored and listed, not sent.
    pub silenced_by: Option<String>,
}

/// The group of a count rule's alert.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AlertGroup {
    pub field: String,
    pub value: String,
}

/// "Do not send alerts of this rule between `starts` and `ends`" (RFC 3339), with who asked
/// and why. An alert is silenced when its `detected_at` is in `[starts, ends)`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Silence {
    pub id: String,
    pub rule_id: String,
    pub starts: String,
    pub ends: String,
    pub created_by: String,
    pub reason: String,
    pub created_at: String,
    /// Who ended the silence before its `ends` (`ends` is then when they did).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
}

/// Why an alert operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("alert store {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("alert store: {0}")]
    Sled(#[from] sled::Error),
    #[error("alert store holds a damaged entry {key}: {why}")]
    Corrupt { key: String, why: String },
    #[error("alert {id:?}: {why}")]
    InvalidAlert { id: String, why: String },
    #[error("silence {id:?}: {why}")]
    InvalidSilence { id: String, why: String },
    #[error("alert query: {0}")]
    InvalidQuery(String),
    #[error("notifier {name:?}: {why}")]
    Notifier { name: String, why: String },
}

/// The rule engine's severities (`groundtrail_detection::rules::Severity`), least severe
/// first.
pub const SEVERITIES: [&str; 5] = ["info", "low", "medium", "high", "critical"];

/// The rank of a severity (case-insensitive), `None` if it is not one of [`SEVERITIES`].
/// Sigma's `informational` is accepted for `info`.
pub fn severity_rank(s: &str) -> Option<usize> {
    if s.eq_ignore_ascii_case("informational") {
        return Some(0);
    }
    SEVERITIES.iter().position(|l| l.eq_ignore_ascii_case(s))
}

/// Whether an alert of `severity` goes to a notifier with `min_severity`. An alert whose
/// severity is not a known level is sent: better noise than a silently missed alert.
pub fn meets(severity: &str, min_severity: Option<&str>) -> bool {
    match (
        severity_rank(severity),
        min_severity.and_then(severity_rank),
    ) {
        (Some(have), Some(need)) => have >= need,
        _ => true,
    }
}

/// Parses an RFC 3339 time to UTC.
pub(crate) fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_filter() {
        assert!(meets("high", Some("medium")));
        assert!(meets("HIGH", Some("high")));
        assert!(!meets("low", Some("medium")));
        assert!(meets("low", None));
        assert!(meets("weird", Some("critical")));
        // The engine writes `info`; Sigma's `informational` is the same level.
        assert!(!meets("info", Some("low")));
        assert!(meets("info", Some("informational")));
        assert!(!meets("informational", Some("medium")));
        use groundtrail_detection::rules::Severity;
        for s in [
            Severity::Info,
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ] {
            assert!(
                severity_rank(&s.to_string()).is_some(),
                "{s} is a known level"
            );
        }
    }
}
