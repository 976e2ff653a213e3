//! The command round trip: pings from an operator's socket through a hub
//! on this machine to a real agent and back, beside libzmq's own REQ/REP
//! and a relay on the same four hops.

use std::time::{Duration, Instant};

use fleetmq_bench::{baseline, run};
use fleetmq_protocol::{
    Command, OperatorFrame, OperatorReplyFrame, OperatorRequest, Request, Response,
};
use serde_json::{Value, json};

use super::{Args, HUB_CONFIG};

/// The `p`th percentile of sorted `times`, in microseconds.
pub(super) fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    fleetmq_bench::percentile(sorted, p).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// Sends `frame` on `req` and waits for one reply; the time it took.
pub(super) fn round_trip(req: &zmq::Socket, frame: &[u8]) -> anyhow::Result<(Duration, Vec<u8>)> {
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
pub(super) fn fastrand_id() -> u64 {
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
pub(super) fn fleet_round_trips(
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

pub(super) fn rtt(args: &Args) -> anyhow::Result<Value> {
    let count = args.count;
    let (times, request_bytes, reply_bytes) =
        fleet_round_trips(args.agent_binary.as_deref(), count)?;
    // The baselines, with messages of those sizes: a bare REQ/REP round
    // trip, and libzmq alone on the command's four hops.
    let raw = baseline::req_rep(count, request_bytes, reply_bytes)?;
    let relay = baseline::relay(count, request_bytes, reply_bytes)?;

    let (p50, p99) = (percentile_us(&times, 50.0), percentile_us(&times, 99.0));
    let (r50, r99) = (percentile_us(&raw, 50.0), percentile_us(&raw, 99.0));
    let (l50, l99) = (percentile_us(&relay, 50.0), percentile_us(&relay, 99.0));
    println!("\ncommand round trip, operator -> hub -> agent -> hub -> operator ({count} pings)");
    println!("  {:<44} {:>10} {:>10}", "", "p50 µs", "p99 µs");
    println!("  {:<44} {p50:>10.0} {p99:>10.0}", "fleetmq ping");
    println!(
        "  {:<44} {l50:>10.0} {l99:>10.0}",
        "raw libzmq relay (the same four hops)"
    );
    println!("  {:<44} {r50:>10.0} {r99:>10.0}", "raw libzmq REQ/REP");
    println!(
        "  p50 is {:.2}x the relay's and {:.2}x the raw round trip",
        p50 / l50,
        p50 / r50
    );
    Ok(json!({
        "count": count,
        "p50_us": p50, "p99_us": p99,
        "raw_p50_us": r50, "raw_p99_us": r99,
        "p50_vs_raw": p50 / r50,
        "relay_p50_us": l50, "relay_p99_us": l99,
        "p50_vs_relay": p50 / l50,
        "request_bytes": request_bytes, "reply_bytes": reply_bytes,
    }))
}
