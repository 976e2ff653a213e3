#!/usr/bin/env python3
"""Operators on other machines, as the README ("Operators on other
machines") tells them to work: `fleetmq-hub keygen --operator`, a line in
`DATA_DIR/allowed_operators` applied at once, `--hub-key` and
`--operator-keys` (or their environment variables) against the CURVE-only
remote operator socket, the `read` and `admin` roles, and what an
operator is told when the handshake cannot succeed.

It starts a hub of its own with `listen.operator_remote` on a port the OS
picks, and no agent. Python's standard library only. Run by `tests/tests/conformance.rs`;
by hand:

    python3 remote_operator.py --hub-command=target/debug/fleetmq-hub \
        --work=AN_EMPTY_DIRECTORY

The command is a binary, or a runner and it. Exit status as client.py's.
"""

import os
import shlex
import subprocess
import sys

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
import fleet  # noqa: E402
from client import check  # noqa: E402
from operator_cli import NO, OK, UNREACHABLE, USAGE, Cli  # noqa: E402

REMOTE = "[listen]\noperator_remote = \"tcp://127.0.0.1:*\"\n"


def run(args, _ctx):
    hub = fleet.Hub(args.hub_command, args.work, REMOTE)
    try:
        remote(args, hub)
    finally:
        hub.stop()
    plaintext_stays_on_loopback(args)


