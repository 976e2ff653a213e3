//! Who speaks for a device, driven through the core: keys at the
//! handshake, routes and the second agent with the same key, batch numbers
//! another agent used, revocation, and remote operators' roles.

use std::path::Path;

use fleetmq_protocol::{
    CommandReply, Downstream, OperatorError, OperatorFrame, OperatorRequest, Reply, ReplyFrame,
    Request, Response, Upstream, Value,
};

use super::*;

#[test]
fn an_unknown_key_is_refused_at_the_handshake() {
    let mut f = Fleet::new();
    let stranger = fleetmq_net::keys::generate().unwrap().public;
    let request = zap_request(&stranger, "10.0.0.9");
    let mut asked = false;
    let reply = f.core.zap(
        &request,
        || {
            asked = true;
            None
        },
        at(T0),
    );
    assert_eq!(reply[2], b"400", "refused");
    assert!(
        asked,
        "every handshake makes the core look for a newer list"
    );
    assert_eq!(f.core.counters().handshakes_refused, 1);
}

#[test]
fn a_handshake_is_judged_by_the_list_as_the_file_is_now_not_as_at_the_last_tick() {
    let mut f = Fleet::new();
    let (_, b_key) = f.keys[1].clone();
    let request = |key: &str| zap_request(key, "127.0.0.1");
    // pi-b's key moved to pi-c (revoke, then allow, within one tick): the
    // handshake reads the file first, and the connection is pi-c's.
    let moved = AllowList::parse(Path::new("a"), &format!("pi-c {b_key}\n")).unwrap();
    let reply = f.core.zap(&request(&b_key), || Some(moved), at(T0));
    assert_eq!((&reply[2][..], &reply[4][..]), (&b"200"[..], &b"pi-c"[..]));
    // The file unchanged: the list in force judges it.
    let reply = f.core.zap(&request(&b_key), || None, at(T0 + 1));
    assert_eq!(&reply[4][..], b"pi-c");
}

#[test]
fn a_message_claiming_another_device_is_dropped_and_its_sender_told_its_id() {
    let mut f = Fleet::new();
    // pi-b's connection claims to be pi-a: nothing is stored or acked, and
    // the claimant alone is told which id its key is enrolled under.
    f.up("pi-a", "pi-b", batch(1, 20.0), T0);
    let told = to_device(&f.actions(), "pi-a");
    assert!(
        matches!(&told[..], [Downstream::Refusal(r)] if r.reason.contains("enrolled as pi-b, not pi-a")),
        "{told:?}"
    );
    assert_eq!(f.core.counters().impersonations, 1);
    assert_eq!(f.core.counters().batches_stored, 0);
    f.up("pi-a", "pi-b", batch(2, 20.0), T0 + 1_000);
    assert_eq!(f.actions(), vec![], "told at most once a minute");
    f.up("pi-a", "pi-b", batch(3, 20.0), T0 + 61_000);
    assert_eq!(
        to_device(&f.actions(), "pi-a").len(),
        1,
        "and again after it"
    );
    // A key that is not enrolled at all (plaintext peer, no user id) is
    // told nothing.
    f.up("pi-a", "nobody", batch(4, 20.0), T0 + 62_000);
    assert_eq!(f.actions(), vec![]);
}

#[test]
fn revoking_a_key_takes_the_device_offline_and_cuts_its_connections_only() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.actions();
    let (_, b_key) = f.keys[1].clone();
    let only_b = AllowList::parse(Path::new("a"), &format!("pi-b {b_key}\n")).unwrap();
    f.core.allow_list_changed(only_b, at(T0 + 1));
    assert_eq!(
        f.actions(),
        vec![Action::CutDevice {
            device: "pi-a".into()
        }]
    );
    f.up("pi-a", "pi-a", batch(1, 1.0), T0 + 2);
    assert_eq!(f.actions(), vec![], "pi-a is no longer enrolled");
}

