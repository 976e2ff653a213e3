//! A front-end: acked once the cluster has a batch, held back when it
//! does not, the store filled from the stream, devices told and let go,
//! commands asked where a device is, a configuration edit through the
//! stream.

use super::*;
use crate::cluster::{Holder, Replicated, ToCluster};

pub(super) fn front_end() -> Fleet {
    let mut f = Fleet::new();
    f.core.front_end("fe-a");
    f
}

#[test]
fn a_batch_is_acked_only_once_the_cluster_has_it_and_held_back_when_not() {
    let mut f = front_end();
    f.hello("pi-a", T0);
    let told = to_cluster(&f.actions());
    assert!(
        matches!(&told[..], [ToCluster::Online { device, .. }] if device == "pi-a"),
        "{told:?}"
    );
    f.up("pi-a", "pi-a", batch(1, 20.0), T0 + 10);
    f.up("pi-a", "pi-a", batch(2, 21.0), T0 + 10);
    let actions = f.actions();
    assert!(to_device(&actions, "pi-a").is_empty(), "nothing acked yet");
    let sent = to_cluster(&actions);
    match &sent[..] {
        [
            ToCluster::Batch { device, batch, .. },
            ToCluster::Batch { batch: second, .. },
        ] if batch.seq == 1 && second.seq == 2 => {
            assert_eq!(device, "pi-a");
            // What the link puts on the stream for it.
            let lines = crate::cluster::lines::batch_lines(device, batch);
            assert!(
                lines.starts_with("temp_c,device=pi-a value=20.0 "),
                "{lines}"
            );
        }
        other => panic!("want two batches for the cluster, got {other:?}"),
    }
    assert_eq!(
        f.core.counters().batches_stored,
        0,
        "the store is filled from the stream"
    );

    f.core
        .replicated("pi-a", 1, Replicated::Stored, at(T0 + 20));
    f.core.replicated(
        "pi-a",
        2,
        Replicated::Failed("timed out".into()),
        at(T0 + 20),
    );
    let got = to_device(&f.actions(), "pi-a");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], Downstream::Ack(fleetmq_protocol::Ack { seq: 1 }));
    match &got[1] {
        Downstream::Throttled(t) => {
            assert_eq!(t.seq, 2);
            assert!(
                t.reason.contains("cluster") && t.reason.contains("timed out"),
                "{t:?}"
            );
        }
        other => panic!("want Throttled, got {other:?}"),
    }
    // A batch the stream had already (sent again after a move) is acked.
    f.core
        .replicated("pi-a", 2, Replicated::Duplicate, at(T0 + 30));
    assert_eq!(
        to_device(&f.actions(), "pi-a"),
        vec![Downstream::Ack(fleetmq_protocol::Ack { seq: 2 })]
    );
}

#[test]
fn the_stream_fills_the_store_once_and_keeps_its_place() {
    let mut f = front_end();
    let body = |seq, v| {
        let Upstream::Batch(b) = batch(seq, v) else {
            unreachable!()
        };
        let frame = Upstream::Batch(b).encode().unwrap();
        let (_, body) = fleetmq_protocol::envelope::open(&frame).unwrap();
        body.to_vec()
    };
    let chunk = vec![
        ("pi-b".to_string(), body(1, 1.0)),
        ("pi-b".to_string(), body(2, 2.0)),
    ];
    f.core.from_stream(&chunk, 7, at(T0));
    // Read again (a reader that restarted before its mark was kept).
    f.core.from_stream(&chunk, 7, at(T0 + 1));
    assert_eq!(f.core.counters().batches_stored, 2);
    assert_eq!(
        f.core.store.mark(crate::core::STREAM_MARK).unwrap(),
        Some(7)
    );
    assert!(
        to_device(&f.actions(), "pi-b").is_empty(),
        "the stream is never acked to a device"
    );
}

pub(super) fn holder(frontend: &str, online: bool) -> Option<Holder> {
    Some(Holder {
        frontend: frontend.into(),
        online,
        since_ms: T0,
        version: "0.1.0".into(),
        arch: "armv6".into(),
        groups: vec!["north".into()],
        forgotten_ms: None,
        facts: fleetmq_protocol::DeviceFacts::default(),
    })
}

