#!/usr/bin/env python3
"""Jobs and commands aimed at one device, a group or the fleet, as the
README ("Aiming jobs and commands: one device, a group, the fleet") tells
an operator to use them, narrowed by what the devices are (`--where`):
each member's run or answer, a device never
handed work it would refuse, the work queue's slots, and what waits for
an offline device across a hub restart until its time to live ends.

It starts a hub of its own and three agents of its own:
- pi-a in group north, taking echo and exec jobs of `uname`, `sleep` and
  (after a reload) `true`, and the ping, status and exec commands, one
  job at a time;
- pi-b in group north, with the agent's defaults (echo jobs; ping and
  status);
- pi-c in group south, taking no jobs at all and answering ping only.
Python's standard library only. Run by `tests/tests/conformance.rs`; by
hand:

    python3 aimed_work.py --hub-command=target/debug/fleetmq-hub \
        --agent-command=target/debug/fleetmq-agent --work=AN_EMPTY_DIRECTORY

Each command is a binary, or a runner and it. Exit status as client.py's.
"""

import json
import os
import re
import signal
import sys
import time

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
import fleet  # noqa: E402
from client import check  # noqa: E402

A, B, C = "pi-a", "pi-b", "pi-c"
AGENT = "[telemetry]\nflush_interval_ms = 100\n[ingest]\nudp = \"\"\n"
WORKER = AGENT + ("[jobs]\nallow = [\"echo\", \"exec\"]\nmax_concurrent = 1\n"
                  "[exec]\nprograms = [PROGRAMS]\n"
                  "[commands]\nallow = [\"ping\", \"status\", \"exec\"]\n")
IDLE = AGENT + "[jobs]\nallow = []\n[commands]\nallow = [\"ping\"]\n"


def worker(programs):
    return WORKER.replace("PROGRAMS", ", ".join(f'"{p}"' for p in programs))


class Fleet:
    """The hub and the three agents; the hub can be restarted on the same
    data directory (on new ports, which the agents are started again on)."""

    def __init__(self, args):
        self.args = args
        self.hub = fleet.Hub(args.hub_command, args.work, "")
        self.agents = {}
        for device, config, groups in [(A, worker(["uname", "sleep"]), ["north"]),
                                       (B, AGENT, ["north"]), (C, IDLE, ["south"])]:
            self.agents[device] = fleet.Agent(
                args.agent_command, args.work, self.hub.cli, self.hub.data,
                self.hub.endpoints["telemetry"], device, config, groups)

    def online(self, want):
        fleet.until(f"online: {sorted(want)}", lambda: self.hub.cli.json("devices"),
                    lambda ds: {d["id"] for d in ds if d["online"]} == set(want))

    def restart_hub(self, running):
        """Stops the hub, starts it again on its data directory, and starts
        the agents in `running` again against it."""
        for a in self.agents.values():
            a.stop()
        self.hub.stop()
        self.hub = fleet.Hub(self.args.hub_command, self.args.work, "")
        for device in running:
            self.start(device)

    def start(self, device):
        self.agents[device].start(hub=self.hub.endpoints["telemetry"])

    def stop(self):
        for a in self.agents.values():
            a.stop()
        self.hub.stop()


def run(args, _ctx):
    f = Fleet(args)
    try:
        f.online([A, B, C])
        matching(f)
        jobs(f)
        commands(f)
    finally:
        f.stop()


def matching(f):
    """`--where`: work aimed by what the devices are. The three agents run
    on this machine, so they share its kernel; a filter on it picks them
    all, narrowed by a group, and one on a kernel nobody runs picks none."""
    hub = f.hub.cli
    kernel = os.uname().release
    mine = f"kernel={kernel}"
    listed = fleet.until("the three agents' facts are known",
                         lambda: hub.json("devices", "--where", mine),
                         lambda ds: {d["id"] for d in ds} == {A, B, C})
    check(all(d["facts"]["kernel"] == kernel for d in listed),
          "devices --where lists the devices whose facts match", listed)
    check(hub.json("devices", "--where", mine, "--where", "kernel~nonesuch") == [],
          "devices --where: every filter must match", None)
    out, _ = hub.code(0, "command", "--group", "north", "--where", mine, "ping",
                      what="command --group --where: every member answered well, exit 0")
    check(re.match(r"command \d+ for 2 device\(s\): pi-a, pi-b\n", out),
          "--where narrows the group: the two north devices on this kernel", out)
    listed = hub.json("command", "--list", "1")
    check(listed[0]["target"] == f"groups north where {mine}",
          "command --list says whom it was for, filters and all", listed)
    _, err = hub.code(1, "command", "--where", "kernel~nonesuch", "ping",
                      what="a command no device matches: exit 1, nothing sent")
    check("no known device is in all where kernel~nonesuch" in err
          and "fleetmq-hub devices --where kernel~nonesuch" in err,
          "it says the filters matched nobody, and how to see whom they match", err)
    _, err = hub.code(2, "command", "--where", "colour=red", "ping",
                      what="a filter on no field is a mistake on the command line: exit 2")
    check('no field "colour"; the fields are model, os, kernel' in err,
          "it names the fields a filter may use", err)
    job = job_id(hub.json("job", "submit", "--where", mine, "--where", "memory>1M",
                          "--group", "north", "echo", "narrowed"))
    shown = hub.json("job", "show", "--wait", job)
    check(set(runs_of(shown)) == {A, B} and shown["state"] == "done"
          and shown["target"] == f"groups north where {mine}, memory>1M",
          "job submit --where: a run on each device of the aim that matches", shown)


