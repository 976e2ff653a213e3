//! The command line's words: every subcommand and option, as clap reads
//! them (those that act on devices in `args/work.rs`). What each does is
//! in `mod.rs` (the run), `ask.rs` (asking a running hub) and `work.rs`
//! (jobs, and commands for many devices).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

mod work;
pub(super) use work::*;

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
pub(super) struct Cli {
    /// Log filter: a level (error, warn, info, debug, trace) or targets like `info,fleetmq_hub=debug`.
    #[arg(long, global = true, env = "FLEETMQ_LOG", default_value = "info")]
    pub(super) log: String,
    #[command(subcommand)]
    pub(super) command: Cmd,
}

#[derive(Subcommand)]
pub(super) enum Cmd {
    /// Run the hub until Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// Print the default configuration with every key explained.
    PrintConfig,
    /// Check the configuration run would start with (the file and the
    /// flags, as run takes them) and the files it names (the key pair,
    /// allow lists, HTTP tokens and certificate, webhook authorities, NATS
    /// credentials and certificates), without starting or touching a
    /// running hub: exits 0 with what it would run, 1 with the error run
    /// would stop with.
    CheckConfig(RunArgs),
    /// List devices: online or offline, since when, arch and version;
    /// --state and --group pick some.
    Devices(DevicesArgs),
    /// Show stored telemetry: the newest 100 samples, or --last N, or a
    /// range (--since, --until, --from-start); --follow prints new samples
    /// as they are stored.
    Telemetry(TelemetryArgs),
    /// Show the log lines devices sent (their `[logs]` files and journal): the newest
    /// 100, or --last N, or a range; --device, --source and --grep pick
    /// some; --follow prints new lines as they are stored.
    Logs(LogsArgs),
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
    /// The alerts firing or pending, by the rules of the hub's [alerts].
    Alerts(OpArgs),
    /// A device's newest connects and disconnects, and why.
    Presence(PresenceArgs),
    /// Write the hub's CURVE key pair: DATA_DIR/hub.key (secret, mode 0600)
    /// and DATA_DIR/hub.pub. Agents name the public key in their config.
    Keygen(KeygenArgs),
    /// Keys not on the allow list that tried to connect since the hub
    /// started (devices waiting to be enrolled), newest attempt first,
    /// each with where it came from and the command that enrols it.
    Pending(OpArgs),
    /// Who did what: the acts operators asked of the hub (commands, jobs,
    /// announcements, configuration edits, cancels, forgetting, enrolling
    /// and revoking devices), allowed or refused, newest first.
    Audit(AuditArgs),
    /// Enrol a device: add DEVICE and its public key to the allow list. A
    /// running hub lets it in within a second.
    Allow(AllowArgs),
    /// Remove a device from the allow list (here, or through a running hub
    /// with --hub). A running hub closes its connections within a second
    /// and refuses it from then on.
    Revoke(RevokeArgs),
    /// Forget a decommissioned device (offline, and revoked on a hub with
    /// an allow list): it leaves devices, /metrics, the page and alerts,
    /// and what waits for it is called off. Its telemetry stays until
    /// retention removes it.
    Forget(ForgetArgs),
    /// The console's address with the HTTP token in it, to open in a
    /// browser (on this machine, or through an SSH tunnel to it). Run it
    /// as the hub's user: only it may read the token files.
    ConsoleUrl(ConsoleUrlArgs),
    /// Copy the hub's store, keys and allow lists into a new directory,
    /// while the hub runs: the copy is a data directory (`run --data-dir`
    /// serves from it).
    Backup(BackupArgs),
}

#[derive(Args)]
pub(super) struct ForgetArgs {
    #[command(flatten)]
    pub(super) op: OpArgs,
    /// The device.
    pub(super) device: String,
}

#[derive(Args)]
pub(super) struct ConsoleUrlArgs {
    #[command(flatten)]
    pub(super) at: EnrolArgs,
    /// With the admin token (security.http_admin_token_file): the console
    /// then offers the actions. Without it, the read token.
    #[arg(long)]
    pub(super) admin: bool,
}

#[derive(Args)]
pub(super) struct BackupArgs {
    #[command(flatten)]
    pub(super) at: EnrolArgs,
    /// The backup directory: new, or empty. Never replaced. With --keep,
    /// the directory that holds the backups.
    pub(super) to: PathBuf,
    /// Keep a series in DIR: this backup goes into DIR/hub-YYYYMMDDTHHMMSSZ
    /// (UTC), then the oldest backups there beyond the newest N are removed
    /// (for a timer: the package's fleetmq-hub-backup.timer).
    #[arg(long, value_name = "N")]
    pub(super) keep: Option<usize>,
}

