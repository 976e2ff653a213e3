//! End to end: real hub and agent processes on OS-chosen ports, checked where
//! an operator would look (the operator command line, the hub's store).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use fleetmq_tests::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn tmp() -> tempfile::TempDir {
    temp_dir("fleetmq-e2e-")
}

#[test]
fn hub_starts_on_embedded_defaults_and_reports_its_ports() {
    let _w = watchdog("hub_starts", LIMIT);
    let dir = tmp();
    let hub = Hub::start_with(dir.path(), &["--bind", "127.0.0.1:*"]);
    for name in [
        "telemetry",
        "broadcast",
        "jobs",
        "results",
        "commands",
        "operator",
    ] {
        let ep = &hub.endpoints[name];
        let port: u16 = ep
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: {ep}"));
        assert!(
            ep.starts_with("tcp://127.0.0.1:") && port > 0,
            "{name}: {ep}"
        );
    }
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("data/endpoints.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["operator"], hub.endpoints["operator"].as_str());
    assert!(
        dir.path().join("data/hub.db").exists(),
        "SQLite file created"
    );
    let stats = hub.stats();
    assert_eq!(stats["devices_known"], 0);
}

#[test]
fn a_second_hub_on_one_data_directory_exits_and_operators_find_the_first_from_anywhere() {
    let _w = watchdog("data_dir_lock", LIMIT);
    let dir = tmp();
    let data = dir.path().join("data");
    let hub = Hub::start_with(dir.path(), &["--bind", "127.0.0.1:*"]);
    let endpoints = std::fs::read_to_string(data.join("endpoints.json")).unwrap();
    let out = hub_command()
        .args(["run", "--bind", "127.0.0.1:*", "--data-dir"])
        .arg(&data)
        .output()
        .expect("running a second hub");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second hub must not run: {stderr}");
    assert!(
        stderr.contains("in use by another fleetmq-hub")
            && stderr.contains(&format!("(pid {})", hub.proc.pid())),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("endpoints.json")).unwrap(),
        endpoints,
        "the first hub's endpoints.json is untouched"
    );
    // From another working directory, by the data directory or the config.
    let elsewhere = tmp();
    let config = elsewhere.path().join("hub.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n", data.display().to_string()),
    )
    .unwrap();
    for how in [
        ["--data-dir", data.to_str().unwrap()],
        ["--config", config.to_str().unwrap()],
    ] {
        let out = hub_command()
            .current_dir(elsewhere.path())
            .args(["stats", "--json"])
            .args(how)
            .output()
            .expect("running fleetmq-hub stats");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{how:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stats: Value = serde_json::from_str(&stdout).expect("stats as JSON");
        assert_eq!(stats["devices_known"], 0, "{how:?}");
    }
}

#[test]
fn the_agent_build_reports_its_arch_and_completes_a_curve_handshake() {
    let _w = watchdog("info", LIMIT);
    let out = agent_command()
        .arg("info")
        .output()
        .expect("running fleetmq-agent info");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(info["arch"], agent_arch().as_str());
    assert_eq!(info["libzmq"], "4.3.5");
    assert_eq!(info["curve"], true);
    assert_eq!(info["curve_handshake"], "ok");
}

