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

mod hub;
mod local;
mod timers;
mod work;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fleetmq_net::poll::event;
use fleetmq_net::{Hangup, NetError, Poll, Shutdown, Sockets, now_ms};
use fleetmq_protocol::{Bye, HubPorts, Outcome, Reply, Upstream};
use tracing::{info, warn};

use crate::config::AgentConfig;
use crate::link::LinkWatch;
use crate::redial::{Failover, Redial};
use crate::sources::control::{self, Control, ReloadStatus};
use crate::sources::facts::Facts;
use crate::sources::host::Host;
use crate::sources::ingest::Ingest;
use crate::sources::logs::Tailer;
use crate::state::JobMemory;
use crate::telemetry::outbox::{Outbox, OutboxError};
use crate::work::runner::ExecPolicy;

const MONITOR: &str = "inproc://fleetmq-agent-monitor";
/// How long `chat` waits for the hub's acks once stdin closes, unless
/// `--wait` says otherwise.
pub const CHAT_WAIT: Duration = Duration::from_secs(30);
/// How long a stopping agent waits for the hub to ack what it just sent.
const FINAL_ACK_WAIT: Duration = Duration::from_millis(500);
/// How often to retry a Hello that could not be queued yet.
const HELLO_RETRY: Duration = Duration::from_millis(50);
/// How long after a failed attempt (a full disk) packing is tried again.
const PACK_RETRY: Duration = Duration::from_secs(1);
/// Events from worker and stdin threads waiting for the loop.
const EVENTS_QUEUED: usize = 256;
/// Job ids remembered (and persisted) so none runs twice.
const JOBS_REMEMBERED: usize = 10_000;

