//! The fleetmq hub: stores what devices send, knows who is online, leases
//! jobs, brokers commands, and is the operator's command line and web page.
//!
//! # Layout
//!
//! | path | what lives there |
//! |---|---|
//! | [`core`] | every decision, no sockets: admission, presence, telemetry, commands, jobs, operator requests ([`core::Core`]) |
//! | [`driver`] | the only code that touches zmq: binds, polls, answers ZAP, reads socket monitors, carries out the core's [`core::Action`]s |
//! | [`store`] | SQLite: devices, telemetry batches, chat, jobs, the command log |
//! | [`enrolment`] | the allow list file: format, `allow`/`revoke` edits, the watch |
//! | [`operator`] | the command line, the operator client, output formatting, HTTP |
//! | [`config`] | the hub's TOML config, with the embedded example |
//!
//! Imports run one way: `operator::cli` → `driver` → `core` → `store`;
//! `operator::http` → `operator::client`; nothing imports back up.
//!
//! # A batch's path
//!
//! ```text
//!  agent DEALER ─► telemetry ROUTER ─► driver::drain_upstream
//!     ─► Core::upstream     (admission: the connection's key is this device's;
//!                            decode; presence; checks; queued for the round)
//!     ─► Core::store_received (one SQLite transaction for the round)
//!     ─► Action::Device(Ack) ─► driver sends it on the same ROUTER
//! ```
//!
//! A command travels `operator socket ─► Core::operator ─► core::commands
//! ─► Action::Command ─► driver sends, reports Core::command_sent ─► the
//! device's reply ─► Core::reply ─► Action::Operator`.

pub mod config;
pub mod core;
pub mod driver;
pub mod enrolment;
pub mod operator;
pub mod store;
