//! Work aimed by what devices are (`--where model~zero`): the members are
//! those of the aim whose facts match every filter, known when it is
//! submitted; a device whose facts the hub does not know is never one.

use super::facts::offer;
use super::jobs::show;
use super::*;
use fleetmq_protocol::{DeviceFacts, FleetCommand, OperatorError};

/// A device that says it is `model`, running `os` on `kernel`.
fn facts(model: &str, os: &str, kernel: &str) -> DeviceFacts {
    DeviceFacts {
        os_release: os.into(),
        kernel: kernel.into(),
        model: model.into(),
        memory_bytes: 512 << 20,
        ..DeviceFacts::default()
    }
}

/// Three devices in group lab: a Zero on bullseye, a Pi 4 on bookworm,
/// and one whose agent says nothing of what it is; a fourth, a Zero, in
/// no group.
fn lab() -> Fleet {
    let mut f = Fleet::plaintext();
    for (id, groups) in [
        ("pi-zero", &["lab"][..]),
        ("pi-four", &["lab"]),
        ("pi-old", &["lab"]),
        ("pi-far", &[]),
    ] {
        f.hello_in(id, groups, T0);
    }
    let bullseye = "Raspbian GNU/Linux 11 (bullseye)";
    let bookworm = "Debian GNU/Linux 12 (bookworm)";
    let zero = facts("Raspberry Pi Zero W Rev 1.1", bullseye, "6.1.21+");
    f.up("pi-zero", "pi-zero", offer(&["echo"], zero.clone()), T0);
    let four = facts(
        "Raspberry Pi 4 Model B Rev 1.4",
        bookworm,
        "6.6.51+rpt-rpi-v8",
    );
    f.up("pi-four", "pi-four", offer(&["echo"], four), T0);
    f.up(
        "pi-old",
        "pi-old",
        offer(&["echo"], DeviceFacts::default()),
        T0,
    );
    f.up("pi-far", "pi-far", offer(&["echo"], zero), T0);
    f.actions();
    f
}

fn command(groups: &[&str], matching: &[&str]) -> Request {
    Request::FleetCommand(FleetCommand {
        command: Command::Ping,
        devices: vec![],
        groups: groups.iter().map(|g| g.to_string()).collect(),
        all: false,
        timeout_ms: 0,
        ttl_ms: 0,
        matching: matching.iter().map(|m| m.to_string()).collect(),
    })
}

/// Whom the hub answers a request is for, or its error (the request's id
/// is `now`: the hub answers a retried id as it did the first time).
fn members(f: &mut Fleet, request: Request, now: u64) -> Result<Vec<String>, OperatorError> {
    f.operator(now, request, now);
    match to_operator(&f.actions()).as_slice() {
        [(id, Response::FleetCommandQueued { devices, .. })] if *id == now => Ok(devices.clone()),
        [(id, Response::Error(e))] if *id == now => Err(e.clone()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_command_reaches_only_the_devices_of_its_aim_that_match() {
    let mut f = lab();
    assert_eq!(
        members(&mut f, command(&["lab"], &["model~zero"]), T0 + 1),
        Ok(vec!["pi-zero".to_string()]),
        "the Zero in lab, not the one outside it"
    );
    // Alone, filters narrow the fleet.
    assert_eq!(
        members(&mut f, command(&[], &["model~zero"]), T0 + 2),
        Ok(vec!["pi-far".to_string(), "pi-zero".to_string()])
    );
    // Every filter must match.
    assert_eq!(
        members(&mut f, command(&[], &["model~zero", "os~bookworm"]), T0 + 3).map_err(|_| ()),
        Err(())
    );
    // "Every kernel but 6.6" leaves out the device whose kernel is unknown.
    assert_eq!(
        members(&mut f, command(&["lab"], &["kernel!~6.6"]), T0 + 4),
        Ok(vec!["pi-zero".to_string()])
    );
    // What a Hello said is known of every device.
    assert_eq!(
        members(&mut f, command(&["lab"], &["version=0.1.0"]), T0 + 5),
        Ok(vec![
            "pi-four".to_string(),
            "pi-old".to_string(),
            "pi-zero".to_string()
        ])
    );
}

#[test]
fn filters_that_match_nobody_or_are_not_filters_are_refused_with_why() {
    let mut f = lab();
    match members(&mut f, command(&["lab"], &["model~pi 5"]), T0 + 1) {
        Err(OperatorError::BadRequest(why)) => assert_eq!(
            why,
            "no known device is in groups lab where model~pi 5: `fleetmq-hub devices --where 'model~pi 5'` lists whom the filters match"
        ),
        other => panic!("{other:?}"),
    }
    match members(&mut f, command(&[], &["colour=red"]), T0 + 2) {
        Err(OperatorError::BadRequest(why)) => {
            assert!(why.contains("no field \"colour\""), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !f.actions()
            .iter()
            .any(|a| matches!(a, Action::Command { .. })),
        "nothing was sent"
    );
}

#[test]
fn a_job_runs_only_on_the_devices_that_match_and_says_so() {
    let mut f = lab();
    let mut job = exec_job("true", 1);
    job.groups = vec!["lab".into()];
    job.matching = vec!["os~BOOKWORM".into()];
    f.operator(8, Request::SubmitJob(job), T0 + 1);
    let id = match to_operator(&f.actions()).as_slice() {
        [(8, Response::JobSubmitted { id })] => *id,
        other => panic!("{other:?}"),
    };
    let info = show(&mut f, id, T0 + 2);
    assert_eq!(info.target, "groups lab where os~BOOKWORM");
    let runs: Vec<&str> = info.runs.iter().map(|r| r.device.as_str()).collect();
    assert_eq!(runs, ["pi-four"]);
    // The audit trail keeps the aim as it was asked.
    f.operator(9, Request::Audit { limit: 1 }, T0 + 3);
    match to_operator(&f.actions()).as_slice() {
        [(9, Response::Audit(log))] => {
            assert_eq!(
                log[0].act,
                "job for groups lab where os~BOOKWORM: exec true"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_hub_names_matching_among_its_features() {
    let mut f = Fleet::new();
    f.operator(3, Request::Stats, T0);
    match to_operator(&f.actions()).as_slice() {
        [(3, Response::Stats(s))] => assert_eq!(s.features, ["matching"]),
        other => panic!("{other:?}"),
    }
}
