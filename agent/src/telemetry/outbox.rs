//! The outbox: one book for every record on its way to the hub.
//!
//! It owns the disk spool (where a record lives until the hub acked it),
//! the in-flight window (which batches are out, when to resend), and the
//! sequence numbers, and keeps them agreeing through a record's whole life:
//!
//! ```text
//!  accept ─► spool (on disk) ─► pack: next seq, batch written to the spool
//!         ─► in flight (sent; resent on timeout or reconnect)
//!         ─► ack: spool notes it, segments all acked are deleted
//! ```
//!
//! A full spool under `drop_oldest` abandons the in-flight batches whose
//! records it dropped; at start, batches the spool holds unacked go back in
//! flight under their old sequence numbers, so a hub that stored one before
//! recognises it. The caller sends the frames the outbox hands it; the
//! outbox never touches a socket.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use fleetmq_protocol::EncodeError;
use tracing::{info, warn};

use super::spool::{AppendError, Spool, SpoolConfig, SpoolCounters, disk_full};
use super::uplink::{Record, Uplink, UplinkCounters, UplinkLimits, encode_batch};
use crate::state::SeqFile;

/// Why the outbox could not go on.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("opening the spool (is the data directory writable?): {0}")]
    Open(#[source] io::Error),
    #[error("reserving sequence numbers (is the data directory writable?): {0}")]
    Seq(#[source] io::Error),
    #[error("reading the spool: {0}")]
    Read(#[source] io::Error),
    #[error("recording a batch in the spool: {0}")]
    Record(#[source] io::Error),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// A batch to send: its sequence number and its frame.
pub type Frame = (u64, Vec<u8>);

/// Spool, in-flight window and sequence numbers, kept as one.
pub struct Outbox {
    spool: Spool,
    uplink: Uplink,
    seq: SeqFile,
    /// The spool's size cap, for the log line when it fills.
    max_bytes: u64,
}

impl Outbox {
    /// Opens the spool and the sequence file and puts what the spool holds
    /// unacked back in flight, due now. Notes about what recovery found
    /// are logged.
    pub fn open(
        spool: SpoolConfig,
        limits: UplinkLimits,
        seq_path: PathBuf,
        now: Instant,
        now_ms: u64,
        seed: u64,
    ) -> Result<Outbox, OutboxError> {
        let max_bytes = spool.max_bytes;
        let (seq, note) = SeqFile::open(seq_path, now_ms).map_err(OutboxError::Seq)?;
        if let Some(note) = note {
            warn!("{note}");
        }
        let (spool, recovery) = Spool::open(spool).map_err(OutboxError::Open)?;
        for note in &recovery.notes {
            warn!("spool: {note}");
        }
        if !recovery.unacked.is_empty() || recovery.unpacked > 0 {
            info!(
                batches = recovery.unacked.len(),
                records = recovery.unpacked,
                bytes = spool.bytes(),
                "spool holds telemetry not yet acked; sending it"
            );
        }
        let mut uplink = Uplink::new(limits, now, seed);
        for batch in recovery.unacked {
            // The same records under the same sequence number: if the hub
            // stored the batch before, it recognises it. Whole, as it was
            // packed (an older agent mixed log lines with samples).
            let records: Vec<&Record> = batch.records.iter().collect();
            let mut refused = 0;
            if let (_, Some(frame)) = encode_batch(batch.seq, &records, false, &mut refused)? {
                let carried = records.len() - refused as usize;
                uplink.restore(batch.seq, (batch.first, batch.last), frame, carried, now);
            }
        }
        uplink.set_pending(recovery.unpacked);
        uplink.accepted(0, recovery.unpacked > 0);
        Ok(Outbox {
            spool,
            uplink,
            seq,
            max_bytes,
        })
    }

    /// Puts records in the spool; they count as accepted only if this
    /// returns true. A full spool applies its policy (counted, and logged
    /// once per episode).
    pub fn accept(&mut self, records: &[Record], now: Instant) -> bool {
        let chat = records.iter().any(|r| matches!(r, Record::Chat { .. }));
        match self.spool.append(records, now) {
            Ok(appended) => {
                if let Some(below) = appended.dropped_below {
                    self.dropped_below(below, records.len() as u64);
                }
                self.uplink.accepted(records.len() as u64, chat);
                true
            }
            Err(AppendError::Full { bytes, max }) => {
                if self.spool.full_episode_started() {
                    warn!(
                        bytes,
                        max,
                        "spool full: refusing new telemetry until the hub acks (policy refuse_new); counted in status"
                    );
                }
                false
            }
            Err(AppendError::Io(e)) => {
                self.spool.counters.refused += records.len() as u64;
                warn!(error = %e, records = records.len(), "could not write the spool; records refused");
                false
            }
        }
    }

    /// The spool dropped every record below `id` to make room for `added`
    /// new ones: the batches that carried them will not be sent again.
    fn dropped_below(&mut self, id: u64, added: u64) {
        for seq in self.uplink.drop_below(id) {
            if let Err(e) = self.spool.abandoned(seq) {
                warn!(error = %e, seq, "recording an abandoned batch in the spool");
            }
        }
        if self.spool.full_episode_started() {
            warn!(
                max_bytes = self.max_bytes,
                "spool full: dropping the oldest telemetry to make room (policy drop_oldest); counted in status"
            );
        }
        self.uplink
            .set_pending(self.spool.unpacked().saturating_sub(added));
    }

    /// Whether waiting records should be packed into a batch now.
    pub fn flush_due(&self, now: Instant) -> bool {
        self.uplink.flush_due(now)
    }

    /// Packs the oldest waiting records into the next batch and records it
    /// in the spool; the batch is in flight from now on. `None` when
    /// nothing waits or the protocol refused every record taken.
    pub fn pack(&mut self, now: Instant) -> Result<Option<Frame>, OutboxError> {
        let max = self.uplink.batch_max_records();
        let peeked = self.spool.peek(max).map_err(OutboxError::Read)?;
        if peeked.is_empty() {
            // The spool has nothing after all (its count was stale).
            self.uplink.set_pending(0);
            return Ok(None);
        }
        let seq = match self.seq.take() {
            // A full disk and no sequence file yet: the spool's reserve
            // makes room for it.
            Err(e) if disk_full(&e) && self.spool.give_up_reserve() => self.seq.take(),
            taken => taken,
        }
        .map_err(OutboxError::Seq)?;
        let offered: Vec<(u64, &Record)> = peeked.iter().map(|(id, r, _)| (*id, r)).collect();
        let packed = self.uplink.pack(now, seq, &offered)?;
        let used = packed.used.max(1).min(peeked.len());
        let (first, last, after) = (peeked[0].0, peeked[used - 1].0, peeked[used - 1].2);
        let batch_seq = packed.batch.as_ref().map(|(s, _)| *s);
        self.spool
            .packed(batch_seq, first, last, used as u64, after, now)
            .map_err(OutboxError::Record)?;
        Ok(packed.batch)
    }

    /// Packs everything waiting, whatever the window (at shutdown, or when
    /// chat input ended).
    pub fn pack_all(&mut self, now: Instant) -> Result<Vec<Frame>, OutboxError> {
        let mut frames = Vec::new();
        while self.uplink.pending_len() > 0 {
            frames.extend(self.pack(now)?);
        }
        Ok(frames)
    }

    /// The hub acked `seq`: it leaves the window, and the spool forgets
    /// what no batch in flight still needs. False for an ack of a batch
    /// not in flight (a repeat, or one abandoned).
    /// The hub holds batch `seq` of this device with other content (another
    /// agent used the number: a reinstall that started again at 1, or a
    /// cloned SD card) and takes numbers from `from` on. The batch gets the
    /// next number at or above `from`, which the spool records (the new
    /// batch, then the old one abandoned) so that a restart resends it under
    /// the new one. Returns the frame to send, or `None` if `seq` is not in
    /// flight (acked meanwhile, or renumbered already).
    pub fn renumber(
        &mut self,
        seq: u64,
        from: u64,
        now: Instant,
    ) -> Result<Option<Frame>, OutboxError> {
        if !self.uplink.is_in_flight(seq) {
            return Ok(None);
        }
        self.seq.skip_to(from);
        let new = self.seq.take().map_err(OutboxError::Seq)?;
        let Some((first, last, frame)) = self.uplink.renumber(seq, new, now) else {
            return Ok(None);
        };
        self.spool
            .renumbered(seq, new, first, last, now)
            .map_err(OutboxError::Record)?;
        Ok(Some((new, frame)))
    }

    /// The hub rejected batch `seq` as invalid: it is given up (the spool
    /// records it abandoned, so a restart does not send it again). Returns
    /// false if it was not in flight.
    pub fn reject(&mut self, seq: u64) -> bool {
        if !self.uplink.reject(seq) {
            return false;
        }
        let low = self.uplink.low_water();
        if let Err(e) = self
            .spool
            .abandoned(seq)
            .and_then(|()| self.spool.release(low))
        {
            warn!(error = %e, "recording a rejected batch in the spool");
        }
        true
    }

    /// The hub held batch `seq` back (over this device's budget): it is
    /// sent again after `retry_after`. False if it was not in flight.
    pub fn throttled(&mut self, seq: u64, retry_after: Duration, now: Instant) -> bool {
        self.uplink.throttled(seq, retry_after, now)
    }

    pub fn ack(&mut self, seq: u64) -> bool {
        if !self.uplink.ack(seq) {
            return false;
        }
        let low = self.uplink.low_water();
        // Neither is fatal: a lost ack entry means a resend after a restart,
        // which the hub recognises. Release even so: deleting acked
        // segments is what gives a full disk room again.
        if let Err(e) = self.spool.acked(seq) {
            warn!(error = %e, "recording an ack in the spool");
        }
        if let Err(e) = self.spool.release(low) {
            warn!(error = %e, "deleting acked spool segments");
        }
        true
    }

    /// A new connection to the hub: everything in flight is due now.
    pub fn reconnected(&mut self, now: Instant) {
        self.uplink.reconnected(now);
    }

    /// Batches whose ack is overdue, to send again now.
    pub fn resends(&mut self, now: Instant) -> Vec<Frame> {
        self.uplink.resends(now)
    }

    /// The next moment a flush or resend is due; only while connected is
    /// either worth waking for.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.uplink.next_deadline()
    }

    /// When the spool's next interval sync is due.
    pub fn next_sync(&self) -> Option<Instant> {
        self.spool.next_sync()
    }

    /// Syncs the spool if its interval passed.
    pub fn sync_if_due(&mut self, now: Instant) -> io::Result<()> {
        self.spool.sync_if_due(now)
    }

    /// Syncs the spool now.
    pub fn sync(&mut self) -> io::Result<()> {
        self.spool.sync()
    }

    /// Records accepted and not yet in a batch.
    pub fn waiting(&self) -> u64 {
        self.uplink.pending_len()
    }

    /// Batches sent and not yet acked.
    pub fn in_flight(&self) -> usize {
        self.uplink.in_flight_len()
    }

    /// Bytes the spool holds on disk.
    pub fn bytes(&self) -> u64 {
        self.spool.bytes()
    }

    /// The spool's counters (dropped, refused, damage found).
    pub fn spool_counters(&self) -> &SpoolCounters {
        &self.spool.counters
    }

    /// The window's counters (sent, acked, resent, refused by the protocol).
    pub fn uplink_counters(&self) -> &UplinkCounters {
        &self.uplink.counters
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use fleetmq_protocol::{Upstream, Value};

    use super::*;
    use crate::telemetry::spool::{Fsync, FullPolicy};

    fn open(dir: &Path, max_bytes: u64, policy: FullPolicy, now: Instant) -> Outbox {
        let spool = SpoolConfig {
            dir: dir.join("spool"),
            max_bytes,
            segment_bytes: 4096,
            policy,
            fsync: Fsync::Interval(Duration::from_secs(1)),
        };
        let limits = UplinkLimits {
            flush_interval: Duration::from_millis(100),
            batch_max_records: 10,
            max_in_flight: 4,
            ack_timeout: Duration::from_secs(1),
            ack_timeout_max: Duration::from_secs(8),
        };
        Outbox::open(spool, limits, dir.join("seq"), now, 1_000, 7).unwrap()
    }

    fn sample(i: i64) -> Record {
        Record::Sample {
            name: "test.n".into(),
            ts_ms: 1_000,
            value: Value::Int(i),
        }
    }

    fn values(frame: &[u8]) -> Vec<i64> {
        let Upstream::Batch(b) = Upstream::decode(frame).unwrap() else {
            panic!("not a batch");
        };
        b.resolved_samples()
            .map(|s| match s.value {
                Value::Int(i) => i,
                Value::Float(f) => f as i64,
            })
            .collect()
    }

    #[test]
    fn a_record_lives_from_accept_to_ack_in_one_book() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut o = open(dir.path(), 1 << 20, FullPolicy::DropOldest, t0);
        assert!(o.accept(&[sample(1), sample(2)], t0));
        assert_eq!((o.waiting(), o.in_flight()), (2, 0));
        assert!(!o.flush_due(t0), "not before the flush interval");
        let t1 = t0 + Duration::from_millis(100);
        assert!(o.flush_due(t1));
        let (seq, frame) = o.pack(t1).unwrap().unwrap();
        assert_eq!(values(&frame), vec![1, 2]);
        assert_eq!((o.waiting(), o.in_flight()), (0, 1));
        assert!(o.ack(seq));
        assert!(!o.ack(seq), "a repeated ack is not counted");
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.uplink_counters().records_acked, 2);
    }

    #[test]
    fn after_a_crash_unacked_batches_return_under_their_sequence_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut o = open(dir.path(), 1 << 20, FullPolicy::DropOldest, t0);
        o.accept(&[sample(1)], t0);
        let (first_seq, _) = o.pack(t0).unwrap().unwrap();
        o.accept(&[sample(2)], t0);
        o.accept(&[sample(3)], t0);
        drop(o); // killed: batch 1 unacked, two records never packed
        let t1 = t0 + Duration::from_secs(1);
        let mut o = open(dir.path(), 1 << 20, FullPolicy::DropOldest, t1);
        assert_eq!((o.in_flight(), o.waiting()), (1, 2));
        let resent = o.resends(t1);
        assert_eq!(resent.len(), 1, "due at once after a restart");
        assert_eq!(resent[0].0, first_seq, "the same sequence number");
        assert_eq!(values(&resent[0].1), vec![1]);
        let (next_seq, frame) = o.pack(t1).unwrap().unwrap();
        assert!(next_seq > first_seq, "new batches get new numbers");
        assert_eq!(values(&frame), vec![2, 3]);
    }

    #[test]
    fn a_batch_whose_number_the_hub_holds_goes_again_under_a_new_one_even_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut o = open(dir.path(), 1 << 20, FullPolicy::DropOldest, t0);
        o.accept(&[sample(1)], t0);
        let (seq, _) = o.pack(t0).unwrap().unwrap();
        assert_eq!(seq, 1, "a wiped data directory starts again at 1");
        // The hub holds 1..=500 from the device's earlier life.
        let (new, frame) = o.renumber(seq, 501, t0).unwrap().unwrap();
        assert_eq!(new, 501);
        assert_eq!(values(&frame), vec![1], "the same records");
        assert_eq!(o.uplink_counters().batches_renumbered, 1);
        assert!(o.renumber(seq, 501, t0).unwrap().is_none(), "only once");
        assert!(!o.ack(seq), "the old number is no longer in flight");
        o.accept(&[sample(2)], t0);
        let (next, _) = o.pack(t0).unwrap().unwrap();
        assert!(next > new, "later batches number on above it");
        drop(o); // killed before either was acked
        let t1 = t0 + Duration::from_secs(1);
        let mut o = open(dir.path(), 1 << 20, FullPolicy::DropOldest, t1);
        let mut resent: Vec<(u64, Vec<i64>)> = o
            .resends(t1)
            .into_iter()
            .map(|(s, f)| (s, values(&f)))
            .collect();
        resent.sort();
        assert_eq!(resent, vec![(new, vec![1]), (next, vec![2])]);
        assert!(o.ack(new) && o.ack(next));
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.uplink_counters().records_acked, 2);
        let (after, _) = {
            o.accept(&[sample(3)], t1);
            o.pack(t1).unwrap().unwrap()
        };
        assert!(after > next, "the sequence file kept the jump");
    }

    #[test]
    fn a_batch_the_hub_rejects_is_given_up_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut o = open(dir.path(), 1 << 20, FullPolicy::DropOldest, t0);
        o.accept(&[sample(1), sample(2)], t0);
        let (seq, _) = o.pack(t0).unwrap().unwrap();
        assert!(o.reject(seq));
        assert!(!o.reject(seq), "once");
        assert_eq!(o.in_flight(), 0);
        assert_eq!(o.uplink_counters().records_rejected, 2);
        drop(o);
        let t1 = t0 + Duration::from_secs(1);
        let mut o = open(dir.path(), 1 << 20, FullPolicy::DropOldest, t1);
        assert!(o.resends(t1).is_empty(), "not sent again after a restart");
    }

    #[test]
    fn a_full_spool_dropping_the_oldest_abandons_their_batch() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut o = open(dir.path(), 12 * 1024, FullPolicy::DropOldest, t0);
        o.accept(&[sample(0)], t0);
        let (seq, _) = o.pack(t0).unwrap().unwrap();
        let mut i = 1;
        while o.uplink_counters().records_abandoned == 0 {
            assert!(o.accept(&[sample(i)], t0), "drop_oldest always accepts");
            i += 1;
            assert!(i < 100_000, "the spool never filled");
        }
        assert_eq!(o.in_flight(), 0, "batch {seq} was abandoned");
        assert!(!o.ack(seq), "its late ack changes nothing");
        assert!(o.spool_counters().dropped > 0);
    }

    #[test]
    fn a_reconnect_makes_everything_in_flight_due() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let mut o = open(dir.path(), 1 << 20, FullPolicy::RefuseNew, t0);
        o.accept(&[sample(1)], t0);
        o.pack(t0).unwrap().unwrap();
        assert!(o.resends(t0).is_empty(), "not yet overdue");
        o.reconnected(t0);
        assert_eq!(o.resends(t0).len(), 1);
    }
}
