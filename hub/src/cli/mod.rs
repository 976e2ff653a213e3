//! The `fleetmq-hub` command line: `run` serves the fleet ([`crate::driver`]);
//! the enrolment subcommands edit the allow list file; `backup` copies the
//! data directory ([`crate::backup`]); every other
//! subcommand talks to a running hub through its operator socket (found with
//! `--hub`, or from the `endpoints.json` the hub wrote into its
//! `--data-dir`).
//!
//! `args.rs` holds the words (clap); `hub.rs` starts the hub and finds the
//! allow list; `ask.rs` asks a running hub and prints the answer (`work.rs`: jobs, and
//! commands for many devices).

mod args;
mod ask;
mod console;
mod enrol;
mod hub;
mod work;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fleetmq_protocol::{Command, Request, Response, Target};

use crate::config::{self};
use crate::operator::{format, views};
use args::*;
use ask::{Exit, Shown, chat, logs, operate, telemetry};
use hub::{allow_list, check_config, run_hub};
use work::{show_job, submit_job};

/// Parses the command line and runs it: the whole of `fleetmq-hub`.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(options_after_the_subcommand(std::env::args_os().collect()));
    if !matches!(cli.command, Cmd::Run(_)) {
        // An operator command piped into `head` ends quietly when the pipe
        // closes, as Unix tools do, instead of panicking in println!. The
        // server keeps Rust's default: a connection that closes is an
        // error to handle, not a reason to stop.
        // SAFETY: signal(2) with the default disposition, before any
        // thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Err(e) = fleetmq_net::logging::init(&cli.log) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            // Each cause once: many of ours name their cause in their own
            // message, which anyhow's `{:#}` would print again.
            eprintln!("error: {}", fleetmq_net::error_chain(&*e));
            if e.downcast_ref::<Usage>().is_some() {
                Exit::Usage.into()
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs one subcommand.
fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Run(args) => run_hub(args).map(|()| ExitCode::SUCCESS),
        Cmd::CheckConfig(args) => check_config(args).map(|()| ExitCode::SUCCESS),
        Cmd::PrintConfig => {
            print!("{}", config::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Keygen(KeygenArgs {
            data_dir,
            force,
            operator: Some(name),
            json,
        }) => {
            fleetmq_protocol::validate_operator_name(&name)
                .map_err(|e| usage(&format!("--operator: {e}")))?;
            let pair = fleetmq_net::keys::generate()?;
            let (secret, public) = fleetmq_net::keys::write(&data_dir, "operator", &pair, force)?;
            say(
                json,
                serde_json::json!({
                    "operator": name,
                    "secret_key_file": secret,
                    "public_key_file": public,
                    "public_key": pair.public,
                }),
                format!(
                    "secret key: {} (mode 0600; it never leaves this machine)\npublic key: {}\n\
                     on the hub, add the line for the role you give to its operator allow list (applied at once):\n\
                     echo '{name} read {}' >> DATA_DIR/allowed_operators\n\
                     echo '{name} admin {}' >> DATA_DIR/allowed_operators\n\
                     then: fleetmq-hub devices --hub tcp://HUB:PORT --hub-key HUB_PUBLIC_KEY --operator-keys {}\n",
                    secret.display(),
                    public.display(),
                    pair.public,
                    pair.public,
                    data_dir.display()
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Keygen(a) => {
            let pair = fleetmq_net::keys::generate()?;
            let (secret, public) = fleetmq_net::keys::write(&a.data_dir, "hub", &pair, a.force)?;
            say(
                a.json,
                serde_json::json!({
                    "secret_key_file": secret,
                    "public_key_file": public,
                    "public_key": pair.public,
                }),
                format!(
                    "secret key: {} (mode 0600; it never leaves the hub)\npublic key: {}\n\
                     give every agent this line in its config (or the path of a copy of {}):\n\
                     hub_public_key = {}\n",
                    secret.display(),
                    public.display(),
                    public.display(),
                    fleetmq_net::keys::quoted(&pair.public)
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Allow(a) => enrol::allow(a),
        Cmd::Revoke(a) => enrol::revoke(a),
        Cmd::Forget(a) => {
            let device = a.device.clone();
            let request = Request::Forget {
                device: device.clone(),
            };
            operate(&a.op, request, Duration::ZERO, |r| match r {
                Response::Forgotten { runs, shares } => Some(Shown::new(
                    serde_json::json!({ "device": device, "runs": runs, "shares": shares }),
                    format::fmt_forgotten(&device, runs, shares),
                    true,
                )),
                _ => None,
            })
        }
        Cmd::Backup(a) => back_up(&a),
        Cmd::ConsoleUrl(a) => console::url(&a),
        Cmd::Devices(a) => {
            let filters = fleetmq_protocol::Matcher::parse_all(&a.matching)
                .map_err(|why| usage(&format!("--where: {why}")))?;
            operate(&a.op, Request::Devices, Duration::ZERO, |r| match r {
                Response::Devices(mut d) => {
                    d.retain(|d| {
                        device_matches(d, &a.state, &a.group)
                            && fleetmq_protocol::matching::matches_all(&filters, d)
                    });
                    let text = match a.facts {
                        true => format::fmt_inventory(&d),
                        false => format::fmt_devices(&d),
                    };
                    Some(Shown::new(
                        d.iter().map(views::device).collect(),
                        text,
                        true,
                    ))
                }
                _ => None,
            })
        }
        Cmd::Telemetry(a) => telemetry(a),
        Cmd::Logs(a) => logs(a),
        Cmd::Chat(a) => chat(a),
        Cmd::Command(a) => {
            if let Some(id) = a.answers {
                return work::fleet_answers(&a.op, id, None);
            }
            if let Some(limit) = a.list {
                return operate(
                    &a.op,
                    Request::FleetCommands { limit },
                    Duration::ZERO,
                    |r| match r {
                        Response::FleetCommands(list) => Some(Shown::new(
                            list.iter().map(views::fleet_command).collect(),
                            format::fmt_fleet_commands(&list),
                            true,
                        )),
                        _ => None,
                    },
                );
            }
            if let Some(id) = a.cancel {
                return operate(
                    &a.op,
                    Request::CancelCommand { id },
                    Duration::ZERO,
                    |r| match r {
                        Response::CommandCancelled { stopped, sent } => Some(Shown::new(
                            serde_json::json!({ "id": id, "stopped": stopped, "sent": sent }),
                            format::fmt_command_cancelled(id, stopped, sent),
                            stopped + sent > 0,
                        )),
                        _ => None,
                    },
                );
            }
            let (device, name, args) = match (a.aim.aimed(), a.words.as_slice()) {
                (true, [name, args @ ..]) => (None, name, args),
                (false, [device, name, args @ ..]) => (Some(device), name, args),
                _ => {
                    return Err(usage(
                        "give DEVICE NAME [ARGS...], or NAME [ARGS...] with --device, --group or --all",
                    ));
                }
            };
            let command = match name.as_str() {
                "ping" => Command::Ping,
                "status" => Command::Status,
                "exec" => {
                    let Some((program, args)) = args.split_first() else {
                        return Err(usage(
                            "exec needs a program: fleetmq-hub command DEVICE exec PROGRAM [ARGS...]",
                        ));
                    };
                    Command::Exec {
                        program: program.clone(),
                        args: args.to_vec(),
                        // The hub sets the device's limit from how long it waits.
                        timeout_ms: 0,
                    }
                }
                other => Command::Other {
                    name: other.to_string(),
                    args: args.to_vec(),
                },
            };
            let Some(device) = device else {
                return work::fleet_command(&a, command);
            };
            let wait =
                Duration::from_millis(u64::from(a.timeout_ms.max(5_000)) + u64::from(a.queue_ms));
            let req = if a.queue_ms > 0 {
                Request::QueuedCommand {
                    device: device.clone(),
                    command,
                    timeout_ms: a.timeout_ms,
                    queue_ms: a.queue_ms,
                }
            } else {
                Request::Command {
                    device: device.clone(),
                    command,
                    timeout_ms: a.timeout_ms,
                }
            };
            operate(&a.op, req, wait, |r| match r {
                Response::Reply { device, reply } => {
                    let (text, ok) = format::fmt_reply(&device, &reply);
                    Some(Shown::new(views::reply(&device, &reply), text, ok))
                }
                _ => None,
            })
        }
        Cmd::Job(JobCmd::Submit(a)) => submit_job(a),
        Cmd::Job(JobCmd::Show(a)) => show_job(&a.op, a.id, a.wait.then_some(a.wait_ms)),
        Cmd::Job(JobCmd::List(a)) => operate(
            &a.op,
            Request::Jobs { limit: a.limit },
            Duration::ZERO,
            |r| match r {
                Response::Jobs(jobs) => Some(Shown::new(
                    jobs.iter().map(views::job).collect(),
                    format::fmt_jobs(&jobs),
                    true,
                )),
                _ => None,
            },
        ),
        Cmd::Job(JobCmd::Cancel(a)) => operate(
            &a.op,
            Request::CancelJob { id: a.id },
            Duration::ZERO,
            |r| match r {
                Response::JobCancelled { stopped, running } => Some(Shown::new(
                    serde_json::json!({ "id": a.id, "stopped": stopped, "running": running }),
                    format::fmt_cancelled(a.id, stopped, running),
                    stopped + running > 0,
                )),
                _ => None,
            },
        ),
        Cmd::Broadcast(a) => {
            let target = match (a.group, a.device) {
                (Some(g), _) => Target::Group(g),
                (None, Some(d)) => Target::Device(d),
                (None, None) => Target::All,
            };
            let req = Request::Broadcast {
                target,
                text: a.text.join(" "),
            };
            operate(&a.op, req, Duration::ZERO, |r| match r {
                Response::Broadcast { topic } => {
                    let text = format!("sent on {topic}\n");
                    Some(Shown::new(
                        serde_json::json!({ "topic": topic }),
                        text,
                        true,
                    ))
                }
                _ => None,
            })
        }
        Cmd::Config(ConfigCmd::Set(a)) => {
            let set = a
                .pairs
                .iter()
                .map(|p| {
                    p.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| usage(&format!("{p:?}: give KEY=VALUE")))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            if !a.force
                && let Some(why) =
                    crate::operator::unknown_config_key(set.iter().map(|(k, _)| k.as_str()))
            {
                return Err(usage(&format!("{why} with --force")));
            }
            ask::config_edit(&a.op, &a.layer, set, Vec::new())
        }
        Cmd::Config(ConfigCmd::Unset(a)) => {
            ask::config_edit(&a.op, &a.layer, Vec::new(), a.keys.clone())
        }
        Cmd::Config(ConfigCmd::Show(a)) => operate(
            &a.op,
            Request::ConfigShow {
                device: a.device.clone(),
            },
            Duration::ZERO,
            |r| match r {
                Response::ConfigShow(v) => Some(Shown::new(
                    views::config_view(&v),
                    format::fmt_config_view(&v),
                    true,
                )),
                _ => None,
            },
        ),
        Cmd::Config(ConfigCmd::Status(op)) => {
            operate(&op, Request::ConfigStatus, Duration::ZERO, |r| match r {
                Response::ConfigStatus(s) => Some(Shown::new(
                    views::config_status(&s),
                    format::fmt_config_status(&s),
                    true,
                )),
                _ => None,
            })
        }
        Cmd::Presence(a) => {
            let request = Request::PresenceLog {
                device: a.device.clone(),
                limit: a.limit,
            };
            operate(&a.op, request, Duration::ZERO, |r| match r {
                Response::PresenceLog(log) => Some(Shown::new(
                    serde_json::to_value(&log).unwrap_or_default(),
                    format::fmt_presence(&log),
                    true,
                )),
                _ => None,
            })
        }
        Cmd::Pending(op) => operate(&op, Request::Pending, Duration::ZERO, |r| match r {
            Response::Pending(keys) => Some(Shown::new(
                serde_json::to_value(&keys).unwrap_or_default(),
                format::fmt_pending(&keys),
                true,
            )),
            _ => None,
        }),
        Cmd::Audit(a) => {
            let request = Request::Audit { limit: a.limit };
            operate(&a.op, request, Duration::ZERO, |r| match r {
                Response::Audit(log) => Some(Shown::new(
                    serde_json::to_value(&log).unwrap_or_default(),
                    format::fmt_audit(&log),
                    true,
                )),
                _ => None,
            })
        }
        Cmd::Alerts(op) => operate(&op, Request::Alerts, Duration::ZERO, |r| match r {
            Response::Alerts(a) => Some(Shown::new(
                serde_json::to_value(&a).unwrap_or_default(),
                format::fmt_alerts(&a),
                true,
            )),
            _ => None,
        }),
        Cmd::Stats(op) => operate(&op, Request::Stats, Duration::ZERO, |r| match r {
            Response::Stats(s) => Some(Shown::new(
                serde_json::to_value(&s).unwrap_or_default(),
                format::fmt_stats(&s),
                true,
            )),
            _ => None,
        }),
    }
}

/// `backup`: the copy, and how to use it.
fn back_up(a: &BackupArgs) -> anyhow::Result<ExitCode> {
    let config = hub::config_at(&a.at)?;
    let made = match a.keep {
        Some(keep) => crate::backup::backup_keeping(&config, &a.to, keep, fleetmq_net::now_ms()),
        None => crate::backup::backup(&config, &a.to).map(crate::backup::Kept::alone),
    };
    let kept = match made {
        Ok(kept) => kept,
        Err(e) if e.is_usage() => return Err(usage(&e.to_string())),
        Err(e) => return Err(e.into()),
    };
    let done = &kept.backup;
    let mut text = format!(
        "backed up {} to {}:\n",
        config.data_dir.display(),
        done.dir.display()
    );
    for f in &done.files {
        text.push_str(&format!("  {:<20} {:>12} bytes\n", f.name, f.bytes));
    }
    text.push_str(&format!(
        "it is a data directory: `fleetmq-hub run --data-dir {}` serves from it\n",
        done.dir.display()
    ));
    for old in &kept.removed {
        text.push_str(&format!("removed the older backup {}\n", old.display()));
    }
    for (old, why) in &kept.left {
        eprintln!(
            "warning: the older backup {} was not removed: {why}",
            old.display()
        );
    }
    if !config.cluster.servers.is_empty() {
        text.push_str(
            "this hub is a front-end over NATS: telemetry, jobs and the configuration are in JetStream; back those up there\n",
        );
    }
    // `--json` names what was removed only when asked to keep a series.
    let json = match a.keep {
        Some(_) => serde_json::json!(kept),
        None => serde_json::json!(done),
    };
    say(a.at.json, json, text);
    Ok(ExitCode::SUCCESS)
}

/// Prints `value` as JSON with --json, else `text`.
fn say(json: bool, value: serde_json::Value, text: String) {
    if json {
        println!("{value}");
    } else {
        print!("{text}");
    }
}

/// Whether `devices --state ... --group ...` lists `d`: in one of the
/// states and one of the groups asked for (any, where none is given).
fn device_matches(
    d: &fleetmq_protocol::DeviceInfo,
    states: &[DeviceState],
    groups: &[String],
) -> bool {
    // The states are the words `devices` prints; conflict is besides them.
    let word = views::device_state(d);
    let in_state = |s: &DeviceState| match s {
        DeviceState::Online => word == "online",
        DeviceState::Offline => word == "offline",
        DeviceState::Revoked => word == "revoked",
        DeviceState::Conflict => d.conflicts > 0,
    };
    (states.is_empty() || states.iter().any(in_state))
        && (groups.is_empty() || groups.iter().any(|g| d.groups.contains(g)))
}

/// A mistake on the command line that clap cannot see: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

fn usage(message: &str) -> anyhow::Error {
    Usage(message.to_string()).into()
}

#[cfg(test)]
mod tests;
