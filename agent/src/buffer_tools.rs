//! `groundtrail-agent buffer inspect|verify|export`: what a stopped agent's buffer (or one the
//! agent moved aside as damaged) holds, whether it is sound, and its records as ndjson, so that
//! an operator can recover a backlog by hand.
//!
//! # Guarantees
//!
//! 1. **The buffer is never written**, and a buffer a running agent holds is refused: see
//!    [`store`] (a private copy is opened; a shared `flock` on `<buffer>/db` finds the agent).
//! 2. **Judged as the agent judges.** Values are decoded by the buffer's own decoder and records
//!    parsed by [`Record::from_json`]; `verify` checks the invariants `buffer`'s module doc
//!    states that can be seen in a store at rest (listed at [`Scan`]). Gaps between chunks are
//!    not problems: dropped records, removed corrupt entries and set-aside records leave them.
//! 3. **Export is what the agent would still send**: the queued records above the acknowledged
//!    position, in sequence order, then the side tree's (unless `--no-set-aside`); with
//!    `--from-seq N` only those numbered `N` and above (a salvaged store has no numbers, so
//!    `--from-seq` is refused there rather than ignored). A value that does not decode is named
//!    on stderr and skipped, and so is a record that is not JSON; the others are all exported.
//!    A store sled cannot open is exported from what [`store::salvage`] finds, by append time.
//! 4. **Exit codes**: 0 sound (`verify`) / everything read (`export`, `inspect`); 1 problems
//!    found, something skipped, or the store could only be salvaged; 2 the buffer cannot be
//!    examined (missing, not a buffer, in use, unknown format, I/O error).

pub mod store;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use groundtrail_common::Record;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::buffer::{
    self, K_ASIDE, K_CHECKPOINT, K_META, K_RECORD, META_ACKED, META_LOSS, META_NEXT_SEQ,
    META_PROBE, PendingLoss,
};
use store::{Store, View};

/// The `buffer` subcommands.
#[derive(Debug, Subcommand)]
pub enum BufferCommand {
    /// What a buffer holds: format, chunks and records, eventTime and append time ranges,
    /// sequence numbers, acknowledged position, bytes on disk, pending loss and the agent's own
    /// records queued.
    Inspect {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Read every chunk, decode every frame and record, check the buffer's invariants; print
    /// each problem with its chunk key. Exit 0 sound, 1 problems found, 2 cannot examine.
    /// Works on a private copy: the buffer itself is never written.
    Verify {
        #[command(flatten)]
        target: Target,
    },
    /// Every record that can be decoded, as ndjson, in buffer order (queue, then side tree);
    /// damaged chunks are named on stderr and skipped. Exit 1 if anything was skipped.
    Export {
        #[command(flatten)]
        target: Target,
        /// Where to write the records (`-`: standard output).
        #[arg(long, visible_alias = "out", default_value = "-")]
        output: PathBuf,
        /// Only records numbered N and above (queued and set aside), e.g. to resume an export
        /// after the last sequence number a collector has. Refused for a salvaged store.
        #[arg(long, value_name = "N")]
        from_seq: Option<u64>,
        /// Leave out the side tree (records the collector refused).
        #[arg(long)]
        no_set_aside: bool,
    },
}

/// Which buffer: one of the three, or the configured one.
#[derive(Debug, Args)]
#[group(multiple = false)]
pub struct Target {
    /// The agent's config file: the buffer in its `agent.data_dir` (the default, also from
    /// GROUNDTRAIL_AGENT_CONFIG or else the embedded config).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A data directory: the buffer in its `buffer` subdirectory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A buffer directory itself, e.g. a quarantined one (`buffer.quarantined-<time>`).
    #[arg(long)]
    path: Option<PathBuf>,
}

impl Target {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.path {
            return Ok(p.clone());
        }
        if let Some(d) = &self.data_dir {
            return Ok(d.join("buffer"));
        }
        let config = self
            .config
            .clone()
            .or_else(|| std::env::var_os("GROUNDTRAIL_AGENT_CONFIG").map(PathBuf::from));
        Ok(crate::cli::load_settings(config.as_deref())?.buffer_dir())
    }
}

