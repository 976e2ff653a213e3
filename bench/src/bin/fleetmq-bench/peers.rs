//! `fleetmq-bench peers`: fleetmq beside NATS JetStream and Mosquitto on
//! this machine (the brokers and their load are the library's
//! `fleetmq_bench::peers`); every figure from the same run, the systems
//! alternated within each round, medians of the rounds.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleetmq_bench::swarm::{self, Mode, Swarm, Template};
use fleetmq_bench::{fleet, peers, procstat, run, wire};
use serde_json::{Value, json};

use super::{Args, HUB_CONFIG, fleet_at_rest, fleet_round_trips, percentile_us, template};

/// One system of the peers benchmark: its name, and what its ack means.
struct Peer {
    name: &'static str,
    ack: &'static str,
}

const PEERS: [Peer; 5] = [
    Peer {
        name: "fleetmq",
        ack: "committed to SQLite and fsynced (WAL, synchronous=FULL); a resent batch is stored once (device, sequence)",
    },
    Peer {
        name: "fleetmq+curve",
        ack: "as fleetmq, every agent enrolled and on CURVE, as fleets run",
    },
    Peer {
        name: "nats-sync",
        ack: "JetStream (file store, 1 replica) wrote it and fsynced (sync_interval: always); stored once (Nats-Msg-Id)",
    },
    Peer {
        name: "nats",
        ack: "JetStream (file store, 1 replica) wrote it to the OS, fsynced within 2 min (the default); stored once (Nats-Msg-Id)",
    },
    Peer {
        name: "mosquitto",
        ack: "QoS 1 PUBACK: queued in the broker's memory for the store's session; lost if the broker stops; at least once",
    },
];

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

