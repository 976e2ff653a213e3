//! A device's connects and disconnects, kept with why.

use super::*;

fn log(f: &mut Fleet, device: &str) -> Vec<(bool, String)> {
    f.operator(
        9,
        Request::PresenceLog {
            device: device.into(),
            limit: 10,
        },
        T0 + 100_000,
    );
    match to_operator(&f.actions()).as_slice() {
        [(9, Response::PresenceLog(log))] => {
            log.iter().map(|e| (e.online, e.why.clone())).collect()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn each_connect_and_disconnect_is_kept_with_why_newest_first() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    let bye = fleetmq_protocol::Bye {
        reason: "shutting down".into(),
    };
    f.up("pi-a", "pi-a", Upstream::Bye(bye), T0 + 1_000);
    f.hello("pi-a", T0 + 2_000);
    // Silent past three heartbeats (of 1 s).
    f.core.tick(at(T0 + 10_000));
    assert_eq!(
        log(&mut f, "pi-a"),
        [
            (false, "silent".to_string()),
            (true, "hello".to_string()),
            (false, "bye: shutting down".to_string()),
            (true, "hello".to_string()),
        ]
    );
    assert!(log(&mut f, "pi-b").is_empty());
}

#[test]
fn a_revoked_device_still_trying_to_connect_is_named_in_its_presence_log_once() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    let (a_key, b_key) = (f.keys[0].1.clone(), f.keys[1].1.clone());
    let only_b = AllowList::parse(Path::new("a"), &format!("pi-b {b_key}\n")).unwrap();
    f.core.allow_list_changed(only_b.clone(), at(T0 + 1_000));
    let knock = |key: &str| zap_request(key, "10.0.0.9");
    // Its agent keeps redialling: each handshake is refused, and said
    // once, with the address it came from.
    for n in 0..3 {
        let reply = f.core.zap(&knock(&a_key), || None, at(T0 + 2_000 + n));
        assert_eq!(reply[2], b"400");
    }
    let refused = "refused: its key is revoked (a connection from 10.0.0.9)";
    assert_eq!(
        log(&mut f, "pi-a"),
        [
            (false, refused.to_string()),
            (false, "revoked".to_string()),
            (true, "hello".to_string()),
        ]
    );
    assert_eq!(f.core.counters().handshakes_refused, 3);
    // A stranger's key is no device's: nothing is kept for anyone.
    let stranger = fleetmq_net::keys::generate().unwrap().public;
    f.core.zap(&knock(&stranger), || None, at(T0 + 3_000));
    assert_eq!(log(&mut f, "pi-b"), []);
    // Enrolled again, it is let in as pi-a; revoked once more, a refusal
    // after that change is kept again.
    let both = AllowList::parse(Path::new("a"), &format!("pi-a {a_key}\npi-b {b_key}\n")).unwrap();
    f.core.allow_list_changed(both, at(T0 + 4_000));
    let reply = f.core.zap(&knock(&a_key), || None, at(T0 + 4_001));
    assert_eq!((&reply[2][..], &reply[4][..]), (&b"200"[..], &b"pi-a"[..]));
    f.core.allow_list_changed(only_b, at(T0 + 5_000));
    f.core.zap(&knock(&a_key), || None, at(T0 + 5_001));
    assert_eq!(log(&mut f, "pi-a")[0], (false, refused.to_string()));
}

#[test]
fn a_hub_started_on_a_revoked_line_names_that_key_without_having_seen_it_go() {
    // As a hub restarted after `fleetmq-hub revoke pi-old`: the file's
    // `# revoked` line is all it knows of pi-old.
    let (b_key, old) = (
        fleetmq_net::keys::generate().unwrap().public,
        fleetmq_net::keys::generate().unwrap().public,
    );
    let text = format!("pi-b {b_key}\n# revoked pi-old {old} on 2026-12-01T10:00:00Z\n");
    let keys = vec![("pi-b".to_string(), b_key)];
    let mut f = Fleet::on_list(HubConfig::default(), keys, &text);
    let reply = f
        .core
        .zap(&zap_request(&old, "10.0.0.7"), || None, at(T0 + 1_000));
    assert_eq!(reply[2], b"400", "revoked stays refused");
    assert_eq!(
        log(&mut f, "pi-old"),
        [(
            false,
            "refused: its key is revoked (a connection from 10.0.0.7)".to_string()
        )]
    );
}
