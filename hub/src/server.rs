//! The hub's event loop: one thread owns every socket and the store.
//!
//! `zmq::poll` waits on the five agent-facing sockets, the operator socket
//! and the shutdown descriptor. Each ready socket is drained without blocking;
//! telemetry batches read in one round are committed in one transaction and
//! only then acked. Timers (presence, command deadlines, job leases) run on a
//! short tick.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use fleetmq_net::{Security, Shutdown, Sockets, recv_frames, recv_message, send_frames};
use fleetmq_protocol::{
    Ack, Announcement, Batch, Broadcast, ChatMessage, CommandFrame, CommandRequest, DeviceInfo,
    Downstream, HelloRequest, HubPorts, HubStats, Job, JobFrame, JobSpec, OperatorError,
    OperatorFrame, OperatorReplyFrame, OperatorRequest, OperatorResponse, Outcome, Refusal,
    ReplyFrame, Request, Response, ResultFrame, Upstream, Welcome, names, validate_device_id,
};
use tracing::{debug, info, warn};

use crate::auth::{AllowList, RateLimit, Verdict, Watch};
use crate::broker::{Pending, PendingCommand, Recent};
use crate::config::HubConfig;
use crate::latest::Latest;
use crate::presence::Presence;
use crate::store::{Incoming, MAX_SAMPLES_PER_BATCH, Store, Stored};

/// Messages drained from one socket per round before others get a turn.
const DRAIN: usize = 1024;
/// Bytes a connection of a quiet agent-facing socket (broadcast, jobs,
/// results, commands) reads and writes at once. libzmq keeps buffers of
/// this size per connection (8 KB each by default); these sockets carry a
/// few small messages a minute, and a hub holds thousands of them.
const QUIET_BATCH: i32 = 512;
/// The same for telemetry, which carries every batch: 4 KB reads a few
/// typical batches at once. Measured (fleetmq-bench ingest, connected):
/// 2 KB cost ingest throughput, 8 KB memory, for little either way.
const TELEMETRY_BATCH: i32 = 4096;
/// Timer resolution: presence, command deadlines and job leases.
const TICK: Duration = Duration::from_millis(100);
/// Most (device, metric) pairs whose newest value is kept for /metrics.
const MAX_LATEST: usize = 200_000;
/// How often idle rate-limit buckets are forgotten, in ticks.
const FORGET_TICKS: u32 = 50;
/// Where libzmq asks who may connect (ZeroMQ RFC 27).
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

// Socket monitor events (zmq.h).
const EVENT_DISCONNECTED: u16 = 0x0200;
const EVENT_HANDSHAKE_FAILED_NO_DETAIL: u16 = 0x0800;
const EVENT_HANDSHAKE_FAILED_PROTOCOL: u16 = 0x2000;

/// The endpoints the hub bound (with the ports the OS chose), as printed and
/// written to endpoints.json.
pub type Endpoints = crate::config::Listen;

/// Counters shown by `stats`.
/// A command waiting for its device to come online.
struct Queued {
    client: Vec<u8>,
    request_id: u64,
    device: String,
    command: fleetmq_protocol::Command,
    timeout_ms: u32,
    queue_ms: u32,
    expires_ms: u64,
}

#[derive(Debug, Default)]
struct Counters {
    batches_stored: u64,
    batches_duplicate: u64,
    samples_stored: u64,
    frames_dropped: u64,
    jobs_dispatched: u64,
    results_received: u64,
    commands_sent: u64,
    commands_timed_out: u64,
    handshakes_refused: u64,
    handshakes_failed: u64,
    impersonations: u64,
    rate_limited: u64,
    disconnects: u64,
}

