//! Scenario 6: the collector's event history (`LookupEvents`' read model), in-process.
//!
//! A [`History`] on the work directory's disk, opened as the collector opens it (its default
//! `[history] cache_bytes`), is filled with generator records (fresh eventIDs, eventTimes
//! spread evenly over 7 days, oldest first as live ingest makes them) in batches of 10,000
//! (what the indexer merges from its queue), up to 1M events and then on to 3M (10M took ~8
//! minutes on the 2-core development machine, too long for a default run: use
//! `GROUNDTRAIL_BENCH_HISTORY_SIZES=1000000,10000000`, below). After each
//! stage: the store's size on disk and `LookupEvents` first-page latency over a mix of
//! queries (no attribute, and each lookup attribute but EventId, over the whole history and
//! over one hour; the second page through the token), 50 events a page, each for the region
//! of the record its value was taken from (AWS answers one region per request).
//!
//! Then the web console's first pages (`groundtrail_collector::console::query::page`, what
//! `/console/api/events` answers with) over a mix of combined filters, 50 rows a page, each
//! with its default scan budget: two indexed attributes, an indexed one with an unindexed one
//! (source IP, error code), three at once, only unindexed ones, and a source IP no event has
//! (the worst case: every page reads its whole budget and returns none). Goal: 300 ms.
//!
//! `GROUNDTRAIL_BENCH_HISTORY_SIZES=300000,1000000` runs other sizes (under the same figure
//! names, with a note saying so): 10M, or a quick comparison of two changes.
//!
//! "Indexing" counts the time spent in `History::insert` and the final flush: the records
//! are made on another thread beside it (as the batcher or the durable log hands them over),
//! and the wall-clock rate, which includes waiting for that thread, is in the notes.

use std::sync::Arc;
use std::sync::mpsc::sync_channel;
use std::time::Instant;

use groundtrail_collector::history::{Attribute, History, Query, summarize_json};

use super::{fig, rates};
use crate::Ctx;
use crate::generator::{Rng, Template};
use crate::report::{Goal, num};

const BATCH: usize = 10_000;
const SPAN_SECS: i64 = 7 * 24 * 3600;
const PAGE: usize = 50;
/// Lookups of each (attribute, range) kind per stage.
const ROUNDS: usize = 60;
/// The brief's indexing goal (events/s), above the ingest goal of 30,000 records/s.
const INDEX_GOAL: f64 = 40_000.0;
const P99_GOAL_MS: f64 = 50.0;
/// The console's goal for a first page (issue 20).
const CONSOLE_GOAL_MS: f64 = 300.0;
/// Console pages of each filter kind per stage.
const CONSOLE_ROUNDS: usize = 20;

/// (region, value) pairs of one lookup attribute (`None`: no attribute).
type AttrValues = (Option<Attribute>, Vec<(String, String)>);

/// Attribute values seen in the generator's records, with their regions.
struct Values {
    by_attr: Vec<AttrValues>,
}

impl Values {
    fn of(templates: &[Template]) -> Values {
        let kinds = [
            None,
            Some(Attribute::EventName),
            Some(Attribute::Username),
            Some(Attribute::EventSource),
            Some(Attribute::ResourceName),
            Some(Attribute::AccessKeyId),
            Some(Attribute::ReadOnly),
        ];
        let mut by_attr: Vec<AttrValues> = kinds.iter().map(|k| (*k, Vec::new())).collect();
        for t in templates {
            let Some(s) = summarize_json(&t.json) else {
                continue;
            };
            let region = s.region.clone().unwrap_or_default();
            for (kind, list) in &mut by_attr {
                let value = match kind {
                    None => Some(String::new()),
                    Some(Attribute::EventName) => s.event_name.clone(),
                    Some(Attribute::Username) => s.username.clone(),
                    Some(Attribute::EventSource) => s.event_source.clone(),
                    Some(Attribute::ResourceName) => {
                        s.resources.iter().find_map(|(_, n)| n.clone())
                    }
                    Some(Attribute::AccessKeyId) => s.access_key_id.clone(),
                    Some(Attribute::ReadOnly) => s.read_only.clone(),
                    Some(_) => None,
                };
                if let Some(v) = value {
                    list.push((region.clone(), v));
                }
            }
        }
        Values { by_attr }
    }
}

struct Fill {
    events: u64,
    added: u64,
    bytes: u64,
    insert_secs: f64,
    wall_secs: f64,
}

