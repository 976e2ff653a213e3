#!/usr/bin/env python3
"""The desired configuration, set from the hub as the README ("Desired
configuration, set from the hub") tells an operator to: layers for the
fleet, a group and a device, a device that joins a group, `[remote]
may_set` on the device, the limits, and what a device keeps across a
restart.

It starts a hub of its own and two agents of its own: pi-n in group
north with the default `may_set`, and pi-w whose `may_set` also names
`jobs.allow`. Python's standard library only. Run by
`tests/tests/conformance.rs`; by hand:

    python3 desired_config.py --hub-command=target/debug/fleetmq-hub \
        --agent-command=target/debug/fleetmq-agent --work=AN_EMPTY_DIRECTORY

Each command is a binary, or a runner and it. Exit status as client.py's.
"""

import re
import socket
import sys

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
import fleet  # noqa: E402
from client import check  # noqa: E402

NORTH, WIDE = "pi-n", "pi-w"
AGENT = "[telemetry]\nflush_interval_ms = 100\n[ingest]\nudp = \"\"\n"
WIDE_AGENT = AGENT + "[remote]\nmay_set = [\"jobs.allow\", \"app.*\"]\n"


def run(args, _ctx):
    hub = fleet.Hub(args.hub_command, args.work, "")
    agents = []
    try:
        for device, config, groups in [(NORTH, AGENT, ["north"]), (WIDE, WIDE_AGENT, [])]:
            agents.append(fleet.Agent(args.agent_command, args.work, hub.cli, hub.data,
                                      hub.endpoints["telemetry"], device, config, groups))
        desired(hub.cli, *agents)
    finally:
        for a in agents:
            a.stop()
        hub.stop()


def version_of(printed):
    """The version an edit says it made: `configuration version N: ...`."""
    found = re.search(r"version (\d+)", printed)
    check(found is not None, "an edit names the version it made", printed)
    return int(found.group(1))


