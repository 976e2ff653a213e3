#!/usr/bin/env bash
# Boots a real ARM Linux kernel from Debian's packages in qemu-system with the
# static fleetmq-agent started as a service from a small busybox initramfs.
# The guest reaches a hub on this machine only through QEMU's user network:
# it has 10.0.2.15/24, no default route, and sees the host as 10.0.2.2. The
# test passes when the hub shows the emulated device online with its arch
# and has stored its telemetry. The hub runs with CURVE and an allow list
# (no --insecure), so that also proves the device's enrolled key works.
#
#   targets/qemu-system-test.sh            every machine below
#   targets/qemu-system-test.sh virt-a53   only these
#
# Kernels and busybox come from `apt-get download` into target/qemu-assets.
# Needs root the first time (dpkg --add-architecture, apt-get install).
set -euo pipefail
cd "$(dirname "$0")/.."

# One row per emulated machine, fields separated by "|":
#   name | Debian arch | kernel metapackage | Rust triple | arch the agent
#   reports | guest NIC | kernel modules to insmod, in order | device tree
#   (from the kernel package, empty for none) | extra kernel arguments |
#   QEMU command
# Debian builds the NIC drivers as modules. The Pi machines have no PCI or
# virtio, so their network is QEMU's usb-net on the SoC's USB controller.
# raspi0 oopses in the Pi power driver on QEMU 7.2 unless that initcall is
# skipped. The memory sizes are the boards' own (QEMU insists on them).
machines=(
  "virt-a53|arm64|linux-image-arm64|aarch64-unknown-linux-musl|aarch64|eth0|virtio_mmio failover net_failover virtio_net|||qemu-system-aarch64 -M virt -cpu cortex-a53 -m 256 -device virtio-net-device,netdev=n0"
  "raspi3b|arm64|linux-image-arm64|aarch64-unknown-linux-musl|aarch64|usb0|usb-common usbcore roles udc-core phy-generic dwc2 mii usbnet cdc_ether|broadcom/bcm2837-rpi-3-b.dtb||qemu-system-aarch64 -M raspi3b -m 1G -device usb-net,netdev=n0"
  "raspi0|armel|linux-image-rpi|arm-unknown-linux-musleabihf|armv6|usb0|mii usbnet cdc_ether|bcm2835-rpi-zero.dtb|initcall_blacklist=bcm2835_power_driver_init|qemu-system-arm -M raspi0 -m 512 -device usb-net,netdev=n0"
)

