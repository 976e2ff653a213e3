"""fleetmq's wire format, written from protocol/PROTOCOL.md alone.

This module is a second implementation of the protocol, in another
language, kept apart from the Rust crates on purpose: it reads nothing of
them. Where it and the hub disagree, PROTOCOL.md is wrong or the hub is.

Decoding is strict. A frame must be consumed exactly, and a growable
struct must hold exactly the fields the document lists (a hub of this
release writes no field the document does not name), so a field the
document forgot, or one in the wrong place, fails here.
"""

import struct

VERSION = 2


class WireError(Exception):
    """A frame that does not read as PROTOCOL.md says it should."""


# --- writing ---------------------------------------------------------------


def varint(n):
    if n < 0:
        raise ValueError(f"varint of a negative number {n}")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def zigzag(n):
    return varint((n << 1) ^ (n >> 63))


def string(s):
    b = s.encode("utf-8")
    return varint(len(b)) + b


def boolean(v):
    return b"\x01" if v else b"\x00"


def f64(v):
    return struct.pack("<d", v)


def seq(items, each):
    return varint(len(items)) + b"".join(each(i) for i in items)


def option(v, each):
    return b"\x00" if v is None else b"\x01" + each(v)


def growable(body):
    return varint(len(body)) + body


def frame(kind, body=b""):
    return bytes([VERSION, kind]) + body


def pair(p):
    return string(p[0]) + string(p[1])


def value(v):
    """Value = enum { Int(i64), Float(f64) }: a Python int or float."""
    if isinstance(v, float):
        return varint(1) + f64(v)
    return varint(0) + zigzag(v)


def target(t):
    """Target = enum { All, Group(String), Device(String) }: None, ("group", g)
    or ("device", d)."""
    if t is None:
        return varint(0)
    kind, name = t
    return varint({"group": 1, "device": 2}[kind]) + string(name)


def command(c):
    """Command = enum { Ping, Status, Exec{..}, Other{..} }, as a tuple."""
    if c[0] == "ping":
        return varint(0)
    if c[0] == "status":
        return varint(1)
    if c[0] == "exec":
        _, program, args, timeout_ms = c
        return varint(2) + string(program) + seq(args, string) + varint(timeout_ms)
    _, name, args = c
    return varint(3) + string(name) + seq(args, string)


def job_spec(spec):
    if spec[0] == "echo":
        return varint(0) + string(spec[1])
    return varint(1) + string(spec[1]) + seq(spec[2], string)


def output(o):
    return (
        option(o["exit_code"], zigzag)
        + string(o["stdout"])
        + string(o["stderr"])
        + boolean(o["truncated"])
        + varint(o["duration_ms"])
    )


def outcome(o):
    """Outcome as a tuple: ("completed", output), ("timed_out", output),
    ("not_allowed", why), ("unknown", why), ("already_run",), ("failed", why)."""
    names = ["completed", "timed_out", "not_allowed", "unknown", "already_run", "failed"]
    index = names.index(o[0])
    if index in (0, 1):
        return varint(index) + output(o[1])
    if index == 4:
        return varint(index)
    return varint(index) + string(o[1])


# Upstream, agent DEALER -> hub ROUTER.


def hello(agent_version, arch, os, hostname, groups, heartbeat_ms, started_ms):
    return frame(
        0x01,
        string(agent_version)
        + string(arch)
        + string(os)
        + string(hostname)
        + seq(groups, string)
        + varint(heartbeat_ms)
        + varint(started_ms),
    )


def heartbeat(uptime_ms):
    return frame(0x02, varint(uptime_ms))


def batch(seq_no, base_ts_ms, names, samples, chat):
    """samples: (name index, offset_ms, value); chat: (offset_ms, text)."""
    return frame(
        0x03,
        varint(seq_no)
        + varint(base_ts_ms)
        + seq(names, string)
        + seq(samples, lambda s: varint(s[0]) + zigzag(s[1]) + value(s[2]))
        + seq(chat, lambda c: zigzag(c[0]) + string(c[1])),
    )


