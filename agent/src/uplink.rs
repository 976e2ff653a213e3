//! Telemetry on its way to the hub: pure state, no sockets, no disk.
//!
//! Records (samples, chat lines) wait in `pending` until a flush packs them
//! into a batch with the next sequence number. A sent batch stays in
//! `in_flight` until the hub acks its sequence number; if no ack comes within
//! the ack timeout it is sent again, with exponential backoff and jitter so a
//! fleet does not resend in lockstep. On reconnect everything in flight is
//! due at once. The caller does the I/O and passes the clock in, so every
//! timing rule is tested here with made-up instants.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use fleetmq_protocol::{BatchBuilder, EncodeError, Upstream, Value};

/// Something the agent accepted for the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A measurement.
    Sample {
        name: String,
        ts_ms: u64,
        value: Value,
    },
    /// A chat line; flushed at once.
    Chat { ts_ms: u64, text: String },
}

/// Limits and timings.
#[derive(Debug, Clone)]
pub struct UplinkLimits {
    pub flush_interval: Duration,
    pub batch_max_records: usize,
    pub max_pending: usize,
    pub max_in_flight: usize,
    pub ack_timeout: Duration,
    pub ack_timeout_max: Duration,
}

#[derive(Debug)]
struct InFlight {
    frame: Vec<u8>,
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
    pub records_dropped: u64,
    pub records_acked: u64,
}

#[derive(Debug)]
pub struct Uplink {
    limits: UplinkLimits,
    pending: VecDeque<Record>,
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

impl Uplink {
    pub fn new(limits: UplinkLimits, now: Instant, seed: u64) -> Self {
        Uplink {
            limits,
            pending: VecDeque::new(),
            in_flight: BTreeMap::new(),
            last_flush: now,
            urgent: false,
            rng: fastrand::Rng::with_seed(seed),
            counters: UplinkCounters::default(),
        }
    }

