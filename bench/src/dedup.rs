//! Micro benchmark of the collector's dedup index ([`groundtrail_collector::dedup`], issue 15)
//! against what it replaces: per record, one lookup that misses (a fresh record) and one
//! insert, in batches of 1,000 as an agent's batch arrives. The sled side does what the old
//! journal did per record: `contains_key` of `d/<16 UUID bytes>`, then one `Batch` per 1,000
//! records with the received-at time as value (without the journal's `t/` expiry entries,
//! which made it slower still). Keys are random v4 UUIDs; event times advance at 10,000
//! records a second with up to ±150 s of skew. Building the record's strings is not timed;
//! building the key from them is.

use std::path::Path;
use std::time::{Duration, Instant};

use groundtrail_collector::dedup::{DedupIndex, DedupKey, DedupSettings, DedupStats};

/// Records in one insert, as in one agent batch.
pub const BATCH: usize = 1000;
const BASE: u64 = 1_765_000_000;
/// Records a second the simulated collector receives.
const RATE: u64 = 10_000;

/// One run: `keys` records, the time spent deduplicating them, the process's memory.
#[derive(Debug, Clone)]
pub struct DedupRun {
    pub keys: usize,
    pub secs: f64,
    /// Per-record time of looking up keys that are present (repeats), over the last batches.
    pub hit_secs_per_key: f64,
    /// `VmRSS` growth from before opening the store to the end of the run.
    pub rss_growth: u64,
    /// `VmHWM` at the end (peak of the whole process so far).
    pub rss_peak: u64,
    pub disk_bytes: u64,
    /// CPU seconds of the whole process (every thread: fjall's flushes and compactions,
    /// sled's flusher) over the run, minus the untimed building of the records' strings
    /// (measured apart, see [`string_cpu_secs`]).
    pub cpu_secs: f64,
    pub stats: Option<DedupStats>,
}

impl DedupRun {
    pub fn us_per_key(&self) -> f64 {
        self.secs * 1e6 / self.keys as f64
    }

    pub fn cpu_us_per_key(&self) -> f64 {
        self.cpu_secs * 1e6 / self.keys as f64
    }
}

/// The `i`th record's (eventTime, eventID) text and its received-at second.
fn record(i: u64) -> (String, String, u64) {
    let at = BASE + i / RATE;
    // A spread-out skew for record i (splitmix64's finaliser).
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let event = at + (x ^ (x >> 27)) % 300 - 150;
    let t = chrono::DateTime::from_timestamp(event as i64, 0)
        .expect("time in range")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    (t, uuid::Uuid::new_v4().to_string(), at)
}

fn cpu() -> f64 {
    crate::proc::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

/// CPU seconds this thread spends building the strings of `n` records.
fn string_cpu_secs(n: usize) -> f64 {
    let c = cpu();
    for b in 0..n.div_ceil(BATCH) {
        let records: Vec<(String, String, u64)> =
            (0..BATCH).map(|j| record((b * BATCH + j) as u64)).collect();
        std::hint::black_box(records);
    }
    cpu() - c
}

fn rss() -> (u64, u64) {
    crate::proc::rss_bytes(std::process::id()).unwrap_or((0, 0))
}

/// Runs `n` records through a fresh [`DedupIndex`] with `settings` under `dir`.
pub fn fjall(dir: &Path, n: usize, settings: &DedupSettings) -> anyhow::Result<DedupRun> {
    let strings = string_cpu_secs(n);
    let before = rss().0;
    let cpu0 = cpu();
    let idx = DedupIndex::open(&dir.join("dedup-fjall"), settings)?;
    let mut spent = Duration::ZERO;
    let mut recent: Vec<DedupKey> = Vec::new();
    for b in 0..n.div_ceil(BATCH) {
        let records: Vec<(String, String, u64)> =
            (0..BATCH).map(|j| record((b * BATCH + j) as u64)).collect();
        let t = Instant::now();
        let mut keys = Vec::with_capacity(BATCH);
        for (time, id, _) in &records {
            let k = DedupKey::new(time, id);
            if idx.contains(&k)? {
                anyhow::bail!("fresh key {k:?} reported present");
            }
            keys.push(k);
        }
        idx.insert(&keys, records[0].2)?;
        spent += t.elapsed();
        if b + 100 >= n / BATCH {
            recent.extend(keys);
        }
    }
    let t = Instant::now();
    for k in &recent {
        if !idx.contains(k)? {
            anyhow::bail!("inserted key {k:?} reported absent");
        }
    }
    let hit = t.elapsed().as_secs_f64() / recent.len().max(1) as f64;
    let cpu_secs = cpu() - cpu0 - strings - hit * recent.len() as f64;
    let stats = idx.stats();
    let (now, peak) = rss();
    Ok(DedupRun {
        keys: n,
        secs: spent.as_secs_f64(),
        hit_secs_per_key: hit,
        rss_growth: now.saturating_sub(before),
        rss_peak: peak,
        disk_bytes: stats.disk_bytes,
        cpu_secs,
        stats: Some(stats),
    })
}

/// Runs `n` records through sled the way the old journal deduplicated them.
pub fn sled(dir: &Path, n: usize) -> anyhow::Result<DedupRun> {
    let strings = string_cpu_secs(n);
    let before = rss().0;
    let cpu0 = cpu();
    let db = sled::Config::new()
        .path(dir.join("dedup-sled"))
        .cache_capacity(128 * 1024 * 1024) // the journal's setting
        .open()?;
    let mut spent = Duration::ZERO;
    let mut recent: Vec<Vec<u8>> = Vec::new();
    for b in 0..n.div_ceil(BATCH) {
        let records: Vec<(String, String, u64)> =
            (0..BATCH).map(|j| record((b * BATCH + j) as u64)).collect();
        let t = Instant::now();
        let mut batch = sled::Batch::default();
        let mut keys = Vec::with_capacity(BATCH);
        for (_, id, at) in &records {
            let u = uuid::Uuid::parse_str(id)?;
            let mut k = b"d/".to_vec();
            k.extend_from_slice(u.as_bytes());
            if db.contains_key(&k)? {
                anyhow::bail!("fresh key reported present");
            }
            batch.insert(k.as_slice(), &at.to_be_bytes());
            keys.push(k);
        }
        db.apply_batch(batch)?;
        spent += t.elapsed();
        if b + 100 >= n / BATCH {
            recent.extend(keys);
        }
    }
    let t = Instant::now();
    for k in &recent {
        if !db.contains_key(k)? {
            anyhow::bail!("inserted key reported absent");
        }
    }
    let hit = t.elapsed().as_secs_f64() / recent.len().max(1) as f64;
    let cpu_secs = cpu() - cpu0 - strings - hit * recent.len() as f64;
    db.flush()?;
    let (now, peak) = rss();
    Ok(DedupRun {
        keys: n,
        secs: spent.as_secs_f64(),
        hit_secs_per_key: hit,
        rss_growth: now.saturating_sub(before),
        rss_peak: peak,
        disk_bytes: db.size_on_disk()?,
        cpu_secs,
        stats: None,
    })
}
