//! The `fleetmq-hub` command line: `run` serves the fleet ([`crate::driver`]);
//! the enrolment subcommands edit the allow list file; every other
//! subcommand talks to a running hub through its operator socket (found with
//! `--hub`, or from the `endpoints.json` the hub wrote into its
//! `--data-dir`).
//!
//! `hub.rs` starts the hub and finds the allow list; `ask.rs` asks a
//! running hub and prints the answer.

mod ask;
mod hub;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fleetmq_protocol::{Command, Request, Response, Target};

use crate::config::{self};
use crate::enrolment;
use crate::operator::format;

use crate::operator::views;
use ask::{Exit, Shown, chat, operate, show_job, submit_job, telemetry};
use hub::{allow_list, run_hub};

#[derive(Parser)]
#[command(
    name = "fleetmq-hub",
    version,
    about = "The fleetmq hub: stores what devices send, knows who is online, and reaches the fleet.",
    long_about = "The fleetmq hub.\n\n`fleetmq-hub run` starts the hub on embedded defaults (a data directory with \
a SQLite file, agents on port 7750). The other subcommands are the operator's command line: they talk to a \
running hub, found with --hub or from the endpoints.json in its --data-dir, and print human text or, with \
--json, one JSON document (JSON Lines, one object a line, with --follow).\n\nOptions go before or after the \
other words; `--` ends them, so what follows it is taken as it is (`exec -- ls -l`).\n\nExit codes: 0 answered \
and it went well; 1 answered no (refused, failed, unknown or offline device); 2 a mistake on the command line; \
3 the hub could not be reached.\n\nExamples:\n  fleetmq-hub run --bind 127.0.0.1:*\n  fleetmq-hub devices\n  \
fleetmq-hub command pi-kitchen ping\n  fleetmq-hub job submit exec -- uname -a\n  \
fleetmq-hub telemetry --device pi-kitchen --name host.temp_c --since 1h\n  \
fleetmq-hub broadcast --group north \"maintenance at noon\""
)]
struct Cli {
    /// Log filter: a level (error, warn, info, debug, trace) or targets like `info,fleetmq_hub=debug`.
    #[arg(long, global = true, env = "FLEETMQ_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the hub until Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// Print the default configuration with every key explained.
    PrintConfig,
    /// List devices: online or offline, since when, arch and version.
    Devices(OpArgs),
    /// Show stored telemetry: the newest 100 samples, or --last N, or a
    /// range (--since, --until, --from-start); --follow prints new samples
    /// as they are stored.
    Telemetry(TelemetryArgs),
    /// Show the chat room: the newest 100 lines, or --last N; --follow
    /// prints new lines as they are said.
    Chat(ChatArgs),
    /// Send a command to one device and print its answer: ping, status,
    /// exec PROGRAM [ARGS...]; or to --device, --group or --all, printing
    /// each device's answer as it comes.
    Command(CommandArgs),
    /// Submit jobs and read their results.
    #[command(subcommand)]
    Job(JobCmd),
    /// Announce something to every device, a group, or one device.
    Broadcast(BroadcastArgs),
    /// The desired configuration: set or unset keys for the fleet, a
    /// group or a device; show a device's; see who applied it.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// The hub's counters: devices, what was stored, refused and pruned.
    Stats(OpArgs),
    /// Write the hub's CURVE key pair: DATA_DIR/hub.key (secret, mode 0600)
    /// and DATA_DIR/hub.pub. Agents name the public key in their config.
    Keygen(KeygenArgs),
    /// Enrol a device: add DEVICE and its public key to the allow list. A
    /// running hub lets it in within a second.
    Allow(AllowArgs),
    /// Remove a device from the allow list. A running hub closes its
    /// connections within a second and refuses it from then on.
    Revoke(RevokeArgs),
}