def log_batch(seq_no, base_ts_ms, names, samples, chat, sources, logs):
    """A Batch with log lines (0x09): the Batch's fields, then sources and
    logs: (source index, offset_ms, text)."""
    body = batch(seq_no, base_ts_ms, names, samples, chat)[2:]
    return frame(
        0x09,
        body
        + seq(sources, string)
        + seq(logs, lambda l: varint(l[0]) + zigzag(l[1]) + string(l[2])),
    )


def bye(reason):
    return frame(0x04, string(reason))


def device_facts(os_release="", kernel="", model="", serial="", memory_bytes=0,
                 interfaces=()):
    """DeviceFacts; `interfaces` are (name, mac, [addresses])."""
    def interface(i):
        name, mac, addresses = i
        return growable(string(name) + string(mac) + seq(addresses, string))

    return growable(
        string(os_release) + string(kernel) + string(model) + string(serial)
        + varint(memory_bytes) + seq(list(interfaces), interface)
    )


def offer(job_kinds, exec_programs, config_version, one_connection, chat, job_slots,
          hello_on_clock_step=False, facts=None):
    return frame(
        0x05,
        growable(
            seq(job_kinds, string)
            + seq(exec_programs, string)
            + varint(config_version)
            + boolean(one_connection)
            + boolean(chat)
            + varint(job_slots)
            + boolean(hello_on_clock_step)
            + (facts if facts is not None else device_facts())
        ),
    )


def applied(version, errors):
    return frame(0x06, growable(varint(version) + seq(errors, pair)))


# The same bodies under two kinds: upstream on one connection, or on the
# separate sockets of an agent that does not keep to one (the results
# PUSH; the commands DEALER, after its empty frame).
RESULT, JOB_RESULT = 0x07, 0x31
REPLY, COMMAND_REPLY = 0x08, 0x41


def job_result(job_id, attempt, device, result, token, kind=RESULT):
    """Result (0x07), or JobResult (0x31) with `kind`."""
    return frame(
        kind,
        varint(job_id) + varint(attempt) + string(device) + outcome(result) + varint(token),
    )


def reply_pong(corr, uptime_ms, kind=REPLY):
    """Reply(CommandReply { corr, Pong { uptime_ms } }) (0x08), or the
    CommandReply (0x41) with `kind`."""
    return frame(kind, varint(corr) + varint(0) + varint(uptime_ms))


# Operator, REQ -> hub ROUTER: Request variants by their index.

REQUESTS = [
    "Devices",
    "Telemetry",
    "Chat",
    "Command",
    "SubmitJob",
    "Job",
    "Jobs",
    "Broadcast",
    "Stats",
    "QueuedCommand",
    "Latest",
    "RecentChat",
    "Commands",
    "FleetCommand",
    "FleetAnswers",
    "ConfigEdit",
    "ConfigShow",
    "ConfigStatus",
    "Alerts",
    "PresenceLog",
    "LatestOf",
    "CancelJob",
    "CancelCommand",
    "Forget",
    "FleetCommands",
    "Logs",
    "Pending",
    "Enrol",
    "Revoke",
    "Audit",
]


def operator_request(request_id, name, body=b""):
    """`name` is a Request variant's name, or a number for a variant this
    document does not list."""
    index = name if isinstance(name, int) else REQUESTS.index(name)
    return frame(0x50, varint(request_id) + varint(index) + body)


def telemetry_query(device=None, name=None, after_id=0, limit=100, since_ms=0, until_ms=0,
                    newest=False, tags=()):
    return growable(
        option(device, string)
        + option(name, string)
        + zigzag(after_id)
        + varint(limit)
        + varint(since_ms)
        + varint(until_ms)
        + boolean(newest)
        + seq(list(tags), string)
    )


def log_query(device=None, source=None, contains="", after_id=0, limit=100, since_ms=0,
              until_ms=0, newest=False):
    return growable(
        option(device, string)
        + option(source, string)
        + string(contains)
        + zigzag(after_id)
        + varint(limit)
        + varint(since_ms)
        + varint(until_ms)
        + boolean(newest)
    )


def enrolment(device, public_key):
    """Request::Enrol's body."""
    return growable(string(device) + string(public_key))


