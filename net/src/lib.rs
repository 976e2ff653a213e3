//! ZeroMQ plumbing shared by `fleetmq-agent` and `fleetmq-hub`.
//!
//! * [`Sockets`] owns the context and is the only way either binary makes a
//!   socket: every socket gets linger, high-water marks, a maximum message
//!   size, reconnect intervals and ZMTP heartbeats before it binds or connects.
//!   No socket runs on libzmq's defaults (the default linger of -1 would hang
//!   shutdown forever).
//! * [`recv_frames`] reads one multipart message without blocking and with a
//!   bound on the number of frames, so a hostile peer cannot make us allocate
//!   without limit.
//! * [`Poll`] waits on sockets and descriptors named by tokens;
//!   [`poll::next_event`] reads socket monitor events ([`poll::event`]).
//! * [`Shutdown`] turns SIGINT and SIGTERM into a readable file descriptor
//!   that a [`Poll`] loop waits on next to its sockets.
//! * [`endpoint`] helpers read back OS-chosen ports and swap ports.
//! * [`config`] loads TOML files with errors naming the file, key and fix.
//! * [`logging`] installs `tracing` output for both binaries.
//! * [`keys`] writes and reads CURVE key files (`keygen`).
//! * [`files`] writes small files whole (temporary, sync, rename).

pub mod config;
pub mod endpoint;
pub mod files;
mod frames;
pub mod keys;
pub mod logging;
pub mod poll;
pub mod random;
mod shutdown;
mod socket;
pub mod text;

pub use frames::{Received, Sender, recv_frames, recv_message, send_frames, uninterrupted};
pub use poll::{Poll, now_ms};
pub use shutdown::{Hangup, Shutdown};
pub use socket::{
    Builder, NetError, OPERATOR_ZAP_DOMAIN, Security, SocketOptions, Sockets, ZAP_DOMAIN,
    apply_subscription,
};

/// An error and its causes as one line, `outer: inner: innermost`, for
/// logs, status and the binaries' last word (what `anyhow` prints with
/// `{:#}`, but each cause once).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        // Many of ours name their cause in their own message, some with a
        // hint after it.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("opening the spool")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("binding tcp://*:7750: {0}")]
    struct SaysItsCause(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("binding tcp://*:7750: {0} (is another process using it?)")]
    struct SaysItsCauseThenAHint(#[source] std::io::Error);

    #[test]
    fn a_chain_reads_outer_to_inner_without_repeats() {
        let inner = std::io::Error::other("disk full");
        assert_eq!(
            super::error_chain(&Outer(inner)),
            "opening the spool: disk full"
        );
        let inner = std::io::Error::other("address in use");
        assert_eq!(
            super::error_chain(&SaysItsCause(inner)),
            "binding tcp://*:7750: address in use"
        );
        let inner = std::io::Error::other("address in use");
        assert_eq!(
            super::error_chain(&SaysItsCauseThenAHint(inner)),
            "binding tcp://*:7750: address in use (is another process using it?)"
        );
    }
}
