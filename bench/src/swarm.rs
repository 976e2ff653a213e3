//! A swarm: many simulated agents' telemetry sockets in one process, each
//! a DEALER with its own device id that says Hello and then keeps a window
//! of batches in flight, sending the next as each ack comes back. It is the
//! load for the hub ingest benchmark, and an operator can point it at a
//! test hub to size one (`fleetmq-bench swarm`).
//!
//! The same swarm in raw mode sends frames of the same size to a bare
//! libzmq ROUTER that answers each with a small ack at once: the baseline
//! of what the transport alone does on this machine.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleetmq_protocol::{Downstream, Hello, Upstream};

/// What each simulated agent sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// fleetmq's protocol: Hello, then numbered batches the hub stores and acks.
    Fleet,
    /// Frames of the same size; any answer counts as the ack.
    Raw,
}

/// A swarm to run.
#[derive(Debug, Clone)]
pub struct Swarm {
    /// The hub's telemetry address (or the raw ROUTER's).
    pub endpoint: String,
    /// Simulated agents.
    pub agents: usize,
    /// Batches each keeps in flight.
    pub window: usize,
    /// Time to let connections settle before counting.
    pub warmup: Duration,
    /// Time over which acks are counted.
    pub measure: Duration,
    pub mode: Mode,
    /// Device ids are PREFIX-00000, PREFIX-00001, ...
    pub prefix: String,
    /// CURVE on every socket, or plaintext (None).
    pub curve: Option<Curve>,
}

/// CURVE for a swarm: the hub's public key and one key pair per agent, in
/// the order of their device ids (see [`Curve::allow_list`]).
#[derive(Debug, Clone)]
pub struct Curve {
    pub hub_public: String,
    pub agents: Vec<fleetmq_net::keys::KeyPair>,
}

impl Curve {
    /// Key pairs for `agents` agents.
    pub fn generate(hub_public: String, agents: usize) -> anyhow::Result<Curve> {
        let agents = (0..agents)
            .map(|_| fleetmq_net::keys::generate())
            .collect::<Result<_, _>>()?;
        Ok(Curve { hub_public, agents })
    }

    /// Writes the keys to `path`, for the fleet's other processes: the
    /// hub's public key on the first line, then `PUBLIC SECRET` for each
    /// agent (Z85 has no spaces).
    pub fn write(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let mut text = format!("{}\n", self.hub_public);
        for k in &self.agents {
            text.push_str(&format!("{} {}\n", k.public, k.secret));
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads the keys [`Curve::write`] wrote.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Curve> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut lines = text.lines();
        let hub_public = lines
            .next()
            .context("no hub key in the keys file")?
            .to_string();
        let agents = lines
            .map(|l| {
                let (public, secret) = l.split_once(' ').context("a keys line without two keys")?;
                Ok(fleetmq_net::keys::KeyPair {
                    public: public.to_string(),
                    secret: secret.to_string(),
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Curve { hub_public, agents })
    }

    /// Sets CURVE on `socket` as agent `i`'s.
    pub fn secure(&self, socket: &zmq::Socket, i: usize) -> anyhow::Result<()> {
        let keys = self
            .agents
            .get(i)
            .with_context(|| format!("no key pair for agent {i}"))?;
        socket.set_curve_serverkey(self.hub_public.as_bytes())?;
        socket.set_curve_publickey(keys.public.as_bytes())?;
        socket.set_curve_secretkey(keys.secret.as_bytes())?;
        Ok(())
    }

    /// The hub's allow list for the agents named PREFIX-00000...: one
    /// `DEVICE_ID PUBLIC_KEY` line each.
    pub fn allow_list(&self, prefix: &str) -> String {
        self.agents
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} {}\n", device_id(prefix, i), k.public))
            .collect()
    }
}

/// The device id of a swarm's `i`th agent: PREFIX-00000, PREFIX-00001, ...
pub fn device_id(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:05}")
}

/// What a swarm achieved while measuring.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// Acked batches counted.
    pub batches: u64,
    /// Seconds they were counted over.
    pub seconds: f64,
    /// Acked batches since the swarm started, warm-up included.
    pub total: u64,
    /// Agents that got at least one ack.
    pub answered: usize,
    /// Refusals the hub sent (should be none).
    pub refusals: u64,
}

/// A batch frame with its sequence number left out: the bytes before and
/// after it, so each send costs a copy, not an encoding.
#[derive(Debug, Clone)]
pub struct Template {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Template {
    /// `frame` is an encoded `Upstream::Batch` whose seq is 0.
    pub fn new(frame: &[u8]) -> anyhow::Result<Template> {
        // [version][kind][seq varint][rest]: seq 0 is the one byte 0x00.
        anyhow::ensure!(
            frame.len() > 3 && frame[2] == 0,
            "the template batch must have seq 0"
        );
        Ok(Template {
            head: frame[..2].to_vec(),
            tail: frame[3..].to_vec(),
        })
    }

