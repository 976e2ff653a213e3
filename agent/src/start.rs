//! What each `fleetmq-agent` subcommand does, from the parsed command line
//! ([`crate::cli`]) to the running agent ([`crate::driver::run`]) or a
//! question to a running one over its control socket.

use std::path::PathBuf;
use std::process::ExitCode;

use fleetmq_net::{Security, error_chain};

use crate::cli::{self, Cmd, LocalArgs, RunArgs};
use crate::config::{self, AgentConfig};
use crate::{driver, info};

/// Why a subcommand failed: one message for the operator, causes included.
/// (The agent's edge keeps no error crate of its own: every byte counts
/// on a Pi Zero.)
#[derive(Debug)]
pub struct Failed(String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for Failed {
    fn from(e: E) -> Failed {
        Failed(error_chain(&e))
    }
}

/// A failure with what was being done in front of it.
trait Doing<T> {
    fn doing(self, what: &str) -> Result<T, Failed>;
}

impl<T, E: std::error::Error> Doing<T> for Result<T, E> {
    fn doing(self, what: &str) -> Result<T, Failed> {
        self.map_err(|e| Failed(format!("{what}: {}", error_chain(&e))))
    }
}

/// Fails with `message`.
fn fail<T>(message: impl Into<String>) -> Result<T, Failed> {
    Err(Failed(message.into()))
}

/// `keygen`'s options.
struct KeygenArgs {
    local: LocalArgs,
    device_id: Option<String>,
    force: bool,
}

fn keygen(args: KeygenArgs) -> Result<(), Failed> {
    let cfg = AgentConfig::load(args.local.config.as_deref())?;
    let dir = args.local.data_dir.clone().unwrap_or(cfg.data_dir);
    let device = args
        .device_id
        .filter(|d| !d.is_empty())
        .or_else(|| Some(cfg.device_id).filter(|d| !d.is_empty()))
        .unwrap_or_else(config::hostname);
    fleetmq_protocol::validate_device_id(&device).doing("--device-id")?;
    let pair = fleetmq_net::keys::generate()?;
    let (secret, public) = fleetmq_net::keys::write(&dir, "agent", &pair, args.force)?;
    println!(
        "secret key: {} (mode 0600; it never leaves this device)\npublic key: {}\n\
         enrol this device on the hub with:\nfleetmq-hub allow {device} {}",
        secret.display(),
        public.display(),
        fleetmq_net::keys::quoted(&pair.public)
    );
    Ok(())
}

/// The control socket of the agent that `args` points at.
fn control_socket(args: &LocalArgs) -> Result<PathBuf, Failed> {
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => AgentConfig::load(args.config.as_deref())?.data_dir,
    };
    Ok(crate::sources::control::socket_path(&dir))
}

/// `config get KEY`: what the hub's configuration set, as applied here
/// (read from DATA_DIR/remote, so it works while the agent is down).
fn config_get(args: &LocalArgs, key: &str) -> Result<(), Failed> {
    let dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => AgentConfig::load(args.config.as_deref())?.data_dir,
    };
    let remote = crate::remote::load(&dir).map_err(Failed)?;
    match remote.values.get(key) {
        Some(v) => {
            println!("{v}");
            Ok(())
        }
        None => fail(format!(
            "{key} is not set by the hub's configuration here (version {}): set it with `fleetmq-hub config set {key}=VALUE`",
            remote.version
        )),
    }
}

/// Asks the running agent; prints its answer; fails on an error reply.
fn ask(args: &LocalArgs, request: &str) -> Result<(), Failed> {
    let reply = crate::sources::control::request(&control_socket(args)?, request)?;
    if let Some(reason) = reply.strip_prefix("error: ") {
        return fail(reason);
    }
    println!("{reply}");
    Ok(())
}

fn config(args: RunArgs) -> Result<AgentConfig, Failed> {
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
    if let Some(key) = args.hub_key {
        cfg.hub_public_key = fleetmq_net::keys::key_or_file(&key).doing("--hub-key")?;
        overridden = true;
    }
    if overridden {
        source.push_str(" with command-line overrides");
    }
    cfg.validate(&source)?;
    Ok(cfg)
}

