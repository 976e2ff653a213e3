//! One device floods, the others wait: honest simulated agents send a
//! batch every 100 ms each and time every ack, while one device sends
//! valid but huge batches as fast as its socket takes them. Their ack
//! latency beside a run without the flood is what budgets in work buy.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleetmq_protocol::{BatchBuilder, Downstream, Upstream, Value};

use crate::swarm::{Template, hello, route};

/// What the flooding device sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Nobody floods: the baseline.
    None,
    /// Batches of 20,000 empty chat lines.
    Chat,
    /// Batches of 20,000 samples, each of a series never seen before.
    Names,
}

/// The honest agents' ack latencies, and what became of the flood.
#[derive(Debug, Default)]
pub struct Outcome {
    pub latencies: Vec<Duration>,
    pub flood_sent: u64,
    pub flood_acked: u64,
    pub flood_throttled: u64,
    pub flood_rejected: u64,
}

/// Records per flooding batch: the most one batch may hold.
const FLOOD_RECORDS: usize = fleetmq_protocol::telemetry::MAX_BATCH_RECORDS;
/// How often each honest agent sends a batch.
const EVERY: Duration = Duration::from_millis(100);

/// Runs `honest` agents for `seconds` (after a second of warm-up) against
/// the hub's telemetry `endpoint`, with `flood` from one more device.
pub fn run(
    endpoint: &str,
    honest: usize,
    seconds: f64,
    flood: Flood,
    template: &Template,
) -> anyhow::Result<Outcome> {
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = (flood != Flood::None).then(|| {
        let (endpoint, stop) = (endpoint.to_string(), stop.clone());
        std::thread::spawn(move || flood_until(&endpoint, flood, &stop))
    });
    let honest_result = measure(endpoint, honest, seconds, template);
    stop.store(true, Ordering::Relaxed);
    let mut out = honest_result?;
    if let Some(f) = flooder {
        let (sent, acked, throttled, rejected) = f
            .join()
            .map_err(|_| anyhow::anyhow!("the flooding thread panicked"))??;
        (
            out.flood_sent,
            out.flood_acked,
            out.flood_throttled,
            out.flood_rejected,
        ) = (sent, acked, throttled, rejected);
    }
    Ok(out)
}

fn measure(
    endpoint: &str,
    agents: usize,
    seconds: f64,
    template: &Template,
) -> anyhow::Result<Outcome> {
    let ctx = zmq::Context::new();
    let hello = hello()?;
    let mut sockets = Vec::with_capacity(agents);
    for i in 0..agents {
        let s = ctx.socket(zmq::DEALER)?;
        s.set_identity(route(&format!("honest-{i:04}")).as_bytes())?;
        s.set_linger(0)?;
        s.connect(endpoint)
            .with_context(|| format!("connecting to {endpoint}"))?;
        s.send(&hello, 0)?;
        sockets.push(s);
    }
    let started = Instant::now();
    let counted_from = started + Duration::from_secs(1);
    let end = counted_from + Duration::from_secs_f64(seconds);
    let mut sent: Vec<HashMap<u64, Instant>> = vec![HashMap::new(); agents];
    let mut next_seq = vec![1u64; agents];
    let mut next_send = started;
    let mut frame = Vec::new();
    let mut out = Outcome::default();
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_send {
            for (i, s) in sockets.iter().enumerate() {
                template.frame(next_seq[i], &mut frame);
                s.send(&frame, zmq::DONTWAIT).context("sending a batch")?;
                sent[i].insert(next_seq[i], now);
                next_seq[i] += 1;
            }
            next_send += EVERY;
        }
        let wait = next_send.saturating_duration_since(Instant::now());
        let mut items: Vec<zmq::PollItem> = sockets
            .iter()
            .map(|s| s.as_poll_item(zmq::POLLIN))
            .collect();
        zmq::poll(&mut items, wait.as_millis() as i64)?;
        let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        drop(items);
        for (i, s) in sockets.iter().enumerate().filter(|(i, _)| ready[*i]) {
            while let Ok(msg) = s.recv_bytes(zmq::DONTWAIT) {
                match Downstream::decode(&msg) {
                    Ok(Downstream::Ack(a)) => {
                        let at = Instant::now();
                        if let Some(t) = sent[i].remove(&a.seq)
                            && t >= counted_from
                        {
                            out.latencies.push(at - t);
                        }
                    }
                    Ok(Downstream::HelloRequest(_)) => s.send(&hello, 0)?,
                    _ => {}
                }
            }
        }
    }
    // A batch never acked counts as waiting the whole run.
    let unanswered = sent
        .iter()
        .flat_map(|m| m.values())
        .filter(|t| **t >= counted_from && **t + Duration::from_secs(1) < end);
    for t in unanswered {
        out.latencies.push(end - *t);
    }
    out.latencies.sort();
    Ok(out)
}

/// The flooding device: sends until `stop`, as fast as its socket takes
/// them, and counts the answers. Returns (sent, acked, throttled, rejected).
fn flood_until(
    endpoint: &str,
    flood: Flood,
    stop: &AtomicBool,
) -> anyhow::Result<(u64, u64, u64, u64)> {
    let ctx = zmq::Context::new();
    let s = ctx.socket(zmq::DEALER)?;
    s.set_identity(route("flood-0000").as_bytes())?;
    s.set_linger(0)?;
    s.set_sndhwm(64)?;
    s.connect(endpoint)?;
    s.send(hello()?, 0)?;
    let chat = {
        let mut b = BatchBuilder::new(0);
        for _ in 0..FLOOD_RECORDS {
            b.push_chat(1_000, "")?;
        }
        Template::new(&Upstream::Batch(b.finish()).encode()?)?
    };
    let (mut seq, mut counts) = (1u64, (0u64, 0u64, 0u64, 0u64));
    let mut frame = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match flood {
            Flood::Chat => chat.frame(seq, &mut frame),
            Flood::Names => {
                let mut b = BatchBuilder::new(seq);
                for i in 0..FLOOD_RECORDS as u64 {
                    b.push_sample(&format!("n{}", seq * 100_000 + i), 1_000, Value::Int(1))?;
                }
                frame = Upstream::Batch(b.finish()).encode()?;
            }
            Flood::None => return Ok(counts),
        }
        match s.send(&frame, zmq::DONTWAIT) {
            Ok(()) => {
                seq += 1;
                counts.0 += 1;
            }
            Err(zmq::Error::EAGAIN) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err(e).context("flooding"),
        }
        while let Ok(msg) = s.recv_bytes(zmq::DONTWAIT) {
            match Downstream::decode(&msg) {
                Ok(Downstream::Ack(_)) => counts.1 += 1,
                Ok(Downstream::Throttled(_)) => counts.2 += 1,
                Ok(Downstream::Rejected(_)) => counts.3 += 1,
                _ => {}
            }
        }
    }
    Ok(counts)
}

/// p50, p99 and the most of sorted `latencies`, in milliseconds.
pub fn spread_ms(sorted: &[Duration]) -> (f64, f64, f64) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |p| crate::percentile(sorted, p).map_or(0.0, ms);
    (at(50.0), at(99.0), sorted.last().copied().map_or(0.0, ms))
}
