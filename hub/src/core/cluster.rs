//! A hub as a front-end over a NATS JetStream cluster (see
//! [`crate::cluster`]): a batch is acked once the stream has it, not once
//! this hub's store has it; the stream, read back in order, fills the
//! store with the whole fleet's telemetry; devices held here are told to
//! the cluster, and one taken by another front-end is let go.

use fleetmq_protocol::{Ack, Batch, FrontEndStats};
use tracing::{info, warn};

use super::budgets::Throttle;
use super::{Action, Core, Now};
use std::collections::{HashMap, HashSet};

use fleetmq_protocol::{OperatorFrame, Request, Target};

use crate::cluster::{Holder, Replicated, ToCluster};
use crate::store::Stored;

mod front_ends;

/// What a front-end knows of the others.
#[derive(Debug, Default)]
pub(super) struct Cluster {
    /// This front-end's name.
    name: String,
    /// Who holds each device, from the cluster's bucket.
    holders: HashMap<String, Holder>,
    /// The front-ends alive.
    live: HashSet<String>,
    /// What the other live front-ends last reported of their own traffic.
    reports: Vec<FrontEndStats>,
    /// The live front-ends that lack some of this one's features, as the
    /// log last said (said again only when it changes).
    told_lacking: Vec<(String, Vec<&'static str>)>,
    /// Since when (monotonic ms) the cluster has not taken telemetry.
    trouble_since: Option<u64>,
    /// The telemetry port is closed (cut off from the cluster).
    door_closed: bool,
    /// Batches read from the stream could not be stored: the mark no
    /// longer moves, so a restart reads them again.
    stream_gap: bool,
}

impl Cluster {
    pub(super) fn name(&self) -> &str {
        &self.name
    }
}

/// How long a front-end cut off from the cluster keeps its agents.
pub const CUT_OFF_MS: u64 = 5_000;

/// How much longer than the command's own time a forwarded command waits.
const ASK_MARGIN_MS: u64 = 2_000;

/// How long an agent waits before sending again a batch the cluster did
/// not take.
const CLUSTER_RETRY_MS: u32 = 5_000;
/// The mark of the last stream sequence stored.
pub const STREAM_MARK: &str = "telemetry_stream";

impl Core {
    /// Makes this hub a front-end: from now on batches go to the cluster
    /// before they are acked ([`Core::replicated`]), and the store is
    /// filled from the stream ([`Core::from_stream`]).
    pub fn front_end(&mut self, name: &str) {
        self.cluster.name = name.to_string();
    }

    /// Whether this hub is a front-end (it has a name in a cluster).
    pub(super) fn is_front_end(&self) -> bool {
        !self.cluster.name.is_empty()
    }

    /// The batches of this round, handed to the cluster.
    pub(super) fn replicate(&mut self, batches: Vec<(String, Batch, Vec<u8>)>) {
        for (device, batch, body) in batches {
            self.counters.batches_replicating += 1;
            self.out.push_back(Action::Cluster(ToCluster::Batch {
                device,
                batch,
                body,
            }));
        }
    }

    /// JetStream's word on a batch: acked if the stream has it (now or
    /// before), else held back and sent again by its agent.
    pub fn replicated(&mut self, device: &str, seq: u64, outcome: Replicated, now: Now) {
        self.counters.batches_replicating = self.counters.batches_replicating.saturating_sub(1);
        match outcome {
            Replicated::Stored => self.counters.batches_replicated += 1,
            Replicated::Duplicate => self.counters.batches_duplicate += 1,
            Replicated::Failed(why) => {
                if self.cluster_problem.is_none() {
                    warn!(%why, "the cluster does not take telemetry; batches are held back (Throttled, not acked) and agents keep them in their spools");
                }
                self.cluster_trouble(Some(why.clone()), now);
                let wait = Throttle {
                    retry_after_ms: CLUSTER_RETRY_MS,
                    reason: format!(
                        "the cluster did not take the batch ({why}); it is kept and sent again"
                    ),
                };
                return self.hold_back(device, seq, wait);
            }
        }
        if self.cluster_problem.is_some() {
            info!("the cluster takes telemetry again");
            self.cluster_trouble(None, now);
        }
        self.send_down(device, Ack { seq }.into());
    }

