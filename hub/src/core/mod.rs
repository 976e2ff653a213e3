//! The hub's decisions, with no sockets: the sans-I/O core.
//!
//! The driver ([`crate::driver`]) reads a message, hands it to one of the
//! core's input methods with the time, and then carries out the
//! [`Action`]s the core queued ([`Core::poll_action`]). Where carrying
//! out an action can fail in a way that changes a decision (a command to a
//! device whose command socket is gone, a job no agent would take), the
//! driver reports back ([`Core::command_sent`], [`Core::job_sent`]).
//! The core calls the SQLite [`Store`] synchronously; tests give it an
//! in-memory one ([`Store::in_memory`]) and drive it with a fake clock.
//!
//! | file | flow |
//! |---|---|
//! | `admission.rs` | who may speak for a device: ZAP verdicts, the allow list in force, rate limits |
//! | `presence.rs` | Hello, Bye, silence: who is online and listening |
//! | `routes.rs` | which connection speaks for a device, where its messages go, and whether everything travels on it (one connection) |
//! | `telemetry.rs` | batches in, stored, then acked; chat relayed; newest values |
//! | `commands.rs` | a command's whole life: sent, answered, timed out, queued for an offline device, remembered for retries |
//! | `jobs.rs` | jobs handed out, leased, handed out again, finished |
//! | `slots.rs` | work-queue jobs in the hands of agents on one connection, so none is handed more than it runs |
//! | `aim.rs` | jobs aimed at devices, groups or the fleet: a run per member, held for offline ones |
//! | `fleet.rs` | commands for many devices: a share per member, kept until answered, timed out or expired |
//! | `forget.rs` | a decommissioned device forgotten: out of every list, its waiting work called off |
//! | `config.rs` | the desired configuration: layers, versions, a device's document when it is behind |
//! | `operator.rs` | operator requests: reads, and the acting requests routed to the flows above |
//! | `reads.rs` | the reads that scan the store, run off the loop by the driver's readers |
//! | `budgets.rs` | what one device may cost: records, bytes and series |
//! | `cluster_config.rs` | a front-end's desired configuration: edits and reports through the cluster's stream, applied in its order |
//! | `cluster_jobs.rs` | a front-end's work-queue jobs: submitted to the cluster's queue, taken when an agent is free, settled by their result |
//! | `cluster.rs` | a front-end: batches acked once the cluster has them, the store filled from the stream, devices held told |
//! | `cluster/front_ends.rs` | the live front-ends' reports: traffic, version and features; a cancel or forget refused while one lacks it |
//! | `undelivered.rs` | messages a device on one connection was not reading: counted, told once, noted on a job |
//!
//! Every input names the time it happened ([`Now`]) on two clocks: every
//! timer (presence, job leases, command deadlines, rate limits, the
//! once-a-minute refusals) runs on the monotonic one, so a step of the
//! system clock neither hands a job out twice nor takes devices offline;
//! the wall clock is only stored with data and shown to people. The core
//! never reads a clock.

mod admission;
mod aim;
pub mod alerts;
mod allow_edits;
mod audit;
mod bucket;
mod budgets;
pub mod clocks;
mod cluster;
mod cluster_config;
mod cluster_jobs;
mod commands;
mod config;
pub mod fleet;
mod forget;
mod jobs;
mod knocks;
mod latest;
mod operator;
mod pending;
mod presence;
pub mod reads;
mod routes;
mod slots;
mod subscriptions;
mod telemetry;
mod undelivered;

use std::collections::VecDeque;

use fleetmq_protocol::{Broadcast, Downstream, HubPorts};
use tracing::{debug, warn};

use crate::config::HubConfig;
use crate::enrolment::AllowList;
use crate::store::Store;

pub use admission::{Admission, Verdict, judge_zap};
pub use allow_edits::AllowEdit;
pub use audit::HTTP_CLIENT;
pub use cluster::STREAM_MARK;
pub use cluster_config::CONFIG_MARK;
pub use cluster_jobs::JOB_EVENTS_MARK;
pub use commands::Sent;
pub use latest::Latest;
pub use operator::Caller;
pub use presence::Presence;
pub use undelivered::Carrying;

