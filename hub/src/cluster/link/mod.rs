//! The link to NATS: a thread of its own with a small tokio runtime, so
//! the loop never waits on the network. The loop hands it [`ToCluster`]
//! over a channel; it hands back [`FromCluster`] over another and writes a
//! byte to a socket pair the loop polls, as the readers do.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the loop's end, the thread, the tasks' dispatch |
//! | `setup.rs` | connecting, and the streams, buckets and consumer it needs |
//! | `streams.rs` | batches published, streams read in order |
//! | `jobs.rs` | work-queue jobs: submitted, taken, settled |
//! | `buckets.rs` | holders, the allow list, front-ends alive, health, announcements, asks |

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use base64::Engine as _;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::allow::ALLOW_BUCKET;
use super::jobs::{
    EVENTS_STREAM, EVENTS_SUBJECT, JOB_ID_HEADER, JOBS_CONSUMER, JOBS_STREAM, JOBS_SUBJECT,
    JobEvent,
};
use super::{
    BROADCAST_SUBJECT, DEVICES_BUCKET, FRONTEND_BEAT_S, FRONTEND_TTL_S, FRONTENDS_BUCKET,
    FromCluster, HEADER_BATCH, HEADER_DEVICE, HEADER_FROM, HEADER_SEQ, HEADER_TOPIC, Holder, Marks,
    Replicated, STREAM, SUBJECT_PREFIX, ToCluster, batch_id,
};
use crate::config::Cluster;

mod buckets;
mod jobs;
mod setup;
mod streams;

use buckets::*;
use jobs::*;
use setup::*;
use streams::*;

/// How long a front-end waits for NATS at start before it gives up.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a batch waits for JetStream's ack before it counts as not taken.
pub(super) const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages read from the stream handed to the loop at once, at most.
pub(super) const STREAM_CHUNK: usize = 512;
/// Chunks of the stream waiting for the loop: past them, reading waits.
pub(super) const STREAM_QUEUE: usize = 8;
/// How long the stream reader waits for a message before it checks that
/// it has not fallen behind the stream.
pub(super) const READ_STALL: Duration = Duration::from_secs(3);
/// How often a front-end checks that the cluster would take telemetry.
pub(super) const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// Requests from other front-ends waiting for this loop's answer.
pub(super) const MAX_ASKS: usize = 4096;
/// Seconds a front-end waits at start for JetStream to make its stream.
pub(super) const SETUP_TRIES: u32 = 30;

/// Why a front-end could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("starting the cluster thread")]
    Thread(#[source] std::io::Error),
    #[error("{0}")]
    Nats(String),
}

/// The loop's end of the link.
pub struct Link {
    to: mpsc::UnboundedSender<ToCluster>,
    events: mpsc::UnboundedReceiver<FromCluster>,
    stream: mpsc::Receiver<FromCluster>,
    wake: UnixStream,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Where the link's tasks send what the loop should see.
#[derive(Clone)]
struct Out {
    events: mpsc::UnboundedSender<FromCluster>,
    wake: Arc<UnixStream>,
}

impl Out {
    fn send(&self, msg: FromCluster) {
        if self.events.send(msg).is_ok() {
            self.poke();
        }
    }

