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

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Sockets and descriptors to wait on, each with the token it reports as.
///
/// This is `zmq_poll`'s wait with less asking. A ZeroMQ socket signals on its
/// descriptor (`ZMQ_FD`) when commands reach it, and whether a message can
/// be read is known only by asking it (`ZMQ_EVENTS`, which is itself a
/// `poll(2)` of that descriptor). `zmq_poll` asks every socket before it
/// sleeps and every socket again after any wake-up; this asks every socket
/// once before sleeping (a send or receive since the last wait may have
/// taken a signal while leaving a message), and after a wake-up only the
/// sockets whose descriptor signalled: nothing else can have changed while
/// the loop slept. An idle agent wakes a few times a second, and a hub
/// twice per command, with a dozen sockets each; the asking was a fifth of
/// an idle agent's CPU.
pub struct Poll<'a, T> {
    members: Vec<Member<'a>>,
    tokens: Vec<T>,
}

enum Member<'a> {
    Socket(&'a zmq::Socket),
    Fd(RawFd),
}

impl<T: Copy> Default for Poll<'_, T> {
    fn default() -> Self {
        Poll {
            members: Vec::new(),
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
        self.members.push(Member::Socket(socket));
        self.tokens.push(token);
        self
    }

    /// Waits for the descriptor `fd` to be readable, reported as `token`.
    pub fn fd(&mut self, token: T, fd: RawFd) -> &mut Self {
        self.members.push(Member::Fd(fd));
        self.tokens.push(token);
        self
    }

    /// Waits up to `timeout_ms` (at least 1) and returns the tokens of what
    /// is readable, in the order they were added. A signal that interrupts
    /// the wait returns what was found readable before it, often nothing.
    pub fn wait(&mut self, timeout_ms: i64) -> Result<Vec<T>, zmq::Error> {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms.max(1) as u64);
        let mut ready = vec![false; self.members.len()];
        let mut fds = Vec::with_capacity(self.members.len());
        for (member, ready) in self.members.iter().zip(&mut ready) {
            let fd = match member {
                Member::Socket(s) => {
                    *ready = readable(s)?;
                    s.get_fd()?
                }
                Member::Fd(fd) => *fd,
            };
            fds.push(libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
        }
        // Something is readable already: only look at the descriptors.
        let look_only = ready.contains(&true);
        loop {
            let wait_ms = if look_only {
                0
            } else {
                let left = deadline.saturating_duration_since(Instant::now());
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            };
            // SAFETY: `fds` is a live, initialised array of `fds.len()`
            // pollfd entries that poll(2) only writes `revents` of.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => break,
                    errno => return Err(zmq::Error::from_raw(errno.unwrap_or(libc::EIO))),
                }
            }
            // A descriptor that woke the wait ends it, readable or not (a
            // closed pipe says so without data), as `zmq_poll` did.
            let mut woke = false;
            for ((pollfd, member), ready) in fds.iter().zip(&self.members).zip(&mut ready) {
                if pollfd.revents == 0 {
                    continue;
                }
                match member {
                    Member::Fd(_) => {
                        woke = true;
                        *ready |= pollfd.revents & libc::POLLIN != 0;
                    }
                    Member::Socket(s) => *ready = *ready || readable(s)?,
                }
            }
            // A socket woken by commands that carry no message (a peer
            // connected, a pipe has room) sleeps again for what is left.
            if look_only || woke || ready.contains(&true) || Instant::now() >= deadline {
                break;
            }
        }
        Ok(ready
            .iter()
            .zip(&self.tokens)
            .filter(|(ready, _)| **ready)
            .map(|(_, token)| *token)
            .collect())
    }
}