def revocation(device, public_key=None):
    """Request::Revoke's body: every key of the device, or only `public_key`."""
    return growable(string(device) + option(public_key, string))


def chat_query(after_id, limit):
    return growable(zigzag(after_id) + varint(limit))


def job_submission(spec, devices=(), groups=(), all_devices=False, timeout_ms=0, lease_ms=0,
                   max_attempts=0, ttl_ms=0, matching=()):
    return growable(
        job_spec(spec)
        + varint(timeout_ms)
        + varint(lease_ms)
        + varint(max_attempts)
        + seq(list(devices), string)
        + seq(list(groups), string)
        + boolean(all_devices)
        + varint(ttl_ms)
        + seq(list(matching), string)
    )


def fleet_command(cmd, devices=(), groups=(), all_devices=False, timeout_ms=0, ttl_ms=0,
                  matching=()):
    return growable(
        command(cmd)
        + seq(list(devices), string)
        + seq(list(groups), string)
        + boolean(all_devices)
        + varint(timeout_ms)
        + varint(ttl_ms)
        + seq(list(matching), string)
    )


def config_edit(layer, set_pairs=(), unset=(), if_version=0):
    return growable(
        string(layer) + seq(list(set_pairs), pair) + seq(list(unset), string) + varint(if_version)
    )


# --- reading ---------------------------------------------------------------


class Reader:
    """Reads a frame. `older` readers are for growable structs from an
    older writer: a field that starts at the struct's end reads as its
    zero value (0, false, "", [], None, an enum's first variant)."""

    def __init__(self, data, what="frame", older=False):
        self.data = bytes(data)
        self.at = 0
        self.what = what
        self.older = older

    def fail(self, why):
        raise WireError(f"{self.what}, at byte {self.at} of {len(self.data)}: {why}")

    def take(self, n):
        if self.older and self.at == len(self.data):
            return bytes(n)
        if self.at + n > len(self.data):
            self.fail(f"needs {n} more bytes, has {len(self.data) - self.at}")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def u8(self):
        return self.take(1)[0]

    def u(self, bits=64):
        n = 0
        shift = 0
        while True:
            byte = self.u8()
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 70:
                self.fail("varint longer than 10 bytes")
        if n >> bits:
            self.fail(f"varint {n} does not fit u{bits}")
        return n

    def i(self, bits=64):
        n = self.u(bits)
        return (n >> 1) ^ -(n & 1)

    def f64(self):
        return struct.unpack("<d", self.take(8))[0]

    def b(self):
        byte = self.u8()
        if byte not in (0, 1):
            self.fail(f"bool byte {byte:#04x}")
        return byte == 1

    def s(self):
        n = self.u(64)
        raw = self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail(f"string is not UTF-8: {e}")

    def vec(self, each):
        return [each() for _ in range(self.u(64))]

    def opt(self, each):
        tag = self.u8()
        if tag == 0:
            return None
        if tag == 1:
            return each()
        self.fail(f"option tag {tag:#04x}")

    def enum(self, names):
        index = self.u(32)
        if index >= len(names):
            self.fail(f"variant {index}, PROTOCOL.md lists {len(names)}: {names}")
        return names[index]

    def pair(self):
        return (self.s(), self.s())

    def growable(self, name, fields):
        """A growable struct: its length, then exactly its listed fields
        (or, from an `older` reader, the first of them)."""
        body = Reader(self.take(self.u(64)), f"{self.what} > {name}", self.older)
        out = fields(body)
        body.end(f"{name} holds fields PROTOCOL.md does not list")
        return out

    def envelope(self):
        """The envelope's version byte, which must be 2, then its kind."""
        version = self.u8()
        if version != VERSION:
            self.fail(f"version {version}")
        return self.u8()

    def end(self, why="trailing bytes"):
        if self.at != len(self.data):
            self.fail(f"{why}: {len(self.data) - self.at} bytes left: {self.data[self.at:].hex(' ')}")


def read_value(r):
    kind = r.enum(["Int", "Float"])
    return r.i() if kind == "Int" else r.f64()


def read_target(r):
    kind = r.enum(["All", "Group", "Device"])
    return None if kind == "All" else (kind.lower(), r.s())


