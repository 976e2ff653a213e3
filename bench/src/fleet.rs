//! A fleet at rest: many simulated agents in one process, each with the
//! sockets a real agent keeps open connected to one hub. Like the agent,
//! each says Hello on its telemetry DEALER and then its Offer. By default
//! each is today's agent: it offers to carry everything on that one
//! connection (taking echo jobs, one at a time), and on the hub's Carry
//! and Welcome connects nothing more. With `connected --five`, each is an
//! agent on the hub's five sockets (`one_connection = false`, or older):
//! on the Welcome it connects the broadcast SUB (subscribed to its
//! fleet-wide and device topics), the jobs PULL, the results PUSH and the
//! commands DEALER named by its device id; with `--no-jobs`, as such an
//! agent with an empty `[jobs] allow`, neither the jobs PULL nor the
//! results PUSH. Each then sends one batch and waits for its ack, so every
//! agent has both read and written through the hub. It sizes what a hub
//! holds per connected agent (`fleetmq-bench connected`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleetmq_protocol::{Abilities, Downstream, HubPorts, Offer, Upstream, names};

use crate::swarm::{Curve, Template, hello};

/// Sockets a simulated agent opens at most: telemetry, broadcast, jobs,
/// results, commands.
pub const SOCKETS_PER_AGENT: usize = 5;

/// Which of its sockets a simulated agent connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Telemetry alone, everything carried on it: today's agent.
    One,
    /// All five, as an agent on the hub's five sockets that takes jobs.
    All,
    /// Telemetry, broadcast and commands, as an agent on the hub's five
    /// sockets with an empty `[jobs] allow`.
    NoJobs,
}

impl Kept {
    /// Connections each agent holds to the hub.
    pub fn sockets(self) -> usize {
        match self {
            Kept::One => 1,
            Kept::All => SOCKETS_PER_AGENT,
            Kept::NoJobs => SOCKETS_PER_AGENT - 2,
        }
    }

    /// The flag that asks for these (`fleetmq-bench connected`).
    pub fn flag(self) -> Option<&'static str> {
        match self {
            Kept::One => None,
            Kept::All => Some("--five"),
            Kept::NoJobs => Some("--no-jobs"),
        }
    }

    /// The Offer such an agent sends after each Hello.
    fn offer(self) -> anyhow::Result<Vec<u8>> {
        let takes_jobs = self != Kept::NoJobs;
        Ok(Upstream::Offer(Offer(Abilities {
            job_kinds: if takes_jobs {
                vec!["echo".into()]
            } else {
                Vec::new()
            },
            exec_programs: Vec::new(),
            config_version: 0,
            one_connection: self == Kept::One,
            chat: false,
            job_slots: 1,
            // As a real agent does: the hub measures each clock.
            hello_on_clock_step: true,
            facts: fleetmq_protocol::DeviceFacts::default(),
        }))
        .encode()?)
    }
}
/// libzmq allows 1023 sockets a context by default.
const AGENTS_PER_CONTEXT: usize = 1000 / SOCKETS_PER_AGENT;
/// Agents whose handshakes may be under way at once: a whole fleet dialling
/// in one burst would overflow the hub's listen backlog and wait out TCP's
/// SYN retries, which measures the kernel rather than the hub.
const DIALLING: usize = 200;

struct Agent {
    telemetry: zmq::Socket,
    /// SUB, PULL, PUSH and DEALER once welcomed (as [`Kept`] says; none
    /// on one connection).
    links: Vec<zmq::Socket>,
    welcomed: bool,
    acked: bool,
}

impl Agent {
    fn ready(&self) -> bool {
        self.welcomed && self.acked
    }
}

/// A connected fleet; dropping it closes every socket.
pub struct Fleet {
    agents: Vec<Agent>,
    // Dropped after the sockets: a context ends when its sockets are closed.
    _contexts: Vec<zmq::Context>,
}

impl Fleet {
    /// Agents that are welcomed, connected everywhere and acked.
    pub fn ready(&self) -> usize {
        self.agents.iter().filter(|a| a.ready()).count()
    }
}

/// Descriptors each simulated agent takes in this process: a TCP
/// connection and a libzmq mailbox per socket.
pub const FDS_PER_AGENT: usize = 2 * SOCKETS_PER_AGENT;

