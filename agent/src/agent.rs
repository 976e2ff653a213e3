//! The agent's event loop: one thread owns every zmq socket.
//!
//! ```text
//!   DEALER ──► hub ROUTER   hello, heartbeats, batches; acks come back
//!   SUB    ◄── hub PUB      all/, dev/<id>/, group/<g>/ (and chat/ in chat mode)
//!   PULL   ◄── hub PUSH     jobs
//!   PUSH   ──► hub PULL     job results
//!   DEALER ◄─► hub ROUTER   commands (routing id = device id), REP envelope
//! ```
//!
//! Commands use a DEALER that speaks the REP envelope (`[empty][body]`)
//! rather than a REP socket: libzmq sends a socket's routing id in the
//! handshake only for REQ, DEALER and ROUTER, so a hub ROUTER could never
//! address a REP by device id. Every request still gets exactly one reply,
//! and there is no lockstep state to wedge.
//!
//! The agent is given one address, the hub's telemetry ROUTER. A monitor on
//! the DEALER reports each completed handshake; the agent then says Hello,
//! and the hub's Welcome names the ports of its other sockets, which the
//! agent connects (again whenever they change). Programs run on worker
//! threads, which hand results back through a channel and wake the loop
//! through a socketpair, so no thread but this one touches a zmq socket.

use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleetmq_net::poll::event;
use fleetmq_net::{Hangup, Shutdown, Sockets, now_ms, recv_frames, send_frames};
use fleetmq_protocol::{
    AgentStatus, Broadcast, Bye, Command, CommandFrame, CommandReply, Downstream, Heartbeat, Hello,
    HubPorts, JobFrame, JobResult, JobSpec, Outcome, Output, Reply, ReplyFrame, ResultFrame,
    Target, Upstream, Value, names, telemetry::MAX_CHAT_LEN,
};
use tracing::{debug, info, warn};

use crate::config::AgentConfig;
use crate::redial::Redial;
use crate::runner::{self, ExecPolicy};
use crate::sources::control::{self, Control, ReloadStatus, Request};
use crate::sources::host::Host;
use crate::sources::ingest::Ingest;
use crate::state::{JobMemory, SeqFile};
use crate::telemetry::spool::{AppendError, Spool};
use crate::telemetry::uplink::{Record, Uplink, encode_batch};

const MONITOR: &str = "inproc://fleetmq-agent-monitor";
/// How long a stopping agent waits for the hub to ack what it just sent.
const FINAL_ACK_WAIT: Duration = Duration::from_millis(500);
/// How often to retry a Hello that could not be queued yet.
const HELLO_RETRY: Duration = Duration::from_millis(50);
/// Events from worker and stdin threads waiting for the loop.
const EVENTS_QUEUED: usize = 256;
/// Exec commands running at once; more are answered "busy" at once.
const MAX_COMMANDS_RUNNING: usize = 4;
/// Job ids remembered (and persisted) so none runs twice.
const JOBS_REMEMBERED: usize = 10_000;

/// How the agent was started.
pub struct Options {
    /// `fleetmq-agent chat`: stdin lines are chat, the room goes to stdout,
    /// and the agent exits once stdin closes and everything is acked.
    pub chat: bool,
    /// CURVE (with the hub's public key and ours) or plaintext.
    pub security: fleetmq_net::Security,
    /// Reads the configuration again, as at start, for SIGHUP.
    pub reload: Box<dyn Fn() -> anyhow::Result<AgentConfig>>,
}

enum Event {
    JobDone {
        id: u64,
        attempt: u32,
        outcome: Outcome,
    },
    CommandDone {
        corr: u64,
        reply: Reply,
    },
    ChatLine(String),
    StdinClosed,
}

/// Hands events to the loop from other threads.
#[derive(Clone)]
struct Notifier {
    tx: mpsc::SyncSender<Event>,
    wake: Arc<UnixStream>,
}

impl Notifier {
    fn send(&self, event: Event) {
        if self.tx.send(event).is_ok() {
            // A full socketpair already means the loop will wake.
            let _ = (&*self.wake).write(&[1]);
        }
    }
}

/// The sockets that follow the hub's Welcome.
struct Links {
    ports: HubPorts,
    sub: zmq::Socket,
    jobs: zmq::Socket,
    results: zmq::Socket,
    commands: zmq::Socket,
}

struct Agent {
    cfg: AgentConfig,
    chat_mode: bool,
    started: Instant,
    sockets: Sockets,
    dealer: zmq::Socket,
    monitor: zmq::Socket,
    /// A failed handshake was logged; quiet until one succeeds.
    refused: bool,
    /// When to dial the hub again after it refused a handshake.
    redial: Redial,
    /// Our public key, for the enrolment hint ("" when plaintext).
    public_key: String,
    links: Option<Links>,
    connected: bool,
    need_hello: Option<Instant>,
    uplink: Uplink,
    seq: SeqFile,
    jobs_run: JobMemory,
    running_jobs: usize,
    running_commands: usize,
    exec: ExecPolicy,
    stop_children: Arc<AtomicBool>,
    notifier: Notifier,
    events: mpsc::Receiver<Event>,
    wake: UnixStream,
    next_sample: Instant,
    next_heartbeat: Instant,
    heartbeats: u64,
    jobs_done: u64,
    commands_answered: u64,
    stdin_closed: bool,
    spool: Spool,
    control: Control,
    host: Host,
    next_host: Instant,
    ingest: Ingest,
    hangup: Hangup,
    reload: Box<dyn Fn() -> anyhow::Result<AgentConfig>>,
    last_reload: ReloadStatus,
}

