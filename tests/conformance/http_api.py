#!/usr/bin/env python3
"""The hub's HTTP API, used as the README ("The fleet page, Prometheus,
health and a JSON API") tells a program to use it.

Run after client.py against the same hub, so the store holds what that
device sent: py-1's two batches (py.temp{room=lab} 21.5 and 20.25,
py.count -3, a chat line each), its configuration, jobs, commands and
presence. Python's standard library only. Run by
`tests/tests/conformance.rs`. Exit status as client.py's.
"""

import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
import wire  # noqa: E402
import zmq  # noqa: E402
from client import check  # noqa: E402


class Http:
    def __init__(self, base, token=None):
        self.base = base
        self.token = token

    def call(self, path, body=None):
        """(status, content type, body bytes) of a GET, or of a POST of
        `body` as JSON."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=client.WAIT_S) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", ""), e.read()

    def json(self, path, body=None):
        status, _, data = self.call(path, body)
        check(status == 200, f"{'POST' if body is not None else 'GET'} {path} answers 200",
              (status, data[:300]))
        return json.loads(data)


def query(**fields):
    return "?" + urllib.parse.urlencode(fields)


def run(args, ctx):
    nobody = Http(args.http)
    reader = Http(args.http, args.token)
    admin = Http(args.http, args.admin_token)
    dev = args.device

    # --- who may ask -----------------------------------------------------
    status, _, body = nobody.call("/health")
    check(status == 200 and json.loads(body).get("status") == "ok",
          "/health answers without a token", (status, body))
    status, kind, _ = nobody.call("/")
    check(status == 200 and kind.startswith("text/html"), "so does the page", (status, kind))
    status, _, _ = nobody.call("/api/stats")
    check(status == 401, "the API wants the token", status)
    status, _, _ = Http(args.http, "not-the-token-at-all").call("/api/stats")
    check(status == 401, "and no other", status)
    check(reader.json("/api/me") == {"role": "read"}, "/api/me: the read token reads")
    check(admin.json("/api/me") == {"role": "admin"}, "/api/me: the admin token acts")

    # --- reads -------------------------------------------------------------
    stats = reader.json("/api/stats")
    check(stats.get("security") == "curve" and stats.get("batches_stored", 0) >= 2,
          "/api/stats as stats --json", stats)
    # HubStats as PROTOCOL.md lists it, read on the operator socket.
    fields = client.Operator(ctx, args.operator, None).expect("Stats", "Stats").keys()
    check(set(fields) <= stats.keys(), "/api/stats holds every HubStats field by name",
          sorted(set(fields) - stats.keys()))
    devices = {d["id"]: d for d in reader.json("/api/devices")}
    check(dev in devices and not devices[dev]["online"] and devices[dev]["groups"] == ["north"],
          "/api/devices as devices --json", devices.get(dev))
    kernel = os.uname().release
    mine = reader.json("/api/devices" + query(where=f"kernel={kernel},memory>1M"))
    check([d["id"] for d in mine] == [args.real_agent],
          "/api/devices?where=: the devices whose facts match every filter", mine)
    status, _, body = reader.call("/api/devices" + query(where="colour=red"))
    check(status == 400 and b'no field "colour"' in body,
          "/api/devices?where= with a filter on no field is 400, naming the fields", (status, body))

    series = urllib.parse.quote("py.temp{room=lab}")
    rows = reader.json("/api/telemetry" + query(device=dev, name="py.temp", tags="room=lab",
                                                limit=1000))
    check(sorted(r["value"] for r in rows) == [20.25, 20.25, 21.5, 21.5]
          and all(r["name"] == "py.temp{room=lab}" and r["device"] == dev for r in rows)
          and [r["id"] for r in rows] == sorted(r["id"] for r in rows),
          "/api/telemetry by name and tag, oldest first", rows)
    newest = reader.json("/api/telemetry" + query(device=dev, last=1))
    check(len(newest) == 1 and newest[0]["id"] >= max(r["id"] for r in rows),
          "last=1 is the newest row", newest)
    first = reader.json("/api/telemetry" + query(device=dev, name="py.temp", limit=2))
    rest = reader.json("/api/telemetry" + query(device=dev, name="py.temp",
                                                after=first[-1]["id"], limit=100))
    check([r["id"] for r in first + rest] == [r["id"] for r in rows],
          "limit and after page through every row once", (first, rest))
    earliest = min(r["ts_ms"] for r in rows)
    early = reader.json("/api/telemetry" + query(device=dev, name="py.temp",
                                                 until=earliest, limit=100))
    check(early and all(r["ts_ms"] == earliest for r in early),
          "until bounds the sample's time", early)

    points = reader.json(f"/api/series?device={dev}&name={series}&points=1"
                         f"&since={earliest - 1}&until={earliest + 60_000}")
    check(points.get("samples") == 4 and len(points["points"]) == 1
          and points["points"][0][1:] == [20.25, 20.875, 21.5],
          "/api/series: [time, min, mean, max] buckets and how many samples", points)

    lines = reader.json("/api/chat" + query(after=0, limit=100))
    check([c["text"] for c in lines if c["device"] == dev] == ["hello from python"] * 2,
          "/api/chat from a cursor", lines)
    last = reader.json("/api/chat" + query(last=1))
    check(len(last) == 1 and last[0]["id"] == max(c["id"] for c in lines),
          "/api/chat?last=1 is the newest line", last)

    latest = reader.json("/api/latest" + query(device=dev, name="py.count"))
    check([(v["device"], v["name"], v["value"]) for v in latest] == [(dev, "py.count", -3)],
          "/api/latest of one device's named metric", latest)
    config = reader.json("/api/config" + query(device=dev))
    check({"key": "app.colour", "value": "blue", "layer": f"device:{dev}"} in config["entries"],
          "/api/config as config show --json", config)
    presence = reader.json("/api/presence" + query(device=dev, limit=2))
    check(len(presence) == 2 and presence[0]["why"] == "bye: conformance done"
          and not presence[0]["online"], "/api/presence, newest first", presence)
    jobs = reader.json("/api/jobs" + query(limit=50))
    check(any(j["work"] == {"kind": "echo", "text": "pulled"} and j["state"] == "done"
              and j["outcome"]["result"] == "completed" for j in jobs),
          "/api/jobs in the command line's words", jobs)
    log = reader.json("/api/commands" + query(limit=50))
    check(log and all(a["sent_ms"] >= b["sent_ms"] for a, b in zip(log, log[1:]))
          and any(c["device"] == dev and c["answer"]["result"] == "pong" for c in log),
          "/api/commands, newest first, with their answers", log[:2])
    check(reader.json("/api/alerts") == [], "/api/alerts: none firing")

    status, kind, body = reader.call("/metrics")
    check(status == 200 and kind.startswith("text/plain"), "/metrics with the token",
          (status, kind))
    samples, info = {}, {}
    for line in body.decode().splitlines():
        if line.startswith("fleetmq_device_info{"):
            labels = line[len("fleetmq_device_info{"):].rpartition("} ")[0]
            pairs = dict(p.split("=", 1) for p in labels.split('",') if p)
            pairs = {k: v.strip('"') for k, v in pairs.items()}
            info[pairs["device"]] = pairs
        if line.startswith("fleetmq_metric{"):
            labels, _, value = line[len("fleetmq_metric{"):].rpartition("} ")
            pairs = dict(p.split("=", 1) for p in labels.split('",') if p)
            key = frozenset((k, v.strip('"')) for k, v in pairs.items())
            # The value, then the sample's time in ms.
            samples[key] = float(value.split()[0])
    want = frozenset({("device", dev), ("metric", "py.temp"), ("room", "lab")})
    check(samples.get(want) == 21.5, "fleetmq_metric{device,metric,...tags} holds the newest",
          sorted(map(sorted, samples))[:5])
    with open("/proc/sys/kernel/osrelease", encoding="utf-8") as f:
        kernel = f.read().strip()
    real = info.get(args.real_agent, {})
    check(real.get("kernel") == kernel and real.get("agent_version"),
          "fleetmq_device_info labels the real agent with its version and this machine's kernel",
          real)

    # --- acting --------------------------------------------------------------
    shout = {"all": True, "text": "from http"}
    status, _, _ = reader.call("/api/broadcast", shout)
    check(status == 403, "a POST with the read token is 403", status)
    check(admin.json("/api/broadcast", shout).get("topic") == "all/",
          "the admin token's announcement, answered as broadcast --json")
    pong = admin.json("/api/command", {"device": args.real_agent, "name": "ping", "args": []})
    check(pong.get("device") == args.real_agent and pong.get("ok") is True
          and pong.get("result") == "pong", "the admin token's command, answered", pong)
    narrowed = admin.json("/api/command", {"where": [f"kernel={kernel}"], "name": "ping"})
    check(narrowed.get("devices") == [args.real_agent],
          "a command with \"where\" alone: the devices of the fleet that match", narrowed)
    status, _, body = admin.call("/api/command", {"device": args.real_agent,
                                                  "where": ["model~x"], "name": "ping"})
    check(status == 400 and b'not "device"' in body,
          "\"where\" with one device is 400, saying it narrows a group or the fleet", body)
    job = admin.json("/api/job", {"device": args.real_agent, "kind": "echo", "text": "hi"})
    check(isinstance(job.get("id"), int), "the admin token's job, answered with its id", job)
    # A job for the protocol client's device (it runs nothing): called off.
    aimed = admin.json("/api/job", {"device": args.device, "kind": "echo", "text": "off"})
    off = admin.json("/api/job/cancel", {"id": aimed["id"]})
    check(off.get("id") == aimed["id"] and off.get("stopped", 0) + off.get("running", 0) == 1,
          "/api/job/cancel, answered as job cancel --json", off)
    again = admin.json("/api/job/cancel", {"id": aimed["id"]})
    check(again == {"id": aimed["id"], "stopped": 0, "running": 0},
          "a job that has ended: nothing stopped", again)
    status, _, body = reader.call("/api/job/cancel", {"id": aimed["id"]})
    check(status == 403, "cancelling with the read token is 403", (status, body))
    # A command for every device: the protocol client's device (offline
    # now) keeps its share waiting, until it is called off.
    sent = admin.json("/api/command", {"all": True, "name": "ping", "args": []})
    check(isinstance(sent.get("id"), int) and args.device in sent.get("devices", []),
          "a command for every device, answered with its id and members", sent)
    listed = reader.json("/api/fleet-commands" + query(limit=5))
    check(listed and listed[0]["id"] == sent["id"] and listed[0]["target"] == "all"
          and listed[0]["shares"].get("waiting", 0) >= 1,
          "/api/fleet-commands: the newest first, its waiting share counted", listed[:1])
    off = admin.json("/api/command/cancel", {"id": sent["id"]})
    check(off.get("id") == sent["id"] and off.get("stopped", 0) >= 1,
          "/api/command/cancel, answered as command --cancel --json", off)
    after = reader.json("/api/fleet-commands" + query(limit=1))[0]
    check("waiting" not in after["shares"] and after["shares"].get("failed", 0) >= 1,
          "nothing of it waits any more", after)
    status, _, body = reader.call("/api/command/cancel", {"id": sent["id"]})
    check(status == 403, "cancelling with the read token is 403", (status, body))

    # The desired configuration, edited as config set and unset do.
    edit = {"device": dev, "set": {"app.colour": "green", "app.size": "9"}}
    status, _, body = reader.call("/api/config", edit)
    check(status == 403, "a configuration edit with the read token is 403", (status, body))
    done = admin.json("/api/config", edit)
    check(set(done) == {"version", "layer"} and done["layer"] == f"device:{dev}",
          "/api/config answered as config set --json", done)
    entries = reader.json("/api/config" + query(device=dev))["entries"]
    check({"key": "app.colour", "value": "green", "layer": f"device:{dev}"} in entries
          and {"key": "app.size", "value": "9", "layer": f"device:{dev}"} in entries,
          "and the device's configuration holds the keys", entries)
    status = reader.json("/api/config")
    mine = [d for d in status["devices"] if d["device"] == dev]
    check(len(mine) == 1 and mine[0]["desired_version"] == done["version"]
          and mine[0]["state"] in ("pending", "in_sync", "failed"),
          "/api/config without a device: every device's versions, as config status --json",
          mine)
    gone = admin.json("/api/config", {"device": dev, "unset": ["app.size"],
                                      "if_version": done["version"]})
    check(gone["version"] > done["version"], "unset, on the version it was read at", gone)
    entries = reader.json("/api/config" + query(device=dev))["entries"]
    check(not any(e["key"] == "app.size" for e in entries), "the key is out", entries)
    status, _, body = admin.call("/api/config", {**edit, "if_version": done["version"]})
    check(status == 400 and b"version" in body,
          "an edit on a version that has moved on is refused, saying so", (status, body))
    typo = {"all": True, "set": {"host.intervl_ms": "5000"}}
    status, _, body = admin.call("/api/config", typo)
    check(status == 400 and b"host.intervl_ms" in body and b"force" in body,
          "a key agents do not take is refused as a likely typo, naming it", (status, body))
    forced = admin.json("/api/config", {**typo, "force": True})
    check(forced.get("layer") == "fleet", "and set when forced, in the fleet's layer", forced)
    admin.json("/api/config", {"all": True, "unset": ["host.intervl_ms"]})
    status, _, body = admin.call("/api/config", {"group": "north"})
    check(status == 400 and b"set" in body, "an edit of nothing is refused", (status, body))

    enrolment(args, ctx, reader, admin)


def enrolment(args, ctx, reader, admin):
    """A device whose key is not on the allow list waits in /api/pending,
    and the admin token enrols it from there."""
    public, secret = zmq.curve_keypair()
    new = public.decode()
    knocker = client.curve_socket(ctx, zmq.DEALER, (args.hub_key, public, secret))
    check(client.refused_at_handshake(knocker, args.telemetry) == 400,
          "a key not on the allow list is refused at the handshake")
    waiting = [k for k in reader.json("/api/pending") if k["public_key"] == new]
    check(len(waiting) == 1 and waiting[0]["address"] == "127.0.0.1"
          and waiting[0]["attempts"] >= 1 and waiting[0]["last_ms"] >= waiting[0]["first_ms"] > 0,
          "/api/pending lists it, with where it came from, as pending --json", waiting)
    check(reader.json("/api/stats")["keys_pending"] >= 1, "/api/stats counts it", None)

    ask = {"device": "py-new", "public_key": new}
    status, _, body = reader.call("/api/enrol", ask)
    check(status == 403, "enrolling with the read token is 403", (status, body))
    status, _, body = admin.call("/api/enrol", {"device": "py-new", "public_key": "short"})
    check(status == 400 and b"public_key" in body, "a key that is not one is refused, saying why",
          (status, body))
    done = admin.json("/api/enrol", ask)
    check(done == {"device": "py-new", "result": "enrolled"},
          "/api/enrol with the admin token, answered as allow --json", done)
    again = admin.json("/api/enrol", ask)
    check(again["result"] == "already_enrolled", "enrolled twice: already enrolled", again)
    check(not any(k["public_key"] == new for k in reader.json("/api/pending")),
          "an enrolled key no longer waits", None)

    agent = client.Agent(ctx, args.telemetry, "py-new", args.hub_key, public, secret)
    agent.send(wire.hello("conformance-0.1", "python", "linux", "py-new-host", [], 1000,
                          client.now_ms()))
    agent.expect("Welcome")
    check(True, "and the device gets in with it")

    # A lost device is cut off from the console as it was let in.
    status, _, body = reader.call("/api/revoke", {"device": "py-new"})
    check(status == 403, "revoking with the read token is 403", (status, body))
    status, _, body = admin.call("/api/revoke", {"device": "py-new", "key": new})
    check(status == 400 and b"public_key" in body,
          "a body /api/revoke does not take is refused, naming what it takes", (status, body))
    done = admin.json("/api/revoke", {"device": "py-new"})
    check(done == {"device": "py-new", "removed_keys": 1},
          "/api/revoke with the admin token, answered as revoke --json", done)
    status, _, body = admin.call("/api/revoke", {"device": "py-new", "public_key": new})
    check(status == 400 and b"not on the allow list" in body,
          "revoked twice: not on the allow list, said", (status, body))
    gone = [d for d in reader.json("/api/devices") if d["id"] == "py-new"]
    check(len(gone) == 1 and gone[0]["revoked"], "/api/devices says it is revoked", gone)
    # The console's acts are kept as the console's.
    trail = reader.json("/api/audit?limit=3")
    check(len(trail) <= 3 and trail[0]["operator"] == "console"
          and trail[0]["act"] == f"revoke py-new --key '{new}'" and trail[0]["allowed"] is True
          and any(e["act"] == "revoke py-new" for e in trail),
          "/api/audit: the console's acts, newest first, as audit --json", trail)
    status, _, body = reader.call("/api/audit?limt=3")
    check(status == 400 and b"limit" in body, "a misspelt parameter is named", (status, body))
    agent.sock.close()


if __name__ == "__main__":
    sys.exit(client.script_main("http", run, __doc__,
                                ("http", "operator", "token", "admin-token", "device", "real-agent",
                                 "telemetry", "hub-key")))