/// Inserts events `from..to` of `total` (time `start + n * SPAN / total`) in batches of
/// `BATCH`, made on another thread, then flushes.
fn fill(
    h: &History,
    templates: Arc<Vec<Template>>,
    seed: u64,
    (from, to, total): (u64, u64, u64),
    start: i64,
) -> anyhow::Result<Fill> {
    let (tx, rx) = sync_channel::<Vec<Vec<u8>>>(2);
    let maker = std::thread::spawn(move || {
        let mut rng = Rng::new(seed ^ 0x4157_0000 ^ from);
        let mut n = from;
        while n < to {
            let end = (n + BATCH as u64).min(to);
            let batch = (n..end)
                .map(|i| {
                    let t = &templates[(i as usize * 7919) % templates.len()];
                    let secs = start + (i as i128 * SPAN_SECS as i128 / total as i128) as i64;
                    t.with_id_at(&rng.uuid(), secs)
                })
                .collect();
            if tx.send(batch).is_err() {
                return;
            }
            n = end;
        }
    });
    let wall = Instant::now();
    let mut insert_secs = 0.0;
    let (mut events, mut added, mut bytes) = (0u64, 0u64, 0u64);
    for batch in rx {
        let t = Instant::now();
        added += h.insert(batch.iter().map(Vec::as_slice), 0)? as u64;
        insert_secs += t.elapsed().as_secs_f64();
        events += batch.len() as u64;
        bytes += batch.iter().map(|r| r.len() as u64).sum::<u64>();
    }
    let t = Instant::now();
    h.probe_blocking()?;
    insert_secs += t.elapsed().as_secs_f64();
    maker
        .join()
        .map_err(|_| anyhow::anyhow!("record maker panicked"))?;
    Ok(Fill {
        events,
        added,
        bytes,
        insert_secs,
        wall_secs: wall.elapsed().as_secs_f64(),
    })
}

/// Latencies (ms) of one stage's query mix: (kind, sorted latencies, mean events returned).
fn lookups(
    h: &History,
    values: &Values,
    seed: u64,
    first: u64,
    last: u64,
) -> anyhow::Result<Vec<(String, Vec<f64>, f64)>> {
    let mut rng = Rng::new(seed ^ 0x100C_0000);
    let mut out = Vec::new();
    let mut page2 = Vec::new();
    for (kind, list) in &values.by_attr {
        if list.is_empty() {
            continue;
        }
        for wide in [true, false] {
            let mut lat = Vec::with_capacity(ROUNDS);
            let mut returned = 0usize;
            for _ in 0..ROUNDS {
                let (region, value) = rng.pick(list).clone();
                let (start, end) = if wide {
                    (first, last)
                } else {
                    let s = rng.range(first, last.saturating_sub(3600).max(first));
                    (s, s + 3600)
                };
                let mut q = Query {
                    attribute: kind.map(|a| (a, value)),
                    start,
                    end,
                    max_results: PAGE,
                    after: None,
                    region: Some(region),
                    insight: false,
                };
                let t = Instant::now();
                let page = h.lookup(&q)?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                returned += page.events.len();
                if wide && let Some(next) = page.next {
                    q.after = Some(next);
                    let t = Instant::now();
                    let second = h.lookup(&q)?;
                    page2.push(t.elapsed().as_secs_f64() * 1000.0);
                    anyhow::ensure!(!second.events.is_empty(), "a token led to an empty page");
                }
            }
            lat.sort_by(f64::total_cmp);
            let name = format!(
                "{} {}",
                kind.map_or("no attribute", attr_name),
                if wide { "all 7 days" } else { "1 hour" }
            );
            out.push((name, lat, returned as f64 / ROUNDS as f64));
        }
    }
    page2.sort_by(f64::total_cmp);
    out.push(("second page (token)".into(), page2, PAGE as f64));
    Ok(out)
}

/// (kind, sorted latencies in ms, mean rows a page, mean events read a page)
type ConsoleKind = (String, Vec<f64>, f64, f64);

