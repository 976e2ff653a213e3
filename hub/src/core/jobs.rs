//! Jobs: submitted by an operator, handed out on the work queue (PUSH to
//! whichever agent pulls), leased, handed out again when a lease runs out
//! or the device refused it, failed when out of attempts, finished by the
//! device's result. Jobs aimed at devices are `aim.rs`'s; their runs are
//! leased and finished here as work-queue jobs are.
//!
//! ```text
//!   submit ─► queued ─► leased (attempt n, until t) ─► done
//!                ▲            │ lease ran out
//!                └────────────┘ (attempt < max; else failed)
//! ```
//!
//! A lease runs out on the monotonic clock ([`Leases`]): a step of the
//! system clock never hands a job out a second time. The store keeps the
//! lease's wall-clock end only so that a restarted hub knows how much of
//! each lease was left.

use fleetmq_protocol::{
    Downstream, Job, JobFrame, JobResult, JobSpec, JobSubmission, OperatorError, Outcome,
    ResultFrame, validate_device_id,
};
use tracing::{debug, info, warn};

use std::collections::HashMap;

use super::aim::{Taker, Takers};
use super::{Action, Core, Now};
use crate::cluster::jobs::JobEvent;
use crate::store::AttemptCheck;

/// Jobs read from the store per round of dispatch.
const DISPATCH_BATCH: u32 = 64;

/// The leases running, by job id: when each runs out on the monotonic
/// clock.
#[derive(Debug, Default)]
pub struct Leases {
    until_mono_ms: HashMap<u64, u64>,
    /// Whether the leases a previous run of the hub left in the store are
    /// known yet (read on the first tick, and again until that works).
    loaded: bool,
}

impl Leases {
    /// Job `id`'s lease runs until `until_mono_ms`.
    pub fn start(&mut self, id: u64, until_mono_ms: u64) {
        self.until_mono_ms.insert(id, until_mono_ms);
    }

    /// Job `id` needs no lease any more (it has its result).
    pub fn end(&mut self, id: u64) {
        self.until_mono_ms.remove(&id);
    }

    /// The jobs whose lease has run out by `now_mono_ms`, forgotten here.
    pub fn run_out(&mut self, now_mono_ms: u64) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .until_mono_ms
            .iter()
            .filter(|&(_, &until)| until <= now_mono_ms)
            .map(|(&id, _)| id)
            .collect();
        out.sort_unstable();
        for id in &out {
            self.until_mono_ms.remove(id);
        }
        out
    }
}

/// How much of a lease a previous run of the hub left: what its
/// wall-clock end says, but never more than the whole lease (the clock may
/// have stepped back while the hub was down) and never less than nothing.
pub fn lease_left_ms(until_wall_ms: u64, lease_ms: u32, now_wall_ms: u64) -> u64 {
    until_wall_ms
        .saturating_sub(now_wall_ms)
        .min(u64::from(lease_ms))
}

impl Core {
    /// A new job: defaults filled in from the config, stored, then handed
    /// out at once rather than on the next tick.
    pub(super) fn submit_job(
        &mut self,
        job: JobSubmission,
        now: Now,
    ) -> Result<u64, OperatorError> {
        let job = self.with_defaults(job)?;
        if let Some((target, members)) = self.members(&super::aim::Aim::of_job(&job))? {
            return self.submit_aimed(&job, &target, &members, now);
        }
        let id = self
            .store
            .submit_job(&job, now.wall_ms)
            .map_err(|e| OperatorError::Storage(e.to_string()))?;
        info!(job = id, "job queued");
        Ok(id)
    }

    /// `job`, checked, with the config's defaults for what it left out.
    pub(super) fn with_defaults(
        &self,
        mut job: JobSubmission,
    ) -> Result<JobSubmission, OperatorError> {
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
        Ok(job)
    }

    /// Leases that ran out put their jobs back in the queue; on the first
    /// tick, the leases a previous run of the hub left are taken up with
    /// what was left of them.
    pub(super) fn expire_leases(&mut self, now: Now) {
        self.handed.expire(now.mono_ms);
        if !self.leases.loaded {
            match self.store.leased_jobs() {
                Ok(leased) => {
                    for (id, until_wall_ms, lease_ms) in leased {
                        let left = lease_left_ms(until_wall_ms, lease_ms, now.wall_ms);
                        self.leases.start(id, now.mono_ms + left);
                    }
                    self.leases.loaded = true;
                }
                Err(e) => warn!(error = %e, "could not read the job leases; will retry"),
            }
        }
        for id in self.leases.run_out(now.mono_ms) {
            if let Err(e) = self.store.lease_ran_out(id, now.wall_ms) {
                warn!(job = id, error = %e, "could not put a job back in the queue");
                // Tried again on the next tick.
                self.leases.start(id, now.mono_ms);
            }
        }
    }

