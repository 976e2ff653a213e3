//! Faults, each ending in an audit: agents take a known, numbered stream of
//! samples from a producer (`fleetmq-agent send`, which answers `ok` only
//! once the samples are in the agent's spool), a fault is injected and
//! healed, the spools drain, and then what the hub stored is compared with
//! what the agents accepted.
//!
//! A sample whose `send` failed (the agent was being killed) is "unknown":
//! it may or may not have reached the spool. The audit allows it at most
//! once; every accepted sample must be stored exactly once.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fleetmq_tests::audit::*;
use fleetmq_tests::*;

const LIMIT: Duration = Duration::from_secs(240);

fn tmp() -> tempfile::TempDir {
    temp_dir("fleetmq-faults-")
}

/// Stops the producers and audits each device's stream; `agents_killed`
/// says whether some sends may have failed because their agent was being
/// killed (otherwise none may).
fn finish_and_audit(hub: &Hub, devices: &[&str], producers: Vec<Producer>, agents_killed: bool) {
    let ledgers: Vec<Ledger> = producers.into_iter().map(Producer::finish).collect();
    for (d, l) in devices.iter().zip(&ledgers) {
        if !agents_killed {
            assert!(l.unknown.is_empty(), "{d}: the agent itself never failed");
        }
        audit(hub, d, l);
    }
}

/// A test agent (fast timers), with `extra` config sections.
fn start(hub: &Hub, device: &str, extra: &str) -> Proc {
    start_agent(
        &hub.link(),
        &hub.dir,
        device,
        "run",
        &agent_config(extra),
        &[],
    )
}

fn data_dir(hub: &Hub, device: &str) -> PathBuf {
    hub.dir.join(device).join("data")
}

