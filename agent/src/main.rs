//! `fleetmq-agent`: the device side of fleetmq.

mod agent;
mod config;
mod control;
mod info;
mod runner;
mod spool;
mod state;
mod uplink;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::AgentConfig;

#[derive(Parser)]
#[command(
    name = "fleetmq-agent",
    version,
    about = "The fleetmq device agent: telemetry, chat, jobs and commands to and from a fleetmq hub.",
    long_about = "The fleetmq device agent.\n\nIt connects out to a hub (it never listens), sends telemetry that the hub \
acks, runs jobs and answers commands that its config allows, and receives broadcasts.\n\nExamples:\n  \
fleetmq-agent run --hub tcp://hub.lan:7750\n  fleetmq-agent run --config /etc/fleetmq/agent.toml\n  \
echo 'hello fleet' | fleetmq-agent chat --hub tcp://hub.lan:7750 --device-id pi-kitchen\n  \
fleetmq-agent print-config > agent.toml"
)]
struct Cli {
    /// Log filter: a level (error, warn, info, debug, trace) or targets like `info,fleetmq_agent=debug`.
    #[arg(long, global = true, env = "FLEETMQ_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent until Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// Run the agent and join the chat room: lines on stdin are said in the
    /// room, the room is printed on stdout; exits when stdin closes and every
    /// line is acked by the hub.
    Chat(RunArgs),
    /// Print the default configuration with every key explained.
    PrintConfig,
    /// Hand samples to the running agent: NAME=VALUE ... (integers or
    /// floats). Exits 0 once they are in its spool, 1 with the reason if not.
    Send(SendArgs),
    /// Print the running agent's status as JSON: connection, spool depth
    /// and bytes, counters (sent, acked, dropped and why), uptime, version.
    Status(LocalArgs),
    /// Write this device's CURVE key pair: DATA_DIR/agent.key (secret, mode
    /// 0600) and DATA_DIR/agent.pub, and print the line for the hub's allow list.
    Keygen(KeygenArgs),
    /// Print this build's version, architecture and libzmq, and check CURVE
    /// with a handshake over loopback (as JSON; exits 1 if CURVE fails).
    Info,
}

#[derive(Args)]
struct RunArgs {
    /// Config file (TOML; see `print-config`). Without it the embedded defaults apply.
    #[arg(long, short, env = "FLEETMQ_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// The hub's telemetry address, tcp://HOST:PORT.
    #[arg(long, env = "FLEETMQ_HUB")]
    hub: Option<String>,
    /// This device's id (default: the config's device_id, else the host name).
    #[arg(long, env = "FLEETMQ_DEVICE_ID")]
    device_id: Option<String>,
    /// Data directory for sequence numbers, job ids and unacked telemetry.
    #[arg(long, env = "FLEETMQ_AGENT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A group to join (repeatable; replaces the config's groups).
    #[arg(long = "group")]
    groups: Vec<String>,
}

#[derive(Args)]
struct LocalArgs {
    /// Config file, to find the data directory (default: the embedded defaults).
    #[arg(long, short, env = "FLEETMQ_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// The running agent's data directory (its control socket is there).
    #[arg(long, env = "FLEETMQ_AGENT_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct SendArgs {
    #[command(flatten)]
    local: LocalArgs,
    /// Samples, NAME=VALUE, e.g. room.temp_c=21.5 door.opened=1
    #[arg(required = true)]
    samples: Vec<String>,
}

#[derive(Args)]
struct KeygenArgs {
    #[command(flatten)]
    local: LocalArgs,
    /// This device's id, for the allow-list line (default: the config's, else the host name).
    #[arg(long, env = "FLEETMQ_DEVICE_ID")]
    device_id: Option<String>,
    /// Replace an existing key pair (the hub refuses this device until its
    /// allow list has the new public key).
    #[arg(long)]
    force: bool,
}

fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let cfg = AgentConfig::load(args.local.config.as_deref())?;
    let dir = args.local.data_dir.clone().unwrap_or(cfg.data_dir);
    let device = args
        .device_id
        .filter(|d| !d.is_empty())
        .or_else(|| Some(cfg.device_id).filter(|d| !d.is_empty()))
        .unwrap_or_else(config::hostname);
    fleetmq_protocol::validate_device_id(&device).context("--device-id")?;
    let pair = fleetmq_net::keys::generate()?;
    let (secret, public) = fleetmq_net::keys::write(&dir, "agent", &pair, args.force)?;
    println!(
        "secret key: {} (mode 0600; it never leaves this device)\npublic key: {}\n\
         add this line to the hub's allow list:\n{device} {}",
        secret.display(),
        public.display(),
        pair.public
    );
    Ok(())
}

/// The control socket of the agent that `args` points at.
fn control_socket(args: &LocalArgs) -> anyhow::Result<PathBuf> {
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => AgentConfig::load(args.config.as_deref())?.data_dir,
    };
    Ok(control::socket_path(&dir))
}

/// Asks the running agent; prints its answer; fails on an error reply.
fn ask(args: &LocalArgs, request: &str) -> anyhow::Result<()> {
    let reply = control::request(&control_socket(args)?, request)?;
    if let Some(reason) = reply.strip_prefix("error: ") {
        anyhow::bail!("{reason}");
    }
    println!("{reply}");
    Ok(())
}

fn config(args: RunArgs) -> anyhow::Result<AgentConfig> {
    let mut cfg = AgentConfig::load(args.config.as_deref())?;
    let mut source = args
        .config
        .as_ref()
        .map_or_else(|| "defaults".to_string(), |p| p.display().to_string());
    let mut overridden = false;
    if let Some(hub) = args.hub {
        cfg.hub = hub;
        overridden = true;
    }
    if let Some(id) = args.device_id {
        cfg.device_id = id;
        overridden = true;
    }
    if let Some(dir) = args.data_dir {
        cfg.data_dir = dir;
    }
    if !args.groups.is_empty() {
        cfg.groups = args.groups;
        overridden = true;
    }
    if overridden {
        source.push_str(" with command-line overrides");
    }
    cfg.validate(&source)?;
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = fleetmq_net::logging::init(&cli.log) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Cmd::PrintConfig => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
        Cmd::Info => {
            let info = info::info();
            match serde_json::to_string_pretty(&info) {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("error: {e}"),
            }
            if info.curve_handshake != "ok" {
                return ExitCode::FAILURE;
            }
            Ok(())
        }
        Cmd::Send(args) => {
            // Check here too, so a typo fails before the agent is asked.
            match args
                .samples
                .iter()
                .map(|w| control::parse_sample(w))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(_) => ask(&args.local, &format!("send {}", args.samples.join(" "))),
                Err(e) => Err(anyhow::anyhow!("{e}")),
            }
        }
        Cmd::Status(args) => ask(&args, "status"),
        Cmd::Keygen(args) => keygen(args),
        Cmd::Run(args) => start(args, false),
        Cmd::Chat(args) => start(args, true),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: RunArgs, chat: bool) -> anyhow::Result<()> {
    let cfg = config(args)?;
    tracing::warn!(
        "hub traffic is plaintext (CURVE comes with the security work): use a trusted network only"
    );
    let shutdown = fleetmq_net::Shutdown::install().context("installing signal handlers")?;
    agent::run(cfg, agent::Options { chat }, shutdown)
}
