#!/usr/bin/env python3
"""The operator's command line, used as the README ("The operator's
command line, for people and for scripts", and "Using it") tells a script
to use it: its exit codes, its `--json`, where options go, and a closed
stdout.

Run after client.py against the same hub, so the store holds what that
device sent (py-1's py.temp{room=lab} 21.5 and 20.25, py.count -3, in
more than one batch) and the
real agent REAL (which answers ping and status, and runs no exec) is
online. Python's standard library only. Run by
`tests/tests/conformance.rs`; by hand:

    python3 operator_cli.py --hub-command=target/debug/fleetmq-hub \
        --data-dir=HUB_DATA_DIR --device=py-1 --real-agent=rs-1

`--hub-command` is the hub binary, or a runner and it (`qemu-aarch64-static
-cpu cortex-a72 PATH`), split as a shell would. Exit status as client.py's.
"""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
from client import check  # noqa: E402

# The four exit codes the README's table gives.
OK, NO, USAGE, UNREACHABLE = 0, 1, 2, 3


class Cli:
    """`fleetmq-hub` as `command` runs it, finding its hub through
    `data_dir`'s endpoints.json, as the README's examples do; without a
    `data_dir`, as an operator on another machine, where each command names
    the hub itself."""

    def __init__(self, command, data_dir=None):
        self.command = shlex.split(command)
        self.data_dir = data_dir

    def words(self, *args, hub=True):
        where = ["--data-dir", self.data_dir] if hub and self.data_dir else []
        return [*self.command, *before_double_dash(args, where)]

    def run(self, *args, hub=True, timeout=client.WAIT_S, env=None):
        """(exit code, stdout, stderr) of `fleetmq-hub ARGS`, with `env`
        added to the environment."""
        try:
            done = subprocess.run(self.words(*args, hub=hub), capture_output=True,
                                  timeout=timeout, env={**os.environ, **(env or {})})
        except subprocess.TimeoutExpired as e:
            raise client.Failed(f"fleetmq-hub {' '.join(args)} did not end in {timeout} s") from e
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    def code(self, want, *args, what=None, hub=True, env=None):
        """Runs it and checks its exit code is `want` (any, if None);
        returns (stdout, stderr)."""
        code, out, err = self.run(*args, hub=hub, env=env)
        check(want is None or code == want, what or f"fleetmq-hub {' '.join(args)} exits {want}",
              (code, out[:300], err[:300]))
        return out, err

    def json(self, *args, want=OK, what=None):
        """The one JSON document `ARGS --json` prints."""
        out, _ = self.code(want, *before_double_dash(args, ["--json"]), what=what)
        return json.loads(out)


def before_double_dash(words, options):
    """`words` with `options` added where they are options: before a `--`,
    after which every word is passed as it is."""
    words = list(words)
    at = words.index("--") if "--" in words else len(words)
    return words[:at] + options + words[at:]


