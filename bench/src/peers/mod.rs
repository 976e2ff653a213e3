//! The brokers an operator would pick instead, run beside the hub on this
//! machine: NATS (with JetStream on, as a fleet on NATS runs it) and
//! Mosquitto, each as the benchmark's own process on a loopback port with
//! a configuration it writes. What is measured against each (see
//! `fleetmq-bench peers`):
//!
//! - durable ingest: publishers each keeping a window of the same 790-byte
//!   batch in flight, counting the broker's acks ([`nats::ingest`],
//!   [`mqtt::ingest`]);
//! - a request answered by a device and its reply ([`nats::round_trips`],
//!   [`mqtt::round_trips`]);
//! - what the broker holds per idle connected device ([`nats::devices`],
//!   [`mqtt::devices`]), each device connected and subscribed as a fleet
//!   device would be (its own command subject or topic, and the
//!   broadcasts), every handshake answered before the broker is measured;
//! - the bytes one 50-sample batch takes on each wire ([`wire_bytes`]).
//!
//! NATS's load comes from async-nats, its official client (already the
//! hub's). MQTT's comes from this module's few packets of MQTT 3.1.1
//! (CONNECT, SUBSCRIBE, PUBLISH, PUBACK, DISCONNECT) on a blocking thread
//! per client: the load generators' own CPU is reported beside each figure.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::run::{self, Running};

pub mod mqtt;
pub mod nats;

/// A broker started for a benchmark, on a loopback port the OS picked.
pub struct Broker {
    pub proc: Running,
    pub port: u16,
}

/// Waits until something listens on `port`.
fn wait_listening(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within 10 s (see its log)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// When JetStream's file store flushes what it acked to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsSync {
    /// nats-server's default: written at once, fsynced every two minutes.
    Default,
    /// `sync_interval: always`: fsynced before each ack.
    Always,
}

/// One nats-server (`server`) with JetStream, in `dir`.
pub fn nats_server(server: &Path, dir: &Path, sync: NatsSync) -> anyhow::Result<Broker> {
    let sync = match sync {
        NatsSync::Default => "",
        NatsSync::Always => ", sync_interval: always",
    };
    start(server, dir, "nats-server", |port| {
        format!(
            "listen: \"127.0.0.1:{port}\"\nmax_connections: 100000\njetstream {{ store_dir: \"{}\"{sync} }}\n",
            dir.join("js").display()
        )
    })
}

/// Mosquitto, in `dir`: plaintext on loopback, nothing persisted, no
/// limit on the messages it queues for a client that is away (so an
/// offline subscriber's session keeps every message published), and its
/// sockets without Nagle's delay, as fleetmq's and NATS's are (otherwise a
/// small reply can wait 40 ms for a delayed ACK).
pub fn mosquitto(dir: &Path) -> anyhow::Result<Broker> {
    let program = ["mosquitto", "/usr/sbin/mosquitto"]
        .into_iter()
        .find(|p| Command::new(p).arg("-h").output().is_ok())
        .context(
            "mosquitto is missing: scripts/bench.sh peers installs it (apt install mosquitto)",
        )?;
    start(Path::new(program), dir, "mosquitto", |port| {
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\nmax_queued_messages 0\nset_tcp_nodelay true\n"
        )
    })
}

/// `program` in `dir` on a free loopback port, with the config `conf`
/// writes for that port (`NAME.conf`, its log `NAME.log`), once it listens.
fn start(
    program: &Path,
    dir: &Path,
    name: &str,
    conf: impl FnOnce(u16) -> String,
) -> anyhow::Result<Broker> {
    std::fs::create_dir_all(dir)?;
    let port = run::free_port()?;
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, conf(port))?;
    let proc = run::server(program, &path, &dir.join(format!("{name}.log")))?;
    wait_listening(port, name)?;
    Ok(Broker { proc, port })
}

fn connect(port: u16) -> anyhow::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(s)
}

/// A load's acks: those counted over the measured window, and all of them
/// since it started (which the broker's CPU time is divided by).
#[derive(Debug, Clone, Copy)]
pub struct Counted {
    pub acked: u64,
    pub seconds: f64,
    pub total: u64,
}