/// Runs a `buffer` subcommand; the exit code follows guarantee 4.
pub fn run(command: BufferCommand) -> ExitCode {
    let outcome = match command {
        BufferCommand::Inspect { target, json } => with_store(&target, |s| inspect(s, json)),
        BufferCommand::Verify { target } => with_store(&target, verify),
        BufferCommand::Export {
            target,
            output,
            from_seq,
            no_set_aside,
        } => with_store(&target, |s| {
            let select = Select {
                set_aside: !no_set_aside,
                from_seq,
            };
            export(s, &output, select)
        }),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn with_store(
    target: &Target,
    f: impl FnOnce(&Store) -> anyhow::Result<bool>,
) -> anyhow::Result<bool> {
    let path = target.resolve()?;
    let bar = progress(BAR);
    let store = Store::open(&path, &bar);
    bar.finish_and_clear();
    let store = store?;
    f(&store)
}

/// Copying and salvaging know the bytes ahead; reading the store does not.
const BAR: &str = "{msg} {bar:30} {bytes}/{total_bytes} {elapsed}";
const SPINNER: &str = "{spinner} {msg} {bytes} {elapsed}";

/// A progress display on stderr, only when stderr is a terminal (never in a pipe or a log).
fn progress(template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

/// A problem found, at a chunk key (`r:<seq>`, `x:<seq>`), a meta key, or a salvage place.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub at: String,
    pub what: String,
    /// Whether records are missing because of it (a value or record that cannot be read):
    /// `export` says "skipped" for these, "warning" for the others.
    #[serde(skip)]
    pub damage: bool,
}

/// What one pass over the store found. The invariants checked (buffer module doc):
/// every key is a known kind (`r`, `c`, `m`, `x`); chunk and side-tree keys are 9 bytes; every
/// value decodes (header, zstd frame and checksum, exactly the declared 1..=4096 records) and
/// every record is JSON and a valid CloudTrail record (invariant 8); chunks are in sequence
/// order and do not overlap (invariant 3); no stored chunk is entirely acknowledged
/// (invariant 5: it is deleted in the batch that acknowledges it); a side-tree value holds
/// one record whose number is in no queued chunk; `m next_seq` and `m acked` are u64s and
/// `m loss` parses (invariant 7).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Scan {
    pub chunks: u64,
    pub set_aside_chunks: u64,
    /// Queued records still to send (above the acknowledged position).
    pub records: u64,
    /// Records in stored chunks at or below the acknowledged position (skipped by readers).
    pub acknowledged_in_stored_chunks: u64,
    pub set_aside_records: u64,
    /// Stored values by format (`lines-v3`, `chunk-v2`, `single-v1`, `unknown-0x..`).
    pub formats: BTreeMap<String, u64>,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub last_set_aside_seq: Option<u64>,
    pub oldest_event_time: Option<String>,
    pub newest_event_time: Option<String>,
    /// When the agent stored the oldest and newest readable chunk (from their headers): how
    /// long the backlog has waited, whatever the records' own eventTime says.
    pub oldest_appended: Option<String>,
    pub newest_appended: Option<String>,
    /// The agent's own records queued (eventSource `groundtrail.*`), by eventName.
    pub agent_records: BTreeMap<String, u64>,
    pub value_bytes: u64,
    pub damaged_chunks: u64,
    /// Records in damaged chunks (from their headers; 1 when the header does not parse).
    pub damaged_records: u64,
    /// Records skipped because they are not JSON.
    pub unreadable_records: u64,
    pub acknowledged_up_to: Option<u64>,
    pub stored_next_seq: Option<u64>,
    pub checkpoints: Vec<String>,
    pub pending_loss: Option<PendingLoss>,
    pub problems: Vec<Problem>,
    #[serde(skip)]
    oldest: Option<DateTime<Utc>>,
    #[serde(skip)]
    newest: Option<DateTime<Utc>>,
    #[serde(skip)]
    appended_ms: Option<(u64, u64)>,
}

type Emit<'a> = &'a mut dyn FnMut(&[u8]) -> std::io::Result<()>;

/// Which records a scan passes on (and counts): `inspect` and `verify` read them all.
#[derive(Debug, Clone, Copy)]
struct Select {
    /// The side tree's records too.
    set_aside: bool,
    /// Only records numbered this and above; chunks entirely below are not decoded.
    from_seq: Option<u64>,
}

impl Select {
    const ALL: Select = Select {
        set_aside: true,
        from_seq: None,
    };
}

impl Scan {
    fn problem(&mut self, at: impl Into<String>, what: impl Into<String>, damage: bool) {
        self.problems.push(Problem {
            at: at.into(),
            what: what.into(),
            damage,
        });
    }

    fn appended(&mut self, ms: u64) {
        self.appended_ms = Some(
            self.appended_ms
                .map_or((ms, ms), |(a, b)| (a.min(ms), b.max(ms))),
        );
    }

    fn format(&mut self, v: &[u8]) {
        let name = match v.first() {
            Some(&buffer::VALUE_LINES) => "lines-v3".to_string(),
            Some(&buffer::VALUE_CHUNK) => "chunk-v2".to_string(),
            Some(&buffer::VALUE_SINGLE) => "single-v1".to_string(),
            Some(b) => format!("unknown-0x{b:02x}"),
            None => "empty".to_string(),
        };
        *self.formats.entry(name).or_default() += 1;
    }

    /// One record: checked, counted (the agent's own only if `queued`), and passed to `emit`
    /// if it is JSON.
    fn record(
        &mut self,
        at: &str,
        json: &[u8],
        queued: bool,
        emit: Emit<'_>,
    ) -> std::io::Result<()> {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(json) {
            self.unreadable_records += 1;
            self.problem(at, format!("record is not JSON: {e}"), true);
            return Ok(());
        }
        match Record::from_json(json) {
            Ok(r) => {
                if let Some(t) = r.event_time() {
                    self.oldest = Some(self.oldest.map_or(t, |o| o.min(t)));
                    self.newest = Some(self.newest.map_or(t, |o| o.max(t)));
                }
                if queued && r.event_source.starts_with("groundtrail.") {
                    *self.agent_records.entry(r.event_name).or_default() += 1;
                }
            }
            Err(e) => self.problem(at, format!("not a valid CloudTrail record: {e}"), false),
        }
        emit(json)
    }

    /// The next sequence number the agent would assign, as `Buffer::open` computes it; `None`
    /// for a store with nothing numbered yet (the agent then starts at the current time).
    pub fn next_seq(&self) -> Option<u64> {
        if self.stored_next_seq.is_none() && self.last_seq.is_none() {
            return None;
        }
        let after = |s: Option<u64>| s.map_or(0, |s| s.saturating_add(1));
        Some(
            self.stored_next_seq
                .unwrap_or(1)
                .max(after(self.last_seq))
                .max(after(self.last_set_aside_seq))
                .max(after(self.acknowledged_up_to)),
        )
    }
}

/// Reads the whole store once; the queued records `select` asks for (then the side tree's) go
/// to `emit` in buffer order.
fn scan(store: &Store, select: Select, emit: Emit<'_>) -> anyhow::Result<Scan> {
    let mut s = Scan::default();
    let decompressor = Mutex::new(zstd::bulk::Decompressor::new()?);
    let bar = progress(SPINNER);
    bar.set_message("reading");
    match &store.view {
        View::Sled(copy) => scan_tree(&copy.tree, &decompressor, select, &mut s, emit, &bar)?,
        View::Salvage { sled_error, chunks } => {
            s.problem(
                "store",
                format!(
                    "sled cannot open it ({sled_error}); records were salvaged from the raw \
                     files: without sequence numbers, ordered by append time, possibly \
                     including records the collector already has"
                ),
                false,
            );
            let mut seen = store::salvage::Seen::default();
            for c in chunks {
                bar.inc(c.value.len() as u64);
                // Carving kept only values that decode.
                let Ok((ms, jsons)) = buffer::decode_value(&decompressor, &c.value) else {
                    continue;
                };
                let fresh: Vec<&Vec<u8>> = jsons.iter().filter(|j| seen.first_time(j)).collect();
                if fresh.is_empty() {
                    continue;
                }
                s.chunks += 1;
                s.appended(ms);
                s.value_bytes += c.value.len() as u64;
                s.format(&c.value);
                for json in fresh {
                    s.records += 1;
                    s.record(&c.place, json, true, emit)?;
                }
            }
        }
    }
    bar.finish_and_clear();
    s.oldest_event_time = s
        .oldest
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
    s.newest_event_time = s
        .newest
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
    let rfc3339 = |ms: u64| {
        DateTime::<Utc>::from_timestamp_millis(ms as i64)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
    };
    if let Some((oldest, newest)) = s.appended_ms {
        s.oldest_appended = rfc3339(oldest);
        s.newest_appended = rfc3339(newest);
    }
    Ok(s)
}

fn u64_meta(s: &mut Scan, key: &str, v: &[u8]) -> Option<u64> {
    let n = buffer::u64_of(v);
    if n.is_none() {
        s.problem(key, format!("{} bytes where a u64 belongs", v.len()), false);
    }
    n
}

fn scan_tree(
    tree: &sled::Tree,
    decompressor: &Mutex<zstd::bulk::Decompressor<'static>>,
    select: Select,
    s: &mut Scan,
    emit: Emit<'_>,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let acked = match tree.get(META_ACKED)? {
        Some(v) => u64_meta(s, "m:acked", &v),
        None => None,
    };
    s.acknowledged_up_to = acked;
    let acked = acked.unwrap_or(0);
    let from_seq = select.from_seq.unwrap_or(0);
    // Queued chunks' ranges, for the side-tree check ('r' keys sort before 'x' keys).
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for item in tree.iter() {
        let (k, v) = item?;
        bar.inc(v.len() as u64);
        let kind = k.first().copied().unwrap_or(0);
        match kind {
            K_RECORD | K_ASIDE => {
                let aside = kind == K_ASIDE;
                let Some(first) = buffer::seq_of(&k) else {
                    s.problem(
                        format!("{}:{}", kind as char, hex::encode(&k[1..])),
                        format!("key of {} bytes is not a chunk key (9 bytes)", k.len()),
                        true,
                    );
                    continue;
                };
                let at = format!("{}:{first}", kind as char);
                s.value_bytes += v.len() as u64;
                s.format(&v);
                let n = buffer::chunk_len(&v);
                let last = buffer::chunk_last(first, n);
                if aside {
                    s.set_aside_chunks += 1;
                    s.last_set_aside_seq = Some(first);
                    if ranges
                        .binary_search_by(|&(a, b)| {
                            if b < first {
                                std::cmp::Ordering::Less
                            } else if a > first {
                                std::cmp::Ordering::Greater
                            } else {
                                std::cmp::Ordering::Equal
                            }
                        })
                        .is_ok()
                    {
                        s.problem(&at, "set aside but also in a queued chunk", false);
                    }
                } else {
                    s.chunks += 1;
                    if let Some(&(_, prev)) = ranges.last()
                        && first <= prev
                    {
                        s.problem(
                            &at,
                            format!(
                                "records {first}..={last} overlap the previous chunk (..={prev})"
                            ),
                            false,
                        );
                    }
                    if last <= acked {
                        s.problem(
                            &at,
                            format!("entirely acknowledged (..={acked}) but still stored"),
                            false,
                        );
                    }
                    ranges.push((first, last));
                    if buffer::live(first, n, acked) > 0 && s.first_seq.is_none() {
                        s.first_seq = Some(first.max(acked.saturating_add(1)));
                    }
                    s.last_seq = Some(last);
                }
                if last < from_seq {
                    continue;
                }
                let jsons = match buffer::decode_value(decompressor, &v) {
                    Ok((ms, jsons)) => {
                        s.appended(ms);
                        jsons
                    }
                    Err(e) => {
                        s.damaged_chunks += 1;
                        // The records of it this scan would have passed on.
                        let below = from_seq.saturating_sub(1);
                        let lost =
                            buffer::live(first, n, if aside { below } else { acked.max(below) });
                        s.damaged_records += lost;
                        s.problem(
                            &at,
                            format!("records {first}..={last} cannot be read: {e}"),
                            true,
                        );
                        continue;
                    }
                };
                if aside && jsons.len() != 1 {
                    s.problem(
                        &at,
                        format!("a side-tree value holds {} records, not 1", jsons.len()),
                        false,
                    );
                }
                for (seq, json) in (first..).zip(&jsons) {
                    if seq < from_seq {
                        continue;
                    }
                    let here = format!("{at} (record {seq})");
                    if aside {
                        s.set_aside_records += 1;
                        if select.set_aside {
                            s.record(&here, json, false, emit)?;
                        } else {
                            s.record(&here, json, false, &mut |_: &[u8]| Ok(()))?;
                        }
                    } else if seq <= acked {
                        s.acknowledged_in_stored_chunks += 1;
                    } else {
                        s.records += 1;
                        s.record(&here, json, true, emit)?;
                    }
                }
            }
            K_CHECKPOINT => s
                .checkpoints
                .push(String::from_utf8_lossy(&k[1..]).into_owned()),
            K_META => match &k[..] {
                META_NEXT_SEQ => s.stored_next_seq = u64_meta(s, "m:next_seq", &v),
                META_ACKED | META_PROBE => {}
                META_LOSS => match serde_json::from_slice::<PendingLoss>(&v) {
                    Ok(loss) => s.pending_loss = Some(loss),
                    Err(e) => {
                        s.problem("m:loss", format!("pending loss does not parse: {e}"), false)
                    }
                },
                other => s.problem(
                    format!("m:{}", String::from_utf8_lossy(&other[1..])),
                    "unknown meta key",
                    false,
                ),
            },
            _ => s.problem(
                hex::encode(&k),
                format!("unknown key kind 0x{kind:02x}"),
                false,
            ),
        }
    }
    Ok(())
}

