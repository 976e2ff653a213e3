//! The hub's driver: the only code in the hub that touches zmq. One thread
//! owns every socket, waits on them, hands what arrives to the [`Core`] and
//! carries out the [`crate::core::Action`]s it returns.
//!
//! [`Poll`] waits on the five agent-facing sockets, the operator socket,
//! the socket monitors, the ZAP handler and the shutdown descriptor. Each
//! ready socket is drained without blocking; telemetry batches read in one
//! round are stored in one transaction and only then acked
//! ([`Core::store_received`]). Timers run on a tick of [`TICK_MS`].
//!
//! What is fatal: failing to start (a port taken, the store or keys
//! unreadable) and a socket that cannot be polled or read. What one peer or
//! one message causes is counted and logged by the core, and the loop goes on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetmq_net::keys;
use fleetmq_net::poll::{event, next_event};
use fleetmq_net::{
    NetError, Poll, Security, Sender, Shutdown, Sockets, now_ms, recv_message, send_frames,
};
use fleetmq_protocol::HubPorts;
use tracing::{info, warn};

use crate::config::HubConfig;
use crate::core::{Caller, ConnectionEvent, Core, Now, TICK_MS};
use crate::datadir::{DataDir, DataDirError};
use crate::enrolment::{AllowError, AllowList, Watch};
use crate::operator::http::{Http, HttpError, TokenFile};
use crate::operators::Operators;
use crate::store::{Store, StoreError};

mod actions;
pub mod files;
mod front_end;
mod peers;
mod readers;
mod start;
mod webhooks;

use peers::Peers;
pub use start::run;

/// The telemetry socket's index in [`MONITORED`].
const TELEMETRY: usize = 0;
/// The broadcast socket's index in [`MONITORED`].
const BROADCAST: usize = 1;

/// The agent-facing sockets, in the order of their monitors.
const MONITORED: [&str; 5] = ["telemetry", "broadcast", "jobs", "results", "commands"];

/// Messages drained from one socket per round before others get a turn.
const DRAIN: usize = 1024;
/// Bytes a connection of a quiet agent-facing socket (broadcast, jobs,
/// results, commands) reads and writes at once. libzmq keeps buffers of
/// this size per connection (8 KB each by default); these sockets carry a
/// few small messages a minute, and a hub holds thousands of them.
/// 256 rather than 512 saves about 2.3 KB a device (libzmq's decoder also
/// keeps a 40-byte counter for every 33 bytes of it).
const QUIET_BATCH: i32 = 256;
/// The same for telemetry, which carries every batch: 1 KB reads a typical
/// batch (800 bytes) at once, and a larger one is read straight into its
/// message. Measured (`fleetmq-bench connected`, and 100 agents × 4 in
/// flight against one hub, 3 runs each): 4 KB held 55.3 KB a device at
/// rest, 1 KB 49.4 KB, with ingest the same within the runs' spread
/// (44,600–49,200 and 47,300–48,900 batches/s); 512 bytes saved another
/// 1.1 KB.
const TELEMETRY_BATCH: i32 = 1024;
/// What the hub writes on telemetry is acks and the odd Welcome or desired
/// configuration: 1 KB at once is plenty, and 3 KB a device less than 4.
const TELEMETRY_WRITE_BATCH: i32 = 1024;
/// Messages libzmq queues per telemetry connection before it stops
/// reading from TCP: an honest agent has at most its window (16 batches by
/// default) unacked.
const TELEMETRY_QUEUE: i32 = 64;
/// How long a stopping hub still answers the HTTP side's request in flight.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Where libzmq asks who may connect (ZeroMQ RFC 27).
const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";

/// The endpoints the hub bound (with the ports the OS chose), as printed and
/// written to endpoints.json.
pub type Endpoints = crate::config::Listen;

/// What a round of polling found readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    Telemetry,
    Results,
    Commands,
    Operator,
    RemoteOperator,
    Broadcast,
    Shutdown,
    Monitors,
    Zap,
    Reads,
    Cluster,
}

/// The time for the core, on both its clocks: the monotonic one counts
/// from the first reading in this process.
fn now() -> Now {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    Now {
        mono_ms: start.elapsed().as_millis() as u64,
        wall_ms: now_ms(),
    }
}

