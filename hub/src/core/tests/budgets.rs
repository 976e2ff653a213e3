//! Budgets in work: a device over its records, bytes or series is told
//! which batch and why, and nothing of it is acked; others are served.

use super::*;
use crate::config::Limits;

/// pi-a and pi-b with small budgets: 1,000 records a second in bursts of
/// 20,000, and 3 distinct series each.
fn budgeted() -> Fleet {
    let mut f = Fleet::with(HubConfig {
        limits: Limits {
            device_records_per_s: 1_000,
            device_records_burst: 20_000,
            device_series: 3,
            ..Limits::default()
        },
        ..HubConfig::default()
    });
    f.hello("pi-a", T0);
    f.hello("pi-b", T0);
    f.actions();
    f
}

/// A batch of `lines` empty chat lines.
fn chat(seq: u64, lines: usize) -> Upstream {
    let mut b = BatchBuilder::new(seq);
    for _ in 0..lines {
        b.push_chat(T0, "").unwrap();
    }
    Upstream::Batch(b.finish())
}

#[test]
fn a_device_over_its_records_a_second_is_told_to_wait_and_others_are_served() {
    let mut f = budgeted();
    f.up("pi-a", "pi-a", chat(1, 20_000), T0);
    f.up("pi-a", "pi-a", chat(2, 500), T0);
    f.up("pi-b", "pi-b", batch(1, 1.0), T0);
    let a = to_device(&f.actions(), "pi-a");
    assert!(
        matches!(a[0], Downstream::Ack(fleetmq_protocol::Ack { seq: 1 })),
        "{a:?}"
    );
    match &a[1] {
        Downstream::Throttled(t) => {
            assert_eq!((t.seq, t.retry_after_ms), (2, 500));
            assert!(t.reason.contains("records a second"), "{}", t.reason);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.len(), 2, "batch 2 is not acked: {a:?}");
    // Until the wait is over, a batch is answered from its number alone:
    // this one is not even read (its body is not postcard).
    let unread = vec![route("pi-a"), vec![2, 0x03, 3, 0xff, 0xff, 0xff]];
    f.core
        .upstream(&unread, Some("pi-a"), Some("10.0.0.1"), at(T0 + 200));
    let a = to_device(&f.actions(), "pi-a");
    match &a[..] {
        [Downstream::Throttled(t)] => assert_eq!((t.seq, t.retry_after_ms), (3, 300)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        f.core.counters().frames_dropped,
        0,
        "not read, so not dropped"
    );
    assert_eq!(f.core.counters().batches_throttled, 2);
    assert_eq!(
        f.core.counters().batches_stored,
        2,
        "pi-a's first and pi-b's"
    );
    // When the wait is over, the same batch is stored.
    f.up("pi-a", "pi-a", chat(2, 500), T0 + 500);
    let a = to_device(&f.actions(), "pi-a");
    assert!(
        matches!(a[..], [Downstream::Ack(fleetmq_protocol::Ack { seq: 2 })]),
        "{a:?}"
    );
}

#[test]
fn a_device_past_its_distinct_series_is_rejected_with_the_number() {
    let mut f = budgeted();
    let named = |seq: u64, names: &[&str]| {
        let mut b = BatchBuilder::new(seq);
        for n in names {
            b.push_sample(n, T0, Value::Int(1)).unwrap();
        }
        Upstream::Batch(b.finish())
    };
    f.up("pi-a", "pi-a", named(1, &["a", "b"]), T0);
    f.up("pi-a", "pi-a", named(2, &["a", "b", "c"]), T0 + 1);
    f.up("pi-a", "pi-a", named(3, &["a", "d"]), T0 + 2);
    let a = to_device(&f.actions(), "pi-a");
    assert!(
        matches!(a[0], Downstream::Ack(fleetmq_protocol::Ack { seq: 1 })),
        "{a:?}"
    );
    assert!(
        matches!(a[1], Downstream::Ack(fleetmq_protocol::Ack { seq: 2 })),
        "{a:?}"
    );
    match &a[2] {
        Downstream::Rejected(r) => {
            assert_eq!(r.seq, 3);
            assert!(r.reason.contains("4 distinct series"), "{}", r.reason);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.core.counters().batches_rejected, 1);
    // Known series go on being stored.
    f.up("pi-a", "pi-a", named(4, &["c", "a"]), T0 + 3);
    let a = to_device(&f.actions(), "pi-a");
    assert!(
        matches!(a[..], [Downstream::Ack(fleetmq_protocol::Ack { seq: 4 })]),
        "{a:?}"
    );
}

#[test]
fn a_round_stops_reading_at_its_work_bound() {
    let mut f = budgeted();
    let frames = |msg: Upstream| vec![route("pi-a"), msg.encode().unwrap()];
    f.core.upstream(
        &frames(chat(1, 19_999)),
        Some("pi-a"),
        Some("10.0.0.1"),
        at(T0),
    );
    assert!(!f.core.round_full());
    f.core.upstream(
        &frames(batch(2, 1.0)),
        Some("pi-a"),
        Some("10.0.0.1"),
        at(T0),
    );
    assert!(f.core.round_full(), "20,000 records read");
    f.core.store_received(at(T0));
    assert!(!f.core.round_full(), "a stored round starts empty");
}
