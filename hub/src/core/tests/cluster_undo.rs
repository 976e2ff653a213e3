//! Taking work back and forgetting a device on front-ends: a job cancelled
//! at one front-end is cancelled in every store, in the job events' order,
//! and comes off the work queue; a device forgotten at one is forgotten at
//! every one, from the holders bucket, until it connects again.

use fleetmq_protocol::{JobState, OperatorError};

use super::cluster::holder;
use super::cluster_stats::{report, report_running};
use super::*;
use crate::cluster::jobs::{JobEvent, run_id};
use crate::cluster::{Holder, ToCluster};

fn plaintext_front_end() -> Fleet {
    let mut f = Fleet::plaintext();
    f.core.front_end("fe-a");
    f.core.front_ends_reported(vec![
        ("fe-a".into(), Vec::new()),
        ("fe-b".into(), report("fe-b", 0, 0)),
    ]);
    f
}

/// A batch of `device` as the telemetry stream holds it.
pub(super) fn from_stream(device: &str, seq: u64) -> (String, Vec<u8>) {
    let frame = batch(seq, 1.0).encode().unwrap();
    let (_, body) = fleetmq_protocol::envelope::open(&frame).unwrap();
    (device.to_string(), body.to_vec())
}

/// The devices, and the devices with newest values, an operator sees.
fn listed(f: &mut Fleet, now: u64) -> (Vec<String>, Vec<String>) {
    f.operator(80, Request::Devices, now);
    f.operator(81, Request::Latest, now);
    let (mut devices, mut series) = (vec![], vec![]);
    for (_, r) in to_operator(&f.actions()) {
        match r {
            Response::Devices(d) => devices = d.into_iter().map(|d| d.id).collect(),
            Response::Latest(l) => series = l.into_iter().map(|l| l.device).collect(),
            other => panic!("{other:?}"),
        }
    }
    (devices, series)
}

#[test]
fn a_job_cancelled_at_a_front_end_is_answered_once_its_event_is_applied_and_leaves_the_queue() {
    let mut f = plaintext_front_end();
    f.core.holder_changed("pi-b", holder("fe-b", false));
    let events = [
        (
            41,
            JobEvent::Submitted {
                submission: exec_job("uname", 3),
                at_ms: T0,
            }
            .encode(),
        ),
        (
            42,
            JobEvent::Aimed {
                submission: exec_job("uname", 3),
                target: "devices pi-b".into(),
                members: vec!["pi-b".into()],
                expires_ms: T0 + 3_600_000,
                at_ms: T0,
            }
            .encode(),
        ),
    ];
    f.core.job_events(&events, 42, at(T0 + 1));
    f.actions();

    // Unknown here: answered at once.
    f.operator(4, Request::CancelJob { id: 99 }, T0 + 2);
    assert_eq!(
        to_operator(&f.actions()),
        [(4, Response::Error(OperatorError::NotFound("job 99".into())))]
    );

    // Asked here: put on the job events, answered only once applied.
    f.operator(5, Request::CancelJob { id: 41 }, T0 + 3);
    let out = f.actions();
    assert!(to_operator(&out).is_empty(), "not before it is applied");
    let cancels: Vec<JobEvent> = (to_cluster(&out).into_iter())
        .filter_map(|m| match m {
            ToCluster::Cancel { event, .. } => JobEvent::decode(&event),
            _ => None,
        })
        .collect();
    let [mine @ JobEvent::Cancelled { id: 41, origin, .. }] = &cancels[..] else {
        panic!("want the cancel for the cluster, got {out:?}")
    };
    assert_eq!(origin, "fe-a");
    // Another front-end's cancel of the aimed job comes first: applied
    // here, answered there.
    let theirs = JobEvent::Cancelled {
        id: 42,
        origin: "fe-b".into(),
        ask: 1,
        at_ms: T0 + 3,
    };
    f.core.job_events(
        &[(43, theirs.encode()), (44, mine.encode())],
        44,
        at(T0 + 4),
    );
    assert_eq!(
        to_operator(&f.actions()),
        [(
            5,
            Response::JobCancelled {
                stopped: 1,
                running: 0
            }
        )]
    );
    let job = f.core.store.job(41).unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    let why = job.error.unwrap_or_default();
    assert!(why.contains("taken off the cluster's work queue"), "{why}");
    let aimed = f.core.store.job(42).unwrap().unwrap();
    let run = &aimed.runs[0];
    assert_eq!(
        (run.id, &run.state),
        (run_id(42, 0).unwrap(), &JobState::Failed)
    );
    // The same event read again (after a restart) answers nobody.
    f.core.job_events(&[(44, mine.encode())], 44, at(T0 + 5));
    assert!(to_operator(&f.actions()).is_empty());

    // The queue delivers the cancelled job again: it comes off the queue,
    // and no agent is handed it.
    f.hello("pi-a", T0 + 6);
    f.actions();
    let submission = serde_json::to_vec(&exec_job("uname", 3)).unwrap();
    f.core.cluster_job(9, 41, 2, &submission, at(T0 + 7));
    let out = f.actions();
    assert!(
        !out.iter().any(|a| matches!(a, Action::ClusterJob { .. })),
        "{out:?}"
    );
    assert!(
        matches!(
            &to_cluster(&out)[..],
            [ToCluster::JobEnd {
                handle: 9,
                event: None
            }]
        ),
        "{out:?}"
    );
    // pi-b comes back to fe-b: nothing waits for it.
    assert!(f.core.store.aimed_devices().unwrap().is_empty());
}