/// The allow list in force, and the file it came from.
struct Enrolment {
    list: AllowList,
    watch: Watch,
    /// Unknown keys already logged, so a knocking stranger logs once.
    logged: std::collections::HashSet<String>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct Hub {
    config: HubConfig,
    store: Store,
    upstream: zmq::Socket,
    broadcast: zmq::Socket,
    jobs: zmq::Socket,
    results: zmq::Socket,
    commands: zmq::Socket,
    operator: zmq::Socket,
    ports: HubPorts,
    presence: Presence,
    pending: Pending,
    /// Commands waiting for their device to come online.
    queued: Vec<Queued>,
    recent: Recent,
    counters: Counters,
    started: Instant,
    endpoints: Endpoints,
    /// ZAP handler; `None` when plaintext.
    zap: Option<zmq::Socket>,
    enrolment: Option<Enrolment>,
    /// Connection events of the five agent-facing sockets.
    monitors: Vec<zmq::Socket>,
    rate: RateLimit,
    /// The newest sample of each (device, metric) stored since the start.
    latest: Latest,
    /// Devices currently over their rate, logged once per episode.
    over_rate: std::collections::HashSet<String>,
    ticks: u32,
}

fn write_endpoints(dir: &Path, endpoints: &Endpoints) -> anyhow::Result<PathBuf> {
    let path = dir.join("endpoints.json");
    let tmp = dir.join("endpoints.json.tmp");
    let text = serde_json::to_string_pretty(endpoints)?;
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Runs the hub until `shutdown` fires.
pub fn run(config: HubConfig, insecure: bool, shutdown: Shutdown) -> anyhow::Result<()> {
    let dir = config.data_dir.clone();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let store = Store::open(&dir, config.storage.synchronous)
        .with_context(|| format!("opening the store in {}", dir.display()))?;
    let mut sockets = Sockets::new(config.net.clone());
    let mut enrolment = None;
    let mut zap = None;
    if !insecure {
        let (pair, made) = fleetmq_net::keys::load_or_create(&dir, "hub")
            .context("loading the hub's CURVE key pair (DATA_DIR/hub.key)")?;
        let pub_path = fleetmq_net::keys::paths(&dir, "hub").1;
        if made {
            info!(public_key = %pair.public, file = %pub_path.display(), "made the hub's key pair; give agents this public key as hub_public_key");
        } else {
            info!(public_key = %pair.public, file = %pub_path.display(), "hub key loaded");
        }
        let path = config.allow_list_path();
        let list = AllowList::load(&path).context("reading the allow list")?;
        info!(file = %path.display(), keys = list.len(), "allow list loaded");
        if list.len() == 0 {
            warn!(file = %path.display(), "no device is enrolled yet: add one with `fleetmq-hub allow DEVICE PUBLIC_KEY`");
        }
        enrolment = Some(Enrolment {
            list,
            watch: Watch::new(&path),
            logged: Default::default(),
        });
        sockets = sockets.with_security(Security::CurveServer {
            secret: pair.secret.clone(),
        });
        // The handler must be there before the first agent knocks.
        zap = Some(sockets.build(zmq::REP).bind(ZAP_ENDPOINT)?.0);
    }
    let events = i32::from(
        EVENT_DISCONNECTED | EVENT_HANDSHAKE_FAILED_NO_DETAIL | EVENT_HANDSHAKE_FAILED_PROTOCOL,
    );
    // One inproc monitor per agent-facing socket, named after it.
    const MONITORED: [&str; 5] = ["telemetry", "broadcast", "jobs", "results", "commands"];
    let monitor = |name: &str| format!("inproc://fleetmq-hub-monitor-{name}");
    let l = &config.listen;
    let (upstream, telemetry) = sockets
        .build(zmq::ROUTER)
        .router_handover()
        .batch_sizes(TELEMETRY_BATCH, TELEMETRY_BATCH)
        .kernel_liveness()
        .secure()
        .monitor(&monitor("telemetry"), events)
        .bind(&l.telemetry)?;
    let (broadcast, broadcast_ep) = sockets
        .build(zmq::XPUB)
        .xpub_verbose()
        .batch_sizes(QUIET_BATCH, QUIET_BATCH)
        .kernel_liveness()
        .secure()
        .monitor(&monitor("broadcast"), events)
        .bind(&l.broadcast)?;
    // Few jobs wait in one agent's pipe: a lease covers the rest.
    let (jobs, jobs_ep) = sockets
        .build(zmq::PUSH)
        .hwm(16, 16)
        .batch_sizes(QUIET_BATCH, QUIET_BATCH)
        .kernel_liveness()
        .secure()
        .monitor(&monitor("jobs"), events)
        .bind(&l.jobs)?;
    let (results, results_ep) = sockets
        .build(zmq::PULL)
        .batch_sizes(QUIET_BATCH, QUIET_BATCH)
        .kernel_liveness()
        .secure()
        .monitor(&monitor("results"), events)
        .bind(&l.results)?;
    let (commands, commands_ep) = sockets
        .build(zmq::ROUTER)
        .router_mandatory()
        .router_handover()
        .batch_sizes(QUIET_BATCH, QUIET_BATCH)
        .kernel_liveness()
        .secure()
        .monitor(&monitor("commands"), events)
        .bind(&l.commands)?;
    let monitors = MONITORED
        .iter()
        .map(|name| sockets.build(zmq::PAIR).connect(&monitor(name)))
        .collect::<Result<Vec<_>, _>>()?;
    let (operator, operator_ep) = sockets.build(zmq::ROUTER).bind(&l.operator)?;
    let http = if l.http.is_empty() {
        None
    } else {
        Some(crate::http::Http::start(&l.http, operator_ep.clone())?)
    };
    let endpoints = Endpoints {
        telemetry,
        broadcast: broadcast_ep,
        jobs: jobs_ep,
        results: results_ep,
        commands: commands_ep,
        operator: operator_ep,
        http: http.as_ref().map_or_else(String::new, |h| h.url.clone()),
    };
    let port = |ep: &str| fleetmq_net::endpoint::port(ep).unwrap_or(0);
    let ports = HubPorts {
        broadcast: port(&endpoints.broadcast),
        jobs: port(&endpoints.jobs),
        results: port(&endpoints.results),
        commands: port(&endpoints.commands),
    };
    let path = write_endpoints(&dir, &endpoints)?;
    // The JSON line says how agents must connect.
    let mut printed = serde_json::to_value(&endpoints)?;
    printed["security"] = sockets.security().name().into();
    println!("{printed}");
    info!(
        telemetry = %endpoints.telemetry,
        operator = %endpoints.operator,
        endpoints = %path.display(),
        "hub listening"
    );
    let rate = RateLimit::new(config.security.device_rate, config.security.device_burst);
    let mut hub = Hub {
        presence: Presence::new(config.presence.offline_after_heartbeats),
        endpoints,
        zap,
        enrolment,
        monitors,
        rate,
        latest: Latest::new(MAX_LATEST),
        over_rate: Default::default(),
        ticks: 0,
        config,
        store,
        upstream,
        broadcast,
        jobs,
        results,
        commands,
        operator,
        ports,
        pending: Pending::default(),
        queued: Vec::new(),
        recent: Recent::new(1024),
        counters: Counters::default(),
        started: Instant::now(),
    };
    hub.serve(&shutdown)?;
    drop(http);
    info!("hub stopped");
    Ok(())
    // Sockets close here with their linger; the context terminates after them.
}

impl Hub {
    fn serve(&mut self, shutdown: &Shutdown) -> anyhow::Result<()> {
        let mut last_tick = Instant::now() - TICK;
        loop {
            let ready: Vec<bool> = {
                let mut items = vec![
                    self.upstream.as_poll_item(zmq::POLLIN),
                    self.results.as_poll_item(zmq::POLLIN),
                    self.commands.as_poll_item(zmq::POLLIN),
                    self.operator.as_poll_item(zmq::POLLIN),
                    self.broadcast.as_poll_item(zmq::POLLIN),
                    zmq::PollItem::from_fd(shutdown.fd(), zmq::POLLIN),
                ];
                items.extend(self.monitors.iter().map(|m| m.as_poll_item(zmq::POLLIN)));
                if let Some(zap) = &self.zap {
                    items.push(zap.as_poll_item(zmq::POLLIN));
                }
                let wait = TICK.saturating_sub(last_tick.elapsed()).as_millis() as i64;
                match zmq::poll(&mut items, wait.max(1)) {
                    Ok(_) => {}
                    Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(e).context("polling sockets"),
                }
                items.iter().map(|i| i.is_readable()).collect()
            };
            if ready[5] && shutdown.requested() {
                info!("shutting down");
                if let Err(e) = self.store.flush_log() {
                    warn!(error = %e, "could not write the last command log entries");
                }
                return Ok(());
            }
            // Handshakes first: a connecting agent waits on them.
            if ready.get(6 + self.monitors.len()) == Some(&true) {
                self.drain_zap()?;
            }
            if ready[0] {
                self.drain_upstream()?;
            }
            if ready[1] {
                self.drain_results()?;
            }
            if ready[2] {
                self.drain_replies()?;
            }
            if ready[3] {
                self.drain_operator()?;
            }
            if ready[4] {
                self.drain_subscriptions()?;
            }
            if ready[6..6 + self.monitors.len()].contains(&true) {
                self.drain_monitors()?;
            }
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                self.tick()?;
            }
        }
    }

    /// Answers libzmq's questions about connecting CURVE clients.
    fn drain_zap(&mut self) -> anyhow::Result<()> {
        loop {
            let Some(zap) = &self.zap else {
                return Ok(());
            };
            let Some(frames) = recv_frames(zap, 16).context("reading ZAP requests")? else {
                return Ok(());
            };
            let frames = frames.unwrap_or_default();
            let Some(enrolment) = &self.enrolment else {
                return Ok(());
            };
            let (mut verdict, mut reply) = crate::auth::zap(&enrolment.list, &frames);
            if matches!(verdict, Verdict::UnknownKey { .. }) {
                // Enrolled a moment ago? Then the device need not wait for
                // the next tick (and a reconnect) to get in.
                self.reload_allow_list()?;
                if let Some(enrolment) = &self.enrolment {
                    (verdict, reply) = crate::auth::zap(&enrolment.list, &frames);
                }
            }
            let parts: Vec<&[u8]> = reply.iter().map(Vec::as_slice).collect();
            if let Some(zap) = &self.zap {
                send_frames(zap, &parts).context("answering a ZAP request")?;
            }
            match verdict {
                Verdict::Allow(device) => debug!(device, "handshake accepted"),
                Verdict::UnknownKey { key, address } => {
                    self.counters.handshakes_refused += 1;
                    if let Some(e) = &mut self.enrolment
                        && e.logged.len() < 1024
                        && e.logged.insert(key.clone())
                    {
                        warn!(%address, public_key = %key, "refused a key that is not enrolled; if it is yours: fleetmq-hub allow DEVICE {key}");
                    }
                }
                Verdict::Malformed(why) => {
                    self.counters.handshakes_refused += 1;
                    debug!(%why, "refused a handshake");
                }
            }
        }
    }

    /// Counts failed handshakes and ended connections.
    fn drain_monitors(&mut self) -> anyhow::Result<()> {
        for m in &self.monitors {
            while let Some(frames) = recv_frames(m, 2).context("reading a socket monitor")? {
                let Some(event) = frames
                    .ok()
                    .and_then(|f| f.first().and_then(|f| f.first_chunk::<2>()).copied())
                    .map(u16::from_le_bytes)
                else {
                    continue;
                };
                match event {
                    EVENT_DISCONNECTED => self.counters.disconnects += 1,
                    EVENT_HANDSHAKE_FAILED_NO_DETAIL | EVENT_HANDSHAKE_FAILED_PROTOCOL => {
                        self.counters.handshakes_failed += 1;
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Whether a message that claims to come from `device` may be served:
    /// on CURVE its connection must be enrolled as that very device (and
    /// still be on the list), and the device must be within its rate.
    fn admit(&mut self, socket: &str, device: &str, user_id: Option<&str>, now: u64) -> bool {
        if let Some(enrolment) = &self.enrolment {
            let enrolled_as = user_id.filter(|u| enrolment.list.has_device(u));
            if enrolled_as != Some(device) {
                self.counters.impersonations += 1;
                debug!(
                    socket,
                    claimed = device,
                    key_of = user_id.unwrap_or("nobody"),
                    "dropped a message claiming another device"
                );
                return false;
            }
        }
        if self.rate.take(device, now) {
            if self.over_rate.remove(device) {
                info!(device, "device back under its rate limit");
            }
            return true;
        }
        self.counters.rate_limited += 1;
        if self.over_rate.len() < 1024 && self.over_rate.insert(device.to_string()) {
            warn!(
                device,
                rate = self.config.security.device_rate,
                "device is over its rate limit; dropping its messages (unacked, so an honest agent resends)"
            );
        }
        false
    }

    /// Applies a changed allow list: a device whose key left the list is
    /// marked offline and every agent connection is cut, so each agent
    /// handshakes again and the revoked one is refused.
    fn reload_allow_list(&mut self) -> anyhow::Result<()> {
        let Some(enrolment) = &mut self.enrolment else {
            return Ok(());
        };
        if !enrolment.watch.changed() {
            return Ok(());
        }
        let path = enrolment.watch.path().to_path_buf();
        let newer = match AllowList::load(&path) {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "allow list not applied; the previous one stays in force until the file is fixed");
                return Ok(());
            }
        };
        let revoked = enrolment.list.revoked_in(&newer);
        info!(
            keys = newer.len(),
            revoked = revoked.len(),
            "allow list changed"
        );
        enrolment.list = newer;
        enrolment.logged.clear();
        if revoked.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        for (device, key) in &revoked {
            warn!(device, public_key = %key, "key revoked; cutting the device off");
            if let Some(last) = self.presence.bye(device) {
                if let Err(e) = self.store.presence(device, now, last) {
                    warn!(device, error = %e, "could not record presence");
                }
                info!(device, "device offline (revoked)");
            }
        }
        self.cut_connections()
    }

    /// Unbinds and binds again every agent-facing socket, which closes all
    /// their connections; agents reconnect and handshake again.
    fn cut_connections(&mut self) -> anyhow::Result<()> {
        let e = &self.endpoints;
        for (socket, endpoint) in [
            (&self.upstream, &e.telemetry),
            (&self.broadcast, &e.broadcast),
            (&self.jobs, &e.jobs),
            (&self.results, &e.results),
            (&self.commands, &e.commands),
        ] {
            socket
                .unbind(endpoint)
                .with_context(|| format!("unbinding {endpoint}"))?;
            // The listener closes in libzmq's I/O thread; the port is free
            // again moments later.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match socket.bind(endpoint) {
                    Ok(()) => break,
                    Err(zmq::Error::EADDRINUSE) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(err) => {
                        return Err(err).with_context(|| format!("binding {endpoint} again"));
                    }
                }
            }
        }
        info!("agent connections cut; agents reconnect and handshake again");
        Ok(())
    }

    fn dropped(&mut self, socket: &str, why: impl std::fmt::Display) {
        self.counters.frames_dropped += 1;
        debug!(socket, %why, "dropped a frame");
    }

    fn send_down(&self, device: &str, msg: Downstream) {
        match msg.encode() {
            Ok(frame) => {
                // ROUTER drops messages for peers that are gone; nothing to do then.
                if let Err(e) = send_frames(&self.upstream, &[device.as_bytes(), &frame]) {
                    debug!(device, error = %e, "could not answer a device");
                }
            }
            Err(e) => warn!(error = %e, "could not encode a downstream message"),
        }
    }

    fn publish(&self, topic: &str, msg: Broadcast) {
        match msg.encode() {
            Ok(frame) => {
                if let Err(e) = send_frames(&self.broadcast, &[topic.as_bytes(), &frame]) {
                    warn!(topic, error = %e, "could not publish");
                }
            }
            Err(e) => warn!(error = %e, "could not encode a broadcast"),
        }
    }

    fn online(&mut self, device: &str, now: u64) {
        if let Err(e) = self.store.touch(device, now) {
            warn!(device, error = %e, "could not record a device");
        }
        if let Err(e) = self.store.presence(device, now, now) {
            warn!(device, error = %e, "could not record presence");
        }
        info!(device, "device online");
    }

    fn drain_upstream(&mut self) -> anyhow::Result<()> {
        let mut batches: Vec<(String, Batch, Vec<u8>)> = Vec::new();
        for _ in 0..DRAIN {
            let Some((frames, user_id)) = next_message(
                &self.upstream,
                2,
                &mut self.counters.frames_dropped,
                "telemetry",
            )?
            else {
                break;
            };
            let [id, frame] = frames.as_slice() else {
                self.dropped("telemetry", "message without a body");
                continue;
            };
            let Some(device) = std::str::from_utf8(id)
                .ok()
                .filter(|d| validate_device_id(d).is_ok())
            else {
                self.dropped("telemetry", "routing id is not a device id");
                continue;
            };
            let device = device.to_string();
            let now = now_ms();
            if !self.admit("telemetry", &device, user_id.as_deref(), now) {
                continue;
            }
            let msg = match Upstream::decode(frame) {
                Ok(m) => m,
                Err(e) => {
                    self.dropped("telemetry", &e);
                    self.send_down(
                        &device,
                        Refusal {
                            reason: e.to_string(),
                        }
                        .into(),
                    );
                    continue;
                }
            };
            if let Upstream::Hello(hello) = &msg {
                let came = self.presence.hello(&device, hello.heartbeat_ms, now);
                if let Err(e) = self.store.hello(&device, hello, now) {
                    warn!(device, error = %e, "could not record a hello");
                }
                if came {
                    self.online(&device, now);
                }
                self.send_down(
                    &device,
                    Welcome {
                        hub_version: env!("CARGO_PKG_VERSION").into(),
                        ports: self.ports.clone(),
                    }
                    .into(),
                );
                continue;
            }
            if let Upstream::Bye(bye) = &msg {
                if let Some(last) = self.presence.bye(&device) {
                    if let Err(e) = self.store.presence(&device, now, last) {
                        warn!(device, error = %e, "could not record presence");
                    }
                    info!(device, reason = %bye.reason, "device offline (bye)");
                }
                continue;
            }
            let seen = self.presence.seen(&device, now);
            if seen.came_online {
                self.online(&device, now);
            }
            if seen.needs_hello {
                self.send_down(&device, HelloRequest.into());
            }
            if let Upstream::Batch(batch) = msg {
                let checked = batch.validate().map_err(|e| e.to_string()).and_then(|()| {
                    if batch.samples.len() > MAX_SAMPLES_PER_BATCH {
                        Err(format!(
                            "{} samples is over the {MAX_SAMPLES_PER_BATCH} a batch may hold",
                            batch.samples.len()
                        ))
                    } else {
                        Ok(())
                    }
                });
                if let Err(e) = checked {
                    self.dropped("telemetry", &e);
                    self.send_down(
                        &device,
                        Refusal {
                            reason: format!("batch {} refused: {e}", batch.seq),
                        }
                        .into(),
                    );
                    continue;
                }
                batches.push((device, batch, frame[2..].to_vec()));
            }
        }
        if batches.is_empty() {
            return Ok(());
        }
        let items: Vec<Incoming<'_>> = batches
            .iter()
            .map(|(device, batch, body)| Incoming {
                device,
                batch,
                body,
            })
            .collect();
        let (outcomes, chat) = match self.store.store_batches(&items, now_ms()) {
            Ok(r) => r,
            Err(e) => {
                // Nothing is acked; agents resend after their ack timeout.
                warn!(error = %e, batches = items.len(), "could not store batches; they will be resent");
                return Ok(());
            }
        };
        for ((device, batch, _), outcome) in batches.iter().zip(outcomes) {
            match outcome {
                Stored::New => {
                    self.counters.batches_stored += 1;
                    self.counters.samples_stored += batch.samples.len() as u64;
                    self.latest.record(device, batch.resolved_samples());
                }
                Stored::Duplicate => self.counters.batches_duplicate += 1,
            }
            self.send_down(device, Ack { seq: batch.seq }.into());
        }
        for row in chat {
            self.publish(
                names::CHAT_TOPIC,
                ChatMessage {
                    from: row.device,
                    ts_ms: row.ts_ms,
                    text: row.text,
                }
                .into(),
            );
        }
        Ok(())
    }

    fn drain_results(&mut self) -> anyhow::Result<()> {
        for _ in 0..DRAIN {
            let Some((frames, user_id)) = next_message(
                &self.results,
                1,
                &mut self.counters.frames_dropped,
                "results",
            )?
            else {
                break;
            };
            let ResultFrame::Result(result) = match ResultFrame::decode(&frames[0]) {
                Ok(r) => r,
                Err(e) => {
                    self.dropped("results", &e);
                    continue;
                }
            };
            if validate_device_id(&result.device).is_err() {
                self.dropped("results", "result from an invalid device id");
                continue;
            }
            let now = now_ms();
            if !self.admit("results", &result.device, user_id.as_deref(), now) {
                continue;
            }
            let stored = match &result.outcome {
                Outcome::AlreadyRun => self
                    .store
                    .note_job(
                        result.id,
                        &format!(
                            "attempt {} reached {}, which had already run it",
                            result.attempt, result.device
                        ),
                        now,
                    )
                    .map(|()| false),
                outcome => self
                    .store
                    .finish_job(result.id, &result.device, outcome, now),
            };
            match stored {
                Ok(true) => {
                    self.counters.results_received += 1;
                    info!(job = result.id, device = %result.device, "job done");
                }
                Ok(false) => debug!(
                    job = result.id,
                    "result for a finished or unknown job ignored"
                ),
                Err(e) => warn!(job = result.id, error = %e, "could not store a job result"),
            }
        }
        Ok(())
    }

    fn drain_replies(&mut self) -> anyhow::Result<()> {
        for _ in 0..DRAIN {
            let Some((frames, user_id)) = next_message(
                &self.commands,
                3,
                &mut self.counters.frames_dropped,
                "commands",
            )?
            else {
                break;
            };
            let [id, empty, frame] = frames.as_slice() else {
                self.dropped("commands", "reply without the REP envelope");
                continue;
            };
            let device = String::from_utf8_lossy(id).into_owned();
            if !empty.is_empty() {
                self.dropped("commands", "reply without the REP envelope");
                continue;
            }
            if !self.admit("commands", &device, user_id.as_deref(), now_ms()) {
                continue;
            }
            let ReplyFrame::Reply(reply) = match ReplyFrame::decode(frame) {
                Ok(r) => r,
                Err(e) => {
                    self.dropped("commands", &e);
                    continue;
                }
            };
            let Some(p) = self.pending.answer(reply.corr, &device) else {
                debug!(
                    device,
                    corr = reply.corr,
                    "late or unexpected command reply ignored"
                );
                continue;
            };
            // The operator is waiting: answer first, then write the log.
            let summary = serde_json::to_string(&reply.reply).unwrap_or_default();
            self.answer(
                &p.client,
                p.request_id,
                Response::Reply {
                    device,
                    reply: reply.reply,
                },
            );
            self.store.log_command_result(p.log_id, &summary, now_ms());
        }
        Ok(())
    }

    fn drain_subscriptions(&mut self) -> anyhow::Result<()> {
        for _ in 0..DRAIN {
            let Some((frames, user_id)) = next_message(
                &self.broadcast,
                1,
                &mut self.counters.frames_dropped,
                "broadcast",
            )?
            else {
                break;
            };
            // XPUB passes up subscription messages: 1 or 0, then the prefix.
            let (on, topic) = match frames[0].split_first() {
                Some((1, t)) => (true, t),
                Some((0, t)) => (false, t),
                _ => continue,
            };
            let Some(device) = std::str::from_utf8(topic)
                .ok()
                .and_then(|t| t.strip_prefix("dev/"))
                .and_then(|t| t.strip_suffix('/'))
            else {
                continue;
            };
            // On CURVE, only a device's own subscription says it listens
            // (PUB cannot stop an enrolled device hearing another's topic).
            let own = self.enrolment.is_none() || user_id.as_deref() == Some(device);
            if validate_device_id(device).is_ok() && own {
                debug!(device, on, "broadcast subscription");
                self.presence.set_listening(device, on);
            }
        }
        Ok(())
    }

    fn drain_operator(&mut self) -> anyhow::Result<()> {
        for _ in 0..DRAIN {
            let Some((frames, _)) = next_message(
                &self.operator,
                3,
                &mut self.counters.frames_dropped,
                "operator",
            )?
            else {
                break;
            };
            let [client, empty, frame] = frames.as_slice() else {
                self.dropped("operator", "request without the REQ envelope");
                continue;
            };
            if !empty.is_empty() {
                self.dropped("operator", "request without the REQ envelope");
                continue;
            }
            match OperatorFrame::decode(frame) {
                Ok(OperatorFrame::Request(req)) => self.operator_request(client, req),
                Err(e) => {
                    self.dropped("operator", &e);
                    self.answer(
                        client,
                        0,
                        Response::Error(OperatorError::BadRequest(e.to_string())),
                    );
                }
            }
        }
        Ok(())
    }

    fn answer(&mut self, client: &[u8], id: u64, response: Response) {
        // Only answers to requests that act are kept for retries; reads are
        // safe to repeat and may be large.
        let acted = matches!(
            response,
            Response::JobSubmitted { .. } | Response::Broadcast { .. } | Response::Reply { .. }
        );
        let frame = match OperatorReplyFrame::from(OperatorResponse { id, response }).encode() {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "could not encode an operator response");
                return;
            }
        };
        if let Err(e) = send_frames(&self.operator, &[client, b"", &frame]) {
            debug!(error = %e, "operator went away before its answer");
        }
        if acted && id != 0 {
            self.recent.remember(id, frame);
        }
    }

