//! groundtrail-bench: a realistic CloudTrail record generator, in-process micro benchmarks, and
//! end-to-end scenarios that drive the real `groundtrail-collector` and `groundtrail-agent`
//! release binaries (real TLS, real sled on disk, a local-directory destination) and report
//! every figure beside its limit or the goal. See BENCHMARKS.md.

#![recursion_limit = "512"]

pub mod dedup;
pub mod generator;
pub mod harness;
pub mod limits;
pub mod proc;
pub mod report;
pub mod scenarios;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use generator::Template;
use harness::{Bins, Pki};
use report::Report;

/// The scenarios, in the order they run.
pub const SCENARIOS: [&str; 9] = [
    "collector",
    "agent-buffer",
    "agent-e2e",
    "latency",
    "footprint",
    "fanin",
    "history",
    "detection",
    "cluster",
];

/// Command-line settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub only: Vec<String>,
    pub json: PathBuf,
    pub bin_dir: Option<PathBuf>,
    pub work_dir: Option<PathBuf>,
    pub seed: u64,
    pub keep: bool,
}

/// What every scenario gets.
pub struct Ctx {
    pub bins: Bins,
    pub quick: bool,
    pub seed: u64,
    pub work: PathBuf,
    pub pki: Pki,
    pub templates: Arc<Vec<Template>>,
    pub report: Report,
    progress: indicatif::ProgressBar,
    started: Instant,
}

impl Ctx {
    /// Shows what runs now: the progress line, or a plain line when stderr is not a terminal.
    pub fn step(&self, msg: impl Into<String>) {
        let msg = msg.into();
        if self.progress.is_hidden() {
            eprintln!(
                "[groundtrail-bench {:>6.1}s] {msg}",
                self.started.elapsed().as_secs_f64()
            );
        }
        self.progress.set_message(msg);
    }

    /// A fresh directory under the work directory.
    pub fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let d = self.work.join(name);
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// `full` normally, `quick` under `--quick`.
    pub fn size<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }

    pub fn secs(&self, full: f64, quick: f64) -> Duration {
        Duration::from_secs_f64(self.size(full, quick))
    }
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0);
    serde_json::json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_mb": mem,
        "kernel": read_trim("/proc/sys/kernel/osrelease"),
    })
}

pub fn loadavg() -> String {
    read_trim("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the selected scenarios, prints the table and writes the JSON file.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let load_start = loadavg();
    let bins = harness::find_bins(opts.bin_dir.as_deref())?;
    if opts.quick {
        harness::REQUEST_TIMEOUT_SECS.store(15, std::sync::atomic::Ordering::Relaxed);
    }
    for o in &opts.only {
        if !SCENARIOS.contains(&o.as_str()) {
            anyhow::bail!("unknown scenario {o:?}; one of {}", SCENARIOS.join(", "));
        }
    }
    let selected: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| opts.only.is_empty() || opts.only.iter().any(|o| o == s))
        .collect();
    let work_parent = opts.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&work_parent)?;
    let work = tempfile::Builder::new()
        .prefix("groundtrail-bench-")
        .tempdir_in(&work_parent)?;

    let progress = indicatif::ProgressBar::new(selected.len() as u64);
    progress.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:20} {pos}/{len} {msg}",
        )
        .expect("template"),
    );
    progress.enable_steady_tick(Duration::from_millis(250));

    let n_templates = if opts.quick { 2_000 } else { 20_000 };
    let now = chrono::Utc::now().timestamp();
    let templates = generator::generate(opts.seed, n_templates, now);
    let sizes = generator::SizeSummary::of(&templates);
    let pki = Pki::init(&bins, &work.path().join("pki"))?;
    let mut ctx = Ctx {
        bins,
        quick: opts.quick,
        seed: opts.seed,
        work: work.path().to_path_buf(),
        pki,
        templates: Arc::new(templates),
        report: Report::default(),
        progress,
        started,
    };
    for l in sizes.lines() {
        ctx.report.note(l);
    }

    for s in &selected {
        ctx.step(format!("{s}: starting"));
        let r = match *s {
            "collector" => scenarios::collector::run(&mut ctx).await,
            "agent-buffer" => scenarios::agent_buffer::run(&mut ctx).await,
            "agent-e2e" => scenarios::agent_e2e::run(&mut ctx).await,
            "latency" => scenarios::latency::run(&mut ctx).await,
            "footprint" => scenarios::footprint::run(&mut ctx).await,
            "fanin" => scenarios::fanin::run(&mut ctx).await,
            "history" => scenarios::history::run(&mut ctx).await,
            "detection" => scenarios::detection::run(&mut ctx).await,
            "cluster" => scenarios::cluster::run(&mut ctx).await,
            _ => unreachable!(),
        };
        if let Err(e) = r {
            let why = format!("{e:#}");
            ctx.report.note(format!("{s}: FAILED: {why}"));
            scenarios::mark_failed(&mut ctx.report, s, &why);
        }
        ctx.progress.inc(1);
    }
    ctx.progress.finish_and_clear();

    let took = started.elapsed().as_secs_f64();
    let load_end = loadavg();
    println!(
        "groundtrail-bench{}",
        if opts.quick { " --quick" } else { "" }
    );
    for n in &ctx.report.notes {
        println!("  {n}");
    }
    println!();
    print!("{}", ctx.report.table());
    println!();
    println!(
        "run took {took:.0} s; load average (1/5/15 min) at start {load_start}, at end {load_end}; results in {}",
        opts.json.display()
    );
    let meta = serde_json::json!({
        "started": started_at.to_rfc3339(),
        "seconds": took,
        "quick": opts.quick,
        "scenarios": selected,
        "seed": opts.seed,
        "machine": machine(),
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "collector_bin": ctx.bins.collector.display().to_string(),
        "agent_bin": ctx.bins.agent.display().to_string(),
        "work_dir": work_parent.display().to_string(),
    });
    ctx.report
        .extra
        .insert("generator".into(), serde_json::to_value(&sizes)?);
    ctx.report.write_json(&opts.json, meta)?;
    if opts.keep {
        let kept = work.keep();
        println!("work directory kept: {}", kept.display());
    }
    Ok(())
}
