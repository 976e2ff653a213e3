//! The agent's command line, parsed with lexopt: a small parser keeps the
//! binary small (clap cost the static agent about 90 KB), at the price of
//! writing the help text here by hand.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

pub const HELP: &str = "\
The fleetmq device agent.

It connects out to a hub (it never listens), sends telemetry that the hub
acks, runs jobs and answers commands that its config allows, and receives
broadcasts.

Usage: fleetmq-agent [--log FILTER] COMMAND [OPTIONS]

Commands:
  run           Run the agent until Ctrl-C or SIGTERM; SIGHUP reloads the
                config (host metrics, intervals, allow lists; it logs what
                else changed and needs a restart)
  chat          Run the agent and join the chat room: lines on stdin are said
                in the room, the room is printed on stdout; exits 0 when stdin
                closes and every line is acked by the hub, 1 with the reason
                if they are not acked within --wait (they stay in the spool)
  send          Hand samples to the running agent: NAME=VALUE ... (integers or
                floats), then optionally tags KEY=TEXT ... for all of them;
                exits 0 once they are in its spool, 1 with the reason
  status        Print the running agent's status as JSON: connection, spool,
                counters (sent, acked, dropped and why), uptime, version
  config get KEY
                Print the value the hub's configuration set for KEY (an
                app.* key, or any it applied); exits 1 if it set none
  keygen        Write this device's CURVE key pair (DATA_DIR/agent.key, mode
                0600, and agent.pub; run also makes them if missing) and
                print the command that enrols it on the hub
  print-config  Print the default configuration with every key explained
  check-config  Check the configuration run would start with (the file, the
                environment and the flags, as run takes them) and the key
                pair, without starting: exits 0 with what it would run, or 1
                with the error run would stop with (for a deploy tool, and
                before systemctl reload or restart)
  info          Print this build's version, arch and libzmq, and check CURVE
                with a handshake over loopback (JSON; exits 1 if CURVE fails)

Options for run, chat and check-config:
  -c, --config FILE     Config file (TOML; see print-config) [env: FLEETMQ_AGENT_CONFIG]
      --hub ENDPOINT    The hub's telemetry address, tcp://HOST:PORT [env: FLEETMQ_HUB]
      --device-id ID    This device's id (default: the config's, else the host name)
                        [env: FLEETMQ_DEVICE_ID]
      --data-dir DIR    Spool, sequence numbers and job ids [env: FLEETMQ_AGENT_DATA_DIR]
      --group GROUP     A group to join (repeatable; replaces the config's groups)
      --hub-key KEY     The hub's public key (Z85), or the hub.pub file holding it
                        (default: the config's hub_public_key) [env: FLEETMQ_HUB_KEY]
      --insecure        Plaintext, no keys: only for a hub run with --insecure
                        on a trusted network
      --wait DURATION   chat: how long to wait for the hub's acks once stdin
                        closes, e.g. 500ms, 30s, 5m (default 30s)

Options for send, status, config and keygen:
  -c, --config FILE     Config file, to find the data directory [env: FLEETMQ_AGENT_CONFIG]
      --data-dir DIR    The agent's data directory [env: FLEETMQ_AGENT_DATA_DIR]
      --device-id ID    keygen: the id for the allow-list line [env: FLEETMQ_DEVICE_ID]
      --force           keygen: replace an existing key pair

Global options:
      --log FILTER      Log filter: a level (error, warn, info, debug, trace) or
                        targets like info,fleetmq_agent=debug [env: FLEETMQ_LOG]
  -h, --help            Print this help
  -V, --version         Print the version

Examples:
  fleetmq-agent run --hub tcp://hub.lan:7750 --hub-key hub.pub
  fleetmq-agent run --config /etc/fleetmq/agent.toml
  echo 'hello fleet' | fleetmq-agent chat --hub tcp://hub.lan:7750 --device-id pi-kitchen
  fleetmq-agent send room.temp_c=21.5 door.opened=1
  fleetmq-agent send disk.free_bytes=123456 mount=/data
  fleetmq-agent config get app.greeting
  echo 'door.opened:1|c' > /dev/udp/127.0.0.1/8125   # StatsD (bash)
  fleetmq-agent print-config > agent.toml
  fleetmq-agent check-config --config /etc/fleetmq/agent.toml
";

/// Options of `run` and `chat`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RunArgs {
    pub config: Option<PathBuf>,
    pub hub: Option<String>,
    pub device_id: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub groups: Vec<String>,
    pub hub_key: Option<String>,
    pub insecure: bool,
    /// `chat --wait`: how long to wait for acks once stdin closes.
    pub wait: Option<Duration>,
}

/// Options of the commands that talk to, or set up, a local agent.
#[derive(Debug, Default, PartialEq)]
pub struct LocalArgs {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, PartialEq)]
pub enum Cmd {
    Run(RunArgs),
    Chat(RunArgs),
    PrintConfig,
    /// `check-config`: run's options.
    CheckConfig(RunArgs),
    Send {
        local: LocalArgs,
        samples: Vec<String>,
    },
    Status(LocalArgs),
    /// `config get KEY`.
    ConfigGet {
        local: LocalArgs,
        key: String,
    },
    Keygen {
        local: LocalArgs,
        device_id: Option<String>,
        force: bool,
    },
    Info,
    Help,
    Version,
}