struct Driver {
    /// The threads that answer reads that scan the store. Declared first,
    /// so dropped first: their connections close before the core's store,
    /// whose own (and then the checkpointer's) close last and fold the WAL
    /// into hub.db, deleting it, at every clean stop.
    readers: readers::Readers,
    core: Core,
    upstream: zmq::Socket,
    broadcast: zmq::Socket,
    jobs: zmq::Socket,
    results: zmq::Socket,
    commands: zmq::Socket,
    operator: zmq::Socket,
    /// The CURVE operator socket for remote operators, if configured, and
    /// its allow list file, watched for changes.
    remote: Option<(zmq::Socket, Watch)>,
    /// ZAP handler; `None` when plaintext.
    zap: Option<zmq::Socket>,
    /// The allow list file, watched for changes; `None` when plaintext.
    watch: Option<Watch>,
    /// Connection events of the five agent-facing sockets, in the order of
    /// [`MONITORED`].
    monitors: Vec<zmq::Socket>,
    /// Which device each connection that spoke belongs to.
    peers: Peers,
    /// The HTTP side, which talks to this loop through the operator socket:
    /// at shutdown the loop answers it until it has finished.
    http: Option<Http>,
    /// The link to the NATS cluster, if this hub is a front-end.
    cluster: Option<front_end::FrontEnd>,
    /// The thread that tells the alert webhooks, if there are any.
    webhooks: Option<webhooks::Webhooks>,
}

