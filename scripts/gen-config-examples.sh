#!/usr/bin/env bash
# Regenerates packaging/config/{collector,agent}.example.toml from the config types (their doc
# comments and Default values). tests/tests/packaging.rs fails when these are out of date.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
cargo build --quiet -p groundtrail-collector -p groundtrail-agent --bins
mkdir -p packaging/config
TARGET=${CARGO_TARGET_DIR:-target}  # where cargo builds (relative to the root, as cargo takes it)
"$TARGET/debug/groundtrail-collector" config --example > packaging/config/collector.example.toml
"$TARGET/debug/groundtrail-agent" config --example > packaging/config/agent.example.toml
echo "wrote packaging/config/collector.example.toml packaging/config/agent.example.toml"