#[derive(Args)]
pub(super) struct KeygenArgs {
    /// Directory for hub.key and hub.pub.
    #[arg(long, env = "FLEETMQ_DATA_DIR", default_value = "fleetmq-data")]
    pub(super) data_dir: PathBuf,
    /// Replace an existing key pair (agents that trust the old public key
    /// will be refused until they are given the new one).
    #[arg(long)]
    pub(super) force: bool,
    /// Make an operator's key pair instead (operator.key, operator.pub), for
    /// a remote operator socket; NAME is how the hub's operator allow list
    /// will know you.
    #[arg(long, value_name = "NAME")]
    pub(super) operator: Option<String>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct RunArgs {
    /// Config file (TOML; see `print-config`). Without it the embedded defaults apply.
    #[arg(long, short, env = "FLEETMQ_HUB_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Data directory, overriding the config's data_dir.
    #[arg(long, env = "FLEETMQ_DATA_DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// Bind the agent sockets on HOST at PORT and the next four ports, the
    /// operator socket on 127.0.0.1 at PORT+5 and the HTTP side at PORT+6
    /// (listen.operator_remote and an ipc:// listen.operator stay as
    /// configured, and an HTTP side the config turned off stays off). `HOST:*` lets the OS pick every port.
    #[arg(long, value_name = "HOST:PORT")]
    pub(super) bind: Option<String>,
    /// Plaintext, no keys, no allow list: anyone who reaches the ports can
    /// pose as any device. Only for a trusted network.
    #[arg(long)]
    pub(super) insecure: bool,
    /// Run as a front-end over this NATS JetStream cluster (comma-separated
    /// nats://HOST:PORT), overriding cluster.servers.
    #[arg(long, value_name = "URL,URL", env = "FLEETMQ_NATS")]
    pub(super) nats: Option<String>,
    /// This front-end's name in the cluster, overriding cluster.name.
    #[arg(long, value_name = "NAME")]
    pub(super) name: Option<String>,
}

#[derive(Args)]
pub(super) struct EnrolArgs {
    /// Config file, for data_dir and the allow lists.
    #[arg(long, short, env = "FLEETMQ_HUB_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// Data directory, overriding the config's data_dir.
    #[arg(long, env = "FLEETMQ_DATA_DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Args)]
pub(super) struct AllowArgs {
    #[command(flatten)]
    pub(super) at: EnrolArgs,
    /// The device id the key will speak for.
    pub(super) device: String,
    /// Its public key: the 40 Z85 characters, or the agent.pub file holding them.
    /// (Z85 may start with '-'; such a key is taken as the key, not a flag.)
    #[arg(allow_hyphen_values = true)]
    pub(super) key: String,
    /// Pin the device's groups (comma-separated; empty for none): the hub
    /// then uses these, whatever the device's Hello names. Without it a
    /// device names its own groups, unless the list pins them already.
    #[arg(long, value_name = "GROUP,GROUP")]
    pub(super) groups: Option<String>,
    #[command(flatten)]
    pub(super) remote: AtHubArgs,
}

/// `allow` and `revoke` through a running hub rather than on its file.
#[derive(Args)]
pub(super) struct AtHubArgs {
    /// Edit the allow list through this running hub's operator socket
    /// rather than the file here: an admin operator on another machine,
    /// with --hub-key and --operator-keys (the operator requests Enrol and
    /// Revoke; the hub edits its own file). These three are not read from
    /// the environment, so that the command edits a file unless told to.
    #[arg(long, value_name = "ENDPOINT")]
    pub(super) hub: Option<String>,
    /// With --hub: the hub's public key, or its hub.pub file.
    #[arg(long, value_name = "KEY|FILE", allow_hyphen_values = true)]
    pub(super) hub_key: Option<String>,
    /// With --hub: the directory of your operator.key and operator.pub.
    #[arg(long, value_name = "DIR")]
    pub(super) operator_keys: Option<PathBuf>,
}

#[derive(Args)]
pub(super) struct RevokeArgs {
    #[command(flatten)]
    pub(super) at: EnrolArgs,
    /// The device id to cut off (all its keys, unless --key).
    pub(super) device: String,
    /// Revoke only this key of the device (Z85, or its agent.pub file): the
    /// old key after a rotation. (Z85 may start with '-'.)
    #[arg(long, value_name = "KEY|FILE", allow_hyphen_values = true)]
    pub(super) key: Option<String>,
    #[command(flatten)]
    pub(super) remote: AtHubArgs,
}

#[derive(Args, Clone)]
pub(super) struct OpArgs {
    /// The hub's operator endpoint (default: read from DATA_DIR/endpoints.json,
    /// else the config's listen.operator, tcp://127.0.0.1:7755 by default).
    #[arg(long, env = "FLEETMQ_OPERATOR", value_name = "ENDPOINT")]
    pub(super) hub: Option<String>,
    /// The hub's config file, for its data_dir and listen.operator (the
    /// packaged hub's is /etc/fleetmq/hub.toml).
    #[arg(long, env = "FLEETMQ_HUB_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// The hub's data directory, where it wrote endpoints.json (default: the
    /// config's data_dir, fleetmq-data without a config).
    #[arg(long, env = "FLEETMQ_DATA_DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// Print one JSON document instead of text (JSON Lines with --follow).
    #[arg(long)]
    pub(super) json: bool,
    /// How long to wait for the hub on each of three attempts, in ms.
    #[arg(long, default_value_t = 2000)]
    pub(super) hub_timeout_ms: u64,
    /// For a remote operator socket (listen.operator_remote): the hub's
    /// public key, or its hub.pub file. Needs --operator-keys.
    #[arg(
        long,
        env = "FLEETMQ_HUB_KEY",
        value_name = "KEY|FILE",
        allow_hyphen_values = true
    )]
    pub(super) hub_key: Option<String>,
    /// For a remote operator socket: the directory holding your
    /// operator.key and operator.pub (`fleetmq-hub keygen --operator`).
    #[arg(long, env = "FLEETMQ_OPERATOR_KEYS", value_name = "DIR")]
    pub(super) operator_keys: Option<PathBuf>,
}