#[test]
fn telemetry_is_acked_and_a_resent_batch_is_stored_once() {
    let _w = watchdog("telemetry", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let agent = hub.agent("pi-t", &[]);
    let rows = wait_for("uptime and heartbeat samples", || {
        let rows = hub.telemetry_rows("pi-t");
        let names: HashSet<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
        (names.contains("agent.uptime_s") && names.contains("agent.heartbeats")).then_some(rows)
    });
    assert!(
        rows.iter()
            .all(|r| r["device"] == "pi-t" && r["ts_ms"].as_u64().unwrap() > 1_700_000_000_000)
    );

    // Freeze the hub so acks stop: the agent resends what it cannot see acked.
    hub.proc.signal(libc::SIGSTOP);
    agent.wait_log("resending unacked batch");
    hub.proc.signal(libc::SIGCONT);
    wait_for("the hub to see a duplicate batch", || {
        (hub.stats()["batches_duplicate"].as_u64().unwrap() > 0).then_some(())
    });
    // Once the agent has nothing in flight, every batch it sent is stored exactly once.
    wait_for("the agent to have everything acked", || {
        let r = hub.op(&["command", "pi-t", "status"]);
        (r.ok && r.json[0]["status"]["in_flight"] == 0).then_some(())
    });
    let rows = hub.telemetry_rows("pi-t");
    let mut seen = HashSet::new();
    for r in &rows {
        let key = (
            r["seq"].as_u64().unwrap(),
            r["name"].as_str().unwrap().to_string(),
            r["ts_ms"].as_u64().unwrap(),
        );
        assert!(seen.insert(key.clone()), "stored twice: {key:?}");
    }
    let seqs: HashSet<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    let (lo, hi) = (*seqs.iter().min().unwrap(), *seqs.iter().max().unwrap());
    assert_eq!(
        seqs.len() as u64,
        hi - lo + 1,
        "no batch is missing between {lo} and {hi}"
    );
}

#[test]
fn presence_follows_hello_heartbeats_silence_and_bye() {
    let _w = watchdog("presence", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let mut agent = hub.agent("pi-p", &["north"]);
    let d = hub.wait_listening("pi-p");
    assert_eq!(d["arch"], agent_arch().as_str());
    assert_eq!(d["agent_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(d["os"], "linux");
    assert_eq!(d["groups"], serde_json::json!(["north"]));
    assert_eq!(d["address"], "127.0.0.1", "where it connects from");
    let since = d["since_ms"].as_u64().unwrap();

    // A frozen agent sends nothing: three missed heartbeats make it offline.
    agent.signal(libc::SIGSTOP);
    let gone = wait_for("pi-p offline after silence", || {
        hub.devices()
            .remove("pi-p")
            .filter(|d| d["online"] == false)
    });
    assert_eq!(
        gone["address"], "127.0.0.1",
        "the newest kept while offline"
    );
    agent.signal(libc::SIGCONT);
    let back = wait_for("pi-p online again", || {
        let d = hub.devices().remove("pi-p")?;
        (d["online"] == true).then_some(d)
    });
    assert!(
        back["since_ms"].as_u64().unwrap() > since,
        "online since the return, not the first start"
    );

    // A clean stop says bye: offline at once, and the agent exits quickly.
    agent.signal(libc::SIGTERM);
    let (status, took) = agent.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "agent exit status {status:?}");
    assert!(took < Duration::from_secs(2), "agent took {took:?} to stop");
    let d = hub.devices().remove("pi-p").unwrap();
    assert_eq!(
        d["online"], false,
        "bye marks the device offline without waiting for silence"
    );
    assert!(
        agent.log_text().contains("everything was acked"),
        "{}",
        agent.log_text()
    );
}

#[test]
fn chat_room_and_operator_broadcasts_by_topic() {
    let _w = watchdog("chat", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    // A mixed fleet: a on one connection, b on the hub's broadcast socket
    // (as an agent older than one connection).
    let mut a = hub.chat_agent("pi-a", &["north"]);
    let b = hub.chat_agent_with("pi-b", &["south"], &agent_config_on_five(""));
    hub.wait_listening("pi-a");
    hub.wait_listening("pi-b");
    assert_eq!(
        agent_status(&dir.path().join("pi-a/data"))["one_connection"],
        true
    );
    assert_eq!(
        agent_status(&dir.path().join("pi-b/data"))["one_connection"],
        false
    );

    a.write_line("hello from a");
    b.lines_until("a's line", |l| l == "<pi-a> hello from a");
    a.lines_until("its own line echoed by the room", |l| {
        l == "<pi-a> hello from a"
    });
    let chat = hub.op(&["chat"]);
    assert!(chat.ok, "{}", chat.stderr);
    assert!(
        chat.json
            .iter()
            .any(|r| r["device"] == "pi-a" && r["text"] == "hello from a"),
        "{:?}",
        chat.json
    );

    assert!(hub.op(&["broadcast", "to", "everyone"]).ok);
    a.lines_until("the announcement to all", |l| l == "[all] to everyone");
    b.lines_until("the announcement to all", |l| l == "[all] to everyone");

    let r = hub.op(&["broadcast", "--group", "north", "north only"]);
    assert!(r.ok && r.json[0]["topic"] == "group/north/", "{r:?}");
    a.lines_until("the group announcement", |l| {
        l == "[group north] north only"
    });
    // A device's own message travels on its own connection, not a topic.
    assert!(hub.op(&["broadcast", "--device", "pi-b", "just b"]).ok);
    b.lines_until("the message to b", |l| l == "[to pi-b] just b");
    // Broadcasts reach a subscriber in order: by the time b sees a later
    // one to all it would have seen the group one, had it been subscribed.
    assert!(hub.op(&["broadcast", "after", "north"]).ok);
    let seen_by_b = b.lines_until("the later one", |l| l == "[all] after north");
    assert!(
        !seen_by_b.iter().any(|l| l.contains("north only")),
        "{seen_by_b:?}"
    );

    // Closing stdin ends the chat agent once its lines are acked.
    a.write_line("bye now");
    a.close_stdin();
    let (status, _) = a.wait_exit(Duration::from_secs(10));
    assert!(status.success());
    b.lines_until("a's last line", |l| l == "<pi-a> bye now");
}

/// `fleetmq-hub revoke` run while the hub is down: the hub, started
/// again, names the revoked device that still knocks (from the allow
/// list's `# revoked` line), rather than take it for a stranger.
#[test]
fn a_device_revoked_while_the_hub_was_down_is_named_when_it_knocks() {
    let _w = watchdog("revoked_offline", LIMIT);
    let dir = tmp();
    let mut hub = Hub::start(dir.path(), "");
    let same_ports = hub.same_ports();
    let agent = hub.agent("pi-gone", &[]);
    hub.wait_answering("pi-gone");
    hub.proc.signal(libc::SIGTERM);
    hub.proc.wait_exit(Duration::from_secs(20));
    let data = dir.path().join("data");
    run_ok(
        hub_command()
            .args(["revoke", "pi-gone", "--data-dir"])
            .arg(&data),
    );
    let list = std::fs::read_to_string(data.join("allowed_devices")).unwrap();
    assert!(list.contains("# revoked pi-gone "), "{list}");

    hub = Hub::restart(dir.path(), &same_ports);
    agent.wait_log("the hub refused this device's key");
    hub.proc.wait_log("refused a revoked device's key");
    let log = hub.proc.log_text();
    assert!(!log.contains("refused a key that is not enrolled"), "{log}");
    wait_for("the refusal in pi-gone's presence log", || {
        let presence = hub.op(&["presence", "pi-gone"]);
        let why = presence.json.first()?["why"].as_str()?.to_string();
        why.starts_with("refused: its key is revoked").then_some(())
    });
}

/// A chat whose lines the hub does not ack (here: its key is not enrolled)
/// fails within `--wait` of stdin closing and says why; its lines stay in
/// the spool and go with the next chat once the key is enrolled.
#[test]
fn a_chat_that_cannot_get_in_says_why_and_keeps_its_lines() {
    let _w = watchdog("chat_refused", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let mut unenrolled = hub.link();
    unenrolled.enrol = false;
    let wait = ["--wait", "3s"];
    let mut chat = start_chat(
        &unenrolled,
        dir.path(),
        "pi-chatter",
        &agent_config(""),
        &wait,
    );
    chat.write_line("is anyone there");
    chat.close_stdin();
    let (status, _) = chat.wait_exit(Duration::from_secs(60));
    let log = chat.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    let error = log
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {log}"));
    assert!(
        error.contains("not acked this chat's lines within 3s")
            && error.contains("refused this device's key")
            && error.contains("fleetmq-hub allow")
            && error.contains("next `fleetmq-agent chat`"),
        "{error}"
    );
    assert!(hub.op(&["chat"]).json.is_empty(), "nothing got in");

    // Enrolled, the next chat from the same data directory sends the line
    // the first one kept, and exits 0 once the hub has acked it.
    hub.link()
        .enrol(&dir.path().join("pi-chatter").join("data"), "pi-chatter");
    let mut again = start_chat(
        &unenrolled,
        dir.path(),
        "pi-chatter",
        &agent_config(""),
        &wait,
    );
    again.close_stdin();
    let (status, _) = again.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "{}", again.log_text());
    let rows = hub.op(&["chat"]).json;
    assert!(
        rows.iter()
            .any(|r| r["device"] == "pi-chatter" && r["text"] == "is anyone there"),
        "{rows:?}"
    );
}

fn job_result(hub: &Hub, args: &[&str]) -> Value {
    let mut full = vec!["job", "submit", "--wait", "--wait-ms", "30000"];
    full.extend_from_slice(args);
    let r = hub.op(&full);
    assert!(!r.json.is_empty(), "no output from {args:?}: {}", r.stderr);
    r.json[0].clone()
}

#[test]
fn jobs_run_where_allowed_with_arguments_passed_literally() {
    let _w = watchdog("jobs", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let agent = hub.agent("pi-j", &[]);
    hub.wait_listening("pi-j");

    let echo = job_result(&hub, &["echo", "hello", "jobs"]);
    assert_eq!(echo["state"], "done");
    assert_eq!(
        echo["work"],
        serde_json::json!({"kind": "echo", "text": "hello jobs"})
    );
    assert_eq!(echo["device"], "pi-j");
    assert_eq!(echo["outcome"]["stdout"], "hello jobs");

    let tricky = [
        "$(touch /tmp/fleetmq-pwned)",
        ";",
        "rm",
        "-rf",
        "/",
        "|",
        "`id`",
        "../../etc/passwd",
    ];
    let mut args = vec!["exec", "--", "echo"];
    args.extend_from_slice(&tricky);
    let exec = job_result(&hub, &args);
    assert_eq!(exec["outcome"]["stdout"], format!("{}\n", tricky.join(" ")));
    assert_eq!(exec["attempts"], 1);
    assert!(!std::path::Path::new("/tmp/fleetmq-pwned").exists());

    // A job no device online takes is never handed to one: it waits in
    // the queue, and says why.
    let r = hub.op(&["job", "submit", "exec", "--", "sh", "-c", "id"]);
    let id = r.json[0]["id"].as_u64().unwrap().to_string();
    let waiting = wait_for("the job to say why it waits", || {
        let j = hub.op(&["job", "show", &id]).json[0].clone();
        j["error"]
            .as_str()?
            .contains("no device online takes it")
            .then_some(j)
    });
    assert_eq!(waiting["state"], "queued");
    assert_eq!(waiting["attempts"], 0);

    let list = hub.op(&["job", "list"]);
    assert_eq!(list.json.len(), 3);
    let log = agent.log_text();
    assert!(
        !log.contains("not allowed here"),
        "pi-j was never handed it: {log}"
    );
}

#[test]
fn an_expired_lease_hands_the_job_to_another_agent() {
    let _w = watchdog("lease_moves", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let mut first = hub.agent("pi-l1", &[]);
    hub.wait_listening("pi-l1");
    let r = hub.op(&[
        "job",
        "submit",
        "--lease-ms",
        "1000",
        "--max-attempts",
        "4",
        "exec",
        "--",
        "sleep",
        "3",
    ]);
    assert!(r.ok, "{}", r.stderr);
    let id = r.json[0]["id"].as_u64().unwrap().to_string();
    first.wait_log("running job");
    // The device dies holding the lease, long before its job could finish.
    first.signal(libc::SIGKILL);
    first.wait_exit(Duration::from_secs(5));
    let state = std::fs::read_to_string(dir.path().join("pi-l1/data/jobs-run")).unwrap();
    assert!(
        state.lines().any(|l| l == id),
        "job id recorded before it ran: {state:?}"
    );

    let _second = hub.agent("pi-l2", &[]);
    let job = wait_for("the job done by the second device", || {
        let r = hub.op(&["job", "show", &id]);
        (r.json[0]["state"] == "done").then(|| r.json[0].clone())
    });
    assert_eq!(job["device"], "pi-l2");
    assert!(job["attempts"].as_u64().unwrap() >= 2, "{job}");
    assert_eq!(job["outcome"]["exit_code"], 0);
}

#[test]
fn a_job_handed_out_again_to_the_same_device_is_not_run_twice() {
    let _w = watchdog("lease_once", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let agent = hub.agent("pi-once", &[]);
    hub.wait_listening("pi-once");
    // The lease is shorter than the job: the hub hands it out again while
    // the only device is still running it.
    let r = hub.op(&[
        "job",
        "submit",
        "--lease-ms",
        "400",
        "--max-attempts",
        "10",
        "--wait",
        "--wait-ms",
        "30000",
        "exec",
        "--",
        "sleep",
        "2",
    ]);
    assert!(r.ok, "{}", r.stderr);
    let job = &r.json[0];
    assert_eq!(job["state"], "done");
    assert_eq!(job["device"], "pi-once");
    assert!(
        job["attempts"].as_u64().unwrap() >= 2,
        "the lease ran out and the job went out again: {job}"
    );
    agent.wait_log("job already ran here; not running it again");
    let log = agent.log_text();
    assert_eq!(log.matches("running job").count(), 1, "{log}");
}

#[test]
fn commands_are_answered_or_fail_with_a_clear_reason() {
    let _w = watchdog("commands", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let agent = hub.agent("pi-c", &[]);
    hub.wait_answering("pi-c");

    let ping = hub.op(&["command", "pi-c", "ping"]);
    assert!(ping.ok, "{}", ping.stderr);
    assert_eq!(ping.json[0]["result"], "pong");
    assert!(ping.json[0]["uptime_ms"].is_u64());

    let status = hub.op(&["command", "pi-c", "status"]);
    assert_eq!(status.json[0]["status"]["device"], "pi-c");

    let exec = hub.op(&[
        "command", "pi-c", "exec", "--", "echo", "-n", "a b", "$HOME",
    ]);
    assert!(exec.ok, "{}", exec.stderr);
    assert_eq!(exec.json[0]["stdout"], "a b $HOME");
    assert_eq!(exec.code, Some(0));

    let refused = hub.op(&["command", "pi-c", "exec", "cat", "/etc/shadow"]);
    assert_eq!(refused.code, Some(1), "the device said no");
    assert_eq!(refused.json[0]["result"], "not_allowed");
    assert_eq!(refused.json[0]["detail"], "program \"cat\"");

    let unknown = hub.op(&["command", "pi-c", "reboot"]);
    assert!(!unknown.ok);
    assert!(
        unknown.json[0]["detail"]
            .as_str()
            .unwrap()
            .contains("reboot")
    );

    let nobody = hub.op(&["command", "pi-nobody", "ping"]);
    assert!(
        !nobody.ok && nobody.stderr.contains("unknown device"),
        "{}",
        nobody.stderr
    );

    let slow = hub.op(&[
        "command",
        "--timeout-ms",
        "1000",
        "pi-c",
        "exec",
        "sleep",
        "10",
    ]);
    assert!(!slow.ok);
    assert!(slow.json[0]["result"] == "timed_out", "{:?}", slow.json);

    // A device that cannot answer: the operator gets a timeout, not a hang.
    agent.signal(libc::SIGSTOP);
    let frozen = hub.op(&["command", "--timeout-ms", "800", "pi-c", "ping"]);
    assert!(
        !frozen.ok && frozen.stderr.contains("did not answer within 800 ms"),
        "{}",
        frozen.stderr
    );
    agent.signal(libc::SIGCONT);
    // The freeze may have outlasted the presence timeout; a queued ping
    // waits for the device to say hello again instead of racing it.
    let thawed = hub.op(&["command", "--queue-ms", "10000", "pi-c", "ping"]);
    assert!(thawed.ok, "answers again once thawed: {}", thawed.stderr);
    assert_eq!(hub.stats()["commands_timed_out"], 1);

    drop(agent);
    wait_for("pi-c offline", || {
        (hub.devices()["pi-c"]["online"] == false).then_some(())
    });
    let offline = hub.op(&["command", "pi-c", "ping"]);
    assert!(
        !offline.ok && offline.stderr.contains("offline"),
        "{}",
        offline.stderr
    );

    // Asked to, the hub keeps the command until the device is back...
    let expired = hub.op(&["command", "--queue-ms", "300", "pi-c", "ping"]);
    assert!(
        !expired.ok && expired.stderr.contains("stayed offline for the 300 ms"),
        "{}",
        expired.stderr
    );
    let mut queued = hub.operator_command(&["command", "--queue-ms", "30000", "pi-c", "ping"]);
    let queued = std::thread::spawn(move || queued.output().expect("running the operator"));
    // ...which it is only after the command was queued (the hub logs it).
    hub.proc.wait_log("command queued");
    let _agent = hub.agent("pi-c", &[]);
    let answer = queued.join().expect("operator thread");
    let stdout = String::from_utf8_lossy(&answer.stdout);
    assert!(
        answer.status.success() && stdout.contains("\"pong\""),
        "{stdout}{}",
        String::from_utf8_lossy(&answer.stderr)
    );
}

#[test]
fn the_operator_cli_gives_up_on_a_hub_that_does_not_answer_and_recovers() {
    let _w = watchdog("lazy_pirate", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    hub.proc.signal(libc::SIGSTOP);
    let r = hub.op(&["devices", "--hub-timeout-ms", "300"]);
    assert_eq!(r.code, Some(3), "an unreachable hub exits 3");
    assert!(
        r.stderr.contains("did not answer after 3 attempts"),
        "{}",
        r.stderr
    );
    assert!(
        r.json[0]["error"].is_string(),
        "--json reports the error too"
    );
    hub.proc.signal(libc::SIGCONT);
    assert!(hub.op(&["devices"]).ok);
}

#[test]
fn a_retried_job_submission_queues_one_job() {
    use fleetmq_protocol::{
        JobSpec, JobSubmission, OperatorFrame, OperatorReplyFrame, OperatorRequest, Request,
        Response,
    };
    let _w = watchdog("idempotent", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let request = OperatorFrame::from(OperatorRequest {
        id: 0x5eed,
        request: Request::SubmitJob(JobSubmission {
            spec: JobSpec::Echo {
                text: "once".into(),
            },
            timeout_ms: 0,
            lease_ms: 0,
            max_attempts: 0,
            devices: vec![],
            groups: vec![],
            all: false,
            ttl_ms: 0,
            matching: vec![],
        }),
    })
    .encode()
    .unwrap();
    // The same request twice, each on a fresh REQ socket: what a client does
    // when the answer to its first try was lost.
    let ctx = zmq::Context::new();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let req = ctx.socket(zmq::REQ).unwrap();
        req.set_linger(0).unwrap();
        req.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
        req.connect(&hub.endpoints["operator"]).unwrap();
        req.send(&request, 0).unwrap();
        let OperatorReplyFrame::Response(answer) =
            OperatorReplyFrame::decode(&req.recv_bytes(0).unwrap()).unwrap();
        let Response::JobSubmitted { id } = answer.response else {
            panic!("unexpected answer {answer:?}");
        };
        ids.push(id);
    }
    assert_eq!(
        ids[0], ids[1],
        "the retry is answered with the first job's id"
    );
    let jobs = hub.op(&["job", "list"]);
    assert_eq!(jobs.json.len(), 1, "{:?}", jobs.json);
}

#[test]
fn sigint_stops_both_quickly_and_telemetry_accepted_while_the_hub_was_down_arrives_later() {
    let _w = watchdog("shutdown", LIMIT);
    let dir = tmp();
    let mut hub = Hub::start(dir.path(), "");
    let telemetry = hub.telemetry().to_string();
    let mut agent = hub.agent("pi-s", &[]);
    wait_for("first telemetry", || {
        (!hub.telemetry_rows("pi-s").is_empty()).then_some(())
    });

    hub.proc.signal(libc::SIGINT);
    let (status, took) = hub.proc.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "hub exit {status:?}");
    assert!(
        took < Duration::from_millis(1500),
        "hub took {took:?} to stop"
    );

    // The hub is gone; the agent keeps accepting samples, then stops.
    agent.wait_log("lost the hub");
    agent.wait_log_after("lost the hub", "sampled");
    agent.signal(libc::SIGINT);
    let (status, took) = agent.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "agent exit {status:?}");
    assert!(
        took < Duration::from_millis(1500),
        "agent took {took:?} to stop"
    );
    assert!(
        agent
            .log_text()
            .contains("unacked telemetry stays in the spool"),
        "{}",
        agent.log_text()
    );

    // Same telemetry address, fresh other ports: the agent finds them through Welcome.
    let cfg = dir.path().join("again.toml");
    std::fs::write(
        &cfg,
        format!(
            "[listen]\ntelemetry = \"{telemetry}\"\nbroadcast = \"tcp://127.0.0.1:*\"\njobs = \"tcp://127.0.0.1:*\"\n\
             results = \"tcp://127.0.0.1:*\"\ncommands = \"tcp://127.0.0.1:*\"\noperator = \"tcp://127.0.0.1:*\"\n\
             http = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let hub = Hub::start_with(dir.path(), &["--config", &cfg.to_string_lossy()]);
    let _agent = hub.agent("pi-s", &[]);
    hub.wait_answering("pi-s");
    // Batches of the first run (numbered from 1) arrive with none missing,
    // including those made while the hub was down.
    let first_run: Vec<u64> = wait_for("the saved batches", || {
        let seqs: HashSet<u64> = hub
            .telemetry_rows("pi-s")
            .iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        let first: Vec<u64> = seqs.into_iter().filter(|s| *s < 1024).collect();
        (!first.is_empty()).then_some(first)
    });
    let max = *first_run.iter().max().unwrap();
    let mut sorted = first_run.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        (1..=max).collect::<Vec<_>>(),
        "every batch of the first run is stored"
    );
}

#[test]
fn keygen_writes_private_key_files_and_never_replaces_them_unasked() {
    use std::os::unix::fs::PermissionsExt;
    let _w = watchdog("keygen", LIMIT);
    let dir = tmp();
    let data = dir.path().join("hub-data");
    let data_arg = data.to_string_lossy().to_string();
    let keygen = |force: bool| {
        let mut cmd = hub_command();
        cmd.args(["keygen", "--data-dir", &data_arg]);
        if force {
            cmd.arg("--force");
        }
        cmd.output().expect("running fleetmq-hub keygen")
    };
    let public = || std::fs::read_to_string(data.join("hub.pub")).unwrap();

    let first = keygen(false);
    assert!(first.status.success(), "{first:?}");
    let key = public();
    let key = key.trim();
    assert_eq!(key.len(), 40, "Z85 public key: {key:?}");
    let stdout = String::from_utf8_lossy(&first.stdout);
    // In single quotes: a TOML literal string, and whole in a shell.
    assert!(
        stdout.contains(&format!("hub_public_key = '{key}'")),
        "{stdout}"
    );
    let mode = std::fs::metadata(data.join("hub.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "secret key mode {mode:o}");

    let again = keygen(false);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success() && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(public().trim(), key, "the key pair was left alone");
    assert!(keygen(true).status.success());
    assert_ne!(public().trim(), key, "--force made a new pair");

    let agent_data = dir.path().join("agent-data");
    let out = agent_command()
        .args(["keygen", "--device-id", "pi-keys", "--data-dir"])
        .arg(&agent_data)
        .output()
        .expect("running fleetmq-agent keygen");
    assert!(out.status.success(), "{out:?}");
    let agent_key = std::fs::read_to_string(agent_data.join("agent.pub")).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("pi-keys '{}'", agent_key.trim())),
        "allow-list line: {stdout}"
    );
    let mode = std::fs::metadata(agent_data.join("agent.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn check_config_says_what_run_would_start_or_why_it_would_not() {
    let _w = watchdog("check_config", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let hub_data = dir.path().join("data");
    let output = |mut cmd: std::process::Command| {
        let out = cmd.output().expect("running check-config");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };

    // The hub: checked while a hub serves from the same data directory,
    // which it neither locks nor touches.
    let hub_check = |config: &str| {
        let file = dir.path().join("check.toml");
        std::fs::write(&file, config).unwrap();
        let mut cmd = hub_command();
        cmd.args(["check-config", "--data-dir"])
            .arg(&hub_data)
            .arg("--config")
            .arg(&file);
        output(cmd)
    };
    let (code, text) = hub_check("");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with("ok: ") && text.contains("with the hub's key pair"),
        "{text}"
    );
    // A token file not made yet is made by run, not by the check.
    let (code, text) = hub_check("[security]\nhttp_token_file = \"missing.token\"\n");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("a bearer token made at first start"),
        "{text}"
    );
    assert!(!hub_data.join("missing.token").exists(), "nothing written");
    std::fs::write(hub_data.join("short.token"), "short\n").unwrap();
    let (code, text) = hub_check("[security]\nhttp_token_file = \"short.token\"\n");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("short.token") && text.contains("at least 16"),
        "{text}"
    );
    std::fs::write(dir.path().join("bad_devices"), "pi-x notakey\n").unwrap();
    let bad_list = format!(
        "[security]\nallow_list = \"{}\"\n",
        dir.path().join("bad_devices").display()
    );
    let (code, text) = hub_check(&bad_list);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("line 1") && text.contains("pi-x"), "{text}");
    assert_eq!(hub.stats()["devices_known"], 0, "the running hub serves on");

    // The agent: a good configuration, then one run would refuse, with
    // the key named; its data directory is not made.
    let agent_check = |config: &str, data: &std::path::Path| {
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, config).unwrap();
        let mut cmd = agent_command();
        cmd.args(["check-config", "--device-id", "pi-check", "--hub"])
            .arg(&hub.endpoints["telemetry"])
            .arg("--hub-key")
            .arg(hub_data.join("hub.pub"))
            .arg("--data-dir")
            .arg(data)
            .arg("--config")
            .arg(&file);
        output(cmd)
    };
    let data = dir.path().join("agent-data");
    let (code, text) = agent_check(&agent_config(""), &data);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.starts_with("ok: ")
            && text.contains("device pi-check connects to")
            && text.contains("made at first start"),
        "{text}"
    );
    assert!(!data.exists(), "check-config makes nothing");
    let (code, text) = agent_check("[telemetry]\nsample_interval_ms = 5\n", &data);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("telemetry.sample_interval_ms") && text.contains("100 ms"),
        "{text}"
    );
}

#[test]
fn devices_are_enrolled_and_revoked_while_the_hub_runs() {
    let _w = watchdog("enrolment", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let keep = hub.agent("pi-keep", &[]);
    let other = hub.agent("pi-other", &[]);
    hub.wait_answering("pi-keep");
    hub.wait_answering("pi-other");
    // The hub measures each agent's clock from its heartbeats: on one
    // machine, the hub's own.
    let offset = wait_for("pi-keep's clock measured", || {
        hub.devices()["pi-keep"]["clock_offset_ms"].as_i64()
    });
    assert!(offset.abs() < 5_000, "{offset} ms");

    // A new device makes its key pair; the hub refuses it until enrolled.
    let data = dir.path().join("pi-new").join("data");
    let out = agent_command()
        .args(["keygen", "--device-id", "pi-new", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let enrol_line = printed
        .lines()
        .find(|l| l.starts_with("fleetmq-hub allow pi-new "))
        .unwrap_or_else(|| panic!("keygen prints the enrol command: {printed}"))
        .to_string();
    let mut unknown = hub.link();
    unknown.enrol = false;
    let newbie = start_agent(
        &unknown,
        dir.path(),
        "pi-new",
        "run",
        &agent_config(""),
        &[],
    );
    newbie.wait_log("the hub refused this device's key");
    assert!(hub.stats()["handshakes_refused"].as_u64().unwrap() >= 1);
    // It waits in the pending list, with where it knocks from, for the
    // command line and the HTTP side alike.
    let key = std::fs::read_to_string(data.join("agent.pub")).unwrap();
    let waiting = hub.op(&["pending"]);
    assert!(waiting.ok, "{}", waiting.stderr);
    assert_eq!(waiting.json.len(), 1, "{:?}", waiting.json);
    assert_eq!(
        (&waiting.json[0]["public_key"], &waiting.json[0]["address"]),
        (
            &serde_json::json!(key.trim()),
            &serde_json::json!("127.0.0.1")
        )
    );
    assert!(waiting.json[0]["attempts"].as_u64().unwrap() >= 1);
    let (code, body) = http("GET", &hub.endpoints["http"], "/api/pending");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(key.trim()), "{body}");
    assert_eq!(hub.stats()["keys_pending"], 1);
    let (_, metrics) = http("GET", &hub.endpoints["http"], "/metrics");
    assert!(metrics.contains("\nfleetmq_keys_pending 1\n"), "{metrics}");

    // The operator pastes the line keygen printed into a shell; no restart.
    // (Z85 holds characters a shell acts on: the quotes must keep it whole.)
    // `fleetmq-hub` on the PATH is this hub (behind its runner, if any).
    let shim = dir.path().join("bin");
    std::fs::create_dir_all(&shim).unwrap();
    let hub_cmd = hub_command();
    let words: Vec<String> = std::iter::once(hub_cmd.get_program())
        .chain(hub_cmd.get_args())
        .map(|w| format!("'{}'", w.to_string_lossy()))
        .collect();
    let script = shim.join("fleetmq-hub");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec {} \"$@\"\n", words.join(" ")),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        shim.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run_ok(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{enrol_line} --data-dir \"$0\""))
            .arg(dir.path().join("data"))
            .env("PATH", path),
    );
    hub.wait_answering("pi-new");
    assert_eq!(hub.stats()["devices_allowed"], 3);
    assert!(
        hub.op(&["pending"]).json.is_empty(),
        "enrolled: no longer pending"
    );
    assert_eq!(hub.stats()["keys_pending"], 0);

    run_ok(
        hub_command()
            .args(["revoke", "pi-new", "--data-dir"])
            .arg(dir.path().join("data")),
    );
    wait_for("pi-new offline", || {
        (hub.devices()["pi-new"]["online"] == false).then_some(())
    });
    let stored = hub.telemetry_rows("pi-new").len();
    // Its connections were cut: it handshakes again and is refused.
    wait_for("pi-new refused again", || {
        (newbie
            .log_text()
            .matches("the hub refused this device's key")
            .count()
            >= 2)
            .then_some(())
    });
    assert!(
        hub.op(&["pending"]).json.is_empty(),
        "revoked is not waiting"
    );
    // The operator sees that it still tries to get in, and from where.
    let presence = hub.op(&["presence", "pi-new"]);
    assert!(presence.ok, "{}", presence.stderr);
    assert_eq!(
        (&presence.json[0]["online"], &presence.json[0]["why"]),
        (
            &serde_json::json!(false),
            &serde_json::json!("refused: its key is revoked (a connection from 127.0.0.1)")
        ),
        "{:?}",
        presence.json
    );
    // Only pi-new was cut: the other two never handshook again, and they
    // are served; jobs reach only them.
    hub.wait_answering("pi-keep");
    for agent in [&keep, &other] {
        let log = agent.log_text();
        assert_eq!(log.matches("connected to hub").count(), 1, "{log}");
        assert_eq!(log.matches("lost the hub").count(), 0, "{log}");
    }
    for _ in 0..3 {
        let job = hub.op(&["job", "submit", "--wait", "echo", "after revocation"]);
        assert!(job.ok, "{}", job.stderr);
        assert_ne!(job.json[0]["device"], "pi-new", "{:?}", job.json);
    }
    let ping = hub.op(&["command", "pi-new", "ping"]);
    assert!(
        !ping.ok && ping.stderr.contains("offline"),
        "{}",
        ping.stderr
    );
    assert_eq!(
        hub.telemetry_rows("pi-new").len(),
        stored,
        "nothing of a revoked device is stored"
    );
    assert_eq!(hub.stats()["devices_allowed"], 2);
    let devices = hub.devices();
    assert_eq!(devices["pi-new"]["revoked"], true, "shown as revoked");
    assert_eq!(devices["pi-keep"]["revoked"], false);
    let data = dir.path().join("data");
    let listed = run_ok(hub_command().args(["devices", "--data-dir"]).arg(&data));
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("pi-new") && l.contains("revoked")),
        "{listed}"
    );

    // A key rotation: a second key for pi-keep says so and how to retire
    // the old one; revoking one key leaves the device its other.
    let second = Keys::new().public;
    let out = run_ok(
        hub_command()
            .args(["allow", "pi-keep", &second, "--data-dir"])
            .arg(&data),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("it has 2 now") && stdout.contains("fleetmq-hub revoke pi-keep --key '"),
        "{stdout}"
    );
    wait_for("a second key allowed", || {
        (hub.stats()["devices_allowed"] == 3).then_some(())
    });
    run_ok(
        hub_command()
            .args(["revoke", "pi-keep", "--key", &second, "--data-dir"])
            .arg(&data),
    );
    wait_for("one key again", || {
        (hub.stats()["devices_allowed"] == 2).then_some(())
    });
    hub.wait_answering("pi-keep");
    assert_eq!(hub.devices()["pi-keep"]["revoked"], false);
    let out = hub_command()
        .args(["revoke", "pi-keep", "--key", &second, "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("is not on"),
        "{stderr}"
    );
}

#[test]
fn an_agent_that_cannot_get_in_says_why_within_seconds() {
    let _w = watchdog("loud_failures", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let status = |device: &str| agent_status(&dir.path().join(device).join("data"));

    // Its key is enrolled as pi-real, but it calls itself pi-other: the hub
    // tells it which id its key has.
    let link = hub.link();
    link.enrol(&dir.path().join("pi-other").join("data"), "pi-real");
    let mut unenrolled = hub.link();
    unenrolled.enrol = false;
    let misnamed = start_agent(
        &unenrolled,
        dir.path(),
        "pi-other",
        "run",
        &agent_config(""),
        &[],
    );
    misnamed.wait_log("enrolled as pi-real, not pi-other");
    wait_for("the reason in status", || {
        let problem = status("pi-other")["hub_problem"].as_str()?.to_string();
        problem.contains("device_id = 'pi-real'").then_some(())
    });

    // Nothing listens at its hub address: a port that was just freed.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let nowhere = Link {
        telemetry: format!("tcp://127.0.0.1:{port}"),
        enrol: false,
        ..hub.link()
    };
    let lost = start_agent(
        &nowhere,
        dir.path(),
        "pi-lost",
        "run",
        &agent_config(""),
        &[],
    );
    lost.wait_log("nothing answers at tcp://127.0.0.1:");
    let problem = status("pi-lost")["hub_problem"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(problem.contains("is the hub running"), "{problem}");

    // A linked agent has no problem to report.
    let _fine = hub.agent("pi-fine", &[]);
    hub.wait_answering("pi-fine");
    assert_eq!(status("pi-fine")["hub_problem"], "");
}

#[test]
fn plaintext_needs_an_explicit_flag_on_both_sides_and_shows() {
    let _w = watchdog("insecure", LIMIT);
    let dir = tmp();

    // Without the hub's key and without --insecure, an agent will not start.
    let out = agent_command()
        .args(["run", "--hub", "tcp://127.0.0.1:9", "--data-dir"])
        .arg(dir.path().join("nokey"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("hub_public_key") && stderr.contains("--insecure"),
        "{stderr}"
    );

    let hub = Hub::start_with(dir.path(), &["--bind", "127.0.0.1:*", "--insecure"]);
    assert!(hub.key.is_none(), "the hub says it is plaintext");
    let agent = hub.agent("pi-plain", &[]);
    wait_for("plaintext telemetry", || {
        (!hub.telemetry_rows("pi-plain").is_empty()).then_some(())
    });
    assert_eq!(hub.stats()["security"], "plaintext");
    hub.proc.wait_log("--insecure");
    agent.wait_log("--insecure");
    let status = agent_command()
        .args(["status", "--data-dir"])
        .arg(dir.path().join("pi-plain/data"))
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["security"], "plaintext");

    // An agent expecting CURVE cannot talk to a plaintext hub, and says so.
    let mut curve = hub.link();
    curve.hub_key = Some(Keys::new().public);
    curve.enrol = false;
    let confused = start_agent(
        &curve,
        dir.path(),
        "pi-curve",
        "run",
        &agent_config(""),
        &[],
    );
    confused.wait_log("handshake with the hub failed");
}

/// Edges that used to burn a core, eat memory or wait for timeouts now fail
/// at once, saying what was wrong.
#[test]
fn bad_intervals_huge_files_and_oversized_requests_fail_at_once() {
    let _w = watchdog("edges", LIMIT);
    let dir = tmp();
    // A 1 ms sampling interval: the agent does not start, and says which key.
    let cfg = dir.path().join("fast.toml");
    std::fs::write(&cfg, "[telemetry]\nsample_interval_ms = 1\n").unwrap();
    let out = agent_command()
        .args([
            "run",
            "--insecure",
            "--device-id",
            "pi-x",
            "--hub",
            "tcp://127.0.0.1:1",
        ])
        .arg("--config")
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("agent"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("telemetry.sample_interval_ms")
            && stderr.contains("the least is 100 ms"),
        "{stderr}"
    );

    // A hub config file that is not there: the hub names it and says why,
    // once.
    let missing = dir.path().join("missing.toml");
    let out = hub_command()
        .args(["run", "--config"])
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(&*missing.to_string_lossy())
            && stderr.matches("No such file or directory").count() == 1,
        "{stderr}"
    );

    // A "key file" of a megabyte: read no further than the cap.
    let big = dir.path().join("big.pub");
    std::fs::write(&big, vec![b'k'; 1 << 20]).unwrap();
    let out = hub_command()
        .args(["allow", "pi-x"])
        .arg(&big)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("larger than 4096 bytes"),
        "{stderr}"
    );

    // A request over the hub's net.max_message_bytes fails before sending.
    let hub = Hub::start(dir.path(), "[net]\nmax_message_bytes = 65536\n");
    let config = dir.path().join("hub.toml");
    let text = "x".repeat(100_000);
    let started = std::time::Instant::now();
    // With a minute per attempt, waiting for the hub at all would show.
    let r = hub.op(&[
        "broadcast",
        "--config",
        &config.to_string_lossy(),
        "--hub-timeout-ms",
        "60000",
        &text,
    ]);
    assert!(
        !r.ok && r.stderr.contains("the hub takes at most 65536"),
        "{}",
        r.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "at once, not after a timeout"
    );
}

/// A fake hub (plaintext) tells a real agent to connect its other sockets
/// again, as the hub does when it cannot reach an online device's commands
/// socket: the agent does, and answers on the new connection.
#[test]
fn an_agent_told_to_relink_connects_its_command_socket_again() {
    let _w = watchdog("relink", LIMIT);
    let dir = tmp();
    let ctx = zmq::Context::new();
    let bind = |kind| {
        let s = ctx.socket(kind).unwrap();
        s.set_linger(0).unwrap();
        s.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
        s.bind("tcp://127.0.0.1:*").unwrap();
        let ep = s.get_last_endpoint().unwrap().unwrap();
        let port: u16 = ep.rsplit(':').next().unwrap().parse().unwrap();
        (s, ep, port)
    };
    let (telemetry, telemetry_ep, _) = bind(zmq::ROUTER);
    let (_broadcast, _, broadcast) = bind(zmq::XPUB);
    let (_jobs, _, jobs) = bind(zmq::PUSH);
    let (_results, _, results) = bind(zmq::PULL);
    let (commands, _, commands_port) = bind(zmq::ROUTER);
    // As the hub's: a command to a route not yet connected fails instead of
    // vanishing, and a reconnection with the same route takes it over.
    commands.set_router_mandatory(true).unwrap();
    commands.set_router_handover(true).unwrap();
    commands
        .monitor(
            "inproc://relink-commands",
            zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32,
        )
        .unwrap();
    let accepted = ctx.socket(zmq::PAIR).unwrap();
    accepted.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    accepted.connect("inproc://relink-commands").unwrap();
    let link = Link {
        telemetry: telemetry_ep,
        hub_key: None,
        hub_data: dir.path().join("data"),
        enrol: false,
    };
    let agent = start_agent(&link, dir.path(), "pi-rl", "run", &agent_config(""), &[]);

    // Its Hello, answered with a Welcome naming the other ports and no
    // Carry before it, as an older hub does: the agent connects them.
    let route = loop {
        let msg = telemetry
            .recv_multipart(0)
            .expect("a message from the agent");
        if let Ok(fleetmq_protocol::Upstream::Hello(_)) =
            fleetmq_protocol::Upstream::decode(&msg[1])
        {
            break msg[0].clone();
        }
    };
    let down = |m: fleetmq_protocol::Downstream| {
        telemetry
            .send_multipart([&route[..], &m.encode().unwrap()], 0)
            .unwrap();
    };
    down(
        fleetmq_protocol::Welcome {
            hub_version: "fake".into(),
            ports: fleetmq_protocol::HubPorts {
                broadcast,
                jobs,
                results,
                commands: commands_port,
            },
        }
        .into(),
    );
    let ping = |corr: u64| {
        let req = fleetmq_protocol::CommandFrame::from(fleetmq_protocol::CommandRequest {
            corr,
            command: fleetmq_protocol::Command::Ping,
        })
        .encode()
        .unwrap();
        // The ROUTER knows the route once it has processed the handshake
        // the monitor reported; until then a send says so. And until the
        // new connection's pipe takes the route over (a moment after that
        // handshake), a send may still go to the connection the agent
        // closed: ask again until this ping is answered.
        wait_for("a reply to the ping on the agent's commands route", || {
            commands.send_multipart([&route[..], b"", &req], 0).ok()?;
            let mut items = [commands.as_poll_item(zmq::POLLIN)];
            while zmq::poll(&mut items, 1_000).ok()? > 0 {
                let reply = commands.recv_multipart(0).ok()?;
                let fleetmq_protocol::ReplyFrame::Reply(r) =
                    fleetmq_protocol::ReplyFrame::decode(&reply[2]).unwrap();
                if r.corr == corr {
                    return Some(());
                }
            }
            None
        });
    };
    accepted
        .recv_multipart(0)
        .expect("the commands socket connected");
    ping(1);

    down(
        fleetmq_protocol::Relink {
            reason: "test".into(),
        }
        .into(),
    );
    agent.wait_log("the hub asked for new connections");
    accepted
        .recv_multipart(0)
        .expect("the commands socket connected again");
    ping(2);
}

/// `fleetmq-hub keygen --operator NAME` in `dir`: the line for the hub's
/// operator allow list with `role`, from the `echo 'LINE' >> ...` printed.
fn operator_keygen(dir: &Path, name: &str, role: &str) -> String {
    let out = run_ok(
        hub_command()
            .args(["keygen", "--operator", name, "--data-dir"])
            .arg(dir),
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    printed
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("echo '{name} {role} "))
                .and_then(|rest| rest.split_once('\''))
                .map(|(key, _)| format!("{name} {role} {key}"))
        })
        .unwrap_or_else(|| panic!("keygen prints the {role} line: {printed}"))
}

