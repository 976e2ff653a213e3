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
# Three agents on one machine: each takes its StatsD/Influx UDP port from the
# OS (one device would use 127.0.0.1:8125) and reads host metrics every 2 s.
printf '[host]\ninterval_ms = 2000\n[ingest]\nudp = "127.0.0.1:0"\n' >"$work/agent.toml"
for dev in pi-kitchen:north pi-garage:north pi-shed:south; do
  id=${dev%%:*}
  group=${dev##*:}
  enrol "$id"
  "$bin/fleetmq-agent" run --config "$work/agent.toml" --hub "$hub" --hub-key "$FLEETMQ_DATA_DIR/hub.pub" \
    --device-id "$id" --group "$group" --data-dir "$work/$id" 2>"$work/$id.log" &
  pids+=($!)
done
for _ in $(seq 100); do
  [ "$("$bin/fleetmq-hub" devices --json | grep -o '"listening":true' | wc -l)" -eq 3 ] && break
  sleep 0.1
done

for _ in $(seq 100); do
  [ -n "$("$bin/fleetmq-hub" telemetry --last 1)" ] && break
  sleep 0.1
done

step "fleetmq-hub devices"
"$bin/fleetmq-hub" devices

step "fleetmq-hub telemetry --last 6"
"$bin/fleetmq-hub" telemetry --last 6

udp=$("$bin/fleetmq-agent" status --data-dir "$work/pi-kitchen" | sed -n 's/.*"udp":"\([^"]*\)".*/\1/p')
step "echo 'door.opened:1|c|#room:hall' > /dev/udp/${udp%:*}/${udp##*:}   # StatsD to pi-kitchen"
echo 'door.opened:1|c|#room:hall' >"/dev/udp/${udp%:*}/${udp##*:}"
step "fleetmq-agent send disk.free_bytes=123456 mount=/data   # on pi-kitchen, tagged"
"$bin/fleetmq-agent" send --data-dir "$work/pi-kitchen" disk.free_bytes=123456 mount=/data
for _ in $(seq 100); do
  "$bin/fleetmq-hub" telemetry --device pi-kitchen --name 'door.opened{room=hall}' --last 1 | grep -q . && break
  sleep 0.1
done
step "fleetmq-hub telemetry --device pi-kitchen --name 'door.opened{room=hall}'"
"$bin/fleetmq-hub" telemetry --device pi-kitchen --name 'door.opened{room=hall}'
step "fleetmq-hub telemetry --device pi-kitchen --name host.load1 --last 2"
"$bin/fleetmq-hub" telemetry --device pi-kitchen --name host.load1 --last 2

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

step "fleetmq-hub job submit --group north --wait echo once on each"
"$bin/fleetmq-hub" job submit --group north --wait echo once on each

step "fleetmq-hub command --all ping"
"$bin/fleetmq-hub" command --all ping || true

step "fleetmq-hub config set --group north host.interval_ms=5000 app.greeting=hello"
"$bin/fleetmq-hub" config set --group north host.interval_ms=5000 app.greeting=hello
for _ in $(seq 50); do
  "$bin/fleetmq-agent" config get app.greeting --data-dir "$work/pi-kitchen" >/dev/null 2>&1 && break
  sleep 0.1
done
step "fleetmq-hub config status"
"$bin/fleetmq-hub" config status
step "fleetmq-agent config get app.greeting   (on pi-kitchen)"
"$bin/fleetmq-agent" config get app.greeting --data-dir "$work/pi-kitchen" || true

step "fleetmq-hub stats"
"$bin/fleetmq-hub" stats

if [ -t 0 ]; then
  echo
  echo "The fleet keeps running. In another shell: export FLEETMQ_DATA_DIR=$FLEETMQ_DATA_DIR"
  echo "and try fleetmq-hub devices / command / job / broadcast (target/debug/fleetmq-hub)."
  step "fleetmq-hub telemetry --follow   (Ctrl-C to stop the fleet)"
  "$bin/fleetmq-hub" telemetry --follow || true
fi