/// Runs the agent until shutdown (or, in chat mode, until stdin closes and
/// everything is acked).
pub fn run(cfg: AgentConfig, opts: Options, shutdown: Shutdown) -> anyhow::Result<()> {
    let dir = cfg.data_dir.clone();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating data directory {}", dir.display()))?;
    let (seq, note) = SeqFile::open(dir.join("seq"), now_ms())?;
    if let Some(note) = note {
        warn!("{note}");
    }
    let jobs_run = JobMemory::open(dir.join("jobs-run"), JOBS_REMEMBERED)?;
    let now = Instant::now();
    let mut uplink = Uplink::new(cfg.uplink_limits(), now, fastrand::u64(..));
    let (spool, recovery) = Spool::open(cfg.spool_config(), now)
        .context("opening the spool (is the data directory writable?)")?;
    for note in &recovery.notes {
        warn!("spool: {note}");
    }
    if !recovery.unacked.is_empty() || recovery.unpacked > 0 {
        info!(
            batches = recovery.unacked.len(),
            records = recovery.unpacked,
            bytes = spool.bytes(),
            "spool holds telemetry not yet acked; sending it"
        );
    }
    for batch in recovery.unacked {
        // The same records under the same sequence number: if the hub
        // stored the batch before, it recognises it.
        let records: Vec<&Record> = batch.records.iter().collect();
        let mut refused = 0;
        if let (_, Some(frame)) = encode_batch(batch.seq, &records, &mut refused)? {
            uplink.restore(
                batch.seq,
                batch.first,
                frame,
                records.len() - refused as usize,
                now,
            );
        }
    }
    uplink.set_pending(recovery.unpacked);
    uplink.accepted(0, recovery.unpacked > 0);
    if let Ok(old) = std::fs::metadata(dir.join("unacked")) {
        warn!(
            bytes = old.len(),
            "ignoring DATA_DIR/unacked from an older agent version (the spool replaces it)"
        );
    }

    let control = Control::bind(control::socket_path(&dir))
        .context("opening the control socket (used by `fleetmq-agent send` and `status`)")?;

    let (ingest, problems) = Ingest::open(&cfg.ingest, &dir);
    for p in problems {
        warn!("{p}; the agent runs on without it (see status)");
    }
    let hangup = Hangup::install().context("installing the SIGHUP handler")?;

    let sockets = Sockets::new(cfg.net.clone()).with_security(opts.security.clone());
    let events = i32::from(
        event::HANDSHAKE_SUCCEEDED
            | event::DISCONNECTED
            | event::HANDSHAKE_FAILED_NO_DETAIL
            | event::HANDSHAKE_FAILED_PROTOCOL
            | event::HANDSHAKE_FAILED_AUTH,
    );
    let dealer = sockets
        .build(zmq::DEALER)
        .routing_id(cfg.device_id.as_bytes())
        .immediate()
        .secure()
        .monitor(MONITOR, events)
        .connect(&cfg.hub)?;
    let monitor = sockets.build(zmq::PAIR).connect(MONITOR)?;
    let (wake, wake_tx) = UnixStream::pair().context("creating the wake-up socketpair")?;
    wake.set_nonblocking(true)?;
    wake_tx.set_nonblocking(true)?;
    // Bounded: a fast stdin waits for the loop instead of growing a queue.
    let (tx, events_rx) = mpsc::sync_channel(EVENTS_QUEUED);
    let notifier = Notifier {
        tx,
        wake: Arc::new(wake_tx),
    };
    if opts.chat {
        spawn_stdin_reader(notifier.clone());
    }
    info!(device = %cfg.device_id, hub = %cfg.hub, security = sockets.security().name(), "agent starting");
    let exec = ExecPolicy {
        programs: cfg.exec.programs.clone(),
        max_timeout: Duration::from_millis(u64::from(cfg.exec.timeout_ms)),
        max_output: cfg.exec.max_output_bytes,
    };
    let mut agent = Agent {
        chat_mode: opts.chat,
        started: now,
        sockets,
        dealer,
        monitor,
        refused: false,
        redial: Redial::new(
            u64::try_from(cfg.net.reconnect_ms).unwrap_or(0),
            u64::try_from(cfg.net.reconnect_max_ms).unwrap_or(0),
        ),
        public_key: match &opts.security {
            fleetmq_net::Security::CurveClient { ours, .. } => ours.public.clone(),
            _ => String::new(),
        },
        links: None,
        connected: false,
        need_hello: None,
        uplink,
        seq,
        jobs_run,
        running_jobs: 0,
        running_commands: 0,
        exec,
        stop_children: Arc::new(AtomicBool::new(false)),
        notifier,
        events: events_rx,
        wake,
        next_sample: now,
        next_heartbeat: now,
        heartbeats: 0,
        jobs_done: 0,
        commands_answered: 0,
        stdin_closed: false,
        spool,
        control,
        host: Host::new("/", cfg.host.clone()),
        next_host: now,
        ingest,
        hangup,
        reload: opts.reload,
        last_reload: ReloadStatus::default(),
        cfg,
    };
    let result = agent.serve(&shutdown);
    agent.stop();
    result
}

