//! Jobs across front-ends. Every job begins as an event on
//! [`EVENTS_STREAM`] (`Submitted` for the work queue, `Aimed` for devices,
//! groups or the fleet), and its id is that event's stream sequence; what
//! becomes of it is more events there, which every front-end reads into
//! its store in order, so `job show` and `job list` answer from anywhere.
//!
//! A work-queue job is also a message on the work-queue stream
//! [`JOBS_STREAM`] (its id in the [`JOB_ID_HEADER`] header). Front-ends
//! with an agent free take jobs from one shared consumer whose ack wait is
//! the lease and whose maximum deliveries are the attempts: a job whose
//! front-end dies with it is delivered again, elsewhere.
//!
//! An aimed job's runs are in every front-end's store, each with an id of
//! its own ([`run_id`]). The front-end that holds a member hands it its run
//! and says so (`Sent`, with the attempt's lease and token): every store
//! then shows it leased, every front-end times the lease, and a result the
//! device sends after moving is taken where it arrives. A run whose lease
//! runs out waits again for whichever front-end holds its device then.
//!
//! A job cancelled at any front-end is a `Cancelled` event: every store
//! cancels it as a single hub does, and a front-end the queue delivers a
//! job its store shows over takes it off the queue instead of running it.

use fleetmq_protocol::{JobSubmission, Outcome};
use serde::{Deserialize, Serialize};

/// The work queue: one message per job, removed once it is done.
pub const JOBS_STREAM: &str = "FLEETMQ_JOBS";
pub const JOBS_SUBJECT: &str = "fleetmq.jobs.queue";
/// The one consumer every front-end takes jobs from.
pub const JOBS_CONSUMER: &str = "fleetmq-jobs";
/// What became of each job.
pub const EVENTS_STREAM: &str = "FLEETMQ_JOB_EVENTS";
pub const EVENTS_SUBJECT: &str = "fleetmq.jobs.events";
/// The header of a work-queue message that carries its job's id.
pub const JOB_ID_HEADER: &str = "Fleetmq-Job";

/// Devices one aimed job may name across front-ends (run ids have 20 bits
/// for the member's place).
pub const MOST_MEMBERS: usize = (1 << 20) - 1;
/// Bytes of device ids one aimed job may name across front-ends: its event
/// must fit in one NATS message (1 MiB by default).
pub const MOST_MEMBER_BYTES: usize = 768 * 1024;

/// The id of the run of aimed job `job` on its `place`-th member (in the
/// members' order): above 2^52, clear of every event sequence, and below
/// 2^53, so that JSON readers keep it exact. `None` past the bounds.
pub fn run_id(job: u64, place: usize) -> Option<u64> {
    let place = u64::try_from(place).ok()?;
    (job < 1 << 32 && place < MOST_MEMBERS as u64).then(|| (1 << 52) | (job << 20) | (place + 1))
}

/// Something that happened to a job (JSON on [`EVENTS_STREAM`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    /// A work-queue job; its id is this event's sequence.
    Submitted {
        submission: JobSubmission,
        at_ms: u64,
    },
    /// A job aimed at `members` (`target` says how they were named), each
    /// run to start by `expires_ms`; its id is this event's sequence.
    Aimed {
        submission: JobSubmission,
        target: String,
        members: Vec<String>,
        expires_ms: u64,
        at_ms: u64,
    },
    /// Attempt `attempt` of run `id` went to `device`, leased for
    /// `lease_ms`; only that attempt's result, with `token`, counts.
    Sent {
        id: u64,
        device: String,
        attempt: u32,
        token: u64,
        lease_ms: u32,
        at_ms: u64,
    },
    Finished {
        id: u64,
        device: String,
        outcome: Outcome,
        at_ms: u64,
    },
    Failed {
        id: u64,
        why: String,
        at_ms: u64,
    },
    /// An operator cancelled job `id` at front-end `origin`, which answers
    /// them (its request `ask`) once it has applied this: every front-end
    /// fails what of the job waits, gives a run that is out no further
    /// attempt, and takes a cancelled job off the work queue when it next
    /// takes it.
    Cancelled {
        id: u64,
        origin: String,
        ask: u64,
        at_ms: u64,
    },
}

impl JobEvent {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<JobEvent> {
        serde_json::from_slice(bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use fleetmq_protocol::{JobSpec, Output};

    use super::*;

    #[test]
    fn events_round_trip_as_json() {
        let submission = JobSubmission {
            spec: JobSpec::Echo { text: "hi".into() },
            timeout_ms: 1_000,
            lease_ms: 6_000,
            max_attempts: 3,
            devices: vec![],
            groups: vec![],
            all: false,
            ttl_ms: 0,
            matching: vec![],
        };
        let submitted = JobEvent::Submitted {
            submission: submission.clone(),
            at_ms: 1,
        };
        let aimed = JobEvent::Aimed {
            submission,
            target: "groups north".into(),
            members: vec!["pi-1".into(), "pi-2".into()],
            expires_ms: 9,
            at_ms: 1,
        };
        let sent = JobEvent::Sent {
            id: 7,
            device: "pi-1".into(),
            attempt: 2,
            token: 99,
            lease_ms: 6_000,
            at_ms: 2,
        };
        let finished = JobEvent::Finished {
            id: 7,
            device: "pi-1".into(),
            outcome: Outcome::Completed(Output {
                exit_code: Some(0),
                stdout: "hi".into(),
                stderr: String::new(),
                truncated: false,
                duration_ms: 3,
            }),
            at_ms: 2,
        };
        let cancelled = JobEvent::Cancelled {
            id: 7,
            origin: "fe-a".into(),
            ask: 3,
            at_ms: 4,
        };
        for e in [submitted, aimed, sent, finished, cancelled] {
            assert_eq!(JobEvent::decode(&e.encode()), Some(e));
        }
        assert_eq!(JobEvent::decode(b"{}"), None);
    }

    #[test]
    fn an_event_from_a_front_end_before_filters_reads_as_none() {
        let older = br#"{"event":"aimed","submission":{"spec":{"Echo":{"text":"hi"}},"timeout_ms":0,"lease_ms":0,"max_attempts":0,"devices":[],"groups":["north"],"all":false,"ttl_ms":0},"target":"groups north","members":["pi-1"],"expires_ms":9,"at_ms":1}"#;
        let Some(JobEvent::Aimed {
            submission,
            members,
            ..
        }) = JobEvent::decode(older)
        else {
            panic!("an older front-end's aimed job is not read");
        };
        assert!(submission.matching.is_empty());
        assert_eq!(members, ["pi-1"]);
    }

    #[test]
    fn run_ids_are_clear_of_job_ids_and_exact_in_json() {
        let first = run_id(1, 0).unwrap();
        assert!(first > 1 << 52, "above every event sequence");
        assert_ne!(run_id(1, 1), Some(first));
        assert_ne!(run_id(2, 0), Some(first));
        let last = run_id((1 << 32) - 1, MOST_MEMBERS - 1).unwrap();
        assert!(last < 1 << 53, "a JSON number keeps it exact");
        assert_eq!(run_id(1 << 32, 0), None);
        assert_eq!(run_id(1, MOST_MEMBERS), None);
    }
}