def read_command(r):
    kind = r.enum(["Ping", "Status", "Exec", "Other"])
    if kind == "Ping":
        return ("ping",)
    if kind == "Status":
        return ("status",)
    if kind == "Exec":
        return ("exec", r.s(), r.vec(r.s), r.u(32))
    return ("other", r.s(), r.vec(r.s))


def read_job_spec(r):
    kind = r.enum(["Echo", "Exec"])
    if kind == "Echo":
        return ("echo", r.s())
    return ("exec", r.s(), r.vec(r.s))


def read_output(r):
    return {
        "exit_code": r.opt(lambda: r.i(32)),
        "stdout": r.s(),
        "stderr": r.s(),
        "truncated": r.b(),
        "duration_ms": r.u(32),
    }


def read_outcome(r):
    kind = r.enum(["Completed", "TimedOut", "NotAllowed", "Unknown", "AlreadyRun", "Failed"])
    if kind in ("Completed", "TimedOut"):
        return (kind, read_output(r))
    if kind == "AlreadyRun":
        return (kind,)
    return (kind, r.s())


def read_agent_status(r):
    return r.growable("AgentStatus", lambda g: {
        "device": g.s(),
        "agent_version": g.s(),
        "arch": g.s(),
        "groups": g.vec(g.s),
        "uptime_ms": g.u(),
        "batches_sent": g.u(),
        "batches_acked": g.u(),
        "batches_resent": g.u(),
        "records_dropped": g.u(),
        "records_pending": g.u(),
        "in_flight": g.u(32),
        "jobs_run": g.u(),
        "commands_answered": g.u(),
    })


def read_reply(r):
    kind = r.enum(["Pong", "Status", "Outcome"])
    if kind == "Pong":
        return ("Pong", r.u())
    if kind == "Status":
        return ("Status", read_agent_status(r))
    return ("Outcome", read_outcome(r))


def read_job(r):
    return {
        "id": r.u(),
        "attempt": r.u(32),
        "spec": read_job_spec(r),
        "timeout_ms": r.u(32),
        "token": r.u(),
    }


def read_downstream(data):
    """A frame the hub sends an agent's DEALER: (kind name, fields)."""
    r = Reader(data, "downstream frame")
    kind = r.envelope()
    if kind == 0x10:
        out = ("Welcome", {
            "hub_version": r.s(),
            "ports": {k: r.u(16) for k in ("broadcast", "jobs", "results", "commands")},
        })
    elif kind == 0x11:
        out = ("Ack", {"seq": r.u()})
    elif kind == 0x12:
        out = ("HelloRequest", {})
    elif kind == 0x13:
        out = ("Refusal", {"reason": r.s()})
    elif kind == 0x14:
        out = ("Announcement", {"ts_ms": r.u(), "target": read_target(r), "text": r.s()})
    elif kind == 0x15:
        out = ("Relink", {"reason": r.s()})
    elif kind == 0x16:
        out = ("Renumber", {"seq": r.u(), "from": r.u()})
    elif kind == 0x17:
        out = ("Rejected", {"seq": r.u(), "reason": r.s()})
    elif kind == 0x18:
        out = ("Throttled", {"seq": r.u(), "retry_after_ms": r.u(32), "reason": r.s()})
    elif kind == 0x19:
        out = ("Work", read_job(r))
    elif kind == 0x1A:
        out = ("Desired", r.growable("ConfigDoc", lambda g: {
            "version": g.u(), "values": g.vec(g.pair)}))
    elif kind == 0x1B:
        out = ("Carry", {})
    elif kind == 0x1C:
        out = ("Chat", {"from": r.s(), "ts_ms": r.u(), "text": r.s()})
    elif kind == 0x1D:
        out = ("Command", {"corr": r.u(), "command": read_command(r)})
    elif kind == 0x1E:
        out = ("PinnedGroups", {"groups": r.vec(r.s)})
    elif kind == 0x1F:
        out = ("TakesLogs", {})
    else:
        r.fail(f"kind {kind:#04x} is not a downstream kind of PROTOCOL.md")
    r.end()
    return out


def read_job_state(r):
    return r.enum(["Queued", "Leased", "Done", "Failed"])


