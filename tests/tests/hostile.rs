//! Hostile peers: each test attacks a running CURVE hub the way the internet
//! would, and checks that the hub counts the attack (in `fleetmq-hub stats`)
//! and keeps serving an honest agent.

use std::io::Write as _;
use std::net::TcpStream;
use std::time::Duration;

use fleetmq_protocol::{
    BatchBuilder, Heartbeat, OperatorFrame, OperatorRequest, Request, Target, Upstream, Value as V,
};
use fleetmq_tests::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

fn tmp() -> tempfile::TempDir {
    temp_dir("fleetmq-hostile-")
}

/// Waits until the hub's counter `name` reaches at least `n`.
fn wait_count(hub: &Hub, name: &str, n: u64) -> Value {
    wait_for(&format!("stats.{name} >= {n}"), || {
        let stats = hub.stats();
        (stats[name].as_u64().unwrap_or(0) >= n).then_some(stats)
    })
}

/// The honest agent `device` still gets new telemetry stored and answers.
fn still_served(hub: &Hub, device: &str) {
    let before = hub.telemetry_rows(device).len();
    wait_for("honest telemetry still stored", || {
        (hub.telemetry_rows(device).len() > before).then_some(())
    });
    let ping = hub.op(&["command", device, "ping"]);
    assert!(ping.ok, "honest agent answers: {}", ping.stderr);
}

/// Bytes from a small xorshift: the same "random" garbage every run.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn tcp_address(endpoint: &str) -> &str {
    endpoint.trim_start_matches("tcp://")
}

/// A CURVE hub with an honest agent, pi-ok, answering, and the key of an
/// enrolled insider (`name`) for the raw sockets a test attacks with.
struct Insider {
    hub: Hub,
    agent: Proc,
    link: Link,
    ctx: zmq::Context,
    keys: Keys,
}

impl Insider {
    fn start(dir: &std::path::Path, config: &str, name: &str) -> Insider {
        let hub = Hub::start(dir, config);
        let agent = hub.agent("pi-ok", &[]);
        hub.wait_answering("pi-ok");
        let link = hub.link();
        let keys = Keys::new();
        link.allow(name, &keys.public);
        Insider {
            hub,
            agent,
            link,
            ctx: zmq::Context::new(),
            keys,
        }
    }

    /// A raw socket with the insider's key.
    fn socket(&self, kind: zmq::SocketType) -> zmq::Socket {
        self.link.socket(&self.ctx, kind, &self.keys)
    }

    /// A telemetry DEALER with the insider's key, connected as the route
    /// `device@nonce`.
    fn dealer(&self, device: &str, nonce: &str) -> zmq::Socket {
        let s = self.socket(zmq::DEALER);
        s.set_identity(&route(device, nonce)).unwrap();
        s.connect(self.hub.telemetry()).unwrap();
        s
    }
}