#[test]
fn a_job_running_when_it_is_cancelled_is_not_given_back_to_the_queue() {
    let mut f = plaintext_front_end();
    f.hello("pi-a", T0);
    let submitted = JobEvent::Submitted {
        submission: exec_job("uname", 3),
        at_ms: T0,
    };
    f.core.job_events(&[(41, submitted.encode())], 41, at(T0));
    f.actions();
    let submission = serde_json::to_vec(&exec_job("uname", 3)).unwrap();
    f.core.cluster_job(1, 41, 1, &submission, at(T0 + 1));
    assert!(
        f.actions()
            .iter()
            .any(|a| matches!(a, Action::ClusterJob { .. }))
    );
    let cancelled = JobEvent::Cancelled {
        id: 41,
        origin: "fe-b".into(),
        ask: 1,
        at_ms: T0 + 2,
    };
    f.core
        .job_events(&[(42, cancelled.encode())], 42, at(T0 + 2));
    f.actions();
    // Its lease runs out with no result: off the queue, not back in it.
    f.core.tick(at(T0 + 1 + 65_000));
    let out = to_cluster(&f.actions());
    assert!(
        out.iter().any(|m| matches!(
            m,
            ToCluster::JobEnd {
                handle: 1,
                event: None
            }
        )),
        "{out:?}"
    );
    assert!(
        !out.iter().any(|m| matches!(m, ToCluster::JobBack { .. })),
        "{out:?}"
    );
}