#[derive(Args)]
struct KeygenArgs {
    /// Directory for hub.key and hub.pub.
    #[arg(long, env = "FLEETMQ_DATA_DIR", default_value = "fleetmq-data")]
    data_dir: PathBuf,
    /// Replace an existing key pair (agents that trust the old public key
    /// will be refused until they are given the new one).
    #[arg(long)]
    force: bool,
    /// Make an operator's key pair instead (operator.key, operator.pub), for
    /// a remote operator socket; NAME is how the hub's operator allow list
    /// will know you.
    #[arg(long, value_name = "NAME")]
    operator: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    /// Config file (TOML; see `print-config`). Without it the embedded defaults apply.
    #[arg(long, short, env = "FLEETMQ_HUB_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory, overriding the config's data_dir.
    #[arg(long, env = "FLEETMQ_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Bind the agent sockets on HOST at PORT and the next four ports, and the
    /// operator socket on 127.0.0.1 at PORT+5 (listen.operator_remote stays as
    /// configured). `HOST:*` lets the OS pick every port.
    #[arg(long, value_name = "HOST:PORT")]
    bind: Option<String>,
    /// Plaintext, no keys, no allow list: anyone who reaches the ports can
    /// pose as any device. Only for a trusted network.
    #[arg(long)]
    insecure: bool,
}

#[derive(Args)]
struct EnrolArgs {
    /// Config file, for security.allow_list and data_dir.
    #[arg(long, short, env = "FLEETMQ_HUB_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory, overriding the config's data_dir.
    #[arg(long, env = "FLEETMQ_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct AllowArgs {
    #[command(flatten)]
    at: EnrolArgs,
    /// The device id the key will speak for.
    device: String,
    /// Its public key: the 40 Z85 characters, or the agent.pub file holding them.
    /// (Z85 may start with '-'; such a key is taken as the key, not a flag.)
    #[arg(allow_hyphen_values = true)]
    key: String,
}

#[derive(Args)]
struct RevokeArgs {
    #[command(flatten)]
    at: EnrolArgs,
    /// The device id to cut off (all its keys, unless --key).
    device: String,
    /// Revoke only this key of the device (Z85, or its agent.pub file): the
    /// old key after a rotation. (Z85 may start with '-'.)
    #[arg(long, value_name = "KEY|FILE", allow_hyphen_values = true)]
    key: Option<String>,
}

#[derive(Args, Clone)]
struct OpArgs {
    /// The hub's operator endpoint (default: read from DATA_DIR/endpoints.json,
    /// else the config's listen.operator, tcp://127.0.0.1:7755 by default).
    #[arg(long, env = "FLEETMQ_OPERATOR", value_name = "ENDPOINT")]
    hub: Option<String>,
    /// The hub's config file, for its data_dir and listen.operator (the
    /// packaged hub's is /etc/fleetmq/hub.toml).
    #[arg(long, env = "FLEETMQ_HUB_CONFIG")]
    config: Option<PathBuf>,
    /// The hub's data directory, where it wrote endpoints.json (default: the
    /// config's data_dir, fleetmq-data without a config).
    #[arg(long, env = "FLEETMQ_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Print one JSON document instead of text (JSON Lines with --follow).
    #[arg(long)]
    json: bool,
    /// How long to wait for the hub on each of three attempts, in ms.
    #[arg(long, default_value_t = 2000)]
    hub_timeout_ms: u64,
    /// For a remote operator socket (listen.operator_remote): the hub's
    /// public key, or its hub.pub file. Needs --operator-keys.
    #[arg(
        long,
        env = "FLEETMQ_HUB_KEY",
        value_name = "KEY|FILE",
        allow_hyphen_values = true
    )]
    hub_key: Option<String>,
    /// For a remote operator socket: the directory holding your
    /// operator.key and operator.pub (`fleetmq-hub keygen --operator`).
    #[arg(long, env = "FLEETMQ_OPERATOR_KEYS", value_name = "DIR")]
    operator_keys: Option<PathBuf>,
}

#[derive(Args)]
struct TelemetryArgs {
    #[command(flatten)]
    op: OpArgs,
    /// Only this device.
    #[arg(long)]
    device: Option<String>,
    /// Only this metric, with any tags (`host.disk.used_pct` matches
    /// `host.disk.used_pct{mount=/}`); with tags, only that series.
    #[arg(long)]
    name: Option<String>,
    /// Only series with this tag, KEY=VALUE, or KEY for any value
    /// (repeatable: every one must match).
    #[arg(long, value_name = "KEY=VALUE")]
    tag: Vec<String>,
    /// The newest N matching samples (default 100; with --follow, none
    /// before the new ones unless given).
    #[arg(long, value_name = "N", conflicts_with_all = ["from_start", "after"])]
    last: Option<u32>,
    /// Samples taken since: a time ago (10m, 2h, 7d), a time
    /// (2026-12-02T10:00:00Z; UTC without a zone), or ms since the epoch.
    /// Without --last, every sample from then on, oldest first.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Samples taken up to this time (as for --since).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Every stored sample, oldest first (with --follow: then the new ones).
    #[arg(long)]
    from_start: bool,
    /// Every sample after this row id (a cursor from an earlier --json
    /// read), oldest first.
    #[arg(long, value_name = "ID")]
    after: Option<i64>,
    /// Keep printing new samples as they are stored, until interrupted.
    #[arg(long, short)]
    follow: bool,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    op: OpArgs,
    /// The newest N lines (default 100; with --follow, none before the new
    /// ones unless given).
    #[arg(long, value_name = "N", conflicts_with = "from_start")]
    last: Option<u32>,
    /// Every stored line, oldest first (with --follow: then the new ones).
    #[arg(long)]
    from_start: bool,
    /// Keep printing new lines as they are said, until interrupted.
    #[arg(long, short)]
    follow: bool,
}

