//! The core driven with a fake clock, an in-memory store and no sockets:
//! each test feeds inputs and reads the actions the driver would carry out.

use std::path::Path;

use fleetmq_protocol::{
    Command, CommandFrame, CommandReply, Downstream, Hello, HubPorts, JobFrame, JobInfo, JobResult,
    JobSpec, JobState, JobSubmission, OperatorError, OperatorFrame, OperatorReplyFrame,
    OperatorRequest, Outcome, Output, Reply, ReplyFrame, Request, Response, ResultFrame, Upstream,
    Value, telemetry::BatchBuilder,
};

use super::*;
use crate::config::HubConfig;
use crate::store::Store;

const T0: u64 = 1_700_000_000_000;

/// `ms` on both clocks, which agree unless a test steps one.
fn at(ms: u64) -> Now {
    Now {
        mono_ms: ms,
        wall_ms: ms,
    }
}

/// The harness takes a plain time where the clocks agree.
impl From<u64> for Now {
    fn from(ms: u64) -> Now {
        at(ms)
    }
}
const OP: &[u8] = b"operator-1";

struct Fleet {
    core: Core,
    /// Z85 public key of each enrolled device.
    keys: Vec<(String, String)>,
}

impl Fleet {
    /// A CURVE hub with pi-a and pi-b enrolled.
    fn new() -> Fleet {
        Fleet::with(HubConfig::default())
    }

    /// [`Fleet::new`] with `config`.
    fn with(config: HubConfig) -> Fleet {
        let keys: Vec<(String, String)> = ["pi-a", "pi-b"]
            .iter()
            .map(|d| (d.to_string(), fleetmq_net::keys::generate().unwrap().public))
            .collect();
        let text: String = keys.iter().map(|(d, k)| format!("{d} {k}\n")).collect();
        Fleet::on_list(config, keys, &text)
    }

    /// A CURVE hub started on an allow list file holding `text`, with
    /// `keys` the enrolled ones.
    fn on_list(config: HubConfig, keys: Vec<(String, String)>, text: &str) -> Fleet {
        let list = AllowList::parse(Path::new("allowed_devices"), text).unwrap();
        let ports = HubPorts {
            broadcast: 7751,
            jobs: 7752,
            results: 7753,
            commands: 7754,
        };
        let store = Store::in_memory().unwrap();
        let mut drawn = 1000;
        let tokens: Tokens = Box::new(move || {
            drawn += 1;
            Ok(drawn)
        });
        let core = Core::new(config, store, Some(list), ports, at(T0), tokens);
        Fleet { core, keys }
    }

    /// A plaintext hub (any routing id is believed), for fleets of many.
    fn plaintext() -> Fleet {
        let mut f = Fleet::new();
        let ports = HubPorts {
            broadcast: 7751,
            jobs: 7752,
            results: 7753,
            commands: 7754,
        };
        let tokens: Tokens = Box::new(|| Ok(7));
        let store = Store::in_memory().unwrap();
        f.core = Core::new(HubConfig::default(), store, None, ports, at(T0), tokens);
        f
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.core.poll_action()).collect()
    }

    /// A message on the telemetry socket from `device`'s usual route, on
    /// a connection enrolled as `key_of`.
    fn up(&mut self, device: &str, key_of: &str, msg: Upstream, now: impl Into<Now>) {
        self.up_via(&route(device), key_of, msg, now);
    }

    /// A message on the telemetry socket from `route`, on a connection
    /// enrolled as `key_of`.
    fn up_via(&mut self, route: &[u8], key_of: &str, msg: Upstream, now: impl Into<Now>) {
        let (frames, now) = (vec![route.to_vec(), msg.encode().unwrap()], now.into());
        self.core
            .upstream(&frames, Some(key_of), Some("10.0.0.1"), now);
        self.core.store_received(now);
    }

    fn hello(&mut self, device: &str, now: impl Into<Now>) {
        self.hello_in(device, &[], now);
    }

    fn hello_in(&mut self, device: &str, groups: &[&str], now: impl Into<Now>) {
        let now = now.into();
        let hello = Hello {
            agent_version: "0.1.0".into(),
            arch: "aarch64".into(),
            os: "linux".into(),
            hostname: device.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            heartbeat_ms: 1_000,
            started_ms: now.wall_ms,
        };
        self.up(device, device, hello.into(), now);
    }

    fn operator(&mut self, id: u64, request: Request, now: impl Into<Now>) {
        let frame = OperatorFrame::from(OperatorRequest { id, request })
            .encode()
            .unwrap();
        self.core
            .operator(&[OP.to_vec(), vec![], frame], Caller::Local, now.into());
    }

    /// Carries out the actions as a driver whose sends all succeed, and
    /// returns them.
    fn deliver(&mut self, now: impl Into<Now>) -> Vec<Action> {
        let (mut done, now) = (Vec::new(), now.into());
        while let Some(a) = self.core.poll_action() {
            match &a {
                Action::Command { corr, .. } => self.core.command_sent(*corr, Sent::Yes, now),
                Action::Job {
                    id,
                    attempt,
                    token,
                    lease_ms,
                    ..
                } => self.core.job_sent(*id, *attempt, *token, *lease_ms, now),
                _ => {}
            }
            done.push(a);
        }
        done
    }
}

