//! A stuck store (journal or event history) restarts the collector, and the trail says so.
//!
//! sled keeps the first I/O error of its write path (a full disk, EIO) and fails every later
//! operation with it until the database is opened again (see [`crate::group_flush`], which
//! notices it). Before this module a collector whose disk had filled up once kept running and
//! kept feeding the systemd watchdog, while refusing every batch with a 500 until someone
//! restarted it by hand, even after the disk had room again.
//!
//! # Guarantee
//!
//! A store is found stuck by the flush that fails (twice, see [`crate::group_flush`]). Ingest
//! flushes after every commit, but a write can also fail without a flush of ours — sled's own
//! background flusher meets the full disk first, and every later commit then fails before
//! reaching a flush — so [`watch`] also flushes both stores once a second (cheap when nothing
//! is dirty), which is how such a store gets found.
//!
//! Once the journal or the history is stuck, [`watch`] (within about a second):
//! 1. reports it: an error log line and `groundtrail_stores_stuck_total` ([`StoreStuck`]);
//! 2. makes [`healthy`] false, which stops the `WATCHDOG=1` pings for good
//!    ([`groundtrail_common::sd_notify::watchdog_while`]) and tells systemd why (`STATUS=`);
//! 3. writes a marker file beside the journal ([`marker_path`]) when the disk still takes those
//!    few bytes, so that the next start commits a `CollectorStoreFailed` audit record to the
//!    trail ([`take_marker`]) — the trail shows the outage, not only a log that may be gone;
//! 4. stops the collector (exiting after 15 s regardless, as an in-flight request may wait on
//!    a flush that never returns), which then exits non-zero (`serve` returns
//!    [`crate::service::ServeError::StoreStuck`]): `Restart=on-failure` (or the stopped
//!    watchdog, whichever comes first) starts a fresh process, which opens the store again.
//!
//! Nothing acknowledged is lost on the way: the journal is crash-safe, a record was answered
//! `200` only after a flush that succeeded, and what was refused is resent by its agent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use groundtrail_common::{Record, UserIdentity};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast;

use crate::history::History;
use crate::internal_events::{InternalEvent, StoreStuck};
use crate::journal::Journal;

/// How often [`watch`] looks.
const EVERY: Duration = Duration::from_millis(250);
/// Every how many looks it flushes both stores (see the module doc).
const PROBE_EVERY: u32 = 4;
/// A probe flush that has not finished after this long means a wedged store (sled's flush can
/// block for good on a full disk), which is as stuck as one that fails.
const PROBE_LIMIT: Duration = Duration::from_secs(10);
/// After a stuck store stopped the collector, the process exits after this long even if the
/// clean stop has not finished (an in-flight request may wait on that blocked flush forever).
const FORCE_EXIT_AFTER: Duration = Duration::from_secs(15);

/// Which store is stuck, and the error it keeps failing with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stuck {
    /// `journal` or `history`.
    pub store: String,
    pub error: String,
    /// When it was noticed (CloudTrail JSON time).
    pub at: String,
}

/// The stuck store, if either is.
pub fn stuck(journal: &Journal, history: &History) -> Option<(&'static str, String)> {
    journal
        .stuck()
        .map(|e| ("journal", e.to_string()))
        .or_else(|| history.stuck().map(|e| ("history", e.to_string())))
}

/// Whether both stores still take writes: the systemd watchdog's health check.
pub fn healthy(journal: &Journal, history: &History) -> bool {
    stuck(journal, history).is_none()
}

/// The marker a stuck store leaves for the next start: `<journal>.stuck.json`.
pub fn marker_path(journal_path: &Path) -> PathBuf {
    let mut name = journal_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "journal".into());
    name.push(".stuck.json");
    journal_path.with_file_name(name)
}