#[test]
fn a_device_forgotten_at_one_front_end_is_forgotten_at_every_one_until_it_connects() {
    let mut f = plaintext_front_end();
    // pi-b and pi-c are held by fe-b; the stream brought their telemetry.
    f.core.holder_changed("pi-b", holder("fe-b", true));
    f.core.holder_changed("pi-c", holder("fe-b", false));
    f.core
        .from_stream(&[from_stream("pi-b", 1), from_stream("pi-c", 1)], 2, at(T0));
    let aimed = JobEvent::Aimed {
        submission: exec_job("uname", 3),
        target: "devices pi-b".into(),
        members: vec!["pi-b".into()],
        expires_ms: T0 + 3_600_000,
        at_ms: T0,
    };
    f.core.job_events(&[(7, aimed.encode())], 7, at(T0));
    f.actions();
    let forget = |f: &mut Fleet, id: u64, device: &str| {
        let device = device.to_string();
        f.operator(id, Request::Forget { device }, T0 + 10);
        f.actions()
    };

    // Online at fe-b: refused, naming where.
    let out = forget(&mut f, 1, "pi-b");
    let [(1, Response::Error(OperatorError::BadRequest(why)))] = &to_operator(&out)[..] else {
        panic!("{out:?}")
    };
    assert!(why.contains("online at front-end fe-b"), "{why}");

    // Offline: marked in the cluster, answered once it is.
    f.core.holder_changed("pi-b", holder("fe-b", false));
    let out = forget(&mut f, 2, "pi-b");
    assert!(
        to_operator(&out).is_empty(),
        "not before the cluster has it"
    );
    let [ToCluster::Forget { device, ask }] = &to_cluster(&out)[..] else {
        panic!("want the forget for the cluster, got {out:?}")
    };
    assert_eq!(device, "pi-b");
    let written = Holder::forgotten_now(holder("fe-b", false).as_ref(), T0 + 11);
    f.core.forgot(*ask, "pi-b", Ok(written.clone()));
    assert_eq!(
        to_operator(&f.actions()),
        [(2, Response::Forgotten { runs: 1, shares: 0 })]
    );
    assert_eq!(
        listed(&mut f, T0 + 12),
        (vec!["pi-c".into()], vec!["pi-c".into()])
    );
    let run = &f.core.store.job(7).unwrap().unwrap().runs[0];
    assert_eq!(run.state, JobState::Failed);
    // The bucket's own word on it, heard after, changes nothing more.
    f.core.holder_changed("pi-b", Some(written));
    assert!(to_operator(&f.actions()).is_empty());

    // Forgotten at fe-b: forgotten here from the bucket.
    let gone = Holder::forgotten_now(holder("fe-b", false).as_ref(), T0 + 13);
    f.core.holder_changed("pi-c", Some(gone.clone()));
    assert_eq!(listed(&mut f, T0 + 14), (vec![], vec![]));
    // The fleet no longer names them.
    let mut all = exec_job("uname", 3);
    all.all = true;
    f.operator(3, Request::SubmitJob(all), T0 + 15);
    let answers = to_operator(&f.actions());
    assert!(
        matches!(&answers[..], [(3, Response::Error(OperatorError::BadRequest(why)))] if why.contains("no known device")),
        "{answers:?}"
    );

    // A device this store never heard of, forgotten in the bucket, then
    // read from the stream (a front-end reading it from its start): stored,
    // not listed.
    f.core.holder_changed("pi-d", Some(gone));
    f.core
        .from_stream(&[from_stream("pi-d", 1)], 3, at(T0 + 16));
    assert_eq!(listed(&mut f, T0 + 17), (vec![], vec![]));

    // A device no front-end has heard of is not known.
    let out = forget(&mut f, 4, "pi-x");
    assert_eq!(
        to_operator(&out),
        [(
            4,
            Response::Error(OperatorError::UnknownDevice("pi-x".into()))
        )]
    );

    // pi-c connects again, at fe-b: listed here again.
    f.core.holder_changed("pi-c", holder("fe-b", true));
    assert_eq!(listed(&mut f, T0 + 18).0, ["pi-c"]);
}

#[test]
fn a_forget_the_cluster_refused_is_answered_with_why() {
    let mut f = plaintext_front_end();
    f.core.holder_changed("pi-b", holder("fe-b", false));
    f.core.from_stream(&[from_stream("pi-b", 1)], 1, at(T0));
    f.operator(
        2,
        Request::Forget {
            device: "pi-b".into(),
        },
        T0,
    );
    let out = f.actions();
    let [ToCluster::Forget { ask, .. }] = &to_cluster(&out)[..] else {
        panic!("{out:?}")
    };
    f.core.forgot(
        *ask,
        "pi-b",
        Err("pi-b changed in the cluster; try again".into()),
    );
    let answers = to_operator(&f.actions());
    assert!(
        matches!(&answers[..], [(2, Response::Error(OperatorError::BadRequest(why)))] if why.contains("try again")),
        "{answers:?}"
    );
    f.operator(3, Request::Devices, T0 + 1);
    let answers = to_operator(&f.actions());
    assert!(
        matches!(&answers[..], [(3, Response::Devices(d))] if d.iter().any(|d| d.id == "pi-b")),
        "still listed: {answers:?}"
    );
}

