//! `fleetmq-bench peers`: fleetmq beside NATS JetStream and Mosquitto on
//! this machine (the brokers and their load are the library's
//! `fleetmq_bench::peers`); every figure from the same run, the systems
//! alternated within each round, medians of the rounds.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleetmq_bench::swarm::{self, Mode, Swarm, Template};
use fleetmq_bench::{fleet, peers, procstat, run, wire};
use serde_json::{Value, json};

use super::connected::fleet_at_rest;
use super::rtt::{fleet_round_trips, percentile_us};
use super::{Args, HUB_CONFIG, template};

/// Publishers in the ingest load, each keeping `--window` batches in flight.
const PUBLISHERS: usize = 100;
/// The swarm's device ids (and the CURVE allow list's).
const PREFIX: &str = "peer";

/// The systems compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Fleetmq,
    FleetmqCurve,
    NatsSync,
    Nats,
    Mosquitto,
}

use System::*;

/// Ingest runs against each; request/reply against one of each broker
/// (CURVE and NATS's sync setting change neither), memory also with CURVE
/// (NATS's sync setting does not change it).
const INGEST: [System; 5] = [Fleetmq, FleetmqCurve, NatsSync, Nats, Mosquitto];
const BROKERS: [System; 3] = [Fleetmq, Nats, Mosquitto];
const MEMORY: [System; 4] = [Fleetmq, FleetmqCurve, Nats, Mosquitto];

impl System {
    fn name(self) -> &'static str {
        match self {
            Fleetmq => "fleetmq",
            FleetmqCurve => "fleetmq+curve",
            NatsSync => "nats-sync",
            Nats => "nats",
            Mosquitto => "mosquitto",
        }
    }

    /// What its ack means.
    fn ack(self) -> &'static str {
        match self {
            Fleetmq => {
                "committed to SQLite and fsynced (WAL, synchronous=FULL); a resent batch is stored once (device, sequence)"
            }
            FleetmqCurve => "as fleetmq, every agent enrolled and on CURVE, as fleets run",
            NatsSync => {
                "JetStream (file store, 1 replica) wrote it and fsynced (sync_interval: always); stored once (Nats-Msg-Id)"
            }
            Nats => {
                "JetStream (file store, 1 replica) wrote it to the OS, fsynced within 2 min (the default); stored once (Nats-Msg-Id)"
            }
            Mosquitto => {
                "QoS 1 PUBACK: queued in the broker's memory for the store's session; lost if the broker stops; at least once"
            }
        }
    }

    /// The request/reply path measured.
    fn path(self) -> &'static str {
        match self {
            Fleetmq | FleetmqCurve => {
                "operator -> hub -> agent -> hub -> operator (REQ, ROUTER, DEALER)"
            }
            Nats | NatsSync => "core request/reply through nats-server to a subscribed client",
            Mosquitto => "QoS 0 publish on the device's command topic, reply on its reply topic",
        }
    }

    /// What one idle device holds at the broker.
    fn device_holds(self) -> &'static str {
        match self {
            Fleetmq => {
                "one ZeroMQ connection carrying everything (CURVE off), online and listening"
            }
            FleetmqCurve => "as fleetmq, enrolled and on CURVE, as fleets run",
            Nats | NatsSync => {
                "one connection, subscribed to its command subject and the broadcasts"
            }
            Mosquitto => {
                "one MQTT 3.1.1 connection, subscribed at QoS 1 to its command topic and the broadcasts"
            }
        }
    }

    /// A fresh broker of this kind in `dir` (not for fleetmq, whose hub
    /// each measurement starts its own way).
    fn broker(
        self,
        nats_server: &std::path::Path,
        dir: &std::path::Path,
    ) -> anyhow::Result<peers::Broker> {
        match self {
            Nats => peers::nats_server(nats_server, dir, peers::NatsSync::Default),
            NatsSync => peers::nats_server(nats_server, dir, peers::NatsSync::Always),
            Mosquitto => peers::mosquitto(dir),
            Fleetmq | FleetmqCurve => anyhow::bail!("fleetmq runs its own hub"),
        }
    }
}

/// What one system did under the ingest load in one round.
struct Ingested {
    per_s: f64,
    cpu_us_per_msg: f64,
    rss_bytes: u64,
    generator_cpu: f64,
}