#[test]
fn remote_operators_need_curve_an_allowed_key_and_the_admin_role_to_act() {
    let _w = watchdog("remote operators", LIMIT);
    let dir = tmp();
    let (alice, grafana, stranger) = (
        dir.path().join("alice"),
        dir.path().join("grafana"),
        dir.path().join("stranger"),
    );
    let allowed = format!(
        "{}\n{}\n",
        operator_keygen(&alice, "alice", "admin"),
        operator_keygen(&grafana, "grafana", "read")
    );
    operator_keygen(&stranger, "mallory", "admin");
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/allowed_operators"), allowed).unwrap();
    // Beyond loopback: every address of this machine.
    let hub = Hub::start(
        dir.path(),
        "[listen]\noperator_remote = \"tcp://0.0.0.0:*\"\n",
    );
    let _agent = hub.agent("pi-r", &[]);
    hub.wait_answering("pi-r");
    let remote = hub.endpoints["operator_remote"].replace("0.0.0.0", "127.0.0.1");
    let hub_pub = dir.path().join("data/hub.pub");
    let hub_pub = hub_pub.to_string_lossy();
    let as_operator = |keys: &Path, args: &[&str]| {
        let keys = keys.to_string_lossy();
        let mut full = args.to_vec();
        full.extend([
            "--hub",
            &remote,
            "--hub-key",
            &hub_pub,
            "--operator-keys",
            &keys,
            "--hub-timeout-ms",
            "1000",
        ]);
        hub.op(&full)
    };

    // The admin reads and acts.
    let devices = as_operator(&alice, &["devices"]);
    assert!(devices.ok, "{}", devices.stderr);
    let ping = as_operator(&alice, &["command", "pi-r", "ping"]);
    assert!(ping.ok, "{}", ping.stderr);
    // The reader reads, and is told why it may not act.
    assert!(as_operator(&grafana, &["stats"]).ok);
    let refused = as_operator(&grafana, &["command", "pi-r", "ping"]);
    assert!(
        !refused.ok && refused.stderr.contains("grafana has the read role"),
        "{}",
        refused.stderr
    );
    let broadcast = as_operator(&grafana, &["broadcast", "no"]);
    assert!(!broadcast.ok, "{}", broadcast.stderr);
    let edit = as_operator(&grafana, &["config", "set", "app.x=1"]);
    assert!(
        !edit.ok && edit.stderr.contains("read role"),
        "{}",
        edit.stderr
    );
    assert!(as_operator(&grafana, &["config", "status"]).ok);
    assert!(as_operator(&alice, &["config", "set", "app.x=1"]).ok);
    // A key not on the operator list, and a plaintext client, get nothing.
    let before = hub.stats()["handshakes_refused"].as_u64().unwrap();
    let stranger = as_operator(&stranger, &["devices"]);
    assert!(
        !stranger.ok && stranger.stderr.contains("refused this operator's key"),
        "told why at once: {}",
        stranger.stderr
    );
    assert!(hub.stats()["handshakes_refused"].as_u64().unwrap() > before);
    assert!(
        hub.proc
            .log_text()
            .contains("not in security.operator_allow_list")
    );
    let plain = hub.op(&["devices", "--hub", &remote, "--hub-timeout-ms", "300"]);
    assert!(
        !plain.ok && plain.stderr.contains("did not answer"),
        "{}",
        plain.stderr
    );
    // One key flag without the other says what is missing.
    let half = hub.op(&["devices", "--hub", &remote, "--hub-key", &hub_pub]);
    assert!(
        !half.ok && half.stderr.contains("--operator-keys"),
        "{}",
        half.stderr
    );

    // The plaintext operator socket is refused beyond loopback.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[listen]\noperator = \"tcp://0.0.0.0:7999\"\n").unwrap();
    let out = hub_command()
        .args(["run", "--config"])
        .arg(&bad)
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("listen.operator_remote"),
        "{stderr}"
    );
}

