//! The connected-fleet benchmark against the real hub, briefly: each kind
//! of simulated agent holds the connections it stands for, so the figure
//! a device is what that many connections cost the hub.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `fleetmq-bench connected` with `flags` and returns its JSON.
fn connected(flags: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_fleetmq-bench"))
        .args(["connected", "--agents", "10", "--json"])
        .arg(&json)
        .args(flags)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = bench.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = bench.kill();
            panic!("fleetmq-bench connected {flags:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "fleetmq-bench connected {flags:?} failed: {status}"
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    report["connected_fleet"].clone()
}

#[test]
fn each_kind_of_simulated_agent_holds_the_connections_it_stands_for() {
    for (flags, sockets) in [
        (&[][..], 5),
        (&["--no-jobs"][..], 3),
        (&["--telemetry-only"][..], 1),
    ] {
        let report = connected(flags);
        assert_eq!(report["sockets_per_agent"], sockets, "{flags:?}: {report}");
        let row = &report["rows"][0];
        assert_eq!(row["agents"], 10, "{flags:?}: {row}");
        // The hub's descriptors beyond those it held idle, one a connection.
        let held = row["hub_connections"].as_f64().unwrap() / 10.0;
        assert_eq!(held.round(), sockets as f64, "{flags:?}: {row}");
    }
}
