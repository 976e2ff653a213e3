//! `fleetmq-hub run`: from flags to a running hub; and the allow list
//! file the enrolment subcommands edit.

use std::path::PathBuf;

use anyhow::Context as _;

use super::{EnrolArgs, RunArgs};
use crate::config::{HubConfig, Listen};

/// Loads the config, applies the flags over it, and runs the hub until a
/// signal stops it.
pub(super) fn run_hub(args: RunArgs) -> anyhow::Result<()> {
    let mut config = HubConfig::load(args.config.as_deref())?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(bind) = args.bind {
        let (host, port) = bind.rsplit_once(':').with_context(|| {
            format!("--bind {bind:?} needs HOST:PORT, e.g. 0.0.0.0:7750 or 127.0.0.1:*")
        })?;
        let base = match port {
            "*" | "0" => None,
            p => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0 && *p <= u16::MAX - 5)
                    .with_context(|| {
                        format!(
                            "--bind {bind:?}: port {p:?} must be 1-65530, or * to let the OS pick"
                        )
                    })?,
            ),
        };
        // Only the agent sockets and the local ones move; a remote
        // operator socket stays where the config put it.
        let remote = std::mem::take(&mut config.listen.operator_remote);
        config.listen = Listen::on(host, base);
        config.listen.operator_remote = remote;
        config.validate("--bind")?;
    }
    if let Some(nats) = args.nats {
        config.cluster.servers = nats
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
    }
    if let Some(name) = args.name {
        config.cluster.name = name;
    }
    config.validate("--nats/--name")?;
    if args.insecure {
        tracing::warn!(
            "--insecure: agent traffic is plaintext and unauthenticated; anyone who reaches these ports can pose as any device. Use a trusted network only"
        );
    }
    let shutdown = fleetmq_net::Shutdown::install().context("installing signal handlers")?;
    open_files_for_a_fleet();
    Ok(crate::driver::run(config, args.insecure, shutdown)?)
}

/// Each connected agent holds five connections, each an open file: raises
/// the soft open-files limit to the hard one (a default soft limit of 1024
/// would stop the hub at about 200 agents) and says how many agents fit.
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
    let agents = open_files.saturating_sub(64) / 5;
    if raised {
        tracing::info!(
            open_files,
            agents,
            "open-files limit: five per connected agent"
        );
    } else {
        tracing::warn!(
            open_files,
            agents,
            "could not raise the open-files limit; for a larger fleet raise LimitNOFILE= (or ulimit -n)"
        );
    }
}

/// The allow list file the enrolment subcommands edit.
pub(super) fn allow_list(at: &EnrolArgs) -> anyhow::Result<PathBuf> {
    let mut config = HubConfig::load(at.config.as_deref())?;
    if let Some(dir) = &at.data_dir {
        config.data_dir = dir.clone();
    }
    Ok(config.allow_list_path())
}