/// The ZAP request libzmq makes for a CURVE handshake from `address`
/// with public key `key` (Z85).
fn zap_request(key: &str, address: &str) -> Vec<Vec<u8>> {
    vec![
        b"1.0".to_vec(),
        b"1".to_vec(),
        b"fleetmq".to_vec(),
        address.as_bytes().to_vec(),
        vec![],
        b"CURVE".to_vec(),
        zmq::z85_decode(key).unwrap(),
    ]
}

/// The usual route of `device`'s agent: its id and a nonce.
fn route(device: &str) -> Vec<u8> {
    fleetmq_protocol::route(device, "0123456789abcdef").into_bytes()
}

/// What was sent to `device`'s usual route.
fn to_device(actions: &[Action], device: &str) -> Vec<Downstream> {
    to_route(actions, &route(device))
}

/// What was sent to one route.
fn to_route(actions: &[Action], to: &[u8]) -> Vec<Downstream> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Device { route, frame, .. } if route == to => {
                Some(Downstream::decode(frame).unwrap())
            }
            _ => None,
        })
        .collect()
}

/// What the core told the cluster, but for the front-end's own periodic
/// report of its traffic (`cluster_stats.rs` tests those).
fn to_cluster(actions: &[Action]) -> Vec<crate::cluster::ToCluster> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Cluster(crate::cluster::ToCluster::Report { .. }) => None,
            Action::Cluster(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn to_operator(actions: &[Action]) -> Vec<(u64, Response)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Operator { frame, .. } => match OperatorReplyFrame::decode(frame).unwrap() {
                OperatorReplyFrame::Response(r) => Some((r.id, r.response)),
            },
            _ => None,
        })
        .collect()
}

/// A ping for `device` that waits `timeout_ms` for its answer.
fn ping(device: &str, timeout_ms: u32) -> Request {
    Request::Command {
        device: device.into(),
        command: Command::Ping,
        timeout_ms,
    }
}

/// An exec job with a 10 s lease.
fn exec_job(program: &str, max_attempts: u32) -> JobSubmission {
    JobSubmission {
        spec: JobSpec::Exec {
            program: program.into(),
            args: vec![],
        },
        timeout_ms: 1_000,
        lease_ms: 10_000,
        max_attempts,
        devices: vec![],
        groups: vec![],
        all: false,
        ttl_ms: 0,
    }
}

fn batch(seq: u64, value: f64) -> Upstream {
    let mut b = BatchBuilder::new(seq);
    b.push_sample("temp_c", T0, Value::Float(value)).unwrap();
    Upstream::Batch(b.finish())
}

