//! What the page may do, with the admin token only (`POST`, a JSON body):
//! ping or command a device, a group or the fleet, submit a job, cancel
//! a job or a command for many devices, make an announcement, set or
//! unset keys of the desired configuration, forget a decommissioned
//! device. Each becomes
//! the operator request the command line would
//! send, and its answer comes back as the command line's `--json` has it.

use std::collections::BTreeMap;
use std::time::Duration;

use fleetmq_protocol::{
    Command, ConfigEdit, FleetCommand, JobSpec, JobSubmission, Request, Response, Target,
};
use serde::Deserialize;
use serde_json::json;

use super::{Answer, failed, json};
use crate::operator::{Client, views};

/// Largest request body taken.
pub const MAX_BODY: usize = 64 * 1024;

/// An action's body: whom it is for (exactly one of `device`, `group`,
/// `all`), and what: `name` and `args` for a command, `kind` (`echo` with
/// `text`, `exec` with `program` and `args`) for a job, `text` for an
/// announcement, `set` and `unset` (and, as `config set` takes them,
/// `if_version` and `force`) for the layer of the desired configuration
/// it names.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    all: bool,
    /// Filters on what the devices are (`model~zero`): for a command or
    /// a job to a group or the fleet (alone: the fleet).
    #[serde(default, rename = "where")]
    matching: Vec<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    text: String,
    #[serde(default)]
    program: String,
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    unset: Vec<String>,
    #[serde(default)]
    if_version: u64,
    #[serde(default)]
    force: bool,
}

/// `POST /api/job/cancel`'s and `/api/command/cancel`'s body: the job,
/// or the command for many devices.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cancel {
    id: u64,
}

/// `POST /api/forget`'s body: the device.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Forget {
    device: String,
}

/// `POST /api/enrol`'s body: the device and its key, as `fleetmq-hub
/// allow` takes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Enrol {
    device: String,
    public_key: String,
}

/// `POST /api/revoke`'s body: the device, and only this key of it if
/// given, as `fleetmq-hub revoke` takes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    device: String,
    #[serde(default)]
    public_key: Option<String>,
}

fn bad(why: impl std::fmt::Display) -> Answer {
    (400, "text/plain", format!("{why}\n"))
}

impl Body {
    /// Exactly one of device, group, all; or `where` alone, or with a
    /// group or all, for `action`s that take it.
    fn check(&self, action: Action) -> Result<(), Answer> {
        let named = usize::from(self.device.is_some())
            + usize::from(self.group.is_some())
            + usize::from(self.all);
        if self.matching.is_empty() && named != 1 {
            return Err(bad(
                "name exactly one of \"device\", \"group\" or \"all\": true",
            ));
        }
        if self.matching.is_empty() {
            return Ok(());
        }
        if !matches!(action, Action::Command | Action::Job) {
            return Err(bad("\"where\" narrows a command or a job only"));
        }
        if self.device.is_some() || named > 1 {
            return Err(bad(
                "\"where\" narrows \"group\" or \"all\": true (alone: the fleet), not \"device\"",
            ));
        }
        Ok(())
    }
}

fn command_of(name: &str, args: &[String]) -> Result<Command, Answer> {
    Ok(match name {
        "ping" => Command::Ping,
        "status" => Command::Status,
        "exec" => {
            let Some((program, args)) = args.split_first() else {
                return Err(bad("exec needs a program: \"args\": [\"PROGRAM\", ...]"));
            };
            Command::Exec {
                program: program.clone(),
                args: args.to_vec(),
                timeout_ms: 0,
            }
        }
        "" => return Err(bad("a command needs a \"name\": ping, status, exec, ...")),
        other => Command::Other {
            name: other.to_string(),
            args: args.to_vec(),
        },
    })
}

/// Answers one `POST path` with `body`.
pub fn act(hub: &mut Client, path: &str, body: &[u8]) -> Answer {
    let action = match path {
        "/api/command" => Action::Command,
        "/api/job" => Action::Job,
        "/api/broadcast" => Action::Broadcast,
        "/api/job/cancel" => {
            let job = |id| Request::CancelJob { id };
            return cancel(hub, path, body, job).unwrap_or_else(|a| a);
        }
        "/api/command/cancel" => {
            let command = |id| Request::CancelCommand { id };
            return cancel(hub, path, body, command).unwrap_or_else(|a| a);
        }
        "/api/forget" => return forget(hub, body).unwrap_or_else(|a| a),
        "/api/enrol" => return enrol(hub, body).unwrap_or_else(|a| a),
        "/api/revoke" => return revoke(hub, body).unwrap_or_else(|a| a),
        "/api/config" => Action::Config,
        _ => {
            return (
                404,
                "text/plain",
                "not found; POST /api/command, /api/job, /api/job/cancel, \
                 /api/command/cancel, /api/broadcast, /api/config, /api/forget, /api/enrol or /api/revoke\n"
                    .into(),
            );
        }
    };
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => action.run(b, hub).unwrap_or_else(|a| a),
        Err(e) => bad(format!("{path}: the body is not what it takes: {e}")),
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Command,
    Job,
    Broadcast,
    Config,
}

