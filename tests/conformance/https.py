#!/usr/bin/env python3
"""The page, `/metrics` and the API over HTTPS, as the README ("The fleet
page, Prometheus, health and a JSON API") promises: with
`security.http_cert_file` and `http_key_file` the hub serves HTTPS only,
with that certificate; a renewed certificate is served from the next
connection on, without a restart; a broken renewal keeps the one in use;
a certificate without its key, or with another's, stops the hub at start,
saying so.

It starts hubs of its own and makes its own certificate authorities with
`openssl`. Python's standard library only. Run by
`tests/tests/conformance.rs`; by hand:

    python3 https.py --hub-command=target/debug/fleetmq-hub \
        --agent-command=target/debug/fleetmq-agent --work=AN_EMPTY_DIRECTORY

Each command is a binary, or a runner and it. Exit status as client.py's.
"""

import hashlib
import http.client
import json
import os
import shutil
import socket
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # nothing written into the source tree
import client  # noqa: E402  (exits 2 without pyzmq)
import fleet  # noqa: E402
from client import check  # noqa: E402

CONFIG = """[security]
http_cert_file = "{cert}"
http_key_file = "{key}"
"""


def trusting(ca):
    """A client's TLS set-up that trusts `ca` alone."""
    return ssl.create_default_context(cafile=ca)


def get(url, ca):
    """GET `url` over https, trusting `ca`: (status, body)."""
    with urllib.request.urlopen(url, timeout=client.WAIT_S, context=trusting(ca)) as r:
        return r.status, r.read()


def served_fingerprint(endpoint, ca):
    """The SHA-256 of the certificate `endpoint` (https://HOST:PORT) serves,
    once a client trusting `ca` has accepted it."""
    parsed = urllib.parse.urlsplit(endpoint)
    with socket.create_connection((parsed.hostname, parsed.port), timeout=client.WAIT_S) as raw:
        with trusting(ca).wrap_socket(raw, server_hostname=parsed.hostname) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def fingerprint_of(pem_file):
    with open(pem_file) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return hashlib.sha256(der).hexdigest()


def refused(url, ca):
    """Why a client trusting `ca` could not GET `url`, or None."""
    try:
        get(url, ca)
    except (ssl.SSLError, urllib.error.URLError, ConnectionError) as e:
        return str(e)
    return None


def replace(src, dst):
    """Puts `src`'s content at `dst` as certbot does: a new file moved over."""
    tmp = dst + ".new"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def refuses_to_start(args, name, cert, key, says):
    code, stderr = fleet.refused_start(args.hub_command, os.path.join(args.work, name),
                                       CONFIG.format(cert=cert, key=key))
    check(code != 0 and says in stderr, f"{name}: the hub does not start, saying {says!r}",
          (code, stderr))


def run(args, _ctx):
    ca, (leaf, leaf_key) = fleet.private_authority(args.work, "first")
    ca2, (leaf2, leaf2_key) = fleet.private_authority(args.work, "renewed")
    # The files the hub reads: the first certificate, for now.
    d = os.path.join(args.work, "served")
    os.makedirs(d)
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    shutil.copyfile(leaf, cert)
    shutil.copyfile(leaf_key, key)

    refuses_to_start(args, "cert-without-key", cert, "", "needs both")
    refuses_to_start(args, "someone-elses-key", cert, leaf2_key, "is not the key of")

    hub = fleet.Hub(args.hub_command, args.work, CONFIG.format(cert=cert, key=key))
    try:
        served(hub, (ca, leaf), (ca2, leaf2, leaf2_key), (cert, key), args.work)
    finally:
        hub.stop()


def served(hub, first, renewed, files, work):
    ca, leaf = first
    ca2, leaf2, leaf2_key = renewed
    cert, key = files
    base = hub.endpoints["http"]
    check(base.startswith("https://127.0.0.1:"),
          "the hub's printed endpoints name its HTTP as https://", base)
    status, body = get(base + "/health", ca)
    check(status == 200, "/health over https, the certificate checked against its authority",
          (status, body[:200]))
    status, body = get(base + "/api/devices", ca)
    check(status == 200 and isinstance(json.loads(body), list),
          "/api/devices over https: a JSON list", body[:200])
    check(served_fingerprint(base, ca) == fingerprint_of(leaf),
          "the certificate served is the one in security.http_cert_file", None)
    plain = "http://" + base[len("https://"):] + "/health"
    try:
        with urllib.request.urlopen(plain, timeout=client.WAIT_S) as r:
            answered = (r.status, r.read()[:80])
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
        answered = None
        why = repr(e)
    check(answered is None, "plain http:// to the https port gets no HTTP answer",
          answered or why)
    check(refused(base + "/health", ca2) is not None,
          "a client that does not trust the certificate's authority is refused", None)

    # Renewed as certbot does: each file replaced whole. The next
    # connection gets the new certificate; no restart.
    replace(leaf2_key, key)
    replace(leaf2, cert)
    fingerprint = fleet.until(
        "the renewed certificate served to a new connection",
        lambda: served_fingerprint(base, ca2) if refused(base + "/health", ca2) is None else None,
        lambda f: f is not None)
    check(fingerprint == fingerprint_of(leaf2), "it is the renewed certificate", None)

    # A broken renewal (half a file): the renewed certificate is still
    # served, and the log says why the new files were not taken.
    with open(cert, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64\n")
    status, _ = get(base + "/health", ca2)
    check(status == 200 and served_fingerprint(base, ca2) == fingerprint_of(leaf2),
          "a renewal that cannot be read keeps the certificate in use", status)
    logged = fleet.until(
        "the hub says why it kept the certificate",
        lambda: [line for line in open(os.path.join(work, "hub.log"))
                 if "cannot be used" in line],
        lambda lines: len(lines) > 0)
    check("http_cert_file" in logged[0], "naming the file it could not use", logged[0])


if __name__ == "__main__":
    sys.exit(client.script_main("https", run, __doc__, fleet.OWN))