#[test]
fn http_beyond_loopback_needs_a_bearer_token() {
    let _w = watchdog("http_token", LIMIT);
    let dir = tmp();
    let config = |extra: &str| {
        format!(
            "[listen]\ntelemetry = \"tcp://127.0.0.1:*\"\nbroadcast = \"tcp://127.0.0.1:*\"\n\
             jobs = \"tcp://127.0.0.1:*\"\nresults = \"tcp://127.0.0.1:*\"\n\
             commands = \"tcp://127.0.0.1:*\"\noperator = \"tcp://127.0.0.1:*\"\n\
             http = \"0.0.0.0:0\"\n[security]\n{extra}"
        )
    };
    // No token: the hub will not serve HTTP on every interface.
    let open = dir.path().join("open.toml");
    std::fs::write(&open, config("")).unwrap();
    let out = hub_command()
        .args(["run", "--data-dir"])
        .arg(dir.path().join("open-data"))
        .arg("--config")
        .arg(&open)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("refusing to serve HTTP on 0.0.0.0:0"),
        "{stderr}"
    );

    // With a token: every request but /health must carry it.
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let token = "q2Vw8yMZ3pTq9nFv0sBx7KcR";
    std::fs::write(data.join("http.token"), format!("{token}\n")).unwrap();
    let cfg = dir.path().join("token.toml");
    std::fs::write(&cfg, config("http_token_file = \"http.token\"\n")).unwrap();
    let hub = Hub::start_with(dir.path(), &["--config", &cfg.to_string_lossy()]);
    let url = format!("http://127.0.0.1:{}", hub.port("http"));
    let bearer = format!("Authorization: Bearer {token}");
    assert_eq!(http("GET", &url, "/api/stats").0, 401, "no token");
    assert_eq!(
        http_with(
            "GET",
            &url,
            "/api/stats",
            &["Authorization: Bearer wrong-but-long-enough"]
        )
        .0,
        401,
        "a wrong token"
    );
    let (status, body) = http_with("GET", &url, "/api/stats", &[&bearer]);
    assert_eq!(status, 200, "{body}");
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["devices_known"], 0);
    assert_eq!(http_with("GET", &url, "/metrics", &[&bearer]).0, 200);
    // The page itself is served (a browser cannot send the token to open
    // it): it holds no data, and reads the API with /#token=TOKEN.
    let (status, page) = http("GET", &url, "/");
    assert_eq!(status, 200, "the page is served without the token");
    assert!(page.contains("/#token=TOKEN"), "the fleet page");
    assert_eq!(
        http("GET", &url, "/health").0,
        200,
        "health stays open for probes"
    );
    // The token guards it, under whatever name it is reached.
    let named = format!("Host: hub.example.lan:{}", hub.port("http"));
    assert_eq!(
        http_with("GET", &url, "/api/stats", &[&bearer, &named]).0,
        200,
        "a token-guarded hub is served under any name"
    );
}