def read_job_run(r):
    return r.growable("JobRun", lambda g: {
        "id": g.u(),
        "device": g.s(),
        "state": read_job_state(g),
        "attempts": g.u(32),
        "updated_ms": g.u(),
        "outcome": g.opt(lambda: read_outcome(g)),
        "error": g.opt(g.s),
    })


def read_job_info(r):
    return r.growable("JobInfo", lambda g: {
        "id": g.u(),
        "spec": read_job_spec(g),
        "state": read_job_state(g),
        "attempts": g.u(32),
        "max_attempts": g.u(32),
        "timeout_ms": g.u(32),
        "lease_ms": g.u(32),
        "created_ms": g.u(),
        "updated_ms": g.u(),
        "device": g.opt(g.s),
        "outcome": g.opt(lambda: read_outcome(g)),
        "error": g.opt(g.s),
        "target": g.s(),
        "runs": g.vec(lambda: read_job_run(g)),
    })


def read_device_info(r):
    return r.growable("DeviceInfo", lambda g: {
        "id": g.s(),
        "online": g.b(),
        "listening": g.b(),
        "since_ms": g.u(),
        "last_seen_ms": g.u(),
        "agent_version": g.s(),
        "arch": g.s(),
        "os": g.s(),
        "hostname": g.s(),
        "groups": g.vec(g.s),
        "batches": g.u(),
        "revoked": g.b(),
        "conflicts": g.u(),
        "conflict_address": g.s(),
        "front_end": g.s(),
        "clock_offset_ms": g.opt(g.i),
        "address": g.s(),
        "facts": read_device_facts(g),
    })


def read_device_facts(r):
    return r.growable("DeviceFacts", lambda g: {
        "os_release": g.s(), "kernel": g.s(), "model": g.s(), "serial": g.s(),
        "memory_bytes": g.u(),
        "interfaces": g.vec(lambda: g.growable("Interface", lambda i: {
            "name": i.s(), "mac": i.s(), "addresses": i.vec(i.s)})),
    })


def read_front_end_stats(r):
    return r.growable("FrontEndStats", lambda g: {
        "name": g.s(),
        "reported_ms": g.u(),
        "devices_online": g.u(32),
        **{k: g.u() for k in (
            "batches_accepted", "batches_throttled", "frames_dropped", "jobs_dispatched",
            "results_received", "commands_sent", "handshakes_refused", "disconnects")},
        "version": g.s(),
        "features": g.vec(g.s),
    })


def read_hub_stats(r):
    def fields(g):
        out = {"hub_version": g.s(), "uptime_ms": g.u(),
               "devices_online": g.u(32), "devices_known": g.u(32)}
        for k in ("batches_stored", "batches_duplicate", "samples_stored", "frames_dropped",
                  "jobs_dispatched", "results_received", "commands_sent", "commands_timed_out"):
            out[k] = g.u()
        out["security"] = g.s()
        out["devices_allowed"] = g.u(32)
        for k in ("handshakes_refused", "handshakes_failed", "impersonations", "rate_limited",
                  "disconnects", "connection_conflicts", "batches_renumbered", "results_refused",
                  "batches_throttled", "batches_rejected"):
            out[k] = g.u()
        out["storage_problem"] = g.s()
        out["telemetry_cursor"] = g.i()
        out["chat_cursor"] = g.i()
        for k in ("telemetry_bytes", "pruned_batches", "pruned_records", "pruned_chat",
                  "pruned_jobs", "pruned_commands"):
            out[k] = g.u()
        out["front_ends"] = g.vec(lambda: read_front_end_stats(g))
        out["messages_undelivered"] = g.u()
        out["subscriptions_refused"] = g.u()
        out["log_lines_stored"] = g.u()
        out["log_bytes"] = g.u()
        out["keys_pending"] = g.u(32)
        out["features"] = g.vec(g.s)
        return out

    return r.growable("HubStats", fields)


def read_operator_error(r):
    kind = r.enum(["UnknownDevice", "DeviceOffline", "TimedOut", "NotFound", "BadRequest",
                   "Storage", "StayedOffline", "Forbidden", "NotReading"])
    if kind == "TimedOut":
        return (kind, {"after_ms": r.u(32)})
    if kind == "StayedOffline":
        return (kind, {"device": r.s(), "waited_ms": r.u(32)})
    return (kind, r.s())


