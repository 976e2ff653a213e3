//! The benchmarks against the real hub, briefly, for what makes their
//! figures mean what they say.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `fleetmq-bench ARGS --json FILE` to the end (within 60 s) and
/// returns what it wrote under `key`.
fn bench(args: &[&str], key: &str) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_fleetmq-bench"))
        .args(args)
        .arg("--json")
        .arg(&json)
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
            panic!("fleetmq-bench {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "fleetmq-bench {args:?} failed: {status}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    report[key].clone()
}

/// A hub that throttles or refuses the swarm must fail the benchmark, not
/// report 0 batches a second as a figure (as it once did, after the hub
/// gained per-device budgets).
#[test]
fn the_ingest_benchmark_has_every_simulated_agent_acked_by_a_real_hub() {
    let report = bench(&["ingest", "--agents", "3", "--seconds", "1"], "ingest");
    let row = &report["rows"][0];
    assert_eq!(row["agents"], 3, "{row}");
    assert_eq!(row["agents_acked"], 3, "{row}");
    assert_eq!(row["refusals"], 0, "{row}");
    assert!(row["batches_per_s"].as_f64().unwrap() > 0.0, "{row}");
}

/// Each kind of simulated agent holds the connections it stands for, so
/// the figure a device is what that many connections cost the hub; on
/// CURVE too (a fleet the hub did not admit would never be measured).
#[test]
fn each_kind_of_simulated_agent_holds_the_connections_it_stands_for() {
    let kinds = [
        (&[][..], 1),
        (&["--five"][..], 5),
        (&["--no-jobs"][..], 3),
        (&["--curve"][..], 1),
    ];
    for (flags, sockets) in kinds {
        let args = [&["connected", "--agents", "10"][..], flags].concat();
        let report = bench(&args, "connected_fleet");
        assert_eq!(report["sockets_per_agent"], sockets, "{flags:?}: {report}");
        assert_eq!(report["curve"], flags.contains(&"--curve"), "{report}");
        let row = &report["rows"][0];
        assert_eq!(row["agents"], 10, "{flags:?}: {row}");
        // The hub's descriptors beyond those it held idle, one a connection.
        let held = row["hub_connections"].as_f64().unwrap() / 10.0;
        assert_eq!(held.round(), sockets as f64, "{flags:?}: {row}");
    }
}