impl Action {
    fn run(self, b: Body, hub: &mut Client) -> Result<Answer, Answer> {
        b.check(self)?;
        match self {
            Action::Command => {
                let c = b;
                let command = command_of(&c.name, &c.args)?;
                if let Some(device) = c.device {
                    let request = Request::Command {
                        device: device.clone(),
                        command,
                        timeout_ms: 0,
                    };
                    // The hub's own time limit for commands, and some.
                    return Ok(
                        match hub.call(request, Duration::from_secs(30)).map_err(failed)? {
                            Response::Reply { device, reply } => {
                                json(&views::reply(&device, &reply))
                            }
                            other => unexpected(&other),
                        },
                    );
                }
                let fc = FleetCommand {
                    command,
                    devices: Vec::new(),
                    groups: c.group.into_iter().collect(),
                    all: c.all,
                    timeout_ms: 0,
                    ttl_ms: 0,
                    matching: c.matching,
                };
                Ok(
                    match hub
                        .call(Request::FleetCommand(fc), Duration::ZERO)
                        .map_err(failed)?
                    {
                        Response::FleetCommandQueued { id, devices } => {
                            json(&json!({ "id": id, "devices": devices }))
                        }
                        other => unexpected(&other),
                    },
                )
            }
            Action::Job => {
                let j = b;
                let spec = match j.kind.as_str() {
                    "echo" => JobSpec::Echo { text: j.text },
                    "exec" if !j.program.is_empty() => JobSpec::Exec {
                        program: j.program,
                        args: j.args,
                    },
                    "exec" => return Err(bad("an exec job needs a \"program\"")),
                    other => return Err(bad(format!("{other:?}: a job is \"echo\" or \"exec\""))),
                };
                let job = JobSubmission {
                    spec,
                    timeout_ms: 0,
                    lease_ms: 0,
                    max_attempts: 0,
                    devices: j.device.into_iter().collect(),
                    groups: j.group.into_iter().collect(),
                    all: j.all,
                    ttl_ms: 0,
                    matching: j.matching,
                };
                Ok(
                    match hub
                        .call(Request::SubmitJob(job), Duration::ZERO)
                        .map_err(failed)?
                    {
                        Response::JobSubmitted { id } => json(&json!({ "id": id })),
                        other => unexpected(&other),
                    },
                )
            }
            Action::Broadcast => {
                let target = match (b.device, b.group) {
                    (Some(d), _) => Target::Device(d),
                    (None, Some(g)) => Target::Group(g),
                    (None, None) => Target::All,
                };
                let request = Request::Broadcast {
                    target,
                    text: b.text,
                };
                Ok(match hub.call(request, Duration::ZERO).map_err(failed)? {
                    Response::Broadcast { topic } => json(&json!({ "topic": topic })),
                    other => unexpected(&other),
                })
            }
            Action::Config => config_edit(hub, b),
        }
    }
}

/// Cancels the job (`/api/job/cancel`) or the command for many devices
/// (`/api/command/cancel`) a `{"id": N}` body names, answered as `job
/// cancel --json` or `command --cancel --json` is.
fn cancel(
    hub: &mut Client,
    path: &str,
    body: &[u8],
    request: impl FnOnce(u64) -> Request,
) -> Result<Answer, Answer> {
    let Cancel { id } = serde_json::from_slice(body)
        .map_err(|e| bad(format!("{path} takes {{\"id\": ID}}: {e}")))?;
    Ok(
        match hub.call(request(id), Duration::ZERO).map_err(failed)? {
            Response::JobCancelled { stopped, running } => {
                json(&json!({ "id": id, "stopped": stopped, "running": running }))
            }
            Response::CommandCancelled { stopped, sent } => {
                json(&json!({ "id": id, "stopped": stopped, "sent": sent }))
            }
            other => unexpected(&other),
        },
    )
}

/// Forgets the device a `{"device": ID}` body names, answered as `forget
/// --json` is.
fn forget(hub: &mut Client, body: &[u8]) -> Result<Answer, Answer> {
    let Forget { device } = serde_json::from_slice(body)
        .map_err(|e| bad(format!("/api/forget takes {{\"device\": ID}}: {e}")))?;
    let request = Request::Forget {
        device: device.clone(),
    };
    Ok(match hub.call(request, Duration::ZERO).map_err(failed)? {
        Response::Forgotten { runs, shares } => {
            json(&json!({ "device": device, "runs": runs, "shares": shares }))
        }
        other => unexpected(&other),
    })
}

/// Enrols the device a `{"device": ID, "public_key": KEY}` body names,
/// answered as `allow --json` is (`result`: `enrolled`,
/// `enrolled_another_key` or `already_enrolled`).
fn enrol(hub: &mut Client, body: &[u8]) -> Result<Answer, Answer> {
    let Enrol { device, public_key } = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "/api/enrol takes {{\"device\": ID, \"public_key\": KEY}}: {e}"
        ))
    })?;
    let request = Request::Enrol(fleetmq_protocol::Enrolment {
        device: device.clone(),
        public_key,
    });
    Ok(match hub.call(request, Duration::ZERO).map_err(failed)? {
        Response::Enrolled { result } => json(&json!({ "device": device, "result": result })),
        other => unexpected(&other),
    })
}

