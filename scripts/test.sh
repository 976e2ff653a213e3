#!/usr/bin/env bash
# Runs the whole fleetmq test suite from a fresh clone: installs what the
# build needs (idempotently), checks formatting and lints, builds the
# binaries the end-to-end tests start, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# libzmq and SQLite are built from source by their crates: they need a C and
# a C++ compiler. Nothing else is needed for the native build and tests.
missing=()
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "need ${missing[*]}; run as root or install them" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
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

log "building the binaries the end-to-end tests start"
cargo build --workspace --bins --locked

log "doc tests"
cargo test --workspace --locked --doc

# Unit, wire-format and end-to-end tests; the end-to-end suite runs last, so
# its summary closes the run.
log "tests"
cargo test --workspace --locked --all-targets