#[test]
fn every_hello_tells_the_cluster_what_the_device_said() {
    let mut f = front_end();
    f.hello_in("pi-a", &["north"], T0);
    f.hello_in("pi-a", &["south"], T0 + 10);
    let said: Vec<_> = to_cluster(&f.actions())
        .into_iter()
        .map(|m| match m {
            ToCluster::Online { device, groups, .. } => (device, groups),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        said,
        [
            ("pi-a".to_string(), vec!["north".to_string()]),
            ("pi-a".to_string(), vec!["south".to_string()]),
        ],
        "the second Hello, said while online, reaches the holder too"
    );
}

#[test]
fn a_device_taken_by_another_live_front_end_is_let_go_and_shown_there() {
    let mut f = front_end();
    f.hello("pi-a", T0);
    f.actions();
    // fe-b is not known to live yet: its word does not count.
    f.core.holder_changed("pi-a", holder("fe-b", true));
    assert!(f.core.presence.is_online("pi-a"));
    f.core.front_ends_live(vec!["fe-a".into(), "fe-b".into()]);
    f.core.holder_changed("pi-a", holder("fe-b", true));
    assert!(!f.core.presence.is_online("pi-a"));
    assert!(f.core.routes.route("pi-a").is_none());
    assert!(
        to_cluster(&f.actions()).is_empty(),
        "the new holder wrote the bucket"
    );
    // Going silent later tells the cluster nothing either.
    f.core.tick(at(T0 + 60_000));
    assert!(to_cluster(&f.actions()).is_empty());
    // devices shows it online, at fe-b; a device only fe-b ever saw too.
    f.core.holder_changed("pi-z", holder("fe-b", true));
    f.operator(1, Request::Devices, T0 + 60_001);
    let (_, got) = to_operator(&f.actions()).pop().unwrap();
    let Response::Devices(devices) = got else {
        panic!("{got:?}")
    };
    let by_id = |id: &str| devices.iter().find(|d| d.id == id).unwrap().clone();
    assert_eq!(
        (by_id("pi-a").online, by_id("pi-a").front_end.as_str()),
        (true, "fe-b")
    );
    assert_eq!(
        (by_id("pi-z").online, by_id("pi-z").arch.as_str()),
        (true, "armv6")
    );
    // fe-b dies: its devices count as offline once its entry is gone, and
    // stay listed.
    f.core.front_ends_live(vec!["fe-a".into()]);
    f.operator(2, Request::Devices, T0 + 60_002);
    let (_, got) = to_operator(&f.actions()).pop().unwrap();
    let Response::Devices(devices) = got else {
        panic!("{got:?}")
    };
    let shown: Vec<_> = devices.iter().map(|d| (d.id.as_str(), d.online)).collect();
    assert_eq!(shown, [("pi-a", false), ("pi-z", false)]);
}

#[test]
fn a_command_for_a_device_held_elsewhere_is_asked_there_and_handled_here_if_unanswered() {
    let mut f = front_end();
    f.core.front_ends_live(vec!["fe-a".into(), "fe-b".into()]);
    f.core.holder_changed("pi-b", holder("fe-b", true));
    f.operator(7, ping("pi-b", 3_000), T0);
    let actions = f.actions();
    let asked = to_cluster(&actions);
    let [
        ToCluster::Ask {
            frontend,
            client,
            frame,
            timeout_ms,
        },
    ] = &asked[..]
    else {
        panic!("want one Ask, got {asked:?}")
    };
    assert_eq!((frontend.as_str(), *timeout_ms), ("fe-b", 5_000));
    assert!(to_operator(&actions).is_empty(), "fe-b answers");
    // fe-b died before it answered: the device counts as offline here.
    f.core
        .unforwarded(client, frame, "no responders", at(T0 + 10));
    let answers = to_operator(&f.actions());
    assert!(
        matches!(&answers[..], [(7, Response::Error(OperatorError::DeviceOffline(d)))] if d == "pi-b"),
        "{answers:?}"
    );
}

#[test]
fn a_front_end_cut_off_for_five_seconds_closes_its_door_and_opens_it_when_back() {
    let doors = |actions: Vec<Action>| -> Vec<bool> {
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Door { open } => Some(open),
                _ => None,
            })
            .collect()
    };
    let mut f = front_end();
    f.core
        .cluster_connection(Some("disconnected".into()), at(T0));
    f.core.tick(at(T0 + 4_900));
    assert!(
        doors(f.actions()).is_empty(),
        "a short loss keeps the agents"
    );
    // Still out: a failed publish does not restart the count.
    f.core.replicated(
        "pi-a",
        1,
        Replicated::Failed("timed out".into()),
        at(T0 + 4_950),
    );
    f.core.tick(at(T0 + 5_000));
    assert_eq!(doors(f.actions()), vec![false]);
    f.core.tick(at(T0 + 9_000));
    assert!(doors(f.actions()).is_empty(), "closed once");
    f.core.cluster_connection(None, at(T0 + 9_500));
    f.core.tick(at(T0 + 9_600));
    assert_eq!(doors(f.actions()), vec![true]);
    // A single hub never closes its door.
    let mut single = Fleet::new();
    single.core.cluster_connection(Some("x".into()), at(T0));
    single.core.tick(at(T0 + 60_000));
    assert!(doors(single.actions()).is_empty());
}

