//! Devices waiting to be enrolled: the keys that knock, and an
//! operator's enrolment.

use super::*;

fn pending(f: &mut Fleet) -> Vec<(String, String, u64)> {
    f.operator(8, Request::Pending, T0 + 100_000);
    match to_operator(&f.actions()).as_slice() {
        [(8, Response::Pending(keys))] => keys
            .iter()
            .map(|k| (k.public_key.clone(), k.address.clone(), k.attempts))
            .collect(),
        other => panic!("{other:?}"),
    }
}

/// A new device knocks until it is enrolled: its key is listed, with
/// where it came from and how often, and leaves the list once the allow
/// list takes it. A revoked device's key is not one waiting.
#[test]
fn a_key_not_enrolled_waits_in_the_pending_list_until_the_allow_list_takes_it() {
    let mut f = Fleet::new();
    let (a_key, b_key) = (f.keys[0].1.clone(), f.keys[1].1.clone());
    let new = fleetmq_net::keys::generate().unwrap().public;
    assert_eq!(pending(&mut f), []);
    for n in 0..3 {
        let reply = f
            .core
            .zap(&zap_request(&new, "10.0.0.5"), || None, at(T0 + n));
        assert_eq!(reply[2], b"400", "refused while it waits");
    }
    let only_b = AllowList::parse(Path::new("a"), &format!("pi-b {b_key}\n")).unwrap();
    f.core.allow_list_changed(only_b, at(T0 + 1_000));
    f.core
        .zap(&zap_request(&a_key, "10.0.0.6"), || None, at(T0 + 1_001));
    f.core
        .zap(&zap_request(&new, "10.0.0.7"), || None, at(T0 + 1_002));
    assert_eq!(
        pending(&mut f),
        [(new.clone(), "10.0.0.7".to_string(), 4)],
        "the new key, from where it came last; revoked pi-a is not waiting"
    );

    let enrolled =
        AllowList::parse(Path::new("a"), &format!("pi-b {b_key}\npi-new {new}\n")).unwrap();
    f.core.allow_list_changed(enrolled, at(T0 + 2_000));
    assert_eq!(pending(&mut f), [], "enrolled: no longer waiting");
    let reply = f
        .core
        .zap(&zap_request(&new, "10.0.0.7"), || None, at(T0 + 2_001));
    assert_eq!(reply[2], b"200");
}

/// An operator enrols a device over the operator socket: the core checks
/// the request and has the driver write the allow list (as `fleetmq-hub
/// allow` does), then answers with what became of it. Only an admin may.
#[test]
fn an_operator_enrols_a_waiting_device_through_the_driver() {
    let mut f = Fleet::new();
    let b_key = f.keys[1].1.clone();
    let new = fleetmq_net::keys::generate().unwrap().public;
    let enrol = |device: &str, key: &str| {
        Request::Enrol(fleetmq_protocol::Enrolment {
            device: device.into(),
            public_key: key.into(),
        })
    };

    f.operator(5, enrol("pi-new", &new), T0);
    let actions = f.actions();
    let [
        Action::Enrol {
            client,
            id,
            device,
            public_key,
        },
    ] = actions.as_slice()
    else {
        panic!("the driver is asked to write it: {actions:?}");
    };
    assert_eq!(
        (*id, device.as_str(), public_key.as_str()),
        (5, "pi-new", new.as_str())
    );
    f.core.enrolled(client, *id, Ok("enrolled".into()));
    assert_eq!(
        to_operator(&f.actions()),
        [(
            5,
            Response::Enrolled {
                result: "enrolled".into()
            }
        )]
    );

    // Refused before the file is touched, saying why.
    for (request, why) in [
        (enrol("pi new", &new), "device id"),
        (enrol("pi-new", "not-a-key"), "public_key"),
        (enrol("pi-c", &b_key), "enrolled as pi-b"),
    ] {
        f.operator(6, request, T0 + 1);
        match to_operator(&f.actions()).as_slice() {
            [(6, Response::Error(OperatorError::BadRequest(e)))] => {
                assert!(e.contains(why), "{e}")
            }
            other => panic!("{why}: {other:?}"),
        }
    }
    // A file that cannot be written is said.
    f.operator(7, enrol("pi-new", &new), T0 + 2);
    let Some(Action::Enrol { client, .. }) = f.actions().pop() else {
        panic!("no Enrol action");
    };
    f.core.enrolled(&client, 7, Err("disk full".into()));
    assert!(matches!(
        to_operator(&f.actions()).as_slice(),
        [(7, Response::Error(OperatorError::Storage(e)))] if e == "disk full"
    ));
    assert!(!crate::operators::Role::Read.may(&enrol("pi-new", &new)));
    assert!(crate::operators::Role::Admin.may(&enrol("pi-new", &new)));
}
