//! Whole multipart messages in and out, without blocking: a bound on the
//! frames read (a hostile peer cannot make us allocate without limit), the
//! sender as libzmq's metadata names it, and calls retried through signals.

/// One multipart message and who sent it.
#[derive(Debug)]
pub struct Received {
    /// The frames, or how many there were when over the limit.
    pub frames: Result<Vec<Vec<u8>>, usize>,
    pub from: Sender,
}

/// Who sent a message, as libzmq's metadata on it says.
#[derive(Debug, Clone, Default)]
pub struct Sender {
    /// The peer's ZAP user id (the device id the hub's ZAP handler bound to
    /// the peer's CURVE key), or `None` on a plaintext connection.
    pub user_id: Option<String>,
    /// The peer's IP address, as libzmq saw the connection.
    pub address: Option<String>,
    /// The descriptor of the connection it came on (libzmq's `__fd`
    /// property), to tell connections apart.
    pub fd: Option<i32>,
}

/// Receives one whole multipart message without blocking.
///
/// Returns `Ok(None)` when nothing is waiting. A message with more than
/// `max_frames` frames is read to its end and returned as `Err(count)` inside
/// `Ok(Some(..))`, so the caller can count and drop it.
#[allow(clippy::type_complexity)]
pub fn recv_frames(
    socket: &zmq::Socket,
    max_frames: usize,
) -> Result<Option<Result<Vec<Vec<u8>>, usize>>, zmq::Error> {
    Ok(recv_message(socket, max_frames)?.map(|r| r.frames))
}

/// [`recv_frames`], also reading the sender's ZAP user id from the message's
/// metadata (on a ROUTER the first frame is the socket's own, so the id is
/// read from the last).
pub fn recv_message(
    socket: &zmq::Socket,
    max_frames: usize,
) -> Result<Option<Received>, zmq::Error> {
    let mut msg = match uninterrupted(|| socket.recv_msg(zmq::DONTWAIT)) {
        Ok(m) => m,
        Err(zmq::Error::EAGAIN) => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut frames = Vec::new();
    let mut count = 1;
    loop {
        let more = msg.get_more();
        if count <= max_frames {
            frames.push(msg.to_vec());
        }
        if !more {
            break;
        }
        // The rest of a multipart message is already here: libzmq delivers
        // messages atomically.
        msg = uninterrupted(|| socket.recv_msg(0))?;
        count += 1;
    }
    let user_id = msg
        .gets("User-Id")
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    let address = msg
        .gets("Peer-Address")
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    let fd = msg.gets("__fd").and_then(|f| f.parse().ok());
    let frames = if count > max_frames {
        Err(count)
    } else {
        Ok(frames)
    };
    Ok(Some(Received {
        frames,
        from: Sender {
            user_id,
            address,
            fd,
        },
    }))
}

/// Runs a libzmq call again while a signal interrupts it (EINTR). libzmq
/// checks its socket's commands before it reads or writes a message, and a
/// signal (SIGTERM, SIGHUP) that lands in that check's poll(2) fails the
/// call with nothing read or sent, even without blocking: the call is
/// simply made again.
pub fn uninterrupted<T>(mut call: impl FnMut() -> Result<T, zmq::Error>) -> Result<T, zmq::Error> {
    loop {
        match call() {
            Err(zmq::Error::EINTR) => continue,
            done => return done,
        }
    }
}

/// Sends a multipart message without blocking. `Ok(false)` means the message
/// could not be queued now (no peer, or the high-water mark is reached).
pub fn send_frames(socket: &zmq::Socket, frames: &[&[u8]]) -> Result<bool, zmq::Error> {
    let Some((last, init)) = frames.split_last() else {
        return Ok(true);
    };
    for (i, f) in init.iter().enumerate() {
        match uninterrupted(|| socket.send(*f, zmq::SNDMORE | zmq::DONTWAIT)) {
            Ok(()) => {}
            // Only the first frame can fail with EAGAIN; after it the message
            // is committed to the pipe.
            Err(zmq::Error::EAGAIN) if i == 0 => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    match uninterrupted(|| socket.send(*last, zmq::DONTWAIT)) {
        Ok(()) => Ok(true),
        Err(zmq::Error::EAGAIN) if init.is_empty() => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SocketOptions, Sockets};

    #[test]
    fn oversized_multipart_is_read_whole_and_reported() {
        let sockets = Sockets::new(SocketOptions::default());
        let (pull, ep) = sockets.build(zmq::PULL).bind("tcp://127.0.0.1:*").unwrap();
        let push = sockets.build(zmq::PUSH).connect(&ep).unwrap();
        push.send_multipart([&b"a"[..], b"b", b"c"], 0).unwrap();
        push.send_multipart([&b"ok"[..]], 0).unwrap();
        let mut items = [pull.as_poll_item(zmq::POLLIN)];
        zmq::poll(&mut items, 5_000).unwrap();
        assert_eq!(recv_frames(&pull, 2).unwrap(), Some(Err(3)));
        zmq::poll(&mut items, 5_000).unwrap();
        assert_eq!(
            recv_frames(&pull, 2).unwrap(),
            Some(Ok(vec![b"ok".to_vec()]))
        );
        assert_eq!(recv_frames(&pull, 2).unwrap(), None);
    }
}
