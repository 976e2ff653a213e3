//! What a device's Offer says it is: listed by `Devices`, replaced by a
//! later Offer, not kept past its bounds; the Offer's work counts either
//! way.

use super::*;
use fleetmq_protocol::{Abilities, DeviceFacts, Interface, Offer};

/// An Offer of `kinds` from an agent on five sockets that is `facts`.
pub(super) fn offer(kinds: &[&str], facts: DeviceFacts) -> Upstream {
    Upstream::Offer(Offer(Abilities {
        job_kinds: kinds.iter().map(|k| k.to_string()).collect(),
        exec_programs: vec![],
        config_version: 0,
        one_connection: false,
        chat: false,
        job_slots: 1,
        hello_on_clock_step: false,
        facts,
    }))
}

fn on_wlan(address: &str) -> DeviceFacts {
    DeviceFacts {
        os_release: "Raspbian GNU/Linux 12 (bookworm)".into(),
        kernel: "6.6.31+rpt-rpi-v8".into(),
        model: "Raspberry Pi Zero 2 W Rev 1.0".into(),
        memory_bytes: 512 << 20,
        interfaces: vec![Interface {
            name: "wlan0".into(),
            mac: "b8:27:eb:01:02:03".into(),
            addresses: vec![address.into()],
        }],
        ..DeviceFacts::default()
    }
}

fn facts_of(f: &mut Fleet, device: &str, now: u64) -> DeviceFacts {
    f.operator(1, Request::Devices, now);
    match to_operator(&f.actions()).as_slice() {
        [(1, Response::Devices(d))] => d.iter().find(|d| d.id == device).unwrap().facts.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_devices_facts_are_listed_replaced_by_a_later_offer_and_not_kept_past_their_bounds() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.up(
        "pi-a",
        "pi-a",
        offer(&[], on_wlan("192.168.1.23/24")),
        T0 + 1,
    );
    f.actions();
    assert_eq!(facts_of(&mut f, "pi-a", T0 + 2), on_wlan("192.168.1.23/24"));
    // Mid-session, its lease moved.
    f.up(
        "pi-a",
        "pi-a",
        offer(&[], on_wlan("192.168.1.40/24")),
        T0 + 3,
    );
    f.actions();
    assert_eq!(facts_of(&mut f, "pi-a", T0 + 4), on_wlan("192.168.1.40/24"));
    // Past their bounds: the last good facts stay, and what the Offer
    // says it takes on counts.
    let mut past = on_wlan("192.168.1.41/24");
    past.model = "x".repeat(129);
    f.up("pi-a", "pi-a", offer(&["echo"], past), T0 + 5);
    f.actions();
    assert_eq!(facts_of(&mut f, "pi-a", T0 + 6), on_wlan("192.168.1.40/24"));
    assert!(f.core.offers["pi-a"].job_kinds == ["echo"]);
    assert_eq!(
        f.core.offers["pi-a"].facts,
        DeviceFacts::default(),
        "facts are kept in the store, not in memory"
    );
    // A device whose agent says nothing of them lists none.
    f.hello("pi-b", T0 + 7);
    assert_eq!(facts_of(&mut f, "pi-b", T0 + 8), DeviceFacts::default());
}

#[test]
fn another_board_under_a_devices_key_is_said_and_kept_in_its_log() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    let board = |serial: &str| DeviceFacts {
        serial: serial.into(),
        ..on_wlan("192.168.1.23/24")
    };
    f.up(
        "pi-a",
        "pi-a",
        offer(&[], board("00000000a1b2c3d4")),
        T0 + 1,
    );
    // The same board again, and a reconnect: nothing to say.
    f.up(
        "pi-a",
        "pi-a",
        offer(&[], board("00000000a1b2c3d4")),
        T0 + 2,
    );
    // Its card in another Pi (or its key copied there).
    f.up(
        "pi-a",
        "pi-a",
        offer(&[], board("00000000ffee0011")),
        T0 + 3,
    );
    // A PC-like board without a serial says nothing either way.
    f.up("pi-a", "pi-a", offer(&[], board("")), T0 + 4);
    f.actions();
    f.operator(
        31,
        Request::PresenceLog {
            device: "pi-a".into(),
            limit: 10,
        },
        T0 + 5,
    );
    let whys: Vec<String> = match to_operator(&f.actions()).as_slice() {
        [(31, Response::PresenceLog(log))] => log.iter().map(|e| e.why.clone()).collect(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        whys,
        [
            "another board: serial 00000000ffee0011 (was 00000000a1b2c3d4); if nobody moved its card, its key may be copied",
            "hello"
        ]
    );
}
