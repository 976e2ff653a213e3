#!/usr/bin/env bash
# Runs the end-to-end suite and the conformance tests (the Python clients
# written from PROTOCOL.md and the README) with each Pi's static agent under
# qemu-user, with that Pi's CPU model, against a native hub: the same tests
# as natively, with the agent behind a runner prefix (FLEETMQ_AGENT_RUNNER).
# Then the same once more with the aarch64 hub (a Pi 4 as a small fleet's
# hub) under qemu-user, its operator command line too, against native
# agents, and once with the static x86-64 hub that the amd64 package holds.
#
#   targets/qemu-user-test.sh              every row of targets/targets.tsv
#   targets/qemu-user-test.sh pi0-pi1      only these rows
#   targets/qemu-user-test.sh hub          only the aarch64 hub
#   targets/qemu-user-test.sh amd64-hub    only the static x86-64 hub (no QEMU)
#
# Expects the binaries from targets/build.sh and the native workspace build.
set -euo pipefail
cd "$(dirname "$0")/.."

want=("$@")
status=0

# The e2e and conformance test binaries, from the same cargo command as the
# native test run (scripts/test.sh), so nothing is rebuilt. `cargo test -p
# fleetmq-tests` would resolve the features anew and build libzmq and
# libsodium again (two minutes); run alone, this builds what the native run
# would.
tests=$(cargo test --workspace --locked --all-targets --no-run --message-format=json |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] in ("e2e", "conformance") and m.get("executable"):
        print(m["target"]["name"], m["executable"])')
e2e=$(awk '$1 == "e2e" { print $2 }' <<<"$tests")
conformance=$(awk '$1 == "conformance" { print $2 }' <<<"$tests")
[ -x "$e2e" ] || { echo "cargo built no e2e test binary" >&2; exit 1; }
[ -x "$conformance" ] || { echo "cargo built no conformance test binary" >&2; exit 1; }
# cargo runs a package's tests in its directory; so do we.
run_e2e() { (cd tests && "$e2e" && "$conformance") || status=1; }
while IFS=$'\t' read -r pi triple arch qemu cpu _deb; do
  case "$pi" in '#'*|'') continue ;; esac
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $pi "* ]]; then continue; fi
  agent="$PWD/target/$triple/release/fleetmq-agent"
  [ -x "$agent" ] || { echo "missing $agent: run targets/build.sh $pi" >&2; exit 1; }
  echo "== $pi: $triple under $qemu -cpu $cpu"
  if [ "$cpu" = arm1176 ] && [ -x target/armv7-unknown-linux-musleabihf/release/fleetmq-agent ]; then
    # The ARMv6 run means something only if this CPU model refuses ARMv7
    # code: the Pi 2 build must die with SIGILL here.
    if "$qemu" -cpu "$cpu" target/armv7-unknown-linux-musleabihf/release/fleetmq-agent info >/dev/null 2>&1; then
      echo "error: an ARMv7 agent ran under -cpu $cpu; this QEMU does not enforce ARMv6" >&2
      exit 1
    fi
    echo "(control: the ARMv7 agent is refused by -cpu $cpu, as it must be)"
  fi
  FLEETMQ_AGENT_BIN="$agent" FLEETMQ_AGENT_RUNNER="$qemu -cpu $cpu" FLEETMQ_AGENT_ARCH="$arch" run_e2e
done < targets/targets.tsv

if [ ${#want[@]} -eq 0 ] || [[ " ${want[*]} " == *" hub "* ]]; then
  hub="$PWD/target/aarch64-unknown-linux-musl/release/fleetmq-hub"
  [ -x "$hub" ] || { echo "missing $hub: run targets/build.sh pi3-pi4-pi5" >&2; exit 1; }
  echo "== hub: aarch64-unknown-linux-musl under qemu-aarch64-static -cpu cortex-a72, native agents"
  FLEETMQ_HUB_BIN="$hub" FLEETMQ_HUB_RUNNER="qemu-aarch64-static -cpu cortex-a72" run_e2e
fi

# The amd64 package's hub (static, musl, built by targets/build.sh) is a
# binary of this machine's own architecture: no emulator, the same suite.
if [ ${#want[@]} -eq 0 ] || [[ " ${want[*]} " == *" amd64-hub "* ]]; then
  hub="$PWD/target/x86_64-unknown-linux-musl/release/fleetmq-hub"
  [ -x "$hub" ] || { echo "missing $hub: run targets/build.sh amd64-hub" >&2; exit 1; }
  echo "== amd64-hub: x86_64-unknown-linux-musl, native agents"
  FLEETMQ_HUB_BIN="$hub" run_e2e
fi
exit $status
