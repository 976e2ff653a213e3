#!/usr/bin/env python3
"""Backups, as the README ("Backups: a copy taken while the hub runs")
tells an operator to take them: `fleetmq-hub backup DIR` beside a running
hub, what it writes and with which modes, `--json`'s shape, a backup that
would replace a file refused, the hub storing on, and the copy run as a
data directory: the same key, the samples stored before it, old jobs
kept and new job ids a billion past them. Then the device moves to the
restored hub, as after a lost one: it gets in, is sent the restored
configuration though it applied a later one, and runs a new job rather
than answering it from memory of the lost hub's job of the same number.

It starts a hub of its own and an agent of its own, pi-bk, with host
metrics off, so that what is stored is what the script sent. Python's
standard library only. Run by `tests/tests/conformance.rs`; by hand:

    python3 backup.py --hub-command=target/debug/fleetmq-hub \
        --agent-command=target/debug/fleetmq-agent --work=AN_EMPTY_DIRECTORY

Each command is a binary, or a runner and it. Exit status as client.py's.
"""

import os
import re
import stat
import subprocess
import sys

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
import fleet  # noqa: E402
from client import check  # noqa: E402
from operator_cli import Cli  # noqa: E402

DEVICE = "pi-bk"
AGENT = ("[telemetry]\nflush_interval_ms = 10\n[ingest]\nudp = \"\"\n"
         "[host]\ninterval_ms = 0\n")
FILES = ["hub.db", "hub.key", "hub.pub", "allowed_devices"]


def run(args, _ctx):
    hub = fleet.Hub(args.hub_command, args.work, "")
    agent = restored = None
    try:
        agent = fleet.Agent(args.agent_command, args.work, hub.cli, hub.data,
                            hub.endpoints["telemetry"], DEVICE, AGENT)
        fleet.until("pi-bk online", lambda: hub.cli.json("devices"),
                    lambda ds: [d["id"] for d in ds if d["online"]] == [DEVICE])
        for n in range(1, 11):
            send(agent, n)
        until_stored(hub, 10)
        hub.cli.code(0, "config", "set", "app.color=blue")
        until_config(agent, "blue")
        job = hub.cli.json("job", "submit", "--wait", "echo", "before the backup")
        check(job.get("state") == "done", "a job done before the backup", job)

        copy = os.path.join(args.work, "copy")
        os.mkdir(copy)
        to = os.path.join(copy, "hub-data")
        written(hub.cli.json("backup", to), to, hub.data)

        send(agent, 11)
        until_stored(hub, 11)
        hub.cli.code(0, "config", "set", "app.color=red")
        until_config(agent, "red")
        live = hub.cli.json("job", "submit", "--wait", "echo", "on the original")
        check(live.get("id") == job["id"] + 1 and live.get("state") == "done",
              "the original hub goes on, its job ids as before", (job, live))
        _, err = hub.cli.code(2, "backup", to, what="a backup into a directory that is not "
                              "empty exits 2")
        check("not empty" in err and to in err, "and says the directory is not empty", err)
        nowhere = Cli(args.hub_command, os.path.join(args.work, "no-hub-here"))
        _, err = nowhere.code(2, "backup", os.path.join(args.work, "b2"),
                              what="a backup of a directory with no hub.db exits 2")
        check("no hub.db" in err, "and says there is no hub.db there", err)
        check(not os.path.exists(os.path.join(args.work, "b2")),
              "and makes no backup directory", os.listdir(args.work))
        kept_series(hub, os.path.join(args.work, "series"))

        restored = fleet.Hub(args.hub_command, copy, "")
        restore(restored, job["id"])
        moved(agent, restored)
    finally:
        for p in (agent, restored, hub):
            if p:
                p.stop()


