//! The link to NATS: a thread of its own with a small tokio runtime, so
//! the loop never waits on the network. The loop hands it [`ToCluster`]
//! over a channel; it hands back [`FromCluster`] over another and writes a
//! byte to a socket pair the loop polls, as the readers do.

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
use super::jobs::{EVENTS_STREAM, EVENTS_SUBJECT, JOBS_CONSUMER, JOBS_STREAM, JOBS_SUBJECT};
use super::{
    BROADCAST_SUBJECT, DEVICES_BUCKET, FRONTEND_BEAT_S, FRONTEND_TTL_S, FRONTENDS_BUCKET,
    FromCluster, HEADER_BATCH, HEADER_DEVICE, HEADER_FROM, HEADER_SEQ, HEADER_TOPIC, Holder, Marks,
    Replicated, STREAM, SUBJECT_PREFIX, ToCluster, batch_id,
};
use crate::config::Cluster;

/// How long a front-end waits for NATS at start before it gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a batch waits for JetStream's ack before it counts as not taken.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Messages read from the stream handed to the loop at once, at most.
const STREAM_CHUNK: usize = 512;
/// Chunks of the stream waiting for the loop: past them, reading waits.
const STREAM_QUEUE: usize = 8;
/// How long the stream reader waits for a message before it checks that
/// it has not fallen behind the stream.
const READ_STALL: Duration = Duration::from_secs(3);
/// How often a front-end checks that the cluster would take telemetry.
const HEALTH_EVERY: Duration = Duration::from_secs(1);
/// Requests from other front-ends waiting for this loop's answer.
const MAX_ASKS: usize = 4096;
/// Seconds a front-end waits at start for JetStream to make its stream.
const SETUP_TRIES: u32 = 30;

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

