#!/usr/bin/env bash
# Debian packages, made with cargo-deb from the static builds (run
# targets/build.sh first):
#
#   fleetmq-agent  arm64 (Pi 3/4/5), armhf (Pi 2 and later), armel (Pi Zero/1)
#   fleetmq-hub    arm64 and amd64
#
# Each holds the binary in /usr/bin, its systemd unit, a sample config in
# /etc/fleetmq (a conffile) and maintainer scripts that add the fleetmq
# user. Packages land in target/debian/.
set -euo pipefail
cd "$(dirname "$0")/.."
source targets/toolchain.sh
ensure_cargo_deb

out=target/debian
rm -rf "$out"
mkdir -p "$out"
# cargo-deb takes the Debian architecture from the target triple.
package() {
  local triple=$1 crate=$2
  cargo deb --no-build --no-strip --target "$triple" -p "$crate" -o "$out" --quiet
}

while IFS=$'\t' read -r pi triple _arch _qemu _cpu deb; do
  case "$pi" in '#'*|'') continue ;; esac
  if [ "$deb" = armel ]; then
    # cargo-deb says armel for ...-musleabi. Our ARMv6 build is hard-float
    # but static, so the system's float ABI does not matter to it: it runs
    # on any ARMv6 with VFP, which every Pi Zero and Pi 1 has. It is staged
    # under the soft-float triple only for the name.
    stage=target/arm-unknown-linux-musleabi/release
    mkdir -p "$stage"
    cp "target/$triple/release/fleetmq-agent" "$stage/"
    triple=arm-unknown-linux-musleabi
  fi
  package "$triple" fleetmq-agent
done < targets/targets.tsv
package aarch64-unknown-linux-musl fleetmq-hub
package x86_64-unknown-linux-musl fleetmq-hub

echo "Debian packages in $out:"
for deb in "$out"/*.deb; do
  printf '  %-44s %9d bytes  %s\n' "$(basename "$deb")" "$(stat -c %s "$deb")" \
    "$(dpkg-deb -f "$deb" Architecture)"
done
