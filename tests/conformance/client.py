#!/usr/bin/env python3
"""An agent and an operator client written from protocol/PROTOCOL.md alone.

It plays one device (on one connection, CURVE) and the operator (REQ on
the local operator socket) against a real hub, and checks every answer
against what the document promises. The frames are built and read by
`wire.py`, which knows nothing of the Rust crates. Run by
`tests/tests/conformance.rs`; by hand:

    python3 client.py --telemetry=TELEMETRY --operator=OPERATOR --hub-key=HUBKEY \
        --public=PUB --secret=SECRET --public5=PUB5 --secret5=SECRET5 \
        --device=py-1 --real-agent=rs-1 --operator-remote=OPERATOR_REMOTE \
        --admin-public=A --admin-secret=AS --reader-public=R --reader-secret=RS \
        --ports=BROADCAST,JOBS,RESULTS,COMMANDS --protocol=../../protocol/PROTOCOL.md

with the endpoints and ports the hub prints on its first line.

Exit status 0 when every check passed, 1 on the first that failed (what
was expected and what came), 2 when it cannot run (no pyzmq).
"""

import argparse
import os
import secrets
import sys
import time

try:
    import zmq
except ImportError:
    print("the conformance client needs pyzmq: apt install python3-zmq", file=sys.stderr)
    sys.exit(2)

sys.dont_write_bytecode = True  # nothing written into the source tree
import wire  # noqa: E402
from zmq.utils.monitor import recv_monitor_message  # noqa: E402

WAIT_S = 15.0


class Failed(Exception):
    pass


CHECKS = [0]
STARTED = time.monotonic()


def check(ok, what, got=None):
    """Counts a check that held (with the seconds since the start, to show
    where a slow run spent its time), or fails the run."""
    if not ok:
        raise Failed(f"{what}; got {got!r}")
    CHECKS[0] += 1
    print(f"ok {CHECKS[0]} ({time.monotonic() - STARTED:.1f} s): {what}", flush=True)


def send_now(sock, parts, who):
    """Sends a frame (or a list of frames) without blocking: after a
    refused handshake libzmq keeps no connection, and a socket without one
    would wait forever."""
    try:
        if isinstance(parts, list):
            sock.send_multipart(parts, zmq.NOBLOCK)
        else:
            sock.send(parts, zmq.NOBLOCK)
    except zmq.Again:
        raise Failed(f"{who} has no connection to send on (was its handshake refused?)") \
            from None


def curve_socket(ctx, kind, curve, routing_id=None):
    """A socket of `kind` that closes at once, with CURVE keys `curve` =
    (hub key, public, secret) as Z85 (none: plaintext)."""
    s = ctx.socket(kind)
    s.setsockopt(zmq.LINGER, 0)
    if routing_id is not None:
        s.setsockopt(zmq.ROUTING_ID, routing_id.encode())
    if curve and curve[0]:
        for option, key in zip((zmq.CURVE_SERVERKEY, zmq.CURVE_PUBLICKEY,
                                zmq.CURVE_SECRETKEY), curve):
            s.setsockopt(option, key if isinstance(key, bytes) else key.encode())
    return s


def refused_at_handshake(sock, endpoint):
    """Connects `sock` to `endpoint` and returns the status of the ZMTP
    ERROR that refused its handshake, as libzmq's monitor reports it
    (None if none came in time). Closes the socket."""
    monitor = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    sock.connect(endpoint)
    status = None
    if monitor.poll(int(WAIT_S * 1000)):
        status = recv_monitor_message(monitor)["value"]
    sock.disable_monitor()
    monitor.close()
    sock.close()
    return status


def now_ms():
    return int(time.time() * 1000)