#[test]
fn what_is_meant_for_a_device_goes_only_to_the_route_its_key_spoke_from() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.hello("pi-b", T0);
    f.actions();
    // pi-b's key on a route that names pi-a (a takeover attempt with a
    // routing id of its own choosing): dropped, never answered as pi-a.
    let hijack = fleetmq_protocol::route("pi-a", "attackerattacker").into_bytes();
    f.up_via(&hijack, "pi-b", batch(1, 1.0), T0 + 1);
    let sent = f.actions();
    assert!(
        !to_route(&sent, &hijack)
            .iter()
            .any(|m| matches!(m, Downstream::Ack(_))),
        "{sent:?}"
    );
    assert!(to_device(&sent, "pi-a").is_empty());
    // pi-a's own acks, commands and announcements go to its route only.
    f.up("pi-a", "pi-a", batch(1, 1.0), T0 + 2);
    assert!(matches!(
        &to_device(&f.actions(), "pi-a")[..],
        [Downstream::Ack(_)]
    ));
    f.operator(1, ping("pi-a", 5_000), T0 + 3);
    let sent = f.deliver(T0 + 3);
    assert!(
        matches!(&sent[..], [Action::Command { route: r, .. }] if *r == route("pi-a")),
        "{sent:?}"
    );
    let to_pi_a = Request::Broadcast {
        target: fleetmq_protocol::Target::Device("pi-a".into()),
        text: "for pi-a alone".into(),
    };
    f.operator(2, to_pi_a, T0 + 4);
    let sent = f.actions();
    assert!(
        !sent.iter().any(|a| matches!(a, Action::Publish { .. })),
        "a device's announcement is never published on a topic: {sent:?}"
    );
    assert!(
        matches!(&to_device(&sent, "pi-a")[..], [Downstream::Announcement(a)] if a.text == "for pi-a alone"),
        "{sent:?}"
    );
    // A device never seen: the operator hears it is unknown (one seen and
    // gone is offline: client.py's device that said Bye).
    let to_pi_c = Request::Broadcast {
        target: fleetmq_protocol::Target::Device("pi-c".into()),
        text: "nobody".into(),
    };
    f.operator(3, to_pi_c, T0 + 5);
    let answers = to_operator(&f.actions());
    assert!(
        matches!(
            &answers[..],
            [(3, Response::Error(OperatorError::UnknownDevice(d)))] if d == "pi-c"
        ),
        "{answers:?}"
    );
    // A command reply from a route that does not speak for pi-a is ignored.
    let reply = ReplyFrame::from(CommandReply {
        corr: 1,
        reply: Reply::Pong { uptime_ms: 1 },
    })
    .encode()
    .unwrap();
    let clone = fleetmq_protocol::route("pi-a", "someotherroute00").into_bytes();
    f.core
        .reply(&[clone, vec![], reply], Some("pi-a"), at(T0 + 6));
    assert!(to_operator(&f.actions()).is_empty());
}

#[test]
fn a_second_agent_with_a_connected_devices_key_is_refused_and_told_why() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.actions();
    // A clone: same key, same id, its own route.
    let clone = fleetmq_protocol::route("pi-a", "clonecloneclone0").into_bytes();
    f.up_via(&clone, "pi-a", batch(1, 1.0), T0 + 10);
    let sent = f.actions();
    let told = to_route(&sent, &clone);
    assert!(
        matches!(&told[..], [Downstream::Refusal(r)] if r.reason.contains("another agent is connected as pi-a from 10.0.0.1") && r.reason.contains("clone")),
        "{told:?}"
    );
    assert!(to_device(&sent, "pi-a").is_empty());
    assert_eq!(
        f.core.counters().batches_stored,
        0,
        "nothing of the clone's is served"
    );
    assert_eq!(f.core.counters().connection_conflicts, 1);
    f.up_via(&clone, "pi-a", batch(1, 1.0), T0 + 20);
    assert_eq!(f.actions(), vec![], "told at most once a minute");
    f.operator(1, Request::Devices, T0 + 30);
    let answers = to_operator(&f.actions());
    let [(1, Response::Devices(devices))] = &answers[..] else {
        panic!("{answers:?}");
    };
    let a = devices.iter().find(|d| d.id == "pi-a").unwrap();
    assert_eq!((a.conflicts, a.conflict_address.as_str()), (2, "10.0.0.1"));

    // The first agent goes quiet (a restart the hub did not see end): once
    // it is offline, the new route takes the device and is served.
    f.core.tick(at(T0 + 10_000));
    f.actions();
    f.up_via(&clone, "pi-a", batch(1, 1.0), T0 + 10_001);
    let sent = f.actions();
    assert!(
        to_route(&sent, &clone)
            .iter()
            .any(|m| matches!(m, Downstream::Ack(a) if a.seq == 1)),
        "{sent:?}"
    );
    // Now the first one is the one refused.
    f.up("pi-a", "pi-a", batch(2, 1.0), T0 + 10_002);
    let told = to_device(&f.actions(), "pi-a");
    assert!(matches!(&told[..], [Downstream::Refusal(_)]), "{told:?}");
}