#[test]
fn http_without_a_token_answers_no_name_a_web_page_could_point_at_it() {
    let _w = watchdog("http_rebinding", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let url = hub.endpoints["http"].clone();
    let port = hub.port("http");
    // A page at http://evil.example:PORT whose name now resolves to
    // 127.0.0.1 (DNS rebinding) sends its own name.
    for path in ["/api/devices", "/metrics", "/"] {
        let foreign = format!("Host: evil.example:{port}");
        let (status, body) = http_with("GET", &url, path, &[&foreign]);
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            body.contains("evil.example") && body.contains("security.http_token_file"),
            "{path}: {body}"
        );
    }
    // Named by address, as localhost or by a host name without a dot, as
    // a browser, curl or Prometheus on this machine name it, it answers.
    for host in [
        format!("Host: 127.0.0.1:{port}"),
        format!("Host: localhost:{port}"),
        format!("Host: raspberrypi:{port}"),
    ] {
        let (status, body) = http_with("GET", &url, "/api/devices", &[&host]);
        assert_eq!(status, 200, "{host}: {body}");
        assert_eq!(body.trim(), "[]", "{host}");
    }
}

#[test]
fn prometheus_health_and_the_json_api_show_the_fleet() {
    let _w = watchdog("http", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let url = hub.endpoints["http"].clone();
    let _agent = hub.agent("pi-m", &[]);
    hub.wait_answering("pi-m");

    let uptime = |body: &str| -> Option<f64> {
        body.lines()
            .find(|l| l.starts_with("fleetmq_metric{device=\"pi-m\",metric=\"agent.uptime_s\"}"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    let (first, body) = wait_for("pi-m's uptime in /metrics", || {
        let (status, body) = http("GET", &url, "/metrics");
        assert_eq!(status, 200, "{body}");
        uptime(&body).map(|u| (u, body))
    });
    assert!(
        body.contains("# TYPE fleetmq_devices_online gauge\nfleetmq_devices_online 1\n"),
        "{body}"
    );
    assert!(
        body.contains("fleetmq_device_online{device=\"pi-m\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("# TYPE fleetmq_samples_stored_total counter"),
        "{body}"
    );
    wait_for("a newer value on the next scrape", || {
        let (_, body) = http("GET", &url, "/metrics");
        uptime(&body).filter(|u| *u > first)
    });

    let (status, body) = http("GET", &url, "/health");
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["security"], "curve");

    let (status, body) = http("GET", &url, "/api/devices");
    assert_eq!(status, 200);
    let devices: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(devices[0]["id"], "pi-m");
    let (status, body) = http(
        "GET",
        &url,
        "/api/telemetry?device=pi-m&name=agent.uptime_s&limit=2",
    );
    assert_eq!(status, 200, "{body}");
    let rows: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["name"] == "agent.uptime_s"));

    // The command log: what was sent, to whom, and the answer.
    let ping = hub.op(&["command", "pi-m", "ping"]);
    assert!(ping.ok, "{}", ping.stderr);
    let (status, body) = http("GET", &url, "/api/commands?limit=1");
    assert_eq!(status, 200, "{body}");
    let log: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(log.len(), 1, "{body}");
    assert_eq!(log[0]["device"], "pi-m");
    assert_eq!(log[0]["command"]["kind"], "ping", "{body}");
    assert_eq!(log[0]["answer"]["result"], "pong", "{body}");
    assert_eq!(log[0]["answer"]["ok"], true, "{body}");

    let (status, body) = http("GET", &url, "/api/telemetry?limit=many");
    assert_eq!(status, 400);
    assert!(
        body.contains("limit=\"many\" is not a whole number"),
        "{body}"
    );
    // A misspelt filter is refused by name, not ignored (which would
    // answer for every device).
    let (status, body) = http("GET", &url, "/api/telemetry?devcie=pi-m&last=1");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("no parameter \"devcie\"") && body.contains("device"),
        "{body}"
    );
    let (status, body) = http("GET", &url, "/nowhere");
    assert_eq!(status, 404);
    assert!(body.contains("/metrics"), "{body}");
    assert_eq!(http("PUT", &url, "/metrics").0, 405);
    let (status, body) = http("POST", &url, "/api/command");
    assert_eq!(status, 403, "acting needs the admin token");
    assert!(body.contains("http_admin_token_file"), "{body}");

    // The fleet page: served by the hub itself, reading only its own API.
    let (status, page) = http("GET", &url, "/");
    assert_eq!(status, 200);
    assert!(page.contains("<title>fleetmq</title>") && page.contains("/api/devices"));
    assert!(
        !page.contains("src=\"http")
            && !page.contains("href=\"http")
            && !page.contains("fetch(\"http"),
        "no external assets"
    );
}

/// The newest stored value of each series `device` sent, by name.
fn latest_by_name(hub: &Hub, device: &str) -> std::collections::HashMap<String, Value> {
    hub.telemetry_rows(device)
        .into_iter()
        .filter_map(|r| Some((r["name"].as_str()?.to_string(), r["value"].clone())))
        .collect()
}

#[test]
fn host_metrics_local_ingest_and_tagged_sends_reach_the_hub() {
    let _w = watchdog("host_ingest", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let _agent = start_agent(
        &hub.link(),
        dir.path(),
        "pi-h",
        "run",
        // After agent_config's [ingest]: StatsD folded for 200 ms.
        &agent_config("statsd_interval_ms = 200\n[host]\ninterval_ms = 200\n"),
        &[],
    );
    let data = dir.path().join("pi-h/data");

    // Host metrics: the groups every Linux has, and each other group
    // either reported or said to be skipped.
    let names = wait_for("host metrics at the hub", || {
        let names = latest_by_name(&hub, "pi-h");
        [
            "host.cpu.used_pct",
            "host.load1",
            "host.load15",
            "host.mem.total_bytes",
            "host.mem.used_pct",
            "host.uptime_s",
        ]
        .iter()
        .all(|n| names.contains_key(*n))
        .then_some(names)
    });
    let used = names["host.cpu.used_pct"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&used), "cpu {used}");
    assert!(names["host.mem.total_bytes"].as_i64().unwrap() > 0);
    let status = agent_status(&data);
    let skipped = status["host_skipped"].as_array().unwrap();
    for (group, prefix) in [
        ("disk", "host.disk.total_bytes{mount="),
        ("network", "host.net.rx_bytes{iface="),
        ("temperature", "host.temp_c{zone="),
        ("throttled", "host.pi.throttled"),
    ] {
        let reported = names.keys().any(|n| n.starts_with(prefix));
        let said = skipped
            .iter()
            .any(|s| s.as_str().unwrap().starts_with(&format!("{group}: ")));
        assert!(
            reported != said,
            "{group}: reported {reported}, skipped {said}: {skipped:?}"
        );
    }

    // StatsD and Influx over UDP, Influx over the Unix socket, and a
    // tagged `send`; one malformed line is counted, not fatal.
    let udp_addr = status["ingest"]["udp"].as_str().unwrap().to_string();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(
        b"door.opened:1|c|#site:lab\nenv,room=lab temp=21.5,hum=40i\nthis is not a line at all\n",
        &udp_addr,
    )
    .unwrap();
    let unix = std::os::unix::net::UnixDatagram::unbound().unwrap();
    unix.send_to(b"pump value=3i", data.join("ingest.sock"))
        .unwrap();
    run_ok(
        agent_command()
            .args(["send", "--data-dir"])
            .arg(&data)
            .args(["disk.free=5", "mount=/data"]),
    );
    let names = wait_for("ingested and sent samples at the hub", || {
        let names = latest_by_name(&hub, "pi-h");
        [
            "door.opened{site=lab}",
            "env.temp{room=lab}",
            "env.hum{room=lab}",
            "pump",
            "disk.free{mount=/data}",
        ]
        .iter()
        .all(|n| names.contains_key(*n))
        .then_some(names)
    });
    assert_eq!(names["door.opened{site=lab}"], 1);
    assert_eq!(names["env.temp{room=lab}"], 21.5);
    assert_eq!(names["env.hum{room=lab}"], 40);
    assert_eq!(names["pump"], 3);
    assert_eq!(names["disk.free{mount=/data}"], 5);
    let ingest = &agent_status(&data)["ingest"];
    assert_eq!(ingest["malformed"], 1, "{ingest}");
    assert!(
        ingest["last_error"]
            .as_str()
            .unwrap()
            .contains("this is not a line"),
        "{ingest}"
    );
    assert_eq!(ingest["samples"], 4, "{ingest}");

    // Tags are labels in Prometheus.
    let (_, body) = http("GET", &hub.endpoints["http"], "/metrics");
    assert!(
        body.contains("fleetmq_metric{device=\"pi-h\",metric=\"door.opened\",site=\"lab\"} 1 "),
        "{body}"
    );
}

/// A local program floods StatsD over the Unix socket (which makes it wait
/// rather than drop): 20,000 counter lines and 2,000 timings become a
/// few samples per interval, and the counter's samples add up to every
/// line sent.
#[test]
fn a_statsd_flood_is_folded_into_a_few_samples_per_interval() {
    let _w = watchdog("statsd flood", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let _agent = start_agent(
        &hub.link(),
        dir.path(),
        "pi-s",
        "run",
        // After agent_config's [ingest].
        &agent_config("statsd_interval_ms = 500\npercentiles = [50.0, 99.0]\n"),
        &[],
    );
    let data = dir.path().join("pi-s/data");
    let socket = data.join("ingest.sock");
    wait_for("the ingest socket", || socket.exists().then_some(()));
    let unix = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let hits = "hits:1|c\n".repeat(100);
    let timings: String = (1..=100).map(|v| format!("lat:{v}|ms\n")).collect();
    let started = std::time::Instant::now();
    for i in 0..200 {
        unix.send_to(hits.as_bytes(), &socket).unwrap();
        if i % 10 == 9 {
            unix.send_to(timings.as_bytes(), &socket).unwrap();
        }
        // About 10,000 lines a second: a chatty program, not a burst.
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent_ms = started.elapsed().as_millis() as u64;
    let rows_of = |name: &str| -> Vec<Value> {
        hub.telemetry_rows("pi-s")
            .into_iter()
            .filter(|r| r["name"] == name)
            .collect()
    };
    let sum = |rows: &[Value]| {
        rows.iter()
            .map(|r| r["value"].as_u64().unwrap())
            .sum::<u64>()
    };
    let counted = wait_for("every hit counted at the hub", || {
        let rows = rows_of("hits");
        (sum(&rows) == 20_000).then_some(rows)
    });
    // One sample per interval that had lines (and one more at most for
    // an interval cut by the sending's end).
    let most = sent_ms / 500 + 2;
    assert!(
        (counted.len() as u64) <= most,
        "{} samples for 20,000 lines in {sent_ms} ms",
        counted.len()
    );
    let counts = wait_for("every timing counted", || {
        let rows = rows_of("lat.count");
        (sum(&rows) == 2_000).then_some(rows)
    });
    assert!(counts.len() as u64 <= most);
    for (name, value) in [("lat.min", 1), ("lat.max", 100)] {
        let rows = rows_of(name);
        assert_eq!(rows.len(), counts.len(), "{name}");
        assert!(rows.iter().all(|r| r["value"] == value), "{name}: {rows:?}");
    }
    assert_eq!(rows_of("lat.p50").len(), counts.len());
    assert_eq!(rows_of("lat.p99").len(), counts.len());
    let ingest = &agent_status(&data)["ingest"];
    assert_eq!(ingest["statsd_lines"], 22_000, "{ingest}");
    assert_eq!(ingest["malformed"], 0, "{ingest}");
}

/// `fleetmq-hub telemetry --follow | head -1`: when the pipe closes, the
/// command ends quietly, as Unix tools do, instead of panicking.
#[test]
fn an_operator_command_piped_into_head_ends_quietly() {
    use std::io::BufRead as _;
    use std::os::unix::process::ExitStatusExt as _;
    let _w = watchdog("closed pipe", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let _agent = hub.agent("pi-p", &[]);
    wait_for("telemetry from pi-p", || {
        (!hub.telemetry_rows("pi-p").is_empty()).then_some(())
    });
    let mut follow = hub
        .operator_command(&["telemetry", "--follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(follow.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("pi-p"), "{first}");
    // The reader is gone; the next rows the agent sends end the command.
    let status = wait_for("the command to end", || follow.try_wait().unwrap());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follow.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A device that takes no jobs holds neither the jobs nor the results
/// connection; told by a reload to take them, it gets work-queue jobs at
/// once and its results arrive: the reload says `jobs` applied, so both
/// sockets connect then, not at its next connection to the hub.
#[test]
fn jobs_turned_on_by_a_reload_reach_the_device_at_once() {
    let _w = watchdog("jobs reload", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    // The suite's agent configuration on the hub's five sockets (as an
    // agent older than one connection), taking no jobs at first.
    let jobs = "[jobs]\nallow = [\"echo\", \"exec\"]\n";
    let none = agent_config_on_five("").replace(jobs, "[jobs]\nallow = []\n");
    assert_ne!(
        none,
        agent_config_on_five(""),
        "the suite's [jobs] line moved"
    );
    let agent = start_agent(&hub.link(), dir.path(), "pi-jr", "run", &none, &[]);
    hub.wait_answering("pi-jr");
    agent.wait_log("takes no jobs");
    // The hub's ports among the agent's peers, once each.
    let held = |names: &[&str]| -> Vec<u16> {
        let mut to: Vec<u16> = agent
            .tcp_peer_ports()
            .into_iter()
            .filter(|p| names.iter().any(|n| hub.port(n) == *p))
            .collect();
        to.dedup();
        to
    };
    // Telemetry, broadcasts and commands only: no work queue, no results.
    assert_eq!(
        held(&["jobs", "results"]),
        Vec::<u16>::new(),
        "{:?}",
        agent.tcp_peer_ports()
    );
    let config = dir.path().join("pi-jr/agent.toml");
    std::fs::write(&config, agent_config_on_five("")).unwrap();
    agent.signal(libc::SIGHUP);
    let reload = wait_for("the reload in the status", || {
        let r = agent_status(&dir.path().join("pi-jr/data"))["reload"].clone();
        (r["at_ms"].as_u64().unwrap() > 0).then_some(r)
    });
    assert_eq!(
        reload["applied"],
        serde_json::json!(["jobs.allow"]),
        "{reload}"
    );
    let echo = job_result(&hub, &["echo", "after the reload"]);
    assert_eq!(echo["state"], "done", "{echo}");
    assert_eq!(echo["device"], "pi-jr");
    assert_eq!(echo["outcome"]["stdout"], "after the reload");
    let all = ["telemetry", "broadcast", "commands", "jobs", "results"];
    let mut every: Vec<u16> = all.map(|n| hub.port(n)).to_vec();
    every.sort_unstable();
    assert_eq!(held(&all), every, "{:?}", agent.tcp_peer_ports());
}

#[test]
fn an_agent_on_one_connection_holds_one_and_takes_commands_and_jobs_on_it() {
    let _w = watchdog("one connection", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let agent = hub.agent("pi-one", &[]);
    hub.wait_answering("pi-one");
    agent.wait_log("travel on this one connection");

    // A command run on a worker: its reply goes up the same connection.
    let exec = hub.op(&["command", "pi-one", "exec", "--", "echo", "-n", "up"]);
    assert!(exec.ok, "{}", exec.stderr);
    assert_eq!(exec.json[0]["stdout"], "up");
    // Work-queue jobs, one answered at once and one run by a program.
    let echo = job_result(&hub, &["echo", "down and up"]);
    assert_eq!(
        (&echo["state"], &echo["device"]),
        (&"done".into(), &"pi-one".into()),
        "{echo}"
    );
    assert_eq!(echo["outcome"]["stdout"], "down and up");
    let run = job_result(&hub, &["exec", "--", "echo", "ran"]);
    assert_eq!(run["outcome"]["stdout"], "ran\n", "{run}");

    // Of the hub's five agent ports, it holds the telemetry one only.
    let all = ["telemetry", "broadcast", "commands", "jobs", "results"];
    let ports: Vec<u16> = all.map(|n| hub.port(n)).to_vec();
    let mut held: Vec<u16> = (agent.tcp_peer_ports().into_iter())
        .filter(|p| ports.contains(p))
        .collect();
    held.dedup();
    assert_eq!(
        held,
        vec![hub.port("telemetry")],
        "{:?}",
        agent.tcp_peer_ports()
    );
    let status = agent_status(&dir.path().join("pi-one/data"));
    assert_eq!(status["linked"], true, "{status}");
    assert_eq!(status["one_connection"], true, "{status}");
}

#[test]
fn sighup_applies_what_can_change_live_and_names_what_needs_a_restart() {
    let _w = watchdog("sighup", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let agent = start_agent(
        &hub.link(),
        dir.path(),
        "pi-r",
        "run",
        &agent_config("[host]\ninterval_ms = 200\n"),
        &[],
    );
    let data = dir.path().join("pi-r/data");
    let config = dir.path().join("pi-r/agent.toml");
    wait_for("memory metrics", || {
        latest_by_name(&hub, "pi-r")
            .contains_key("host.mem.used_pct")
            .then_some(())
    });

    // Only the load group from now on, and a socket option that needs a
    // restart.
    std::fs::write(
        &config,
        agent_config("[host]\ninterval_ms = 200\ncollect = [\"load\"]\n[net]\nlinger_ms = 100\n"),
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    let reload = wait_for("the reload in the status", || {
        let r = agent_status(&data)["reload"].clone();
        (r["at_ms"].as_u64().unwrap() > 0).then_some(r)
    });
    assert_eq!(
        reload["applied"],
        serde_json::json!(["host.collect"]),
        "{reload}"
    );
    assert_eq!(
        reload["needs_restart"],
        serde_json::json!(["net.linger_ms"]),
        "{reload}"
    );
    agent.wait_log("take effect only after a restart");
    let at = reload["at_ms"].as_u64().unwrap();
    let after = |hub: &Hub| -> Vec<String> {
        hub.telemetry_rows("pi-r")
            .into_iter()
            .filter(|r| r["ts_ms"].as_u64().unwrap() > at)
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .filter(|n| n.starts_with("host."))
            .collect()
    };
    let names = wait_for("load samples taken after the reload", || {
        let names = after(&hub);
        (names.iter().filter(|n| *n == "host.load1").count() >= 3).then_some(names)
    });
    assert!(
        names.iter().all(|n| n.starts_with("host.load")),
        "only load after the reload: {names:?}"
    );

    // A broken file changes nothing and says why; the agent runs on.
    std::fs::write(&config, "[host]\ncollect = [\"gpu\"]\n").unwrap();
    agent.signal(libc::SIGHUP);
    let reload = wait_for("the failed reload in the status", || {
        let r = agent_status(&data)["reload"].clone();
        (r["at_ms"].as_u64().unwrap() > at && !r["error"].as_str().unwrap().is_empty()).then_some(r)
    });
    assert!(
        reload["error"].as_str().unwrap().contains("\"gpu\""),
        "{reload}"
    );
    hub.wait_answering("pi-r");
}
