//! How operator answers look as JSON, for the command line's `--json` and
//! the HTTP API alike: kinds, states and outcomes in plain words
//! (`"kind": "exec"`, `"state": "refused"`), never the wire format's enum
//! wrappers. The words are the ones the human text uses.

use fleetmq_protocol::{
    ChatRow, Command, CommandInfo, ConfigState, ConfigView, DeviceInfo, FleetAnswer,
    FleetCommandInfo, JobInfo, JobRun, JobSpec, JobState, LogRow, Outcome, Reply, TelemetryRow,
};
use serde_json::{Value, json};

/// Where a job stands, in one word: `queued`, `running`, `done` (it ran
/// and exited 0), `failed` (it ran and exited otherwise, could not start,
/// or ran out of attempts), `timed_out`, or `refused` (the device does not
/// allow or know it). A job aimed at devices is `queued` until a run
/// starts, `running` while any run waits or runs, then `done` if every
/// run was, else `failed`.
pub fn job_state(j: &JobInfo) -> &'static str {
    if j.runs.is_empty() {
        return state_word(&j.state, j.outcome.as_ref());
    }
    let words: Vec<&str> = j.runs.iter().map(run_state).collect();
    if words.iter().all(|w| *w == "waiting") {
        "queued"
    } else if words.iter().any(|w| matches!(*w, "waiting" | "running")) {
        "running"
    } else if words.iter().all(|w| *w == "done") {
        "done"
    } else {
        "failed"
    }
}

/// Where a run on one device stands: as [`job_state`] says of a job, but
/// `waiting` (for its device) rather than `queued`.
pub fn run_state(r: &JobRun) -> &'static str {
    match state_word(&r.state, r.outcome.as_ref()) {
        "queued" => "waiting",
        other => other,
    }
}

fn state_word(state: &JobState, outcome: Option<&Outcome>) -> &'static str {
    match (state, outcome) {
        (JobState::Queued, _) => "queued",
        (JobState::Leased, _) => "running",
        (JobState::Failed, _) => "failed",
        (JobState::Done, Some(o)) => match o {
            Outcome::Completed(out) if out.exit_code == Some(0) => "done",
            Outcome::TimedOut(_) => "timed_out",
            Outcome::NotAllowed(_) | Outcome::Unknown(_) => "refused",
            Outcome::Completed(_) | Outcome::AlreadyRun | Outcome::Failed(_) => "failed",
        },
        (JobState::Done, None) => "done",
    }
}

/// How a job or command ended, in one word.
pub fn outcome_word(o: &Outcome) -> &'static str {
    match o {
        Outcome::Completed(_) => "completed",
        Outcome::TimedOut(_) => "timed_out",
        Outcome::NotAllowed(_) => "not_allowed",
        Outcome::Unknown(_) => "unknown",
        Outcome::AlreadyRun => "already_run",
        Outcome::Failed(_) => "failed",
    }
}

/// A job's work: `{"kind": "echo", "text"}` or `{"kind": "exec", "program", "args"}`.
pub fn spec(s: &JobSpec) -> Value {
    match s {
        JobSpec::Echo { text } => json!({ "kind": "echo", "text": text }),
        JobSpec::Exec { program, args } => {
            json!({ "kind": "exec", "program": program, "args": args })
        }
    }
}

/// A command: `{"kind": "ping" | "status" | "exec" | NAME, ...}`.
pub fn command(c: &Command) -> Value {
    match c {
        Command::Ping => json!({ "kind": "ping" }),
        Command::Status => json!({ "kind": "status" }),
        Command::Exec {
            program,
            args,
            timeout_ms,
        } => json!({ "kind": "exec", "program": program, "args": args, "timeout_ms": timeout_ms }),
        Command::Other { name, args } => json!({ "kind": name, "args": args }),
    }
}