def job_id(printed):
    """The id `job submit --json` printed."""
    check(isinstance(printed.get("id"), int), "job submit --json names the job's id", printed)
    return str(printed["id"])


def runs_of(job):
    return {r["device"]: r for r in job.get("runs", [])}


def jobs(f):
    hub = f.hub.cli

    # --- --group: once on each member; refused at once by one that does not take it
    job = job_id(hub.json("job", "submit", "--group", "north", "exec", "--", "uname", "-s"))
    shown = hub.json("job", "show", "--wait", job, want=1,
                     what="job show --wait of a group job one member refused exits 1")
    runs = runs_of(shown)
    check(set(runs) == {A, B}, "a --group job has one run for each device in the group", shown)
    check(runs[A]["state"] == "done" and runs[A]["outcome"]["stdout"] == "Linux\n",
          "the member that takes it ran it, its output in its run", runs[A])
    check(runs[B]["state"] == "refused" and runs[B]["outcome"]["result"] == "not_allowed",
          "a member whose [jobs] allow lacks exec: refused, not_allowed", runs[B])
    check(runs[B]["attempts"] == 0, "refused without being sent to it (no attempt)", runs[B])
    check(shown["summary"] == {"done": 1, "refused": 1} and shown["state"] == "failed",
          "--json gives summary; a refused run fails the job", shown)
    out, _ = hub.code(1, "job", "show", job)
    check("2 device(s): 1 done, 1 refused" in out, "job show sums up the aimed job", out)
    check(re.search(r'not allowed: job kind "exec" is not in the device\'s allow list', out),
          "the refused run says what the device does not allow", out)

    # --- --all and a repeated --device ------------------------------------------
    job = job_id(hub.json("job", "submit", "--all", "echo", "hi"))
    shown = hub.json("job", "show", "--wait", job, want=1)
    states = {d: r["state"] for d, r in runs_of(shown).items()}
    check(states == {A: "done", B: "done", C: "refused"},
          "--all: a run on every device, refused by the one taking no jobs", shown)
    job = job_id(hub.json("job", "submit", "--device", A, "--device", B, "echo", "two"))
    shown = hub.json("job", "show", "--wait", job)
    check({d: r["outcome"]["stdout"] for d, r in runs_of(shown).items()} == {A: "two", B: "two"}
          and shown["state"] == "done", "--device is repeatable; every run done: exit 0", shown)

    # --- the work queue: only to a device that takes it ------------------------
    for _ in range(3):
        done = hub.json("job", "submit", "--wait", "exec", "--", "uname", "-s")
        check(done["state"] == "done" and done["device"] == A,
              "a work-queue exec of uname goes to the one device that allows it", done)
    slots(hub)
    job = job_id(hub.json("job", "submit", "exec", "--", "true"))
    waiting = fleet.until("a work-queue job no online device takes waits, saying so",
                          lambda: hub.json("job", "show", job),
                          lambda j: j["state"] == "queued" and "no device" in (j["error"] or ""))
    hub.code(0, "job", "show", job, what="job show of a job still queued exits 0")
    stuck = job_id(hub.json("job", "submit", "exec", "--", "no-device-runs-this"))
    fleet.until("a second job no device takes waits",
                lambda: hub.json("job", "show", stuck),
                lambda j: "no device" in (j["error"] or ""))
    out, _ = hub.code(0, "job", "cancel", stuck, what="job cancel of a queued work-queue job")
    check("1 not yet handed out will not be" in out, "it says what it stopped", out)
    gone = hub.json("job", "show", stuck, want=1)
    check(gone["state"] == "failed" and "cancelled" in gone["error"],
          "the job reads failed, cancelled by an operator", gone)
    f.agents[A].write_config(worker(["uname", "sleep", "true"]))
    f.agents[A].proc.send_signal(signal.SIGHUP)
    done = hub.json("job", "show", "--wait", job, what="after a reload that allows it, it runs")
    check(done["state"] == "done" and done["device"] == A,
          "a reload tells the hub what the device takes now", (waiting, done))

    # --- an offline device: kept across a hub restart, until its time to live ---
    f.agents[B].stop()
    f.online([A, C])
    later = job_id(hub.json("job", "submit", "--device", B, "echo", "later"))
    never = job_id(hub.json("job", "submit", "--device", B, "--ttl", "1s", "echo", "never"))
    called_off = job_id(hub.json("job", "submit", "--device", B, "echo", "called off"))
    shown = hub.json("job", "show", later)
    check(shown["summary"] == {"waiting": 1}, "a run for an offline device waits", shown)
    f.restart_hub([A, C])
    hub = f.hub.cli
    f.online([A, C])
    ended = fleet.until("past its time to live, the run fails",
                        lambda: hub.json("job", "show", never, want=None),
                        lambda j: j["state"] == "failed")
    check(runs_of(ended)[B]["state"] == "failed", "the offline device's run failed", ended)
    shown = hub.json("job", "show", later)
    check(shown["summary"] == {"waiting": 1}, "a waiting run is kept across a hub restart", shown)
    # --- job cancel: a run that has not been handed out never is --------------------
    cancelled = hub.json("job", "cancel", called_off, what="job cancel of a waiting run: exit 0")
    check(cancelled == {"id": int(called_off), "stopped": 1, "running": 0},
          "job cancel --json says what it stopped", cancelled)
    run = runs_of(hub.json("job", "show", called_off, want=1))[B]
    check(run["state"] == "failed" and "cancelled" in (run["error"] or ""),
          "the run reads failed, cancelled", run)
    out, _ = hub.code(1, "job", "cancel", called_off, what="cancelling it again: exit 1")
    check("already ended" in out, "it says the job had already ended", out)
    hub.code(1, "job", "cancel", "999999999", what="job cancel of no such job: exit 1")
    f.start(B)
    shown = hub.json("job", "show", "--wait", later, what="the run is sent when its device returns")
    check(runs_of(shown)[B]["outcome"]["stdout"] == "later", "and it ran there", shown)
    run = runs_of(hub.json("job", "show", called_off, want=1))[B]
    check(run["state"] == "failed" and run["attempts"] == 0,
          "the cancelled run was never sent to its device once it returned", run)


