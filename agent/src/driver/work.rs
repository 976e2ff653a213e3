//! Jobs and commands: taken from the hub, checked against this device's
//! allow lists, run on worker threads, answered.

use std::io::Read;
use std::os::fd::AsRawFd as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fleetmq_net::{Poll, now_ms, recv_frames, send_frames};
use fleetmq_protocol::{
    Command, CommandFrame, CommandReply, Job, JobFrame, JobResult, Outcome, Reply, ReplyFrame,
    ResultFrame, Upstream,
};
use tracing::{info, warn};

use super::{Agent, Error, Event, zmq_error};
use crate::link::Seen;
use crate::telemetry::uplink::Record;
use crate::work::runner;
use crate::work::{CommandPlan, JobPlan, Start, job_kind, plan_command, plan_job};

/// One attempt of a job as the hub handed it out: its result carries the
/// same three.
#[derive(Debug, Clone, Copy)]
pub(super) struct Given {
    pub id: u64,
    pub attempt: u32,
    pub token: u64,
}

/// How long a stopping agent waits for its workers: a stopped program is
/// killed within `STOP_CHECK` and its pipes given a second.
const WORKERS_STOP_WAIT: Duration = Duration::from_secs(3);

impl Agent {
    /// Runs `work` on a worker thread that is joined at stop.
    fn spawn_worker(&mut self, work: impl FnOnce() + Send + 'static) {
        self.workers.retain(|w| !w.is_finished());
        self.workers.push(std::thread::spawn(work));
    }

    /// Stops running programs and joins their workers. Their outcomes are
    /// not reported: a job cut short is handed out again by the hub when
    /// its lease ends, as if the device had gone.
    pub(super) fn stop_workers(&mut self) {
        self.stop_children.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + WORKERS_STOP_WAIT;
        while self.workers.iter().any(|w| !w.is_finished()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // A worker's last act is to wake the loop; keep its channel
            // drained so that no worker blocks on a full one.
            let mut poll = Poll::new();
            poll.fd((), self.wake.as_raw_fd());
            let _ = poll.wait(left.min(Duration::from_millis(50)).as_millis() as i64);
            let mut buf = [0u8; 64];
            while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
            while self.events.try_recv().is_ok() {}
        }
        let mut left_running = 0;
        for w in self.workers.drain(..) {
            if !w.is_finished() {
                left_running += 1;
            } else if w.join().is_err() {
                warn!("a job or command worker ended with a panic");
            }
        }
        if left_running > 0 {
            warn!(
                left_running,
                "workers did not stop in time; their programs may outlive the agent"
            );
        }
    }

    pub(super) fn send_result(&self, given: Given, outcome: Outcome) {
        let Given { id, attempt, token } = given;
        let result = JobResult {
            id,
            attempt,
            device: self.cfg.device_id.clone(),
            outcome,
            token,
        };
        if self.carried {
            if !self.send_up(Upstream::Result(result)) {
                warn!(
                    job = id,
                    "could not queue a job result; the hub will hand the job out again"
                );
            }
            return;
        }
        let Some(results) = self.links.as_ref().and_then(|l| l.results.as_ref()) else {
            warn!(
                job = id,
                "no results socket yet; the hub will hand the job out again"
            );
            return;
        };
        match ResultFrame::from(result).encode() {
            Ok(frame) => {
                if !matches!(send_frames(results, &[&frame]), Ok(true)) {
                    warn!(
                        job = id,
                        "could not queue a job result; the hub will hand the job out again"
                    );
                }
            }
            Err(e) => warn!(job = id, error = %e, "could not encode a job result"),
        }
    }

    /// Runs jobs while a worker is free: those aimed at this device first,
    /// then the work queue's.
    pub(super) fn drain_jobs(&mut self) -> Result<(), Error> {
        while self.running_jobs < self.cfg.jobs.max_concurrent
            && !self.stop_children.load(Ordering::SeqCst)
        {
            if let Some(job) = self.aimed.pop_front() {
                self.take_job(job);
                continue;
            }
            let Some(jobs) = self.links.as_ref().and_then(|l| l.jobs.as_ref()) else {
                return Ok(());
            };
            let Some(frames) = recv_frames(jobs, 1).map_err(zmq_error("reading jobs"))? else {
                return Ok(());
            };
            let Ok(frames) = frames else { continue };
            match JobFrame::decode(&frames[0]) {
                Ok(JobFrame::Job(job)) => self.take_job(job),
                Err(e) => warn!(error = %e, "undecodable job dropped"),
            }
        }
        Ok(())
    }

    /// One job, from the work queue or aimed here: run it (on a worker
    /// when it runs a program), refuse it, or answer it from memory.
    fn take_job(&mut self, job: Job) {
        let (id, attempt) = (job.id, job.attempt);
        let given = Given {
            id,
            attempt,
            token: job.token,
        };
        let kind = job_kind(&job.spec);
        let timeout = Duration::from_millis(u64::from(job.timeout_ms));
        let ran = self.jobs_run.has_run(id).then(|| self.jobs_run.result(id));
        let plan = plan_job(job, ran, &self.cfg.jobs.allow);
        let start = match plan {
            JobPlan::AlreadyRan(outcome) => {
                info!(
                    job = id,
                    attempt, "job already ran here; not running it again"
                );
                return self.send_result(given, outcome);
            }
            JobPlan::Refuse(outcome) => {
                info!(job = id, kind, "job kind not allowed here");
                return self.send_result(given, outcome);
            }
            JobPlan::Start(start) => start,
        };
        if let Err(e) = self.jobs_run.starting(id) {
            warn!(job = id, error = %e, "cannot record the job id; not running it");
            let why = format!("agent cannot record job ids: {e}");
            return self.send_result(given, Outcome::Failed(why));
        }
        let outcome = match start {
            Start::Done(outcome) => outcome,
            Start::Run { program, args } => {
                info!(job = id, attempt, kind, "running job");
                self.running_jobs += 1;
                let (policy, stop, notifier) = (
                    self.exec.clone(),
                    self.stop_children.clone(),
                    self.notifier.clone(),
                );
                self.spawn_worker(move || {
                    let outcome = runner::exec(&policy, &program, &args, timeout, &stop);
                    notifier.send(Event::JobDone { given, outcome });
                });
                return;
            }
        };
        info!(job = id, attempt, kind, "running job");
        self.jobs_done += 1;
        self.jobs_run.finished(id, outcome.clone());
        self.send_result(given, outcome);
    }

