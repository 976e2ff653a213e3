//! `fleetmq-bench`: runs the benchmarks, prints a table, writes JSON.
//!
//! ```text
//! fleetmq-bench all [--json FILE] [--seconds S] [--idle-seconds S]
//! fleetmq-bench ingest [--agents 1,100,1000] [--seconds S]
//! fleetmq-bench rtt [--count N]
//! fleetmq-bench idle [--idle-seconds S] [--agent-binary PATH]
//! fleetmq-bench wire
//! fleetmq-bench connected [--agents 5000] [--no-jobs | --telemetry-only]
//! fleetmq-bench flood [--agents 20] [--seconds S]
//! fleetmq-bench query [--agents 20] [--seconds S]
//! fleetmq-bench store [--agents 200] [--hours 24]    (not in `all`: it writes GBs)
//! fleetmq-bench cluster [--agents 10000] [--seconds S] (not in `all`: it runs a NATS cluster)
//! fleetmq-bench peers [--agents 1000] [--seconds S] [--count N] (not in `all`: NATS and Mosquitto)
//! fleetmq-bench swarm --hub tcp://HOST:PORT --agents N [--seconds S] [--window W]
//! ```
//!
//! Every comparison runs side by side in the same process, since absolute
//! figures on a shared machine move from run to run. `swarm` points
//! simulated agents at a hub you run (plaintext, with `device_rate = 0`
//! and the `[limits]` records and bytes budgets off) to see what it takes.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleetmq_bench::flood::{self, Flood};
use fleetmq_bench::swarm::{self, Mode, Swarm, Template};
use fleetmq_bench::{fleet, procstat, run, wire};
use fleetmq_protocol::{
    Command, OperatorFrame, OperatorReplyFrame, OperatorRequest, Request, Response,
};
use serde_json::{Value, json};

/// `fleetmq-bench peers`.
mod peers;

const USAGE: &str = "usage: fleetmq-bench all|ingest|rtt|idle|wire|connected|flood|query|store|cluster|peers|swarm [--json FILE] \
[--seconds S] [--idle-seconds S] [--agents N,N,...] [--count N] [--hub ENDPOINT] [--window W] \
[--agent-binary PATH] [--hours H] [--no-jobs | --telemetry-only]";

/// Batches each simulated agent keeps in flight.
const WINDOW: usize = 4;
/// A hub for benchmarks: no per-device rate limit or telemetry budget (the
/// swarm is one honest client per device, sending far more than a Pi),
/// otherwise as shipped.
const HUB_CONFIG: &str = "[security]\ndevice_rate = 0\n[limits]\ndevice_records_per_s = 0\ndevice_bytes_per_s = 0\n[listen]\nhttp = \"\"\n";

struct Args {
    command: String,
    json: Option<String>,
    seconds: f64,
    idle_seconds: f64,
    /// None: each benchmark's own default.
    agents: Option<Vec<usize>>,
    count: usize,
    hub: Option<String>,
    window: usize,
    /// fleet-part: the first agent's number.
    first: usize,
    /// rtt, idle: this agent binary rather than the one beside us.
    agent_binary: Option<std::path::PathBuf>,
    /// store: hours of fleet time to generate.
    hours: u64,
    /// connected, fleet-part: the sockets each simulated agent connects
    /// (`--no-jobs`: no jobs or results socket; `--telemetry-only`).
    kept: fleet::Kept,
}