def slots(hub):
    """A device is handed at most its [jobs] max_concurrent (1) plus one
    waiting: of four work-queue sleeps only pi-a takes, never more than
    two are running at once."""
    ids = {job_id(hub.json("job", "submit", "exec", "--", "sleep", "0.3")) for _ in range(4)}
    seen = []
    deadline = time.monotonic() + client.WAIT_S
    while True:
        code, out, _ = hub.run("job", "list", "--limit", "50", "--json")
        if code != 0:
            check(False, "job list --json exits 0", out)
        listed = [j for j in json.loads(out) if str(j["id"]) in ids]
        seen.append(sum(j["state"] == "running" for j in listed))
        if len(listed) == 4 and all(j["state"] == "done" for j in listed):
            break
        if time.monotonic() > deadline:
            check(False, "the four sleeps end", listed)
        time.sleep(0.05)
    check(1 <= max(seen) <= 2, "at most max_concurrent plus one handed to a device at once", seen)


def answers(hub, command, want):
    """`command --answers ID --json`, its shape checked."""
    got = hub.json("command", "--answers", command, want=want)
    check(str(got.get("id")) == command and isinstance(got.get("answers"), list)
          and all({"device", "state"} <= set(a) for a in got["answers"]),
          'command --answers --json: {"id", "answers": [{"device", "state", ...}]}', got)
    return {a["device"]: a for a in got["answers"]}


def command_id(out):
    """The id in `command N for ...`, the first line a command prints."""
    found = re.match(r"command (\d+) for ", out)
    check(found is not None, "a command aimed at devices prints its id first", out)
    return found.group(1)


