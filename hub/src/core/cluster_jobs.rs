//! Jobs on a front-end (see [`crate::cluster::jobs`]). A job submitted
//! here is recorded in the cluster; an aimed one's runs then wait in every
//! front-end's store, and the front-end that holds each member hands it
//! its run (`aim.rs`, telling the others). A work-queue job goes on the
//! cluster's queue; when an agent here is free,
//! one job is taken from the queue and handed out with a token of its own
//! (on the jobs socket, or as `Work` to a device that takes it when some
//! device here would refuse it, as a single hub does);
//! its result settles it in the queue and becomes an event every
//! front-end stores. A lease that runs out gives the job back (delivered
//! again, maybe elsewhere); after the last delivery it fails for good.

use std::collections::HashMap;

use fleetmq_protocol::{Job, JobFrame, JobResult, JobSubmission, OperatorError, Outcome, Response};
use tracing::{info, warn};

use super::aim::Taker;
use super::{Action, Core, Now};
use crate::cluster::ToCluster;
use crate::cluster::jobs::{JobEvent, MOST_MEMBER_BYTES, MOST_MEMBERS, run_id};
use crate::store::StoreError;

/// Jobs a front-end holds from the queue at once.
const MAX_IN_HAND: usize = 8;
/// The store's mark of the job events read.
pub const JOB_EVENTS_MARK: &str = "job_events";

/// What a front-end holds from the job queue.
#[derive(Debug, Default)]
pub(super) struct ClusterJobs {
    /// A job was asked of the queue and has not come yet.
    wanting: bool,
    /// Jobs taken, by the token of the attempt handed out.
    in_hand: HashMap<u64, InHand>,
    /// A job event could not be stored: the mark no longer moves.
    events_gap: bool,
}

#[derive(Debug)]
struct InHand {
    handle: u64,
    id: u64,
    attempt: u32,
    /// When its lease runs out (monotonic ms).
    until_ms: u64,
}

impl Core {
    /// A job submitted at a front-end: filled in and checked here (its
    /// members named, if it is aimed), then recorded in the cluster; the
    /// operator is answered when the cluster has it
    /// ([`Core::job_submitted`]).
    pub(super) fn submit_to_cluster(
        &mut self,
        client: &[u8],
        request_id: u64,
        job: JobSubmission,
        now: Now,
    ) -> Result<(), OperatorError> {
        let mut job = self.with_defaults(job)?;
        let event = match self.members(&super::aim::Aim::of_job(&job))? {
            Some((target, members)) => {
                let bytes: usize = members.iter().map(|m| m.len() + 3).sum();
                if members.len() > MOST_MEMBERS || bytes > MOST_MEMBER_BYTES {
                    return Err(OperatorError::BadRequest(format!(
                        "{target} names {} devices, more than one job across front-ends can carry ({MOST_MEMBERS} devices, {} KiB of ids): aim at fewer, by group",
                        members.len(),
                        MOST_MEMBER_BYTES / 1024
                    )));
                }
                JobEvent::Aimed {
                    expires_ms: self.expires_ms(&job, now),
                    submission: job,
                    target,
                    members,
                    at_ms: now.wall_ms,
                }
            }
            None => {
                let lease = self.config.jobs.queue_lease_ms();
                if job.timeout_ms.saturating_add(5_000) > lease {
                    return Err(OperatorError::BadRequest(format!(
                        "on front-ends a job's time limit must be 5 s under the queue's lease ({lease} ms, from jobs.lease_ms and jobs.timeout_ms): ask for less, or raise jobs.lease_ms on every front-end"
                    )));
                }
                job.lease_ms = lease;
                job.max_attempts = self.config.jobs.max_attempts;
                JobEvent::Submitted {
                    submission: job,
                    at_ms: now.wall_ms,
                }
            }
        };
        self.out.push_back(Action::Cluster(ToCluster::SubmitJob {
            client: client.to_vec(),
            request_id,
            event,
        }));
        Ok(())
    }