/// Why the agent could not start, or had to stop. Start-up problems and a
/// spool that cannot be written or read end the agent; what one message
/// or one hub answer causes is logged and the loop goes on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating data directory {}", path.display())]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening DATA_DIR/jobs-run (the ids of jobs already run here)")]
    JobMemory(#[source] std::io::Error),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    #[error("opening the control socket (used by `fleetmq-agent send` and `status`)")]
    Control(#[source] std::io::Error),
    #[error("installing the SIGHUP handler")]
    Hangup(#[source] std::io::Error),
    #[error("creating the wake-up socketpair")]
    Wake(#[source] std::io::Error),
    #[error("reading /dev/urandom for the route nonce")]
    Nonce(#[source] std::io::Error),
    #[error(transparent)]
    Socket(#[from] NetError),
    #[error(
        "the hub has not acked this chat's lines within {wait:?} of stdin closing ({records} records waiting, {batches} batch(es) sent and unacked, the agent's own telemetry among them); they stay in the data directory's spool and go with the next `fleetmq-agent chat` or `run` from it (--wait sets how long chat waits). Why: {why}"
    )]
    ChatUnacked {
        records: u64,
        batches: usize,
        wait: Duration,
        why: String,
    },
    #[error("hub address {0:?} has no port for the sockets the Welcome names")]
    HubPort(String),
    /// A socket failed in a way no retry mends (the context ended).
    #[error("{doing}")]
    Zmq {
        doing: String,
        #[source]
        source: zmq::Error,
    },
}

/// Why reading the configuration again (SIGHUP) failed.
pub type ReloadError = Box<dyn std::error::Error + Send + Sync>;

/// A zmq failure while `doing` something, as an [`Error`].
fn zmq_error(doing: impl Into<String>) -> impl FnOnce(zmq::Error) -> Error {
    let doing = doing.into();
    move |source| Error::Zmq { doing, source }
}

/// What a round of polling found readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    Shutdown,
    /// Worker threads and stdin handed the loop something.
    Events,
    Monitor,
    Hub,
    Control,
    Hangup,
    Ingest,
    Broadcasts,
    Jobs,
    Commands,
}

/// How the agent was started.
pub struct Options {
    /// `fleetmq-agent chat`: stdin lines are chat, the room goes to stdout,
    /// and the agent exits once stdin closes and everything is acked, or
    /// fails when that takes longer than this.
    pub chat: Option<Duration>,
    /// CURVE (with the hub's public key and ours) or plaintext.
    pub security: fleetmq_net::Security,
    /// Reads the configuration again, as at start, for SIGHUP.
    pub reload: Box<dyn Fn() -> Result<AgentConfig, ReloadError>>,
}

enum Event {
    JobDone {
        given: work::Given,
        outcome: Outcome,
    },
    CommandDone {
        corr: u64,
        reply: Reply,
    },
    ChatLine(String),
    StdinClosed,
    /// The hub's host name did not resolve, for this reason.
    Unresolvable(String),
    /// A hub named by a host name resolved to these addresses
    /// (`tcp://IP:PORT`): the agent moves between all of them.
    Resolved {
        hub: String,
        addrs: Vec<String>,
    },
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
    /// The groups `sub` is subscribed to.
    groups: Vec<String>,
    /// Connected only when `[jobs] allow` names a kind: a device that
    /// takes no jobs is never handed one from the work queue.
    jobs: Option<zmq::Socket>,
    /// Connected when `[jobs] allow` names a kind or a job is running, and
    /// then kept until the next Welcome: a result never finds it closed
    /// under it, and a device that takes no jobs holds one connection less.
    results: Option<zmq::Socket>,
    commands: zmq::Socket,
}

struct Agent {
    cfg: AgentConfig,
    /// A renumbered batch was logged (once per run).
    renumbering: bool,
    /// The routing id of the telemetry and commands DEALERs,
    /// `<device id>@<nonce>`: the hub answers only this route.
    route: String,
    /// `chat`: how long to wait for acks once stdin closes (`None`: `run`).
    chat_wait: Option<Duration>,
    /// Chat mode, stdin closed: when to give up waiting for acks.
    chat_deadline: Option<Instant>,
    started: Instant,
    sockets: Sockets,
    dealer: zmq::Socket,
    /// The hub the dealer is connected to now (one of `cfg.hubs()`).
    hub: String,
    /// When to move to the next hub, if there are several.
    failover: Failover,
    /// The hubs the agent moves between: `cfg.hubs()`, each host name
    /// that resolved to several addresses replaced by them.
    rotation: Vec<String>,
    monitor: zmq::Socket,
    /// A failed handshake was logged; quiet until one succeeds.
    refused: bool,
    /// When to dial the hub again after it refused a handshake.
    redial: Redial,
    /// Why the hub has not welcomed us, said within a few seconds.
    link: LinkWatch,
    /// Our public key, for the enrolment hint ("" when plaintext).
    public_key: String,
    links: Option<Links>,
    /// The hub sent Carry since our last Hello: its Welcome is to be taken
    /// as "everything on this connection" (if `one_connection`).
    carry_offered: bool,
    /// Everything travels on the telemetry connection: no `links`.
    carried: bool,
    /// The groups the hub's allow list pins this device to, when it told
    /// us after our last Hello that they are not the configured ones.
    pinned_groups: Option<Vec<String>>,
    connected: bool,
    need_hello: Option<Instant>,
    /// The `started_ms` our last Hello said: a step of the clock since
    /// is told with a new one.
    said_started_ms: Option<u64>,
    /// The hub is holding batches back (Throttled) and that was logged;
    /// the next Ack ends the episode.
    over_budget: bool,
    /// Packing failed (a full disk): not tried again before then.
    pack_blocked_until: Option<Instant>,
    /// Telemetry on its way: spool, in-flight window, sequence numbers.
    outbox: Outbox,
    /// The configuration from the file (and flags), before the hub's.
    local: AgentConfig,
    /// The hub's desired configuration as applied here.
    remote: crate::remote::Remote,
    /// Keys of the hub's configuration that were not applied, with why.
    remote_errors: Vec<(String, String)>,
    jobs_run: JobMemory,
    /// Jobs the hub aimed at this device (Downstream `Work`), waiting for
    /// a free worker; taken before the work queue's.
    aimed: std::collections::VecDeque<fleetmq_protocol::Job>,
    running_jobs: usize,
    running_commands: usize,
    exec: ExecPolicy,
    stop_children: Arc<AtomicBool>,
    /// Threads running jobs and exec commands, joined at stop.
    workers: Vec<std::thread::JoinHandle<()>>,
    notifier: Notifier,
    events: mpsc::Receiver<Event>,
    wake: UnixStream,
    next_sample: Instant,
    next_heartbeat: Instant,
    heartbeats: u64,
    /// Records dropped in all, as of the last sample (`agent.records_dropping`).
    dropped_sampled: u64,
    jobs_done: u64,
    commands_answered: u64,
    control: Control,
    host: Host,
    next_host: Instant,
    /// What this device is, for the hub's inventory (in the Offer).
    facts: Facts,
    ingest: Ingest,
    /// The `[logs]` files, read while the hub takes log lines.
    tailer: Tailer,
    next_logs: Instant,
    /// The hub said it takes log lines ([`fleetmq_protocol::TakesLogs`])
    /// since the last Hello.
    told_takes_logs: bool,
    /// The hub that welcomed this agent last takes log lines (kept while
    /// the agent is away from it, so lines go on into the spool).
    takes_logs: bool,
    hangup: Hangup,
    reload: Box<dyn Fn() -> Result<AgentConfig, ReloadError>>,
    last_reload: ReloadStatus,
}

/// Runs the agent until shutdown (or, in chat mode, until stdin closes and
/// everything is acked).
pub fn run(cfg: AgentConfig, opts: Options, shutdown: Shutdown) -> Result<(), Error> {
    let dir = cfg.data_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|source| Error::DataDir {
        path: dir.clone(),
        source,
    })?;
    let jobs_run =
        JobMemory::open(dir.join("jobs-run"), JOBS_REMEMBERED).map_err(Error::JobMemory)?;
    let now = Instant::now();
    let outbox = Outbox::open(
        cfg.spool_config(),
        cfg.uplink_limits(),
        dir.join("seq"),
        now,
        now_ms(),
        fastrand::u64(..),
    )?;
    if let Ok(old) = std::fs::metadata(dir.join("unacked")) {
        warn!(
            bytes = old.len(),
            "ignoring DATA_DIR/unacked from an older agent version (the spool replaces it)"
        );
    }

    let control = Control::bind(control::socket_path(&dir)).map_err(Error::Control)?;

    // The hub's configuration, as applied before, over the local file.
    let local = cfg.clone();
    let remote = crate::remote::load(&dir).unwrap_or_else(|e| {
        warn!("{e}");
        crate::remote::Remote::default()
    });
    let pairs: Vec<(String, String)> = remote.values.clone().into_iter().collect();
    let applied = crate::remote::apply(&local, &pairs);
    for (key, why) in &applied.errors {
        warn!(key, %why, "a key the hub set before no longer applies; the local value stays");
    }
    let cfg = applied.config;
    let (ingest, problems) = Ingest::open(&cfg.ingest, &dir);
    for p in problems {
        warn!("{p}; the agent runs on without it (see status)");
    }
    let hangup = Hangup::install().map_err(Error::Hangup)?;

    let sockets = Sockets::new(cfg.net.clone()).with_security(opts.security.clone());
    let events = i32::from(
        event::CONNECTED
            | event::HANDSHAKE_SUCCEEDED
            | event::DISCONNECTED
            | event::HANDSHAKE_FAILED_NO_DETAIL
            | event::HANDSHAKE_FAILED_PROTOCOL
            | event::HANDSHAKE_FAILED_AUTH,
    );
    // 128 random bits: the nonce travels only inside the CURVE handshake,
    // so no other peer can claim the route and receive what is this
    // device's.
    let nonce = fleetmq_net::random::hex(16).map_err(Error::Nonce)?;
    let route = fleetmq_protocol::route(&cfg.device_id, &nonce);
    let first_hub = cfg
        .hubs()
        .first()
        .map_or_else(|| cfg.hub.clone(), |h| h.to_string());
    let mut failover = Failover::new(cfg.hubs().len());
    failover.lost(now, |max| fastrand::u64(0..=max));
    let dealer = sockets
        .build(zmq::DEALER)
        .routing_id(route.as_bytes())
        .immediate()
        .secure()
        .monitor(MONITOR, events)
        .connect(&first_hub)?;
    let monitor = sockets.build(zmq::PAIR).connect(MONITOR)?;
    let (wake, wake_tx) = UnixStream::pair().map_err(Error::Wake)?;
    wake.set_nonblocking(true).map_err(Error::Wake)?;
    wake_tx.set_nonblocking(true).map_err(Error::Wake)?;
    // Bounded: a fast stdin waits for the loop instead of growing a queue.
    let (tx, events_rx) = mpsc::sync_channel(EVENTS_QUEUED);
    let notifier = Notifier {
        tx,
        wake: Arc::new(wake_tx),
    };
    if opts.chat.is_some() {
        local::spawn_stdin_reader(notifier.clone());
    }
    hub::spawn_lookup(
        cfg.hubs().into_iter().map(String::from).collect(),
        notifier.clone(),
    );
    info!(device = %cfg.device_id, hub = %first_hub, security = sockets.security().name(), "agent starting");
    let exec = ExecPolicy {
        programs: cfg.exec.programs.clone(),
        max_timeout: Duration::from_millis(u64::from(cfg.exec.timeout_ms)),
        max_output: cfg.exec.max_output_bytes,
    };
    let mut agent = Agent {
        renumbering: false,
        route,
        chat_wait: opts.chat,
        chat_deadline: None,
        started: now,
        sockets,
        dealer,
        monitor,
        refused: false,
        link: LinkWatch::new(&first_hub, now),
        hub: first_hub,
        failover,
        rotation: cfg.hubs().into_iter().map(String::from).collect(),
        redial: Redial::new(
            u64::try_from(cfg.net.reconnect_ms).unwrap_or(0),
            u64::try_from(cfg.net.reconnect_max_ms).unwrap_or(0),
        ),
        public_key: match &opts.security {
            fleetmq_net::Security::CurveClient { ours, .. } => ours.public.clone(),
            _ => String::new(),
        },
        links: None,
        carry_offered: false,
        pinned_groups: None,
        carried: false,
        connected: false,
        need_hello: None,
        said_started_ms: None,
        over_budget: false,
        pack_blocked_until: None,
        outbox,
        jobs_run,
        aimed: std::collections::VecDeque::new(),
        running_jobs: 0,
        running_commands: 0,
        exec,
        stop_children: Arc::new(AtomicBool::new(false)),
        workers: Vec::new(),
        notifier,
        events: events_rx,
        wake,
        next_sample: now,
        next_heartbeat: now,
        heartbeats: 0,
        dropped_sampled: 0,
        jobs_done: 0,
        commands_answered: 0,
        control,
        host: Host::new("/", cfg.host.clone()),
        next_host: now,
        facts: Facts::read("/", now),
        ingest,
        tailer: Tailer::open(&cfg.logs, &dir),
        next_logs: now,
        told_takes_logs: false,
        takes_logs: false,
        hangup,
        reload: opts.reload,
        last_reload: ReloadStatus::default(),
        local,
        remote,
        remote_errors: applied.errors,
        cfg,
    };
    let result = agent.serve(&shutdown);
    agent.stop();
    result
}

impl Agent {
    fn serve(&mut self, shutdown: &Shutdown) -> Result<(), Error> {
        loop {
            let now = Instant::now();
            let next = [
                Some(self.next_sample),
                (self.cfg.host.interval_ms > 0).then_some(self.next_host),
                Some(self.facts.due_at()),
                self.reading_logs().then_some(self.next_logs),
                self.connected.then_some(self.next_heartbeat),
                // While packing waits for room, so does the next flush.
                self.connected
                    .then(|| self.outbox.next_deadline())
                    .flatten()
                    .map(|t| self.pack_blocked_until.map_or(t, |b| t.max(b))),
                self.need_hello.filter(|_| self.connected),
                self.outbox.next_sync(),
                self.ingest.statsd_due(),
                self.redial.due_at(),
                self.failover.due_at(),
                self.link.next_check(),
                self.chat_deadline,
            ]
            .into_iter()
            .flatten()
            .min();
            // Rounded up: waking a millisecond early only to wait again is a
            // wake-up for nothing.
            let timeout = next.map_or(60_000, |t| {
                let left = t.saturating_duration_since(now).as_micros().div_ceil(1000);
                left.min(60_000) as i64
            });
            let take_jobs = self.running_jobs < self.cfg.jobs.max_concurrent;
            let mut ready = {
                let mut poll = Poll::new();
                poll.fd(Ready::Shutdown, shutdown.fd())
                    .fd(Ready::Events, self.wake.as_raw_fd())
                    .socket(Ready::Monitor, &self.monitor)
                    .socket(Ready::Hub, &self.dealer)
                    .fd(Ready::Control, self.control.fd())
                    .fd(Ready::Hangup, self.hangup.fd());
                for fd in self.ingest.fds() {
                    poll.fd(Ready::Ingest, fd);
                }
                if let Some(l) = &self.links {
                    poll.socket(Ready::Broadcasts, &l.sub);
                    if let (true, Some(jobs)) = (take_jobs, &l.jobs) {
                        poll.socket(Ready::Jobs, jobs);
                    }
                    poll.socket(Ready::Commands, &l.commands);
                }
                poll.wait(timeout).map_err(zmq_error("polling sockets"))?
            };
            if ready.contains(&Ready::Shutdown) && shutdown.requested() {
                info!("shutting down");
                return Ok(());
            }
            // In the order added; the ingest descriptors read as one.
            ready.dedup();
            for which in ready {
                match which {
                    Ready::Events => self.drain_events()?,
                    Ready::Monitor => self.drain_monitor()?,
                    Ready::Hub => self.drain_dealer()?,
                    Ready::Control => self.serve_control(),
                    Ready::Hangup => {
                        if self.hangup.take() {
                            self.reload();
                        }
                    }
                    Ready::Ingest => self.drain_ingest(),
                    Ready::Broadcasts => self.drain_broadcasts()?,
                    Ready::Jobs => self.drain_jobs()?,
                    Ready::Commands => self.drain_commands()?,
                    Ready::Shutdown => {}
                }
            }
            self.timers()?;
            if self.chat_ended()? {
                return Ok(());
            }
        }
    }

    /// `fleetmq-agent chat` rather than `run`.
    fn chat_mode(&self) -> bool {
        self.chat_wait.is_some()
    }

    /// Clean stop: flush, give the hub a moment to ack, say bye, save what
    /// is still unacked for the next start.
    fn stop(&mut self) {
        self.stop_workers();
        // StatsD lines folded so far go out with the last records.
        self.flush_statsd();
        self.seal_and_send();
        let deadline = Instant::now() + FINAL_ACK_WAIT;
        while self.connected && self.outbox.in_flight() > 0 {
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
        match self.outbox.sync() {
            Ok(()) if self.outbox.in_flight() == 0 && self.outbox.waiting() == 0 => {
                info!("stopped; everything was acked")
            }
            Ok(()) => info!(
                batches = self.outbox.in_flight(),
                bytes = self.outbox.bytes(),
                "stopped; unacked telemetry stays in the spool for the next start"
            ),
            Err(e) => warn!(error = %e, "syncing the spool at stop"),
        }
    }
}
