//! Running a fleet from the operator's command line: one convention for
//! every command (JSON, options, exit codes), telemetry queries by name,
//! tag and time, --follow from now, a store kept bounded by retention, and
//! backups taken while the hub stores.

use std::collections::BTreeSet;
use std::io::BufRead as _;
use std::process::Stdio;
use std::time::Duration;

use fleetmq_tests::audit::{Producer, audit, stored};
use fleetmq_tests::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn tmp() -> tempfile::TempDir {
    temp_dir("fleetmq-operate-")
}

/// `fleetmq-agent send` from `device`'s agent (through its spool).
fn send(hub: &Hub, device: &str, args: &[&str]) {
    run_ok(
        agent_command()
            .args(["send", "--data-dir"])
            .arg(hub.dir.join(device).join("data"))
            .args(args),
    );
}

/// `fleetmq-hub ARGS --data-dir ...` exactly as given (no --json added).
fn raw(hub: &Hub, args: &[&str]) -> std::process::Output {
    hub_command()
        .args(args)
        .arg("--data-dir")
        .arg(hub.dir.join("data"))
        .env("FLEETMQ_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("running fleetmq-hub")
}

fn values(rows: &[Value]) -> Vec<i64> {
    rows.iter().filter_map(|r| r["value"].as_i64()).collect()
}

#[test]
fn telemetry_is_found_by_name_tag_and_time_and_follow_starts_now() {
    let _w = watchdog("telemetry_queries", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let _agent = hub.agent("pi-q", &[]);
    hub.wait_listening("pi-q");
    send(&hub, "pi-q", &["disk.free=5", "mount=/data"]);
    send(&hub, "pi-q", &["disk.free=7", "mount=/"]);

    // A name matches its series with any tags; a tag narrows it.
    let both = wait_for("both disk.free series stored", || {
        let r = hub.op(&["telemetry", "--name", "disk.free", "--from-start"]);
        (r.json.len() == 2).then_some(r.json)
    });
    assert_eq!(values(&both), [5, 7]);
    let data = hub.op(&["telemetry", "--name", "disk.free", "--tag", "mount=/data"]);
    assert_eq!(values(&data.json), [5], "{:?}", data.json);
    assert_eq!(data.json[0]["name"], "disk.free{mount=/data}");

    // --last N is the newest N, oldest of them first: the end of a range.
    // The range ends at a sample already stored: the agent sends in order,
    // so everything up to it is stored too.
    let until = wait_for("a few samples from pi-q", || {
        let r = hub.op(&["telemetry", "--device", "pi-q", "--last", "10"]);
        (r.json.len() == 10).then(|| r.json[5]["ts_ms"].to_string())
    });
    let whole = hub.op(&[
        "telemetry",
        "--device",
        "pi-q",
        "--from-start",
        "--until",
        &until,
    ]);
    let last = hub.op(&[
        "telemetry",
        "--device",
        "pi-q",
        "--last",
        "3",
        "--until",
        &until,
    ]);
    assert!(whole.json.len() > 3, "{:?}", whole.json);
    assert_eq!(last.json, whole.json[whole.json.len() - 3..]);
    let recent = hub.op(&["telemetry", "--device", "pi-q", "--since", "10m"]);
    assert!(
        recent.json.len() >= whole.json.len(),
        "--since 10m has it all"
    );

    // Nothing matched: an empty array, not nothing.
    let none = raw(
        &hub,
        &["telemetry", "--since", "2099-01-01T00:00:00Z", "--json"],
    );
    assert!(none.status.success());
    assert_eq!(String::from_utf8_lossy(&none.stdout), "[]\n");

    // --follow starts at the end of the store: with --last 1, the newest
    // matching sample, then only what comes after (no replay of 5).
    let mut follow = hub
        .operator_command(&[
            "telemetry",
            "--follow",
            "--last",
            "1",
            "--name",
            "disk.free",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || -> Value {
        let line = rx
            .recv_timeout(WAIT)
            .expect("a line from --follow")
            .unwrap();
        serde_json::from_str(&line).expect("JSON Lines with --follow")
    };
    assert_eq!(next()["value"], 7, "the newest one first");
    send(&hub, "pi-q", &["disk.free=9", "mount=/x"]);
    assert_eq!(next()["value"], 9, "then the new one, nothing older");
    let _ = follow.kill();
    let _ = follow.wait();
}

#[test]
fn every_operator_command_takes_options_anywhere_and_exits_by_what_happened() {
    let _w = watchdog("convention", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let _agent = hub.agent("pi-o", &[]);
    hub.wait_answering("pi-o");

    // Options after the words are options; after `--`, words.
    let out = raw(
        &hub,
        &["job", "submit", "--wait", "echo", "hello", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(
        job["work"],
        serde_json::json!({"kind": "echo", "text": "hello"})
    );
    assert_eq!(job["state"], "done");
    let job = hub.op(&["job", "submit", "--wait", "exec", "--", "echo", "--json"]);
    assert_eq!(job.json[0]["outcome"]["stdout"], "--json\n");
    assert_eq!(job.json[0]["outcome"]["result"], "completed");

    // Lists are one array.
    let out = raw(&hub, &["job", "list", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");

    // Human text by default, stats included.
    let out = raw(&hub, &["stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    assert!(
        text.contains("samples stored") && text.contains("pruned since start"),
        "{text}"
    );
    let out = raw(&hub, &["job", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("echo hello") && text.contains("done"),
        "{text}"
    );

    // Exit codes: 0 answered, 1 answered no, 2 a mistake on the line.
    assert_eq!(hub.op(&["command", "pi-o", "ping"]).code, Some(0));
    let refused = hub.op(&["command", "pi-o", "exec", "--", "cat", "/etc/hostname"]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    let nobody = hub.op(&["command", "pi-nobody", "ping"]);
    assert_eq!(nobody.code, Some(1), "{nobody:?}");
    let bad = raw(&hub, &["telemetry", "--since", "yesterday-ish"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("10m"),
        "says what to give"
    );
    // The allow list's commands speak the same way.
    let out = raw(&hub, &["revoke", "pi-nobody", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("pi-nobody is not on"),
        "{doc}"
    );
    let dash = raw(&hub, &["command", "pi-o", "exec", "ls", "-l"]);
    assert_eq!(dash.status.code(), Some(2), "an unknown option");
    assert!(
        String::from_utf8_lossy(&dash.stderr).contains("--"),
        "the hint says to use --"
    );
}

#[test]
fn retention_keeps_the_store_under_its_cap_and_stats_show_what_went() {
    let _w = watchdog("retention", LIMIT);
    let dir = tmp();
    let cap = 4_000;
    let hub = Hub::start(
        dir.path(),
        &format!("[retention.telemetry]\nmax_bytes = {cap}\n"),
    );
    let _agent = hub.agent("pi-r", &[]);
    let first = wait_for("telemetry from pi-r", || {
        hub.op(&["telemetry", "--device", "pi-r", "--from-start"])
            .json
            .first()
            .cloned()
    });
    let stats = wait_for("retention to prune", || {
        let s = hub.stats();
        (s["pruned_batches"].as_u64() > Some(0)).then_some(s)
    });
    assert!(stats["pruned_records"].as_u64() > Some(0), "{stats}");
    // Pruning runs every second and the agent sends 10 batches a second:
    // the store is held near its cap, not left to grow.
    let bytes = stats["telemetry_bytes"].as_u64().unwrap();
    assert!(bytes < cap * 3, "{bytes} bytes stored for a cap of {cap}");
    let oldest = hub.op(&["telemetry", "--device", "pi-r", "--from-start"]);
    assert!(
        oldest.json[0]["id"].as_i64() > first["id"].as_i64(),
        "the oldest rows went first: {first} then {}",
        oldest.json[0]
    );
    let out = raw(&hub, &["stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pruned since start"), "{text}");
}

#[test]
fn jobs_aimed_at_a_group_run_on_each_member_and_wait_for_the_offline_one_across_a_restart() {
    let _w = watchdog("aim", LIMIT);
    let dir = tmp();
    let mut hub = Hub::start(dir.path(), "");
    let ports = hub.same_ports();
    let _x = hub.agent("pi-x", &["lab"]);
    // pi-y takes echo jobs only.
    let echo_only = agent_config("").replace(
        "[jobs]\nallow = [\"echo\", \"exec\"]",
        "[jobs]\nallow = [\"echo\"]",
    );
    assert!(echo_only.contains("allow = [\"echo\"]\n"), "{echo_only}");
    let y = start_agent(&hub.link(), &hub.dir, "pi-y", "run", &echo_only, &["lab"]);
    // pi-z is known in the group, and away.
    let mut z = hub.agent("pi-z", &["lab"]);
    for d in ["pi-x", "pi-y", "pi-z"] {
        hub.wait_listening(d);
    }
    z.signal(libc::SIGTERM);
    z.wait_exit(Duration::from_secs(10));
    wait_for("pi-z offline", || {
        (hub.devices()["pi-z"]["online"] == false).then_some(())
    });

    // Aimed at the group: a run on each member.
    let r = hub.op(&[
        "job", "submit", "--group", "lab", "exec", "--", "echo", "aimed",
    ]);
    assert!(r.ok, "{}", r.stderr);
    let id = r.json[0]["id"].as_u64().unwrap().to_string();
    let job = wait_for("pi-x done and pi-y refused", || {
        let j = hub.op(&["job", "show", &id]).json[0].clone();
        (j["summary"] == serde_json::json!({"done": 1, "refused": 1, "waiting": 1})).then_some(j)
    });
    assert_eq!(job["target"], "groups lab");
    assert_eq!(job["state"], "running", "pi-z's run waits");
    let runs = job["runs"].as_array().unwrap();
    assert_eq!(runs[0]["device"], "pi-x");
    assert_eq!(runs[0]["outcome"]["stdout"], "aimed\n");
    assert_eq!(runs[1]["outcome"]["result"], "not_allowed");
    let y_log = y.log_text();
    assert!(
        !y_log.contains("running job") && !y_log.contains("not allowed here"),
        "the hub never handed pi-y an exec job: {y_log}"
    );
    let out = hub_command()
        .args(["job", "show", &id, "--data-dir"])
        .arg(hub.dir.join("data"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("job {id} for groups lab: running: 3 device(s)"))
            && text.contains("--- pi-y: refused"),
        "{text}"
    );

    // The waiting run survives a hub restart and runs when pi-z returns.
    hub.proc.signal(libc::SIGKILL);
    hub.proc.wait_exit(Duration::from_secs(5));
    hub = Hub::restart(dir.path(), &ports);
    let _z = hub.agent("pi-z", &["lab"]);
    let r = hub.op(&["job", "show", "--wait", "--wait-ms", "60000", &id]);
    assert_eq!(r.code, Some(1), "one device refused: not all done");
    let job = &r.json[0];
    assert_eq!(job["summary"], serde_json::json!({"done": 2, "refused": 1}));
    assert_eq!(job["runs"][2]["device"], "pi-z");
    assert_eq!(job["runs"][2]["outcome"]["stdout"], "aimed\n");

    // The work queue in a mixed fleet: an exec job is never handed to
    // pi-y, which would refuse it; each ends done at its first attempt.
    for _ in 0..4 {
        let r = hub.op(&["job", "submit", "--wait", "exec", "--", "echo", "q"]);
        assert_eq!(r.json[0]["state"], "done", "{:?}", r.json);
        assert_ne!(r.json[0]["device"], "pi-y");
        assert_eq!(r.json[0]["attempts"], 1, "{:?}", r.json);
        assert_eq!(r.json[0]["error"], Value::Null, "{:?}", r.json);
    }
    // An echo job every device takes goes on the queue, as before.
    let r = hub.op(&["job", "submit", "--wait", "echo", "any"]);
    assert_eq!(r.json[0]["state"], "done", "{:?}", r.json);
    let y_log = y.log_text();
    assert!(!y_log.contains("not allowed here"), "{y_log}");
}

#[test]
fn a_device_that_takes_no_jobs_is_never_handed_one() {
    let _w = watchdog("no_jobs", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let none =
        agent_config("").replace("[jobs]\nallow = [\"echo\", \"exec\"]", "[jobs]\nallow = []");
    let n = start_agent(&hub.link(), &hub.dir, "pi-n", "run", &none, &[]);
    // Listening: on one connection, its Offer (no job kinds) has come.
    hub.wait_listening("pi-n");
    // Queued while pi-n is the only device: it is not offered the job...
    let r = hub.op(&["job", "submit", "echo", "for someone else"]);
    let id = r.json[0]["id"].as_u64().unwrap().to_string();
    // ...which waits for a device that takes jobs.
    let _m = hub.agent("pi-m", &[]);
    let job = wait_for("the job done by pi-m", || {
        let j = hub.op(&["job", "show", &id]).json[0].clone();
        (j["state"] == "done").then_some(j)
    });
    assert_eq!(job["device"], "pi-m");
    assert_eq!(job["error"], Value::Null, "no refusal on the way: {job}");
    assert!(!n.log_text().contains("job kind not allowed"));
    // Aimed at pi-n, it is refused by the hub without being sent.
    let r = hub.op(&["job", "submit", "--device", "pi-n", "--wait", "echo", "x"]);
    assert_eq!(r.json[0]["state"], "failed", "{:?}", r.json);
    assert_eq!(r.json[0]["summary"], serde_json::json!({"refused": 1}));
    assert_eq!(r.code, Some(1));
}

#[test]
fn a_command_for_a_group_prints_each_answer_and_reaches_the_offline_member_after_a_restart() {
    let _w = watchdog("fleet_command", LIMIT);
    let dir = tmp();
    let mut hub = Hub::start(dir.path(), "");
    let ports = hub.same_ports();
    let _a = hub.agent("pi-a", &["lab"]);
    let mut b = hub.agent("pi-b", &["lab"]);
    hub.wait_answering("pi-a");
    hub.wait_answering("pi-b");
    b.signal(libc::SIGTERM);
    b.wait_exit(Duration::from_secs(10));
    wait_for("pi-b offline", || {
        (hub.devices()["pi-b"]["online"] == false).then_some(())
    });

    // Human text: the online member's answer as it comes, then who waits.
    let out = hub_command()
        .args(["command", "--group", "lab", "ping", "--data-dir"])
        .arg(hub.dir.join("data"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "not every device answered: {text}"
    );
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("command ") && first.ends_with("for 2 device(s): pi-a, pi-b"),
        "{text}"
    );
    assert!(text.contains("pong from pi-a"), "{text}");
    assert!(
        text.contains("offline: 1 device(s): pi-b (the hub sends it to each when it returns"),
        "{text}"
    );
    let id = first
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse::<u64>().ok())
        .expect("the command's id")
        .to_string();

    // Kept across a restart; sent when pi-b returns.
    hub.proc.signal(libc::SIGKILL);
    hub.proc.wait_exit(Duration::from_secs(5));
    hub = Hub::restart(dir.path(), &ports);
    let _b = hub.agent("pi-b", &["lab"]);
    let done = wait_for("pi-b's answer", || {
        let r = hub.op(&["command", "--answers", &id]);
        (r.code == Some(0)).then_some(r)
    });
    let answers = done.json[0]["answers"].as_array().unwrap().clone();
    let got: Vec<(&str, &str, &str)> = answers
        .iter()
        .map(|a| {
            (
                a["device"].as_str().unwrap(),
                a["state"].as_str().unwrap(),
                a["result"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        got,
        [("pi-a", "answered", "pong"), ("pi-b", "answered", "pong")]
    );
}

/// `fleetmq-agent config get KEY` on `device`'s agent: (exit code, stdout).
fn config_get(hub: &Hub, device: &str, key: &str) -> (Option<i32>, String) {
    let out = agent_command()
        .args(["config", "get", key, "--data-dir"])
        .arg(hub.dir.join(device).join("data"))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// Waits until `device`'s configuration is `state` in `config status`.
fn config_state(hub: &Hub, device: &str, state: &str) -> Value {
    wait_for(&format!("{device}'s configuration {state}"), || {
        let r = hub.op(&["config", "status"]);
        r.json[0]["devices"]
            .as_array()?
            .iter()
            .find(|d| d["device"] == device && d["state"] == state)
            .cloned()
    })
}

#[test]
fn desired_configuration_reaches_each_device_in_layers_and_survives_restarts() {
    let _w = watchdog("desired_config", LIMIT);
    let dir = tmp();
    let mut hub = Hub::start(dir.path(), "");
    let ports = hub.same_ports();
    let c1 = hub.agent("pi-c1", &["north"]);
    let mut c2 = hub.agent("pi-c2", &["north"]);
    hub.wait_listening("pi-c1");
    hub.wait_listening("pi-c2");
    c2.signal(libc::SIGTERM);
    c2.wait_exit(Duration::from_secs(10));

    // The fleet's layer, then the group's over it.
    assert!(hub.op(&["config", "set", "host.interval_ms=10000"]).ok);
    let r = hub.op(&[
        "config",
        "set",
        "--group",
        "north",
        "host.interval_ms=5000",
        "app.greeting=hello",
    ]);
    assert_eq!(r.json[0]["version"], 2, "{r:?}");
    let state = config_state(&hub, "pi-c1", "in_sync");
    assert_eq!(state["applied_version"], 2);
    assert_eq!(
        config_get(&hub, "pi-c1", "app.greeting"),
        (Some(0), "hello".into())
    );
    let status = agent_status(&hub.dir.join("pi-c1").join("data"));
    assert_eq!(
        status["config"]["values"]["host.interval_ms"], "5000",
        "{status}"
    );
    let show = hub.op(&["config", "show", "pi-c1"]);
    let entries = &show.json[0]["entries"];
    assert_eq!(
        entries,
        &serde_json::json!([
            {"key": "app.greeting", "value": "hello", "layer": "group:north"},
            {"key": "host.interval_ms", "value": "5000", "layer": "group:north"},
        ])
    );

    // A bad value, and a key the device does not let the hub set: refused
    // by the device, shown at the hub; the rest applies.
    let r = hub.op(&[
        "config",
        "set",
        "--device",
        "pi-c1",
        "telemetry.sample_interval_ms=5",
        "exec.programs=sh",
        "app.mode=eco",
    ]);
    assert!(r.ok, "{r:?}");
    let failed = config_state(&hub, "pi-c1", "failed");
    assert_eq!(failed["applied_version"], 3);
    assert!(
        failed["errors"]["telemetry.sample_interval_ms"]
            .as_str()
            .unwrap()
            .contains("100"),
        "{failed}"
    );
    assert!(
        failed["errors"]["exec.programs"]
            .as_str()
            .unwrap()
            .contains("may_set"),
        "{failed}"
    );
    assert_eq!(
        config_get(&hub, "pi-c1", "app.mode"),
        (Some(0), "eco".into())
    );
    let out = hub_command()
        .args(["config", "show", "pi-c1", "--data-dir"])
        .arg(hub.dir.join("data"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refused by the device: exec.programs"),
        "{text}"
    );

    // A write conditional on an old version changes nothing.
    let stale = hub.op(&["config", "set", "--if-version", "1", "app.x=1"]);
    assert_eq!(stale.code, Some(1));
    assert!(
        stale.stderr.contains("version 3, not 1"),
        "{}",
        stale.stderr
    );

    // A hub restart loses nothing; the device that was away catches up.
    hub.proc.signal(libc::SIGKILL);
    hub.proc.wait_exit(Duration::from_secs(5));
    hub = Hub::restart(dir.path(), &ports);
    let show = hub.op(&["config", "show", "pi-c1"]);
    assert_eq!(show.json[0]["version"], 3);
    assert_eq!(
        show.json[0]["entries"].as_array().unwrap().len(),
        5,
        "desired, refused keys too"
    );
    assert_eq!(
        config_get(&hub, "pi-c2", "app.greeting").0,
        Some(1),
        "not yet"
    );
    let _c2 = hub.agent("pi-c2", &["north"]);
    let state = config_state(&hub, "pi-c2", "in_sync");
    assert_eq!(
        state["desired_version"], 2,
        "pi-c1's own layer is not pi-c2's"
    );
    assert_eq!(
        config_get(&hub, "pi-c2", "app.greeting"),
        (Some(0), "hello".into())
    );

    // A reboot keeps what was applied, before the hub says anything.
    drop(c1);
    let c1 = hub.agent("pi-c1", &["north"]);
    c1.wait_log("agent starting");
    let status = wait_for("pi-c1's status", || {
        let out = agent_command()
            .arg("status")
            .arg("--data-dir")
            .arg(hub.dir.join("pi-c1").join("data"))
            .output()
            .ok()?;
        serde_json::from_slice::<Value>(&out.stdout).ok()
    });
    assert_eq!(status["config"]["version"], 3, "{status}");
}

#[test]
fn a_backup_taken_while_the_hub_stores_is_a_data_directory_a_hub_serves() {
    let _w = watchdog("backup", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let _agent = hub.agent("pi-b", &[]);
    let producer = Producer::start(hub.dir.join("pi-b/data"), None);
    wait_for("samples stored before the backup", || {
        (stored(&hub, "pi-b").len() >= 20).then_some(())
    });
    let before: BTreeSet<i64> = stored(&hub, "pi-b").into_iter().collect();

    let copy = tmp();
    let to = copy.path().join("data");
    let r = hub.op(&["backup", &to.to_string_lossy()]);
    assert!(r.ok, "backup failed: {}", r.stderr);
    let after: BTreeSet<i64> = stored(&hub, "pi-b").into_iter().collect();
    let names: Vec<&str> = r.json[0]["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(names, ["hub.db", "hub.key", "hub.pub", "allowed_devices"]);

    // The hub stores on, and has lost nothing for the backup.
    producer.wait_accepted(10);
    wait_for("samples stored after the backup", || {
        (stored(&hub, "pi-b").len() > after.len()).then_some(())
    });
    audit(&hub, "pi-b", &producer.finish());

    // A hub on the copy has the same key (its agents trust it), knows the
    // device, and holds the store as one commit left it: everything
    // stored before the backup began, nothing after it ended, none twice.
    let restored = Hub::start(copy.path(), "");
    assert_eq!(restored.key, hub.key);
    assert!(restored.devices().contains_key("pi-b"));
    let values = stored(&restored, "pi-b");
    let held: BTreeSet<i64> = values.iter().copied().collect();
    assert_eq!(
        held.len(),
        values.len(),
        "a sample stored twice: {values:?}"
    );
    assert!(
        before.is_subset(&held),
        "lost: {:?}",
        before.difference(&held)
    );
    assert!(
        held.is_subset(&after),
        "from after the backup: {:?}",
        held.difference(&after)
    );

    // A backup replaces nothing: the same directory again is a mistake.
    let again = hub.op(&["backup", &to.to_string_lossy()]);
    assert_eq!(again.code, Some(2), "{}", again.stderr);
    assert!(again.stderr.contains("is not empty"), "{}", again.stderr);
}
