//! Jobs and commands for many devices in the store: leases across a
//! restart, an aimed job's output within one answer, and cancelling.

use super::*;

/// Lease timing on a clock the test sets: a job is due while queued,
/// not while leased, queued again when the core says its lease ran out,
/// and all of it (the lease's end included) survives closing and reopening
/// the store (a hub restart).
#[test]
fn leases_are_kept_across_a_restart_and_a_run_out_lease_queues_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_700_000_000_000u64;
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    let job = echo_job(3);
    let id = store.submit_job(&job, t0).unwrap();
    let due = store.due_jobs(t0, 10).unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![id]);
    assert_eq!(due[0].attempts, 0);
    store.lease_job(id, 1, 77, t0 + 5_000, t0).unwrap();
    assert_eq!(store.check_attempt(id, 1, 77).unwrap(), AttemptCheck::Given);
    assert!(store.due_jobs(t0 + 4_999, 10).unwrap().is_empty());
    assert!(
        store.due_jobs(t0 + 99_999, 10).unwrap().is_empty(),
        "the wall clock alone never ends a lease"
    );
    drop(store);

    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    assert_eq!(store.leased_jobs().unwrap(), vec![(id, t0 + 5_000, 5_000)]);
    store.lease_ran_out(id, t0 + 5_000).unwrap();
    assert!(store.leased_jobs().unwrap().is_empty());
    let due = store.due_jobs(t0 + 5_000, 10).unwrap();
    assert_eq!(due.len(), 1, "the lease ran out: handed out again");
    assert_eq!((due[0].attempts, due[0].max_attempts), (1, 3));
    // The token outlives a restart.
    assert_eq!(store.check_attempt(id, 1, 77).unwrap(), AttemptCheck::Given);
    store.lease_job(id, 2, 88, t0 + 10_000, t0 + 5_000).unwrap();
    assert_eq!(
        store.check_attempt(id, 1, 77).unwrap(),
        AttemptCheck::NotGiven,
        "an older attempt"
    );
    assert_eq!(
        store.check_attempt(id, 2, 77).unwrap(),
        AttemptCheck::NotGiven,
        "another token"
    );
    assert_eq!(store.check_attempt(id, 2, 88).unwrap(), AttemptCheck::Given);
    assert_eq!(
        store.check_attempt(id + 1, 1, 0).unwrap(),
        AttemptCheck::Unknown
    );
    let done = Outcome::Completed(Output {
        exit_code: Some(0),
        stdout: "hi".into(),
        stderr: String::new(),
        truncated: false,
        duration_ms: 5,
    });
    assert!(store.finish_job(id, "pi-1", &done, t0 + 6_000).unwrap());
    assert!(
        !store.finish_job(id, "pi-2", &done, t0 + 6_001).unwrap(),
        "the first result wins"
    );
    assert!(store.due_jobs(t0 + 60_000, 10).unwrap().is_empty());
    assert_eq!(
        store.check_attempt(id, 2, 88).unwrap(),
        AttemptCheck::Finished
    );
    let info = store.job(id).unwrap().unwrap();
    assert_eq!((info.state, info.attempts), (JobState::Done, 2));
    assert_eq!(info.device.as_deref(), Some("pi-1"));
}

/// An aimed job's answer fits in one message however much its runs
/// printed: `job show` cuts their output to a shared budget, a list shows
/// none.
#[test]
fn an_aimed_jobs_output_is_cut_to_fit_one_answer() {
    let mut store = Store::in_memory().unwrap();
    let job = echo_job(1);
    let devices: Vec<String> = (0..3).map(|i| format!("pi-{i}")).collect();
    let id = store
        .submit_aimed(&job, "all", &devices, u64::MAX, 1)
        .unwrap();
    let shown = store.job(id).unwrap().unwrap();
    for run in &shown.runs {
        let big = Outcome::Completed(Output {
            exit_code: Some(0),
            stdout: "é".repeat(100_000),
            stderr: "e".repeat(50_000),
            truncated: false,
            duration_ms: 1,
        });
        assert!(store.finish_job(run.id, &run.device, &big, 2).unwrap());
    }
    let shown = store.job(id).unwrap().unwrap();
    let printed: usize = shown
        .runs
        .iter()
        .map(|r| match &r.outcome {
            Some(Outcome::Completed(o)) => {
                assert!(o.truncated);
                o.stdout.len() + o.stderr.len()
            }
            other => panic!("{other:?}"),
        })
        .sum();
    assert!(printed <= 256 * 1024 && printed > 200 * 1024, "{printed}");
    let listed = store.jobs(10).unwrap();
    assert!(listed[0].runs.iter().all(|r| matches!(
        &r.outcome,
        Some(Outcome::Completed(o)) if o.stdout.is_empty()
    )));
}

