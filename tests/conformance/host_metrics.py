#!/usr/bin/env python3
"""What a device reports of itself and how a reload changes it, as the
README ("On the device: host metrics, local ingest, reload") says: the
host metrics by name and tag, the agent's own samples, `collect`,
`mounts` and `interfaces`, groups the machine lacks listed in `status`,
and SIGHUP (applied at once, waiting for a restart, or refused whole).

It starts a hub of its own and one agent of its own, pi-h, sampling
every 300 ms, and compares what arrives with this machine's own /proc.
Python's standard library only. Run by `tests/tests/conformance.rs`; by
hand:

    python3 host_metrics.py --hub-command=target/debug/fleetmq-hub \
        --agent-command=target/debug/fleetmq-agent --work=AN_EMPTY_DIRECTORY

Each command is a binary, or a runner and it. Exit status as client.py's.
"""

import codecs
import ipaddress
import os
import re
import signal
import sys

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
import fleet  # noqa: E402
from client import check  # noqa: E402

DEVICE = "pi-h"
AGENT = ("[telemetry]\nflush_interval_ms = 50\nsample_interval_ms = 300\n"
         "[ingest]\nudp = \"\"\n[host]\ninterval_ms = 300\n")
# Every group the README names, and what each sends on any Linux machine.
ALWAYS = {"host.cpu.used_pct", "host.load1", "host.load5", "host.load15",
          "host.mem.total_bytes", "host.mem.available_bytes", "host.mem.used_pct",
          "host.swap.used_bytes", "host.uptime_s",
          "agent.uptime_s", "agent.heartbeats", "agent.records_dropping"}
PER_MOUNT = {"host.disk.total_bytes", "host.disk.used_bytes", "host.disk.used_pct"}
PER_IFACE = {"host.net.rx_bytes", "host.net.tx_bytes"}


def run(args, _ctx):
    hub = fleet.Hub(args.hub_command, args.work, "")
    agent = None
    try:
        agent = fleet.Agent(args.agent_command, args.work, hub.cli, hub.data,
                            hub.endpoints["telemetry"], DEVICE, AGENT)
        everything(hub, agent)
        chosen(hub, agent)
        reloads(hub, agent)
    finally:
        if agent:
            agent.stop()
        hub.stop()


def series(rows):
    """{series: newest value} of telemetry rows (`name{k=v}` as stored)."""
    return {r["name"]: r["value"] for r in rows}


def split(name):
    """(metric, {tag: value}) of a series name `metric{k=v,...}`."""
    m = re.fullmatch(r"([^{]+)(?:\{(.*)\})?", name)
    tags = dict(t.split("=", 1) for t in m.group(2).split(",")) if m.group(2) else {}
    return m.group(1), tags


def after(hub, cursor, holds, what):
    """Every sample stored after row `cursor`, read until `holds` them."""
    return fleet.until(what, lambda: hub.cli.json(
        "telemetry", "--device", DEVICE, "--after", str(cursor)), holds)


def newest_id(hub):
    rows = hub.cli.json("telemetry", "--device", DEVICE, "--last", "1")
    return rows[-1]["id"] if rows else 0


def metrics_of(rows):
    return {split(r["name"])[0] for r in rows}


