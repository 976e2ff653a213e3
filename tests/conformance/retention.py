#!/usr/bin/env python3
"""A store that stays bounded, as the README ("Retention: a store that
stays bounded") tells an operator to set it: `[retention]` by size and by
age for telemetry, chat, jobs and commands, oldest out first, queued jobs
never pruned, a lowered limit worked off after a restart, and what
`stats` and `/metrics` say was pruned. Log lines kept within
`[retention.logs]`, so that a chatty log leaves the samples be.

It starts a hub of its own with small limits and an agent of its own,
pi-r, with host metrics off, so that what is stored is what the script
sent. Python's standard library only. Run by
`tests/tests/conformance.rs`; by hand:

    python3 retention.py --hub-command=target/debug/fleetmq-hub \
        --agent-command=target/debug/fleetmq-agent --work=AN_EMPTY_DIRECTORY

Each command is a binary, or a runner and it. Exit status as client.py's.
"""

import json
import os
import shlex
import subprocess
import sys
import urllib.request

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
import fleet  # noqa: E402
from client import check  # noqa: E402

DEVICE, TALKER = "pi-r", "pi-talk"
AGENT = ("[telemetry]\nflush_interval_ms = 10\n[ingest]\nudp = \"\"\n"
         "[host]\ninterval_ms = 0\n[jobs]\nallow = [\"echo\", \"exec\"]\n")
MAX_BYTES, LOWERED, LOG_BYTES = 8000, 2000, 1500
LIMITS = f"""
[retention.telemetry]
max_bytes = {MAX_BYTES}
[retention.logs]
max_bytes = {LOG_BYTES}
[retention.chat]
max_rows = 5
[retention.jobs]
max_rows = 3
[retention.commands]
max_rows = 3
"""
SENDS = 30
PAD = "p" * 100


def run(args, _ctx):
    hub = fleet.Hub(args.hub_command, args.work, LIMITS)
    agent = None
    try:
        app_log = os.path.join(args.work, "app.log")
        open(app_log, "w").close()
        following = f"[logs]\nfiles = [{json.dumps(app_log)}]\npoll_ms = 100\n"
        agent = fleet.Agent(args.agent_command, args.work, hub.cli, hub.data,
                            hub.endpoints["telemetry"], DEVICE, AGENT + following)
        fleet.until("pi-r online", lambda: hub.cli.json("devices"),
                    lambda ds: [d["id"] for d in ds if d["online"]] == [DEVICE])
        print_config(args)
        telemetry(hub, agent)
        logs(hub, app_log)
        chat(args, hub)
        queued = jobs_and_commands(hub)
        agent.stop()
        hub.stop()
        hub = fleet.Hub(args.hub_command, args.work, lowered_config())
        lowered(hub, queued)
    finally:
        if agent:
            agent.stop()
        hub.stop()


def lowered_config():
    """After a restart: telemetry's size lowered; finished jobs kept a second."""
    config = LIMITS.replace(f"max_bytes = {MAX_BYTES}", f"max_bytes = {LOWERED}")
    return config.replace("[retention.jobs]\nmax_rows = 3", "[retention.jobs]\nmax_age_s = 1")


def print_config(args):
    out = subprocess.run([*shlex.split(args.hub_command), "print-config"],
                         capture_output=True, text=True, timeout=client.WAIT_S).stdout
    for section in ("telemetry", "logs", "chat", "jobs", "commands"):
        block = out.split(f"[retention.{section}]\n", 1)
        check(len(block) == 2, f"print-config shows [retention.{section}]", out[-2000:])
        keys = {line.split(" = ")[0] for line in block[1].split("\n\n")[0].splitlines()
                if " = " in line and not line.startswith("#")}
        want = {"max_age_s", "max_bytes" if section in ("telemetry", "logs") else "max_rows"}
        check(keys == want, f"[retention.{section}]: {sorted(want)}", block[1][:400])


def stats(hub):
    return hub.cli.json("stats")


def metrics(hub):
    """`/metrics` as {name: value}, for the unlabelled lines."""
    text = urllib.request.urlopen(hub.endpoints["http"] + "/metrics",
                                  timeout=client.WAIT_S).read().decode()
    return {k: float(v) for k, v in (line.split(" ", 1) for line in text.splitlines()
                                     if line and not line.startswith("#") and "{" not in line)}


def values(hub):
    """The `r.n` values stored, oldest first."""
    rows = hub.cli.json("telemetry", "--name", "r.n", "--from-start")
    return [int(r["value"]) for r in rows]


def telemetry(hub, agent):
    for i in range(SENDS):
        agent.ok("send", f"r.n={i}", *(f"r.f{k}={k}" for k in range(4)), f"pad={PAD}",
                 "--data-dir", agent.data)
    fleet.until("the last send is stored", lambda: values(hub),
                lambda v: bool(v) and v[-1] == SENDS - 1)
    s = fleet.until(f"max_bytes = {MAX_BYTES}: the batches stored stay within it",
                    lambda: stats(hub), lambda s: s["telemetry_bytes"] <= MAX_BYTES)
    check(s["pruned_batches"] > 0 and s["pruned_records"] >= s["pruned_batches"],
          "stats counts what was pruned (batches, and the records in them)", s)
    kept = values(hub)
    check(kept and kept == list(range(kept[0], SENDS)) and kept[0] > 0,
          "the oldest went first: what is left is the newest, none missing", kept)
    m = metrics(hub)
    check(m.get("fleetmq_pruned_batches_total", -1) >= s["pruned_batches"]
          and 0 < m.get("fleetmq_telemetry_stored_bytes", -1) <= MAX_BYTES,
          "/metrics: fleetmq_pruned_batches_total and fleetmq_telemetry_stored_bytes",
          {k: v for k, v in m.items() if "pruned" in k or "stored_bytes" in k})


