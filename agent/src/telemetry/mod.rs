//! Telemetry out: the disk spool that keeps every accepted record until
//! the hub acked it ([`spool`]), and the window of batches in flight with
//! their resend timers ([`uplink`]).

pub mod outbox;
pub mod spool;
pub mod uplink;
