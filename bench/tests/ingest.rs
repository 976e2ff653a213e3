//! The ingest benchmark against the real hub, briefly: a hub that throttles
//! or refuses the swarm must fail the benchmark, not report 0 batches a
//! second as a figure (as it once did, after the hub gained per-device
//! budgets).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn the_ingest_benchmark_has_every_simulated_agent_acked_by_a_real_hub() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_fleetmq-bench"))
        .args(["ingest", "--agents", "3", "--seconds", "1", "--json"])
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
            panic!("fleetmq-bench ingest did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "fleetmq-bench ingest failed: {status}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let row = &report["ingest"]["rows"][0];
    assert_eq!(row["agents"], 3, "{row}");
    assert_eq!(row["agents_acked"], 3, "{row}");
    assert_eq!(row["refusals"], 0, "{row}");
    assert!(row["batches_per_s"].as_f64().unwrap() > 0.0, "{row}");
}
