//! The words that act on devices: commands (to one device, or many with
//! [`AimArgs`]), jobs, the desired configuration and announcements. The
//! rest of the command line's words are in `args.rs`.

use clap::{Args, Subcommand, ValueEnum};

use super::OpArgs;

/// Whom a job or command is for, beside the one device or the work queue.
#[derive(Args)]
pub(in crate::cli) struct AimArgs {
    /// For this device (repeatable).
    #[arg(long = "device", value_name = "DEVICE")]
    pub(in crate::cli) devices: Vec<String>,
    /// For each device in this group (repeatable).
    #[arg(long, value_name = "GROUP")]
    pub(in crate::cli) group: Vec<String>,
    /// For every device the hub knows.
    #[arg(long)]
    pub(in crate::cli) all: bool,
    /// Only the devices (of --device, --group or --all; alone: of the
    /// fleet) whose facts match FIELD=VALUE, FIELD!=VALUE, FIELD~TEXT
    /// (holds it, case aside), FIELD!~TEXT, or memory<SIZE, memory>SIZE.
    /// Fields: model, os, kernel, serial, memory, address, mac,
    /// interface, version, arch. Repeat: every one must match.
    /// `fleetmq-hub devices --where ...` lists whom they match.
    #[arg(long = "where", value_name = "FILTER")]
    pub(in crate::cli) matching: Vec<String>,
    /// With --device, --group or --all: how long the hub keeps it for a
    /// device that is offline (10m, 2h, 7d; default: the hub's
    /// jobs.ttl_ms, a day). Kept across hub restarts.
    #[arg(long, value_name = "DURATION")]
    pub(in crate::cli) ttl: Option<String>,
}

impl AimArgs {
    /// Whether any device, group, the fleet or a filter is named.
    pub(in crate::cli) fn aimed(&self) -> bool {
        !self.devices.is_empty() || !self.group.is_empty() || self.all || !self.matching.is_empty()
    }
}

#[derive(Args)]
pub(in crate::cli) struct CommandArgs {
    #[command(flatten)]
    pub(in crate::cli) op: OpArgs,
    /// How long each device may take to answer, in ms (default: the hub's commands.timeout_ms).
    #[arg(long, default_value_t = 0)]
    pub(in crate::cli) timeout_ms: u32,
    /// If the device is offline, let the command wait this many ms for it
    /// to come back (default: fail at once with "offline").
    #[arg(long, default_value_t = 0)]
    pub(in crate::cli) queue_ms: u32,
    #[command(flatten)]
    pub(in crate::cli) aim: AimArgs,
    /// With --device, --group or --all: how long to print answers here
    /// before leaving the rest to `--answers` (ms).
    #[arg(long, default_value_t = 60_000)]
    pub(in crate::cli) wait_ms: u64,
    /// Show where an earlier --group/--all/--device command stands on
    /// each device, by the id it printed.
    #[arg(long, value_name = "ID", conflicts_with_all = ["devices", "group", "all", "matching"])]
    pub(in crate::cli) answers: Option<u64>,
    /// Cancel an earlier --group/--all/--device command, by the id it
    /// printed: devices not yet sent it never are.
    #[arg(long, value_name = "ID", conflicts_with_all = ["devices", "group", "all", "matching", "answers"])]
    pub(in crate::cli) cancel: Option<u64>,
    /// List the newest N (20) --group/--all/--device commands, newest
    /// first: each one's id, whom it is for, and how many devices answered,
    /// failed or are still waiting.
    #[arg(
        long,
        value_name = "N",
        num_args = 0..=1,
        default_missing_value = "20",
        conflicts_with_all = ["devices", "group", "all", "matching", "answers", "cancel"]
    )]
    pub(in crate::cli) list: Option<u32>,
    /// DEVICE NAME [ARGS...]; with --device, --group or --all, NAME
    /// [ARGS...]. NAME is ping, status, exec, or another the device may
    /// know; for exec, the program and its arguments (put `--` before
    /// them when one starts with `-`: `exec -- ls -l`).
    #[arg(value_name = "WORDS")]
    pub(in crate::cli) words: Vec<String>,
}

