#!/usr/bin/env python3
"""Log files followed on a device, as the README ("Log files") promises:
the lines of `[logs] files` reach the hub whole, with their file as their
source, and `fleetmq-hub logs` and `/api/logs` read them back by device,
source, text and cursor. What a file held before the agent's first start
is not sent (start_at = "end"); a line still being written waits for its
end; a file renamed away by a rotation is read on until it stops
growing (5 s), its last unfinished line included, before the new one from
its start; a file that
appears later is read from its start; a clean restart, and a kill -9,
read on from where each file was left, losing nothing (a line may come
twice after a kill, never after a clean stop). The journal, read through
a journalctl (a stand-in that prints one entry and records how it was
asked), is sent as `journal:UNIT` at the entry's time, and asked again
after the last entry taken. `status` shows each file. A relative path is
refused with the key named. The second file has multi-line entries: a
stack trace goes as one line with the line before it, and lists of its
own (`[logs.filters]`): a line that holds their text stays on the device
while the same text in the first file is sent. The hub sets the
device's files, a pattern
(`DIR/*.log`) among them, whose files that come later are read from
their start with their own path as their source, and then
`logs.drop_lines`: the lines that hold its texts stay on the device,
counted in `status`; then the pattern's own list
(`logs.filters.drop_lines`), which leaves out its lines alone, and how
its multi-line entries begin (`logs.multiline`).

It starts a hub of its own and an agent of its own, pi-log, with host
metrics and local ingest off. Python's standard library only. Run by
`tests/tests/conformance.rs`; by hand:

    python3 device_logs.py --hub-command=target/debug/fleetmq-hub \\
        --agent-command=target/debug/fleetmq-agent --work=AN_EMPTY_DIRECTORY

Each command is a binary, or a runner and it. Exit status as client.py's.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
import fleet  # noqa: E402
from client import check  # noqa: E402

DEVICE = "pi-log"
# journalctl as the agent runs it: one entry unless asked for what came
# after a cursor, then following until its parent (the agent) is gone.
JOURNALCTL = """#!/bin/sh
echo "$@" >> "$0.args"
case "$*" in
  *--after-cursor=*) ;;
  *) printf '__CURSOR=k1\\n__REALTIME_TIMESTAMP=1700000000000000\\n'
     printf '_SYSTEMD_UNIT=pump.service\\nMESSAGE=pump started\\n\\n' ;;