#[test]
fn hello_is_answered_with_carry_and_takes_logs_then_welcome_naming_the_ports() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    let got = to_device(&f.actions(), "pi-a");
    match got.as_slice() {
        [
            Downstream::Carry(_),
            Downstream::TakesLogs(_),
            Downstream::Welcome(w),
        ] => assert_eq!(w.ports.commands, 7754),
        other => panic!("want Carry, TakesLogs, then Welcome, got {other:?}"),
    }
}

#[test]
fn a_hello_with_a_group_no_broadcast_could_reach_is_refused() {
    let mut f = Fleet::new();
    f.hello_in("pi-a", &["north", "bad/group"], T0);
    let got = to_device(&f.actions(), "pi-a");
    assert!(
        matches!(&got[..], [Downstream::Refusal(r)] if r.reason.contains("bad/group")),
        "{got:?}"
    );
    assert_eq!(f.core.counters().frames_dropped, 1);
    f.hello_in("pi-a", &["north"], T0 + 1);
    assert!(matches!(
        &to_device(&f.actions(), "pi-a")[..],
        [
            Downstream::Carry(_),
            Downstream::TakesLogs(_),
            Downstream::Welcome(_)
        ]
    ));
}

#[test]
fn a_batch_is_stored_then_acked_and_a_duplicate_is_acked_without_storing() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.actions();
    f.up("pi-a", "pi-a", batch(1, 20.0), T0 + 10);
    assert_eq!(
        to_device(&f.actions(), "pi-a"),
        vec![Downstream::Ack(fleetmq_protocol::Ack { seq: 1 })]
    );
    assert_eq!(f.core.counters().batches_stored, 1);
    f.up("pi-a", "pi-a", batch(1, 20.0), T0 + 20);
    assert_eq!(
        to_device(&f.actions(), "pi-a"),
        vec![Downstream::Ack(fleetmq_protocol::Ack { seq: 1 })],
        "a resent batch is acked again"
    );
    assert_eq!(f.core.counters().batches_stored, 1);
    assert_eq!(f.core.counters().batches_duplicate, 1);
}

#[test]
fn a_batch_with_log_lines_is_stored_and_acked_and_one_with_a_bad_source_rejected() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.actions();
    let mut b = BatchBuilder::new(1);
    b.push_sample("temp_c", T0, Value::Float(20.0)).unwrap();
    b.push_log("/var/log/syslog", T0 + 1, "sshd: accepted key")
        .unwrap();
    let logged = Upstream::from_batch(b.finish());
    assert!(matches!(logged, Upstream::LogBatch(_)));
    f.up("pi-a", "pi-a", logged, T0 + 10);
    assert_eq!(
        to_device(&f.actions(), "pi-a"),
        vec![Downstream::Ack(fleetmq_protocol::Ack { seq: 1 })]
    );
    assert_eq!(f.core.counters().batches_stored, 1);
    assert_eq!(f.core.counters().log_lines_stored, 1);
    assert_eq!(f.core.counters().samples_stored, 1);
    let mut bad = BatchBuilder::new(2);
    bad.push_log("/ok", T0, "x").unwrap();
    let mut bad = bad.finish();
    bad.sources[0] = "bad\u{7}source".into();
    f.up(
        "pi-a",
        "pi-a",
        Upstream::LogBatch(fleetmq_protocol::LogBatch(bad)),
        T0 + 20,
    );
    let told = to_device(&f.actions(), "pi-a");
    assert!(
        matches!(&told[..], [Downstream::Rejected(r)] if r.seq == 2 && r.reason.contains("log source")),
        "{told:?}"
    );
}

#[test]
fn a_device_goes_offline_after_three_silent_heartbeats() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    let online = |f: &mut Fleet, now| {
        f.operator(9, Request::Devices, now);
        match to_operator(&f.actions()).pop() {
            Some((_, Response::Devices(d))) => d.iter().find(|d| d.id == "pi-a").unwrap().online,
            other => panic!("{other:?}"),
        }
    };
    f.core.tick(at(T0 + 3_000));
    assert!(
        online(&mut f, T0 + 3_000),
        "three heartbeats of 1 s: still on"
    );
    f.core.tick(at(T0 + 3_001));
    assert!(!online(&mut f, T0 + 3_001), "silent past three heartbeats");
}