def read_response_body(r):
    kind = r.enum(["Devices", "Telemetry", "Chat", "Reply", "JobSubmitted", "Job", "Jobs",
                   "Broadcast", "Stats", "Error", "Latest", "Commands", "FleetCommandQueued",
                   "FleetAnswers", "ConfigVersion", "ConfigShow", "ConfigStatus", "Alerts",
                   "PresenceLog", "JobCancelled", "CommandCancelled", "Forgotten",
                   "FleetCommands", "Logs", "Pending", "Enrolled", "Revoked", "Audit"])
    if kind == "Devices":
        body = r.vec(lambda: read_device_info(r))
    elif kind == "Telemetry":
        body = r.vec(lambda: r.growable("TelemetryRow", lambda g: {
            "id": g.i(), "device": g.s(), "seq": g.u(), "ts_ms": g.u(), "name": g.s(),
            "value": read_value(g)}))
    elif kind == "Chat":
        body = r.vec(lambda: r.growable("ChatRow", lambda g: {
            "id": g.i(), "device": g.s(), "ts_ms": g.u(), "text": g.s()}))
    elif kind == "Logs":
        body = r.vec(lambda: r.growable("LogRow", lambda g: {
            "id": g.i(), "device": g.s(), "seq": g.u(), "ts_ms": g.u(), "source": g.s(),
            "text": g.s()}))
    elif kind == "Pending":
        body = r.vec(lambda: r.growable("PendingKey", lambda g: {
            "public_key": g.s(), "address": g.s(), "first_ms": g.u(), "last_ms": g.u(),
            "attempts": g.u()}))
    elif kind == "Enrolled":
        body = {"result": r.s()}
    elif kind == "Revoked":
        body = {"removed_keys": r.u(32)}
    elif kind == "Audit":
        body = r.vec(lambda: r.growable("AuditEntry", lambda g: {
            "id": g.i(), "at_ms": g.u(), "operator": g.s(), "act": g.s(), "allowed": g.b()}))
    elif kind == "Reply":
        body = {"device": r.s(), "reply": read_reply(r)}
    elif kind == "JobSubmitted":
        body = {"id": r.u()}
    elif kind == "Job":
        body = read_job_info(r)
    elif kind == "Jobs":
        body = r.vec(lambda: read_job_info(r))
    elif kind == "Broadcast":
        body = {"topic": r.s()}
    elif kind == "Stats":
        body = read_hub_stats(r)
    elif kind == "Error":
        body = read_operator_error(r)
    elif kind == "Latest":
        body = r.vec(lambda: r.growable("LatestValue", lambda g: {
            "device": g.s(), "name": g.s(), "ts_ms": g.u(), "value": read_value(g)}))
    elif kind == "Commands":
        body = r.vec(lambda: r.growable("CommandInfo", lambda g: {
            "id": g.i(), "device": g.s(), "command": g.s(), "sent_ms": g.u(),
            "ended_ms": g.opt(g.u), "result": g.opt(g.s)}))
    elif kind == "FleetCommandQueued":
        body = {"id": r.u(), "devices": r.vec(r.s)}
    elif kind == "FleetAnswers":
        body = r.vec(lambda: r.growable("FleetAnswer", lambda g: {
            "device": g.s(), "state": g.s(), "reply": g.opt(lambda: read_reply(g)),
            "error": g.opt(g.s), "ended_ms": g.u()}))
    elif kind == "ConfigVersion":
        body = {"version": r.u()}
    elif kind == "ConfigShow":
        body = r.growable("ConfigView", lambda g: {
            "device": g.s(), "version": g.u(), "desired_version": g.u(),
            "applied_version": g.u(),
            "entries": g.vec(lambda: (g.s(), g.s(), g.s())),
            "errors": g.vec(g.pair)})
    elif kind == "ConfigStatus":
        body = r.vec(lambda: r.growable("ConfigState", lambda g: {
            "device": g.s(), "groups": g.vec(g.s), "desired_version": g.u(),
            "applied_version": g.u(), "errors": g.vec(g.pair)}))
    elif kind == "Alerts":
        body = r.vec(lambda: r.growable("AlertInfo", lambda g: {
            "rule": g.s(), "device": g.s(), "series": g.s(), "firing": g.b(),
            "since_ms": g.u(), "value": g.f64(), "summary": g.s()}))
    elif kind == "PresenceLog":
        body = r.vec(lambda: r.growable("PresenceEvent", lambda g: {
            "online": g.b(), "at_ms": g.u(), "why": g.s()}))
    elif kind == "JobCancelled":
        body = {"stopped": r.u(32), "running": r.u(32)}
    elif kind == "Forgotten":
        body = {"runs": r.u(32), "shares": r.u(32)}
    elif kind == "FleetCommands":
        body = r.vec(lambda: r.growable("FleetCommandInfo", lambda g: {
            "id": g.u(), "command": read_command(g), "target": g.s(), "created_ms": g.u(),
            "expires_ms": g.u(), "states": g.vec(lambda: (g.s(), g.u(32)))}))
    else:
        body = {"stopped": r.u(32), "sent": r.u(32)}
    return kind, body