esac
while kill -0 $PPID 2>/dev/null; do sleep 0.1; done
"""


def config(files, journalctl=None):
    listed = ", ".join(json.dumps(f) for f in files)
    journal = f"journal = true\njournalctl = {json.dumps(journalctl)}\n" if journalctl else ""
    # The second file's entries begin with "a ": other lines continue them.
    multiline = f"[logs.multiline]\n{json.dumps(files[1])} = \"a \"\n" if len(files) > 1 else ""
    # The second file's own filter: its heartbeats stay on the device.
    if len(files) > 1:
        multiline += f"[logs.filters.{json.dumps(files[1])}]\ndrop_lines = [\"heartbeat\"]\n"
    return ("[telemetry]\nflush_interval_ms = 10\n[ingest]\nudp = \"\"\n"
            "[host]\ninterval_ms = 0\n"
            # Back in 1.5 s after a kill -9: the hub lets a new connection
            # in once the old one missed three heartbeats.
            "[presence]\nheartbeat_ms = 500\n"
            # The hub may set its log sources.
            "[remote]\nmay_set = [\"app.*\", \"logs.*\"]\n"
            f"[logs]\nfiles = [{listed}]\npoll_ms = 100\n{journal}{multiline}")


def append(path, text):
    with open(path, "a") as f:
        f.write(text)


def run(args, _ctx):
    app = os.path.join(args.work, "app.log")
    later = os.path.join(args.work, "later.log")
    append(app, "written before the agent started\n")
    refused(args, app)
    journalctl = os.path.join(args.work, "journalctl")
    with open(journalctl, "w") as f:
        f.write(JOURNALCTL)
    os.chmod(journalctl, 0o755)
    hub = fleet.Hub(args.hub_command, args.work, "")
    agent = None
    try:
        agent = fleet.Agent(args.agent_command, args.work, hub.cli, hub.data,
                            hub.endpoints["telemetry"], DEVICE,
                            config([app, later], journalctl))
        following(agent, app, later)
        want = ["pump started"]
        stored(hub, want, "the journal's entry reaches the hub")
        journal = hub.cli.json("logs", "--source", "journal:pump.service")
        check([(r["text"], r["ts_ms"]) for r in journal] == [("pump started", 1700000000000)],
              "as journal:UNIT, at the entry's own time", journal)

        append(app, "one\ntwo\nthr")
        want += ["one", "two"]
        stored(hub, want, "complete lines reach the hub; the one being written waits")
        append(app, "ee\n")
        want.append("three")
        stored(hub, want, "a line is sent once it is finished")

        # logrotate's default: the file is renamed and a new one made. The
        # program writes on to the old one until it reopens its log; all
        # of it comes, unfinished last line and all, before the new file.
        append(app, "four\nfive")
        os.rename(app, app + ".1")
        append(app, "six, in the new file\n")
        append(app + ".1", ", written after the rename\nseven, never finished")
        want += ["four", "five, written after the rename", "seven, never finished",
                 "six, in the new file"]
        stored(hub, want, "a rotated file is read until it stops growing, then the new one")

        append(later, "a file that came later\n")
        want.append("a file that came later")
        stored(hub, want, "a file that appears is read from its start")
        append(later, "a crash\n  at pump.c:12\n  at main.c:3\n")
        want.append("a crash\n  at pump.c:12\n  at main.c:3")
        stored(hub, want, "lines that do not begin an entry ([logs.multiline]) go with the "
               "one before, as one line")
        append(later, "a heartbeat\na sensor read\n")
        append(app, "a heartbeat in app.log\n")
        want += ["a heartbeat in app.log", "a sensor read"]
        stored(hub, want, "a file's own [logs.filters] leaves its lines that hold its text on "
               "the device, and only its")

        check(agent.stop() == 0, "the agent stops cleanly")
        append(app, "while the agent was stopped\n")
        agent.start()
        want.append("while the agent was stopped")
        stored(hub, want, "a restart reads on from where the file was left")

        agent.proc.send_signal(signal.SIGKILL)
        agent.proc.wait(timeout=client.WAIT_S)
        append(app, "while the agent was killed\n")
        agent.start()
        want.append("while the agent was killed")
        texts = stored(hub, want, "after a kill -9, too", exact=False)
        check(sorted(set(texts)) == sorted(want), "and nothing else came", texts)

        queries(hub, app, later)
        status = agent.status()["logs"]["files"]
        check(status[0]["path"] == app and status[0]["state"] == "following"
              and status[0]["lines"] >= 1 and status[-1]["path"] == "journal",
              "status shows each file, where it stands and the lines it read", status)
        with open(journalctl + ".args") as f:
            asked = f.read().splitlines()
        check(len(asked) == 3 and "--lines=0" in asked[0]
              and all("--after-cursor=k1" in a for a in asked[1:]),
              "journalctl is asked for new entries first, then for those after the last "
              "taken", asked)
        from_hub(hub, agent, want)
    finally:
        for p in (agent, hub):
            if p:
                p.stop()


def refused(args, app):
    """A relative path is refused before anything runs, naming the key."""
    bad = os.path.join(args.work, "bad.toml")
    with open(bad, "w") as f:
        f.write(config(["var/log/syslog"]))
    done = subprocess.run([*shlex.split(args.agent_command), "run", "--config", bad,
                           "--hub", "tcp://127.0.0.1:1", "--device-id", "pi-bad", "--insecure",
                           "--data-dir", os.path.join(args.work, "pi-bad")],
                          capture_output=True, text=True, timeout=client.WAIT_S)
    check(done.returncode != 0 and "logs.files" in done.stderr and "absolute" in done.stderr,
          "a relative path in [logs] files stops the agent, naming the key", done.stderr[-400:])


def following(agent, app, later):
    status = agent.status_until(
        "the agent follows app.log once the hub said it takes log lines",
        lambda s: s["logs"]["waiting"] == ""
        and [f["state"] for f in s["logs"]["files"]][:1] == ["following"])
    files = status["logs"]["files"]
    check([f["path"] for f in files] == [app, later, "journal"],
          "status lists each file, and the journal", files)
    check(files[1]["state"].startswith("missing"), "and says one is not there yet", files)


def stored(hub, want, what, exact=True):
    """The texts of pi-log's stored lines once they are `want` (each of
    `want` at least once, in order, if not `exact`)."""
    def holds(texts):
        if exact:
            return texts == want
        return [t for t in dict.fromkeys(texts)] == want
    rows = fleet.until(what, lambda: hub.cli.json("logs", "--device", DEVICE, "--last", "1000"),
                       lambda rows: holds([r["text"] for r in rows]))
    return [r["text"] for r in rows]


def from_hub(hub, agent, want):
    """The hub sets the device's files (its may_set names logs.*): they
    apply at once, and a file that comes later is read from its start, as
    is one a pattern matches."""
    work = os.path.dirname(agent.data)
    third = os.path.join(work, "from-the-hub.log")
    many = os.path.join(work, "many")
    os.makedirs(many, exist_ok=True)
    pattern = os.path.join(many, "*.log")
    hub.cli.code(0, "config", "set", "--device", DEVICE, f"logs.files={third},{pattern}")
    agent.status_until("the agent follows the file and the pattern the hub named",
                       lambda s: [f["path"] for f in s["logs"]["files"]]
                       == [pattern, third, "journal"])
    append(third, "named by the hub\n")
    want.append("named by the hub")
    stored(hub, want, "its lines reach the hub", exact=False)
    matched = os.path.join(many, "pump.log")
    append(os.path.join(many, "pump.txt"), "not matched\n")
    append(matched, "matched by a pattern\n")
    want.append("matched by a pattern")
    stored(hub, want, "a file that comes to a pattern's directory is read from its start",
           exact=False)
    rows = hub.cli.json("logs", "--source", matched)
    check([r["text"] for r in rows] == ["matched by a pattern"],
          "with its own path as its source", rows)
    status = agent.status()["logs"]["files"]
    check(status[0] == {"path": pattern, "state": "1 file matches", "offset": 0, "lines": 1},
          "status shows the pattern, the files it matches and their lines", status)

    # The hub leaves a chatty program's debug lines on the device.
    with open(agent.log_path) as f:
        logged_before = len(f.readlines())
    hub.cli.code(0, "config", "set", "--device", DEVICE, "logs.drop_lines=DEBUG,GET /health*")
    agent.status_until("the agent applies the hub's logs.drop_lines",
                       lambda s: s["config"]["values"].get("logs.drop_lines")
                       == "DEBUG,GET /health*")
    append(matched, "DEBUG tick\nGET /health 200\nafter the dropped lines\n")
    want.append("after the dropped lines")
    stored(hub, want, "lines that hold a text of drop_lines are not sent; the rest are",
           exact=False)
    status = agent.status_until("status counts the lines dropped",
                                lambda s: s["logs"]["files"][0].get("dropped") == 2)
    # Counted since [logs] last changed (the hub's edit opened the sources again).
    check(status["logs"]["files"][0]["lines"] == 1, "and the lines sent apart",
          status["logs"]["files"])
    # Said once each time the sources open (the hub's edit opened them).
    with open(agent.log_path) as f:
        said = [line for line in f.readlines()[logged_before:]
                if "left out by [logs] keep_lines or drop_lines" in line]
    check(len(said) == 1, "the agent's log says once that lines are left out, and where "
          "they are counted", said)

    # The hub gives the pattern a list of its own: its noisy lines stay on
    # the device, while the same text from another file is stored.
    own = f"{pattern}=noisy"
    hub.cli.code(0, "config", "set", "--device", DEVICE, f"logs.filters.drop_lines={own}")
    agent.status_until("the agent applies the hub's logs.filters.drop_lines",
                       lambda s: s["config"]["values"].get("logs.filters.drop_lines") == own)
    append(matched, "noisy pump\nafter the pattern's own list\n")
    want.append("after the pattern's own list")
    stored(hub, want, "a source's own list set from the hub leaves out its lines", exact=False)
    append(third, "a noisy line of another file\n")
    want.append("a noisy line of another file")
    stored(hub, want, "and only its lines", exact=False)
    status = agent.status_until("status counts the line the pattern's own list dropped",
                                lambda s: s["logs"]["files"][0].get("dropped") == 1)
    check(status["logs"]["files"][0]["lines"] == 1, "and the line it sent",
          status["logs"]["files"])

    # The hub says how the pattern's multi-line entries begin.
    begins = f"{pattern}=E "
    hub.cli.code(0, "config", "set", "--device", DEVICE, f"logs.multiline={begins}")
    agent.status_until("the agent applies the hub's logs.multiline",
                       lambda s: s["config"]["values"].get("logs.multiline") == begins)
    append(matched, "E crash\n  at pump.c:7\nE next\n")
    want += ["E crash\n  at pump.c:7", "E next"]
    stored(hub, want, "lines that do not begin an entry go with the one before it, as the "
           "hub's logs.multiline says", exact=False)


def queries(hub, app, later):
    rows = hub.cli.json("logs", "--from-start")
    check(all(r["device"] == DEVICE and r["source"] in (app, later, "journal:pump.service")
              for r in rows), "each line carries its device and its file", rows[:3])
    check([r["id"] for r in rows] == sorted(r["id"] for r in rows), "oldest first", rows)
    only = hub.cli.json("logs", "--source", later)
    check([r["text"] for r in only] == ["a file that came later",
                                        "a crash\n  at pump.c:12\n  at main.c:3",
                                        "a sensor read"],
          "--source picks a file",
          only)
    grep = hub.cli.json("logs", "--grep", "rotated") + hub.cli.json("logs", "--grep", "six")
    check([r["text"] for r in grep] == ["six, in the new file"], "--grep picks by text", grep)
    after = hub.cli.json("logs", "--after", str(rows[1]["id"]))
    check(after == rows[2:], "--after reads on from a cursor", (after[:2], rows[2:4]))
    plain, _ = hub.cli.code(0, "logs", "--last", "1")
    check(DEVICE in plain and app in plain and rows[-1]["text"] in plain,
          "the text form names the device, the file and the line", plain)
    query = urllib.parse.urlencode({"device": DEVICE, "grep": "four"})
    with urllib.request.urlopen(f"{hub.endpoints['http']}/api/logs?{query}",
                                timeout=client.WAIT_S) as r:
        api = json.load(r)
    check([(r["text"], r["source"]) for r in api] == [("four", app)],
          "/api/logs answers as the command line does", api)


if __name__ == "__main__":
    sys.exit(client.script_main("device_logs", run, __doc__, fleet.OWN))
