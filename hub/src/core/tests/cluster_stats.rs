//! `stats` and `devices` on a front-end: its own figures, every live
//! front-end's own traffic as each last reported it, and every device the
//! cluster remembers.

use super::cluster::{front_end, holder};
use super::cluster_undo::from_stream;
use super::*;
use crate::cluster::{Holder, ToCluster};
use fleetmq_protocol::{CLUSTER_FEATURES, DeviceInfo, FrontEndStats, HubStats};

/// A front-end's entry in the front-ends bucket: its traffic, and what
/// it runs (`version`, `features`).
pub(super) fn report_running(
    name: &str,
    online: u32,
    accepted: u64,
    version: &str,
    features: &[&str],
) -> Vec<u8> {
    serde_json::to_vec(&FrontEndStats {
        name: name.into(),
        reported_ms: T0,
        devices_online: online,
        batches_accepted: accepted,
        version: version.into(),
        features: features.iter().map(|f| f.to_string()).collect(),
        ..Default::default()
    })
    .unwrap()
}

/// The entry of a front-end of this version.
pub(super) fn report(name: &str, online: u32, accepted: u64) -> Vec<u8> {
    report_running(name, online, accepted, "0.1.0", &CLUSTER_FEATURES)
}

fn front_ends(f: &mut Fleet, now: u64) -> Vec<(String, u32, u64)> {
    f.operator(70, Request::Stats, now);
    match to_operator(&f.actions()).as_slice() {
        [(70, Response::Stats(s))] => s
            .front_ends
            .iter()
            .map(|r| (r.name.clone(), r.devices_online, r.batches_accepted))
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn stats_at_a_front_end_show_each_live_front_ends_own_traffic() {
    let mut f = front_end();
    f.hello("pi-a", T0);
    f.actions();
    // At its first tick, then every 5 s, a front-end tells the cluster its
    // own traffic.
    for t in 1..=50 {
        f.hello("pi-a", T0 + t * 100);
        f.core.tick(at(T0 + t * 100));
    }
    let told: Vec<FrontEndStats> = f
        .actions()
        .iter()
        .filter_map(|a| match a {
            Action::Cluster(ToCluster::Report { report }) => serde_json::from_slice(report).ok(),
            _ => None,
        })
        .collect();
    assert_eq!(told.len(), 2, "{told:?}");
    assert_eq!((told[1].name.as_str(), told[1].devices_online), ("fe-a", 1));
    // With what it runs: its version, and every feature it applies.
    assert_eq!(told[1].version, env!("CARGO_PKG_VERSION"));
    assert_eq!(told[1].features, CLUSTER_FEATURES);

    // The others' reports, as the bucket has them: one not yet reported
    // (an empty entry) lives without figures; this one's own entry is
    // replaced by its figures as of now.
    f.core.front_ends_reported(vec![
        ("fe-a".into(), report("fe-a", 9, 9)),
        ("fe-b".into(), report("fe-b", 2, 40)),
        ("fe-c".into(), Vec::new()),
    ]);
    assert_eq!(
        front_ends(&mut f, T0 + 5_001),
        [("fe-a".into(), 1, 0), ("fe-b".into(), 2, 40)]
    );
    // A front-end gone from the bucket is gone from stats.
    f.core
        .front_ends_reported(vec![("fe-a".into(), Vec::new())]);
    assert_eq!(front_ends(&mut f, T0 + 5_002), [("fe-a".into(), 1, 0)]);
    // A single hub has none.
    let mut single = Fleet::new();
    assert!(front_ends(&mut single, T0).is_empty());
}

#[test]
fn a_report_from_before_versions_reads_as_a_front_end_without_features() {
    // What a front-end of an earlier release writes: no version, no
    // features.
    let old = br#"{"name":"fe-old","reported_ms":1,"devices_online":4,"batches_accepted":7,
        "batches_throttled":0,"frames_dropped":0,"jobs_dispatched":0,"results_received":0,
        "commands_sent":0,"handshakes_refused":0,"disconnects":0}"#;
    let mut f = front_end();
    f.core.front_ends_reported(vec![
        ("fe-a".into(), Vec::new()),
        ("fe-old".into(), old.to_vec()),
    ]);
    f.operator(70, Request::Stats, T0);
    let got = to_operator(&f.actions());
    let [(70, Response::Stats(s))] = got.as_slice() else {
        panic!("{got:?}");
    };
    let old = s.front_ends.iter().find(|r| r.name == "fe-old").unwrap();
    assert_eq!((old.devices_online, old.batches_accepted), (4, 7));
    assert!(old.version.is_empty() && old.features.is_empty(), "{old:?}");
}

/// The devices and the stats an operator reads at `now`.
fn devices_and_stats(f: &mut Fleet, now: u64) -> (Vec<DeviceInfo>, HubStats) {
    f.operator(71, Request::Devices, now);
    f.operator(72, Request::Stats, now);
    match to_operator(&f.actions()).as_slice() {
        [(71, Response::Devices(d)), (72, Response::Stats(s))] => (d.clone(), s.clone()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_device_the_cluster_remembers_is_listed_and_counted_online_or_not() {
    let mut f = front_end();
    f.core.front_ends_live(vec!["fe-a".into(), "fe-b".into()]);
    // pi-b and pi-z connected only at fe-b, and left before a batch of
    // theirs reached the stream: this store has no row of them. pi-z's
    // key has left the allow list since (revoked).
    let went = |online| {
        Some(Holder {
            since_ms: T0 + 500,
            ..holder("fe-b", online).unwrap()
        })
    };
    for device in ["pi-b", "pi-z"] {
        f.core.holder_changed(device, holder("fe-b", true));
        f.core.holder_changed(device, went(false));
    }
    // pi-a is online at fe-b; this store has its batches from the stream,
    // and what it said in its Hello from the holder.
    f.core.holder_changed("pi-a", holder("fe-b", true));
    f.core
        .from_stream(&[from_stream("pi-a", 1)], 1, at(T0 + 550));
    f.actions();
    let (devices, stats) = devices_and_stats(&mut f, T0 + 600);
    let pi_a = &devices[0];
    assert_eq!(
        (
            pi_a.id.as_str(),
            pi_a.online,
            pi_a.front_end.as_str(),
            pi_a.agent_version.as_str(),
            pi_a.arch.as_str(),
            pi_a.groups.clone(),
            pi_a.batches,
        ),
        (
            "pi-a",
            true,
            "fe-b",
            "0.1.0",
            "armv6",
            vec!["north".to_string()],
            1
        )
    );
    let shown: Vec<_> = devices
        .iter()
        .map(|d| {
            let d = d.clone();
            (
                d.id,
                d.online,
                d.revoked,
                d.last_seen_ms,
                d.front_end,
                d.arch,
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            (
                "pi-a".into(),
                true,
                false,
                T0 + 550,
                "fe-b".into(),
                "armv6".into()
            ),
            (
                "pi-b".into(),
                false,
                false,
                T0 + 500,
                String::new(),
                "armv6".into()
            ),
            (
                "pi-z".into(),
                false,
                true,
                T0 + 500,
                String::new(),
                "armv6".into()
            ),
        ]
    );
    assert_eq!((stats.devices_known, stats.devices_online), (3, 1));
    // Forgotten in the cluster: neither listed nor counted.
    let gone = Holder::forgotten_now(went(false).as_ref(), T0 + 700);
    f.core.holder_changed("pi-z", Some(gone));
    let (devices, stats) = devices_and_stats(&mut f, T0 + 800);
    assert_eq!(
        devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["pi-a", "pi-b"]
    );
    assert_eq!(stats.devices_known, 2);
}
