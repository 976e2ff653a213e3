#!/usr/bin/env bash
# Runs the whole fleetmq test suite from a fresh clone: installs what the
# build needs (idempotently), checks formatting and lints, builds the native
# binaries and the static ARM agents, runs every test, then runs the
# end-to-end suite again with each Pi's agent under qemu-user.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step says when it starts, in seconds since the run began.
log() { printf '\n== %s (at %d s)\n' "$*" "$SECONDS"; }

# libzmq and SQLite are built from source by their crates: they need a C and
# a C++ compiler. Nothing else is needed for the native build and tests.
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
# For the ARM builds and their tests: file (checks static linking) and
# qemu-user (runs each Pi's agent with that Pi's CPU model). The package
# tests use dpkg, and readelf (binutils, with gcc) for the ARM CPU level.
command -v file >/dev/null 2>&1 || missing+=(file)
command -v qemu-arm-static >/dev/null 2>&1 || missing+=(qemu-user-static)
command -v readelf >/dev/null 2>&1 || missing+=(binutils)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
# The conformance test's client, written from PROTOCOL.md in Python, runs
# on Debian's Python with Debian's pyzmq (the system libzmq, with CURVE).
/usr/bin/python3 -c 'import zmq' >/dev/null 2>&1 || missing+=(python3-zmq)
# The partition fault test puts agents in their own network namespace.
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
# The packaging test checks the systemd units with systemd-analyze.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# The browser test opens the fleet page in Debian's headless Chromium.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# The alerts test makes a private certificate authority for its https
# webhook with the openssl command.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The metrics test checks /metrics with Prometheus's own promtool. The
# prometheus package carries it; its recommends (exporters, smartmontools)
# are not needed, and its server is never started by the tests.
lean=()
command -v promtool >/dev/null 2>&1 || lean+=(prometheus)
if [ ${#missing[@]} -gt 0 ] || [ ${#lean[@]} -gt 0 ]; then
  log "installing ${missing[*]} ${lean[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "need ${missing[*]} ${lean[*]}; run as root or install them" >&2
    exit 1
  fi
  apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  if [ ${#lean[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${lean[@]}"
  fi
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    log "adding rustup component $component"
    rustup component add "$component"
  fi
done

log "formatting"
cargo fmt --all -- --check

log "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

# Every target, tests too, with the features the test run resolves: a
# build of the binaries alone resolves them without the dev-dependencies
# and builds libzmq, libsodium and SQLite once more (four minutes cold).
log "building the binaries the end-to-end tests start, and the tests"
cargo build --workspace --all-targets --locked

log "static ARM builds for every Pi, and the x86-64 hub (targets/build.sh)"
targets/build.sh

log "Debian packages (targets/deb.sh)"
targets/deb.sh

# The front-end tests run a three-node NATS JetStream cluster: nats-server,
# pinned, into target/tools (targets/toolchain.sh), once per clone.
log "nats-server for the cluster tests"
source targets/toolchain.sh
ensure_nats_server

log "doc tests"
cargo test --workspace --locked --doc

log "tests"
cargo test --workspace --locked --all-targets

# A real ARM kernel boots the agent as a service in qemu-system and reports
# to a hub on this machine through QEMU's user network only.
log "ARM Linux in qemu-system: the agent boots as a service and reports in"
targets/qemu-system-test.sh

# The same end-to-end suite with each Pi's agent under qemu-user, with the
# aarch64 hub under qemu-user, and with the amd64 package's static hub; its
# last summary closes the run.
log "end-to-end tests with ARM agents under qemu-user"
targets/qemu-user-test.sh