assets=$PWD/target/qemu-assets
hub_bin=$PWD/target/debug/fleetmq-hub
agent_bin=$PWD/target/debug/fleetmq-agent
work=$(mktemp -d "${TMPDIR:-/tmp}/fleetmq-qemu.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

need=()
command -v qemu-system-aarch64 >/dev/null 2>&1 || need+=(qemu-system-arm)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
[ -x "$hub_bin" ] && [ -x "$agent_bin" ] || { echo "missing $hub_bin or $agent_bin: run cargo build --workspace" >&2; exit 1; }

# Downloads (once) the kernel and busybox-static for a Debian architecture
# and unpacks them into $assets/<arch>/root.
fetch() {
  local arch=$1 meta=$2 dir="$assets/$1"
  [ -f "$dir/ready" ] && return 0
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    dpkg --add-architecture "$arch"
  fi
  apt-get update -qq
  local kernel
  kernel=$(apt-cache depends "$meta:$arch" | sed -n 's/.*Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1)
  [ -n "$kernel" ] || { echo "cannot resolve $meta for $arch" >&2; return 1; }
  rm -rf "$dir" && mkdir -p "$dir"
  (cd "$dir" && apt-get download -qq "${kernel%:*}:$arch" "busybox-static:$arch" 2>/dev/null)
  for deb in "$dir"/*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
  rm -f "$dir"/*.deb
  touch "$dir/ready"
}

# Builds the initramfs: busybox, the NIC modules, the agent, and an /init
# that brings up the NIC without a default route and supervises the agent.
initramfs() {
  local name=$1 arch=$2 agent=$3 out=$4 nic=$5 tree="$work/initrd-$1"
  shift 5
  rm -rf "$tree" && mkdir -p "$tree/bin" "$tree/lib/modules"
  cp "$assets/$arch/root/bin/busybox" "$tree/bin/"
  local m
  for m in "$@"; do
    local ko
    ko=$(find "$assets/$arch/root/lib/modules" -name "$m.ko" | head -n1)
    [ -n "$ko" ] || { echo "$name: no module $m.ko in the $arch kernel" >&2; return 1; }
    cp "$ko" "$tree/lib/modules/"
  done
  cp "$agent" "$tree/fleetmq-agent"
  # Provisioned like an SD card image: the hub's public key and this
  # device's key pair (enrolled on the hub before it boots).
  mkdir -p "$tree/etc/fleetmq" "$tree/var/lib/fleetmq"
  cp "$work/hub/hub.pub" "$tree/etc/fleetmq/hub.pub"
  cp -p "$work/keys-$name/agent.key" "$work/keys-$name/agent.pub" "$tree/var/lib/fleetmq/"
  cat > "$tree/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /var/lib/fleetmq
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $*; do insmod /lib/modules/\$m.ko; done
for i in \$(seq 300); do [ -e /sys/class/net/$nic ] && break; sleep 0.1; done
ip link set lo up
ip link set $nic up
ip addr add 10.0.2.15/24 dev $nic
arg() { sed -n "s/.*fleetmq\\.\$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }
hub=\$(arg hub); id=\$(arg id)
echo "fleetmq-init: model: \$(tr -d '\\0' < /proc/device-tree/model 2>/dev/null || echo none)"
echo "fleetmq-init: routes: \$(ip route | tr '\\n' ';')"
echo "fleetmq-init: starting agent \$id for \$hub"
while true; do
  /fleetmq-agent run --hub "\$hub" --hub-key /etc/fleetmq/hub.pub --device-id "\$id" --data-dir /var/lib/fleetmq
  echo "fleetmq-init: agent exited with \$?; restarting in 1 s"
  sleep 1
done
INIT
  chmod +x "$tree/init"
  (cd "$tree" && find . | cpio -o -H newc --quiet | gzip -1 > "$out")
}

devices_json() { "$hub_bin" devices --data-dir "$work/hub" --json 2>/dev/null || true; }

# Starts the hub and boots $name's kernel with the agent in its initramfs;
# sets ok=yes once the hub has the device online with its arch and a
# stored batch, and took_ms to when that was (or when it gave up).
boot() {
  "$hub_bin" run --data-dir "$work/hub" --bind 127.0.0.1:* >"$work/hub.out" 2>"$work/hub.log" &
  hub_pid=$!
  pids+=("$hub_pid")
  # Its first line names its ports; a loaded machine may take a while
  # to start it, and a QEMU told no port would boot for nothing.
  port=""
  for _ in $(seq 600); do
    port=$(sed -n '1s/.*"telemetry":"tcp:\/\/127.0.0.1:\([0-9][0-9]*\)".*/\1/p' "$work/hub.out")
    [ -n "$port" ] && break
    kill -0 "$hub_pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$port" ]; then
    echo "$name: the hub printed no telemetry port within 30 s; its log:" >&2
    tail -n 20 "$work/hub.log" >&2
    ok=""
    took_ms=0
    kill "$hub_pid" 2>/dev/null || true
    wait "$hub_pid" 2>/dev/null || true
    return
  fi
  start_ns=$(date +%s%N)
  # shellcheck disable=SC2086
  timeout 180 $qemu -nographic -no-reboot -kernel "$kernel" "${dtb_args[@]}" -initrd "$work/$name.cpio.gz" \
    -append "console=ttyAMA0 rdinit=/init quiet $append fleetmq.hub=tcp://10.0.2.2:$port fleetmq.id=$name" \
    -netdev user,id=n0 >"$work/$name.console" 2>&1 &
  qemu_pid=$!
  pids+=("$qemu_pid")

  ok=""
  for _ in $(seq 1200); do
    json=$(devices_json)
    if echo "$json" | grep -q "\"id\":\"$name\"" &&
      echo "$json" | grep -q "\"online\":true" &&
      echo "$json" | grep -q "\"arch\":\"$expect\"" &&
      [ -n "$("$hub_bin" telemetry --data-dir "$work/hub" --device "$name" --last 1 2>/dev/null)" ]; then
      ok=yes
      break
    fi
    kill -0 "$qemu_pid" 2>/dev/null || break
    sleep 0.1
  done
  took_ms=$((($(date +%s%N) - start_ns) / 1000000))
  kill "$qemu_pid" "$hub_pid" 2>/dev/null || true
  wait "$qemu_pid" "$hub_pid" 2>/dev/null || true
}

want=("$@")
passed=0
failed=0
for row in "${machines[@]}"; do
  IFS='|' read -r name arch meta triple expect nic modules dtb append qemu <<<"$row"
  if [ ${#want[@]} -gt 0 ] && [[ ! " ${want[*]} " == *" $name "* ]]; then continue; fi
  agent="$PWD/target/$triple/release/fleetmq-agent"
  [ -x "$agent" ] || { echo "missing $agent: run targets/build.sh" >&2; exit 1; }
  echo "== $name: Debian $arch kernel, agent $triple"
  fetch "$arch" "$meta"
  kernel=$(ls "$assets/$arch/root/boot"/vmlinuz-* | head -n1)
  # Keys first: the hub's pair, the device's pair, the device enrolled.
  rm -rf "$work/hub" "$work/keys-$name"
  "$hub_bin" keygen --data-dir "$work/hub" >/dev/null
  "$agent_bin" keygen --data-dir "$work/keys-$name" --device-id "$name" >/dev/null
  "$hub_bin" allow --data-dir "$work/hub" "$name" "$work/keys-$name/agent.pub" >/dev/null
  # shellcheck disable=SC2086
  initramfs "$name" "$arch" "$agent" "$work/$name.cpio.gz" "$nic" $modules
  dtb_args=()
  if [ -n "$dtb" ]; then
    dtb_file=$(find "$assets/$arch/root/usr/lib" -path "*/$dtb" | head -n1)
    [ -n "$dtb_file" ] || { echo "$name: no $dtb in the $arch kernel package" >&2; exit 1; }
    dtb_args=(-dtb "$dtb_file")
  fi

  # An emulated kernel now and then hangs before it runs our init (seen
  # once on raspi0, with nothing on the console after its early clock
  # messages): that boot is tried once more, and says so. A kernel that
  # ran our init gets no second chance.
  for attempt in 1 2; do
    boot
    if [ -n "$ok" ] || [ "$attempt" -eq 2 ] || grep -aq "fleetmq-init:" "$work/$name.console"; then
      break
    fi
    echo "$name: the kernel never reached fleetmq-init; booting once more; the end of its console:" >&2
    tail -n 5 "$work/$name.console" >&2
  done
  if [ -n "$ok" ]; then
    grep -a "fleetmq-init: \(model\|routes\)" "$work/$name.console" || true
    echo "$name: online as $expect with telemetry stored, ${took_ms} ms after QEMU started"
    passed=$((passed + 1))
  else
    echo "$name: did not report in; console:" >&2
    tail -n 40 "$work/$name.console" >&2
    echo "hub log:" >&2
    tail -n 20 "$work/hub.log" >&2
    failed=$((failed + 1))
  fi
done
echo "qemu-system: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
