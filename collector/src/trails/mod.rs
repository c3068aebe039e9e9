//! Several trails: each with its own selection of records, destinations, key prefix and digest
//! chains, like CloudTrail's trails in one account.
//!
//! # Design
//!
//! The **primary trail** (`[trail]`, `[[destinations]]`, `[insights]`) lives in the collector's
//! journal, exactly as a single-trail collector always has: ingest commits every record there,
//! and the batcher files what the trail's selectors take and passes over the rest.
//!
//! Every **`[[trails]]` trail** has a journal of its own (`<journal>/trails/<name>/`) and runs
//! the same pipeline on it ([`pipeline::Pipeline`]: batcher, deliverers, digest writer). What
//! fills it is its [`feed::Feed`], a reader of the collector's journal like the event history's
//! indexer: it reads each committed entry, keeps the records the trail takes (its selectors and
//! logging state from [`crate::trail_control`], its insight types), and commits them to the
//! trail's journal. So each trail gets every guarantee the journal gives the primary one
//! (dedup, exactly-once files, every destination gets every file, an unbroken chain), with no
//! second implementation of any of them, and a trail's slow or failing destination delays only
//! that trail.
//!
//! # Guarantees
//!
//! - **Nothing the trail takes is lost.** The feed is a registered reader of the collector's
//!   journal, so its log is not trimmed below the feed's position (up to the journal's bound
//!   for a reader that is broken for good, which is then logged and counted in
//!   `groundtrail_trail_skipped_entries_total`). The position moves, in the trail's journal
//!   (`o/feed`), only after the copied records are durable there.
//! - **Nothing is doubled.** A crash between the copy and the position's move copies the same
//!   records again; the trail's journal drops them as repeats (same `eventTime` and `eventID`).
//! - **A new trail records from its creation.** The first start of a trail begins at the end
//!   of the collector's log, as a new CloudTrail trail does; it is not back-filled.
//! - **A change applies from then on.** `PutEventSelectors`, `StartLogging` and `StopLogging`
//!   on a trail change its control; the feed judges each batch by the settings of the moment.
//! - **Shutdown.** After the listeners have drained, each feed copies what the log holds up to
//!   its end, then its trail's batcher closes its files, which are delivered and digested with
//!   the primary trail's within `[server] shutdown_grace`. What is left goes out next start.
//!
//! The trails share the signing key (each trail's journal records it, so a changed key is
//! refused per trail as for the primary), the account, the partition and the file and digest
//! intervals of `[trail]`. The event history, detection and Insights follow the collector's
//! journal: they see every record, whichever trails take it.

mod config;
pub mod feed;
pub mod pipeline;

pub use config::{
    TrailSection, TrailSpec, check_destinations, check_name, check_organization_id, names_trail,
};

/// Where a `[[trails]]` trail's journal lives: `<journal>/trails/<name>`.
pub fn journal_path(journal: &std::path::Path, name: &str) -> std::path::PathBuf {
    journal.join("trails").join(name)
}