/// Revokes the device a `{"device": ID}` body names (every key), or one
/// key of it (`"public_key": KEY`), answered as `revoke --json` is.
fn revoke(hub: &mut Client, body: &[u8]) -> Result<Answer, Answer> {
    let Revoke { device, public_key } = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "/api/revoke takes {{\"device\": ID}} or {{\"device\": ID, \"public_key\": KEY}}: {e}"
        ))
    })?;
    let request = Request::Revoke(fleetmq_protocol::Revocation {
        device: device.clone(),
        public_key,
    });
    Ok(match hub.call(request, Duration::ZERO).map_err(failed)? {
        Response::Revoked { removed_keys } => {
            json(&json!({ "device": device, "removed_keys": removed_keys }))
        }
        other => unexpected(&other),
    })
}

/// Sets and unsets keys of the layer of the desired configuration `c`
/// names, as `config set` and `config unset` do, answered as their
/// `--json` is.
fn config_edit(hub: &mut Client, c: Body) -> Result<Answer, Answer> {
    if c.set.is_empty() && c.unset.is_empty() {
        return Err(bad(
            "give keys to \"set\" ({KEY: VALUE}) or to \"unset\" ([KEY])",
        ));
    }
    if !c.force
        && let Some(why) = crate::operator::unknown_config_key(c.set.keys().map(String::as_str))
    {
        return Err(bad(format!("{why} with \"force\": true")));
    }
    let layer = match (c.device, c.group) {
        (Some(d), _) => format!("device:{d}"),
        (None, Some(g)) => format!("group:{g}"),
        (None, None) => "fleet".to_string(),
    };
    let request = Request::ConfigEdit(ConfigEdit {
        layer: layer.clone(),
        set: c.set.into_iter().collect(),
        unset: c.unset,
        if_version: c.if_version,
    });
    Ok(match hub.call(request, Duration::ZERO).map_err(failed)? {
        Response::ConfigVersion { version } => json(&json!({ "version": version, "layer": layer })),
        other => unexpected(&other),
    })
}

fn unexpected(r: &Response) -> Answer {
    (500, "text/plain", format!("unexpected answer: {r:?}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_name_one_target_and_a_command_or_job_that_makes_sense() {
        let body = |text: &str| serde_json::from_str::<Body>(text).unwrap();
        let aim = body(r#"{"group": "north", "name": "ping"}"#);
        assert!(aim.check(Action::Command).is_ok());
        let both = body(r#"{"device": "a", "all": true}"#);
        assert!(both.check(Action::Command).is_err());
        assert!(Body::default().check(Action::Command).is_err());
        // Filters narrow a group or the fleet, for commands and jobs.
        let zeros = r#"{"where": ["model~zero"], "name": "ping"}"#;
        assert!(body(zeros).check(Action::Command).is_ok());
        assert!(body(zeros).check(Action::Job).is_ok());
        assert_eq!(body(zeros).matching, ["model~zero"]);
        let north = r#"{"group": "north", "where": ["os~bullseye"]}"#;
        assert!(body(north).check(Action::Job).is_ok());
        let why = |text: &str, action| body(text).check(action).unwrap_err().2;
        assert!(why(north, Action::Broadcast).contains("narrows a command or a job only"));
        let one = r#"{"device": "a", "where": ["os~bullseye"]}"#;
        assert!(why(one, Action::Command).contains("not \"device\""));
        assert!(serde_json::from_str::<Body>(r#"{"all": true, "name": "ping", "x": 1}"#).is_err());
        assert_eq!(command_of("ping", &[]).unwrap(), Command::Ping);
        assert!(command_of("exec", &[]).is_err());
        let edit: Body =
            serde_json::from_str(r#"{"group": "north", "set": {"app.a": "1"}}"#).unwrap();
        assert!(edit.check(Action::Config).is_ok());
        assert_eq!(
            (edit.set.len(), edit.unset.len(), edit.force),
            (1, 0, false)
        );
        let typo = r#"{"all": true, "sett": {"app.a": "1"}}"#;
        assert!(serde_json::from_str::<Body>(typo).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"all": true, "set": {"a": 1}}"#).is_err());
        assert_eq!(
            crate::operator::unknown_config_key(["app.a", "host.interval_ms"].into_iter()),
            None
        );
        let why = crate::operator::unknown_config_key(["app.a", "host.intervl_ms"].into_iter());
        assert!(why.is_some_and(|w| w.starts_with("\"host.intervl_ms\" is not a key")));
        assert_eq!(
            command_of("exec", &["uname".into(), "-a".into()]).unwrap(),
            Command::Exec {
                program: "uname".into(),
                args: vec!["-a".into()],
                timeout_ms: 0
            }
        );
    }
}