    /// An operator's cancel at a front-end: put on the job events, which
    /// every front-end applies in order; answered once this one has
    /// applied it (with what it stopped here, the same in every store).
    pub(super) fn cancel_in_cluster(
        &mut self,
        client: &[u8],
        request_id: u64,
        id: u64,
        now: Now,
    ) -> Result<(), OperatorError> {
        let over = self.store.job_over(id);
        if over
            .map_err(|e| OperatorError::Storage(e.to_string()))?
            .is_none()
        {
            return Err(OperatorError::NotFound(format!("job {id}")));
        }
        self.every_front_end_applies("job_cancel", "a job cancel")?;
        let ask = (self.pending_cancels).hold("job cancellations", client, request_id, ())?;
        let event = JobEvent::Cancelled {
            id,
            origin: self.cluster.name().to_string(),
            ask,
            at_ms: now.wall_ms,
        };
        self.tell_cluster(ToCluster::Cancel {
            event: event.encode(),
            ask,
        });
        Ok(())
    }

    /// The cluster did not take the cancel asked as `ask`: the operator
    /// hears why, and nothing was cancelled anywhere.
    pub fn cancel_not_taken(&mut self, ask: u64, why: &str) {
        if let Some(a) = self.pending_cancels.take(ask) {
            let why = format!(
                "the cluster did not take the cancel ({why}); nothing was cancelled: try again"
            );
            self.answer(
                &a.client,
                a.request_id,
                Response::Error(OperatorError::Storage(why)),
            );
        }
    }

    /// What became of a run of an aimed job here, for every front-end's
    /// store (nothing on a single hub).
    pub(super) fn run_event(&mut self, event: JobEvent) {
        self.tell_cluster(ToCluster::JobEvent {
            event: event.encode(),
        });
    }

    /// The cluster's word on a submission.
    pub fn job_submitted(&mut self, client: &[u8], request_id: u64, outcome: Result<u64, String>) {
        let response = match outcome {
            Ok(id) => {
                info!(job = id, "job queued in the cluster");
                Response::JobSubmitted { id }
            }
            Err(why) => Response::Error(OperatorError::Storage(why)),
        };
        self.answer(client, request_id, response);
    }

    /// Whether to take a job from the queue now: a front-end with agents,
    /// not already waiting for one, holding fewer than `MAX_IN_HAND`.
    /// The driver asks only when its jobs socket can hand one out.
    pub fn wants_job(&self) -> bool {
        let j = &self.cluster_jobs;
        self.is_front_end()
            && !j.wanting
            && j.in_hand.len() < MAX_IN_HAND
            && self.presence.online_count() > 0
    }

    /// A job was asked of the queue.
    pub fn job_asked(&mut self) {
        self.cluster_jobs.wanting = true;
    }

    /// The queue had none.
    pub fn no_job(&mut self) {
        self.cluster_jobs.wanting = false;
    }

