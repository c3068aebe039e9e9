#!/usr/bin/env bash
# Groundtrail in two minutes, on this host, as any user: builds the binaries, starts a collector
# (loopback, a local directory trail, a generated signing key) and an agent, sends application
# events with `groundtrail-agent put-audit-events`, shows the records arriving in the trail and
# the alert a detection rule raises on them (`groundtrail-collector alerts list`), stops both
# cleanly (which delivers the last log file and signs a final digest) and checks the trail with
# `groundtrail-collector validate-logs`, the port of `aws cloudtrail validate-logs`.
#
#   scripts/quickstart.sh              # release build (the first one takes a few minutes)
#   QUICKSTART_PROFILE=debug scripts/quickstart.sh
#   QUICKSTART_BIN_DIR=target/debug QUICKSTART_DIR=/tmp/x scripts/quickstart.sh   # no build
#                                                     (what tests/tests/packaging.rs runs)
#
# Everything lives in groundtrail-data/quickstart/ (replaced on each run): the two configs it
# generates, the collector's journal and key, the agent's buffer, the trail, and both logs.
# Host sources that this user cannot read (auth log, audit log, /etc/shadow...) are reported in
# the agent's log and skipped, not fatal.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PROFILE=${QUICKSTART_PROFILE:-release}
DIR=${QUICKSTART_DIR:-"$ROOT/groundtrail-data/quickstart"}
ACCOUNT=123456789012
REGION=us-east-1
TRAIL_ARN="arn:aws:cloudtrail:$REGION:$ACCOUNT:trail/quickstart"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "quickstart: $*" >&2; exit 1; }

if [ -n "${QUICKSTART_BIN_DIR:-}" ]; then
  BIN=$QUICKSTART_BIN_DIR