#[test]
fn a_request_the_hub_cannot_read_is_answered_bad_request_with_its_id() {
    let mut f = Fleet::new();
    let ask = |f: &mut Fleet, frame: Vec<u8>| {
        f.core
            .operator(&[OP.to_vec(), vec![], frame], Caller::Local, at(T0));
        to_operator(&f.actions())
    };
    // Request 9 names a variant this hub does not have (99): the id is
    // readable, so the client can match the error to its request.
    let answers = ask(&mut f, vec![2, 0x50, 9, 99]);
    assert!(
        matches!(&answers[..], [(9, Response::Error(OperatorError::BadRequest(why)))] if !why.is_empty()),
        "{answers:?}"
    );
    // A frame of another version has no id the hub can trust: 0.
    let answers = ask(&mut f, vec![3, 0x50, 9, 0]);
    assert!(
        matches!(&answers[..], [(0, Response::Error(OperatorError::BadRequest(why)))] if why.contains("version")),
        "{answers:?}"
    );
}

#[test]
fn a_command_is_sent_and_its_answer_reaches_the_operator() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.actions();
    let ask = ping("pi-a", 5_000);
    f.operator(7, ask, T0);
    let sent = f.deliver(T0);
    let corr = match sent.as_slice() {
        [
            Action::Command {
                device,
                route: to,
                frame,
                corr,
                carried: false,
            },
        ] => {
            assert_eq!(device, "pi-a");
            assert_eq!(to, &route("pi-a"), "only to the route that speaks for pi-a");
            let CommandFrame::Request(r) = CommandFrame::decode(frame).unwrap();
            assert_eq!(r.command, Command::Ping);
            *corr
        }
        other => panic!("want one command, got {other:?}"),
    };
    let reply = |corr| {
        let r = ReplyFrame::from(CommandReply {
            corr,
            reply: Reply::Pong { uptime_ms: 5 },
        });
        vec![route("pi-a"), vec![], r.encode().unwrap()]
    };
    // Another device's connection cannot answer for pi-a.
    f.core.reply(&reply(corr), Some("pi-b"), at(T0 + 5));
    assert_eq!(f.actions(), vec![]);
    f.core.reply(&reply(corr), Some("pi-a"), at(T0 + 5));
    let answers = to_operator(&f.actions());
    assert!(
        matches!(&answers[..], [(7, Response::Reply { device, reply: Reply::Pong { .. } })] if device == "pi-a"),
        "{answers:?}"
    );
    // A retry of request 7 is answered from memory, not sent again.
    f.operator(7, ping("pi-a", 5_000), T0 + 6);
    let again = f.actions();
    assert!(matches!(
        &to_operator(&again)[..],
        [(7, Response::Reply { .. })]
    ));
    assert!(!again.iter().any(|a| matches!(a, Action::Command { .. })));
}

#[test]
fn a_command_nobody_answers_times_out() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.actions();
    let ask = ping("pi-a", 2_000);
    f.operator(8, ask, T0);
    f.deliver(T0);
    f.core.tick(at(T0 + 1_999));
    assert_eq!(to_operator(&f.actions()), vec![]);
    f.core.tick(at(T0 + 2_000));
    assert_eq!(
        to_operator(&f.actions()),
        vec![(
            8,
            Response::Error(OperatorError::TimedOut { after_ms: 2_000 })
        )]
    );
    assert_eq!(f.core.counters().commands_timed_out, 1);
}

