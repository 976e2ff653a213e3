use super::*;

fn limits() -> UplinkLimits {
    UplinkLimits {
        flush_interval: Duration::from_secs(1),
        batch_max_records: 3,
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

/// Stands in for the spool: records with ids, oldest first.
struct Waiting {
    records: Vec<(u64, Record)>,
    next_id: u64,
    next_seq: u64,
}

impl Waiting {
    fn new() -> Self {
        Waiting {
            records: Vec::new(),
            next_id: 1,
            next_seq: 1,
        }
    }

    fn push(&mut self, u: &mut Uplink, r: Record) {
        let chat = matches!(r, Record::Chat { .. });
        self.records.push((self.next_id, r));
        self.next_id += 1;
        u.accepted(1, chat);
    }

    /// What the agent does to pack: offer the oldest, drop what was used.
    fn pack(&mut self, u: &mut Uplink, now: Instant) -> Option<(u64, Vec<u8>)> {
        let offered: Vec<(u64, &Record)> = self.records.iter().map(|(i, r)| (*i, r)).collect();
        let seq = self.next_seq;
        self.next_seq += 1;
        let packed = u.pack(now, seq, &offered).unwrap();
        self.records.drain(..packed.used);
        packed.batch
    }

    /// What the agent does on each timer: pack a batch if one is due.
    fn flush(&mut self, u: &mut Uplink, now: Instant) -> Option<(u64, Vec<u8>)> {
        if u.flush_due(now) {
            self.pack(u, now)
        } else {
            None
        }
    }
}

#[test]
fn flushes_on_interval_size_or_chat() {
    let t0 = Instant::now();
    let mut u = Uplink::new(limits(), t0, 1);
    let mut w = Waiting::new();
    w.push(&mut u, sample(1));
    assert_eq!(w.flush(&mut u, t0), None, "not due yet");
    assert_eq!(u.next_deadline(), Some(t0 + Duration::from_secs(1)));
    let (s, _) = w.flush(&mut u, t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(s, 1);
    w.push(
        &mut u,
        Record::Chat {
            ts_ms: 5,
            text: "hi".into(),
        },
    );
    let t1 = t0 + Duration::from_millis(1100);
    assert!(w.flush(&mut u, t1).is_some(), "chat goes at once");
    assert_eq!(u.in_flight_len(), 2);
    for i in 0..3 {
        w.push(&mut u, sample(i));
    }
    assert_eq!(w.flush(&mut u, t1), None, "in-flight window full");
    assert!(u.ack(1));
    assert!(!u.ack(1), "a repeated ack counts once");
    assert!(w.flush(&mut u, t1).is_some(), "full batch goes at once");
    assert_eq!(u.counters.records_acked, 1);
    assert_eq!(u.pending_len(), 0);
}

#[test]
fn pack_takes_everything_past_the_window_a_batch_at_a_time() {
    let t0 = Instant::now();
    let mut u = Uplink::new(limits(), t0, 1);
    let mut w = Waiting::new();
    for i in 0..5 {
        w.push(&mut u, sample(i));
    }
    let mut sealed = 0;
    while u.pending_len() > 0 {
        w.pack(&mut u, t0).unwrap();
        sealed += 1;
    }
    assert_eq!(sealed, 2, "3 + 2 records, past the window of 2");
    assert_eq!(u.in_flight_len(), 2);
    assert_eq!(u.low_water(), Some(1));
}

#[test]
fn records_dropped_by_the_spool_abandon_the_batches_that_carried_them() {
    let t0 = Instant::now();
    let mut u = Uplink::new(limits(), t0, 1);
    let mut w = Waiting::new();
    for i in 0..5 {
        w.push(&mut u, sample(i));
    }
    w.pack(&mut u, t0).unwrap(); // ids 1..=3, seq 1
    w.pack(&mut u, t0).unwrap(); // ids 4..=5, seq 2
    assert_eq!(u.drop_below(4), vec![1]);
    assert_eq!(u.counters.records_abandoned, 3);
    assert_eq!(u.low_water(), Some(4));
    assert!(!u.ack(1), "an abandoned batch is gone");
    assert!(u.ack(2));
    assert_eq!(u.low_water(), None);
}

#[test]
fn records_the_protocol_refuses_are_counted_and_used_up() {
    let t0 = Instant::now();
    let mut u = Uplink::new(limits(), t0, 1);
    let mut w = Waiting::new();
    w.push(
        &mut u,
        Record::Sample {
            name: String::new(),
            ts_ms: 1,
            value: Value::Int(1),
        },
    );
    assert_eq!(w.pack(&mut u, t0), None, "nothing left to send");
    assert_eq!(u.pending_len(), 0);
    assert_eq!(u.counters.records_dropped, 1);
    assert_eq!(u.in_flight_len(), 0);
}

#[test]
fn a_throttled_batch_is_sent_again_when_the_hub_said_and_not_before() {
    let t0 = Instant::now();
    let mut u = Uplink::new(limits(), t0, 7);
    let mut w = Waiting::new();
    w.push(&mut u, sample(1));
    let sent = t0 + Duration::from_secs(1);
    let (seq, _) = w.flush(&mut u, sent).unwrap();
    // Sooner than the 5 s ack timeout, and later.
    for wait in [Duration::from_millis(800), Duration::from_secs(30)] {
        assert!(u.throttled(seq, wait, sent));
        assert_eq!(u.next_deadline(), Some(sent + wait));
        assert!(u.resends(sent + wait - Duration::from_millis(1)).is_empty());
    }
    assert_eq!(u.resends(sent + Duration::from_secs(30)).len(), 1);
    assert_eq!(u.counters.batches_throttled, 2);
    assert!(!u.throttled(seq + 1, Duration::ZERO, sent), "not in flight");
    assert!(u.ack(seq), "still in flight until acked");
}

#[test]
fn unacked_batches_are_resent_with_growing_jittered_backoff() {
    let t0 = Instant::now();
    let mut u = Uplink::new(limits(), t0, 7);
    let mut w = Waiting::new();
    w.push(&mut u, sample(1));
    w.flush(&mut u, t0 + Duration::from_secs(1)).unwrap();
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
    let mut w = Waiting::new();
    for (ts_ms, v) in [(0, 1), (1 << 40, 2)] {
        w.push(
            &mut u,
            Record::Sample {
                name: "x".into(),
                ts_ms,
                value: Value::Int(v),
            },
        );
    }
    let later = t0 + Duration::from_secs(1);
    assert!(w.flush(&mut u, later).is_some());
    assert_eq!(u.pending_len(), 1);
    assert!(w.flush(&mut u, later + Duration::from_secs(1)).is_some());
    assert_eq!(u.counters.records_dropped, 0);
}

#[test]
fn log_lines_and_samples_go_in_batches_of_their_own_one_after_the_other() {
    let t0 = Instant::now();
    let mut u = Uplink::new(limits(), t0, 1);
    let mut w = Waiting::new();
    let log = |text: &str| Record::Log {
        ts_ms: 1_000,
        source: "/var/log/app.log".into(),
        text: text.into(),
    };
    w.push(&mut u, sample(1));
    w.push(&mut u, log("a"));
    w.push(&mut u, log("b"));
    let later = t0 + Duration::from_secs(1);
    let (_, first) = w.flush(&mut u, later).unwrap();
    assert!(
        matches!(Upstream::decode(&first).unwrap(), Upstream::Batch(b) if b.samples.len() == 1 && b.logs.is_empty())
    );
    // The rest is due at once, not a flush interval later.
    let (_, second) = w.flush(&mut u, later).unwrap();
    assert!(
        matches!(Upstream::decode(&second).unwrap(), Upstream::LogBatch(b) if b.0.logs.len() == 2 && b.0.samples.is_empty())
    );
    assert_eq!(u.pending_len(), 0);
    // Packed again from the spool after a restart, a batch is encoded
    // whole, as it was packed.
    let records = [&sample(2), &log("c")];
    let (used, _) = encode_batch(9, &records, false, &mut 0).unwrap();
    assert_eq!(used, 2);
}