class Agent:
    """One device on one connection: a DEALER whose routing id is its route."""

    def __init__(self, ctx, endpoint, device, hub_key, public, secret):
        self.device = device
        self.keys = (hub_key, public, secret)
        # The nonce: 16 to 64 characters of A-Z a-z 0-9, drawn at start.
        self.route = f"{device}@{secrets.token_hex(16)}"
        self.sock = curve_socket(ctx, zmq.DEALER, self.keys, self.route)
        self.sock.connect(endpoint)
        self.endpoint = endpoint
        self.started = time.monotonic()
        self.last_sent = 0.0
        self.backlog = []
        # The other four sockets, when it does not keep to one connection.
        self.ports = {}

    def connect_ports(self, ctx, welcome, topics):
        """Connects the four ports of the Welcome, on the telemetry
        socket's host, and subscribes the SUB to `topics`."""
        host = self.endpoint.rsplit(":", 1)[0]
        for name, kind in (("broadcast", zmq.SUB), ("commands", zmq.DEALER),
                           ("jobs", zmq.PULL), ("results", zmq.PUSH)):
            s = curve_socket(ctx, kind, self.keys, self.route if name == "commands" else None)
            for topic in topics if name == "broadcast" else ():
                s.setsockopt(zmq.SUBSCRIBE, topic.encode())
            s.connect(f"{host}:{welcome['ports'][name]}")
            self.ports[name] = s

    def sockets(self):
        return [self.sock] + [s for n, s in self.ports.items() if n != "results"]

    def uptime_ms(self):
        return int((time.monotonic() - self.started) * 1000)

    def send(self, frame):
        send_now(self.sock, frame, self.device)
        self.last_sent = time.monotonic()

    def keep_alive(self):
        # Hello says heartbeat_ms = 1000; stay heard while waiting.
        if time.monotonic() - self.last_sent > 0.5:
            self.send(wire.heartbeat(self.uptime_ms()))

    def take(self, sock=None):
        """Reads one waiting frame from `sock` (the telemetry socket by
        default). Commands are answered at once, as an agent does (Ping
        with Pong); everything read goes to the backlog, broadcasts as
        ("broadcast", (topic, name, fields))."""
        sock = sock or self.sock
        if sock is self.sock:
            name, fields = wire.read_downstream(sock.recv())
            if name == "Command" and fields["command"] == ("ping",):
                self.send(wire.reply_pong(fields["corr"], 4242))
        elif sock is self.ports.get("broadcast"):
            topic, data = sock.recv_multipart()
            name, fields = "broadcast", (topic.decode(), *wire.read_any(data))
        elif sock is self.ports.get("commands"):
            parts = sock.recv_multipart()
            check(len(parts) == 2 and parts[0] == b"",
                  "the commands DEALER gets [empty][envelope]", parts)
            name, fields = wire.read_any(parts[1])
            if name == "CommandRequest" and fields["command"] == ("ping",):
                send_now(sock, [b"", wire.reply_pong(fields["corr"], 4343, wire.COMMAND_REPLY)],
                         f"{self.device}'s commands socket")
        else:
            name, fields = wire.read_any(sock.recv())
        self.backlog.append((name, fields))

    def expect(self, name, where=lambda f: True, timeout=WAIT_S):
        """The first downstream message called `name` that satisfies
        `where`, from the backlog or the socket."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (n, f) in enumerate(self.backlog):
                if n == name and where(f):
                    del self.backlog[i]
                    return f
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failed(f"{self.device} was sent no {name} in {timeout} s; "
                             f"it was sent {self.backlog}")
            self.keep_alive()
            poller = zmq.Poller()
            for sock in self.sockets():
                poller.register(sock, zmq.POLLIN)
            for sock, _ in poller.poll(int(min(left, 0.25) * 1000)):
                self.take(sock)


class Operator:
    """The operator's REQ on the hub's local operator socket, or on its
    remote one with `curve` = (hub key, public, secret); `agent`, if any,
    is served while it waits."""

    def __init__(self, ctx, endpoint, agent, curve=None):
        self.sock = curve_socket(ctx, zmq.REQ, curve)
        self.sock.connect(endpoint)
        self.agent = agent

    def ask(self, request, body=b"", timeout=WAIT_S):
        """Sends one request and returns (response name, body). The agent
        is served meanwhile, so a command to it is answered."""
        request_id = secrets.randbits(63)
        send_now(self.sock, wire.operator_request(request_id, request, body), "the operator")
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        for sock in self.agent.sockets() if self.agent else []:
            poller.register(sock, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.agent:
                self.agent.keep_alive()
            for sock, _ in poller.poll(250):
                if sock is not self.sock:
                    self.agent.take(sock)
                else:
                    got_id, name, answer = wire.read_operator_response(sock.recv())
                    check(got_id == request_id, f"{request} is answered with its own id",
                          (got_id, name, answer))
                    return name, answer
        raise Failed(f"the hub did not answer {request} in {timeout} s")

    def expect(self, request, response, body=b""):
        name, answer = self.ask(request, body)
        check(name == response, f"{request} is answered {response}", (name, answer))
        return answer

    def until(self, what, request, response, body, done):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            answer = self.expect(request, response, body)
            if done(answer):
                check(True, what)
                return answer
            time.sleep(0.1)
        raise Failed(f"{what}: last {request} answer {answer!r}")


def golden_vectors(protocol_md):
    """Every frame in PROTOCOL.md's table of golden vectors reads exactly,
    and the frames this client writes come out as the table's bytes."""
    import re

    with open(protocol_md, encoding="utf-8") as f:
        doc = f.read()
    table = doc[doc.index("## Golden vectors"):doc.index("## Limits")]
    frames = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        found = re.fullmatch(r"`((?:[0-9a-f]{2} ?)+)`(.*)", cells[-1])
        if len(cells) >= 2 and found:
            data = bytes.fromhex(found.group(1))
            # Rows for an older writer's message show its growable
            # struct's first fields only.
            name, fields = wire.read_any(data, older=True)
            frames.append((name, fields, data))
    check(len(frames) >= 26, "PROTOCOL.md's golden vectors all read exactly", len(frames))
    written = {
        "Batch": wire.batch(7, 1000, ["cpu", "up"], [(0, 0, 0.5), (1, 250, -2)], [(0, "hi")]),
        "Hello": wire.hello("0.1", "arm", "linux", "pi", ["n"], 5000, 1),
        "Offer": wire.offer(["echo"], ["df"], 3, True, False, 2, True, wire.device_facts(
            kernel="6.1", interfaces=[("eth0", "", ["10.0.0.2/8"])])),
        "OperatorRequest": wire.operator_request(5, "Telemetry", wire.telemetry_query(
            device="pi", after_id=-1, limit=10, newest=True, tags=["k=v"])),
        "Result": wire.job_result(7, 1, "pi", ("already_run",), 9),
        "Reply": wire.reply_pong(1, 5),
        "Applied": wire.applied(2, [("a.b", "no")]),
        "LogBatch": wire.log_batch(8, 1000, ["up"], [(0, 0, 1)], [], ["/l"],
                                   [(0, 0, "hi"), (0, 2, "yo")]),
    }
    for name, data in written.items():
        golden = next((d for n, _, d in frames if n == name), None)
        check(data == golden, f"this client writes the golden {name} byte for byte",
              {"written": data.hex(" "), "golden": golden and golden.hex(" ")})
    revoke = next((f for n, f, _ in frames
                   if n == "OperatorRequest" and f["request"][0] == "Revoke"), None)
    check(revoke == {"id": 5, "request": ("Revoke", {"device": "pi", "public_key": None})},
          "the golden Revoke reads as PROTOCOL.md says", revoke)
    data = wire.operator_request(5, "Revoke", wire.revocation("pi"))
    check(any(d == data for _, _, d in frames), "this client writes the golden Revoke byte for byte",
          data.hex(" "))
    aimed = [f["request"][1] for n, f, _ in frames
             if n == "OperatorRequest" and f["request"][0] == "FleetCommand"]
    check([a["matching"] for a in aimed] == [["model~zero"], []]
          and all(a["groups"] == ["n"] for a in aimed),
          "the golden FleetCommands read with their filters, and an older one's as none", aimed)
    data = wire.operator_request(5, "FleetCommand", wire.fleet_command(
        ("ping",), groups=["n"], matching=["model~zero"]))
    check(any(d == data for _, _, d in frames),
          "this client writes the golden FleetCommand byte for byte", data.hex(" "))