/// An outcome: `{"result": WORD, ...}` with the output of a program that
/// ran, or `detail` saying what was refused or why it could not start.
pub fn outcome(o: &Outcome) -> Value {
    let mut v = json!({ "result": outcome_word(o) });
    match o {
        Outcome::Completed(out) | Outcome::TimedOut(out) => {
            v["exit_code"] = json!(out.exit_code);
            v["stdout"] = json!(out.stdout);
            v["stderr"] = json!(out.stderr);
            v["truncated"] = json!(out.truncated);
            v["duration_ms"] = json!(out.duration_ms);
        }
        Outcome::NotAllowed(what) | Outcome::Unknown(what) | Outcome::Failed(what) => {
            v["detail"] = json!(what);
        }
        Outcome::AlreadyRun => {}
    }
    v
}

/// A device's answer to a command: `{"device", "ok", "result": "pong" |
/// "status" | an outcome's word, ...}`.
pub fn reply(device: &str, r: &Reply) -> Value {
    let mut v = answer(r);
    v["device"] = json!(device);
    v
}

/// A reply without the device: `{"ok", "result", ...}`.
fn answer(r: &Reply) -> Value {
    let mut v = match r {
        Reply::Pong { uptime_ms } => json!({ "result": "pong", "uptime_ms": uptime_ms }),
        Reply::Status(s) => json!({ "result": "status", "status": s }),
        Reply::Outcome(o) => outcome(o),
    };
    v["ok"] = json!(reply_ok(r));
    v
}

/// How many runs of an aimed job stand where: `{"done": 2, "waiting": 1}`.
pub fn summary(j: &JobInfo) -> serde_json::Map<String, Value> {
    let mut counts = serde_json::Map::new();
    for r in &j.runs {
        let n = counts.entry(run_state(r)).or_insert(json!(0));
        *n = json!(n.as_u64().unwrap_or(0) + 1);
    }
    counts
}

/// A job and its result.
pub fn job(j: &JobInfo) -> Value {
    let runs: Vec<Value> = j
        .runs
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "device": r.device,
                "state": run_state(r),
                "attempts": r.attempts,
                "updated_ms": r.updated_ms,
                "outcome": r.outcome.as_ref().map(outcome),
                "error": r.error,
            })
        })
        .collect();
    let mut v = job_fields(j);
    v["target"] = json!(j.target);
    if !j.runs.is_empty() {
        v["summary"] = Value::Object(summary(j));
        v["runs"] = json!(runs);
    }
    v
}

fn job_fields(j: &JobInfo) -> Value {
    json!({
        "id": j.id,
        "state": job_state(j),
        "work": spec(&j.spec),
        "attempts": j.attempts,
        "max_attempts": j.max_attempts,
        "timeout_ms": j.timeout_ms,
        "lease_ms": j.lease_ms,
        "created_ms": j.created_ms,
        "updated_ms": j.updated_ms,
        "device": j.device,
        "outcome": j.outcome.as_ref().map(outcome),
        "error": j.error,
    })
}

/// A command log entry, its command and answer read back from the log's
/// JSON into the same words.
pub fn command_info(c: &CommandInfo) -> Value {
    let command_view = serde_json::from_str::<Command>(&c.command)
        .map(|cmd| command(&cmd))
        .unwrap_or_else(|_| json!({ "kind": "unknown", "text": c.command }));
    let result = c
        .result
        .as_deref()
        .map(|r| match serde_json::from_str::<Reply>(r) {
            Ok(reply) => answer(&reply),
            // "timed out", or what an older hub wrote.
            Err(_) => json!({ "result": r.replace(' ', "_"), "ok": false }),
        });
    json!({
        "id": c.id,
        "device": c.device,
        "command": command_view,
        "sent_ms": c.sent_ms,
        "ended_ms": c.ended_ms,
        "answer": result,
    })
}

/// Whether a reply is a success: a pong, a status, a program that exited 0.
pub fn reply_ok(r: &Reply) -> bool {
    match r {
        Reply::Pong { .. } | Reply::Status(_) => true,
        Reply::Outcome(Outcome::Completed(o)) => o.exit_code == Some(0),
        Reply::Outcome(_) => false,
    }
}

