#!/usr/bin/env bash
# Starts a hub and three agents on this machine on embedded defaults, shows
# telemetry, chat, a job and a command flowing, then keeps the fleet running
# (tailing telemetry) until Ctrl-C. Everything lives in a temporary
# directory and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins --quiet
bin=$PWD/target/debug
work=$(mktemp -d "${TMPDIR:-/tmp}/fleetmq-demo.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped; logs and data were in $work"
}
trap cleanup EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

export FLEETMQ_DATA_DIR=$work/hub
export FLEETMQ_LOG=${FLEETMQ_LOG:-info}

# OS-chosen ports so the demo never collides with anything; the hub prints
# what it got as one JSON line and writes it to $FLEETMQ_DATA_DIR/endpoints.json.
"$bin/fleetmq-hub" run --bind 127.0.0.1:* >"$work/hub.out" 2>"$work/hub.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/hub.out" ] && break; sleep 0.05; done
hub=$(sed -n 's/.*"telemetry":"\([^"]*\)".*/\1/p' "$work/hub.out")
echo "hub listening; agents connect to $hub"

# CURVE by default: the hub made its key pair at start (hub.key, hub.pub in
# its data directory); each device gets a key pair and is enrolled on the
# hub's allow list before it connects.
enrol() {
  "$bin/fleetmq-agent" keygen --data-dir "$work/$1" --device-id "$1" >/dev/null
  "$bin/fleetmq-hub" allow "$1" "$work/$1/agent.pub"
}
for dev in pi-kitchen:north pi-garage:north pi-shed:south; do
  id=${dev%%:*}
  group=${dev##*:}
  enrol "$id"
  "$bin/fleetmq-agent" run --hub "$hub" --hub-key "$FLEETMQ_DATA_DIR/hub.pub" \
    --device-id "$id" --group "$group" --data-dir "$work/$id" 2>"$work/$id.log" &
  pids+=($!)
done
for _ in $(seq 100); do
  [ "$("$bin/fleetmq-hub" devices --json | grep -o '"listening":true' | wc -l)" -eq 3 ] && break
  sleep 0.1
done

for _ in $(seq 100); do
  [ -n "$("$bin/fleetmq-hub" telemetry --limit 1)" ] && break
  sleep 0.1
done

step "fleetmq-hub devices"
"$bin/fleetmq-hub" devices

step "fleetmq-hub telemetry --limit 6"
"$bin/fleetmq-hub" telemetry --limit 6

step "echo 'hello from the porch' | fleetmq-agent chat --device-id pi-porch"
enrol pi-porch >/dev/null
echo "hello from the porch" | "$bin/fleetmq-agent" chat --hub "$hub" --device-id pi-porch \
  --hub-key "$FLEETMQ_DATA_DIR/hub.pub" --data-dir "$work/pi-porch" 2>"$work/pi-porch.log"

step "fleetmq-hub chat"
"$bin/fleetmq-hub" chat

step "fleetmq-hub job submit --wait echo hello from a job"
"$bin/fleetmq-hub" job submit --wait echo hello from a job

step "fleetmq-hub command pi-kitchen ping"
"$bin/fleetmq-hub" command pi-kitchen ping

step "fleetmq-hub command pi-garage status"
"$bin/fleetmq-hub" command pi-garage status

step "fleetmq-hub broadcast --group north 'maintenance at noon'"
"$bin/fleetmq-hub" broadcast --group north "maintenance at noon"

step "fleetmq-hub stats"
"$bin/fleetmq-hub" stats

if [ -t 0 ]; then
  echo
  echo "The fleet keeps running. In another shell: export FLEETMQ_DATA_DIR=$FLEETMQ_DATA_DIR"
  echo "and try fleetmq-hub devices / command / job / broadcast (target/debug/fleetmq-hub)."
  step "fleetmq-hub telemetry --follow   (Ctrl-C to stop the fleet)"
  "$bin/fleetmq-hub" telemetry --follow || true
fi
