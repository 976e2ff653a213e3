//! Logging for both binaries: `tracing` to stderr, plain text when stderr is
//! not a terminal (journald adds its own timestamps and levels colours).

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The log filter could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Not a level or `target=level` list.
    #[error(
        "log filter {filter:?} is not valid ({reason}); try info, debug, or info,fleetmq_hub=debug"
    )]
    Filter {
        /// What was given.
        filter: String,
        /// Why it did not parse.
        reason: String,
    },
    /// A logger was already installed.
    #[error("installing the logger: {0}")]
    Install(String),
}

/// Installs the logger with a filter such as `info` or `info,fleetmq_agent=debug`.
pub fn init(filter: &str) -> Result<(), LogError> {
    let targets: tracing_subscriber::filter::Targets = filter.parse().map_err(
        |e: tracing_subscriber::filter::ParseError| LogError::Filter {
            filter: filter.to_string(),
            reason: e.to_string(),
        },
    )?;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(cfg!(feature = "color") && std::io::stderr().is_terminal()),
        )
        .with(targets)
        .try_init()
        .map_err(|e| LogError::Install(e.to_string()))
}