def clock_offset(agent, op):
    """An agent that says Hello again when its clock steps has its clock
    measured: Hello's started_ms plus each Heartbeat's uptime_ms, against
    the hub's clock (this machine's, here)."""
    def offset():
        devices = {d["id"]: d for d in op.expect("Devices", "Devices")}
        return devices[agent.device]["clock_offset_ms"]

    def hello(behind_ms):
        started = now_ms() - agent.uptime_ms() - behind_ms
        agent.send(wire.hello("conformance-0.1", "python", "linux", "py-host", ["north"], 1000,
                              started))
        for name in ("Carry", "TakesLogs", "Welcome"):
            agent.expect(name)
        agent.send(wire.offer(["echo"], [], 0, True, False, 1, True, wire.device_facts(*FACTS)))
        agent.send(wire.heartbeat(agent.uptime_ms()))

    measured = op.until("the hub measures the device's clock", "Devices", "Devices", b"",
                        lambda ds: any(d["id"] == agent.device and d["clock_offset_ms"] is not None
                                       for d in ds))
    check(abs(offset()) < 5_000, "on one machine, in step with the hub's", measured)
    devices = {d["id"]: d for d in op.expect("Devices", "Devices")}
    check(devices[agent.device]["address"] == "127.0.0.1",
          "DeviceInfo.address: where its connection comes from", devices[agent.device])
    day = 86_400_000
    hello(day)
    op.until("a Hello after the clock stepped a day back is measured at the next heartbeat",
             "Devices", "Devices", b"",
             lambda ds: any(d["id"] == agent.device and d["clock_offset_ms"] is not None
                            and abs(d["clock_offset_ms"] + day) < 5_000 for d in ds))
    hello(0)
    op.until("and in step again once it steps back", "Devices", "Devices", b"",
             lambda ds: any(d["id"] == agent.device and d["clock_offset_ms"] is not None
                            and abs(d["clock_offset_ms"]) < 5_000 for d in ds))


def topic_of(where):
    """The broadcast topic of a Target: all/, group/<group>/, dev/<id>/."""
    if where is None:
        return "all/"
    kind, name = where
    return f"{'dev' if kind == 'device' else 'group'}/{name}/"


# What the Python agent's Offer says it is: os_release, kernel, model,
# serial, memory_bytes, interfaces.
FACTS = ("Conformance OS 1", "6.6.0-py", "Python Board Rev 1", "py-0001", 512 << 20,
         [("eth0", "02:00:00:00:00:01", ["192.0.2.10/24", "2001:db8::10/64"]),
          ("wlan0", "", [])])


def device_facts(agent, op, devices, real_agent):
    """DeviceInfo lists what a device's Offer says it is; a later Offer
    replaces it; facts past their bounds are not kept, and the device's
    work goes on. The real agent says what this machine is."""
    me = devices[agent.device]["facts"]
    want = dict(zip(("os_release", "kernel", "model", "serial", "memory_bytes"), FACTS[:5]))
    want["interfaces"] = [{"name": n, "mac": m, "addresses": a} for n, m, a in FACTS[5]]
    check(me == want, "DeviceInfo carries the facts its Offer said", me)
    moved = FACTS[:5] + ([("eth0", "02:00:00:00:00:01", ["192.0.2.77/24"])],)
    agent.send(wire.offer(["echo"], [], 0, True, False, 1, True, wire.device_facts(*moved)))
    facts = lambda ds: next(d["facts"] for d in ds if d["id"] == agent.device)
    op.until("an Offer mid-session (its address moved) replaces them", "Devices", "Devices",
             b"", lambda ds: facts(ds)["interfaces"][0]["addresses"] == ["192.0.2.77/24"])
    past = [(f"veth{i}", "", []) for i in range(33)]
    agent.send(wire.offer(["echo"], [], 0, True, False, 1, True,
                          wire.device_facts(*FACTS[:5], past)))
    # The hub reads a connection's messages in order: once a frame sent
    # after the Offer is answered (a trailing byte: Refusal), it was taken.
    agent.send(wire.heartbeat(5) + b"\x00")
    agent.expect("Refusal")
    now = facts(op.expect("Devices", "Devices"))
    check(len(now["interfaces"]) == 1, "facts over 32 interfaces are not kept; the last stay",
          now)
    real = next(d["facts"] for d in op.expect("Devices", "Devices") if d["id"] == real_agent)
    with open("/proc/sys/kernel/osrelease", encoding="utf-8") as f:
        kernel = f.read().strip()
    with open("/proc/meminfo", encoding="utf-8") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    check((real["kernel"], real["memory_bytes"]) == (kernel, total),
          "the real agent's facts are this machine's kernel and memory", real)
    check(all(i["name"] != "lo" for i in real["interfaces"]),
          "loopback is not among its interfaces", real["interfaces"])
    # Another board under the device's key (its card in another Pi, or
    # its key copied): the hub keeps it in the device's log.
    other = ("Conformance OS 1", "6.6.0-py", "Python Board Rev 1", "py-0002", 512 << 20, [])
    for serial_facts in (other, FACTS):
        agent.send(wire.offer(["echo"], [], 0, True, False, 1, True,
                              wire.device_facts(*serial_facts)))
    events = op.until("another board is kept in the device's log", "PresenceLog", "PresenceLog",
                      wire.string(agent.device) + wire.varint(2),
                      lambda ev: len(ev) == 2
                      and all(e["why"].startswith("another board") for e in ev))
    check([e["why"].split(";")[0] for e in events]
          == ["another board: serial py-0001 (was py-0002)",
              "another board: serial py-0002 (was py-0001)"]
          and all(e["online"] for e in events),
          "PresenceLog: each change of board serial, newest first", events)


def rows_of(answer, device):
    return [(r["seq"], r["ts_ms"], r["name"], r["value"]) for r in answer if r["device"] == device]


