//! Commands for many devices: each member's share sent when it is online,
//! its answer stored as it comes, the offline one's kept until it returns
//! or the time to live ends.

use super::*;
use fleetmq_protocol::{Bye, FleetAnswer, FleetCommand};

/// The commands sent in `actions`: (device, corr).
fn commands(actions: &[Action]) -> Vec<(String, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Command { device, corr, .. } => Some((device.clone(), *corr)),
            _ => None,
        })
        .collect()
}

fn answers(f: &mut Fleet, id: u64, now: u64) -> Vec<FleetAnswer> {
    f.operator(80, Request::FleetAnswers { id }, now);
    match to_operator(&f.actions()).as_slice() {
        [(80, Response::FleetAnswers(a))] => a.clone(),
        other => panic!("{other:?}"),
    }
}

fn states(a: &[FleetAnswer]) -> Vec<(&str, &str)> {
    a.iter()
        .map(|a| (a.device.as_str(), a.state.as_str()))
        .collect()
}

fn pong(device: &str, corr: u64) -> Vec<Vec<u8>> {
    let r = ReplyFrame::from(CommandReply {
        corr,
        reply: Reply::Pong { uptime_ms: 5 },
    });
    vec![route(device), vec![], r.encode().unwrap()]
}

#[test]
fn a_command_for_a_group_reaches_each_member_and_waits_for_the_offline_one() {
    let mut f = Fleet::new();
    f.hello_in("pi-a", &["lab"], T0);
    f.hello_in("pi-b", &["lab"], T0);
    f.up(
        "pi-b",
        "pi-b",
        Upstream::Bye(Bye {
            reason: "off".into(),
        }),
        T0,
    );
    f.actions();

    let fc = FleetCommand {
        command: Command::Ping,
        devices: vec![],
        groups: vec!["lab".into()],
        all: false,
        timeout_ms: 2_000,
        ttl_ms: 60_000,
        matching: vec![],
    };
    f.operator(70, Request::FleetCommand(fc), T0 + 10);
    let out = f.deliver(T0 + 10);
    let id = match to_operator(&out).as_slice() {
        [(70, Response::FleetCommandQueued { id, devices })] => {
            assert_eq!(devices, &["pi-a", "pi-b"]);
            *id
        }
        other => panic!("{other:?}"),
    };
    let sent = commands(&out);
    assert_eq!(sent.len(), 1, "only the online member now: {sent:?}");
    // A retry of request 70 (its answer lost) is answered from memory: the
    // command is not kept, or sent, twice.
    let again = FleetCommand {
        command: Command::Ping,
        devices: vec![],
        groups: vec!["lab".into()],
        all: false,
        timeout_ms: 2_000,
        ttl_ms: 60_000,
        matching: vec![],
    };
    f.operator(70, Request::FleetCommand(again), T0 + 15);
    let retry = f.deliver(T0 + 15);
    assert!(commands(&retry).is_empty());
    assert!(matches!(
        to_operator(&retry).as_slice(),
        [(70, Response::FleetCommandQueued { id: same, .. })] if *same == id
    ));
    assert_eq!(sent[0].0, "pi-a");
    assert_eq!(
        states(&answers(&mut f, id, T0 + 20)),
        [("pi-a", "sent"), ("pi-b", "offline")]
    );

    // An operator request that happens to carry a share's number is its
    // own request, not a retry that could take the share's answer.
    f.operator(1, ping("pi-b", 1_000), T0 + 25);
    assert!(matches!(
        to_operator(&f.deliver(T0 + 25)).as_slice(),
        [(1, Response::Error(OperatorError::DeviceOffline(_)))]
    ));
    // pi-a answers: stored, and no operator client hears of it directly.
    f.core
        .reply(&pong("pi-a", sent[0].1), Some("pi-a"), at(T0 + 30));
    assert!(to_operator(&f.actions()).is_empty());
    let a = answers(&mut f, id, T0 + 40);
    assert_eq!(states(&a), [("pi-a", "answered"), ("pi-b", "offline")]);
    assert!(matches!(a[0].reply, Some(Reply::Pong { .. })));

    // pi-b returns: within a second its share goes out, then its answer.
    f.hello_in("pi-b", &["lab"], T0 + 1_000);
    f.actions();
    for t in (1_100..=2_000).step_by(100) {
        f.core.tick(at(T0 + t));
    }
    let sent = commands(&f.deliver(T0 + 2_000));
    assert_eq!(
        sent.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["pi-b"]
    );
    f.core
        .reply(&pong("pi-b", sent[0].1), Some("pi-b"), at(T0 + 2_100));
    let a = answers(&mut f, id, T0 + 2_200);
    assert_eq!(states(&a), [("pi-a", "answered"), ("pi-b", "answered")]);
    assert!(a.iter().all(crate::core::fleet::ended));
}

#[test]
fn a_share_times_out_or_expires_and_says_why() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.hello("pi-b", T0);
    f.up(
        "pi-b",
        "pi-b",
        Upstream::Bye(Bye {
            reason: "off".into(),
        }),
        T0,
    );
    f.actions();
    let fc = FleetCommand {
        command: Command::Status,
        devices: vec!["pi-a".into(), "pi-b".into()],
        groups: vec![],
        all: false,
        timeout_ms: 1_000,
        ttl_ms: 5_000,
        matching: vec![],
    };
    f.operator(71, Request::FleetCommand(fc), T0);
    let id = match to_operator(&f.deliver(T0)).as_slice() {
        [(71, Response::FleetCommandQueued { id, .. })] => *id,
        other => panic!("{other:?}"),
    };
    // pi-a never answers; pi-b never returns.
    for t in (100..=6_000).step_by(100) {
        f.core.tick(at(T0 + t));
        f.deliver(T0 + t);
    }
    let a = answers(&mut f, id, T0 + 6_100);
    assert_eq!(states(&a), [("pi-a", "timed_out"), ("pi-b", "expired")]);
    assert!(
        a[1].error.as_deref().unwrap().contains("time to live"),
        "{a:?}"
    );
    assert!(a[0].error.as_deref().unwrap().contains("1000 ms"), "{a:?}");
}
