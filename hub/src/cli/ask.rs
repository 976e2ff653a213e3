//! The subcommands that ask a running hub, and how their answers are
//! printed: human text, or JSON with --json.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fleetmq_protocol::{
    ChatQuery, JobSpec, JobState, JobSubmission, Request, Response, TelemetryQuery,
};
use serde::Serialize;

use super::{ChatArgs, JobKind, OpArgs, SubmitArgs, TelemetryArgs};
use crate::operator::format;
use crate::operator::{Client, ClientError};

/// What to print for an answer: JSON, human text, and whether it succeeded.
pub(super) struct Shown {
    json: serde_json::Value,
    text: String,
    ok: bool,
}

impl Shown {
    pub(super) fn new<T: Serialize>(value: &T, text: String, ok: bool) -> Self {
        Shown {
            json: serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
            text,
            ok,
        }
    }
}

pub(super) fn client(op: &OpArgs) -> Result<Client, ClientError> {
    let config = crate::config::HubConfig::load(op.config.as_deref())
        .map_err(|e| ClientError::NoEndpoint(e.to_string()))?;
    let data_dir = op.data_dir.as_ref().unwrap_or(&config.data_dir);
    let endpoint =
        crate::operator::find_endpoint(op.hub.as_deref(), data_dir, &config.listen.operator)?;
    let client = Client::new(endpoint, Duration::from_millis(op.hub_timeout_ms))
        .max_message(config.net.max_message_bytes);
    let no_key = |e: fleetmq_net::keys::KeyError| ClientError::NoEndpoint(e.to_string());
    match (&op.hub_key, &op.operator_keys) {
        (None, None) => Ok(client),
        (Some(server), Some(dir)) => {
            let server = fleetmq_net::keys::key_or_file(server).map_err(no_key)?;
            let (secret, public) = fleetmq_net::keys::paths(dir, "operator");
            let ours = fleetmq_net::keys::KeyPair {
                secret: fleetmq_net::keys::read_secret(&secret).map_err(no_key)?,
                public: fleetmq_net::keys::read(&public).map_err(no_key)?,
            };
            Ok(client.curve(server, ours))
        }
        _ => Err(ClientError::NoEndpoint(
            "a remote operator socket needs both --hub-key (the hub's public key) and --operator-keys (the directory of your operator.key, from `fleetmq-hub keygen --operator`)".into(),
        )),
    }
}

/// A client for the hub, or `None` after telling the operator why not.
pub(super) fn connect(op: &OpArgs) -> Option<Client> {
    match client(op) {
        Ok(c) => Some(c),
        Err(e) => {
            print_error(op, &e);
            None
        }
    }
}

pub(super) fn print_error(op: &OpArgs, e: &ClientError) {
    if op.json {
        println!("{}", serde_json::json!({ "error": e.to_string() }));
    }
    eprintln!("error: {e}");
}

