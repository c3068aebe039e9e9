#!/usr/bin/env bash
# The benchmark suite end to end: builds the release binaries (collector, agent, bench) and runs
# `groundtrail-bench`, which drives the real binaries and prints a table of figures beside their
# limits and goals (also written to target/bench/results.json). See BENCHMARKS.md.
#
#   scripts/bench.sh                      # every scenario (a few minutes on 2 cores)
#   scripts/bench.sh --quick              # small sizes: checks the benchmark itself works
#   scripts/bench.sh --only latency,fanin # some scenarios
#   scripts/bench.sh --json /tmp/r.json   # elsewhere
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

t0=$(date +%s)
cargo build --release -p groundtrail-collector -p groundtrail-agent -p groundtrail-bench --bins
t1=$(date +%s)
echo "build took $((t1 - t0)) s" >&2
status=0
# Where cargo put it: CARGO_TARGET_DIR when set (the bench finds the other two binaries beside
# itself).
"${CARGO_TARGET_DIR:-target}/release/groundtrail-bench" "$@" || status=$?
t2=$(date +%s)
echo "build took $((t1 - t0)) s, benchmark run took $((t2 - t1)) s" >&2
exit "$status"
