//! The alert store: alerts, silences, each notifier's queue and the detector's position, in
//! one sled database of its own (`<state_dir>/alerts`), apart from the journal so that
//! detection can never slow or corrupt ingest.
//!
//! # Guarantees
//!
//! 1. **A commit is all or nothing, and durable when it returns.** [`AlertStore::commit`]
//!    writes the new alerts, their queue entries, the window state and the position as one
//!    sled `Batch` (atomic across a crash), then waits for `flush_async`. A crash before it
//!    returns loses the whole commit, never part of it, so the detector re-evaluates the same
//!    records from the old position and raises the same alerts again.
//! 2. **An alert id is stored and queued once.** The check "is this id new" and the write are
//!    made under one lock, so committing an alert again (a retried commit, a re-evaluation)
//!    changes nothing.
//! 3. **Nothing is announced before it is durable.** Queue entries written by a commit become
//!    visible to the delivery tasks ([`AlertStore::pending`]) only after its flush returned.
//! 4. **Silences are applied at commit.** An alert whose `detected_at` is inside a silence of
//!    its rule is stored with `silenced_by` and queued for no notifier. Silences are durable
//!    when [`AlertStore::add_silence`] returns.
//! 5. **A queue entry leaves only after its notifier answered 2xx**, or when the queue is
//!    over `max_queued` (the oldest leave first; each drop is counted in
//!    `groundtrail_alert_notifications_dropped_total`, logged as an error and kept in the
//!    notifier's status). Removing a delivered entry is not flushed at once: a crash may send
//!    an alert a second time, never zero times.
//!
//! # Layout (default tree, so one `Batch` spans all of it)
//!
//! | key | value |
//! |---|---|
//! | `p` | u64: the journal position evaluated up to |
//! | `w/<key>` | the detector's window state |
//! | `a/<alert id>` | [`Alert`] JSON |
//! | `i/<detected_at ms u64><seq u64>` | `<rule_id>\0<alert id>`: the time index for listing |
//! | `q/<notifier>\0<seq u64>` | alert id: queued for that notifier |
//! | `s/<notifier>` | [`StatusRecord`] JSON |
//! | `x/<silence id>` | [`Silence`] JSON |
//!
//! Integers are big-endian; `seq` comes from sled's `generate_id`, which only grows, also
//! across restarts, so queue order is commit order.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::alerts::{Alert, AlertError, DetectionConfig, Silence, meets, parse_time};
use crate::metrics::{Metrics, metrics};

/// sled's page cache: the store is small and read mostly by its own writes.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// Queue bound for notifiers opened by name only.
const DEFAULT_MAX_QUEUED: usize = 100_000;
/// `list` pages hold at most this many alerts.
pub const MAX_LIST: usize = 1000;

/// One entry of the detector's window state: key, value.
pub type StateEntry = (Vec<u8>, Vec<u8>);
/// A change to the window state: key, and the new value or `None` to delete it.
pub type StateWrite = (Vec<u8>, Option<Vec<u8>>);
/// What the synchronous part of a commit hands back: the new alerts, the drops per
/// notifier, and the highest queue seq written.
type Written = (Vec<Alert>, Vec<(String, u64)>, Option<u64>);

/// Which alerts go to a notifier, and how many may wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    pub min_severity: Option<String>,
    pub max_queued: usize,
}

/// `list`'s filter and page.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertQuery {
    /// Only this rule's alerts.
    pub rule_id: Option<String>,
    /// `detected_at` at or after this (RFC 3339).
    pub since: Option<String>,
    /// `detected_at` at or before this (RFC 3339).
    pub until: Option<String>,
    /// Page size, 1..=1000; 0 means 100.
    pub limit: usize,
    /// From the previous page.
    pub next_token: Option<String>,
}

/// A notifier's delivery state, for the API and the CLI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifierStatus {
    pub name: String,
    /// Alerts queued, not yet answered 2xx.
    pub pending: u64,
    pub delivered_total: u64,
    /// Alerts dropped from this queue because it reached `max_queued`.
    pub dropped_total: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    pub last_success: Option<String>,
}

/// What `s/<notifier>` holds: the status without the queue length (counted at open).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StatusRecord {
    delivered_total: u64,
    dropped_total: u64,
    last_error: Option<String>,
    last_error_at: Option<String>,
    last_success: Option<String>,
}

