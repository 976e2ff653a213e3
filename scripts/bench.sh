#!/usr/bin/env bash
# The benchmark suite: builds the release binaries, runs every benchmark
# (hub ingest from 1, 100 and 1,000 simulated agents beside raw libzmq,
# command round trips beside raw REQ/REP, the agent at 1 Hz for 60 s, wire
# sizes, a connected fleet of 5,000 agents or as many as the open-files
# limit allows), prints one table per benchmark and writes
# target/bench/results.json; then criterion's encode/decode times of the
# wire formats.
#
#   scripts/bench.sh                 everything (about 5 minutes after the build)
#   scripts/bench.sh ingest          one: ingest, rtt, idle, wire, connected,
#                                    flood, query, or store, cluster or peers
#                                    (not in "all"; cluster installs
#                                    nats-server, peers nats-server and
#                                    Mosquitto)
#   BENCH_ARGS="--seconds 10" scripts/bench.sh
#
# Figures are for comparing side by side within one run; absolute numbers
# on a shared machine move from run to run.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
cargo build --release --locked -p fleetmq-hub -p fleetmq-agent -p fleetmq-bench
if [ "$what" = cluster ] || [ "$what" = peers ]; then
  source targets/toolchain.sh
  ensure_nats_server
fi
if [ "$what" = peers ] && ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
  echo "installing Mosquitto (apt) for the peers benchmark"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q mosquitto; else sudo apt-get install -y -q mosquitto; fi
fi
mkdir -p target/bench
# shellcheck disable=SC2086
target/release/fleetmq-bench "$what" --json target/bench/results.json ${BENCH_ARGS:-}
if [ "$what" = all ] || [ "$what" = wire ]; then
  cargo bench --locked -p fleetmq-bench --bench wire -- --noplot
fi
