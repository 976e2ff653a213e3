//! Jobs aimed at devices on a front-end: recorded in the cluster, their
//! runs in every store, each handed out by the front-end holding its
//! device, which tells the others; a run follows its device when it moves.

use super::cluster::{front_end, holder};
use super::jobs::{offer, show, work_for};
use super::*;
use crate::cluster::ToCluster;
use crate::cluster::jobs::{JobEvent, run_id};

/// The job events this front-end told the cluster.
fn told(actions: &[Action]) -> Vec<JobEvent> {
    to_cluster(actions)
        .into_iter()
        .filter_map(|m| match m {
            ToCluster::JobEvent { event } => JobEvent::decode(&event),
            _ => None,
        })
        .collect()
}

fn result(id: u64, device: &str, attempt: u32, token: u64) -> Vec<u8> {
    ResultFrame::from(JobResult {
        id,
        attempt,
        device: device.into(),
        outcome: Outcome::Completed(fleetmq_protocol::Output {
            exit_code: Some(0),
            stdout: device.into(),
            stderr: String::new(),
            truncated: false,
            duration_ms: 1,
        }),
        token,
    })
    .encode()
    .unwrap()
}

#[test]
fn an_aimed_job_reaches_members_of_every_front_end_and_a_run_follows_its_device() {
    let mut f = front_end();
    f.core.front_ends_live(vec!["fe-a".into(), "fe-b".into()]);
    // pi-a is here; pi-b, in the same group, is held by fe-b.
    f.hello_in("pi-a", &["north"], T0);
    f.up("pi-a", "pi-a", offer(&["exec"], &["uname"]), T0);
    f.core.holder_changed("pi-b", holder("fe-b", true));
    f.actions();

    // Submitted here: the members are named here and the job goes to the
    // cluster as one event; the operator hears once the cluster has it.
    let mut job = exec_job("uname", 3);
    job.groups = vec!["north".into()];
    f.operator(31, Request::SubmitJob(job), T0 + 10);
    let sent = to_cluster(&f.actions());
    let [ToCluster::SubmitJob { event, .. }] = &sent[..] else {
        panic!("want the job for the cluster, got {sent:?}")
    };
    let JobEvent::Aimed {
        target, members, ..
    } = event
    else {
        panic!("want an aimed job, got {event:?}")
    };
    assert_eq!(target, "groups north");
    assert_eq!(members, &["pi-a", "pi-b"]);
    f.core.job_submitted(OP, 31, Ok(7));
    assert!(matches!(
        to_operator(&f.actions())[..],
        [(31, Response::JobSubmitted { id: 7 })]
    ));

    // Its event read back: the run for pi-a, held here, goes out at once,
    // and every front-end hears so.
    let (run_a, run_b) = (run_id(7, 0).unwrap(), run_id(7, 1).unwrap());
    f.core.job_events(&[(7, event.encode())], 7, at(T0 + 20));
    let out = f.actions();
    let given = work_for(&out, "pi-a");
    let [(id, 1, token_a)] = given[..] else {
        panic!("want pi-a's run, got {given:?}")
    };
    assert_eq!(id, run_a);
    assert!(
        matches!(&told(&out)[..], [JobEvent::Sent { id, device, attempt: 1, token, .. }] if *id == run_a && device == "pi-a" && *token == token_a),
        "{:?}",
        told(&out)
    );
    // Its result settles it, and is told too.
    f.core.result(
        &result(run_a, "pi-a", 1, token_a),
        Some("pi-a"),
        at(T0 + 30),
    );
    assert!(matches!(
        &told(&f.actions())[..],
        [JobEvent::Finished { id, .. }] if *id == run_a
    ));

    // fe-b hands pi-b its run: shown leased here, and timed here too.
    let sent_b = JobEvent::Sent {
        id: run_b,
        device: "pi-b".into(),
        attempt: 1,
        token: 555,
        lease_ms: 2_000,
        at_ms: T0 + 40,
    };
    f.core.job_events(&[(8, sent_b.encode())], 8, at(T0 + 40));
    let j = show(&mut f, 7, T0 + 41);
    let states: Vec<(&str, JobState)> = j
        .runs
        .iter()
        .map(|r| (r.device.as_str(), r.state.clone()))
        .collect();
    assert_eq!(
        states,
        [("pi-a", JobState::Done), ("pi-b", JobState::Leased)]
    );

    // fe-b dies with it; pi-b moves here. The lease runs out here, and
    // the run goes to pi-b again as its next attempt, told to the others.
    f.core.holder_changed("pi-b", holder("fe-a", true));
    f.hello_in("pi-b", &["north"], T0 + 50);
    f.up("pi-b", "pi-b", offer(&["exec"], &["uname"]), T0 + 50);
    assert!(
        work_for(&f.actions(), "pi-b").is_empty(),
        "not while another front-end's lease runs"
    );
    f.core.tick(at(T0 + 40 + 2_000));
    let out = f.actions();
    let given = work_for(&out, "pi-b");
    let [(id, 2, token_b)] = given[..] else {
        panic!("want pi-b's run again, got {given:?}")
    };
    assert_eq!(id, run_b);
    assert!(matches!(
        &told(&out)[..],
        [JobEvent::Sent { id, attempt: 2, .. }] if *id == run_b
    ));
    // Its own Sent event, read back, changes nothing.
    f.core.job_events(
        &[(
            9,
            JobEvent::Sent {
                id: run_b,
                device: "pi-b".into(),
                attempt: 2,
                token: token_b,
                lease_ms: 10_000,
                at_ms: T0 + 2_040,
            }
            .encode(),
        )],
        9,
        at(T0 + 2_041),
    );
    // The first attempt's result, sent late by the device that moved with
    // it, is not this attempt's: refused. The second's is taken.
    f.core
        .result(&result(run_b, "pi-b", 1, 555), Some("pi-b"), at(T0 + 2_050));
    assert!(told(&f.actions()).is_empty());
    f.core.result(
        &result(run_b, "pi-b", 2, token_b),
        Some("pi-b"),
        at(T0 + 2_060),
    );
    assert!(matches!(
        &told(&f.actions())[..],
        [JobEvent::Finished { id, .. }] if *id == run_b
    ));
    let j = show(&mut f, 7, T0 + 2_070);
    assert_eq!(j.state, JobState::Done);
    assert!(j.runs.iter().all(|r| r.state == JobState::Done), "{j:?}");
}