/// `inspect` as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub path: String,
    pub quarantined: bool,
    /// `sled-copy` (sled opened a private copy) or `salvage` (sled cannot open it).
    pub read_via: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sled_error: Option<String>,
    pub bytes_on_disk: u64,
    pub next_seq: Option<u64>,
    #[serde(flatten)]
    pub scan: Scan,
    /// Directories the agent moved aside next to this one.
    pub quarantined_siblings: Vec<String>,
}

fn siblings(path: &Path) -> Vec<String> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let prefix = format!("{}.quarantined-", name.to_string_lossy());
    let mut out: Vec<String> = std::fs::read_dir(if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    })
    .map(|rd| {
        rd.filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path().display().to_string())
            .collect()
    })
    .unwrap_or_default();
    out.sort();
    out
}

fn inspect(store: &Store, json: bool) -> anyhow::Result<bool> {
    let scan = scan(store, Select::ALL, &mut |_: &[u8]| Ok(()))?;
    let (read_via, sled_error) = match &store.view {
        View::Sled(_) => ("sled-copy", None),
        View::Salvage { sled_error, .. } => ("salvage", Some(sled_error.clone())),
    };
    let i = Inspection {
        path: store.path.display().to_string(),
        quarantined: store.quarantined,
        read_via,
        sled_error,
        bytes_on_disk: store.bytes_on_disk,
        next_seq: scan.next_seq(),
        scan,
        quarantined_siblings: siblings(&store.path),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&i)?);
    } else {
        print!("{}", human(&i));
    }
    Ok(true)
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".to_string(), |v| v.to_string())
}

