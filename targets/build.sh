#!/usr/bin/env bash
# Builds fully static, size-optimised fleetmq-agent binaries for every
# Raspberry Pi in targets/targets.tsv, and fleetmq-hub for aarch64 (a Pi 4
# can be a small fleet's hub), without Docker: cargo-zigbuild with Zig from
# PyPI. Prints each binary's stripped size and what `file` says of it.
#
#   targets/build.sh               every target
#   targets/build.sh pi2 pi0-pi1   only these rows (by the table's pi column)
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
while IFS=$'\t' read -r pi triple _arch _qemu _cpu _deb; do
  case "$pi" in '#'*|'') continue ;; esac
  selected "$pi" || continue
  packages=(-p fleetmq-agent)
  [ "$triple" = aarch64-unknown-linux-musl ] && packages+=(-p fleetmq-hub)
  echo "== $pi: $triple"
  # std is built from rust-src with our release profile (opt-level z, LTO
  # with our code), std's optimize_for_size, and no unwind tables (panics
  # abort): 330 KB less than the prebuilt std on aarch64. Panic messages
  # keep their text but not their file and line (-Zlocation-detail=none,
  # 30 KB). musl's start files come from zig, not Rust's self-contained copy.
  flags_var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS"
  env RUSTC_BOOTSTRAP=1 "$flags_var=-C link-self-contained=no -C force-unwind-tables=no -Zlocation-detail=none" \
    cargo zigbuild --release --locked --target "$triple" "${packages[@]}" \
    -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size
  for bin in fleetmq-agent fleetmq-hub; do
    path="target/$triple/release/$bin"
    [ -f "$path" ] || continue
    [ "$bin" = fleetmq-hub ] && [ "$triple" != aarch64-unknown-linux-musl ] && continue
    kind=$(file -b "$path")
    case "$kind" in
      *"statically linked"*|*"static-pie linked"*) ;;
      *) echo "error: $path is not statically linked: $kind" >&2; exit 1 ;;
    esac
    sizes+=("$(printf '%-14s %-34s %-14s %9d bytes  %s' "$pi" "$triple" "$bin" "$(stat -c %s "$path")" "${kind%%,*}")")
  done
done < targets/targets.tsv

echo
echo "stripped sizes (release profile: opt-level z, lto, one codegen unit, panic abort, strip; std built for size):"
printf '%s\n' "${sizes[@]}"