#[test]
fn an_agent_without_a_route_nonce_is_told_to_upgrade() {
    let mut f = Fleet::new();
    f.up_via(b"pi-a", "pi-a", batch(1, 1.0), T0);
    let told = to_route(&f.actions(), b"pi-a");
    assert!(
        matches!(&told[..], [Downstream::Refusal(r)] if r.reason.contains("no nonce")),
        "{told:?}"
    );
    assert_eq!(f.core.counters().batches_stored, 0);
    // Not when its key is another device's.
    f.up_via(b"pi-b", "pi-a", batch(1, 1.0), T0);
    assert_eq!(f.actions(), vec![]);
}

#[test]
fn a_device_whose_commands_socket_cannot_be_reached_is_asked_to_reconnect() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.actions();
    let unreachable = |f: &mut Fleet, id: u64, now: u64| {
        f.operator(id, ping("pi-a", 5_000), now);
        let mut told = Vec::new();
        while let Some(a) = f.core.poll_action() {
            if let Action::Command { corr, .. } = a {
                f.core.command_sent(corr, Sent::Unreachable, at(now));
            } else {
                told.push(a);
            }
        }
        to_device(&told, "pi-a")
    };
    // Just online: its sockets are still connecting.
    assert_eq!(unreachable(&mut f, 1, T0 + 1_000), vec![]);
    f.up(
        "pi-a",
        "pi-a",
        Upstream::Heartbeat(fleetmq_protocol::Heartbeat { uptime_ms: 1 }),
        T0 + 11_000,
    );
    f.actions();
    let told = unreachable(&mut f, 2, T0 + 11_000);
    assert!(matches!(&told[..], [Downstream::Relink(_)]), "{told:?}");
    // Not again right away.
    assert_eq!(unreachable(&mut f, 3, T0 + 11_500), vec![]);
}

#[test]
fn a_batch_number_another_agent_used_is_not_acked_but_renumbered() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    for seq in 1..=3 {
        f.up("pi-a", "pi-a", batch(seq, 1.0), T0 + seq);
    }
    f.actions();
    // The device's data directory was wiped: it starts again at 1, with
    // other samples.
    f.up("pi-a", "pi-a", batch(1, 2.0), T0 + 10);
    let told = to_device(&f.actions(), "pi-a");
    assert!(
        matches!(&told[..], [Downstream::Renumber(r)] if r.seq == 1 && r.from == 4),
        "{told:?}"
    );
    assert_eq!(f.core.counters().batches_renumbered, 1);
    // A resend of what is stored is still a duplicate, acked.
    f.up("pi-a", "pi-a", batch(2, 1.0), T0 + 11);
    assert!(matches!(&to_device(&f.actions(), "pi-a")[..], [Downstream::Ack(a)] if a.seq == 2));
    assert_eq!(f.core.counters().batches_duplicate, 1);
    // Renumbered, it is stored.
    f.up("pi-a", "pi-a", batch(4, 2.0), T0 + 12);
    assert!(matches!(&to_device(&f.actions(), "pi-a")[..], [Downstream::Ack(a)] if a.seq == 4));
    assert_eq!(f.core.counters().batches_stored, 4);
}

#[test]
fn an_invalid_batch_is_rejected_by_number_so_the_agent_gives_it_up() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.actions();
    // A name with a control character: never storable.
    let bad = fleetmq_protocol::Batch {
        seq: 9,
        base_ts_ms: T0,
        names: vec!["bad\u{7}name".into()],
        samples: vec![fleetmq_protocol::Sample {
            name: 0,
            offset_ms: 0,
            value: Value::Int(1),
        }],
        chat: vec![],
        sources: vec![],
        logs: vec![],
    };
    f.up("pi-a", "pi-a", Upstream::Batch(bad), T0 + 1);
    let told = to_device(&f.actions(), "pi-a");
    assert!(
        matches!(&told[..], [Downstream::Rejected(r)] if r.seq == 9 && r.reason.contains("batch 9")),
        "{told:?}"
    );
    assert_eq!(f.core.counters().batches_stored, 0);
}

