//! Telemetry on its way to the hub: pure state, no sockets, no disk.
//!
//! Records (samples, chat and log lines) wait in the spool (see `spool`) until a
//! flush packs them into a batch with the next sequence number; this module
//! knows how many wait and decides when. A sent batch stays in `in_flight`
//! until the hub acks its sequence number; if no ack comes within the ack
//! timeout it is sent again, with exponential backoff and jitter so a fleet
//! does not resend in lockstep. On reconnect everything in flight is due at
//! once. The caller does the I/O and passes the clock in, so every timing
//! rule is tested here with made-up instants.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fleetmq_protocol::{BatchBuilder, EncodeError, Upstream, Value};
use serde::{Deserialize, Serialize};

/// Something the agent accepted for the hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// A measurement.
    Sample {
        name: String,
        ts_ms: u64,
        value: Value,
    },
    /// A chat line; flushed at once.
    Chat { ts_ms: u64, text: String },
    /// A line of a log file (`source`, its path).
    Log {
        ts_ms: u64,
        source: String,
        text: String,
    },
}

/// Limits and timings.
#[derive(Debug, Clone)]
pub struct UplinkLimits {
    pub flush_interval: Duration,
    pub batch_max_records: usize,
    pub max_in_flight: usize,
    pub ack_timeout: Duration,
    pub ack_timeout_max: Duration,
}

#[derive(Debug)]
struct InFlight {
    frame: Vec<u8>,
    /// The spool ids of the records it carries, first and last.
    first: u64,
    last: u64,
    records: usize,
    attempts: u32,
    due: Option<Instant>,
}

/// Counters reported in the agent's status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UplinkCounters {
    pub batches_sent: u64,
    pub batches_acked: u64,
    pub batches_resent: u64,
    /// Records the protocol refused (a bad name, an over-long line).
    pub records_dropped: u64,
    /// Records whose in-flight batch was abandoned when the spool was full.
    pub records_abandoned: u64,
    pub records_acked: u64,
    /// Batches sent again under a new number because the hub held theirs
    /// from another agent with this device id.
    pub batches_renumbered: u64,
    /// Records in batches the hub rejected as invalid (given up).
    pub records_rejected: u64,
    /// Times the hub said a batch was over this device's budget; each was
    /// sent again when the hub said there would be room.
    pub batches_throttled: u64,
}

/// A batch packed from the records offered.
#[derive(Debug, PartialEq)]
pub struct Packed {
    /// How many of the offered records it used (from the front).
    pub used: usize,
    /// The batch, unless every used record was refused by the protocol.
    pub batch: Option<(u64, Vec<u8>)>,
}

#[derive(Debug)]
pub struct Uplink {
    limits: UplinkLimits,
    pending: u64,
    in_flight: BTreeMap<u64, InFlight>,
    last_flush: Instant,
    urgent: bool,
    rng: fastrand::Rng,
    pub counters: UplinkCounters,
}

/// The delay before the `attempt`-th resend: the ack timeout doubled per
/// attempt up to the maximum, then a random point in its upper half
/// ("equal jitter"), so it never drops below half the backoff.
pub fn backoff(base: Duration, max: Duration, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
    let full = base.saturating_mul(1 << attempt.min(16)).min(max);
    let half = full / 2;
    half + half.mul_f64(rng.f64())
}

/// Encodes `records` as batch `seq`, stopping early where the clock jumped
/// too far for one batch, and, when `one_kind`, where log lines and other
/// records meet: the hub keeps batches holding log lines by
/// `[retention.logs]`, so the agent does not mix them with samples.
/// Records the protocol refuses are skipped and counted in `refused`.
/// Returns (records used, frame if any were taken).
pub fn encode_batch(
    seq: u64,
    records: &[&Record],
    one_kind: bool,
    refused: &mut u64,
) -> Result<(usize, Option<Vec<u8>>), EncodeError> {
    let mut builder = BatchBuilder::new(seq);
    let mut used = 0;
    let is_log = |r: &Record| matches!(r, Record::Log { .. });
    for record in records {
        if one_kind && used > 0 && is_log(record) != is_log(records[0]) {
            break;
        }
        let added = match record {
            Record::Sample { name, ts_ms, value } => builder.push_sample(name, *ts_ms, *value),
            Record::Chat { ts_ms, text } => builder.push_chat(*ts_ms, text),
            Record::Log {
                ts_ms,
                source,
                text,
            } => builder.push_log(source, *ts_ms, text),
        };
        match added {
            Ok(()) => {}
            // The clock jumped: this record starts the next batch.
            Err(fleetmq_protocol::BatchError::OffsetOutOfRange { .. }) if !builder.is_empty() => {
                break;
            }
            Err(_) => *refused += 1,
        }
        used += 1;
    }
    if builder.is_empty() {
        return Ok((used, None));
    }
    Ok((used, Some(Upstream::from_batch(builder.finish()).encode()?)))
}