/// Cancelling: a queued job and the runs not handed out fail as cancelled
/// and are never due again; a run leased gets no further attempt, and its
/// result is still taken; an ended job is left as it was.
#[test]
fn a_cancelled_job_is_never_handed_out_and_a_running_attempt_is_its_last() {
    let mut store = Store::in_memory().unwrap();
    let queued = store.submit_job(&echo_job(3), 1).unwrap();
    assert_eq!(store.cancel_job(queued, 2).unwrap(), Some((1, 0)));
    assert!(store.due_jobs(3, 10).unwrap().is_empty());
    let info = store.job(queued).unwrap().unwrap();
    assert_eq!(info.state, JobState::Failed);
    assert!(info.error.unwrap_or_default().contains("cancelled"));
    assert_eq!(
        store.cancel_job(queued, 4).unwrap(),
        Some((0, 0)),
        "ended already"
    );
    assert_eq!(store.cancel_job(queued + 1_000, 4).unwrap(), None);

    let devices: Vec<String> = ["pi-a", "pi-b", "pi-c"].map(String::from).to_vec();
    let aimed = store
        .submit_aimed(&echo_job(3), "all", &devices, u64::MAX, 10)
        .unwrap();
    let runs = store.job(aimed).unwrap().unwrap().runs;
    let (a, b) = (runs[0].id, runs[1].id);
    store.lease_job(a, 1, 7, 1_000, 11).unwrap();
    store.lease_job(b, 1, 8, 1_000, 11).unwrap();
    let done = echoed();
    assert!(store.finish_job(b, "pi-b", &done, 12).unwrap());
    // pi-a runs it, pi-b is done, pi-c has not been handed it.
    assert_eq!(store.cancel_job(aimed, 13).unwrap(), Some((1, 1)));
    assert!(store.aimed_due("pi-c", 10, 14).unwrap().is_empty());
    assert_eq!(store.aimed_devices().unwrap(), Vec::<String>::new());
    // pi-a's lease runs out: its attempt was the last.
    store.lease_ran_out(a, 1_000).unwrap();
    let due = store.aimed_due("pi-a", 10, 1_000).unwrap();
    assert_eq!((due[0].attempts, due[0].max_attempts), (1, 1));
    assert!(
        store.finish_job(a, "pi-a", &done, 1_001).unwrap(),
        "a late result is taken"
    );
    let shown = store.job(aimed).unwrap().unwrap();
    let states: Vec<JobState> = shown.runs.iter().map(|r| r.state.clone()).collect();
    assert_eq!(states, [JobState::Done, JobState::Done, JobState::Failed]);
    assert_eq!(
        shown.state,
        JobState::Done,
        "nothing waits: the job has ended"
    );
}

/// On a front-end, a cancel read from the job events: the queue's job is
/// over here (taken off the queue when next delivered), and a run another
/// front-end hands out in the meantime stays cancelled until its result.
#[test]
fn a_cluster_job_cancelled_is_over_and_a_run_sent_after_stays_cancelled() {
    let mut store = Store::in_memory().unwrap();
    store.insert_cluster_job(41, &echo_job(3), 1).unwrap();
    assert_eq!(store.job_over(41).unwrap(), Some(false));
    assert_eq!(store.cancel_job(41, 2).unwrap(), Some((1, 0)));
    assert_eq!(store.job_over(41).unwrap(), Some(true));
    let why = store.job(41).unwrap().unwrap().error.unwrap_or_default();
    assert!(why.contains("taken off the cluster's work queue"), "{why}");
    assert_eq!(store.job_over(99).unwrap(), None, "not known here");

    let run = 1 << 52 | 42 << 20 | 1;
    store
        .insert_cluster_aimed(
            42,
            &echo_job(3),
            "devices pi-a",
            &[(run, "pi-a")],
            u64::MAX,
            3,
        )
        .unwrap();
    assert_eq!(store.cancel_job(42, 4).unwrap(), Some((1, 0)));
    assert!(
        !store.run_sent(run, 1, 77, 10_000, 5).unwrap(),
        "a run handed out before the cancel reached its front-end"
    );
    assert_eq!(
        store.job(42).unwrap().unwrap().runs[0].state,
        JobState::Failed
    );
    let done = echoed();
    assert!(
        store.finish_job(run, "pi-a", &done, 6).unwrap(),
        "its result is taken"
    );
}

