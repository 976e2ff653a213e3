//! Jobs and commands: taken from the hub, checked against this device's
//! allow lists, run on worker threads, answered.

use std::io::Read;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleetmq_net::{now_ms, recv_frames, send_frames};
use fleetmq_protocol::{
    Command, CommandFrame, CommandReply, JobFrame, JobResult, JobSpec, Outcome, Output, Reply,
    ReplyFrame, ResultFrame,
};
use tracing::{info, warn};

use crate::runner;
use crate::telemetry::uplink::Record;

use super::{Agent, Event, MAX_COMMANDS_RUNNING};

impl Agent {
    pub(super) fn send_result(&self, id: u64, attempt: u32, outcome: Outcome) {
        let Some(links) = &self.links else {
            warn!(
                job = id,
                "no results socket yet; the hub will hand the job out again"
            );
            return;
        };
        let result = JobResult {
            id,
            attempt,
            device: self.cfg.device_id.clone(),
            outcome,
        };
        match ResultFrame::from(result).encode() {
            Ok(frame) => {
                if !matches!(send_frames(&links.results, &[&frame]), Ok(true)) {
                    warn!(
                        job = id,
                        "could not queue a job result; the hub will hand the job out again"
                    );
                }
            }
            Err(e) => warn!(job = id, error = %e, "could not encode a job result"),
        }
    }

    pub(super) fn drain_jobs(&mut self) -> anyhow::Result<()> {
        while self.running_jobs < self.cfg.jobs.max_concurrent {
            let Some(links) = &self.links else {
                return Ok(());
            };
            let Some(frames) = recv_frames(&links.jobs, 1).context("reading jobs")? else {
                return Ok(());
            };
            let Ok(frames) = frames else { continue };
            let JobFrame::Job(job) = match JobFrame::decode(&frames[0]) {
                Ok(j) => j,
                Err(e) => {
                    warn!(error = %e, "undecodable job dropped");
                    continue;
                }
            };
            if self.jobs_run.has_run(job.id) {
                let outcome = self
                    .jobs_run
                    .result(job.id)
                    .cloned()
                    .unwrap_or(Outcome::AlreadyRun);
                info!(
                    job = job.id,
                    attempt = job.attempt,
                    "job already ran here; not running it again"
                );
                self.send_result(job.id, job.attempt, outcome);
                continue;
            }
            let kind = match &job.spec {
                JobSpec::Echo { .. } => "echo",
                JobSpec::Exec { .. } => "exec",
            };
            if !self.cfg.jobs.allow.iter().any(|k| k == kind) {
                info!(job = job.id, kind, "job kind not allowed here");
                self.send_result(
                    job.id,
                    job.attempt,
                    Outcome::NotAllowed(format!("job kind {kind:?}")),
                );
                continue;
            }
            if let Err(e) = self.jobs_run.starting(job.id) {
                warn!(job = job.id, error = %e, "cannot record the job id; not running it");
                self.send_result(
                    job.id,
                    job.attempt,
                    Outcome::Failed(format!("agent cannot record job ids: {e}")),
                );
                continue;
            }
            info!(job = job.id, attempt = job.attempt, kind, "running job");
            match job.spec {
                JobSpec::Echo { text } => {
                    let outcome = Outcome::Completed(Output {
                        exit_code: Some(0),
                        stdout: text,
                        stderr: String::new(),
                        truncated: false,
                        duration_ms: 0,
                    });
                    self.jobs_done += 1;
                    self.jobs_run.finished(job.id, outcome.clone());
                    self.send_result(job.id, job.attempt, outcome);
                }
                JobSpec::Exec { program, args } => {
                    self.running_jobs += 1;
                    let (policy, stop, notifier) = (
                        self.exec.clone(),
                        self.stop_children.clone(),
                        self.notifier.clone(),
                    );
                    let (id, attempt, timeout) = (
                        job.id,
                        job.attempt,
                        Duration::from_millis(u64::from(job.timeout_ms)),
                    );
                    std::thread::spawn(move || {
                        let outcome = runner::exec(&policy, &program, &args, timeout, &stop);
                        notifier.send(Event::JobDone {
                            id,
                            attempt,
                            outcome,
                        });
                    });
                }
            }
        }
        Ok(())
    }

    pub(super) fn reply(&mut self, corr: u64, reply: Reply) {
        let Some(links) = &self.links else { return };
        self.commands_answered += 1;
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

    pub(super) fn drain_commands(&mut self) -> anyhow::Result<()> {
        loop {
            let Some(links) = &self.links else {
                return Ok(());
            };
            let Some(frames) = recv_frames(&links.commands, 2).context("reading commands")? else {
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
        let allowed = |name: &str| self.cfg.commands.allow.iter().any(|a| a == name);
        match command {
            Command::Ping if allowed("ping") => {
                let uptime_ms = self.started.elapsed().as_millis() as u64;
                self.reply(corr, Reply::Pong { uptime_ms });
            }
            Command::Status if allowed("status") => {
                let status = self.status();
                self.reply(corr, Reply::Status(status));
            }
            Command::Exec { .. }
                if allowed("exec") && self.running_commands >= MAX_COMMANDS_RUNNING =>
            {
                let busy = format!("busy: {MAX_COMMANDS_RUNNING} commands already running");
                self.reply(corr, Reply::Outcome(Outcome::Failed(busy)));
            }
            Command::Exec {
                program,
                args,
                timeout_ms,
            } if allowed("exec") => {
                info!(%program, "running command");
                self.running_commands += 1;
                let (policy, stop, notifier) = (
                    self.exec.clone(),
                    self.stop_children.clone(),
                    self.notifier.clone(),
                );
                std::thread::spawn(move || {
                    let outcome = runner::exec(
                        &policy,
                        &program,
                        &args,
                        Duration::from_millis(u64::from(timeout_ms)),
                        &stop,
                    );
                    notifier.send(Event::CommandDone {
                        corr,
                        reply: Reply::Outcome(outcome),
                    });
                });
            }
            Command::Other { name, .. } => {
                self.reply(
                    corr,
                    Reply::Outcome(Outcome::Unknown(format!("command {name:?}"))),
                );
            }
            other => {
                let name = match other {
                    Command::Ping => "ping",
                    Command::Status => "status",
                    _ => "exec",
                };
                self.reply(
                    corr,
                    Reply::Outcome(Outcome::NotAllowed(format!("command {name:?}"))),
                );
            }
        }
    }

    pub(super) fn drain_events(&mut self) -> anyhow::Result<()> {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
        while let Ok(event) = self.events.try_recv() {
            match event {
                Event::JobDone {
                    id,
                    attempt,
                    outcome,
                } => {
                    self.running_jobs = self.running_jobs.saturating_sub(1);
                    self.jobs_done += 1;
                    self.jobs_run.finished(id, outcome.clone());
                    self.send_result(id, attempt, outcome);
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
                Event::StdinClosed => {
                    // Finish what was said, then exit: stop sampling, send the rest now.
                    self.stdin_closed = true;
                    self.next_sample = Instant::now() + Duration::from_secs(86_400 * 365);
                    self.seal_and_send()?;
                }
            }
        }
        // Jobs may be waiting now that a worker is free.
        self.drain_jobs()
    }
}