fn human(i: &Inspection) -> String {
    let s = &i.scan;
    let mut o = String::new();
    let mut line = |k: &str, v: String| o.push_str(&format!("{k:<14}{v}\n"));
    line(
        "buffer",
        format!(
            "{}{}",
            i.path,
            if i.quarantined { " (quarantined)" } else { "" }
        ),
    );
    line(
        "read via",
        match &i.sled_error {
            None => "sled, on a private copy".into(),
            Some(e) => format!("salvage of the raw files (sled cannot open it: {e})"),
        },
    );
    let formats: Vec<String> = s.formats.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    line(
        "format",
        if formats.is_empty() {
            "-".into()
        } else {
            formats.join(", ")
        },
    );
    line(
        "chunks",
        format!("{} queued, {} set aside", s.chunks, s.set_aside_chunks),
    );
    line(
        "records",
        format!(
            "{} queued, {} set aside ({} acknowledged still stored)",
            s.records, s.set_aside_records, s.acknowledged_in_stored_chunks
        ),
    );
    line(
        "sequence",
        if i.sled_error.is_some() {
            "not known (salvaged; records are ordered by append time)".into()
        } else {
            format!(
                "first {}, last {}, next {}, acknowledged up to {}",
                opt(&s.first_seq),
                opt(&s.last_seq),
                opt(&i.next_seq),
                opt(&s.acknowledged_up_to)
            )
        },
    );
    line(
        "eventTime",
        format!(
            "oldest {}, newest {}",
            opt(&s.oldest_event_time),
            opt(&s.newest_event_time)
        ),
    );
    line(
        "appended",
        format!(
            "oldest {}, newest {}",
            opt(&s.oldest_appended),
            opt(&s.newest_appended)
        ),
    );
    line(
        "bytes",
        format!("{} on disk, {} in values", i.bytes_on_disk, s.value_bytes),
    );
    line(
        "checkpoints",
        if s.checkpoints.is_empty() {
            "-".into()
        } else {
            s.checkpoints.join(", ")
        },
    );
    line(
        "pending loss",
        match &s.pending_loss {
            Some(l) => serde_json::to_string(l).unwrap_or_default(),
            None => "none".into(),
        },
    );
    let agent: Vec<String> = s
        .agent_records
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    line(
        "agent records",
        if agent.is_empty() {
            "none".into()
        } else {
            agent.join(", ")
        },
    );
    line(
        "damage",
        if s.problems.is_empty() {
            "none found".into()
        } else {
            format!(
                "{} problems, {} chunks unreadable ({} records): run `buffer verify`",
                s.problems.len(),
                s.damaged_chunks,
                s.damaged_records
            )
        },
    );
    for q in &i.quarantined_siblings {
        line("moved aside", format!("{q} (inspect with --path)"));
    }
    o
}