/// Most (device, metric) pairs whose newest value is kept for /metrics.
const MAX_LATEST: usize = 200_000;

/// When an input happened, on the two clocks the core keeps apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds on a clock that never steps (the driver counts them
    /// from its start with `Instant`). Every timer runs on it.
    pub mono_ms: u64,
    /// Milliseconds since the Unix epoch by the system clock, which an
    /// operator or NTP may step. Stored with data and shown; never timed.
    pub wall_ms: u64,
}

/// What the core asks the driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send on the telemetry ROUTER to this route: `[route][frame]`. A
    /// device that is gone loses it (it resends what was not acked); one
    /// whose queue is full is reported with [`Core::undelivered`].
    Device {
        route: Vec<u8>,
        frame: Vec<u8>,
        what: Carrying,
    },
    /// Publish on the broadcast socket: `[topic][frame]`.
    Publish { topic: String, frame: Vec<u8> },
    /// Send a command on the commands ROUTER: `[route][][frame]`; or,
    /// `carried` (an agent on one connection), on the telemetry ROUTER:
    /// `[route][frame]`. Then report with [`Core::command_sent`].
    Command {
        corr: u64,
        device: String,
        route: Vec<u8>,
        frame: Vec<u8>,
        carried: bool,
    },
    /// Hand a job to whichever agent pulls next, then report with
    /// [`Core::job_sent`]. After one job that could not be handed out, the
    /// driver skips the other jobs of the same round: they stay due.
    Job {
        id: u64,
        attempt: u32,
        token: u64,
        lease_ms: u32,
        frame: Vec<u8>,
    },
    /// Answer an operator client: `[client][][frame]`.
    Operator { client: Vec<u8>, frame: Vec<u8> },
    /// Run read `id` off the loop (see [`reads`]), then hand the encoded
    /// answer to [`Core::read_done`].
    Read {
        id: u64,
        request: fleetmq_protocol::Request,
    },
    /// Edit the allow list file as an operator asked (their
    /// [`Request::Enrol`] or [`Request::Revoke`]), apply it, then answer
    /// with [`Core::allow_list_edited`].
    ///
    /// [`Request::Enrol`]: fleetmq_protocol::Request::Enrol
    /// [`Request::Revoke`]: fleetmq_protocol::Request::Revoke
    EditAllowList {
        client: Vec<u8>,
        id: u64,
        edit: AllowEdit,
    },
    /// Close the connections of a device whose key was revoked (its next
    /// handshake is refused).
    CutDevice { device: String },
    /// Close the broadcast connections (an agent on five sockets) of a
    /// device whose pinned groups changed: its SUB connects again, and what
    /// it subscribes to is checked against the new pin.
    CutBroadcast { device: String },
    /// Hand this to the NATS cluster (front-ends only).
    Cluster(crate::cluster::ToCluster),
    /// Tell the alert webhooks.
    Alert(alerts::Notice),
    /// Hand a job taken from the cluster's queue to whichever agent pulls
    /// next, then report with [`Core::cluster_job_sent`].
    ClusterJob { token: u64, frame: Vec<u8> },
    /// Close (unbind) or open again the telemetry endpoint: a front-end
    /// cut off from the cluster sends its agents elsewhere.
    Door { open: bool },
}

/// What the driver saw on a socket monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A connection ended.
    Disconnected,
    /// A handshake failed (bad key, bad protocol).
    HandshakeFailed,
}

