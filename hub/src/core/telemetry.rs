//! Telemetry in: a batch is checked, stored with the others of its round in
//! one transaction, and only then acked; chat lines in it are relayed to
//! the room; the newest value of each series is kept for `/metrics`.
//!
//! The telemetry socket also carries Hello, Bye and heartbeats, and from
//! an agent on one connection its job results and command replies: any
//! message keeps its device online ([`Core::heard`]).

use fleetmq_protocol::{
    Ack, Batch, ChatMessage, ChatRow, Refusal, Rejected, Renumber, Upstream, names, route_device,
};
use tracing::warn;

use super::budgets::Throttle;
use super::{Core, Now};
use crate::store::{Incoming, MAX_SAMPLES_PER_BATCH, Stored};

/// Records one round reads at most before it stores and acks them (a
/// batch is never split, so a round holds at least one).
pub const ROUND_RECORDS: usize = 20_000;
/// Bytes of batches one round reads at most.
pub const ROUND_BYTES: usize = 4 << 20;

/// How long an agent waits before sending again a batch the hub could not
/// store (a full disk).
const STORE_RETRY_MS: u32 = 5_000;

/// Batches read in this round, waiting to be stored and acked together.
#[derive(Debug, Default)]
pub(super) struct Received {
    /// (device, batch, its postcard body as it arrived).
    batches: Vec<(String, Batch, Vec<u8>)>,
    records: usize,
    bytes: usize,
}

impl Core {
    /// A heartbeat's uptime, for how far the device's clock is from ours;
    /// one newly a minute or more off is said once a Hello, since its
    /// samples are stamped so.
    fn clock_heard(&mut self, device: &str, uptime_ms: u64, now: Now) {
        if let Some(offset) = self.clocks.heartbeat(device, uptime_ms, now.wall_ms) {
            warn!(
                device,
                offset_ms = offset,
                "the device's clock is {} the hub's: its samples are stamped by it (is NTP reachable from it?)",
                super::clocks::words(offset)
            );
        }
    }

    /// One message from the telemetry socket: `[route][frame]`, with the
    /// user id ZAP gave its connection and the peer's address. Batches wait
    /// for [`Core::store_received`], which the driver calls once it has
    /// read what is waiting.
    pub fn upstream(
        &mut self,
        frames: &[Vec<u8>],
        user_id: Option<&str>,
        address: Option<&str>,
        now: Now,
    ) {
        let [route, frame] = frames else {
            self.dropped("telemetry", "message without a body");
            return;
        };
        // The round's work: every frame read counts, kept or not.
        self.telemetry.bytes += frame.len();
        let device = match route_device(route) {
            Ok(d) => d.to_string(),
            Err(e) => return self.refuse_route(route, user_id, &e, now),
        };
        if !self.admit("telemetry", &device, user_id, now) {
            self.tell_if_misnamed(route, &device, user_id, now);
            return;
        }
        if !self.holds(&device, route, address.unwrap_or("unknown address"), now) {
            return;
        }
        // A device told to wait that sends anyway is answered from the
        // batch's number alone, without reading the batch.
        if let Some(t) = self.budgets.held(&device, now.mono_ms)
            && let Some(seq) = Upstream::batch_seq(frame)
        {
            self.heard(&device, now);
            return self.throttle(&device, seq, t);
        }
        let msg = match Upstream::decode(frame) {
            Ok(m) => m,
            Err(e) => {
                self.dropped("telemetry", &e);
                let reason = e.to_string();
                self.send_to_route(route.clone(), Refusal { reason }.into());
                return;
            }
        };
        let batch = match msg {
            Upstream::Hello(hello) => return self.hello(&device, &hello, now),
            Upstream::Bye(bye) => {
                let why = format!("bye: {}", bye.reason);
                return self.went_offline(&device, now, &why);
            }
            Upstream::Heartbeat(hb) => {
                self.heard(&device, now);
                return self.clock_heard(&device, hb.uptime_ms, now);
            }
            Upstream::Offer(mut offer) => {
                self.heard(&device, now);
                self.keep_facts(&device, std::mem::take(&mut offer.0.facts), now);
                let applied = offer.0.config_version;
                self.clocks.offered(&device, offer.0.hello_on_clock_step);
                self.offered(&device, offer.0, now);
                return self.send_config_if_behind(&device, applied);
            }
            Upstream::Applied(applied) => {
                self.heard(&device, now);
                return self.config_applied(&device, applied.0, now);
            }
            Upstream::Result(result) => {
                self.heard(&device, now);
                if result.device != device {
                    return self.dropped("telemetry", "a job result naming another device");
                }
                return self.take_result(result, now);
            }
            Upstream::Reply(reply) => {
                self.heard(&device, now);
                return self.replied(device, reply, now);
            }
            Upstream::Batch(batch) | Upstream::LogBatch(fleetmq_protocol::LogBatch(batch)) => batch,
        };
        self.heard(&device, now);
        self.telemetry.records += batch.record_count();
        if let Err(e) = check(&batch) {
            self.dropped("telemetry", &e);
            self.counters.batches_rejected += 1;
            let reason = format!("batch {} refused: {e}", batch.seq);
            let seq = batch.seq;
            self.send_down(&device, Rejected { seq, reason }.into());
            return;
        }
        if !self.within_budget(&device, &batch, frame.len(), now) {
            return;
        }
        // Stored as it arrived: the frame after its envelope header.
        match fleetmq_protocol::envelope::open(frame) {
            Ok((_, body)) => self.telemetry.batches.push((device, batch, body.to_vec())),
            Err(e) => self.dropped("telemetry", e),
        }
    }

