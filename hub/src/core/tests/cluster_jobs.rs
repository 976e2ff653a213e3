//! Jobs on a front-end: a job submitted here goes to the cluster's work
//! queue, a taken one is settled by its result (or given back, or failed
//! after its last lease), the job events fill every store, and a job from
//! the queue goes to a device here or back.

use super::cluster::front_end;
use super::*;
use crate::cluster::ToCluster;
use crate::cluster::jobs::JobEvent;

fn settled(actions: &[Action]) -> Vec<ToCluster> {
    to_cluster(actions)
        .into_iter()
        .filter(|m| {
            matches!(
                m,
                ToCluster::JobDone { .. } | ToCluster::JobBack { .. } | ToCluster::JobEnd { .. }
            )
        })
        .collect()
}

fn result_of(id: u64, attempt: u32, token: u64, outcome: Outcome) -> Vec<u8> {
    ResultFrame::from(JobResult {
        id,
        attempt,
        device: "pi-a".into(),
        outcome,
        token,
    })
    .encode()
    .unwrap()
}

#[test]
fn a_job_submitted_at_a_front_end_goes_to_the_clusters_queue_with_the_queues_lease() {
    let mut f = front_end();
    f.operator(3, Request::SubmitJob(exec_job("uname", 5)), T0);
    let sent = to_cluster(&f.actions());
    let [
        ToCluster::SubmitJob {
            event: JobEvent::Submitted {
                submission: job, ..
            },
            request_id: 3,
            ..
        },
    ] = &sent[..]
    else {
        panic!("want the job for the cluster, got {sent:?}")
    };
    // The queue's lease and attempts, not the operator's: its consumer has them.
    assert_eq!((job.lease_ms, job.max_attempts), (65_000, 3));
    assert!(
        to_operator(&f.actions()).is_empty(),
        "answered once the cluster has it"
    );
    f.core.job_submitted(OP, 3, Ok(41));
    let answers = to_operator(&f.actions());
    assert!(
        matches!(&answers[..], [(3, Response::JobSubmitted { id: 41 })]),
        "{answers:?}"
    );
    // Too long for the queue's lease: refused, saying what to do.
    let mut long = exec_job("sleep", 1);
    long.timeout_ms = 61_000;
    f.operator(4, Request::SubmitJob(long), T0);
    let answers = to_operator(&f.actions());
    assert!(
        matches!(&answers[..], [(4, Response::Error(OperatorError::BadRequest(why)))] if why.contains("jobs.lease_ms")),
        "{answers:?}"
    );
}

#[test]
fn a_taken_job_is_settled_by_its_result_given_back_when_refused_and_failed_after_its_last_lease() {
    let mut f = front_end();
    f.hello("pi-a", T0);
    f.actions();
    assert!(f.core.wants_job());
    f.core.job_asked();
    assert!(!f.core.wants_job(), "one ask at a time");
    let submission = serde_json::to_vec(&exec_job("uname", 3)).unwrap();
    f.core.cluster_job(1, 41, 1, &submission, at(T0));
    let actions = f.actions();
    let Some(Action::ClusterJob { token, .. }) = actions.first() else {
        panic!("want a job for an agent, got {actions:?}")
    };
    let token = *token;
    f.core.cluster_job_sent(token, true, at(T0));
    // A stranger's token changes nothing.
    let stray = result_of(41, 1, token + 1, Outcome::AlreadyRun);
    f.core.result(&stray, Some("pi-a"), at(T0 + 1));
    assert!(settled(&f.actions()).is_empty());
    let done = Outcome::Completed(Output {
        exit_code: Some(0),
        stdout: "Linux\n".into(),
        stderr: String::new(),
        truncated: false,
        duration_ms: 2,
    });
    f.core
        .result(&result_of(41, 1, token, done), Some("pi-a"), at(T0 + 2));
    let out = settled(&f.actions());
    let [ToCluster::JobDone { handle: 1, event }] = &out[..] else {
        panic!("want the job done, got {out:?}")
    };
    assert!(matches!(
        crate::cluster::jobs::JobEvent::decode(event),
        Some(crate::cluster::jobs::JobEvent::Finished { id: 41, .. })
    ));

    // Refused by the device: back in the queue for another.
    f.core.cluster_job(2, 42, 1, &submission, at(T0 + 3));
    let Some(Action::ClusterJob { token, .. }) = f.actions().into_iter().next() else {
        panic!("want a job")
    };
    let refused = result_of(42, 1, token, Outcome::NotAllowed("exec".into()));
    f.core.result(&refused, Some("pi-a"), at(T0 + 4));
    assert!(matches!(
        &settled(&f.actions())[..],
        [ToCluster::JobBack { handle: 2 }]
    ));

    // No agent could take it: back at once.
    f.core.cluster_job(3, 43, 1, &submission, at(T0 + 5));
    let Some(Action::ClusterJob { token, .. }) = f.actions().into_iter().next() else {
        panic!("want a job")
    };
    f.core.cluster_job_sent(token, false, at(T0 + 5));
    assert!(matches!(
        &settled(&f.actions())[..],
        [ToCluster::JobBack { handle: 3 }]
    ));

    // Leases run out: back in the queue, and after the last attempt, failed.
    f.core.cluster_job(4, 44, 2, &submission, at(T0 + 6));
    f.core.cluster_job(5, 45, 3, &submission, at(T0 + 6));
    f.actions();
    f.core.tick(at(T0 + 6 + 65_000));
    let mut out = settled(&f.actions());
    out.sort_by_key(|m| matches!(m, ToCluster::JobEnd { .. }));
    match &out[..] {
        [
            ToCluster::JobBack { handle: 4 },
            ToCluster::JobEnd {
                handle: 5,
                event: Some(event),
            },
        ] => {
            assert!(matches!(
                crate::cluster::jobs::JobEvent::decode(event),
                Some(crate::cluster::jobs::JobEvent::Failed { id: 45, .. })
            ));
        }
        other => panic!("want one back and one failed, got {other:?}"),
    }
}

