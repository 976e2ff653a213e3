"""Hubs and agents started the README's way, for the conformance scripts
that need their own: `fleetmq-hub run --bind 127.0.0.1:*` (its endpoints
read from its first line), and an agent enrolled with the `fleetmq-hub
allow` line its `keygen` prints, then `fleetmq-agent run`.

A command is a binary, or a runner and it (`qemu-arm-static -cpu arm1176
PATH`), split as a shell would.
"""

import json
import os
import shlex
import signal
import subprocess
import time

import client
from client import check
from operator_cli import Cli


# The options of a script that starts its own hub and agents.
OWN = ("hub-command", "agent-command", "work")


class Hub:
    """`fleetmq-hub run` in `work` with `config` (TOML), on ports the OS
    picks; its log is `work/hub.log`."""

    def __init__(self, command, work, config):
        self.data = os.path.join(work, "hub-data")
        path = os.path.join(work, "hub.toml")
        with open(path, "w") as f:
            f.write(config)
        out = os.path.join(work, "hub.out")
        with open(out, "w") as stdout, open(os.path.join(work, "hub.log"), "w") as log:
            self.proc = subprocess.Popen(
                [*shlex.split(command), "run", "--config", path, "--data-dir", self.data,
                 "--bind", "127.0.0.1:*"], stdout=stdout, stderr=log)
        deadline = time.monotonic() + client.WAIT_S
        while True:
            with open(out) as f:
                first = f.readline()
            if first.endswith("\n"):
                break
            if time.monotonic() > deadline or self.proc.poll() is not None:
                check(False, "the hub prints its endpoints as its first line", first)
            time.sleep(0.05)
        self.endpoints = json.loads(first)
        self.cli = Cli(command, self.data)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=client.WAIT_S)


class Device:
    """`fleetmq-agent` on the data directory `data`: its one-shot commands,
    its status, and a clean stop of the `run` in `self.proc`."""

    def __init__(self, command, data):
        self.command = shlex.split(command)
        self.data = data
        self.proc = None

    def ok(self, *args, want=0):
        """`fleetmq-agent ARGS`, which must exit `want`; its stdout."""
        done = subprocess.run([*self.command, *args], capture_output=True, text=True,
                              timeout=client.WAIT_S)
        check(done.returncode == want, f"fleetmq-agent {' '.join(args[:2])} exits {want}",
              (done.returncode, done.stdout[:300], done.stderr[:300]))
        return done.stdout

    def status(self):
        return json.loads(self.ok("status", "--data-dir", self.data))

    def status_until(self, what, holds):
        """Polls `status` (the agent gives no other signal) until `holds`;
        a status that cannot be had yet (an agent still starting) is
        asked again."""
        deadline = time.monotonic() + client.WAIT_S
        while True:
            done = subprocess.run([*self.command, "status", "--data-dir", self.data],
                                  capture_output=True, text=True, timeout=client.WAIT_S)
            status = json.loads(done.stdout) if done.returncode == 0 else done.stderr
            if done.returncode == 0 and holds(status):
                return status
            if time.monotonic() > deadline or self.proc.poll() is not None:
                check(False, what, status)
            time.sleep(0.05)

    def stop(self):
        """A clean stop, as systemctl stop sends; its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=client.WAIT_S)


class Agent(Device):
    """An agent for `device` in `work/DEVICE`, enrolled on the hub whose
    data directory is `hub_data` (through `hub_cli`) and run against its
    `telemetry` endpoint with `config` (TOML) and `groups`."""

    def __init__(self, command, work, hub_cli, hub_data, telemetry, device, config, groups=()):
        super().__init__(command, os.path.join(work, device))
        self.device = device
        self.config = os.path.join(work, f"{device}.toml")
        self.log_path = os.path.join(work, f"{device}.log")
        keygen = self.ok("keygen", "--device-id", device, "--data-dir", self.data)
        allow = [line for line in keygen.splitlines() if line.startswith("fleetmq-hub allow ")]
        check(len(allow) == 1, f"{device}: keygen prints the fleetmq-hub allow line", keygen)
        hub_cli.code(0, *shlex.split(allow[0])[1:],
                     what=f"{device}: the printed allow line, run on the hub, enrols it")
        self.write_config(config)
        self.words = ["run", "--config", self.config, "--hub", telemetry,
                      "--hub-key", os.path.join(hub_data, "hub.pub"), "--device-id", device,
                      "--data-dir", self.data]
        for g in groups:
            self.words += ["--group", g]
        self.start()

    def write_config(self, config):
        with open(self.config, "w") as f:
            f.write(config)

    def start(self, hub=None):
        """Runs it (again), against `hub` instead if given."""
        words = list(self.words)
        if hub:
            words[words.index("--hub") + 1] = hub
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen([*self.command, *words], stdout=log,
                                         stderr=subprocess.STDOUT)


def until(what, ask, holds):
    """Asks `ask()` until its answer `holds`; the answer."""
    deadline = time.monotonic() + client.WAIT_S
    while True:
        answer = ask()
        if holds(answer):
            return answer
        if time.monotonic() > deadline:
            check(False, what, answer)
        time.sleep(0.1)


def private_authority(work, name):
    """A certificate authority of our own, and a certificate it signed for
    127.0.0.1: (the authority's PEM, (the certificate, its key))."""
    d = os.path.join(work, "tls", name)
    os.makedirs(d, exist_ok=True)
    ca, ca_key, leaf, leaf_key, csr, ext = (os.path.join(d, n) for n in (
        "ca.pem", "ca.key", "leaf.pem", "leaf.key", "leaf.csr", "leaf.ext"))
    with open(ext, "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for argv in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", f"/CN=fleetmq test authority {name}"],
        ["req", *ec, "-keyout", leaf_key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", leaf, "-days", "2", "-extfile", ext],
    ):
        subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=30)
    return ca, (leaf, leaf_key)


def refused_start(command, work, config):
    """`fleetmq-hub run` in `work` (made here) with `config`, expected to
    refuse to start: (its exit status, the end of what it printed on
    stderr)."""
    os.makedirs(work)
    path = os.path.join(work, "hub.toml")
    with open(path, "w") as f:
        f.write(config)
    done = subprocess.run(
        [*shlex.split(command), "run", "--config", path, "--data-dir",
         os.path.join(work, "data"), "--bind", "127.0.0.1:*"],
        capture_output=True, text=True, timeout=client.WAIT_S)
    return done.returncode, done.stderr[-400:]
