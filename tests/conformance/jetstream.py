#!/usr/bin/env python3
"""What hubs run as front-ends keep in NATS JetStream, read as
protocol/PROTOCOL.md ("Front-ends over NATS JetStream") says a program of
yours may read it.

A device (wire.py, on CURVE) sends one batch through a front-end, the
operator submits a job, edits the configuration and broadcasts, and this
program reads the streams, buckets and subject with a NATS client of its
own (the core protocol over TCP, JetStream through its API subjects): no
NATS library and nothing of the Rust crates. Run by
`tests/tests/conformance.rs`. Exit status as client.py's.
"""

import base64
import json
import math
import socket
import sys
import time

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
import wire  # noqa: E402
from client import Agent, Failed, Operator, check, now_ms  # noqa: E402


class Nats:
    """Just enough of the NATS client protocol: CONNECT, PUB with a reply
    subject, SUB, and reading MSG and HMSG."""

    def __init__(self, url):
        host, port = url.removeprefix("nats://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=client.WAIT_S)
        self.buf = b""
        self.sids = 0
        info = self.line()
        check(info.startswith(b"INFO "), "the NATS server greets with INFO", info)
        options = {"verbose": False, "pedantic": False, "headers": True,
                   "no_responders": True, "lang": "python", "version": "0", "protocol": 1}
        self.sock.sendall(b"CONNECT " + json.dumps(options).encode() + b"\r\nPING\r\n")
        while self.line() != b"PONG":
            pass

    def line(self):
        while b"\r\n" not in self.buf:
            more = self.sock.recv(65536)
            if not more:
                raise Failed("the NATS server closed the connection")
            self.buf += more
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exactly(self, n):
        while len(self.buf) < n + 2:
            more = self.sock.recv(65536)
            if not more:
                raise Failed("the NATS server closed the connection")
            self.buf += more
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def subscribe(self, subject):
        self.sids += 1
        self.sock.sendall(f"SUB {subject} {self.sids}\r\n".encode())
        return self.sids

    def publish(self, subject, payload, reply=None):
        head = f"PUB {subject} {reply + ' ' if reply else ''}{len(payload)}\r\n"
        self.sock.sendall(head.encode() + payload + b"\r\n")

    def message(self):
        """The next MSG or HMSG: (subject, headers dict, payload)."""
        while True:
            line = self.line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            words = line.decode().split()
            if words[0] == "MSG":
                return words[1], {}, self.exactly(int(words[-1]))
            if words[0] == "HMSG":
                head_len, total = int(words[-2]), int(words[-1])
                data = self.exactly(total)
                return words[1], headers(data[:head_len]), data[head_len:]
            if words[0] == "-ERR":
                raise Failed(f"the NATS server said {line!r}")

    def request(self, subject, body):
        inbox = f"_INBOX.conformance.{self.sids + 1}"
        sid = self.subscribe(inbox)
        self.publish(subject, json.dumps(body).encode(), inbox)
        _, _, payload = self.message()
        self.sock.sendall(f"UNSUB {sid}\r\n".encode())
        return json.loads(payload)

    def stored(self, stream, **which):
        """One stored message of `stream`, by `seq=` or `last_by_subj=`:
        (subject, headers, data, its stream sequence)."""
        answer = self.request(f"$JS.API.STREAM.MSG.GET.{stream}", which)
        if "error" in answer:
            raise Failed(f"{stream} {which}: {answer['error']}")
        m = answer["message"]
        hdrs = headers(base64.b64decode(m["hdrs"])) if m.get("hdrs") else {}
        return m["subject"], hdrs, base64.b64decode(m.get("data", "")), m["seq"]


def headers(block):
    """NATS headers: `NATS/1.0` then `Key: value` lines."""
    lines = block.decode().split("\r\n")
    out = {}
    for line in lines[1:]:
        if line:
            key, value = line.split(":", 1)
            out[key.strip()] = value.strip()
    return out


def escape(text, specials):
    """Line protocol's escaping: a backslash before each of `specials`."""
    return "".join("\\" + c if c in specials else c for c in text)


def expected_lines(device, batch):
    """The line protocol PROTOCOL.md describes for one batch."""
    out = []
    for s in batch["samples"]:
        series = batch["names"][s["name"]]
        metric, _, rest = series.partition("{")
        tags = dict(t.split("=", 1) for t in rest.rstrip("}").split(",")) if rest else {}
        if "device" in tags:
            tags["device_tag"] = tags.pop("device")
        tags["device"] = device
        value = s["value"]
        if isinstance(value, float) and not math.isfinite(value):
            continue
        ns = (batch["base_ts_ms"] + s["offset_ms"]) * 1_000_000
        key = ",".join([escape(metric, ", ")] + [
            f"{escape(k, ',= ')}={escape(v, ',= ')}" for k, v in sorted(tags.items())])
        out.append((key, value, ns))
    for offset, text in batch["chat"]:
        ns = (batch["base_ts_ms"] + offset) * 1_000_000
        quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        out.append((f"fleetmq_chat,device={escape(device, ',= ')}", f'"{quoted}"', ns))
    return out


def read_line(line):
    """One line as (measurement and tags, value, ns): the value an int
    (`5i`), a float, or a quoted string field."""
    head, _, ns = line.rpartition(" ")
    key, _, field = head.partition(" value=") if " value=" in head else head.partition(" text=")
    if field.startswith('"'):
        return key, field, int(ns)
    if field.endswith("i"):
        return key, int(field[:-1]), int(ns)
    return key, float(field), int(ns)


def job_events(nats, after, kind):
    """The first job event called `kind` after stream sequence `after`,
    waiting for it to be written."""
    at = after
    deadline = time.monotonic() + client.WAIT_S
    while True:
        try:
            event = json.loads(nats.stored("FLEETMQ_JOB_EVENTS", seq=at + 1)[2])
        except Failed:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        at += 1
        if event.get("event") == kind:
            return event


def run(args, ctx):
    dev = args.device
    agent = Agent(ctx, args.telemetry, dev, args.hub_key, args.public, args.secret)
    op = Operator(ctx, args.operator, agent)
    agent.send(wire.hello("conformance-0.1", "python", "linux", "py-host", ["north"], 1000,
                          now_ms()))
    agent.expect("Welcome")
    facts = wire.device_facts("Conformance OS 1", "6.6.0-py", "Python Board Rev 1", "",
                              512 << 20, [("eth0", "", ["192.0.2.10/24"])])
    agent.send(wire.offer(["echo"], [], 0, True, False, 1, False, facts))

    nats = Nats(args.nats)
    # --- telemetry: one message per batch, its headers and its lines ----
    base = now_ms()
    names = ["cpu load,x{core=0,device=d1,zone=a b}", "temp", "gone"]
    samples = [(0, 0, 21.5), (1, 5, 42), (1, -7, -3), (2, 1, float("nan"))]
    chat = [(9, 'say "hi" \\ there\nnext')]
    frame = wire.batch(1, base, names, samples, chat)
    agent.send(frame)
    check(agent.expect("Ack")["seq"] == 1, "the front-end acks the batch")
    subject, hdrs, data, seq = nats.stored("FLEETMQ_TELEMETRY",
                                           last_by_subj=f"fleetmq.telemetry.{dev}")
    check(subject == f"fleetmq.telemetry.{dev}", "the batch is on its device's subject", subject)
    check(hdrs.get("Nats-Msg-Id") == f"{dev}/1" and hdrs.get("Fleetmq-Device") == dev
          and hdrs.get("Fleetmq-Seq") == "1",
          "Nats-Msg-Id is <device>/<seq>, Fleetmq-Device and Fleetmq-Seq", hdrs)
    body = base64.b64decode(hdrs.get("Fleetmq-Batch", ""), validate=True)
    check(body == frame[2:], "Fleetmq-Batch is the batch's postcard body, base64", body)
    batch = wire.read_upstream_body(wire.Reader(body, "Fleetmq-Batch"), 0x03)[1]
    lines = data.decode().split("\n")
    check(lines[-1] == "" and all(lines[:-1]), "every line ends in \\n", data)
    got = sorted(read_line(line) for line in lines[:-1])
    want = sorted(expected_lines(dev, batch))
    check(got == want, "one line a finite sample and a chat line, as the document writes them",
          {"got": got, "want": want})

    agent.send(frame)
    check(agent.expect("Ack")["seq"] == 1, "the same batch again is acked")
    again = nats.stored("FLEETMQ_TELEMETRY", last_by_subj=f"fleetmq.telemetry.{dev}")
    check(again[3] == seq, "and stored once, by its Nats-Msg-Id", (again[3], seq))

    # --- the buckets -----------------------------------------------------
    _, _, held, _ = nats.stored("KV_fleetmq_devices", last_by_subj=f"$KV.fleetmq_devices.{dev}")
    held = json.loads(held)
    check(held.get("frontend") == args.front_end and held.get("online") is True
          and held.get("arch") == "python" and held.get("groups") == ["north"]
          and {"since_ms", "version"} <= held.keys(),
          "fleetmq_devices says which front-end holds the device", held)
    # The front-end writes the facts into the holder after its Offer, on
    # its own schedule: read until they are there.
    deadline = time.monotonic() + client.WAIT_S
    while "facts" not in held and time.monotonic() < deadline:
        time.sleep(0.05)
        held = json.loads(nats.stored("KV_fleetmq_devices",
                                      last_by_subj=f"$KV.fleetmq_devices.{dev}")[2])
    check(held.get("facts") == {"os_release": "Conformance OS 1", "kernel": "6.6.0-py",
                                "model": "Python Board Rev 1", "serial": "",
                                "memory_bytes": 512 << 20,
                                "interfaces": [{"name": "eth0", "mac": "",
                                                "addresses": ["192.0.2.10/24"]}]},
          "and what its Offer said it is, as PROTOCOL.md writes DeviceFacts in JSON", held)
    _, _, keys, _ = nats.stored("KV_fleetmq_allow", last_by_subj=f"$KV.fleetmq_allow.{dev}")
    check(args.public in keys.decode().split("\n"), "fleetmq_allow lists its key", keys)
    _, _, report, _ = nats.stored("KV_fleetmq_frontends",
                                  last_by_subj=f"$KV.fleetmq_frontends.{args.front_end}")
    report = json.loads(report) if report else {}
    check(report.get("name") == args.front_end and isinstance(report.get("version"), str)
          and report["version"] != ""
          and set(report.get("features", [])) == {"job_cancel", "forget", "log_batches"}
          and {"reported_ms", "devices_online", "batches_accepted"} <= report.keys(),
          "fleetmq_frontends has the live front-end's report: FrontEndStats as JSON, "
          "with the version it runs and its features", report)

    # --- jobs: the job's id is its event's stream sequence ---------------
    job = op.expect("SubmitJob", "JobSubmitted", wire.job_submission(("echo", "via nats")))
    _, _, event, _ = nats.stored("FLEETMQ_JOB_EVENTS", seq=job["id"])
    event = json.loads(event)
    check(event.get("event") == "submitted"
          and event["submission"]["spec"] == {"Echo": {"text": "via nats"}},
          "the job's id is the sequence of its submitted event", event)
    work = agent.expect("Work")
    agent.send(wire.job_result(work["id"], work["attempt"], dev, ("completed", {
        "exit_code": 0, "stdout": "via nats", "stderr": "", "truncated": False,
        "duration_ms": 1}), work["token"]))
    op.until("the job is Done", "Job", "Job", wire.varint(job["id"]),
             lambda j: j["state"] == "Done")
    finished = job_events(nats, job["id"], "finished")
    check(finished["id"] == job["id"] and finished["outcome"]["Completed"]["stdout"] == "via nats",
          "a finished event carries the outcome", finished)

    aimed = op.expect("SubmitJob", "JobSubmitted", wire.job_submission(
        ("echo", "aimed via nats"), devices=[dev]))
    event = json.loads(nats.stored("FLEETMQ_JOB_EVENTS", seq=aimed["id"])[2])
    check(event.get("event") == "aimed" and event.get("members") == [dev]
          and event["expires_ms"] > event["at_ms"],
          "an aimed job's id is the sequence of its aimed event, with its members", event)
    run = agent.expect("Work")
    check(run["id"] == 2**52 + aimed["id"] * 2**20 + 1,
          "its run on the first member has id 2^52 + S*2^20 + 1", (run["id"], aimed["id"]))
    sent = job_events(nats, aimed["id"], "sent")
    check(sent["id"] == run["id"] and sent["device"] == dev and sent["token"] == run["token"]
          and sent["attempt"] == run["attempt"] and sent["lease_ms"] > 0,
          "a sent event names the run's attempt, device, token and lease", sent)
    agent.send(wire.job_result(run["id"], run["attempt"], dev, ("failed", "no echo today"),
                               run["token"]))
    finished = job_events(nats, aimed["id"], "finished")
    check(finished["id"] == run["id"] and finished["outcome"] == {"Failed": "no echo today"},
          "and a finished event its outcome", finished)

    # --- configuration: an edit's version is its stream sequence ---------
    edit = op.expect("ConfigEdit", "ConfigVersion",
                     wire.config_edit("fleet", [("app.mode", "nats")]))
    _, _, event, _ = nats.stored("FLEETMQ_CONFIG", seq=edit["version"])
    event = json.loads(event)
    check(event.get("event") == "edit" and event.get("origin") == args.front_end
          and event["edit"]["layer"] == "fleet" and ["app.mode", "nats"] in event["edit"]["set"],
          "the edit's version is the sequence of its edit event", event)

    # --- announcements on the core subject --------------------------------
    nats.subscribe("fleetmq.broadcast")
    nats.request("$JS.API.INFO", {})  # the SUB is in place once this answers
    op.expect("Broadcast", "Broadcast", wire.target(None) + wire.string("to every front-end"))
    subject, hdrs, data = nats.message()
    name, fields = wire.read_any(data)
    check(subject == "fleetmq.broadcast" and hdrs.get("Fleetmq-Topic") == "all/"
          and "Fleetmq-From" in hdrs and name == "Announcement"
          and fields["text"] == "to every front-end",
          "fleetmq.broadcast carries the Announcement with its topic", (subject, hdrs, fields))
    agent.send(wire.bye("done"))


if __name__ == "__main__":
    sys.exit(client.script_main("jetstream", run, __doc__, (
        "telemetry", "operator", "hub-key", "public", "secret", "device", "nats", "front-end")))
