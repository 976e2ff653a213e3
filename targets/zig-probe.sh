#!/usr/bin/env bash
# The zig that cargo-zigbuild runs (CARGO_ZIGBUILD_ZIG_PATH, set by
# targets/toolchain.sh): the real one, given every call unchanged, except
# a configure probe that compiles and links conftest.c with instruction-set
# flags of its own (libsodium's `-mavx2`, `-mavx512f`, `-march=...+crypto`).
#
# Zig builds musl anew for every set of CPU features it links for, about
# 30 s each, and libsodium's configure asks for about five sets a target:
# 22 builds of musl in a cold `targets/build.sh`. Such a probe is compiled
# with its flags as asked (the compile is what the probe tests), and its
# object is linked for the target as cargo-zigbuild gave it, without them.
# Arguments of the probe's own come after `-target TRIPLE`; what comes
# before it (cargo-zigbuild's `-mcpu` for 32-bit ARM) stays in both steps.
set -uo pipefail
real=${FLEETMQ_REAL_ZIG:?FLEETMQ_REAL_ZIG names the real zig binary}

probe=0
if [ "${1:-}" = cc ]; then
  for a in "$@"; do
    case "$a" in
      conftest.c) probe=1 ;;
      -c|-E|-S|-M|-MM) probe=0; break ;;
    esac
  done
fi
[ "$probe" -eq 1 ] || exec "$real" "$@"

# Split the call at `-target TRIPLE`, find the probe's -m flags and its -o.
base=() own=() out=a.out
seen_target=0 flags=0
shift # cc
while [ $# -gt 0 ]; do
  if [ "$seen_target" -eq 0 ]; then
    base+=("$1")
    if [ "$1" = -target ] && [ $# -gt 1 ]; then
      base+=("$2")
      shift
      seen_target=1
    fi
  else
    case "$1" in
      -o) out=${2:-a.out}; own+=("$1" "${2:-}"); shift ;;
      -m*) flags=1; own+=("$1") ;;
      *) own+=("$1") ;;
    esac
  fi
  shift
done
[ "$flags" -eq 1 ] || exec "$real" cc "${base[@]}" "${own[@]}"

object="$out.probe.o"
compile=() link=()
skip_next=0
for a in "${own[@]}"; do
  if [ "$skip_next" -eq 1 ]; then skip_next=0; continue; fi
  case "$a" in
    -o) skip_next=1 ;;
    -m*) compile+=("$a") ;;
    conftest.c) compile+=("$a"); link+=("$object") ;;
    *) compile+=("$a"); link+=("$a") ;;
  esac
done
"$real" cc "${base[@]}" -Qunused-arguments "${compile[@]}" -c -o "$object" || {
  status=$?
  rm -f "$object"
  exit "$status"
}
"$real" cc "${base[@]}" -Qunused-arguments "${link[@]}" -o "$out"
status=$?
rm -f "$object"
exit "$status"
