//! The fleetmq agent: the device side of fleetmq, one small static binary
//! for every Raspberry Pi.
//!
//! # Layout
//!
//! | path | what lives there |
//! |---|---|
//! | [`start`], [`cli`] | the command line: parsed by hand ([`cli`], lexopt, small), then each subcommand run ([`start`]); the binary's edge, where errors become one message (no error crate: the agent counts its bytes) |
//! | [`config`] | the TOML config with the embedded example; [`reload`] says what a SIGHUP changes |
//! | [`driver`] | the event loop, the only code that owns zmq sockets: `mod.rs` (loop, stop), `timers.rs` (the periodic work), `hub.rs` (the link to the hub), `work.rs` (jobs and commands), `local.rs` (samples, ingest, control socket, status) |
//! | [`telemetry`] | the [`telemetry::outbox`]: one book for a record's life, over the disk spool ([`telemetry::spool`]) and the in-flight window ([`telemetry::uplink`]) |
//! | [`work`] | what this device does with a job or a command, decided from its allow lists alone; [`work::runner`] runs programs with time and output limits |
//! | [`sources`] | local sources: host metrics from /proc and /sys, StatsD/Influx ingest, log files followed line by line, the control socket (`status`, `send`, `reload`) |
//! | [`redial`] | when to dial a hub that refused us again, with jittered back-off |
//! | [`link`] | why the hub has not welcomed us, said within a few seconds |
//! | [`state`] | small files that survive restarts: the sequence number block, the jobs already run |
//! | [`info`] | `fleetmq-agent info`: the build, and whether its libzmq can do CURVE |
//!
//! The decisions (the outbox, the plans in [`work`], [`redial`],
//! [`reload`]) take the time and their inputs and do no network I/O; they
//! are unit-tested without sockets. The driver carries them out.
//!
//! # A record's path
//!
//! ```text
//!  host metric / StatsD line / `send` / chat line / log file line
//!     ─► driver::local ─► Outbox::accept ─► spool (on disk, crash-safe)
//!     ─► Outbox::pack: next seq, batch recorded in the spool, in flight
//!     ─► driver::hub sends it on the DEALER ─► the hub stores it, acks seq
//!     ─► Outbox::ack: out of the window; spool segments all acked deleted
//! ```
//!
//! A batch not acked in time is resent (Outbox::resends, with backoff and
//! jitter), and everything in flight is resent on a new connection; after a
//! crash the spool gives back what was unacked under the same sequence
//! numbers, so the hub's (device, seq) dedup keeps it stored once.

pub mod cli;
pub mod config;
pub mod driver;
pub mod info;
pub mod link;
pub mod may_set;
pub mod redial;
pub mod reload;
pub mod remote;
pub mod sources;
pub mod start;
pub mod state;
pub mod telemetry;
pub mod work;
