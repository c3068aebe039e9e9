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
//! reaching a flush — so the watch also probes both stores once a second (cheap when nothing
//! is dirty), which is how such a store gets found. On a full disk sled can also *block* for
//! good inside a write or a flush instead of failing; a probe that has not finished after
//! [`PROBE_LIMIT`] (10 s) counts as stuck too. The journal's probe first waits for the
//! journal's lock, which a commit blocked inside sled keeps.
//!
//! The watch ([`spawn`]) runs on an OS thread of its own, not as a tokio task, and each probe
//! runs on a helper thread that it waits for with a time limit: a blocked write can hold every
//! runtime worker (other journal writers wait on the journal's lock there), and the watch must
//! still act then. Once the journal or the history is stuck, the watch (within about a second,
//! or [`PROBE_LIMIT`] for a blocked store):
//! 1. reports it: an error log line and `groundtrail_stores_stuck_total` ([`StoreStuck`]);
//! 2. stops the `WATCHDOG=1` pings and tells systemd why (`STATUS=`): the store (a blocked
//!    one is marked so) makes [`healthy`] false, which ends the pings for good
//!    ([`groundtrail_common::sd_notify::watchdog_while`]); a blocked store has usually wedged
//!    the runtime before that, and the pinger is deliberately a tokio task so that a wedged
//!    runtime stops the pings as well;
//! 3. writes a marker file beside the journal ([`marker_path`]) when that disk still takes
//!    those few bytes, so that the next start commits a `CollectorStoreFailed` audit record to
//!    the trail ([`take_marker`]) — the trail shows the outage, not only a log that may be gone;
//! 4. stops the collector, which then exits non-zero (`serve` returns
//!    [`crate::service::ServeError::StoreStuck`]); if the clean stop has not finished after
//!    [`FORCE_EXIT_AFTER`] (15 s: an in-flight request may wait on a flush that never returns,
//!    or the runtime may not run at all) the process exits with status 1 regardless.
//!    `Restart=on-failure` (or the stopped watchdog, whichever comes first) starts a fresh
//!    process, which opens the store again.
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

/// How often the watch looks.
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

/// The stuck store, if one is: the journal, the history, or a `[[trails]]` trail's journal
/// (`trail journal`; found by its own failing writes, not probed).
pub fn stuck(
    journal: &Journal,
    history: &History,
    trails: &[Arc<Journal>],
) -> Option<(&'static str, String)> {
    journal
        .stuck()
        .map(|e| ("journal", e.to_string()))
        .or_else(|| history.stuck().map(|e| ("history", e.to_string())))
        .or_else(|| {
            trails
                .iter()
                .find_map(|t| t.stuck().map(|e| ("trail journal", e.to_string())))
        })
}