fn parse() -> Result<Args, lexopt::Error> {
    use lexopt::prelude::*;
    let mut args = Args {
        command: String::new(),
        json: None,
        seconds: 5.0,
        idle_seconds: 60.0,
        agents: None,
        count: 2000,
        hub: None,
        window: WINDOW,
        first: 0,
        agent_binary: None,
        hours: 24,
        kept: fleet::Kept::All,
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Long("json") => args.json = Some(p.value()?.string()?),
            Long("seconds") => args.seconds = p.value()?.parse()?,
            Long("idle-seconds") => args.idle_seconds = p.value()?.parse()?,
            Long("count") => args.count = p.value()?.parse()?,
            Long("hub") => args.hub = Some(p.value()?.string()?),
            Long("window") => args.window = p.value()?.parse()?,
            Long("first") => args.first = p.value()?.parse()?,
            Long("hours") => args.hours = p.value()?.parse()?,
            Long("no-jobs") => args.kept = fleet::Kept::NoJobs,
            Long("telemetry-only") => args.kept = fleet::Kept::TelemetryOnly,
            Long("agent-binary") => args.agent_binary = Some(p.value()?.into()),
            Long("agents") => {
                let list = p.value()?.string()?;
                let agents = list
                    .split(',')
                    .map(|n| n.trim().parse())
                    .collect::<Result<_, _>>()
                    .map_err(|_| {
                        lexopt::Error::Custom(format!("--agents {list:?}: use N,N,...").into())
                    })?;
                args.agents = Some(agents);
            }
            Value(v) if args.command.is_empty() => args.command = v.string()?,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(args)
}

fn main() -> std::process::ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    match bench(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn bench(args: &Args) -> anyhow::Result<()> {
    let mut report = serde_json::Map::new();
    let all = args.command == "all";
    if args.command == "swarm" {
        return swarm_against(args);
    }
    if args.command == "fleet-part" {
        return fleet_part(args);
    }
    if all || args.command == "wire" {
        report.insert("wire".into(), wire_sizes());
    }
    if all || args.command == "ingest" {
        report.insert("ingest".into(), ingest(args)?);
    }
    if all || args.command == "rtt" {
        report.insert("command_round_trip".into(), rtt(args)?);
    }
    if all || args.command == "idle" {
        report.insert("agent_idle".into(), idle(args)?);
    }
    if all || args.command == "connected" {
        report.insert("connected_fleet".into(), connected(args)?);
    }
    if all || args.command == "flood" {
        report.insert("flood".into(), flooded(args)?);
    }
    if all || args.command == "query" {
        report.insert("query".into(), queried(args)?);
    }
    if args.command == "cluster" {
        report.insert("cluster".into(), fleetmq_bench_cluster(args)?);
    }
    if args.command == "peers" {
        report.insert("peers".into(), peers::measure(args)?);
    }
    if args.command == "store" {
        let dir = tempfile::Builder::new()
            .prefix("fleetmq-bench-store-")
            .tempdir()?;
        let devices = args.agents.as_ref().and_then(|a| a.first().copied());
        let result = fleetmq_bench::store::run(dir.path(), devices.unwrap_or(200), args.hours)?;
        report.insert("store".into(), result);
    }
    anyhow::ensure!(
        !report.is_empty(),
        "unknown benchmark {:?}\n{USAGE}",
        args.command
    );
    if all {
        report.insert("binary_sizes".into(), binary_sizes());
    }
    if let Some(path) = &args.json {
        // One file for every benchmark: a run replaces its own entries and
        // keeps those of benchmarks run before it.
        let mut results: serde_json::Map<String, Value> = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        results.extend(report);
        std::fs::write(path, serde_json::to_string_pretty(&Value::Object(results))?)
            .with_context(|| format!("writing {path}"))?;
        println!("\nwrote {path}");
    }
    Ok(())
}

fn wire_sizes() -> Value {
    let sizes = wire::sizes();
    let json = sizes
        .iter()
        .find(|(n, _)| *n == "JSON")
        .map_or(1, |(_, b)| *b);
    println!("\nwire size of a typical 50-sample batch");
    println!("  {:<36} {:>7}  {:>8}", "encoding", "bytes", "vs JSON");
    let mut out = serde_json::Map::new();
    for (name, bytes) in &sizes {
        println!(
            "  {name:<36} {bytes:>7}  {:>7.2}x",
            *bytes as f64 / json as f64
        );
        out.insert((*name).into(), json!(bytes));
    }
    println!("  encode and decode times: cargo bench -p fleetmq-bench --bench wire");
    Value::Object(out)
}

fn template() -> anyhow::Result<Template> {
    let samples = wire::samples();
    let mut b = fleetmq_protocol::BatchBuilder::new(0);
    for s in &samples {
        b.push_sample(&s.name, s.ts_ms, s.value)?;
    }
    Template::new(&fleetmq_protocol::Upstream::Batch(b.finish()).encode()?)
}

fn ingest(args: &Args) -> anyhow::Result<Value> {
    let template = template()?;
    let per_batch = wire::samples().len() as f64;
    println!(
        "\nhub ingest: simulated agents, {}-sample batches ({} bytes), {} in flight each, {} s",
        per_batch,
        template.len(),
        args.window,
        args.seconds
    );
    println!(
        "  {:>6}  {:>12} {:>12}  {:>14}  {:>9} {:>11}  {:>10}",
        "agents", "samples/s", "batches/s", "raw msgs/s", "vs raw", "hub cpu s/s", "RSS/agent"
    );
    let mut rows = Vec::new();
    for &agents in args.agents.as_deref().unwrap_or(&[1, 100, 1000]) {
        let dir = tempfile::tempdir()?;
        let hub = run::Hub::start(dir.path(), HUB_CONFIG)?;
        let pid = hub.proc.pid();
        let rss_idle = procstat::rss_bytes(pid).unwrap_or(0);
        let load = Swarm {
            endpoint: hub.endpoint("telemetry")?,
            agents,
            window: args.window,
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs_f64(args.seconds),
            mode: Mode::Fleet,
            prefix: "swarm".into(),
            curve: None,
        };
        let cpu_before = procstat::cpu_seconds(pid).unwrap_or(0.0);
        let wall = Instant::now();
        let fleet = swarm::run(&load, &template)?;
        let cpu =
            (procstat::cpu_seconds(pid).unwrap_or(0.0) - cpu_before) / wall.elapsed().as_secs_f64();
        let rss = procstat::rss_bytes(pid).unwrap_or(0);
        drop(hub);
        let raw = swarm::run(
            &Swarm {
                endpoint: swarm::raw_router()?,
                mode: Mode::Raw,
                ..load
            },
            &template,
        )?;
        let batches = fleet.batches as f64 / fleet.seconds;
        let raw_rate = raw.batches as f64 / raw.seconds;
        let rss_per_agent = rss.saturating_sub(rss_idle) as f64 / agents as f64;
        println!(
            "  {agents:>6}  {:>12.0} {:>12.0}  {:>14.0}  {:>8.2}x {:>11.2}  {:>7.1} KB",
            batches * per_batch,
            batches,
            raw_rate,
            batches / raw_rate,
            cpu,
            rss_per_agent / 1024.0
        );
        if fleet.answered < agents || fleet.refusals > 0 {
            println!(
                "          ({} of {agents} agents were acked; {} refusals)",
                fleet.answered, fleet.refusals
            );
        }
        rows.push(json!({
            "agents": agents,
            "samples_per_s": batches * per_batch,
            "batches_per_s": batches,
            "raw_messages_per_s": raw_rate,
            "vs_raw": batches / raw_rate,
            "hub_cpu_seconds_per_s": cpu,
            "hub_rss_bytes": rss,
            "hub_rss_idle_bytes": rss_idle,
            "hub_rss_per_agent_bytes": rss_per_agent,
            "agents_acked": fleet.answered,
            "refusals": fleet.refusals,
        }));
    }
    Ok(json!({ "batch_bytes": template.len(), "window": args.window, "rows": rows }))
}

/// The honest agents of the flood and query benchmarks: `--agents N`, or 20.
fn honest_agents(args: &Args) -> usize {
    args.agents
        .as_ref()
        .and_then(|a| a.first())
        .copied()
        .unwrap_or(20)
}

/// Honest agents' ack latency with one device flooding valid but huge
/// batches, beside the same run without the flood; with the hub's budgets
/// as shipped, and (for scale) with them off. The message rate limit is on
/// as shipped (100 a second): budgets in work are what bound 20,000-record
/// batches.
fn flooded(args: &Args) -> anyhow::Result<Value> {
    let honest = honest_agents(args);
    let template = template()?;
    let off = "[limits]\ndevice_records_per_s = 0\ndevice_bytes_per_s = 0\ndevice_series = 0\n";
    println!(
        "\none device floods: {honest} honest agents send a batch every 100 ms each, {} s; ack latency",
        args.seconds
    );
    println!(
        "  {:<34} {:>8} {:>8} {:>9} {:>10}  {:>11}  flood sent/stored/throttled/rejected",
        "run", "p50 ms", "p99 ms", "max ms", "p99 vs no", "hub RSS +MB"
    );
    let mut rows = Vec::new();
    let mut base_p99 = None;
    for (name, flood, limits) in [
        ("no flood", Flood::None, ""),
        ("chat flood, budgets as shipped", Flood::Chat, ""),
        ("name flood, budgets as shipped", Flood::Names, ""),
        ("chat flood, budgets off", Flood::Chat, off),
        ("name flood, budgets off", Flood::Names, off),
    ] {
        let dir = tempfile::tempdir()?;
        // As shipped: the message rate limit on too.
        let hub = run::Hub::start(dir.path(), &format!("[listen]\nhttp = \"\"\n{limits}"))?;
        let pid = hub.proc.pid();
        let rss_before = procstat::rss_bytes(pid).unwrap_or(0);
        let out = flood::run(
            &hub.endpoint("telemetry")?,
            honest,
            args.seconds,
            flood,
            &template,
        )?;
        let rss_after = procstat::rss_bytes(pid).unwrap_or(0);
        let grown_mb = rss_after.saturating_sub(rss_before) as f64 / (1 << 20) as f64;
        let l = &out.latencies;
        let (p50, p99, max) = flood::spread_ms(l);
        let base = *base_p99.get_or_insert(p99);
        println!(
            "  {name:<34} {p50:>8.1} {p99:>8.1} {max:>9.1} {:>9.1}x  {grown_mb:>11.1}  {}/{}/{}/{}",
            p99 / base.max(0.001),
            out.flood_sent,
            out.flood_acked,
            out.flood_throttled,
            out.flood_rejected
        );
        rows.push(json!({
            "run": name,
            "acks": l.len(),
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": max,
            "p99_vs_no_flood": p99 / base.max(0.001),
            "hub_rss_growth_bytes": rss_after.saturating_sub(rss_before),
            "hub_rss_bytes": rss_after,
            "flood_sent": out.flood_sent,
            "flood_stored": out.flood_acked,
            "flood_throttled": out.flood_throttled,
            "flood_rejected": out.flood_rejected,
        }));
    }
    Ok(json!({ "honest_agents": honest, "rows": rows }))
}

/// Honest agents' ack latency while an operator runs the heaviest
/// documented read over and over (telemetry for a series no row has: a
/// scan of the whole store), beside the same run without it.
fn queried(args: &Args) -> anyhow::Result<Value> {
    let honest = honest_agents(args);
    let template = template()?;
    let dir = tempfile::tempdir()?;
    let hub = run::Hub::start(dir.path(), HUB_CONFIG)?;
    let telemetry = hub.endpoint("telemetry")?;
    // A large store: a swarm writes for a while.
    let fill = swarm::run(
        &Swarm {
            endpoint: telemetry.clone(),
            agents: 200,
            window: WINDOW,
            warmup: Duration::ZERO,
            measure: Duration::from_secs_f64(args.seconds * 4.0),
            mode: Mode::Fleet,
            prefix: "fill".into(),
            curve: None,
        },
        &template,
    )?;
    let batches = fill.batches;
    println!(
        "\nan operator scans the store: {batches} batches ({} samples) stored; {honest} honest agents send a batch every 100 ms each, {} s",
        batches * wire::samples().len() as u64,
        args.seconds
    );
    let baseline = flood::run(&telemetry, honest, args.seconds, Flood::None, &template)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let scans = {
        let (endpoint, stop) = (hub.endpoint("operator")?, stop.clone());
        std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
            let ctx = zmq::Context::new();
            let req = ctx.socket(zmq::REQ)?;
            req.set_linger(0)?;
            req.set_rcvtimeo(120_000)?;
            req.connect(&endpoint)?;
            let mut took = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let frame = OperatorFrame::from(OperatorRequest {
                    id: fastrand_id(),
                    request: Request::Telemetry(fleetmq_protocol::TelemetryQuery {
                        device: None,
                        name: Some("no.such.series".into()),
                        after_id: 0,
                        limit: 100,
                        since_ms: 0,
                        until_ms: 0,
                        newest: false,
                        tags: vec![],
                    }),
                })
                .encode()?;
                let (t, _) = round_trip(&req, &frame)?;
                took.push(t);
            }
            Ok(took)
        })
    };
    let during = flood::run(&telemetry, honest, args.seconds, Flood::None, &template)?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let scans = scans
        .join()
        .map_err(|_| anyhow::anyhow!("the scanning thread panicked"))??;
    let scan_ms =
        scans.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / scans.len().max(1) as f64;
    println!(
        "  {:<30} {:>8} {:>8} {:>9} {:>10}",
        "run", "p50 ms", "p99 ms", "max ms", "p99 vs no"
    );
    let row = |name: &str, l: &[Duration], base: f64| {
        let (p50, p99, max) = flood::spread_ms(l);
        println!(
            "  {name:<30} {p50:>8.1} {p99:>8.1} {max:>9.1} {:>9.1}x",
            p99 / base.max(0.001)
        );
        json!({ "run": name, "acks": l.len(), "p50_ms": p50, "p99_ms": p99, "max_ms": max })
    };
    let (_, base, _) = flood::spread_ms(&baseline.latencies);
    let rows = vec![
        row("no query", &baseline.latencies, base),
        row("full scans back to back", &during.latencies, base),
    ];
    println!(
        "  {} scans of the whole store, {scan_ms:.0} ms each on average, off the hub loop",
        scans.len()
    );
    Ok(json!({
        "honest_agents": honest,
        "store_batches": batches,
        "scans": scans.len(),
        "scan_ms_mean": scan_ms,
        "rows": rows,
    }))
}

