//! Agents on one connection: after the hub's Carry and an Offer saying
//! `one_connection`, commands, broadcasts and work-queue jobs go down the
//! device's telemetry route, and its replies and results come up it.

use super::jobs::{show, work_for};
use super::*;
use fleetmq_protocol::{Abilities, Offer, Target};

/// An Offer from an agent that carries everything on its connection.
fn offer_one(kinds: &[&str], chat: bool, job_slots: u32) -> Upstream {
    Upstream::Offer(Offer(Abilities {
        job_kinds: kinds.iter().map(|k| k.to_string()).collect(),
        exec_programs: vec![],
        config_version: 0,
        one_connection: true,
        chat,
        job_slots,
        hello_on_clock_step: false,
        facts: fleetmq_protocol::DeviceFacts::default(),
    }))
}

/// `device` says Hello in `groups`, then offers to carry everything.
fn join(f: &mut Fleet, device: &str, groups: &[&str], offer: Upstream, now: u64) {
    f.hello_in(device, groups, now);
    f.up(device, device, offer, now);
    f.actions();
}

fn echo_job() -> JobSubmission {
    JobSubmission {
        spec: JobSpec::Echo { text: "hi".into() },
        ..exec_job("unused", 3)
    }
}

#[test]
fn a_command_goes_down_the_telemetry_route_and_its_reply_comes_up_it() {
    let mut f = Fleet::new();
    join(&mut f, "pi-a", &[], offer_one(&[], false, 0), T0);
    join(&mut f, "pi-b", &[], offer_one(&[], false, 0), T0);
    f.operator(7, ping("pi-a", 5_000), T0);
    let sent = f.deliver(T0);
    let corr = match sent.as_slice() {
        [
            Action::Command {
                route: to,
                frame,
                corr,
                carried: true,
                ..
            },
        ] => {
            assert_eq!(to, &route("pi-a"));
            let Downstream::Command(r) = Downstream::decode(frame).unwrap() else {
                panic!("not a command: {frame:?}");
            };
            assert_eq!((r.corr, r.command), (*corr, Command::Ping));
            *corr
        }
        other => panic!("want one command on the telemetry route, got {other:?}"),
    };
    let pong = |corr| {
        Upstream::Reply(CommandReply {
            corr,
            reply: Reply::Pong { uptime_ms: 5 },
        })
    };
    // Another device cannot answer for pi-a.
    f.up("pi-b", "pi-b", pong(corr), T0 + 1);
    assert_eq!(to_operator(&f.actions()), vec![]);
    f.up("pi-a", "pi-a", pong(corr), T0 + 2);
    match to_operator(&f.actions()).as_slice() {
        [(7, Response::Reply { device, reply })] => {
            assert_eq!(device, "pi-a");
            assert_eq!(reply, &Reply::Pong { uptime_ms: 5 });
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_new_hello_without_its_offer_is_reached_on_the_commands_socket() {
    let mut f = Fleet::new();
    join(&mut f, "pi-a", &[], offer_one(&[], false, 0), T0);
    // An older agent took the device over after a restart: its Hello,
    // and an Offer without one_connection.
    f.hello("pi-a", T0 + 1);
    f.operator(8, ping("pi-a", 5_000), T0 + 1);
    assert!(matches!(
        f.deliver(T0 + 1).as_slice(),
        [.., Action::Command { carried: false, .. }]
    ));
}

#[test]
fn broadcasts_reach_agents_on_one_connection_by_group_and_chat() {
    let mut f = Fleet::new();
    join(&mut f, "pi-a", &["north"], offer_one(&[], true, 0), T0);
    join(&mut f, "pi-b", &[], offer_one(&[], false, 0), T0);
    // Each its own request: a request id seen before is a retry.
    let announce = |f: &mut Fleet, target: Target, now: u64| {
        let text = "hello".to_string();
        f.operator(now, Request::Broadcast { target, text }, now);
        f.actions()
    };
    let announced = |actions: &[Action], device: &str| -> usize {
        to_device(actions, device)
            .iter()
            .filter(|d| matches!(d, Downstream::Announcement(_)))
            .count()
    };
    let all = announce(&mut f, Target::All, T0 + 1);
    assert_eq!((announced(&all, "pi-a"), announced(&all, "pi-b")), (1, 1));
    assert!(
        all.iter()
            .any(|a| matches!(a, Action::Publish { topic, .. } if topic == "all/")),
        "published for agents on a SUB too"
    );
    let north = announce(&mut f, Target::Group("north".into()), T0 + 2);
    assert_eq!(
        (announced(&north, "pi-a"), announced(&north, "pi-b")),
        (1, 0)
    );
    let south = announce(&mut f, Target::Group("south".into()), T0 + 3);
    assert_eq!(
        (announced(&south, "pi-a"), announced(&south, "pi-b")),
        (0, 0)
    );
    // A chat line reaches only the agent that wants the room.
    let mut b = BatchBuilder::new(1);
    b.push_chat(T0, "anyone?").unwrap();
    f.up("pi-b", "pi-b", Upstream::Batch(b.finish()), T0 + 4);
    let out = f.actions();
    let chat = |device| {
        to_device(&out, device)
            .into_iter()
            .filter_map(|d| match d {
                Downstream::Chat(c) => Some((c.from, c.text)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(chat("pi-a"), vec![("pi-b".into(), "anyone?".into())]);
    assert_eq!(chat("pi-b"), vec![]);
    // Offline, it hears nothing.
    f.up(
        "pi-a",
        "pi-a",
        Upstream::Bye(fleetmq_protocol::Bye { reason: "x".into() }),
        T0 + 5,
    );
    let after = announce(&mut f, Target::All, T0 + 6);
    assert_eq!(announced(&after, "pi-a"), 0);
}

#[test]
fn work_queue_jobs_go_to_agents_on_one_connection_no_more_than_they_run() {
    let mut f = Fleet::new();
    join(&mut f, "pi-a", &[], offer_one(&["echo"], false, 1), T0);
    for id in 0..3 {
        f.operator(30 + id, Request::SubmitJob(echo_job()), T0);
    }
    // Not confirmed by a driver: the work queue's socket has no puller.
    let out = f.actions();
    let given = work_for(&out, "pi-a");
    assert_eq!(given.len(), 2, "one running, one waiting: {given:?}");
    let queued = out.iter().filter(|a| matches!(a, Action::Job { .. }));
    assert_eq!(queued.count(), 1, "the third is left to pullers, if any");
    f.core.tick(at(T0 + 100));
    assert_eq!(work_for(&f.actions(), "pi-a"), vec![], "its hands are full");

    // A result naming another device is not taken from pi-a's route.
    let result = |(id, attempt, token): (u64, u32, u64), device: &str| {
        Upstream::Result(JobResult {
            id,
            attempt,
            device: device.into(),
            outcome: Outcome::Completed(Output {
                exit_code: Some(0),
                stdout: "hi".into(),
                stderr: String::new(),
                truncated: false,
                duration_ms: 1,
            }),
            token,
        })
    };
    let dropped = f.core.counters().frames_dropped;
    f.up("pi-a", "pi-a", result(given[0], "pi-b"), T0 + 200);
    assert_eq!(f.core.counters().frames_dropped, dropped + 1);
    f.core.tick(at(T0 + 300));
    assert_eq!(work_for(&f.actions(), "pi-a"), vec![]);

    // Its own result finishes the job and frees a hand.
    f.up("pi-a", "pi-a", result(given[0], "pi-a"), T0 + 400);
    let done = show(&mut f, given[0].0, T0 + 400);
    assert_eq!(done.state, JobState::Done, "{done:?}");
    f.core.tick(at(T0 + 500));
    let third = work_for(&f.actions(), "pi-a");
    assert_eq!(third.len(), 1, "{third:?}");
    assert!(
        !given.iter().any(|g| g.0 == third[0].0),
        "a job not given before"
    );
}

#[test]
fn an_offer_of_endless_slots_holds_no_more_than_the_hubs_limit() {
    let mut f = Fleet::new();
    join(
        &mut f,
        "pi-a",
        &[],
        offer_one(&["echo"], false, u32::MAX),
        T0,
    );
    let limit = crate::core::slots::MAX_JOB_SLOTS as u64;
    for id in 0..limit + 10 {
        f.operator(100 + id, Request::SubmitJob(echo_job()), T0);
    }
    let out = f.actions();
    assert_eq!(
        work_for(&out, "pi-a").len() as u64,
        limit + 1,
        "its slots as the hub counts them, plus one waiting"
    );
    f.core.tick(at(T0 + 100));
    assert_eq!(work_for(&f.actions(), "pi-a"), vec![], "its hands are full");
}

#[test]
fn the_device_list_shows_an_agent_on_one_connection_as_listening() {
    let mut f = Fleet::new();
    join(&mut f, "pi-a", &[], offer_one(&[], false, 0), T0);
    f.hello("pi-b", T0);
    f.actions();
    f.operator(11, Request::Devices, T0 + 1);
    let devices = match to_operator(&f.actions()).as_slice() {
        [(11, Response::Devices(d))] => d.clone(),
        other => panic!("{other:?}"),
    };
    let listening = |id: &str| devices.iter().find(|d| d.id == id).unwrap().listening;
    assert!(
        listening("pi-a"),
        "carried: hears broadcasts on its connection"
    );
    assert!(!listening("pi-b"), "its SUB has not subscribed");
}

/// The actions a driver would carry out when `device`'s queue is full:
/// every send to it reported as not delivered, commands too.
fn not_reading(f: &mut Fleet, device: &str, now: u64) -> Vec<Action> {
    let out = f.actions();
    for a in &out {
        match a {
            Action::Device {
                route: to, what, ..
            } if *to == route(device) => {
                f.core.undelivered(to, *what, at(now));
            }
            Action::Command { corr, .. } => f.core.command_sent(*corr, Sent::NotReading, at(now)),
            _ => {}
        }
    }
    out
}

#[test]
fn a_device_that_is_not_reading_is_counted_its_command_fails_at_once_and_its_job_says_why() {
    let mut f = Fleet::new();
    join(&mut f, "pi-a", &[], offer_one(&["echo"], false, 1), T0);
    assert!(!f.core.undelivering());

    // An ack and a job it never gets: counted, and the job says why.
    f.up("pi-a", "pi-a", batch(1, 20.5), T0);
    f.operator(30, Request::SubmitJob(echo_job()), T0);
    let out = not_reading(&mut f, "pi-a", T0);
    let given = work_for(&out, "pi-a");
    assert_eq!(given.len(), 1, "{out:?}");
    assert_eq!(f.core.counters().messages_undelivered, 2);
    assert!(f.core.undelivering());
    let job = show(&mut f, given[0].0, T0 + 1);
    let why = job.error.unwrap_or_default();
    assert!(
        why.contains("attempt 1 was not delivered") && why.contains("pi-a was not reading"),
        "{why}"
    );

    // A command is answered at once, not when its 5 s run out.
    f.operator(7, ping("pi-a", 5_000), T0 + 2);
    not_reading(&mut f, "pi-a", T0 + 2);
    assert_eq!(
        to_operator(&f.actions()),
        vec![(7, Response::Error(OperatorError::NotReading("pi-a".into())))]
    );
    assert_eq!(f.core.counters().commands_sent, 0);

    // It reads again: the episode is over, and the counter stays.
    f.core.delivered(&route("pi-a"));
    assert!(!f.core.undelivering());
    assert_eq!(f.core.counters().messages_undelivered, 2);
}

#[test]
fn a_device_that_goes_offline_while_not_reading_leaves_nothing_behind() {
    let mut f = Fleet::new();
    join(&mut f, "pi-a", &[], offer_one(&[], false, 0), T0);
    f.up("pi-a", "pi-a", batch(1, 20.5), T0);
    not_reading(&mut f, "pi-a", T0);
    assert!(f.core.undelivering());
    let bye = Upstream::Bye(fleetmq_protocol::Bye {
        reason: "stopping".into(),
    });
    f.up("pi-a", "pi-a", bye, T0 + 1);
    assert!(!f.core.undelivering());
}

#[test]
fn a_configuration_dropped_while_not_reading_is_sent_again_once_it_reads() {
    let mut f = Fleet::new();
    join(&mut f, "pi-a", &[], offer_one(&[], false, 0), T0);
    let edit = Request::ConfigEdit(fleetmq_protocol::ConfigEdit {
        layer: "fleet".into(),
        set: vec![("app.mode".into(), "eco".into())],
        unset: vec![],
        if_version: 0,
    });
    f.operator(60, edit, T0 + 1);
    let desired = |actions: &[Action]| {
        to_device(actions, "pi-a")
            .into_iter()
            .filter(|d| matches!(d, Downstream::Desired(_)))
            .count()
    };
    assert_eq!(desired(&not_reading(&mut f, "pi-a", T0 + 1)), 1);

    // It reads again: what it missed comes again, once.
    f.core.delivered(&route("pi-a"));
    assert_eq!(desired(&f.actions()), 1);
    f.core.delivered(&route("pi-a"));
    assert_eq!(desired(&f.actions()), 0, "the episode is over");

    // An episode that dropped only an ack sends no document.
    f.up("pi-a", "pi-a", batch(1, 20.5), T0 + 2);
    not_reading(&mut f, "pi-a", T0 + 2);
    f.core.delivered(&route("pi-a"));
    assert_eq!(desired(&f.actions()), 0);
}

#[test]
fn groups_the_allow_list_pins_are_the_devices_whatever_its_hello_says() {
    let mut f = Fleet::new();
    let (a_key, b_key) = (f.keys[0].1.clone(), f.keys[1].1.clone());
    let list = |a_groups: &str| {
        let text = format!("pi-a {a_key} groups={a_groups}\npi-b {b_key}\n");
        AllowList::parse(std::path::Path::new("allowed_devices"), &text).unwrap()
    };
    f.core.allow_list_changed(list("north"), at(T0));
    // pi-a claims groups it is not pinned to; pi-b names its own.
    join(
        &mut f,
        "pi-a",
        &["south", "admins"],
        offer_one(&[], false, 0),
        T0,
    );
    join(&mut f, "pi-b", &["south"], offer_one(&[], false, 0), T0);
    let groups = |f: &mut Fleet, now: u64| {
        f.operator(now, Request::Devices, now);
        let answers = to_operator(&f.actions());
        let [(_, Response::Devices(devices))] = &answers[..] else {
            panic!("{answers:?}");
        };
        let of = |id: &str| devices.iter().find(|d| d.id == id).unwrap().groups.clone();
        (of("pi-a"), of("pi-b"))
    };
    let names = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        groups(&mut f, T0 + 1),
        (names(&["north"]), names(&["south"]))
    );
    let heard = |f: &mut Fleet, group: &str, now: u64| {
        let (target, text) = (Target::Group(group.into()), "hi".to_string());
        f.operator(now, Request::Broadcast { target, text }, now);
        let out = f.actions();
        let count = |device| {
            to_device(&out, device)
                .iter()
                .filter(|d| matches!(d, Downstream::Announcement(_)))
                .count()
        };
        (count("pi-a"), count("pi-b"))
    };
    assert_eq!(heard(&mut f, "south", T0 + 2), (0, 1));
    assert_eq!(heard(&mut f, "admins", T0 + 3), (0, 0));
    assert_eq!(heard(&mut f, "north", T0 + 4), (1, 0));

    // Pinned anew: the online device is asked for a Hello, and its groups
    // come from the list again.
    f.core.allow_list_changed(list("south"), at(T0 + 5));
    let out = f.actions();
    assert!(
        matches!(to_device(&out, "pi-a")[..], [Downstream::HelloRequest(_)]),
        "{out:?}"
    );
    assert!(
        to_device(&out, "pi-b").is_empty(),
        "its groups did not change"
    );
    let cut = |out: &[Action]| -> Vec<String> {
        out.iter()
            .filter_map(|a| match a {
                Action::CutBroadcast { device } => Some(device.clone()),
                _ => None,
            })
            .collect()
    };
    assert!(cut(&out).is_empty(), "not before its Hello is answered");
    f.hello_in("pi-a", &["south", "admins"], T0 + 6);
    let out = f.actions();
    assert!(
        matches!(
            &to_device(&out, "pi-a")[..],
            [
                Downstream::PinnedGroups(_),
                Downstream::Carry(_),
                Downstream::TakesLogs(_),
                Downstream::Welcome(_)
            ]
        ),
        "{out:?}"
    );
    assert_eq!(
        cut(&out),
        ["pi-a"],
        "then its subscriptions (five sockets) are made again"
    );
    f.up("pi-a", "pi-a", offer_one(&[], false, 0), T0 + 6);
    f.actions();
    assert_eq!(
        groups(&mut f, T0 + 7),
        (names(&["south"]), names(&["south"]))
    );
    assert_eq!(heard(&mut f, "south", T0 + 8), (1, 1));

    // A device pinned anew that does not say Hello is cut all the same.
    f.core.allow_list_changed(list("north"), at(T0 + 10));
    assert!(cut(&f.actions()).is_empty());
    f.core.tick(at(T0 + 4_000));
    assert!(cut(&f.actions()).is_empty(), "it has 5 s");
    f.core.tick(at(T0 + 5_010));
    assert_eq!(cut(&f.actions()), ["pi-a"]);
}