/// Waits until `external` fires (a normal stop: returns `None`) or a store is stuck (does
/// steps 1-3 of the module doc and returns it). Either way it then tells everyone to stop
/// through `stop`.
pub async fn watch(
    journal: Arc<Journal>,
    history: Arc<History>,
    marker: PathBuf,
    mut external: groundtrail_common::shutdown::Shutdown,
    stop: broadcast::Sender<()>,
) -> Option<Stuck> {
    let mut looks = 0u32;
    let found = loop {
        tokio::select! {
            _ = external.recv() => break None,
            _ = tokio::time::sleep(EVERY) => {
                looks = looks.wrapping_add(1);
                let mut found = stuck(&journal, &history);
                if found.is_none() && looks.is_multiple_of(PROBE_EVERY) {
                    // Errors are for the stuck check below; callers log their own.
                    if tokio::time::timeout(PROBE_LIMIT, journal.flush()).await.is_err() {
                        found = Some(("journal", format!("a flush did not finish within {PROBE_LIMIT:?}")));
                    } else if tokio::time::timeout(PROBE_LIMIT, history.flush()).await.is_err() {
                        found = Some(("history", format!("a flush did not finish within {PROBE_LIMIT:?}")));
                    }
                    found = found.or_else(|| stuck(&journal, &history));
                }
                if let Some((store, error)) = found {
                    break Some(Stuck {
                        store: store.to_string(),
                        error,
                        at: groundtrail_common::time::json_time(
                            groundtrail_common::time::now_secs(),
                        ),
                    });
                }
            }
        }
    };
    if let Some(s) = &found {
        StoreStuck {
            store: &s.store,
            error: &s.error,
        }
        .emit();
        groundtrail_common::sd_notify::notify(&format!(
            "STATUS=the {} store fails every write ({}); restarting",
            s.store, s.error
        ));
        // The disk may be full: a marker that cannot be written only costs the audit record.
        match serde_json::to_vec(s).map(|b| std::fs::write(&marker, b)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                path = %marker.display(),
                "cannot leave the stuck-store marker for the next start: {e}"
            ),
            Err(e) => tracing::warn!("stuck-store marker: {e}"),
        }
        // The clean stop may wait on a flush that never returns: exit regardless.
        let store = s.store.clone();
        std::thread::spawn(move || {
            std::thread::sleep(FORCE_EXIT_AFTER);
            tracing::error!(
                "the {store} store is stuck and the clean stop did not finish in {FORCE_EXIT_AFTER:?}: exiting"
            );
            std::process::exit(1);
        });
    }
    let _ = stop.send(());
    found
}

/// Reads (and removes) the marker a stuck store left, as the `CollectorStoreFailed` record to
/// commit. `None` when there is no marker. Without an account (`[trail] account_id` empty)
/// there is no chain to put the record in: the marker is logged and removed.
pub fn take_marker(marker: &Path, domain: &str, account: &str, region: &str) -> Option<Record> {
    let bytes = std::fs::read(marker).ok()?;
    let _ = std::fs::remove_file(marker);
    let found: Stuck = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(path = %marker.display(), "unreadable stuck-store marker: {e}");
            return None;
        }
    };
    tracing::warn!(
        store = %found.store,
        at = %found.at,
        "the previous run stopped because the {} store failed every write: {}",
        found.store,
        found.error
    );
    if account.is_empty() {
        return None;
    }
    let source = format!("groundtrail.{domain}");
    let mut r = Record::new(
        source.clone(),
        "CollectorStoreFailed",
        "AwsServiceEvent",
        region,
        account,
    );
    r.user_identity = Some(UserIdentity {
        identity_type: Some("AWSService".into()),
        invoked_by: Some(source.clone()),
        ..UserIdentity::default()
    });
    r.source_ip_address = Some(source.clone());
    r.user_agent = Some(source);
    r.read_only = Some(false);
    r.request_parameters = Some(json!({
        "store": found.store,
        "error": found.error,
        "noticedAt": found.at,
    }));
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_becomes_one_audit_record_once() {
        let dir = tempfile::tempdir().unwrap();
        let marker = marker_path(&dir.path().join("journal"));
        assert_eq!(marker, dir.path().join("journal.stuck.json"));
        let s = Stuck {
            store: "journal".into(),
            error: "No space left on device".into(),
            at: "2026-01-01T00:00:00Z".into(),
        };
        std::fs::write(&marker, serde_json::to_vec(&s).unwrap()).unwrap();
        let r = take_marker(&marker, "onprem.internal", "111122223333", "us-east-1").unwrap();
        assert_eq!(r.event_name, "CollectorStoreFailed");
        assert_eq!(r.event_source, "groundtrail.onprem.internal");
        assert_eq!(r.request_parameters.as_ref().unwrap()["store"], "journal");
        assert!(!marker.exists());
        assert!(take_marker(&marker, "onprem.internal", "111122223333", "us-east-1").is_none());
    }
}