def meminfo(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


def block_devices():
    """Where this machine's /proc/mounts mounts each block device first,
    read-only images left out, as a tag can carry it."""
    seen, first = set(), set()
    with open("/proc/mounts") as f:
        for line in f:
            dev, mount, fs = line.split()[:3]
            mount = codecs.decode(mount, "unicode_escape")
            if not dev.startswith("/dev/") or fs in ("squashfs", "iso9660", "erofs", "cramfs"):
                continue
            if dev not in seen and not set(mount) & set(",={}"):
                try:
                    os.statvfs(mount)
                    first.add(mount)
                except OSError:
                    pass
            seen.add(dev)
    return first


def everything(hub, agent):
    """The defaults: every group, every block-device mount, every
    interface but lo."""
    rows = after(hub, 0, lambda rs: ALWAYS | PER_MOUNT | PER_IFACE <= metrics_of(rs),
                 "every metric the README names for a Linux machine arrives")
    values = series(rows)
    for name, value in values.items():
        metric, tags = split(name)
        if metric.endswith("_pct"):
            check(0 <= value <= 100, f"{name} is a percentage", value)
        if metric in PER_MOUNT:
            check(set(tags) == {"mount"}, f"{metric} is tagged with its mount", name)
        if metric in PER_IFACE:
            check(set(tags) == {"iface"} and tags["iface"] != "lo",
                  f"{metric} is tagged with its interface, lo left out", name)
    check("host.disk.used_pct{mount=/}" in values, "the root file system is among the mounts",
          sorted(n for n in values if n.startswith("host.disk")))
    mounts = {split(n)[1]["mount"] for n in values if n.startswith("host.disk.total_bytes")}
    check(mounts == block_devices(), "each block device once, at its first mount point, "
          "and no read-only image (a snap)", (sorted(mounts), sorted(block_devices())))
    check(values["host.mem.total_bytes"] == meminfo("MemTotal"),
          "host.mem.total_bytes is /proc/meminfo's MemTotal", values["host.mem.total_bytes"])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    check(abs(values["host.uptime_s"] - uptime) < 120, "host.uptime_s is the machine's uptime",
          (values["host.uptime_s"], uptime))
    check(all(r["value"] == 0 for r in rows if r["name"] == "agent.records_dropping"),
          "agent.records_dropping is 0 while nothing is lost")

    status = agent.status()
    skipped = {s.split(":", 1)[0] for s in status["host_skipped"]}
    for group, prefix in (("temperature", "host.temp_c"), ("throttled", "host.pi.")):
        sent = any(n.startswith(prefix) for n in values)
        check(sent != (group in skipped),
              f"{group}: sent, or listed in status host_skipped with why (not both)",
              (sent, status["host_skipped"]))
    check(all(": " in s for s in status["host_skipped"]), "each skipped group says why",
          status["host_skipped"])

    # What the device is, as the hub is told: this machine's.
    facts = status["facts"]
    with open("/proc/sys/kernel/osrelease") as f:
        kernel = f.read().strip()
    check((facts["kernel"], facts["memory_bytes"]) == (kernel, meminfo("MemTotal")),
          "status facts: this machine's kernel and MemTotal", facts)
    names = [i["name"] for i in facts["interfaces"]]
    want = sorted(n for n in os.listdir("/sys/class/net") if n != "lo")[:32]
    check(names == want, "status facts: the interfaces /sys/class/net lists but lo, "
          "in name order (32 at most)", (names, want))
    for i in facts["interfaces"]:
        for a in i["addresses"]:
            ipaddress.ip_interface(a)
    check(status["facts_problem"] == "", "the addresses were read", status["facts_problem"])


def reload(agent, config):
    """Writes `config` and sends SIGHUP; the status once the reload is done."""
    before = agent.status()["reload"]["at_ms"]
    agent.write_config(config)
    agent.proc.send_signal(signal.SIGHUP)
    return agent.status_until("the agent reloads on SIGHUP",
                              lambda s: s["reload"]["at_ms"] > before)["reload"]


def chosen(hub, agent):
    """`collect`, `mounts` and `interfaces` choose what, applied by a
    reload at once."""
    done = reload(agent, AGENT + "collect = [\"disk\", \"network\"]\nmounts = [\"/\"]\n"
                                 "interfaces = [\"lo\"]\n")
    check(done["applied"] == ["host.collect", "host.interfaces", "host.mounts"]
          and done["error"] == "", "a reload that changes [host] applies it at once, "
          "naming each key", done)
    cursor = newest_id(hub)
    # Samples read before the reload may still be on their way: the
    # choice shows in every sample of a later round.
    want = {f"{m}{{mount=/}}" for m in PER_MOUNT} | {f"{m}{{iface=lo}}" for m in PER_IFACE}
    rows = after(hub, cursor, lambda rs: want <= set(series(rs)),
                 "the chosen mount and interface arrive")
    # One round's samples share a time: the newest round holds only them.
    last = max(r["ts_ms"] for r in rows if r["name"] in want)
    late = {r["name"] for r in rows if r["ts_ms"] >= last and r["name"].startswith("host.")}
    check(late == want, "then only the groups in collect, on the mounts and interfaces named",
          sorted(late))


def reloads(hub, agent):
    """A key a reload cannot apply is listed and waits; a config with an
    error changes nothing."""
    done = reload(agent, AGENT + "[presence]\nheartbeat_ms = 700\n")
    check(done["needs_restart"] == ["presence.heartbeat_ms"] and done["error"] == "",
          "a key that needs a restart is listed in reload.needs_restart", done)
    check(done["applied"] == ["host.collect", "host.interfaces", "host.mounts"],
          "and what could apply did ([host] back to its defaults)", done)
    done = reload(agent, AGENT + "collect = [\"no-such-group\"]\n")
    check(done["error"] != "" and "no-such-group" in done["error"],
          "a config with an error is refused whole, and reload.error says why", done)
    check(done["applied"] == [] and done["needs_restart"] == [], "nothing of it applied", done)
    cursor = newest_id(hub)
    after(hub, cursor, lambda rs: "host.cpu.used_pct" in metrics_of(rs),
          "the agent runs on with the config it had, sending every group")


if __name__ == "__main__":
    sys.exit(client.script_main("host metrics", run, __doc__, fleet.OWN))
