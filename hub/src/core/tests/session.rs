//! A device's session: its Hello answered, its batches stored and acked
//! (once), its silence noticed, and a request the hub cannot read.

use super::*;

#[test]
fn hello_is_answered_with_carry_and_takes_logs_then_welcome_naming_the_ports() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    let got = to_device(&f.actions(), "pi-a");
    match got.as_slice() {
        [
            Downstream::Carry(_),
            Downstream::TakesLogs(_),
            Downstream::Welcome(w),
        ] => assert_eq!(w.ports.commands, 7754),
        other => panic!("want Carry, TakesLogs, then Welcome, got {other:?}"),
    }
}

#[test]
fn a_hello_with_a_group_no_broadcast_could_reach_is_refused() {
    let mut f = Fleet::new();
    f.hello_in("pi-a", &["north", "bad/group"], T0);
    let got = to_device(&f.actions(), "pi-a");
    assert!(
        matches!(&got[..], [Downstream::Refusal(r)] if r.reason.contains("bad/group")),
        "{got:?}"
    );
    assert_eq!(f.core.counters().frames_dropped, 1);
    f.hello_in("pi-a", &["north"], T0 + 1);
    assert!(matches!(
        &to_device(&f.actions(), "pi-a")[..],
        [
            Downstream::Carry(_),
            Downstream::TakesLogs(_),
            Downstream::Welcome(_)
        ]
    ));
}

#[test]
fn a_batch_is_stored_then_acked_and_a_duplicate_is_acked_without_storing() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.actions();
    f.up("pi-a", "pi-a", batch(1, 20.0), T0 + 10);
    assert_eq!(
        to_device(&f.actions(), "pi-a"),
        vec![Downstream::Ack(fleetmq_protocol::Ack { seq: 1 })]
    );
    assert_eq!(f.core.counters().batches_stored, 1);
    f.up("pi-a", "pi-a", batch(1, 20.0), T0 + 20);
    assert_eq!(
        to_device(&f.actions(), "pi-a"),
        vec![Downstream::Ack(fleetmq_protocol::Ack { seq: 1 })],
        "a resent batch is acked again"
    );
    assert_eq!(f.core.counters().batches_stored, 1);
    assert_eq!(f.core.counters().batches_duplicate, 1);
}

#[test]
fn a_batch_with_log_lines_is_stored_and_acked_and_one_with_a_bad_source_rejected() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.actions();
    let mut b = BatchBuilder::new(1);
    b.push_sample("temp_c", T0, Value::Float(20.0)).unwrap();
    b.push_log("/var/log/syslog", T0 + 1, "sshd: accepted key")
        .unwrap();
    let logged = Upstream::from_batch(b.finish());
    assert!(matches!(logged, Upstream::LogBatch(_)));
    f.up("pi-a", "pi-a", logged, T0 + 10);
    assert_eq!(
        to_device(&f.actions(), "pi-a"),
        vec![Downstream::Ack(fleetmq_protocol::Ack { seq: 1 })]
    );
    assert_eq!(f.core.counters().batches_stored, 1);
    assert_eq!(f.core.counters().log_lines_stored, 1);
    assert_eq!(f.core.counters().samples_stored, 1);
    let mut bad = BatchBuilder::new(2);
    bad.push_log("/ok", T0, "x").unwrap();
    let mut bad = bad.finish();
    bad.sources[0] = "bad\u{7}source".into();
    f.up(
        "pi-a",
        "pi-a",
        Upstream::LogBatch(fleetmq_protocol::LogBatch(bad)),
        T0 + 20,
    );
    let told = to_device(&f.actions(), "pi-a");
    assert!(
        matches!(&told[..], [Downstream::Rejected(r)] if r.seq == 2 && r.reason.contains("log source")),
        "{told:?}"
    );
}

#[test]
fn a_device_goes_offline_after_three_silent_heartbeats() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    let online = |f: &mut Fleet, now| {
        f.operator(9, Request::Devices, now);
        match to_operator(&f.actions()).pop() {
            Some((_, Response::Devices(d))) => d.iter().find(|d| d.id == "pi-a").unwrap().online,
            other => panic!("{other:?}"),
        }
    };
    f.core.tick(at(T0 + 3_000));
    assert!(
        online(&mut f, T0 + 3_000),
        "three heartbeats of 1 s: still on"
    );
    f.core.tick(at(T0 + 3_001));
    assert!(!online(&mut f, T0 + 3_001), "silent past three heartbeats");
}

#[test]
fn a_request_the_hub_cannot_read_is_answered_bad_request_with_its_id() {
    let mut f = Fleet::new();
    let ask = |f: &mut Fleet, frame: Vec<u8>| {
        f.core
            .operator(&[OP.to_vec(), vec![], frame], Caller::Local, at(T0));
        to_operator(&f.actions())
    };
    // Request 9 names a variant this hub does not have (99): the id is
    // readable, so the client can match the error to its request.
    let answers = ask(&mut f, vec![2, 0x50, 9, 99]);
    assert!(
        matches!(&answers[..], [(9, Response::Error(OperatorError::BadRequest(why)))] if !why.is_empty()),
        "{answers:?}"
    );
    // A frame of another version has no id the hub can trust: 0.
    let answers = ask(&mut f, vec![3, 0x50, 9, 0]);
    assert!(
        matches!(&answers[..], [(0, Response::Error(OperatorError::BadRequest(why)))] if why.contains("version")),
        "{answers:?}"
    );
}