/// Whom a job or command is for, beside the one device or the work queue.
#[derive(Args)]
struct AimArgs {
    /// For this device (repeatable).
    #[arg(long = "device", value_name = "DEVICE")]
    devices: Vec<String>,
    /// For each device in this group (repeatable).
    #[arg(long, value_name = "GROUP")]
    group: Vec<String>,
    /// For every device the hub knows.
    #[arg(long)]
    all: bool,
    /// With --device, --group or --all: how long the hub keeps it for a
    /// device that is offline (10m, 2h, 7d; default: the hub's
    /// jobs.ttl_ms, a day). Kept across hub restarts.
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
}

impl AimArgs {
    /// Whether any device, group or the fleet is named.
    fn aimed(&self) -> bool {
        !self.devices.is_empty() || !self.group.is_empty() || self.all
    }
}

#[derive(Args)]
struct CommandArgs {
    #[command(flatten)]
    op: OpArgs,
    /// How long each device may take to answer, in ms (default: the hub's commands.timeout_ms).
    #[arg(long, default_value_t = 0)]
    timeout_ms: u32,
    /// If the device is offline, let the command wait this many ms for it
    /// to come back (default: fail at once with "offline").
    #[arg(long, default_value_t = 0)]
    queue_ms: u32,
    #[command(flatten)]
    aim: AimArgs,
    /// With --device, --group or --all: how long to print answers here
    /// before leaving the rest to `--answers` (ms).
    #[arg(long, default_value_t = 60_000)]
    wait_ms: u64,
    /// Show where an earlier --group/--all/--device command stands on
    /// each device, by the id it printed.
    #[arg(long, value_name = "ID", conflicts_with_all = ["devices", "group", "all"])]
    answers: Option<u64>,
    /// DEVICE NAME [ARGS...]; with --device, --group or --all, NAME
    /// [ARGS...]. NAME is ping, status, exec, or another the device may
    /// know; for exec, the program and its arguments (put `--` before
    /// them when one starts with `-`: `exec -- ls -l`).
    #[arg(value_name = "WORDS")]
    words: Vec<String>,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Set KEY=VALUE... in the fleet's layer, or a group's or a device's.
    Set(ConfigSetArgs),
    /// Take KEY... out of a layer (what a lower layer sets stands).
    Unset(ConfigUnsetArgs),
    /// A device's merged configuration, each key with the layer it came
    /// from, and what the device applied.
    Show(ConfigShowArgs),
    /// Per device: the desired and applied versions and refused keys; per
    /// group: in sync, pending, failed.
    Status(OpArgs),
}

/// Which layer an edit is for.
#[derive(Args)]
struct LayerArgs {
    /// The group's layer (groups apply in name order, over the fleet's).
    #[arg(long, conflicts_with = "device")]
    group: Option<String>,
    /// The device's own layer (over its groups').
    #[arg(long)]
    device: Option<String>,
    /// Only if the configuration is still at this version (from `config
    /// show`); else nothing changes and the command says so.
    #[arg(long, value_name = "VERSION", default_value_t = 0)]
    if_version: u64,
}

impl LayerArgs {
    fn layer(&self) -> String {
        match (&self.group, &self.device) {
            (Some(g), _) => format!("group:{g}"),
            (None, Some(d)) => format!("device:{d}"),
            (None, None) => "fleet".into(),
        }
    }
}

