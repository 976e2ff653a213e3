//! Jobs and commands aimed at the fleet, from the command line: a job
//! submitted (and waited for), a job shown, and a command kept by the hub
//! for each device, its answers printed as they come.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fleetmq_protocol::{
    Command, FleetCommand, JobSpec, JobState, JobSubmission, Matcher, Request, Response,
};
use serde_json::Value;

use super::ask::{Exit, client, failed};
use super::{CommandArgs, JobKind, OpArgs, SubmitArgs};
use crate::operator::{ClientError, format, views};

pub(super) fn submit_job(a: SubmitArgs) -> anyhow::Result<ExitCode> {
    let spec = match a.kind {
        JobKind::Echo => JobSpec::Echo {
            text: a.args.join(" "),
        },
        JobKind::Exec => {
            let Some((program, args)) = a.args.split_first() else {
                return Err(super::usage(
                    "exec needs a program: fleetmq-hub job submit exec PROGRAM [ARGS...]",
                ));
            };
            JobSpec::Exec {
                program: program.clone(),
                args: args.to_vec(),
            }
        }
    };
    let ttl_ms = parse_ttl(a.aim.ttl.as_deref())?;
    let req = Request::SubmitJob(JobSubmission {
        spec,
        timeout_ms: a.timeout_ms,
        lease_ms: a.lease_ms,
        max_attempts: a.max_attempts,
        devices: a.aim.devices.clone(),
        groups: a.aim.group.clone(),
        all: a.aim.all,
        ttl_ms,
        matching: a.aim.matching.clone(),
    });
    let id = match ask_aimed(&a.op, &a.aim.matching, req)? {
        Ok(Response::JobSubmitted { id }) => id,
        Ok(_) => anyhow::bail!("the hub answered with the wrong kind of response"),
        Err(e) => return Ok(failed(&a.op, &e)),
    };
    if a.wait {
        return show_job(&a.op, id, Some(a.wait_ms));
    }
    if a.op.json {
        println!("{}", serde_json::json!({ "id": id, "state": "queued" }));
    } else {
        println!("job {id} queued");
    }
    Ok(Exit::Ok.into())
}

