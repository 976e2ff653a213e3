//! `fleetmq-bench`: runs the benchmarks, prints a table, writes JSON.
//!
//! ```text
//! fleetmq-bench all [--json FILE] [--seconds S] [--idle-seconds S]
//! fleetmq-bench ingest [--agents 1,100,1000] [--seconds S]
//! fleetmq-bench rtt [--count N]
//! fleetmq-bench idle [--idle-seconds S] [--agent-binary PATH]
//! fleetmq-bench wire
//! fleetmq-bench connected [--agents 5000] [--five | --no-jobs] [--curve]
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
use fleetmq_protocol::{OperatorFrame, OperatorRequest, Request};
use rtt::{fastrand_id, round_trip};
use serde_json::{Value, json};

/// `fleetmq-bench cluster`.
mod cluster;
/// `fleetmq-bench connected` and `fleet-part`.
mod connected;
/// `fleetmq-bench peers`.
mod peers;
/// `fleetmq-bench rtt`, and the operator's pings that peers also times.
mod rtt;

const USAGE: &str = "usage: fleetmq-bench all|ingest|rtt|idle|wire|connected|flood|query|store|cluster|peers|swarm [--json FILE] \
[--seconds S] [--idle-seconds S] [--agents N,N,...] [--count N] [--hub ENDPOINT] [--window W] \
[--agent-binary PATH] [--hours H] [--five | --no-jobs] [--curve]";

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
    /// (one by default; `--five`: the hub's five; `--no-jobs`: those but
    /// the jobs and results sockets).
    kept: fleet::Kept,
    /// connected: every agent enrolled and on CURVE.
    curve: bool,
    /// fleet-part: the agents' CURVE keys (written by `connected --curve`).
    keys: Option<std::path::PathBuf>,
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
        kept: fleet::Kept::One,
        curve: false,
        keys: None,
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
            Long("five") => args.kept = fleet::Kept::All,
            Long("no-jobs") => args.kept = fleet::Kept::NoJobs,
            Long("curve") => args.curve = true,
            Long("keys") => args.keys = Some(p.value()?.into()),
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
        return connected::fleet_part(args);
    }
    if all || args.command == "wire" {
        report.insert("wire".into(), wire_sizes());
    }
    if all || args.command == "ingest" {
        report.insert("ingest".into(), ingest(args)?);
    }
    if all || args.command == "rtt" {
        report.insert("command_round_trip".into(), rtt::rtt(args)?);
    }
    if all || args.command == "idle" {
        report.insert("agent_idle".into(), idle(args)?);
    }
    if all || args.command == "connected" {
        report.insert("connected_fleet".into(), connected::measure(args)?);
    }
    if all || args.command == "flood" {
        report.insert("flood".into(), flooded(args)?);
    }
    if all || args.command == "query" {
        report.insert("query".into(), queried(args)?);
    }
    if args.command == "cluster" {
        report.insert("cluster".into(), cluster::measure(args)?);
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