#[test]
fn strangers_are_refused_at_the_handshake_and_counted() {
    let _w = watchdog("strangers", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let _agent = hub.agent("pi-ok", &[]);
    hub.wait_answering("pi-ok");
    let link = hub.link();
    let ctx = zmq::Context::new();

    // A CURVE client whose key nobody enrolled, posing as the honest device.
    let stranger = link.socket(&ctx, zmq::DEALER, &Keys::new());
    stranger.set_identity(b"pi-ok").unwrap();
    stranger.connect(hub.telemetry()).unwrap();
    let hello = Upstream::Heartbeat(Heartbeat { uptime_ms: 1 })
        .encode()
        .unwrap();
    stranger.send(&hello, zmq::DONTWAIT).ok();
    wait_count(&hub, "handshakes_refused", 1);

    // Plaintext clients against the CURVE hub, on two sockets.
    let mut plain = Vec::new();
    for (kind, ep) in [(zmq::DEALER, "telemetry"), (zmq::PUSH, "results")] {
        let s = ctx.socket(kind).unwrap();
        s.set_linger(0).unwrap();
        s.connect(&hub.endpoints[ep]).unwrap();
        s.send(&hello, zmq::DONTWAIT).ok();
        plain.push(s);
    }
    wait_count(&hub, "handshakes_failed", 2);

    // Random bytes straight into every agent-facing port, then the end of
    // the stream: garbage that happens to look like the start of a greeting
    // would otherwise keep libzmq waiting for the rest until its handshake
    // timeout.
    let before = hub.stats();
    let failed = before["handshakes_failed"].as_u64().unwrap();
    let ended = before["disconnects"].as_u64().unwrap();
    let mut streams = Vec::new();
    for (i, ep) in ["telemetry", "broadcast", "jobs", "results", "commands"]
        .iter()
        .enumerate()
    {
        let mut s = TcpStream::connect(tcp_address(&hub.endpoints[*ep])).unwrap();
        // The hub may cut us off before all of it is written or ended.
        let _ = s.write_all(&garbage(i as u64 + 7, 4096));
        let _ = s.shutdown(std::net::Shutdown::Write);
        streams.push(s);
    }
    // Every one of them is cut. libzmq reports a greeting it rejects as
    // ZMTP 1.0 only as a disconnect, so not each is a failed handshake.
    let stats = wait_count(&hub, "disconnects", ended + 5);
    eprintln!(
        "random bytes on 5 ports: {} handshakes failed, {} disconnects",
        stats["handshakes_failed"].as_u64().unwrap() - failed,
        stats["disconnects"].as_u64().unwrap() - ended
    );
    assert_eq!(stats["security"], "curve");
    assert_eq!(stats["devices_allowed"], 1);

    still_served(&hub, "pi-ok");
    // Nothing the strangers sent was taken for the honest device's.
    let log = hub.proc.log_text();
    assert!(
        log.contains("refused a key that is not enrolled"),
        "the refusal is logged with the key: {log}"
    );
}

#[test]
fn an_enrolled_peer_sending_garbage_or_posing_as_another_is_counted_and_dropped() {
    let _w = watchdog("insider", LIMIT);
    let dir = tmp();
    // Small frames, so "over the limit" is cheap to send.
    let x = Insider::start(dir.path(), "[net]\nmax_message_bytes = 65536\n", "pi-evil");
    let hub = &x.hub;

    let bad = x.socket(zmq::DEALER);
    bad.set_identity(&route("pi-evil", "evilevilevilevil"))
        .unwrap();
    bad.connect(hub.telemetry()).unwrap();
    let frames: [&[u8]; 6] = [
        b"",                             // empty
        b"\x02",                         // version, no kind
        b"\x09\x03\x00",                 // wrong version byte
        b"\x02\x03\xff\xff\xff",         // truncated body
        b"\x02\x04\xff\xff\xff\xff\x0f", // a string "longer" than the frame
        b"\x02\x7f hello",               // unknown kind
    ];
    for f in frames {
        bad.send(f, 0).unwrap();
    }
    bad.send_multipart([&b"\x02\x02"[..], b"extra", b"frames"], 0)
        .unwrap();
    // Each bad frame earns a refusal naming what was wrong.
    bad.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    let refusal = bad.recv_bytes(0).expect("a refusal");
    assert_eq!(&refusal[..2], b"\x02\x13");

    let results = x.socket(zmq::PUSH);
    results.connect(&hub.endpoints["results"]).unwrap();
    results.send(&b"\xde\xad\xbe\xef"[..], 0).unwrap();
    wait_count(hub, "frames_dropped", 8);

    // The same key, claiming to be the honest device: a sample it would
    // inject must never be stored as pi-ok's.
    let poser = x.socket(zmq::DEALER);
    poser
        .set_identity(&route("pi-ok", "posingposingposi"))
        .unwrap();
    poser.connect(hub.telemetry()).unwrap();
    let mut batch = BatchBuilder::new(1 << 40);
    batch
        .push_sample("evil.injected", 1, V::Int(1))
        .expect("a sample");
    poser
        .send(Upstream::Batch(batch.finish()).encode().unwrap(), 0)
        .unwrap();
    wait_count(hub, "impersonations", 1);

    // A frame over net.max_message_bytes: libzmq cuts the connection.
    let disconnects = hub.stats()["disconnects"].as_u64().unwrap();
    bad.send(vec![0u8; 100_000], 0).unwrap();
    wait_count(hub, "disconnects", disconnects + 1);

    still_served(hub, "pi-ok");
    let rows = hub.telemetry_rows("pi-ok");
    assert!(
        rows.iter().all(|r| r["name"] != "evil.injected"),
        "the posed sample was not stored"
    );
    assert!(
        hub.devices()
            .get("pi-evil")
            .is_none_or(|d| d["batches"] == 0)
    );
}

#[test]
fn an_enrolled_peer_cannot_take_over_another_devices_connections() {
    let _w = watchdog("takeover", LIMIT);
    let dir = tmp();
    let x = Insider::start(dir.path(), "", "pi-evil");
    let hub = &x.hub;

    // pi-evil claims pi-ok on the telemetry and commands sockets: with the
    // bare device id (what agents used to send) and with routes of its own.
    let claims = [b"pi-ok".to_vec(), route("pi-ok", "guessguessguess0")];
    let hello = Upstream::Heartbeat(Heartbeat { uptime_ms: 1 })
        .encode()
        .unwrap();
    let mut thieves = Vec::new();
    for claim in &claims {
        for socket in ["telemetry", "commands"] {
            let s = x.socket(zmq::DEALER);
            s.set_identity(claim).unwrap();
            s.connect(&hub.endpoints[socket]).unwrap();
            if socket == "commands" {
                // The REP envelope, as a device answering a command.
                s.send_multipart([&b""[..], &hello], 0).unwrap();
            } else {
                s.send(&hello, 0).unwrap();
            }
            thieves.push((socket, s));
        }
    }
    // And asks for every broadcast topic and for pi-ok's own: both refused.
    let sub = x.socket(zmq::SUB);
    sub.set_subscribe(b"").unwrap();
    sub.set_subscribe(b"dev/pi-ok/").unwrap();
    sub.connect(&hub.endpoints["broadcast"]).unwrap();
    wait_count(hub, "subscriptions_refused", 2);
    // The hub has heard each thief: three claims on another device's id,
    // and the bare id on the commands socket, which is not even a route
    // (dropped, as is the bare id on telemetry).
    wait_count(hub, "impersonations", 3);
    wait_count(hub, "frames_dropped", 2);

    // During the attempt pi-ok's commands, acks and announcements go on.
    for _ in 0..5 {
        let ping = hub.op(&["command", "pi-ok", "ping"]);
        assert!(ping.ok, "pi-ok answers during the attempt: {}", ping.stderr);
    }
    let secret = "for pi-ok alone";
    assert!(hub.op(&["broadcast", "--device", "pi-ok", secret]).ok);
    still_served(hub, "pi-ok");
    x.agent.wait_log(secret);

    // The thieves got nothing of pi-ok's: at most a refusal of their own
    // messages on telemetry, nothing at all on commands.
    for (socket, s) in &thieves {
        while let Ok(frames) = s.recv_multipart(zmq::DONTWAIT) {
            let last = frames.last().unwrap();
            let got = fleetmq_protocol::Downstream::decode(last);
            assert!(
                *socket == "telemetry"
                    && matches!(got, Ok(fleetmq_protocol::Downstream::Refusal(_))),
                "a thief on {socket} received {got:?} ({frames:?})"
            );
        }
    }
    while let Ok(frames) = sub.recv_multipart(zmq::DONTWAIT) {
        let topic = String::from_utf8_lossy(&frames[0]);
        assert!(
            !topic.starts_with("dev/"),
            "a device topic was published: {topic}"
        );
        assert!(
            !frames
                .iter()
                .any(|f| f.windows(secret.len()).any(|w| w == secret.as_bytes())),
            "pi-ok's announcement was on a topic any device can read"
        );
    }

    // After the attempt, pi-ok is served as before.
    drop(thieves);
    drop(sub);
    still_served(hub, "pi-ok");
}

#[test]
fn a_job_result_counts_only_from_the_device_the_attempt_was_given_to() {
    let _w = watchdog("forged results", LIMIT);
    let dir = tmp();
    let x = Insider::start(dir.path(), "", "pi-evil");
    let (hub, agent) = (&x.hub, &x.agent);
    // pi-evil connects only a results socket, so the job goes to pi-ok.
    let forger = x.socket(zmq::PUSH);
    forger.connect(&hub.endpoints["results"]).unwrap();

    let r = hub.op(&["job", "submit", "exec", "--", "sleep", "2"]);
    assert!(r.ok, "{}", r.stderr);
    let id = r.json[0]["id"].as_u64().unwrap();
    agent.wait_log("running job");
    // While pi-ok runs it, pi-evil claims to have finished it: with a
    // guessed token, and with none.
    for token in [0, 1, 0x5eed_5eed] {
        let forged = fleetmq_protocol::ResultFrame::from(fleetmq_protocol::JobResult {
            id,
            attempt: 1,
            device: "pi-evil".into(),
            outcome: fleetmq_protocol::Outcome::Completed(fleetmq_protocol::Output {
                exit_code: Some(0),
                stdout: "forged".into(),
                stderr: String::new(),
                truncated: false,
                duration_ms: 1,
            }),
            token,
        });
        forger.send(forged.encode().unwrap(), 0).unwrap();
    }
    wait_count(hub, "results_refused", 3);
    let shown = hub.op(&["job", "show", &id.to_string()]);
    assert_eq!(
        shown.json[0]["state"], "running",
        "unaffected: {:?}",
        shown.json
    );

    // The real run finishes it, as pi-ok's.
    let job = wait_for("the job done by pi-ok", || {
        let r = hub.op(&["job", "show", &id.to_string()]);
        (r.json[0]["state"] == "done").then(|| r.json[0].clone())
    });
    assert_eq!(job["device"], "pi-ok");
    assert_eq!(job["outcome"]["exit_code"], 0);
    assert_ne!(job["outcome"]["stdout"], "forged");
    assert!(hub.proc.log_text().contains("refused a job result"));
}

#[test]
fn escape_sequences_from_a_device_never_reach_the_operators_terminal() {
    let _w = watchdog("terminal injection", LIMIT);
    let dir = tmp();
    let x = Insider::start(dir.path(), "", "pi-evil");
    let hub = &x.hub;
    let evil = x.dealer("pi-evil", "evilevilevilevil");
    let hello = Upstream::from(fleetmq_protocol::Hello {
        agent_version: "\x1b[2J\x1b[H1.0".into(),
        arch: "arm\x1b]0;owned\x07".into(),
        os: "linux".into(),
        hostname: "pi\rFAKE".into(),
        groups: vec![],
        heartbeat_ms: 60_000,
        started_ms: 1,
    });
    evil.send(hello.encode().unwrap(), 0).unwrap();
    let mut batch = BatchBuilder::new(1);
    batch
        .push_chat(1_000, "\x1b[31mred\u{9b}2J\u{202e}txt.exe")
        .unwrap();
    evil.send(Upstream::Batch(batch.finish()).encode().unwrap(), 0)
        .unwrap();
    wait_for("the chat line stored", || {
        let chat = hub.op(&["chat"]);
        chat.json
            .iter()
            .any(|r| r["device"] == "pi-evil")
            .then_some(())
    });

    let data = dir.path().join("data");
    for what in ["chat", "devices"] {
        let out = run_ok(hub_command().args([what, "--data-dir"]).arg(&data));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("pi-evil"), "{text}");
        for bad in ['\x1b', '\x07', '\r', '\u{9b}', '\u{202e}'] {
            assert!(!text.contains(bad), "{what} printed {bad:?} raw: {text:?}");
        }
        assert!(text.contains("\\u{1b}"), "{what} shows the escape: {text}");
    }
    // JSON stays exact.
    let chat = hub.op(&["chat"]);
    assert!(
        chat.json
            .iter()
            .any(|r| r["text"] == "\x1b[31mred\u{9b}2J\u{202e}txt.exe"),
        "{:?}",
        chat.json
    );
}