/// The `p`th percentile of sorted `times`, in microseconds.
fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    fleetmq_bench::percentile(sorted, p).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Sends `frame` on `req` and waits for one reply; the time it took.
fn round_trip(req: &zmq::Socket, frame: &[u8]) -> anyhow::Result<(Duration, Vec<u8>)> {
    let t = Instant::now();
    req.send(frame, 0)?;
    let reply = req.recv_bytes(0)?;
    Ok((t.elapsed(), reply))
}

fn ping_frame(device: &str) -> anyhow::Result<Vec<u8>> {
    Ok(OperatorFrame::from(OperatorRequest {
        id: fastrand_id(),
        request: Request::Command {
            device: device.into(),
            command: Command::Ping,
            timeout_ms: 5_000,
        },
    })
    .encode()?)
}

/// A request id: the hub answers a repeated id from memory, so each must
/// be new.
fn fastrand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let salt = std::process::id() as u64;
    (salt << 32) + NEXT.fetch_add(1, Ordering::Relaxed) + 1
}

fn is_pong(reply: &[u8]) -> bool {
    matches!(
        OperatorReplyFrame::decode(reply),
        Ok(OperatorReplyFrame::Response(r)) if matches!(r.response, Response::Reply { .. })
    )
}

/// `count` pings from an operator's socket to a real agent through a hub
/// on this machine: the sorted times and the request's and reply's sizes.
fn fleet_round_trips(
    agent_binary: Option<&std::path::Path>,
    count: usize,
) -> anyhow::Result<(Vec<Duration>, usize, usize)> {
    let dir = tempfile::tempdir()?;
    let hub = run::Hub::start(dir.path(), HUB_CONFIG)?;
    let _agent = run::agent(
        agent_binary,
        dir.path(),
        &hub.endpoint("telemetry")?,
        "pi-rtt",
        "",
    )?;
    let ctx = zmq::Context::new();
    let req = ctx.socket(zmq::REQ)?;
    req.set_rcvtimeo(10_000)?;
    req.set_linger(0)?;
    req.connect(&hub.endpoint("operator")?)?;
    // Until the agent is connected the hub answers "offline".
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, reply) = round_trip(&req, &ping_frame("pi-rtt")?)?;
        if is_pong(&reply) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the agent did not answer a ping in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut times = Vec::with_capacity(count);
    let (mut request_bytes, mut reply_bytes) = (0, 0);
    for _ in 0..count {
        let frame = ping_frame("pi-rtt")?;
        let (t, reply) = round_trip(&req, &frame)?;
        anyhow::ensure!(is_pong(&reply), "a ping was not answered with a pong");
        (request_bytes, reply_bytes) = (frame.len(), reply.len());
        times.push(t);
    }
    times.sort();
    Ok((times, request_bytes, reply_bytes))
}

