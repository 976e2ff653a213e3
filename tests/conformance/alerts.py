#!/usr/bin/env python3
"""The hub's alerts, heard by a webhook receiver written from the README
("Alerts: told when a device drops off") and from what Alertmanager's
webhook receivers take: a version 4 body, one alert per POST.

It starts a hub of its own with a metric rule for one group and an
offline rule, and two agents of its own (one in that group), each
enrolled the README's way. Python's standard library only. Run by
`tests/tests/conformance.rs`; by hand:

    python3 alerts.py --hub-command=target/debug/fleetmq-hub \
        --agent-command=target/debug/fleetmq-agent --work=AN_EMPTY_DIRECTORY

Each command is a binary, or a runner and it. Exit status as client.py's.
"""

import argparse
import datetime
import http.server
import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
from client import check  # noqa: E402
from operator_cli import Cli  # noqa: E402

NORTH, SOUTH = "py-north", "py-south"
SERIES = "test.temp_c{zone=cpu}"
ZERO_TIME = "0001-01-01T00:00:00Z"


class Receiver:
    """An HTTP receiver on a port the OS picks: every POST's JSON body, in
    the order they came."""

    def __init__(self):
        heard = self.heard = queue.Queue()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                heard.put((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def next(self, what):
        """The next notice: (status, the body)."""
        try:
            path, kind, body = self.heard.get(timeout=client.WAIT_S)
        except queue.Empty:
            raise client.Failed(f"{what}: no notice at the webhook in {client.WAIT_S} s")
        check(path == "/hook" and kind.startswith("application/json"),
              f"{what}: a JSON POST to the webhook's path", (path, kind))
        return json.loads(body)

    def none_within(self, seconds):
        try:
            return self.heard.get(timeout=seconds)
        except queue.Empty:
            return None


def started(command, args, log_path):
    log = open(log_path, "w")
    return subprocess.Popen([*command, *args], stdout=log, stderr=subprocess.STDOUT), log


def start_hub(args, webhook):
    """`fleetmq-hub run` with the rules, on ports the OS picks; returns the
    process and the endpoints it printed as its first line."""
    data = os.path.join(args.work, "hub-data")
    config = os.path.join(args.work, "hub.toml")
    with open(config, "w") as f:
        f.write(f"""[alerts]
webhooks = ["{webhook}"]
repeat_ms = 0

[[alerts.rules]]
name = "hot"
when = "test.temp_c > 80"
for_ms = 0
groups = ["north"]

[[alerts.rules]]
name = "device-offline"
when = "offline"
for_ms = 500
""")
    out = os.path.join(args.work, "hub.out")
    hub = subprocess.Popen(
        [*shlex.split(args.hub_command), "run", "--config", config, "--data-dir", data,
         "--bind", "127.0.0.1:*"],
        stdout=open(out, "w"), stderr=open(os.path.join(args.work, "hub.log"), "w"))
    deadline = time.monotonic() + client.WAIT_S
    while True:
        with open(out) as f:
            first = f.readline()
        if first.endswith("\n"):
            return hub, data, json.loads(first)
        if time.monotonic() > deadline or hub.poll() is not None:
            check(False, "the hub prints its endpoints as its first line", first)
        time.sleep(0.05)


class Agent:
    def __init__(self, args, hub_cli, hub_data, endpoints, device, groups):
        self.command = shlex.split(args.agent_command)
        self.device = device
        self.data = os.path.join(args.work, device)
        keygen = self.ok("keygen", "--device-id", device, "--data-dir", self.data)
        allow = [line for line in keygen.splitlines() if line.startswith("fleetmq-hub allow ")]
        check(len(allow) == 1, f"{device}: keygen prints the allow line", keygen)
        hub_cli.code(0, *shlex.split(allow[0])[1:], what=f"{device}: enrolled")
        config = os.path.join(args.work, f"{device}.toml")
        with open(config, "w") as f:
            f.write("[telemetry]\nflush_interval_ms = 100\n[ingest]\nudp = \"\"\n")
        words = ["run", "--config", config, "--hub", endpoints["telemetry"],
                 "--hub-key", os.path.join(hub_data, "hub.pub"), "--device-id", device,
                 "--data-dir", self.data]
        for g in groups:
            words += ["--group", g]
        self.proc, self.log = started(self.command, words,
                                      os.path.join(args.work, f"{device}.log"))

    def ok(self, *args):
        done = subprocess.run([*self.command, *args], capture_output=True, text=True,
                              timeout=client.WAIT_S)
        check(done.returncode == 0, f"fleetmq-agent {args[0]} exits 0",
              (done.returncode, done.stdout[:300], done.stderr[:300]))
        return done.stdout

    def send(self, value):
        self.ok("send", f"test.temp_c={value}", "zone=cpu", "--data-dir", self.data)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=client.WAIT_S)
        self.log.close()


def rfc3339(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def alertmanager_body(body, what):
    """Checks the version 4 body every Alertmanager receiver reads, and
    returns its one alert."""
    want = {"version": str, "groupKey": str, "truncatedAlerts": int, "status": str,
            "receiver": str, "groupLabels": dict, "commonLabels": dict,
            "commonAnnotations": dict, "externalURL": str, "alerts": list}
    check(all(isinstance(body.get(k), t) for k, t in want.items()) and body["version"] == "4",
          f"{what}: an Alertmanager version 4 body", body)
    check(len(body["alerts"]) == 1, f"{what}: one alert per POST", body["alerts"])
    alert = body["alerts"][0]
    check(all(isinstance(alert.get(k), str) for k in
              ("status", "startsAt", "endsAt", "generatorURL", "fingerprint"))
          and alert["status"] == body["status"],
          f"{what}: the alert's status, times and fingerprint", alert)
    check(all(isinstance(v, str) for v in [*alert["labels"].values(),
                                          *alert["annotations"].values()])
          and {"summary", "condition", "value"} <= set(alert["annotations"]),
          f"{what}: labels and annotations are text; summary, condition, value", alert)
    rfc3339(alert["startsAt"])
    return alert


def run(args, _ctx):
    receiver = Receiver()
    hub, data, endpoints = start_hub(args, receiver.url)
    hub_cli = Cli(args.hub_command, data)
    agents = []
    try:
        agents = [Agent(args, hub_cli, data, endpoints, NORTH, ["north"]),
                  Agent(args, hub_cli, data, endpoints, SOUTH, [])]
        alerts(receiver, hub_cli, endpoints, agents)
    finally:
        for a in agents:
            a.stop()
        hub.send_signal(signal.SIGTERM)
        hub.wait(timeout=client.WAIT_S)


def alerts(receiver, hub_cli, endpoints, agents):
    north, south = agents
    deadline = time.monotonic() + client.WAIT_S
    while {d["id"] for d in hub_cli.json("devices") if d["online"]} != {NORTH, SOUTH}:
        if time.monotonic() > deadline:
            check(False, "both agents online", hub_cli.json("devices"))
        time.sleep(0.1)

    # --- a metric rule for one group ---------------------------------------------
    north.send(90)
    south.send(95)
    body = receiver.next("hot on py-north")
    fired = alertmanager_body(body, "firing")
    check(body["status"] == "firing" and fired["labels"] ==
          {"alertname": "hot", "device": NORTH, "series": SERIES},
          "it fires for the device in the rule's group, naming the rule, device and series",
          fired)
    check(fired["endsAt"] == ZERO_TIME, "endsAt is the zero time while firing", fired)
    check(float(fired["annotations"]["value"]) == 90, "the value that fired it", fired)

    listed = hub_cli.json("alerts")
    check([(a["rule"], a["device"], a["series"], a["firing"]) for a in listed]
          == [("hot", NORTH, SERIES, True)], "fleetmq-hub alerts --json: what fires", listed)
    metrics = urllib.request.urlopen(endpoints["http"] + "/metrics",
                                     timeout=client.WAIT_S).read().decode()
    line = f'fleetmq_alert{{alertname="hot",device="{NORTH}",series="{SERIES}"}} 1'
    check(line in metrics.splitlines(), "/metrics: fleetmq_alert 1 while it fires",
          [m for m in metrics.splitlines() if m.startswith("fleetmq_alert")])

    # Still over: nothing more (repeat_ms = 0), once the rules have seen it.
    north.send(85)
    deadline = time.monotonic() + client.WAIT_S
    while [a["value"] for a in hub_cli.json("alerts")] != [85]:
        if time.monotonic() > deadline:
            check(False, "the rules see the new value", hub_cli.json("alerts"))
        time.sleep(0.1)
    check(receiver.heard.empty(), "a firing alert whose value changes is not sent again", None)
    # Under: resolved, once.
    north.send(70)
    body = receiver.next("hot resolved")
    resolved = alertmanager_body(body, "resolved")
    check(body["status"] == "resolved" and resolved["labels"] == fired["labels"],
          "the next notice resolves the same alert (none for the other group's device, "
          "none while it stayed over)", body)
    check(resolved["fingerprint"] == fired["fingerprint"] and resolved["startsAt"] ==
          fired["startsAt"], "with the same fingerprint and start", (fired, resolved))
    check(rfc3339(resolved["endsAt"]) >= rfc3339(resolved["startsAt"]),
          "and when it ended", resolved)

    # --- a device that stops ---------------------------------------------------------
    south.stop()
    body = receiver.next("py-south offline")
    offline = alertmanager_body(body, "offline")
    check(body["status"] == "firing" and offline["labels"] ==
          {"alertname": "device-offline", "device": SOUTH},
          "a device that stops fires the offline rule, without a series", offline)
    check(receiver.none_within(1.0) is None, "and nothing else is said", None)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("hub-command", "agent-command", "work"):
        p.add_argument(f"--{name}", required=True)
    return client.run_checks("alerts", run, p.parse_args())


if __name__ == "__main__":
    sys.exit(main())
