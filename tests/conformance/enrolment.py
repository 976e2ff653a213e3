#!/usr/bin/env python3
"""Who gets in, as the README's Security section ("Keys", "Enrolment",
"An agent that cannot get in says why", "Clones are loud") tells an
operator: the key pair and the printed `fleetmq-hub allow` line, the
running hub applying the allow list, each reason a device that cannot
get in gives in `status`, a clone refused and counted, a key rotated and
the old one revoked, a revoked device shown as such, a device's
groups pinned by the allow list, and a decommissioned device forgotten
(and back once enrolled again).

It starts a hub of its own and agents of its own, each run by hand here
(not enrolled first, another hub's key, an address where nothing
listens, a copy of a data directory). Python's standard library only. Run
by `tests/tests/conformance.rs`; by hand:

    python3 enrolment.py --hub-command=target/debug/fleetmq-hub \
        --agent-command=target/debug/fleetmq-agent --work=AN_EMPTY_DIRECTORY

Each command is a binary, or a runner and it. Exit status as client.py's.
"""

import os
import shlex
import shutil
import stat
import subprocess
import sys

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
import fleet  # noqa: E402
from client import check  # noqa: E402
from operator_cli import unused_port  # noqa: E402

AGENT = ("[telemetry]\nflush_interval_ms = 50\nsample_interval_ms = 200\n"
         "[ingest]\nudp = \"\"\n[host]\ninterval_ms = 0\n")


class Device(fleet.Device):
    """`fleetmq-agent` for `device` with data in `data`, run by hand."""

    def __init__(self, args, device, data):
        super().__init__(args.agent_command, data)
        self.work = args.work
        self.device = device
        self.config = os.path.join(args.work, "agent.toml")
        with open(self.config, "w") as f:
            f.write(AGENT)
        self.runs = 0

    def run(self, hub, hub_key, *extra):
        self.runs += 1
        log = os.path.join(self.work, f"{os.path.basename(self.data)}-{self.runs}.log")
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [*self.command, "run", "--config", self.config, "--hub", hub, "--hub-key",
                 hub_key, "--device-id", self.device, "--data-dir", self.data, *extra],
                stdout=out, stderr=subprocess.STDOUT)
        return self

    def problem(self, what, *words):
        """Waits for `status` to give a `hub_problem` holding every word."""
        status = self.status_until(what, lambda s: s["hub_problem"] != "")
        check(all(w in status["hub_problem"] for w in words),
              f"{what}: hub_problem says {words}", status["hub_problem"])


def run(args, _ctx):
    hub = fleet.Hub(args.hub_command, args.work, "")
    devices = []
    try:
        cannot_get_in(args, hub, devices)
        clones(args, hub, devices)
        rotation(args, hub, devices)
        pinned(args, hub, devices)
        forgotten(hub, devices)
    finally:
        for d in devices:
            d.stop()
        hub.stop()


def enrol_line(keygen_out):
    lines = [line for line in keygen_out.splitlines() if line.startswith("fleetmq-hub allow ")]
    check(len(lines) == 1, "keygen prints one `fleetmq-hub allow` line", keygen_out)
    return shlex.split(lines[0])[1:]


def online(hub, device):
    fleet.until(f"{device} online", lambda: hub.cli.json("devices"),
                lambda ds: any(d["id"] == device and d["online"] for d in ds))