/// One round of durable ingest for `peer`: a fresh broker, `PUBLISHERS`
/// publishers keeping `window` of the same batch in flight.
fn peer_ingest(
    peer: &str,
    nats_server: &std::path::Path,
    template: &Template,
    args: &Args,
) -> anyhow::Result<Ingested> {
    const PUBLISHERS: usize = 100;
    let (warmup, measure) = (
        Duration::from_secs(2),
        Duration::from_secs_f64(args.seconds),
    );
    let mut payload = Vec::new();
    template.frame(1, &mut payload);
    let dir = tempfile::tempdir()?;
    match peer {
        "fleetmq" | "fleetmq+curve" => {
            let (hub, curve) = if peer == "fleetmq" {
                (run::Hub::start(dir.path(), HUB_CONFIG)?, None)
            } else {
                let keys = fleetmq_net::keys::generate()?;
                let curve = swarm::Curve::generate(keys.public.clone(), PUBLISHERS)?;
                let hub = run::Hub::start_secure(
                    dir.path(),
                    HUB_CONFIG,
                    &keys,
                    &curve.allow_list("peer"),
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
                prefix: "peer".into(),
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
        "nats" | "nats-sync" => {
            let sync = if peer == "nats" {
                peers::NatsSync::Default
            } else {
                peers::NatsSync::Always
            };
            let b = peers::nats_server(nats_server, dir.path(), sync)?;
            ingest_cost(b.proc.pid(), || {
                peers::nats::ingest(b.port, PUBLISHERS, args.window, &payload, warmup, measure)
            })
        }
        _ => {
            let b = peers::mosquitto(dir.path())?;
            peers::mqtt::offline_store(b.port)?;
            ingest_cost(b.proc.pid(), || {
                peers::mqtt::ingest(b.port, PUBLISHERS, args.window, &payload, warmup, measure)
            })
        }
    }
}

/// One round of request/reply for `peer`: the sorted times.
fn peer_round_trips(
    peer: &str,
    nats_server: &std::path::Path,
    args: &Args,
    sizes: (usize, usize),
) -> anyhow::Result<Vec<Duration>> {
    let dir = tempfile::tempdir()?;
    match peer {
        "fleetmq" => Ok(fleet_round_trips(args.agent_binary.as_deref(), args.count)?.0),
        "nats" => {
            let b = peers::nats_server(nats_server, dir.path(), peers::NatsSync::Default)?;
            peers::nats::round_trips(b.port, args.count, sizes.0, sizes.1)
        }
        _ => {
            let b = peers::mosquitto(dir.path())?;
            peers::mqtt::round_trips(b.port, args.count, sizes.0, sizes.1)
        }
    }
}

/// One round of memory per idle connected device for `peer`.
fn peer_memory(
    peer: &str,
    nats_server: &std::path::Path,
    devices: usize,
    per_process: usize,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    match peer {
        "fleetmq" => {
            let at = fleet_at_rest(devices, per_process)?;
            let rss = procstat::rss_bytes(at.hub.proc.pid()).unwrap_or(0);
            Ok(rss.saturating_sub(at.rss_idle) as f64 / devices as f64)
        }
        "nats" => {
            let b = peers::nats_server(nats_server, dir.path(), peers::NatsSync::Default)?;
            broker_per_device(&b, devices, peers::nats::devices)
        }
        _ => {
            let b = peers::mosquitto(dir.path())?;
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
    let (_, request_bytes, reply_bytes) = fleet_round_trips(args.agent_binary.as_deref(), 1)?;
    let rtt_peers = ["fleetmq", "nats", "mosquitto"];
    let mut ingest: Vec<Vec<Ingested>> = (0..PEERS.len()).map(|_| Vec::new()).collect();
    let mut rtt: Vec<Vec<(f64, f64)>> = vec![Vec::new(); rtt_peers.len()];
    let mut memory: Vec<Vec<f64>> = vec![Vec::new(); rtt_peers.len()];
    for round in 0..ROUNDS {
        eprintln!("peers: round {} of {ROUNDS}", round + 1);
        for (i, p) in PEERS.iter().enumerate() {
            ingest[i].push(
                peer_ingest(p.name, &server, &template, args)
                    .with_context(|| format!("{} ingest", p.name))?,
            );
        }
        for (i, p) in rtt_peers.iter().enumerate() {
            let times = peer_round_trips(p, &server, args, (request_bytes, reply_bytes))
                .with_context(|| format!("{p} round trips"))?;
            rtt[i].push((percentile_us(&times, 50.0), percentile_us(&times, 99.0)));
            memory[i].push(
                peer_memory(p, &server, devices, per_process)
                    .with_context(|| format!("{p} memory per device"))?,
            );
        }
    }

    let of = |rows: &[Ingested], f: fn(&Ingested) -> f64| {
        median(&rows.iter().map(f).collect::<Vec<_>>())
    };
    println!(
        "\ndurable ingest: 100 publishers, {} in flight each, the same {}-byte batch, {} s, median of {ROUNDS} alternated rounds",
        args.window,
        template.len(),
        args.seconds
    );
    println!(
        "  {:<13} {:>10} {:>9} {:>11} {:>9} {:>10}   what the ack means",
        "system", "acked/s", "vs fleetmq", "cpu µs/msg", "RSS MB", "load cpu"
    );
    let base = of(&ingest[0], |r| r.per_s);
    let mut ingest_rows = Vec::new();
    for (p, rows) in PEERS.iter().zip(&ingest) {
        let (rate, cpu, rss, load) = (
            of(rows, |r| r.per_s),
            of(rows, |r| r.cpu_us_per_msg),
            of(rows, |r| r.rss_bytes as f64),
            of(rows, |r| r.generator_cpu),
        );
        println!(
            "  {:<13} {rate:>10.0} {:>9.2}x {cpu:>11.1} {:>9.1} {load:>10.2}   {}",
            p.name,
            rate / base,
            rss / 1e6,
            p.ack
        );
        ingest_rows.push(json!({
            "system": p.name, "ack_means": p.ack,
            "acked_per_s": rate, "ratio_to_fleetmq": rate / base,
            "broker_cpu_us_per_msg": cpu, "broker_rss_bytes": rss,
            "load_generator_cpu_s_per_s": load,
            "rounds_acked_per_s": rows.iter().map(|r| r.per_s).collect::<Vec<_>>(),
        }));
    }

    println!(
        "\nrequest and reply, {} round trips a round ({request_bytes}-byte request, {reply_bytes}-byte reply), median of {ROUNDS} alternated rounds",
        args.count
    );
    println!(
        "  {:<10} {:>8} {:>8} {:>10}   path",
        "system", "p50 µs", "p99 µs", "p50 vs fleetmq"
    );
    let paths = [
        "operator -> hub -> agent -> hub -> operator (REQ, ROUTER, DEALER)",
        "core request/reply through nats-server to a subscribed client",
        "QoS 0 publish on the device's command topic, reply on its reply topic",
    ];
    let base = median(&rtt[0].iter().map(|r| r.0).collect::<Vec<_>>());
    let mut rtt_rows = Vec::new();
    for ((p, rows), path) in rtt_peers.iter().zip(&rtt).zip(paths) {
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
    let holds = [
        "five ZeroMQ connections (CURVE off), online and listening",
        "one connection, subscribed to its command subject and the broadcasts",
        "one MQTT 3.1.1 connection, subscribed at QoS 1 to its command topic and the broadcasts",
    ];
    let base = median(&memory[0]);
    let mut memory_rows = Vec::new();
    for ((p, values), holds) in rtt_peers.iter().zip(&memory).zip(holds) {
        let m = median(values);
        println!(
            "  {p:<10} {:>8.1} KB  {:>6.2}x fleetmq   {holds}",
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
        "ingest": { "publishers": 100, "window": args.window, "batch_bytes": template.len(), "seconds": args.seconds, "rows": ingest_rows },
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