/// Connects the simulated agents numbered `ids` (named `PREFIX-00000`...)
/// to the hub whose telemetry ROUTER is `endpoint`, and returns once every
/// one is welcomed, connected on all sockets and has had a batch acked, or
/// fails after `within`.
pub fn connect(
    endpoint: &str,
    ids: std::ops::Range<usize>,
    prefix: &str,
    template: &Template,
    kept: Kept,
    curve: Option<&Curve>,
    within: Duration,
) -> anyhow::Result<Fleet> {
    let deadline = Instant::now() + within;
    let (first, agents) = (ids.start, ids.len());
    let contexts: Vec<zmq::Context> = (0..agents.div_ceil(AGENTS_PER_CONTEXT))
        .map(|_| zmq::Context::new())
        .collect();
    let hello = hello()?;
    let offer = kept.offer()?;
    let mut batch = Vec::new();
    template.frame(1, &mut batch);
    let mut fleet = Fleet {
        agents: Vec::with_capacity(agents),
        _contexts: Vec::new(),
    };
    let mut ready = 0;
    while ready < agents {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{ready} of {agents} agents were connected and acked after {} s",
            within.as_secs()
        );
        // Dial more while few handshakes are under way.
        while fleet.agents.len() < agents && fleet.agents.len() - ready < DIALLING {
            let i = fleet.agents.len();
            let ctx = &contexts[i / AGENTS_PER_CONTEXT];
            let id = format!("{prefix}-{:05}", first + i);
            let telemetry = ctx.socket(zmq::DEALER)?;
            telemetry.set_identity(crate::swarm::route(&id).as_bytes())?;
            telemetry.set_linger(0)?;
            if let Some(curve) = curve {
                curve.secure(&telemetry, first + i)?;
            }
            telemetry
                .connect(endpoint)
                .with_context(|| format!("connecting to {endpoint}"))?;
            telemetry.send(&hello, 0)?;
            telemetry.send(&offer, 0)?;
            telemetry.send(&batch, 0)?;
            fleet.agents.push(Agent {
                telemetry,
                links: Vec::new(),
                welcomed: false,
                acked: false,
            });
        }
        let mut items: Vec<zmq::PollItem> = fleet
            .agents
            .iter()
            .map(|a| a.telemetry.as_poll_item(zmq::POLLIN))
            .collect();
        zmq::poll(&mut items, 100)?;
        let readable: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        drop(items);
        for (i, a) in fleet.agents.iter_mut().enumerate() {
            if !readable[i] {
                continue;
            }
            let was_ready = a.ready();
            while let Ok(msg) = a.telemetry.recv_bytes(zmq::DONTWAIT) {
                match Downstream::decode(&msg) {
                    Ok(Downstream::Welcome(w)) if !a.welcomed => {
                        let id = format!("{prefix}-{:05}", first + i);
                        let ctx = &contexts[i / AGENTS_PER_CONTEXT];
                        let secure = curve.map(|c| (c, first + i));
                        a.links = links(ctx, endpoint, &id, &w.ports, kept, secure)?;
                        a.welcomed = true;
                    }
                    Ok(Downstream::Ack(_)) => a.acked = true,
                    Ok(Downstream::HelloRequest(_)) => {
                        a.telemetry.send(&hello, 0)?;
                        a.telemetry.send(&offer, 0)?;
                    }
                    Ok(Downstream::Refusal(r)) => {
                        anyhow::bail!("the hub refused agent {i}: {}", r.reason)
                    }
                    _ => {}
                }
            }
            if !was_ready && a.ready() {
                ready += 1;
            }
        }
    }
    fleet._contexts = contexts;
    Ok(fleet)
}

/// The sockets an agent connects after the Welcome (none on one
/// connection, four, two if it takes no jobs), set up as the agent sets
/// them up.
fn links(
    ctx: &zmq::Context,
    endpoint: &str,
    device: &str,
    ports: &HubPorts,
    kept: Kept,
    curve: Option<(&Curve, usize)>,
) -> anyhow::Result<Vec<zmq::Socket>> {
    if kept == Kept::One {
        return Ok(Vec::new());
    }
    let at = |port: u16| -> anyhow::Result<String> {
        fleetmq_net::endpoint::with_port(endpoint, port)
            .context("the hub's address is not tcp://HOST:PORT")
    };
    let sub = ctx.socket(zmq::SUB)?;
    sub.set_subscribe(names::ALL_TOPIC.as_bytes())?;
    sub.set_subscribe(names::device_topic(device).as_bytes())?;
    let jobs = ctx.socket(zmq::PULL)?;
    jobs.set_rcvhwm(2)?;
    let results = ctx.socket(zmq::PUSH)?;
    let commands = ctx.socket(zmq::DEALER)?;
    commands.set_identity(crate::swarm::route(device).as_bytes())?;
    let mut sockets = vec![(sub, ports.broadcast), (commands, ports.commands)];
    if kept == Kept::All {
        sockets.extend([(jobs, ports.jobs), (results, ports.results)]);
    }
    let mut out = Vec::with_capacity(sockets.len());
    for (socket, port) in sockets {
        socket.set_linger(0)?;
        if let Some((curve, i)) = curve {
            curve.secure(&socket, i)?;
        }
        let ep = at(port)?;
        socket
            .connect(&ep)
            .with_context(|| format!("connecting to {ep}"))?;
        out.push(socket);
    }
    Ok(out)
}