/// Counters shown by `stats`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub batches_stored: u64,
    pub batches_duplicate: u64,
    pub samples_stored: u64,
    pub log_lines_stored: u64,
    pub frames_dropped: u64,
    pub jobs_dispatched: u64,
    pub results_received: u64,
    pub commands_sent: u64,
    pub commands_timed_out: u64,
    pub handshakes_refused: u64,
    pub handshakes_failed: u64,
    pub impersonations: u64,
    pub rate_limited: u64,
    pub disconnects: u64,
    pub connection_conflicts: u64,
    pub batches_renumbered: u64,
    pub results_refused: u64,
    pub batches_throttled: u64,
    pub batches_rejected: u64,
    /// Messages for a device on one connection dropped: it was not
    /// reading and its queue was full.
    pub messages_undelivered: u64,
    /// Broadcast subscriptions refused: a topic the device may not hear.
    pub subscriptions_refused: u64,
    /// Front-ends: batches handed to the cluster and not yet answered.
    pub batches_replicating: u64,
    /// Front-ends: batches the stream took.
    pub batches_replicated: u64,
    /// Alert notices handed to the webhooks.
    pub alert_notices: u64,
    /// What retention deleted since the start (`bytes` and `more` unused).
    pub pruned: crate::store::Pruned,
}

/// Where job tokens come from: the OS's randomness in the hub, a counter in
/// tests. The core never reads it itself.
pub type Tokens = Box<dyn FnMut() -> std::io::Result<u64> + Send>;

/// The hub's state and every decision it makes.
pub struct Core {
    tokens: Tokens,
    config: HubConfig,
    store: Store,
    /// The ports of the sockets beside telemetry, told to agents in Welcome.
    ports: HubPorts,
    admission: Admission,
    budgets: budgets::Budgets,
    presence: Presence,
    routes: routes::Routes,
    commands: commands::Commands,
    reads: reads::Reads,
    telemetry: telemetry::Received,
    /// The newest sample of each (device, metric) stored since the start.
    latest: Latest,
    /// How far each device's clock is from the hub's.
    clocks: clocks::Clocks,
    /// Request ids kept in the audit trail lately.
    audited: audit::Audited,
    /// The alert rules and where each alert stands.
    alerts: alerts::Alerts,
    counters: Counters,
    /// When the core was made: uptime runs on the monotonic clock.
    started: Now,
    /// Why the store cannot be written now, if it cannot (a full disk):
    /// shown in stats and /health; telemetry waits until it can.
    storage: Option<String>,
    /// Job leases running out on the monotonic clock.
    leases: jobs::Leases,
    /// Work-queue jobs in the hands of agents on one connection.
    handed: slots::Handed,
    /// What each device said it takes on (its Offer).
    offers: aim::Offers,
    /// Work-queue jobs noted as waiting for a device that takes them.
    waiting: std::collections::HashSet<u64>,
    /// Devices an edit of the desired configuration applies to, with their
    /// groups and the version before it, waiting for their document.
    config_outbox: VecDeque<(String, Vec<String>, u64)>,
    /// Retention's last step left more to delete.
    prune_more: bool,
    /// Fleet command shares cut off by a restart were ended (first tick).
    fleet_started: bool,
    /// The wall clock at the last tick or answer: when a fleet command's
    /// answer is stored.
    wall_ms: u64,
    ticks: u32,
    /// What a front-end knows of the other front-ends.
    cluster: cluster::Cluster,
    /// Jobs a front-end took from the cluster's queue.
    cluster_jobs: cluster_jobs::ClusterJobs,
    /// Configuration edits a front-end put on the cluster's stream.
    pending_edits: pending::Pending<()>,
    /// Job cancellations a front-end put on the cluster's job events.
    pending_cancels: pending::Pending<()>,
    /// Devices a front-end is marking forgotten in the cluster, with what
    /// waited for each here: (runs, shares).
    pending_forgets: pending::Pending<(u32, u32)>,
    /// Why the cluster does not take telemetry now, if it does not.
    cluster_problem: Option<String>,
    /// Devices whose messages are being dropped (not reading).
    undelivered: undelivered::Undelivered,
    out: VecDeque<Action>,
}