    /// Hands out queued jobs (new ones and those whose lease ran out), and
    /// fails jobs out of attempts. A job is leased only once the driver
    /// confirms it was handed out ([`Core::job_sent`]).
    pub(super) fn dispatch_jobs(&mut self, now: Now) {
        let due = match self.store.due_jobs(now.wall_ms, DISPATCH_BATCH) {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "could not read due jobs");
                return;
            }
        };
        let mut takers: HashMap<String, Takers> = HashMap::new();
        for job in due {
            if job.attempts >= job.max_attempts {
                let why = format!(
                    "no result after {} attempt(s) of {} ms each",
                    job.attempts, job.lease_ms
                );
                warn!(job = job.id, %why, "job failed");
                if let Err(e) = self.store.fail_job(job.id, &why, now.wall_ms) {
                    warn!(job = job.id, error = %e, "could not fail a job");
                }
                continue;
            }
            // Who takes it, worked out once per kind and program a round.
            let what = match &job.spec {
                JobSpec::Echo { .. } => "echo".to_string(),
                JobSpec::Exec { program, .. } => format!("exec {program}"),
            };
            let who = match takers.get(&what) {
                Some(t) => t,
                None => takers.entry(what).or_insert(self.queue_takers(&job.spec)),
            };
            let taker = self.queue_taker(who, job.id);
            if taker == Taker::Busy {
                // Its takers' hands are full: due again next round.
                continue;
            }
            if taker == Taker::Nobody {
                // Said once, in the job: it waits for a device that takes it.
                if self.waiting.insert(job.id) {
                    let note = "waiting: no device online takes it (their [jobs] allow and [exec] programs)";
                    info!(job = job.id, "{note}");
                    if let Err(e) = self.store.note_job(job.id, note, now.wall_ms) {
                        warn!(job = job.id, error = %e, "could not note a waiting job");
                    }
                }
                continue;
            }
            self.waiting.remove(&job.id);
            let attempt = job.attempts + 1;
            let token = match (self.tokens)() {
                Ok(t) => t,
                Err(e) => {
                    warn!(error = %e, "could not draw a job token; jobs wait for the next tick");
                    return;
                }
            };
            let work = Job {
                id: job.id,
                attempt,
                spec: job.spec,
                timeout_ms: job.timeout_ms,
                token,
            };
            if let Taker::Device { device, carried } = taker {
                // An agent on one connection, or one that takes it while
                // some puller would refuse it: on the device's own
                // connection.
                self.send_down(&device, Downstream::Work(work));
                self.job_sent(job.id, attempt, token, job.lease_ms, now);
                if carried {
                    let until = now.mono_ms + u64::from(job.lease_ms);
                    self.handed.give(token, &device, until);
                }
                continue;
            }
            match JobFrame::from(work).encode() {
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
    pub fn job_sent(&mut self, id: u64, attempt: u32, token: u64, lease_ms: u32, now: Now) {
        self.counters.jobs_dispatched += 1;
        if attempt > 1 {
            info!(job = id, attempt, "job lease ran out; handed out again");
        }
        self.leases.start(id, now.mono_ms + u64::from(lease_ms));
        let until_wall_ms = now.wall_ms + u64::from(lease_ms);
        if let Err(e) = self
            .store
            .lease_job(id, attempt, token, until_wall_ms, now.wall_ms)
        {
            warn!(job = id, error = %e, "could not record a job lease");
        }
    }

    /// A result on the results socket: `[frame]`, with the user id of the
    /// connection it came on.
    pub fn result(&mut self, frame: &[u8], user_id: Option<&str>, now: Now) {
        let ResultFrame::Result(result) = match ResultFrame::decode(frame) {
            Ok(r) => r,
            Err(e) => return self.dropped("results", e),
        };
        if validate_device_id(&result.device).is_err() {
            return self.dropped("results", "result from an invalid device id");
        }
        if !self.admit("results", &result.device, user_id, now) {
            return;
        }
        self.take_result(result, now);
    }

    /// A job's result from its device (already admitted), on the results
    /// socket or its telemetry connection (an agent on one connection).
    pub(super) fn take_result(&mut self, result: JobResult, now: Now) {
        self.handed.done(result.token);
        if self.cluster_result(&result, now) {
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
            // A work-queue job the device does not allow goes back in the
            // queue for another device (an aimed one never reaches a device
            // that would refuse it; if it does, the refusal is its result).
            Outcome::NotAllowed(why) | Outcome::Unknown(why)
                if matches!(self.store.is_aimed(result.id), Ok(false)) =>
            {
                let note = format!("refused by {}: {why}", result.device);
                info!(job = result.id, device = %result.device, "job refused; back in the queue for another device");
                self.leases.end(result.id);
                if let Err(e) = self.store.refused(result.id, &note, now.wall_ms) {
                    warn!(job = result.id, error = %e, "could not put a refused job back");
                }
                return;
            }
            Outcome::AlreadyRun => {
                let note = format!(
                    "attempt {} reached {}, which had already run it",
                    result.attempt, result.device
                );
                self.store
                    .note_job(result.id, &note, now.wall_ms)
                    .map(|()| false)
            }
            outcome => self
                .store
                .finish_job(result.id, &result.device, outcome, now.wall_ms),
        };
        match stored {
            Ok(true) => {
                self.leases.end(result.id);
                self.counters.results_received += 1;
                info!(job = result.id, device = %result.device, "job done");
                // On a front-end, a run of an aimed job: every store has it.
                self.run_event(JobEvent::Finished {
                    id: result.id,
                    device: result.device,
                    outcome: result.outcome,
                    at_ms: now.wall_ms,
                });
            }
            Ok(false) => debug!(
                job = result.id,
                "result for a finished or unknown job ignored"
            ),
            Err(e) => warn!(job = result.id, error = %e, "could not store a job result"),
        }
    }
}

pub(super) fn check_spec(spec: &JobSpec) -> Result<(), OperatorError> {
    match spec {
        JobSpec::Exec { program, .. } if program.is_empty() => Err(OperatorError::BadRequest(
            "exec job needs a program name".into(),
        )),
        _ => Ok(()),
    }
}