/// Latencies (ms) of the console's first pages over a mix of combined filters: (kind,
/// sorted latencies, mean rows, mean events read).
fn console_pages(
    h: &History,
    templates: &[Template],
    seed: u64,
    first: u64,
    last: u64,
) -> anyhow::Result<Vec<ConsoleKind>> {
    use groundtrail_collector::console::query::{self, Extra, Filters};
    let mut rng = Rng::new(seed ^ 0xC025_0000);
    // Filter values taken from the generator's records, so the filters match something.
    let samples: Vec<Filters> = templates
        .iter()
        .filter_map(|t| {
            let s = summarize_json(&t.json)?;
            let e = Extra::read(&t.json);
            Some(Filters {
                event_name: s.event_name,
                event_source: s.event_source,
                username: s.username,
                source_ip: e.source_ip,
                error_code: e.error_code,
                region: s.region,
                read_only: s.read_only.map(|r| r == "true"),
                ..Filters::default()
            })
        })
        .collect();
    anyhow::ensure!(!samples.is_empty(), "no generator record has a summary");
    type Pick = fn(&Filters) -> Filters;
    let kinds: [(&str, Pick); 6] = [
        ("no filter", |_| Filters::default()),
        ("user + event name", |f| Filters {
            username: f.username.clone(),
            event_name: f.event_name.clone(),
            ..Filters::default()
        }),
        ("user + source IP (unindexed)", |f| Filters {
            username: f.username.clone(),
            source_ip: f.source_ip.clone(),
            ..Filters::default()
        }),
        ("event source + read-only + region", |f| Filters {
            event_source: f.event_source.clone(),
            read_only: f.read_only,
            region: f.region.clone(),
            ..Filters::default()
        }),
        ("source IP + error code (no index)", |f| Filters {
            source_ip: f.source_ip.clone(),
            error_code: f.error_code.clone(),
            ..Filters::default()
        }),
        ("a source IP no event has (budget)", |_| Filters {
            source_ip: Some("203.0.113.254".into()),
            ..Filters::default()
        }),
    ];
    let mut out = Vec::new();
    for (name, pick) in kinds {
        let mut lat = Vec::with_capacity(CONSOLE_ROUNDS);
        let (mut rows, mut read) = (0usize, 0usize);
        for _ in 0..CONSOLE_ROUNDS {
            let sample = rng.pick(&samples);
            let f = Filters {
                start: Some(first),
                end: Some(last),
                ..pick(sample)
            };
            let t = Instant::now();
            let p = query::page(h, &f, PAGE, None, query::DEFAULT_BUDGET, last, u64::MAX / 2)?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
            rows += p.rows.len();
            read += p.scanned;
        }
        lat.sort_by(f64::total_cmp);
        out.push((
            name.to_string(),
            lat,
            rows as f64 / CONSOLE_ROUNDS as f64,
            read as f64 / CONSOLE_ROUNDS as f64,
        ));
    }
    Ok(out)
}

