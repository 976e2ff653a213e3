//! Jobs and commands: what this device does with each, decided from its
//! own allow lists alone. Plain functions of their inputs; the driver
//! ([`crate::driver`]) carries the plans out and [`runner`] runs programs.

pub mod runner;

use fleetmq_protocol::{Command, Job, JobSpec, Outcome, Output};

/// Exec commands running at once; more are answered "busy" at once.
pub const MAX_COMMANDS_RUNNING: usize = 4;

/// What to do with a command from the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandPlan {
    /// Answer with Pong.
    Pong,
    /// Answer with this agent's status.
    Status,
    /// Run the program on a worker, then answer with its outcome.
    Run {
        program: String,
        args: Vec<String>,
        timeout_ms: u32,
    },
    /// Answer at once with this outcome (not allowed, unknown, busy).
    Refuse(Outcome),
}

/// Decides a command: `allow` is the device's `[commands] allow` list,
/// `running` how many exec commands run now.
pub fn plan_command(command: Command, allow: &[String], running: usize) -> CommandPlan {
    let allowed = |name: &str| allow.iter().any(|a| a == name);
    match command {
        Command::Ping if allowed("ping") => CommandPlan::Pong,
        Command::Status if allowed("status") => CommandPlan::Status,
        Command::Exec { .. } if allowed("exec") && running >= MAX_COMMANDS_RUNNING => {
            let busy = format!("busy: {MAX_COMMANDS_RUNNING} commands already running");
            CommandPlan::Refuse(Outcome::Failed(busy))
        }
        Command::Exec {
            program,
            args,
            timeout_ms,
        } if allowed("exec") => CommandPlan::Run {
            program,
            args,
            timeout_ms,
        },
        Command::Other { name, .. } => {
            CommandPlan::Refuse(Outcome::Unknown(format!("command {name:?}")))
        }
        other => {
            let name = match other {
                Command::Ping => "ping",
                Command::Status => "status",
                _ => "exec",
            };
            CommandPlan::Refuse(Outcome::NotAllowed(format!("command {name:?}")))
        }
    }
}

/// What to do with a job from the hub.
#[derive(Debug, Clone, PartialEq)]
pub enum JobPlan {
    /// It ran here before: answer with what it gave then (or "already
    /// run" when that is forgotten), without running it again.
    AlreadyRan(Outcome),
    /// This device does not take jobs of this kind.
    Refuse(Outcome),
    /// Start it (once its id is recorded, so it never runs twice).
    Start(Start),
}

/// How a job that starts is done.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// At once, with this outcome (an echo job).
    Done(Outcome),
    /// By running the program on a worker.
    Run { program: String, args: Vec<String> },
}

/// The job's kind, as `[jobs] allow` names it.
pub fn job_kind(spec: &JobSpec) -> &'static str {
    match spec {
        JobSpec::Echo { .. } => "echo",
        JobSpec::Exec { .. } => "exec",
    }
}

/// Decides a job: `ran` is what this device remembers of it (`Some(None)`
/// when it ran but its result is forgotten), `allow` the `[jobs] allow`
/// list.
pub fn plan_job(job: Job, ran: Option<Option<&Outcome>>, allow: &[String]) -> JobPlan {
    if let Some(before) = ran {
        return JobPlan::AlreadyRan(before.cloned().unwrap_or(Outcome::AlreadyRun));
    }
    let kind = job_kind(&job.spec);
    if !allow.iter().any(|k| k == kind) {
        return JobPlan::Refuse(Outcome::NotAllowed(format!("job kind {kind:?}")));
    }
    match job.spec {
        JobSpec::Echo { text } => JobPlan::Start(Start::Done(Outcome::Completed(Output {
            exit_code: Some(0),
            stdout: text,
            stderr: String::new(),
            truncated: false,
            duration_ms: 0,
        }))),
        JobSpec::Exec { program, args } => JobPlan::Start(Start::Run { program, args }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn exec(program: &str) -> Command {
        Command::Exec {
            program: program.into(),
            args: vec!["-n".into()],
            timeout_ms: 1_000,
        }
    }

    #[test]
    fn commands_follow_the_allow_list_and_the_busy_limit() {
        let all = list(&["ping", "status", "exec"]);
        assert_eq!(plan_command(Command::Ping, &all, 0), CommandPlan::Pong);
        assert_eq!(plan_command(Command::Status, &all, 0), CommandPlan::Status);
        assert_eq!(
            plan_command(exec("uname"), &all, 0),
            CommandPlan::Run {
                program: "uname".into(),
                args: vec!["-n".into()],
                timeout_ms: 1_000
            }
        );
        assert!(matches!(
            plan_command(exec("uname"), &all, MAX_COMMANDS_RUNNING),
            CommandPlan::Refuse(Outcome::Failed(why)) if why.starts_with("busy")
        ));
        let ping_only = list(&["ping"]);
        assert!(matches!(
            plan_command(exec("uname"), &ping_only, 0),
            CommandPlan::Refuse(Outcome::NotAllowed(why)) if why.contains("exec")
        ));
        assert!(matches!(
            plan_command(Command::Status, &ping_only, 0),
            CommandPlan::Refuse(Outcome::NotAllowed(why)) if why.contains("status")
        ));
        let other = Command::Other {
            name: "reboot".into(),
            args: vec![],
        };
        assert!(matches!(
            plan_command(other, &all, 0),
            CommandPlan::Refuse(Outcome::Unknown(why)) if why.contains("reboot")
        ));
    }

    #[test]
    fn a_job_runs_once_and_only_if_its_kind_is_allowed() {
        let job = |spec| Job {
            id: 7,
            attempt: 2,
            spec,
            timeout_ms: 1_000,
            token: 9,
        };
        let exec_job = || {
            job(JobSpec::Exec {
                program: "true".into(),
                args: vec![],
            })
        };
        let both = list(&["echo", "exec"]);
        assert_eq!(
            plan_job(exec_job(), None, &both),
            JobPlan::Start(Start::Run {
                program: "true".into(),
                args: vec![]
            })
        );
        assert!(matches!(
            plan_job(exec_job(), None, &list(&["echo"])),
            JobPlan::Refuse(Outcome::NotAllowed(why)) if why.contains("exec")
        ));
        let before = Outcome::Failed("it broke".into());
        assert_eq!(
            plan_job(exec_job(), Some(Some(&before)), &both),
            JobPlan::AlreadyRan(before.clone()),
            "the remembered result, not a second run"
        );
        assert_eq!(
            plan_job(exec_job(), Some(None), &both),
            JobPlan::AlreadyRan(Outcome::AlreadyRun)
        );
        let echo = job(JobSpec::Echo { text: "hi".into() });
        assert!(matches!(
            plan_job(echo, None, &both),
            JobPlan::Start(Start::Done(Outcome::Completed(o))) if o.stdout == "hi"
        ));
    }
}