struct Paths {
    credentials: Option<PathBuf>,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// Connects and makes sure the stream and buckets are there.
async fn join(
    cfg: &Cluster,
    keep: &crate::config::KeepBytes,
    jobs: &crate::config::Jobs,
    paths: &Paths,
    name: &str,
    out: Out,
) -> Result<Shared, String> {
    let servers = cfg.servers.join(",");
    let mut opts = match &paths.credentials {
        Some(p) => async_nats::ConnectOptions::with_credentials_file(p)
            .await
            .map_err(|e| format!("reading the NATS credentials file {}: {e}", p.display()))?,
        None => async_nats::ConnectOptions::new(),
    };
    if let Some(ca) = &paths.ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&paths.cert, &paths.key) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    let events = out.clone();
    let opts = opts
        .name(format!("fleetmq-hub {name}"))
        .connection_timeout(CONNECT_TIMEOUT)
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                match event {
                    async_nats::Event::Connected => events.send(FromCluster::Connection(None)),
                    async_nats::Event::Disconnected => events.send(FromCluster::Connection(Some(
                        "disconnected from NATS; reconnecting".into(),
                    ))),
                    other => debug!(event = %other, "NATS event"),
                }
            }
        });
    let addrs = cfg
        .servers
        .iter()
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| format!("cluster.servers: {s:?} is not a NATS URL: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let client = tokio::time::timeout(CONNECT_TIMEOUT, opts.connect(addrs))
        .await
        .map_err(|_| format!("no NATS server of {servers} answered within {CONNECT_TIMEOUT:?}: is the cluster running, and are cluster.servers right?"))?
        .map_err(|e| format!("connecting to NATS at {servers}: {e} (check cluster.servers, credentials and TLS)"))?;
    let mut js = jetstream::new(client.clone());
    js.set_timeout(ACK_TIMEOUT);
    // A cluster that is still forming (its servers just started) cannot
    // make a replicated stream yet: try again for a while.
    let mut tries = 0;
    let made = loop {
        match make_stream_and_buckets(&js, cfg, keep, jobs).await {
            Ok(made) => break made,
            Err(e) if tries < SETUP_TRIES => {
                tries += 1;
                if tries == 1 {
                    info!(error = %e, "JetStream is not ready yet; trying again every second");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let replicas = cfg.replicas;
    info!(
        servers,
        front_end = name,
        replicas,
        "joined the NATS cluster"
    );
    Ok(Shared {
        name: name.to_string(),
        client,
        js,
        devices: made.devices,
        frontends: made.frontends,
        allow: made.allow,
        jobs: made.jobs,
        taken: Arc::default(),
        out,
    })
}

/// What a front-end finds or makes in JetStream.
struct Made {
    devices: kv::Store,
    frontends: kv::Store,
    allow: kv::Store,
    jobs: consumer::PullConsumer,
}

/// The streams, buckets and the jobs consumer, made if they are missing.
async fn make_stream_and_buckets(
    js: &jetstream::Context,
    cfg: &Cluster,
    keep: &crate::config::KeepBytes,
    jobs: &crate::config::Jobs,
) -> Result<Made, String> {
    let replicas = usize::from(cfg.replicas);
    let refused = |what: &str, e: &dyn std::fmt::Display| {
        format!(
            "JetStream refused the {what}: {e} (is JetStream enabled on every server, and are there at least cluster.replicas = {replicas} of them?)"
        )
    };
    js.get_or_create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec![format!("{SUBJECT_PREFIX}>")],
        num_replicas: replicas,
        // Kept as long as a hub keeps telemetry ([retention.telemetry]
        // when the stream is made), so a front-end can be rebuilt from it.
        max_age: Duration::from_secs(keep.max_age_s),
        max_bytes: i64::try_from(keep.max_bytes)
            .ok()
            .filter(|b| *b > 0)
            .unwrap_or(-1),
        duplicate_window: Duration::from_secs(cfg.dedupe_window_s),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| refused("telemetry stream", &e))?;
    let bucket = |bucket: &str, max_age: Duration| kv::Config {
        bucket: bucket.into(),
        history: 1,
        max_age,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let devices = open_bucket(js, bucket(DEVICES_BUCKET, Duration::ZERO))
        .await
        .map_err(|e| refused("devices bucket", &e))?;
    let frontends = open_bucket(
        js,
        bucket(FRONTENDS_BUCKET, Duration::from_secs(FRONTEND_TTL_S)),
    )
    .await
    .map_err(|e| refused("front-ends bucket", &e))?;
    let allow = open_bucket(js, bucket(ALLOW_BUCKET, Duration::ZERO))
        .await
        .map_err(|e| refused("allow list bucket", &e))?;
    let queue = js
        .get_or_create_stream(stream::Config {
            name: JOBS_STREAM.into(),
            subjects: vec![JOBS_SUBJECT.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            num_replicas: replicas,
            duplicate_window: Duration::from_secs(cfg.dedupe_window_s),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| refused("jobs stream", &e))?;
    js.get_or_create_stream(stream::Config {
        name: EVENTS_STREAM.into(),
        subjects: vec![EVENTS_SUBJECT.into()],
        num_replicas: replicas,
        max_age: Duration::from_secs(30 * 86_400),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| refused("job events stream", &e))?;
    let jobs = queue
        .get_or_create_consumer(
            JOBS_CONSUMER,
            consumer::pull::Config {
                durable_name: Some(JOBS_CONSUMER.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_millis(u64::from(jobs.queue_lease_ms())),
                max_deliver: i64::from(jobs.max_attempts),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| refused("jobs consumer", &e))?;
    Ok(Made {
        devices,
        frontends,
        allow,
        jobs,
    })
}

async fn open_bucket(js: &jetstream::Context, cfg: kv::Config) -> Result<kv::Store, String> {
    if let Ok(store) = js.get_key_value(cfg.bucket.clone()).await {
        return Ok(store);
    }
    js.create_key_value(cfg).await.map_err(|e| e.to_string())
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
        stream_tx,
        after.job_events,
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
    while let Some(msg) = inbox.recv().await {
        match msg {
            ToCluster::Batch {
                device,
                seq,
                lines,
                body,
            } => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let outcome = publish(&shared, &device, seq, lines, &body).await;
                    shared.out.send(FromCluster::Replicated {
                        device,
                        seq,
                        outcome,
                    });
                });
            }
            ToCluster::Online { .. } | ToCluster::Offline { .. } | ToCluster::Enrol { .. } => {
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
                submission,
            } => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let outcome = submit_job(&shared, &client, request_id, submission).await;
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
                tokio::spawn(
                    async move { job_over(&shared, handle, AckKind::Term, Some(event)).await },
                );
            }
            ToCluster::Poke => shared.out.poke(),
            ToCluster::Stop => break,
        }
    }
    // Say goodbye: the others need not wait for the entry to expire.
    let bye = shared.frontends.delete(&shared.name);
    let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
}

/// Puts one batch on the stream and waits for JetStream's ack.
async fn publish(
    shared: &Shared,
    device: &str,
    seq: u64,
    lines: String,
    body: &[u8],
) -> Replicated {
    let msg = jetstream::message::PublishMessage::build()
        .message_id(batch_id(device, seq))
        .header(HEADER_DEVICE, device)
        .header(HEADER_SEQ, seq.to_string().as_str())
        .header(
            HEADER_BATCH,
            base64::engine::general_purpose::STANDARD
                .encode(body)
                .as_str(),
        )
        .payload(lines.into());
    let subject = format!("{SUBJECT_PREFIX}{device}");
    let ack = match shared.js.send_publish(subject, msg).await {
        Ok(ack) => ack.await,
        Err(e) => return Replicated::Failed(format!("publishing: {e}")),
    };
    match ack {
        Ok(a) if a.duplicate => Replicated::Duplicate,
        Ok(_) => Replicated::Stored,
        Err(e) => Replicated::Failed(format!("JetStream did not ack: {e}")),
    }
}

/// Puts a job on the queue (its id: the stream sequence) and says so on
/// the events stream. A retried request (same client and request id) is
/// the same message to JetStream within the dedupe window.
async fn submit_job(
    shared: &Shared,
    client: &[u8],
    request_id: u64,
    submission: Vec<u8>,
) -> Result<u64, String> {
    let parsed: fleetmq_protocol::JobSubmission =
        serde_json::from_slice(&submission).map_err(|e| e.to_string())?;
    let retry_id = format!(
        "{}/{}/{request_id}",
        shared.name,
        base64::engine::general_purpose::STANDARD.encode(client)
    );
    let msg = jetstream::message::PublishMessage::build()
        .message_id(retry_id)
        .payload(submission.into());
    let ack = shared
        .js
        .send_publish(JOBS_SUBJECT, msg)
        .await
        .map_err(|e| format!("the cluster did not take the job: {e}"))?
        .await
        .map_err(|e| format!("the cluster did not take the job: {e}"))?;
    if !ack.duplicate {
        let event = super::jobs::JobEvent::Submitted {
            id: ack.sequence,
            submission: parsed,
            at_ms: super::now_ms(),
        };
        publish_event(shared, event.encode()).await;
    }
    Ok(ack.sequence)
}

/// One job from the queue, if one is waiting.
async fn take_job(shared: &Shared) -> FromCluster {
    let fetched = shared
        .jobs
        .fetch()
        .max_messages(1)
        .expires(Duration::from_millis(500))
        .messages()
        .await;
    let mut messages = match fetched {
        Ok(m) => m,
        Err(e) => {
            debug!(error = %e, "could not take a job from the queue");
            return FromCluster::NoJob;
        }
    };
    let Some(Ok(msg)) = messages.next().await else {
        return FromCluster::NoJob;
    };
    let Ok(info) = msg.info() else {
        return FromCluster::NoJob;
    };
    let (id, attempt) = (
        info.stream_sequence,
        u32::try_from(info.delivered).unwrap_or(u32::MAX),
    );
    let submission = msg.payload.to_vec();
    let Ok(mut taken) = shared.taken.lock() else {
        return FromCluster::NoJob;
    };
    taken.next += 1;
    let handle = taken.next;
    taken.messages.insert(handle, msg);
    FromCluster::Job {
        handle,
        id,
        attempt,
        submission,
    }
}

/// Ends a taken job with `kind` (done, back in the queue, or failed for
/// good), telling every front-end `event` if there is one.
async fn job_over(shared: &Shared, handle: u64, kind: AckKind, event: Option<Vec<u8>>) {
    let msg = shared
        .taken
        .lock()
        .ok()
        .and_then(|mut t| t.messages.remove(&handle));
    if let Some(event) = event {
        publish_event(shared, event).await;
    }
    let Some(msg) = msg else { return };
    let done = match kind {
        AckKind::Ack => msg.double_ack().await,
        other => msg.ack_with(other).await,
    };
    if let Err(e) = done {
        warn!(error = %e, "could not settle a job with the cluster; it is delivered again after its lease");
    }
}

async fn publish_event(shared: &Shared, event: Vec<u8>) {
    let sent = match shared.js.publish(EVENTS_SUBJECT, event.into()).await {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = sent {
        warn!(error = %e, "could not record a job event in the cluster");
    }
}

/// What a stream reader reads: which stream, and what it makes of it.
#[derive(Clone, Copy)]
struct Reading {
    stream: &'static str,
    subjects: &'static str,
    /// A chunk of messages for the loop (and the stream sequence of the
    /// last); a message it cannot read is logged and skipped.
    chunk: fn(&[jetstream::Message], u64) -> FromCluster,
}

/// The telemetry stream: (device, body) per batch.
const TELEMETRY: Reading = Reading {
    stream: STREAM,
    subjects: "fleetmq.telemetry.>",
    chunk: |messages, last| FromCluster::Stream {
        batches: messages.iter().filter_map(exact_batch).collect(),
        last,
    },
};

/// The job events stream.
const JOB_EVENTS: Reading = Reading {
    stream: super::jobs::EVENTS_STREAM,
    subjects: super::jobs::EVENTS_SUBJECT,
    chunk: |messages, last| FromCluster::JobEvents {
        events: messages.iter().map(|m| m.payload.to_vec()).collect(),
        last,
    },
};

/// Reads a whole stream in order from after `after`, handing the loop
/// chunks; waits when the loop has not taken them.
async fn read_stream(
    shared: Shared,
    reading: Reading,
    tx: mpsc::Sender<FromCluster>,
    mut after: u64,
) {
    loop {
        match read_stream_once(&shared, reading, &tx, &mut after).await {
            Ok(()) => return,
            Err(e) => {
                warn!(stream = reading.stream, error = %e, after, "reading a stream stopped; reading again in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn read_stream_once(
    shared: &Shared,
    reading: Reading,
    tx: &mpsc::Sender<FromCluster>,
    after: &mut u64,
) -> Result<(), String> {
    let stream = shared
        .js
        .get_stream(reading.stream)
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: reading.subjects.to_string(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: *after + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| e.to_string())?
        .ready_chunks(STREAM_CHUNK);
    loop {
        let chunk = match tokio::time::timeout(READ_STALL, messages.next()).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(_) => {
                // Quiet, or stalled (a server it read from died): if the
                // stream has moved on past us, read again from here.
                let last = shared
                    .js
                    .get_stream(reading.stream)
                    .await
                    .map_err(|e| e.to_string())?
                    .cached_info()
                    .state
                    .last_sequence;
                if last > *after {
                    return Err(format!(
                        "no message for {READ_STALL:?} while the stream is at {last}, past {after}"
                    ));
                }
                continue;
            }
        };
        let mut read = Vec::with_capacity(chunk.len());
        let mut last = *after;
        for m in chunk {
            let m = m.map_err(|e| e.to_string())?;
            last = last.max(m.info().map_err(|e| e.to_string())?.stream_sequence);
            read.push(m);
        }
        if tx.send((reading.chunk)(&read, last)).await.is_err() {
            return Ok(());
        }
        shared.out.poke();
        *after = last;
    }
    Err("the stream's messages ended".into())
}

/// The device and postcard body a telemetry message carries.
fn exact_batch(m: &jetstream::Message) -> Option<(String, Vec<u8>)> {
    let found = exact_batch_of(m);
    if found.is_none() {
        warn!("a telemetry message without a readable Fleetmq-Batch header was skipped");
    }
    found
}

fn exact_batch_of(m: &jetstream::Message) -> Option<(String, Vec<u8>)> {
    let headers = m.headers.as_ref()?;
    let device = headers.get(HEADER_DEVICE)?.as_str().to_string();
    let body = base64::engine::general_purpose::STANDARD
        .decode(headers.get(HEADER_BATCH)?.as_str())
        .ok()?;
    Some((device, body))
}

/// Says this front-end lives, every [`FRONTEND_BEAT_S`].
async fn beat(shared: Shared) {
    let mut every = tokio::time::interval(Duration::from_secs(FRONTEND_BEAT_S));
    loop {
        every.tick().await;
        if let Err(e) = shared
            .frontends
            .put(&shared.name, super::now_ms().to_string().into())
            .await
        {
            debug!(error = %e, "could not say this front-end lives");
        }
    }
}

/// Writes each device's holder and enrolment, in order: the newest
/// connection wins.
async fn write_presence(shared: Shared, mut rx: mpsc::UnboundedReceiver<ToCluster>) {
    while let Some(msg) = rx.recv().await {
        let (device, online, version, arch) = match msg {
            ToCluster::Enrol { device, keys } => {
                enrol(&shared, &device, &keys).await;
                continue;
            }
            ToCluster::Online {
                device,
                version,
                arch,
            } => (device, true, version, arch),
            ToCluster::Offline { device } => (device, false, String::new(), String::new()),
            _ => continue,
        };
        for attempt in 0..5 {
            match set_holder(&shared, &device, online, &version, &arch).await {
                Ok(()) => break,
                Err(e) if attempt == 4 => {
                    warn!(device, error = %e, "could not record which front-end holds the device")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// Puts `device`'s keys in the allow list bucket (none: deletes it).
async fn enrol(shared: &Shared, device: &str, keys: &[String]) {
    let done = if keys.is_empty() {
        shared.allow.delete(device).await.map_err(|e| e.to_string())
    } else {
        let value = super::allow::value(keys);
        shared
            .allow
            .put(device, value.into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    match done {
        Ok(()) => info!(
            device,
            keys = keys.len(),
            "allow list change sent to the cluster"
        ),
        Err(e) => {
            warn!(device, error = %e, "could not put an allow list change in the cluster; edit the file again once NATS is back")
        }
    }
}

/// Tells the loop what the allow list bucket holds, then each change.
async fn watch_enrolled(shared: Shared) {
    loop {
        if let Err(e) = watch_enrolled_once(&shared).await {
            debug!(error = %e, "watching the allow list bucket; again in a second");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn watch_enrolled_once(shared: &Shared) -> Result<(), String> {
    let mut all = super::allow::Enrolled::new();
    let mut newest = 0;
    let mut keys = shared.allow.keys().await.map_err(|e| e.to_string())?;
    let mut devices = Vec::new();
    while let Some(key) = keys.next().await {
        devices.push(key.map_err(|e| e.to_string())?);
    }
    for device in devices {
        if let Some(entry) = shared
            .allow
            .entry(&device)
            .await
            .map_err(|e| e.to_string())?
            && entry.operation == kv::Operation::Put
        {
            newest = newest.max(entry.revision);
            all.insert(device, super::allow::keys_in(&entry.value));
        }
    }
    shared.out.send(FromCluster::EnrolledAll(all));
    let mut watch = shared
        .allow
        .watch_all_from_revision(newest + 1)
        .await
        .map_err(|e| e.to_string())?;
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| e.to_string())?;
        let keys = match entry.operation {
            kv::Operation::Put => super::allow::keys_in(&entry.value).into_iter().collect(),
            _ => Vec::new(),
        };
        shared.out.send(FromCluster::EnrolledOne {
            device: entry.key,
            keys,
        });
    }
    Err("the watch ended".into())
}

/// One compare-and-set of a device's holder.
async fn set_holder(
    shared: &Shared,
    device: &str,
    online: bool,
    version: &str,
    arch: &str,
) -> Result<(), String> {
    let entry = shared
        .devices
        .entry(device)
        .await
        .map_err(|e| e.to_string())?;
    let held: Option<Holder> = entry
        .as_ref()
        .filter(|e| e.operation == kv::Operation::Put)
        .and_then(|e| serde_json::from_slice(&e.value).ok());
    let Some(next) = super::next_holder(
        held.as_ref(),
        &shared.name,
        online,
        version,
        arch,
        super::now_ms(),
    ) else {
        return Ok(());
    };
    let value = serde_json::to_vec(&next).map_err(|e| e.to_string())?;
    match entry {
        Some(e) => shared
            .devices
            .update(device, value.into(), e.revision)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        None => shared
            .devices
            .create(device, value.into())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

/// Tells the loop who holds each device, and each change.
async fn watch_holders(shared: Shared) {
    loop {
        match shared.devices.watch_with_history(">").await {
            Ok(mut watch) => {
                while let Some(entry) = watch.next().await {
                    let Ok(entry) = entry else { break };
                    let holder = match entry.operation {
                        kv::Operation::Put => serde_json::from_slice::<Holder>(&entry.value).ok(),
                        _ => None,
                    };
                    shared.out.send(FromCluster::Holder {
                        device: entry.key,
                        holder,
                    });
                }
            }
            Err(e) => debug!(error = %e, "watching the devices bucket"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Tells the loop which front-ends live, every [`FRONTEND_BEAT_S`].
async fn list_front_ends(shared: Shared) {
    let mut every = tokio::time::interval(Duration::from_secs(FRONTEND_BEAT_S));
    loop {
        every.tick().await;
        let Ok(mut keys) = shared.frontends.keys().await else {
            continue;
        };
        let mut live = Vec::new();
        while let Some(Ok(name)) = keys.next().await {
            live.push(name);
        }
        shared.out.send(FromCluster::FrontEnds(live));
    }
}

/// Asks the telemetry stream for its state every [`HEALTH_EVERY`]: the
/// loop hears whether the cluster would take a batch now (its stream has
/// a leader that answers), whether or not agents send any.
async fn check_health(shared: Shared) {
    let mut every = tokio::time::interval(HEALTH_EVERY);
    let mut told: Option<Option<String>> = None;
    loop {
        every.tick().await;
        let health =
            match tokio::time::timeout(HEALTH_EVERY * 2, shared.js.get_stream(STREAM)).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!("the telemetry stream does not answer: {e}")),
                Err(_) => Some("the telemetry stream does not answer".to_string()),
            };
        if told.as_ref() != Some(&health) {
            told = Some(health.clone());
            shared.out.send(FromCluster::Connection(health));
        }
    }
}

/// Hands the loop the announcements other front-ends made.
async fn hear_broadcasts(shared: Shared) {
    loop {
        match shared.client.subscribe(BROADCAST_SUBJECT).await {
            Ok(mut heard) => {
                while let Some(msg) = heard.next().await {
                    let Some(headers) = &msg.headers else {
                        continue;
                    };
                    let from = headers.get(HEADER_FROM).map(|v| v.as_str());
                    let Some(topic) = headers.get(HEADER_TOPIC).map(|v| v.to_string()) else {
                        continue;
                    };
                    if from == Some(shared.name.as_str()) {
                        continue;
                    }
                    shared.out.send(FromCluster::Broadcast {
                        topic,
                        frame: msg.payload.to_vec(),
                    });
                }
            }
            Err(e) => debug!(error = %e, "subscribing to announcements"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Hands the loop what other front-ends ask this one.
async fn answer_asks(
    shared: Shared,
    replies: Arc<std::sync::Mutex<std::collections::HashMap<u64, async_nats::Subject>>>,
) {
    let mut next = 0u64;
    loop {
        match shared
            .client
            .subscribe(super::ask_subject(&shared.name))
            .await
        {
            Ok(mut asks) => {
                while let Some(msg) = asks.next().await {
                    let Some(reply) = msg.reply else { continue };
                    next += 1;
                    if let Ok(mut r) = replies.lock() {
                        r.insert(next, reply);
                        // One the loop never answered is forgotten in time
                        // (its asker has stopped waiting long before).
                        if r.len() > MAX_ASKS {
                            let oldest = next.saturating_sub(MAX_ASKS as u64);
                            r.retain(|id, _| *id > oldest);
                        }
                    }
                    shared.out.send(FromCluster::Asked {
                        id: next,
                        frame: msg.payload.to_vec(),
                    });
                }
            }
            Err(e) => debug!(error = %e, "subscribing to what other front-ends ask"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
