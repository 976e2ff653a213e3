#!/usr/bin/env python3
"""The hub's alerts, heard by a webhook receiver written from the README
("Alerts: told when a device drops off") and from what Alertmanager's
webhook receivers take: a version 4 body, one alert per POST.

It starts a hub of its own with a metric rule for one group (and, by
`where`, this machine's kernel; another for every kernel but it never
fires), a log rule
on one of an agent's log files, a rule on keys of the desired
configuration a device refuses and an offline rule, and two agents of
its own (one in that group, following two log files), each enrolled the
README's way. Every notice goes to three receivers: one on
http://, one on https:// whose certificate comes from a private
authority made here with `openssl` and named in `alerts.ca_file`, and one
on https:// whose authority the hub was not told to trust, which is sent
nothing. A hub told to trust a file that holds no certificate refuses to
start, saying so. Python's standard library only. Run by
`tests/tests/conformance.rs`; by hand:

    python3 alerts.py --hub-command=target/debug/fleetmq-hub \
        --agent-command=target/debug/fleetmq-agent --work=AN_EMPTY_DIRECTORY

Each command is a binary, or a runner and it. Exit status as client.py's.
"""

import datetime
import http.server
import json
import os
import queue
import ssl
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
    the order they came. With `tls` (a certificate and its key, PEM
    files), it speaks https."""

    def __init__(self, tls=None):
        heard = self.heard = queue.Queue()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                heard.put((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_):
                pass

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, *_):
                pass  # a handshake the hub broke off (a certificate it refused)

        self.server = Server(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hook"

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
webhooks = ["{webhook}", "{secure}", "{untrusted}"]
ca_file = "{ca_file}"
repeat_ms = 0

[[alerts.rules]]
name = "hot"
when = "test.temp_c > 80"
for_ms = 0
groups = ["north"]
where = ["kernel={kernel}"]

[[alerts.rules]]
name = "hot-elsewhere"
when = "test.temp_c > 80"
for_ms = 0
where = ["kernel!={kernel}"]

[[alerts.rules]]
name = "oom"
when = 'log contains "Out of memory"'
source = "{kernel_log}"
window_ms = 1500

[[alerts.rules]]
name = "device-offline"
when = "offline"
for_ms = 500

[[alerts.rules]]
name = "config-refused"
when = "config refused"
"""
AGENT = "[telemetry]\nflush_interval_ms = 100\n[ingest]\nudp = \"\"\n"
OOM = "Out of memory: Killed process 812 (python3) total-vm:912340kB"


def refuses_a_ca_file_without_certificates(args):
    """A hub whose alerts.ca_file holds no certificate does not start, and
    says which file and what it wants."""
    empty = os.path.join(args.work, "empty.pem")
    with open(empty, "w") as f:
        f.write("not a certificate\n")
    config = f'[alerts]\nwebhooks = ["https://127.0.0.1:9/hook"]\nca_file = "{empty}"\n'
    code, stderr = fleet.refused_start(args.hub_command, os.path.join(args.work, "no-ca"), config)
    check(code != 0 and "alerts.ca_file" in stderr and "holds no certificate" in stderr,
          "a hub told to trust a file with no certificate refuses to start, naming it",
          (code, stderr))


def run(args, _ctx):
    refuses_a_ca_file_without_certificates(args)
    ca, leaf = fleet.private_authority(args.work, "trusted")
    _, stranger = fleet.private_authority(args.work, "stranger")
    receiver, secure, untrusted = Receiver(), Receiver(tls=leaf), Receiver(tls=stranger)
    logs = [os.path.join(args.work, name) for name in ("kern.log", "app.log")]
    for path in logs:
        open(path, "w").close()
    rules = RULES.format(webhook=receiver.url, secure=secure.url, untrusted=untrusted.url,
                         ca_file=ca, kernel_log=logs[0], kernel=os.uname().release)
    hub = fleet.Hub(args.hub_command, args.work, rules)
    agents = []
    following = f"[logs]\nfiles = {json.dumps(logs)}\npoll_ms = 100\n"
    try:
        for device, groups, config in [(NORTH, ["north"], AGENT + following),
                                        (SOUTH, [], AGENT)]:
            agents.append(fleet.Agent(args.agent_command, args.work, hub.cli, hub.data,
                                      hub.endpoints["telemetry"], device, config, groups))
        alerts(receiver, hub, agents, secure)
        log_rule(receiver, hub, secure, logs)
        config_refused(receiver, hub, secure)
        device_offline(receiver, agents)
        refused = f'url="{untrusted.url}"'
        fleet.until("the hub gives up on the webhook it cannot trust, saying why",
                    lambda: notice_lines(args.work),
                    lambda lines: any(refused in line and "could not be sent" in line
                                      and "certificate" in line for line in lines))
        check(untrusted.heard.empty(),
              "an https webhook whose certificate's authority is not trusted is sent nothing",
              None)
    finally:
        for a in agents:
            a.stop()
        hub.stop()