def logs(hub, app_log):
    """Six rounds of log lines, each a batch of about 1 KB: `[retention.logs]
    max_bytes = 1500` keeps the newest within it, and the samples stored
    before stay (without it, telemetry's 8000 bytes would have made room
    for the log lines by deleting most of them)."""
    before = values(hub)
    for r in range(6):
        with open(app_log, "a") as f:
            f.write("".join(f"round {r} line {i} {'x' * 160}\n" for i in range(5)))
        fleet.until(f"log round {r} is stored",
                    lambda: hub.cli.json("logs", "--grep", f"round {r} line 4"),
                    lambda rows: len(rows) == 1)
    fleet.until(f"[retention.logs] max_bytes = {LOG_BYTES}: log batches stay within it",
                lambda: stats(hub), lambda s: 0 < s["log_bytes"] <= LOG_BYTES)
    texts = [r["text"] for r in hub.cli.json("logs", "--from-start")]
    check(texts and texts[-1].startswith("round 5 line 4") and not any(
          t.startswith("round 0") for t in texts),
          "the oldest log lines went first; the newest are kept", texts)
    kept = values(hub)
    # Telemetry's max_bytes holds the log lines too: the samples make room
    # for at most LOG_BYTES of them, not for all that came.
    check(len(kept) >= len(before) * 2 // 3 and kept[-1] == SENDS - 1,
          "most of the samples stored before are still there", (before, kept))
    shown = metrics(hub).get("fleetmq_log_stored_bytes", -1)
    check(0 < shown <= LOG_BYTES, "/metrics: fleetmq_log_stored_bytes", shown)


def chat(args, hub):
    """Eight lines said by a device of its own with `fleetmq-agent chat`;
    `max_rows = 5` keeps the newest five."""
    talker = fleet.Agent(args.agent_command, args.work, hub.cli, hub.data,
                         hub.endpoints["telemetry"], TALKER, AGENT)
    talker.stop()
    lines = [f"line {i}" for i in range(8)]
    done = subprocess.run([*talker.command, "chat", *talker.words[1:]],
                          input="".join(f"{t}\n" for t in lines), capture_output=True,
                          text=True, timeout=client.WAIT_S)
    check(done.returncode == 0, "fleetmq-agent chat exits 0 once every line is acked",
          (done.returncode, done.stderr[-500:]))
    rows = fleet.until("chat max_rows = 5: the newest five are kept",
                       lambda: hub.cli.json("chat", "--from-start"), lambda r: len(r) <= 5)
    check([r["text"] for r in rows] == lines[3:], "the oldest lines went first", rows)
    check(stats(hub)["pruned_chat"] == 3, "stats counts the chat lines pruned")


def jobs_and_commands(hub):
    """Jobs max_rows = 3 keeps the newest three finished jobs and every
    queued one; commands max_rows = 3 the newest three. Returns the id of
    the queued job."""
    queued = hub.cli.json("job", "submit", "exec", "--", "no-such-program")["id"]
    done = [hub.cli.json("job", "submit", "--wait", "echo", f"j{i}")["id"] for i in range(5)]
    listed = fleet.until("jobs max_rows = 3: finished jobs beyond the newest three go",
                         lambda: hub.cli.json("job", "list", "--limit", "50"),
                         lambda js: len(js) <= 4)
    check(sorted(j["id"] for j in listed) == sorted([queued, *done[-3:]]),
          "the queued job stays; the newest finished ones are kept", listed)
    for _ in range(5):
        hub.cli.code(0, "command", DEVICE, "ping")
    fleet.until("commands max_rows = 3: the oldest two go",
                lambda: stats(hub), lambda s: s["pruned_commands"] == 2)
    s = stats(hub)
    check(s["pruned_jobs"] == 2, "stats counts the jobs pruned", s)
    return queued


def lowered(hub, queued):
    """After a restart with `max_bytes` lowered and finished jobs kept a
    second: both are worked off, the newest telemetry kept, the queued job
    never pruned."""
    s = fleet.until(f"a lowered max_bytes ({LOWERED}) is worked off after a restart",
                    lambda: stats(hub), lambda s: s["telemetry_bytes"] <= LOWERED)
    check(s["pruned_batches"] > 0, "stats counts what this hub pruned since it started", s)
    kept = values(hub)
    check(kept and kept[-1] == SENDS - 1 and kept == list(range(kept[0], SENDS)),
          "still the newest, none missing", kept)
    listed = fleet.until("jobs max_age_s = 1: finished jobs go, a queued one stays",
                         lambda: hub.cli.json("job", "list", "--limit", "50"),
                         lambda js: len(js) <= 1)
    check([(j["id"], j["state"]) for j in listed] == [(queued, "queued")],
          "the queued job is never pruned", listed)


if __name__ == "__main__":
    sys.exit(client.script_main("retention", run, __doc__, fleet.OWN))