#[derive(Args)]
pub(super) struct TelemetryArgs {
    #[command(flatten)]
    pub(super) op: OpArgs,
    /// Only this device.
    #[arg(long)]
    pub(super) device: Option<String>,
    /// Only this metric, with any tags (`host.disk.used_pct` matches
    /// `host.disk.used_pct{mount=/}`); with tags, only that series.
    #[arg(long)]
    pub(super) name: Option<String>,
    /// Only series with this tag, KEY=VALUE, or KEY for any value
    /// (repeatable: every one must match).
    #[arg(long, value_name = "KEY=VALUE")]
    pub(super) tag: Vec<String>,
    #[command(flatten)]
    pub(super) range: Range,
}

#[derive(Args)]
pub(super) struct LogsArgs {
    #[command(flatten)]
    pub(super) op: OpArgs,
    /// Only this device.
    #[arg(long)]
    pub(super) device: Option<String>,
    /// Only lines from this source: a file's path as the agent's
    /// `[logs] files` names it, or journal:UNIT.
    #[arg(long, value_name = "SOURCE")]
    pub(super) source: Option<String>,
    /// Only lines holding this text (as it is, case and all).
    #[arg(long, value_name = "TEXT")]
    pub(super) grep: Option<String>,
    #[command(flatten)]
    pub(super) range: Range,
}

/// Which stored rows (samples, log lines) a read shows, and whether it
/// follows what comes.
#[derive(Args)]
pub(super) struct Range {
    /// The newest N that match (default 100; with --follow, none before
    /// the new ones unless given). `--limit` is its older name.
    #[arg(long, alias = "limit", value_name = "N", conflicts_with_all = ["from_start", "after"])]
    pub(super) last: Option<u32>,
    /// Since: a time ago (10m, 2h, 7d), a time (2026-12-02T10:00:00Z; UTC
    /// without a zone), or ms since the epoch; a sample's time is when it
    /// was taken, a log line's when it was read (a journal entry's own).
    /// Without --last, everything from then on, oldest first.
    #[arg(long, value_name = "TIME")]
    pub(super) since: Option<String>,
    /// Up to this time (as for --since).
    #[arg(long, value_name = "TIME")]
    pub(super) until: Option<String>,
    /// Everything stored, oldest first (with --follow: then what is new).
    #[arg(long)]
    pub(super) from_start: bool,
    /// Everything after this row id (a cursor from an earlier --json
    /// read), oldest first.
    #[arg(long, value_name = "ID")]
    pub(super) after: Option<i64>,
    /// Keep printing what is stored, as it is, until interrupted.
    #[arg(long, short)]
    pub(super) follow: bool,
}