    /// Accepts a record. When the queue is full the oldest record is dropped
    /// (and counted); returns false then.
    pub fn push(&mut self, record: Record) -> bool {
        if matches!(record, Record::Chat { .. }) {
            self.urgent = true;
        }
        self.pending.push_back(record);
        if self.pending.len() > self.limits.max_pending {
            self.pending.pop_front();
            self.counters.records_dropped += 1;
            return false;
        }
        true
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    /// True when pending records should be packed into a batch now: the
    /// flush interval passed, a batch is full, or a chat line waits; and the
    /// in-flight window has room.
    pub fn flush_due(&self, now: Instant) -> bool {
        !self.pending.is_empty()
            && self.in_flight.len() < self.limits.max_in_flight
            && (self.urgent
                || self.pending.len() >= self.limits.batch_max_records
                || now.duration_since(self.last_flush) >= self.limits.flush_interval)
    }

    /// Packs up to a batch of pending records with sequence number `seq`,
    /// whatever the window (at shutdown everything is packed). Returns the
    /// encoded frame, which is in flight from now on and must be sent.
    /// Records the protocol refuses (a bad name, an over-long line) are
    /// dropped and counted.
    pub fn pack(&mut self, now: Instant, seq: u64) -> Result<Option<(u64, Vec<u8>)>, EncodeError> {
        let mut builder = BatchBuilder::new(seq);
        while builder.len() < self.limits.batch_max_records {
            let Some(record) = self.pending.pop_front() else {
                break;
            };
            let added = match &record {
                Record::Sample { name, ts_ms, value } => builder.push_sample(name, *ts_ms, *value),
                Record::Chat { ts_ms, text } => builder.push_chat(*ts_ms, text),
            };
            match added {
                Ok(()) => {}
                Err(fleetmq_protocol::BatchError::OffsetOutOfRange { .. }) => {
                    // The clock jumped: this record starts the next batch.
                    self.pending.push_front(record);
                    break;
                }
                Err(_) => self.counters.records_dropped += 1,
            }
        }
        self.urgent = self
            .pending
            .iter()
            .any(|r| matches!(r, Record::Chat { .. }));
        self.last_flush = now;
        if builder.is_empty() {
            return Ok(None);
        }
        let records = builder.len();
        let frame = Upstream::Batch(builder.finish()).encode()?;
        self.in_flight.insert(
            seq,
            InFlight {
                frame: frame.clone(),
                records,
                attempts: 0,
                due: Some(now + self.limits.ack_timeout),
            },
        );
        self.counters.batches_sent += 1;
        Ok(Some((seq, frame)))
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
        let flush = (!self.pending.is_empty() && self.in_flight.len() < self.limits.max_in_flight)
            .then(|| {
                if self.urgent || self.pending.len() >= self.limits.batch_max_records {
                    self.last_flush
                } else {
                    self.last_flush + self.limits.flush_interval
                }
            });
        let resend = self.in_flight.values().filter_map(|f| f.due).min();
        flush.into_iter().chain(resend).min()
    }

    /// Everything not yet acked, for saving at shutdown: in-flight frames
    /// and the pending records.
    pub fn unacked(&self) -> (Vec<(u64, &[u8])>, impl Iterator<Item = &Record>) {
        (
            self.in_flight
                .iter()
                .map(|(s, f)| (*s, f.frame.as_slice()))
                .collect(),
            self.pending.iter(),
        )
    }

    /// Restores a frame saved at the last shutdown; it is due now.
    pub fn restore(&mut self, seq: u64, frame: Vec<u8>, records: usize, now: Instant) {
        self.in_flight.insert(
            seq,
            InFlight {
                frame,
                records,
                attempts: 0,
                due: Some(now),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> UplinkLimits {
        UplinkLimits {
            flush_interval: Duration::from_secs(1),
            batch_max_records: 3,
            max_pending: 5,
            max_in_flight: 2,
            ack_timeout: Duration::from_secs(5),
            ack_timeout_max: Duration::from_secs(60),
        }
    }

    fn sample(i: i64) -> Record {
        Record::Sample {
            name: "x".into(),
            ts_ms: 1_000 + i as u64,
            value: Value::Int(i),
        }
    }

    fn seqs() -> impl FnMut() -> u64 {
        let mut n = 0;
        move || {
            n += 1;
            n
        }
    }

    /// What the agent does on each timer: pack a batch if one is due.
    fn flush(
        u: &mut Uplink,
        now: Instant,
        seq: &mut impl FnMut() -> u64,
    ) -> Option<(u64, Vec<u8>)> {
        if u.flush_due(now) {
            u.pack(now, seq()).unwrap()
        } else {
            None
        }
    }

    #[test]
    fn flushes_on_interval_size_or_chat() {
        let t0 = Instant::now();
        let mut u = Uplink::new(limits(), t0, 1);
        let mut seq = seqs();
        u.push(sample(1));
        assert_eq!(flush(&mut u, t0, &mut seq), None, "not due yet");
        assert_eq!(u.next_deadline(), Some(t0 + Duration::from_secs(1)));
        let (s, _) = flush(&mut u, t0 + Duration::from_secs(1), &mut seq).unwrap();
        assert_eq!(s, 1);
        u.push(Record::Chat {
            ts_ms: 5,
            text: "hi".into(),
        });
        let t1 = t0 + Duration::from_millis(1100);
        assert!(flush(&mut u, t1, &mut seq).is_some(), "chat goes at once");
        assert_eq!(u.in_flight_len(), 2);
        for i in 0..3 {
            u.push(sample(i));
        }
        assert_eq!(flush(&mut u, t1, &mut seq), None, "in-flight window full");
        assert!(u.ack(1));
        assert!(!u.ack(1), "a repeated ack counts once");
        assert!(
            flush(&mut u, t1, &mut seq).is_some(),
            "full batch goes at once"
        );
        assert_eq!(u.counters.records_acked, 1);
    }

    #[test]
    fn pack_takes_everything_past_the_window() {
        let t0 = Instant::now();
        let mut u = Uplink::new(limits(), t0, 1);
        for i in 0..5 {
            u.push(sample(i));
        }
        let mut seq = seqs();
        let mut sealed = 0;
        while u.pending_len() > 0 {
            u.pack(t0, seq()).unwrap().unwrap();
            sealed += 1;
        }
        assert_eq!(sealed, 2, "3 + 2 records, past the window of 2");
        assert_eq!(u.pending_len(), 0);
        assert_eq!(u.unacked().0.len(), 2);
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let t0 = Instant::now();
        let mut u = Uplink::new(limits(), t0, 1);
        for i in 0..7 {
            u.push(sample(i));
        }
        assert_eq!(u.pending_len(), 5);
        assert_eq!(u.counters.records_dropped, 2);
        let (_, frame) = flush(&mut u, t0 + Duration::from_secs(1), &mut seqs()).unwrap();
        let Upstream::Batch(b) = Upstream::decode(&frame).unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(b.samples[0].value, Value::Int(2), "oldest two were dropped");
    }

    #[test]
    fn unacked_batches_are_resent_with_growing_jittered_backoff() {
        let t0 = Instant::now();
        let mut u = Uplink::new(limits(), t0, 7);
        u.push(sample(1));
        flush(&mut u, t0 + Duration::from_secs(1), &mut seqs()).unwrap();
        let sent = t0 + Duration::from_secs(1);
        assert!(u.resends(sent + Duration::from_millis(4_999)).is_empty());
        let first = sent + Duration::from_secs(5);
        assert_eq!(u.resends(first).len(), 1);
        // Attempt 1 waits between 5 s and 10 s (half to all of 2 x 5 s).
        let next = u.next_deadline().unwrap() - first;
        assert!(
            next >= Duration::from_secs(5) && next <= Duration::from_secs(10),
            "{next:?}"
        );
        assert!(u.resends(first + Duration::from_millis(4_999)).is_empty());
        u.reconnected(first + Duration::from_secs(1));
        assert_eq!(
            u.resends(first + Duration::from_secs(1)).len(),
            1,
            "reconnect makes it due at once"
        );
        assert_eq!(u.counters.batches_resent, 2);
        assert!(u.ack(1));
        assert_eq!(u.next_deadline(), None);
    }

    #[test]
    fn backoff_is_capped_and_spread() {
        let mut rng = fastrand::Rng::with_seed(3);
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(30);
        let delays: Vec<Duration> = (0..200).map(|_| backoff(base, max, 20, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d >= max / 2 && *d <= max));
        let min = delays.iter().min().unwrap();
        let most = delays.iter().max().unwrap();
        assert!(
            *most - *min > Duration::from_secs(10),
            "jitter spreads retries: {min:?}..{most:?}"
        );
    }

    #[test]
    fn a_clock_jump_starts_a_new_batch_instead_of_losing_records() {
        let t0 = Instant::now();
        let mut u = Uplink::new(limits(), t0, 1);
        u.push(Record::Sample {
            name: "x".into(),
            ts_ms: 0,
            value: Value::Int(1),
        });
        u.push(Record::Sample {
            name: "x".into(),
            ts_ms: 1 << 40,
            value: Value::Int(2),
        });
        let mut seq = seqs();
        let later = t0 + Duration::from_secs(1);
        assert!(flush(&mut u, later, &mut seq).is_some());
        assert_eq!(u.pending_len(), 1);
        assert!(flush(&mut u, later + Duration::from_secs(1), &mut seq).is_some());
        assert_eq!(u.counters.records_dropped, 0);
    }
}
