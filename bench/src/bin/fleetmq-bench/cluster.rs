//! `fleetmq-bench cluster`: hubs as front-ends over a three-node NATS
//! JetStream cluster on this machine, beside one hub on SQLite in the same
//! run.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleetmq_bench::swarm::{self, Mode, Swarm, Template};
use fleetmq_bench::{fleet, procstat, run, wire};
use serde_json::{Value, json};

use super::connected::{Part, connect_parts};
use super::{Args, HUB_CONFIG, template};

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
pub(crate) fn measure(args: &Args) -> anyhow::Result<Value> {
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
    // Agents as today's agent, on one connection each, in plaintext.
    let connect =
        |endpoint: &str, ids| connect_parts(endpoint, ids, per_process, fleet::Kept::One, None);
    let t0 = Instant::now();
    let mut parts: Vec<Vec<Part>> = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        parts.push(connect(endpoint, i * share..((i + 1) * share).min(total))?);
    }
    let dialled = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let mut per_agent = Vec::new();
    for (i, f) in fronts.iter().enumerate() {
        let rss = procstat::rss_bytes(f.proc.pid()).unwrap_or(0);
        let held = share.min(total - i * share);
        let each = rss.saturating_sub(idle[i]) as f64 / held.max(1) as f64;
        println!(
            "  front-end fe-{i}: {held} agents connected (one connection each), RSS {:.1} MB, {:.1} KB per agent",
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
        moved.push(connect(endpoint, (i - 1) * each..(i * each).min(share))?);
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