fn verify(store: &Store) -> anyhow::Result<bool> {
    let scan = scan(store, Select::ALL, &mut |_: &[u8]| Ok(()))?;
    for p in &scan.problems {
        println!("{}: {}", p.at, p.what);
    }
    let summary = format!(
        "{}: {} chunks, {} records queued, {} set aside",
        store.path.display(),
        scan.chunks,
        scan.records,
        scan.set_aside_records
    );
    if scan.problems.is_empty() {
        println!("{summary}: sound");
        Ok(true)
    } else {
        println!("{summary}: {} problems", scan.problems.len());
        Ok(false)
    }
}

fn export(store: &Store, output: &Path, select: Select) -> anyhow::Result<bool> {
    if select.from_seq.is_some() && matches!(store.view, View::Salvage { .. }) {
        anyhow::bail!(
            "{}: sled cannot open it, so its records were salvaged without their sequence \
             numbers: export it without --from-seq",
            store.path.display()
        );
    }
    let mut out: Box<dyn Write> = if output == Path::new("-") {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        let f = std::fs::File::create(output)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", output.display()))?;
        Box::new(std::io::BufWriter::new(f))
    };
    let mut written = 0u64;
    let scan = scan(store, select, &mut |json| {
        written += 1;
        out.write_all(json)?;
        out.write_all(b"\n")
    })?;
    out.flush()?;
    drop(out);
    let mut skipped = false;
    for p in &scan.problems {
        eprintln!(
            "{}: {}: {}",
            if p.damage { "skipped" } else { "warning" },
            p.at,
            p.what
        );
        skipped |= p.damage;
    }
    let salvaged = matches!(store.view, View::Salvage { .. });
    eprintln!(
        "exported {written} records; skipped {} unreadable chunks ({} records) and {} records \
         that are not JSON",
        scan.damaged_chunks, scan.damaged_records, scan.unreadable_records
    );
    Ok(!skipped && !salvaged)
}

