//! Front-ends over a three-node NATS JetStream cluster on this machine:
//! agents stream numbered samples through one front-end, a fault is
//! injected (a front-end or a NATS node killed with -9), and each
//! front-end's store, filled from the stream, is audited as
//! `faults.rs` audits a single hub: every accepted sample stored exactly
//! once, nothing stored that was not accepted.

use std::time::Duration;

use fleetmq_tests::audit::*;
use fleetmq_tests::cluster::*;
use fleetmq_tests::*;

const LIMIT: Duration = Duration::from_secs(240);
const DEVICES: [&str; 2] = ["pi-1", "pi-2"];

/// Two front-ends over one cluster, and agents that know both (front-end
/// `a` first), enrolled at both.
struct Fleet {
    nats: NatsCluster,
    a: Hub,
    b: Hub,
    agents: Vec<Proc>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    fn start() -> Fleet {
        let dir = temp_dir("fleetmq-cluster-");
        let nats = NatsCluster::start(&dir.path().join("nats"));
        let a = start_front_end(&dir.path().join("a"), &nats, "fe-a", None, "");
        let b = start_front_end(
            &dir.path().join("b"),
            &nats,
            "fe-b",
            Some(&a.dir.join("data")),
            "",
        );
        let link = Link {
            telemetry: format!("{},{}", a.telemetry(), b.telemetry()),
            ..a.link()
        };
        let agents = DEVICES
            .iter()
            .map(|d| {
                let key = link.enrol(&a.dir.join(d).join("data"), d);
                b.link().allow(d, &key);
                start_agent(&link, &a.dir, d, "run", &agent_config(""), &[])
            })
            .collect();
        Fleet {
            nats,
            a,
            b,
            agents,
            _dir: dir,
        }
    }

    fn producers(&self) -> Vec<Producer> {
        DEVICES
            .iter()
            .map(|d| Producer::start(self.a.dir.join(d).join("data"), None))
            .collect()
    }
}

/// Waits until `hub` has every device online.
fn wait_online(hub: &Hub, what: &str) {
    wait_for(what, || {
        let devices = hub.devices();
        DEVICES
            .iter()
            .all(|d| devices.get(*d).is_some_and(|v| v["online"] == true))
            .then_some(())
    });
}

#[test]
fn a_front_end_killed_mid_stream_loses_and_repeats_nothing() {
    let _w = watchdog("front-end kill -9", LIMIT);
    let mut fleet = Fleet::start();
    wait_online(&fleet.a, "every device online at front-end a");
    let producers = fleet.producers();
    for p in &producers {
        p.wait_accepted(30);
    }
    fleet.a.proc.signal(libc::SIGKILL);
    fleet.a.proc.wait_exit(WAIT);
    // The agents move to b by themselves and go on.
    wait_online(&fleet.b, "every device online at front-end b");
    for p in &producers {
        p.wait_accepted(30);
    }
    let ledgers: Vec<Ledger> = producers.into_iter().map(Producer::finish).collect();
    // b stored what a had put on the stream before it died, and the rest.
    for (d, l) in DEVICES.iter().zip(&ledgers) {
        assert!(l.unknown.is_empty(), "{d}: the agent itself never failed");
        audit(&fleet.b, d, l);
    }
    for agent in &fleet.agents {
        agent.wait_log("moving to the next hub");
    }
    // a, started again, reads the stream on from where it stopped.
    let a = Hub::restart(
        &fleet.a.dir,
        &format!(
            "{}{}",
            front_end_config(&fleet.nats, "fe-a"),
            fleet.a.same_ports()
        ),
    );
    for (d, l) in DEVICES.iter().zip(&ledgers) {
        audit(&a, d, l);
    }
}

#[test]
fn a_nats_node_killed_keeps_the_fleet_going_and_loses_nothing_acked() {
    let _w = watchdog("NATS node kill -9", LIMIT);
    let mut fleet = Fleet::start();
    wait_online(&fleet.a, "every device online at front-end a");
    let producers = fleet.producers();
    for p in &producers {
        p.wait_accepted(30);
    }
    fleet.nats.kill(0);
    for p in &producers {
        p.wait_accepted(30);
    }
    fleet.nats.restart(0);
    for p in &producers {
        p.wait_accepted(30);
    }
    let ledgers: Vec<Ledger> = producers.into_iter().map(Producer::finish).collect();
    for (d, l) in DEVICES.iter().zip(&ledgers) {
        assert!(l.unknown.is_empty(), "{d}: the agent itself never failed");
        audit(&fleet.a, d, l);
        audit(&fleet.b, d, l);
    }
}