impl Uplink {
    pub fn new(limits: UplinkLimits, now: Instant, seed: u64) -> Self {
        Uplink {
            limits,
            pending: 0,
            in_flight: BTreeMap::new(),
            last_flush: now,
            urgent: false,
            rng: fastrand::Rng::with_seed(seed),
            counters: UplinkCounters::default(),
        }
    }

    /// `n` more records wait in the spool; a chat line among them makes the
    /// next flush due at once.
    pub fn accepted(&mut self, n: u64, chat: bool) {
        self.pending += n;
        self.urgent |= chat;
    }

    /// The spool's count of records waiting (after it dropped some).
    pub fn set_pending(&mut self, n: u64) {
        self.pending = n;
        if n == 0 {
            self.urgent = false;
        }
    }

    pub fn pending_len(&self) -> u64 {
        self.pending
    }

    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    /// The most records one batch takes.
    pub fn batch_max_records(&self) -> usize {
        self.limits.batch_max_records
    }

    /// True when waiting records should be packed into a batch now: the
    /// flush interval passed, a batch is full, or a chat line waits; and the
    /// in-flight window has room.
    pub fn flush_due(&self, now: Instant) -> bool {
        self.pending > 0
            && self.in_flight.len() < self.limits.max_in_flight
            && (self.urgent
                || self.pending >= self.limits.batch_max_records as u64
                || now.duration_since(self.last_flush) >= self.limits.flush_interval)
    }

    /// Packs `records` (the oldest waiting ones, with their spool ids) into
    /// batch `seq`, whatever the window (at shutdown everything is packed).
    /// The frame is in flight from now on and must be sent once the spool
    /// has recorded the batch.
    pub fn pack(
        &mut self,
        now: Instant,
        seq: u64,
        records: &[(u64, &Record)],
    ) -> Result<Packed, EncodeError> {
        let take = records.len().min(self.limits.batch_max_records);
        let list: Vec<&Record> = records[..take].iter().map(|(_, r)| *r).collect();
        let mut refused = 0;
        let (used, frame) = encode_batch(seq, &list, true, &mut refused)?;
        self.counters.records_dropped += refused;
        self.pending = self.pending.saturating_sub(used as u64);
        // A batch cut short (log lines after samples, a clock jump): the
        // rest goes at once, not a flush interval later.
        self.urgent |= used < take;
        if self.pending == 0 {
            self.urgent = false;
        }
        self.last_flush = now;
        let Some(frame) = frame else {
            return Ok(Packed { used, batch: None });
        };
        self.in_flight.insert(
            seq,
            InFlight {
                frame: frame.clone(),
                first: records.first().map_or(0, |(id, _)| *id),
                last: records[..used.min(records.len())]
                    .last()
                    .map_or(0, |(id, _)| *id),
                records: used - refused as usize,
                attempts: 0,
                due: Some(now + self.limits.ack_timeout),
            },
        );
        self.counters.batches_sent += 1;
        Ok(Packed {
            used,
            batch: Some((seq, frame)),
        })
    }

    /// The hub acked `seq`. Returns false for an unknown or repeated ack.
    pub fn ack(&mut self, seq: u64) -> bool {
        match self.in_flight.remove(&seq) {
            Some(f) => {
                self.counters.batches_acked += 1;
                self.counters.records_acked += f.records as u64;
                true
            }
            None => false,
        }
    }