#[test]
fn a_remote_operator_is_let_in_by_its_key_and_acts_only_with_the_admin_role() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.actions();
    let (reader, admin) = (
        fleetmq_net::keys::generate().unwrap(),
        fleetmq_net::keys::generate().unwrap(),
    );
    let text = format!("ro read {}\nboss admin {}\n", reader.public, admin.public);
    let ops = crate::operators::Operators::parse(Path::new("ops"), &text).unwrap();
    f.core.operators_changed(ops);
    let zap = |f: &mut Fleet, domain: &str, key: &str| {
        let raw = zmq::z85_decode(key).unwrap();
        let frames = vec![
            b"1.0".to_vec(),
            b"1".to_vec(),
            domain.as_bytes().to_vec(),
            b"10.0.0.5".to_vec(),
            vec![],
            b"CURVE".to_vec(),
            raw,
        ];
        let reply = f.core.zap(&frames, || None, at(T0));
        (
            String::from_utf8(reply[2].clone()).unwrap(),
            String::from_utf8(reply[4].clone()).unwrap(),
        )
    };
    let op = fleetmq_net::OPERATOR_ZAP_DOMAIN;
    assert_eq!(
        zap(&mut f, op, &reader.public),
        ("200".into(), "operator:read:ro".into())
    );
    assert_eq!(
        zap(&mut f, op, &admin.public),
        ("200".into(), "operator:admin:boss".into())
    );
    // A device's key is not an operator's, nor an operator's a device's.
    let (_, device_key) = f.keys[0].clone();
    assert_eq!(zap(&mut f, op, &device_key).0, "400");
    assert_eq!(zap(&mut f, fleetmq_net::ZAP_DOMAIN, &admin.public).0, "400");

    let ask = |f: &mut Fleet, id: u64, request: Request, user: Option<&str>| {
        let frame = OperatorFrame::from(OperatorRequest { id, request })
            .encode()
            .unwrap();
        f.core.operator(
            &[OP.to_vec(), vec![], frame],
            Caller::Remote(user),
            at(T0 + 1),
        );
        f.deliver(T0 + 1)
    };
    let read_only = Some("operator:read:ro");
    let sent = ask(&mut f, 1, ping("pi-a", 1_000), read_only);
    assert!(!sent.iter().any(|a| matches!(a, Action::Command { .. })));
    assert!(
        matches!(&to_operator(&sent)[..], [(1, Response::Error(OperatorError::Forbidden(why)))] if why.contains("read role")),
        "{sent:?}"
    );
    let read = ask(&mut f, 2, Request::Devices, read_only);
    assert!(matches!(
        &to_operator(&read)[..],
        [(2, Response::Devices(_))]
    ));
    let acted = ask(&mut f, 3, ping("pi-a", 1_000), Some("operator:admin:boss"));
    assert!(acted.iter().any(|a| matches!(a, Action::Command { .. })));
    let nobody = ask(&mut f, 4, Request::Devices, None);
    assert!(matches!(
        &to_operator(&nobody)[..],
        [(4, Response::Error(OperatorError::Forbidden(_)))]
    ));
}

#[test]
fn a_device_on_five_sockets_is_subscribed_only_to_what_it_may_hear() {
    let mut f = Fleet::new();
    let (a_key, b_key) = (f.keys[0].1.clone(), f.keys[1].1.clone());
    let text = format!("pi-a {a_key} groups=north\npi-b {b_key}\n");
    let list = AllowList::parse(Path::new("allowed_devices"), &text).unwrap();
    f.core.allow_list_changed(list, at(T0));
    let mut apply = |frame: &[u8], user_id: Option<&str>| f.core.subscription(frame, user_id);

    // Everyone's topics, its own, and the groups it is pinned to.
    assert!(apply(b"\x01all/", Some("pi-a")));
    assert!(apply(b"\x01chat/", Some("pi-a")));
    assert!(apply(b"\x01dev/pi-a/", Some("pi-a")));
    assert!(apply(b"\x01group/north/", Some("pi-a")));
    // Not another group, another device's topic, or a prefix of many.
    assert!(!apply(b"\x01group/south/", Some("pi-a")));
    assert!(!apply(b"\x01dev/pi-b/", Some("pi-a")));
    assert!(!apply(b"\x01", Some("pi-a")));
    assert!(!apply(b"\x01group/", Some("pi-a")));
    // A device the list does not pin names its own groups.
    assert!(apply(b"\x01group/south/", Some("pi-b")));
    // A connection no enrolled device's (none on CURVE) subscribes to nothing.
    assert!(!apply(b"\x01all/", None));
    assert!(!apply(b"\x01all/", Some("pi-gone")));
    // Ends are applied: they take away only what was given.
    assert!(apply(b"\x00group/south/", Some("pi-a")));
    assert!(apply(b"\x00dev/pi-a/", None));
    // Not a subscription at all.
    assert!(!apply(b"\x02all/", Some("pi-a")));
    assert!(!apply(b"", Some("pi-a")));
    assert_eq!(f.core.counters().subscriptions_refused, 6);
}