fn rtt(args: &Args) -> anyhow::Result<Value> {
    let ctx = zmq::Context::new();
    let (times, request_bytes, reply_bytes) =
        fleet_round_trips(args.agent_binary.as_deref(), args.count)?;

    // The baseline: a bare REQ/REP round trip with messages of those sizes.
    let rep = ctx.socket(zmq::REP)?;
    rep.bind("tcp://127.0.0.1:*")?;
    let rep_ep = rep
        .get_last_endpoint()?
        .map_err(|_| anyhow::anyhow!("address not UTF-8"))?;
    let count = args.count;
    let answer = vec![0u8; reply_bytes];
    let server = std::thread::spawn(move || -> Result<(), zmq::Error> {
        for _ in 0..count {
            rep.recv_bytes(0)?;
            rep.send(&answer, 0)?;
        }
        Ok(())
    });
    let raw_req = ctx.socket(zmq::REQ)?;
    raw_req.connect(&rep_ep)?;
    let ask = vec![0u8; request_bytes];
    let mut raw = Vec::with_capacity(count);
    for _ in 0..count {
        raw.push(round_trip(&raw_req, &ask)?.0);
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the REP thread panicked"))??;
    raw.sort();

    let (p50, p99) = (percentile_us(&times, 50.0), percentile_us(&times, 99.0));
    let (r50, r99) = (percentile_us(&raw, 50.0), percentile_us(&raw, 99.0));
    println!("\ncommand round trip, operator -> hub -> agent -> hub -> operator ({count} pings)");
    println!("  {:<28} {:>10} {:>10}", "", "p50 µs", "p99 µs");
    println!("  {:<28} {p50:>10.0} {p99:>10.0}", "fleetmq ping");
    println!("  {:<28} {r50:>10.0} {r99:>10.0}", "raw libzmq REQ/REP");
    println!("  p50 is {:.2}x the raw round trip", p50 / r50);
    Ok(json!({
        "count": count,
        "p50_us": p50, "p99_us": p99,
        "raw_p50_us": r50, "raw_p99_us": r99,
        "p50_vs_raw": p50 / r50,
        "request_bytes": request_bytes, "reply_bytes": reply_bytes,
    }))
}

fn idle(args: &Args) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let hub = run::Hub::start(dir.path(), HUB_CONFIG)?;
    // Sampling once a second: the agent's own metrics and every host group.
    let config = "[telemetry]\nsample_interval_ms = 1000\n[host]\ninterval_ms = 1000\n";
    let agent = run::agent(
        args.agent_binary.as_deref(),
        dir.path(),
        &hub.endpoint("telemetry")?,
        "pi-idle",
        config,
    )?;
    let pid = agent.pid();
    // Let it connect and settle before measuring.
    std::thread::sleep(Duration::from_secs(3));
    let cpu0 = procstat::cpu_seconds(pid).context("reading the agent's CPU time")?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.idle_seconds));
    let cpu = procstat::cpu_seconds(pid).context("reading the agent's CPU time")? - cpu0;
    let secs = t0.elapsed().as_secs_f64();
    let rss = procstat::rss_bytes(pid).context("reading the agent's RSS")?;
    let anon = procstat::rss_anon_bytes(pid).unwrap_or(0);
    let binary = match &args.agent_binary {
        Some(path) => path.display().to_string(),
        None => "the agent beside this program".into(),
    };
    let pct = 100.0 * cpu / secs;
    println!("\nagent at 1 Hz sampling, host metrics included, over {secs:.0} s ({binary})");
    println!(
        "  RSS {:.2} MB ({:.2} MB its own heap and stacks, {:.2} MB pages of its binary and shared libraries), CPU {pct:.3} % of one core",
        rss as f64 / 1e6,
        anon as f64 / 1e6,
        rss.saturating_sub(anon) as f64 / 1e6,
    );
    Ok(json!({
        "seconds": secs,
        "binary": binary,
        "rss_bytes": rss,
        "rss_anon_bytes": anon,
        "cpu_pct_of_one_core": pct,
    }))
}