def run(args, ctx):
    golden_vectors(args.protocol)
    agent = Agent(ctx, args.telemetry, args.device, args.hub_key, args.public, args.secret)
    op = Operator(ctx, args.operator, agent)
    dev = args.device
    ports = dict(zip(("broadcast", "jobs", "results", "commands"),
                     (int(p) for p in args.ports.split(","))))

    # --- joining: Hello, Carry, Welcome, Offer -------------------------
    agent.send(wire.hello("conformance-0.1", "python", "linux", "py-host", ["north"], 1000,
                          now_ms()))
    first = agent.expect("Carry")
    check(first == {}, "a Hello is answered with Carry", first)
    check(agent.expect("TakesLogs") == {}, "and TakesLogs: this hub takes log lines")
    check(not any(n == "Welcome" for n, _ in agent.backlog), "both come before Welcome",
          agent.backlog)
    welcome = agent.expect("Welcome")
    check(welcome["ports"] == ports, "Welcome names the hub's other ports", welcome)
    agent.send(wire.offer(["echo"], [], 0, True, False, 1, True, wire.device_facts(*FACTS)))
    agent.send(wire.heartbeat(agent.uptime_ms()))
    clock_offset(agent, op)

    # --- telemetry: Ack, a resend, Renumber, Rejected, Refusal ---------
    base = now_ms()
    names = ["py.temp{room=lab}", "py.count"]
    samples = [(0, 0, 21.5), (1, 250, -3), (0, -1000, 20.25)]
    chat = [(0, "hello from python")]
    agent.send(wire.batch(1, base, names, samples, chat))
    check(agent.expect("Ack")["seq"] == 1, "batch 1 is acked")
    agent.send(wire.batch(1, base, names, samples, chat))
    check(agent.expect("Ack")["seq"] == 1, "the same bytes again are acked again")
    agent.send(wire.batch(1, base, names, [(0, 0, 99.0), (1, 0, 99)], []))
    renumber = agent.expect("Renumber")
    check(renumber["seq"] == 1 and renumber["from"] >= 2,
          "other bytes under a stored number are answered Renumber, from above it", renumber)
    moved = renumber["from"]
    agent.send(wire.batch(moved, base, names, samples, chat))
    check(agent.expect("Ack")["seq"] == moved, "the records sent again under `from` are acked")

    bad = moved + 1
    agent.send(wire.batch(bad, 253_402_300_799_999, ["late"], [(0, 1, 1)], []))
    rejected = agent.expect("Rejected")
    check(rejected["seq"] == bad and rejected["reason"],
          "a record past 9999-12-31 is Rejected with a reason", rejected)
    agent.send(wire.batch(bad + 1, base, ["x" * 129], [(0, 0, 1)], []))
    rejected = agent.expect("Rejected")
    check(rejected["seq"] == bad + 1, "a 129-byte metric name is Rejected", rejected)
    agent.send(wire.batch(bad + 2, base, [], [], [(0, "y" * 2001)]))
    rejected = agent.expect("Rejected")
    check(rejected["seq"] == bad + 2, "a 2,001-byte chat line is Rejected", rejected)

    agent.send(bytes([9, 0x02]) + wire.varint(5))
    refusal = agent.expect("Refusal")
    check(refusal["reason"] != "", "a frame of version 9 is answered Refusal with a reason",
          refusal)
    agent.send(wire.heartbeat(5) + b"\x00")
    agent.expect("Refusal")
    check(True, "a frame with a trailing byte is answered Refusal")

    # --- the operator: what was stored ---------------------------------
    devices = {d["id"]: d for d in op.expect("Devices", "Devices")}
    me = devices.get(dev)
    check(me is not None and me["online"], f"{dev} is listed online", devices.keys())
    check((me["agent_version"], me["arch"], me["os"], me["hostname"], me["groups"])
          == ("conformance-0.1", "python", "linux", "py-host", ["north"]),
          "DeviceInfo carries what the Hello said", me)
    check(me["batches"] == 2, "DeviceInfo counts the two batches stored", me["batches"])
    check(devices.get(args.real_agent, {}).get("online"),
          f"the real agent {args.real_agent} is listed online", list(devices))
    device_facts(agent, op, devices, args.real_agent)

    rows = op.expect("Telemetry", "Telemetry", wire.telemetry_query(device=dev, limit=1000))
    mine = rows_of(rows, dev)
    want = sorted((s, base + off, names[n], v) for s in (1, moved) for n, off, v in samples)
    check(sorted(mine) == want, "Telemetry returns every sample stored, with its time", mine)
    check([r["id"] for r in rows] == sorted(r["id"] for r in rows), "rows come oldest first")
    check(all(r["value"] != 99.0 for r in rows), "the renumbered bytes were not stored under 1")

    tagged = op.expect("Telemetry", "Telemetry", wire.telemetry_query(
        device=dev, name="py.temp", tags=["room=lab"], limit=1000))
    check(sorted(r["value"] for r in tagged) == [20.25, 20.25, 21.5, 21.5],
          "a metric name without tags, with a tag, finds that series", tagged)
    newest = op.expect("Telemetry", "Telemetry", wire.telemetry_query(
        device=dev, limit=1, newest=True))
    check(len(newest) == 1 and newest[0]["id"] == max(r["id"] for r in rows),
          "newest with limit 1 is the last row", newest)

    lines = op.expect("Chat", "Chat", wire.chat_query(0, 100))
    said = [c for c in lines if c["device"] == dev]
    check([c["text"] for c in said] == ["hello from python"] * 2 and said[0]["ts_ms"] == base,
          "Chat holds the line of each stored batch, at its time", said)
    recent = op.expect("RecentChat", "Chat", wire.varint(1))
    check(len(recent) == 1 and recent[0]["id"] == max(c["id"] for c in lines),
          "RecentChat with limit 1 is the newest line", recent)

    latest = op.expect("Latest", "Latest")
    check(any(v["device"] == dev and v["name"] == "py.count" and v["value"] == -3
              for v in latest), "Latest holds the device's newest py.count", latest)
    latest_of = op.expect("LatestOf", "Latest", wire.option(dev, wire.string)
                          + wire.seq(["py.count"], wire.string))
    check([(v["device"], v["name"], v["ts_ms"], v["value"]) for v in latest_of]
          == [(dev, "py.count", base + 250, -3)], "LatestOf names one series", latest_of)

    # --- log lines: a LogBatch, to a hub that said TakesLogs ------------
    logs = [(0, 0, "started"), (1, 5, "error: disk full"), (0, 7, "stopped")]
    sources = ["/var/log/app.log", "/var/log/syslog"]
    agent.send(wire.log_batch(bad + 3, base, ["py.up"], [(0, 0, 1)], [], sources, logs))
    check(agent.expect("Ack")["seq"] == bad + 3, "a LogBatch is acked as a Batch is")
    agent.send(wire.log_batch(bad + 4, base, [], [], [], ["/a"], [(1, 0, "x")]))
    rejected = agent.expect("Rejected")
    check(rejected["seq"] == bad + 4 and "source" in rejected["reason"],
          "a log line naming a source past `sources` is Rejected, saying so", rejected)
    found = op.expect("Logs", "Logs", wire.log_query(device=dev))
    check([(r["seq"], r["ts_ms"], r["source"], r["text"]) for r in found]
          == [(bad + 3, base + off, sources[s], t) for s, off, t in logs],
          "Logs returns each line with its batch, time and source, oldest first", found)
    check([r["id"] for r in found] == sorted(r["id"] for r in found), "ids rise as cursors")
    picked = op.expect("Logs", "Logs", wire.log_query(device=dev, source=sources[0],
                                                      contains="stop"))
    check([r["text"] for r in picked] == ["stopped"], "by source and text", picked)
    after = op.expect("Logs", "Logs", wire.log_query(device=dev, after_id=found[0]["id"],
                                                     limit=1))
    check(after == found[1:2], "and on from a cursor", after)
    stats = op.expect("Stats", "Stats")
    check(stats["log_lines_stored"] >= len(logs), "Stats counts the log lines stored", stats)
    check(stats["log_bytes"] == 0,
          "a LogBatch with samples too is telemetry: log_bytes counts none of it", stats)
    samples_too = op.expect("Telemetry", "Telemetry", wire.telemetry_query(
        device=dev, name="py.up"))
    check([r["value"] for r in samples_too] == [1], "a LogBatch's samples are stored too",
          samples_too)
    agent.send(wire.log_batch(bad + 5, base, [], [], [], sources[:1], [(0, 9, "alone")]))
    check(agent.expect("Ack")["seq"] == bad + 5, "a LogBatch of log lines alone is acked")
    stats = op.expect("Stats", "Stats")
    check(0 < stats["log_bytes"] <= stats["telemetry_bytes"],
          "log_bytes counts the batches of log lines alone, among the store's bytes", stats)

    # --- commands --------------------------------------------------------
    ping = wire.string(dev) + wire.command(("ping",)) + wire.varint(5000)
    reply = op.expect("Command", "Reply", ping)
    check(reply == {"device": dev, "reply": ("Pong", 4242)},
          "a Ping reaches the device as Command on its one connection and its Pong comes back",
          reply)
    status = op.expect("Command", "Reply", wire.string(args.real_agent)
                       + wire.command(("status",)) + wire.varint(5000))
    check(status["reply"][0] == "Status" and status["reply"][1]["device"] == args.real_agent,
          "the real agent's Status reads as AgentStatus", status)
    error = op.expect("Command", "Error", wire.string("nobody-here")
                      + wire.command(("ping",)) + wire.varint(1000))
    check(error == ("UnknownDevice", "nobody-here"), "a command to an unknown device",
          error)
    queued = op.expect("QueuedCommand", "Reply", ping + wire.varint(5000))
    check(queued["reply"] == ("Pong", 4242), "a QueuedCommand to an online device", queued)

    fleet = op.expect("FleetCommand", "FleetCommandQueued", wire.fleet_command(
        ("ping",), devices=[dev]))
    check(fleet["devices"] == [dev], "FleetCommandQueued names its members", fleet)
    # Aimed by what devices are: the real agent runs on this machine's
    # kernel, the Python agent says it runs on FACTS's (and a device whose
    # facts are not known matches no filter).
    check("matching" in op.expect("Stats", "Stats")["features"],
          "HubStats.features names matching: the hub honours FleetCommand.matching")
    kernel = os.uname().release
    mine = op.expect("FleetCommand", "FleetCommandQueued", wire.fleet_command(
        ("ping",), matching=[f"kernel={kernel}", "memory>1M"]))
    check(mine["devices"] == [args.real_agent],
          "a FleetCommand with matching reaches only the devices whose facts match", mine)
    error = op.expect("FleetCommand", "Error", wire.fleet_command(
        ("ping",), groups=["north"], matching=["model~no such board"]))
    check(error[0] == "BadRequest" and "where model~no such board" in error[1],
          "matching no device is BadRequest, naming the filters", error)
    error = op.expect("FleetCommand", "Error", wire.fleet_command(
        ("ping",), matching=["colour=red"]))
    check(error[0] == "BadRequest" and 'no field "colour"' in error[1],
          "a filter on no field is BadRequest, naming the fields", error)
    answers = op.until("the fleet command's share is answered", "FleetAnswers", "FleetAnswers",
                       wire.varint(fleet["id"]),
                       lambda a: a and a[0]["state"] == "answered")
    check(answers[0]["device"] == dev and answers[0]["reply"] == ("Pong", 4242)
          and answers[0]["ended_ms"] > 0, "FleetAnswer carries the reply", answers)
    log = op.expect("Commands", "Commands", wire.varint(10))
    check(log and all(a["sent_ms"] >= b["sent_ms"] for a, b in zip(log, log[1:]))
          and any(c["device"] == dev for c in log), "the command log, newest first", log)

    # --- jobs --------------------------------------------------------------
    job = op.expect("SubmitJob", "JobSubmitted", wire.job_submission(
        ("echo", "hi from the hub"), devices=[dev]))
    work = agent.expect("Work")
    check(work["spec"] == ("echo", "hi from the hub") and work["token"] != 0,
          "an aimed job reaches the device as Work, with a token", work)
    agent.send(wire.job_result(work["id"], work["attempt"], dev, ("completed", {
        "exit_code": 0, "stdout": "hi from the hub", "stderr": "", "truncated": False,
        "duration_ms": 3}), work["token"]))
    info = op.until("the aimed job is Done", "Job", "Job", wire.varint(job["id"]),
                    lambda j: j["state"] == "Done")
    run_ = info["runs"][0] if info["runs"] else {}
    check(run_.get("id") == work["id"] and run_.get("device") == dev
          and run_.get("outcome", ("",))[0] == "Completed"
          and run_["outcome"][1]["stdout"] == "hi from the hub",
          "its run holds the result the device sent", info)
    forged = op.expect("SubmitJob", "JobSubmitted", wire.job_submission(
        ("exec", "uname", []), devices=[dev]))
    refused = op.until("a job the Offer does not take ends NotAllowed", "Job", "Job",
                       wire.varint(forged["id"]),
                       lambda j: j["runs"] and j["runs"][0]["outcome"] is not None)
    check(refused["runs"][0]["outcome"][0] == "NotAllowed", "without being sent", refused)
    listed = op.expect("Jobs", "Jobs", wire.varint(50))
    check({job["id"], forged["id"]} <= {j["id"] for j in listed}, "Jobs lists both", listed)

    # --- broadcasts on one connection --------------------------------------
    for where, text in (((("device", dev)), "to python"), (("group", "south"), "not ours"),
                        (("group", "north"), "to north"), (None, "to all")):
        answer = op.expect("Broadcast", "Broadcast", wire.target(where) + wire.string(text))
        check(answer["topic"] == topic_of(where), f"Broadcast to {where} names its topic",
              answer)
    for where, text in ((("device", dev), "to python"), (("group", "north"), "to north"),
                        (None, "to all")):
        got = agent.expect("Announcement", lambda f, t=text: f["text"] == t)
        check(got["target"] == where, f"the device hears its announcement {text!r}", got)
    check(not any(f.get("text") == "not ours" for _, f in agent.backlog),
          "nor one to a group it is not in", agent.backlog)

    # --- desired configuration ---------------------------------------------
    edit = op.expect("ConfigEdit", "ConfigVersion",
                     wire.config_edit(f"device:{dev}", [("app.colour", "blue")]))
    desired = agent.expect("Desired", lambda d: d["version"] == edit["version"])
    check(("app.colour", "blue") in desired["values"], "the device is sent its document",
          desired)
    agent.send(wire.applied(edit["version"], [("app.colour", "this client keeps no app keys")]))
    view = op.until("ConfigShow has the device's report", "ConfigShow", "ConfigShow",
                    wire.string(dev), lambda v: v["applied_version"] == edit["version"])
    check(("app.colour", "blue", f"device:{dev}") in view["entries"]
          and view["errors"] == [("app.colour", "this client keeps no app keys")],
          "ConfigView lists the key, its layer and the refusal", view)
    states = op.expect("ConfigStatus", "ConfigStatus")
    check(any(s["device"] == dev and s["applied_version"] == edit["version"] for s in states),
          "ConfigStatus lists the device", states)
    stale = op.expect("ConfigEdit", "Error", wire.config_edit(
        f"device:{dev}", [("app.colour", "red")], if_version=edit["version"] + 100))
    check(stale[0] == "BadRequest", "an edit at another version is BadRequest", stale)

    # --- the rest of the operator's view -------------------------------------
    unknown = op.expect(99, "Error")
    check(unknown[0] == "BadRequest" and unknown[1] != "",
          "a request of a variant the hub does not know is BadRequest, with its id", unknown)
    op.expect("Alerts", "Alerts")
    check(True, "Alerts reads as a list of AlertInfo")
    stats = op.expect("Stats", "Stats")
    check(stats["security"] == "curve" and stats["devices_online"] >= 2,
          "Stats: CURVE, both devices online", stats)
    check(stats["batches_duplicate"] >= 1 and stats["batches_renumbered"] >= 1
          and stats["batches_rejected"] >= 3 and stats["frames_dropped"] >= 2,
          "Stats counts the resend, the renumbering, the rejections and the refusals", stats)
    check(stats["telemetry_cursor"] >= max(r["id"] for r in rows),
          "telemetry_cursor is past every row", stats)

    agent.send(wire.bye("conformance done"))
    op.until(f"{dev} is offline after Bye", "Devices", "Devices", b"",
             lambda ds: any(d["id"] == dev and not d["online"] for d in ds))
    events = op.expect("PresenceLog", "PresenceLog", wire.string(dev) + wire.varint(200))
    check(events and events[0] == {**events[0], "online": False, "why": "bye: conformance done"}
          and events[-1]["online"] and events[-1]["why"] == "hello",
          "PresenceLog, newest first: the Bye, and the Hello first", events)
    five_sockets(ctx, args, op)