#[test]
fn agents_killed_mid_stream_lose_and_repeat_nothing() {
    let _w = watchdog("agent kill -9", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let devices = ["pi-k1", "pi-k2"];
    let mut agents: Vec<Proc> = devices.iter().map(|d| start(&hub, d, "")).collect();
    for d in devices {
        hub.wait_listening(d);
    }
    let producers: Vec<Producer> = devices
        .iter()
        .map(|d| Producer::start(data_dir(&hub, d), None))
        .collect();
    for round in 0..3 {
        for (i, d) in devices.iter().enumerate() {
            producers[i].wait_accepted(15);
            agents[i].signal(libc::SIGKILL);
            agents[i].wait_exit(Duration::from_secs(5));
            eprintln!("round {round}: killed {d} with -9");
            agents[i] = start(&hub, d, "");
        }
    }
    for p in &producers {
        p.wait_accepted(15);
    }
    finish_and_audit(&hub, &devices, producers, true);
}

#[test]
fn a_hub_killed_again_and_again_loses_and_repeats_nothing() {
    let _w = watchdog("hub kill -9", LIMIT);
    let dir = tmp();
    let mut hub = Hub::start(dir.path(), "");
    // The restarted hub listens where the first one did.
    let same_ports = hub.same_ports();
    let devices = ["pi-h1", "pi-h2", "pi-h3"];
    let _agents: Vec<Proc> = devices.iter().map(|d| start(&hub, d, "")).collect();
    for d in devices {
        hub.wait_listening(d);
    }
    let producers: Vec<Producer> = devices
        .iter()
        .map(|d| Producer::start(data_dir(&hub, d), None))
        .collect();
    for round in 0..3 {
        producers[0].wait_accepted(20);
        hub.proc.signal(libc::SIGKILL);
        hub.proc.wait_exit(Duration::from_secs(5));
        eprintln!("round {round}: killed the hub with -9");
        producers[0].wait_accepted(10); // the agents keep accepting meanwhile
        hub = Hub::restart(dir.path(), &same_ports);
    }
    for p in &producers {
        p.wait_accepted(15);
    }
    finish_and_audit(&hub, &devices, producers, false);
}

#[test]
fn a_full_spool_drops_or_refuses_exactly_what_its_policy_says() {
    let _w = watchdog("spool full", LIMIT);
    let dir = tmp();
    let mut hub = Hub::start(dir.path(), "");
    let ports = hub.same_ports();
    // The agent's own samples only at start and no host metrics, so that
    // its counters are about the audit stream alone.
    let small = |policy: &str| {
        format!(
            "[telemetry]\nsample_interval_ms = 3600000\nflush_interval_ms = 100\nack_timeout_ms = 500\n\
             [presence]\nheartbeat_ms = 300\n\
             [spool]\nmax_bytes = 16384\nsegment_bytes = 4096\nwhen_full = \"{policy}\"\n\
             [host]\ninterval_ms = 0\n[ingest]\nudp = \"127.0.0.1:0\"\n"
        )
    };
    let _oldest = start_agent(
        &hub.link(),
        &hub.dir,
        "pi-drop",
        "run",
        &small("drop_oldest"),
        &[],
    );
    let _refuse = start_agent(
        &hub.link(),
        &hub.dir,
        "pi-refuse",
        "run",
        &small("refuse_new"),
        &[],
    );
    for d in ["pi-drop", "pi-refuse"] {
        hub.wait_listening(d);
        wait_for(&format!("{d}: its first samples acked"), || {
            let s = agent_status(&data_dir(&hub, d));
            (s["records"]["acked"].as_u64() > Some(0)
                && s["records"]["waiting"] == 0
                && s["batches"]["in_flight"] == 0)
                .then_some(())
        });
    }

    // The hub goes away; far more is produced than 16 KB of spool holds.
    hub.proc.signal(libc::SIGKILL);
    hub.proc.wait_exit(Duration::from_secs(5));
    let n = 1500;
    let drop_ledger = Producer::start(data_dir(&hub, "pi-drop"), Some(n)).join();
    let refuse_ledger = Producer::start(data_dir(&hub, "pi-refuse"), Some(n)).join();
    assert_eq!(
        drop_ledger.accepted.len() as i64,
        n,
        "drop_oldest accepts all; refused {:?}, unknown {:?}",
        drop_ledger.refused.len(),
        drop_ledger.unknown.len()
    );
    assert!(drop_ledger.unknown.is_empty() && refuse_ledger.unknown.is_empty());
    assert!(
        !refuse_ledger.refused.is_empty(),
        "refuse_new refused some once full"
    );
    let dropped =
        agent_status(&data_dir(&hub, "pi-drop"))["records"]["dropped"]["spool_full_oldest"]
            .as_u64()
            .expect("dropped count");
    assert!(dropped > 0, "drop_oldest dropped some");
    let refused =
        agent_status(&data_dir(&hub, "pi-refuse"))["records"]["dropped"]["spool_full_refused"]
            .as_u64()
            .expect("refused count");
    assert_eq!(refused as usize, refuse_ledger.refused.len());

    hub = Hub::restart(dir.path(), &ports);
    // refuse_new: exactly the accepted ones, the oldest, arrive.
    audit(&hub, "pi-refuse", &refuse_ledger);
    // drop_oldest: what was accepted and not counted as dropped arrives,
    // and it is the newest.
    let drained = wait_for("pi-drop drained", || {
        let s = agent_status(&data_dir(&hub, "pi-drop"));
        (s["records"]["waiting"] == 0 && s["batches"]["in_flight"] == 0).then_some(s)
    });
    let values = stored(&hub, "pi-drop");
    let set: BTreeSet<i64> = values.iter().copied().collect();
    assert_eq!(set.len(), values.len(), "nothing stored twice");
    let dropped_total = drained["records"]["dropped"]["spool_full_oldest"]
        .as_u64()
        .unwrap();
    assert_eq!(
        values.len() as u64 + dropped_total,
        n as u64,
        "stored + counted as dropped = accepted"
    );
    assert!(set.contains(&n), "the newest sample survived");
    assert!(!set.contains(&1), "the oldest sample was dropped");
    eprintln!(
        "drop_oldest: {n} accepted, {} stored, {dropped_total} dropped; refuse_new: {} accepted, {} refused",
        values.len(),
        refuse_ledger.accepted.len(),
        refuse_ledger.refused.len()
    );
}

/// Runs `ip ARGS` (iproute2), failing the test with its error.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running ip (install iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace joined to this one by a veth pair; removed on drop.
struct Netns {
    name: String,
    host_if: String,
    ns_if: String,
    host_ip: String,
}

impl Netns {
    /// Namespace `n` (0 or 1) of this test process: each test that cuts a
    /// link has its own.
    fn new(n: u32) -> Netns {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        assert!(
            root,
            "this test needs root: it puts agents in their own network namespace (ip netns); run the suite as root"
        );
        let id = std::process::id() % 10_000;
        let net = (id % 125) * 2 + n;
        let ns = Netns {
            name: format!("fleetmq-{id}-{n}"),
            host_if: format!("fmqh{id}x{n}"),
            ns_if: format!("fmqa{id}x{n}"),
            host_ip: format!("10.251.{net}.1"),
        };
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &ns.ns_if,
        ]);
        ip(&["link", "set", &ns.ns_if, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_if,
        ]);
        ip(&["link", "set", &ns.host_if, "up"]);
        let ns_ip = format!("10.251.{net}.2/30");
        ip(&["-n", &ns.name, "addr", "add", &ns_ip, "dev", &ns.ns_if]);
        ip(&["-n", &ns.name, "link", "set", &ns.ns_if, "up"]);
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Cuts the link: nothing passes either way.
    fn cut(&self) {
        ip(&["-n", &self.name, "link", "set", &self.ns_if, "down"]);
    }

    fn heal(&self) {
        ip(&["-n", &self.name, "link", "set", &self.ns_if, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it ours.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// The disk under an agent's data directory fills to the last byte while
/// its hub is away (a small tmpfs): restarted on the full disk, the agent
/// runs, answers `status` and commands, and once it reaches the hub drains
/// every sample it had accepted, once, under either spool policy.
#[test]
fn an_agent_on_a_full_disk_runs_and_drains_under_either_policy() {
    let _w = watchdog("full disk", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    for (device, policy) in [("pi-full-a", "drop_oldest"), ("pi-full-b", "refuse_new")] {
        let data = data_dir(&hub, device);
        let disk = Tmpfs::mount(&data, 1 << 20);
        let config = agent_config(&format!(
            "[spool]\nwhen_full = \"{policy}\"\nsegment_bytes = 16384\n"
        ));
        let away = Link {
            telemetry: nobody_listening(),
            ..hub.link()
        };
        let mut agent = start_agent(&away, &hub.dir, device, "run", &config, &[]);
        wait_status(&data);
        let ledger = Producer::start(data.clone(), Some(200)).finish_all();
        assert_eq!(ledger.accepted.len(), 200, "{device}: the disk had room");
        disk.fill();
        agent.signal(libc::SIGTERM);
        agent.wait_exit(WAIT);

        let back = Link {
            enrol: false,
            ..hub.link()
        };
        let mut agent = start_agent(&back, &hub.dir, device, "run", &config, &[]);
        audit(&hub, device, &ledger);
        let ping = hub.op(&["command", device, "ping"]);
        assert!(ping.ok, "{device} answers on a full disk: {}", ping.stderr);
        let status = agent_status(&data);
        assert_eq!(status["batches"]["in_flight"], 0, "{device}: {status}");
        agent.signal(libc::SIGTERM);
        let (exit, _) = agent.wait_exit(WAIT);
        assert!(exit.success(), "{device} stopped cleanly: {exit:?}");
    }
}

/// The hub's disk fills to the last byte (a small tmpfs) while an agent
/// sends: the hub goes on serving commands and reads, holds telemetry back
/// without acking it and says why in /health and stats, and resumes by
/// itself when there is room again, losing nothing. A hub also starts on a
/// full disk.
#[test]
fn a_hub_on_a_full_disk_holds_telemetry_back_and_resumes_by_itself() {
    let _w = watchdog("hub full disk", LIMIT);
    let dir = tmp();
    let disk = Tmpfs::mount(&dir.path().join("data"), 4 << 20);
    let hub = Hub::start(dir.path(), "");
    let _agent = start(&hub, "pi-d", "");
    let data = data_dir(&hub, "pi-d");
    wait_status(&data);
    let producer = Producer::start(data.clone(), None);
    producer.wait_accepted(20);
    let filler = disk.fill();
    let stats = wait_for("the hub saying its store cannot be written", || {
        let s = hub.stats();
        (s["storage_problem"].as_str().is_some_and(|p| !p.is_empty())).then_some(s)
    });
    eprintln!("storage problem: {}", stats["storage_problem"]);
    let url = hub.endpoints["http"].clone();
    let (status, body) = http("GET", &url, "/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("storage_failing"), "{body}");
    let (_, metrics) = http("GET", &url, "/metrics");
    assert!(metrics.contains("fleetmq_store_writable 0\n"), "{metrics}");
    // Commands and reads go on; the agent is told to wait, not acked.
    let ping = hub.op(&["command", "pi-d", "ping"]);
    assert!(ping.ok, "{}", ping.stderr);
    assert!(hub.op(&["devices"]).ok);
    wait_for("the agent told to wait", || {
        (agent_status(&data)["batches"]["throttled"].as_u64() > Some(0)).then_some(())
    });
    producer.wait_accepted(20);

    std::fs::remove_file(&filler).unwrap();
    wait_for("the hub storing again", || {
        let s = hub.stats();
        (s["storage_problem"] == "").then_some(())
    });
    assert_eq!(http("GET", &url, "/health").0, 200);
    producer.wait_accepted(20);
    let ledger = producer.finish();
    audit(&hub, "pi-d", &ledger);

    // Stopped (which folds the WAL into hub.db and deletes it), and started
    // again on a full disk: SQLite cannot make its -wal and -shm files until
    // the hub gives up its reserve; then it runs and answers.
    let mut hub = hub;
    hub.proc.signal(libc::SIGTERM);
    hub.proc.wait_exit(WAIT);
    for file in ["hub.db-wal", "hub.db-shm"] {
        assert!(
            !dir.path().join("data").join(file).exists(),
            "a clean stop folds the WAL into hub.db and deletes {file}"
        );
    }
    let _filler = disk.fill();
    let hub = Hub::restart(dir.path(), "");
    assert!(hub.devices().contains_key("pi-d"), "reads on a full disk");
    assert!(
        hub.proc
            .log_text()
            .contains("gave up the data directory's 1 MB reserve"),
        "{}",
        hub.proc.log_text()
    );
    drop(hub);
}

#[test]
fn a_network_partition_of_30_seconds_loses_and_repeats_nothing() {
    let _w = watchdog("partition", LIMIT);
    let dir = tmp();
    let net = Netns::new(0);
    let hub = Hub::start_with(dir.path(), &["--bind", &format!("{}:*", net.host_ip)]);
    let devices = ["pi-p1", "pi-p2"];
    let exec = ["ip", "netns", "exec", net.name.as_str()];
    let _agents: Vec<Proc> = devices
        .iter()
        .map(|d| {
            start_agent_in(
                &exec,
                &hub.link(),
                &hub.dir,
                d,
                "run",
                // Reconnect attempts back off to at most 2 s (30 s by
                // default), so the audit need not wait long after the heal.
                &agent_config("[net]\nreconnect_max_ms = 2000\n"),
                &[],
            )
        })
        .collect();
    for d in devices {
        hub.wait_listening(d);
    }
    let producers: Vec<Producer> = devices
        .iter()
        .map(|d| Producer::start(data_dir(&hub, d), None))
        .collect();
    producers[0].wait_accepted(20);

    net.cut();
    let cut_at = std::time::Instant::now();
    eprintln!("link cut");
    wait_for("the hub to see every device go offline", || {
        let devs = hub.devices();
        devices
            .iter()
            .all(|d| devs[*d]["online"] == false)
            .then_some(())
    });
    let before: Vec<usize> = producers.iter().map(Producer::accepted).collect();
    // The partition itself: its length is the fault, not a wait for an event.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(cut_at.elapsed()));
    for (p, b) in producers.iter().zip(&before) {
        assert!(p.accepted() > *b, "the agents kept accepting while cut off");
    }
    net.heal();
    eprintln!("link healed after {:?}", cut_at.elapsed());
    for d in devices {
        hub.wait_listening(d);
    }
    for p in &producers {
        p.wait_accepted(15);
    }
    finish_and_audit(&hub, &devices, producers, false);
}

/// A device that loses power sends nothing more, not even a FIN or a
/// RST: the hub notices by TCP keepalive (probes every heartbeat once a
/// connection is idle, given up after the heartbeat timeout) and closes
/// each of its five connections, rather than holding their descriptors
/// and buffers for good.
#[test]
fn the_hub_closes_the_connections_of_a_device_that_lost_power() {
    let _w = watchdog("power loss", LIMIT);
    let dir = tmp();
    let net = Netns::new(1);
    let hub = Hub::start_with(dir.path(), &["--bind", &format!("{}:*", net.host_ip)]);
    let exec = ["ip", "netns", "exec", net.name.as_str()];
    let agent = start_agent_in(
        &exec,
        &hub.link(),
        &hub.dir,
        "pi-power",
        "run",
        // Every socket of the hub's, as an agent older than one
        // connection holds: each must be closed.
        &agent_config_on_five(""),
        &[],
    );
    hub.wait_listening("pi-power");
    let before = hub.stats()["disconnects"].as_u64().unwrap();
    // The power goes: the link first, so that what the dying agent's
    // kernel sends never arrives.
    net.cut();
    agent.signal(libc::SIGKILL);
    let cut_at = std::time::Instant::now();
    // 5 s idle, then 3 unanswered probes 5 s apart (the defaults): about
    // 20 s. Twice that, and then some, before calling it a leak.
    let deadline = cut_at + Duration::from_secs(60);
    let closed = loop {
        let closed = hub.stats()["disconnects"].as_u64().unwrap() - before;
        if closed >= 5 {
            break closed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after 60 s the hub had closed {closed} of the 5 connections of a device that lost power"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!(
        "{closed} connections of the powered-off device closed after {:?}",
        cut_at.elapsed()
    );
    let devices = hub.devices();
    assert_eq!(devices["pi-power"]["online"], false);
}

#[test]
fn queued_and_leased_jobs_survive_a_hub_killed_with_minus_9() {
    let _w = watchdog("jobs survive", LIMIT);
    let dir = tmp();
    let mut hub = Hub::start(dir.path(), "");
    let ports = hub.same_ports();
    let submit = |hub: &Hub, args: &[&str]| {
        let mut full = vec!["job", "submit", "--lease-ms", "4000"];
        full.extend_from_slice(args);
        let r = hub.op(&full);
        assert!(r.ok, "{}", r.stderr);
        r.json[0]["id"].as_u64().expect("job id").to_string()
    };
    let kill_and_restart = |hub: &mut Hub| {
        hub.proc.signal(libc::SIGKILL);
        hub.proc.wait_exit(Duration::from_secs(5));
        *hub = Hub::restart(dir.path(), &ports);
    };
    let done = |hub: &Hub, id: &str| {
        wait_for(&format!("job {id} done after the restart"), || {
            let r = hub.op(&["job", "show", id]);
            (r.json[0]["state"] == "done").then(|| r.json[0].clone())
        })
    };

    // A job queued while no device is online.
    let queued = submit(&hub, &["echo", "after the restart"]);
    kill_and_restart(&mut hub);
    let before = hub.op(&["job", "show", &queued]);
    assert_eq!(before.json[0]["state"], "queued", "{:?}", before.json);
    let agent = start(&hub, "pi-j", "");
    assert_eq!(done(&hub, &queued)["device"], "pi-j");

    // A job running on a device when the hub dies.
    let leased = submit(&hub, &["exec", "--", "sleep", "1"]);
    agent.wait_log("running job");
    kill_and_restart(&mut hub);
    let job = done(&hub, &leased);
    assert_eq!(job["device"], "pi-j");
    // Its result arrives after the restart, or, if the lease ran out first,
    // the device answers the second dispatch from memory: it never runs
    // the job twice.
    assert_eq!(
        agent.log_text().matches("running job").count(),
        2,
        "each job ran once"
    );
    let echo = hub.op(&["job", "show", &queued]);
    assert!(
        echo.json[0].to_string().contains("after the restart"),
        "{:?}",
        echo.json
    );
}

#[test]
fn a_restarted_hub_sees_its_fleet_come_back_spread_out_not_in_lockstep() {
    let _w = watchdog("reconnect spread", LIMIT);
    let dir = tmp();
    let mut hub = Hub::start(dir.path(), "");
    let ports = hub.same_ports();
    let devices: Vec<String> = (0..20).map(|i| format!("pi-r{i:02}")).collect();
    let _agents: Vec<Proc> = devices.iter().map(|d| start(&hub, d, "")).collect();
    for d in &devices {
        hub.wait_listening(d);
    }
    hub.proc.signal(libc::SIGKILL);
    hub.proc.wait_exit(Duration::from_secs(5));
    // Down long enough for every agent to be a few reconnect attempts in.
    std::thread::sleep(Duration::from_secs(4));
    let restarted_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    hub = Hub::restart(dir.path(), &ports);
    let back: Vec<u64> = wait_for("every agent back", || {
        let devs = hub.devices();
        devices
            .iter()
            .map(|d| {
                let dev = &devs[d.as_str()];
                let since = dev["since_ms"].as_u64().unwrap_or(0);
                (dev["online"] == true && since >= restarted_ms).then(|| since - restarted_ms)
            })
            .collect::<Option<Vec<u64>>>()
    });
    let mut sorted = back.clone();
    sorted.sort_unstable();
    let spread = sorted[sorted.len() - 1] - sorted[0];
    eprintln!(
        "{} agents back {}..{} ms after the hub restarted (spread {spread} ms): {sorted:?}",
        sorted.len(),
        sorted[0],
        sorted[sorted.len() - 1]
    );
    // libzmq's own backoff has no jitter: all would come back together.
    assert!(spread >= 200, "agents reconnected in lockstep: {sorted:?}");
}