else
say "building groundtrail-collector and groundtrail-agent ($PROFILE)"
TARGET=${CARGO_TARGET_DIR:-target}; [[ $TARGET = /* ]] || TARGET="$ROOT/$TARGET"  # where cargo builds
case "$PROFILE" in
  release) cargo build --release -p groundtrail-collector -p groundtrail-agent --bins
           BIN="$TARGET/release" ;;
  debug|dev) cargo build -p groundtrail-collector -p groundtrail-agent --bins
           BIN="$TARGET/debug" ;;
  *) die "QUICKSTART_PROFILE is release or debug" ;;
esac
fi
COLLECTOR="$BIN/groundtrail-collector"
AGENT="$BIN/groundtrail-agent"

# A free loopback port.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 7480)

# Replaced on each run; a directory given in QUICKSTART_DIR must be empty or absent.
if [ -z "${QUICKSTART_DIR:-}" ]; then
  rm -rf -- "$DIR"
elif [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
  die "QUICKSTART_DIR=$DIR is not empty"
fi
mkdir -p "$DIR"
START=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# Short intervals so that it finishes quickly; everything else is the embedded default.
cat >"$DIR/collector.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
shutdown_grace = "10s"

[journal]
path = "$DIR/collector/journal"

[signing]
key_file = "$DIR/collector/signing-key.pem"   # generated on first start (mode 0600)

[trail]
name = "quickstart"
account_id = "$ACCOUNT"
log_file_interval = "3s"
digest_interval = "1h"

[[destinations]]
type = "local"
path = "$DIR/trail"

# Detection: the built-in packs, plus the rule in rules/refunds.yaml (below).
[detection]
rules_dir = "$DIR/rules"

# The quickstart reads its own trail with the AWS CLI and any credentials. Leave this off
# (the default) anywhere a proxy, tunnel or sidecar makes other clients loopback peers.
[api]
allow_unsigned_loopback_reads = true
EOF
mkdir -p "$DIR/rules"
cat >"$DIR/rules/refunds.yaml" <<'EOF'
# A CloudWatch Logs filter pattern with an alarm's threshold: three refunds by one user
# within five minutes raise one alert. See docs/detection.md for the rule languages.
rules:
  - id: refund-burst
    title: Three refunds by one user within five minutes
    severity: medium
    filter_pattern: '{ ($.eventSource = "billing.example.com") && ($.eventName = "IssueRefund") }'
    threshold: { count: 3, period: 5m, group_by: $.userIdentity.principalId }
EOF
cat >"$DIR/agent.toml" <<EOF
[agent]
account_id = "$ACCOUNT"
region = "$REGION"
data_dir = "$DIR/agent"

[collector]
urls = ["http://127.0.0.1:$PORT"]

[shipper]
batch_max_wait_ms = 200

# Only what happens from now on, not the whole history of the host's logs.
[sources.auth_log]
start_at_end = true
[sources.auditd]
start_at_end = true
EOF
"$COLLECTOR" check-config --config "$DIR/collector.toml" >/dev/null
"$AGENT" check-config --config "$DIR/agent.toml" >/dev/null

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

say "starting the collector on 127.0.0.1:$PORT (log: $DIR/collector.log)"
"$COLLECTOR" serve --config "$DIR/collector.toml" >"$DIR/collector.log" 2>&1 &
COLLECTOR_PID=$!
PIDS+=("$COLLECTOR_PID")
for _ in $(seq 1 100); do
  grep -q "collector listening" "$DIR/collector.log" && break
  kill -0 "$COLLECTOR_PID" 2>/dev/null || { cat "$DIR/collector.log"; die "the collector did not start"; }
  sleep 0.1
done
grep -q "collector listening" "$DIR/collector.log" || die "the collector is not listening"
grep -m1 "signing key" "$DIR/collector.log" | sed 's/^/    /' || true

say "starting the agent (log: $DIR/agent.log)"
"$AGENT" run --config "$DIR/agent.toml" >"$DIR/agent.log" 2>&1 &
AGENT_PID=$!
PIDS+=("$AGENT_PID")
for _ in $(seq 1 100); do
  [ -S "$DIR/agent/app-events.sock" ] && break
  kill -0 "$AGENT_PID" 2>/dev/null || { cat "$DIR/agent.log"; die "the agent did not start"; }
  sleep 0.1
done
[ -S "$DIR/agent/app-events.sock" ] || die "the agent's socket did not appear"
# Sources this user cannot read are reported, not fatal.
if grep -qiE "permission denied|cannot (read|open)" "$DIR/agent.log"; then
  echo "    (some host sources are not readable by $(id -un); the agent skips them:)"
  grep -iE "permission denied|cannot (read|open)" "$DIR/agent.log" | head -5 | cut -c1-200 | sed 's/^/    /'
fi

say "sending three application events with put-audit-events"
NOW=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EVENTS=""
for i in 1 2 3; do
  DATA="{\"version\":\"1.0\",\"userIdentity\":{\"type\":\"AppUser\",\"principalId\":\"alice\"},\"eventSource\":\"billing.example.com\",\"eventName\":\"IssueRefund\",\"eventTime\":\"$NOW\",\"UID\":\"quickstart-$i\",\"requestParameters\":{\"ticket\":$i},\"recipientAccountId\":\"$ACCOUNT\"}"
  DATA_JSON=$(printf '%s' "$DATA" | sed 's/\\/\\\\/g; s/"/\\"/g')
  EVENTS="$EVENTS${EVENTS:+,}{\"id\":\"quickstart-$i\",\"eventData\":\"$DATA_JSON\"}"
done
"$AGENT" put-audit-events --config "$DIR/agent.toml" --audit-events "[$EVENTS]" | sed 's/^/    /'

say "waiting for the records to arrive in the trail ($DIR/trail)"
show_records() {
  python3 - "$DIR/trail" <<'PY' 2>/dev/null || find "$DIR/trail" -name '*.json.gz' | sed 's/^/    /'
import collections, gzip, json, pathlib, sys
counts = collections.Counter()
for f in sorted(pathlib.Path(sys.argv[1]).rglob("*_CloudTrail_*.json.gz")):
    records = json.loads(gzip.decompress(f.read_bytes()))["Records"]
    print("    %s: %d records" % (f.name, len(records)))
    for r in records:
        counts[(r["eventSource"], r["eventName"])] += 1
        # The application events in full; the host's (packages, files, logins) are counted.
        if not r["eventSource"].endswith(".onprem.internal"):
            print("      {eventTime}  {eventSource} {eventName}  user={u}  eventID={eventID}".format(
                u=r.get("userIdentity", {}).get("principalId"), **r))
for (src, name), n in sorted(counts.items()):
    print("    %5d  %s %s" % (n, src, name))
PY
}
found=0
for _ in $(seq 1 60); do
  n=$(find "$DIR/trail" -name '*_CloudTrail_*.json.gz' 2>/dev/null | wc -l)
  if [ "$n" -gt 0 ] && show_records | grep -q "IssueRefund"; then found=1; break; fi
  sleep 0.5
done
[ "$found" = 1 ] || { tail -20 "$DIR/collector.log"; die "no log file with the events appeared"; }
show_records

say "alerts raised by the detection rules (groundtrail-collector alerts list)"
alerted=0
for _ in $(seq 1 40); do
  "$COLLECTOR" alerts list --endpoint-url "http://127.0.0.1:$PORT" >"$DIR/alerts.json" 2>/dev/null \
    && grep -q '"refund-burst' "$DIR/alerts.json" && { alerted=1; break; }
  sleep 0.25
done
[ "$alerted" = 1 ] || { tail -20 "$DIR/collector.log"; die "the refund-burst rule raised no alert"; }
python3 - "$DIR/alerts.json" <<'PY' 2>/dev/null || sed 's/^/    /' "$DIR/alerts.json"
import json, sys
by_rule = {}
for a in reversed(json.load(open(sys.argv[1]))["Alerts"]):  # oldest first
    by_rule.setdefault(a["rule_id"], []).append(a)
for rule, alerts in by_rule.items():
    print("    %4d x [%s] %s: %s" % (len(alerts), alerts[0]["severity"], rule, alerts[0]["summary"]))
PY

say "the agent's status"
"$AGENT" status --config "$DIR/agent.toml" >"$DIR/status.json"
python3 - "$DIR/status.json" <<'PY' 2>/dev/null || sed 's/^/    /' "$DIR/status.json"
import json, sys
s = json.load(open(sys.argv[1]))
print("    host %s, buffer depth %s, shipped %s records in %s batches, collector reachable: %s"
      % (s["agent"]["host"], s["buffer"]["depth"], s["shipped"]["records"],
         s["shipped"]["batches"], s["collector"]["reachable"]))
PY

say "stopping the agent, then the collector (SIGTERM: deliver, sign a final digest)"
kill -TERM "$AGENT_PID"
wait "$AGENT_PID" || die "the agent did not stop cleanly"
kill -TERM "$COLLECTOR_PID"
wait "$COLLECTOR_PID" || die "the collector did not stop cleanly"
PIDS=()
find "$DIR/trail" -name '*.json.gz' | sed "s|^$DIR/trail/|    |" | sort

say "validate-logs (same checks and output as aws cloudtrail validate-logs)"
"$COLLECTOR" validate-logs --config "$DIR/collector.toml" --trail-arn "$TRAIL_ARN" \
  --start-time "$START" --verbose
say "done: a validated CloudTrail trail in $DIR/trail"
echo "    Next: packaging/ (systemd units, .deb, containers), packaging/config/*.example.toml"