impl Core {
    /// A core over `store`. `allow_list` is the enrolment in force, `None`
    /// when the hub runs plaintext (then any routing id is believed).
    pub fn new(
        config: HubConfig,
        store: Store,
        allow_list: Option<AllowList>,
        ports: HubPorts,
        now: Now,
        tokens: Tokens,
    ) -> Core {
        Core {
            tokens,
            admission: Admission::new(allow_list, &config.security),
            budgets: budgets::Budgets::new(config.limits.clone()),
            presence: Presence::new(config.presence.offline_after_heartbeats),
            routes: routes::Routes::default(),
            commands: commands::Commands::new(),
            reads: reads::Reads::default(),
            telemetry: telemetry::Received::default(),
            latest: Latest::new(MAX_LATEST),
            clocks: clocks::Clocks::default(),
            audited: audit::Audited::default(),
            alerts: alerts::Alerts::new(
                config.alerts.checked_rules().unwrap_or_default(),
                config.alerts.repeat_ms,
            ),
            counters: Counters::default(),
            started: now,
            storage: None,
            leases: jobs::Leases::default(),
            handed: slots::Handed::default(),
            offers: aim::Offers::new(),
            waiting: std::collections::HashSet::new(),
            config_outbox: VecDeque::new(),
            prune_more: false,
            fleet_started: false,
            wall_ms: now.wall_ms,
            ticks: 0,
            cluster: cluster::Cluster::default(),
            cluster_jobs: cluster_jobs::ClusterJobs::default(),
            pending_edits: pending::Pending::starting_at(now.wall_ms),
            pending_cancels: pending::Pending::starting_at(now.wall_ms),
            pending_forgets: pending::Pending::starting_at(now.wall_ms),
            cluster_problem: None,
            undelivered: undelivered::Undelivered::default(),
            out: VecDeque::new(),
            config,
            store,
            ports,
        }
    }

    /// The next thing to do, in the order the core decided them.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// The counters, as `stats` shows them.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// A message the driver could not even read whole (too many frames).
    pub fn dropped(&mut self, socket: &str, why: impl std::fmt::Display) {
        self.counters.frames_dropped += 1;
        debug!(socket, %why, "dropped a frame");
    }

    /// A socket monitor reported an event.
    pub fn connection_event(&mut self, event: ConnectionEvent) {
        match event {
            ConnectionEvent::Disconnected => self.counters.disconnects += 1,
            ConnectionEvent::HandshakeFailed => self.counters.handshakes_failed += 1,
        }
    }

    /// The timer: presence, command deadlines, queued commands, job leases,
    /// the command log and retention. The driver calls it every [`TICK_MS`].
    pub fn tick(&mut self, now: Now) {
        self.ticks = self.ticks.wrapping_add(1);
        self.wall_ms = now.wall_ms;
        self.admission.tick(self.ticks, now);
        self.regrouped_overdue(now);
        if self.ticks.is_multiple_of(50) {
            self.routes.forget_told(now.mono_ms, routes::TELL_EVERY_MS);
            self.budgets.forget_idle(now.mono_ms);
        }
        self.sweep_presence(now);
        self.door(now);
        self.expire_commands(now);
        self.send_queued(now);
        self.expire_leases(now);
        self.expire_cluster_jobs(now);
        self.dispatch_jobs(now);
        self.dispatch_aimed(now);
        self.send_config_outbox();
        self.report(now);
        self.check_alerts(now);
        if self.ticks.is_multiple_of(10) || !self.fleet_started {
            self.send_fleet(now);
        } else {
            self.fleet_answers_in();
        }
        if let Err(e) = self.store.flush_log() {
            self.store_failed("writing the command log", &e);
        }
        if self.ticks.is_multiple_of(PRUNE_EVERY_TICKS) || self.prune_more {
            self.prune(now);
        }
    }

    /// One step of retention (see `store::retention`): once a second, and
    /// on every tick while a kind is still past its limits.
    fn prune(&mut self, now: Now) {
        match self.store.prune(&self.config.retention, now.wall_ms) {
            Ok(p) => {
                self.prune_more = p.more;
                if !p.is_empty() {
                    debug!(?p, "retention pruned");
                }
                let total = &mut self.counters.pruned;
                total.batches += p.batches;
                total.records += p.records;
                total.chat += p.chat;
                total.jobs += p.jobs;
                total.commands += p.commands;
            }
            Err(e) => {
                self.prune_more = false;
                warn!(error = %e, "retention could not prune the store; it tries again in a second");
            }
        }
    }

