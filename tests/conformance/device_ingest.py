#!/usr/bin/env python3
"""A device's own programs feeding the agent, as the README ("On the
device: host metrics, local ingest, reload", and "Using it") tells them
to: StatsD and Influx lines on UDP and on `ingest.sock`, and
`fleetmq-agent send`. What they sent is read back from the hub with the
operator's command line, as an operator would.

It enrols and starts an agent of its own the README's way (`keygen`,
the `fleetmq-hub allow` line it prints, `run`), with StatsD folded every
INTERVAL_MS. Python's standard library only. Run by
`tests/tests/conformance.rs`; by hand, against a running hub:

    python3 device_ingest.py --hub-command=target/debug/fleetmq-hub \
        --agent-command=target/debug/fleetmq-agent --data-dir=HUB_DATA_DIR \
        --work=AN_EMPTY_DIRECTORY

Each command is a binary, or a runner and it (`qemu-arm-static -cpu arm1176
PATH`). Exit status as client.py's.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
from client import check  # noqa: E402
import fleet  # noqa: E402
from operator_cli import Cli  # noqa: E402

DEVICE = "py-in"
INTERVAL_MS = 1000
PERCENTILES = "[50.0, 90.0, 99.9]"


class Follow:
    """`fleetmq-hub telemetry --device DEVICE --follow --json`: every row
    stored from now on, one JSON object a line, read on a thread."""

    def __init__(self, hub):
        self.proc = subprocess.Popen(
            hub.words("telemetry", "--device", DEVICE, "--follow", "--json"),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.rows = []
        # Lines read, and those that were not a JSON object.
        self.lines = 0
        self.bad = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines += 1
                try:
                    row = json.loads(line)
                except ValueError:
                    row = None
                if isinstance(row, dict):
                    self.rows.append(row)
                else:
                    self.bad.append(line)
                self.cond.notify_all()

    def live(self, agent):
        """Waits until the follow prints what is stored: it starts at the
        end of the store once it has asked the hub, which a slow start
        (an emulated hub) may not have done yet. A marker sample is sent
        until one shows."""
        deadline = time.monotonic() + client.WAIT_S
        while True:
            agent.ok("send", "follow.marker=1", "--data-dir", agent.data)
            with self.cond:
                self.cond.wait_for(lambda: any(r["name"] == "follow.marker" for r in self.rows),
                                   timeout=1.0)
                if any(r["name"] == "follow.marker" for r in self.rows):
                    self.rows.clear()
                    return
            if time.monotonic() > deadline:
                check(False, "telemetry --follow prints a sample stored after it started",
                      self.lines)

    def until(self, what, names):
        """Waits for a row of each series in `names` after what was taken
        so far; returns {series: row} of the first of each series stored
        since then, those of `names` and any other (the agent's own and
        host metrics among them)."""
        deadline = time.monotonic() + client.WAIT_S
        with self.cond:
            while True:
                got = {}
                for r in self.rows:
                    got.setdefault(r["name"], r)
                if set(names) <= set(got):
                    self.rows.clear()
                    return got
                left = deadline - time.monotonic()
                if left <= 0:
                    check(False, f"{what}: stored within {client.WAIT_S} s",
                          sorted(set(names) - set(got)))
                self.cond.wait(left)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=client.WAIT_S)


def agent_config(statsd_interval_ms):
    return (f"[telemetry]\nflush_interval_ms = 100\n"
            f"[ingest]\nudp = \"127.0.0.1:0\"\n"
            f"statsd_interval_ms = {statsd_interval_ms}\npercentiles = {PERCENTILES}\n")


def run(args, _ctx):
    hub = Cli(args.hub_command, args.data_dir)
    with open(os.path.join(args.data_dir, "endpoints.json")) as f:
        telemetry = json.load(f)["telemetry"]
    agent = fleet.Agent(args.agent_command, args.work, hub, args.data_dir, telemetry, DEVICE,
                        agent_config(INTERVAL_MS))
    follow = None
    try:
        status = agent.status_until("the agent is linked to the hub",
                                    lambda s: s.get("linked") is True)
        follow = Follow(hub)
        follow.live(agent)
        ingest(agent, status, follow)
    finally:
        if follow:
            follow.stop()
        if agent.proc.poll() is None:
            agent.stop()


def ingest(agent, status, follow):
    udp_at = status["ingest"]["udp"]
    check(udp_at.startswith("127.0.0.1:") and not udp_at.endswith(":0"),
          "status shows the UDP address bound", udp_at)
    sock_path = status["ingest"]["unix"]
    check(sock_path.endswith("ingest.sock") and os.path.exists(sock_path),
          "and DATA_DIR/ingest.sock", sock_path)
    host, port = udp_at.rsplit(":", 1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def send(lines, over_unix=False):
        data = "\n".join(lines).encode()
        if over_unix:
            unix.sendto(data, sock_path)
        else:
            udp.sendto(data, (host, int(port)))

    # --- one interval of StatsD, and Influx lines as they come ------------------
    hour_ago_ns = (int(time.time()) - 3600) * 1_000_000_000
    sent_ms = int(time.time() * 1000)
    send([
        "hits:1|c|@0.1",
        "hits:2|c",
        "tank:40|g",
        "tank:+2.5|g",
        "db:10|ms|@0.1",
        "db:30|ms",
        "db:20|h",
        "door.opened:1|c|#room:hall,door",
        f"env,room=hall temp=21.5,hum=40i,ok=true,note=\"dry, warm\" {hour_ago_ns}",
        "pump value=3i",
        "env,k8s.pod=web-1 up=1i",
        "this is not a line at all",
    ])
    send(["sock.temp value=7.5", "sock:3|c"], over_unix=True)
    names = ["env.temp{room=hall}", "env.hum{room=hall}", "env.ok{room=hall}", "pump",
             "env.up{k8s_pod=web-1}", "sock.temp"]
    influx = follow.until("the Influx lines", names)
    values = {n: influx[n]["value"] for n in names}
    check(values == {"env.temp{room=hall}": 21.5, "env.hum{room=hall}": 40, "env.ok{room=hall}": 1,
                     "pump": 3, "env.up{k8s_pod=web-1}": 1, "sock.temp": 7.5},
          "measurement.field with the line's tags; value is the measurement; true is 1; "
          "a tag key made valid", values)
    check(not any(n.startswith("env.note") for n in influx), "a string field is no sample",
          sorted(influx))
    check(influx["env.temp{room=hall}"]["ts_ms"] == hour_ago_ns // 1_000_000,
          "an Influx timestamp is nanoseconds", influx["env.temp{room=hall}"])
    check(sent_ms - 1000 <= influx["pump"]["ts_ms"] <= int(time.time() * 1000),
          "a line without one is stamped when the agent reads it", (sent_ms, influx["pump"]))

    statsd_names = ["hits", "tank", "db.count", "db.min", "db.max", "db.mean", "db.p50", "db.p90",
                    "db.p99_9", "door.opened{door=true,room=hall}", "sock"]
    folded = follow.until("one StatsD interval", statsd_names)
    values = {n: folded[n]["value"] for n in statsd_names}
    check(values == {"hits": 12, "tank": 42.5, "db.count": 12, "db.min": 10, "db.max": 30,
                     "db.mean": 20, "db.p50": 20, "db.p90": 30, "db.p99_9": 30,
                     "door.opened{door=true,room=hall}": 1, "sock": 3},
          "a counter's total over its rate, a gauge's last value with +N, a timing's figures",
          values)
    check(all(type(values[n]) is int for n in ("hits", "db.count", "db.mean")),
          "a whole number is sent as an integer", values)
    stamps = {folded[n]["ts_ms"] for n in statsd_names}
    check(len(stamps) == 1, "the interval's samples share one stamp", stamps)
    check(min(stamps) >= sent_ms + INTERVAL_MS - 50,
          f"stamped when the interval ends ({INTERVAL_MS} ms after its first line)",
          (sent_ms, stamps))

    status = agent.status()["ingest"]
    check(status["malformed"] == 1 and "this is not a line at all" in status["last_error"],
          "the malformed line is counted, with the last one and why", status)

    # --- the next interval: only the series that had lines ------------------------
    send(["tank:-0.5|g", "x:1|s"])
    nxt = follow.until("the next interval", ["tank"])
    check(nxt["tank"]["value"] == 42 and not set(nxt) & (set(statsd_names) - {"tank"}),
          "-N changes the gauge kept from before; a series with no line sends nothing",
          sorted(nxt))
    status = agent.status()["ingest"]
    check(status["malformed"] == 2 and "x:1|s" in status["last_error"],
          "a StatsD set is refused as malformed", status)

    # --- at most 1,000 series an interval ---------------------------------------------
    send([f"many.{i}:1|c" for i in range(1001)])
    status = agent.status_until("the 1,001 lines read",
                                lambda s: s["ingest"]["statsd_over_series_cap"] > 0)["ingest"]
    check(status["statsd_over_series_cap"] == 1 and status["malformed"] == 3,
          "the 1,001st series is refused, counted and reported like a malformed line", status)
    many = follow.until("1,000 series", [f"many.{i}" for i in range(1000)])
    check("many.1000" not in many, "and never sent", sorted(many)[-3:])

    # --- fleetmq-agent send, as the README's examples use it ---------------------------
    agent.ok("send", "room.temp_c=21.5", "door.opened=1", "--data-dir", agent.data)
    agent.ok("send", "disk.free_bytes=123456", "mount=/data", "--data-dir", agent.data)
    sent = follow.until("what fleetmq-agent send sent",
                        ["room.temp_c", "door.opened", "disk.free_bytes{mount=/data}"])
    check({n: sent[n]["value"] for n in ("room.temp_c", "door.opened",
                                         "disk.free_bytes{mount=/data}")} ==
          {"room.temp_c": 21.5, "door.opened": 1, "disk.free_bytes{mount=/data}": 123456},
          "send: samples, and the words after them as tags", sent)

    # --- SIGHUP: a new StatsD interval at once -------------------------------------
    # Ten minutes: what the next lines open ends only when the agent stops.
    agent.write_config(agent_config(statsd_interval_ms=600_000))
    agent.proc.send_signal(signal.SIGHUP)
    reload = agent.status_until("the config re-read on SIGHUP",
                                lambda s: s["reload"]["at_ms"] > 0)["reload"]
    check(reload["error"] == "" and "ingest.statsd_interval_ms" in json.dumps(reload["applied"])
          and reload["needs_restart"] == [], "and the StatsD interval applied at once", reload)

    # --- a clean stop sends the open interval ------------------------------------
    lines_before = agent.status()["ingest"]["statsd_lines"]
    send(["goodbye:5|c"])
    agent.status_until("the last line read",
                       lambda s: s["ingest"]["statsd_lines"] > lines_before)
    check(agent.stop() == 0, "the agent stops cleanly on SIGTERM")
    last = follow.until("the open interval, sent at the stop", ["goodbye"])
    check(last["goodbye"]["value"] == 5, "a clean stop sends the open interval", last["goodbye"])
    check(not follow.bad and follow.lines > 1000,
          "--follow printed one JSON object a line", (follow.lines, follow.bad[:3]))


if __name__ == "__main__":
    sys.exit(client.script_main("device ingest", run, __doc__,
                                ("hub-command", "agent-command", "data-dir", "work")))