/// Runs `load` against the process `pid` and reads what it cost: acks a
/// second over the measured window, the broker's CPU per ack and this
/// process's CPU (the load generator's) over the whole run, the broker's
/// RSS at the end.
fn ingest_cost(
    pid: u32,
    load: impl FnOnce() -> anyhow::Result<peers::Counted>,
) -> anyhow::Result<Ingested> {
    let me = std::process::id();
    let (cpu, mine, t) = (
        procstat::cpu_seconds(pid).unwrap_or(0.0),
        procstat::cpu_seconds(me).unwrap_or(0.0),
        Instant::now(),
    );
    let counted = load()?;
    anyhow::ensure!(counted.acked > 0, "no acks in the measured window");
    Ok(Ingested {
        per_s: counted.acked as f64 / counted.seconds,
        cpu_us_per_msg: (procstat::cpu_seconds(pid).unwrap_or(0.0) - cpu) * 1e6
            / counted.total as f64,
        rss_bytes: procstat::rss_bytes(pid).unwrap_or(0),
        generator_cpu: (procstat::cpu_seconds(me).unwrap_or(0.0) - mine)
            / t.elapsed().as_secs_f64(),
    })
}

/// One round of durable ingest for `system`: a fresh broker, `PUBLISHERS`
/// publishers keeping `window` of the same batch in flight.
fn ingest(
    system: System,
    nats_server: &std::path::Path,
    template: &Template,
    args: &Args,
) -> anyhow::Result<Ingested> {
    let (warmup, measure) = (
        Duration::from_secs(2),
        Duration::from_secs_f64(args.seconds),
    );
    let mut payload = Vec::new();
    template.frame(1, &mut payload);
    let dir = tempfile::tempdir()?;
    match system {
        Fleetmq | FleetmqCurve => {
            let (hub, curve) = if system == Fleetmq {
                (run::Hub::start(dir.path(), HUB_CONFIG)?, None)
            } else {
                let keys = fleetmq_net::keys::generate()?;
                let curve = swarm::Curve::generate(keys.public.clone(), PUBLISHERS)?;
                let hub = run::Hub::start_secure(
                    dir.path(),
                    HUB_CONFIG,
                    &keys,
                    &curve.allow_list(PREFIX),
                )?;
                (hub, Some(curve))
            };
            let load = Swarm {
                endpoint: hub.endpoint("telemetry")?,
                agents: PUBLISHERS,
                window: args.window,
                warmup,
                measure,
                mode: Mode::Fleet,
                prefix: PREFIX.into(),
                curve,
            };
            ingest_cost(hub.proc.pid(), || {
                let o = swarm::run(&load, template)?;
                Ok(peers::Counted {
                    acked: o.batches,
                    seconds: o.seconds,
                    total: o.total,
                })
            })
        }
        Nats | NatsSync => {
            let b = system.broker(nats_server, dir.path())?;
            ingest_cost(b.proc.pid(), || {
                peers::nats::ingest(b.port, PUBLISHERS, args.window, &payload, warmup, measure)
            })
        }
        Mosquitto => {
            let b = system.broker(nats_server, dir.path())?;
            peers::mqtt::offline_store(b.port)?;
            ingest_cost(b.proc.pid(), || {
                peers::mqtt::ingest(b.port, PUBLISHERS, args.window, &payload, warmup, measure)
            })
        }
    }
}

/// One round of the store alone, the ceiling of fleetmq's durable ingest:
/// batches stored a second of time inside the store.
fn store_alone(template: &Template, args: &Args) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let counted = fleetmq_bench::store::alone(
        dir.path(),
        template,
        PUBLISHERS,
        args.window,
        Duration::from_secs(2),
        Duration::from_secs_f64(args.seconds),
    )?;
    anyhow::ensure!(counted.seconds > 0.0, "nothing was stored");
    Ok(counted.acked as f64 / counted.seconds)
}

/// One round of request/reply for a broker: the sorted times. fleetmq's
/// pings also set `sizes` (request and reply bytes), which the others then
/// use, so it goes first.
fn round_trips(
    system: System,
    nats_server: &std::path::Path,
    args: &Args,
    sizes: &mut (usize, usize),
) -> anyhow::Result<Vec<Duration>> {
    let dir = tempfile::tempdir()?;
    match system {
        Fleetmq | FleetmqCurve => {
            let (times, request, reply) =
                fleet_round_trips(args.agent_binary.as_deref(), args.count)?;
            *sizes = (request, reply);
            Ok(times)
        }
        Nats | NatsSync => {
            let b = system.broker(nats_server, dir.path())?;
            peers::nats::round_trips(b.port, args.count, sizes.0, sizes.1)
        }
        Mosquitto => {
            let b = system.broker(nats_server, dir.path())?;
            peers::mqtt::round_trips(b.port, args.count, sizes.0, sizes.1)
        }
    }
}