    pub(super) fn reply(&mut self, corr: u64, reply: Reply) {
        self.commands_answered += 1;
        if self.carried {
            if !self.send_up(Upstream::Reply(CommandReply { corr, reply })) {
                warn!(
                    corr,
                    "could not queue a command reply; the operator will see a timeout"
                );
            }
            return;
        }
        let Some(links) = &self.links else { return };
        let frame = match ReplyFrame::from(CommandReply { corr, reply }).encode() {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "could not encode a reply; answering with the error");
                let fallback = CommandReply {
                    corr,
                    reply: Reply::Outcome(Outcome::Failed(e.to_string())),
                };
                match ReplyFrame::from(fallback).encode() {
                    Ok(f) => f,
                    Err(_) => return,
                }
            }
        };
        if !matches!(send_frames(&links.commands, &[b"", &frame]), Ok(true)) {
            warn!(
                corr,
                "could not queue a command reply; the operator will see a timeout"
            );
        }
    }

    pub(super) fn drain_commands(&mut self) -> Result<(), Error> {
        loop {
            let Some(links) = &self.links else {
                return Ok(());
            };
            let Some(frames) =
                recv_frames(&links.commands, 2).map_err(zmq_error("reading commands"))?
            else {
                return Ok(());
            };
            let request = match frames {
                Ok(f) => match f.as_slice() {
                    [empty, body] if empty.is_empty() => {
                        CommandFrame::decode(body).map_err(|e| e.to_string())
                    }
                    _ => Err("command without the request envelope".to_string()),
                },
                Err(n) => Err(format!("command of {n} frames")),
            };
            match request {
                Ok(CommandFrame::Request(r)) => self.command(r.corr, r.command),
                Err(e) => {
                    // Without a correlation id there is no one to answer.
                    warn!(error = %e, "undecodable command dropped");
                }
            }
        }
    }

    pub(super) fn command(&mut self, corr: u64, command: Command) {
        match plan_command(command, &self.cfg.commands.allow, self.running_commands) {
            CommandPlan::Pong => {
                let uptime_ms = self.started.elapsed().as_millis() as u64;
                self.reply(corr, Reply::Pong { uptime_ms });
            }
            CommandPlan::Status => {
                let status = self.status();
                self.reply(corr, Reply::Status(status));
            }
            CommandPlan::Refuse(outcome) => self.reply(corr, Reply::Outcome(outcome)),
            CommandPlan::Run {
                program,
                args,
                timeout_ms,
            } => {
                info!(%program, "running command");
                self.running_commands += 1;
                let (policy, stop, notifier) = (
                    self.exec.clone(),
                    self.stop_children.clone(),
                    self.notifier.clone(),
                );
                let timeout = Duration::from_millis(u64::from(timeout_ms));
                self.spawn_worker(move || {
                    let outcome = runner::exec(&policy, &program, &args, timeout, &stop);
                    notifier.send(Event::CommandDone {
                        corr,
                        reply: Reply::Outcome(outcome),
                    });
                });
            }
        }
    }

    pub(super) fn drain_events(&mut self) -> Result<(), Error> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        while let Ok(event) = self.events.try_recv() {
            match event {
                Event::JobDone { given, outcome } => {
                    self.running_jobs = self.running_jobs.saturating_sub(1);
                    self.jobs_done += 1;
                    self.jobs_run.finished(given.id, outcome.clone());
                    self.send_result(given, outcome);
                }
                Event::CommandDone { corr, reply } => {
                    self.running_commands = self.running_commands.saturating_sub(1);
                    self.reply(corr, reply);
                }
                Event::ChatLine(text) => {
                    if !self.accept(&[Record::Chat {
                        ts_ms: now_ms(),
                        text,
                    }]) {
                        eprintln!("fleetmq-agent: chat line not sent: the spool is full");
                    }
                }
                Event::Unresolvable(why) => {
                    self.link.seen(Seen::Unresolvable(why), Instant::now());
                }
                Event::Resolved { hub, addrs } => {
                    info!(%hub, addresses = addrs.len(), "the hub's name resolves to several addresses; the agent moves between them");
                    self.rotation = crate::redial::expand(&self.rotation, &hub, &addrs);
                    self.failover.set_hubs(self.rotation.len());
                }
                Event::StdinClosed => {
                    // Finish what was said, then exit: stop sampling, send the rest now.
                    let wait = self.chat_wait.unwrap_or_default();
                    self.chat_deadline = Some(Instant::now() + wait);
                    self.next_sample = Instant::now() + Duration::from_secs(86_400 * 365);
                    self.seal_and_send();
                }
            }
        }
        // Jobs may be waiting now that a worker is free.
        self.drain_jobs()
    }
}
