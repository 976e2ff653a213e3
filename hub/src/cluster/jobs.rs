//! Work-queue jobs across front-ends: a job submitted at any front-end is a
//! message on the work-queue stream [`JOBS_STREAM`], whose stream sequence
//! is its id. Front-ends with an agent free take jobs from one shared
//! consumer whose ack wait is the lease and whose maximum deliveries are
//! the attempts: a job whose front-end dies with it is delivered again,
//! elsewhere. What becomes of each job is an event on [`EVENTS_STREAM`],
//! which every front-end reads into its store, so `job show` and `job
//! list` answer from anywhere.

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

/// Something that happened to a job (JSON on [`EVENTS_STREAM`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum JobEvent {
    Submitted {
        id: u64,
        submission: JobSubmission,
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
        let submitted = JobEvent::Submitted {
            id: 7,
            submission: JobSubmission {
                spec: JobSpec::Echo { text: "hi".into() },
                timeout_ms: 1_000,
                lease_ms: 6_000,
                max_attempts: 3,
                devices: vec![],
                groups: vec![],
                all: false,
                ttl_ms: 0,
            },
            at_ms: 1,
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
        for e in [submitted, finished] {
            assert_eq!(JobEvent::decode(&e.encode()), Some(e));
        }
        assert_eq!(JobEvent::decode(b"{}"), None);
    }
}