/// See the module docs.
pub struct AlertStore {
    db: sled::Db,
    routes: Vec<Route>,
    /// Serializes commits, including their flush, so that [`Self::durable`] is exact.
    commit_lock: tokio::sync::Mutex<()>,
    /// Queue lengths and statuses, and every check-then-write on the database.
    state: Mutex<BTreeMap<String, (u64, StatusRecord)>>,
    /// Highest queue `seq` known durable: entries above it are not handed out yet.
    durable: AtomicU64,
    /// Highest queue `seq` written (durable or not).
    written: AtomicU64,
    /// Notified (to all waiters) after each commit that queued something.
    queued: Notify,
}

fn queue_prefix(name: &str) -> Vec<u8> {
    let mut k = b"q/".to_vec();
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k
}

fn key(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(rest);
    k
}

fn now() -> String {
    groundtrail_common::time::json_time(chrono::Utc::now())
}

fn corrupt(k: &[u8], why: impl ToString) -> AlertError {
    AlertError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        why: why.to_string(),
    }
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes
        .get(at..at + 8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

impl AlertStore {
    /// Opens (or creates) the store, with every alert going to every named notifier.
    pub fn open(path: &Path, notifiers: &[String]) -> Result<AlertStore, AlertError> {
        let routes = notifiers
            .iter()
            .map(|n| Route {
                name: n.clone(),
                min_severity: None,
                max_queued: DEFAULT_MAX_QUEUED,
            })
            .collect();
        AlertStore::open_routes(path, routes)
    }

    /// Opens the store with the routes (`min_severity`, `max_queued`) of `[detection]`.
    pub fn open_for(path: &Path, config: &DetectionConfig) -> Result<AlertStore, AlertError> {
        let routes = config
            .notifiers
            .iter()
            .map(|n| Route {
                name: n.name.clone(),
                min_severity: n.min_severity.clone(),
                max_queued: n.max_queued,
            })
            .collect();
        AlertStore::open_routes(path, routes)
    }

    /// Opens the store with explicit routes.
    pub fn open_routes(path: &Path, routes: Vec<Route>) -> Result<AlertStore, AlertError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| AlertError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let mut state = BTreeMap::new();
        for r in &routes {
            let pending = db.scan_prefix(queue_prefix(&r.name)).count() as u64;
            let status = match db.get(key(b"s/", r.name.as_bytes()))? {
                Some(v) => serde_json::from_slice(&v).map_err(|e| corrupt(b"s/", e))?,
                None => StatusRecord::default(),
            };
            metrics().alert_queued(&r.name, pending);
            state.insert(r.name.clone(), (pending, status));
        }
        warn_orphaned_queues(&db, &routes)?;
        // Every seq generated from now on is above this one, and everything below it was read
        // from disk.
        let durable = db.generate_id()?;
        Ok(AlertStore {
            db,
            routes,
            commit_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
            durable: AtomicU64::new(durable),
            written: AtomicU64::new(durable),
            queued: Notify::new(),
        })
    }

    /// The notifiers this store queues for.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The journal log position the detector has evaluated up to (exclusive), if any.
    pub fn position(&self) -> Result<Option<u64>, AlertError> {
        match self.db.get(b"p")? {
            Some(v) => Ok(Some(
                u64_at(&v, 0).ok_or_else(|| corrupt(b"p", "not 8 bytes"))?,
            )),
            None => Ok(None),
        }
    }

    /// The detector's window state as last committed.
    pub fn window_state(&self) -> Result<Vec<StateEntry>, AlertError> {
        self.db
            .scan_prefix(b"w/")
            .map(|r| {
                let (k, v) = r?;
                Ok((k[2..].to_vec(), v.to_vec()))
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (u64, StatusRecord)>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// See guarantees 1-4: stores each new alert, queues it for every notifier whose
    /// `min_severity` it meets unless a silence covers it, applies `state` (`None` deletes)
    /// and sets `position`, in one batch, flushed before returning. Returns the new alerts as
    /// stored (with `silenced_by` set where a silence applied).
    pub async fn commit(
        &self,
        position: u64,
        alerts: Vec<Alert>,
        state: Vec<StateWrite>,
    ) -> Result<Vec<Alert>, AlertError> {
        let _commit = self.commit_lock.lock().await;
        let (new, drops, max_seq) = self.write_commit(position, alerts, state)?;
        if let Some(seq) = max_seq {
            self.written.fetch_max(seq, Ordering::SeqCst);
        }
        self.db.flush_async().await?;
        // Everything written so far is on disk now, including the entries of an earlier
        // commit whose flush failed after its batch was applied.
        let written = self.written.load(Ordering::SeqCst);
        if self.durable.fetch_max(written, Ordering::SeqCst) < written {
            self.queued.notify_waiters();
        }
        for (name, n) in drops {
            tracing::error!(
                notifier = %name,
                dropped = n,
                "{n} queued alerts dropped for notifier {name}: its queue reached max_queued while it did not answer (the alerts stay stored and listed)"
            );
        }
        let m = metrics();
        Metrics::add(&m.alerts_raised, new.len() as u64);
        Metrics::add(
            &m.alerts_silenced,
            new.iter().filter(|a| a.silenced_by.is_some()).count() as u64,
        );
        Ok(new)
    }

    /// The synchronous part of [`Self::commit`]: checks, builds and applies the batch.
    fn write_commit(
        &self,
        position: u64,
        alerts: Vec<Alert>,
        state: Vec<StateWrite>,
    ) -> Result<Written, AlertError> {
        let mut times = Vec::with_capacity(alerts.len());
        for a in &alerts {
            let bad = |why: &str| AlertError::InvalidAlert {
                id: a.id.clone(),
                why: why.into(),
            };
            if a.id.is_empty() || a.id.contains('\0') {
                return Err(bad("the id is empty or holds a NUL"));
            }
            if a.rule_id.contains('\0') {
                return Err(bad("the rule_id holds a NUL"));
            }
            let t = parse_time(&a.detected_at)
                .ok_or_else(|| bad("detected_at is not an RFC 3339 time"))?;
            times.push(u64::try_from(t.timestamp_millis()).unwrap_or(0));
        }
        let silences = self.silences()?;
        let mut st = self.lock();
        let mut batch = sled::Batch::default();
        let mut seen = HashSet::new();
        let mut new = Vec::new();
        // Per notifier: the new queue keys, in order.
        let mut queued: BTreeMap<&str, Vec<(Vec<u8>, String)>> = BTreeMap::new();
        let mut max_seq = None;
        for (mut a, ms) in alerts.into_iter().zip(times) {
            let akey = key(b"a/", a.id.as_bytes());
            if !seen.insert(a.id.clone()) || self.db.contains_key(&akey)? {
                continue;
            }
            a.silenced_by = silences
                .iter()
                .find(|s| s.rule_id == a.rule_id && covers(s, &a.detected_at))
                .map(|s| s.id.clone());
            let seq = self.db.generate_id()?;
            max_seq = Some(seq);
            let json = serde_json::to_vec(&a).map_err(|e| AlertError::InvalidAlert {
                id: a.id.clone(),
                why: e.to_string(),
            })?;
            batch.insert(akey, json);
            let mut ikey = b"i/".to_vec();
            ikey.extend_from_slice(&ms.to_be_bytes());
            ikey.extend_from_slice(&seq.to_be_bytes());
            batch.insert(
                ikey,
                [a.rule_id.as_bytes(), b"\0", a.id.as_bytes()].concat(),
            );
            if a.silenced_by.is_none() {
                for r in &self.routes {
                    if meets(&a.severity, r.min_severity.as_deref()) {
                        let qkey = key(&queue_prefix(&r.name), &seq.to_be_bytes());
                        queued
                            .entry(r.name.as_str())
                            .or_default()
                            .push((qkey, a.id.clone()));
                    }
                }
            }
            new.push(a);
        }
        // Keep each queue within its bound: the oldest entries leave first.
        let mut drops = Vec::new();
        let mut new_len = BTreeMap::new();
        for r in &self.routes {
            let adds = queued.remove(r.name.as_str()).unwrap_or_default();
            let (pending, status) = st.get(&r.name).cloned().unwrap_or_default();
            let excess = (pending as usize + adds.len()).saturating_sub(r.max_queued);
            let old_out = excess.min(pending as usize);
            for k in self
                .db
                .scan_prefix(queue_prefix(&r.name))
                .keys()
                .take(old_out)
            {
                batch.remove(k?);
            }
            let new_out = excess - old_out;
            for (k, id) in adds.iter().skip(new_out) {
                batch.insert(k.clone(), id.as_bytes());
            }
            if excess > 0 {
                let mut status = status;
                status.dropped_total += excess as u64;
                status.last_error = Some(format!(
                    "{excess} queued alerts dropped: the queue reached max_queued = {}",
                    r.max_queued
                ));
                status.last_error_at = Some(now());
                batch.insert(
                    key(b"s/", r.name.as_bytes()),
                    serde_json::to_vec(&status).expect("status serializes"),
                );
                drops.push((r.name.clone(), excess as u64));
                new_len.insert(
                    r.name.clone(),
                    (pending + adds.len() as u64 - excess as u64, status),
                );
            } else if !adds.is_empty() {
                new_len.insert(r.name.clone(), (pending + adds.len() as u64, status));
            }
        }
        for (k, v) in state {
            let k = key(b"w/", &k);
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        batch.insert(b"p".as_slice(), position.to_be_bytes().as_slice());
        self.db.apply_batch(batch)?;
        let m = metrics();
        for (name, (pending, status)) in new_len {
            m.alert_queued(&name, pending);
            if let Some((_, n)) = drops.iter().find(|(d, _)| *d == name) {
                m.alert_dropped(&name, *n);
            }
            st.insert(name, (pending, status));
        }
        Ok((new, drops, max_seq))
    }

    /// Alerts, newest first (by `detected_at`, then commit order), and a token for the next
    /// page when there is one.
    pub fn list(&self, q: &AlertQuery) -> Result<(Vec<Alert>, Option<String>), AlertError> {
        let limit = match q.limit {
            0 => 100,
            n if n > MAX_LIST => {
                return Err(AlertError::InvalidQuery(format!(
                    "limit {n} is more than {MAX_LIST}"
                )));
            }
            n => n,
        };
        let ms = |s: &Option<String>, what: &str| -> Result<Option<u64>, AlertError> {
            s.as_deref()
                .map(|s| {
                    parse_time(s)
                        .map(|t| u64::try_from(t.timestamp_millis()).unwrap_or(0))
                        .ok_or_else(|| {
                            AlertError::InvalidQuery(format!(
                                "{what} {s:?} is not an RFC 3339 time"
                            ))
                        })
                })
                .transpose()
        };
        let lo = key(b"i/", &ms(&q.since, "since")?.unwrap_or(0).to_be_bytes());
        let mut hi = match ms(&q.until, "until")? {
            Some(u) => key(b"i/", &u.saturating_add(1).to_be_bytes()),
            None => b"i0".to_vec(),
        };
        if let Some(t) = &q.next_token {
            let k = hex::decode(t)
                .ok()
                .filter(|k| k.len() == 18 && k.starts_with(b"i/"))
                .ok_or_else(|| {
                    AlertError::InvalidQuery(format!("next_token {t:?} is not valid"))
                })?;
            hi = hi.min(k);
        }
        let mut out = Vec::new();
        let mut last = Vec::new();
        if lo >= hi {
            return Ok((out, None));
        }
        for r in self.db.range(lo..hi).rev() {
            let (k, v) = r?;
            let Some(nul) = v.iter().position(|b| *b == 0) else {
                return Err(corrupt(&k, "index entry without a NUL"));
            };
            if q.rule_id
                .as_deref()
                .is_some_and(|r| r.as_bytes() != &v[..nul])
            {
                continue;
            }
            if out.len() == limit {
                return Ok((out, Some(hex::encode(last))));
            }
            let id = String::from_utf8_lossy(&v[nul + 1..]).into_owned();
            let alert = self
                .get(&id)?
                .ok_or_else(|| corrupt(&k, "indexes a missing alert"))?;
            out.push(alert);
            last = k.to_vec();
        }
        Ok((out, None))
    }

    /// Removes alerts detected before `before` (RFC 3339) that no notifier still has queued,
    /// for retention; returns how many were removed. Silences are kept.
    pub fn prune(&self, before: &str) -> Result<u64, AlertError> {
        let cutoff = parse_time(before).ok_or_else(|| {
            AlertError::InvalidQuery(format!("{before:?} is not an RFC 3339 time"))
        })?;
        let cutoff = u64::try_from(cutoff.timestamp_millis()).unwrap_or(0);
        let _st = self.lock();
        let mut queued = HashSet::new();
        for r in self.db.scan_prefix(b"q/").values() {
            queued.insert(r?.to_vec());
        }
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for r in self
            .db
            .range(key(b"i/", &0u64.to_be_bytes())..key(b"i/", &cutoff.to_be_bytes()))
        {
            let (k, v) = r?;
            let Some(nul) = v.iter().position(|b| *b == 0) else {
                return Err(corrupt(&k, "index entry without a NUL"));
            };
            let id = &v[nul + 1..];
            if queued.contains(id) {
                continue;
            }
            batch.remove(k);
            batch.remove(key(b"a/", id));
            removed += 1;
        }
        self.db.apply_batch(batch)?;
        Ok(removed)
    }

    /// One alert by id.
    pub fn get(&self, id: &str) -> Result<Option<Alert>, AlertError> {
        let k = key(b"a/", id.as_bytes());
        self.db
            .get(&k)?
            .map(|v| serde_json::from_slice(&v).map_err(|e| corrupt(&k, e)))
            .transpose()
    }

    /// Records a silence durably. Its id must be new, its times RFC 3339 with `starts` before
    /// `ends`, and who and why must be given.
    pub async fn add_silence(&self, s: Silence) -> Result<(), AlertError> {
        let bad = |why: &str| AlertError::InvalidSilence {
            id: s.id.clone(),
            why: why.into(),
        };
        if s.id.is_empty() || s.id.contains('\0') {
            return Err(bad("the id is empty or holds a NUL"));
        }
        if s.rule_id.is_empty() {
            return Err(bad("rule_id is empty"));
        }
        if s.created_by.trim().is_empty() || s.reason.trim().is_empty() {
            return Err(bad(
                "created_by and reason are required (who silenced it, and why)",
            ));
        }
        let (Some(starts), Some(ends)) = (parse_time(&s.starts), parse_time(&s.ends)) else {
            return Err(bad("starts and ends must be RFC 3339 times"));
        };
        if starts >= ends {
            return Err(bad("starts must be before ends"));
        }
        if parse_time(&s.created_at).is_none() {
            return Err(bad("created_at must be an RFC 3339 time"));
        }
        let json = serde_json::to_vec(&s).map_err(|e| bad(&e.to_string()))?;
        let k = key(b"x/", s.id.as_bytes());
        if self
            .db
            .compare_and_swap(&k, None as Option<&[u8]>, Some(json))?
            .is_err()
        {
            return Err(bad("a silence with this id exists"));
        }
        self.db.flush_async().await?;
        Ok(())
    }

    /// Ends a silence at `at` (or keeps its earlier `ends`), recording `by`; durable when it
    /// returns. The silence stays stored as the record of who silenced what and who ended it.
    /// `None` if there is no silence with this id.
    pub async fn end_silence(
        &self,
        id: &str,
        by: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Silence>, AlertError> {
        let k = key(b"x/", id.as_bytes());
        let Some(old) = self.db.get(&k)? else {
            return Ok(None);
        };
        let mut s: Silence =
            serde_json::from_slice(&old).map_err(|e| corrupt(&k, e.to_string()))?;
        let (starts, ends) = (parse_time(&s.starts), parse_time(&s.ends));
        if let (Some(starts), Some(ends)) = (starts, ends)
            && at < ends
        {
            // A silence not yet begun ends empty: [starts, starts).
            s.ends = at
                .max(starts)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        }
        s.ended_by = Some(by.to_string());
        let json = serde_json::to_vec(&s).map_err(|e| corrupt(&k, e.to_string()))?;
        self.db.insert(&k, json)?;
        self.db.flush_async().await?;
        Ok(Some(s))
    }

    /// Every recorded silence (expired ones too: they are the record of who silenced what).
    pub fn silences(&self) -> Result<Vec<Silence>, AlertError> {
        self.db
            .scan_prefix(b"x/")
            .map(|r| {
                let (k, v) = r?;
                serde_json::from_slice(&v).map_err(|e| corrupt(&k, e))
            })
            .collect()
    }

    /// Each configured notifier's queue length and delivery history.
    pub fn delivery_status(&self) -> Result<Vec<NotifierStatus>, AlertError> {
        let st = self.lock();
        Ok(self
            .routes
            .iter()
            .map(|r| {
                let (pending, s) = st.get(&r.name).cloned().unwrap_or_default();
                NotifierStatus {
                    name: r.name.clone(),
                    pending,
                    delivered_total: s.delivered_total,
                    dropped_total: s.dropped_total,
                    last_error: s.last_error,
                    last_error_at: s.last_error_at,
                    last_success: s.last_success,
                }
            })
            .collect())
    }

    /// Up to `max` of `notifier`'s queued alerts, oldest first, durable ones only (guarantee
    /// 3). An entry whose alert cannot be read is logged and dropped: it could never be sent.
    pub(crate) fn pending(
        &self,
        notifier: &str,
        max: usize,
    ) -> Result<Vec<(Vec<u8>, Alert)>, AlertError> {
        let durable = self.durable.load(Ordering::SeqCst);
        let prefix = queue_prefix(notifier);
        let mut out = Vec::new();
        for r in self.db.scan_prefix(&prefix) {
            let (k, id) = r?;
            let seq = u64_at(&k, prefix.len()).ok_or_else(|| corrupt(&k, "short queue key"))?;
            if seq > durable || out.len() == max {
                break;
            }
            match self.get(&String::from_utf8_lossy(&id))? {
                Some(a) => out.push((k.to_vec(), a)),
                None => {
                    tracing::error!(
                        notifier,
                        "a queued alert cannot be read; dropped from the queue"
                    );
                    self.delivered_inner(notifier, &k, false)?;
                }
            }
        }
        Ok(out)
    }

    /// `notifier` answered 2xx for the queue entry `qkey`: it leaves the queue (not flushed:
    /// guarantee 5).
    pub(crate) fn delivered(&self, notifier: &str, qkey: &[u8]) -> Result<(), AlertError> {
        self.delivered_inner(notifier, qkey, true)
    }

    fn delivered_inner(&self, notifier: &str, qkey: &[u8], ok: bool) -> Result<(), AlertError> {
        let mut st = self.lock();
        if !self.db.contains_key(qkey)? {
            // Dropped by a commit over max_queued while it was being sent.
            return Ok(());
        }
        let entry = st.entry(notifier.to_string()).or_default();
        let mut status = entry.1.clone();
        if ok {
            status.delivered_total += 1;
            status.last_success = Some(now());
        }
        let mut batch = sled::Batch::default();
        batch.remove(qkey);
        batch.insert(
            key(b"s/", notifier.as_bytes()),
            serde_json::to_vec(&status).expect("status serializes"),
        );
        self.db.apply_batch(batch)?;
        entry.0 = entry.0.saturating_sub(1);
        entry.1 = status;
        let m = metrics();
        m.alert_queued(notifier, entry.0);
        if ok {
            m.alert_delivered(notifier);
        }
        Ok(())
    }

    /// An attempt to send to `notifier` failed; kept as its `last_error`.
    pub(crate) fn failed(&self, notifier: &str, why: &str) -> Result<(), AlertError> {
        let mut st = self.lock();
        let entry = st.entry(notifier.to_string()).or_default();
        entry.1.last_error = Some(why.to_string());
        entry.1.last_error_at = Some(now());
        self.db.insert(
            key(b"s/", notifier.as_bytes()),
            serde_json::to_vec(&entry.1).expect("status serializes"),
        )?;
        metrics().alert_failed(notifier);
        Ok(())
    }

    /// Notified after every commit that queued something.
    pub(crate) fn queued(&self) -> &Notify {
        &self.queued
    }
}

/// Queues of notifiers no longer configured are kept (renaming a notifier back delivers
/// them), but said out loud: nothing will send them.
fn warn_orphaned_queues(db: &sled::Db, routes: &[Route]) -> Result<(), AlertError> {
    let mut orphans: BTreeMap<String, u64> = BTreeMap::new();
    for k in db.scan_prefix(b"q/").keys() {
        let k = k?;
        let name = k[2..].split(|b| *b == 0).next().unwrap_or_default();
        let name = String::from_utf8_lossy(name).into_owned();
        if !routes.iter().any(|r| r.name == name) {
            *orphans.entry(name).or_default() += 1;
        }
    }
    for (name, n) in orphans {
        tracing::warn!(
            notifier = %name,
            "{n} alerts are queued for notifier {name:?}, which is no longer configured: they will not be sent unless it is configured again"
        );
    }
    Ok(())
}

/// Whether `at` is inside the silence `[starts, ends)`.
fn covers(s: &Silence, at: &str) -> bool {
    match (parse_time(&s.starts), parse_time(&s.ends), parse_time(at)) {
        (Some(a), Some(b), Some(t)) => a <= t && t < b,
        _ => false,
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
