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