/// The whole of `fleetmq-agent`: parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os().skip(1)) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = fleetmq_net::logging::init(&cli.log) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Cmd::Help => {
            print!("{}", cli::HELP);
            Ok(())
        }
        Cmd::Version => {
            println!("fleetmq-agent {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
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
        Cmd::Send { local, samples } => {
            // Check here too, so a typo fails before the agent is asked.
            match crate::sources::control::parse_send(samples.iter().map(String::as_str)) {
                Ok(_) => ask(&local, &format!("send {}", samples.join(" "))),
                Err(e) => fail(e),
            }
        }
        Cmd::Status(args) => ask(&args, "status"),
        Cmd::ConfigGet { local, key } => config_get(&local, &key),
        Cmd::Keygen {
            local,
            device_id,
            force,
        } => keygen(KeygenArgs {
            local,
            device_id,
            force,
        }),
        Cmd::CheckConfig(args) => check_config(args),
        Cmd::Run(args) => start(args, None),
        Cmd::Chat(args) => {
            let wait = args.wait.unwrap_or(driver::CHAT_WAIT);
            start(args, Some(wait))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

const NO_HUB_KEY: &str = "no hub public key: set hub_public_key in the config or pass --hub-key (the Z85 line of the hub's DATA_DIR/hub.pub, which the hub prints at start); or --insecure for a plaintext hub";

/// `check-config`: the configuration `run` would start with (the file,
/// the environment and the flags) checked as `run` checks it, and the key
/// pair it would use, without starting; one line saying what it would
/// run, or the error `run` would stop with.
fn check_config(args: RunArgs) -> Result<(), Failed> {
    let insecure = args.insecure;
    let source = (args.config.as_ref()).map_or_else(
        || "no config file (the defaults)".to_string(),
        |p| p.display().to_string(),
    );
    let cfg = config(args)?;
    let security = if insecure {
        "in plaintext (--insecure)"
    } else if cfg.hub_public_key.is_empty() {
        return fail(NO_HUB_KEY);
    } else {
        match fleetmq_net::keys::load(&cfg.data_dir, "agent")
            .doing("reading this device's CURVE key pair (DATA_DIR/agent.key)")?
        {
            Some(_) => "over CURVE, with this device's key pair",
            None => "over CURVE, with a key pair made at first start (or by keygen)",
        }
    };
    println!(
        "ok: {source}: device {} connects to {} {security}; data in {}",
        cfg.device_id,
        cfg.hub,
        cfg.data_dir.display()
    );
    Ok(())
}

/// Runs the agent; `chat` is chat mode's wait for acks once stdin closes.
fn start(args: RunArgs, chat: Option<std::time::Duration>) -> Result<(), Failed> {
    let insecure = args.insecure;
    let reload = {
        let args = args.clone();
        Box::new(move || config(args.clone()).map_err(|e| e.0.into()))
    };
    let cfg = config(args)?;
    let security = if insecure {
        tracing::warn!(
            "--insecure: hub traffic is plaintext and unauthenticated; use a trusted network only"
        );
        Security::Plaintext
    } else {
        if cfg.hub_public_key.is_empty() {
            return fail(NO_HUB_KEY);
        }
        let (ours, made) = fleetmq_net::keys::load_or_create(&cfg.data_dir, "agent")
            .doing("loading this device's CURVE key pair (DATA_DIR/agent.key)")?;
        if made {
            tracing::warn!(
                public_key = %fleetmq_net::keys::quoted(&ours.public),
                "made this device's key pair; enrol it on the hub with: fleetmq-hub allow {} {}",
                cfg.device_id,
                fleetmq_net::keys::quoted(&ours.public)
            );
        }
        Security::CurveClient {
            server: cfg.hub_public_key.clone(),
            ours,
        }
    };
    let shutdown = fleetmq_net::Shutdown::install().doing("installing signal handlers")?;
    let options = driver::Options {
        chat,
        security,
        reload,
    };
    Ok(driver::run(cfg, options, shutdown)?)
}
