#!/usr/bin/env bash
# Builds fully static, size-optimised fleetmq-agent binaries for every
# Raspberry Pi in targets/targets.tsv, and fleetmq-hub for aarch64 (a Pi 4
# can be a small fleet's hub), without Docker: cargo-zigbuild with Zig from
# PyPI. Prints each binary's stripped size and what `file` says of it.
#
#   targets/build.sh               every target, and the hub for x86-64
#   targets/build.sh pi2 pi0-pi1   only these rows (by the table's pi column;
#                                  amd64-hub for the x86-64 hub)
#
# Binaries land in target/<triple>/release/.
set -euo pipefail
cd "$(dirname "$0")/.."
source targets/toolchain.sh
ensure_zigbuild
ensure_rust_src
# Temporary files of the build stay in target/, not in /tmp. (When zig
# still built musl for libsodium's AVX512F probe, its clang crashed doing
# so and left a 430 KB reproducer in /tmp each build; see zig-probe.sh.)
export TMPDIR="$PWD/target/build-tmp"
mkdir -p "$TMPDIR"

want=("$@")
selected() {
  [ ${#want[@]} -eq 0 ] && return 0
  local w
  for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done
  return 1
}

sizes=()
# Checks that a built binary is static and notes its size.
check_static() {
  local label=$1 triple=$2 bin=$3 path kind
  path="target/$triple/release/$bin"
  kind=$(file -b "$path")
  case "$kind" in
    *"statically linked"*|*"static-pie linked"*) ;;
    *) echo "error: $path is not statically linked: $kind" >&2; exit 1 ;;
  esac
  sizes+=("$(printf '%-14s %-34s %-14s %9d bytes  %s' "$label" "$triple" "$bin" "$(stat -c %s "$path")" "${kind%%,*}")")
}

# Builds PACKAGE, fully static, for one or more targets in one cargo run,
# so that cargo runs one target's single-threaded steps (libsodium's
# configure script, the final link with LTO) beside another's and both
# cores work.
#   build_static PACKAGE TRIPLE...
#
# std is built from rust-src with our release profile (opt-level z, LTO
# with our code), std's optimize_for_size, and no unwind tables (panics
# abort): 330 KB less than the prebuilt std on aarch64. Panic messages
# keep their text but not their file and line (-Zlocation-detail=none,
# 30 KB). musl's start files come from zig, not Rust's self-contained copy.
build_static() {
  local package=$1 triple
  shift
  # A hub is built for speed: opt-level 3 for everything in it, libzmq and
  # SQLite included (15 % more durable ingest than at "z"). An agent keeps
  # the size-first release profile.
  local speed=z
  [ "$package" = fleetmq-hub ] && speed=3
  local targets=() envs=()
  for triple in "$@"; do
    echo "== $package: $triple"
    targets+=(--target "$triple")
    envs+=("CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS=-C link-self-contained=no -C force-unwind-tables=no -Zlocation-detail=none")
  done
  env RUSTC_BOOTSTRAP=1 "${envs[@]}" CARGO_PROFILE_RELEASE_OPT_LEVEL=$speed \
    cargo zigbuild --release --locked "${targets[@]}" -p "$package" \
    -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size
}

# The hub for an ordinary x86-64 server, static too (its .deb is amd64).
# Size does not matter there, build time in CI does: Rust's prebuilt musl
# std, and no LTO (a third of the build time). It builds in the background
# beside the ARM builds, in its own target directory (cargo locks one per
# run); libsodium's configure script, on one core, is a good part of it.
# Its output is shown when it ends.
amd64_triple=x86_64-unknown-linux-musl
amd64_dir=target/amd64-hub
amd64_pid=
if selected amd64-hub; then
  rustup target list --installed | grep -qx "$amd64_triple" || rustup target add "$amd64_triple"
  mkdir -p "$amd64_dir"
  # Its own process group, so that a failed ARM build takes it down too.
  # Its own cargo-zigbuild cache, as an absolute path (build scripts run
  # the wrappers in it from their own directories): the ARM build starts
  # at the same time.
  CARGO_TARGET_DIR="$amd64_dir" CARGO_ZIGBUILD_CACHE_DIR="$PWD/$amd64_dir/zigbuild-cache" setsid -w \
    env CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C link-self-contained=no" \
    CARGO_PROFILE_RELEASE_LTO=off \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=3 \
    cargo zigbuild --release --locked --target "$amd64_triple" -p fleetmq-hub \
    >"$amd64_dir/build.log" 2>&1 &
  amd64_pid=$!
  trap '[ -z "$amd64_pid" ] || kill -- -"$amd64_pid" 2>/dev/null || true' EXIT
fi

agents=()
agent_labels=()
while IFS=$'\t' read -r pi triple _arch _qemu _cpu _deb; do
  case "$pi" in '#'*|'') continue ;; esac
  selected "$pi" || continue
  agents+=("$triple")
  agent_labels+=("$pi")
done < targets/targets.tsv
if [ ${#agents[@]} -gt 0 ]; then
  build_static fleetmq-agent "${agents[@]}"
  for i in "${!agents[@]}"; do
    check_static "${agent_labels[$i]}" "${agents[$i]}" fleetmq-agent
  done
fi
# The hub for aarch64 (a Pi 4 as a small fleet's hub) whenever its Pi row
# is built. Apart from the agents: the hub's libzmq has the draft API
# (buffer sizes), the agent's does not, and one cargo run would give both
# the same.
for i in "${!agents[@]}"; do
  if [ "${agents[$i]}" = aarch64-unknown-linux-musl ]; then
    build_static fleetmq-hub aarch64-unknown-linux-musl
    check_static "${agent_labels[$i]}" aarch64-unknown-linux-musl fleetmq-hub
  fi
done
if [ -n "$amd64_pid" ]; then
  echo "== fleetmq-hub: $amd64_triple (built in the background)"
  built=0
  wait "$amd64_pid" || built=$?
  amd64_pid=
  if [ "$built" -ne 0 ]; then
    cat "$amd64_dir/build.log"
    echo "error: the x86-64 hub did not build (log above)" >&2
    exit 1
  fi
  tail -n 1 "$amd64_dir/build.log"
  mkdir -p "target/$amd64_triple/release"
  cp "$amd64_dir/$amd64_triple/release/fleetmq-hub" "target/$amd64_triple/release/fleetmq-hub"
  check_static amd64-hub "$amd64_triple" fleetmq-hub
fi

echo
echo "stripped sizes (release profile: opt-level z for agents, 3 for hubs; lto, one codegen unit, panic abort, strip; std built for size):"
printf '%s\n' "${sizes[@]}"