/// Why the hub could not start, or had to stop. Only start-up and a
/// socket that can no longer be polled or read end the hub; what one peer
/// or one message causes is counted and logged by the core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("opening the store in {}", dir.display())]
    Store {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("loading the hub's CURVE key pair (DATA_DIR/hub.key)")]
    Keys(#[source] fleetmq_net::keys::KeyError),
    #[error("reading the allow list")]
    AllowList(#[source] AllowError),
    #[error("reading the operator allow list")]
    Operators(#[source] AllowError),
    #[error(
        "listen.operator_remote needs CURVE: it cannot be used with --insecure (use the local operator socket, or drop --insecure)"
    )]
    RemoteNeedsCurve,
    /// The local operator socket's file (`listen.operator = "ipc://..."`).
    #[error("the operator socket {}: {why}", path.display())]
    OperatorSocket { path: PathBuf, why: String },
    #[error(transparent)]
    Socket(#[from] NetError),
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("joining the NATS cluster")]
    Cluster(#[source] crate::cluster::LinkError),
    /// A file `[cluster]` names cannot be used.
    #[error("{0}")]
    ClusterFile(String),
    #[error("starting a reader thread")]
    Thread(#[source] std::io::Error),
    #[error("starting the alert webhooks' thread")]
    Webhooks(#[source] std::io::Error),
    /// The authorities for `https://` webhooks could not be had.
    #[error("alerts: {0}")]
    WebhookRoots(String),
    /// A socket failed in a way no retry mends (the context ended).
    #[error("{doing}")]
    Zmq {
        doing: String,
        #[source]
        source: zmq::Error,
    },
}

/// A zmq failure while `doing` something, as an [`Error`].
fn zmq_error(doing: impl Into<String>) -> impl FnOnce(zmq::Error) -> Error {
    let doing = doing.into();
    move |source| Error::Zmq { doing, source }
}

impl Driver {
    fn serve(&mut self, shutdown: &Shutdown) -> Result<(), Error> {
        let tick = Duration::from_millis(TICK_MS);
        let mut last_tick = Instant::now() - tick;
        // Shutting down: until when the loop still answers the HTTP side.
        let mut stopping: Option<Instant> = None;
        loop {
            let ready = {
                let mut poll = Poll::new();
                poll.socket(Ready::Telemetry, &self.upstream)
                    .socket(Ready::Results, &self.results)
                    .socket(Ready::Commands, &self.commands)
                    .socket(Ready::Operator, &self.operator)
                    .socket(Ready::Broadcast, &self.broadcast)
                    .fd(Ready::Shutdown, shutdown.fd());
                for m in &self.monitors {
                    poll.socket(Ready::Monitors, m);
                }
                if let Some(zap) = &self.zap {
                    poll.socket(Ready::Zap, zap);
                }
                if let Some((remote, _)) = &self.remote {
                    poll.socket(Ready::RemoteOperator, remote);
                }
                poll.socket(Ready::Reads, self.readers.socket());
                if let Some(fe) = &self.cluster {
                    poll.fd(Ready::Cluster, fe.link.fd());
                }
                let wait = tick.saturating_sub(last_tick.elapsed()).as_millis() as i64;
                poll.wait(wait).map_err(zmq_error("polling sockets"))?
            };
            if ready.contains(&Ready::Shutdown) && shutdown.requested() {
                info!("shutting down");
                if let Some(http) = &self.http {
                    http.begin_stop();
                }
                stopping = Some(Instant::now() + STOP_GRACE);
            }
            if let Some(until) = stopping
                && (Instant::now() >= until || self.http.as_ref().is_none_or(Http::finished))
            {
                self.core.stop();
                return Ok(());
            }
            // Handshakes first: a connecting agent waits on them.
            if ready.contains(&Ready::Zap) {
                self.drain_zap()?;
            }
            if ready.contains(&Ready::Telemetry) {
                self.drain_upstream()?;
            }
            if ready.contains(&Ready::Results) {
                self.drain(Ready::Results)?;
            }
            if ready.contains(&Ready::Commands) {
                self.drain(Ready::Commands)?;
            }
            if ready.contains(&Ready::Operator) {
                self.drain(Ready::Operator)?;
            }
            if ready.contains(&Ready::RemoteOperator) {
                self.drain(Ready::RemoteOperator)?;
            }
            if ready.contains(&Ready::Broadcast) {
                self.drain(Ready::Broadcast)?;
            }
            if ready.contains(&Ready::Monitors) {
                self.drain_monitors()?;
            }
            if ready.contains(&Ready::Reads) {
                for (id, frame) in self.readers.answers() {
                    self.core.read_done(id, frame);
                }
                self.carry_out();
            }
            if ready.contains(&Ready::Cluster) {
                self.drain_cluster();
            }
            if last_tick.elapsed() >= tick {
                last_tick = Instant::now();
                self.reload_allow_list();
                self.core.tick(now());
                self.want_job();
                self.carry_out();
            }
        }
    }

    /// The allow list file, if it changed and parses: the core applies it.
    fn changed_allow_list(watch: &mut Option<Watch>) -> Option<AllowList> {
        let watch = watch.as_mut()?;
        if !watch.changed() {
            return None;
        }
        match AllowList::load(watch.path()) {
            Ok(list) => Some(list),
            Err(e) => {
                warn!(error = %e, "allow list not applied; the previous one stays in force until the file is fixed");
                None
            }
        }
    }

    /// A stat() a tick: enrolment and revocation apply within a tick, and
    /// so do changes to the operator allow list.
    pub(super) fn reload_allow_list(&mut self) {
        if let Some(list) = Self::changed_allow_list(&mut self.watch) {
            match &mut self.cluster {
                // A front-end's edits go to the cluster, and come back.
                Some(fe) if fe.mirrors() => fe.file_changed(&list),
                _ => self.core.allow_list_changed(list, now()),
            }
        }
        if let Some((_, watch)) = &mut self.remote
            && watch.changed()
        {
            match Operators::load(watch.path()) {
                Ok(list) => self.core.operators_changed(list),
                Err(e) => {
                    warn!(error = %e, "operator allow list not applied; the previous one stays in force until the file is fixed");
                }
            }
        }
    }

    /// Answers libzmq's questions about connecting CURVE clients.
    fn drain_zap(&mut self) -> Result<(), Error> {
        let Some(zap) = &self.zap else {
            return Ok(());
        };
        for _ in 0..DRAIN {
            let Some(got) = recv_message(zap, 16).map_err(zmq_error("reading ZAP requests"))?
            else {
                break;
            };
            let frames = got.frames.unwrap_or_default();
            let (watch, cluster) = (&mut self.watch, &mut self.cluster);
            let changed = || {
                let list = Self::changed_allow_list(watch)?;
                match cluster {
                    // A front-end's edit goes to the cluster and comes back.
                    Some(fe) if fe.mirrors() => {
                        fe.file_changed(&list);
                        None
                    }
                    _ => Some(list),
                }
            };
            let reply = self.core.zap(&frames, changed, now());
            let parts: Vec<&[u8]> = reply.iter().map(Vec::as_slice).collect();
            send_frames(zap, &parts).map_err(zmq_error("answering a ZAP request"))?;
        }
        self.carry_out();
        Ok(())
    }

    /// Counts failed handshakes and ended connections.
    fn drain_monitors(&mut self) -> Result<(), Error> {
        for (socket, m) in self.monitors.iter().enumerate() {
            while let Some(e) = next_event(m).map_err(zmq_error("reading a socket monitor"))? {
                match e.kind {
                    event::DISCONNECTED => {
                        if let Ok(fd) = i32::try_from(e.value) {
                            self.peers.ended(socket, fd);
                        }
                        self.core.connection_event(ConnectionEvent::Disconnected)
                    }
                    event::HANDSHAKE_FAILED_NO_DETAIL | event::HANDSHAKE_FAILED_PROTOCOL => {
                        self.core.connection_event(ConnectionEvent::HandshakeFailed)
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Reads what waits on the telemetry socket, then stores and acks it.
    fn drain_upstream(&mut self) -> Result<(), Error> {
        for _ in 0..DRAIN {
            if self.core.round_full() {
                break;
            }
            let Some((frames, from)) =
                next_message(&self.upstream, 2, &mut self.core, "telemetry")?
            else {
                break;
            };
            self.peers.heard(TELEMETRY, &from);
            let (user_id, address) = (from.user_id.as_deref(), from.address.as_deref());
            self.core.upstream(&frames, user_id, address, now());
        }
        self.core.store_received(now());
        self.carry_out();
        Ok(())
    }

    /// Reads what waits on one of the other sockets and hands it to the core.
    fn drain(&mut self, which: Ready) -> Result<(), Error> {
        let (frames_max, name) = match which {
            Ready::Results => (1, "results"),
            Ready::Commands => (3, "commands"),
            Ready::Operator => (3, "operator"),
            Ready::RemoteOperator => (3, "remote operator"),
            Ready::Broadcast => (1, "broadcast"),
            _ => return Ok(()),
        };
        // Agent-facing sockets note whose each connection is.
        let monitored = MONITORED.iter().position(|m| *m == name);
        for _ in 0..DRAIN {
            let socket = match which {
                Ready::Results => &self.results,
                Ready::Commands => &self.commands,
                Ready::Operator => &self.operator,
                Ready::RemoteOperator => match &self.remote {
                    Some((s, _)) => s,
                    None => return Ok(()),
                },
                _ => &self.broadcast,
            };
            let Some((frames, from)) = next_message(socket, frames_max, &mut self.core, name)?
            else {
                break;
            };
            if let Some(index) = monitored {
                self.peers.heard(index, &from);
            }
            let (user_id, now) = (from.user_id.as_deref(), now());
            match which {
                Ready::Results => self.core.result(&frames[0], user_id, now),
                Ready::Commands => self.core.reply(&frames, user_id, now),
                Ready::Operator => self
                    .core
                    .operator(&tagged(LOCAL, frames), Caller::Local, now),
                Ready::RemoteOperator => {
                    let caller = Caller::Remote(user_id);
                    self.core.operator(&tagged(REMOTE, frames), caller, now)
                }
                _ => {
                    // libzmq knows the connection a subscription came from
                    // only until the socket's next read: applied now.
                    if self.core.subscription(&frames[0], user_id)
                        && let Err(e) = fleetmq_net::apply_subscription(socket, &frames[0])
                    {
                        warn!(error = %e, "could not apply a broadcast subscription");
                    }
                }
            }
            self.carry_out();
        }
        Ok(())
    }
}

/// Client ids the core sees start with the operator socket they came on:
/// the two sockets' ROUTERs may give two clients the same id.
const LOCAL: u8 = b'L';
const REMOTE: u8 = b'R';
/// Requests another front-end asked this one (then the request's id in
/// the cluster link, 8 bytes).
const CLUSTER: u8 = b'C';

/// An operator request's frames with its client id tagged by `socket`.
fn tagged(socket: u8, mut frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    if let Some(client) = frames.first_mut() {
        client.insert(0, socket);
    }
    frames
}

/// A message's frames, and who sent it.
type Message = (Vec<Vec<u8>>, Sender);

/// The next whole message on `socket`, or `None` when nothing is waiting.
/// A message of more than `max` frames is read to its end, counted as
/// dropped and skipped; at most [`DRAIN`] are skipped per call, so a flood
/// of them cannot starve the other sockets.
fn next_message(
    socket: &zmq::Socket,
    max: usize,
    core: &mut Core,
    name: &'static str,
) -> Result<Option<Message>, Error> {
    for _ in 0..DRAIN {
        let Some(got) =
            recv_message(socket, max).map_err(zmq_error(format!("reading the {name} socket")))?
        else {
            return Ok(None);
        };
        match got.frames {
            Ok(frames) if !frames.is_empty() => return Ok(Some((frames, got.from))),
            Ok(_) => core.dropped(name, "an empty message"),
            Err(n) => core.dropped(name, format!("a message of {n} frames")),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
