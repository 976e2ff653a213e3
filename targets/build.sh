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

want=("$@")
selected() {
  [ ${#want[@]} -eq 0 ] && return 0
  local w
  for w in "${want[@]}"; do [ "$w" = "$1" ] && return 0; done
  return 1
}

sizes=()
# Builds PACKAGES for TRIPLE, fully static, and records each binary's size.
#
# std is built from rust-src with our release profile (opt-level z, LTO
# with our code), std's optimize_for_size, and no unwind tables (panics
# abort): 330 KB less than the prebuilt std on aarch64. Panic messages
# keep their text but not their file and line (-Zlocation-detail=none,
# 30 KB). musl's start files come from zig, not Rust's self-contained copy.
build_static() {
  local label=$1 triple=$2
  shift 2
  local packages=() p
  for p in "$@"; do packages+=(-p "$p"); done
  echo "== $label: $triple"
  local flags_var
  flags_var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
  # A hub is built for speed: opt-level 3 for everything in it, libzmq and
  # SQLite included (15 % more durable ingest than at "z"). An agent keeps
  # the size-first release profile.
  local speed=z
  case " $* " in *" fleetmq-hub "*) speed=3 ;; esac
  if [ "$label" = amd64-hub ]; then
    # A server's hub: size does not matter there, build time in CI does.
    # Rust's prebuilt musl std, and no LTO (a third of the build time).
    rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"
    env "$flags_var=-C link-self-contained=no" CARGO_PROFILE_RELEASE_LTO=off \
      CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_OPT_LEVEL=$speed \
      cargo zigbuild --release --locked --target "$triple" "${packages[@]}"
  else
    env RUSTC_BOOTSTRAP=1 "$flags_var=-C link-self-contained=no -C force-unwind-tables=no -Zlocation-detail=none" \
      CARGO_PROFILE_RELEASE_OPT_LEVEL=$speed \
      cargo zigbuild --release --locked --target "$triple" "${packages[@]}" \
      -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size
  fi
  local bin path kind
  for bin in "$@"; do
    path="target/$triple/release/$bin"
    kind=$(file -b "$path")
    case "$kind" in
      *"statically linked"*|*"static-pie linked"*) ;;
      *) echo "error: $path is not statically linked: $kind" >&2; exit 1 ;;
    esac
    sizes+=("$(printf '%-14s %-34s %-14s %9d bytes  %s' "$label" "$triple" "$bin" "$(stat -c %s "$path")" "${kind%%,*}")")
  done
}

while IFS=$'\t' read -r pi triple _arch _qemu _cpu _deb; do
  case "$pi" in '#'*|'') continue ;; esac
  selected "$pi" || continue
  if [ "$triple" = aarch64-unknown-linux-musl ]; then
    # Apart: the hub's libzmq has the draft API (buffer sizes), the
    # agent's does not, and one cargo run would give both the same.
    build_static "$pi" "$triple" fleetmq-agent
    build_static "$pi" "$triple" fleetmq-hub
  else
    build_static "$pi" "$triple" fleetmq-agent
  fi
done < targets/targets.tsv
# The hub for an ordinary x86-64 server, static too (its .deb is amd64).
if selected amd64-hub; then
  build_static amd64-hub x86_64-unknown-linux-musl fleetmq-hub
fi

echo
echo "stripped sizes (release profile: opt-level z for agents, 3 for hubs; lto, one codegen unit, panic abort, strip; std built for size):"
printf '%s\n' "${sizes[@]}"
