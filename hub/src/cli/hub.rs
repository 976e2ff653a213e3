//! `fleetmq-hub run`: from flags to a running hub; and the allow list
//! file the enrolment subcommands edit.

use std::path::PathBuf;

use anyhow::Context as _;

use super::{EnrolArgs, RunArgs};
use crate::config::{HubConfig, Listen};

/// The configuration `run` starts with: the file (or the defaults), and
/// the flags over it.
fn configured(args: &RunArgs) -> anyhow::Result<HubConfig> {
    let mut config = HubConfig::load(args.config.as_deref())?;
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if let Some(bind) = &args.bind {
        apply_bind(&mut config, bind)?;
    }
    if let Some(nats) = &args.nats {
        config.cluster.servers = nats
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
    }
    if let Some(name) = &args.name {
        config.cluster.name = name.clone();
    }
    config.validate("--nats/--name")?;
    Ok(config)
}

/// `check-config`: the configuration `run` would start with, and the files
/// it names, checked without starting; prints what it would run.
pub(super) fn check_config(args: RunArgs) -> anyhow::Result<()> {
    let config = configured(&args)?;
    let source = (args.config.as_ref()).map_or_else(
        || "no config file (the defaults)".to_string(),
        |p| p.display().to_string(),
    );
    print!(
        "{}",
        crate::driver::files::check(&config, &source, args.insecure)?
    );
    Ok(())
}

/// Loads the config, applies the flags over it, and runs the hub until a
/// signal stops it.
pub(super) fn run_hub(args: RunArgs) -> anyhow::Result<()> {
    let config = configured(&args)?;
    if args.insecure {
        tracing::warn!(
            "--insecure: agent traffic is plaintext and unauthenticated; anyone who reaches these ports can pose as any device. Use a trusted network only"
        );
    }
    let shutdown = fleetmq_net::Shutdown::install().context("installing signal handlers")?;
    open_files_for_a_fleet();
    Ok(crate::driver::run(config, args.insecure, shutdown)?)
}

/// `--bind HOST:PORT`: the agent sockets on HOST at PORT and the next four
/// ports, the operator socket on 127.0.0.1 at PORT+5 and the HTTP side at
/// PORT+6 (every port the OS's pick for `*`). What the config placed
/// itself stays: the remote operator socket, and an HTTP side it turned
/// off (`listen.http = ""`) stays off.
fn apply_bind(config: &mut HubConfig, bind: &str) -> anyhow::Result<()> {
    let (host, port) = bind.rsplit_once(':').with_context(|| {
        format!("--bind {bind:?} needs HOST:PORT, e.g. 0.0.0.0:7750 or 127.0.0.1:*")
    })?;
    let base = match port {
        "*" | "0" => None,
        p => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0 && *p <= u16::MAX - 6)
                .with_context(|| {
                    format!("--bind {bind:?}: port {p:?} must be 1-65529, or * to let the OS pick")
                })?,
        ),
    };
    let remote = std::mem::take(&mut config.listen.operator_remote);
    let http_off = config.listen.http.is_empty();
    // A Unix operator socket has no port, and keeps the operator's
    // commands to the hub's user: --bind does not open it to every user.
    let unix = fleetmq_net::endpoint::ipc_path(&config.listen.operator)
        .is_some()
        .then(|| std::mem::take(&mut config.listen.operator));
    config.listen = Listen::on(host, base);
    config.listen.operator_remote = remote;
    if let Some(operator) = unix {
        config.listen.operator = operator;
    }
    if http_off {
        config.listen.http.clear();
    }
    config.validate("--bind")?;
    Ok(())
}

/// Each connected agent holds one connection (five on the separate
/// sockets), each an open file: raises the soft open-files limit to the
/// hard one (a default soft limit of 1024 would stop the hub at about 1,000
/// agents, 200 on five) and says how many agents fit.
pub(super) fn open_files_for_a_fleet() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!("could not read the open-files limit");
        return;
    }
    let mut raised = true;
    // An unlimited hard limit still stops at the kernel's nr_open.
    let most = lim.rlim_max.min(1 << 20);
    if lim.rlim_cur < most {
        let want = libc::rlimit {
            rlim_cur: most,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        raised = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0;
        if raised {
            lim = want;
        }
    }
    let open_files = lim.rlim_cur;
    let agents = open_files.saturating_sub(64);
    let on_five = agents / 5;
    if raised {
        tracing::info!(
            open_files,
            agents,
            on_five,
            "open-files limit: one per agent on one connection, five per agent on the separate sockets"
        );
    } else {
        tracing::warn!(
            open_files,
            agents,
            on_five,
            "could not raise the open-files limit; for a larger fleet raise LimitNOFILE= (or ulimit -n)"
        );
    }
}

/// The allow list file the enrolment subcommands edit.
pub(super) fn allow_list(at: &EnrolArgs) -> anyhow::Result<PathBuf> {
    Ok(config_at(at)?.allow_list_path())
}

/// The hub's configuration, with `--data-dir` over its data_dir.
pub(super) fn config_at(at: &EnrolArgs) -> anyhow::Result<HubConfig> {
    let mut config = HubConfig::load(at.config.as_deref())?;
    if let Some(dir) = &at.data_dir {
        config.data_dir = dir.clone();
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_moves_the_sockets_and_keeps_what_the_config_placed() {
        let mut config = HubConfig::default();
        config.listen.operator_remote = "tcp://0.0.0.0:7800".into();
        apply_bind(&mut config, "0.0.0.0:9000").unwrap();
        let l = &config.listen;
        assert_eq!(l.telemetry, "tcp://0.0.0.0:9000");
        assert_eq!(l.commands, "tcp://0.0.0.0:9004");
        assert_eq!(l.operator, "tcp://127.0.0.1:9005");
        assert_eq!(l.http, "127.0.0.1:9006");
        assert_eq!(l.operator_remote, "tcp://0.0.0.0:7800");

        let mut quiet = HubConfig::default();
        quiet.listen.http = String::new();
        apply_bind(&mut quiet, "127.0.0.1:*").unwrap();
        assert_eq!(quiet.listen.telemetry, "tcp://127.0.0.1:*");
        assert_eq!(quiet.listen.http, "", "an HTTP side turned off stays off");

        let mut private = HubConfig::default();
        private.listen.operator = "ipc://operator.sock".into();
        apply_bind(&mut private, "127.0.0.1:*").unwrap();
        assert_eq!(
            private.listen.operator, "ipc://operator.sock",
            "an operator socket only the hub's user may open stays so"
        );
    }

    #[test]
    fn bind_refuses_what_it_cannot_place_and_says_how() {
        let mut config = HubConfig::default();
        let err = |c: &mut HubConfig, bind: &str| apply_bind(c, bind).unwrap_err().to_string();
        assert!(err(&mut config, "7750").contains("needs HOST:PORT"));
        assert!(err(&mut config, "0.0.0.0:65530").contains("must be 1-65529"));
        assert!(err(&mut config, "0.0.0.0:x").contains("or * to let the OS pick"));
        assert_eq!(config.listen, HubConfig::default().listen, "nothing moved");
    }
}