def read_operator_response(data):
    """OperatorResponse (0x51): (id, response name, body)."""
    r = Reader(data, "operator response")
    kind = r.envelope()
    if kind != 0x51:
        r.fail(f"kind {kind:#04x}, not OperatorResponse (0x51)")
    request_id = r.u()
    name, body = read_response_body(r)
    r.end()
    return request_id, name, body


# --- every other frame, for the golden vectors -----------------------------


def read_abilities(r):
    return r.growable("Abilities", lambda g: {
        "job_kinds": g.vec(g.s), "exec_programs": g.vec(g.s), "config_version": g.u(),
        "one_connection": g.b(), "chat": g.b(), "job_slots": g.u(32),
        "hello_on_clock_step": g.b(), "facts": read_device_facts(g)})


def read_job_result(r):
    return {"id": r.u(), "attempt": r.u(32), "device": r.s(), "outcome": read_outcome(r),
            "token": r.u()}


def read_command_reply(r):
    return {"corr": r.u(), "reply": read_reply(r)}


def read_sample(r):
    return {"name": r.u(32), "offset_ms": r.i(32), "value": read_value(r)}


def read_upstream_body(r, kind):
    if kind == 0x01:
        return ("Hello", {"agent_version": r.s(), "arch": r.s(), "os": r.s(),
                          "hostname": r.s(), "groups": r.vec(r.s), "heartbeat_ms": r.u(32),
                          "started_ms": r.u()})
    if kind == 0x02:
        return ("Heartbeat", {"uptime_ms": r.u()})
    if kind == 0x03:
        return ("Batch", {"seq": r.u(), "base_ts_ms": r.u(), "names": r.vec(r.s),
                          "samples": r.vec(lambda: read_sample(r)),
                          "chat": r.vec(lambda: (r.i(32), r.s()))})
    if kind == 0x04:
        return ("Bye", {"reason": r.s()})
    if kind == 0x05:
        return ("Offer", read_abilities(r))
    if kind == 0x06:
        return ("Applied", r.growable("ConfigReport", lambda g: {
            "version": g.u(), "errors": g.vec(g.pair)}))
    if kind == 0x07:
        return ("Result", read_job_result(r))
    if kind == 0x08:
        return ("Reply", read_command_reply(r))
    if kind == 0x09:
        return ("LogBatch", {"seq": r.u(), "base_ts_ms": r.u(), "names": r.vec(r.s),
                             "samples": r.vec(lambda: read_sample(r)),
                             "chat": r.vec(lambda: (r.i(32), r.s())),
                             "sources": r.vec(r.s),
                             "logs": r.vec(lambda: (r.u(32), r.i(32), r.s()))})
    return None