/// Asks the hub's operator socket something; its response.
fn ask(req: &zmq::Socket, request: Request) -> anyhow::Result<Response> {
    let frame = OperatorFrame::from(OperatorRequest {
        id: fastrand_id(),
        request,
    })
    .encode()?;
    let (_, reply) = round_trip(req, &frame)?;
    match OperatorReplyFrame::decode(&reply)? {
        OperatorReplyFrame::Response(r) => Ok(r.response),
    }
}

fn connected(args: &Args) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
    println!(
        "\na connected fleet at rest: every socket of every simulated agent connected, one batch each acked{}",
        match args.kept {
            fleet::Kept::All => "",
            fleet::Kept::NoJobs =>
                " (agents that take no jobs: telemetry, broadcast and commands only)",
            fleet::Kept::TelemetryOnly =>
                " (telemetry only: what a device would cost on one connection)",
        }
    );
    println!(
        "  {:>6}  {:>11}  {:>10}  {:>10}  {:>13}  {:>11}",
        "agents", "connections", "hub RSS", "RSS/agent", "RSS/conn.", "hub cpu s/s"
    );
    // Each process holds at most as many descriptors as its limit; the hub
    // one per connection, the swarm two per socket (so it runs in parts).
    let most = args
        .agents
        .as_deref()
        .and_then(|a| a.iter().max().copied())
        .unwrap_or(5000);
    let limit = procstat::raise_open_files((most * fleet::SOCKETS_PER_AGENT + 1024) as u64)
        .context("raising the open-files limit")?;
    let hub_room = (limit as usize).saturating_sub(1024) / fleet::SOCKETS_PER_AGENT;
    let per_process = ((limit as usize).saturating_sub(1024) / fleet::FDS_PER_AGENT).clamp(1, 1000);
    let counts = match args.agents.as_deref() {
        Some(counts) => counts.to_vec(),
        None if hub_room < 5000 => {
            println!(
                "  (5,000 agents need {} open files in the hub; the limit here is {limit}: \
                 measuring the {hub_room} it allows)",
                5000 * fleet::SOCKETS_PER_AGENT + 1024
            );
            vec![hub_room]
        }
        None => vec![5000],
    };
    for agents in counts {
        anyhow::ensure!(
            agents <= hub_room,
            "{agents} agents need {} open files in the hub, and the limit is {limit}: raise it \
             (ulimit -n, or LimitNOFILE= for a service) or measure fewer",
            agents * fleet::SOCKETS_PER_AGENT + 1024
        );
        let AtRest {
            hub,
            parts,
            rss_idle,
            fds_idle,
            dialled,
            _dir,
        } = fleet_at_rest(agents, per_process, args.kept)?;
        let pid = hub.proc.pid();
        let cpu0 = procstat::cpu_seconds(pid).unwrap_or(0.0);
        let rest = Instant::now();
        std::thread::sleep(Duration::from_secs(5));
        let cpu = (procstat::cpu_seconds(pid).unwrap_or(0.0) - cpu0) / rest.elapsed().as_secs_f64();
        let rss = procstat::rss_bytes(pid).unwrap_or(0);
        let connections = procstat::open_fds(pid)
            .unwrap_or(0)
            .saturating_sub(fds_idle);
        let per_agent = rss.saturating_sub(rss_idle) as f64 / agents as f64;
        let per_connection = rss.saturating_sub(rss_idle) as f64 / connections.max(1) as f64;
        println!(
            "  {agents:>6}  {connections:>11}  {:>7.1} MB  {:>7.1} KB  {:>10.1} KB  {cpu:>11.3}",
            rss as f64 / 1e6,
            per_agent / 1024.0,
            per_connection / 1024.0,
        );
        println!(
            "          ({agents} connected and acked in {dialled:.1} s, from {} processes)",
            parts.len()
        );
        drop(parts);
        rows.push(json!({
            "agents": agents,
            "hub_connections": connections,
            "hub_rss_bytes": rss,
            "hub_rss_idle_bytes": rss_idle,
            "hub_rss_per_agent_bytes": per_agent,
            "hub_rss_per_connection_bytes": per_connection,
            "hub_cpu_seconds_per_s_at_rest": cpu,
            "connect_seconds": dialled,
        }));
    }
    Ok(json!({
        "sockets_per_agent": args.kept.sockets(),
        "takes_jobs": args.kept == fleet::Kept::All,
        "rows": rows,
    }))
}

