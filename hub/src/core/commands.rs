//! A command's whole life, in one place: an operator asks, the command
//! goes to an online device (or waits for an offline one, within the time
//! the operator allowed), the device answers or the deadline passes, the
//! operator is answered, and the answer is remembered so that a retried
//! request (Lazy Pirate) is answered again rather than run twice.
//!
//! ```text
//!   operator request ─► queued (device offline, queue_ms > 0) ─┐
//!          │                                                   │ device back
//!          └──────────────► pending (sent, corr) ◄─────────────┘
//!                              │           │
//!                  device reply│           │deadline
//!                              ▼           ▼
//!                      answer the operator; remember it for retries
//! ```

use std::collections::{HashMap, VecDeque};

use fleetmq_protocol::{
    Command, CommandFrame, CommandReply, CommandRequest, Downstream, OperatorError,
    OperatorReplyFrame, OperatorResponse, Relink, ReplyFrame, Response, validate_device_id,
};
use tracing::{debug, info, warn};

use super::{Action, Core, Now};

/// The client id of commands the hub asks itself (a fleet command's
/// shares): their answers wait in [`Commands::take_internal`] for their
/// owner. An operator client's id is never empty.
pub(super) const INTERNAL_CLIENT: &[u8] = b"";

/// Answers remembered for retried operator requests.
const REMEMBERED: usize = 1024;
/// Most commands in flight at once; more are refused at once.
const MAX_PENDING: usize = 10_000;
/// Most commands waiting for their device; more are refused at once.
const MAX_QUEUED: usize = 10_000;
/// How long after coming online a device may take to connect its
/// commands socket before the hub asks it to reconnect.
const RELINK_GRACE_MS: u64 = 10_000;
/// How often one device is asked to reconnect its sockets, at most.
const RELINK_EVERY_MS: u64 = 30_000;

/// A command sent to a device whose reply an operator waits for.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingCommand {
    /// The operator client's routing id, to answer on.
    pub client: Vec<u8>,
    /// The operator request id.
    pub request_id: u64,
    /// Device the command went to.
    pub device: String,
    /// When to give up, ms since the epoch.
    pub deadline_ms: u64,
    /// The operator's timeout, for the error message.
    pub timeout_ms: u32,
    /// Row in the command log.
    pub log_id: i64,
}

/// Commands in flight, keyed by correlation id.
#[derive(Debug, Default)]
pub struct Pending {
    by_corr: HashMap<u64, PendingCommand>,
    next_corr: u64,
}

impl Pending {
    /// Registers a command; returns its correlation id.
    pub fn next_corr(&mut self) -> u64 {
        self.next_corr += 1;
        self.next_corr
    }

    pub fn insert(&mut self, corr: u64, cmd: PendingCommand) {
        self.by_corr.insert(corr, cmd);
    }

    /// A reply came: the pending command, if it is still waited for and came
    /// from the device it was sent to.
    pub fn answer(&mut self, corr: u64, device: &str) -> Option<PendingCommand> {
        match self.by_corr.get(&corr) {
            Some(p) if p.device == device => self.by_corr.remove(&corr),
            _ => None,
        }
    }

    /// A retried operator request that is still in flight: answer on the new
    /// client id. Returns true if it was found.
    pub fn retarget(&mut self, request_id: u64, client: &[u8]) -> bool {
        match self
            .by_corr
            .values_mut()
            .find(|p| p.request_id == request_id && p.client != INTERNAL_CLIENT)
        {
            Some(p) => {
                p.client = client.to_vec();
                true
            }
            None => false,
        }
    }

    /// Number of commands in flight.
    pub fn in_flight(&self) -> usize {
        self.by_corr.len()
    }

    /// The command log row of a command now sent.
    pub fn set_log_id(&mut self, corr: u64, log_id: i64) {
        if let Some(p) = self.by_corr.get_mut(&corr) {
            p.log_id = log_id;
        }
    }

    /// A command that never left: no answer will come.
    pub fn forget(&mut self, corr: u64) {
        self.by_corr.remove(&corr);
    }

    /// Commands whose deadline passed; they are forgotten.
    pub fn expired(&mut self, now_ms: u64) -> Vec<PendingCommand> {
        let corrs: Vec<u64> = self
            .by_corr
            .iter()
            .filter(|(_, p)| p.deadline_ms <= now_ms)
            .map(|(c, _)| *c)
            .collect();
        corrs
            .iter()
            .filter_map(|c| self.by_corr.remove(c))
            .collect()
    }
}

/// Answers to recent operator requests, by request id, bounded.
#[derive(Debug)]
pub struct Recent {
    answers: HashMap<u64, Vec<u8>>,
    order: VecDeque<u64>,
    cap: usize,
}

