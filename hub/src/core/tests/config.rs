//! The desired configuration: a device gets its document only when it is
//! behind, on connect and on each change that applies to it.

use super::*;
use fleetmq_protocol::{Abilities, Applied, ConfigEdit, ConfigReport, Offer};

fn offer(config_version: u64) -> Upstream {
    Upstream::Offer(Offer(Abilities {
        job_kinds: vec![],
        exec_programs: vec![],
        config_version,
        one_connection: false,
        chat: false,
        job_slots: 0,
        hello_on_clock_step: false,
        facts: fleetmq_protocol::DeviceFacts::default(),
    }))
}

fn edit(layer: &str, key: &str, value: &str, if_version: u64) -> Request {
    Request::ConfigEdit(ConfigEdit {
        layer: layer.into(),
        set: vec![(key.into(), value.into())],
        unset: vec![],
        if_version,
    })
}

/// The documents sent to `device`: (version, values).
fn documents(actions: &[Action], device: &str) -> Vec<(u64, Vec<(String, String)>)> {
    to_device(actions, device)
        .into_iter()
        .filter_map(|d| match d {
            Downstream::Desired(fleetmq_protocol::Desired(doc)) => Some((doc.version, doc.values)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_device_gets_its_document_when_behind_and_on_each_change_that_applies() {
    let mut f = Fleet::new();
    f.hello_in("pi-a", &["north"], T0);
    f.hello_in("pi-b", &["south"], T0);
    f.up("pi-a", "pi-a", offer(0), T0);
    f.up("pi-b", "pi-b", offer(0), T0);
    assert!(
        documents(&f.actions(), "pi-a").is_empty(),
        "nothing set yet"
    );

    f.operator(60, edit("group:north", "app.mode", "eco", 0), T0 + 1);
    let out = f.actions();
    assert!(matches!(
        to_operator(&out).as_slice(),
        [(60, Response::ConfigVersion { version: 1 })]
    ));
    // A retry of request 60 is answered from memory, not a second edit.
    f.operator(60, edit("group:north", "app.mode", "eco", 0), T0 + 1);
    assert!(matches!(
        to_operator(&f.actions()).as_slice(),
        [(60, Response::ConfigVersion { version: 1 })]
    ));
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        documents(&out, "pi-a"),
        [(1, vec![pair("app.mode", "eco")])]
    );
    assert!(documents(&out, "pi-b").is_empty(), "not pi-b's group");

    // pi-a applied it; reconnecting at version 1, it gets nothing again.
    let report = Applied(ConfigReport {
        version: 1,
        errors: vec![],
    });
    f.up("pi-a", "pi-a", Upstream::Applied(report), T0 + 2);
    f.up("pi-a", "pi-a", offer(1), T0 + 3);
    assert!(documents(&f.actions(), "pi-a").is_empty());
    // A stale conditional write changes nothing; a fleet-wide one reaches both.
    f.operator(61, edit("fleet", "host.interval_ms", "5000", 7), T0 + 4);
    match to_operator(&f.actions()).as_slice() {
        [(61, Response::Error(OperatorError::BadRequest(why)))] => {
            assert!(why.contains("version 1, not 7"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    f.operator(62, edit("fleet", "host.interval_ms", "5000", 1), T0 + 5);
    let out = f.actions();
    assert_eq!(documents(&out, "pi-a")[0].0, 2);
    assert_eq!(
        documents(&out, "pi-b"),
        [(2, vec![pair("host.interval_ms", "5000")])]
    );
}

#[test]
fn an_edit_that_would_make_a_devices_document_over_32_kib_is_refused() {
    let mut f = Fleet::new();
    f.hello_in("pi-a", &["north"], T0);
    f.hello_in("pi-b", &[], T0);
    f.actions();
    // Keys of 4,000-byte values: six in the fleet's layer, three in north's.
    let many = |layer: &str, prefix: &str, n: usize| {
        Request::ConfigEdit(ConfigEdit {
            layer: layer.into(),
            set: (0..n)
                .map(|i| (format!("app.{prefix}{i}"), "x".repeat(4_000)))
                .collect(),
            unset: vec![],
            if_version: 0,
        })
    };
    f.operator(63, many("fleet", "f", 6), T0);
    assert!(matches!(
        to_operator(&f.actions()).as_slice(),
        [(63, Response::ConfigVersion { version: 1 })]
    ));
    // Alone, each layer fits; over the fleet's, north's would not.
    f.operator(64, many("group:north", "n", 3), T0);
    match to_operator(&f.actions()).as_slice() {
        [(64, Response::Error(OperatorError::BadRequest(why)))] => {
            assert!(why.contains("pi-a's configuration would be"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // Over keys the fleet already sets, it fits.
    f.operator(65, many("group:north", "f", 3), T0);
    assert!(matches!(
        to_operator(&f.actions()).as_slice(),
        [(65, Response::ConfigVersion { version: 2 })]
    ));
}

#[test]
fn a_fleet_wide_edit_reaches_many_devices_a_few_hundred_a_tick() {
    let mut f = Fleet::plaintext();
    let devices: Vec<String> = (0..300).map(|i| format!("pi-{i:03}")).collect();
    for d in &devices {
        f.hello(d, T0);
        f.up(d, d, offer(0), T0);
    }
    f.actions();
    f.operator(66, edit("fleet", "app.mode", "eco", 0), T0 + 1);
    let sent = |actions: &[Action]| {
        devices
            .iter()
            .filter(|d| !documents(actions, d).is_empty())
            .count()
    };
    assert_eq!(sent(&f.actions()), 256, "the first few hundred at once");
    f.core.tick(at(T0 + 100));
    assert_eq!(sent(&f.actions()), 44, "the rest on the next tick");
    f.core.tick(at(T0 + 200));
    assert_eq!(sent(&f.actions()), 0, "each once");
}

#[test]
fn a_device_whose_groups_change_gets_the_document_of_its_new_layers() {
    let mut f = Fleet::new();
    let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
    let applied = |version| {
        Upstream::Applied(Applied(ConfigReport {
            version,
            errors: vec![],
        }))
    };
    f.hello("pi-a", T0);
    f.up("pi-a", "pi-a", offer(0), T0);
    f.actions();
    // north's key is older than the fleet's, which pi-a applies.
    f.operator(60, edit("group:north", "app.mode", "eco", 0), T0 + 1);
    f.operator(61, edit("fleet", "app.x", "1", 0), T0 + 2);
    assert_eq!(
        documents(&f.actions(), "pi-a"),
        [(2, vec![pair("app.x", "1")])]
    );
    f.up("pi-a", "pi-a", applied(2), T0 + 3);
    // Now in north (a reload, or pinned groups): its Offer says version 2,
    // north's newest change is version 1, and yet north's key is due.
    f.hello_in("pi-a", &["north"], T0 + 4);
    f.up("pi-a", "pi-a", offer(2), T0 + 5);
    assert_eq!(
        documents(&f.actions(), "pi-a"),
        [(2, vec![pair("app.mode", "eco"), pair("app.x", "1")])]
    );
    // Not again once it applied it, though its groups are north's still.
    f.up("pi-a", "pi-a", applied(2), T0 + 6);
    f.hello_in("pi-a", &["north"], T0 + 7);
    f.up("pi-a", "pi-a", offer(2), T0 + 8);
    assert!(documents(&f.actions(), "pi-a").is_empty());
    // Out of north again: north's key goes.
    f.hello("pi-a", T0 + 9);
    f.up("pi-a", "pi-a", offer(2), T0 + 10);
    assert_eq!(
        documents(&f.actions(), "pi-a"),
        [(2, vec![pair("app.x", "1")])]
    );
    // Sent but not applied (it went away): sent again on its next Offer.
    f.hello_in("pi-a", &["north"], T0 + 11);
    f.up("pi-a", "pi-a", offer(2), T0 + 12);
    assert_eq!(documents(&f.actions(), "pi-a").len(), 1);
    f.up("pi-a", "pi-a", offer(2), T0 + 13);
    assert_eq!(documents(&f.actions(), "pi-a").len(), 1);
}

#[test]
fn a_device_with_no_configuration_is_sent_none_when_its_groups_change() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.up("pi-a", "pi-a", offer(0), T0);
    f.hello_in("pi-a", &["north"], T0 + 1);
    f.up("pi-a", "pi-a", offer(0), T0 + 2);
    assert!(documents(&f.actions(), "pi-a").is_empty());
}
