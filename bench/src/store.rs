//! A day of a fleet in the hub's store: what ingest costs while retention
//! prunes, beside ingest without it, and how fast an operator's queries
//! answer at that size.
//!
//! The fleet is written straight into a `Store` in a temporary directory,
//! as the hub loop writes it: one transaction per round, one batch per
//! device per round. Each device reports 25 host series (some tagged)
//! every 10 s, so 200 devices make 43.2 million samples a day. Time is the
//! fleet's, not the machine's: the store is told when each round arrived.
//!
//! Phases, each timed round by round:
//! 1. the day itself, no retention (how long it takes to fill);
//! 2. one hour more, no retention: the baseline;
//! 3. one hour more, with retention keeping the day, called after every
//!    round as the hub calls it (once a second, and on each tick while
//!    there is more): the store starts an hour over its age, so it prunes
//!    that backlog a step at a time and then keeps pace.
//!
//! Then the operator's queries at that size, each the median of five.
//!
//! [`alone`] is the ceiling of the hub's durable ingest, which `peers`
//! shows beside the other systems: the ingest's batches written straight
//! into a `Store`, in the rounds the hub would store them.

use std::path::Path;
use std::time::{Duration, Instant};

use fleetmq_hub::config::{KeepBytes, Retention};
use fleetmq_hub::store::{Incoming, Store, Synchronous};
use fleetmq_protocol::{Batch, BatchBuilder, TelemetryQuery, Value};
use serde_json::{Value as Json, json};

/// Seconds between a device's reports.
const EVERY_S: u64 = 10;
/// When the generated day starts (fleet time).
const T0: u64 = 1_790_000_000_000;
const HOUR_MS: u64 = 3_600_000;