def cannot_get_in(args, hub, devices):
    telemetry, hub_pub = hub.endpoints["telemetry"], os.path.join(hub.data, "hub.pub")
    pi = Device(args, "pi-1", os.path.join(args.work, "pi-1"))
    devices.append(pi)
    allow = enrol_line(pi.ok("keygen", "--device-id", "pi-1", "--data-dir", pi.data))
    key = allow[-1]
    with open(os.path.join(pi.data, "agent.pub")) as f:
        check(f.read().strip() == key, "the line names the key in DATA_DIR/agent.pub")
    mode = stat.S_IMODE(os.stat(os.path.join(pi.data, "agent.key")).st_mode)
    check(mode == 0o600, "agent.key is mode 0600", oct(mode))
    pi.ok("keygen", "--device-id", "pi-1", "--data-dir", pi.data, want=1)

    # --- each reason a device that cannot get in gives --------------------------
    pi.run(telemetry, hub_pub)
    pi.problem("not enrolled", "refused this device's key", "fleetmq-hub allow")
    pi.stop()
    # Three more at once, each a device of its own: what the agent sees
    # by itself takes the grace to be said.
    other = os.path.join(args.work, "other-hub")
    hub.cli.code(0, "keygen", "--data-dir", other, hub=False)
    cases = [("another hub's key", telemetry, os.path.join(other, "hub.pub"),
              ["no handshake", "hub_public_key"]),
             ("nothing listening", f"tcp://127.0.0.1:{unused_port()}", hub_pub,
              ["nothing answers"]),
             ("a name that does not resolve", "tcp://no-such-host.invalid:7750", hub_pub,
              ["no-such-host.invalid", "does not resolve"])]
    lost = []
    for i, (_, address, key_file, _) in enumerate(cases):
        d = Device(args, f"pi-lost{i}", os.path.join(args.work, f"pi-lost{i}"))
        devices.append(d)
        lost.append(d.run(address, key_file))
    for d, (what, _, _, words) in zip(lost, cases):
        d.problem(what, *words)
        d.stop()
    hub.cli.code(0, "allow", "pi-3", key, what="the key enrolled under another id")
    pi.run(telemetry, hub_pub)
    pi.problem("enrolled under another id", "enrolled as pi-3, not pi-1")
    pi.stop()
    hub.cli.code(0, "revoke", "pi-3")
    refused = hub.cli.json("stats")["handshakes_refused"]
    check(refused >= 1, "refused handshakes are counted", refused)

    # --- enrolled: the printed line, applied by the running hub ------------------
    hub.cli.code(0, *allow, what="the printed allow line enrols it")
    pi.run(telemetry, hub_pub)
    pi.status_until("enrolled, it gets in", lambda s: s["linked"] and s["hub_problem"] == "")
    online(hub, "pi-1")
    sent = pi.status_until("what it kept while it could not get in is acked",
                           lambda s: s["batches"]["acked"] >= 3)
    check(sent["batches"]["renumbered"] == 0 and hub.cli.json("stats")["batches_renumbered"] == 0,
          "batches from the runs that could not get in are not taken for a clone's",
          (sent["batches"], hub.cli.json("stats")["batches_renumbered"]))


def clones(args, hub, devices):
    """A copy of pi-1's data directory is refused while pi-1 is online,
    loudly: in its status, and counted at the hub."""
    telemetry, hub_pub = hub.endpoints["telemetry"], os.path.join(hub.data, "hub.pub")
    source = devices[0]
    copy = os.path.join(args.work, "pi-1-clone")
    shutil.copytree(source.data, copy,
                    ignore=shutil.ignore_patterns("*.sock", "*.lock", "*.pid"))
    clone = Device(args, "pi-1", copy)
    devices.append(clone)
    clone.run(telemetry, hub_pub)
    clone.problem("a clone", "another agent is connected as pi-1", "clone")
    listed = fleet.until("devices counts the clone's messages, with its address",
                         lambda: hub.cli.json("devices"),
                         lambda ds: any(d["id"] == "pi-1" and d["conflicts"] > 0 for d in ds))
    pi = next(d for d in listed if d["id"] == "pi-1")
    check(pi["online"] and pi["conflict_address"] == "127.0.0.1",
          "the first agent keeps the device", pi)
    check(hub.cli.json("stats")["connection_conflicts"] > 0, "stats counts connection_conflicts")
    clone.stop()


def rotation(args, hub, devices):
    """A second key for pi-1: both get in until the old one is revoked,
    which cuts off only the agent holding it."""
    telemetry, hub_pub = hub.endpoints["telemetry"], os.path.join(hub.data, "hub.pub")
    old = devices[0]
    new = Device(args, "pi-1", os.path.join(args.work, "pi-1-new"))
    devices.append(new)
    allow = enrol_line(new.ok("keygen", "--device-id", "pi-1", "--data-dir", new.data))
    with open(os.path.join(old.data, "agent.pub")) as f:
        old_key = f.read().strip()
    out, _ = hub.cli.code(0, *allow, what="a second key for a device is enrolled")
    revoke = [line.split(": ", 1)[-1] for line in out.splitlines() if "revoke" in line]
    check(revoke and shlex.split(revoke[-1]) == ["fleetmq-hub", "revoke", "pi-1", "--key", old_key],
          "it prints the revoke --key line that retires the old key", out)
    hub.cli.code(0, *shlex.split(revoke[-1])[1:], what="the printed revoke line runs")
    old.problem("the old key revoked", "refused this device's key")
    new.run(telemetry, hub_pub)
    new.status_until("the new key gets in", lambda s: s["linked"])
    online(hub, "pi-1")
    new.stop()
    old.stop()
    hub.cli.code(0, "revoke", "pi-1")
    listed = fleet.until("a device with no key left is shown revoked",
                         lambda: hub.cli.json("devices"),
                         lambda ds: any(d["id"] == "pi-1" and d["state"] == "revoked"
                                        for d in ds))
    check(next(d for d in listed if d["id"] == "pi-1")["revoked"] is True,
          "devices --json: revoked", listed)