    /// Whether this round has read as much as one round may (every frame
    /// read counts, stored or refused): the driver then stops reading and
    /// stores what it kept, so the loop's work per round is bounded
    /// whatever devices send (`ROUND_RECORDS`, `ROUND_BYTES`).
    pub fn round_full(&self) -> bool {
        let r = &self.telemetry;
        r.records >= ROUND_RECORDS || r.bytes >= ROUND_BYTES
    }

    /// Stores the batches read in this round in one transaction, then acks
    /// each (a duplicate too: it is stored already) and relays their chat.
    /// If the store fails nothing is acked: each batch is answered
    /// `Throttled`, and its agent sends it again.
    pub fn store_received(&mut self, now: Now) {
        let batches = std::mem::take(&mut self.telemetry.batches);
        (self.telemetry.records, self.telemetry.bytes) = (0, 0);
        if batches.is_empty() {
            return;
        }
        if self.is_front_end() {
            return self.replicate(batches);
        }
        let items: Vec<(&str, &Batch, &[u8])> = batches
            .iter()
            .map(|(device, batch, body)| (device.as_str(), batch, body.as_slice()))
            .collect();
        let (outcomes, chat) = match self.store_round(&items, now) {
            Ok(r) => r,
            Err(e) => {
                self.store_failed("storing telemetry", &e);
                // Told, not acked: each agent keeps its batch and sends it
                // again after the wait (the store's failure is logged once,
                // above, not as each device's budget).
                let reason =
                    format!("the hub cannot store telemetry now ({e}); it is kept and sent again");
                for (device, batch, _) in &batches {
                    let wait = Throttle {
                        retry_after_ms: STORE_RETRY_MS,
                        reason: reason.clone(),
                    };
                    self.hold_back(device, batch.seq, wait);
                }
                return;
            }
        };
        self.store_works();
        for ((device, batch, _), outcome) in batches.iter().zip(outcomes) {
            match outcome {
                Stored::New => self.count_stored(device, batch, now),
                Stored::Duplicate => self.counters.batches_duplicate += 1,
                Stored::Taken { from } => {
                    self.counters.batches_renumbered += 1;
                    warn!(
                        device,
                        seq = batch.seq,
                        from,
                        "batch number already used by another agent with this device id (a wiped data directory, or a cloned SD card); told the agent to renumber from {from}"
                    );
                    let msg = Renumber {
                        seq: batch.seq,
                        from,
                    };
                    self.send_down(device, msg.into());
                    continue;
                }
            }
            self.send_down(device, Ack { seq: batch.seq }.into());
        }
        self.relay_chat(chat);
    }

    /// Stores one round's batches (device, batch, body as it arrived) in
    /// one transaction: each one's outcome, and the chat lines stored.
    pub(super) fn store_round(
        &mut self,
        batches: &[(&str, &Batch, &[u8])],
        now: Now,
    ) -> Result<(Vec<Stored>, Vec<ChatRow>), crate::store::StoreError> {
        let items: Vec<Incoming<'_>> = batches
            .iter()
            .map(|(device, batch, body)| Incoming {
                device,
                batch,
                body,
            })
            .collect();
        self.store.store_batches(&items, now.wall_ms)
    }

    /// A batch stored for the first time: counted, its newest values kept,
    /// its log lines looked at by the log rules.
    pub(super) fn count_stored(&mut self, device: &str, batch: &Batch, now: Now) {
        self.counters.batches_stored += 1;
        self.counters.samples_stored += batch.samples.len() as u64;
        self.counters.log_lines_stored += batch.logs.len() as u64;
        self.latest
            .record(device, batch.newest_samples().into_iter());
        self.alerts.saw_logs(device, batch, now.mono_ms);
    }

    /// Chat lines stored, relayed to the room.
    pub(super) fn relay_chat(&mut self, chat: Vec<ChatRow>) {
        for row in chat {
            let msg = ChatMessage {
                from: row.device,
                ts_ms: row.ts_ms,
                text: row.text,
            };
            self.publish(names::CHAT_TOPIC, msg.into());
        }
    }
}

/// Why a well-formed batch cannot be stored, if it cannot.
fn check(batch: &Batch) -> Result<(), String> {
    batch.validate().map_err(|e| e.to_string())?;
    if batch.samples.len() > MAX_SAMPLES_PER_BATCH {
        return Err(format!(
            "{} samples is over the {MAX_SAMPLES_PER_BATCH} a batch may hold",
            batch.samples.len()
        ));
    }
    Ok(())
}
