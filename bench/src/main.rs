//! `groundtrail-bench`: see BENCHMARKS.md.

use std::path::PathBuf;

use clap::Parser;

/// Benchmarks of the real groundtrail binaries: prints a table of figures beside their limits
/// and goals and writes them to a JSON file.
#[derive(Parser, Debug)]
#[command(name = "groundtrail-bench", version)]
struct Args {
    /// Small sizes and short windows (a smoke test of the benchmark itself, not figures).
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (comma-separated): collector, agent-buffer, agent-e2e,
    /// latency, footprint, fanin, history, detection, cluster.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "target/bench/results.json")]
    json: PathBuf,
    /// Directory of groundtrail-collector and groundtrail-agent (default: this executable's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Parent of the scratch directory (journals, buffers, trails); default the system temp
    /// directory. Its disk is what the fsync-bound figures measure.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Seed of the record generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keep the scratch directory (logs, trails) after the run.
    #[arg(long)]
    keep: bool,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(groundtrail_bench::run(groundtrail_bench::Options {
        quick: a.quick,
        only: a.only,
        json: a.json,
        bin_dir: a.bin_dir,
        work_dir: a.work_dir,
        seed: a.seed,
        keep: a.keep,
    }))
}