    /// A job from the queue: handed out with a token of its own.
    pub fn cluster_job(&mut self, handle: u64, id: u64, attempt: u32, submission: &[u8], now: Now) {
        self.cluster_jobs.wanting = false;
        let job: JobSubmission = match serde_json::from_slice(submission) {
            Ok(j) => j,
            Err(e) => {
                let why = format!("the job in the queue could not be read: {e}");
                warn!(job = id, %why, "job failed");
                let event = JobEvent::Failed {
                    id,
                    why,
                    at_ms: now.wall_ms,
                }
                .encode();
                return self.tell_cluster(ToCluster::JobEnd {
                    handle,
                    event: Some(event),
                });
            }
        };
        // One every store shows over (cancelled, or done with its ack to
        // the queue lost) comes off the queue instead of going out again.
        if self.off_the_queue_if_over(handle, id) {
            return;
        }
        // As on a single hub: no device here is handed a job it would
        // refuse (by its Offer); one that takes it gets it directly.
        let takers = self.queue_takers(&job.spec);
        let taker = match self.queue_taker(&takers, id) {
            Taker::Queue => None,
            Taker::Device { device, carried } => Some((device, carried)),
            refused => {
                let why = if refused == Taker::Busy {
                    "every device of the front-end it reached that takes it is busy"
                } else {
                    "no device of the front-end it reached takes it"
                };
                info!(job = id, "{why}; back in the cluster's queue");
                let held = InHand {
                    handle,
                    id,
                    attempt,
                    until_ms: now.mono_ms,
                };
                return self.give_back(held, why, now);
            }
        };
        let token = match (self.tokens)() {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "could not draw a job token; the job goes back to the queue");
                return self.tell_cluster(ToCluster::JobBack { handle });
            }
        };
        let work = Job {
            id,
            attempt,
            spec: job.spec,
            timeout_ms: job.timeout_ms,
            token,
        };
        let until_ms = now.mono_ms + u64::from(self.config.jobs.queue_lease_ms());
        let held = InHand {
            handle,
            id,
            attempt,
            until_ms,
        };
        if let Some((device, carried)) = taker {
            self.cluster_jobs.in_hand.insert(token, held);
            self.counters.jobs_dispatched += 1;
            if carried {
                self.handed.give(token, &device, until_ms);
            }
            return self.send_down(&device, fleetmq_protocol::Downstream::Work(work));
        }
        match JobFrame::from(work).encode() {
            Ok(frame) => {
                self.cluster_jobs.in_hand.insert(token, held);
                self.out.push_back(Action::ClusterJob { token, frame });
            }
            Err(e) => {
                warn!(job = id, error = %e, "could not encode a job; back to the queue");
                self.tell_cluster(ToCluster::JobBack { handle });
            }
        }
    }

    /// The driver handed the job with `token` to an agent (or could not:
    /// then it goes back to the queue).
    pub fn cluster_job_sent(&mut self, token: u64, sent: bool, now: Now) {
        if sent {
            self.counters.jobs_dispatched += 1;
            return;
        }
        if let Some(h) = self.cluster_jobs.in_hand.remove(&token) {
            self.give_back(h, "no agent here could take it", now);
        }
    }

    /// A result for a job taken from the queue: true if it was one.
    pub(super) fn cluster_result(&mut self, result: &JobResult, now: Now) -> bool {
        let Some(h) = self.cluster_jobs.in_hand.remove(&result.token) else {
            return false;
        };
        if h.id != result.id || h.attempt != result.attempt {
            // Not the attempt the token was drawn for.
            self.cluster_jobs.in_hand.insert(result.token, h);
            return false;
        }
        let handle = h.handle;
        match &result.outcome {
            Outcome::NotAllowed(why) | Outcome::Unknown(why) => {
                info!(job = h.id, device = %result.device, %why, "job refused; back in the cluster's queue");
                let why = format!("refused by {}: {why}", result.device);
                self.give_back(h, &why, now);
            }
            Outcome::AlreadyRun => {
                info!(job = h.id, device = %result.device, "the device had run this job already (its result was lost); back in the queue");
                let why = format!("{} had run it already; its result was lost", result.device);
                self.give_back(h, &why, now);
            }
            outcome => {
                self.counters.results_received += 1;
                info!(job = h.id, device = %result.device, "job done");
                let event = JobEvent::Finished {
                    id: h.id,
                    device: result.device.clone(),
                    outcome: outcome.clone(),
                    at_ms: now.wall_ms,
                };
                self.tell_cluster(ToCluster::JobDone {
                    handle,
                    event: event.encode(),
                });
            }
        }
        true
    }

    /// Leases run out: the job goes back to the queue, or fails after
    /// its last attempt.
    pub(super) fn expire_cluster_jobs(&mut self, now: Now) {
        let over: Vec<u64> = self
            .cluster_jobs
            .in_hand
            .iter()
            .filter(|(_, h)| h.until_ms <= now.mono_ms)
            .map(|(t, _)| *t)
            .collect();
        for token in over {
            let Some(h) = self.cluster_jobs.in_hand.remove(&token) else {
                continue;
            };
            info!(job = h.id, attempt = h.attempt, "job lease ran out");
            self.give_back(h, "its lease ran out", now);
        }
    }

    /// A job this front-end cannot finish goes back to the queue, or, at
    /// its last attempt, fails for good (the queue would not deliver it
    /// again, and nobody would end it).
    fn give_back(&mut self, h: InHand, why: &str, now: Now) {
        // Cancelled while it was out: not given back.
        if self.off_the_queue_if_over(h.handle, h.id) {
            return;
        }
        if h.attempt >= self.config.jobs.max_attempts {
            let why = format!("no result after {} attempt(s); the last: {why}", h.attempt);
            warn!(job = h.id, %why, "job failed");
            let event = JobEvent::Failed {
                id: h.id,
                why,
                at_ms: now.wall_ms,
            };
            self.tell_cluster(ToCluster::JobEnd {
                handle: h.handle,
                event: Some(event.encode()),
            });
        } else {
            self.tell_cluster(ToCluster::JobBack { handle: h.handle });
        }
    }

    /// Ends the queue's message `handle` without an event if job `id` is
    /// over in this store (cancelled, or done): true if it was.
    fn off_the_queue_if_over(&mut self, handle: u64, id: u64) -> bool {
        match self.store.job_over(id) {
            Ok(Some(true)) => {
                info!(
                    job = id,
                    "the job is over (cancelled?); taken off the cluster's queue"
                );
                self.tell_cluster(ToCluster::JobEnd {
                    handle,
                    event: None,
                });
                true
            }
            Ok(_) => false,
            Err(e) => {
                self.store_failed("reading a job of the cluster's queue", &e);
                false
            }
        }
    }

    /// Job events from the cluster, in order, each with its sequence (a
    /// new job's id): the store shows every job, and runs of aimed jobs
    /// wait here for their devices.
    pub fn job_events(&mut self, events: &[(u64, Vec<u8>)], last: u64, now: Now) {
        for (seq, bytes) in events {
            let Some(event) = JobEvent::decode(bytes) else {
                warn!(seq, "a job event could not be read; skipped");
                continue;
            };
            if let Err(e) = self.job_event(*seq, event, now) {
                // The mark stays from now on: a restart reads them again.
                self.cluster_jobs.events_gap = true;
                self.store_failed("storing a job event", &e);
            }
        }
        if !self.cluster_jobs.events_gap
            && let Err(e) = self.store.set_mark(JOB_EVENTS_MARK, last)
        {
            self.store_failed("keeping the place in the job events", &e);
        }
    }

    fn job_event(&mut self, seq: u64, event: JobEvent, now: Now) -> Result<(), StoreError> {
        match event {
            JobEvent::Submitted { submission, at_ms } => {
                self.store.insert_cluster_job(seq, &submission, at_ms)
            }
            JobEvent::Aimed {
                submission,
                target,
                members,
                expires_ms,
                at_ms,
            } => {
                let runs: Option<Vec<(u64, &str)>> = (members.iter().enumerate())
                    .map(|(place, device)| Some((run_id(seq, place)?, device.as_str())))
                    .collect();
                let Some(runs) = runs else {
                    warn!(
                        job = seq,
                        members = members.len(),
                        "an aimed job past the cluster's bounds; skipped"
                    );
                    return Ok(());
                };
                self.store.insert_cluster_aimed(
                    seq,
                    &submission,
                    &target,
                    &runs,
                    expires_ms,
                    at_ms,
                )?;
                info!(job = seq, %target, devices = members.len(), "aimed job queued in the cluster");
                for device in &members {
                    self.dispatch_to(device, now);
                }
                Ok(())
            }
            JobEvent::Sent {
                id,
                attempt,
                token,
                lease_ms,
                at_ms,
                ..
            } => {
                let until_ms = at_ms.saturating_add(u64::from(lease_ms));
                if self.store.run_sent(id, attempt, token, until_ms, at_ms)? {
                    // Timed here too: should its front-end go, the run
                    // waits again for wherever its device goes.
                    self.leases
                        .start(id, now.mono_ms.saturating_add(u64::from(lease_ms)));
                }
                Ok(())
            }
            JobEvent::Finished {
                id,
                device,
                outcome,
                at_ms,
            } => {
                if self.store.finish_job(id, &device, &outcome, at_ms)? {
                    self.leases.end(id);
                }
                Ok(())
            }
            JobEvent::Failed { id, why, at_ms } => {
                self.leases.end(id);
                self.store.fail_job(id, &why, at_ms)
            }
            JobEvent::Cancelled {
                id,
                origin,
                ask,
                at_ms,
            } => {
                let cancelled = self.store.cancel_job(id, at_ms);
                if let Ok(Some((stopped, running))) = cancelled {
                    info!(job = id, stopped, running, %origin, "job cancelled by an operator");
                }
                let asked = (origin == self.cluster.name())
                    .then(|| self.pending_cancels.take(ask))
                    .flatten();
                if let Some(a) = asked {
                    let response = match &cancelled {
                        Ok(Some((stopped, running))) => Response::JobCancelled {
                            stopped: *stopped,
                            running: *running,
                        },
                        Ok(None) => Response::Error(OperatorError::NotFound(format!("job {id}"))),
                        Err(e) => Response::Error(OperatorError::Storage(e.to_string())),
                    };
                    self.answer(&a.client, a.request_id, response);
                }
                cancelled.map(|_| ())
            }
        }
    }
}
