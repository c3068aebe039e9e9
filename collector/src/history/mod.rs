//! Event history: the management events and the Insights records of the last `[history]
//! retention` (90 days by default), indexed for `LookupEvents`.
//!
//! # Layout
//!
//! Its own sled database (not the journal: history is a read model that can lag or be rebuilt,
//! the journal is the durable truth). One tree, so that one `Batch` writes an insert's events,
//! their index entries and its expiry manifest atomically. sled's cost is per key (a leaf holds
//! 16 keys; every write copies and relogs one), so records and index entries are packed into
//! few keys per insert rather than written one key per event and attribute:
//!
//! | key | value |
//! |---|---|
//! | `v/format` | `4` (the layout version below) |
//! | `s/<eventTime u64 BE><c0 u64 BE>` | the events of one insert at one second: entries of (eventID hash u64 BE, `n` u64 BE), ascending; what makes an insert idempotent |
//! | `h/<b u8><c0 u64 BE>` | the eventIDs of one insert whose hash's top byte is `b`: entries of (hash u64 BE, `n` u64 BE), ascending |
//! | `e/<c u64 BE>` | a chunk of up to 256 records (64 KiB of JSON): count (u16 BE), JSON bytes (u32 BE), per slot `eventTime` (u64 BE seconds) and length (u32 BE), then the JSONs, concatenated and zstd-compressed as one frame |
//! | `i/<awsRegion>\0<attr u8><value>\0<level u8><!M u64 BE><n0 u64 BE>` | a group of index entries, each `!eventTime` (u64 BE) + `n` (u64 BE), ascending |
//! | `r/<awsRegion>` | empty: a region with indexed management events (never removed; a handful of keys) |
//! | `n/<awsRegion>` | empty: a region with indexed Insights records (the same, for `EventCategory=insight`) |
//! | `x/<max eventTime u64 BE><c0 u64 BE>` | an insert's expiry manifest: its length (u64 BE), then zstd of its eventIDs' `s/` keys, group and `h/` keys and chunk numbers |
//!
//! `c` comes from sled's `generate_id`; the events of one insert are sorted by time before they
//! are cut into chunks, so neighbours in time share a chunk. `attr` 0 is "no attribute" (every
//! management event, with an empty value); 2-8 are the lookup attributes ([`Attribute`]).
//! `attr` 0x80 is every Insights record, 0x82 and 0x87 their `insightDetails.eventName` and
//! `insightDetails.eventSource` (0x80 | the attribute: see **Insights** below).
//!
//! **Event IDs.** sled's cost is per key and per leaf touched (each write copies a leaf), and
//! a key per event at a random place (an eventID is a random UUID) touches one leaf per event,
//! which with millions of events is no longer in the cache: with the chunks, that was most of
//! an insert's time. So eventIDs are packed per insert like the index: `s/` by second (an
//! insert writes one key per second it spans, beside the newest keys of the tree) and `h/` by
//! the top byte of the eventID's hash (256 keys at most per insert). An event is the same one
//! when its `eventID` *and* `eventTime` are (a record handed over again, the only source of
//! repeats, has both): an insert reads the `s/` keys of each second it holds once, and an
//! eventID whose hash is there is a repeat only if the stored record's `eventID` is the same.
//! An `EventId` lookup, which knows no time, is one prefix scan of its `h/` byte (about 1/256
//! of the inserts' keys, side by side), then a read of the few records whose hash matches,
//! compared by `eventID`. Times are stored inverted
//! (`u64::MAX - t`) so that ascending order is newest first, the order `LookupEvents` returns.
//!
//! An index group holds the entries of one attribute value from one insert. `M` is its newest
//! entry's time, `n0` that entry's number (unique, as an event is in one group per value). A
//! group spans at most `SPANS[level]` seconds (0, 8, 128, 2048 or 32768: `level` is the
//! smallest that fits): an insert cuts a value's entries, newest first, into groups of at most
//! 1024, and starts a new group rather than let one reach a higher level once it has 16
//! entries. So a dense value (many events a second, live ingest) packs into level 0 groups of
//! one second each, and a sparse one (a user seen every few minutes) into few wider groups.
//!
//! **Regions.** `LookupEvents` is regional on AWS: it answers with the events of the region the
//! request was sent to. So every index key starts with the event's `awsRegion` (`""` when it
//! has none), and a lookup for one region reads only that region's groups: no event of another
//! region is read and filtered out. A lookup for every region (an unsigned request, see
//! [`crate::api`]) merges the scans of each region in the `r/` registry (`n/` for Insights
//! records) exactly as it merges levels. An `EventId` lookup checks the one event's region.
//! An event whose `awsRegion` contains a NUL is found by `EventId` only.
//!
//! A lookup of one region, attribute value and time range `[start, end]` is one range scan per
//! level of exactly that value's groups, `[region]\0[attr][value]\0[level][!(end + SPANS[level])]` ..=
//! `[region]\0[attr][value]\0[level][!start]` (a group newer than `end` by at most its span may hold
//! entries up to `end`), merged newest first: an entry is returned once every level's next
//! group is older than it. No scan over other values; the entries outside the range in the
//! groups at both ends are skipped. Paging resumes after the last entry returned
//! (`!eventTime` + `n`, the same 16 bytes as before the packing). Records are read by chunk,
//! each chunk decompressed once per lookup.
//!
//! Expiry walks the `x/` manifests from the oldest and removes a whole insert (its `s/`,
//! `h/`, groups and chunks) once its newest event is older than the cutoff; so an event may outlive
//! the retention by the time span of its insert (seconds, for live ingest).
//!
//! Values containing NUL are not indexed (a NUL would break the prefix); a lookup for one
//! finds nothing, as it could not match a real CloudTrail value anyway.
//!
//! **Insights.** CloudTrail Insights records (`eventCategory` `Insight`, or `eventType`
//! `AwsCloudTrailInsight`) are kept beside the management events but never answer a
//! management lookup, as on AWS, where `LookupEvents` returns them only with `EventCategory`
//! `insight` and then only them. Their index groups use their own attribute codes (`attr` |
//! 0x80: every record, `EventName` and `EventSource`, which are read from `insightDetails`,
//! the only attributes AWS allows for them) and their regions their own registry (`n/`), so
//! a management lookup's key ranges and region list hold no Insights record: it scans
//! exactly what it scanned before. Their records share the chunks and their eventIDs the
//! `s/` and `h/` keys (an insert stays one batch, and one eventID is one event whatever its
//! category); an `EventId` lookup compares the category on the record it reads, like the
//! eventID. This added keys but changed none, and a store of layout 4 holds no Insights
//! record to index differently (the journal had none before), so the layout stays 4.
//!
//! A store of an older layout (no `v/format` 4: layout 1 had one key per event and per index
//! entry, layout 2 index keys without the region, layout 3 `s/` keys by eventID alone) is
//! cleared when opened; the product had not shipped, so nothing migrates it,
//! and the history fills again from what is ingested next.
//!
//! # When events are written
//!
//! The [`crate::indexer`] follows the journal's log: it indexes every committed entry, records
//! the log position it reached in this store (`v/indexed`, in the same store so it is durable
//! with the entries it covers), and the journal does not trim the log below that position. So
//! an event is visible to `LookupEvents` shortly after its commit was acknowledged, indexing
//! never slows ingest (it runs behind the log, not in front of a `200` or a file's close), and
//! a crash cannot lose history entries: the indexer resumes from its recorded position and
//! writing is idempotent (keyed by `eventID` and `eventTime`).
//!
//! Only management events (`eventCategory` `Management`, or absent with `managementEvent`
//! not `false`) and Insights records are kept, as in CloudTrail's event history; data,
//! network activity and CloudTrail Lake (`ActivityAuditLog`) events are not.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::Path;