def five_sockets(ctx, args, op):
    """A second device that does not keep to one connection: it connects
    the ports of the Welcome, as an agent of an older release does."""
    dev = args.device + "-five"
    agent = Agent(ctx, args.telemetry, dev, args.hub_key, args.public5, args.secret5)
    op.agent = agent
    agent.send(wire.hello("conformance-0.1", "python", "linux", "py-host", ["north"], 1000,
                          now_ms()))
    agent.expect("Carry")
    welcome = agent.expect("Welcome")
    agent.send(wire.offer(["echo"], [], 0, False, True, 1))
    topics = ["all/", f"dev/{dev}/", "group/north/", "chat/", f"dev/{args.device}/"]
    agent.connect_ports(ctx, welcome, topics)

    op.until(f"{dev} is listening once its SUB subscribed its dev/ topic", "Devices",
             "Devices", b"", lambda ds: any(d["id"] == dev and d["listening"] for d in ds))
    op.until("the SUB's subscription to another device's topic is refused and counted",
             "Stats", "Stats", b"", lambda st: st["subscriptions_refused"] >= 1)

    ping = wire.string(dev) + wire.command(("ping",)) + wire.varint(5000)
    deadline = time.monotonic() + WAIT_S
    while True:
        name, answer = op.ask("Command", ping)
        if name == "Reply" or time.monotonic() > deadline:
            break
        # Until its commands socket is connected the hub calls it offline
        # for commands.
        if answer[0] != "DeviceOffline":
            check(False, "until then, DeviceOffline", answer)
        time.sleep(0.1)
    check(answer == {"device": dev, "reply": ("Pong", 4343)},
          "a Ping comes on the commands DEALER in the REP envelope and its Pong goes back",
          answer)

    gone = op.expect("Broadcast", "Error", wire.target(("device", args.device))
                     + wire.string("five: other"))
    check(gone == ("DeviceOffline", args.device),
          "an announcement to a device that said Bye is DeviceOffline", gone)
    for where, text in ((("group", "south"), "five: south"), (("group", "north"), "five: north"),
                        (("device", dev), "five: mine"), (None, "five: all")):
        op.expect("Broadcast", "Broadcast", wire.target(where) + wire.string(text))
    mine = agent.expect("Announcement", lambda f: f["text"] == "five: mine")
    check(mine["target"] == ("device", dev),
          "an announcement to the device comes on its telemetry connection", mine)
    for topic, text in (("group/north/", "five: north"), ("all/", "five: all")):
        got = agent.expect("broadcast", lambda f, t=text: f[2].get("text") == t)
        check(got[0] == topic and got[1] == "Announcement",
              f"the SUB hears {text!r} under {topic}", got)
    heard = [f for n, f in agent.backlog if n == "broadcast"]
    check(not any(f[2].get("text") == "five: south" for f in heard),
          "nor one to a group it is not in, published before them", heard)

    agent.send(wire.batch(1, now_ms(), [], [], [(0, "hello from five sockets")]))
    check(agent.expect("Ack")["seq"] == 1, "a batch of one chat line is acked")
    line = agent.expect("broadcast", lambda f: f[1] == "ChatMessage")
    check(line[0] == "chat/" and line[2]["from"] == dev
          and line[2]["text"] == "hello from five sockets",
          "the chat room relays the line to chat/", line)

    job = op.expect("SubmitJob", "JobSubmitted", wire.job_submission(("echo", "pulled")))
    pulled = agent.expect("Job", lambda j: j["spec"] == ("echo", "pulled"))
    check(pulled["token"] != 0, "a work-queue job comes on the PULL, with a token", pulled)
    results = agent.ports["results"]
    done = ("completed", {"exit_code": 0, "stdout": "pulled", "stderr": "", "truncated": False,
                          "duration_ms": 1})
    send_now(results, wire.job_result(pulled["id"], pulled["attempt"], dev, done,
                                      pulled["token"] ^ 1, wire.JOB_RESULT), "the results PUSH")
    op.until("a result with another token is refused and counted", "Stats", "Stats", b"",
             lambda st: st["results_refused"] >= 1)
    send_now(results, wire.job_result(pulled["id"], pulled["attempt"], dev, done,
                                      pulled["token"], wire.JOB_RESULT), "the results PUSH")
    info = op.until("the job is Done by the result on the PUSH", "Job", "Job",
                    wire.varint(job["id"]), lambda j: j["state"] == "Done")
    check(info["device"] == dev and info["outcome"][0] == "Completed"
          and info["outcome"][1]["stdout"] == "pulled", "with that result", info)
    identity(ctx, args, op, agent)
    budgets(op, agent)
    remote_operators(ctx, args, agent)
    agent.send(wire.bye("five done"))