def pinned(args, hub, devices):
    """`allow --groups` pins a device's groups, whatever its agent says."""
    telemetry, hub_pub = hub.endpoints["telemetry"], os.path.join(hub.data, "hub.pub")
    pi = Device(args, "pi-g", os.path.join(args.work, "pi-g"))
    devices.append(pi)
    allow = enrol_line(pi.ok("keygen", "--device-id", "pi-g", "--data-dir", pi.data))
    hub.cli.code(0, *allow, "--groups", "north", what="allow --groups pins the groups")
    with open(os.path.join(hub.data, "allowed_devices")) as f:
        check(any(line.startswith("pi-g ") and line.rstrip().endswith("groups=north")
                  for line in f), "the line gets groups=north")
    pi.run(telemetry, hub_pub, "--group", "south")
    status = pi.status_until("the agent reports the pinned groups",
                             lambda s: s["linked"] and s["groups"] == ["north"])
    check(status["groups"] == ["north"], "status shows north, not its configured south", status)
    listed = hub.cli.json("devices")
    check(next(d for d in listed if d["id"] == "pi-g")["groups"] == ["north"],
          "devices lists it in the pinned group", listed)


def forgotten(hub, devices):
    """`forget` takes a revoked device out of the lists and calls off the
    work waiting for it; enrolled again, it comes back with what it had."""
    telemetry, hub_pub = hub.endpoints["telemetry"], os.path.join(hub.data, "hub.pub")
    _, err = hub.cli.code(1, "forget", "pi-g", what="an enrolled device is not forgotten")
    check("revoke it first (`fleetmq-hub revoke pi-g`)" in err, "it says to revoke it first", err)
    before = next(d for d in hub.cli.json("devices") if d["id"] == "pi-1")
    stats = hub.cli.json("stats")
    known, renumbered = stats["devices_known"], stats["batches_renumbered"]
    job = hub.cli.json("job", "submit", "--device", "pi-1", "echo", "for the revoked pi-1")["id"]
    done = hub.cli.json("forget", "pi-1")
    check(done == {"device": "pi-1", "runs": 1, "shares": 0},
          "forget answers what it called off", done)
    listed = hub.cli.json("devices")
    check(all(d["id"] != "pi-1" for d in listed), "devices no longer lists it", listed)
    check(hub.cli.json("stats")["devices_known"] == known - 1, "stats counts one device fewer")
    run = hub.cli.json("job", "show", str(job), want=1, what="a job whose run failed: exit 1")["runs"][0]
    check(run["state"] == "failed" and "forgotten" in run["error"],
          "the run waiting for it failed, saying why", run)
    _, err = hub.cli.code(1, "forget", "pi-1", what="forgotten already")
    check("unknown device" in err, "a device forgotten already is unknown", err)

    # The card comes back (the newest key, enrolled again): listed again,
    # with the batches it had.
    new = next(d for d in devices if d.data.endswith("pi-1-new"))
    with open(os.path.join(new.data, "agent.pub")) as f:
        hub.cli.code(0, "allow", "pi-1", f.read().strip())
    new.run(telemetry, hub_pub)
    online(hub, "pi-1")
    back = next(d for d in hub.cli.json("devices") if d["id"] == "pi-1")
    check(back["batches"] >= before["batches"], "its stored batches count on", (before, back))
    now = hub.cli.json("stats")["batches_renumbered"]
    check(now == renumbered, "its batch numbers are still its own: none is renumbered",
          (renumbered, now))
    new.stop()


if __name__ == "__main__":
    sys.exit(client.script_main("enrolment", run, __doc__, fleet.OWN))