    fn poke(&self) {
        // A full pair already wakes the loop.
        let _ = (&*self.wake).write(&[1]);
    }
}

/// What the tasks share once connected.
#[derive(Clone)]
struct Shared {
    name: String,
    client: async_nats::Client,
    js: jetstream::Context,
    devices: kv::Store,
    frontends: kv::Store,
    allow: kv::Store,
    /// The consumer every front-end takes work-queue jobs from.
    jobs: consumer::PullConsumer,
    /// Jobs taken and not yet over, by handle.
    taken: Arc<std::sync::Mutex<Taken>>,
    /// This front-end's last report of its own traffic (JSON of a
    /// `FrontEndStats`), put in its entry on every beat.
    report: Arc<std::sync::Mutex<Vec<u8>>>,
    out: Out,
}

/// Jobs this front-end took from the queue, by the handle the loop knows
/// them by.
#[derive(Default)]
struct Taken {
    next: u64,
    messages: std::collections::HashMap<u64, jetstream::Message>,
}

impl Link {
    /// Connects to `cfg.servers` as front-end `name`, makes the streams,
    /// buckets and the jobs consumer (its ack wait `jobs.lease_ms`, its
    /// deliveries `jobs.max_attempts`) if they are missing, and starts
    /// reading the streams after `after` (where this front-end's store has
    /// them to). Fails with what to do when NATS cannot be reached or
    /// JetStream refuses.
    pub fn start(
        cfg: &Cluster,
        keep: &crate::config::KeepBytes,
        jobs: &crate::config::Jobs,
        data_dir: &std::path::Path,
        name: &str,
        after: Marks,
    ) -> Result<Link, LinkError> {
        let (to, inbox) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (stream_tx, stream) = mpsc::channel(STREAM_QUEUE);
        let (wake, poke) = UnixStream::pair().map_err(LinkError::Thread)?;
        wake.set_nonblocking(true).map_err(LinkError::Thread)?;
        poke.set_nonblocking(true).map_err(LinkError::Thread)?;
        let out = Out {
            events: events_tx,
            wake: Arc::new(poke),
        };
        let (started_tx, started) = std::sync::mpsc::channel::<Result<(), String>>();
        let cfg = cfg.clone();
        let jobs = jobs.clone();
        let keep = *keep;
        let resolve = |p: &PathBuf| (!p.as_os_str().is_empty()).then(|| data_dir.join(p));
        let paths = Paths {
            credentials: resolve(&cfg.credentials),
            ca: resolve(&cfg.tls_ca),
            cert: resolve(&cfg.tls_cert),
            key: resolve(&cfg.tls_key),
        };
        let name = name.to_string();
        let thread = std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started_tx.send(Err(format!("starting its runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let shared = match join(&cfg, &keep, &jobs, &paths, &name, out.clone()).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = started_tx.send(Ok(()));
                    serve(shared, inbox, stream_tx, after).await;
                });
            })
            .map_err(LinkError::Thread)?;
        match started.recv() {
            Ok(Ok(())) => Ok(Link {
                to,
                events,
                stream,
                wake,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(LinkError::Nats(e)),
            Err(_) => Err(LinkError::Nats("the cluster thread ended at start".into())),
        }
    }

    /// The descriptor that is readable when something waits.
    pub fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// Hands `msg` to the cluster; false if the link has stopped.
    pub fn send(&self, msg: ToCluster) -> bool {
        self.to.send(msg).is_ok()
    }

    /// What waits for the loop: events first, then at most one chunk of
    /// the stream (the next comes on the next wake-up).
    pub fn drain(&mut self) -> Vec<FromCluster> {
        let mut buf = [0u8; 256];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        if let Ok(chunk) = self.stream.try_recv() {
            out.push(chunk);
            // More may wait: come back without waiting for a write.
            if !self.stream.is_empty() {
                let _ = self.to.send(ToCluster::Poke);
            }
        }
        out
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.to.send(ToCluster::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the link until the loop stops it.
async fn serve(
    shared: Shared,
    mut inbox: mpsc::UnboundedReceiver<ToCluster>,
    stream_tx: mpsc::Sender<FromCluster>,
    after: Marks,
) {
    tokio::spawn(read_stream(
        shared.clone(),
        TELEMETRY,
        stream_tx.clone(),
        after.telemetry,
    ));
    tokio::spawn(read_stream(
        shared.clone(),
        JOB_EVENTS,
        stream_tx.clone(),
        after.job_events,
    ));
    tokio::spawn(read_stream(
        shared.clone(),
        CONFIG_EVENTS,
        stream_tx,
        after.config,
    ));
    tokio::spawn(beat(shared.clone()));
    tokio::spawn(watch_holders(shared.clone()));
    tokio::spawn(watch_enrolled(shared.clone()));
    tokio::spawn(list_front_ends(shared.clone()));
    tokio::spawn(hear_broadcasts(shared.clone()));
    tokio::spawn(check_health(shared.clone()));
    // Requests other front-ends ask this one: their reply subjects by id.
    let replies: Arc<std::sync::Mutex<std::collections::HashMap<u64, async_nats::Subject>>> =
        Arc::default();
    tokio::spawn(answer_asks(shared.clone(), replies.clone()));
    // Presence changes are written in order, one at a time.
    let (presence_tx, presence_rx) = mpsc::unbounded_channel();
    tokio::spawn(write_presence(shared.clone(), presence_rx));
    // So are a run's events: its result never precedes its sending.
    let (events_tx, mut events_rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let events_shared = shared.clone();
    tokio::spawn(async move {
        while let Some(event) = events_rx.recv().await {
            for _ in 0..EVENT_TRIES {
                if publish_event(&events_shared, event.clone()).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    while let Some(msg) = inbox.recv().await {
        match msg {
            ToCluster::Batch {
                device,
                batch,
                body,
            } => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let seq = batch.seq;
                    let outcome = publish(&shared, &device, &batch, &body).await;
                    shared.out.send(FromCluster::Replicated {
                        device,
                        seq,
                        outcome,
                    });
                });
            }
            ToCluster::Online { .. }
            | ToCluster::Offline { .. }
            | ToCluster::Facts { .. }
            | ToCluster::Enrol { .. }
            | ToCluster::Forget { .. } => {
                let _ = presence_tx.send(msg);
            }
            ToCluster::Ask {
                frontend,
                client,
                frame,
                timeout_ms,
            } => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let request = async_nats::Request::new()
                        .payload(frame.clone().into())
                        .timeout(Some(Duration::from_millis(timeout_ms)));
                    let subject = super::ask_subject(&frontend);
                    let msg = match shared.client.send_request(subject, request).await {
                        Ok(reply) => FromCluster::Answered {
                            client,
                            frame: reply.payload.to_vec(),
                        },
                        Err(e) => FromCluster::Unanswered {
                            client,
                            frame,
                            why: format!("front-end {frontend} did not answer: {e}"),
                        },
                    };
                    shared.out.send(msg);
                });
            }
            ToCluster::Answer { id, frame } => {
                let to = replies.lock().ok().and_then(|mut r| r.remove(&id));
                if let Some(to) = to
                    && let Err(e) = shared.client.publish(to, frame.into()).await
                {
                    debug!(error = %e, "could not answer another front-end");
                }
            }
            ToCluster::Broadcast { topic, frame } => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(HEADER_TOPIC, topic.as_str());
                headers.insert(HEADER_FROM, shared.name.as_str());
                let sent = shared
                    .client
                    .publish_with_headers(BROADCAST_SUBJECT, headers, frame.into())
                    .await;
                if let Err(e) = sent {
                    warn!(topic, error = %e, "could not send an announcement to the other front-ends");
                }
            }
            ToCluster::SubmitJob {
                client,
                request_id,
                event,
            } => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let outcome = submit_job(&shared, &client, request_id, event).await;
                    shared.out.send(FromCluster::JobSubmitted {
                        client,
                        request_id,
                        outcome,
                    });
                });
            }
            ToCluster::WantJob => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let msg = take_job(&shared).await;
                    shared.out.send(msg);
                });
            }
            ToCluster::JobDone { handle, event } => {
                let shared = shared.clone();
                tokio::spawn(
                    async move { job_over(&shared, handle, AckKind::Ack, Some(event)).await },
                );
            }
            ToCluster::JobBack { handle } => {
                let shared = shared.clone();
                tokio::spawn(
                    async move { job_over(&shared, handle, AckKind::Nak(None), None).await },
                );
            }
            ToCluster::JobEnd { handle, event } => {
                let shared = shared.clone();
                tokio::spawn(async move { job_over(&shared, handle, AckKind::Term, event).await });
            }
            ToCluster::JobEvent { event } => {
                let _ = events_tx.send(event);
            }
            ToCluster::Cancel { event, ask } => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    if let Err(why) = publish_event(&shared, event).await {
                        shared.out.send(FromCluster::CancelNotTaken { ask, why });
                    }
                });
            }
            ToCluster::Config { event } => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let subject = crate::cluster::config::CONFIG_SUBJECT;
                    let sent = match shared.js.publish(subject, event.into()).await {
                        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = sent {
                        warn!(error = %e, "could not put a configuration event in the cluster");
                    }
                });
            }
            ToCluster::Report { report } => {
                let first = match shared.report.lock() {
                    Ok(mut r) => std::mem::replace(&mut *r, report.clone()).is_empty(),
                    Err(_) => false,
                };
                // The first report goes at once: until the others read
                // it, they refuse what needs every front-end's features.
                if first {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        if let Err(e) = shared.frontends.put(&shared.name, report.into()).await {
                            debug!(error = %e, "could not say what this front-end runs");
                        }
                    });
                }
            }
            ToCluster::Poke => shared.out.poke(),
            ToCluster::Stop => break,
        }
    }
    // Say goodbye: the others need not wait for the entry to expire.
    let bye = shared.frontends.delete(&shared.name);
    let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
}
