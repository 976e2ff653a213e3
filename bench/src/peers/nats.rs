//! NATS load: idle devices in NATS's text protocol, and JetStream ingest
//! and request/reply through async-nats, NATS's own client.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use futures_util::StreamExt as _;

use super::{Counted, Tally, connect};

/// `n` clients, each subscribed to its own command subject and the
/// broadcasts, each having had its PONG (so the server has taken the
/// subscriptions).
pub fn devices(port: u16, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let s = connect(port)?;
        let mut reader = BufReader::new(s.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        anyhow::ensure!(line.starts_with("INFO"), "NATS said {line:?}, not INFO");
        let hello = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":\"dev-{i}\"}}\r\n\
             SUB fleet.cmd.dev-{i} 1\r\nSUB fleet.broadcast.> 2\r\nPING\r\n"
        );
        (&s).write_all(hello.as_bytes())?;
        line.clear();
        reader.read_line(&mut line)?;
        anyhow::ensure!(line.starts_with("PONG"), "NATS said {line:?}, not PONG");
        out.push(s);
    }
    Ok(out)
}

/// A runtime for one thread of load.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a tokio runtime")
}

fn url(port: u16) -> String {
    format!("nats://127.0.0.1:{port}")
}

/// Threads the load generators run on (each a runtime of its own).
const THREADS: usize = 2;

/// `publishers` clients, each publishing `payload` to the JetStream stream
/// TELEMETRY (file storage, one replica) on its own subject, with a
/// de-duplication id (device and sequence, as the hub's front-ends use)
/// and `window` publishes awaiting JetStream's ack; counts the acks.
pub fn ingest(
    port: u16,
    publishers: usize,
    window: usize,
    payload: &[u8],
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Counted> {
    runtime()?.block_on(async {
        let client = async_nats::connect(url(port)).await?;
        jetstream::new(client)
            .create_stream(jetstream::stream::Config {
                name: "TELEMETRY".into(),
                subjects: vec!["telemetry.>".into()],
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("creating the stream: {e}"))?;
        anyhow::Ok(())
    })?;
    let tally = Tally::default();
    let payload = bytes::Bytes::copy_from_slice(payload);
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (tally, payload) = (tally.clone(), payload.clone());
            let mine: Vec<usize> = (t..publishers).step_by(THREADS).collect();
            std::thread::spawn(move || -> anyhow::Result<()> {
                runtime()?.block_on(async move {
                    let mut slots = tokio::task::JoinSet::new();
                    for p in mine {
                        let js = jetstream::new(async_nats::connect(url(port)).await?);
                        for w in 0..window {
                            let (js, tally, payload) = (js.clone(), tally.clone(), payload.clone());
                            slots.spawn(async move {
                                let mut seq = w as u64;
                                while !tally.stopped() {
                                    let msg = jetstream::message::PublishMessage::build()
                                        .message_id(format!("dev-{p}/{seq}"))
                                        .payload(payload.clone());
                                    js.send_publish(format!("telemetry.dev-{p}"), msg)
                                        .await
                                        .map_err(|e| anyhow::anyhow!("publishing: {e}"))?
                                        .await
                                        .map_err(|e| {
                                            anyhow::anyhow!("JetStream did not ack: {e}")
                                        })?;
                                    tally.ack();
                                    seq += window as u64;
                                }
                                anyhow::Ok(())
                            });
                        }
                    }
                    while let Some(done) = slots.join_next().await {
                        done??;
                    }
                    Ok(())
                })
            })
        })
        .collect();
    tally.count_then_join(warmup, measure, workers, "a NATS publisher thread")
}

/// `count` core NATS requests to a device's command subject, each
/// answered by the device (a client on a thread of its own); sizes as
/// fleetmq's ping and pong. Returns the times, sorted.
pub fn round_trips(
    port: u16,
    count: usize,
    request_bytes: usize,
    reply_bytes: usize,
) -> anyhow::Result<Vec<Duration>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let device = std::thread::spawn(move || -> anyhow::Result<()> {
        runtime()?.block_on(async move {
            let client = async_nats::connect(url(port)).await?;
            let mut requests = client.subscribe("fleet.cmd.pi-rtt").await?;
            client.flush().await?;
            let _ = ready_tx.send(());
            let reply = bytes::Bytes::from(vec![0u8; reply_bytes]);
            for _ in 0..count {
                let msg = requests
                    .next()
                    .await
                    .context("the device's subscription ended")?;
                let to = msg.reply.context("a request with no reply subject")?;
                client.publish(to, reply.clone()).await?;
            }
            client.flush().await?;
            Ok(())
        })
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the NATS device did not subscribe within 10 s")?;
    let times = runtime()?.block_on(async move {
        let client = async_nats::connect(url(port)).await?;
        let request = bytes::Bytes::from(vec![0u8; request_bytes]);
        let mut times = Vec::with_capacity(count);
        for _ in 0..count {
            let t = Instant::now();
            client
                .request("fleet.cmd.pi-rtt", request.clone())
                .await
                .map_err(|e| anyhow::anyhow!("a request: {e}"))?;
            times.push(t.elapsed());
        }
        anyhow::Ok(times)
    })?;
    device
        .join()
        .map_err(|_| anyhow::anyhow!("the NATS device panicked"))??;
    let mut times = times;
    times.sort();
    Ok(times)
}