def desired(hub, north, wide):
    fleet.until("both agents online", lambda: hub.json("devices"),
                lambda ds: {d["id"] for d in ds if d["online"]} == {NORTH, WIDE})

    # --- layers: the fleet's, a group's, a device's; later ones win -----------
    hub.code(0, "config", "set", "app.mode=fleet", "app.greeting=hi")
    hub.code(0, "config", "set", "--group", "north", "app.mode=north", "app.greeting=hello")
    out, _ = hub.code(0, "config", "set", "--device", NORTH, "app.mode=mine")
    last = version_of(out)
    shown = fleet.until("pi-n applies every version", lambda: hub.json("config", "show", NORTH),
                        lambda v: v["applied_version"] == v["desired_version"] == last)
    layers = {e["key"]: (e["layer"], e["value"]) for e in shown["entries"]}
    check(layers == {"app.mode": (f"device:{NORTH}", "mine"),
                     "app.greeting": ("group:north", "hello")},
          "config show: each key with the layer it comes from, the latest layer winning", shown)
    check(north.ok("config", "get", "app.greeting", "--data-dir", north.data).strip() == "hello",
          "the device's programs read it with fleetmq-agent config get")
    north.ok("config", "get", "app.unset", "--data-dir", north.data, want=1)
    check(wide.ok("config", "get", "app.mode", "--data-dir", wide.data).strip() == "fleet",
          "a device in no group takes the fleet's")

    out, _ = hub.code(0, "config", "unset", "--device", NORTH, "app.mode")
    last = version_of(out)
    fleet.until("pi-n back to its group's value",
                lambda: north.ok("config", "get", "app.mode", "--data-dir", north.data).strip(),
                lambda v: v == "north")
    stale = last - 1
    _, err = hub.code(1, "config", "set", "--if-version", str(stale), "app.mode=late",
                      what="an edit at a stale --if-version is refused")
    check(str(last) in err, "naming the version it is at", err)
    hub.code(0, "config", "set", "--if-version", str(last), "app.mode=eco",
             what="and taken at the current one")

    # --- a key no agent of this release takes: a typo, refused before it is sent ---
    before = hub.json("config", "show", NORTH)["desired_version"]
    _, err = hub.code(2, "config", "set", "host.intervl_ms=5000",
                      what="a key agents do not take is refused as a command-line mistake")
    check("host.intervl_ms" in err and "host.interval_ms" in err and "--force" in err,
          "naming the key, the keys agents take, and --force", err)
    check(hub.json("config", "show", NORTH)["desired_version"] == before,
          "and nothing changes", before)
    out, _ = hub.code(0, "config", "set", "--all", "--force", "future.key=1",
                      what="--force sets it (for agents newer than the hub); --all names the fleet")
    last = version_of(out)
    status = fleet.until("the devices report version " + str(last),
                         lambda: hub.json("config", "status"),
                         lambda s: all(d["applied_version"] == last for d in s["devices"]))
    check(all("future.key" in d["errors"] for d in status["devices"]),
          "and each device refuses a key it does not take, saying so", status["devices"])
    hub.code(0, "config", "unset", "future.key", what="unset takes it out without --force")

    # --- may_set: what a device lets the hub change ------------------------------
    out, _ = hub.code(0, "config", "set", "jobs.allow=echo,exec", "telemetry.sample_interval_ms=5")
    last = version_of(out)
    status = fleet.until("both devices report version " + str(last),
                         lambda: hub.json("config", "status"),
                         lambda s: all(d["applied_version"] == last for d in s["devices"]))
    by_device = {d["device"]: d for d in status["devices"]}
    north_errors = by_device[NORTH]["errors"]
    check(by_device[NORTH]["state"] == "failed" and "may_set" in north_errors.get("jobs.allow", "")
          and "100" in north_errors.get("telemetry.sample_interval_ms", ""),
          "config status: a key outside may_set and a value under the agent's minimum "
          "are refused, with why", by_device[NORTH])
    check(set(by_device[WIDE]["errors"]) == {"telemetry.sample_interval_ms"},
          "a device whose may_set names jobs.allow takes it", by_device[WIDE])
    check(status["groups"].get("north", {}).get("failed") == 1,
          "per group: how many are in sync, pending, failed", status["groups"])
    check(north.ok("config", "get", "jobs.allow", "--data-dir", north.data, want=1) == "",
          "the refused key keeps its local value: not set by the hub here")
    check(wide.ok("config", "get", "jobs.allow", "--data-dir", wide.data).strip() == "echo,exec",
          "values are text, lists a,b,c")

    # --- limits ---------------------------------------------------------------------
    _, err = hub.code(1, "config", "set", "app.big=" + "x" * 4097,
                      what="a value over 4 KiB is refused")
    check("4096" in err, "saying the limit", err)
    _, err = hub.code(1, "config", "set", "app.Bad Key=1", what="a key not of dotted words")
    check("dotted words" in err, "is refused, saying what a key is", err)
    # Each key and value 4,009 bytes: eight fit beside the rest (about 70
    # bytes), a ninth would not.
    accepted = 0
    while accepted < 10:
        code, _, err = hub.run("config", "set", "--device", NORTH,
                               f"app.fill{accepted}=" + "y" * 4000)
        if code != 0:
            break
        accepted += 1
    check(accepted == 8 and code == 1, "an edit past a device's 32 KiB is refused",
          (accepted, code, err))
    check(NORTH in err, "naming the device", err)

    # --- a device that joins a group gets the group's keys, however old they are -----
    # north's greeting (an early version) is older than every version pi-w
    # applied since; its version alone would say pi-w has nothing to get.
    check(wide.ok("config", "get", "app.greeting", "--data-dir", wide.data).strip() == "hi",
          "pi-w, in no group, reads the fleet's greeting")
    check(wide.stop() == 0, "pi-w stops cleanly")
    wide.words += ["--group", "north"]
    wide.start()
    fleet.until("pi-w, now in north, takes north's greeting",
                lambda: wide.ok("config", "get", "app.greeting", "--data-dir", wide.data).strip(),
                lambda v: v == "hello")
    shown = fleet.until("and reports it applied", lambda: hub.json("config", "show", WIDE),
                        lambda v: v["applied_version"] >= v["desired_version"])
    check({e["key"]: e["layer"] for e in shown["entries"]}.get("app.greeting") == "group:north",
          "config show: the key from its new group's layer", shown)

    # --- kept across a restart, before the hub says anything --------------------------
    fleet.until("pi-n applies the last version", lambda: hub.json("config", "show", NORTH),
                lambda v: v["applied_version"] == v["desired_version"])
    check(north.stop() == 0, "pi-n stops cleanly")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    north.start(hub=nowhere)
    got = north.status_until("pi-n, restarted with no hub to reach, answers", lambda st: True)
    check(got["linked"] is False, "it has no hub", got["linked"])
    check(north.ok("config", "get", "app.greeting", "--data-dir", north.data).strip() == "hello",
          "and its programs still read what the hub set")


if __name__ == "__main__":
    sys.exit(client.script_main("desired configuration", run, __doc__, fleet.OWN))