    fn operator_request(&mut self, client: &[u8], req: OperatorRequest) {
        if let Some(frame) = self.recent.get(req.id) {
            let frame = frame.to_vec();
            if let Err(e) = send_frames(&self.operator, &[client, b"", &frame]) {
                debug!(error = %e, "operator went away before its answer");
            }
            return;
        }
        if self.pending.retarget(req.id, client) {
            return;
        }
        if let Some(q) = self.queued.iter_mut().find(|q| q.request_id == req.id) {
            q.client = client.to_vec();
            return;
        }
        let now = now_ms();
        let storage =
            |e: crate::store::StoreError| Response::Error(OperatorError::Storage(e.to_string()));
        let response = match req.request {
            Request::Devices => self.devices().unwrap_or_else(storage),
            Request::Telemetry(q) => self
                .store
                .telemetry(&q)
                .map(Response::Telemetry)
                .unwrap_or_else(storage),
            Request::Chat(q) => self
                .store
                .chat(q.after_id, q.limit)
                .map(Response::Chat)
                .unwrap_or_else(storage),
            Request::RecentChat { limit } => self
                .store
                .recent_chat(limit)
                .map(Response::Chat)
                .unwrap_or_else(storage),
            Request::Commands { limit } => self
                .store
                .commands(limit)
                .map(Response::Commands)
                .unwrap_or_else(storage),
            Request::Command {
                device,
                command,
                timeout_ms,
            } => match self.send_command(client, req.id, device, command, timeout_ms, now) {
                Ok(()) => return,
                Err(e) => Response::Error(e),
            },
            Request::QueuedCommand {
                device,
                command,
                timeout_ms,
                queue_ms,
            } => {
                let queued = Queued {
                    client: client.to_vec(),
                    request_id: req.id,
                    device: device.clone(),
                    command: command.clone(),
                    timeout_ms,
                    queue_ms,
                    expires_ms: now + u64::from(queue_ms),
                };
                match self.send_command(client, req.id, device, command, timeout_ms, now) {
                    Ok(()) => return,
                    Err(OperatorError::DeviceOffline(device)) if queue_ms > 0 => {
                        info!(device, queue_ms, "device offline: command queued");
                        self.queued.push(queued);
                        return;
                    }
                    Err(e) => Response::Error(e),
                }
            }
            Request::SubmitJob(mut job) => {
                if let Err(e) = check_spec(&job.spec) {
                    Response::Error(e)
                } else {
                    let d = &self.config.jobs;
                    if job.timeout_ms == 0 {
                        job.timeout_ms = d.timeout_ms;
                    }
                    if job.lease_ms == 0 {
                        job.lease_ms = d.lease_ms.max(job.timeout_ms.saturating_add(5_000));
                    }
                    if job.max_attempts == 0 {
                        job.max_attempts = d.max_attempts;
                    }
                    match self.store.submit_job(&job, now) {
                        Ok(id) => {
                            info!(job = id, "job queued");
                            Response::JobSubmitted { id }
                        }
                        Err(e) => storage(e),
                    }
                }
            }
            Request::Job { id } => match self.store.job(id) {
                Ok(Some(j)) => Response::Job(j),
                Ok(None) => Response::Error(OperatorError::NotFound(format!("job {id}"))),
                Err(e) => storage(e),
            },
            Request::Jobs { limit } => self
                .store
                .jobs(limit)
                .map(Response::Jobs)
                .unwrap_or_else(storage),
            Request::Broadcast { target, text } => match target.topic() {
                Ok(topic) => {
                    self.publish(
                        &topic,
                        Announcement {
                            ts_ms: now,
                            target,
                            text,
                        }
                        .into(),
                    );
                    Response::Broadcast { topic }
                }
                Err(e) => Response::Error(OperatorError::BadRequest(e.to_string())),
            },
            Request::Stats => self.stats().unwrap_or_else(storage),
            Request::Latest => Response::Latest(self.latest.values()),
        };
        let submitted = matches!(response, Response::JobSubmitted { .. });
        self.answer(client, req.id, response);
        if submitted {
            // A new job goes out now rather than on the next tick.
            self.dispatch_jobs(now_ms());
        }
    }