/// Why a history operation failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history: {0}")]
    Sled(#[from] sled::Error),
    #[error("history: {0}")]
    Io(#[from] std::io::Error),
}

type Result<T> = std::result::Result<T, HistoryError>;

mod fields;
mod layout;

use fields::*;
pub use fields::{Attribute, Summary, summarize, summarize_json};
pub use layout::DEFAULT_CACHE_BYTES;
use layout::*;

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
    /// Only events of this `awsRegion` (AWS answers with the region the request was sent
    /// to); `None`: every region.
    pub region: Option<String>,
    /// Insights records (`EventCategory=insight`) instead of management events. Their
    /// attributes are `EventId`, `EventName` and `EventSource` (of `insightDetails`); any
    /// other finds nothing (the API refuses it first).
    pub insight: bool,
}

/// One page of results, newest first.
#[derive(Debug, Clone)]
pub struct Page {
    /// (summary, record JSON)
    pub events: Vec<(Summary, Vec<u8>)>,
    /// Position to resume from (`!eventTime` + `n` of the last event), if more may follow.
    pub next: Option<Vec<u8>>,
    /// The position of each of `events` (empty for an `EventId` lookup): resuming after
    /// `positions[i]` continues with `events[i + 1]`. For callers that stop inside a page
    /// (the console filters the events it reads and ends its page where the page is full).
    pub positions: Vec<[u8; ENTRY]>,
}

/// The history store.
pub struct History {
    db: sled::Db,
    /// Flushes without sled's `flush_async` (see [`crate::group_flush`] for why).
    flusher: std::sync::Arc<crate::group_flush::GroupFlush>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").finish_non_exhaustive()
    }
}

/// One level's groups of a lookup, in key order, with the next one read ahead.
struct LevelScan {
    iter: sled::Iter,
    next: Option<(sled::IVec, sled::IVec)>,
    /// Length of the (region, attribute, value) prefix of its keys.
    prefix: usize,
}

impl LevelScan {
    fn advance(&mut self) -> Result<()> {
        self.next = self.iter.next().transpose()?;
        Ok(())
    }

    /// `!M` of the next group.
    fn next_inv(&self) -> Option<u64> {
        let (k, _) = self.next.as_ref()?;
        k.get(self.prefix + 1..).and_then(u64_at)
    }
}

impl History {
    /// Opens (creating) the store at `path` with a 48 MiB page cache (the collector opens it
    /// with `[history] cache_bytes`, through [`History::open_with`]).
    pub fn open(path: &Path) -> Result<History> {
        History::open_with(path, DEFAULT_CACHE_BYTES, true)
    }