#[derive(Args)]
struct ConfigSetArgs {
    #[command(flatten)]
    op: OpArgs,
    #[command(flatten)]
    layer: LayerArgs,
    /// KEY=VALUE pairs: keys the agents take (host.interval_ms,
    /// telemetry.sample_interval_ms, host.collect, ingest.percentiles,
    /// app.NAME, ...); lists as a,b,c.
    #[arg(required = true, value_name = "KEY=VALUE")]
    pairs: Vec<String>,
}

#[derive(Args)]
struct ConfigUnsetArgs {
    #[command(flatten)]
    op: OpArgs,
    #[command(flatten)]
    layer: LayerArgs,
    /// Keys to take out of the layer.
    #[arg(required = true, value_name = "KEY")]
    keys: Vec<String>,
}

#[derive(Args)]
struct ConfigShowArgs {
    #[command(flatten)]
    op: OpArgs,
    /// The device.
    device: String,
}

#[derive(Subcommand)]
enum JobCmd {
    /// Queue a job: `echo TEXT...` or `exec PROGRAM [ARGS...]`, for any one
    /// device that takes it (the work queue), or once on each of --device,
    /// --group or --all.
    Submit(SubmitArgs),
    /// Show one job and its result; an aimed job with each device's.
    Show(ShowArgs),
    /// List recent jobs, newest first.
    List(ListArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum JobKind {
    Echo,
    Exec,
}

#[derive(Args)]
struct SubmitArgs {
    #[command(flatten)]
    op: OpArgs,
    /// Agent-side time limit in ms (default: the hub's jobs.timeout_ms).
    #[arg(long, default_value_t = 0)]
    timeout_ms: u32,
    /// Re-dispatch the job if no result comes back within this many ms (default: the hub's jobs.lease_ms).
    #[arg(long, default_value_t = 0)]
    lease_ms: u32,
    /// Dispatches before the job fails (default: the hub's jobs.max_attempts).
    #[arg(long, default_value_t = 0)]
    max_attempts: u32,
    #[command(flatten)]
    aim: AimArgs,
    /// Wait until the job is done or failed and print its result (an aimed
    /// job: until every device's run ended).
    #[arg(long)]
    wait: bool,
    /// With --wait: give up waiting after this many ms.
    #[arg(long, default_value_t = 120_000)]
    wait_ms: u64,
    kind: JobKind,
    /// For echo, the text; for exec, the program and its arguments (put
    /// `--` before them when one starts with `-`: `exec -- uname -a`).
    #[arg(required = true)]
    args: Vec<String>,
}

#[derive(Args)]
struct ShowArgs {
    #[command(flatten)]
    op: OpArgs,
    /// Wait until the job is done or failed.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up waiting after this many ms.
    #[arg(long, default_value_t = 120_000)]
    wait_ms: u64,
    /// Job id.
    id: u64,
}

#[derive(Args)]
struct ListArgs {
    #[command(flatten)]
    op: OpArgs,
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    limit: u32,
}

#[derive(Args)]
struct BroadcastArgs {
    #[command(flatten)]
    op: OpArgs,
    /// Only devices in this group.
    #[arg(long, conflicts_with = "device")]
    group: Option<String>,
    /// Only this device.
    #[arg(long)]
    device: Option<String>,
    /// The announcement.
    #[arg(required = true)]
    text: Vec<String>,
}

/// Parses the command line and runs it: the whole of `fleetmq-hub`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
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
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
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
        Cmd::PrintConfig => {
            print!("{}", config::EXAMPLE);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Keygen(KeygenArgs {
            data_dir,
            force,
            operator: Some(name),
        }) => {
            fleetmq_protocol::validate_device_id(&name)
                .map_err(|e| anyhow::anyhow!("operator name: {e}"))?;
            let pair = fleetmq_net::keys::generate()?;
            let (secret, public) = fleetmq_net::keys::write(&data_dir, "operator", &pair, force)?;
            println!(
                "secret key: {} (mode 0600; it never leaves this machine)\npublic key: {}\n\
                 on the hub, add one of these lines to its operator allow list (DATA_DIR/allowed_operators):\n\
                 {name} read {}\n{name} admin {}\n\
                 then: fleetmq-hub devices --hub tcp://HUB:PORT --hub-key HUB_PUBLIC_KEY --operator-keys {}",
                secret.display(),
                public.display(),
                pair.public,
                pair.public,
                data_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Keygen(a) => {
            let pair = fleetmq_net::keys::generate()?;
            let (secret, public) = fleetmq_net::keys::write(&a.data_dir, "hub", &pair, a.force)?;
            println!(
                "secret key: {} (mode 0600; it never leaves the hub)\npublic key: {}\n\
                 give every agent this line in its config (or the path of a copy of {}):\n\
                 hub_public_key = {}",
                secret.display(),
                public.display(),
                public.display(),
                fleetmq_net::keys::quoted(&pair.public)
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Allow(a) => {
            let path = allow_list(&a.at)?;
            fleetmq_protocol::validate_device_id(&a.device).map_err(|e| anyhow::anyhow!("{e}"))?;
            let key = fleetmq_net::keys::key_or_file(&a.key)?;
            let edit = enrolment::allow(&path, &a.device, &key)?;
            match edit {
                enrolment::Edit::AlreadyThere => {
                    println!("{} is already enrolled with this key", a.device)
                }
                enrolment::Edit::Added { others } if !others.is_empty() => {
                    let device = &a.device;
                    println!(
                        "enrolled another key for {device} in {}: it has {} now, and each gets in",
                        path.display(),
                        others.len() + 1
                    );
                    for old in others {
                        println!(
                            "once {device} uses the new key, revoke the old one: fleetmq-hub revoke {device} --key {}",
                            fleetmq_net::keys::quoted(&old)
                        );
                    }
                }
                _ => println!("enrolled {} in {}", a.device, path.display()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Revoke(a) => {
            let path = allow_list(&a.at)?;
            let key = a
                .key
                .as_deref()
                .map(fleetmq_net::keys::key_or_file)
                .transpose()?;
            match enrolment::revoke(&path, &a.device, key.as_deref())? {
                enrolment::Edit::Removed(n) => {
                    println!(
                        "revoked {} ({n} key(s)) in {}; a running hub cuts it off within a second",
                        a.device,
                        path.display()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                _ => {
                    let what = match &key {
                        Some(k) => {
                            format!("{} with key {}", a.device, fleetmq_net::keys::quoted(k))
                        }
                        None => a.device.clone(),
                    };
                    eprintln!("error: {what} is not on {}", path.display());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Cmd::Devices(op) => operate(&op, Request::Devices, Duration::ZERO, |r| match r {
            Response::Devices(d) => Some(Shown::new(
                d.iter().map(views::device).collect(),
                format::fmt_devices(&d),
                true,
            )),
            _ => None,
        }),
        Cmd::Telemetry(a) => telemetry(a),
        Cmd::Chat(a) => chat(a),
        Cmd::Command(a) => {
            if let Some(id) = a.answers {
                return ask::fleet_answers(&a.op, id, None);
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
                return ask::fleet_command(&a, command);
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

/// A mistake on the command line that clap cannot see: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

fn usage(message: &str) -> anyhow::Error {
    Usage(message.to_string()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_takes_a_key_that_starts_with_a_dash_as_the_key() {
        let key = "-^abcdefghijabcdefghijabcdefghijabcdefgh";
        let cli = Cli::try_parse_from(["fleetmq-hub", "allow", "pi-a", key]).unwrap();
        let Cmd::Allow(a) = cli.command else {
            panic!("not allow");
        };
        assert_eq!((a.device.as_str(), a.key.as_str()), ("pi-a", key));
    }

    #[test]
    fn options_go_anywhere_and_a_double_dash_ends_them() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.command);
        let Ok(Cmd::Job(JobCmd::Submit(a))) = parse(&[
            "fleetmq-hub",
            "job",
            "submit",
            "--wait",
            "echo",
            "hello",
            "--json",
        ]) else {
            panic!("not job submit");
        };
        assert!(a.op.json && a.wait);
        assert_eq!(a.args, ["hello"]);
        let Ok(Cmd::Command(a)) = parse(&[
            "fleetmq-hub",
            "command",
            "--group",
            "lab",
            "exec",
            "--",
            "ls",
            "-l",
            "--json",
        ]) else {
            panic!("not command");
        };
        assert!(!a.op.json, "after --, --json is a word");
        assert_eq!(a.aim.group, ["lab"]);
        assert_eq!(a.words, ["exec", "ls", "-l", "--json"]);
        let dash = parse(&["fleetmq-hub", "command", "pi-a", "exec", "ls", "-l"]);
        let err = dash.err().expect("an option it does not know").to_string();
        assert!(err.contains("-- -l"), "the hint says how: {err}");
    }
}