def read_request(r):
    kind = r.enum(REQUESTS)
    if kind == "Telemetry":
        return kind, r.growable("TelemetryQuery", lambda g: {
            "device": g.opt(g.s), "name": g.opt(g.s), "after_id": g.i(), "limit": g.u(32),
            "since_ms": g.u(), "until_ms": g.u(), "newest": g.b(), "tags": g.vec(g.s)})
    if kind == "Chat":
        return kind, r.growable("ChatQuery", lambda g: {"after_id": g.i(), "limit": g.u(32)})
    if kind == "Logs":
        return kind, r.growable("LogQuery", lambda g: {
            "device": g.opt(g.s), "source": g.opt(g.s), "contains": g.s(), "after_id": g.i(),
            "limit": g.u(32), "since_ms": g.u(), "until_ms": g.u(), "newest": g.b()})
    if kind in ("Command", "QueuedCommand"):
        body = {"device": r.s(), "command": read_command(r), "timeout_ms": r.u(32)}
        if kind == "QueuedCommand":
            body["queue_ms"] = r.u(32)
        return kind, body
    if kind == "SubmitJob":
        return kind, r.growable("JobSubmission", lambda g: {
            "spec": read_job_spec(g), "timeout_ms": g.u(32), "lease_ms": g.u(32),
            "max_attempts": g.u(32), "devices": g.vec(g.s), "groups": g.vec(g.s),
            "all": g.b(), "ttl_ms": g.u(32), "matching": g.vec(g.s)})
    if kind in ("Job", "FleetAnswers", "CancelJob", "CancelCommand"):
        return kind, {"id": r.u()}
    if kind in ("Jobs", "RecentChat", "Commands", "FleetCommands", "Audit"):
        return kind, {"limit": r.u(32)}
    if kind == "Broadcast":
        return kind, {"target": read_target(r), "text": r.s()}
    if kind == "FleetCommand":
        return kind, r.growable("FleetCommand", lambda g: {
            "command": read_command(g), "devices": g.vec(g.s), "groups": g.vec(g.s),
            "all": g.b(), "timeout_ms": g.u(32), "ttl_ms": g.u(32), "matching": g.vec(g.s)})
    if kind == "ConfigEdit":
        return kind, r.growable("ConfigEdit", lambda g: {
            "layer": g.s(), "set": g.vec(g.pair), "unset": g.vec(g.s), "if_version": g.u()})
    if kind in ("ConfigShow", "Forget"):
        return kind, {"device": r.s()}
    if kind == "PresenceLog":
        return kind, {"device": r.s(), "limit": r.u(32)}
    if kind == "LatestOf":
        return kind, {"device": r.opt(r.s), "names": r.vec(r.s)}
    if kind == "Enrol":
        return kind, r.growable("Enrolment", lambda g: {"device": g.s(), "public_key": g.s()})
    if kind == "Revoke":
        return kind, r.growable("Revocation", lambda g: {
            "device": g.s(), "public_key": g.opt(g.s)})
    return kind, {}


def read_any(data, older=False):
    """Any frame of PROTOCOL.md, told apart by its kind (kinds are unique
    across channels): (message name, fields). `older`: growable structs
    may end early, as from an older writer."""
    r = Reader(data, "frame", older)
    kind = r.envelope()
    out = read_upstream_body(r, kind)
    if out is None and 0x10 <= kind <= 0x1F:
        return read_downstream(data)
    if out is None:
        if kind == 0x20:
            out = ("ChatMessage", {"from": r.s(), "ts_ms": r.u(), "text": r.s()})
        elif kind == 0x21:
            out = ("Announcement", {"ts_ms": r.u(), "target": read_target(r), "text": r.s()})
        elif kind == 0x30:
            out = ("Job", read_job(r))
        elif kind == 0x31:
            out = ("JobResult", read_job_result(r))
        elif kind == 0x40:
            out = ("CommandRequest", {"corr": r.u(), "command": read_command(r)})
        elif kind == 0x41:
            out = ("CommandReply", read_command_reply(r))
        elif kind == 0x50:
            out = ("OperatorRequest", {"id": r.u(), "request": read_request(r)})
        elif kind == 0x51:
            request_id = r.u()
            out = ("OperatorResponse", {"id": request_id, "response": read_response_body(r)})
        else:
            r.fail(f"kind {kind:#04x} is not in PROTOCOL.md")
    r.end()
    return out