#[cfg(test)]
mod tests {
    use super::store::StoreError;
    use super::*;
    use crate::buffer::testutil::{id, open_with, while_locked};
    use crate::buffer::{Buffer, BufferOptions};

    /// A buffer that went through acknowledgement and set-aside (chunks rewritten, a side-tree
    /// key, a loss report appended) is sound, and the next sequence number the scan computes
    /// is the one the agent assigns when it opens the buffer again.
    #[test]
    fn scan_agrees_with_the_buffer_after_ack_and_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buffer");
        let (b, _) = Buffer::open(&path, BufferOptions::default(), id()).unwrap();
        for n in [4u64, 3, 2] {
            let records: Vec<Record> = (0..n)
                .map(|i| id().agent_record("TestEvent", serde_json::json!({ "i": i })))
                .collect();
            b.try_append(&records, None).unwrap();
        }
        let entries = b.read_from(0, 100, 1 << 20).unwrap();
        b.ack_up_to(entries[1].seq).unwrap();
        assert!(b.set_aside(entries[5].seq, "InvalidData", "test").unwrap());
        let depth = b.depth();
        drop(b);

        let store = store_of(&path);
        let mut exported = 0;
        let select = Select {
            set_aside: false,
            from_seq: None,
        };
        let s = scan(&store, select, &mut |_: &[u8]| {
            exported += 1;
            Ok(())
        })
        .unwrap();
        drop(store);
        assert!(s.problems.is_empty(), "{:?}", s.problems);
        assert_eq!(s.records, depth);
        assert_eq!(exported, depth);
        assert_eq!(s.set_aside_records, 1);
        assert_eq!(s.agent_records.get("RecordsRejected"), Some(&1));
        assert_eq!(s.agent_records.get("TestEvent"), Some(&6));
        let (b, _) = open_with(&path, BufferOptions::default());
        assert_eq!(s.next_seq(), Some(b.status().next_seq));
    }

    /// Opens the store a test has just dropped its `Buffer` on (sled's I/O thread can hold the
    /// lock a moment longer: `testutil::while_locked`).
    fn store_of(path: &std::path::Path) -> Store {
        while_locked(
            || Store::open(path, &ProgressBar::hidden()),
            |e| matches!(e, StoreError::InUse { .. }),
        )
        .unwrap()
    }

    fn rkey(kind: u8, seq: u64) -> Vec<u8> {
        let mut k = vec![kind];
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    /// Each structural invariant `verify` checks is reported at its key when broken: an
    /// overlapping chunk, a fully acknowledged chunk still stored, a side-tree record also
    /// queued, an unknown key kind and meta key, an unreadable pending loss, a bad chunk key.
    #[test]
    fn broken_invariants_are_named_at_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buffer");
        let (b, _) = Buffer::open(&path, BufferOptions::default(), id()).unwrap();
        let mut firsts = Vec::new();
        for n in [3u64, 3, 3] {
            let records: Vec<Record> = (0..n)
                .map(|i| id().agent_record("TestEvent", serde_json::json!({ "i": i })))
                .collect();
            match b.try_append(&records, None).unwrap() {
                crate::buffer::Appended::Stored(Some((first, _))) => firsts.push(first),
                other => panic!("{other:?}"),
            }
        }
        let t = b.raw_tree();
        let first_chunk = t.get(rkey(b'r', firsts[0])).unwrap().unwrap();
        b.ack_up_to(firsts[0] + 2).unwrap();
        // Put the acknowledged chunk back, and a copy overlapping the second chunk.
        t.insert(rkey(b'r', firsts[0]), first_chunk.clone())
            .unwrap();
        t.insert(rkey(b'r', firsts[1] + 1), first_chunk.clone())
            .unwrap();
        t.insert(rkey(b'x', firsts[2] + 1), first_chunk).unwrap();
        t.insert(b"mfoo", &b"1"[..]).unwrap();
        t.insert(b"mloss", &b"{not json"[..]).unwrap();
        t.insert(b"zzz", &b"1"[..]).unwrap();
        t.insert(b"rshort", &b"1"[..]).unwrap();
        b.flush().unwrap();
        drop(b);

        let store = store_of(&path);
        let s = scan(&store, Select::ALL, &mut |_: &[u8]| Ok(())).unwrap();
        let found: Vec<String> = s
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.at, p.what))
            .collect();
        let expect = [
            format!("r:{}: entirely acknowledged", firsts[0]),
            format!(
                "r:{}: records {}..={} overlap",
                firsts[1] + 1,
                firsts[1] + 1,
                firsts[1] + 3
            ),
            // ... and the next chunk overlaps the copy in turn.
            format!(
                "r:{}: records {}..={} overlap",
                firsts[2],
                firsts[2],
                firsts[2] + 2
            ),
            format!("x:{}: set aside but also in a queued chunk", firsts[2] + 1),
            format!("x:{}: a side-tree value holds 3 records", firsts[2] + 1),
            "m:foo: unknown meta key".to_string(),
            "m:loss: pending loss does not parse".to_string(),
            "7a7a7a: unknown key kind 0x7a".to_string(),
            "r:73686f7274: key of 6 bytes is not a chunk key".to_string(),
        ];
        for e in &expect {
            assert!(
                found.iter().any(|f| f.starts_with(e.as_str())),
                "{e} not in {found:#?}"
            );
        }
        assert_eq!(found.len(), expect.len(), "{found:#?}");
    }
}