/// A hub with a fleet of simulated agents connected, every one online and
/// (unless it keeps telemetry only) listening, and what the hub held
/// before they came.
struct AtRest {
    hub: run::Hub,
    parts: Vec<Part>,
    rss_idle: u64,
    fds_idle: usize,
    /// Seconds to connect them all.
    dialled: f64,
    _dir: tempfile::TempDir,
}

/// Starts a hub and connects `agents` simulated agents to it, from
/// processes of at most `per_process` each, each connecting the sockets
/// `kept` names.
fn fleet_at_rest(agents: usize, per_process: usize, kept: fleet::Kept) -> anyhow::Result<AtRest> {
    let dir = tempfile::tempdir()?;
    let hub = run::Hub::start(dir.path(), HUB_CONFIG)?;
    let pid = hub.proc.pid();
    let ctx = zmq::Context::new();
    let req = ctx.socket(zmq::REQ)?;
    req.set_rcvtimeo(30_000)?;
    req.set_linger(0)?;
    req.connect(&hub.endpoint("operator")?)?;
    // A round trip first, so the hub is fully up when measured idle.
    ask(&req, Request::Stats)?;
    let (rss_idle, fds_idle) = (
        procstat::rss_bytes(pid).unwrap_or(0),
        procstat::open_fds(pid).unwrap_or(0),
    );
    let t0 = Instant::now();
    let parts = connect_parts(&hub.endpoint("telemetry")?, 0..agents, per_process, kept)?;
    let dialled = t0.elapsed().as_secs_f64();
    // The hub sees every agent online and listening (its broadcast
    // subscription arrived) before it is measured; one that keeps telemetry
    // only never listens.
    let listeners = if kept == fleet::Kept::TelemetryOnly {
        0
    } else {
        agents
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let (online, listening) = loop {
        let Response::Devices(devices) = ask(&req, Request::Devices)? else {
            anyhow::bail!("the hub did not answer the device list");
        };
        let online = devices.iter().filter(|d| d.online).count();
        let listening = devices.iter().filter(|d| d.listening).count();
        if (online == agents && listening == listeners) || Instant::now() > deadline {
            break (online, listening);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    anyhow::ensure!(
        online == agents && listening == listeners,
        "the hub saw {online} of {agents} agents online and {listening} listening \
         (of {listeners} that subscribe)"
    );
    Ok(AtRest {
        hub,
        parts,
        rss_idle,
        fds_idle,
        dialled,
        _dir: dir,
    })
}

/// A process of the connected fleet (`fleetmq-bench fleet-part`): it keeps
/// its agents connected until its stdin closes.
struct Part {
    child: std::process::Child,
}

impl Drop for Part {
    fn drop(&mut self) {
        // Closing stdin tells it to end; it closes its sockets and exits.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Starts the fleet's processes one after another, each connecting its
/// share of `agents` and saying "ready" when all are connected and acked.
fn connect_parts(
    endpoint: &str,
    ids: std::ops::Range<usize>,
    per_process: usize,
    kept: fleet::Kept,
) -> anyhow::Result<Vec<Part>> {
    use std::io::BufRead as _;
    let me = std::env::current_exe().context("finding this program")?;
    let mut parts = Vec::new();
    let mut first = ids.start;
    while first < ids.end {
        let count = per_process.min(ids.end - first);
        let mut child = std::process::Command::new(&me)
            .args(["fleet-part", "--hub", endpoint])
            .args([
                "--first",
                &first.to_string(),
                "--agents",
                &count.to_string(),
            ])
            .args(kept.flag())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("starting a fleet process")?;
        let stdout = child.stdout.take().context("a fleet process's stdout")?;
        let part = Part { child };
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        anyhow::ensure!(
            line.trim() == "ready",
            "agents {first}.. did not connect (see the error above)"
        );
        parts.push(part);
        first += count;
    }
    Ok(parts)
}

/// `fleet-part`: connects agents `--first`.. `--first + --agents`, says
/// "ready", and keeps them until stdin closes.
fn fleet_part(args: &Args) -> anyhow::Result<()> {
    use std::io::Read as _;
    let endpoint = args.hub.clone().context("fleet-part needs --hub")?;
    let count = args
        .agents
        .as_deref()
        .and_then(|a| a.first().copied())
        .unwrap_or(1);
    procstat::raise_open_files((count * fleet::FDS_PER_AGENT + 1024) as u64)
        .context("raising the open-files limit")?;
    let fleet = fleet::connect(
        &endpoint,
        args.first..args.first + count,
        "fleet",
        &template()?,
        args.kept,
        Duration::from_secs(300),
    )?;
    println!("ready");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(fleet);
    Ok(())
}

/// Stripped sizes of the static builds that targets/build.sh left.
fn binary_sizes() -> Value {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = serde_json::Map::new();
    println!("\nstripped static binaries (targets/build.sh)");
    for triple in [
        "aarch64-unknown-linux-musl",
        "armv7-unknown-linux-musleabihf",
        "arm-unknown-linux-musleabihf",
    ] {
        let path = root
            .join("target")
            .join(triple)
            .join("release/fleetmq-agent");
        match std::fs::metadata(&path) {
            Ok(m) => {
                println!("  fleetmq-agent {triple:<34} {:>9} bytes", m.len());
                out.insert(triple.into(), json!(m.len()));
            }
            Err(_) => println!("  fleetmq-agent {triple:<34} not built"),
        }
    }
    Value::Object(out)
}

fn swarm_against(args: &Args) -> anyhow::Result<()> {
    let endpoint = args
        .hub
        .clone()
        .context("swarm needs --hub tcp://HOST:PORT")?;
    let agents = args
        .agents
        .as_deref()
        .and_then(|a| a.first().copied())
        .unwrap_or(100);
    let template = template()?;
    let out = swarm::run(
        &Swarm {
            endpoint: endpoint.clone(),
            agents,
            window: args.window,
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs_f64(args.seconds),
            mode: Mode::Fleet,
            prefix: format!("swarm{}", std::process::id()),
            curve: None,
        },
        &template,
    )?;
    let batches = out.batches as f64 / out.seconds;
    println!(
        "{agents} simulated agents against {endpoint}: {:.0} samples/s ({batches:.0} batches/s), {} agents acked, {} refusals",
        batches * wire::samples().len() as f64,
        out.answered,
        out.refusals
    );
    Ok(())
}

/// Front-ends in the cluster benchmark: four hold 10,000 agents, and the
/// three left when one is killed hold them all, within 20,000 open files
/// each (3,795 agents).
const FRONT_ENDS: usize = 4;

/// `cluster`: front-ends over a three-node JetStream cluster on this
/// machine. Durable ingest of the whole fleet beside one hub on SQLite (in
/// the same run); a fleet with every socket connected, spread over the
/// front-ends, and each front-end's memory per agent; then one front-end
/// killed and the time until its agents are connected and acked at the
/// others.
fn fleetmq_bench_cluster(args: &Args) -> anyhow::Result<Value> {
    let dir = tempfile::Builder::new()
        .prefix("fleetmq-bench-cluster-")
        .tempdir()?;
    let template = template()?;
    let per_batch = wire::samples().len() as f64;
    println!(
        "\nfront-ends over a 3-node NATS JetStream cluster on this machine, {FRONT_ENDS} front-ends"
    );

    // Durable ingest: 300 agents with their batches in flight, split over
    // the front-ends, beside the same load on one hub, in the same run;
    // with every NATS node writing to disk before it acks, and without.
    let agents = 300;
    let single_dir = tempfile::tempdir()?;
    let single = run::Hub::start(single_dir.path(), HUB_CONFIG)?;
    let single_pid = single.proc.pid();
    let (single_rate, _, single_cpu) = ingest_over(
        args,
        &[single.endpoint("telemetry")?],
        agents,
        &template,
        &[single_pid],
    )?;
    // CPU per acked batch over the whole run (warm-up included).
    let run_s = 2.0 + args.seconds;
    let per_batch_us = |cpu: f64, rate: f64| cpu / (rate * run_s).max(1.0) * 1e6;
    println!(
        "  one hub on SQLite (synchronous = full): {single_rate:.0} batches/s, {:.0} us of hub CPU per batch",
        per_batch_us(single_cpu[0], single_rate)
    );
    drop(single);
    let mut ingest_rows = Vec::new();
    let mut kept = None;
    for sync in [false, true] {
        let label = if sync { "sync" } else { "nosync" };
        let nats = run::Nats::start(&dir.path().join(format!("nats-{label}")), sync)?;
        let mut fronts = Vec::new();
        for i in 0..FRONT_ENDS {
            let name = format!("fe-{i}");
            let hub = run::Hub::start_with(
                &dir.path().join(format!("{label}-{name}")),
                HUB_CONFIG,
                &["--nats", &nats.urls, "--name", &name],
            )?;
            fronts.push(hub);
        }
        let endpoints = fronts
            .iter()
            .map(|f| f.endpoint("telemetry"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let nats_pids: Vec<u32> = nats.nodes.iter().map(|n| n.pid()).collect();
        let front_pids: Vec<u32> = fronts.iter().map(|f| f.proc.pid()).collect();
        let pids: Vec<u32> = nats_pids.iter().chain(&front_pids).copied().collect();
        let (rate, answered, used) = ingest_over(args, &endpoints, agents, &template, &pids)?;
        let nats_cpu: f64 = used[..nats_pids.len()].iter().sum();
        let front_cpu: f64 = used[nats_pids.len()..].iter().sum();
        let promise = if sync {
            "acked once on disk at 2 of 3 nodes (sync_interval: always)"
        } else {
            "acked once in memory at 2 of 3 nodes (disk on the servers' schedule)"
        };
        println!(
            "  durable ingest, {agents} agents x {} in flight, {promise}: {rate:.0} batches/s ({:.0} samples/s), {:.2}x one hub ({answered} agents acked); CPU per batch: NATS {:.0} us, front-ends {:.0} us",
            args.window,
            rate * per_batch,
            rate / single_rate,
            per_batch_us(nats_cpu, rate),
            per_batch_us(front_cpu, rate),
        );
        ingest_rows.push(json!({
            "nats_sync_always": sync,
            "batches_per_s": rate,
            "samples_per_s": rate * per_batch,
            "vs_single_hub": rate / single_rate,
            "nats_cpu_us_per_batch": per_batch_us(nats_cpu, rate),
            "front_end_cpu_us_per_batch": per_batch_us(front_cpu, rate),
        }));
        if sync {
            kept = Some((nats, fronts, endpoints));
        }
    }
    let Some((nats, mut fronts, endpoints)) = kept else {
        anyhow::bail!("no cluster was kept");
    };
    let cluster_rate = ingest_rows
        .last()
        .and_then(|r| r["batches_per_s"].as_f64())
        .unwrap_or(0.0);

    // Every socket connected: the fleet spread over the front-ends.
    let total = args
        .agents
        .as_deref()
        .and_then(|a| a.first().copied())
        .unwrap_or(10_000);
    let share = total.div_ceil(FRONT_ENDS);
    // After one front-end is killed, the others hold its agents too.
    let after_kill = share + share.div_ceil(FRONT_ENDS - 1);
    let limit = procstat::raise_open_files((after_kill * fleet::SOCKETS_PER_AGENT + 1024) as u64)
        .context("raising the open-files limit")?;
    let room = (limit as usize).saturating_sub(1024) / fleet::SOCKETS_PER_AGENT;
    anyhow::ensure!(
        after_kill <= room,
        "{total} agents over {FRONT_ENDS} front-ends leave {after_kill} on each once one is killed, \
         and {limit} open files hold {room}: raise the limit (ulimit -n) or measure fewer agents"
    );
    let per_process = ((limit as usize).saturating_sub(1024) / fleet::FDS_PER_AGENT).clamp(1, 1000);
    let idle: Vec<u64> = fronts
        .iter()
        .map(|f| procstat::rss_bytes(f.proc.pid()).unwrap_or(0))
        .collect();
    let t0 = Instant::now();
    let mut parts: Vec<Vec<Part>> = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let ids = i * share..((i + 1) * share).min(total);
        parts.push(connect_parts(endpoint, ids, per_process, fleet::Kept::All)?);
    }
    let dialled = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let mut per_agent = Vec::new();
    for (i, f) in fronts.iter().enumerate() {
        let rss = procstat::rss_bytes(f.proc.pid()).unwrap_or(0);
        let held = share.min(total - i * share);
        let each = rss.saturating_sub(idle[i]) as f64 / held.max(1) as f64;
        println!(
            "  front-end fe-{i}: {held} agents with every socket connected, RSS {:.1} MB, {:.1} KB per agent",
            rss as f64 / 1e6,
            each / 1024.0
        );
        per_agent.push(each);
    }
    println!("  {total} agents connected and acked in {dialled:.1} s");

    // One front-end killed: its agents dial the others (a real agent
    // moves after 2 s plus up to 2 s of jitter; that is not counted here).
    let killed = fronts.remove(0);
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(killed.proc.pid() as i32, libc::SIGKILL) };
    let t1 = Instant::now();
    drop(parts.remove(0));
    let each = share.div_ceil(FRONT_ENDS - 1);
    let mut moved = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate().skip(1) {
        let ids = (i - 1) * each..(i * each).min(share);
        moved.push(connect_parts(endpoint, ids, per_process, fleet::Kept::All)?);
    }
    let back = t1.elapsed().as_secs_f64();
    println!(
        "  fe-0 killed with -9: its {share} agents connected and acked at the other {} {back:.1} s later (plus the agent's own 2-4 s before it moves)",
        FRONT_ENDS - 1
    );
    drop(moved);
    drop(parts);
    drop(fronts);
    drop(nats);
    Ok(json!({
        "front_ends": FRONT_ENDS,
        "ingest_agents": agents,
        "ingest": ingest_rows,
        "ingest_batches_per_s": cluster_rate,
        "single_hub_batches_per_s": single_rate,
        "connected_agents": total,
        "connect_seconds": dialled,
        "front_end_rss_per_agent_bytes": per_agent,
        "failover_agents": share,
        "failover_seconds": back,
    }))
}

/// Batches a second acked when `agents` simulated agents are split over
/// `endpoints` (all at once), how many agents were acked, and the CPU
/// seconds each of `pids` used meanwhile.
fn ingest_over(
    args: &Args,
    endpoints: &[String],
    agents: usize,
    template: &Template,
    pids: &[u32],
) -> anyhow::Result<(f64, usize, Vec<f64>)> {
    let cpu = |pid: &u32| procstat::cpu_seconds(*pid).unwrap_or(0.0);
    let before: Vec<f64> = pids.iter().map(cpu).collect();
    let share = agents / endpoints.len();
    let loads: Vec<Swarm> = endpoints
        .iter()
        .enumerate()
        .map(|(i, endpoint)| Swarm {
            endpoint: endpoint.clone(),
            agents: share,
            window: args.window,
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs_f64(args.seconds),
            mode: Mode::Fleet,
            prefix: format!("ingest{i}"),
            curve: None,
        })
        .collect();
    let runs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = loads
            .iter()
            .map(|l| s.spawn(|| swarm::run(l, template)))
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    });
    let (mut batches, mut answered) = (0.0, 0);
    for r in runs {
        let o = r.map_err(|_| anyhow::anyhow!("a swarm thread panicked"))??;
        batches += o.batches as f64 / o.seconds;
        answered += o.answered;
    }
    let used = pids.iter().zip(before).map(|(p, b)| cpu(p) - b).collect();
    Ok((batches, answered, used))
}