def remote(args, hub):
    # The operator on a laptop: no data directory of the hub's, only its
    # endpoint and public key, and a key pair of its own.
    laptop = Cli(args.hub_command)
    keys = os.path.join(args.work, "alice")
    out, _ = laptop.code(OK, "keygen", "--operator", "alice", "--data-dir", keys,
                         what="keygen --operator makes an operator's key pair")
    with open(os.path.join(keys, "operator.pub")) as f:
        key = f.read().strip()
    lines = [line for line in out.splitlines() if line.startswith("echo ")]
    check(lines == [f"echo 'alice read {key}' >> DATA_DIR/allowed_operators",
                    f"echo 'alice admin {key}' >> DATA_DIR/allowed_operators"],
          "it prints a command a role, each adding the allow-list line with its public key",
          out)
    # The key is Z85, full of < > ( ) & $: pasted into a shell, each printed
    # command must append exactly its line, and nothing else.
    pasted = os.path.join(args.work, "pasted")
    os.makedirs(pasted, exist_ok=True)
    for line in lines:
        subprocess.run(["sh", "-c", line.replace("DATA_DIR", pasted)], cwd=pasted,
                       check=True, timeout=10)
    with open(os.path.join(pasted, "allowed_operators")) as f:
        appended = f.read()
    check(appended == f"alice read {key}\nalice admin {key}\n" and os.listdir(pasted) == ["allowed_operators"],
          "the printed commands, run by a shell, append the two lines and make no other file",
          (appended, os.listdir(pasted)))
    laptop.code(NO, "keygen", "--operator", "alice", "--data-dir", keys,
                what="a second keygen does not replace the key pair")
    spaced = os.path.join(args.work, "spaced")
    _, err = laptop.code(USAGE, "keygen", "--operator", "al ice", "--data-dir", spaced,
                         what="an operator name the allow list cannot hold: exit 2")
    check("operator name" in err and "use only" in err and not os.path.exists(spaced),
          "it says what is wrong with the name and makes no key pair", err)

    endpoint = hub.endpoints.get("operator_remote", "")
    check(endpoint.startswith("tcp://127.0.0.1:"),
          "the remote operator socket is among the endpoints the hub prints", hub.endpoints)
    hub_pub = os.path.join(hub.data, "hub.pub")
    far = ["--hub", endpoint, "--hub-key", hub_pub, "--operator-keys", keys]

    # --- not on the list: refused at the handshake, and told so at once --------
    _, err = laptop.code(UNREACHABLE, "devices", *far, "--hub-timeout-ms", "10000",
                         what="an operator key not on the list: exit 3")
    check(f"'{key}'" in err and "allowed_operators" in err and "trying again" not in err,
          "told at once that the hub refused its key, naming the key and the list", err)
    check(hub.cli.json("stats")["handshakes_refused"] >= 1,
          "the refused handshake is counted in handshakes_refused")

    # --- the read role -----------------------------------------------------------
    allowed = os.path.join(hub.data, "allowed_operators")
    with open(allowed, "a") as f:
        f.write(f"alice read {key}\n")
    fleet.until("a line added to allowed_operators applies at once",
                lambda: laptop.run("devices", "--json", *far)[0], lambda code: code == OK)
    _, err = laptop.code(NO, "job", "submit", "echo", "hi", *far,
                         what="a read operator asking to act: exit 1")
    check("not allowed: operator alice has the read role" in err,
          "told that its role is read", err)
    # A device's key pair (keygen makes one like any other).
    device_keys = os.path.join(args.work, "pi-afar")
    laptop.code(OK, "keygen", "--data-dir", device_keys, what="a key pair for a new device")
    device_pub = os.path.join(device_keys, "hub.pub")
    _, err = laptop.code(NO, "allow", "pi-afar", device_pub, *far,
                         what="a read operator enrolling: exit 1")
    check("read role" in err, "told that its role is read", err)
    _, err = laptop.code(NO, "revoke", "pi-afar", *far, what="a read operator revoking: exit 1")
    check("read role" in err, "told that its role is read", err)

    # --- the admin role, and the environment variables ----------------------------
    with open(allowed, "w") as f:
        f.write(f"alice admin {key}\n")
    fleet.until("the role changed in the file applies at once",
                lambda: laptop.run("job", "submit", "--json", "echo", "hi", *far)[0],
                lambda code: code == OK)
    done = laptop.json("allow", "pi-afar", device_pub, *far)
    check(done == {"device": "pi-afar", "result": "enrolled"},
          "allow --hub: an admin enrols a device from afar, as allow --json says", done)
    with open(device_pub) as f:
        device_key = f.read().strip()
    with open(os.path.join(hub.data, "allowed_devices")) as f:
        check(f"pi-afar {device_key}\n" in f.read(), "the hub wrote it to its allow list")
    check(hub.cli.json("stats")["devices_allowed"] >= 1, "and applied it")
    allowed_before = hub.cli.json("stats")["devices_allowed"]
    done = laptop.json("revoke", "pi-afar", "--key", device_pub, *far)
    check(done == {"device": "pi-afar", "removed_keys": 1},
          "revoke --hub: an admin cuts a device off from afar, as revoke --json says", done)
    with open(os.path.join(hub.data, "allowed_devices")) as f:
        check(f"# revoked pi-afar {device_key}" in f.read(),
              "the hub wrote it to its allow list, as revoke does")
    check(hub.cli.json("stats")["devices_allowed"] == allowed_before - 1, "and applied it")
    _, err = laptop.code(NO, "revoke", "pi-afar", *far, what="revoked twice: exit 1")
    check("not on the allow list" in err, "told it is not on the allow list", err)
    _, err = laptop.code(USAGE, "revoke", "pi-afar", "--operator-keys", keys,
                         "--data-dir", os.path.join(args.work, "nowhere"),
                         what="revoke --operator-keys without --hub: exit 2")
    check("--hub" in err, "told that keys go with --hub", err)
    done = laptop.json("allow", "pi-afar", device_pub, *far)
    check(done["result"] == "enrolled", "and enrolled again from afar", done)
    _, err = laptop.code(USAGE, "allow", "pi-afar", device_pub, "--groups", "north", *far,
                         what="--groups with --hub: exit 2")
    check("--groups" in err, "pinning groups is for the hub's machine", err)
    _, err = laptop.code(USAGE, "allow", "pi-afar", device_pub, "--hub-key", hub_pub,
                         "--data-dir", os.path.join(args.work, "nowhere"),
                         what="--hub-key without --hub: exit 2")
    check("--hub" in err, "told that keys go with --hub", err)
    env = {"FLEETMQ_OPERATOR": endpoint, "FLEETMQ_HUB_KEY": hub_pub,
           "FLEETMQ_OPERATOR_KEYS": keys}
    laptop.code(OK, "config", "set", "app.from=afar", env=env,
                what="FLEETMQ_OPERATOR, FLEETMQ_HUB_KEY and FLEETMQ_OPERATOR_KEYS stand for the flags")
    with open(hub_pub) as f:
        quoted = f.read().strip()
    laptop.code(OK, "stats", "--hub", endpoint, "--hub-key", quoted, "--operator-keys", keys,
                what="--hub-key takes the key itself as well as the hub.pub file")

    # --- handshakes that cannot succeed, and command-line mistakes ---------------
    other = os.path.join(args.work, "other-hub")
    laptop.code(OK, "keygen", "--data-dir", other, what="another hub's key pair")
    _, err = laptop.code(UNREACHABLE, "devices", "--hub", endpoint, "--hub-key",
                         os.path.join(other, "hub.pub"), "--operator-keys", keys,
                         "--hub-timeout-ms", "500", what="a --hub-key that is not the hub's: exit 3")
    check("--hub-key" in err and "handshake" in err and "attempts" not in err,
          "told after one wait that the handshake failed, and to check --hub-key", err)
    _, err = laptop.code(UNREACHABLE, "devices", "--hub", hub.endpoints["operator"],
                         "--hub-key", hub_pub, "--operator-keys", keys, "--hub-timeout-ms", "500",
                         what="keys given for the plaintext local socket: exit 3")
    check("listen.operator_remote" in err, "told that keys are for the remote socket", err)
    _, err = laptop.code(USAGE, "devices", "--hub", endpoint, "--hub-key", hub_pub,
                         what="--hub-key without --operator-keys is a command-line mistake")
    check("--operator-keys" in err, "told to give both", err)
    _, err = laptop.code(USAGE, "devices", "--hub", endpoint, "--hub-key", hub_pub,
                         "--operator-keys", os.path.join(args.work, "nobody"),
                         what="an --operator-keys directory without keys: exit 2")
    check("operator.key" in err, "the missing file is named", err)

    # --- taken off the list ------------------------------------------------------
    with open(allowed, "w") as f:
        f.write("# nobody\n")
    fleet.until("a line taken out of allowed_operators is refused at once",
                lambda: laptop.run("devices", *far)[0], lambda code: code == UNREACHABLE)


def plaintext_stays_on_loopback(args):
    """The plaintext operator socket is refused anywhere but loopback: the
    hub does not start, and says why and what to use instead."""
    config = os.path.join(args.work, "open.toml")
    with open(config, "w") as f:
        f.write("[listen]\noperator = \"tcp://0.0.0.0:7755\"\n")
    done = subprocess.run([*shlex.split(args.hub_command), "run", "--config", config,
                           "--data-dir", os.path.join(args.work, "open-data")],
                          capture_output=True, text=True, timeout=client.WAIT_S)
    check(done.returncode != 0 and "listen.operator" in done.stderr
          and "operator_remote" in done.stderr,
          "a plaintext operator socket off loopback stops the hub at start, naming the way",
          (done.returncode, done.stderr[-500:]))


if __name__ == "__main__":
    sys.exit(client.script_main("remote operators", run, __doc__,
                                ("hub-command", "work"), optional=("agent-command",)))
