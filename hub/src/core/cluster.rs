//! A hub as a front-end over a NATS JetStream cluster (see
//! [`crate::cluster`]): a batch is acked once the stream has it, not once
//! this hub's store has it; the stream, read back in order, fills the
//! store with the whole fleet's telemetry; devices held here are told to
//! the cluster, and one taken by another front-end is let go.

use fleetmq_protocol::{Ack, Batch, ChatMessage, names};
use tracing::{info, warn};

use super::budgets::Throttle;
use super::{Action, Core, Now};
use crate::cluster::{Replicated, ToCluster, lines};
use crate::store::{Incoming, Stored};

/// How long an agent waits before sending again a batch the cluster did
/// not take.
const CLUSTER_RETRY_MS: u32 = 5_000;
/// The mark of the last stream sequence stored.
pub const STREAM_MARK: &str = "telemetry_stream";

impl Core {
    /// Makes this hub a front-end: from now on batches go to the cluster
    /// before they are acked ([`Core::replicated`]), and the store is
    /// filled from the stream ([`Core::from_stream`]).
    pub fn front_end(&mut self) {
        self.front_end = true;
    }

    /// Whether this hub is a front-end.
    pub fn is_front_end(&self) -> bool {
        self.front_end
    }

    /// The batches of this round, handed to the cluster.
    pub(super) fn replicate(&mut self, batches: Vec<(String, Batch, Vec<u8>)>) {
        for (device, batch, body) in batches {
            let lines = lines::batch_lines(&device, &batch);
            self.counters.batches_replicating += 1;
            self.out.push_back(Action::Cluster(ToCluster::Batch {
                device,
                seq: batch.seq,
                lines,
                body,
            }));
        }
    }

    /// JetStream's word on a batch: acked if the stream has it (now or
    /// before), else held back and sent again by its agent.
    pub fn replicated(&mut self, device: &str, seq: u64, outcome: Replicated) {
        self.counters.batches_replicating = self.counters.batches_replicating.saturating_sub(1);
        match outcome {
            Replicated::Stored => self.counters.batches_replicated += 1,
            Replicated::Duplicate => self.counters.batches_duplicate += 1,
            Replicated::Failed(why) => {
                if self.cluster_problem.is_none() {
                    warn!(%why, "the cluster does not take telemetry; batches are held back (Throttled, not acked) and agents keep them in their spools");
                }
                self.cluster_problem = Some(why.clone());
                let wait = Throttle {
                    retry_after_ms: CLUSTER_RETRY_MS,
                    reason: format!(
                        "the cluster did not take the batch ({why}); it is kept and sent again"
                    ),
                };
                return self.hold_back(device, seq, wait);
            }
        }
        if self.cluster_problem.take().is_some() {
            info!("the cluster takes telemetry again");
        }
        self.send_down(device, Ack { seq }.into());
    }

    /// The connection to NATS changed: `None` when it works again.
    pub fn cluster_connection(&mut self, problem: Option<String>) {
        match &problem {
            Some(why) => {
                warn!(%why, "lost the NATS cluster; telemetry is not acked until it is back")
            }
            None if self.cluster_problem.is_some() => info!("connected to the NATS cluster"),
            None => {}
        }
        self.cluster_problem = problem;
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
                match fleetmq_protocol::envelope::body::<Batch>("Batch", body) {
                    Ok(b) => Some((device.as_str(), b, body.as_slice())),
                    Err(e) => {
                        warn!(device, error = %e, "a batch on the stream could not be read; skipped");
                        None
                    }
                }
            })
            .collect();
        let items: Vec<Incoming<'_>> = decoded
            .iter()
            .map(|(device, batch, body)| Incoming {
                device,
                batch,
                body,
            })
            .collect();
        let (outcomes, chat) = match self.store.store_batches(&items, now.wall_ms) {
            Ok(r) => r,
            Err(e) => {
                // Read again from the last mark at the next start; until
                // then, queries here miss these batches (the stream has them).
                self.store_failed("storing telemetry from the stream", &e);
                return;
            }
        };
        if let Err(e) = self.store.set_mark(STREAM_MARK, last) {
            self.store_failed("keeping the place in the stream", &e);
        }
        self.store_works();
        for ((device, batch, _), outcome) in decoded.iter().zip(outcomes) {
            match outcome {
                Stored::New => {
                    self.counters.batches_stored += 1;
                    self.counters.samples_stored += batch.samples.len() as u64;
                    self.latest.record(device, batch.resolved_samples());
                }
                Stored::Duplicate => {}
                Stored::Taken { .. } => warn!(
                    device,
                    seq = batch.seq,
                    "the stream holds two different batches with one number from this device (two agents with one device id?); the first is kept"
                ),
            }
        }
        for row in chat {
            let msg = ChatMessage {
                from: row.device,
                ts_ms: row.ts_ms,
                text: row.text,
            };
            self.publish(names::CHAT_TOPIC, msg.into());
        }
    }

    /// Another front-end holds `device` now (its newest connection went
    /// there): this one lets it go.
    pub fn held_elsewhere(&mut self, device: &str, frontend: &str) {
        if !self.presence.is_online(device) {
            return;
        }
        self.routes.release(device);
        self.presence.bye(device);
        info!(device, frontend, "device moved to another front-end");
    }

    /// Tells the cluster that `device` is online here (or not).
    pub(super) fn tell_cluster(&mut self, msg: ToCluster) {
        if self.front_end {
            self.out.push_back(Action::Cluster(msg));
        }
    }
}