    /// The spool dropped every record below `id`: in-flight batches that
    /// start below it are abandoned (their records counted as dropped).
    /// Returns their sequence numbers.
    pub fn drop_below(&mut self, id: u64) -> Vec<u64> {
        let gone: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.first < id)
            .map(|(s, _)| *s)
            .collect();
        for seq in &gone {
            if let Some(f) = self.in_flight.remove(seq) {
                self.counters.records_abandoned += f.records as u64;
            }
        }
        gone
    }

    /// The lowest spool id still in flight.
    pub fn low_water(&self) -> Option<u64> {
        self.in_flight.values().map(|f| f.first).min()
    }

    /// Batches whose ack is overdue, to send again now; each gets a new,
    /// longer, jittered deadline.
    pub fn resends(&mut self, now: Instant) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        for (seq, f) in &mut self.in_flight {
            if f.due.is_some_and(|d| d <= now) {
                f.attempts += 1;
                let wait = backoff(
                    self.limits.ack_timeout,
                    self.limits.ack_timeout_max,
                    f.attempts,
                    &mut self.rng,
                );
                f.due = Some(now + wait);
                self.counters.batches_resent += 1;
                out.push((*seq, f.frame.clone()));
            }
        }
        out
    }

    /// The connection to the hub was (re)established: everything in flight
    /// is due now, since whatever was on the old connection may be lost.
    pub fn reconnected(&mut self, now: Instant) {
        for f in self.in_flight.values_mut() {
            f.due = Some(now);
        }
    }

    /// The next moment something is due: a flush or a resend.
    pub fn next_deadline(&self) -> Option<Instant> {
        let flush =
            (self.pending > 0 && self.in_flight.len() < self.limits.max_in_flight).then(|| {
                if self.urgent || self.pending >= self.limits.batch_max_records as u64 {
                    self.last_flush
                } else {
                    self.last_flush + self.limits.flush_interval
                }
            });
        let resend = self.in_flight.values().filter_map(|f| f.due).min();
        flush.into_iter().chain(resend).min()
    }

    /// Batch `old` goes out again as `new`: the hub holds `old` of this
    /// device with other content. The frame is re-encoded under the new
    /// number and due now. Returns the spool ids it carries (first, last)
    /// and the frame, or `None` if `old` is not in flight.
    pub fn renumber(&mut self, old: u64, new: u64, now: Instant) -> Option<(u64, u64, Vec<u8>)> {
        let f = self.in_flight.get(&old)?;
        // Our own frame always decodes; if it did not, it stays as it is.
        let Ok(Upstream::Batch(mut batch)) = Upstream::decode(&f.frame) else {
            return None;
        };
        batch.seq = new;
        let frame = Upstream::Batch(batch).encode().ok()?;
        let mut f = self.in_flight.remove(&old)?;
        let (first, last) = (f.first, f.last);
        f.frame = frame.clone();
        f.due = Some(now + self.limits.ack_timeout);
        self.in_flight.insert(new, f);
        self.counters.batches_renumbered += 1;
        Some((first, last, frame))
    }

    /// The hub will never store batch `seq`: it leaves the window and its
    /// records count as rejected. Returns false if it was not in flight.
    pub fn reject(&mut self, seq: u64) -> bool {
        match self.in_flight.remove(&seq) {
            Some(f) => {
                self.counters.records_rejected += f.records as u64;
                true
            }
            None => false,
        }
    }

    /// The hub did not store batch `seq`, over this device's budget: it is
    /// due again in `retry_after` (and not before, whatever its ack
    /// timeout said). Returns false if it was not in flight.
    pub fn throttled(&mut self, seq: u64, retry_after: Duration, now: Instant) -> bool {
        match self.in_flight.get_mut(&seq) {
            Some(f) => {
                f.due = Some(now + retry_after);
                self.counters.batches_throttled += 1;
                true
            }
            None => false,
        }
    }

    /// Whether batch `seq` is in flight.
    pub fn is_in_flight(&self, seq: u64) -> bool {
        self.in_flight.contains_key(&seq)
    }

    /// Restores a batch the spool found unacked at start; it is due now.
    pub fn restore(
        &mut self,
        seq: u64,
        span: (u64, u64),
        frame: Vec<u8>,
        records: usize,
        now: Instant,
    ) {
        let (first, last) = span;
        self.in_flight.insert(
            seq,
            InFlight {
                frame,
                first,
                last,
                records,
                attempts: 0,
                due: Some(now),
            },
        );
    }
}

#[cfg(test)]
mod tests;