def notice_lines(work):
    """The hub's log lines about alert notices."""
    with open(os.path.join(work, "hub.log")) as f:
        return [line for line in f if "alert notice" in line]


def send(agent, value):
    agent.ok("send", f"test.temp_c={value}", "zone=cpu", "--data-dir", agent.data)


def alerts(receiver, hub, agents, secure):
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
    over_tls = secure.next("hot on py-north, over https")
    check(over_tls == body, "the https webhook, its certificate from alerts.ca_file's "
          "authority, hears the same notice", over_tls)

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
    check(secure.next("hot resolved, over https") == body,
          "and the https webhook hears it resolve", None)
    check(body["status"] == "resolved" and resolved["labels"] == fired["labels"],
          "the next notice resolves the same alert (none for the other group's device, "
          "none while it stayed over, none from hot-elsewhere: both agents run this "
          "machine's kernel, which its `where` leaves out)", body)
    check(resolved["fingerprint"] == fired["fingerprint"] and resolved["startsAt"] ==
          fired["startsAt"], "with the same fingerprint and start", (fired, resolved))
    check(rfc3339(resolved["endsAt"]) >= rfc3339(resolved["startsAt"]),
          "and when it ended", resolved)


def log_rule(receiver, hub, secure, logs):
    """A log rule fires on the first line holding its text from its
    source, and resolves once its window passed without another."""
    kernel_log, app_log = logs
    with open(app_log, "a") as f:
        f.write(f"{OOM}, but in another file\n")
    fleet.until("the line from the other file is stored",
                lambda: hub.cli.json("logs", "--source", app_log),
                lambda rows: len(rows) == 1)
    check(receiver.none_within(1.5) is None,
          "a line holding the text, from a source the rule does not watch, fires nothing", None)
    with open(kernel_log, "a") as f:
        f.write("usb 1-1: new high-speed USB device\n" f"{OOM}\n")
    body = receiver.next("oom on py-north")
    fired = alertmanager_body(body, "oom")
    check(body["status"] == "firing" and fired["labels"] == {"alertname": "oom", "device": NORTH},
          "a matching line fires the log rule, naming the rule and device", fired)
    summary = fired["annotations"]["summary"]
    check(OOM in summary and kernel_log in summary and float(fired["annotations"]["value"]) == 1,
          "the summary quotes the line and its source; the value counts the lines", fired)
    check(fired["annotations"]["condition"].startswith('log contains "Out of memory" from '),
          "the condition as the rule says it", fired)
    check(secure.next("oom, over https") == body, "the https webhook hears it too", None)
    body = receiver.next("oom resolved")
    resolved = alertmanager_body(body, "oom resolved")
    check(body["status"] == "resolved" and resolved["fingerprint"] == fired["fingerprint"],
          "it resolves once its window passed without another such line", body)
    check(secure.next("oom resolved, over https") == body, "over https too", None)


def config_refused(receiver, hub, secure):
    """A device that refuses a key of its desired configuration fires the
    config rule, and resolves it once it applies what it is sent after the
    key is taken out."""
    hub.cli.code(0, "config", "set", "--device", SOUTH, "host.interval_ms=1")
    body = receiver.next("config refused on py-south")
    fired = alertmanager_body(body, "config refused")
    check(body["status"] == "firing"
          and fired["labels"] == {"alertname": "config-refused", "device": SOUTH},
          "a device that refuses a key fires the config rule, naming the device", fired)
    summary = fired["annotations"]["summary"]
    check(summary.startswith(f"{SOUTH} refused 1 key of configuration version ")
          and "host.interval_ms: " in summary and float(fired["annotations"]["value"]) == 1
          and fired["annotations"]["condition"] == "config refused",
          "the summary names the key and why; the value counts the keys", fired)
    check(secure.next("config refused, over https") == body, "over https too", None)
    hub.cli.code(0, "config", "unset", "--device", SOUTH, "host.interval_ms")
    body = receiver.next("config refused resolved")
    resolved = alertmanager_body(body, "config refused resolved")
    check(body["status"] == "resolved" and resolved["fingerprint"] == fired["fingerprint"],
          "it resolves once the device applies what it is sent", body)
    check(secure.next("config refused resolved, over https") == body, "over https too", None)


def device_offline(receiver, agents):
    """A device that stops fires the offline rule."""
    south = agents[1]
    south.stop()
    body = receiver.next("py-south offline")
    offline = alertmanager_body(body, "offline")
    check(body["status"] == "firing" and offline["labels"] ==
          {"alertname": "device-offline", "device": SOUTH},
          "a device that stops fires the offline rule, without a series", offline)
    check(receiver.none_within(1.0) is None, "and nothing else is said", None)


if __name__ == "__main__":
    sys.exit(client.script_main("alerts", run, __doc__, fleet.OWN))
