//! Forgetting a decommissioned device: refused while it could still
//! speak, then gone from every list the operator reads.

use std::path::Path;

use fleetmq_protocol::OperatorError;

use super::*;

/// Asks the hub to forget `device` and returns its answer.
fn forget(f: &mut Fleet, device: &str, now: u64) -> Response {
    f.operator(
        7,
        Request::Forget {
            device: device.into(),
        },
        now,
    );
    match to_operator(&f.actions()).as_slice() {
        [(7, r)] => r.clone(),
        other => panic!("{other:?}"),
    }
}

/// The devices and series an operator would see now.
fn listed(f: &mut Fleet, now: u64) -> (Vec<String>, Vec<String>, u32) {
    f.operator(8, Request::Devices, now);
    f.operator(9, Request::Latest, now);
    f.operator(10, Request::Stats, now);
    let (mut devices, mut series, mut known) = (vec![], vec![], 0);
    for (_, r) in to_operator(&f.actions()) {
        match r {
            Response::Devices(d) => devices = d.into_iter().map(|d| d.id).collect(),
            Response::Latest(l) => series = l.into_iter().map(|l| l.device).collect(),
            Response::Stats(s) => known = s.devices_known,
            other => panic!("{other:?}"),
        }
    }
    (devices, series, known)
}

fn refused(r: &Response) -> String {
    match r {
        Response::Error(OperatorError::BadRequest(why)) => why.clone(),
        other => panic!("not refused: {other:?}"),
    }
}

#[test]
fn a_device_is_forgotten_once_revoked_and_leaves_every_list() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.hello("pi-b", T0);
    f.up("pi-a", "pi-a", batch(1, 20.0), T0 + 1);
    f.up("pi-b", "pi-b", batch(1, 21.0), T0 + 1);
    f.actions();
    let why = refused(&forget(&mut f, "pi-a", T0 + 2));
    assert!(
        why.contains("revoke it first (`fleetmq-hub revoke pi-a`)"),
        "{why}"
    );

    let (_, b_key) = f.keys[1].clone();
    let only_b = AllowList::parse(Path::new("a"), &format!("pi-b {b_key}\n")).unwrap();
    f.core.allow_list_changed(only_b, at(T0 + 3));
    f.actions();
    assert_eq!(
        listed(&mut f, T0 + 4),
        (
            vec!["pi-a".into(), "pi-b".into()],
            vec!["pi-a".into(), "pi-b".into()],
            2
        ),
        "revoked, it is still listed"
    );
    assert_eq!(
        forget(&mut f, "pi-a", T0 + 5),
        Response::Forgotten { runs: 0, shares: 0 }
    );
    assert_eq!(
        listed(&mut f, T0 + 6),
        (vec!["pi-b".into()], vec!["pi-b".into()], 1)
    );
    assert_eq!(
        forget(&mut f, "pi-a", T0 + 7),
        Response::Error(OperatorError::UnknownDevice("pi-a".into())),
        "forgotten already"
    );
    let why = refused(&forget(&mut f, "pi a\u{1b}[2J", T0 + 8));
    assert!(
        why.contains("device id"),
        "a name no device can have: {why}"
    );
}

#[test]
fn a_plaintext_hub_forgets_a_device_once_it_is_offline_and_a_message_brings_it_back() {
    let mut f = Fleet::plaintext();
    f.hello("pi-a", T0);
    f.actions();
    let why = refused(&forget(&mut f, "pi-a", T0 + 1));
    assert!(
        why.contains("is online") && why.contains("stop its agent first"),
        "{why}"
    );
    // Silent past three heartbeats (of 1 s): offline.
    f.core.tick(at(T0 + 10_000));
    f.actions();
    assert_eq!(
        forget(&mut f, "pi-a", T0 + 10_001),
        Response::Forgotten { runs: 0, shares: 0 }
    );
    assert_eq!(listed(&mut f, T0 + 10_002).0, Vec::<String>::new());
    f.hello("pi-a", T0 + 20_000);
    f.actions();
    assert_eq!(listed(&mut f, T0 + 20_001).0, ["pi-a"]);
}
