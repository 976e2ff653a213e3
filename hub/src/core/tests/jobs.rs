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

/// What a device said it takes on.
pub(super) fn offer(kinds: &[&str], programs: &[&str]) -> Upstream {
    let strings = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    Upstream::Offer(fleetmq_protocol::Offer(fleetmq_protocol::Abilities {
        job_kinds: strings(kinds),
        exec_programs: strings(programs),
        config_version: 0,
        one_connection: false,
        chat: false,
        job_slots: 0,
        hello_on_clock_step: false,
        facts: fleetmq_protocol::DeviceFacts::default(),
    }))
}

/// The jobs aimed at `device` in `actions`: (id, attempt, token).
pub(super) fn work_for(actions: &[Action], device: &str) -> Vec<(u64, u32, u64)> {
    to_device(actions, device)
        .into_iter()
        .filter_map(|d| match d {
            Downstream::Work(j) => Some((j.id, j.attempt, j.token)),
            _ => None,
        })
        .collect()
}

pub(super) fn show(f: &mut Fleet, id: u64, now: u64) -> JobInfo {
    f.operator(90, Request::Job { id }, now);
    match to_operator(&f.actions()).as_slice() {
        [(90, Response::Job(j))] => j.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_job_for_a_group_runs_once_on_each_member_and_waits_for_the_offline_one() {
    let mut f = Fleet::new();
    f.hello_in("pi-a", &["north"], T0);
    f.up("pi-a", "pi-a", offer(&["echo", "exec"], &["uname"]), T0);
    f.hello_in("pi-b", &["north"], T0);
    f.up(
        "pi-b",
        "pi-b",
        Upstream::Bye(fleetmq_protocol::Bye {
            reason: "off".into(),
        }),
        T0,
    );
    f.actions();

    let mut job = exec_job("uname", 2);
    job.groups = vec!["north".into()];
    f.operator(31, Request::SubmitJob(job), T0 + 10);
    let out = f.deliver(T0 + 10);
    let id = match to_operator(&out).as_slice() {
        [(31, Response::JobSubmitted { id })] => *id,
        other => panic!("{other:?}"),
    };
    let given = work_for(&out, "pi-a");
    assert_eq!(
        given.len(),
        1,
        "the online member is handed its run at once"
    );
    assert!(work_for(&out, "pi-b").is_empty(), "the offline one waits");
    assert!(
        !out.iter().any(|a| matches!(a, Action::Job { .. })),
        "an aimed job never goes on the work queue"
    );
    let j = show(&mut f, id, T0 + 20);
    assert_eq!(j.target, "groups north");
    let runs: Vec<(&str, JobState)> = j
        .runs
        .iter()
        .map(|r| (r.device.as_str(), r.state.clone()))
        .collect();
    assert_eq!(
        runs,
        [("pi-a", JobState::Leased), ("pi-b", JobState::Queued)]
    );

    // pi-a's result finishes its run; the job waits for pi-b.
    let (run_a, attempt, token) = given[0];
    let result = ResultFrame::from(JobResult {
        id: run_a,
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
    .unwrap();
    f.core.result(&result, Some("pi-a"), at(T0 + 30));
    assert_eq!(show(&mut f, id, T0 + 40).state, JobState::Leased);

    // pi-b comes back taking echo jobs only: its run is refused without
    // being sent, and the job is over.
    f.hello_in("pi-b", &["north"], T0 + 50);
    f.up("pi-b", "pi-b", offer(&["echo"], &[]), T0 + 50);
    let out = f.deliver(T0 + 50);
    assert!(
        work_for(&out, "pi-b").is_empty(),
        "never handed a kind it refuses"
    );
    let j = show(&mut f, id, T0 + 60);
    assert_eq!(j.state, JobState::Done);
    assert!(
        matches!(&j.runs[1].outcome, Some(Outcome::NotAllowed(what)) if what == "job kind \"exec\""),
        "{:?}",
        j.runs[1]
    );
    assert_eq!(
        crate::operator::views::job_state(&j),
        "failed",
        "one refused"
    );
    let summary = crate::operator::views::summary(&j);
    assert_eq!(
        serde_json::Value::Object(summary),
        serde_json::json!({"done": 1, "refused": 1})
    );
}

#[test]
fn an_aimed_run_fails_when_its_device_stays_away_past_the_time_to_live() {
    let mut f = Fleet::new();
    f.hello("pi-b", T0);
    f.up(
        "pi-b",
        "pi-b",
        Upstream::Bye(fleetmq_protocol::Bye {
            reason: "off".into(),
        }),
        T0,
    );
    let mut job = exec_job("uname", 2);
    job.devices = vec!["pi-b".into()];
    job.ttl_ms = 60_000;
    f.operator(41, Request::SubmitJob(job.clone()), T0);
    let id = match to_operator(&f.deliver(T0)).as_slice() {
        [(41, Response::JobSubmitted { id })] => *id,
        other => panic!("{other:?}"),
    };
    // The time to live is on the wall clock (it outlives a hub restart).
    for t in [T0 + 59_000, T0 + 61_000] {
        for _ in 0..10 {
            f.core.tick(at(t));
        }
    }
    let j = show(&mut f, id, T0 + 62_000);
    assert_eq!(j.state, JobState::Done);
    assert_eq!(j.runs[0].state, JobState::Failed);
    assert!(
        j.runs[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains("time to live"),
        "{:?}",
        j.runs[0]
    );

    // Unknown devices and empty groups are refused with what to do.
    job.devices = vec!["pi-zz".into()];
    f.operator(42, Request::SubmitJob(job.clone()), T0);
    assert!(matches!(
        to_operator(&f.actions()).as_slice(),
        [(42, Response::Error(OperatorError::UnknownDevice(d)))] if d == "pi-zz"
    ));
    job.devices = vec![];
    job.groups = vec!["south".into()];
    f.operator(43, Request::SubmitJob(job), T0);
    match to_operator(&f.actions()).as_slice() {
        [(43, Response::Error(OperatorError::BadRequest(why)))] => {
            assert!(why.contains("no known device is in groups south"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_work_queue_job_some_device_would_refuse_goes_to_one_that_takes_it() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.up("pi-a", "pi-a", offer(&["echo", "exec"], &["uname"]), T0);
    f.hello("pi-b", T0);
    f.up("pi-b", "pi-b", offer(&["echo"], &[]), T0);
    f.actions();
    let queued = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Job { .. }))
            .count()
    };

    // Both take echo: the work queue, as ever.
    let mut echo = exec_job("uname", 2);
    echo.spec = JobSpec::Echo { text: "hi".into() };
    f.operator(51, Request::SubmitJob(echo), T0 + 1);
    let out = f.deliver(T0 + 1);
    assert_eq!(queued(&out), 1);
    // pi-b would refuse exec: the job goes to pi-a alone.
    f.operator(52, Request::SubmitJob(exec_job("uname", 2)), T0 + 2);
    let out = f.deliver(T0 + 2);
    assert_eq!(queued(&out), 0, "not on the queue pi-b pulls from");
    assert_eq!(work_for(&out, "pi-a").len(), 1);
    assert!(work_for(&out, "pi-b").is_empty());
    // Nobody online takes `rm`: it waits, and says why, once.
    f.operator(53, Request::SubmitJob(exec_job("rm", 2)), T0 + 3);
    let out = f.deliver(T0 + 3);
    let id = match to_operator(&out).as_slice() {
        [(53, Response::JobSubmitted { id })] => *id,
        other => panic!("{other:?}"),
    };
    assert_eq!(queued(&out), 0);
    assert!(work_for(&out, "pi-a").is_empty() && work_for(&out, "pi-b").is_empty());
    let j = show(&mut f, id, T0 + 4);
    assert_eq!((j.state, j.attempts), (JobState::Queued, 0));
    assert!(j.error.unwrap().contains("no device online takes it"));
}

#[test]
fn an_offer_past_its_limits_is_refused_and_not_kept() {
    let mut f = Fleet::new();
    f.hello("pi-a", T0);
    f.actions();
    let many: Vec<String> = (0..2_000).map(|i| format!("p{i}")).collect();
    let names: Vec<&str> = many.iter().map(String::as_str).collect();
    f.up("pi-a", "pi-a", offer(&["exec"], &names), T0);
    let refused = to_device(&f.actions(), "pi-a");
    assert!(
        matches!(refused.as_slice(), [Downstream::Refusal(r)] if r.reason.contains("1024 programs")),
        "{refused:?}"
    );
    // Nothing aimed at pi-a goes out on the strength of it.
    let mut job = exec_job("p1", 2);
    job.devices = vec!["pi-a".into()];
    f.operator(54, Request::SubmitJob(job), T0 + 1);
    assert!(work_for(&f.deliver(T0 + 1), "pi-a").is_empty());
}