#[test]
fn job_events_show_every_job_in_the_store() {
    let mut f = front_end();
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
            JobEvent::Failed {
                id: 41,
                why: "no result after 3 attempt(s)".into(),
                at_ms: T0 + 1,
            }
            .encode(),
        ),
    ];
    f.core.job_events(&events, 42, at(T0 + 2));
    let job = f.core.store.job(41).unwrap().expect("job 41 is shown");
    assert_eq!(job.state, fleetmq_protocol::JobState::Failed);
    assert_eq!(
        f.core.store.mark(crate::core::JOB_EVENTS_MARK).unwrap(),
        Some(42)
    );
    // A front-end never hands out a cluster job from its own store.
    f.hello("pi-a", T0);
    f.core.tick(at(T0 + 100));
    assert!(!f.actions().iter().any(|a| matches!(a, Action::Job { .. })));
}

#[test]
fn a_cluster_job_goes_to_a_device_here_that_takes_it_or_back_when_none_does() {
    let offer = |kinds: &[&str], programs: &[&str]| {
        Upstream::Offer(fleetmq_protocol::Offer(fleetmq_protocol::Abilities {
            job_kinds: kinds.iter().map(|k| k.to_string()).collect(),
            exec_programs: programs.iter().map(|p| p.to_string()).collect(),
            config_version: 0,
            one_connection: false,
            chat: false,
            job_slots: 0,
            hello_on_clock_step: false,
            facts: fleetmq_protocol::DeviceFacts::default(),
        }))
    };
    let mut f = front_end();
    f.hello("pi-a", T0);
    f.up("pi-a", "pi-a", offer(&["echo"], &[]), T0);
    f.actions();
    let submission = serde_json::to_vec(&exec_job("uname", 3)).unwrap();
    // Only a device that would refuse it here: back to the queue unsent.
    f.core.cluster_job(1, 41, 1, &submission, at(T0 + 1));
    let actions = f.actions();
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::ClusterJob { .. }))
    );
    assert!(matches!(
        &settled(&actions)[..],
        [ToCluster::JobBack { handle: 1 }]
    ));
    // A device that takes it: handed to it alone, as Work.
    f.hello("pi-b", T0 + 2);
    f.up("pi-b", "pi-b", offer(&["exec"], &["uname"]), T0 + 2);
    f.actions();
    f.core.cluster_job(2, 42, 2, &submission, at(T0 + 3));
    let actions = f.actions();
    assert!(
        matches!(&to_device(&actions, "pi-b")[..], [Downstream::Work(j)] if j.id == 42 && j.attempt == 2),
        "{actions:?}"
    );
    assert!(to_device(&actions, "pi-a").is_empty());
}