def remote_operators(ctx, args, agent):
    """The remote operator socket: CURVE, keys on the operator allow
    list, each with its role; never a device's key."""
    admin = Operator(ctx, args.operator_remote, agent,
                     (args.hub_key, args.admin_public, args.admin_secret))
    reader = Operator(ctx, args.operator_remote, agent,
                      (args.hub_key, args.reader_public, args.reader_secret))
    shout = wire.target(None) + wire.string("from afar")
    check(admin.expect("Broadcast", "Broadcast", shout)["topic"] == "all/",
          "an admin operator acts from the remote socket")
    check(any(d["id"] == agent.device for d in reader.expect("Devices", "Devices")),
          "a read operator reads")
    refused = reader.expect("Broadcast", "Error", shout)
    check(refused[0] == "Forbidden" and "read" in refused[1],
          "and is answered Forbidden when it would act, naming its role", refused)
    # Enrolling is acting: an admin enrols a new device from afar.
    public, _ = zmq.curve_keypair()
    enrol = wire.enrolment("py-afar", public.decode())
    refused = reader.expect("Enrol", "Error", enrol)
    check(refused[0] == "Forbidden", "a read operator may not enrol", refused)
    done = admin.expect("Enrol", "Enrolled", enrol)
    check(done == {"result": "enrolled"}, "an admin operator enrols a device", done)
    again = admin.expect("Enrol", "Enrolled", enrol)
    check(again == {"result": "already_enrolled"}, "twice: already enrolled", again)
    bad = admin.expect("Enrol", "Error", wire.enrolment("py-afar", "not-a-key"))
    check(bad[0] == "BadRequest" and "public_key" in bad[1], "a key that is not one is refused",
          bad)
    # So is revoking: an admin cuts a lost device off from afar.
    revoke = wire.revocation("py-afar")
    refused = reader.expect("Revoke", "Error", revoke)
    check(refused[0] == "Forbidden", "a read operator may not revoke", refused)
    other, _ = zmq.curve_keypair()
    missing = admin.expect("Revoke", "Error", wire.revocation("py-afar", other.decode()))
    check(missing[0] == "NotFound" and "py-afar" in missing[1],
          "revoking a key the device does not have is NotFound, naming it", missing)
    done = admin.expect("Revoke", "Revoked", revoke)
    check(done == {"removed_keys": 1}, "an admin operator revokes a device", done)
    again = admin.expect("Revoke", "Error", revoke)
    check(again[0] == "NotFound", "twice: it is no longer on the allow list", again)
    bad = admin.expect("Revoke", "Error", wire.revocation("py afar"))
    check(bad[0] == "BadRequest" and "device id" in bad[1], "a device id that is not one is refused",
          bad)
    # Who did what: the acts above, by name and role, refused ones too.
    trail = reader.expect("Audit", "Audit", wire.varint(50))
    check(all(a["id"] > b["id"] for a, b in zip(trail, trail[1:])), "Audit is newest first", trail)
    acts = [(e["operator"], e["act"], e["allowed"]) for e in trail]
    check(("ada (admin)", "revoke py-afar", True) in acts
          and ("rex (read)", "revoke py-afar", False) in acts
          and ("ada (admin)", "broadcast to the fleet: 'from afar'", True) in acts,
          "the audit trail names who asked each act, and keeps a refused one", acts)
    check(not any(act.startswith("Devices") or act == "Audit" for _, act, _ in acts),
          "reads are not kept", acts)
    device = curve_socket(ctx, zmq.REQ, (args.hub_key, args.public5, args.secret5))
    status = refused_at_handshake(device, args.operator_remote)
    check(status == 400, "a device's key is refused at the operator socket", status)


