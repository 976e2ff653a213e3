#!/usr/bin/env bash
# Debian packages, made with cargo-deb from the static builds (run
# targets/build.sh first):
#
#   fleetmq-agent  arm64 (Pi 3/4/5, 64-bit OS), armhf and armel (every
#                  32-bit Pi: both hold the ARMv6 build)
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

# cargo-deb names the architecture after the triple it is given: a build
# is staged under the triple that gives each Debian name it is packaged as.
# The ARMv6 build is hard-float but static, so the system's float ABI does
# not matter to it: it runs on any ARMv6 with VFP (every Pi Zero and Pi 1)
# and on every later 32-bit Pi.
triple_for() {
  case "$1" in
    arm64) echo aarch64-unknown-linux-musl ;;
    armhf) echo arm-unknown-linux-musleabihf ;;
    armel) echo arm-unknown-linux-musleabi ;;
    *) echo "targets.tsv: no triple for Debian architecture $1" >&2; return 1 ;;
  esac
}
while IFS=$'\t' read -r pi triple _arch _qemu _cpu debs; do
  case "$pi" in '#'*|'') continue ;; esac
  [ "$debs" = - ] && continue
  for deb in ${debs//,/ }; do
    named=$(triple_for "$deb")
    if [ "$named" != "$triple" ]; then
      mkdir -p "target/$named/release"
      cp "target/$triple/release/fleetmq-agent" "target/$named/release/"
    fi
    package "$named" fleetmq-agent
    if ! compgen -G "$out/fleetmq-agent_*_$deb.deb" >/dev/null; then
      echo "targets/deb.sh: cargo-deb did not name the $triple build $deb (from $named)" >&2
      exit 1
    fi
  done
done < targets/targets.tsv
package aarch64-unknown-linux-musl fleetmq-hub
package x86_64-unknown-linux-musl fleetmq-hub

echo "Debian packages in $out:"
for deb in "$out"/*.deb; do
  printf '  %-44s %9d bytes  %s\n' "$(basename "$deb")" "$(stat -c %s "$deb")" \
    "$(dpkg-deb -f "$deb" Architecture)"
done