#[test]
fn a_fleet_command_reaches_a_group_member_another_front_end_holds_and_keeps_its_answer() {
    use fleetmq_protocol::{Command, FleetCommand, OperatorReplyFrame, OperatorResponse, Reply};
    let mut f = front_end();
    f.core.front_ends_live(vec!["fe-a".into(), "fe-b".into()]);
    f.hello_in("pi-a", &["north"], T0);
    f.core.holder_changed("pi-b", holder("fe-b", true));
    f.actions();
    let fc = FleetCommand {
        command: Command::Ping,
        devices: vec![],
        groups: vec!["north".into()],
        all: false,
        timeout_ms: 0,
        ttl_ms: 0,
        matching: vec![],
    };
    f.operator(70, Request::FleetCommand(fc), T0 + 1);
    let actions = f.actions();
    let queued = to_operator(&actions);
    assert!(
        matches!(&queued[..], [(70, Response::FleetCommandQueued { devices, .. })] if devices == &["pi-a".to_string(), "pi-b".to_string()]),
        "{queued:?}"
    );
    // pi-a's share goes on this front-end's command socket, pi-b's to fe-b.
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Command { device, .. } if device == "pi-a"))
    );
    let asked = to_cluster(&actions);
    let [
        ToCluster::Ask {
            frontend,
            client,
            frame,
            ..
        },
    ] = &asked[..]
    else {
        panic!("want pi-b's share asked at fe-b, got {asked:?}")
    };
    assert_eq!(frontend, "fe-b");
    let Ok(OperatorFrame::Request(req)) = OperatorFrame::decode(frame) else {
        panic!("the share goes as an operator request")
    };
    // fe-b answers it.
    let answer = OperatorReplyFrame::from(OperatorResponse {
        id: req.id,
        response: Response::Reply {
            device: "pi-b".into(),
            reply: Reply::Pong { uptime_ms: 9 },
        },
    })
    .encode()
    .unwrap();
    assert!(f.core.answered_elsewhere(client, &answer));
    f.operator(80, Request::FleetAnswers { id: 1 }, T0 + 2);
    let got = to_operator(&f.actions());
    let [(80, Response::FleetAnswers(answers))] = &got[..] else {
        panic!("{got:?}")
    };
    let b = answers.iter().find(|a| a.device == "pi-b").unwrap();
    assert_eq!(b.state, "answered");
}