/// Whether a message can be read from `socket` now.
fn readable(socket: &zmq::Socket) -> Result<bool, zmq::Error> {
    Ok(crate::frames::uninterrupted(|| socket.get_events())?.contains(zmq::POLLIN))
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
    use std::io::Write as _;
    use std::os::fd::AsRawFd as _;

    /// Two PAIR sockets joined in process: (reader, writer).
    fn pair(ctx: &zmq::Context, name: &str) -> (zmq::Socket, zmq::Socket) {
        let reader = ctx.socket(zmq::PAIR).unwrap();
        reader.bind(&format!("inproc://{name}")).unwrap();
        let writer = ctx.socket(zmq::PAIR).unwrap();
        writer.connect(&format!("inproc://{name}")).unwrap();
        (reader, writer)
    }

    #[test]
    fn a_message_sent_during_the_wait_ends_it_naming_its_socket() {
        let ctx = zmq::Context::new();
        let (quiet, _q) = pair(&ctx, "quiet");
        let (reader, writer) = pair(&ctx, "loud");
        let sender = std::thread::spawn(move || writer.send("hi", 0).map(|()| writer));
        let mut poll = Poll::new();
        poll.socket(1, &quiet).socket(2, &reader);
        assert_eq!(poll.wait(10_000).unwrap(), vec![2]);
        assert_eq!(reader.recv_bytes(0).unwrap(), b"hi");
        sender.join().unwrap().unwrap();
    }

    /// A signal that lands inside libzmq (SIGTERM, SIGHUP: the binaries
    /// handle them) fails its call with EINTR even when nothing blocks;
    /// sending, receiving and polling make the call again rather than
    /// report an error, which would end the agent's or the hub's loop.
    #[test]
    fn signals_that_land_in_libzmq_calls_are_not_errors() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        extern "C" fn ignore(_: libc::c_int) {}
        // SAFETY: a handler that does nothing, installed without
        // SA_RESTART (as a handler that lets a poll loop see the signal
        // is), for a signal nothing else in these tests uses.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
            assert_eq!(
                libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()),
                0
            );
        }
        let ctx = zmq::Context::new();
        let (reader, writer) = pair(&ctx, "signalled");
        // SAFETY: pthread_self has no preconditions.
        let me = unsafe { libc::pthread_self() } as usize;
        let stop = Arc::new(AtomicBool::new(false));
        let storm = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut sent = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    // SAFETY: the test thread outlives this loop: it joins
                    // this thread after setting `stop`.
                    unsafe { libc::pthread_kill(me as libc::pthread_t, libc::SIGUSR1) };
                    sent += 1;
                }
                sent
            })
        };
        let mut poll = Poll::new();
        poll.socket((), &reader);
        let mut result = Ok(());
        let t0 = Instant::now();
        while result.is_ok() && t0.elapsed() < Duration::from_secs(1) {
            result = (|| {
                assert!(crate::send_frames(&writer, &[b"a", b"b"])?);
                assert_eq!(poll.wait(10_000)?, vec![()]);
                let got = crate::recv_frames(&reader, 2)?;
                assert_eq!(got, Some(Ok(vec![b"a".to_vec(), b"b".to_vec()])));
                Ok::<_, zmq::Error>(())
            })();
        }
        stop.store(true, Ordering::SeqCst);
        let sent = storm.join().unwrap();
        result.unwrap();
        assert!(sent > 1000, "only {sent} signals were sent");
    }

    #[test]
    fn a_message_left_after_a_receive_is_still_reported() {
        // The first receive takes the socket's signal for both messages:
        // the second is found by asking the socket, not by its descriptor.
        let ctx = zmq::Context::new();
        let (reader, writer) = pair(&ctx, "two");
        writer.send("a", 0).unwrap();
        writer.send("b", 0).unwrap();
        let mut poll = Poll::new();
        poll.socket((), &reader);
        assert_eq!(poll.wait(10_000).unwrap(), vec![()]);
        assert_eq!(reader.recv_bytes(0).unwrap(), b"a");
        assert_eq!(poll.wait(10_000).unwrap(), vec![()]);
        assert_eq!(reader.recv_bytes(0).unwrap(), b"b");
    }

    #[test]
    fn a_connection_without_a_message_does_not_end_the_wait() {
        let ctx = zmq::Context::new();
        let router = ctx.socket(zmq::ROUTER).unwrap();
        router.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = router.get_last_endpoint().unwrap().unwrap();
        let dealer = ctx.socket(zmq::DEALER).unwrap();
        dealer.set_linger(0).unwrap();
        dealer.connect(&endpoint).unwrap();
        let t0 = Instant::now();
        let mut poll = Poll::new();
        poll.socket((), &router);
        assert_eq!(poll.wait(300).unwrap(), vec![]);
        assert!(t0.elapsed() >= Duration::from_millis(300));
        dealer.send("after", 0).unwrap();
        assert_eq!(poll.wait(10_000).unwrap(), vec![()]);
    }

    #[test]
    fn a_readable_descriptor_is_reported_beside_the_sockets() {
        let ctx = zmq::Context::new();
        let (reader, _writer) = pair(&ctx, "beside");
        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.write_all(b"x").unwrap();
        let mut poll = Poll::new();
        poll.socket('s', &reader).fd('f', b.as_raw_fd());
        assert_eq!(poll.wait(10_000).unwrap(), vec!['f']);
    }

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
