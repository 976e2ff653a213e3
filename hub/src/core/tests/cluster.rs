//! A front-end: acked once the cluster has a batch, held back when it
//! does not, the store filled from the stream, devices told and let go.

use super::*;
use crate::cluster::{Holder, Replicated, ToCluster};

fn front_end() -> Fleet {
    let mut f = Fleet::new();
    f.core.front_end("fe-a");
    f
}

fn to_cluster(actions: &[Action]) -> Vec<ToCluster> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Cluster(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
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
            ToCluster::Batch {
                device,
                seq: 1,
                lines,
                ..
            },
            ToCluster::Batch { seq: 2, .. },
        ] => {
            assert_eq!(device, "pi-a");
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

fn holder(frontend: &str, online: bool) -> Option<Holder> {
    Some(Holder {
        frontend: frontend.into(),
        online,
        since_ms: T0,
        version: "0.1.0".into(),
        arch: "armv6".into(),
    })
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
    // fe-b dies: its devices count as offline once its entry is gone.
    f.core.front_ends_live(vec!["fe-a".into()]);
    f.operator(2, Request::Devices, T0 + 60_002);
    let (_, got) = to_operator(&f.actions()).pop().unwrap();
    let Response::Devices(devices) = got else {
        panic!("{got:?}")
    };
    assert!(devices.iter().all(|d| !d.online), "{devices:?}");
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
