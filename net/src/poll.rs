//! A poll set whose members are named by tokens, and the socket monitor's
//! events, so that no loop indexes `ready[5]` by position.
//!
//! ```no_run
//! # fn demo(a: &zmq::Socket, b: &zmq::Socket) -> Result<(), zmq::Error> {
//! #[derive(Clone, Copy, PartialEq)]
//! enum Ready { Telemetry, Operator }
//! let mut poll = fleetmq_net::Poll::new();
//! poll.socket(Ready::Telemetry, a).socket(Ready::Operator, b);
//! for ready in poll.wait(100)? {
//!     match ready {
//!         Ready::Telemetry => { /* drain a */ }
//!         Ready::Operator => { /* drain b */ }
//!     }
//! }
//! # Ok(()) }
//! ```

use std::os::fd::RawFd;
use std::time::{SystemTime, UNIX_EPOCH};

/// Sockets and descriptors to wait on, each with the token it reports as.
pub struct Poll<'a, T> {
    items: Vec<zmq::PollItem<'a>>,
    tokens: Vec<T>,
}

impl<T: Copy> Default for Poll<'_, T> {
    fn default() -> Self {
        Poll {
            items: Vec::new(),
            tokens: Vec::new(),
        }
    }
}

impl<'a, T: Copy> Poll<'a, T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits for `socket` to be readable, reported as `token`.
    pub fn socket(&mut self, token: T, socket: &'a zmq::Socket) -> &mut Self {
        self.items.push(socket.as_poll_item(zmq::POLLIN));
        self.tokens.push(token);
        self
    }

    /// Waits for the descriptor `fd` to be readable, reported as `token`.
    pub fn fd(&mut self, token: T, fd: RawFd) -> &mut Self {
        self.items.push(zmq::PollItem::from_fd(fd, zmq::POLLIN));
        self.tokens.push(token);
        self
    }

    /// Waits up to `timeout_ms` (at least 1) and returns the tokens of what
    /// is readable, in the order they were added. A signal that interrupts
    /// the wait returns nothing ready.
    pub fn wait(&mut self, timeout_ms: i64) -> Result<Vec<T>, zmq::Error> {
        match zmq::poll(&mut self.items, timeout_ms.max(1)) {
            Ok(_) => {}
            Err(zmq::Error::EINTR) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        }
        let ready = self.items.iter().zip(&self.tokens);
        Ok(ready
            .filter(|(item, _)| item.is_readable())
            .map(|(_, token)| *token)
            .collect())
    }
}

/// Socket monitor events (zmq.h `ZMQ_EVENT_*`) that fleetmq listens for.
pub mod event {
    /// A connection closed.
    pub const DISCONNECTED: u16 = 0x0200;
    /// A handshake failed for a reason libzmq does not detail.
    pub const HANDSHAKE_FAILED_NO_DETAIL: u16 = 0x0800;
    /// A handshake completed.
    pub const HANDSHAKE_SUCCEEDED: u16 = 0x1000;
    /// A handshake failed: the peer broke the ZMTP protocol.
    pub const HANDSHAKE_FAILED_PROTOCOL: u16 = 0x2000;
    /// A handshake failed: the peer refused our credentials (ZAP).
    pub const HANDSHAKE_FAILED_AUTH: u16 = 0x4000;
}

/// The next event waiting on a monitor socket (its first frame holds the
/// event number, little-endian), `Ok(None)` when none is waiting. A frame
/// that is not an event is skipped.
pub fn next_event(monitor: &zmq::Socket) -> Result<Option<u16>, zmq::Error> {
    while let Some(frames) = crate::recv_frames(monitor, 2)? {
        let event = frames
            .ok()
            .and_then(|f| f.first().and_then(|f| f.first_chunk::<2>()).copied())
            .map(u16::from_le_bytes);
        if event.is_some() {
            return Ok(event);
        }
    }
    Ok(None)
}

/// Wall-clock time in milliseconds since the Unix epoch (0 before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