impl Recent {
    pub fn new(cap: usize) -> Self {
        Recent {
            answers: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub fn get(&self, request_id: u64) -> Option<&[u8]> {
        self.answers.get(&request_id).map(Vec::as_slice)
    }

    pub fn remember(&mut self, request_id: u64, frame: Vec<u8>) {
        if self.answers.insert(request_id, frame).is_none() {
            self.order.push_back(request_id);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.answers.remove(&old);
            }
        }
    }
}

/// A command waiting for its device to come online.
#[derive(Debug, Clone)]
struct Queued {
    client: Vec<u8>,
    request_id: u64,
    device: String,
    command: Command,
    timeout_ms: u32,
    queue_ms: u32,
    expires_ms: u64,
}

/// What an operator asked of a device.
pub(super) struct Ask {
    pub device: String,
    pub command: Command,
    /// How long to wait for the answer (0: the hub's default).
    pub timeout_ms: u32,
    /// How long to wait for an offline device (0: do not wait).
    pub queue_ms: u32,
}

/// What the driver saw when it sent a command ([`Action::Command`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// On its way to the device.
    Yes,
    /// The device's command socket is not connected.
    Unreachable,
    /// The device is connected but its queue is full: it is not reading.
    NotReading,
    /// Sending failed otherwise.
    Failed(String),
}

/// Every command between the operator's request and its answer.
#[derive(Debug)]
pub(super) struct Commands {
    pending: Pending,
    recent: Recent,
    queued: Vec<Queued>,
    /// Commands sent but not yet confirmed by the driver, by correlation
    /// id: the queue allowance they came with (0: none), so one the device
    /// cannot take yet can wait for it.
    unconfirmed: HashMap<u64, Queued>,
    /// Devices told to connect their other sockets again, and when.
    relinked: HashMap<String, u64>,
    /// Answers to the hub's own commands ([`INTERNAL_CLIENT`]), by request
    /// id, for their owner to take.
    internal: Vec<(u64, Response)>,
}

impl Commands {
    pub(super) fn new() -> Commands {
        Commands {
            pending: Pending::default(),
            recent: Recent::new(REMEMBERED),
            queued: Vec::new(),
            unconfirmed: HashMap::new(),
            relinked: HashMap::new(),
            internal: Vec::new(),
        }
    }
}

impl Commands {
    /// The answers to the hub's own commands since the last call.
    pub(super) fn take_internal(&mut self) -> Vec<(u64, Response)> {
        std::mem::take(&mut self.internal)
    }
}

impl Core {
    /// An operator asks for a command: sent now if the device is online,
    /// else queued for up to `queue_ms` (0: answered "offline" at once).
    pub(super) fn command_request(&mut self, client: &[u8], request_id: u64, ask: Ask, now: Now) {
        let q = Queued {
            client: client.to_vec(),
            request_id,
            expires_ms: now.mono_ms + u64::from(ask.queue_ms),
            device: ask.device,
            command: ask.command,
            timeout_ms: ask.timeout_ms,
            queue_ms: ask.queue_ms,
        };
        match self.send_command(&q, now) {
            Ok(corr) => self.sending(corr, q),
            Err(OperatorError::DeviceOffline(device)) if q.queue_ms > 0 => {
                self.queue(q, &device);
            }
            Err(e) => self.answer(&q.client, q.request_id, Response::Error(e)),
        }
    }

    fn queue(&mut self, q: Queued, device: &str) {
        if self.commands.queued.len() >= MAX_QUEUED {
            let why = format!("{MAX_QUEUED} commands already wait for their devices");
            let e = OperatorError::BadRequest(why);
            return self.answer(&q.client, q.request_id, Response::Error(e));
        }
        info!(
            device,
            queue_ms = q.queue_ms,
            "device offline: command queued"
        );
        self.commands.queued.push(q);
    }

    /// `q`'s command is on its way (as `corr`) until the driver confirms
    /// it ([`Core::command_sent`]).
    fn sending(&mut self, corr: u64, q: Queued) {
        self.commands.unconfirmed.insert(corr, q);
    }

    /// Why `device` cannot be reached now: offline, or never seen.
    /// Online means heard from; only an offline device needs the store to
    /// tell "never seen" from "gone".
    pub(super) fn not_here(&self, device: String) -> OperatorError {
        match self.store.device_known(&device) {
            Ok(true) => OperatorError::DeviceOffline(device),
            // Another front-end has held it: known to the fleet.
            Ok(false) if self.known_in_cluster(&device) => OperatorError::DeviceOffline(device),
            Ok(false) => OperatorError::UnknownDevice(device),
            Err(e) => OperatorError::Storage(e.to_string()),
        }
    }

