//! Commands for one device, answered, timed out or queued until it
//! returns; and reads that run off the loop.

use super::*;

#[test]
fn a_command_is_sent_and_its_answer_reaches_the_operator() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.actions();
    let ask = ping("pi-a", 5_000);
    f.operator(7, ask, T0);
    let sent = f.deliver(T0);
    let corr = match sent.as_slice() {
        [
            Action::Command {
                device,
                route: to,
                frame,
                corr,
                carried: false,
            },
        ] => {
            assert_eq!(device, "pi-a");
            assert_eq!(to, &route("pi-a"), "only to the route that speaks for pi-a");
            let CommandFrame::Request(r) = CommandFrame::decode(frame).unwrap();
            assert_eq!(r.command, Command::Ping);
            *corr
        }
        other => panic!("want one command, got {other:?}"),
    };
    let reply = |corr| {
        let r = ReplyFrame::from(CommandReply {
            corr,
            reply: Reply::Pong { uptime_ms: 5 },
        });
        vec![route("pi-a"), vec![], r.encode().unwrap()]
    };
    // Another device's connection cannot answer for pi-a.
    f.core.reply(&reply(corr), Some("pi-b"), at(T0 + 5));
    assert_eq!(f.actions(), vec![]);
    f.core.reply(&reply(corr), Some("pi-a"), at(T0 + 5));
    let answers = to_operator(&f.actions());
    assert!(
        matches!(&answers[..], [(7, Response::Reply { device, reply: Reply::Pong { .. } })] if device == "pi-a"),
        "{answers:?}"
    );
    // A retry of request 7 is answered from memory, not sent again.
    f.operator(7, ping("pi-a", 5_000), T0 + 6);
    let again = f.actions();
    assert!(matches!(
        &to_operator(&again)[..],
        [(7, Response::Reply { .. })]
    ));
    assert!(!again.iter().any(|a| matches!(a, Action::Command { .. })));
}

#[test]
fn a_command_nobody_answers_times_out() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.actions();
    let ask = ping("pi-a", 2_000);
    f.operator(8, ask, T0);
    f.deliver(T0);
    f.core.tick(at(T0 + 1_999));
    assert_eq!(to_operator(&f.actions()), vec![]);
    f.core.tick(at(T0 + 2_000));
    assert_eq!(
        to_operator(&f.actions()),
        vec![(
            8,
            Response::Error(OperatorError::TimedOut { after_ms: 2_000 })
        )]
    );
    assert_eq!(f.core.counters().commands_timed_out, 1);
}

#[test]
fn a_command_for_an_offline_device_waits_and_is_delivered_when_it_returns() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.up(
        "pi-a",
        "pi-a",
        fleetmq_protocol::Bye {
            reason: "stopping".into(),
        }
        .into(),
        T0,
    );
    f.actions();
    let ask = Request::QueuedCommand {
        device: "pi-a".into(),
        command: Command::Ping,
        timeout_ms: 2_000,
        queue_ms: 60_000,
    };
    f.operator(11, ask.clone(), T0 + 1);
    assert_eq!(f.actions(), vec![], "queued, not answered");
    f.core.tick(at(T0 + 1_000));
    assert_eq!(f.actions(), vec![], "still offline");
    // Back, but its command socket is not connected yet: it keeps waiting.
    f.hello("pi-a", T0 + 2_000);
    f.actions();
    f.core.tick(at(T0 + 2_100));
    let tried = f.actions();
    let Some(Action::Command { corr, .. }) =
        tried.iter().find(|a| matches!(a, Action::Command { .. }))
    else {
        panic!("want the queued command sent, got {tried:?}");
    };
    f.core
        .command_sent(*corr, Sent::Unreachable, at(T0 + 2_100));
    assert_eq!(
        to_operator(&f.actions()),
        vec![],
        "unreachable: waits again"
    );
    f.core.tick(at(T0 + 2_200));
    let sent = f.deliver(T0 + 2_200);
    assert!(
        sent.iter()
            .any(|a| matches!(a, Action::Command { device, .. } if device == "pi-a"))
    );
    assert_eq!(f.core.counters().commands_sent, 1);
    // A command for a device that never comes back is answered when its
    // wait ends.
    f.operator(
        12,
        Request::QueuedCommand {
            device: "pi-b".into(),
            command: Command::Ping,
            timeout_ms: 2_000,
            queue_ms: 500,
        },
        T0 + 3_000,
    );
    let answers = to_operator(&f.actions());
    assert!(
        matches!(
            &answers[..],
            [(12, Response::Error(OperatorError::UnknownDevice(_)))]
        ),
        "a device never seen is not waited for: {answers:?}"
    );
}

/// A read that scans the store goes to the driver's readers once, however
/// often its client retries; the answer goes to the client that asked
/// last; past MAX_READS in flight an operator is told to try again.
#[test]
fn a_read_runs_off_the_loop_once_however_often_it_is_retried() {
    let mut f = Fleet::new();
    f.operator(7, Request::Jobs { limit: 10 }, T0);
    let reads = |actions: &[Action]| -> Vec<u64> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Read { id, .. } => Some(*id),
                _ => None,
            })
            .collect()
    };
    assert_eq!(reads(&f.actions()), vec![7]);
    // The Lazy Pirate client asks again on a fresh socket.
    let frame = OperatorFrame::from(OperatorRequest {
        id: 7,
        request: Request::Jobs { limit: 10 },
    })
    .encode()
    .unwrap();
    f.core.operator(
        &[b"retry".to_vec(), vec![], frame],
        Caller::Local,
        at(T0 + 1),
    );
    assert_eq!(f.actions(), vec![], "no second scan");
    let answer = reads::answer(
        &mut Store::in_memory().unwrap(),
        Request::Jobs { limit: 10 },
    );
    assert_eq!(answer, Response::Jobs(vec![]));
    f.core.read_done(7, b"the answer".to_vec());
    assert_eq!(
        f.actions(),
        vec![Action::Operator {
            client: b"retry".to_vec(),
            frame: b"the answer".to_vec()
        }]
    );
    f.core.read_done(7, b"again".to_vec());
    assert_eq!(f.actions(), vec![], "answered once");
    for id in 100..100 + reads::MAX_READS as u64 {
        f.operator(id, Request::Jobs { limit: 1 }, T0 + 2);
    }
    assert_eq!(reads(&f.actions()).len(), reads::MAX_READS);
    f.operator(999, Request::Jobs { limit: 1 }, T0 + 3);
    match to_operator(&f.actions()).as_slice() {
        [(999, Response::Error(OperatorError::Storage(why)))] => {
            assert!(why.contains("try again"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}