    /// The connection to NATS changed: `None` when it works again.
    pub fn cluster_connection(&mut self, problem: Option<String>, now: Now) {
        match &problem {
            Some(why) if self.cluster_problem.is_none() => {
                warn!(%why, "lost the NATS cluster; telemetry is not acked until it is back")
            }
            None if self.cluster_problem.is_some() => {
                info!("the NATS cluster takes telemetry again")
            }
            _ => {}
        }
        self.cluster_trouble(problem, now);
    }

    /// Notes the cluster's trouble (`None`: none) from `now`.
    fn cluster_trouble(&mut self, problem: Option<String>, now: Now) {
        match problem {
            Some(why) => {
                self.cluster.trouble_since.get_or_insert(now.mono_ms);
                self.cluster_problem = Some(why);
            }
            None => {
                self.cluster.trouble_since = None;
                self.cluster_problem = None;
            }
        }
    }

    /// A front-end cut off from the cluster for [`CUT_OFF_MS`] closes its
    /// telemetry port, which ends its agents' connections: they move to
    /// another front-end, their spools holding what was not acked. It opens
    /// the port again once the cluster takes telemetry. Called every tick.
    pub(super) fn door(&mut self, now: Now) {
        if !self.is_front_end() {
            return;
        }
        let cut_off = self
            .cluster
            .trouble_since
            .is_some_and(|since| now.mono_ms.saturating_sub(since) >= CUT_OFF_MS);
        if cut_off && !self.cluster.door_closed {
            self.cluster.door_closed = true;
            warn!(
                why = self.cluster_problem.as_deref().unwrap_or(""),
                "cut off from the NATS cluster; closing the telemetry port so that agents move to another front-end (their spools keep what was not acked)"
            );
            self.out.push_back(Action::Door { open: false });
        } else if self.cluster.trouble_since.is_none() && self.cluster.door_closed {
            self.cluster.door_closed = false;
            info!("the NATS cluster is back; the telemetry port is open again");
            self.out.push_back(Action::Door { open: true });
        }
    }

    /// Batches read from the stream, in its order: stored here as a single
    /// hub stores what it receives (a batch stored before is skipped), the
    /// newest values kept and the chat relayed to this front-end's agents.
    /// `last` is the stream sequence of the last, kept so that a restart
    /// reads on from there.
    pub fn from_stream(&mut self, batches: &[(String, Vec<u8>)], last: u64, now: Now) {
        let decoded: Vec<(&str, Batch, &[u8])> = batches
            .iter()
            .filter_map(|(device, body)| {
                match fleetmq_protocol::stored_batch(body) {
                    Ok(b) => Some((device.as_str(), b, body.as_slice())),
                    Err(e) => {
                        warn!(device, error = %e, "a batch on the stream could not be read; skipped");
                        None
                    }
                }
            })
            .collect();
        let items: Vec<(&str, &Batch, &[u8])> =
            decoded.iter().map(|(d, b, body)| (*d, b, *body)).collect();
        let (outcomes, chat) = match self.store_round(&items, now) {
            Ok(r) => r,
            Err(e) => {
                // The stream has them; this store does not. The mark stays
                // where it was from now on, so the next start reads them
                // again (and skips what it has).
                if !self.cluster.stream_gap {
                    warn!(error = %e, "could not store batches read from the stream; queries here miss them until this front-end is restarted (nothing is lost: the stream has them)");
                }
                self.cluster.stream_gap = true;
                self.store_failed("storing telemetry from the stream", &e);
                return;
            }
        };
        if !self.cluster.stream_gap
            && let Err(e) = self.store.set_mark(STREAM_MARK, last)
        {
            self.store_failed("keeping the place in the stream", &e);
        }
        self.store_works();
        for ((device, batch, _), outcome) in decoded.iter().zip(outcomes) {
            match outcome {
                Stored::New => {
                    self.count_stored(device, batch, now);
                    // What the stream holds of a forgotten device is stored
                    // (retention removes it), but not shown as its newest
                    // nor alerted on.
                    if self.cluster_holder(device).is_some_and(Holder::forgotten) {
                        self.latest.forget(device);
                        self.alerts.forget(device);
                    }
                }
                Stored::Duplicate => {}
                Stored::Taken { .. } => warn!(
                    device,
                    seq = batch.seq,
                    "the stream holds two different batches with one number from this device (two agents with one device id?); the first is kept"
                ),
            }
        }
        self.relay_chat(chat);
    }