fn spawn_stdin_reader(notifier: Notifier) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(mut line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            if line.len() > MAX_CHAT_LEN {
                let mut cut = MAX_CHAT_LEN;
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                line.truncate(cut);
                warn!("chat line cut to {MAX_CHAT_LEN} bytes");
            }
            notifier.send(Event::ChatLine(line));
        }
        notifier.send(Event::StdinClosed);
    });
}

impl Agent {
    fn serve(&mut self, shutdown: &Shutdown) -> anyhow::Result<()> {
        loop {
            let now = Instant::now();
            let next = [
                Some(self.next_sample),
                (self.cfg.host.interval_ms > 0).then_some(self.next_host),
                self.connected.then_some(self.next_heartbeat),
                self.connected
                    .then(|| self.uplink.next_deadline())
                    .flatten(),
                self.need_hello.filter(|_| self.connected),
                self.spool.next_sync(),
                self.redial.due_at(),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = next.map_or(60_000, |t| {
                t.saturating_duration_since(now).as_millis().min(60_000) as i64
            });
            let take_jobs = self.running_jobs < self.cfg.jobs.max_concurrent;
            let ingest_fds = self.ingest.fds();
            let ready = {
                let mut items = vec![
                    zmq::PollItem::from_fd(shutdown.fd(), zmq::POLLIN),
                    zmq::PollItem::from_fd(self.wake.as_raw_fd(), zmq::POLLIN),
                    self.monitor.as_poll_item(zmq::POLLIN),
                    self.dealer.as_poll_item(zmq::POLLIN),
                    zmq::PollItem::from_fd(self.control.fd(), zmq::POLLIN),
                    zmq::PollItem::from_fd(self.hangup.fd(), zmq::POLLIN),
                ];
                items.extend(
                    ingest_fds
                        .iter()
                        .map(|fd| zmq::PollItem::from_fd(*fd, zmq::POLLIN)),
                );
                if let Some(l) = &self.links {
                    items.push(l.sub.as_poll_item(zmq::POLLIN));
                    items.push(l.jobs.as_poll_item(if take_jobs {
                        zmq::POLLIN
                    } else {
                        zmq::PollEvents::empty()
                    }));
                    items.push(l.commands.as_poll_item(zmq::POLLIN));
                }
                match zmq::poll(&mut items, timeout) {
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(e).context("polling sockets"),
                }
                items.iter().map(|i| i.is_readable()).collect::<Vec<_>>()
            };
            if ready[0] && shutdown.requested() {
                info!("shutting down");
                return Ok(());
            }
            if ready[1] {
                self.drain_events()?;
            }
            if ready[2] {
                self.drain_monitor()?;
            }
            if ready[3] {
                self.drain_dealer()?;
            }
            if ready[4] {
                self.serve_control();
            }
            if ready[5] && self.hangup.take() {
                self.reload();
            }
            let (ingest, links) = ready[6..].split_at(ingest_fds.len());
            if ingest.contains(&true) {
                self.drain_ingest();
            }
            if links.first() == Some(&true) {
                self.drain_broadcasts()?;
            }
            if links.get(1) == Some(&true) {
                self.drain_jobs()?;
            }
            if links.get(2) == Some(&true) {
                self.drain_commands()?;
            }
            self.timers()?;
            if self.chat_mode
                && self.stdin_closed
                && self.uplink.pending_len() == 0
                && self.uplink.in_flight_len() == 0
            {
                info!("stdin closed and every chat line is acked");
                return Ok(());
            }
        }
    }

    fn timers(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        if now >= self.next_sample {
            self.sample();
            self.next_sample = now + Duration::from_millis(self.cfg.telemetry.sample_interval_ms);
        }
        if self.cfg.host.interval_ms > 0 && now >= self.next_host {
            self.sample_host();
            self.next_host = now + Duration::from_millis(self.cfg.host.interval_ms);
        }
        if let Err(e) = self.spool.sync_if_due(now) {
            warn!(error = %e, "syncing the spool to disk");
        }
        if self.redial.take_due(now) {
            // libzmq gives up on an endpoint whose handshake was refused;
            // knock again, as a new connection.
            let _ = self.dealer.disconnect(&self.cfg.hub);
            self.dealer
                .connect(&self.cfg.hub)
                .with_context(|| format!("connecting to {}", self.cfg.hub))?;
        }
        if !self.connected {
            return Ok(());
        }
        if self.need_hello.is_some_and(|t| now >= t) {
            self.send_hello();
        }
        if now >= self.next_heartbeat {
            self.heartbeats += 1;
            let hb = Heartbeat {
                uptime_ms: self.started.elapsed().as_millis() as u64,
            };
            self.send_up(Upstream::Heartbeat(hb));
            self.next_heartbeat =
                now + Duration::from_millis(u64::from(self.cfg.presence.heartbeat_ms));
        }
        if self.uplink.flush_due(now) {
            self.pack_and_send(now)?;
        }
        for (seq, frame) in self.uplink.resends(now) {
            debug!(seq, "resending unacked batch");
            self.send_frame(seq, &frame);
        }
        Ok(())
    }

    fn sample(&mut self) {
        let ts_ms = now_ms();
        let records = vec![
            Record::Sample {
                name: "agent.uptime_s".into(),
                ts_ms,
                value: Value::Float(self.started.elapsed().as_secs_f64()),
            },
            Record::Sample {
                name: "agent.heartbeats".into(),
                ts_ms,
                value: Value::Int(self.heartbeats as i64),
            },
        ];
        self.accept(&records);
        debug!(pending = self.uplink.pending_len(), "sampled");
    }

    fn sample_host(&mut self) {
        let (samples, skipped) = self.host.collect();
        for why in skipped {
            info!("host metric group skipped: {why}");
        }
        let ts_ms = now_ms();
        let records: Vec<Record> = samples
            .into_iter()
            .map(|(name, value)| Record::Sample { name, ts_ms, value })
            .collect();
        if !records.is_empty() {
            self.accept(&records);
        }
    }

    /// Takes what local programs sent over StatsD or Influx.
    fn drain_ingest(&mut self) {
        let now = now_ms();
        let (samples, complaint) = self.ingest.drain(now);
        if let Some(line) = complaint {
            warn!(
                "ingest: malformed line {line}; counted in status, quiet until a datagram parses cleanly"
            );
        }
        let records: Vec<Record> = samples
            .into_iter()
            .map(|s| Record::Sample {
                name: s.name,
                ts_ms: s.ts_ms.unwrap_or(now),
                value: s.value,
            })
            .collect();
        if !records.is_empty() && !self.accept(&records) {
            debug!(
                records = records.len(),
                "ingested samples refused by the spool"
            );
        }
    }

    /// SIGHUP: reads the configuration again and applies what can change
    /// while running. What cannot is named, and keeps its running value.
    fn reload(&mut self) {
        let new = match (self.reload)() {
            Ok(cfg) => cfg,
            Err(e) => {
                warn!("SIGHUP: the configuration has an error; the running one stays: {e:#}");
                self.last_reload = ReloadStatus {
                    at_ms: now_ms(),
                    error: format!("{e:#}"),
                    ..ReloadStatus::default()
                };
                return;
            }
        };
        let crate::reload::Diff {
            applied,
            needs_restart: restart,
        } = crate::reload::diff(&self.cfg, &new);

        let now = Instant::now();
        if new.telemetry.sample_interval_ms != self.cfg.telemetry.sample_interval_ms {
            self.cfg.telemetry.sample_interval_ms = new.telemetry.sample_interval_ms;
            self.next_sample = now;
        }
        if new.host != self.cfg.host {
            self.host.reconfigure(new.host.clone());
            self.cfg.host = new.host;
            self.next_host = now;
        }
        self.exec = ExecPolicy {
            programs: new.exec.programs.clone(),
            max_timeout: Duration::from_millis(u64::from(new.exec.timeout_ms)),
            max_output: new.exec.max_output_bytes,
        };
        self.cfg.exec = new.exec;
        self.cfg.jobs = new.jobs;
        self.cfg.commands = new.commands;
        info!(applied = ?applied, "SIGHUP: configuration reloaded");
        if !restart.is_empty() {
            warn!(
                keys = ?restart,
                "SIGHUP: these changed but take effect only after a restart; their running values stay"
            );
        }
        self.last_reload = ReloadStatus {
            at_ms: now_ms(),
            applied,
            needs_restart: restart,
            error: String::new(),
        };
    }

    /// Answers local clients of the control socket.
    fn serve_control(&mut self) {
        for (stream, line) in self.control.requests() {
            let answer = match control::parse(&line) {
                Ok(Request::Status) => self.status_json(),
                Ok(Request::Send(samples)) => {
                    let ts_ms = now_ms();
                    let records: Vec<Record> = samples
                        .into_iter()
                        .map(|(name, value)| Record::Sample { name, ts_ms, value })
                        .collect();
                    if self.accept(&records) {
                        format!("ok {}", records.len())
                    } else {
                        "error: the spool refused them (it is full, or the disk failed); see the agent's log".into()
                    }
                }
                Err(e) => format!("error: {e}"),
            };
            control::reply(stream, &answer);
        }
    }

    /// Everything `fleetmq-agent status` shows, as one JSON line.
    fn status_json(&self) -> String {
        let s = self.status();
        let c = &self.spool.counters;
        let u = &self.uplink.counters;
        let doc = control::Status {
            device: s.device,
            agent_version: s.agent_version,
            arch: s.arch,
            groups: s.groups,
            uptime_ms: s.uptime_ms,
            hub: self.cfg.hub.clone(),
            security: self.sockets.security().name(),
            connected: self.connected,
            linked: self.links.is_some(),
            batches: control::BatchCounts {
                sent: s.batches_sent,
                acked: s.batches_acked,
                resent: s.batches_resent,
                in_flight: s.in_flight,
            },
            records: control::RecordCounts {
                acked: u.records_acked,
                waiting: s.records_pending,
                dropped: control::Dropped {
                    spool_full_oldest: c.dropped + u.records_abandoned,
                    spool_full_refused: c.refused,
                    lost_to_corruption: c.lost_records,
                    refused_by_protocol: u.records_dropped,
                },
            },
            spool: control::SpoolStatus {
                bytes: self.spool.bytes(),
                max_bytes: self.cfg.spool.max_bytes,
                when_full: self.cfg.spool.when_full,
                torn_tails_cut: c.torn_tails,
                corrupt_entries_skipped: c.corrupt_entries,
            },
            jobs_run: s.jobs_run,
            commands_answered: s.commands_answered,
            host_skipped: self.host.skipped().collect(),
            ingest: self.ingest.status.clone(),
            reload: self.last_reload.clone(),
        };
        serde_json::to_string(&doc).unwrap_or_else(|e| format!("error: encoding the status: {e}"))
    }

    /// Puts records in the spool; they count as accepted only if this
    /// returns true. A full spool applies its policy (counted, and logged
    /// once per episode).
    fn accept(&mut self, records: &[Record]) -> bool {
        let now = Instant::now();
        let chat = records.iter().any(|r| matches!(r, Record::Chat { .. }));
        match self.spool.append(records, now) {
            Ok(appended) => {
                if let Some(below) = appended.dropped_below {
                    let abandoned = self.uplink.drop_below(below);
                    for seq in &abandoned {
                        if let Err(e) = self.spool.abandoned(*seq) {
                            warn!(error = %e, seq, "recording an abandoned batch in the spool");
                        }
                    }
                    if self.spool.full_episode_started() {
                        warn!(
                            max_bytes = self.cfg.spool.max_bytes,
                            "spool full: dropping the oldest telemetry to make room (policy drop_oldest); counted in status"
                        );
                    }
                    self.uplink
                        .set_pending(self.spool.unpacked() - records.len() as u64);
                }
                self.uplink.accepted(records.len() as u64, chat);
                true
            }
            Err(AppendError::Full { bytes, max }) => {
                if self.spool.full_episode_started() {
                    warn!(
                        bytes,
                        max,
                        "spool full: refusing new telemetry until the hub acks (policy refuse_new); counted in status"
                    );
                }
                false
            }
            Err(AppendError::Io(e)) => {
                self.spool.counters.refused += records.len() as u64;
                warn!(error = %e, records = records.len(), "could not write the spool; records refused");
                false
            }
        }
    }

    /// Packs the oldest spooled records into a batch, records the batch in
    /// the spool, and sends it if connected.
    fn pack_and_send(&mut self, now: Instant) -> anyhow::Result<()> {
        let peeked = self
            .spool
            .peek(self.uplink.batch_max_records())
            .context("reading the spool")?;
        if peeked.is_empty() {
            // The spool has nothing after all (its count was stale).
            self.uplink.set_pending(0);
            return Ok(());
        }
        let seq = self.next_seq()?;
        let offered: Vec<(u64, &Record)> = peeked.iter().map(|(id, r, _)| (*id, r)).collect();
        let packed = self.uplink.pack(now, seq, &offered)?;
        let used = packed.used.max(1).min(peeked.len());
        let (first, last, after) = (peeked[0].0, peeked[used - 1].0, peeked[used - 1].2);
        let batch_seq = packed.batch.as_ref().map(|(s, _)| *s);
        self.spool
            .packed(batch_seq, first, last, used as u64, after, now)
            .context("recording a batch in the spool")?;
        if let Some((seq, frame)) = packed.batch
            && self.connected
        {
            self.send_frame(seq, &frame);
        }
        Ok(())
    }

    fn send_up(&self, msg: Upstream) -> bool {
        let frame = match msg.encode() {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "could not encode");
                return false;
            }
        };
        match send_frames(&self.dealer, &[&frame]) {
            Ok(sent) => sent,
            Err(e) => {
                debug!(error = %e, "send to hub failed");
                false
            }
        }
    }

    fn send_frame(&self, seq: u64, frame: &[u8]) {
        // Not queued now (disconnected, or the pipe is full): the batch stays
        // in flight and is resent on reconnect or after its ack timeout.
        if !matches!(send_frames(&self.dealer, &[frame]), Ok(true)) {
            debug!(seq, "batch not queued; it stays in flight");
        }
    }

    fn send_hello(&mut self) {
        let hello = Hello {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            arch: crate::info::arch().into(),
            os: std::env::consts::OS.into(),
            hostname: crate::config::hostname(),
            groups: self.cfg.groups.clone(),
            heartbeat_ms: self.cfg.presence.heartbeat_ms,
            started_ms: now_ms().saturating_sub(self.started.elapsed().as_millis() as u64),
        };
        self.need_hello = if self.send_up(Upstream::Hello(hello)) {
            None
        } else {
            Some(Instant::now() + HELLO_RETRY)
        };
    }

    fn drain_monitor(&mut self) -> anyhow::Result<()> {
        while let Some(frames) = recv_frames(&self.monitor, 2).context("reading socket monitor")? {
            let Ok(frames) = frames else { continue };
            let Some(event) = frames
                .first()
                .and_then(|f| f.first_chunk::<2>())
                .map(|b| u16::from_le_bytes(*b))
            else {
                continue;
            };
            let value = frames
                .first()
                .and_then(|f| f.get(2..6))
                .and_then(|v| <[u8; 4]>::try_from(v).ok())
                .map_or(0, u32::from_le_bytes);
            if matches!(
                event,
                event::HANDSHAKE_FAILED_AUTH | event::HANDSHAKE_FAILED_PROTOCOL
            ) {
                self.refused_by_hub();
            }
            match event {
                event::HANDSHAKE_FAILED_AUTH if !self.refused => {
                    self.refused = true;
                    warn!(
                        hub = %self.cfg.hub,
                        status = value,
                        "the hub refused this device's key: enrol it on the hub with `fleetmq-hub allow {} {}`; retrying",
                        self.cfg.device_id,
                        self.public_key
                    );
                }
                event::HANDSHAKE_FAILED_NO_DETAIL | event::HANDSHAKE_FAILED_PROTOCOL
                    if !self.refused =>
                {
                    self.refused = true;
                    warn!(
                        hub = %self.cfg.hub,
                        "handshake with the hub failed: is hub_public_key the hub's, and do both sides agree on --insecure? retrying"
                    );
                }
                event::HANDSHAKE_SUCCEEDED => {
                    self.refused = false;
                    self.redial.connected();
                    info!(hub = %self.cfg.hub, "connected to hub");
                    self.connected = true;
                    self.send_hello();
                    self.uplink.reconnected(Instant::now());
                }
                event::DISCONNECTED => {
                    if self.connected {
                        warn!(hub = %self.cfg.hub, "lost the hub; reconnecting");
                    }
                    self.connected = false;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The hub refused a handshake, which libzmq takes as final for that
    /// connection: drop the links (they are remade after the next Welcome)
    /// and dial again later, backing off like libzmq's reconnects.
    fn refused_by_hub(&mut self) {
        self.connected = false;
        self.links = None;
        self.redial
            .refused(Instant::now(), |max| fastrand::u64(0..=max));
    }

    fn drain_dealer(&mut self) -> anyhow::Result<()> {
        while let Some(frames) = recv_frames(&self.dealer, 1).context("reading from hub")? {
            let Ok(frames) = frames else { continue };
            match Downstream::decode(&frames[0]) {
                Ok(Downstream::Ack(ack)) => {
                    if !self.uplink.ack(ack.seq) {
                        debug!(seq = ack.seq, "ack for a batch not in flight");
                    } else if let Err(e) = self
                        .spool
                        .acked(ack.seq)
                        .and_then(|()| self.spool.release(self.uplink.low_water()))
                    {
                        // Not fatal: the batch is resent after a restart
                        // and the hub recognises it.
                        warn!(error = %e, "recording an ack in the spool");
                    }
                }
                Ok(Downstream::Welcome(w)) => self.welcome(w.hub_version, w.ports)?,
                Ok(Downstream::HelloRequest(_)) => {
                    info!("hub asked for a hello (it restarted)");
                    self.send_hello();
                    self.uplink.reconnected(Instant::now());
                }
                Ok(Downstream::Refusal(r)) => warn!(reason = %r.reason, "hub refused a message"),
                Err(e) => warn!(error = %e, "undecodable message from hub dropped"),
            }
        }
        Ok(())
    }

    fn welcome(&mut self, hub_version: String, ports: HubPorts) -> anyhow::Result<()> {
        if self.links.as_ref().is_some_and(|l| l.ports == ports) {
            return Ok(());
        }
        info!(%hub_version, ?ports, "hub welcomed us; connecting broadcast, jobs, results and commands");
        // Dropping old links closes them.
        self.links = None;
        let ep = |port: u16| {
            fleetmq_net::endpoint::with_port(&self.cfg.hub, port)
                .with_context(|| format!("hub address {:?} has no port", self.cfg.hub))
        };
        let mut sub = self
            .sockets
            .build(zmq::SUB)
            .subscribe(names::ALL_TOPIC.as_bytes())
            .subscribe(names::device_topic(&self.cfg.device_id).as_bytes());
        for g in &self.cfg.groups {
            sub = sub.subscribe(names::group_topic(g).as_bytes());
        }
        if self.chat_mode {
            sub = sub.subscribe(names::CHAT_TOPIC.as_bytes());
        }
        let opts = self.sockets.options().clone();
        self.links = Some(Links {
            sub: sub.secure().connect(&ep(ports.broadcast)?)?,
            // Take few jobs ahead: the hub's round robin skips full pipes.
            jobs: self
                .sockets
                .build(zmq::PULL)
                .hwm(opts.send_hwm, 2)
                .secure()
                .connect(&ep(ports.jobs)?)?,
            results: self
                .sockets
                .build(zmq::PUSH)
                .secure()
                .connect(&ep(ports.results)?)?,
            commands: self
                .sockets
                .build(zmq::DEALER)
                .routing_id(self.cfg.device_id.as_bytes())
                .secure()
                .connect(&ep(ports.commands)?)?,
            ports,
        });
        Ok(())
    }

    fn drain_broadcasts(&mut self) -> anyhow::Result<()> {
        let Some(links) = &self.links else {
            return Ok(());
        };
        while let Some(frames) = recv_frames(&links.sub, 2).context("reading broadcasts")? {
            let Ok(frames) = frames else { continue };
            let [topic, frame] = frames.as_slice() else {
                continue;
            };
            let topic = String::from_utf8_lossy(topic);
            match Broadcast::decode(frame) {
                Ok(Broadcast::Chat(c)) => {
                    if self.chat_mode {
                        println!("<{}> {}", c.from, c.text);
                    }
                }
                Ok(Broadcast::Announcement(a)) => {
                    let to = match &a.target {
                        Target::All => "all".to_string(),
                        Target::Group(g) => format!("group {g}"),
                        Target::Device(d) => format!("to {d}"),
                    };
                    if self.chat_mode {
                        println!("[{to}] {}", a.text);
                    }
                    info!(%topic, text = %a.text, "announcement");
                }
                Err(e) => warn!(%topic, error = %e, "undecodable broadcast dropped"),
            }
            let _ = std::io::stdout().flush();
        }
        Ok(())
    }

    fn send_result(&self, id: u64, attempt: u32, outcome: Outcome) {
        let Some(links) = &self.links else {
            warn!(
                job = id,
                "no results socket yet; the hub will hand the job out again"
            );
            return;
        };
        let result = JobResult {
            id,
            attempt,
            device: self.cfg.device_id.clone(),
            outcome,
        };
        match ResultFrame::from(result).encode() {
            Ok(frame) => {
                if !matches!(send_frames(&links.results, &[&frame]), Ok(true)) {
                    warn!(
                        job = id,
                        "could not queue a job result; the hub will hand the job out again"
                    );
                }
            }
            Err(e) => warn!(job = id, error = %e, "could not encode a job result"),
        }
    }

    fn drain_jobs(&mut self) -> anyhow::Result<()> {
        while self.running_jobs < self.cfg.jobs.max_concurrent {
            let Some(links) = &self.links else {
                return Ok(());
            };
            let Some(frames) = recv_frames(&links.jobs, 1).context("reading jobs")? else {
                return Ok(());
            };
            let Ok(frames) = frames else { continue };
            let JobFrame::Job(job) = match JobFrame::decode(&frames[0]) {
                Ok(j) => j,
                Err(e) => {
                    warn!(error = %e, "undecodable job dropped");
                    continue;
                }
            };
            if self.jobs_run.has_run(job.id) {
                let outcome = self
                    .jobs_run
                    .result(job.id)
                    .cloned()
                    .unwrap_or(Outcome::AlreadyRun);
                info!(
                    job = job.id,
                    attempt = job.attempt,
                    "job already ran here; not running it again"
                );
                self.send_result(job.id, job.attempt, outcome);
                continue;
            }
            let kind = match &job.spec {
                JobSpec::Echo { .. } => "echo",
                JobSpec::Exec { .. } => "exec",
            };
            if !self.cfg.jobs.allow.iter().any(|k| k == kind) {
                info!(job = job.id, kind, "job kind not allowed here");
                self.send_result(
                    job.id,
                    job.attempt,
                    Outcome::NotAllowed(format!("job kind {kind:?}")),
                );
                continue;
            }
            if let Err(e) = self.jobs_run.starting(job.id) {
                warn!(job = job.id, error = %e, "cannot record the job id; not running it");
                self.send_result(
                    job.id,
                    job.attempt,
                    Outcome::Failed(format!("agent cannot record job ids: {e}")),
                );
                continue;
            }
            info!(job = job.id, attempt = job.attempt, kind, "running job");
            match job.spec {
                JobSpec::Echo { text } => {
                    let outcome = Outcome::Completed(Output {
                        exit_code: Some(0),
                        stdout: text,
                        stderr: String::new(),
                        truncated: false,
                        duration_ms: 0,
                    });
                    self.jobs_done += 1;
                    self.jobs_run.finished(job.id, outcome.clone());
                    self.send_result(job.id, job.attempt, outcome);
                }
                JobSpec::Exec { program, args } => {
                    self.running_jobs += 1;
                    let (policy, stop, notifier) = (
                        self.exec.clone(),
                        self.stop_children.clone(),
                        self.notifier.clone(),
                    );
                    let (id, attempt, timeout) = (
                        job.id,
                        job.attempt,
                        Duration::from_millis(u64::from(job.timeout_ms)),
                    );
                    std::thread::spawn(move || {
                        let outcome = runner::exec(&policy, &program, &args, timeout, &stop);
                        notifier.send(Event::JobDone {
                            id,
                            attempt,
                            outcome,
                        });
                    });
                }
            }
        }
        Ok(())
    }

    fn reply(&mut self, corr: u64, reply: Reply) {
        let Some(links) = &self.links else { return };
        self.commands_answered += 1;
        let frame = match ReplyFrame::from(CommandReply { corr, reply }).encode() {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "could not encode a reply; answering with the error");
                let fallback = CommandReply {
                    corr,
                    reply: Reply::Outcome(Outcome::Failed(e.to_string())),
                };
                match ReplyFrame::from(fallback).encode() {
                    Ok(f) => f,
                    Err(_) => return,
                }
            }
        };
        if !matches!(send_frames(&links.commands, &[b"", &frame]), Ok(true)) {
            warn!(
                corr,
                "could not queue a command reply; the operator will see a timeout"
            );
        }
    }

    fn status(&self) -> AgentStatus {
        let c = &self.uplink.counters;
        AgentStatus {
            device: self.cfg.device_id.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            arch: crate::info::arch().into(),
            groups: self.cfg.groups.clone(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            batches_sent: c.batches_sent,
            batches_acked: c.batches_acked,
            batches_resent: c.batches_resent,
            records_dropped: c.records_dropped
                + c.records_abandoned
                + self.spool.counters.dropped
                + self.spool.counters.refused
                + self.spool.counters.lost_records,
            records_pending: self.uplink.pending_len(),
            in_flight: self.uplink.in_flight_len() as u32,
            jobs_run: self.jobs_done,
            commands_answered: self.commands_answered,
        }
    }

    fn drain_commands(&mut self) -> anyhow::Result<()> {
        loop {
            let Some(links) = &self.links else {
                return Ok(());
            };
            let Some(frames) = recv_frames(&links.commands, 2).context("reading commands")? else {
                return Ok(());
            };
            let request = match frames {
                Ok(f) => match f.as_slice() {
                    [empty, body] if empty.is_empty() => {
                        CommandFrame::decode(body).map_err(|e| e.to_string())
                    }
                    _ => Err("command without the request envelope".to_string()),
                },
                Err(n) => Err(format!("command of {n} frames")),
            };
            match request {
                Ok(CommandFrame::Request(r)) => self.command(r.corr, r.command),
                Err(e) => {
                    // Without a correlation id there is no one to answer.
                    warn!(error = %e, "undecodable command dropped");
                }
            }
        }
    }

    fn command(&mut self, corr: u64, command: Command) {
        let allowed = |name: &str| self.cfg.commands.allow.iter().any(|a| a == name);
        match command {
            Command::Ping if allowed("ping") => {
                let uptime_ms = self.started.elapsed().as_millis() as u64;
                self.reply(corr, Reply::Pong { uptime_ms });
            }
            Command::Status if allowed("status") => {
                let status = self.status();
                self.reply(corr, Reply::Status(status));
            }
            Command::Exec { .. }
                if allowed("exec") && self.running_commands >= MAX_COMMANDS_RUNNING =>
            {
                let busy = format!("busy: {MAX_COMMANDS_RUNNING} commands already running");
                self.reply(corr, Reply::Outcome(Outcome::Failed(busy)));
            }
            Command::Exec {
                program,
                args,
                timeout_ms,
            } if allowed("exec") => {
                info!(%program, "running command");
                self.running_commands += 1;
                let (policy, stop, notifier) = (
                    self.exec.clone(),
                    self.stop_children.clone(),
                    self.notifier.clone(),
                );
                std::thread::spawn(move || {
                    let outcome = runner::exec(
                        &policy,
                        &program,
                        &args,
                        Duration::from_millis(u64::from(timeout_ms)),
                        &stop,
                    );
                    notifier.send(Event::CommandDone {
                        corr,
                        reply: Reply::Outcome(outcome),
                    });
                });
            }
            Command::Other { name, .. } => {
                self.reply(
                    corr,
                    Reply::Outcome(Outcome::Unknown(format!("command {name:?}"))),
                );
            }
            other => {
                let name = match other {
                    Command::Ping => "ping",
                    Command::Status => "status",
                    _ => "exec",
                };
                self.reply(
                    corr,
                    Reply::Outcome(Outcome::NotAllowed(format!("command {name:?}"))),
                );
            }
        }
    }

    fn drain_events(&mut self) -> anyhow::Result<()> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        while let Ok(event) = self.events.try_recv() {
            match event {
                Event::JobDone {
                    id,
                    attempt,
                    outcome,
                } => {
                    self.running_jobs = self.running_jobs.saturating_sub(1);
                    self.jobs_done += 1;
                    self.jobs_run.finished(id, outcome.clone());
                    self.send_result(id, attempt, outcome);
                }
                Event::CommandDone { corr, reply } => {
                    self.running_commands = self.running_commands.saturating_sub(1);
                    self.reply(corr, reply);
                }
                Event::ChatLine(text) => {
                    if !self.accept(&[Record::Chat {
                        ts_ms: now_ms(),
                        text,
                    }]) {
                        eprintln!("fleetmq-agent: chat line not sent: the spool is full");
                    }
                }
                Event::StdinClosed => {
                    // Finish what was said, then exit: stop sampling, send the rest now.
                    self.stdin_closed = true;
                    self.next_sample = Instant::now() + Duration::from_secs(86_400 * 365);
                    self.seal_and_send()?;
                }
            }
        }
        // Jobs may be waiting now that a worker is free.
        self.drain_jobs()
    }

    fn next_seq(&mut self) -> anyhow::Result<u64> {
        self.seq
            .take()
            .context("reserving sequence numbers (is the data directory writable?)")
    }

    /// Packs everything pending into batches now and sends them if connected.
    fn seal_and_send(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        while self.uplink.pending_len() > 0 {
            self.pack_and_send(now)?;
        }
        Ok(())
    }

    /// Clean stop: flush, give the hub a moment to ack, say bye, save what
    /// is still unacked for the next start.
    fn stop(&mut self) {
        self.stop_children.store(true, Ordering::SeqCst);
        if let Err(e) = self.seal_and_send() {
            warn!(error = format!("{e:#}"), "could not pack the last records");
        }
        let deadline = Instant::now() + FINAL_ACK_WAIT;
        while self.connected && self.uplink.in_flight_len() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut items = [self.dealer.as_poll_item(zmq::POLLIN)];
            if zmq::poll(&mut items, left.as_millis() as i64).is_err() || !items[0].is_readable() {
                break;
            }
            if let Err(e) = self.drain_dealer() {
                warn!(error = %e, "reading final acks");
                break;
            }
        }
        if self.connected {
            self.send_up(Upstream::Bye(Bye {
                reason: "agent stopping".into(),
            }));
        }
        match self.spool.sync(Instant::now()) {
            Ok(()) if self.uplink.in_flight_len() == 0 && self.uplink.pending_len() == 0 => {
                info!("stopped; everything was acked")
            }
            Ok(()) => info!(
                batches = self.uplink.in_flight_len(),
                bytes = self.spool.bytes(),
                "stopped; unacked telemetry stays in the spool for the next start"
            ),
            Err(e) => warn!(error = %e, "syncing the spool at stop"),
        }
    }
}
