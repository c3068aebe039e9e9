//! Event history: the management events of the last `[history] retention` (90 days by
//! default), indexed for `LookupEvents`.
//!
//! # Layout
//!
//! Its own sled database (not the journal: history is a read model that can lag or be rebuilt,
//! the journal is the durable truth). One tree, so that one `Batch` writes an event and all of
//! its index entries atomically:
//!
//! | key | value |
//! |---|---|
//! | `s/<eventID>` | the event's number `n` (u64 BE, from sled's `generate_id`) |
//! | `e/<n u64 BE>` | `eventTime` (u64 BE seconds) + the record's JSON, zstd-compressed |
//! | `i/<attr u8><value>\0<!eventTime u64 BE><n u64 BE>` | empty |
//!
//! `attr` 0 is "no attribute" (every event, with an empty value); 2-8 are the lookup attributes
//! ([`Attribute`]); `EventId` is answered from `s/` (one get), so it needs no index entry. The
//! time is stored inverted (`u64::MAX - t`) so that a forward range scan yields newest first,
//! the order `LookupEvents` returns. A lookup of one attribute value and a time range is
//! therefore one range scan of exactly the matching entries: `[attr][value]\0[!end]` ..=
//! `[attr][value]\0[!start]`, no scan over other events. Expiry walks the attribute-0 entries
//! from the oldest end. The 8-byte event number instead of the 36-character `eventID` in every
//! index key, the compressed records and sled's low-space mode keep the bytes per event down
//! (see the `lookup_bench` example).
//!
//! Values containing NUL are not indexed (a NUL would break the prefix); a lookup for one
//! finds nothing, as it could not match a real CloudTrail value anyway.
//!
//! # When events are written
//!
//! The batcher hands each record to the [`Indexer`] as it receives it from the journal commit
//! path (ingest, PutAuditEvents, the collector's own audit records), and records reloaded from
//! the journal at start-up are handed over again (writing is idempotent, keyed by `eventID`).
//! So an event is visible to `LookupEvents` shortly after its commit was acknowledged (the
//! indexer runs beside ingest, so a slower index only delays visibility, up to a queue of 256
//! batches before ingest waits), and no later than the close of its log file: before a log
//! file is recorded closed, the batcher waits until the indexer has indexed and flushed
//! everything sent before, so a crash cannot lose history entries of filed records.
//!
//! Only management events (`eventCategory` `Management`, or absent with `managementEvent`
//! not `false`) are kept, as in CloudTrail's event history.

use std::path::Path;

use serde_json::Value;

/// Why a history operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history: {0}")]
    Sled(#[from] sled::Error),
}

type Result<T> = std::result::Result<T, HistoryError>;

/// The eight lookup attributes of `LookupEvents`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attribute {
    EventId = 1,
    EventName = 2,
    ReadOnly = 3,
    Username = 4,
    ResourceType = 5,
    ResourceName = 6,
    EventSource = 7,
    AccessKeyId = 8,
}

impl Attribute {
    /// Parses the API's `AttributeKey`.
    pub fn parse(key: &str) -> Option<Attribute> {
        Some(match key {
            "EventId" => Attribute::EventId,
            "EventName" => Attribute::EventName,
            "ReadOnly" => Attribute::ReadOnly,
            "Username" => Attribute::Username,
            "ResourceType" => Attribute::ResourceType,
            "ResourceName" => Attribute::ResourceName,
            "EventSource" => Attribute::EventSource,
            "AccessKeyId" => Attribute::AccessKeyId,
            _ => return None,
        })
    }

    pub const ALL: [&'static str; 8] = [
        "EventId",
        "EventName",
        "ReadOnly",
        "Username",
        "ResourceType",
        "ResourceName",
        "EventSource",
        "AccessKeyId",
    ];
}

/// What `LookupEvents` shows of an event, besides the record itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub event_id: String,
    pub event_name: Option<String>,
    pub read_only: Option<String>,
    pub access_key_id: Option<String>,
    pub event_time: u64,
    pub event_source: Option<String>,
    pub username: Option<String>,
    /// `(ResourceType, ResourceName)`.
    pub resources: Vec<(Option<String>, Option<String>)>,
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(*p)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