    /// Who holds `device` now, from the cluster's bucket. If another live
    /// front-end does (its newest connection went there), this one lets it
    /// go. A holder marked forgotten forgets the device here; one that is
    /// not, for a device forgotten here, brings it back.
    pub fn holder_changed(&mut self, device: &str, holder: Option<Holder>) {
        let was_forgotten = self.cluster.holders.get(device).map(Holder::forgotten);
        let forgotten_ms = holder.as_ref().and_then(|h| h.forgotten_ms);
        let present = holder.is_some();
        match holder {
            Some(h) => self.cluster.holders.insert(device.to_string(), h),
            None => self.cluster.holders.remove(device),
        };
        match (was_forgotten, forgotten_ms) {
            (Some(true), Some(_)) => {}
            (_, Some(at_ms)) => self.forget_from_cluster(device, at_ms),
            // Back, or first heard of (this store may have forgotten it
            // while this front-end was away).
            (None | Some(true), None) if present => {
                if let Err(e) = self.store.remember(device) {
                    self.store_failed("remembering a device", &e);
                }
            }
            _ => {}
        }
        if let Some(frontend) = self.held_by_other(device)
            && self.presence.is_online(device)
        {
            self.routes.release(device);
            self.handed.forget_device(device);
            self.presence.bye(device);
            let why = format!("moved to {frontend}");
            if let Err(e) = self.store.log_presence(device, false, self.wall_ms, &why) {
                self.store_failed("logging a connect or disconnect", &e);
            }
            info!(device, frontend, "device moved to another front-end");
        }
    }

    /// The live front-end other than this one that holds `device` online.
    pub(super) fn held_by_other(&self, device: &str) -> Option<String> {
        let h = self.cluster.holders.get(device)?;
        (h.online && h.frontend != self.cluster.name && self.cluster.live.contains(&h.frontend))
            .then(|| h.frontend.clone())
    }

    /// The cluster's holder of `device`, forgotten or not.
    pub(super) fn cluster_holder(&self, device: &str) -> Option<&Holder> {
        self.cluster.holders.get(device)
    }

    /// The holders of the devices some front-end has held, leaving out
    /// those an operator forgot.
    pub(super) fn remembered(&self) -> impl Iterator<Item = (&String, &Holder)> {
        (self.cluster.holders.iter()).filter(|(_, h)| !h.forgotten())
    }

    /// Whether some front-end has held `device` (and it is not forgotten).
    pub(super) fn known_in_cluster(&self, device: &str) -> bool {
        self.cluster_holder(device).is_some_and(|h| !h.forgotten())
    }

    /// The groups of a device some front-end has held, as its last Hello
    /// named them.
    pub(super) fn cluster_groups(&self, device: &str) -> Option<Vec<String>> {
        (self.cluster_holder(device))
            .filter(|h| !h.forgotten())
            .map(|h| h.groups.clone())
    }

    /// A fleet command's share for a device another front-end holds goes
    /// there as a one-device command; its answer comes back to
    /// [`Core::answered_elsewhere`]. False if no other front-end holds it.
    pub(super) fn forward_share(&mut self, row: u64, ask: &super::commands::Ask) -> bool {
        let Some(frontend) = self.held_by_other(&ask.device) else {
            return false;
        };
        let request = Request::Command {
            device: ask.device.clone(),
            command: ask.command.clone(),
            timeout_ms: ask.timeout_ms,
        };
        let frame = fleetmq_protocol::OperatorRequest { id: row, request };
        let Ok(frame) = OperatorFrame::from(frame).encode() else {
            return false;
        };
        let wait = if ask.timeout_ms == 0 {
            self.config.commands.timeout_ms
        } else {
            ask.timeout_ms
        };
        self.out.push_back(Action::Cluster(ToCluster::Ask {
            frontend,
            client: super::commands::INTERNAL_CLIENT.to_vec(),
            frame,
            timeout_ms: u64::from(wait) + ASK_MARGIN_MS,
        }));
        true
    }

