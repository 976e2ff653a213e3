//! Jobs: submitted by an operator, handed out on the work queue (PUSH to
//! whichever agent pulls), leased, handed out again when a lease runs out,
//! failed when out of attempts, finished by the device's result.
//!
//! ```text
//!   submit ─► queued ─► leased (attempt n, until t) ─► done
//!                ▲            │ lease ran out
//!                └────────────┘ (attempt < max; else failed)
//! ```

use fleetmq_protocol::{
    Job, JobFrame, JobSpec, JobSubmission, OperatorError, Outcome, ResultFrame, validate_device_id,
};
use tracing::{debug, info, warn};

use super::{Action, Core};
use crate::store::AttemptCheck;

/// Jobs read from the store per round of dispatch.
const DISPATCH_BATCH: u32 = 64;

impl Core {
    /// A new job: defaults filled in from the config, stored, then handed
    /// out at once rather than on the next tick.
    pub(super) fn submit_job(
        &mut self,
        mut job: JobSubmission,
        now_ms: u64,
    ) -> Result<u64, OperatorError> {
        check_spec(&job.spec)?;
        let d = &self.config.jobs;
        if job.timeout_ms == 0 {
            job.timeout_ms = d.timeout_ms;
        }
        if job.lease_ms == 0 {
            job.lease_ms = d.lease_ms.max(job.timeout_ms.saturating_add(5_000));
        }
        if job.max_attempts == 0 {
            job.max_attempts = d.max_attempts;
        }
        let id = self
            .store
            .submit_job(&job, now_ms)
            .map_err(|e| OperatorError::Storage(e.to_string()))?;
        info!(job = id, "job queued");
        Ok(id)
    }

    /// Hands out queued jobs and jobs whose lease ran out, and fails jobs
    /// out of attempts. A job is leased only once the driver confirms it
    /// was handed out ([`Core::job_sent`]).
    pub(super) fn dispatch_jobs(&mut self, now_ms: u64) {
        let due = match self.store.due_jobs(now_ms, DISPATCH_BATCH) {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "could not read due jobs");
                return;
            }
        };
        for job in due {
            if job.attempts >= job.max_attempts {
                let why = format!(
                    "no result after {} attempt(s) of {} ms each",
                    job.attempts, job.lease_ms
                );
                warn!(job = job.id, %why, "job failed");
                if let Err(e) = self.store.fail_job(job.id, &why, now_ms) {
                    warn!(job = job.id, error = %e, "could not fail a job");
                }
                continue;
            }
            let attempt = job.attempts + 1;
            let token = match (self.tokens)() {
                Ok(t) => t,
                Err(e) => {
                    warn!(error = %e, "could not draw a job token; jobs wait for the next tick");
                    return;
                }
            };
            let frame = JobFrame::from(Job {
                id: job.id,
                attempt,
                spec: job.spec,
                timeout_ms: job.timeout_ms,
                token,
            });
            match frame.encode() {
                Ok(frame) => self.out.push_back(Action::Job {
                    id: job.id,
                    attempt,
                    token,
                    lease_ms: job.lease_ms,
                    frame,
                }),
                Err(e) => warn!(job = job.id, error = %e, "could not encode a job"),
            }
        }
    }

    /// The driver handed attempt `attempt` of job `id` (with `token`) to an
    /// agent: its lease of `lease_ms` starts now.
    pub fn job_sent(&mut self, id: u64, attempt: u32, token: u64, lease_ms: u32, now_ms: u64) {
        self.counters.jobs_dispatched += 1;
        if attempt > 1 {
            info!(job = id, attempt, "job lease ran out; handed out again");
        }
        let until = now_ms + u64::from(lease_ms);
        if let Err(e) = self.store.lease_job(id, attempt, token, until, now_ms) {
            warn!(job = id, error = %e, "could not record a job lease");
        }
    }

    /// A result on the results socket: `[frame]`, with the user id of the
    /// connection it came on.
    pub fn result(&mut self, frame: &[u8], user_id: Option<&str>, now_ms: u64) {
        let ResultFrame::Result(result) = match ResultFrame::decode(frame) {
            Ok(r) => r,
            Err(e) => return self.dropped("results", e),
        };
        if validate_device_id(&result.device).is_err() {
            return self.dropped("results", "result from an invalid device id");
        }
        if !self.admit("results", &result.device, user_id, now_ms) {
            return;
        }
        // Only the device the attempt was given to knows its token.
        match self
            .store
            .check_attempt(result.id, result.attempt, result.token)
        {
            Ok(AttemptCheck::Given) => {}
            Ok(AttemptCheck::NotGiven) => {
                self.counters.results_refused += 1;
                warn!(
                    job = result.id,
                    attempt = result.attempt,
                    device = %result.device,
                    "refused a job result for an attempt this device was not given; the job is unaffected"
                );
                return;
            }
            Ok(AttemptCheck::Finished | AttemptCheck::Unknown) => {
                return debug!(
                    job = result.id,
                    "result for a finished or unknown job ignored"
                );
            }
            Err(e) => return warn!(job = result.id, error = %e, "could not read a job"),
        }
        let stored = match &result.outcome {
            Outcome::AlreadyRun => {
                let note = format!(
                    "attempt {} reached {}, which had already run it",
                    result.attempt, result.device
                );
                self.store
                    .note_job(result.id, &note, now_ms)
                    .map(|()| false)
            }
            outcome => self
                .store
                .finish_job(result.id, &result.device, outcome, now_ms),
        };
        match stored {
            Ok(true) => {
                self.counters.results_received += 1;
                info!(job = result.id, device = %result.device, "job done");
            }
            Ok(false) => debug!(
                job = result.id,
                "result for a finished or unknown job ignored"
            ),
            Err(e) => warn!(job = result.id, error = %e, "could not store a job result"),
        }
    }
}

fn check_spec(spec: &JobSpec) -> Result<(), OperatorError> {
    match spec {
        JobSpec::Exec { program, .. } if program.is_empty() => Err(OperatorError::BadRequest(
            "exec job needs a program name".into(),
        )),
        _ => Ok(()),
    }
}