/// Where a fleet command stands on one device: `{"device", "state",
/// "error", ...}` and, once answered, the answer's fields.
pub fn fleet_answer(a: &FleetAnswer) -> Value {
    let mut v = match &a.reply {
        Some(r) => answer(r),
        None => json!({}),
    };
    v["device"] = json!(a.device);
    v["state"] = json!(a.state);
    v["error"] = json!(a.error);
    v["ended_ms"] = json!(a.ended_ms);
    v
}

/// A command for many devices: `{"id", "command", "target", "created_ms",
/// "expires_ms", "shares": {STATE: N, ...}}`.
pub fn fleet_command(c: &FleetCommandInfo) -> Value {
    let shares: serde_json::Map<String, Value> = (c.states.iter())
        .map(|(state, n)| (state.clone(), json!(n)))
        .collect();
    json!({
        "id": c.id,
        "command": command(&c.command),
        "target": c.target,
        "created_ms": c.created_ms,
        "expires_ms": c.expires_ms,
        "shares": shares,
    })
}

/// Where a device's configuration stands: `in_sync`, `pending` (a newer
/// change has not been applied yet) or `failed` (keys refused).
pub fn config_state(desired: u64, applied: u64, errors: &[(String, String)]) -> &'static str {
    if !errors.is_empty() {
        "failed"
    } else if applied < desired {
        "pending"
    } else {
        "in_sync"
    }
}

fn errors_map(errors: &[(String, String)]) -> Value {
    Value::Object(errors.iter().map(|(k, e)| (k.clone(), json!(e))).collect())
}

/// One device's configuration: entries as `{key, value, layer}`.
pub fn config_view(v: &ConfigView) -> Value {
    json!({
        "device": v.device,
        "version": v.version,
        "desired_version": v.desired_version,
        "applied_version": v.applied_version,
        "state": config_state(v.desired_version, v.applied_version, &v.errors),
        "entries": v.entries.iter().map(|(k, val, l)| json!({"key": k, "value": val, "layer": l})).collect::<Vec<_>>(),
        "errors": errors_map(&v.errors),
    })
}

/// Every device's configuration state, and each group's counts.
pub fn config_status(s: &[ConfigState]) -> Value {
    let mut groups: std::collections::BTreeMap<&str, serde_json::Map<String, Value>> =
        Default::default();
    let devices: Vec<Value> = s
        .iter()
        .map(|d| {
            let state = config_state(d.desired_version, d.applied_version, &d.errors);
            for g in &d.groups {
                let counts = groups.entry(g).or_insert_with(|| {
                    ["in_sync", "pending", "failed"]
                        .iter()
                        .map(|k| (k.to_string(), json!(0)))
                        .collect()
                });
                let n = counts[state].as_u64().unwrap_or(0);
                counts.insert(state.into(), json!(n + 1));
            }
            json!({
                "device": d.device,
                "groups": d.groups,
                "desired_version": d.desired_version,
                "applied_version": d.applied_version,
                "state": state,
                "errors": errors_map(&d.errors),
            })
        })
        .collect();
    json!({ "devices": devices, "groups": groups })
}

/// A device's state in one word: `online`, `offline`, `revoked`.
pub fn device_state(d: &DeviceInfo) -> &'static str {
    match (d.revoked, d.online) {
        (true, _) => "revoked",
        (false, true) => "online",
        (false, false) => "offline",
    }
}

/// A device as the hub knows it, with its state in a word.
pub fn device(d: &DeviceInfo) -> Value {
    let mut v = json!(d);
    v["state"] = json!(device_state(d));
    v
}

/// One stored sample: already plain.
pub fn sample(r: &TelemetryRow) -> Value {
    json!(r)
}

/// One log line: already plain.
pub fn log_line(r: &LogRow) -> Value {
    json!(r)
}

/// One chat line: already plain.
pub fn chat(r: &ChatRow) -> Value {
    json!(r)
}