    /// Opens with a given page cache size and sled mode (`low_space`: `Mode::LowSpace`, else
    /// `Mode::HighThroughput`); for benchmarks and tuning. A store of an older layout is
    /// cleared (see the module doc).
    pub fn open_with(path: &Path, cache_bytes: u64, low_space: bool) -> Result<History> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
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
        if db.get(FORMAT_KEY)?.as_deref() != Some(FORMAT) {
            if !db.is_empty() {
                tracing::warn!(
                    "event history at {} has an older layout: cleared, it fills again from new events",
                    path.display()
                );
                db.clear()?;
            }
            db.insert(FORMAT_KEY, FORMAT)?;
            db.flush()?;
        }
        Ok(History {
            flusher: crate::group_flush::GroupFlush::new(db.clone()),
            db,
        })
    }

    /// Adds the history events among `records` (JSON each) that are not older than
    /// `not_before` and not already present. One atomic batch. Returns how many were added.
    pub fn insert<'a>(
        &self,
        records: impl IntoIterator<Item = &'a [u8]>,
        not_before: u64,
    ) -> Result<usize> {
        // What is stored at each second of this insert (`s/`: eventID hashes), read once.
        let mut stored: HashMap<u64, HashMap<u64, Vec<u64>>> = HashMap::new();
        let mut reader = Reader::new(&self.db)?;
        let mut seen = HashSet::new();
        let mut added: Vec<(Fields, &[u8])> = Vec::new();
        for json in records {
            let Some(s) = Fields::read(json) else {
                continue;
            };
            if s.event_time < not_before || !seen.insert((s.event_time, s.event_id.clone())) {
                continue;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = stored.entry(s.event_time) {
                let mut at: HashMap<u64, Vec<u64>> = HashMap::new();
                for item in self.db.scan_prefix(second_prefix(s.event_time)).values() {
                    for e in item?.chunks_exact(ENTRY) {
                        if let (Some(hash), Some(n)) = (u64_at(e), u64_at(&e[8..])) {
                            at.entry(hash).or_default().push(n);
                        }
                    }
                }
                slot.insert(at);
            }
            // A hash stored at this second is this event only if its record says so.
            let mut present = false;
            for &n in stored[&s.event_time]
                .get(&id_hash(&s.event_id))
                .map_or(&[][..], Vec::as_slice)
            {
                if let Some((_, old)) = reader.event(n)?
                    && summarize_json(old).is_some_and(|o| o.event_id == s.event_id)
                {
                    present = true;
                    break;
                }
            }
            if !present {
                added.push((s, json));
            }
        }
        if added.is_empty() {
            return Ok(0);
        }
        // Neighbours in time share a chunk (a time-range lookup then reads few chunks).
        added.sort_by_key(|(s, _)| s.event_time);
        let mut batch = sled::Batch::default();
        let mut manifest = Manifest::default();
        let mut numbers = Vec::with_capacity(added.len());
        let mut cctx = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
        let mut raw = Vec::with_capacity(CHUNK_BYTES * 2);
        let mut i = 0;
        while i < added.len() {
            let mut j = i;
            raw.clear();
            while j < added.len()
                && j - i < CHUNK_RECORDS
                && (j == i || raw.len() + added[j].1.len() <= CHUNK_BYTES)
            {
                raw.extend_from_slice(added[j].1);
                j += 1;
            }
            let c = self.db.generate_id()?;
            let mut value = Vec::with_capacity(6 + 12 * (j - i) + raw.len() / 3);
            value.extend_from_slice(&((j - i) as u16).to_be_bytes());
            value.extend_from_slice(&(raw.len() as u32).to_be_bytes());
            for (slot, (s, json)) in added[i..j].iter().enumerate() {
                value.extend_from_slice(&s.event_time.to_be_bytes());
                value.extend_from_slice(&(json.len() as u32).to_be_bytes());
                numbers.push(c << 16 | slot as u64);
            }
            value.extend_from_slice(&cctx.compress(&raw)?);
            batch.insert(&chunk_key(c)[..], value);
            manifest.chunks.push(c);
            i = j;
        }
        let mut postings: HashMap<PostingKey, Vec<(u64, u64)>> = HashMap::new();
        let mut regions = HashSet::new();
        let mut buckets: Vec<(u64, u64)> = Vec::with_capacity(added.len());
        let mut seconds: Vec<(u64, u64, u64)> = Vec::with_capacity(added.len());
        for ((s, _), &n) in added.iter().zip(&numbers) {
            let hash = id_hash(&s.event_id);
            buckets.push((hash, n));
            seconds.push((s.event_time, hash, n));
            let region = s.index_region();
            if region.contains('\0') {
                continue; // not indexable (the prefix would break); found by EventId only
            }
            regions.insert((s.insight, region));
            for (attr, value) in s.index_values() {
                postings
                    .entry((region, attr, value))
                    .or_default()
                    .push((u64::MAX - s.event_time, n));
            }
        }
        for (insight, region) in regions {
            batch.insert(registry_key(insight, region), &b""[..]);
        }
        // The eventIDs by second (for the next insert's dedup): one key per second.
        seconds.sort_unstable();
        for second in seconds.chunk_by(|a, b| a.0 == b.0) {
            let mut key = second_prefix(second[0].0).to_vec();
            key.extend_from_slice(&numbers[0].to_be_bytes());
            let mut value = Vec::with_capacity(second.len() * ENTRY);
            for (_, hash, n) in second {
                value.extend_from_slice(&hash.to_be_bytes());
                value.extend_from_slice(&n.to_be_bytes());
            }
            batch.insert(&key[..], value);
            manifest.ids.push(key);
        }
        // The eventIDs by hash: one key per bucket with events in this insert.
        buckets.sort_unstable();
        for bucket in buckets.chunk_by(|a, b| a.0 >> 56 == b.0 >> 56) {
            let mut key = id_bucket_prefix(bucket[0].0).to_vec();
            key.extend_from_slice(&numbers[0].to_be_bytes());
            let mut value = Vec::with_capacity(bucket.len() * ENTRY);
            for (hash, n) in bucket {
                value.extend_from_slice(&hash.to_be_bytes());
                value.extend_from_slice(&n.to_be_bytes());
            }
            batch.insert(&key[..], value);
            manifest.groups.push(key);
        }
        for ((region, attr, value), mut entries) in postings {
            entries.sort_unstable();
            let prefix = index_prefix(region, attr, value);
            for (level, group) in split_groups(&entries) {
                let mut key = Vec::with_capacity(prefix.len() + 17);
                key.extend_from_slice(&prefix);
                key.push(level);
                key.extend_from_slice(&group[0].0.to_be_bytes());
                key.extend_from_slice(&group[0].1.to_be_bytes());
                let mut value = Vec::with_capacity(group.len() * ENTRY);
                for (inv, n) in group {
                    value.extend_from_slice(&inv.to_be_bytes());
                    value.extend_from_slice(&n.to_be_bytes());
                }
                batch.insert(&key[..], value);
                manifest.groups.push(key);
            }
        }
        let newest = added.last().map(|(s, _)| s.event_time).unwrap_or_default();
        let mut key = b"x/".to_vec();
        key.extend_from_slice(&newest.to_be_bytes());
        key.extend_from_slice(&manifest.chunks[0].to_be_bytes());
        let raw = manifest.encode();
        let mut value = (raw.len() as u64).to_be_bytes().to_vec();
        value.extend_from_slice(&cctx.compress(&raw)?);
        batch.insert(key, value);
        self.db.apply_batch(batch)?;
        Ok(added.len())
    }

    /// The error that left the store stuck (see [`crate::store_health`]), once it is.
    pub fn stuck(&self) -> Option<&str> {
        self.flusher.stuck()
    }

    /// Makes every insert so far durable.
    pub async fn flush(&self) -> Result<()> {
        self.flusher.flush().await?;
        Ok(())
    }

    /// Marks the store stuck (see [`crate::store_health`]): a probe that did not finish.
    pub fn mark_stuck(&self, error: String) {
        self.flusher.mark_stuck(error);
    }

    /// The store-health probe, for a thread outside the runtime: a blocking flush
    /// ([`crate::group_flush::GroupFlush::flush_blocking`]).
    pub fn probe_blocking(&self) -> Result<()> {
        self.flusher.flush_blocking()?;
        Ok(())
    }

    /// Answers one page of `q` from the index of its attribute (`EventId` from `h/`), of
    /// its category only (management events, or Insights records with `q.insight`).
    pub fn lookup(&self, q: &Query) -> Result<Page> {
        let mut page = Page {
            events: Vec::new(),
            next: None,
            positions: Vec::new(),
        };
        let mut reader = Reader::new(&self.db)?;
        if let Some((Attribute::EventId, id)) = &q.attribute {
            if q.after.is_some() || q.max_results == 0 {
                return Ok(page);
            }
            // Every insert's bucket of this hash, newest insert first; the first event found
            // with this eventID (newest first) in the range and region is the answer.
            let hash = id_hash(id);
            let mut candidates = Vec::new();
            for item in self.db.scan_prefix(id_bucket_prefix(hash)).values().rev() {
                let entries = item?;
                for e in entries.chunks_exact(ENTRY) {
                    if u64_at(e) == Some(hash)
                        && let Some(n) = u64_at(&e[8..])
                    {
                        candidates.push(n);
                    }
                }
            }
            for n in candidates {
                if let Some((time, json)) = reader.event(n)?
                    && time >= q.start
                    && time <= q.end
                    && let Some(s) = summarize_json(json)
                    && s.event_id == *id
                    && s.insight == q.insight
                    && q.region
                        .as_ref()
                        .is_none_or(|r| s.region.as_deref().unwrap_or("") == r)
                {
                    page.events.push((s, json.to_vec()));
                    break;
                }
            }
            return Ok(page);
        }
        let (attr, value) = match &q.attribute {
            Some((a, v)) => (*a as u8, v.as_str()),
            None => (0, ""),
        };
        let insight_attr = matches!(
            q.attribute,
            None | Some((Attribute::EventName | Attribute::EventSource, _))
        );
        if q.insight && !insight_attr {
            return Ok(page); // not an attribute of Insights records
        }
        let attr = if q.insight { INSIGHT | attr } else { attr };
        if value.contains('\0')
            || q.region.as_ref().is_some_and(|r| r.contains('\0'))
            || q.start > q.end
            || q.max_results == 0
        {
            return Ok(page);
        }
        // Entries are (`!eventTime`, n); a page takes those in [lo, hi], after `after`.
        let after = match &q.after {
            Some(a) => match (a.get(..8).and_then(u64_at), a.get(8..).and_then(u64_at)) {
                (Some(inv), Some(n)) if a.len() == ENTRY => Some((inv, n)),
                _ => return Ok(page),
            },
            None => None,
        };
        let lo = u64::MAX - q.end;
        let hi = u64::MAX - q.start;
        if after.is_some_and(|(inv, _)| inv > hi) {
            return Ok(page);
        }
        // The newest time a returned entry can have.
        let newest = after.map_or(q.end, |(inv, _)| q.end.min(u64::MAX - inv));
        // One region's value is one key range per level; every region (no region asked for)
        // is the same for each region in the registry, merged like the levels.
        let registry = region_prefix(q.insight);
        let regions: Vec<String> = match &q.region {
            Some(r) => vec![r.clone()],
            None => self
                .db
                .scan_prefix(registry)
                .keys()
                .map(|k| k.map(|k| String::from_utf8_lossy(&k[registry.len()..]).into()))
                .collect::<std::result::Result<_, _>>()?,
        };
        let mut levels = Vec::with_capacity(SPANS.len() * regions.len());
        for region in &regions {
            let prefix = index_prefix(region, attr, value);
            for (level, span) in SPANS.iter().enumerate() {
                let mut from = prefix.clone();
                from.push(level as u8);
                from.extend_from_slice(&(u64::MAX - newest.saturating_add(*span)).to_be_bytes());
                let mut to = prefix.clone();
                to.push(level as u8);
                to.extend_from_slice(&hi.to_be_bytes());
                to.extend_from_slice(&[0xff; 8]);
                let mut scan = LevelScan {
                    iter: self.db.range(from..=to),
                    next: None,
                    prefix: prefix.len(),
                };
                scan.advance()?;
                levels.push(scan);
            }
        }
        let mut pending: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
        let mut last: Option<(u64, u64)> = None;
        loop {
            // The level whose next group is newest; nothing unread is newer than its `M`.
            let frontier = levels
                .iter()
                .enumerate()
                .filter_map(|(i, l)| l.next_inv().map(|inv| (inv, i)))
                .min();
            while let Some(&Reverse(entry)) = pending.peek() {
                if frontier.is_some_and(|(inv, _)| entry.0 >= inv) {
                    break;
                }
                pending.pop();
                if page.events.len() == q.max_results {
                    // One more exists: the page ends at the previous entry.
                    page.next = last.map(|(inv, n)| {
                        let mut b = inv.to_be_bytes().to_vec();
                        b.extend_from_slice(&n.to_be_bytes());
                        b
                    });
                    return Ok(page);
                }
                let Some((_, json)) = reader.event(entry.1)? else {
                    continue; // expired between the index read and this one
                };
                let Some(s) = summarize_json(json) else {
                    continue;
                };
                page.events.push((s, json.to_vec()));
                let mut position = [0u8; ENTRY];
                position[..8].copy_from_slice(&entry.0.to_be_bytes());
                position[8..].copy_from_slice(&entry.1.to_be_bytes());
                page.positions.push(position);
                last = Some(entry);
            }
            let Some((_, i)) = frontier else {
                return Ok(page);
            };
            if let Some((_, group)) = levels[i].next.take() {
                for e in group.chunks_exact(ENTRY) {
                    let (Some(inv), Some(n)) = (u64_at(e), u64_at(&e[8..])) else {
                        continue;
                    };
                    if inv >= lo && inv <= hi && after.is_none_or(|a| (inv, n) > a) {
                        pending.push(Reverse((inv, n)));
                    }
                }
            }
            levels[i].advance()?;
        }
    }

    /// Removes the inserts whose newest event is older than `cutoff` (epoch seconds), oldest
    /// first, until at least `limit` events are removed (so one call holds nothing for long;
    /// the last insert is taken whole). Returns how many were removed.
    pub fn expire(&self, cutoff: u64, limit: usize) -> Result<usize> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        let mut any = false;
        for item in self.db.scan_prefix(b"x/") {
            let (k, v) = item?;
            let Some(newest) = k.get(2..).and_then(u64_at) else {
                continue;
            };
            if newest >= cutoff || n >= limit {
                break;
            }
            if let Some(len) = u64_at(&v)
                && let Ok(raw) = zstd::bulk::decompress(&v[8..], len as usize)
                && let Some(m) = Manifest::decode(&raw)
            {
                for id in &m.ids {
                    batch.remove(&id[..]);
                }
                for g in &m.groups {
                    batch.remove(&g[..]);
                }
                for c in &m.chunks {
                    batch.remove(&chunk_key(*c)[..]);
                }
                n += m.ids.len();
            }
            batch.remove(k);
            any = true;
        }
        if any {
            self.db.apply_batch(batch)?;
        }
        Ok(n)
    }

    /// Bytes the store occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }

    /// The journal log position below which every entry is indexed (see
    /// [`crate::indexer`]), once one was recorded.
    pub fn indexed_position(&self) -> Result<Option<u64>> {
        Ok(self
            .db
            .get(b"v/indexed")?
            .and_then(|v| v.get(..8)?.try_into().ok().map(u64::from_be_bytes)))
    }

    /// Records that every journal log entry below `position` is indexed. Durable with the
    /// next [`History::flush`], like the entries it covers.
    pub fn set_indexed_position(&self, position: u64) -> Result<()> {
        self.db.insert(b"v/indexed", &position.to_be_bytes()[..])?;
        Ok(())
    }

    /// Cluster mode: the `GT_RECORDS` sequence below which every chunk is indexed (see
    /// `crate::cluster::history`). Kept apart from the journal position: a collector moved
    /// between modes must not read one as the other.
    pub fn stream_position(&self) -> Result<Option<u64>> {
        Ok(self
            .db
            .get(b"v/stream")?
            .and_then(|v| v.get(..8)?.try_into().ok().map(u64::from_be_bytes)))
    }

    /// Records that every chunk below `position` is indexed; durable with the next flush.
    pub fn set_stream_position(&self, position: u64) -> Result<()> {
        self.db.insert(b"v/stream", &position.to_be_bytes()[..])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
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
            region: None,
            insight: false,
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
        // Six inserts of five (the unit of expiry), the first one twice: idempotent.
        for part in recs.chunks(5) {
            assert_eq!(h.insert(part.iter().map(|r| r.as_slice()), 0).unwrap(), 5);
        }
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

    /// Every index entry: (attr, value, eventTime, n), of every region.
    fn entries(h: &History) -> Vec<(u8, Vec<u8>, u64, u64)> {
        let mut out = Vec::new();
        for item in h.db.scan_prefix(b"i/") {
            let (k, v) = item.unwrap();
            // i/<region>\0<attr><value>\0...
            let a = 2 + k[2..].iter().position(|b| *b == 0).unwrap() + 1;
            let nul = a + 1 + k[a + 1..].iter().position(|b| *b == 0).unwrap();
            for e in v.chunks_exact(ENTRY) {
                out.push((
                    k[a],
                    k[a + 1..nul].to_vec(),
                    u64::MAX - u64_at(e).unwrap(),
                    u64_at(&e[8..]).unwrap(),
                ));
            }
        }
        out
    }

    #[test]
    fn expiry_removes_old_events_and_their_index_entries() {
        let (_d, h) = store();
        // Whole inserts of five: the first is past 3, the second reaches an event at 10.
        assert_eq!(h.expire(1_800_000_000 + 10, 3).unwrap(), 5);
        assert_eq!(h.expire(1_800_000_000 + 10, 1000).unwrap(), 5);
        assert_eq!(h.expire(1_800_000_000 + 10, 1000).unwrap(), 0);
        let alice = h
            .lookup(&q(Some((Attribute::Username, "alice")), 0, 100, 50))
            .unwrap();
        assert!(alice.events.is_empty());
        // No index entry or id of an expired event is left behind.
        let per_event = 8; // all, name, read-only, user, source, key id, resource type and name
        let all = entries(&h);
        assert_eq!(all.len(), 20 * per_event);
        assert_eq!(h.db.scan_prefix(b"s/").count(), 20);
        assert_eq!(h.db.scan_prefix(b"x/").count(), 4);
        let mut reader = Reader::new(&h.db).unwrap();
        for (_, _, time, n) in all {
            assert!(time >= 1_800_000_010);
            assert_eq!(reader.event(n).unwrap().unwrap().0, time, "{n}");
        }
        // Events older than the cutoff are not added again.
        assert_eq!(
            h.insert([rec(1, "Odd", "alice", false).as_slice()], 1_800_000_010)
                .unwrap(),
            0
        );
        // Expiring everything leaves only the format marker and the region registry.
        assert_eq!(h.expire(u64::MAX, 1000).unwrap(), 20);
        assert_eq!(h.db.len(), 2);
        assert!(h.db.contains_key(registry_key(false, "us-east-1")).unwrap());
    }

    /// `s/` and `h/` hold this hash: it must never change (FNV-1a 64 test vectors, whose
    /// values are 0xcbf29ce484222325, 0xaf63dc4c8601ec8c and 0x85944171f73967e8, through
    /// murmur3's fmix64).
    #[test]
    fn id_hash_is_fnv1a_64_then_fmix64() {
        assert_eq!(id_hash(""), 0xefd0_1f60_ba99_2926);
        assert_eq!(id_hash("a"), 0x82a2_a958_a9be_ce5b);
        assert_eq!(id_hash("foobar"), 0x2c22_1949_22d1_672b);
    }

    fn event_id(n: u64) -> String {
        format!("00000000-0000-4000-8000-{n:012}")
    }

    /// EventId through the `h/` buckets, over inserts of every size (so each bucket holds
    /// keys of many inserts); a record handed over again is not added, the same eventID at
    /// another time is another event, and a hash match alone is no answer.
    #[test]
    fn event_id_lookups_over_many_inserts_and_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("h")).unwrap();
        let recs: Vec<Vec<u8>> = (0..600).map(|n| rec(n, "X", "a", false)).collect();
        let (mut i, mut size) = (0, 1);
        while i < recs.len() {
            let end = (i + size).min(recs.len());
            let part = &recs[i..end];
            assert_eq!(
                h.insert(part.iter().map(|r| r.as_slice()), 0).unwrap(),
                part.len()
            );
            i = end;
            size = size % 40 + 1;
        }
        assert!(h.db.scan_prefix(b"h/").count() > 256);
        let by_id = |id: &str, start: u64| {
            ids(&h
                .lookup(&q(Some((Attribute::EventId, id)), start, 1000, 50))
                .unwrap())
        };
        for n in 0..600 {
            assert_eq!(by_id(&event_id(n), 0), vec![n], "{n}");
        }
        assert!(by_id(&event_id(5), 6).is_empty(), "outside the time range");
        assert!(by_id(&event_id(600), 0).is_empty());
        // Handed over again: nothing added.
        assert_eq!(h.insert(recs.iter().map(|r| r.as_slice()), 0).unwrap(), 0);
        // The same eventID at another time is another event.
        let mut v: Value = serde_json::from_slice(&recs[5]).unwrap();
        v["eventTime"] = json!("2027-01-16T08:00:00Z");
        let again = serde_json::to_vec(&v).unwrap();
        assert_eq!(h.insert([again.as_slice()], 0).unwrap(), 1);
        assert_eq!(h.insert([again.as_slice()], 0).unwrap(), 0);
        let times = |start: u64, end: u64| {
            let mut query = q(Some((Attribute::EventId, &event_id(5))), 0, 0, 50);
            (query.start, query.end) = (1_800_000_000 + start, 1_800_000_000 + end);
            let page = h.lookup(&query).unwrap();
            page.events
                .iter()
                .map(|(s, _)| s.event_time - 1_800_000_000)
                .collect::<Vec<_>>()
        };
        assert_eq!(times(0, 1000), vec![5]);
        assert_eq!(times(86_000, 87_000), vec![86_400]);
        // A hash match alone is not an answer: the record's eventID is compared.
        let fake = id_hash("not-an-event");
        let n7 = entries(&h)
            .into_iter()
            .find(|(a, _, t, _)| *a == 0 && *t == 1_800_000_007)
            .unwrap()
            .3;
        let mut key = id_bucket_prefix(fake).to_vec();
        key.extend_from_slice(&u64::MAX.to_be_bytes());
        h.db.insert(key, [fake.to_be_bytes(), n7.to_be_bytes()].concat())
            .unwrap();
        assert!(by_id("not-an-event", 0).is_empty());
        assert_eq!(by_id(&event_id(7), 0), vec![7]);
    }

    #[test]
    fn groups_are_cut_by_span_and_size() {
        // Dense: 3000 entries in 3 seconds, level 0, one group per second (or 1024).
        let dense: Vec<(u64, u64)> = (0..3000).map(|i| (100 + i / 1000, i)).collect();
        let groups = split_groups(&dense);
        assert!(groups.iter().all(|(l, _)| *l == 0), "{groups:?}");
        assert_eq!(groups.iter().map(|(_, g)| g.len()).sum::<usize>(), 3000);
        assert!(groups.iter().all(|(_, g)| g.len() <= GROUP_MAX));
        // Sparse: one entry every 10 s, groups widen until they hold GROUP_MIN, then fill their
        // level.
        let sparse: Vec<(u64, u64)> = (0..100).map(|i| (i * 10, i)).collect();
        let groups = split_groups(&sparse);
        for (i, (level, g)) in groups.iter().enumerate() {
            let span = g[g.len() - 1].0 - g[0].0;
            assert_eq!(level_of(span), Some(*level as usize), "{g:?}");
            assert!(i == groups.len() - 1 || g.len() >= GROUP_MIN, "{g:?}");
        }
        // Farther apart than the widest level: one entry per group.
        let far: Vec<(u64, u64)> = (0..3).map(|i| (i * 100_000, i)).collect();
        assert_eq!(split_groups(&far).len(), 3);
    }

    /// Lookups over many inserts of events out of order, dense and sparse in time, against
    /// the same filter applied to the events themselves: every page newest first, each event
    /// once, exactly the matching ones.
    #[test]
    fn lookups_match_a_scan_of_all_events() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("h")).unwrap();
        let mut seed = 7u64;
        let mut rand = move |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let mut all = Vec::new();
        for n in 0..1500u64 {
            // Half in a burst of a few seconds, half over a day.
            let off = if n % 2 == 0 {
                50_000 + rand(4)
            } else {
                rand(86_400)
            };
            let user = format!("u{}", rand(5));
            let name = format!("N{}", rand(3));
            let region = REGIONS[rand(3) as usize];
            let mut v: Value = serde_json::from_slice(&rec(n, &name, &user, false)).unwrap();
            v["eventTime"] = json!(groundtrail_common::time::json_time(
                chrono::DateTime::from_timestamp(1_800_000_000 + off as i64, 0).unwrap()
            ));
            v["awsRegion"] = json!(region);
            all.push((off, n, user, name, region, serde_json::to_vec(&v).unwrap()));
        }
        let mut i = 0;
        while i < all.len() {
            let len = 1 + rand(300) as usize;
            let part = &all[i..(i + len).min(all.len())];
            h.insert(part.iter().map(|e| e.5.as_slice()), 0).unwrap();
            i += len;
        }
        for round in 0..40 {
            let attr = match round % 3 {
                0 => None,
                1 => Some((Attribute::Username, format!("u{}", rand(5)))),
                _ => Some((Attribute::EventName, format!("N{}", rand(3)))),
            };
            let (start, end) = if round % 4 == 0 {
                (49_999, 50_002)
            } else {
                let a = rand(90_000);
                let b = rand(90_000);
                (a.min(b), a.max(b))
            };
            // One region (AWS's answer) or, for every other round, all of them.
            let region = (round % 2 == 1).then(|| REGIONS[rand(3) as usize]);
            let mut want: Vec<(u64, u64)> = all
                .iter()
                .filter(|(t, _, user, name, r, _)| {
                    *t >= start
                        && *t <= end
                        && region.is_none_or(|want| want == *r)
                        && match &attr {
                            None => true,
                            Some((Attribute::Username, v)) => user == v,
                            Some((_, v)) => name == v,
                        }
                })
                .map(|(t, n, ..)| (*t, *n))
                .collect();
            want.sort_unstable_by(|a, b| b.cmp(a));
            let mut query = Query {
                attribute: attr.clone(),
                start: 1_800_000_000 + start,
                end: 1_800_000_000 + end,
                max_results: 1 + rand(60) as usize,
                after: None,
                region: region.map(str::to_string),
                insight: false,
            };
            let mut got = Vec::new();
            loop {
                let page = h.lookup(&query).unwrap();
                assert!(page.events.len() <= query.max_results);
                got.extend(page.events.iter().map(|(s, _)| {
                    (
                        s.event_time - 1_800_000_000,
                        s.event_id[24..].parse::<u64>().unwrap(),
                    )
                }));
                match page.next {
                    Some(n) => query.after = Some(n),
                    None => break,
                }
            }
            assert!(
                got.windows(2).all(|w| w[0].0 >= w[1].0),
                "newest first: {attr:?} {start}..{end}"
            );
            let mut sorted = got.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            assert_eq!(sorted, want, "{attr:?} {region:?} {start}..{end}");
        }
    }

    const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", ""];

    #[test]
    fn a_region_reads_only_its_own_events_also_by_event_id() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("h")).unwrap();
        let recs: Vec<Vec<u8>> = (0..6)
            .map(|n| {
                let mut v: Value = serde_json::from_slice(&rec(n, "X", "a", false)).unwrap();
                v["awsRegion"] = json!(if n < 4 { "us-east-1" } else { "eu-west-1" });
                serde_json::to_vec(&v).unwrap()
            })
            .collect();
        h.insert(recs.iter().map(|r| r.as_slice()), 0).unwrap();
        let mut query = q(Some((Attribute::EventName, "X")), 0, 100, 50);
        query.region = Some("eu-west-1".into());
        assert_eq!(ids(&h.lookup(&query).unwrap()), vec![5, 4]);
        query.region = Some("us-east-1".into());
        assert_eq!(ids(&h.lookup(&query).unwrap()), vec![3, 2, 1, 0]);
        query.region = Some("ap-south-1".into());
        assert!(h.lookup(&query).unwrap().events.is_empty());
        query.region = None;
        assert_eq!(h.lookup(&query).unwrap().events.len(), 6);
        let mut by_id = q(
            Some((Attribute::EventId, "00000000-0000-4000-8000-000000000005")),
            0,
            100,
            50,
        );
        assert_eq!(ids(&h.lookup(&by_id).unwrap()), vec![5]);
        by_id.region = Some("us-east-1".into());
        assert!(h.lookup(&by_id).unwrap().events.is_empty());
    }

    #[test]
    fn summarize_json_reads_as_summarize() {
        let cases = [
            json!({"eventID": "a", "eventTime": "2027-01-15T08:00:00Z", "eventName": "X",
                "readOnly": true, "eventSource": "s", "userIdentity": {"userName": "u\\\"q",
                "accessKeyId": "AK"}, "resources": [{"type": "T", "ARN": "r"}, 5, {"ARN": ""}]}),
            json!({"eventID": "b", "eventTime": "2027-01-15T08:00:00Z", "userIdentity":
                {"sessionContext": {"sessionIssuer": {"userName": "role"}}, "arn": "a/b"}}),
            json!({"eventID": "c", "eventTime": "2027-01-15T08:00:00Z", "userIdentity":
                {"arn": "arn:aws:iam::1:user/x/y", "principalId": "P"}, "readOnly": "true",
                "eventName": 5, "resources": {"type": "T"}}),
            json!({"eventID": "d", "eventTime": "2027-01-15T08:00:00Z", "userIdentity": "x",
                "eventCategory": "Management", "managementEvent": false}),
            json!({"eventID": "e", "eventTime": "2027-01-15T08:00:00Z", "managementEvent": false}),
            json!({"eventID": "f", "eventTime": "2027-01-15T08:00:00Z", "eventCategory": "Data"}),
            json!({"eventID": "g", "eventTime": "2027-01-15T08:00:00Z", "eventCategory": 1,
                "userIdentity": {"principalId": "P", "userName": ""}, "eventSource": null}),
            json!({"eventID": "", "eventTime": "2027-01-15T08:00:00Z"}),
            json!({"eventID": "h", "eventTime": "yesterday"}),
            json!({"eventID": "i\u{e9}", "eventTime": "2027-01-15T08:00:00Z",
                "extra": {"deep": [1, {"eventID": "no"}]}}),
            // Insights records: by category or by type; their names are insightDetails'.
            json!({"eventID": "j", "eventTime": "2027-01-15T08:00:00Z", "eventCategory": "Insight",
                "eventName": "top", "readOnly": true, "userIdentity": {"userName": "u"},
                "insightDetails": {"eventName": "N", "eventSource": "S", "state": "End"}}),
            json!({"eventID": "k", "eventTime": "2027-01-15T08:00:00Z",
                "eventType": "AwsCloudTrailInsight", "managementEvent": false,
                "insightDetails": {"eventName": "N"}, "resources": [{"type": "T"}]}),
            json!({"eventID": "l", "eventTime": "2027-01-15T08:00:00Z", "eventCategory": "Insight",
                "insightDetails": "x", "awsRegion": "r"}),
            json!({"eventID": "m", "eventTime": "2027-01-15T08:00:00Z", "eventCategory": "Insights",
                "insightDetails": {"eventName": "N"}}),
        ];
        for case in cases {
            let text = serde_json::to_vec(&case).unwrap();
            assert_eq!(summarize_json(&text), summarize(&case), "{case}");
        }
        // A duplicate field (which the typed reading refuses) is read through `Value`.
        let dup = br#"{"eventID": "a", "eventID": "b", "eventTime": "2027-01-15T08:00:00Z"}"#;
        assert_eq!(summarize_json(dup).unwrap().event_id, "b");
    }

    /// Opens the store at `path`, retrying for a few seconds: a sled database dropped just
    /// before may still hold its file lock from its background flusher thread for a moment
    /// (seen once under load).
    fn open_again(path: &Path) -> History {
        let mut last = None;
        for _ in 0..50 {
            match History::open(path) {
                Ok(h) => return h,
                Err(e) => last = Some(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("history store {}: {:?}", path.display(), last);
    }

    #[test]
    fn a_store_of_the_older_layout_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        {
            let db = sled::open(&path).unwrap();
            db.insert(b"e/\0\0\0\0\0\0\0\x01", &b"old"[..]).unwrap();
            db.flush().unwrap();
        }
        let h = open_again(&path);
        assert_eq!(h.db.len(), 1);
        drop(h);
        // Layout 3 (`s/` keyed by eventID alone) too.
        {
            let db = sled::open(&path).unwrap();
            db.insert(FORMAT_KEY, &b"3"[..]).unwrap();
            db.insert(b"s/00000000-0000-4000-8000-000000000001", &[0u8; 8][..])
                .unwrap();
            db.flush().unwrap();
        }
        let h = open_again(&path);
        assert_eq!(h.db.len(), 1);
        assert_eq!(h.db.get(FORMAT_KEY).unwrap().as_deref(), Some(FORMAT));
        assert_eq!(
            h.insert([rec(1, "X", "a", false).as_slice()], 0).unwrap(),
            1
        );
        drop(h);
        // The current layout is kept.
        let h = open_again(&path);
        assert_eq!(ids(&h.lookup(&q(None, 0, 100, 50)).unwrap()), vec![1]);
    }

    /// An Insights record as `detection/src/insights/record.rs` writes one (no top-level
    /// eventName, eventSource, userIdentity or readOnly); its number `n` is its time offset.
    fn insight(n: u64, name: &str, source: &str, region: &str) -> Vec<u8> {
        let t = 1_800_000_000 + n;
        serde_json::to_vec(&json!({
            "eventVersion": "1.07",
            "eventTime": groundtrail_common::time::json_time(
                chrono::DateTime::from_timestamp(t as i64, 0).unwrap()),
            "awsRegion": region,
            "eventID": event_id(n),
            "eventType": "AwsCloudTrailInsight",
            "recipientAccountId": "123456789012",
            "sharedEventID": "11111111-0000-4000-8000-000000000000",
            "insightDetails": {
                "state": "Start",
                "eventSource": source,
                "eventName": name,
                "insightType": "ApiErrorRateInsight",
                "insightContext": {"statistics": {"baseline": {"average": 0.01},
                    "insight": {"average": 40}, "insightDuration": 2, "baselineDuration": 10080},
                    "attributions": []}
            },
            "eventCategory": "Insight",
        }))
        .unwrap()
    }

    fn insight_q(attribute: Option<(Attribute, &str)>, start: u64, end: u64, max: usize) -> Query {
        Query {
            insight: true,
            ..q(attribute, start, end, max)
        }
    }

    /// Management events (0-29, store()) and Insights records (1000-1009, at times 0-9 with
    /// a management event's name, and one in another region) side by side: each category's
    /// lookups see only their own, by every path, and no management key range holds an
    /// Insights record (so a management lookup scans what it did before).
    #[test]
    fn insights_and_management_events_are_apart() {
        let (_d, h) = store();
        let recs: Vec<Vec<u8>> = (0..10)
            .map(|n| {
                let name = if n % 2 == 0 { "ConsoleLogin" } else { "Odd" };
                let region = if n == 9 { "eu-west-1" } else { "us-east-1" };
                insight(1000 + n, name, "sshd.onprem.internal", region)
            })
            .collect();
        // Times 1000-1009 are outside the management events' 0-29; shift into them so the
        // two categories interleave in time and share chunks.
        let recs: Vec<Vec<u8>> = recs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut v: Value = serde_json::from_slice(r).unwrap();
                v["eventTime"] = json!(groundtrail_common::time::json_time(
                    chrono::DateTime::from_timestamp(1_800_000_000 + i as i64 * 3, 0).unwrap()
                ));
                serde_json::to_vec(&v).unwrap()
            })
            .collect();
        let carol = rec(40, "Odd", "carol", false);
        let mixed: Vec<&[u8]> = recs
            .iter()
            .map(|r| r.as_slice())
            .chain([carol.as_slice()])
            .collect();
        assert_eq!(h.insert(mixed.iter().copied(), 0).unwrap(), 11);
        assert_eq!(h.insert(mixed.iter().copied(), 0).unwrap(), 0, "idempotent");
        let mut mgmt: Vec<u64> = (0..30).rev().collect();
        mgmt.insert(0, 40);
        assert_eq!(ids(&h.lookup(&q(None, 0, 100, 50)).unwrap()), mgmt);
        assert_eq!(
            ids(&h.lookup(&insight_q(None, 0, 100, 50)).unwrap()),
            (1000..1010).rev().collect::<Vec<_>>()
        );
        // EventName on insightDetails: "Odd" is also a management name.
        let odd = |query: Query| ids(&h.lookup(&query).unwrap());
        assert_eq!(
            odd(insight_q(Some((Attribute::EventName, "Odd")), 0, 100, 50)),
            vec![1009, 1007, 1005, 1003, 1001]
        );
        assert_eq!(
            odd(q(Some((Attribute::EventName, "Odd")), 0, 100, 50)),
            [40].into_iter()
                .chain((0..30).rev().filter(|n| n % 2 == 1))
                .collect::<Vec<_>>()
        );
        assert!(odd(q(Some((Attribute::EventName, "ConsoleLogin")), 0, 100, 50)).is_empty());
        assert_eq!(
            odd(insight_q(
                Some((Attribute::EventName, "ConsoleLogin")),
                6,
                12,
                50
            )),
            vec![1004, 1002],
            "time range"
        );
        assert_eq!(
            odd(insight_q(
                Some((Attribute::EventSource, "sshd.onprem.internal")),
                0,
                100,
                50
            ))
            .len(),
            10
        );
        assert!(
            odd(q(
                Some((Attribute::EventSource, "sshd.onprem.internal")),
                0,
                100,
                50
            ))
            .is_empty()
        );
        assert!(
            odd(insight_q(
                Some((Attribute::EventSource, "sudo.onprem.internal")),
                0,
                100,
                50
            ))
            .is_empty()
        );
        // Attributes an Insights record does not have.
        assert!(odd(insight_q(Some((Attribute::Username, "alice")), 0, 100, 50)).is_empty());
        assert!(odd(insight_q(Some((Attribute::ReadOnly, "false")), 0, 100, 50)).is_empty());
        // Regions: the insight of eu-west-1 is in that region only, and only its registry.
        let mut eu = insight_q(None, 0, 100, 50);
        eu.region = Some("eu-west-1".into());
        assert_eq!(odd(eu.clone()), vec![1009]);
        eu.insight = false;
        assert!(odd(eu).is_empty());
        assert!(h.db.contains_key(registry_key(true, "eu-west-1")).unwrap());
        assert!(!h.db.contains_key(registry_key(false, "eu-west-1")).unwrap());
        // EventId: each category finds only its own.
        let by_id = |n: u64, insight: bool| {
            let mut query = q(Some((Attribute::EventId, &event_id(n))), 0, 100, 50);
            query.insight = insight;
            odd(query)
        };
        assert_eq!(by_id(1004, true), vec![1004]);
        assert!(by_id(1004, false).is_empty());
        assert_eq!(by_id(4, false), vec![4]);
        assert!(by_id(4, true).is_empty());
        // The summary of an Insights record is insightDetails' name and source, nothing else.
        let page = h.lookup(&insight_q(None, 27, 27, 50)).unwrap();
        let (s, json) = &page.events[0];
        assert_eq!(
            *s,
            Summary {
                event_id: event_id(1009),
                event_name: Some("Odd".into()),
                event_time: 1_800_000_027,
                event_source: Some("sshd.onprem.internal".into()),
                region: Some("eu-west-1".into()),
                insight: true,
                ..Summary::default()
            }
        );
        assert_eq!(json, &recs[9]);
        // Every index entry is in its category's key space.
        for (attr, _, _, n) in entries(&h) {
            let mut reader = Reader::new(&h.db).unwrap();
            let (_, json) = reader.event(n).unwrap().unwrap();
            let s = summarize_json(json).unwrap();
            assert_eq!(s.insight, attr & INSIGHT != 0, "{attr} {}", s.event_id);
        }
        // Expiry removes them like any other event.
        h.expire(u64::MAX, 1000).unwrap();
        assert!(odd(insight_q(None, 0, 100, 50)).is_empty());
        assert!(h.db.scan_prefix(b"e/").next().is_none());
    }

    /// Paging of Insights lookups, over many inserts interleaved with management events in
    /// the same seconds: pages of 7 across inserts give every record once, newest first,
    /// exactly those of the range, region and attribute.
    #[test]
    fn insight_lookups_page_across_inserts() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("h")).unwrap();
        let mut all = Vec::new();
        for part in 0..12u64 {
            let mut batch = Vec::new();
            for i in 0..10u64 {
                let n = part * 10 + i;
                let name = if n % 3 == 0 { "A" } else { "B" };
                let region = if n % 4 == 0 { "eu-west-1" } else { "us-east-1" };
                batch.push(insight(n, name, "s", region));
                batch.push(rec(n + 10_000, name, "u", false));
                all.push((n, name, region));
            }
            h.insert(batch.iter().map(|r| r.as_slice()), 0).unwrap();
        }
        // (attribute, region, start, end)
        type Case<'a> = (Option<(Attribute, &'a str)>, Option<&'a str>, u64, u64);
        let cases: [Case; 4] = [
            (None, None, 0, 1000),
            (None, Some("us-east-1"), 5, 100),
            (Some((Attribute::EventName, "B")), None, 0, 1000),
            (
                Some((Attribute::EventName, "A")),
                Some("eu-west-1"),
                0,
                1000,
            ),
        ];
        for (attr, region, start, end) in cases {
            let mut query = insight_q(attr, start, end, 7);
            query.region = region.map(str::to_string);
            let mut got = Vec::new();
            let mut pages = 0;
            loop {
                let page = h.lookup(&query).unwrap();
                assert!(page.events.len() <= 7);
                assert!(page.events.iter().all(|(s, _)| s.insight));
                got.extend(ids(&page));
                pages += 1;
                match page.next {
                    Some(next) => query.after = Some(next),
                    None => break,
                }
            }
            let want: Vec<u64> = all
                .iter()
                .rev()
                .filter(|(n, name, r)| {
                    *n >= start
                        && *n <= end
                        && region.is_none_or(|want| want == *r)
                        && attr.is_none_or(|(_, v)| v == *name)
                })
                .map(|(n, ..)| *n)
                .collect();
            assert!(want.len() > 7, "more than one page");
            assert_eq!(got, want, "{attr:?} {region:?} {start}..{end}");
            assert!(pages >= want.len().div_ceil(7));
        }
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