    /// Another front-end's answer for `client`: a fleet command share's
    /// (the hub's own client) is stored here, true; an operator's is for
    /// the driver to pass on, false.
    pub fn answered_elsewhere(&mut self, client: &[u8], frame: &[u8]) -> bool {
        if client != super::commands::INTERNAL_CLIENT {
            return false;
        }
        if let Ok(fleetmq_protocol::OperatorReplyFrame::Response(r)) =
            fleetmq_protocol::OperatorReplyFrame::decode(frame)
        {
            self.fleet_answered(r.id, r.response);
        }
        true
    }

    /// Whether this hub checks the alert rules: a single hub does; of the
    /// front-ends, the live one first by name (so each notice goes once).
    pub(super) fn checks_alerts(&self) -> bool {
        if !self.is_front_end() {
            return true;
        }
        let first = self.cluster.live.iter().min();
        first.is_some_and(|f| *f == self.cluster.name)
    }

    /// Devices online at other live front-ends.
    pub(super) fn online_elsewhere(&self) -> impl Iterator<Item = (&str, &Holder)> {
        self.cluster
            .holders
            .iter()
            .filter(|(d, _)| self.held_by_other(d).is_some())
            .map(|(d, h)| (d.as_str(), h))
    }

    /// An operator's command for a device another front-end holds goes to
    /// that front-end, as the operator sent it; its answer comes back to
    /// the operator unchanged. True if it went.
    pub(super) fn forward(&mut self, client: &[u8], frame: &[u8], request: &Request) -> bool {
        let (device, timeout_ms) = match request {
            Request::Command {
                device, timeout_ms, ..
            }
            | Request::QueuedCommand {
                device, timeout_ms, ..
            } => (device, *timeout_ms),
            Request::Broadcast {
                target: Target::Device(device),
                ..
            } => (device, 0),
            _ => return false,
        };
        if !self.is_front_end() || self.presence.is_online(device) {
            return false;
        }
        let Some(frontend) = self.held_by_other(device) else {
            return false;
        };
        let wait = if timeout_ms == 0 {
            self.config.commands.timeout_ms
        } else {
            timeout_ms
        };
        self.out.push_back(Action::Cluster(ToCluster::Ask {
            frontend,
            client: client.to_vec(),
            frame: frame.to_vec(),
            timeout_ms: u64::from(wait) + ASK_MARGIN_MS,
        }));
        true
    }

    /// The front-end asked did not answer (it died, or no longer holds the
    /// device): the request is handled here, the device counting as
    /// offline (queued, if the operator asked for that).
    pub fn unforwarded(&mut self, client: &[u8], frame: &[u8], why: &str, now: Now) {
        if client == super::commands::INTERNAL_CLIENT {
            // A fleet command share: it waits for its device again.
            if let Ok(OperatorFrame::Request(req)) = OperatorFrame::decode(frame) {
                let e = fleetmq_protocol::OperatorError::DeviceOffline(why.to_string());
                self.fleet_answered(req.id, fleetmq_protocol::Response::Error(e));
            }
            return;
        }
        if let Ok(OperatorFrame::Request(req)) = OperatorFrame::decode(frame)
            && let Request::Command { device, .. }
            | Request::QueuedCommand { device, .. }
            | Request::Broadcast {
                target: Target::Device(device),
                ..
            } = &req.request
        {
            info!(device, %why, "the front-end holding the device did not answer; it counts as offline");
            if let Some(h) = self.cluster.holders.get_mut(device) {
                h.online = false;
            }
        }
        let frames = [client.to_vec(), Vec::new(), frame.to_vec()];
        self.operator(&frames, super::Caller::Local, now);
    }

    /// Tells the cluster that `device` is online here (or not).
    pub(super) fn tell_cluster(&mut self, msg: ToCluster) {
        if self.is_front_end() {
            self.out.push_back(Action::Cluster(msg));
        }
    }
}