/// The 25 series a device reports.
fn series() -> Vec<String> {
    let mut names: Vec<String> = [
        "host.cpu.used_pct",
        "host.load1",
        "host.load5",
        "host.load15",
        "host.mem.used_pct",
        "host.mem.total_bytes",
        "host.uptime_s",
        "host.temp_c{zone=cpu}",
        "host.pi.under_voltage",
        "host.pi.throttled_now",
        "agent.uptime_s",
        "agent.spool_bytes",
        "agent.records_dropped",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for mount in ["/", "/boot", "/data"] {
        names.push(format!("host.disk.used_pct{{mount={mount}}}"));
        names.push(format!("host.disk.total_bytes{{mount={mount}}}"));
    }
    for iface in ["eth0", "wlan0", "lo"] {
        names.push(format!("host.net.rx_bytes{{iface={iface}}}"));
        names.push(format!("host.net.tx_bytes{{iface={iface}}}"));
    }
    names
}

/// One device's batch for the round at `ts`: each series once.
fn report(seq: u64, ts: u64, names: &[String], device: usize) -> (Batch, Vec<u8>) {
    let mut b = BatchBuilder::new(seq);
    for (i, name) in names.iter().enumerate() {
        let v = if i % 2 == 0 {
            Value::Float((seq as f64 * 0.37 + device as f64 + i as f64) % 100.0)
        } else {
            Value::Int((seq * 1000 + i as u64) as i64)
        };
        // The builder only fails on a bad name or time; ours are good.
        let _ = b.push_sample(name, ts, v);
    }
    let batch = b.finish();
    let frame = fleetmq_protocol::Upstream::Batch(batch.clone())
        .encode()
        .unwrap_or_default();
    let body = fleetmq_protocol::envelope::open(&frame)
        .map(|(_, body)| body.to_vec())
        .unwrap_or_default();
    (batch, body)
}

/// Rounds timed: how many samples, how long in all, the longest round.
#[derive(Default)]
struct Timed {
    samples: u64,
    total: Duration,
    longest: Duration,
    pruned_batches: u64,
    prune_time: Duration,
}

impl Timed {
    fn rate(&self) -> f64 {
        self.samples as f64 / self.total.as_secs_f64().max(1e-9)
    }

    fn json(&self) -> Json {
        json!({
            "samples": self.samples,
            "seconds": self.total.as_secs_f64(),
            "samples_per_s": self.rate().round(),
            "longest_round_ms": self.longest.as_secs_f64() * 1e3,
            "pruned_batches": self.pruned_batches,
            "prune_seconds": self.prune_time.as_secs_f64(),
        })
    }
}

/// Writes rounds `from..to` (each `EVERY_S` of fleet time) for `devices`,
/// pruning after each round with `rules` if given.
fn rounds(
    store: &mut Store,
    devices: usize,
    from: u64,
    to: u64,
    rules: Option<&Retention>,
) -> anyhow::Result<Timed> {
    let names = series();
    let mut t = Timed::default();
    for round in from..to {
        let ts = T0 + round * EVERY_S * 1000;
        let reports: Vec<(Batch, Vec<u8>)> = (0..devices)
            .map(|d| report(round + 1, ts, &names, d))
            .collect();
        let ids: Vec<String> = (0..devices).map(|d| format!("pi-{d:04}")).collect();
        let incoming: Vec<Incoming<'_>> = reports
            .iter()
            .zip(&ids)
            .map(|((batch, body), device)| Incoming {
                device,
                batch,
                body,
            })
            .collect();
        let started = Instant::now();
        store.store_batches(&incoming, ts)?;
        if let Some(rules) = rules {
            let p = Instant::now();
            let pruned = store.prune(rules, ts)?;
            t.prune_time += p.elapsed();
            t.pruned_batches += pruned.batches;
        }
        let took = started.elapsed();
        t.total += took;
        t.longest = t.longest.max(took);
        t.samples += (devices * names.len()) as u64;
    }
    Ok(t)
}

/// Median of `n` runs of a query, and the rows it returned.
fn timed_query(store: &Store, q: &TelemetryQuery, n: usize) -> anyhow::Result<(Duration, usize)> {
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..n {
        let started = Instant::now();
        rows = store.telemetry(q)?.len();
        times.push(started.elapsed());
    }
    times.sort();
    Ok((times[times.len() / 2], rows))
}

/// Runs the benchmark in `dir` for `devices` over `hours` of fleet time.
pub fn run(dir: &Path, devices: usize, hours: u64) -> anyhow::Result<Json> {
    let per_hour = 3600 / EVERY_S;
    let mut store = Store::open(dir, Synchronous::Full)?;
    println!(
        "writing {hours} h of {devices} devices x {} series every {EVERY_S} s ({} samples)...",
        series().len(),
        hours * per_hour * devices as u64 * series().len() as u64
    );
    let day = rounds(&mut store, devices, 0, hours * per_hour, None)?;
    let size = std::fs::metadata(dir.join("hub.db")).map_or(0, |m| m.len());
    println!(
        "  {:.1} s, {:.0} samples/s, hub.db {:.0} MB",
        day.total.as_secs_f64(),
        day.rate(),
        size as f64 / 1e6
    );

    // The same stretch of fleet time after the day, without and with
    // retention keeping `hours`: the second starts with an hour to prune.
    let stretch = per_hour;
    let start = hours * per_hour;
    let plain = rounds(&mut store, devices, start, start + stretch, None)?;
    let rules = Retention {
        telemetry: KeepBytes {
            max_age_s: hours * 3600,
            max_bytes: 0,
        },
        ..Retention::default()
    };
    let pruning = rounds(
        &mut store,
        devices,
        start + stretch,
        start + 2 * stretch,
        Some(&rules),
    )?;

    // Queries at that size, as the command line asks them.
    let end = T0 + (start + 2 * stretch) * EVERY_S * 1000;
    let base = TelemetryQuery {
        device: None,
        name: None,
        after_id: 0,
        limit: 10_000,
        since_ms: 0,
        until_ms: 0,
        newest: false,
        tags: vec![],
    };
    let one_series_hour = TelemetryQuery {
        device: Some("pi-0017".into()),
        name: Some("host.cpu.used_pct".into()),
        since_ms: end - HOUR_MS,
        ..base.clone()
    };
    let tagged_hour = TelemetryQuery {
        device: Some("pi-0017".into()),
        name: Some("host.disk.used_pct".into()),
        tags: vec!["mount=/data".into()],
        since_ms: end - HOUR_MS,
        ..base.clone()
    };
    let last_100 = TelemetryQuery {
        device: Some("pi-0017".into()),
        newest: true,
        limit: 100,
        ..base.clone()
    };
    let fleet_minute = TelemetryQuery {
        name: Some("host.temp_c".into()),
        since_ms: end - 60_000,
        ..base
    };
    let mut queries = serde_json::Map::new();
    for (label, q) in [
        ("one device, one series, last hour", &one_series_hour),
        ("one device, a tagged series, last hour", &tagged_hour),
        ("one device, newest 100 samples", &last_100),
        ("the fleet, one metric, last minute", &fleet_minute),
    ] {
        let (took, rows) = timed_query(&store, q, 5)?;
        queries.insert(
            label.into(),
            json!({ "ms": took.as_secs_f64() * 1e3, "rows": rows }),
        );
    }

    println!("\nstore: {devices} devices, {hours} h of fleet time, then 1 h more twice");
    println!(
        "{:<34} {:>14} {:>10} {:>16} {:>14}",
        "phase", "samples/s", "ratio", "longest round ms", "batches pruned"
    );
    for (label, t) in [
        ("the day, no retention", &day),
        ("1 h more, no retention", &plain),
        ("1 h more, retention pruning", &pruning),
    ] {
        println!(
            "{label:<34} {:>14.0} {:>10.2} {:>16.1} {:>14}",
            t.rate(),
            t.rate() / plain.rate().max(1e-9),
            t.longest.as_secs_f64() * 1e3,
            t.pruned_batches
        );
    }
    println!(
        "(pruning took {:.1}% of the pruning hour's time)",
        100.0 * pruning.prune_time.as_secs_f64() / pruning.total.as_secs_f64().max(1e-9)
    );
    println!("\n{:<42} {:>10} {:>8}", "query", "ms", "rows");
    for (label, v) in &queries {
        println!(
            "{label:<42} {:>10.2} {:>8}",
            v["ms"].as_f64().unwrap_or(0.0),
            v["rows"]
        );
    }
    Ok(json!({
        "devices": devices,
        "hours": hours,
        "hub_db_bytes_after_day": size,
        "day": day.json(),
        "plain": plain.json(),
        "pruning": pruning.json(),
        "pruning_vs_plain": pruning.rate() / plain.rate().max(1e-9),
        "queries": queries,
    }))
}

/// What the hub's store alone takes: `template`'s batch (as agents send
/// it) stored as `devices` devices with `window` batches each in
/// every round, the round the hub stores when each has its window in
/// flight, straight into a `Store` in `dir` with `synchronous = FULL`, no
/// network and no hub loop. Rounds run for `warmup`, then for `measure`;
/// only the time inside `store_batches` counts, so this is the ceiling the
/// hub's durable ingest is held to on this machine.
pub fn alone(
    dir: &Path,
    template: &crate::swarm::Template,
    devices: usize,
    window: usize,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<crate::peers::Counted> {
    let mut store = Store::open(dir, Synchronous::Full)?;
    let ids: Vec<String> = (0..devices)
        .map(|d| crate::swarm::device_id("alone", d))
        .collect();
    let mut frame = Vec::new();
    let (mut stored, mut total, mut inside) = (0u64, 0u64, Duration::ZERO);
    let started = Instant::now();
    for round in 0u64.. {
        let measuring = started.elapsed() >= warmup;
        if measuring && inside >= measure {
            break;
        }
        let mut round_batches = Vec::with_capacity(devices * window);
        for d in 0..devices {
            for k in 0..window {
                template.frame(round * window as u64 + k as u64 + 1, &mut frame);
                let fleetmq_protocol::Upstream::Batch(batch) =
                    fleetmq_protocol::Upstream::decode(&frame)?
                else {
                    anyhow::bail!("the template is not a batch");
                };
                let (_, body) = fleetmq_protocol::envelope::open(&frame)?;
                round_batches.push((d, batch, body.to_vec()));
            }
        }
        let incoming: Vec<Incoming<'_>> = round_batches
            .iter()
            .map(|(d, batch, body)| Incoming {
                device: &ids[*d],
                batch,
                body,
            })
            .collect();
        let t = Instant::now();
        store.store_batches(&incoming, T0 + round * 1000)?;
        if measuring {
            inside += t.elapsed();
            stored += incoming.len() as u64;
        }
        total += incoming.len() as u64;
    }
    // Every batch written was new: a figure of resends the store only
    // looked up would not be the ingest it stands for.
    let held: u64 = store
        .devices(fleetmq_hub::store::Facts::Skip)?
        .iter()
        .map(|d| d.batches)
        .sum();
    anyhow::ensure!(
        held == total,
        "the store holds {held} of the {total} batches written"
    );
    Ok(crate::peers::Counted {
        acked: stored,
        seconds: inside.as_secs_f64(),
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmq_protocol::Upstream;

    /// The ceiling counts only time inside the store, and only new batches
    /// (`alone` checks the store holds every one it wrote).
    #[test]
    fn the_store_alone_stores_every_batch_of_every_round_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = BatchBuilder::new(0);
        for (i, name) in series().iter().enumerate() {
            b.push_sample(name, T0, Value::Int(i as i64)).unwrap();
        }
        let frame = Upstream::Batch(b.finish()).encode().unwrap();
        let template = crate::swarm::Template::new(&frame).unwrap();
        let measure = Duration::from_millis(50);
        let counted = alone(dir.path(), &template, 3, 2, Duration::ZERO, measure).unwrap();
        assert!(
            counted.acked > 0 && counted.acked.is_multiple_of(6),
            "{}",
            counted.acked
        );
        assert_eq!(counted.total, counted.acked);
        assert!(counted.seconds >= measure.as_secs_f64());
    }
}
