//! Jobs: leases handed out again when they run out (on the monotonic clock,
//! whatever the wall clock does), tokens, and jobs no agent takes.

use super::*;

#[test]
fn a_job_whose_lease_runs_out_is_handed_out_again() {
    let mut f = Fleet::new();
    let job = exec_job("uname", 2);
    f.operator(21, Request::SubmitJob(job), T0);
    let out = f.deliver(T0);
    let id = match to_operator(&out).as_slice() {
        [(21, Response::JobSubmitted { id })] => *id,
        other => panic!("{other:?}"),
    };
    let given = |actions: &[Action]| -> Vec<(u32, u64)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Job { frame, .. } => {
                    let JobFrame::Job(j) = JobFrame::decode(frame).unwrap();
                    Some((j.attempt, j.token))
                }
                _ => None,
            })
            .collect()
    };
    let attempts =
        |actions: &[Action]| -> Vec<u32> { given(actions).iter().map(|g| g.0).collect() };
    let first = given(&out);
    assert_eq!(first.len(), 1, "handed out at once");
    assert_eq!(first[0].0, 1);
    f.core.tick(at(T0 + 9_999));
    assert_eq!(
        attempts(&f.deliver(T0 + 9_999)),
        Vec::<u32>::new(),
        "leased"
    );
    f.core.tick(at(T0 + 10_000));
    let second = given(&f.deliver(T0 + 10_000));
    assert_eq!(second.len(), 1, "lease ran out");
    assert_eq!(second[0].0, 2);
    assert_ne!(second[0].1, first[0].1, "each attempt has its own token");
    let result = |attempt, token| {
        ResultFrame::from(JobResult {
            id,
            attempt,
            device: "pi-a".into(),
            outcome: Outcome::Completed(Output {
                exit_code: Some(0),
                duration_ms: 3,
                stdout: "Linux\n".into(),
                stderr: String::new(),
                truncated: false,
            }),
            token,
        })
        .encode()
        .unwrap()
    };
    // A device that was not given attempt 2 cannot finish it: a guessed
    // token, or the first attempt's.
    f.core
        .result(&result(2, 12345), Some("pi-a"), at(T0 + 10_100));
    f.core
        .result(&result(1, first[0].1), Some("pi-a"), at(T0 + 10_200));
    assert_eq!(f.core.counters().results_refused, 2);
    f.operator(23, Request::Job { id }, T0 + 10_300);
    match to_operator(&f.actions()).as_slice() {
        [(23, Response::Job(j))] => assert_eq!(j.state, JobState::Leased, "unaffected"),
        other => panic!("{other:?}"),
    }
    // The second attempt's result, with its token, finishes it.
    f.core
        .result(&result(2, second[0].1), Some("pi-a"), at(T0 + 10_500));
    f.operator(22, Request::Job { id }, T0 + 10_600);
    match to_operator(&f.actions()).as_slice() {
        [(22, Response::Job(j))] => assert_eq!(j.state, JobState::Done),
        other => panic!("{other:?}"),
    }
    f.core.tick(at(T0 + 30_000));
    assert_eq!(
        attempts(&f.deliver(T0 + 30_000)),
        Vec::<u32>::new(),
        "done stays done"
    );
}

/// The system clock steps an hour ahead, then two hours back, during a
/// 15-second job: the job is handed out once, and devices that keep
/// talking stay online. Only the wall-clock stamps move.
#[test]
fn a_clock_step_neither_hands_a_job_out_twice_nor_takes_devices_offline() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.hello("pi-b", T0);
    let job = JobSubmission {
        timeout_ms: 15_000,
        lease_ms: 20_000,
        ..exec_job("sleep", 3)
    };
    f.operator(41, Request::SubmitJob(job), T0);
    let out = f.deliver(T0);
    assert_eq!(
        out.iter()
            .filter(|a| matches!(a, Action::Job { .. }))
            .count(),
        1
    );
    let heartbeat = || Upstream::Heartbeat(fleetmq_protocol::Heartbeat { uptime_ms: 1 });
    for step in 1..200u64 {
        let mono_ms = T0 + step * 100;
        let wall_ms = match step {
            ..50 => mono_ms,
            50..100 => mono_ms + 3_600_000,
            _ => mono_ms - 7_200_000,
        };
        let now = Now { mono_ms, wall_ms };
        if step % 10 == 0 {
            f.up("pi-a", "pi-a", heartbeat(), now);
            f.up("pi-b", "pi-b", heartbeat(), now);
        }
        f.core.tick(now);
        let acts = f.deliver(now);
        assert!(
            !acts.iter().any(|a| matches!(a, Action::Job { .. })),
            "handed out again {} ms into the job: {acts:?}",
            step * 100
        );
        assert!(f.core.presence.is_online("pi-a") && f.core.presence.is_online("pi-b"));
    }
    assert_eq!(f.core.counters().jobs_dispatched, 1);
    // The wall clock is what people see: the device was last seen at the
    // stepped-back time.
    let (_, last_seen) = f.core.presence.times("pi-a").unwrap();
    assert_eq!(last_seen, T0 + 19_000 - 7_200_000);
    // The lease still runs out on the monotonic clock, 20 s after the
    // job went out.
    let now = Now {
        mono_ms: T0 + 20_000,
        wall_ms: T0 + 20_000 - 7_200_000,
    };
    f.up("pi-a", "pi-a", heartbeat(), now);
    f.core.tick(now);
    let again = f.deliver(now);
    assert!(
        again
            .iter()
            .any(|a| matches!(a, Action::Job { attempt: 2, .. })),
        "{again:?}"
    );
}

/// A restarted hub takes up the leases the last run left with what was
/// left of them, but never more than a whole lease, however far the clock
/// moved while it was down.
#[test]
fn a_restarted_hub_times_what_is_left_of_each_lease() {
    use crate::core::jobs::lease_left_ms;
    assert_eq!(lease_left_ms(T0 + 4_000, 10_000, T0), 4_000);
    assert_eq!(lease_left_ms(T0 + 4_000, 10_000, T0 + 5_000), 0, "ran out");
    assert_eq!(
        lease_left_ms(T0 + 4_000, 10_000, T0 - 86_400_000),
        10_000,
        "the clock went back a day: one whole lease, not a day"
    );
}

#[test]
fn a_job_no_agent_takes_stays_due_and_is_not_leased() {
    let mut f = Fleet::new();
    let job = exec_job("true", 1);
    f.operator(31, Request::SubmitJob(job), T0);
    // The driver could not hand it out (no agent connected): no job_sent.
    let offered = f.actions();
    assert!(offered.iter().any(|a| matches!(a, Action::Job { .. })));
    f.core.tick(at(T0 + 100));
    let again = f.actions();
    assert!(
        again
            .iter()
            .any(|a| matches!(a, Action::Job { attempt: 1, .. })),
        "offered again as attempt 1: {again:?}"
    );
}