def kept_series(hub, series):
    """`backup --keep 2 DIR` three times: each a data directory in DIR
    named by its time; the third removes the first, and only it."""
    os.makedirs(os.path.join(series, "notes"))
    made = []
    for i in range(3):
        doc = hub.cli.json("backup", "--keep", "2", series)
        check(os.path.dirname(doc["dir"]) == series
              and re.fullmatch(r"hub-\d{8}T\d{6}Z(-\d{3})?", os.path.basename(doc["dir"])),
              "backup --keep makes DIR/hub-YYYYMMDDTHHMMSSZ", doc["dir"])
        check(os.path.isfile(os.path.join(doc["dir"], "hub.db")), "holding the store")
        check(doc["removed"] == made[:1] if i == 2 else doc["removed"] == [],
              "the oldest beyond the newest 2 is removed, once the new one is whole", doc)
        made.append(doc["dir"])
    check(sorted(os.listdir(series)) == sorted([os.path.basename(d) for d in made[1:]] + ["notes"]),
          "the newest two are kept, and nothing else in DIR is touched", os.listdir(series))
    _, err = hub.cli.code(2, "backup", "--keep", "0", series, what="--keep 0 exits 2")
    check("keep at least 1" in err, "and says to keep at least one", err)


def send(agent, n):
    agent.ok("send", "--data-dir", agent.data, f"bk.n={n}")


def values(hub):
    rows = hub.cli.json("telemetry", "--device", DEVICE, "--name", "bk.n", "--from-start")
    return [r["value"] for r in rows]


def until_stored(hub, n):
    fleet.until(f"the hub stores bk.n = 1 to {n}", lambda: values(hub),
                lambda vs: vs == list(range(1, n + 1)))


def written(doc, to, data):
    """What `backup --json` printed, and the files it wrote."""
    check(doc.get("dir") == to, "backup --json names the directory", doc)
    names = [f.get("name") for f in doc.get("files", [])]
    check(names == FILES, "the store, the hub's key pair and its allow list", names)
    for f in doc["files"]:
        path = os.path.join(to, f["name"])
        check(os.path.getsize(path) == f["bytes"] > 0, f"{f['name']}: its size as printed",
              (f, os.path.getsize(path)))
    mode = stat.S_IMODE(os.stat(to).st_mode)
    check(mode == 0o700, "the backup directory is made 0700", oct(mode))
    mode = stat.S_IMODE(os.stat(os.path.join(to, "hub.key")).st_mode)
    check(mode == 0o600, "hub.key stays 0600", oct(mode))
    for name in ("hub.pub", "allowed_devices"):
        with open(os.path.join(to, name)) as a, open(os.path.join(data, name)) as b:
            check(a.read() == b.read(), f"{name} is the hub's", name)


def until_config(agent, color):
    """Waits until the device's programs read `color`; until the document
    arrives `config get` exits 1, which is asked again."""
    def read():
        done = subprocess.run([*agent.command, "config", "get", "app.color", "--data-dir",
                               agent.data], capture_output=True, text=True, timeout=client.WAIT_S)
        return done.stdout.strip() if done.returncode == 0 else done.stderr.strip()
    fleet.until(f"the device applies app.color = {color}", read, lambda v: v == color)


def restore(restored, old_job):
    """A hub run on the copy, as the README restores one."""
    check(restored.endpoints.get("security") == "curve", "the copy runs as a data directory, "
          "on CURVE with its key", restored.endpoints)
    devices = restored.cli.json("devices")
    check([d["id"] for d in devices] == [DEVICE], "the device is known to it", devices)
    vs = values(restored)
    check(vs == list(range(1, 11)), "it holds what was stored before the backup, and not "
          "what came after", vs)
    shown = restored.cli.json("job", "show", str(old_job))
    check(shown.get("state") == "done", "the job done before the backup is kept", shown)
    listed = restored.cli.json("job", "list")
    check([j["id"] for j in listed] == [old_job], "and only it: what came after is not", listed)


def moved(agent, restored):
    """The device, moved to the restored hub."""
    agent.stop()
    agent.start(hub=restored.endpoints["telemetry"])
    fleet.until("the device gets into the restored hub (same key, its allow list)",
                lambda: restored.cli.json("devices"),
                lambda ds: [d["id"] for d in ds if d["online"]] == [DEVICE])
    until_config(agent, "blue")
    new = restored.cli.json("job", "submit", "--wait", "echo", "after the restore")
    check(new.get("id", 0) > 1_000_000_000, "a new job's id is a billion past the backup's",
          new)
    check(new.get("state") == "done" and "after the restore" in str(new),
          "and the device runs it, not answering with the lost hub's job of its number", new)


if __name__ == "__main__":
    sys.exit(client.script_main("backup", run, __doc__, fleet.OWN))