def identity(ctx, args, op, holder):
    """Security: who may speak for a device, and what those who may not
    are told."""
    dev = holder.device
    clone = Agent(ctx, args.telemetry, dev, args.hub_key, args.public5, args.secret5)
    clone.send(wire.hello("clone", "python", "linux", "clone-host", [], 1000, now_ms()))
    refusal = clone.expect("Refusal")
    check("127.0.0.1" in refusal["reason"],
          "a second route for an online device is refused, naming the holder's address",
          refusal)
    devices = {d["id"]: d for d in op.expect("Devices", "Devices")}
    check(devices[dev]["conflicts"] >= 1 and devices[dev]["conflict_address"] != "",
          "DeviceInfo counts the conflict and where it came from", devices[dev])
    answer = op.expect("Command", "Reply", wire.string(dev) + wire.command(("ping",))
                       + wire.varint(5000))
    check(answer["reply"] == ("Pong", 4343), "the holder still answers for the device", answer)
    clone.sock.close()

    bare = curve_socket(ctx, zmq.DEALER, (args.hub_key, args.public5, args.secret5), dev)
    bare.connect(args.telemetry)
    send_now(bare, wire.heartbeat(1), "the routing id without a nonce")
    check(bare.poll(int(WAIT_S * 1000)), "a routing id without a nonce is answered")
    name, fields = wire.read_downstream(bare.recv())
    check(name == "Refusal" and fields["reason"] != "",
          "with a Refusal saying why, since its key is the device's", (name, fields))
    bare.close()

    public, secret = zmq.curve_keypair()
    stranger = curve_socket(ctx, zmq.DEALER, (args.hub_key, public, secret),
                            f"stranger@{secrets.token_hex(16)}")
    status = refused_at_handshake(stranger, args.telemetry)
    check(status is not None, "a key not on the allow list fails its handshake")
    check(status == 400, "with ZMTP ERROR status 400", status)
    op.until("Stats counts the refused handshake", "Stats", "Stats", b"",
             lambda st: st["handshakes_refused"] >= 1 and st["connection_conflicts"] >= 1)
    waiting = op.until("Pending lists the key not on the allow list", "Pending", "Pending", b"",
                       lambda keys: any(k["public_key"] == public.decode() for k in keys))
    mine = next(k for k in waiting if k["public_key"] == public.decode())
    check(mine["address"] == "127.0.0.1" and mine["attempts"] >= 1
          and 0 < mine["first_ms"] <= mine["last_ms"],
          "with where it came from, when, and how often", mine)
    check(op.expect("Stats", "Stats", b"")["keys_pending"] >= 1,
          "Stats counts the keys waiting", waiting)


