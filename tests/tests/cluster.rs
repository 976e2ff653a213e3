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
/// `a` first), enrolled at `a` only: the cluster's allow list takes them
/// to `b`.
struct Fleet {
    nats: NatsCluster,
    a: Hub,
    b: Hub,
    agents: Vec<Proc>,
    /// Front-end a's way to NATS, when it goes through proxies.
    proxies: Vec<Proxy>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    fn start() -> Fleet {
        Fleet::start_with(false, "")
    }

    /// With `proxied`, front-end a reaches NATS only through proxies a
    /// test can cut.
    /// `extra` is added to both front-ends' configuration.
    fn start_with(proxied: bool, extra: &str) -> Fleet {
        let dir = temp_dir("fleetmq-cluster-");
        let nats = NatsCluster::start(&dir.path().join("nats"));
        let proxies: Vec<Proxy> = if proxied {
            nats.client_ports().into_iter().map(Proxy::start).collect()
        } else {
            Vec::new()
        };
        let a_urls = if proxied {
            let urls: Vec<String> = proxies
                .iter()
                .map(|p| format!("nats://127.0.0.1:{}", p.port))
                .collect();
            urls.join(",")
        } else {
            nats.urls()
        };
        let a = start_front_end_via(&dir.path().join("a"), &a_urls, "fe-a", None, extra);
        let b = start_front_end(
            &dir.path().join("b"),
            &nats,
            "fe-b",
            Some(&a.dir.join("data")),
            extra,
        );
        let link = Link {
            telemetry: format!("{},{}", a.telemetry(), b.telemetry()),
            ..a.link()
        };
        let agents = DEVICES
            .iter()
            .map(|d| start_agent(&link, &a.dir, d, "run", &agent_config(""), &[]))
            .collect();
        let started = std::time::Instant::now();
        wait_for("front-end b's allow list to list every device", || {
            let list = std::fs::read_to_string(b.dir.join("data/allowed_devices")).ok()?;
            DEVICES
                .iter()
                .all(|d| list.lines().any(|l| l.starts_with(&format!("{d} "))))
                .then_some(())
        });
        eprintln!("enrolled at a, listed at b after {:?}", started.elapsed());
        Fleet {
            nats,
            a,
            b,
            agents,
            proxies,
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

/// Stops the producers and audits every device's stream at each of
/// `hubs` (no send may have failed: no agent is killed here).
fn finish_and_audit(producers: Vec<Producer>, hubs: &[&Hub]) -> Vec<Ledger> {
    let ledgers: Vec<Ledger> = producers.into_iter().map(Producer::finish).collect();
    for (d, l) in DEVICES.iter().zip(&ledgers) {
        assert!(l.unknown.is_empty(), "{d}: the agent itself never failed");
        for hub in hubs {
            audit(hub, d, l);
        }
    }
    ledgers
}

/// Waits until each front-end's `stats` shows both, with the version they
/// run and what they apply: until then a cancel or a forget, which every
/// front-end must apply, is refused.
fn wait_versions(fleet: &Fleet) {
    let started = std::time::Instant::now();
    for hub in [&fleet.a, &fleet.b] {
        wait_for("each front-end to know what the other runs", || {
            let stats = hub.op(&["stats"]).json.first()?.clone();
            let front_ends = stats["front_ends"].as_array()?.clone();
            (front_ends.len() == 2
                && front_ends.iter().all(|f| {
                    f["version"] == env!("CARGO_PKG_VERSION")
                        && f["features"]
                            == serde_json::json!(["job_cancel", "forget", "log_batches"])
                }))
            .then_some(())
        });
    }
    eprintln!(
        "each front-end knew what the other runs after {:?}",
        started.elapsed()
    );
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
    // b stored what a had put on the stream before it died, and the rest.
    let ledgers = finish_and_audit(producers, &[&fleet.b]);
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
    finish_and_audit(producers, &[&fleet.a, &fleet.b]);
}

#[test]
fn a_device_revoked_at_one_front_end_is_cut_off_where_it_is_held_and_forgotten_from_any() {
    let _w = watchdog("revoke across front-ends", LIMIT);
    let fleet = Fleet::start();
    wait_online(&fleet.a, "every device online at front-end a");
    let started = std::time::Instant::now();
    run_ok(
        hub_command()
            .arg("revoke")
            .arg("--data-dir")
            .arg(fleet.b.dir.join("data"))
            .arg("pi-1"),
    );
    fleet.a.proc.wait_log("key revoked; cutting the device off");
    eprintln!("revoked at b, cut off at a after {:?}", started.elapsed());
    let devices = fleet.a.devices();
    assert_eq!(devices["pi-1"]["online"], false, "{devices:?}");
    assert_eq!(devices["pi-2"]["online"], true, "{devices:?}");
    let list = std::fs::read_to_string(fleet.a.dir.join("data/allowed_devices")).unwrap();
    assert!(
        !list.lines().any(|l| l.starts_with("pi-1 ")),
        "a's file mirrors the cluster: {list}"
    );
    assert!(
        list.lines().any(|l| l.starts_with("# revoked pi-1 ")),
        "and says what it revoked: {list}"
    );
    // It cannot come back in through either front-end.
    fleet.agents[0].wait_log("the hub refused this device's key");

    // Decommissioned: a run left for it, then forgotten at b. Both
    // front-ends drop it, and the run is called off at both.
    let r = fleet
        .a
        .op(&["job", "submit", "--device", "pi-1", "echo", "never"]);
    assert!(r.ok, "{}", r.stderr);
    let id = r.json[0]["id"].as_u64().expect("a job id").to_string();
    wait_for("the job at b", || {
        fleet.b.op(&["job", "show", &id]).json.first().cloned()
    });
    wait_for("b to know pi-1 is offline", || {
        (fleet.b.devices().get("pi-1")?["online"] == false).then_some(())
    });
    wait_versions(&fleet);
    // Prometheus sees the same at any front-end.
    let (status, metrics) = http("GET", &fleet.b.endpoints["http"], "/metrics");
    assert_eq!(status, 200);
    for fe in ["fe-a", "fe-b"] {
        let version = format!(
            "fleetmq_front_end_info{{front_end=\"{fe}\",version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        let lacking = format!("fleetmq_front_end_lacking_features{{front_end=\"{fe}\"}} 0\n");
        assert!(
            metrics.contains(&version) && metrics.contains(&lacking),
            "{metrics}"
        );
    }
    let forget = fleet.b.op(&["forget", "pi-1"]);
    assert!(forget.ok, "{}", forget.stderr);
    assert_eq!(forget.json[0]["runs"], 1, "{:?}", forget.json);
    for hub in [&fleet.b, &fleet.a] {
        wait_for("pi-1 gone from the device list", || {
            (!hub.devices().contains_key("pi-1")).then_some(())
        });
        let job = wait_job_over(hub, &id);
        let why = job["runs"][0]["error"].as_str().unwrap_or_default();
        assert!(why.contains("forgotten"), "{job}");
    }
    assert!(fleet.a.devices().contains_key("pi-2"));
    let again = fleet.a.op(&["forget", "pi-1"]);
    assert!(
        !again.ok && again.stderr.contains("pi-1"),
        "{}",
        again.stderr
    );
}

#[test]
fn groups_pinned_at_one_front_end_apply_at_the_one_that_holds_the_device() {
    let _w = watchdog("pinned groups across front-ends", LIMIT);
    let fleet = Fleet::start();
    wait_online(&fleet.a, "every device online at front-end a");
    let key = std::fs::read_to_string(fleet.a.dir.join("pi-1/data/agent.pub")).unwrap();
    run_ok(
        hub_command()
            .arg("allow")
            .arg("--data-dir")
            .arg(fleet.b.dir.join("data"))
            .args(["pi-1", key.trim(), "--groups", "north"]),
    );
    // a mirrors the pin in its file, asks pi-1 for a Hello, and takes its
    // groups from the list.
    wait_for("pi-1 pinned to north at a", || {
        (fleet.a.devices()["pi-1"]["groups"] == serde_json::json!(["north"])).then_some(())
    });
    let list = std::fs::read_to_string(fleet.a.dir.join("data/allowed_devices")).unwrap();
    assert!(list.contains("groups=north"), "a's file mirrors it: {list}");
    let devices = fleet.a.devices();
    assert_eq!(devices["pi-1"]["online"], true, "{devices:?}");
    assert_ne!(devices["pi-2"]["groups"], serde_json::json!(["north"]));
    // The Hello pi-1 said again reached its holder: b shows the pin too.
    wait_for("pi-1 in north at b", || {
        let d = fleet.b.devices();
        (d.get("pi-1")?["groups"] == serde_json::json!(["north"])).then_some(())
    });
}

#[test]
fn one_fleet_from_either_front_end_devices_and_commands() {
    let _w = watchdog("one fleet from any front-end", LIMIT);
    let fleet = Fleet::start();
    wait_online(&fleet.a, "every device online at front-end a");
    fleet.a.wait_answering("pi-1");
    // b holds no agent, and shows them all online, at a.
    wait_online(&fleet.b, "front-end b to show a's devices online");
    let devices = fleet.b.devices();
    assert_eq!(devices["pi-1"]["front_end"], "fe-a", "{devices:?}");
    // A command asked at b goes to a, which holds the device.
    let ping = fleet.b.op(&["command", "pi-1", "ping"]);
    assert!(ping.ok, "{}", ping.stderr);
    assert_eq!(ping.json[0]["result"], "pong");
    let exec = fleet
        .b
        .op(&["command", "pi-2", "exec", "--", "echo", "-n", "via b"]);
    assert!(exec.ok, "{}", exec.stderr);
    assert_eq!(exec.json[0]["stdout"], "via b");
    // A command for the whole fleet, asked at b: every device answers,
    // through a.
    let all = fleet.b.op(&["command", "--all", "ping"]);
    assert_eq!(
        all.code,
        Some(0),
        "every device answers: {:?} {}",
        all.json,
        all.stderr
    );
    // What the devices are, said at a, is known at b through their
    // holders: b aims a command by it (every agent runs on this kernel).
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let only = format!("kernel={}", kernel.trim());
    let everyone = devices.len();
    wait_for("b to know every device's facts", || {
        let listed = fleet.b.op(&["devices", "--where", &only]);
        (listed.ok && listed.json.len() == everyone).then_some(())
    });
    let narrowed = fleet.b.op(&["command", "--where", &only, "ping"]);
    assert_eq!(
        narrowed.code,
        Some(0),
        "every device on this kernel answers: {:?} {}",
        narrowed.json,
        narrowed.stderr
    );
    // The desired configuration, set at b, reaches a device a holds; both
    // front-ends say so.
    let set = fleet.b.op(&["config", "set", "app.greeting=from b"]);
    assert!(set.ok, "{}", set.stderr);
    wait_for("pi-1 to apply the configuration set at b", || {
        let out = agent_command()
            .args(["config", "get", "app.greeting", "--data-dir"])
            .arg(fleet.a.dir.join("pi-1").join("data"))
            .output()
            .ok()?;
        (String::from_utf8_lossy(&out.stdout).trim() == "from b").then_some(())
    });
    for hub in [&fleet.a, &fleet.b] {
        wait_for("pi-1's configuration in sync at both front-ends", || {
            let r = hub.op(&["config", "show", "pi-1"]);
            let v = r.json.first()?;
            (v["applied_version"] == v["desired_version"] && v["applied_version"] != 0)
                .then_some(())
        });
    }
    // Announcements made at b reach a's agents: to all, and to one device.
    let link = Link {
        telemetry: format!("{},{}", fleet.a.telemetry(), fleet.b.telemetry()),
        ..fleet.a.link()
    };
    let log = fleet.a.dir.join("pi-c-app.log");
    std::fs::write(&log, "").expect("pi-c's log file");
    let logs = format!(
        "[logs]\nfiles = [{:?}]\npoll_ms = 100\n",
        log.to_string_lossy()
    );
    let chat = start_agent(
        &link,
        &fleet.a.dir,
        "pi-c",
        "chat",
        &agent_config(&logs),
        &[],
    );
    fleet.a.wait_listening("pi-c");
    wait_for("b to know pi-c is at a", || {
        (fleet.b.devices().get("pi-c")?["front_end"] == "fe-a").then_some(())
    });
    // A line of a log file on a device a holds is read at b too.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("pi-c's log file");
    std::io::Write::write_all(&mut file, b"pump started\n").expect("a log line");
    wait_for("pi-c's log line at b", || {
        let r = fleet.b.op(&["logs", "--device", "pi-c"]);
        let texts: Vec<&str> = r.json.iter().filter_map(|l| l["text"].as_str()).collect();
        (texts == ["pump started"]).then_some(())
    });
    assert!(fleet.b.op(&["broadcast", "to", "everyone"]).ok);
    chat.lines_until("the announcement to all", |l| l == "[all] to everyone");
    let direct = fleet.b.op(&["broadcast", "--device", "pi-c", "just c"]);
    assert!(direct.ok, "{}", direct.stderr);
    chat.lines_until("the message to pi-c", |l| l == "[to pi-c] just c");
    // `stats` at b shows each front-end's own traffic: a's as it last
    // reported it (every 5 s), b's as of now.
    wait_for("a's traffic in b's stats", || {
        let r = fleet.b.op(&["stats"]);
        let front_ends = r.json.first()?["front_ends"].as_array()?.clone();
        let a = front_ends.iter().find(|f| f["name"] == "fe-a")?;
        let b = front_ends.iter().find(|f| f["name"] == "fe-b")?;
        let a_busy = a["devices_online"] == 3 && a["batches_accepted"].as_u64()? > 0;
        (a_busy && b["devices_online"] == 0).then_some(())
    });
    // Once a is gone, b says the device is offline (it has moved to b
    // by then, or is on its way).
    let mut a = fleet.a;
    a.proc.signal(libc::SIGKILL);
    a.proc.wait_exit(WAIT);
    wait_online(&fleet.b, "every device online at front-end b");
    fleet.b.wait_answering("pi-1");
    let ping = fleet.b.op(&["command", "pi-1", "ping"]);
    assert!(ping.ok, "{}", ping.stderr);
    assert_eq!(fleet.b.devices()["pi-1"]["front_end"], "fe-b");
}

#[test]
fn a_front_end_cut_off_from_nats_sends_its_agents_on_and_acks_nothing_the_stream_lacks() {
    let _w = watchdog("front-end cut off from NATS", LIMIT);
    let fleet = Fleet::start_with(true, "");
    wait_online(&fleet.a, "every device online at front-end a");
    let producers = fleet.producers();
    for p in &producers {
        p.wait_accepted(30);
    }
    for p in &fleet.proxies {
        p.cut();
    }
    // a stops acking, then closes its telemetry port; the agents move to b
    // with what a did not ack still in their spools.
    fleet
        .a
        .proc
        .wait_log("cut off from the NATS cluster; closing the telemetry port");
    wait_online(&fleet.b, "every device online at front-end b");
    for p in &producers {
        p.wait_accepted(30);
    }
    let ledgers = finish_and_audit(producers, &[&fleet.b]);
    for p in &fleet.proxies {
        p.heal();
    }
    fleet.a.proc.wait_log("the telemetry port is open again");
    // a reads on from where it was cut off, and has it all too.
    for (d, l) in DEVICES.iter().zip(&ledgers) {
        audit(&fleet.a, d, l);
    }
}

/// `job show ID` at `hub`, once the job is there and over.
fn wait_job_over(hub: &Hub, id: &str) -> serde_json::Value {
    wait_for(
        &format!("job {id} to be over at {}", hub.dir.display()),
        || {
            let r = hub.op(&["job", "show", id]);
            let job = r.json.first()?.clone();
            matches!(job["state"].as_str(), Some("done" | "failed")).then_some(job)
        },
    )
}

#[test]
fn a_job_submitted_at_any_front_end_runs_once_and_shows_everywhere_even_when_one_dies() {
    let _w = watchdog("jobs across front-ends", LIMIT);
    // A short lease so that a job lost with its front-end comes back soon.
    let fleet = Fleet::start_with(
        false,
        "[jobs]\nlease_ms = 8000\ntimeout_ms = 3000\nmax_attempts = 5\n",
    );
    wait_online(&fleet.a, "every device online at front-end a");
    wait_versions(&fleet);
    // Submitted at b, which holds no agent: run by one of a's.
    let r = fleet.b.op(&["job", "submit", "echo", "from b"]);
    assert!(r.ok, "{}", r.stderr);
    let id = r.json[0]["id"].as_u64().expect("a job id").to_string();
    // A job no device takes, submitted at b and cancelled at a: over at
    // both, and taken off the queue when next delivered.
    let r = fleet
        .b
        .op(&["job", "submit", "exec", "--", "no-device-runs-this"]);
    assert!(r.ok, "{}", r.stderr);
    let stuck = r.json[0]["id"].as_u64().expect("a job id").to_string();
    wait_for("the job at a", || {
        fleet.a.op(&["job", "show", &stuck]).json.first().cloned()
    });
    let cancel = fleet.a.op(&["job", "cancel", &stuck]);
    assert!(cancel.ok, "{}", cancel.stderr);
    assert_eq!(cancel.json[0]["stopped"], 1, "{:?}", cancel.json);
    for hub in [&fleet.a, &fleet.b] {
        let job = wait_job_over(hub, &stuck);
        assert_eq!(job["state"], "failed", "{job}");
        let why = job["error"].as_str().unwrap_or_default();
        assert!(why.contains("cancelled by an operator"), "{job}");
    }
    fleet.a.proc.wait_log("taken off the cluster's queue");
    for hub in [&fleet.b, &fleet.a] {
        let job = wait_job_over(hub, &id);
        assert_eq!(job["state"], "done", "{job}");
        assert_eq!(job["outcome"]["stdout"], "from b", "{job}");
        assert!(
            DEVICES.contains(&job["device"].as_str().unwrap_or("")),
            "{job}"
        );
    }
    // A job running when its front-end dies: delivered again after its
    // lease, at b, and done there (by the device that did not run it:
    // the other says it ran it already, its result lost with a).
    let r = fleet.a.op(&["job", "submit", "exec", "--", "sleep", "2"]);
    assert!(r.ok, "{}", r.stderr);
    let id = r.json[0]["id"].as_u64().expect("a job id").to_string();
    let running = format!("running job job={id} ");
    wait_for("an agent at a to run the job", || {
        fleet
            .agents
            .iter()
            .any(|p| p.log_text().contains(&running))
            .then_some(())
    });
    let mut a = fleet.a;
    a.proc.signal(libc::SIGKILL);
    a.proc.wait_exit(WAIT);
    wait_online(&fleet.b, "every device online at front-end b");
    let job = wait_job_over(&fleet.b, &id);
    assert_eq!(job["state"], "done", "{job}");
}

#[test]
fn a_job_aimed_at_devices_runs_on_each_where_it_is_held_and_follows_a_device_that_moves() {
    let _w = watchdog("aimed jobs across front-ends", LIMIT);
    let fleet = Fleet::start_with(
        false,
        "[jobs]\nlease_ms = 8000\ntimeout_ms = 3000\nmax_attempts = 5\n",
    );
    wait_online(&fleet.a, "every device online at front-end a");
    // A third device, held by b.
    let link = Link {
        telemetry: format!("{},{}", fleet.b.telemetry(), fleet.a.telemetry()),
        ..fleet.a.link()
    };
    let _c = start_agent(&link, &fleet.a.dir, "pi-3", "run", &agent_config(""), &[]);
    wait_for("pi-3 online at b, and a knowing so", || {
        let at_b = fleet.b.devices().get("pi-3")?["front_end"] == "fe-b";
        let at_a = fleet.a.devices().get("pi-3")?["online"] == true;
        (at_b && at_a).then_some(())
    });
    // For the whole fleet, asked at a: each device runs it once, wherever
    // it is held, and both front-ends show every run.
    let r = fleet.a.op(&["job", "submit", "--all", "echo", "to all"]);
    assert!(r.ok, "{}", r.stderr);
    let id = r.json[0]["id"].as_u64().expect("a job id").to_string();
    for hub in [&fleet.a, &fleet.b] {
        let job = wait_job_over(hub, &id);
        assert_eq!(job["state"], "done", "{job}");
        let runs = job["runs"].as_array().expect("its runs");
        let on: Vec<&str> = runs.iter().filter_map(|r| r["device"].as_str()).collect();
        assert_eq!(on, ["pi-1", "pi-2", "pi-3"], "{job}");
        for run in runs {
            assert_eq!(run["state"], "done", "{job}");
            assert_eq!(run["outcome"]["stdout"], "to all", "{job}");
        }
    }
    // For one device a holds, asked at b; a dies while it runs. The device
    // moves to b, which takes the result it sends from there (or, if the
    // result was lost with a, hands it the run again once the lease is out,
    // and the device answers with what it did): done, run once.
    let r = fleet.b.op(&[
        "job", "submit", "--device", "pi-1", "exec", "--", "sleep", "2",
    ]);
    assert!(r.ok, "{}", r.stderr);
    let id = r.json[0]["id"].as_u64().expect("a job id").to_string();
    let run = wait_for("the run at a", || {
        let job = fleet.a.op(&["job", "show", &id]).json.first()?.clone();
        job["runs"][0]["id"].as_u64()
    });
    let running = format!("running job job={run} ");
    wait_for("pi-1 to run it", || {
        fleet.agents[0].log_text().contains(&running).then_some(())
    });
    let mut a = fleet.a;
    a.proc.signal(libc::SIGKILL);
    a.proc.wait_exit(WAIT);
    wait_online(&fleet.b, "every device online at front-end b");
    let job = wait_job_over(&fleet.b, &id);
    assert_eq!(job["state"], "done", "{job}");
    let run = &job["runs"][0];
    assert_eq!(run["state"], "done", "{job}");
    assert_eq!(run["outcome"]["exit_code"], 0, "{job}");
    let started = fleet.agents[0].log_text().matches(&running).count();
    assert_eq!(started, 1, "run once on the device");
}

#[test]
fn everything_killed_and_restarted_loses_and_repeats_nothing() {
    let _w = watchdog("restart everything", LIMIT);
    let mut fleet = Fleet::start();
    wait_online(&fleet.a, "every device online at front-end a");
    let producers = fleet.producers();
    for p in &producers {
        p.wait_accepted(30);
    }
    // Every front-end and every NATS node, at once, with -9.
    for hub in [&mut fleet.a, &mut fleet.b] {
        hub.proc.signal(libc::SIGKILL);
        hub.proc.wait_exit(WAIT);
    }
    for node in 0..3 {
        fleet.nats.kill(node);
    }
    // The agents keep accepting into their spools meanwhile.
    for p in &producers {
        p.wait_accepted(20);
    }
    for node in 0..3 {
        fleet.nats.restart(node);
    }
    let again = |hub: &Hub, name: &str| {
        let config = format!(
            "{}{}",
            front_end_config(&fleet.nats, name),
            hub.same_ports()
        );
        Hub::restart(&hub.dir, &config)
    };
    let a = again(&fleet.a, "fe-a");
    let b = again(&fleet.b, "fe-b");
    wait_online(&a, "every device back at a front-end");
    for p in &producers {
        p.wait_accepted(20);
    }
    finish_and_audit(producers, &[&a, &b]);
}
