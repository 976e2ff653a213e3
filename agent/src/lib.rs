//! The fleetmq agent: the device side of fleetmq, one small static binary
//! for every Raspberry Pi.
//!
//! # Layout
//!
//! | path | what lives there |
//! |---|---|
//! | [`start`], [`cli`] | the command line: parsed by hand ([`cli`], lexopt, small), then each subcommand run ([`start`]) |
//! | [`config`] | the TOML config with the embedded example; [`reload`] says what a SIGHUP changes |
//! | [`agent`] | the event loop: the only code that owns zmq sockets (hub DEALER, SUB, PULL, PUSH, commands DEALER) |
//! | [`telemetry`] | the disk spool ([`telemetry::spool`]) and the in-flight window of batches awaiting acks ([`telemetry::uplink`]) |
//! | [`sources`] | local sources: host metrics from /proc and /sys, StatsD/Influx ingest, and the control socket (`status`, `send`, `reload`) |
//! | [`runner`] | runs allow-listed programs for jobs and exec commands, with time and output limits |
//! | [`state`] | small files that survive restarts: the sequence number block, the jobs already run |
//! | [`redial`] | when to dial a hub that refused us again, with jittered back-off |
//! | [`info`] | `fleetmq-agent info`: the build and whether its libzmq can do CURVE |
//!
//! # A record's path
//!
//! ```text
//!  host metric / StatsD line / `send` / chat line
//!     ─► agent::accept ─► telemetry::spool (on disk, crash-safe)
//!     ─► telemetry::uplink packs a batch (seq) ─► DEALER ─► hub
//!     ─► the hub stores it, acks seq ─► uplink frees the window
//!     ─► spool drops the records acked
//! ```

pub mod cli;
pub mod config;
pub mod driver;
pub mod info;
pub mod redial;
pub mod reload;

pub mod sources;
pub mod start;
pub mod state;
pub mod telemetry;
pub mod work;