/// Reads a record's lookup fields; `None` when it is not a history event (not management,
/// no `eventID`, no parseable `eventTime`).
pub fn summarize(record: &Value) -> Option<Summary> {
    let category = record.get("eventCategory").and_then(Value::as_str);
    let management = match category {
        Some(c) => c == "Management",
        None => record.get("managementEvent").and_then(Value::as_bool) != Some(false),
    };
    if !management {
        return None;
    }
    let event_id = str_at(record, &["eventID"])?.to_string();
    let time = str_at(record, &["eventTime"])?;
    let event_time =
        u64::try_from(groundtrail_common::time::parse_json_time(time)?.timestamp()).ok()?;
    let ui = record.get("userIdentity").unwrap_or(&Value::Null);
    // CloudTrail's `Username`: the user name, else the session or principal name.
    let username = str_at(ui, &["userName"])
        .or_else(|| str_at(ui, &["sessionContext", "sessionIssuer", "userName"]))
        .or_else(|| str_at(ui, &["arn"]).and_then(|a| a.rsplit('/').next()))
        .or_else(|| str_at(ui, &["principalId"]))
        .map(str::to_string);
    let resources = record
        .get("resources")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|r| {
                    (
                        str_at(r, &["type"]).map(str::to_string),
                        str_at(r, &["ARN"]).map(str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Summary {
        event_id,
        event_name: str_at(record, &["eventName"]).map(str::to_string),
        read_only: record
            .get("readOnly")
            .and_then(Value::as_bool)
            .map(|b| b.to_string()),
        access_key_id: str_at(ui, &["accessKeyId"]).map(str::to_string),
        event_time,
        event_source: str_at(record, &["eventSource"]).map(str::to_string),
        username,
        resources,
    })
}

impl Summary {
    /// Every (attribute, value) this event is found by, including attribute 0.
    fn index_values(&self) -> Vec<(u8, &str)> {
        // EventId is answered from `s/`, not from an index entry.
        let mut out = vec![(0u8, "")];
        for (a, v) in [
            (Attribute::EventName, &self.event_name),
            (Attribute::ReadOnly, &self.read_only),
            (Attribute::Username, &self.username),
            (Attribute::EventSource, &self.event_source),
            (Attribute::AccessKeyId, &self.access_key_id),
        ] {
            if let Some(v) = v {
                out.push((a as u8, v.as_str()));
            }
        }
        for (t, n) in &self.resources {
            if let Some(t) = t {
                out.push((Attribute::ResourceType as u8, t.as_str()));
            }
            if let Some(n) = n {
                out.push((Attribute::ResourceName as u8, n.as_str()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out.retain(|(_, v)| !v.contains('\0'));
        out
    }
}

fn index_prefix(attr: u8, value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + value.len() + 1 + 8 + 36);
    k.extend_from_slice(b"i/");
    k.push(attr);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

fn index_key(attr: u8, value: &str, time: u64, n: u64) -> Vec<u8> {
    let mut k = index_prefix(attr, value);
    k.extend_from_slice(&(u64::MAX - time).to_be_bytes());
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn id_key(id: &str) -> Vec<u8> {
    let mut k = b"s/".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

fn event_key(n: u64) -> Vec<u8> {
    let mut k = b"e/".to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// Page cache of the history store.
const DEFAULT_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// Largest record JSON read back (CloudTrail's record limit is 256 KB; this leaves room).
const MAX_RECORD: usize = 4 * 1024 * 1024;
/// zstd level of stored records: fast, and most of the gain on small JSON.
const ZSTD_LEVEL: i32 = 3;

fn u64_at(b: &[u8]) -> Option<u64> {
    b.get(..8)?.try_into().ok().map(u64::from_be_bytes)
}

/// A lookup: at most one attribute, an inclusive time range, a page size, and where the
/// previous page stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub attribute: Option<(Attribute, String)>,
    /// Inclusive bounds, epoch seconds.
    pub start: u64,
    pub end: u64,
    pub max_results: usize,
    /// The position after the last event of the previous page ([`Page::next`]).
    pub after: Option<Vec<u8>>,
}

/// One page of results, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    /// (summary, record JSON)
    pub events: Vec<(Summary, Vec<u8>)>,
    /// Position to resume from (the index key suffix of the last event), if more may follow.
    pub next: Option<Vec<u8>>,
}

/// The history store.
pub struct History {
    db: sled::Db,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").finish_non_exhaustive()
    }
}

impl History {
    /// Opens (creating) the store at `path` with a 256 MiB page cache.
    pub fn open(path: &Path) -> Result<History> {
        History::open_with(path, DEFAULT_CACHE_BYTES, true)
    }

    /// Opens with a given page cache size and sled mode (`low_space`: `Mode::LowSpace`, else
    /// `Mode::HighThroughput`); for benchmarks and tuning.
    pub fn open_with(path: &Path, cache_bytes: u64, low_space: bool) -> Result<History> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| HistoryError::Sled(e.into()))?;
        }
        let db = sled::Config::new()
            .path(path)
            .mode(if low_space {
                sled::Mode::LowSpace
            } else {
                sled::Mode::HighThroughput
            })
            .cache_capacity(cache_bytes)
            .open()?;
        Ok(History { db })
    }

    /// Adds the history events among `records` (JSON each) that are not older than
    /// `not_before` and not already present. One atomic batch. Returns how many were added.
    pub fn insert<'a>(
        &self,
        records: impl IntoIterator<Item = &'a [u8]>,
        not_before: u64,
    ) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut added = 0;
        let mut seen = std::collections::HashSet::new();
        // One compression context per call, not per record (creating one costs more than
        // compressing a record).
        let Ok(mut compressor) = zstd::bulk::Compressor::new(ZSTD_LEVEL) else {
            return Ok(0);
        };
        for json in records {
            let Ok(v) = serde_json::from_slice::<Value>(json) else {
                continue;
            };
            let Some(s) = summarize(&v) else { continue };
            if s.event_time < not_before
                || !seen.insert(s.event_id.clone())
                || self.db.contains_key(id_key(&s.event_id))?
            {
                continue;
            }
            let Ok(packed) = compressor.compress(json) else {
                continue;
            };
            let n = self.db.generate_id()?;
            let mut value = s.event_time.to_be_bytes().to_vec();
            value.extend_from_slice(&packed);
            batch.insert(id_key(&s.event_id), &n.to_be_bytes()[..]);
            batch.insert(event_key(n), value);
            for (attr, val) in s.index_values() {
                batch.insert(index_key(attr, val, s.event_time, n), &[][..]);
            }
            added += 1;
        }
        if added > 0 {
            self.db.apply_batch(batch)?;
        }
        Ok(added)
    }

    /// Makes every insert so far durable.
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Reads event `n`: (eventTime, JSON), `None` if gone or unreadable.
    fn read_event(&self, n: u64) -> Result<Option<(u64, Vec<u8>)>> {
        let Some(stored) = self.db.get(event_key(n))? else {
            return Ok(None);
        };
        let Some(time) = u64_at(&stored) else {
            return Ok(None);
        };
        Ok(zstd::bulk::decompress(&stored[8..], MAX_RECORD)
            .ok()
            .map(|json| (time, json)))
    }

    /// Answers one page of `q` from the index of its attribute (`EventId` from `s/`).
    pub fn lookup(&self, q: &Query) -> Result<Page> {
        if let Some((Attribute::EventId, id)) = &q.attribute {
            let mut page = Page {
                events: Vec::new(),
                next: None,
            };
            if q.after.is_some() || q.max_results == 0 {
                return Ok(page);
            }
            if let Some(n) = self.db.get(id_key(id))?.as_deref().and_then(u64_at)
                && let Some((time, json)) = self.read_event(n)?
                && time >= q.start
                && time <= q.end
                && let Ok(v) = serde_json::from_slice::<Value>(&json)
                && let Some(s) = summarize(&v)
            {
                page.events.push((s, json));
            }
            return Ok(page);
        }
        let (attr, value) = match &q.attribute {
            Some((a, v)) => (*a as u8, v.as_str()),
            None => (0, ""),
        };
        let mut page = Page {
            events: Vec::new(),
            next: None,
        };
        if value.contains('\0') || q.start > q.end || q.max_results == 0 {
            return Ok(page);
        }
        let prefix = index_prefix(attr, value);
        let mut from = prefix.clone();
        from.extend_from_slice(&(u64::MAX - q.end).to_be_bytes());
        let mut to = prefix.clone();
        to.extend_from_slice(&(u64::MAX - q.start).to_be_bytes());
        to.push(0xff);
        if let Some(after) = &q.after {
            let mut resume = prefix.clone();
            resume.extend_from_slice(after);
            resume.push(0); // strictly after the last key returned
            if resume > from {
                from = resume;
            }
        }
        if from > to {
            return Ok(page);
        }
        let mut last: Option<Vec<u8>> = None;
        for item in self.db.range(from..=to) {
            let (k, _) = item?;
            let Some(rest) = k.get(prefix.len()..) else {
                continue;
            };
            let Some(n) = rest.get(8..).and_then(u64_at) else {
                continue;
            };
            if page.events.len() == q.max_results {
                // One more exists: the page ends at the previous key.
                page.next = last;
                break;
            }
            let Some((_, json)) = self.read_event(n)? else {
                continue; // expired between the index read and this one
            };
            let Ok(v) = serde_json::from_slice::<Value>(&json) else {
                continue;
            };
            let Some(s) = summarize(&v) else { continue };
            last = Some(rest[..16].to_vec());
            page.events.push((s, json));
        }
        Ok(page)
    }

    /// Removes events with `eventTime` before `cutoff` (epoch seconds), at most `limit` per
    /// call (so one call holds nothing for long). Returns how many were removed.
    pub fn expire(&self, cutoff: u64, limit: usize) -> Result<usize> {
        let prefix = index_prefix(0, "");
        let mut batch = sled::Batch::default();
        let mut n = 0;
        // Oldest first: the end of the attribute-0 range.
        for item in self.db.scan_prefix(&prefix).rev() {
            let (k, _) = item?;
            let Some(rest) = k.get(prefix.len()..) else {
                continue;
            };
            let Some(inv) = rest.get(..8).and_then(|b| b.try_into().ok()) else {
                continue;
            };
            let time = u64::MAX - u64::from_be_bytes(inv);
            if time >= cutoff || n >= limit {
                break;
            }
            let Some(num) = rest.get(8..).and_then(u64_at) else {
                continue;
            };
            if let Some((_, json)) = self.read_event(num)?
                && let Ok(v) = serde_json::from_slice::<Value>(&json)
                && let Some(s) = summarize(&v)
            {
                for (attr, val) in s.index_values() {
                    batch.remove(index_key(attr, val, s.event_time, num));
                }
                batch.remove(id_key(&s.event_id));
            }
            batch.remove(k);
            batch.remove(event_key(num));
            n += 1;
        }
        if n > 0 {
            self.db.apply_batch(batch)?;
        }
        Ok(n)
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}

/// What the batcher sends the [`Indexer`].
#[derive(Debug)]
pub enum IndexMsg {
    /// Record JSONs to index.
    Records(Vec<Vec<u8>>),
    /// Answer once everything sent before is indexed and flushed.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// Indexes records into the history off the batcher's path: ingest is slowed only when the
/// indexer is a whole queue (256 messages) behind, and a log file's close waits for a
/// [`IndexMsg::Barrier`], which keeps "indexed and flushed before filed".
pub struct Indexer;

/// Messages queued before the batcher waits.
const INDEX_QUEUE: usize = 256;
/// Records inserted in one store batch at most.
const INDEX_BATCH: usize = 5000;

impl Indexer {
    /// Starts the indexer; it stops when every sender is dropped (after draining the queue).
    pub fn spawn(
        history: std::sync::Arc<History>,
        retention: std::time::Duration,
    ) -> (
        tokio::sync::mpsc::Sender<IndexMsg>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<IndexMsg>(INDEX_QUEUE);
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Take what is queued, up to INDEX_BATCH records, into one insert.
                let mut records = Vec::new();
                let mut barriers = Vec::new();
                let mut next = Some(first);
                while let Some(msg) = next.take() {
                    match msg {
                        IndexMsg::Records(r) => records.extend(r),
                        IndexMsg::Barrier(b) => {
                            barriers.push(b);
                            break;
                        }
                    }
                    if records.len() < INDEX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if !records.is_empty() {
                    let cutoff = (groundtrail_common::time::now_secs().timestamp().max(0) as u64)
                        .saturating_sub(retention.as_secs());
                    let h = history.clone();
                    let done = tokio::task::spawn_blocking(move || {
                        h.insert(records.iter().map(|j| j.as_slice()), cutoff)
                    })
                    .await;
                    match done {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::error!("event history: {e}"),
                        Err(e) => tracing::error!("event history task: {e}"),
                    }
                }
                if !barriers.is_empty() {
                    if let Err(e) = history.flush().await {
                        tracing::error!("event history flush: {e}");
                    }
                    for b in barriers {
                        let _ = b.send(());
                    }
                }
            }
        });
        (tx, task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(n: u64, name: &str, user: &str, read_only: bool) -> Vec<u8> {
        let t = 1_800_000_000 + n;
        serde_json::to_vec(&json!({
            "eventVersion": "1.11",
            "userIdentity": {"type": "IAMUser", "userName": user, "accessKeyId": format!("AK{user}")},
            "eventTime": groundtrail_common::time::json_time(
                chrono::DateTime::from_timestamp(t as i64, 0).unwrap()),
            "eventSource": "sudo.onprem.internal",
            "eventName": name,
            "awsRegion": "us-east-1",
            "eventID": format!("00000000-0000-4000-8000-{n:012}"),
            "readOnly": read_only,
            "resources": [{"type": "AWS::Host::Unit", "ARN": format!("arn:aws:host:::unit/u{}", n % 3)}],
            "eventType": "AwsApiCall",
            "eventCategory": "Management",
        }))
        .unwrap()
    }

    fn q(attribute: Option<(Attribute, &str)>, start: u64, end: u64, max: usize) -> Query {
        Query {
            attribute: attribute.map(|(a, v)| (a, v.to_string())),
            start: 1_800_000_000 + start,
            end: 1_800_000_000 + end,
            max_results: max,
            after: None,
        }
    }

    fn ids(p: &Page) -> Vec<u64> {
        p.events
            .iter()
            .map(|(s, _)| s.event_id[24..].parse().unwrap())
            .collect()
    }

    fn store() -> (tempfile::TempDir, History) {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("h")).unwrap();
        let recs: Vec<Vec<u8>> = (0..30)
            .map(|n| {
                rec(
                    n,
                    if n % 2 == 0 { "Even" } else { "Odd" },
                    if n < 10 { "alice" } else { "bob" },
                    n % 5 == 0,
                )
            })
            .collect();
        assert_eq!(h.insert(recs.iter().map(|r| r.as_slice()), 0).unwrap(), 30);
        // Idempotent.
        assert_eq!(h.insert(recs.iter().map(|r| r.as_slice()), 0).unwrap(), 0);
        (dir, h)
    }

    #[test]
    fn each_attribute_and_time_range_from_its_index_newest_first() {
        let (_d, h) = store();
        let all = h.lookup(&q(None, 0, 100, 50)).unwrap();
        assert_eq!(ids(&all), (0..30).rev().collect::<Vec<_>>());
        assert!(all.next.is_none());
        let odd = h
            .lookup(&q(Some((Attribute::EventName, "Odd")), 5, 9, 50))
            .unwrap();
        assert_eq!(ids(&odd), vec![9, 7, 5], "inclusive bounds");
        let alice = h
            .lookup(&q(Some((Attribute::Username, "alice")), 0, 100, 50))
            .unwrap();
        assert_eq!(alice.events.len(), 10);
        let ro = h
            .lookup(&q(Some((Attribute::ReadOnly, "true")), 0, 100, 50))
            .unwrap();
        assert_eq!(ids(&ro), vec![25, 20, 15, 10, 5, 0]);
        let by_id = h
            .lookup(&q(
                Some((Attribute::EventId, "00000000-0000-4000-8000-000000000007")),
                0,
                100,
                50,
            ))
            .unwrap();
        assert_eq!(ids(&by_id), vec![7]);
        let unit = h
            .lookup(&q(
                Some((Attribute::ResourceName, "arn:aws:host:::unit/u1")),
                0,
                100,
                50,
            ))
            .unwrap();
        assert_eq!(unit.events.len(), 10);
        let ty = h
            .lookup(&q(
                Some((Attribute::ResourceType, "AWS::Host::Unit")),
                0,
                100,
                50,
            ))
            .unwrap();
        assert_eq!(ty.events.len(), 30);
        let src = h
            .lookup(&q(
                Some((Attribute::EventSource, "sudo.onprem.internal")),
                3,
                3,
                50,
            ))
            .unwrap();
        assert_eq!(ids(&src), vec![3]);
        let ak = h
            .lookup(&q(Some((Attribute::AccessKeyId, "AKbob")), 0, 100, 50))
            .unwrap();
        assert_eq!(ak.events.len(), 20);
        // A prefix of a value is not a match.
        let none = h
            .lookup(&q(Some((Attribute::Username, "ali")), 0, 100, 50))
            .unwrap();
        assert!(none.events.is_empty());
    }

    #[test]
    fn paging_visits_every_event_once() {
        let (_d, h) = store();
        let mut query = q(Some((Attribute::Username, "bob")), 0, 100, 7);
        let mut seen = Vec::new();
        loop {
            let page = h.lookup(&query).unwrap();
            assert!(page.events.len() <= 7);
            seen.extend(ids(&page));
            match page.next {
                Some(n) => query.after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, (10..30).rev().collect::<Vec<_>>());
    }

    #[test]
    fn expiry_removes_old_events_and_their_index_entries() {
        let (_d, h) = store();
        assert_eq!(h.expire(1_800_000_000 + 10, 3).unwrap(), 3);
        assert_eq!(h.expire(1_800_000_000 + 10, 1000).unwrap(), 7);
        assert_eq!(h.expire(1_800_000_000 + 10, 1000).unwrap(), 0);
        let alice = h
            .lookup(&q(Some((Attribute::Username, "alice")), 0, 100, 50))
            .unwrap();
        assert!(alice.events.is_empty());
        // No index entry or id of an expired event is left behind.
        let per_event = 8; // all, name, read-only, user, source, key id, resource type and name
        assert_eq!(h.db.scan_prefix(b"i/").count(), 20 * per_event);
        assert_eq!(h.db.scan_prefix(b"s/").count(), 20);
        assert_eq!(h.db.scan_prefix(b"e/").count(), 20);
        for item in h.db.scan_prefix(b"i/") {
            let (k, _) = item.unwrap();
            let n = u64_at(&k[k.len() - 8..]).unwrap();
            assert!(h.db.contains_key(event_key(n)).unwrap(), "{n}");
        }
        // Events older than the cutoff are not added again.
        assert_eq!(
            h.insert([rec(1, "Odd", "alice", false).as_slice()], 1_800_000_010)
                .unwrap(),
            0
        );
    }

    /// The indexer inserts what it is sent and answers a barrier only after that is flushed.
    #[tokio::test]
    async fn indexer_barrier_follows_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let h = std::sync::Arc::new(History::open(&dir.path().join("h")).unwrap());
        let (tx, task) = Indexer::spawn(h.clone(), std::time::Duration::from_secs(u64::MAX / 4));
        for n in 0..3 {
            tx.send(IndexMsg::Records(vec![rec(n, "X", "dora", false)]))
                .await
                .unwrap();
        }
        let (done, wait) = tokio::sync::oneshot::channel();
        tx.send(IndexMsg::Barrier(done)).await.unwrap();
        wait.await.unwrap();
        let page = h
            .lookup(&q(Some((Attribute::Username, "dora")), 0, 100, 50))
            .unwrap();
        assert_eq!(ids(&page), vec![2, 1, 0]);
        drop(tx);
        task.await.unwrap();
    }

    #[test]
    fn only_management_events() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("h")).unwrap();
        let mut v: Value = serde_json::from_slice(&rec(1, "X", "a", false)).unwrap();
        v["eventCategory"] = json!("Data");
        assert_eq!(
            h.insert([serde_json::to_vec(&v).unwrap().as_slice()], 0)
                .unwrap(),
            0
        );
        v["eventCategory"] = json!("ActivityAuditLog");
        assert_eq!(
            h.insert([serde_json::to_vec(&v).unwrap().as_slice()], 0)
                .unwrap(),
            0
        );
    }
}