/// Cancelling a command for many devices: the shares not sent fail as
/// cancelled and are never due; one sent goes on.
#[test]
fn a_cancelled_fleet_commands_waiting_shares_are_never_sent() {
    let mut store = Store::in_memory().unwrap();
    let devices: Vec<String> = ["pi-a", "pi-b", "pi-c"].map(String::from).to_vec();
    let id = store
        .fleet_submit(
            &fleetmq_protocol::Command::Ping,
            "all",
            &devices,
            0,
            u64::MAX / 2,
            1,
        )
        .unwrap();
    let waiting = store.fleet_waiting(2).unwrap();
    let a = waiting.iter().find(|w| w.device == "pi-a").unwrap().id;
    store.fleet_mark(a, "sent", None, None, 3).unwrap();
    assert_eq!(store.fleet_cancel(id, 4).unwrap(), Some((2, 1)));
    assert!(
        store.fleet_waiting(5).unwrap().is_empty(),
        "nothing left to send"
    );
    let states: Vec<(String, String)> = store
        .fleet_answers(id)
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|a| (a.state, a.error.unwrap_or_default()))
        .collect();
    assert_eq!(states[0].0, "sent");
    assert!(
        states[1..]
            .iter()
            .all(|(s, e)| s == "failed" && e.contains("cancelled"))
    );
    assert_eq!(store.fleet_cancel(id + 1, 6).unwrap(), None);
}

/// The list of fleet commands: newest first, each one's shares counted by
/// state, and only as many as asked.
#[test]
fn fleet_commands_are_listed_newest_first_with_their_shares_counted() {
    let mut store = Store::in_memory().unwrap();
    let devices: Vec<String> = ["pi-a", "pi-b", "pi-c"].map(String::from).to_vec();
    let ping = store
        .fleet_submit(
            &fleetmq_protocol::Command::Ping,
            "groups north",
            &devices,
            0,
            9_000,
            1,
        )
        .unwrap();
    let status = store
        .fleet_submit(
            &fleetmq_protocol::Command::Status,
            "all",
            &devices[..1],
            0,
            9_000,
            2,
        )
        .unwrap();
    let waiting = store.fleet_waiting(3).unwrap();
    let a = (waiting.iter())
        .find(|w| w.device == "pi-a" && w.command == fleetmq_protocol::Command::Ping)
        .unwrap();
    store.fleet_mark(a.id, "answered", None, None, 4).unwrap();
    store.fleet_cancel(ping, 5).unwrap();

    let list = store.fleet_commands(10).unwrap();
    let ids: Vec<u64> = list.iter().map(|c| c.id).collect();
    assert_eq!(ids, [status, ping], "newest first");
    assert_eq!(list[0].target, "all");
    assert_eq!(list[0].states, [("waiting".to_string(), 1)]);
    assert_eq!(list[1].target, "groups north");
    assert_eq!(
        list[1].states,
        [("answered".to_string(), 1), ("failed".to_string(), 2)]
    );
    assert_eq!(list[1].command, fleetmq_protocol::Command::Ping);
    assert_eq!((list[1].created_ms, list[1].expires_ms), (1, 9_000));
    assert_eq!(store.fleet_commands(1).unwrap()[0].id, status, "the newest");
}

/// What an echo job that said "hi" ended with.
fn echoed() -> Outcome {
    Outcome::Completed(Output {
        exit_code: Some(0),
        stdout: "hi".into(),
        stderr: String::new(),
        truncated: false,
        duration_ms: 1,
    })
}