#[test]
fn a_plaintext_hub_applies_every_subscription() {
    let mut f = Fleet::plaintext();
    assert!(f.core.subscription(b"\x01", None), "every topic");
    assert!(f.core.subscription(b"\x01dev/pi-b/", None));
    assert_eq!(f.core.counters().subscriptions_refused, 0);
}

#[test]
fn a_pinned_device_whose_hello_names_other_groups_is_told_its_pinned_ones() {
    let mut f = Fleet::new();
    let (a_key, b_key) = (f.keys[0].1.clone(), f.keys[1].1.clone());
    let text = format!("pi-a {a_key} groups=barns,north\npi-b {b_key}\n");
    let list = AllowList::parse(Path::new("allowed_devices"), &text).unwrap();
    f.core.allow_list_changed(list, at(T0));
    f.actions();
    let kinds =
        |f: &mut Fleet, device: &str| -> Vec<Downstream> { to_device(&f.actions(), device) };

    // Told before the Carry and the Welcome that answer its Hello.
    f.hello_in("pi-a", &["south"], T0);
    let told = kinds(&mut f, "pi-a");
    assert!(
        matches!(
            &told[..],
            [
                Downstream::PinnedGroups(p),
                Downstream::Carry(_),
                Downstream::TakesLogs(_),
                Downstream::Welcome(_)
            ] if p.groups == ["barns", "north"]
        ),
        "{told:?}"
    );
    // A Hello that names the pinned groups (in any order) is not told.
    f.hello_in("pi-a", &["north", "barns"], T0 + 1);
    let told = kinds(&mut f, "pi-a");
    assert!(
        !told
            .iter()
            .any(|d| matches!(d, Downstream::PinnedGroups(_))),
        "{told:?}"
    );
    // Nor is a device the list does not pin.
    f.hello_in("pi-b", &["south"], T0 + 2);
    let told = kinds(&mut f, "pi-b");
    assert!(
        !told
            .iter()
            .any(|d| matches!(d, Downstream::PinnedGroups(_))),
        "{told:?}"
    );
}

#[test]
fn with_pinned_groups_only_a_device_the_list_pins_to_nothing_is_in_no_group() {
    let mut config = HubConfig::default();
    config.security.pinned_groups_only = true;
    let mut f = Fleet::with(config);
    let (a_key, b_key) = (f.keys[0].1.clone(), f.keys[1].1.clone());
    let text = format!("pi-a {a_key} groups=north\npi-b {b_key}\n");
    let list = AllowList::parse(Path::new("allowed_devices"), &text).unwrap();
    f.core.allow_list_changed(list, at(T0));
    f.actions();

    // pi-b's line pins nothing: whatever it says, it is in no group, and
    // is told so.
    f.hello_in("pi-b", &["north"], T0);
    let told = to_device(&f.actions(), "pi-b");
    assert!(
        matches!(&told[0], Downstream::PinnedGroups(p) if p.groups.is_empty()),
        "{told:?}"
    );
    f.hello_in("pi-a", &["north"], T0 + 1);
    f.operator(1, Request::Devices, T0 + 2);
    let answers = to_operator(&f.actions());
    let [(_, Response::Devices(devices))] = &answers[..] else {
        panic!("{answers:?}");
    };
    let groups = |id: &str| devices.iter().find(|d| d.id == id).unwrap().groups.clone();
    assert_eq!(groups("pi-a"), ["north"]);
    assert!(groups("pi-b").is_empty());
    assert!(!f.core.subscription(b"\x01group/north/", Some("pi-b")));
    assert!(f.core.subscription(b"\x01group/north/", Some("pi-a")));
}