    /// Sends `q` if its device is online, returning its correlation id; or
    /// says why not.
    fn send_command(&mut self, q: &Queued, now: Now) -> Result<u64, OperatorError> {
        if let Err(e) = validate_device_id(&q.device) {
            return Err(OperatorError::BadRequest(e.to_string()));
        }
        let route = self.routes.route(&q.device).map(<[u8]>::to_vec);
        let Some(route) = route.filter(|_| self.presence.is_online(&q.device)) else {
            return Err(self.not_here(q.device.clone()));
        };
        if self.commands.pending.in_flight() >= MAX_PENDING {
            let why = format!("{MAX_PENDING} commands are already waiting for answers");
            return Err(OperatorError::BadRequest(why));
        }
        let timeout_ms = if q.timeout_ms == 0 {
            self.config.commands.timeout_ms
        } else {
            q.timeout_ms
        };
        let command = limit_exec(q.command.clone(), timeout_ms);
        let corr = self.commands.pending.next_corr();
        let request = CommandRequest { corr, command };
        // An agent on one connection takes it on its telemetry connection.
        let carried = self.routes.carried(&q.device).is_some();
        let frame = if carried {
            Downstream::Command(request).encode()
        } else {
            CommandFrame::from(request).encode()
        }
        .map_err(|e| OperatorError::BadRequest(e.to_string()))?;
        self.commands.pending.insert(
            corr,
            PendingCommand {
                client: q.client.clone(),
                request_id: q.request_id,
                device: q.device.clone(),
                deadline_ms: now.mono_ms + u64::from(timeout_ms),
                timeout_ms,
                log_id: 0,
            },
        );
        self.out.push_back(Action::Command {
            corr,
            device: q.device.clone(),
            route,
            frame,
            carried,
        });
        Ok(corr)
    }

    /// The driver tried to send command `corr`. Sent: it is logged and
    /// waits for its answer. Unreachable: the device's command socket is
    /// not connected (yet), so the command waits if it may, or the operator
    /// hears "offline". NotReading: the operator hears so at once, rather
    /// than after the command's timeout.
    pub fn command_sent(&mut self, corr: u64, sent: Sent, now: Now) {
        self.wall_ms = now.wall_ms;
        let Some(q) = self.commands.unconfirmed.remove(&corr) else {
            return;
        };
        if sent == Sent::Yes {
            self.counters.commands_sent += 1;
            let log_id = self.store.log_command(&q.device, &q.command, now.wall_ms);
            self.commands.pending.set_log_id(corr, log_id);
            return;
        }
        self.commands.pending.forget(corr);
        if sent == Sent::Unreachable {
            self.relink_if_stuck(&q.device, now);
        }
        let e = match sent {
            Sent::Failed(why) => OperatorError::BadRequest(format!("could not send: {why}")),
            Sent::NotReading => OperatorError::NotReading(q.device.clone()),
            _ => OperatorError::DeviceOffline(q.device.clone()),
        };
        match e {
            OperatorError::DeviceOffline(device) if now.mono_ms < q.expires_ms => {
                self.queue(q, &device)
            }
            e => self.answer(&q.client, q.request_id, Response::Error(e)),
        }
    }

    /// A device online for a while whose commands socket the hub cannot
    /// reach (libzmq reconnects a socket only when it sees the connection
    /// end): tell it, on its telemetry connection, to connect its other
    /// sockets again. At most once per [`RELINK_EVERY_MS`].
    fn relink_if_stuck(&mut self, device: &str, now: Now) {
        let Some(since) = self.presence.online_since(device) else {
            return;
        };
        let last = self.commands.relinked.get(device).copied();
        if now.mono_ms.saturating_sub(since.mono_ms) < RELINK_GRACE_MS
            || last.is_some_and(|at| now.mono_ms.saturating_sub(at) < RELINK_EVERY_MS)
        {
            return;
        }
        self.commands
            .relinked
            .retain(|_, at| now.mono_ms.saturating_sub(*at) < RELINK_EVERY_MS);
        self.commands
            .relinked
            .insert(device.to_string(), now.mono_ms);
        warn!(
            device,
            "the device is online but its commands socket is not connected here; asked it to reconnect"
        );
        let reason = "the hub cannot reach this agent's commands socket".to_string();
        self.send_down(device, Relink { reason }.into());
    }

    /// A device answered on the commands socket: `[route][][frame]`. Only
    /// the route that speaks for the device is heard.
    pub fn reply(&mut self, frames: &[Vec<u8>], user_id: Option<&str>, now: Now) {
        self.wall_ms = now.wall_ms;
        let [route, empty, frame] = frames else {
            return self.dropped("commands", "reply without the REP envelope");
        };
        if !empty.is_empty() {
            return self.dropped("commands", "reply without the REP envelope");
        }
        let device = match fleetmq_protocol::route_device(route) {
            Ok(d) => d.to_string(),
            Err(e) => return self.dropped("commands", e),
        };
        if !self.admit("commands", &device, user_id, now) {
            return;
        }
        if !self.routes.holds(&device, route) {
            return self.dropped(
                "commands",
                "a reply from a connection that does not speak for its device",
            );
        }
        let ReplyFrame::Reply(reply) = match ReplyFrame::decode(frame) {
            Ok(r) => r,
            Err(e) => return self.dropped("commands", e),
        };
        self.replied(device, reply, now);
    }