/// Sends a job or command aimed with `matching` (`--where`): the filters
/// checked here first, and sent only to a hub that honours them; one of a
/// release before them would skip them and act on every device of the
/// aim, so it is sent nothing.
fn ask_aimed(
    op: &OpArgs,
    matching: &[String],
    req: Request,
) -> anyhow::Result<Result<Response, ClientError>> {
    Matcher::parse_all(matching).map_err(|why| super::usage(&format!("--where: {why}")))?;
    let mut c = match client(op) {
        Ok(c) => c,
        Err(e) => return Ok(Err(e)),
    };
    if !matching.is_empty() {
        match c.call(Request::Stats, Duration::ZERO) {
            Ok(Response::Stats(s)) => {
                if let Some(why) = before_matching(&s) {
                    anyhow::bail!(why);
                }
            }
            Ok(_) => anyhow::bail!("the hub answered with the wrong kind of response"),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(c.call(req, Duration::ZERO))
}

/// Why a hub that answered `stats` may not be sent `--where`, if it is of
/// a release before filters.
pub(super) fn before_matching(stats: &fleetmq_protocol::HubStats) -> Option<String> {
    (!stats.features.iter().any(|f| f == "matching")).then(|| {
        format!(
            "the hub (fleetmq-hub {}) is of a release before --where: it would act on every device of the aim, so nothing was sent; upgrade it, or aim with --device and --group",
            stats.hub_version
        )
    })
}

/// `--ttl`: a duration (`10m`, `2h`, `7d`) in ms, 0 for the hub's default.
fn parse_ttl(ttl: Option<&str>) -> anyhow::Result<u32> {
    let Some(t) = ttl else { return Ok(0) };
    let d = humantime::parse_duration(t)
        .map_err(|_| super::usage(&format!("--ttl {t:?}: give a duration like 10m, 2h or 7d")))?;
    u32::try_from(d.as_millis())
        .ok()
        .filter(|ms| *ms > 0)
        .ok_or_else(|| super::usage(&format!("--ttl {t:?}: from 1 ms to 49 days")))
}

/// `command --device/--group/--all`: kept by the hub for each device, and
/// each answer printed as it comes.
pub(super) fn fleet_command(a: &CommandArgs, command: Command) -> anyhow::Result<ExitCode> {
    let req = Request::FleetCommand(FleetCommand {
        command,
        devices: a.aim.devices.clone(),
        groups: a.aim.group.clone(),
        all: a.aim.all,
        timeout_ms: a.timeout_ms,
        ttl_ms: parse_ttl(a.aim.ttl.as_deref())?,
        matching: a.aim.matching.clone(),
    });
    let (id, devices) = match ask_aimed(&a.op, &a.aim.matching, req)? {
        Ok(Response::FleetCommandQueued { id, devices }) => (id, devices),
        Ok(_) => anyhow::bail!("the hub answered with the wrong kind of response"),
        Err(e) => return Ok(failed(&a.op, &e)),
    };
    if !a.op.json {
        println!(
            "command {id} for {} device(s): {}",
            devices.len(),
            devices.join(", ")
        );
    }
    fleet_answers(&a.op, id, Some(Duration::from_millis(a.wait_ms)))
}

/// Prints where fleet command `id` stands on each device: with `wait`,
/// each answer as it comes, until every online device has answered (or
/// the wait is over); without, once.
pub(super) fn fleet_answers(
    op: &OpArgs,
    id: u64,
    wait: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let mut c = match client(op) {
        Ok(c) => c,
        Err(e) => return Ok(failed(op, &e)),
    };
    let deadline = Instant::now() + wait.unwrap_or_default();
    let mut shown = std::collections::HashSet::new();
    let answers = loop {
        let answers = match c.call(Request::FleetAnswers { id }, Duration::ZERO) {
            Ok(Response::FleetAnswers(a)) => a,
            Ok(_) => anyhow::bail!("the hub answered with the wrong kind of response"),
            Err(e) => return Ok(failed(op, &e)),
        };
        for a in answers.iter().filter(|a| crate::core::fleet::ended(a)) {
            if !op.json && shown.insert(a.device.clone()) {
                print!("{}", format::fmt_fleet_answer(a));
                let _ = std::io::stdout().flush();
            }
        }
        let moving = answers
            .iter()
            .any(|a| matches!(a.state.as_str(), "sending" | "sent"));
        if !moving || Instant::now() >= deadline {
            break answers;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let ok = answers
        .iter()
        .all(|a| a.state == "answered" && a.reply.as_ref().is_some_and(views::reply_ok));
    if op.json {
        let list: Vec<Value> = answers.iter().map(views::fleet_answer).collect();
        println!("{}", serde_json::json!({ "id": id, "answers": list }));
    } else {
        let open = |offline: bool| -> Vec<&str> {
            answers
                .iter()
                .filter(|a| !crate::core::fleet::ended(a) && (a.state == "offline") == offline)
                .map(|a| a.device.as_str())
                .collect()
        };
        let (asked, away) = (open(false), open(true));
        if !asked.is_empty() {
            println!(
                "no answer yet from {} device(s): {} (each has until its --timeout-ms from when it got the command)",
                asked.len(),
                asked.join(", ")
            );
        }
        if !away.is_empty() {
            println!(
                "offline: {} device(s): {} (the hub sends it to each when it returns, within the time to live)",
                away.len(),
                away.join(", ")
            );
        }
        if !asked.is_empty() || !away.is_empty() {
            println!("`fleetmq-hub command --answers {id}` shows where it stands");
        }
    }
    Ok(Exit::ok_if(ok).into())
}

pub(super) fn show_job(op: &OpArgs, id: u64, wait_ms: Option<u64>) -> anyhow::Result<ExitCode> {
    let mut c = match client(op) {
        Ok(c) => c,
        Err(e) => return Ok(failed(op, &e)),
    };
    let deadline = wait_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut pause = Duration::from_millis(50);
    loop {
        let job = match c.call(Request::Job { id }, Duration::ZERO) {
            Ok(Response::Job(j)) => j,
            Ok(_) => anyhow::bail!("the hub answered with the wrong kind of response"),
            Err(e) => return Ok(failed(op, &e)),
        };
        let finished = matches!(job.state, JobState::Done | JobState::Failed);
        if finished || deadline.is_none_or(|d| Instant::now() >= d) {
            let (text, ok) = format::fmt_job(&job);
            if op.json {
                println!("{}", views::job(&job));
            } else {
                print!("{text}");
            }
            // Without --wait, a job still queued or running is an answer,
            // not a no; with it, one that did not finish in time is.
            let going = matches!(views::job_state(&job), "queued" | "running");
            return Ok(Exit::ok_if(ok || (going && deadline.is_none())).into());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