#[test]
fn a_command_for_an_offline_device_waits_and_is_delivered_when_it_returns() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.up(
        "pi-a",
        "pi-a",
        fleetmq_protocol::Bye {
            reason: "stopping".into(),
        }
        .into(),
        T0,
    );
    f.actions();
    let ask = Request::QueuedCommand {
        device: "pi-a".into(),
        command: Command::Ping,
        timeout_ms: 2_000,
        queue_ms: 60_000,
    };
    f.operator(11, ask.clone(), T0 + 1);
    assert_eq!(f.actions(), vec![], "queued, not answered");
    f.core.tick(at(T0 + 1_000));
    assert_eq!(f.actions(), vec![], "still offline");
    // Back, but its command socket is not connected yet: it keeps waiting.
    f.hello("pi-a", T0 + 2_000);
    f.actions();
    f.core.tick(at(T0 + 2_100));
    let tried = f.actions();
    let Some(Action::Command { corr, .. }) =
        tried.iter().find(|a| matches!(a, Action::Command { .. }))
    else {
        panic!("want the queued command sent, got {tried:?}");
    };
    f.core
        .command_sent(*corr, Sent::Unreachable, at(T0 + 2_100));
    assert_eq!(
        to_operator(&f.actions()),
        vec![],
        "unreachable: waits again"
    );
    f.core.tick(at(T0 + 2_200));
    let sent = f.deliver(T0 + 2_200);
    assert!(
        sent.iter()
            .any(|a| matches!(a, Action::Command { device, .. } if device == "pi-a"))
    );
    assert_eq!(f.core.counters().commands_sent, 1);
    // A command for a device that never comes back is answered when its
    // wait ends.
    f.operator(
        12,
        Request::QueuedCommand {
            device: "pi-b".into(),
            command: Command::Ping,
            timeout_ms: 2_000,
            queue_ms: 500,
        },
        T0 + 3_000,
    );
    let answers = to_operator(&f.actions());
    assert!(
        matches!(
            &answers[..],
            [(12, Response::Error(OperatorError::UnknownDevice(_)))]
        ),
        "a device never seen is not waited for: {answers:?}"
    );
}

/// A read that scans the store goes to the driver's readers once, however
/// often its client retries; the answer goes to the client that asked
/// last; past MAX_READS in flight an operator is told to try again.
#[test]
fn a_read_runs_off_the_loop_once_however_often_it_is_retried() {
    let mut f = Fleet::new();
    f.operator(7, Request::Jobs { limit: 10 }, T0);
    let reads = |actions: &[Action]| -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Read { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    };
    assert_eq!(reads(&f.actions()), vec![7]);
    // The Lazy Pirate client asks again on a fresh socket.
    let frame = OperatorFrame::from(OperatorRequest {
        id: 7,
        request: Request::Jobs { limit: 10 },
    })
    .encode()
    .unwrap();
    f.core.operator(
        &[b"retry".to_vec(), vec![], frame],
        Caller::Local,
        at(T0 + 1),
    );
    assert_eq!(f.actions(), vec![], "no second scan");
    let answer = reads::answer(
        &mut Store::in_memory().unwrap(),
        Request::Jobs { limit: 10 },
    );
    assert_eq!(answer, Response::Jobs(vec![]));
    f.core.read_done(7, b"the answer".to_vec());
    assert_eq!(
        f.actions(),
        vec![Action::Operator {
            client: b"retry".to_vec(),
            frame: b"the answer".to_vec()
        }]
    );
    f.core.read_done(7, b"again".to_vec());
    assert_eq!(f.actions(), vec![], "answered once");
    for id in 100..100 + reads::MAX_READS as u64 {
        f.operator(id, Request::Jobs { limit: 1 }, T0 + 2);
    }
    assert_eq!(reads(&f.actions()).len(), reads::MAX_READS);
    f.operator(999, Request::Jobs { limit: 1 }, T0 + 3);
    match to_operator(&f.actions()).as_slice() {
        [(999, Response::Error(OperatorError::Storage(why)))] => {
            assert!(why.contains("try again"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

mod alerts;
mod budgets;
mod cluster;
mod cluster_aimed;
mod cluster_jobs;
mod cluster_stats;
mod cluster_undo;
mod config;
mod fleet;
mod forget;
mod identity;
mod jobs;
mod one_connection;
mod presence_log;