/// Whether every store still takes writes: the systemd watchdog's health check.
pub fn healthy(journal: &Journal, history: &History, trails: &[Arc<Journal>]) -> bool {
    stuck(journal, history, trails).is_none()
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

/// The running watch (see [`spawn`]).
#[derive(Debug)]
pub struct Watch {
    /// Dropped by [`Watch::finish`]: the thread ends at its next look.
    quit: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Option<Stuck>>,
}

impl Watch {
    /// Ends the watch once the collector has stopped; the stuck store that stopped it, if one
    /// did (also one found stuck during the clean stop).
    pub async fn finish(self) -> Option<Stuck> {
        let Watch { quit, thread } = self;
        drop(quit);
        // The thread may be in a probe flush: wait for it off the async workers.
        tokio::task::spawn_blocking(move || thread.join().ok().flatten())
            .await
            .ok()
            .flatten()
    }
}

/// Starts the watch on an OS thread of its own (see the module doc: a tokio task would stop
/// with a wedged runtime). When `external` fires (a normal stop) it tells everyone to stop
/// through `stop` and keeps watching until [`Watch::finish`]; when a store is stuck it does
/// steps 1-4 of the module doc and ends. Must be called inside the runtime (the forwarding of
/// `external` is a task).
pub fn spawn(
    journal: Arc<Journal>,
    history: Arc<History>,
    trails: Vec<Arc<Journal>>,
    marker: PathBuf,
    mut external: groundtrail_common::shutdown::Shutdown,
    stop: broadcast::Sender<()>,
) -> std::io::Result<Watch> {
    let (quit, quit_rx) = std::sync::mpsc::channel::<()>();
    let to_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name("store-health".into())
        .spawn(move || run(&journal, &history, &trails, &marker, &quit_rx, &to_stop))?;
    tokio::spawn(async move {
        external.recv().await;
        let _ = stop.send(());
    });
    Ok(Watch { quit, thread })
}

/// The watch thread's loop: a look every [`EVERY`] until `quit` is dropped or a store is stuck.
fn run(
    journal: &Arc<Journal>,
    history: &Arc<History>,
    trails: &[Arc<Journal>],
    marker: &Path,
    quit: &std::sync::mpsc::Receiver<()>,
    stop: &broadcast::Sender<()>,
) -> Option<Stuck> {
    let mut looks = 0u32;
    let (store, error) = loop {
        match quit.recv_timeout(EVERY) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return None,
        }
        looks = looks.wrapping_add(1);
        let mut found = stuck(journal, history, trails);
        if found.is_none() && looks.is_multiple_of(PROBE_EVERY) {
            found = probe(journal, history, trails);
        }
        if let Some(found) = found {
            break found;
        }
    };
    // A blocked store is not marked by sled: mark it, so that [`healthy`] is false (and the
    // pings stop) also where the runtime still runs.
    match store {
        "journal" => journal.mark_stuck(error.clone()),
        "history" => history.mark_stuck(error.clone()),
        // A trail journal is only found stuck once it marked itself.
        _ => {}
    }
    let s = Stuck {
        store: store.to_string(),
        error,
        at: groundtrail_common::time::json_time(groundtrail_common::time::now_secs()),
    };
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
    match serde_json::to_vec(&s).map(|b| std::fs::write(marker, b)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(
            path = %marker.display(),
            "cannot leave the stuck-store marker for the next start: {e}"
        ),
        Err(e) => tracing::warn!("stuck-store marker: {e}"),
    }
    // A sync send: it reaches the tasks whenever the runtime runs them.
    let _ = stop.send(());
    // The clean stop may wait on a flush that never returns, or never run at all (a wedged
    // runtime): exit regardless. A thread of its own, as `finish` joins this one.
    let name = s.store.clone();
    let _ = std::thread::Builder::new()
        .name("store-stuck-exit".into())
        .spawn(move || {
            std::thread::sleep(FORCE_EXIT_AFTER);
            tracing::error!(
                "the {name} store failed every write and the clean stop did not finish in {FORCE_EXIT_AFTER:?}: exiting"
            );
            std::process::exit(1);
        });
    Some(s)
}

/// Flushes both stores on a helper thread, each within [`PROBE_LIMIT`]; the stuck one, if
/// either is (failed twice, or did not finish: sled can block for good on a full disk, and a
/// journal commit blocked inside sled keeps the journal's lock, which the probe waits for).
/// A probe that did not finish leaves its helper thread blocked; the process exits soon.
fn probe(
    journal: &Arc<Journal>,
    history: &Arc<History>,
    trails: &[Arc<Journal>],
) -> Option<(&'static str, String)> {
    let (done, finished) = std::sync::mpsc::channel();
    let (j, h) = (journal.clone(), history.clone());
    let spawned = std::thread::Builder::new()
        .name("store-probe".into())
        .spawn(move || {
            // Errors are for the stuck check below; the stores' users log their own.
            let _ = j.probe_blocking();
            let _ = done.send(());
            let _ = h.probe_blocking();
            let _ = done.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!("store-health probe: cannot start a thread: {e}");
        return stuck(journal, history, trails);
    }
    for store in ["journal", "history"] {
        match finished.recv_timeout(PROBE_LIMIT) {
            Ok(()) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                return Some((
                    store,
                    format!("a flush did not finish within {PROBE_LIMIT:?}"),
                ));
            }
            // The probe panicked: nothing to conclude from it.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    stuck(journal, history, trails)
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