    fn devices(&self) -> Result<Response, crate::store::StoreError> {
        let mut devices: Vec<DeviceInfo> = self.store.devices()?;
        for d in &mut devices {
            d.online = self.presence.is_online(&d.id);
            d.listening = self.presence.is_listening(&d.id);
            if let Some((since, last)) = self.presence.times(&d.id) {
                d.since_ms = since;
                d.last_seen_ms = d.last_seen_ms.max(last);
            }
        }
        Ok(Response::Devices(devices))
    }

    fn stats(&self) -> Result<Response, crate::store::StoreError> {
        let devices_known = self.store.device_count()?;
        let c = &self.counters;
        Ok(Response::Stats(HubStats {
            hub_version: env!("CARGO_PKG_VERSION").into(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            devices_online: self.presence.online_count() as u32,
            devices_known,
            batches_stored: c.batches_stored,
            batches_duplicate: c.batches_duplicate,
            samples_stored: c.samples_stored,
            frames_dropped: c.frames_dropped,
            jobs_dispatched: c.jobs_dispatched,
            results_received: c.results_received,
            commands_sent: c.commands_sent,
            commands_timed_out: c.commands_timed_out,
            security: if self.enrolment.is_some() {
                "curve"
            } else {
                "plaintext"
            }
            .into(),
            devices_allowed: self.enrolment.as_ref().map_or(0, |e| e.list.len() as u32),
            handshakes_refused: c.handshakes_refused,
            handshakes_failed: c.handshakes_failed,
            impersonations: c.impersonations,
            rate_limited: c.rate_limited,
            disconnects: c.disconnects,
        }))
    }

    fn send_command(
        &mut self,
        client: &[u8],
        request_id: u64,
        device: String,
        command: fleetmq_protocol::Command,
        timeout_ms: u32,
        now: u64,
    ) -> Result<(), OperatorError> {
        validate_device_id(&device).map_err(|e| OperatorError::BadRequest(e.to_string()))?;
        if !self.presence.is_online(&device) {
            // Online means heard from; only an offline device needs the store
            // to tell "never seen" from "gone".
            let known = self
                .store
                .device_known(&device)
                .map_err(|e| OperatorError::Storage(e.to_string()))?;
            return Err(if known {
                OperatorError::DeviceOffline(device)
            } else {
                OperatorError::UnknownDevice(device)
            });
        }
        let timeout_ms = if timeout_ms == 0 {
            self.config.commands.timeout_ms
        } else {
            timeout_ms
        };
        let mut command = command;
        if let fleetmq_protocol::Command::Exec {
            timeout_ms: limit, ..
        } = &mut command
        {
            // The program must end, and its answer arrive, before the operator
            // stops waiting.
            let most = timeout_ms.saturating_sub(500).max(timeout_ms / 2);
            *limit = if *limit == 0 {
                most
            } else {
                (*limit).min(most)
            };
        }
        let corr = self.pending.next_corr();
        let frame = CommandFrame::from(CommandRequest {
            corr,
            command: command.clone(),
        })
        .encode()
        .map_err(|e| OperatorError::BadRequest(e.to_string()))?;
        match send_frames(&self.commands, &[device.as_bytes(), b"", &frame]) {
            Ok(true) => {}
            // EHOSTUNREACH: the device's REP socket is not connected.
            Ok(false) | Err(zmq::Error::EHOSTUNREACH) => {
                return Err(OperatorError::DeviceOffline(device));
            }
            Err(e) => return Err(OperatorError::BadRequest(format!("could not send: {e}"))),
        }
        self.counters.commands_sent += 1;
        let log_id = self.store.log_command(&device, &command, now);
        self.pending.insert(
            corr,
            PendingCommand {
                client: client.to_vec(),
                request_id,
                device,
                deadline_ms: now + u64::from(timeout_ms),
                timeout_ms,
                log_id,
            },
        );
        Ok(())
    }

    fn tick(&mut self) -> anyhow::Result<()> {
        let now = now_ms();
        self.ticks = self.ticks.wrapping_add(1);
        // A stat() a tick: enrolment and revocation apply within 100 ms.
        self.reload_allow_list()?;
        if self.ticks % FORGET_TICKS == 0 {
            self.rate.forget_idle(now);
        }
        for (device, last) in self.presence.sweep(now) {
            info!(device, "device offline (silent)");
            if let Err(e) = self.store.presence(&device, now, last) {
                warn!(device, error = %e, "could not record presence");
            }
        }
        for p in self.pending.expired(now) {
            self.counters.commands_timed_out += 1;
            self.store.log_command_result(p.log_id, "timed out", now);
            self.answer(
                &p.client,
                p.request_id,
                Response::Error(OperatorError::TimedOut {
                    after_ms: p.timeout_ms,
                }),
            );
        }
        self.send_queued(now);
        self.dispatch_jobs(now);
        if let Err(e) = self.store.flush_log() {
            warn!(error = %e, "could not write the command log; will retry");
        }
        Ok(())
    }

    /// Sends queued commands whose device is back; fails those that waited
    /// too long.
    fn send_queued(&mut self, now: u64) {
        for q in std::mem::take(&mut self.queued) {
            if now >= q.expires_ms {
                self.answer(
                    &q.client,
                    q.request_id,
                    Response::Error(OperatorError::StayedOffline {
                        device: q.device,
                        waited_ms: q.queue_ms,
                    }),
                );
                continue;
            }
            if !self.presence.is_online(&q.device) {
                self.queued.push(q);
                continue;
            }
            let (client, id) = (q.client.clone(), q.request_id);
            match self.send_command(
                &client,
                id,
                q.device.clone(),
                q.command.clone(),
                q.timeout_ms,
                now,
            ) {
                Ok(()) => info!(device = q.device, "queued command sent"),
                // Online, but its command socket is not connected yet.
                Err(OperatorError::DeviceOffline(_)) => self.queued.push(q),
                Err(e) => self.answer(&client, id, Response::Error(e)),
            }
        }
    }

    /// Hands out queued jobs and jobs whose lease ran out, and fails jobs out
    /// of attempts.
    fn dispatch_jobs(&mut self, now: u64) {
        let due = match self.store.due_jobs(now, 64) {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "could not read due jobs");
                return;
            }
        };
        for job in due {
            if job.attempts >= job.max_attempts {
                let why = format!(
                    "no result after {} attempt(s) of {} ms each",
                    job.attempts, job.lease_ms
                );
                warn!(job = job.id, %why, "job failed");
                if let Err(e) = self.store.fail_job(job.id, &why, now) {
                    warn!(job = job.id, error = %e, "could not fail a job");
                }
                continue;
            }
            let attempt = job.attempts + 1;
            let frame = match JobFrame::from(Job {
                id: job.id,
                attempt,
                spec: job.spec,
                timeout_ms: job.timeout_ms,
            })
            .encode()
            {
                Ok(f) => f,
                Err(e) => {
                    warn!(job = job.id, error = %e, "could not encode a job");
                    continue;
                }
            };
            match send_frames(&self.jobs, &[&frame]) {
                Ok(true) => {}
                // No agent is connected, or every pipe is full: try next tick.
                Ok(false) => return,
                Err(e) => {
                    warn!(error = %e, "could not hand out a job");
                    return;
                }
            }
            self.counters.jobs_dispatched += 1;
            if attempt > 1 {
                info!(job = job.id, attempt, "job lease ran out; handed out again");
            }
            let until = now + u64::from(job.lease_ms);
            if let Err(e) = self.store.lease_job(job.id, attempt, until, now) {
                warn!(job = job.id, error = %e, "could not record a job lease");
            }
        }
    }
}