/// One round of memory per idle connected device for a broker.
fn memory(
    system: System,
    nats_server: &std::path::Path,
    devices: usize,
    per_process: usize,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    match system {
        Fleetmq | FleetmqCurve => {
            let curve = system == FleetmqCurve;
            let at = fleet_at_rest(devices, per_process, fleet::Kept::One, curve)?;
            let rss = procstat::rss_bytes(at.hub.proc.pid()).unwrap_or(0);
            Ok(rss.saturating_sub(at.rss_idle) as f64 / devices as f64)
        }
        Nats | NatsSync => {
            let b = system.broker(nats_server, dir.path())?;
            broker_per_device(&b, devices, peers::nats::devices)
        }
        Mosquitto => {
            let b = system.broker(nats_server, dir.path())?;
            broker_per_device(&b, devices, peers::mqtt::devices)
        }
    }
}

/// Durable ingest, request and reply, memory per idle connected device,
/// bytes per batch.
pub(super) fn measure(args: &Args) -> anyhow::Result<Value> {
    const ROUNDS: usize = 5;
    let devices = args
        .agents
        .as_deref()
        .and_then(|a| a.first().copied())
        .unwrap_or(1000);
    let server = run::nats_server()?;
    let template = template()?;
    let limit = procstat::raise_open_files((devices * fleet::FDS_PER_AGENT + 1024) as u64)
        .context("raising the open-files limit")?;
    let per_process = ((limit as usize).saturating_sub(1024) / fleet::FDS_PER_AGENT).clamp(1, 1000);
    let mut sizes = (0, 0);
    let mut ingested: Vec<Vec<Ingested>> = INGEST.iter().map(|_| Vec::new()).collect();
    let mut alone: Vec<f64> = Vec::new();
    let mut rtt: Vec<Vec<(f64, f64)>> = vec![Vec::new(); BROKERS.len()];
    let mut held: Vec<Vec<f64>> = vec![Vec::new(); MEMORY.len()];
    for round in 0..ROUNDS {
        eprintln!("peers: round {} of {ROUNDS}", round + 1);
        for (i, &s) in INGEST.iter().enumerate() {
            ingested[i].push(
                ingest(s, &server, &template, args)
                    .with_context(|| format!("{} ingest", s.name()))?,
            );
        }
        alone.push(store_alone(&template, args).context("the store alone")?);
        for (i, &s) in BROKERS.iter().enumerate() {
            let times = round_trips(s, &server, args, &mut sizes)
                .with_context(|| format!("{} round trips", s.name()))?;
            rtt[i].push((percentile_us(&times, 50.0), percentile_us(&times, 99.0)));
        }
        for (i, &s) in MEMORY.iter().enumerate() {
            held[i].push(
                memory(s, &server, devices, per_process)
                    .with_context(|| format!("{} memory per device", s.name()))?,
            );
        }
    }
    let (request_bytes, reply_bytes) = sizes;

    let of = |rows: &[Ingested], f: fn(&Ingested) -> f64| {
        median(&rows.iter().map(f).collect::<Vec<_>>())
    };
    println!(
        "\ndurable ingest: {PUBLISHERS} publishers, {} in flight each, the same {}-byte batch, {} s, median of {ROUNDS} alternated rounds",
        args.window,
        template.len(),
        args.seconds
    );
    println!(
        "  {:<13} {:>10} {:>9} {:>11} {:>9} {:>10}   what the ack means",
        "system", "acked/s", "vs fleetmq", "cpu µs/msg", "RSS MB", "load cpu"
    );
    let base = of(&ingested[0], |r| r.per_s);
    let mut ingest_rows = Vec::new();
    for (s, rows) in INGEST.iter().zip(&ingested) {
        let (rate, cpu, rss, load) = (
            of(rows, |r| r.per_s),
            of(rows, |r| r.cpu_us_per_msg),
            of(rows, |r| r.rss_bytes as f64),
            of(rows, |r| r.generator_cpu),
        );
        println!(
            "  {:<13} {rate:>10.0} {:>9.2}x {cpu:>11.1} {:>9.1} {load:>10.2}   {}",
            s.name(),
            rate / base,
            rss / 1e6,
            s.ack()
        );
        ingest_rows.push(json!({
            "system": s.name(), "ack_means": s.ack(),
            "acked_per_s": rate, "ratio_to_fleetmq": rate / base,
            "broker_cpu_us_per_msg": cpu, "broker_rss_bytes": rss,
            "load_generator_cpu_s_per_s": load,
            "rounds_acked_per_s": rows.iter().map(|r| r.per_s).collect::<Vec<_>>(),
        }));
    }
    let ceiling = median(&alone);
    println!(
        "  {:<13} {ceiling:>10.0} {:>9.2}x {:>11.1} {:>9} {:>10}   the ceiling: fleetmq's store alone, the same batches in rounds of {PUBLISHERS} devices x {} written straight into the hub's Store (synchronous=FULL), no network, no hub loop; cpu is the time inside the store",
        "store alone",
        ceiling / base,
        1e6 / ceiling,
        "-",
        "-",
        args.window
    );

    println!(
        "\nrequest and reply, {} round trips a round ({request_bytes}-byte request, {reply_bytes}-byte reply), median of {ROUNDS} alternated rounds",
        args.count
    );
    println!(
        "  {:<10} {:>8} {:>8} {:>10}   path",
        "system", "p50 µs", "p99 µs", "p50 vs fleetmq"
    );
    let base = median(&rtt[0].iter().map(|r| r.0).collect::<Vec<_>>());
    let mut rtt_rows = Vec::new();
    for (s, rows) in BROKERS.iter().zip(&rtt) {
        let (p, path) = (s.name(), s.path());
        let p50 = median(&rows.iter().map(|r| r.0).collect::<Vec<_>>());
        let p99 = median(&rows.iter().map(|r| r.1).collect::<Vec<_>>());
        println!(
            "  {p:<10} {p50:>8.0} {p99:>8.0} {:>13.2}x   {path}",
            p50 / base
        );
        rtt_rows.push(json!({ "system": p, "p50_us": p50, "p99_us": p99, "p50_ratio_to_fleetmq": p50 / base, "path": path }));
    }

    println!(
        "\nbroker memory per idle connected device, {devices} devices, median of {ROUNDS} alternated rounds"
    );
    let base = median(&held[0]);
    let mut memory_rows = Vec::new();
    for (s, values) in MEMORY.iter().zip(&held) {
        let (p, holds) = (s.name(), s.device_holds());
        let m = median(values);
        println!(
            "  {p:<13} {:>8.1} KB  {:>6.2}x fleetmq   {holds}",
            m / 1024.0,
            m / base
        );
        memory_rows.push(json!({
            "system": p, "device_holds": holds, "rss_per_device_bytes": m,
            "rounds_bytes": values, "ratio_to_fleetmq": m / base,
        }));
    }

    let samples = wire::samples();
    let batch = wire::fleetmq(&samples);
    let fleetmq_protocol::Upstream::Batch(decoded) = fleetmq_protocol::Upstream::decode(&batch)?
    else {
        anyhow::bail!("the typical batch did not decode as a batch");
    };
    let lines = fleetmq_hub::cluster::lines::batch_lines(wire::DEVICE, &decoded);
    println!("\nbytes on the wire for one 50-sample batch (framing included, TCP/IP not)");
    let sizes = peers::wire_bytes(wire::DEVICE, decoded.seq, &batch, &lines);
    let mut wire_rows = Vec::new();
    for (name, bytes) in &sizes {
        println!(
            "  {name:<16} {bytes:>6}  {:>5.2}x fleetmq",
            *bytes as f64 / sizes[0].1 as f64
        );
        wire_rows.push(json!({ "system": name, "bytes": bytes }));
    }
    println!(
        "  (NATS and MQTT carry the samples as Influx line protocol, as Telegraf and the hub's NATS stream do)"
    );
    Ok(json!({
        "rounds": ROUNDS,
        "ingest": {
            "publishers": PUBLISHERS, "window": args.window, "batch_bytes": template.len(), "seconds": args.seconds, "rows": ingest_rows,
            "store_alone": { "batches_per_s": ceiling, "ratio_to_fleetmq": ceiling / base, "rounds_batches_per_s": alone },
        },
        "request_reply": { "count": args.count, "request_bytes": request_bytes, "reply_bytes": reply_bytes, "rows": rtt_rows },
        "memory_per_idle_device": { "devices": devices, "rows": memory_rows },
        "bytes_per_batch": wire_rows,
    }))
}

/// What `broker` holds per device once `n` have connected with `connect`
/// (measured from one device in, so what every connection shares is in
/// the baseline).
fn broker_per_device(
    broker: &peers::Broker,
    n: usize,
    connect: fn(u16, usize) -> anyhow::Result<Vec<std::net::TcpStream>>,
) -> anyhow::Result<f64> {
    let pid = broker.proc.pid();
    let _first = connect(broker.port, 1)?;
    let before = procstat::rss_bytes(pid).unwrap_or(0);
    let held = connect(broker.port, n)?;
    let after = procstat::rss_bytes(pid).unwrap_or(0);
    drop(held);
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
