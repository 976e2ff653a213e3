#!/usr/bin/env bash
# Runs every fuzz target for RUNS executions each (default one million) and
# prints how many each did. Needs a nightly toolchain and cargo-fuzz:
#   rustup toolchain install nightly && cargo install cargo-fuzz
#
#   fuzz/run.sh                 every target, 1,000,000 runs each
#   fuzz/run.sh 5000000 job     more runs, only these targets
#
# A crash stops the run and leaves its input in fuzz/artifacts/<target>/;
# `cargo +nightly fuzz run <target> <that file>` replays it.
set -euo pipefail
cd "$(dirname "$0")"
runs=${1:-1000000}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  out=$(cargo +nightly fuzz run "$t" "corpus/$t" -- -runs="$runs" 2>&1) || {
    echo "$out" | tail -n 40
    echo "$t: CRASH (input saved under fuzz/artifacts/$t/)" >&2
    exit 1
  }
  done_line=$(echo "$out" | grep -E "^Done [0-9]+ runs" | tail -n1)
  echo "$t: ${done_line:-finished}"
done