/// A message's frames and its sender's ZAP user id.
type Message = (Vec<Vec<u8>>, Option<String>);

/// The next whole message on `socket`, or `None` when nothing is waiting.
/// A message of more than `max` frames is read to its end, counted in
/// `dropped` and skipped; at most [`DRAIN`] are skipped per call, so a flood
/// of them cannot starve the other sockets.
fn next_message(
    socket: &zmq::Socket,
    max: usize,
    dropped: &mut u64,
    name: &'static str,
) -> anyhow::Result<Option<Message>> {
    for _ in 0..DRAIN {
        let Some(got) =
            recv_message(socket, max).with_context(|| format!("reading the {name} socket"))?
        else {
            return Ok(None);
        };
        match got.frames {
            Ok(frames) => return Ok(Some((frames, got.user_id))),
            Err(n) => {
                *dropped += 1;
                debug!(
                    socket = name,
                    frames = n,
                    "dropped a message with too many frames"
                );
            }
        }
    }
    Ok(None)
}

fn check_spec(spec: &JobSpec) -> Result<(), OperatorError> {
    match spec {
        JobSpec::Exec { program, .. } if program.is_empty() => Err(OperatorError::BadRequest(
            "exec job needs a program name".into(),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmq_net::SocketOptions;

    /// The quiet sockets' small read and write batches still carry
    /// messages many times their size, and many small ones, whole and in
    /// order, both ways.
    #[test]
    fn small_batch_buffers_carry_large_and_small_messages_whole() {
        let sockets = Sockets::new(SocketOptions::default());
        let (router, ep) = sockets
            .build(zmq::ROUTER)
            .batch_sizes(QUIET_BATCH, QUIET_BATCH)
            .bind("tcp://127.0.0.1:*")
            .unwrap();
        let dealer = sockets
            .build(zmq::DEALER)
            .routing_id(b"pi-1")
            .connect(&ep)
            .unwrap();
        router.set_rcvtimeo(10_000).unwrap();
        dealer.set_rcvtimeo(10_000).unwrap();
        let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        dealer.send(&big[..], 0).unwrap();
        for i in 0..300u32 {
            dealer.send(&i.to_le_bytes()[..], 0).unwrap();
        }
        let got = router.recv_multipart(0).unwrap();
        assert_eq!(got[0], b"pi-1");
        assert!(got[1] == big, "the large message arrived changed");
        for i in 0..300u32 {
            assert_eq!(router.recv_multipart(0).unwrap()[1], i.to_le_bytes());
        }
        router.send_multipart([&b"pi-1"[..], &big[..]], 0).unwrap();
        assert!(
            dealer.recv_bytes(0).unwrap() == big,
            "the large reply arrived changed"
        );
    }
}
