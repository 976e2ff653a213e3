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
    let [Action::EditAllowList { client, id, edit }] = actions.as_slice() else {
        panic!("the driver is asked to write it: {actions:?}");
    };
    assert_eq!(
        (*id, edit),
        (
            5,
            &AllowEdit::Enrol {
                device: "pi-new".into(),
                public_key: new.clone()
            }
        )
    );
    let enrolled = Response::Enrolled {
        result: "enrolled".into(),
    };
    f.core.allow_list_edited(client, *id, Ok(enrolled));
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
    let Some(Action::EditAllowList { client, .. }) = f.actions().pop() else {
        panic!("no EditAllowList action");
    };
    let full = OperatorError::Storage("disk full".into());
    f.core.allow_list_edited(&client, 7, Err(full));
    assert!(matches!(
        to_operator(&f.actions()).as_slice(),
        [(7, Response::Error(OperatorError::Storage(e)))] if e == "disk full"
    ));
    assert!(!crate::operators::Role::Read.may(&enrol("pi-new", &new)));
    assert!(crate::operators::Role::Admin.may(&enrol("pi-new", &new)));
}

/// An operator revokes a lost device over the operator socket: the core
/// checks the request and has the driver take it off the allow list file
/// (as `fleetmq-hub revoke` does), then answers with how many keys went.
/// Only an admin may; a plaintext hub has nothing to revoke.
#[test]
fn an_operator_revokes_a_device_through_the_driver() {
    let mut f = Fleet::new();
    let a_key = f.keys[0].1.clone();
    let revoke = |device: &str, key: Option<&str>| {
        Request::Revoke(fleetmq_protocol::Revocation {
            device: device.into(),
            public_key: key.map(String::from),
        })
    };

    f.operator(5, revoke("pi-a", Some(&a_key)), T0);
    let actions = f.actions();
    let [Action::EditAllowList { client, id, edit }] = actions.as_slice() else {
        panic!("the driver is asked to write it: {actions:?}");
    };
    assert_eq!(
        (*id, edit),
        (
            5,
            &AllowEdit::Revoke {
                device: "pi-a".into(),
                public_key: Some(a_key.clone())
            }
        )
    );
    let revoked = Response::Revoked { removed_keys: 1 };
    f.core.allow_list_edited(client, 5, Ok(revoked.clone()));
    assert_eq!(to_operator(&f.actions()), [(5, revoked)]);

    // Not on the file: the driver's word is passed on.
    f.operator(6, revoke("pi-gone", None), T0 + 1);
    let Some(Action::EditAllowList { client, .. }) = f.actions().pop() else {
        panic!("no EditAllowList action");
    };
    let missing = OperatorError::NotFound("pi-gone is not on the allow list".into());
    f.core.allow_list_edited(&client, 6, Err(missing.clone()));
    assert_eq!(to_operator(&f.actions()), [(6, Response::Error(missing))]);

    // Refused before the file is touched, saying why.
    for (request, why) in [
        (revoke("pi a", None), "device id"),
        (revoke("pi-a", Some("not-a-key")), "public_key"),
    ] {
        f.operator(7, request, T0 + 2);
        match to_operator(&f.actions()).as_slice() {
            [(7, Response::Error(OperatorError::BadRequest(e)))] => {
                assert!(e.contains(why), "{e}")
            }
            other => panic!("{why}: {other:?}"),
        }
    }
    let mut plain = Fleet::plaintext();
    plain.operator(8, revoke("pi-a", None), T0);
    assert!(matches!(
        to_operator(&plain.actions()).as_slice(),
        [(8, Response::Error(OperatorError::BadRequest(e)))] if e.contains("--insecure")
    ));
    assert!(!crate::operators::Role::Read.may(&revoke("pi-a", None)));
    assert!(crate::operators::Role::Admin.may(&revoke("pi-a", None)));
}