    /// `device` answered a command, on its commands socket or its
    /// telemetry connection (an agent on one connection), from the route
    /// that speaks for it.
    pub(super) fn replied(&mut self, device: String, reply: CommandReply, now: Now) {
        let Some(p) = self.commands.pending.answer(reply.corr, &device) else {
            debug!(
                device,
                corr = reply.corr,
                "late or unexpected command reply ignored"
            );
            return;
        };
        self.commands.unconfirmed.remove(&reply.corr);
        let summary = serde_json::to_string(&reply.reply).unwrap_or_default();
        self.store
            .log_command_result(p.log_id, &summary, now.wall_ms);
        let reply = reply.reply;
        self.answer(&p.client, p.request_id, Response::Reply { device, reply });
    }

    /// Commands whose device did not answer in time.
    pub(super) fn expire_commands(&mut self, now: Now) {
        for p in self.commands.pending.expired(now.mono_ms) {
            self.counters.commands_timed_out += 1;
            self.store
                .log_command_result(p.log_id, "timed out", now.wall_ms);
            let e = OperatorError::TimedOut {
                after_ms: p.timeout_ms,
            };
            self.answer(&p.client, p.request_id, Response::Error(e));
        }
    }

    /// Sends queued commands whose device is back; fails those that waited
    /// too long.
    pub(super) fn send_queued(&mut self, now: Now) {
        for q in std::mem::take(&mut self.commands.queued) {
            if now.mono_ms >= q.expires_ms {
                let e = OperatorError::StayedOffline {
                    device: q.device,
                    waited_ms: q.queue_ms,
                };
                self.answer(&q.client, q.request_id, Response::Error(e));
                continue;
            }
            if !self.presence.is_online(&q.device) {
                self.commands.queued.push(q);
                continue;
            }
            match self.send_command(&q, now) {
                Ok(corr) => {
                    info!(device = q.device, "queued command sent");
                    self.sending(corr, q);
                }
                Err(OperatorError::DeviceOffline(_)) => self.commands.queued.push(q),
                Err(e) => self.answer(&q.client, q.request_id, Response::Error(e)),
            }
        }
    }

    /// A request the hub has seen before (the operator retried it): its
    /// remembered answer is sent again, or, still in flight, it will be
    /// answered on the new client id. Returns false for a new request.
    pub(super) fn retried(&mut self, client: &[u8], request_id: u64) -> bool {
        if let Some(frame) = self.commands.recent.get(request_id) {
            let frame = frame.to_vec();
            let client = client.to_vec();
            self.out.push_back(Action::Operator { client, frame });
            return true;
        }
        if self.commands.pending.retarget(request_id, client)
            || self.reads.retarget(request_id, client)
        {
            return true;
        }
        let waiting = self.commands.queued.iter_mut();
        let unsent = self.commands.unconfirmed.values_mut();
        match waiting
            .chain(unsent)
            .find(|q| q.request_id == request_id && q.client != INTERNAL_CLIENT)
        {
            Some(q) => {
                q.client = client.to_vec();
                true
            }
            None => false,
        }
    }

    /// Answers an operator client. Answers to requests that act are kept
    /// for retries; reads are safe to repeat and may be large.
    pub(super) fn answer(&mut self, client: &[u8], id: u64, response: Response) {
        if client == INTERNAL_CLIENT {
            return self.commands.internal.push((id, response));
        }
        let acted = matches!(
            response,
            Response::JobSubmitted { .. }
                | Response::Broadcast { .. }
                | Response::Reply { .. }
                | Response::FleetCommandQueued { .. }
                | Response::ConfigVersion { .. }
        );
        let frame = match OperatorReplyFrame::from(OperatorResponse { id, response }).encode() {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "could not encode an operator response");
                return;
            }
        };
        if acted && id != 0 {
            self.commands.recent.remember(id, frame.clone());
        }
        let client = client.to_vec();
        self.out.push_back(Action::Operator { client, frame });
    }
}

/// The program of an exec command must end, and its answer arrive, before
/// the operator stops waiting: its time limit is capped below `timeout_ms`.
fn limit_exec(mut command: Command, timeout_ms: u32) -> Command {
    if let Command::Exec {
        timeout_ms: limit, ..
    } = &mut command
    {
        let most = timeout_ms.saturating_sub(500).max(timeout_ms / 2);
        *limit = if *limit == 0 {
            most
        } else {
            (*limit).min(most)
        };
    }
    command
}

#[cfg(test)]
mod tests;