pub(super) fn operate(
    op: &OpArgs,
    request: Request,
    extra: Duration,
    show: impl FnOnce(Response) -> Option<Shown>,
) -> anyhow::Result<ExitCode> {
    let answer = client(op).and_then(|mut c| c.call(request, extra));
    let response = match answer {
        Ok(r) => r,
        Err(e) => {
            print_error(op, &e);
            return Ok(ExitCode::FAILURE);
        }
    };
    let Some(shown) = show(response) else {
        anyhow::bail!("the hub answered with the wrong kind of response");
    };
    if op.json {
        println!("{}", shown.json);
    } else {
        print!("{}", shown.text);
    }
    Ok(if shown.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// How often --follow asks for new rows when the last read found none.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Prints rows read after a cursor, oldest first; with `keep_going`, keeps
/// reading new ones until interrupted.
pub(super) fn follow<R: Serialize>(
    op: &OpArgs,
    mut after: i64,
    keep_going: bool,
    query: impl Fn(i64) -> Request,
    rows_of: fn(Response) -> Option<Vec<R>>,
    id_of: fn(&R) -> i64,
    human: fn(&R) -> String,
) -> anyhow::Result<ExitCode> {
    let Some(mut c) = connect(op) else {
        return Ok(ExitCode::FAILURE);
    };
    loop {
        let rows = match c.call(query(after), Duration::ZERO) {
            Ok(r) => rows_of(r).context("the hub answered with the wrong kind of response")?,
            Err(e) => {
                print_error(op, &e);
                return Ok(ExitCode::FAILURE);
            }
        };
        for row in &rows {
            if op.json {
                println!("{}", serde_json::to_string(row)?);
            } else {
                println!("{}", human(row));
            }
            after = id_of(row);
        }
        if !keep_going {
            return Ok(ExitCode::SUCCESS);
        }
        if rows.is_empty() {
            std::thread::sleep(FOLLOW_EVERY);
        }
    }
}

pub(super) fn telemetry(a: TelemetryArgs) -> anyhow::Result<ExitCode> {
    let query = |after_id| {
        Request::Telemetry(TelemetryQuery {
            device: a.device.clone(),
            name: a.name.clone(),
            after_id,
            limit: a.limit,
        })
    };
    let rows_of = |r| match r {
        Response::Telemetry(rows) => Some(rows),
        _ => None,
    };
    follow(
        &a.op,
        a.after,
        a.follow,
        query,
        rows_of,
        |r| r.id,
        format::fmt_telemetry,
    )
}

pub(super) fn chat(a: ChatArgs) -> anyhow::Result<ExitCode> {
    let query = |after_id| {
        Request::Chat(ChatQuery {
            after_id,
            limit: a.limit,
        })
    };
    let rows_of = |r| match r {
        Response::Chat(rows) => Some(rows),
        _ => None,
    };
    follow(
        &a.op,
        0,
        a.follow,
        query,
        rows_of,
        |r| r.id,
        format::fmt_chat,
    )
}

pub(super) fn submit_job(a: SubmitArgs) -> anyhow::Result<ExitCode> {
    let spec = match a.kind {
        JobKind::Echo => JobSpec::Echo {
            text: a.args.join(" "),
        },
        JobKind::Exec => {
            let Some((program, args)) = a.args.split_first() else {
                anyhow::bail!(
                    "exec needs a program: fleetmq-hub job submit exec PROGRAM [ARGS...]"
                );
            };
            JobSpec::Exec {
                program: program.clone(),
                args: args.to_vec(),
            }
        }
    };
    let req = Request::SubmitJob(JobSubmission {
        spec,
        timeout_ms: a.timeout_ms,
        lease_ms: a.lease_ms,
        max_attempts: a.max_attempts,
    });
    let Some(mut c) = connect(&a.op) else {
        return Ok(ExitCode::FAILURE);
    };
    let id = match c.call(req, Duration::ZERO) {
        Ok(Response::JobSubmitted { id }) => id,
        Ok(_) => anyhow::bail!("the hub answered with the wrong kind of response"),
        Err(e) => {
            print_error(&a.op, &e);
            return Ok(ExitCode::FAILURE);
        }
    };
    if a.wait {
        return show_job(&a.op, id, Some(a.wait_ms));
    }
    if a.op.json {
        println!("{}", serde_json::json!({ "id": id }));
    } else {
        println!("job {id} queued");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn show_job(op: &OpArgs, id: u64, wait_ms: Option<u64>) -> anyhow::Result<ExitCode> {
    let Some(mut c) = connect(op) else {
        return Ok(ExitCode::FAILURE);
    };
    let deadline = wait_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut pause = Duration::from_millis(50);
    loop {
        let job = match c.call(Request::Job { id }, Duration::ZERO) {
            Ok(Response::Job(j)) => j,
            Ok(_) => anyhow::bail!("the hub answered with the wrong kind of response"),
            Err(e) => {
                print_error(op, &e);
                return Ok(ExitCode::FAILURE);
            }
        };
        let finished = matches!(job.state, JobState::Done | JobState::Failed);
        if finished || deadline.is_none_or(|d| Instant::now() >= d) {
            let (text, ok) = format::fmt_job(&job);
            if op.json {
                println!("{}", serde_json::to_string(&job)?);
            } else {
                print!("{text}");
            }
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}