    /// A write to the store failed: the hub goes on (presence, commands,
    /// reads), says why in `/health` and stats, and logs it once per
    /// episode.
    fn store_failed(&mut self, what: &str, e: &crate::store::StoreError) {
        let why = format!("{what}: {e}");
        if self.storage.is_none() {
            warn!(%why, "the store cannot be written (is the disk full?); telemetry is held back (Throttled, not acked) until it can be; presence, commands and reads go on");
        } else {
            debug!(%why, "a store write failed");
        }
        self.storage = Some(why);
    }

    /// A write to the store worked: the episode, if there was one, is over.
    fn store_works(&mut self) {
        if self.storage.take().is_some() {
            tracing::info!("the store can be written again; telemetry is stored and acked");
        }
    }

    /// The hub is stopping: write what is still queued for the store.
    pub fn stop(&mut self) {
        if let Err(e) = self.store.flush_log() {
            warn!(error = %e, "could not write the last command log entries");
        }
    }

    /// Sends `msg` to the connection that speaks for `device`, if one does.
    fn send_down(&mut self, device: &str, msg: Downstream) {
        match self.routes.route(device) {
            Some(route) => {
                let route = route.to_vec();
                self.send_to_route(route, msg);
            }
            None => debug!(
                device,
                kind = msg.name(),
                "no connection speaks for the device; not sent"
            ),
        }
    }

    /// Sends `msg` to one connection, whether or not it speaks for its
    /// device (a refusal says why it does not).
    fn send_to_route(&mut self, route: Vec<u8>, msg: Downstream) {
        let what = Carrying::of(&msg);
        match msg.encode() {
            Ok(frame) => self.out.push_back(Action::Device { route, frame, what }),
            Err(e) => warn!(error = %e, "could not encode a downstream message"),
        }
    }

    /// Publishes `msg` on the broadcast socket, and sends it down every
    /// route that carries everything and hears `topic`.
    fn publish(&mut self, topic: &str, msg: Broadcast) {
        match msg.encode() {
            Ok(frame) => self.out.push_back(Action::Publish {
                topic: topic.to_string(),
                frame,
            }),
            Err(e) => warn!(error = %e, "could not encode a broadcast"),
        }
        self.carry_broadcast(topic, msg);
    }

    /// A broadcast for the agents on one connection that hear `topic`.
    fn carry_broadcast(&mut self, topic: &str, msg: Broadcast) {
        let routes = self.routes.hearing(topic);
        if routes.is_empty() {
            return;
        }
        let down = match msg {
            Broadcast::Chat(chat) => Downstream::Chat(chat),
            Broadcast::Announcement(a) => Downstream::Announcement(a),
        };
        let what = Carrying::of(&down);
        match down.encode() {
            Ok(frame) => {
                for route in routes {
                    let frame = frame.clone();
                    self.out.push_back(Action::Device { route, frame, what });
                }
            }
            Err(e) => warn!(error = %e, "could not encode a broadcast"),
        }
    }

    /// Another front-end's broadcast, as it published it: published here
    /// too, and carried to this front-end's agents on one connection.
    pub fn cluster_broadcast(&mut self, topic: String, frame: Vec<u8>) {
        match Broadcast::decode(&frame) {
            Ok(msg) => self.carry_broadcast(&topic, msg),
            Err(e) => warn!(error = %e, "another front-end's broadcast could not be read"),
        }
        self.out.push_back(Action::Publish { topic, frame });
    }
}

/// How often the driver calls [`Core::tick`], in milliseconds: the
/// resolution of presence, command deadlines and job leases.
pub const TICK_MS: u64 = 100;

/// Ticks between retention steps when the last one finished its work.
const PRUNE_EVERY_TICKS: u32 = 10;

#[cfg(test)]
mod tests;
