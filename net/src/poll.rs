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
    /// A connection was made (on a connecting socket).
    pub const CONNECTED: u16 = 0x0001;
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

/// One socket monitor event: what happened, and its value (a descriptor,
/// an errno or a status code, depending on the event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// One of [`event`]'s numbers.
    pub kind: u16,
    /// The event's value; 0 when the frame did not carry one.
    pub value: u32,
}

/// Reads a monitor event frame: the event number (u16, little-endian),
/// then its value (u32, little-endian).
pub fn parse_event(frame: &[u8]) -> Option<Event> {
    let kind = u16::from_le_bytes(*frame.first_chunk::<2>()?);
    let value = frame
        .get(2..6)
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .map_or(0, u32::from_le_bytes);
    Some(Event { kind, value })
}

/// The next event waiting on a monitor socket, `Ok(None)` when none is
/// waiting. A message that is not an event is skipped.
pub fn next_event(monitor: &zmq::Socket) -> Result<Option<Event>, zmq::Error> {
    while let Some(frames) = crate::recv_frames(monitor, 2)? {
        let event = frames
            .ok()
            .and_then(|f| f.first().and_then(|f| parse_event(f)));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_frame_is_its_number_then_its_value() {
        let frame = [0x00, 0x40, 0x90, 0x01, 0x00, 0x00];
        assert_eq!(
            parse_event(&frame),
            Some(Event {
                kind: event::HANDSHAKE_FAILED_AUTH,
                value: 400
            })
        );
        assert_eq!(
            parse_event(&[0x00, 0x02]),
            Some(Event {
                kind: event::DISCONNECTED,
                value: 0
            })
        );
        assert_eq!(parse_event(&[0x00]), None);
    }
}