#[test]
fn a_configuration_edit_goes_through_the_stream_and_is_applied_at_its_place_there() {
    use crate::cluster::config::ConfigEvent;
    use fleetmq_protocol::{ConfigEdit, ConfigReport};
    let mut f = front_end();
    let edit = ConfigEdit {
        layer: "fleet".into(),
        set: vec![("app.greeting".into(), "hi".into())],
        unset: vec![],
        if_version: 0,
    };
    f.operator(9, Request::ConfigEdit(edit.clone()), T0);
    let actions = f.actions();
    assert!(to_operator(&actions).is_empty(), "answered once applied");
    let sent = to_cluster(&actions);
    let [ToCluster::Config { event }] = &sent[..] else {
        panic!("want the edit for the stream, got {sent:?}")
    };
    assert!(matches!(
        ConfigEvent::decode(event),
        Some(ConfigEvent::Edit { .. })
    ));
    // Back from the stream at sequence 5: applied as version 5, answered.
    f.core.config_events(&[(5, event.clone())], 5, at(T0 + 1));
    let answers = to_operator(&f.actions());
    assert!(
        matches!(&answers[..], [(9, Response::ConfigVersion { version: 5 })]),
        "{answers:?}"
    );
    assert_eq!(f.core.store.config_version().unwrap(), 5);
    // Read again (a restart before the mark was kept): nothing changes.
    f.core.config_events(&[(5, event.clone())], 5, at(T0 + 2));
    assert!(to_operator(&f.actions()).is_empty());
    assert_eq!(f.core.store.config_version().unwrap(), 5);
    // Another front-end's edit, and a device's report made elsewhere.
    let theirs = ConfigEvent::Edit {
        origin: "fe-b".into(),
        ask: 1,
        edit: ConfigEdit {
            if_version: 5,
            ..edit
        },
    };
    let report = ConfigEvent::Applied {
        device: "pi-z".into(),
        report: ConfigReport {
            version: 7,
            errors: vec![],
        },
        at_ms: T0,
    };
    f.core
        .config_events(&[(7, theirs.encode()), (8, report.encode())], 8, at(T0 + 3));
    assert!(
        to_operator(&f.actions()).is_empty(),
        "fe-b answers its operator"
    );
    assert_eq!(f.core.store.config_version().unwrap(), 7);
    assert_eq!(f.core.store.config_applied_by("pi-z").unwrap().0, 7);
    assert_eq!(
        f.core.store.mark(crate::core::CONFIG_MARK).unwrap(),
        Some(8)
    );
}

#[test]
fn a_devices_facts_go_into_its_holder_once_and_show_at_every_front_end() {
    use fleetmq_protocol::DeviceFacts;
    let facts = DeviceFacts {
        kernel: "6.6.31+rpt-rpi-v8".into(),
        model: "Raspberry Pi 4 Model B Rev 1.4".into(),
        ..DeviceFacts::default()
    };
    let offer = |facts: &DeviceFacts| super::facts::offer(&[], facts.clone());
    let mut f = front_end();
    f.hello("pi-a", T0);
    f.actions();
    f.up("pi-a", "pi-a", offer(&facts), T0 + 1);
    let told = to_cluster(&f.actions());
    assert!(
        matches!(&told[..], [ToCluster::Facts { device, facts: said }] if device == "pi-a" && *said == facts),
        "{told:?}"
    );
    f.up("pi-a", "pi-a", offer(&facts), T0 + 2);
    let told = to_cluster(&f.actions());
    assert!(told.is_empty(), "the same facts again: {told:?}");

    // pi-z is held at fe-b, which wrote its facts into its holder.
    f.core.front_ends_live(vec!["fe-a".into(), "fe-b".into()]);
    let at_b = Holder {
        facts: facts.clone(),
        ..holder("fe-b", true).unwrap()
    };
    f.core.holder_changed("pi-z", Some(at_b));
    f.operator(1, Request::Devices, T0 + 3);
    let (_, got) = to_operator(&f.actions()).pop().unwrap();
    let Response::Devices(devices) = got else {
        panic!("{got:?}")
    };
    let by_id = |id: &str| devices.iter().find(|d| d.id == id).unwrap().facts.clone();
    assert_eq!(
        (by_id("pi-a"), by_id("pi-z")),
        (facts.clone(), facts.clone())
    );

    // A command aimed by them reaches pi-b, held at fe-b, by what its
    // holder says (pi-z has no key on this allow list: revoked).
    let at_b = Holder {
        facts: facts.clone(),
        ..holder("fe-b", true).unwrap()
    };
    f.core.holder_changed("pi-b", Some(at_b));
    let fc = fleetmq_protocol::FleetCommand {
        command: fleetmq_protocol::Command::Ping,
        devices: vec![],
        groups: vec![],
        all: false,
        timeout_ms: 0,
        ttl_ms: 0,
        matching: vec!["model~pi 4".into(), "kernel=6.6.31+rpt-rpi-v8".into()],
    };
    f.operator(2, Request::FleetCommand(fc), T0 + 4);
    let queued = to_operator(&f.actions());
    assert!(
        matches!(&queued[..], [(2, Response::FleetCommandQueued { devices, .. })] if devices == &["pi-a".to_string(), "pi-b".to_string()]),
        "{queued:?}"
    );
}