#[derive(Subcommand)]
pub(in crate::cli) enum ConfigCmd {
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
pub(in crate::cli) struct LayerArgs {
    /// The fleet's layer, under every group's and device's: what is edited
    /// without --group or --device (as jobs and commands say --all).
    #[arg(long, conflicts_with_all = ["group", "device"])]
    pub(in crate::cli) all: bool,
    /// The group's layer (groups apply in name order, over the fleet's).
    #[arg(long, conflicts_with = "device")]
    pub(in crate::cli) group: Option<String>,
    /// The device's own layer (over its groups').
    #[arg(long)]
    pub(in crate::cli) device: Option<String>,
    /// Only if the configuration is still at this version (from `config
    /// show`); else nothing changes and the command says so.
    #[arg(long, value_name = "VERSION", default_value_t = 0)]
    pub(in crate::cli) if_version: u64,
}

impl LayerArgs {
    pub(in crate::cli) fn layer(&self) -> String {
        match (&self.group, &self.device) {
            (Some(g), _) => format!("group:{g}"),
            (None, Some(d)) => format!("device:{d}"),
            (None, None) => "fleet".into(),
        }
    }
}

#[derive(Args)]
pub(in crate::cli) struct ConfigSetArgs {
    #[command(flatten)]
    pub(in crate::cli) op: OpArgs,
    #[command(flatten)]
    pub(in crate::cli) layer: LayerArgs,
    /// KEY=VALUE pairs: keys the agents take (host.interval_ms,
    /// telemetry.sample_interval_ms, host.collect, ingest.percentiles,
    /// app.NAME, ...); lists as a,b,c.
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub(in crate::cli) pairs: Vec<String>,
    /// Set keys agents of this release do not take (for agents newer than
    /// this hub); without it such a key is refused as a likely typo.
    #[arg(long)]
    pub(in crate::cli) force: bool,
}

#[derive(Args)]
pub(in crate::cli) struct ConfigUnsetArgs {
    #[command(flatten)]
    pub(in crate::cli) op: OpArgs,
    #[command(flatten)]
    pub(in crate::cli) layer: LayerArgs,
    /// Keys to take out of the layer.
    #[arg(required = true, value_name = "KEY")]
    pub(in crate::cli) keys: Vec<String>,
}

#[derive(Args)]
pub(in crate::cli) struct ConfigShowArgs {
    #[command(flatten)]
    pub(in crate::cli) op: OpArgs,
    /// The device.
    pub(in crate::cli) device: String,
}

#[derive(Subcommand)]
pub(in crate::cli) enum JobCmd {
    /// Queue a job: `echo TEXT...` or `exec PROGRAM [ARGS...]`, for any one
    /// device that takes it (the work queue), or once on each of --device,
    /// --group or --all.
    Submit(SubmitArgs),
    /// Show one job and its result; for an aimed job, each device's run.
    Show(ShowArgs),
    /// List recent jobs, newest first.
    List(ListArgs),
    /// Cancel a job (aimed: every run of it; or one run): what has not
    /// been handed out never is; an attempt running on a device finishes
    /// there, with no further one.
    Cancel(CancelArgs),
}

#[derive(Args)]
pub(in crate::cli) struct CancelArgs {
    #[command(flatten)]
    pub(in crate::cli) op: OpArgs,
    /// Job id (or the id of one run of an aimed job).
    pub(in crate::cli) id: u64,
}

#[derive(Clone, Copy, ValueEnum)]
pub(in crate::cli) enum JobKind {
    Echo,
    Exec,
}

#[derive(Args)]
pub(in crate::cli) struct SubmitArgs {
    #[command(flatten)]
    pub(in crate::cli) op: OpArgs,
    /// Agent-side time limit in ms (default: the hub's jobs.timeout_ms).
    #[arg(long, default_value_t = 0)]
    pub(in crate::cli) timeout_ms: u32,
    /// Re-dispatch the job if no result comes back within this many ms (default: the hub's jobs.lease_ms).
    #[arg(long, default_value_t = 0)]
    pub(in crate::cli) lease_ms: u32,
    /// Dispatches before the job fails (default: the hub's jobs.max_attempts).
    #[arg(long, default_value_t = 0)]
    pub(in crate::cli) max_attempts: u32,
    #[command(flatten)]
    pub(in crate::cli) aim: AimArgs,
    /// Wait until the job is done or failed and print its result (an aimed
    /// job: until every device's run ended).
    #[arg(long)]
    pub(in crate::cli) wait: bool,
    /// With --wait: give up waiting after this many ms.
    #[arg(long, default_value_t = 120_000)]
    pub(in crate::cli) wait_ms: u64,
    pub(in crate::cli) kind: JobKind,
    /// For echo, the text; for exec, the program and its arguments (put
    /// `--` before them when one starts with `-`: `exec -- uname -a`).
    #[arg(required = true)]
    pub(in crate::cli) args: Vec<String>,
}

#[derive(Args)]
pub(in crate::cli) struct ShowArgs {
    #[command(flatten)]
    pub(in crate::cli) op: OpArgs,
    /// Wait until the job is done or failed.
    #[arg(long)]
    pub(in crate::cli) wait: bool,
    /// With --wait: give up waiting after this many ms.
    #[arg(long, default_value_t = 120_000)]
    pub(in crate::cli) wait_ms: u64,
    /// Job id.
    pub(in crate::cli) id: u64,
}

#[derive(Args)]
pub(in crate::cli) struct ListArgs {
    #[command(flatten)]
    pub(in crate::cli) op: OpArgs,
    /// At most this many.
    #[arg(long, default_value_t = 20)]
    pub(in crate::cli) limit: u32,
}

#[derive(Args)]
pub(in crate::cli) struct BroadcastArgs {
    #[command(flatten)]
    pub(in crate::cli) op: OpArgs,
    /// Only devices in this group.
    #[arg(long, conflicts_with = "device")]
    pub(in crate::cli) group: Option<String>,
    /// Only this device.
    #[arg(long)]
    pub(in crate::cli) device: Option<String>,
    /// The announcement.
    #[arg(required = true)]
    pub(in crate::cli) text: Vec<String>,
}
