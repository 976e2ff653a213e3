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
        matching: vec![],
    }
}

fn batch(seq: u64, value: f64) -> Upstream {
    let mut b = BatchBuilder::new(seq);
    b.push_sample("temp_c", T0, Value::Float(value)).unwrap();
    Upstream::Batch(b.finish())
}

mod alerts;
mod audit;
mod budgets;
mod cluster;
mod cluster_aimed;
mod cluster_jobs;
mod cluster_stats;
mod cluster_undo;
mod commands;
mod config;
mod facts;
mod fleet;
mod forget;
mod identity;
mod jobs;
mod matching;
mod one_connection;
mod pending;
mod presence_log;
mod session;