#[derive(Debug, PartialEq)]
pub struct Cli {
    pub log: String,
    pub command: Cmd,
}

/// A usage error: what was wrong, and where to read more.
#[derive(Debug, thiserror::Error)]
#[error("{0}\nSee `fleetmq-agent --help`.")]
pub struct UsageError(String);

impl From<lexopt::Error> for UsageError {
    fn from(e: lexopt::Error) -> Self {
        UsageError(e.to_string())
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn string(v: OsString) -> Result<String, UsageError> {
    v.into_string()
        .map_err(|v| UsageError(format!("{v:?} is not valid UTF-8")))
}

/// A duration as `--wait` takes it: a whole number and a unit, `ms`, `s`,
/// `m` or `h` (a bare number is seconds).
fn duration(text: &str) -> Result<Duration, UsageError> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let scale = match unit {
        "ms" => Some(1),
        "" | "s" => Some(1_000),
        "m" => Some(60_000),
        "h" => Some(3_600_000),
        _ => None,
    };
    match (number.parse::<u64>(), scale) {
        (Ok(n), Some(scale)) => Ok(Duration::from_millis(n.saturating_mul(scale))),
        _ => Err(UsageError(format!(
            "--wait {text:?} is not a duration: write a whole number and a unit, e.g. 500ms, 30s, 5m or 1h"
        ))),
    }
}

/// Parses `args` (without the program name).
pub fn parse<I>(args: I) -> Result<Cli, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut p = lexopt::Parser::from_args(args);
    let mut log = env("FLEETMQ_LOG").unwrap_or_else(|| "info".into());
    let mut name: Option<String> = None;
    let mut run = RunArgs::default();
    let mut local = LocalArgs::default();
    let mut device_id = None;
    let mut force = false;
    let mut samples = Vec::new();
    let mut help = false;
    while let Some(arg) = p.next()? {
        let cmd = name.as_deref();
        // The commands that take run's options.
        let runs = matches!(cmd, Some("run" | "chat" | "check-config"));
        match arg {
            Long("log") => log = string(p.value()?)?,
            Short('h') | Long("help") => help = true,
            Short('V') | Long("version") if cmd.is_none() => {
                return Ok(Cli {
                    log,
                    command: Cmd::Version,
                });
            }
            Value(v) if cmd.is_none() => name = Some(string(v)?),
            Short('c') | Long("config") if cmd.is_some() => {
                let file = PathBuf::from(p.value()?);
                run.config = Some(file.clone());
                local.config = Some(file);
            }
            Long("data-dir") if cmd.is_some() => {
                let dir = PathBuf::from(p.value()?);
                run.data_dir = Some(dir.clone());
                local.data_dir = Some(dir);
            }
            Long("hub") if runs => run.hub = Some(string(p.value()?)?),
            Long("group") if runs => run.groups.push(string(p.value()?)?),
            Long("hub-key") if runs => run.hub_key = Some(string(p.value()?)?),
            Long("insecure") if runs => run.insecure = true,
            Long("device-id") if runs || cmd == Some("keygen") => {
                let id = string(p.value()?)?;
                run.device_id = Some(id.clone());
                device_id = Some(id);
            }
            Long("force") if cmd == Some("keygen") => force = true,
            Long("wait") if cmd == Some("chat") => run.wait = Some(duration(&string(p.value()?)?)?),
            Value(v) if matches!(cmd, Some("send" | "config")) => samples.push(string(v)?),
            other => {
                let option = !matches!(other, Value(_));
                let what = other.unexpected().to_string();
                return Err(UsageError(match cmd {
                    Some(c) => format!("{what} (for `fleetmq-agent {c}`)"),
                    // `fleetmq-agent --data-dir D status`: say where it goes.
                    None if option => format!(
                        "{what} before the command: write the command first, then its \
                         options (fleetmq-agent COMMAND [OPTIONS]; --log may go first)"
                    ),
                    None => what,
                }));
            }
        }
    }
    if help {
        return Ok(Cli {
            log,
            command: Cmd::Help,
        });
    }
    let from_env = |run: &mut RunArgs, local: &mut LocalArgs| {
        let config = env("FLEETMQ_AGENT_CONFIG").map(PathBuf::from);
        let data_dir = env("FLEETMQ_AGENT_DATA_DIR").map(PathBuf::from);
        run.config = run.config.take().or_else(|| config.clone());
        run.data_dir = run.data_dir.take().or_else(|| data_dir.clone());
        run.hub = run.hub.take().or_else(|| env("FLEETMQ_HUB"));
        run.hub_key = run.hub_key.take().or_else(|| env("FLEETMQ_HUB_KEY"));
        run.device_id = run.device_id.take().or_else(|| env("FLEETMQ_DEVICE_ID"));
        local.config = local.config.take().or(config);
        local.data_dir = local.data_dir.take().or(data_dir);
    };
    from_env(&mut run, &mut local);
    let command = match name.as_deref() {
        Some("run") => Cmd::Run(run),
        Some("chat") => Cmd::Chat(run),
        Some("print-config") => Cmd::PrintConfig,
        Some("check-config") => Cmd::CheckConfig(run),
        Some("info") => Cmd::Info,
        Some("status") => Cmd::Status(local),
        Some("send") if samples.is_empty() => {
            return Err(UsageError(
                "send needs at least one NAME=VALUE, e.g. `fleetmq-agent send room.temp_c=21.5`"
                    .into(),
            ));
        }
        Some("send") => Cmd::Send { local, samples },
        Some("config") => match samples.as_slice() {
            [get, key] if get == "get" => Cmd::ConfigGet {
                local,
                key: key.clone(),
            },
            _ => {
                return Err(UsageError(
                    "config takes `get KEY`, e.g. `fleetmq-agent config get app.greeting`".into(),
                ));
            }
        },
        Some("keygen") => Cmd::Keygen {
            local,
            device_id: device_id.or_else(|| env("FLEETMQ_DEVICE_ID")),
            force,
        },
        Some(other) => return Err(UsageError(format!("unknown command {other:?}"))),
        None => {
            return Err(UsageError(
                "a command is needed: run, chat, send, status, config, keygen, print-config, check-config or info".into(),
            ));
        }
    };
    Ok(Cli { log, command })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_their_options_parse() {
        let cli = parse([
            "--log",
            "debug",
            "run",
            "-c",
            "a.toml",
            "--hub",
            "tcp://h:1",
            "--device-id",
            "pi-1",
            "--data-dir",
            "/d",
            "--group",
            "north",
            "--group",
            "lab",
        ])
        .unwrap();
        assert_eq!(cli.log, "debug");
        assert_eq!(
            cli.command,
            Cmd::Run(RunArgs {
                config: Some("a.toml".into()),
                hub: Some("tcp://h:1".into()),
                device_id: Some("pi-1".into()),
                data_dir: Some("/d".into()),
                groups: vec!["north".into(), "lab".into()],
                hub_key: None,
                insecure: false,
                wait: None,
            })
        );
        let chat = parse(["chat", "--wait", "5m"]).unwrap();
        assert!(
            matches!(chat.command, Cmd::Chat(RunArgs { wait: Some(w), .. }) if w == Duration::from_secs(300)),
            "{chat:?}"
        );
        let send = parse(["send", "--data-dir", "/d", "a=1", "b=2.5"]).unwrap();
        assert_eq!(
            send.command,
            Cmd::Send {
                local: LocalArgs {
                    config: None,
                    data_dir: Some("/d".into())
                },
                samples: vec!["a=1".into(), "b=2.5".into()],
            }
        );
        let keygen = parse(["keygen", "--force", "--device-id", "pi-2"]).unwrap();
        assert!(
            matches!(keygen.command, Cmd::Keygen { force: true, device_id: Some(ref d), .. } if d == "pi-2")
        );
        // check-config takes what run takes, so it checks what run would use.
        let check = parse([
            "check-config",
            "-c",
            "a.toml",
            "--hub",
            "tcp://h:1",
            "--hub-key",
            "hub.pub",
            "--group",
            "north",
            "--insecure",
        ])
        .unwrap();
        let Cmd::CheckConfig(args) = check.command else {
            panic!("{:?}", check.command)
        };
        assert_eq!(args.config, Some(PathBuf::from("a.toml")));
        assert_eq!(args.hub.as_deref(), Some("tcp://h:1"));
        assert_eq!(args.hub_key.as_deref(), Some("hub.pub"));
        assert_eq!(args.groups, ["north"]);
        assert!(args.insecure);
        assert_eq!(parse(["info"]).unwrap().command, Cmd::Info);
        assert_eq!(parse(["run", "--help"]).unwrap().command, Cmd::Help);
        assert_eq!(parse(["--version"]).unwrap().command, Cmd::Version);
    }