/// Whatever names, tags, values and times an enrolled device sends, the
/// hub's `/metrics` stays a scrape Prometheus takes: checked with
/// Prometheus's own `promtool check metrics`.
#[test]
fn metrics_stay_valid_whatever_a_device_sends() {
    let _w = watchdog("metrics validity", LIMIT);
    let promtool = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    assert!(
        promtool.is_ok_and(|o| o.status.success()),
        "promtool is missing: scripts/test.sh installs it (Debian package prometheus)"
    );
    let dir = tmp();
    let x = Insider::start(dir.path(), "", "pi-evil");
    let hub = &x.hub;
    let evil = x.dealer("pi-evil", "evilevilevilevil");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Tags named like the hub's own labels, Prometheus's reserved prefix,
    // a name that is taken after one renaming; quotes and backslashes in
    // values; every special float.
    let mut batch = BatchBuilder::new(1);
    let hostile = [
        ("temp{device=hall}", V::Float(f64::NAN)),
        (
            "temp{__name__=up,metric=x,tag_device=sda}",
            V::Float(f64::INFINITY),
        ),
        ("temp{device=a,tag_device=b}", V::Float(f64::NEG_INFINITY)),
        ("odd\"name\\{q=say\"hi\\}", V::Int(i64::MIN)),
        ("big", V::Float(f64::MAX)),
    ];
    for (name, value) in hostile {
        batch.push_sample(name, now, value).unwrap();
    }
    evil.send(Upstream::Batch(batch.finish()).encode().unwrap(), 0)
        .unwrap();
    // A time no i64 holds is refused at ingest, with its number.
    let mut late = BatchBuilder::new(2);
    late.push_sample("late", (1 << 63) + 5, V::Int(1)).unwrap();
    evil.send(Upstream::Batch(late.finish()).encode().unwrap(), 0)
        .unwrap();
    let rejected = wait_for("batch 2 rejected", || {
        let frames = evil.recv_multipart(zmq::DONTWAIT).ok()?;
        match fleetmq_protocol::Downstream::decode(frames.last()?) {
            Ok(fleetmq_protocol::Downstream::Rejected(r)) => Some(r),
            _ => None,
        }
    });
    assert_eq!(rejected.seq, 2);
    assert!(rejected.reason.contains("outside"), "{}", rejected.reason);

    let url = hub.endpoints["http"].clone();
    let body = wait_for("pi-evil's series in /metrics", || {
        let (status, body) = http("GET", &url, "/metrics");
        assert_eq!(status, 200, "{body}");
        let seen = body
            .lines()
            .filter(|l| l.starts_with("fleetmq_metric{device=\"pi-evil\""))
            .count();
        (seen == hostile.len()).then_some(body)
    });
    assert!(!body.contains("metric=\"late\""), "{body}");
    assert!(
        body.contains("tag_tag_device=\"a\",tag_device=\"b\""),
        "{body}"
    );
    assert!(body.contains("+Inf") && body.contains("-Inf") && body.contains("NaN"));
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool refused the scrape: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies the regular files under `from` to `to` (sockets are skipped).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// `fleetmq-agent send NAME=VALUE` through the agent whose data is `data`.
fn send_marker(data: &std::path::Path, sample: &str) {
    run_ok(
        agent_command()
            .args(["send", "--data-dir"])
            .arg(data)
            .arg(sample),
    );
}

/// Waits until `name` is among `device`'s stored samples.
fn wait_stored(hub: &Hub, device: &str, name: &str) {
    wait_for(&format!("{name} stored for {device}"), || {
        hub.telemetry_rows(device)
            .iter()
            .any(|r| r["name"] == name)
            .then_some(())
    });
}

#[test]
fn a_cloned_sd_card_and_a_wiped_one_are_told_and_lose_nothing() {
    let _w = watchdog("clones", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let link = hub.link();
    // Resends back off to 2 s at most, so the test need not wait minutes.
    let config = agent_config("").replace(
        "ack_timeout_ms = 500\n",
        "ack_timeout_ms = 500\nack_timeout_max_ms = 2000\n",
    );
    let mut original = start_agent(&link, dir.path(), "pi-c", "run", &config, &[]);
    hub.wait_answering("pi-c");
    let data = dir.path().join("pi-c/data");
    send_marker(&data, "before.clone=1");
    wait_stored(&hub, "pi-c", "before.clone");

    // A copy of the SD card: the same key, id, sequence file and spool.
    let clone_dir = dir.path().join("clone");
    let clone_data = clone_dir.join("pi-c/data");
    copy_dir(&data, &clone_data);
    let clone = start_agent(&link, &clone_dir, "pi-c", "run", &config, &[]);
    clone.wait_log("another agent is connected as pi-c from 127.0.0.1: is this SD card a clone?");
    let conflicts = wait_for("the conflict shown in devices", || {
        let d = hub.devices().get("pi-c").cloned()?;
        (d["conflicts"].as_u64()? >= 1).then_some(d)
    });
    assert_eq!(conflicts["conflict_address"], "127.0.0.1");
    assert_eq!(
        conflicts["online"], true,
        "the first agent keeps the device"
    );
    assert!(hub.stats()["connection_conflicts"].as_u64().unwrap() >= 1);
    // Each side takes a record while both run.
    send_marker(&data, "original.during=1");
    send_marker(&clone_data, "clone.during=1");
    wait_stored(&hub, "pi-c", "original.during");
    let ping = hub.op(&["command", "pi-c", "status"]);
    assert!(ping.ok, "the device answers: {}", ping.stderr);

    // The original stops: the clone takes over and what it held arrives.
    original.signal(libc::SIGTERM);
    original.wait_exit(Duration::from_secs(10));
    wait_stored(&hub, "pi-c", "clone.during");
    drop(clone);

    // A wiped data directory under the same key and id: numbering starts
    // at 1 again, over numbers the hub holds with other samples.
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "agent.key" || name == "agent.pub" || name.ends_with(".log") {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let renumbered = hub.stats()["batches_renumbered"].as_u64().unwrap();
    let wiped = start_agent(&link, dir.path(), "pi-c", "run", &config, &[]);
    wiped.wait_log("agent starting");
    send_marker(&data, "after.wipe=1");
    wait_stored(&hub, "pi-c", "after.wipe");
    wiped.wait_log("numbering on from there; nothing is lost");
    assert!(hub.stats()["batches_renumbered"].as_u64().unwrap() > renumbered);
    let status = agent_status(&data);
    assert!(
        status["batches"]["renumbered"].as_u64().unwrap() >= 1,
        "{status}"
    );
}

#[test]
fn a_flooding_device_is_rate_limited_while_others_are_served() {
    let _w = watchdog("flood", LIMIT);
    let dir = tmp();
    let config = "[security]\ndevice_rate = 50\ndevice_burst = 50\n";
    let x = Insider::start(dir.path(), config, "pi-flood");
    let hub = &x.hub;
    let flood = x.socket(zmq::DEALER);
    flood
        .set_identity(&route("pi-flood", "floodfloodflood0"))
        .unwrap();
    flood.set_sndhwm(0).unwrap();
    flood.connect(hub.telemetry()).unwrap();
    let beat = Upstream::Heartbeat(Heartbeat { uptime_ms: 1 })
        .encode()
        .unwrap();
    for _ in 0..5000 {
        flood.send(&beat, 0).unwrap();
    }
    // 5000 at once against 50 a second with a burst of 50: almost all over.
    let stats = wait_count(hub, "rate_limited", 2500);
    eprintln!(
        "flood of 5000: {} rate limited",
        stats["rate_limited"].as_u64().unwrap()
    );
    still_served(hub, "pi-ok");
    assert!(
        hub.proc.log_text().contains("over its rate limit"),
        "logged once"
    );
}

/// Valid but huge: an enrolled device sends one batch of 20,001 empty chat
/// lines, then 30 of 20,000 as fast as it can. Each is within the
/// message rate; the hub counts them in work, holds back what is over the
/// device's budget (Throttled, naming each batch), rejects the oversized
/// one, and serves the honest agent meanwhile.
#[test]
fn a_valid_but_huge_flood_is_held_to_the_devices_budget() {
    let _w = watchdog("work flood", LIMIT);
    let dir = tmp();
    let config = "[limits]\ndevice_records_per_s = 2000\ndevice_records_burst = 20000\n";
    let x = Insider::start(dir.path(), config, "pi-flood");
    let hub = &x.hub;
    let flood = x.dealer("pi-flood", "floodfloodflood1");
    let huge = |seq: u64, lines: usize| {
        let mut b = BatchBuilder::new(seq);
        for _ in 0..lines {
            b.push_chat(1_000, "").unwrap();
        }
        Upstream::Batch(b.finish()).encode().unwrap()
    };
    // The oversized one first: later, while the device is told to wait,
    // its batches are answered from their number without being read.
    flood.send(huge(31, 20_001), 0).unwrap();
    let sent = std::time::Instant::now();
    for seq in 1..=30u64 {
        flood.send(huge(seq, 20_000), 0).unwrap();
    }
    let (mut acked, mut throttled, mut rejected) = (Vec::new(), Vec::new(), Vec::new());
    wait_for("an answer to every batch", || {
        while let Ok(frames) = flood.recv_multipart(zmq::DONTWAIT) {
            match fleetmq_protocol::Downstream::decode(frames.last()?) {
                Ok(fleetmq_protocol::Downstream::Ack(a)) => acked.push(a.seq),
                Ok(fleetmq_protocol::Downstream::Throttled(t)) => throttled.push(t),
                Ok(fleetmq_protocol::Downstream::Rejected(r)) => rejected.push(r),
                _ => {}
            }
        }
        (acked.len() + throttled.len() + rejected.len() >= 31).then_some(())
    });
    let elapsed_s = sent.elapsed().as_secs_f64();
    eprintln!(
        "work flood: {} stored, {} throttled, {} rejected in {elapsed_s:.2} s",
        acked.len(),
        throttled.len(),
        rejected.len()
    );
    // The burst and the rate for the time it took, and not all 30.
    let most = 1.0 + (elapsed_s * 2_000.0 / 20_000.0).ceil();
    assert!(
        !acked.is_empty() && acked.len() as f64 <= most,
        "{} of 30 batches stored in {elapsed_s:.1} s",
        acked.len()
    );
    assert_eq!(
        acked.len() + throttled.len(),
        30,
        "every batch answered once"
    );
    let t = &throttled[0];
    assert!(t.retry_after_ms > 0 && t.retry_after_ms <= 10_000, "{t:?}");
    assert!(t.reason.contains("records a second"), "{}", t.reason);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].seq, 31);
    assert!(
        rejected[0].reason.contains("20001 records"),
        "{}",
        rejected[0].reason
    );
    let stats = hub.stats();
    assert_eq!(stats["batches_throttled"], throttled.len() as u64);
    assert_eq!(stats["batches_rejected"], 1);
    still_served(hub, "pi-ok");
    assert!(hub.proc.log_text().contains("over its budget"), "logged");
}

/// An operator asks for a series no row has, which scans the whole store
/// (4 million samples here): while the scan runs, on the hub's readers,
/// the honest agent's telemetry is stored and a ping is answered.
#[test]
fn a_scan_of_the_whole_store_does_not_stall_the_fleet() {
    let _w = watchdog("scan", LIMIT);
    let dir = tmp();
    let config =
        "[security]\ndevice_rate = 0\n[limits]\ndevice_records_per_s = 0\ndevice_bytes_per_s = 0\n";
    let x = Insider::start(dir.path(), config, "pi-fill");
    let hub = &x.hub;
    let fill = x.dealer("pi-fill", "fillfillfillfill");
    // 200 batches of 20,000 samples: one encoding, its number spliced in.
    let mut b = BatchBuilder::new(0);
    for i in 0..20_000u32 {
        b.push_sample(&format!("s{}", i % 10), 1_000, V::Int(i64::from(i)))
            .unwrap();
    }
    let template = Upstream::Batch(b.finish()).encode().unwrap();
    for seq in 1..=200u64 {
        let mut frame = template[..2].to_vec();
        fleetmq_protocol::envelope::push_varint(&mut frame, seq);
        frame.extend_from_slice(&template[3..]);
        fill.send(frame, 0).unwrap();
    }
    let mut acked = 0;
    wait_for("the store filled", || {
        while let Ok(frames) = fill.recv_multipart(zmq::DONTWAIT) {
            if let Ok(fleetmq_protocol::Downstream::Ack(_)) =
                fleetmq_protocol::Downstream::decode(frames.last()?)
            {
                acked += 1;
            }
        }
        (acked == 200).then_some(())
    });

    let ctx = zmq::Context::new();
    let scan = ctx.socket(zmq::REQ).unwrap();
    scan.set_linger(0).unwrap();
    scan.connect(&hub.endpoints["operator"]).unwrap();
    let request = OperatorFrame::from(OperatorRequest {
        id: 77,
        request: Request::Telemetry(fleetmq_protocol::TelemetryQuery {
            device: None,
            name: Some("no.such.series".into()),
            after_id: 0,
            limit: 10,
            since_ms: 0,
            until_ms: 0,
            newest: false,
            tags: vec![],
        }),
    });
    scan.send(request.encode().unwrap(), 0).unwrap();
    still_served(hub, "pi-ok");
    let mut items = [scan.as_poll_item(zmq::POLLIN)];
    zmq::poll(&mut items, 0).unwrap();
    assert!(
        !items[0].is_readable(),
        "the scan finished before the fleet was served: too small a store to show anything"
    );
    zmq::poll(&mut items, LIMIT.as_millis() as i64).unwrap();
    assert!(items[0].is_readable(), "the scan was answered");
    let reply = scan.recv_bytes(0).unwrap();
    match fleetmq_protocol::OperatorReplyFrame::decode(&reply) {
        Ok(fleetmq_protocol::OperatorReplyFrame::Response(r)) => {
            assert_eq!(r.id, 77);
            assert!(
                matches!(&r.response, fleetmq_protocol::Response::Telemetry(rows) if rows.is_empty()),
                "{:?}",
                r.response
            );
        }
        other => panic!("{other:?}"),
    }
}

/// 200 clients that never finish a request and one that pipelines 2,000
/// requests without reading an answer: /health still answers within a
/// second, pipelined requests are answered in order, and the hub does not
/// spend a thread per connection.
#[test]
fn no_http_client_can_block_another() {
    use std::io::{Read as _, Write as _};
    let _w = watchdog("http clients", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let addr = hub.endpoints["http"]
        .trim_start_matches("http://")
        .to_string();
    let slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let mut greedy = TcpStream::connect(&addr).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let writer = std::thread::spawn(move || {
        // The fleet page: its answers fill the socket's buffers quickly.
        let one = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut sent = 0;
        while sent < 2_000 && greedy.write_all(one).is_ok() {
            sent += 1;
        }
        (greedy, sent)
    });
    let health = |_| {
        let t = std::time::Instant::now();
        let (status, body) = http("GET", &hub.endpoints["http"], "/health");
        assert_eq!(status, 200, "{body}");
        t.elapsed()
    };
    let mut took: Vec<Duration> = (0..10).map(health).collect();
    took.sort();
    eprintln!("/health beside 200 slow clients and a pipelining one: {took:?}");
    assert!(took[9] < Duration::from_secs(1), "{took:?}");
    // The hub holds every connection without a thread for each.
    let status = std::fs::read_to_string(format!("/proc/{}/status", hub.proc.pid())).unwrap();
    let threads: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(threads < 40, "{threads} threads for 201 HTTP connections");
    // Pipelined requests are answered in order.
    let mut piped = TcpStream::connect(&addr).unwrap();
    piped
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    piped
        .write_all(
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /api/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut text = String::new();
    piped.read_to_string(&mut text).unwrap();
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "404", "200"], "{text}");
    let (i_health, i_stats) = (
        text.find("\"status\":\"ok\"").unwrap(),
        text.find("batches_stored").unwrap(),
    );
    assert!(i_health < i_stats, "in order: {text}");
    drop(slow);
    let (_, sent) = writer.join().unwrap();
    assert!(sent > 0);
}

#[test]
fn a_subscriber_that_never_reads_does_not_stall_the_hub() {
    let _w = watchdog("slow subscriber", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let listener = hub.agent("pi-ok", &[]);
    hub.wait_answering("pi-ok");
    let link = hub.link();
    let ctx = zmq::Context::new();
    let keys = Keys::new();
    link.allow("pi-slow", &keys.public);
    let slow = link.socket(&ctx, zmq::SUB, &keys);
    slow.set_rcvhwm(1).unwrap();
    slow.set_subscribe(b"group/flooded/").unwrap();
    slow.connect(&hub.endpoints["broadcast"]).unwrap();

    // Many large announcements for a group only the slow subscriber hears
    // (pi-slow names its own groups), straight to the operator socket.
    let op = ctx.socket(zmq::DEALER).unwrap();
    op.set_linger(0).unwrap();
    op.set_rcvtimeo(WAIT.as_millis() as i32).unwrap();
    op.connect(&hub.endpoints["operator"]).unwrap();
    let text = "x".repeat(16 * 1024);
    let n = 3000u64;
    for id in 1..=n {
        let req = OperatorFrame::Request(OperatorRequest {
            id,
            request: Request::Broadcast {
                target: if id == n {
                    Target::All
                } else {
                    Target::Group("flooded".into())
                },
                text: if id == n {
                    "the last one".into()
                } else {
                    text.clone()
                },
            },
        })
        .encode()
        .unwrap();
        op.send_multipart([&b""[..], &req], 0).unwrap();
        // Every request is answered: the hub never blocks on the reader.
        let reply = op.recv_multipart(0).expect("the hub answers");
        assert_eq!(reply.len(), 2);
    }
    // The honest agent hears the last announcement after all the rest.
    listener.wait_log("the last one");
    let rss = std::fs::read_to_string(format!("/proc/{}/status", hub.proc.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    eprintln!("hub after {n} x 16 KiB to a subscriber that never reads: {rss}");
    still_served(&hub, "pi-ok");
}

#[test]
fn a_device_on_one_connection_that_never_reads_is_told_about_not_waited_for() {
    let _w = watchdog("never reads", LIMIT);
    let dir = tmp();
    let x = Insider::start(dir.path(), "", "pi-stuck");
    let hub = &x.hub;

    // pi-stuck says Hello in group "stuck", offers to carry everything on
    // its connection, and then never reads (a kernel buffer of 4 KB).
    let stuck = x.socket(zmq::DEALER);
    stuck.set_rcvbuf(4096).unwrap();
    stuck.set_rcvhwm(1).unwrap();
    stuck
        .set_identity(&route("pi-stuck", "stuckstuckstuck0"))
        .unwrap();
    stuck.connect(hub.telemetry()).unwrap();
    let hello = Upstream::Hello(fleetmq_protocol::Hello {
        agent_version: "0.1.0".into(),
        arch: "x86_64".into(),
        os: "linux".into(),
        hostname: "stuck".into(),
        groups: vec!["stuck".into()],
        heartbeat_ms: 60_000,
        started_ms: 1,
    });
    let offer = Upstream::Offer(fleetmq_protocol::Offer(fleetmq_protocol::Abilities {
        job_kinds: vec![],
        exec_programs: vec![],
        config_version: 0,
        one_connection: true,
        chat: false,
        job_slots: 0,
        hello_on_clock_step: false,
        facts: fleetmq_protocol::DeviceFacts::default(),
    }));
    stuck.send(hello.encode().unwrap(), 0).unwrap();
    stuck.send(offer.encode().unwrap(), 0).unwrap();
    wait_for("pi-stuck online", || {
        hub.devices()
            .get("pi-stuck")
            .filter(|d| d["online"] == true)
            .map(|_| ())
    });

    // Announcements for its group go down its connection until its queue
    // ([net] send_hwm, 1,000) is full behind the full TCP buffers.
    let op = x.ctx.socket(zmq::DEALER).unwrap();
    op.set_linger(0).unwrap();
    op.set_rcvtimeo(30_000).unwrap();
    op.connect(&hub.endpoints["operator"]).unwrap();
    let text = "x".repeat(16 * 1024);
    let mut id = 0u64;
    let undelivered = || hub.stats()["messages_undelivered"].as_u64().unwrap_or(0);
    while undelivered() == 0 {
        for _ in 0..100 {
            id += 1;
            let req = OperatorFrame::Request(OperatorRequest {
                id,
                request: Request::Broadcast {
                    target: Target::Group("stuck".into()),
                    text: text.clone(),
                },
            })
            .encode()
            .unwrap();
            op.send_multipart([&b""[..], &req], 0).unwrap();
            op.recv_multipart(0)
                .expect("the hub answers every broadcast");
        }
        assert!(id < 20_000, "{id} announcements of 16 KiB and none dropped");
    }
    hub.proc
        .wait_log("the device is not reading what the hub sends and its queue is full");

    // A command to it fails at once, saying why, instead of timing out.
    let ping = hub.op(&["command", "pi-stuck", "ping", "--timeout-ms", "60000"]);
    assert!(!ping.ok);
    assert!(
        ping.stderr.contains("not reading what the hub sends"),
        "{}",
        ping.stderr
    );
    // Everyone else is served as before.
    still_served(hub, "pi-ok");

    // Once it reads, what the hub sends reaches it again, and the log
    // says the episode is over.
    // It reads until nothing came for 2 s.
    stuck.set_rcvtimeo(2_000).unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = 0u64;
        while stuck.recv_multipart(0).is_ok() {
            got += 1;
        }
        got
    });
    wait_for("pi-stuck reads again", || {
        let req = OperatorFrame::Request(OperatorRequest {
            id: {
                id += 1;
                id
            },
            request: Request::Broadcast {
                target: Target::Group("stuck".into()),
                text: "are you there".into(),
            },
        })
        .encode()
        .unwrap();
        op.send_multipart([&b""[..], &req], 0).unwrap();
        op.recv_multipart(0).expect("the hub answers");
        hub.proc
            .log_text()
            .contains("the device reads again")
            .then_some(())
    });
    let got = reader.join().unwrap();
    assert!(got >= 1_000, "pi-stuck read {got} messages once it read");
    still_served(hub, "pi-ok");
}

#[test]
fn a_device_whose_groups_the_allow_list_pins_cannot_name_others() {
    let _w = watchdog("pinned groups", LIMIT);
    pinned_agent(&agent_config(""));
}

#[test]
fn an_agent_on_five_sockets_hears_the_groups_it_is_pinned_to() {
    let _w = watchdog("pinned groups on five sockets", LIMIT);
    pinned_agent(&agent_config_on_five(""));
}

/// An agent with `config`, in "south" by its configuration and pinned to
/// "north", is in "north" (and is told so), then pinned to "south".
fn pinned_agent(config: &str) {
    let dir = tmp();
    let hub = Hub::start(dir.path(), "");
    let link = hub.link();
    let key = link.enrol(&dir.path().join("pi-pinned/data"), "pi-pinned");
    let pin = |groups: &str| link.pin("pi-pinned", &key, groups);
    pin("north");
    // The pin is in force before the device connects.
    hub.proc.wait_log("pinned=1");
    // Its own configuration says it is in "south".
    let agent = start_agent(&link, dir.path(), "pi-pinned", "run", config, &["south"]);
    hub.wait_answering("pi-pinned");
    let groups = || hub.devices()["pi-pinned"]["groups"].clone();
    assert_eq!(groups(), serde_json::json!(["north"]));
    hub.proc
        .wait_log("names other groups than its allow-list entry pins");
    // The agent is told, says so, and reports the pinned groups.
    agent.wait_log("pins this device to other groups than its config names");
    let status = agent_status(&dir.path().join("pi-pinned/data"));
    assert_eq!(status["groups"], serde_json::json!(["north"]), "{status}");

    // Sent until heard: on five sockets the SUB's subscriptions reach the
    // hub on their own connection, after the agent answers commands.
    let hears = |group: &str, text: &str| {
        wait_for(&format!("{text:?} heard"), || {
            assert!(hub.op(&["broadcast", "--group", group, text]).ok);
            agent.log_text().contains(text).then_some(())
        })
    };
    // What is for "north" reaches it; what is meant for "south" does not
    // (it would come before the second "north", on the same connection).
    hears("north", "for the north");
    assert!(
        hub.op(&["broadcast", "--group", "south", "for the south"])
            .ok
    );
    hears("north", "north again");
    assert!(!agent.log_text().contains("for the south"));
    // On five sockets it asked for nothing it may not hear.
    assert_eq!(hub.stats()["subscriptions_refused"], 0);

    // Pinned anew while it is online: it is asked for a Hello, and its
    // groups are the new pin within a second or two.
    pin("south");
    wait_for("pi-pinned in south", || {
        (groups() == serde_json::json!(["south"])).then_some(())
    });
    hears("south", "south again");
    // The agent subscribed to its new groups before its SUB connected again.
    assert_eq!(hub.stats()["subscriptions_refused"], 0);
}

#[test]
fn a_device_on_five_sockets_is_subscribed_only_to_what_it_may_hear() {
    let _w = watchdog("subscriptions", LIMIT);
    let dir = tmp();
    let x = Insider::start(dir.path(), "", "pi-sub");
    let hub = &x.hub;
    let pin = |groups: &str| x.link.pin("pi-sub", &x.keys.public, groups);
    pin("north");
    // The pin is in force before the SUB connects.
    hub.proc.wait_log("pinned=1");

    // pi-sub's SUB asks for every topic, a group outside its pin, another
    // device's topic, and (allowed) everyone's and its pinned group's.
    let sub = x.socket(zmq::SUB);
    for topic in [
        "",
        "group/",
        "group/south/",
        "dev/pi-ok/",
        "group/north/",
        "all/",
    ] {
        sub.set_subscribe(topic.as_bytes()).unwrap();
    }
    sub.connect(&hub.endpoints["broadcast"]).unwrap();
    wait_count(hub, "subscriptions_refused", 4);
    hub.proc.wait_log("refused a broadcast subscription");

    // Each announcement names its group; a PUB connection keeps order, so
    // once the marker for everyone is heard, whatever came before it has.
    let heard = |group: &str, marker: &str| -> Vec<String> {
        // The first for `group` is sent until it is heard: the hub applies
        // subscriptions as it reads them.
        let mut texts = Vec::new();
        wait_for(&format!("{group} heard"), || {
            assert!(hub.op(&["broadcast", "--group", group, group]).ok);
            let got = sub.recv_multipart(0).ok()?;
            texts.push(String::from_utf8_lossy(got.last()?).into_owned());
            texts.iter().any(|t| t.contains(group)).then_some(())
        });
        for other in ["north", "south", "flooded"] {
            assert!(hub.op(&["broadcast", "--group", other, other]).ok);
        }
        assert!(hub.op(&["broadcast", marker]).ok);
        loop {
            let got = sub.recv_multipart(0).expect("the marker comes");
            let text = String::from_utf8_lossy(got.last().unwrap()).into_owned();
            let done = text.contains(marker);
            texts.push(text);
            if done {
                return texts;
            }
        }
    };
    sub.set_rcvtimeo(200).unwrap();
    let texts = heard("north", "end of the first");
    let heard_any = |word: &str| texts.iter().any(|t| t.contains(word));
    assert!(
        !heard_any("south"),
        "south reached a device pinned to north: {texts:?}"
    );
    assert!(
        !heard_any("flooded"),
        "a prefix subscription heard others: {texts:?}"
    );

    // Pinned anew: the hub cuts its broadcast connection, the SUB connects
    // again, and its subscriptions are checked against the new pin.
    pin("south");
    hub.proc.wait_log("the device's broadcast connection cut");
    let texts = heard("south", "end of the second");
    let heard_any = |word: &str| texts.iter().any(|t| t.contains(word));
    assert!(
        !heard_any("north"),
        "north reached it after it was pinned to south: {texts:?}"
    );
    assert!(!heard_any("flooded"), "{texts:?}");
    still_served(hub, "pi-ok");
}

/// Another user on the hub's machine. On loopback TCP any local user may
/// act as the operator (and so run programs on every device that allows
/// it), so a hub where others log in puts its operator socket in a Unix
/// socket only its own user may open, as the packaged hub does. Another
/// user is told so at once; the hub's own user, its HTTP side (which asks
/// through that socket) and its stop are as before.
#[test]
fn another_local_user_cannot_act_on_a_unix_operator_socket() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    use std::os::unix::process::CommandExt as _;
    let _w = watchdog("unix operator socket", LIMIT);
    let dir = tmp();
    let hub = Hub::start(dir.path(), "[listen]\noperator = \"ipc://operator.sock\"\n");
    let socket = dir.path().join("data/operator.sock");
    let endpoint = format!("ipc://{}", socket.display());
    assert_eq!(hub.endpoints["operator"], endpoint, "in data_dir, absolute");
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "the hub's user's alone"
    );

    assert!(
        hub.op(&["stats"]).ok,
        "the hub's user, through endpoints.json"
    );
    let (code, body) = http("GET", &hub.endpoints["http"], "/api/devices");
    assert_eq!(
        (code, body.trim()),
        (200, "[]"),
        "HTTP asks through the socket"
    );

    // SAFETY: geteuid(2) reads our own user id.
    if unsafe { libc::geteuid() } == 0 {
        // Directories anyone may pass through: only the socket's mode stops
        // the user `nobody`.
        for d in [dir.path().to_path_buf(), dir.path().join("data")] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = hub_command()
            .args(["devices", "--hub", &endpoint])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(
            stderr.contains("permission denied") && stderr.contains("as that user"),
            "told why and what to do: {stderr}"
        );
        assert!(!stderr.contains("did not answer"), "at once: {stderr}");
    } else {
        eprintln!("not root: another user's refusal is not tried (CI runs as root)");
    }

    // A second hub on its own data directory cannot take the socket.
    let other = tmp();
    let cfg = other.path().join("hub.toml");
    std::fs::write(&cfg, format!("[listen]\noperator = \"{endpoint}\"\n")).unwrap();
    let out = hub_command()
        .args(["run", "--bind", "127.0.0.1:*", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(other.path().join("data"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("another fleetmq-hub answers on it"),
        "{stderr}"
    );
    assert!(hub.op(&["stats"]).ok, "the first hub keeps its socket");

    // The socket goes with the hub; a command then says there is none.
    let mut hub = hub;
    hub.proc.signal(libc::SIGTERM);
    hub.proc.wait_exit(WAIT);
    assert!(!socket.exists(), "removed at stop");
    let r = hub.op(&["devices"]);
    assert_eq!(r.code, Some(3));
    assert!(r.stderr.contains("no such socket"), "{}", r.stderr);
}

/// A hub whose config names HTTP token files that do not exist makes them
/// at its first start, each the hub's user's alone (as the packaged hub
/// does): the fleet's telemetry and logs are not readable by every user of
/// the machine, and `console-url` gives the hub's user the address to open.
#[test]
fn http_tokens_are_made_at_first_start_and_only_the_hubs_user_may_read_them() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    let _w = watchdog("http tokens made", LIMIT);
    let dir = tmp();
    let config =
        "[security]\nhttp_token_file = \"http.token\"\nhttp_admin_token_file = \"admin.token\"\n";
    let hub = Hub::start(dir.path(), config);
    hub.proc.wait_log("made the HTTP read token");
    let data = dir.path().join("data");
    let token = |name: &str| {
        let path = data.join(name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: the hub's user's alone");
        std::fs::read_to_string(&path).unwrap().trim().to_string()
    };
    let (read, admin) = (token("http.token"), token("admin.token"));
    assert!(read.len() >= 43 && admin.len() >= 43, "256 bits each");
    assert_ne!(read, admin, "two tokens, not one");

    let url = &hub.endpoints["http"];
    let (code, _) = http("GET", url, "/api/devices");
    assert_eq!(code, 401, "no token, no fleet");
    // What console-url prints opens the console with the right role.
    let cfg = dir.path().join("hub.toml");
    let console_url = |extra: &[&str]| -> Value {
        let out = run_ok(
            hub_command()
                .arg("console-url")
                .arg("--config")
                .arg(&cfg)
                .arg("--data-dir")
                .arg(&data)
                .arg("--json")
                .args(extra),
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    for (extra, role, expected) in [
        (&[][..], "read", &read),
        (&["--admin"][..], "admin", &admin),
    ] {
        let printed = console_url(extra);
        let link = printed["url"].as_str().unwrap();
        assert_eq!(printed["role"], role);
        let Some(given) = link.strip_prefix(&format!("{url}/#token=")) else {
            panic!("the running hub's address, then the token: {link}");
        };
        assert_eq!(given, expected.as_str());
        let bearer = format!("Authorization: Bearer {given}");
        let (code, me) = http_with("GET", url, "/api/me", &[&bearer]);
        assert_eq!(
            (code, me.trim()),
            (200, format!("{{\"role\":\"{role}\"}}").as_str())
        );
    }

    // SAFETY: geteuid(2) reads our own user id.
    if unsafe { libc::geteuid() } == 0 {
        // Directories anyone may pass through: only the files' mode stops
        // the user `nobody`.
        for d in [dir.path().to_path_buf(), data.clone()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let mut cmd = hub_command();
        cmd.arg("console-url")
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data)
            .uid(65534)
            .gid(65534);
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains("http.token") && stderr.contains("as the hub's user"),
            "told why and what to do: {stderr}"
        );
    } else {
        eprintln!("not root: another user's refusal is not tried (CI runs as root)");
    }

    // The tokens stay what they are across a restart.
    let mut hub = hub;
    let same = hub.same_ports();
    hub.proc.signal(libc::SIGTERM);
    hub.proc.wait_exit(WAIT);
    let hub = Hub::restart(dir.path(), &format!("{same}{config}"));
    assert!(!hub.proc.log_text().contains("made the HTTP"));
    assert_eq!((token("http.token"), token("admin.token")), (read, admin));
}
