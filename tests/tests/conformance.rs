//! The protocol as another language reads it: `tests/conformance/client.py`
//! is an agent and an operator client written from `protocol/PROTOCOL.md`
//! alone (it reads none of the Rust crates), and here it talks to a real
//! hub, beside a real agent, on CURVE. Every frame it reads must decode
//! exactly as the document says, and every answer must be the one the
//! document promises. It needs Debian's `python3-zmq`, which
//! `scripts/test.sh` installs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleetmq_tests::*;

const LIMIT: Duration = Duration::from_secs(120);

/// Debian's Python, where `apt install python3-zmq` puts pyzmq, unless
/// `FLEETMQ_PYTHON` names another.
fn python() -> String {
    std::env::var("FLEETMQ_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_string())
}

#[test]
fn a_client_written_from_protocol_md_speaks_with_the_hub() {
    let _w = watchdog("conformance", LIMIT);
    let dir = temp_dir("fleetmq-conformance-");
    let hub = Hub::start(dir.path(), "");
    let hub_key = hub.key.clone().expect("the hub runs on CURVE");
    // The real agent takes no jobs, so work-queue jobs go to the client.
    let config = "[presence]\nheartbeat_ms = 300\n[jobs]\nallow = []\n\
                  [commands]\nallow = [\"ping\", \"status\"]\n[ingest]\nudp = \"127.0.0.1:0\"\n";
    let _real = start_agent(&hub.link(), dir.path(), "rs-1", "run", config, &[]);
    hub.wait_answering("rs-1");

    // py-1 keeps to one connection; py-1-five connects every port.
    let keys = Keys::new();
    hub.link().allow("py-1", &keys.public);
    let five = Keys::new();
    hub.link().allow("py-1-five", &five.public);
    let ports = ["broadcast", "jobs", "results", "commands"]
        .map(|name| hub.port(name).to_string())
        .join(",");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/client.py");
    let protocol = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/PROTOCOL.md");
    let mut cmd = Command::new(python());
    // `--name=value`: a Z85 key may begin with `-`.
    cmd.arg(&script).args([
        format!("--telemetry={}", hub.telemetry()),
        format!("--operator={}", hub.endpoints["operator"]),
        format!("--hub-key={hub_key}"),
        format!("--public={}", keys.public),
        format!("--secret={}", keys.secret),
        format!("--public5={}", five.public),
        format!("--secret5={}", five.secret),
        "--device=py-1".to_string(),
        "--real-agent=rs-1".to_string(),
        format!("--ports={ports}"),
        format!("--protocol={}", protocol.display()),
    ]);
    let mut client = spawn(
        "conformance client",
        cmd,
        dir.path().join("client.log"),
        false,
    );
    let (status, _) = client.wait_exit(LIMIT - Duration::from_secs(10));
    let printed = client.rest_of_lines().join("\n");
    assert!(
        status.success(),
        "the conformance client ended with {status}; it printed:\n{printed}\nits stderr:\n{}\nthe hub's log:\n{}",
        client.log_text(),
        hub.proc.log_text()
    );
    assert!(
        printed.contains("checks passed"),
        "the client printed no summary:\n{printed}"
    );
    println!("{printed}");
}