fn attr_name(a: Attribute) -> &'static str {
    match a {
        Attribute::EventId => "EventId",
        Attribute::EventName => "EventName",
        Attribute::ReadOnly => "ReadOnly",
        Attribute::Username => "Username",
        Attribute::ResourceType => "ResourceType",
        Attribute::ResourceName => "ResourceName",
        Attribute::EventSource => "EventSource",
        Attribute::AccessKeyId => "AccessKeyId",
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub async fn run(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut stages: [(&str, u64); 2] = [
        ("1m", ctx.size(1_000_000, 2_000)),
        ("3m", ctx.size(3_000_000, 10_000)),
    ];
    if let Ok(sizes) = std::env::var("GROUNDTRAIL_BENCH_HISTORY_SIZES") {
        let parsed: Vec<u64> = sizes
            .split(',')
            .map(|s| s.trim().replace('_', "").parse())
            .collect::<Result<_, _>>()?;
        anyhow::ensure!(
            parsed.len() == 2 && 0 < parsed[0] && parsed[0] < parsed[1],
            "GROUNDTRAIL_BENCH_HISTORY_SIZES: two increasing sizes, e.g. 300000,1000000"
        );
        stages[0].1 = parsed[0];
        stages[1].1 = parsed[1];
        ctx.report.note(format!(
            "history: GROUNDTRAIL_BENCH_HISTORY_SIZES: {} and {} events in place of 1M and 3M",
            parsed[0], parsed[1]
        ));
    }
    let total = stages[1].1;
    let dir = ctx.dir("history")?;
    let cache = groundtrail_collector::config::HistoryConfig::default().cache_bytes;
    // As the collector opens it (sled's low-space mode); `=1`: sled's high-throughput mode.
    let low_space =
        std::env::var("GROUNDTRAIL_BENCH_HISTORY_HIGH_THROUGHPUT").as_deref() != Ok("1");
    let h = Arc::new(History::open_with(&dir.join("history"), cache, low_space)?);
    let values = Arc::new(Values::of(&ctx.templates));
    let end = chrono::Utc::now().timestamp();
    let start = end - SPAN_SECS;
    ctx.report.note(format!(
        "history: sled cache {} MiB (the [history] cache_bytes default); generator records, eventTimes over 7 days, {BATCH} per insert; {ROUNDS} lookups per kind, {PAGE} a page{}",
        cache / (1024 * 1024),
        if ctx.quick {
            "; --quick: 2,000 and 10,000 events, not 1M and 3M"
        } else {
            ""
        }
    ));
    let mut done = 0u64;
    let mut indexed = 0u64;
    for (stage, upto) in stages {
        ctx.step(format!("history: indexing events {done}..{upto}"));
        let (h2, templates, seed) = (h.clone(), ctx.templates.clone(), ctx.seed);
        let f = tokio::task::spawn_blocking(move || {
            fill(&h2, templates, seed, (done, upto, total), start)
        })
        .await??;
        done = upto;
        indexed += f.added;
        let (per_s, mb_s) = rates(f.events as usize, f.bytes as usize, f.insert_secs);
        fig(
            ctx,
            &format!("history.{stage}.index_events_per_s"),
            per_s,
            "events/s",
            Some(Goal::AtLeast(INDEX_GOAL)),
            "goal >= 40,000 events/s (ingest goal 30,000+ records/s)",
        );
        fig(
            ctx,
            &format!("history.{stage}.index_mb_per_s"),
            mb_s,
            "MB/s",
            None,
            "",
        );
        ctx.report.note(format!(
            "history {stage}: {} events ({} management, indexed) in {:.1} s of insert + flush, {:.1} s wall ({} events/s wall, records made on another thread)",
            num(f.events as f64, 0),
            num(f.added as f64, 0),
            f.insert_secs,
            f.wall_secs,
            num(f.events as f64 / f.wall_secs, 0)
        ));
        let size = h.size_on_disk()?;
        fig(
            ctx,
            &format!("history.{stage}.bytes_per_event"),
            size as f64 / indexed.max(1) as f64,
            "bytes/event",
            None,
            &format!("{:.0} MB on disk", size as f64 / 1e6),
        );
        ctx.step(format!("history: lookups at {done} events"));
        let (h2, v2, seed) = (h.clone(), values.clone(), ctx.seed);
        let last = start + SPAN_SECS * done as i64 / total as i64;
        let kinds =
            tokio::task::spawn_blocking(move || lookups(&h2, &v2, seed, start as u64, last as u64))
                .await??;
        let mut all: Vec<f64> = Vec::new();
        for (name, lat, mean) in &kinds {
            all.extend(lat);
            ctx.report.note(format!(
                "history {stage} lookup {name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {mean:.1} events a page",
                percentile(lat, 0.5),
                percentile(lat, 0.99),
                lat.last().copied().unwrap_or(0.0)
            ));
        }
        all.sort_by(f64::total_cmp);
        fig(
            ctx,
            &format!("history.{stage}.lookup_p50_ms"),
            percentile(&all, 0.5),
            "ms",
            None,
            "",
        );
        fig(
            ctx,
            &format!("history.{stage}.lookup_p99_ms"),
            percentile(&all, 0.99),
            "ms",
            Some(Goal::AtMost(P99_GOAL_MS)),
            "goal p99 < 50 ms",
        );
        ctx.step(format!("history: console first pages at {done} events"));
        let (h2, templates, seed) = (h.clone(), ctx.templates.clone(), ctx.seed);
        let kinds = tokio::task::spawn_blocking(move || {
            console_pages(&h2, &templates, seed, start as u64, last as u64)
        })
        .await??;
        let mut all: Vec<f64> = Vec::new();
        for (name, lat, rows, read) in &kinds {
            all.extend(lat);
            ctx.report.note(format!(
                "history {stage} console {name}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {rows:.1} rows a page, {read:.0} events read",
                percentile(lat, 0.5),
                percentile(lat, 0.99),
                lat.last().copied().unwrap_or(0.0)
            ));
        }
        all.sort_by(f64::total_cmp);
        fig(
            ctx,
            &format!("history.{stage}.console_p99_ms"),
            percentile(&all, 0.99),
            "ms",
            Some(Goal::AtMost(CONSOLE_GOAL_MS)),
            "goal < 300 ms (first page, any filters)",
        );
    }
    if let Some((rss, _)) = crate::proc::rss_bytes(std::process::id()) {
        ctx.report.note(format!(
            "history: this process's RSS after the run: {:.0} MiB (sled cache {} MiB)",
            rss as f64 / (1024.0 * 1024.0),
            cache / (1024 * 1024)
        ));
    }
    Ok(())
}
