//! The audit behind the fault tests: agents take a known, numbered stream
//! of samples from a producer (`fleetmq-agent send`, which answers `ok`
//! only once the samples are in the agent's spool), and what a hub stored
//! is compared with what the agents accepted.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{Hub, WAIT, agent_command, wait_for};

/// The metric the producers count with.
pub const METRIC: &str = "audit.n";

/// What a producer handed to one agent.
#[derive(Default)]
pub struct Ledger {
    pub accepted: BTreeSet<i64>,
    pub unknown: BTreeSet<i64>,
    pub refused: BTreeSet<i64>,
}

/// Sends audit.n = 1, 2, 3, ... to the agent whose data directory is
/// `data`, one `fleetmq-agent send` per number, until stopped.
pub struct Producer {
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Producer {
    pub fn start(data: PathBuf, limit: Option<i64>) -> Producer {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (ledger, stop) = (ledger.clone(), stop.clone());
            move || {
                let mut n = 1;
                while !stop.load(Ordering::SeqCst) && limit.is_none_or(|l| n <= l) {
                    let out = agent_command()
                        .arg("send")
                        .arg("--data-dir")
                        .arg(&data)
                        .arg(format!("{METRIC}={n}"))
                        .env("FLEETMQ_LOG", "warn")
                        .output()
                        .expect("running fleetmq-agent send");
                    let stderr = String::from_utf8_lossy(&out.stderr);
                    let mut l = ledger.lock().unwrap();
                    if out.status.success() {
                        l.accepted.insert(n);
                    } else if stderr.contains("spool refused") {
                        l.refused.insert(n);
                    } else {
                        l.unknown.insert(n);
                    }
                    n += 1;
                }
            }
        });
        Producer {
            ledger,
            stop,
            thread: Some(thread),
        }
    }

    pub fn accepted(&self) -> usize {
        self.ledger.lock().unwrap().accepted.len()
    }

    /// Waits until `more` further samples were accepted.
    pub fn wait_accepted(&self, more: usize) {
        let target = self.accepted() + more;
        wait_for(&format!("{target} accepted samples"), || {
            (self.accepted() >= target).then_some(())
        });
    }

    /// Stops it (if it has no limit) and returns what it handed over.
    pub fn finish(mut self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        self.join()
    }

    /// Waits until it has sent every number up to its limit.
    pub fn finish_all(mut self) -> Ledger {
        self.join()
    }

    /// Waits until it has sent its last number.
    pub fn join(&mut self) -> Ledger {
        if let Some(t) = self.thread.take() {
            t.join().expect("producer thread");
        }
        std::mem::take(&mut *self.ledger.lock().unwrap())
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Every audit.n value the hub stored for `device`, with repeats, as an
/// operator reads them (`--from-start` pages through the hub's answers of
/// at most 1,000 rows).
pub fn stored(hub: &Hub, device: &str) -> Vec<i64> {
    let r = hub.op(&[
        "telemetry",
        "--device",
        device,
        "--name",
        METRIC,
        "--from-start",
    ]);
    assert!(r.ok, "telemetry failed: {}", r.stderr);
    r.json
        .iter()
        .filter_map(|row| row["value"].as_i64())
        .collect()
}

/// Waits until the hub holds every accepted sample, then checks none is
/// stored twice and nothing was stored that was not handed over.
pub fn audit(hub: &Hub, device: &str, ledger: &Ledger) {
    let deadline = std::time::Instant::now() + WAIT;
    let values = loop {
        let v = stored(hub, device);
        let have: BTreeSet<i64> = v.iter().copied().collect();
        if ledger.accepted.is_subset(&have) {
            break v;
        }
        if std::time::Instant::now() > deadline {
            let missing: Vec<_> = ledger.accepted.difference(&have).take(20).collect();
            let status = agent_command()
                .arg("status")
                .arg("--data-dir")
                .arg(hub.dir.join(device).join("data"))
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            panic!(
                "{device}: {} accepted samples never stored, e.g. {missing:?}\nagent status: {status:?}\nhub stats: {}",
                ledger.accepted.difference(&have).count(),
                hub.stats()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut counts: HashMap<i64, usize> = HashMap::new();
    for v in &values {
        *counts.entry(*v).or_default() += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dups.is_empty(), "{device}: stored twice: {dups:?}");
    let strangers: Vec<_> = counts
        .keys()
        .filter(|v| !ledger.accepted.contains(v) && !ledger.unknown.contains(v))
        .collect();
    assert!(
        strangers.is_empty(),
        "{device}: stored but never accepted: {strangers:?}"
    );
    eprintln!(
        "{device}: {} accepted, all stored once; {} unknown (sent while it was killed), {} of them stored",
        ledger.accepted.len(),
        ledger.unknown.len(),
        ledger
            .unknown
            .iter()
            .filter(|v| counts.contains_key(v))
            .count()
    );
}