#[test]
fn a_cancel_the_cluster_does_not_take_is_answered_with_why() {
    let mut f = plaintext_front_end();
    let submitted = JobEvent::Submitted {
        submission: exec_job("uname", 3),
        at_ms: T0,
    };
    f.core.job_events(&[(41, submitted.encode())], 41, at(T0));
    f.actions();
    f.operator(6, Request::CancelJob { id: 41 }, T0 + 1);
    let out = f.actions();
    let [ToCluster::Cancel { ask, .. }] = &to_cluster(&out)[..] else {
        panic!("want the cancel for the cluster, got {out:?}")
    };
    f.core.cancel_not_taken(*ask, "no responders");
    let answers = to_operator(&f.actions());
    assert!(
        matches!(&answers[..], [(6, Response::Error(OperatorError::Storage(why)))]
            if why.contains("no responders") && why.contains("nothing was cancelled")),
        "{answers:?}"
    );
    let job = f.core.store.job(41).unwrap().unwrap();
    assert_eq!(job.state, JobState::Queued, "nothing was cancelled");
}

#[test]
fn a_cancel_or_forget_waits_for_every_live_front_end_to_apply_it() {
    let mut f = plaintext_front_end();
    f.core.holder_changed("pi-b", holder("fe-b", false));
    f.core.from_stream(&[from_stream("pi-b", 1)], 1, at(T0));
    let submitted = JobEvent::Submitted {
        submission: exec_job("uname", 3),
        at_ms: T0,
    };
    f.core.job_events(&[(41, submitted.encode())], 41, at(T0));
    f.actions();
    let ask = |f: &mut Fleet, request: Request| {
        f.operator(9, request, T0 + 1);
        let out = f.actions();
        match &to_operator(&out)[..] {
            [(9, Response::Error(OperatorError::BadRequest(why)))] => {
                assert!(to_cluster(&out).is_empty(), "nothing told: {out:?}");
                Err(why.clone())
            }
            [] => Ok(to_cluster(&out)),
            other => panic!("{other:?}"),
        }
    };
    let cancel = || Request::CancelJob { id: 41 };
    let forget = || Request::Forget {
        device: "pi-b".into(),
    };

    // fe-b runs a release from before versions were reported; fe-c has
    // just started and not reported yet: neither is known to apply them.
    let old = report_running("fe-b", 0, 0, "", &[]);
    f.core.front_ends_reported(vec![
        ("fe-a".into(), Vec::new()),
        ("fe-b".into(), old),
        ("fe-c".into(), Vec::new()),
    ]);
    let why = ask(&mut f, cancel()).unwrap_err();
    assert!(
        why.contains("a job cancel must be applied by every front-end")
            && why.contains("fe-b runs a fleetmq-hub from before front-ends reported their versions, without job_cancel")
            && why.contains("fe-c has not reported what it runs yet")
            && why.contains("nothing was done: upgrade it"),
        "{why}"
    );
    let why = ask(&mut f, forget()).unwrap_err();
    assert!(
        why.contains("forgetting a device must be applied") && why.contains("without forget"),
        "{why}"
    );

    // fe-b upgraded to a version with cancels but not forgets; fe-c gone.
    let newer = report_running("fe-b", 0, 0, "0.0.9", &["job_cancel"]);
    f.core
        .front_ends_reported(vec![("fe-a".into(), Vec::new()), ("fe-b".into(), newer)]);
    let told = ask(&mut f, cancel()).expect("every front-end applies a cancel");
    assert!(matches!(told[..], [ToCluster::Cancel { .. }]), "{told:?}");
    let why = ask(&mut f, forget()).unwrap_err();
    assert!(
        why.contains("fe-b runs fleetmq-hub 0.0.9, without forget"),
        "{why}"
    );

    // Every front-end current: the forget goes to the cluster.
    f.core.front_ends_reported(vec![
        ("fe-a".into(), Vec::new()),
        ("fe-b".into(), report("fe-b", 0, 0)),
    ]);
    let told = ask(&mut f, forget()).expect("every front-end applies a forget");
    assert!(matches!(told[..], [ToCluster::Forget { .. }]), "{told:?}");
}
