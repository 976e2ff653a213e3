//! Telemetry in: a batch is checked, stored with the others of its round in
//! one transaction, and only then acked; chat lines in it are relayed to
//! the room; the newest value of each series is kept for `/metrics`.
//!
//! The telemetry socket also carries Hello, Bye and heartbeats: any
//! message keeps its device online ([`Core::heard`]).

use fleetmq_protocol::{
    Ack, Batch, ChatMessage, Refusal, Rejected, Renumber, Upstream, names, route_device,
};
use tracing::warn;

use super::{Core, Now};
use crate::store::{Incoming, MAX_SAMPLES_PER_BATCH, Stored};

/// Batches read in this round, waiting to be stored and acked together.
#[derive(Debug, Default)]
pub(super) struct Received {
    /// (device, batch, its postcard body as it arrived).
    batches: Vec<(String, Batch, Vec<u8>)>,
}

impl Core {
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
            Upstream::Heartbeat(_) => return self.heard(&device, now),
            Upstream::Batch(batch) => batch,
        };
        self.heard(&device, now);
        if let Err(e) = check(&batch) {
            self.dropped("telemetry", &e);
            let reason = format!("batch {} refused: {e}", batch.seq);
            let seq = batch.seq;
            self.send_down(&device, Rejected { seq, reason }.into());
            return;
        }
        // Stored as it arrived: the frame after its envelope header.
        match fleetmq_protocol::envelope::open(frame) {
            Ok((_, body)) => self.telemetry.batches.push((device, batch, body.to_vec())),
            Err(e) => self.dropped("telemetry", e),
        }
    }

    /// Stores the batches read in this round in one transaction, then acks
    /// each (a duplicate too: it is stored already) and relays their chat.
    /// If the store fails nothing is acked, and agents resend.
    pub fn store_received(&mut self, now: Now) {
        let batches = std::mem::take(&mut self.telemetry.batches);
        if batches.is_empty() {
            return;
        }
        let items: Vec<Incoming<'_>> = batches
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
                warn!(error = %e, batches = items.len(), "could not store batches; they will be resent");
                return;
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
