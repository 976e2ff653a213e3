//! The fleetmq hub: stores what devices send, knows who is online, leases
//! jobs, brokers commands, and is the operator's command line and web page.
//!
//! # Layout
//!
//! | path | what lives there |
//! |---|---|
//! | [`core`] | every decision, no sockets: admission, presence, telemetry, commands, jobs, operator requests ([`core::Core`]) |
//! | [`driver`] | the only code that touches zmq: reads what a start needs (`driver/files.rs`, also `check-config`), binds (`driver/start.rs`), polls, answers ZAP, reads socket monitors, carries out the core's [`core::Action`]s; `driver/peers.rs` knows whose each connection is |
//! | [`store`] | SQLite, a synchronous call the core makes: devices, presence and forgetting (`devices.rs`), telemetry and chat, jobs, the command log; [`store::Store::in_memory`] for tests |
//! | [`datadir`] | the data directory, locked so that one hub at a time uses it |
//! | [`backup`] | `fleetmq-hub backup`: a copy of the data directory, taken while the hub runs, that is a data directory itself |
//! | [`enrolment`] | the allow list file: format, `allow`/`revoke` edits, the watch |
//! | [`operators`] | the operator allow list: remote operators' keys and roles |
//! | [`cli`] | the command line: the command tree, starting the hub (`hub.rs`), asking a running one (`ask.rs`, and `work.rs` for jobs and fleet commands); the binary's edge, where `anyhow` lives |
//! | [`operator`] | the operator client, output formatting for people, the HTTP side |
//! | [`config`] | the hub's TOML config, with the embedded example |
//! | [`cluster`] | a front-end over NATS JetStream: the only code that speaks NATS, on a thread of its own ([`cluster::Link`]); what the loop and it say to each other |
//!
//! Imports run one way: `cli` → `driver` → `core` → `store`; `driver`
//! and `core` → `cluster` (its messages; it imports neither); `driver` →
//! `operator::http` → `operator::client`; nothing imports back up. The core is unit-tested with a fake clock, an in-memory store and
//! no sockets (`core/tests.rs`); the end-to-end tests start the binary.
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

pub mod backup;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod core;
pub mod datadir;
pub mod driver;
pub mod enrolment;
pub mod operator;
pub mod operators;
pub mod store;