    /// The frame for sequence number `seq`.
    pub fn frame(&self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.head);
        fleetmq_protocol::envelope::push_varint(out, seq);
        out.extend_from_slice(&self.tail);
    }

    /// Its size with a sequence number of a few bytes.
    pub fn len(&self) -> usize {
        self.head.len() + 3 + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Sockets in one libzmq context; its default limit is 1023.
const AGENTS_PER_CONTEXT: usize = 1000;

struct Agent {
    socket: zmq::Socket,
    seq: u64,
    in_flight: usize,
    acked: u64,
}

/// The Hello a simulated agent sends.
pub fn hello() -> anyhow::Result<Vec<u8>> {
    Ok(Upstream::Hello(Hello {
        agent_version: "bench".into(),
        arch: std::env::consts::ARCH.into(),
        os: "linux".into(),
        hostname: "swarm".into(),
        groups: Vec::new(),
        heartbeat_ms: 60_000,
        started_ms: 0,
    })
    .encode()?)
}

/// Runs the swarm against `swarm.endpoint`.
pub fn run(swarm: &Swarm, template: &Template) -> anyhow::Result<Outcome> {
    // libzmq allows 1023 sockets a context by default: one context for
    // every thousand agents.
    let contexts: Vec<zmq::Context> = (0..swarm.agents.div_ceil(AGENTS_PER_CONTEXT))
        .map(|_| zmq::Context::new())
        .collect();
    let hello = hello()?;
    let mut agents = Vec::with_capacity(swarm.agents);
    for i in 0..swarm.agents {
        let socket = contexts[i / AGENTS_PER_CONTEXT].socket(zmq::DEALER)?;
        socket.set_identity(route(&device_id(&swarm.prefix, i)).as_bytes())?;
        socket.set_linger(0)?;
        socket.set_sndhwm(10_000)?;
        socket.set_rcvhwm(10_000)?;
        if let Some(curve) = &swarm.curve {
            curve.secure(&socket, i)?;
        }
        socket
            .connect(&swarm.endpoint)
            .with_context(|| format!("connecting to {}", swarm.endpoint))?;
        if swarm.mode == Mode::Fleet {
            socket.send(&hello, 0)?;
        }
        agents.push(Agent {
            socket,
            seq: 1,
            in_flight: 0,
            acked: 0,
        });
    }
    let mut frame = Vec::new();
    let mut refusals = 0;
    let started = Instant::now();
    let mut counting_since: Option<(Instant, u64)> = None;
    let mut total: u64 = 0;
    loop {
        let now = Instant::now();
        if counting_since.is_none() && now >= started + swarm.warmup {
            counting_since = Some((now, total));
        }
        if let Some((since, at)) = counting_since
            && now >= since + swarm.measure
        {
            return Ok(Outcome {
                batches: total - at,
                seconds: now.duration_since(since).as_secs_f64(),
                total,
                answered: agents.iter().filter(|a| a.acked > 0).count(),
                refusals,
            });
        }
        for a in &mut agents {
            while a.in_flight < swarm.window {
                template.frame(a.seq, &mut frame);
                match a.socket.send(&frame, zmq::DONTWAIT) {
                    Ok(()) => {
                        a.seq += 1;
                        a.in_flight += 1;
                    }
                    Err(zmq::Error::EAGAIN) => break,
                    Err(e) => return Err(e).context("sending a batch"),
                }
            }
        }
        let mut items: Vec<zmq::PollItem> = agents
            .iter()
            .map(|a| a.socket.as_poll_item(zmq::POLLIN))
            .collect();
        zmq::poll(&mut items, 100)?;
        let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        drop(items);
        for (a, ready) in agents.iter_mut().zip(ready) {
            if !ready {
                continue;
            }
            while let Ok(msg) = a.socket.recv_bytes(zmq::DONTWAIT) {
                let acked = match swarm.mode {
                    Mode::Raw => true,
                    Mode::Fleet => match Downstream::decode(&msg) {
                        Ok(Downstream::Ack(_)) => true,
                        Ok(Downstream::HelloRequest(_)) => {
                            a.socket.send(&hello, 0)?;
                            false
                        }
                        Ok(Downstream::Refusal(_)) => {
                            refusals += 1;
                            false
                        }
                        // A throttled batch waits for the agent to send it
                        // again, which the swarm does not: the run would
                        // count nothing and say nothing.
                        Ok(Downstream::Throttled(t)) => anyhow::bail!(
                            "the hub throttled a simulated agent ({}): benchmark hubs need [limits] device_records_per_s = 0 and device_bytes_per_s = 0",
                            t.reason
                        ),
                        _ => false,
                    },
                };
                if acked {
                    a.in_flight = a.in_flight.saturating_sub(1);
                    a.acked += 1;
                    total += 1;
                }
            }
        }
    }
}

/// A bare libzmq ROUTER that answers every message with a 4-byte ack at
/// once, on a thread of its own. Returns its address; it serves until the
/// process ends.
pub fn raw_router() -> anyhow::Result<String> {
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER)?;
    router.set_sndhwm(100_000)?;
    router.set_rcvhwm(100_000)?;
    router.bind("tcp://127.0.0.1:*")?;
    let endpoint = router
        .get_last_endpoint()?
        .map_err(|_| anyhow::anyhow!("the raw ROUTER's address is not UTF-8"))?;
    std::thread::spawn(move || {
        let _ctx = ctx;
        while let Ok(parts) = router.recv_multipart(0) {
            if let Some(id) = parts.first() {
                let _ = router.send_multipart([id.as_slice(), b"ack!"], zmq::DONTWAIT);
            }
        }
    });
    Ok(endpoint)
}

/// The routing id of a simulated agent's DEALERs: its device id and a
/// nonce, as the agent sets them (each simulated device id is unique, so
/// one nonce serves them all).
pub fn route(device: &str) -> String {
    fleetmq_protocol::route(device, "benchbenchbench0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmq_protocol::{BatchBuilder, Value};

    #[test]
    fn a_template_makes_the_batch_the_encoder_would() {
        let mut b = BatchBuilder::new(0);
        b.push_sample("x", 1_000, Value::Int(1)).unwrap();
        let t = Template::new(&Upstream::Batch(b.finish()).encode().unwrap()).unwrap();
        for seq in [1u64, 127, 128, 300, 1 << 40] {
            let mut b = BatchBuilder::new(seq);
            b.push_sample("x", 1_000, Value::Int(1)).unwrap();
            let want = Upstream::Batch(b.finish()).encode().unwrap();
            let mut got = Vec::new();
            t.frame(seq, &mut got);
            assert_eq!(got, want, "seq {seq}");
        }
    }

    #[test]
    fn a_raw_swarm_is_answered() {
        let endpoint = raw_router().unwrap();
        let swarm = Swarm {
            endpoint,
            agents: 3,
            window: 2,
            warmup: Duration::from_millis(100),
            measure: Duration::from_millis(200),
            mode: Mode::Raw,
            prefix: "t".into(),
            curve: None,
        };
        let template = Template {
            head: vec![1, 3],
            tail: vec![0; 600],
        };
        let out = run(&swarm, &template).unwrap();
        assert!(out.batches > 0);
        assert_eq!(out.answered, 3);
    }
}