def budgets(op, agent):
    """Past its records budget (bursts of 40,000 by default) a device's
    batch is Throttled, and so is every batch until the wait is over."""
    big = [(0, i % 1000, i) for i in range(20_000)]
    base = now_ms()
    for seq_no in (2, 3):
        agent.send(wire.batch(seq_no, base, ["bulk"], big, []))
        check(agent.expect("Ack")["seq"] == seq_no, f"batch {seq_no} of 20,000 records is acked")
    agent.send(wire.batch(4, base, ["bulk"], big, []))
    held = agent.expect("Throttled")
    check(held["seq"] == 4 and held["retry_after_ms"] > 0 and held["reason"] != "",
          "the third is Throttled, with the time to wait and which budget", held)
    agent.send(wire.batch(5, base, ["bulk"], big[:1], []))
    again = agent.expect("Throttled")
    check(again["seq"] == 5 and 0 < again["retry_after_ms"] <= held["retry_after_ms"],
          "and so is the next batch, with what is left of the wait", again)
    stats = op.expect("Stats", "Stats")
    check(stats["batches_throttled"] >= 2, "Stats counts both", stats["batches_throttled"])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--telemetry", required=True)
    p.add_argument("--operator", required=True)
    p.add_argument("--hub-key", required=True)
    p.add_argument("--public", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--public5", required=True, help="the key of DEVICE-five")
    p.add_argument("--secret5", required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--operator-remote", required=True)
    for role in ("admin", "reader"):
        p.add_argument(f"--{role}-public", required=True)
        p.add_argument(f"--{role}-secret", required=True)
    p.add_argument("--real-agent", required=True)
    p.add_argument("--ports", required=True, help="broadcast,jobs,results,commands")
    p.add_argument("--protocol", required=True, help="the path of PROTOCOL.md")
    return run_checks("conformance", run, p.parse_args())


def script_main(name, run_them, doc, required, optional=()):
    """A script's `main`: its `--OPTION VALUE`s (the first paragraph of
    `doc` as its description), then its checks as `run_checks` runs them."""
    p = argparse.ArgumentParser(description=" ".join(doc.split("\n\n")[0].split()))
    for option in required:
        p.add_argument(f"--{option}", required=True)
    for option in optional:
        p.add_argument(f"--{option}", help="not used by this script")
    return run_checks(name, run_them, p.parse_args())


def run_checks(name, run_them, args):
    """Runs `run_them(args, ctx)` and says how it ended: 0 when every
    check passed, 1 at the first that failed."""
    # Destroyed on every way out: a context with a socket still open
    # would keep the process from ending.
    ctx = zmq.Context()
    try:
        run_them(args, ctx)
    except (Failed, wire.WireError, OSError, KeyError, ValueError) as e:
        print(f"FAILED after {CHECKS[0]} checks: {type(e).__name__}: {e}", flush=True)
        return 1
    finally:
        ctx.destroy(linger=0)
    print(f"{name}: all {CHECKS[0]} checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