def commands(f):
    hub = f.hub.cli

    # --- --group: each answer as it comes; 0 only when every device answered well
    out, _ = hub.code(0, "command", "--group", "north", "ping",
                      what="command --group: every member answered well, exit 0")
    lines = out.splitlines()
    check(re.fullmatch(r"command \d+ for 2 device\(s\): pi-a, pi-b", lines[0]),
          "command --group prints its id and its members first", out)
    check(sum(line.startswith("pong from ") for line in lines) == 2,
          "then each member's answer", out)
    got = hub.json("command", "--all", "exec", "--", "uname", "-s", want=1,
                   what="command --all where some refuse: exit 1")
    by = {a["device"]: a for a in got["answers"]}
    check(by[A]["result"] == "completed" and by[A]["ok"] is True and by[A]["stdout"] == "Linux\n",
          "the device that allows exec answered with its output", by)
    check(all(by[d]["result"] == "not_allowed" and by[d]["ok"] is False for d in (B, C)),
          "the others answered not_allowed", by)
    check(answers(hub, str(got["id"]), 1) == by, "command --answers shows the same answers", by)

    # --- an offline device gets its share when it returns, across a restart ------
    f.agents[C].stop()
    f.online([A, B])
    _, err = hub.code(1, "command", C, "ping", what="a command to one offline device: exit 1")
    check("offline" in err and "--queue-ms" in err and "--ttl" in err,
          "it says the device is offline, and how to wait for it or keep the command", err)
    out, _ = hub.code(1, "command", "--device", C, "--wait-ms", "300", "ping",
                      what="a command not yet answered by every device exits 1")
    share = command_id(out)
    check(f"offline: 1 device(s): {C}" in out,
          "it says which devices are offline and get it when they return", out)
    expiring = command_id(hub.code(
        1, "command", "--device", C, "--ttl", "1s", "--wait-ms", "0", "ping")[0])
    called_off = command_id(hub.code(
        1, "command", "--device", C, "--wait-ms", "0", "ping")[0])
    cancelled = hub.json("command", "--cancel", called_off,
                         what="command --cancel of a share waiting for its device: exit 0")
    check(cancelled == {"id": int(called_off), "stopped": 1, "sent": 0},
          "command --cancel --json says what it stopped", cancelled)
    out, _ = hub.code(1, "command", "--cancel", called_off, what="cancelling it again: exit 1")
    check("nothing to cancel" in out, "it says the command had ended", out)
    listed = hub.json("command", "--list", "3")
    check([c["id"] for c in listed] == [int(called_off), int(expiring), int(share)],
          "command --list N: the newest N, newest first", listed)
    check(listed[0]["shares"] == {"failed": 1} and listed[2]["shares"] == {"waiting": 1}
          and listed[2]["target"] == f"devices {C}" and listed[2]["command"] == {"kind": "ping"},
          "each with whom it is for, what it asks and its shares counted", listed)
    out, _ = hub.code(0, "command", "--list")
    check("1 waiting (may wait until" in out and "ping" in out,
          "the text says how many wait, and until when", out)
    out, _ = hub.code(1, "command", "--device", A, "--timeout-ms", "10000", "--wait-ms", "500",
                      "exec", "--", "sleep", "3")
    cut = command_id(out)
    check(f"no answer yet from 1 device(s): {A}" in out,
          "it says which online devices have not answered yet", out)
    f.restart_hub([A, B])
    hub = f.hub.cli
    f.online([A, B])
    check(answers(hub, cut, 1)[A]["state"] == "failed",
          "a share sent before the hub restarted is not sent again: it reads failed")
    fleet.until("past its time to live, an offline device's share ends",
                lambda: answers(hub, expiring, None)[C]["state"],
                lambda s: s not in ("offline", "sending", "sent", "waiting"))
    check(answers(hub, share, 1)[C]["state"] == "offline", "a share waits for its device")
    f.start(C)
    got = fleet.until("the waiting share is answered once the device returns",
                      lambda: answers(hub, share, None)[C], lambda a: a["state"] == "answered")
    check(got["result"] == "pong" and got["ok"] is True, "with the device's answer", got)
    hub.code(0, "command", "--answers", share, what="every device answered well: exit 0")
    off = answers(hub, called_off, 1)[C]
    check(off["state"] == "failed" and "cancelled" in (off.get("error") or ""),
          "the cancelled share was never sent to its device once it returned", off)


if __name__ == "__main__":
    sys.exit(client.script_main("aimed work", run, __doc__, fleet.OWN))