    #[test]
    fn mistakes_say_what_was_wrong() {
        let err = |args: &[&str]| parse(args.iter().copied()).unwrap_err().to_string();
        assert!(err(&[]).contains("a command is needed"));
        assert!(err(&["launch"]).contains("unknown command \"launch\""));
        let e = err(&["run", "--force"]);
        assert!(
            e.contains("--force") && e.contains("fleetmq-agent run"),
            "{e}"
        );
        assert!(err(&["status", "--hub", "x"]).contains("--hub"));
        assert!(err(&["send"]).contains("at least one NAME=VALUE"));
        assert!(err(&["run", "--hub"]).contains("--hub"), "a missing value");
        assert!(err(&["info", "extra"]).contains("extra"));
        assert!(
            err(&["run", "--wait", "5s"]).contains("--wait"),
            "chat's only"
        );
        assert!(err(&["check-config", "--wait", "5s"]).contains("--wait"));
        assert!(err(&["check-config", "--force"]).contains("fleetmq-agent check-config"));
        for bad in ["5 s", "-1s", "1.5s", "5d", "s", ""] {
            let e = err(&["chat", "--wait", bad]);
            assert!(
                e.contains("not a duration") && e.contains("30s"),
                "{bad}: {e}"
            );
        }
        let e = err(&["--data-dir", "d", "status"]);
        assert!(
            e.contains("--data-dir") && e.contains("write the command first"),
            "{e}"
        );
    }
}