#[derive(Args)]
pub(super) struct ChatArgs {
    #[command(flatten)]
    pub(super) op: OpArgs,
    /// The newest N lines (default 100; with --follow, none before the new
    /// ones unless given). `--limit` is its older name.
    #[arg(long, alias = "limit", value_name = "N", conflicts_with = "from_start")]
    pub(super) last: Option<u32>,
    /// Every stored line, oldest first (with --follow: then the new ones).
    #[arg(long)]
    pub(super) from_start: bool,
    /// Keep printing new lines as they are said, until interrupted.
    #[arg(long, short)]
    pub(super) follow: bool,
}

#[derive(Args)]
pub(super) struct AuditArgs {
    #[command(flatten)]
    pub(super) op: OpArgs,
    /// At most this many, newest first (the hub keeps the newest 10,000
    /// allowed acts and 1,000 refused ones).
    #[arg(long, default_value_t = 50)]
    pub(super) limit: u32,
}

#[derive(Args)]
pub(super) struct PresenceArgs {
    #[command(flatten)]
    pub(super) op: OpArgs,
    /// The device.
    pub(super) device: String,
    /// At most this many, newest first (the hub keeps 200 per device).
    #[arg(long, default_value_t = 20)]
    pub(super) limit: u32,
}

#[derive(Args)]
pub(super) struct DevicesArgs {
    #[command(flatten)]
    pub(super) op: OpArgs,
    /// Only devices in this state (repeat for any of several): online,
    /// offline, revoked (no key left on the allow list), or conflict (a
    /// second agent with its key was refused).
    #[arg(long, value_enum, value_name = "STATE")]
    pub(super) state: Vec<DeviceState>,
    /// Only devices in this group (repeat for any of several).
    #[arg(long, value_name = "GROUP")]
    pub(super) group: Vec<String>,
    /// Show what each device is instead: its model, OS, kernel, memory
    /// and network addresses, as its agent said.
    #[arg(long)]
    pub(super) facts: bool,
    /// Only devices whose facts match, as `command` and `job submit`
    /// take it (model~zero, os~bullseye, kernel!=6.6.51, memory<1G,
    /// address~192.168.4.; repeat: every one must match): whom a job or
    /// command with the same filters would reach.
    #[arg(long = "where", value_name = "FILTER")]
    pub(super) matching: Vec<String>,
}

/// A state `devices --state` picks: the words `devices` prints, and
/// conflict (any device a second agent's messages were refused for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum DeviceState {
    Online,
    Offline,
    Revoked,
    Conflict,
}

/// The command line with the options written before the subcommand
/// (`fleetmq-hub --json devices`, `fleetmq-hub --data-dir d job show 7`)
/// moved to just after it, where clap reads them: options go before or
/// after the other words. Anything else is returned as it is, for clap to
/// read or refuse (`--help` and `--version` among them).
pub(super) fn options_after_the_subcommand(args: Vec<OsString>) -> Vec<OsString> {
    let cli = Cli::command();
    let words: Option<Vec<&str>> = args.iter().map(|a| a.to_str()).collect();
    let Some(words) = words else {
        return args;
    };
    // The leading options, each with its value when it takes one.
    let mut i = 1;
    while let Some(word) = words.get(i).filter(|w| w.starts_with('-')) {
        let name = word.trim_start_matches('-');
        if *word == "--" || matches!(name, "h" | "help" | "V" | "version") {
            return args;
        }
        i += if !name.contains('=') && takes_a_value(&cli, word) {
            2
        } else {
            1
        };
    }
    if i == 1 {
        return args;
    }
    // The subcommand's words: one, or a group's and one of its own.
    let Some(sub) = words.get(i).and_then(|w| cli.find_subcommand(w)) else {
        return args;
    };
    let mut end = i + 1;
    if sub.has_subcommands()
        && words
            .get(end)
            .and_then(|w| sub.find_subcommand(w))
            .is_some()
    {
        end += 1;
    }
    let mut out = vec![args[0].clone()];
    out.extend_from_slice(&args[i..end]);
    out.extend_from_slice(&args[1..i]);
    out.extend_from_slice(&args[end..]);
    out
}

/// Whether the option `word` (`--name` or `-c`) takes a value in any
/// subcommand.
fn takes_a_value(cmd: &clap::Command, word: &str) -> bool {
    let named = |a: &clap::Arg| match word.strip_prefix("--") {
        Some(long) => a.get_long() == Some(long),
        None => word.len() == 2 && a.get_short() == word.chars().nth(1),
    };
    cmd.get_arguments()
        .any(|a| named(a) && a.get_action().takes_values())
        || cmd.get_subcommands().any(|s| takes_a_value(s, word))
}
