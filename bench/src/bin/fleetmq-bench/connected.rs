//! `fleetmq-bench connected`: a fleet of simulated agents connected to one
//! hub and left at rest, and what the hub holds for each. The fleet runs in
//! processes of its own (`fleetmq-bench fleet-part`), since each of its
//! sockets takes two descriptors; the cluster and peers benchmarks connect
//! their fleets the same way.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleetmq_bench::{fleet, procstat, run, swarm};
use fleetmq_protocol::{OperatorFrame, OperatorReplyFrame, OperatorRequest, Request, Response};
use serde_json::{Value, json};

use super::rtt::{fastrand_id, round_trip};
use super::{Args, HUB_CONFIG, template};

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

/// A connected fleet at rest of each size `--agents` names (5,000, or as
/// many as the open-files limit allows): the hub's RSS and descriptors per
/// agent, and its CPU at rest.
pub(crate) fn measure(args: &Args) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
    println!(
        "\na connected fleet at rest: every simulated agent connected, one batch each acked{}{}",
        if args.curve {
            ", CURVE on (every agent enrolled)"
        } else {
            ""
        },
        match args.kept {
            fleet::Kept::One => " (on one connection each, as today's agent)",
            fleet::Kept::All => " (on the hub's five sockets each, as an agent that takes jobs)",
            fleet::Kept::NoJobs =>
                " (on the hub's sockets, taking no jobs: telemetry, broadcast and commands)",
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
        } = fleet_at_rest(agents, per_process, args.kept, args.curve)?;
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
        "curve": args.curve,
        "takes_jobs": args.kept != fleet::Kept::NoJobs,
        "rows": rows,
    }))
}

/// A hub with a fleet of simulated agents connected, every one online and
/// listening, and what the hub held before they came.
pub(crate) struct AtRest {
    pub(crate) hub: run::Hub,
    parts: Vec<Part>,
    pub(crate) rss_idle: u64,
    fds_idle: usize,
    /// Seconds to connect them all.
    dialled: f64,
    _dir: tempfile::TempDir,
}

/// The device ids of the connected fleet's agents: `fleet-00000`...
const FLEET: &str = "fleet";

/// Starts a hub and connects `agents` simulated agents to it, from
/// processes of at most `per_process` each, each connecting the sockets
/// `kept` names; with `curve`, every agent enrolled and on CURVE.
pub(crate) fn fleet_at_rest(
    agents: usize,
    per_process: usize,
    kept: fleet::Kept,
    curve: bool,
) -> anyhow::Result<AtRest> {
    let dir = tempfile::tempdir()?;
    let (hub, keys) = if curve {
        let hub_keys = fleetmq_net::keys::generate()?;
        let curve = swarm::Curve::generate(hub_keys.public.clone(), agents)?;
        let keys = dir.path().join("fleet.keys");
        curve.write(&keys)?;
        let allow = curve.allow_list(FLEET);
        let hub = run::Hub::start_secure(dir.path(), HUB_CONFIG, &hub_keys, &allow)?;
        (hub, Some(keys))
    } else {
        (run::Hub::start(dir.path(), HUB_CONFIG)?, None)
    };
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
    let endpoint = hub.endpoint("telemetry")?;
    let parts = connect_parts(&endpoint, 0..agents, per_process, kept, keys.as_deref())?;
    let dialled = t0.elapsed().as_secs_f64();
    // The hub sees every agent online and listening (its broadcast
    // subscription arrived, or its Offer to carry everything) before it is
    // measured.
    let listeners = agents;
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
pub(crate) struct Part {
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
/// share of `agents` and saying "ready" when all are connected and acked;
/// with `keys` (written by [`swarm::Curve::write`]), on CURVE.
pub(crate) fn connect_parts(
    endpoint: &str,
    ids: std::ops::Range<usize>,
    per_process: usize,
    kept: fleet::Kept,
    keys: Option<&std::path::Path>,
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
            .args(
                keys.map(|k| [std::ffi::OsStr::new("--keys"), k.as_os_str()])
                    .into_iter()
                    .flatten(),
            )
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
pub(crate) fn fleet_part(args: &Args) -> anyhow::Result<()> {
    use std::io::Read as _;
    let endpoint = args.hub.clone().context("fleet-part needs --hub")?;
    let count = args
        .agents
        .as_deref()
        .and_then(|a| a.first().copied())
        .unwrap_or(1);
    procstat::raise_open_files((count * fleet::FDS_PER_AGENT + 1024) as u64)
        .context("raising the open-files limit")?;
    let curve = args.keys.as_deref().map(swarm::Curve::read).transpose()?;
    let fleet = fleet::connect(
        &endpoint,
        args.first..args.first + count,
        FLEET,
        &template()?,
        args.kept,
        curve.as_ref(),
        Duration::from_secs(300),
    )?;
    println!("ready");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop(fleet);
    Ok(())
}
