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

import datetime
import http.server
import json
import queue
import sys
import threading
import urllib.request

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
import fleet  # noqa: E402
from client import check  # noqa: E402

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


RULES = """[alerts]
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
"""
AGENT = "[telemetry]\nflush_interval_ms = 100\n[ingest]\nudp = \"\"\n"


def run(args, _ctx):
    receiver = Receiver()
    hub = fleet.Hub(args.hub_command, args.work, RULES.format(webhook=receiver.url))
    agents = []
    try:
        for device, groups in [(NORTH, ["north"]), (SOUTH, [])]:
            agents.append(fleet.Agent(args.agent_command, args.work, hub.cli, hub.data,
                                      hub.endpoints["telemetry"], device, AGENT, groups))
        alerts(receiver, hub, agents)
    finally:
        for a in agents:
            a.stop()
        hub.stop()


def send(agent, value):
    agent.ok("send", f"test.temp_c={value}", "zone=cpu", "--data-dir", agent.data)


def alerts(receiver, hub, agents):
    north, south = agents
    hub_cli = hub.cli
    fleet.until("both agents online", lambda: hub_cli.json("devices"),
                lambda ds: {d["id"] for d in ds if d["online"]} == {NORTH, SOUTH})

    # --- a metric rule for one group ---------------------------------------------
    send(north, 90)
    send(south, 95)
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
    metrics = urllib.request.urlopen(hub.endpoints["http"] + "/metrics",
                                     timeout=client.WAIT_S).read().decode()
    line = f'fleetmq_alert{{alertname="hot",device="{NORTH}",series="{SERIES}"}} 1'
    check(line in metrics.splitlines(), "/metrics: fleetmq_alert 1 while it fires",
          [m for m in metrics.splitlines() if m.startswith("fleetmq_alert")])

    # Still over: nothing more (repeat_ms = 0), once the rules have seen it.
    send(north, 85)
    fleet.until("the rules see the new value", lambda: hub_cli.json("alerts"),
                lambda listed: [a["value"] for a in listed] == [85])
    check(receiver.heard.empty(), "a firing alert whose value changes is not sent again", None)
    # Under: resolved, once.
    send(north, 70)
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


if __name__ == "__main__":
    sys.exit(client.script_main("alerts", run, __doc__, fleet.OWN))