/// What a load's workers share: acks so far, and when to stop.
#[derive(Clone, Default)]
pub struct Tally {
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Tally {
    pub fn ack(&self) {
        self.acked.fetch_add(1, Ordering::Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Lets the workers run `warmup`, counts their acks over `measure`,
    /// then tells them to stop.
    pub fn count(&self, warmup: Duration, measure: Duration) -> Counted {
        std::thread::sleep(warmup);
        let (at, since) = (self.acked.load(Ordering::Relaxed), Instant::now());
        std::thread::sleep(measure);
        let (now, seconds) = (
            self.acked.load(Ordering::Relaxed),
            since.elapsed().as_secs_f64(),
        );
        self.stop.store(true, Ordering::Relaxed);
        Counted {
            acked: now - at,
            seconds,
            total: now,
        }
    }

    /// [`Tally::count`], then waits for the `workers` (each `what`) to end.
    pub fn count_then_join(
        &self,
        warmup: Duration,
        measure: Duration,
        workers: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
        what: &str,
    ) -> anyhow::Result<Counted> {
        let counted = self.count(warmup, measure);
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("{what} panicked"))??;
        }
        Ok(counted)
    }
}

/// Bytes one batch of `samples` takes on each system's wire (the
/// transport's own framing included, TCP/IP's not): fleetmq's batch in
/// one ZMTP frame (plaintext and CURVE); for NATS and MQTT the same
/// samples as Influx line protocol, the format Telegraf and the hub's own
/// NATS stream use, published with a de-duplication id (NATS) or at QoS 1
/// (MQTT).
pub fn wire_bytes(device: &str, seq: u64, batch: &[u8], lines: &str) -> Vec<(&'static str, usize)> {
    // ZMTP 3: a frame over 255 bytes has a 9-byte header (flags, 8-byte
    // size). CURVE sends each as a MESSAGE command: the name ("\x07MESSAGE",
    // 8), an 8-byte nonce, and a box (16-byte tag, one flags byte, the
    // frame), in a command frame of its own.
    let frame = |body: usize| body + if body > 255 { 9 } else { 2 };
    let plain = frame(batch.len());
    let curve = frame(8 + 8 + 16 + 1 + batch.len());
    // A JetStream publish is a request: its reply subject is async-nats's
    // "_INBOX." and two 22-character unique ids.
    let subject = format!("telemetry.{device}");
    let reply = format!("_INBOX.{0}.{0}", "x".repeat(22));
    let headers = format!("NATS/1.0\r\nNats-Msg-Id: {device}/{seq}\r\n\r\n");
    let hpub = format!(
        "HPUB {subject} {reply} {} {}\r\n",
        headers.len(),
        headers.len() + lines.len()
    );
    let nats = hpub.len() + headers.len() + lines.len() + 2;
    let topic = format!("telemetry/{device}");
    let mqtt = mqtt::publish(&topic, Some(1), lines.as_bytes()).len();
    vec![
        ("fleetmq", plain),
        ("fleetmq (CURVE)", curve),
        ("nats", nats),
        ("mosquitto", mqtt),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_wire_counts_its_own_framing_around_the_same_batch() {
        let batch = vec![7u8; 790];
        let lines = "m,device=d value=1i 1000000\n".repeat(50);
        let sizes = wire_bytes("d", 9, &batch, &lines);
        let get = |name: &str| sizes.iter().find(|(n, _)| *n == name).map(|(_, b)| *b);
        // One long ZMTP frame: flags and an 8-byte size.
        assert_eq!(get("fleetmq"), Some(799));
        // CURVE's MESSAGE command: name, nonce, tag, flags, then the frame.
        assert_eq!(get("fleetmq (CURVE)"), Some(790 + 33 + 9));
        // HPUB line, headers, payload, CRLF.
        let headers = "NATS/1.0\r\nNats-Msg-Id: d/9\r\n\r\n".len();
        let hpub = format!(
            "HPUB telemetry.d _INBOX.{0}.{0} {headers} {1}\r\n",
            "x".repeat(22),
            headers + lines.len()
        );
        assert_eq!(get("nats"), Some(hpub.len() + headers + lines.len() + 2));
        // PUBLISH: type, a 2-byte length, topic, packet id, payload.
        assert_eq!(get("mosquitto"), Some(1 + 2 + 2 + 11 + 2 + lines.len()));
    }
}