#[test]
fn a_result_sent_after_a_move_is_taken_where_it_arrives() {
    let mut f = front_end();
    f.core.front_ends_live(vec!["fe-a".into(), "fe-b".into()]);
    f.core.holder_changed("pi-b", holder("fe-b", true));
    let mut job = exec_job("uname", 3);
    job.devices = vec!["pi-b".into()];
    let aimed = JobEvent::Aimed {
        submission: job,
        target: "devices pi-b".into(),
        members: vec!["pi-b".into()],
        expires_ms: T0 + 86_400_000,
        at_ms: T0,
    };
    let run = run_id(3, 0).unwrap();
    let sent = JobEvent::Sent {
        id: run,
        device: "pi-b".into(),
        attempt: 1,
        token: 777,
        lease_ms: 10_000,
        at_ms: T0 + 1,
    };
    f.core
        .job_events(&[(3, aimed.encode()), (4, sent.encode())], 4, at(T0 + 2));
    // pi-b finished while moving: its result arrives here.
    f.hello_in("pi-b", &["north"], T0 + 3);
    f.actions();
    f.core
        .result(&result(run, "pi-b", 1, 777), Some("pi-b"), at(T0 + 4));
    assert!(matches!(
        &told(&f.actions())[..],
        [JobEvent::Finished { id, device, .. }] if *id == run && device == "pi-b"
    ));
    assert_eq!(show(&mut f, 3, T0 + 5).state, JobState::Done);
}

#[test]
fn every_front_end_fails_a_run_whose_device_never_came_and_a_late_result_still_counts() {
    let mut f = front_end();
    let mut job = exec_job("uname", 3);
    job.devices = vec!["pi-b".into()];
    let aimed = JobEvent::Aimed {
        submission: job,
        target: "devices pi-b".into(),
        members: vec!["pi-b".into()],
        expires_ms: T0 + 1_000,
        at_ms: T0,
    };
    f.core.job_events(&[(5, aimed.encode())], 5, at(T0));
    for t in 0..10 {
        f.core.tick(at(T0 + 2_000 + t));
    }
    let j = show(&mut f, 5, T0 + 3_000);
    assert_eq!(j.runs[0].state, JobState::Failed, "{j:?}");
    // The front-end that did hand it out just in time has its result.
    let run = run_id(5, 0).unwrap();
    let finished = JobEvent::Finished {
        id: run,
        device: "pi-b".into(),
        outcome: Outcome::NotAllowed("not here".into()),
        at_ms: T0 + 3_000,
    };
    f.core
        .job_events(&[(6, finished.encode())], 6, at(T0 + 3_001));
    assert_eq!(show(&mut f, 5, T0 + 3_002).runs[0].state, JobState::Done);
}