def unused_port():
    """A loopback port nothing listens on (picked by the OS, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, _ctx):
    hub = Cli(args.hub_command, args.data_dir)
    dev, real = args.device, args.real_agent

    # --- reads, and --json ---------------------------------------------------
    devices = hub.json("devices", what="devices --json: exit 0")
    check(isinstance(devices, list) and {dev, real} <= {d.get("id") for d in devices},
          "devices --json is an array holding both devices", devices)
    check(next(d for d in devices if d["id"] == real).get("online") is True,
          "the real agent is online", devices)
    out, _ = hub.code(OK, "devices")
    check(real in out and not out.lstrip().startswith("["), "devices prints text without --json",
          out[:200])
    before = json.loads(hub.code(OK, "--json", "devices",
                                 what="an option before the subcommand: exit 0")[0])
    check(sorted(d["id"] for d in before) == sorted(d["id"] for d in devices),
          "--json before the subcommand is --json after it", before)
    online = hub.json("devices", "--state", "online")
    check({d["id"] for d in online} == {d["id"] for d in devices if d["online"] and not d["revoked"]}
          and real in {d["id"] for d in online},
          "devices --state online lists the online devices and no other", online)
    either = hub.json("devices", "--state", "offline", "--state", "online")
    check(sorted(d["id"] for d in either) == sorted(d["id"] for d in devices if not d["revoked"]),
          "--state repeated: in any of the states", either)
    groups = next(d for d in devices if d["id"] == real)["groups"]
    if groups:
        mine = hub.json("devices", "--group", groups[0])
        check(real in {d["id"] for d in mine} and all(groups[0] in d["groups"] for d in mine),
              "devices --group lists the group's devices", mine)
    check(hub.json("devices", "--group", "no-such-group") == [],
          "a group no device is in: [] (and exit 0)")
    # What each device is: a table with the real agent's kernel and
    # memory, and --json keeps its shape (facts are in every device).
    out, _ = hub.code(OK, "devices", "--facts", "--state", "online")
    lines = out.splitlines()
    with open("/proc/sys/kernel/osrelease", encoding="utf-8") as f:
        kernel = f.read().strip()
    row = next((line.split() for line in lines if line.split()[:1] == [real]), [])
    check(lines[0].split() == ["DEVICE", "MODEL", "OS", "KERNEL", "MEMORY", "ADDRESSES"]
          and kernel in row and "GiB" in row,
          "devices --facts: a table of each device's model, OS, kernel, memory and addresses",
          out[:400])
    facts = hub.json("devices", "--facts")
    check(next(d for d in facts if d["id"] == real)["facts"]["kernel"] == kernel,
          "devices --facts --json is devices --json, facts and all", facts[:1])
    _, err = hub.code(USAGE, "devices", "--state", "asleep")
    check("online" in err and "revoked" in err, "an unknown state is refused, naming the states", err)
    stats = hub.json("stats")
    check(isinstance(stats, dict) and stats.get("security") == "curve", "stats --json", stats)
    check(isinstance(hub.json("alerts"), list), "alerts --json is an array")

    rows = hub.json("telemetry", "--device", dev, "--from-start")
    fields = {"id", "device", "seq", "ts_ms", "name", "value"}
    check(rows and all(set(r) == fields for r in rows),
          "a telemetry row is {id, device, seq, ts_ms, name, value}", rows[:2])
    check([r["id"] for r in rows] == sorted(r["id"] for r in rows), "oldest first", rows)
    temps = [r["value"] for r in rows if r["name"] == "py.temp{room=lab}"]
    # (client.py sends them again, renumbered, as a wiped device would.)
    check(temps[:2] == [21.5, 20.25], "py-1's temperatures, in the order it sent them", temps)
    newest = hub.json("telemetry", "--device", dev, "--last", "1")
    check(newest == [max(rows, key=lambda r: r["id"])], "--last 1 is the newest", newest)
    check(hub.json("telemetry", "--device", dev, "--name", "py.temp")
          == [r for r in rows if r["name"] == "py.temp{room=lab}"],
          "--name matches the metric with any tags")
    check(hub.json("telemetry", "--device", dev, "--name", "py.temp", "--tag", "room=other") == [],
          "--tag narrows to series carrying it")
    check(hub.json("telemetry", "--device", "nobody-by-this-name") == [],
          "a read that matches nothing is [] and exit 0")
    now_ms = int(time.time() * 1000)
    iso_hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
    # The same hour ago as a local time with an offset, east and west.
    east = time.strftime("%Y-%m-%dT%H:%M:%S+05:30", time.gmtime(time.time() - 3600 + 19800))
    west = time.strftime("%Y-%m-%dT%H:%M:%S-08:00", time.gmtime(time.time() - 3600 - 28800))
    for since in ["10m", "2h 30m", "7d", iso_hour_ago, iso_hour_ago[:-1], east, west,
                  str(now_ms - 600_000)]:
        got = hub.json("telemetry", "--device", dev, "--since", since,
                       what=f"--since {since!r} is understood")
        check(got == rows, f"--since {since!r}: every sample since then", (len(got), len(rows)))
    _, err = hub.code(USAGE, "telemetry", "--since", "yesterday")
    check("--since" in err and "10m" in err, "a bad --since says what to give", err)
    _, err = hub.code(USAGE, "telemetry", "--since", "1h", "--until", "2h",
                      what="--since after --until is a mistake")
    check("after --until" in err, "saying so", err)
    _, err = hub.code(USAGE, "telemetry", "--tag", "=lab", what="a --tag without a key")
    check("key is empty" in err, "says the key is empty", err)
    later = hub.json("telemetry", "--device", dev, "--after", str(rows[0]["id"]))
    check(later == rows[1:], "--after ID: every sample after that row", later)
    chat = hub.json("chat", "--last", "5")
    check(isinstance(chat, list) and all({"id", "device", "ts_ms", "text"} <= set(c) for c in chat),
          "chat --json is an array of {id, device, ts_ms, text}", chat)
    presence = hub.json("presence", real)
    check(presence and all(set(p) == {"online", "at_ms", "why"} for p in presence)
          and presence[0]["online"] is True, "presence --json, newest first", presence)
    check(hub.json("presence", "nobody-by-this-name") == [], "presence of an unknown device is []")
    # client.py's stranger knocked and was never enrolled.
    waiting = hub.json("pending")
    check(waiting and all(set(k) == {"public_key", "address", "first_ms", "last_ms", "attempts"}
                          for k in waiting)
          and all(a["last_ms"] >= b["last_ms"] for a, b in zip(waiting, waiting[1:])),
          "pending --json: the keys waiting to be enrolled, newest try first", waiting)

    # --- acting: 0 when it went well, 1 when answered no -------------------------
    pong = hub.json("command", real, "ping")
    check(pong.get("device") == real and pong.get("ok") is True and pong.get("result") == "pong",
          "command ping --json: {device, ok, result: pong}", pong)
    out, _ = hub.code(OK, "command", real, "ping")
    check(out.strip() != "", "and in words without --json", out)
    refused = hub.json("command", real, "exec", "--", "ls", "-l", want=NO,
                       what="an exec the device does not allow: exit 1")
    check(refused == refused | {"device": real, "ok": False, "result": "not_allowed"},
          "answered not_allowed", refused)
    refused = json.loads(hub.code(NO, "--json", "command", real, "exec", "--", "ls", "--json",
                                  what="--json first, and a --json after -- is a word")[0])
    check(refused.get("result") == "not_allowed", "still the device's answer", refused)
    hub.code(NO, "command", "nobody-by-this-name", "ping", what="an unknown device: exit 1")
    _, err = hub.code(USAGE, "command", real, "exec", "ls", "-l",
                      what="a word starting with - before --: exit 2")
    check("-- -l" in err, "with the hint to put it after --", err)
    _, err = hub.code(USAGE, "devices", "--no-such-option")
    check("--no-such-option" in err, "an unknown option is named on stderr", err)
    shout = hub.json("broadcast", "--device", real, "hello from a script")
    check(shout == {"topic": f"dev/{real}/"}, "broadcast --device --json: its topic", shout)
    trail = hub.json("audit", "--limit", "5")
    check(trail and set(trail[0]) == {"id", "at_ms", "operator", "act", "allowed"}
          and trail[0]["operator"] == "local"
          and trail[0]["act"] == f"broadcast to {real}: 'hello from a script'"
          and trail[0]["allowed"] is True and len(trail) <= 5,
          "audit --json: who did what, newest first, the last act on top", trail)
    check(any(e["act"] == f"command {real}: exec ls -l" for e in trail),
          "a command the device refused was still asked, and is kept", trail)
    out, _ = hub.code(OK, "audit")
    check("hello from a script" in out and "local" in out, "audit in words", out[:300])
    hub.code(NO, "broadcast", "--device", "nobody-by-this-name", "hi",
             what="a broadcast to an unknown device: exit 1")
    hub.code(NO, "job", "show", "987654321", what="job show of no such job: exit 1")
    job = hub.json("job", "submit", "echo", "from", "a", "script")
    check(isinstance(job.get("id"), int), "job submit --json answers the job's id", job)
    # No device online takes echo jobs (the real agent allows none), so it
    # waits in the queue: an answer, not a no.
    shown = hub.json("job", "show", str(job["id"]))
    check(shown.get("id") == job["id"] and shown.get("state") == "queued",
          "job show --json of a job no device has taken: queued, exit 0", shown)
    waited = hub.json("job", "show", str(job["id"]), "--wait", "--wait-ms", "200", want=NO,
                      what="job show --wait that ends before the job does: exit 1")
    check(waited.get("state") == "queued", "still shown as it stands", waited)

    # --- a hub that is not there: 3 ---------------------------------------------
    nowhere = f"tcp://127.0.0.1:{unused_port()}"
    _, err = hub.code(UNREACHABLE, "devices", "--hub", nowhere, "--hub-timeout-ms", "100",
                      hub=False, what="no hub at --hub: exit 3")
    check(nowhere in err, "the endpoint it tried is named", err)
    with tempfile.TemporaryDirectory() as empty:
        _, err = hub.code(UNREACHABLE, "devices", "--data-dir", empty, "--hub-timeout-ms", "100",
                          hub=False, what="a --data-dir no hub runs on: exit 3")
    check(os.path.join(empty, "endpoints.json") in err and "--data-dir" in err,
          "it says no hub wrote endpoints.json there, and what to give", err)

    # --- a closed stdout ends a command quietly --------------------------------
    # The pipe is closed before the command writes, so its first write
    # finds no reader, however little it prints.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(hub.words("telemetry", "--device", dev, "--from-start"),
                              stdout=write_end, stderr=subprocess.PIPE, timeout=client.WAIT_S)
    finally:
        os.close(write_end)
    check(done.returncode in (0, -signal.SIGPIPE) and done.stderr == b"",
          "telemetry into a closed pipe ends quietly", (done.returncode, done.stderr[:300]))


if __name__ == "__main__":
    sys.exit(client.script_main("operator command line", run, __doc__,
                                ("hub-command", "data-dir", "device", "real-agent")))
