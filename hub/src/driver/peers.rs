//! Which device each agent connection belongs to, so that revoking one
//! device closes its connections and no one else's.
//!
//! libzmq cannot close one peer of a bound socket, but it stamps every
//! message with the descriptor of the connection it came on (the `__fd`
//! property) and the user id ZAP gave that connection. Every connection
//! that speaks (telemetry, command replies, job results, broadcast
//! subscriptions) is noted here with its peer's socket address; a socket
//! monitor's disconnect forgets it. Cutting a device shuts its descriptors
//! down (`shutdown(2)`, not `close`: libzmq still owns them and sees an
//! ended connection), after checking each still has the peer it had, so a
//! descriptor number reused by a newer connection is never touched.

use std::collections::HashMap;

/// One of the hub's agent-facing sockets, by its monitor's index.
pub type SocketIndex = usize;

#[derive(Debug)]
struct Owner {
    device: String,
    /// The peer's socket address (raw `sockaddr`) when first noted.
    peer: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Peers {
    owners: HashMap<(SocketIndex, i32), Owner>,
}

impl Peers {
    /// A message came on `socket` from `from`: notes its connection, if
    /// libzmq named the descriptor and ZAP the device.
    pub fn heard(&mut self, socket: SocketIndex, from: &fleetmq_net::Sender) {
        if let (Some(fd), Some(device)) = (from.fd, &from.user_id) {
            self.note(socket, fd, device);
        }
    }

    /// A message from `device` came on connection `fd` of `socket`.
    pub fn note(&mut self, socket: SocketIndex, fd: i32, device: &str) {
        if self
            .owners
            .get(&(socket, fd))
            .is_some_and(|o| o.device == device)
        {
            return;
        }
        if let Some(peer) = peer_of(fd) {
            let device = device.to_string();
            self.owners.insert((socket, fd), Owner { device, peer });
        }
    }

    /// Connection `fd` of `socket` ended.
    pub fn ended(&mut self, socket: SocketIndex, fd: i32) {
        self.owners.remove(&(socket, fd));
    }

    /// Shuts down every connection noted for `device`, or only those on
    /// socket `only`; returns how many.
    pub fn cut(&mut self, device: &str, only: Option<SocketIndex>) -> usize {
        let mine: Vec<(SocketIndex, i32)> = self
            .owners
            .iter()
            .filter(|((socket, _), o)| o.device == device && only.is_none_or(|s| s == *socket))
            .map(|(k, _)| *k)
            .collect();
        let mut cut = 0;
        for key in mine {
            let Some(owner) = self.owners.remove(&key) else {
                continue;
            };
            // The descriptor still belongs to the connection we noted.
            if peer_of(key.1).as_deref() == Some(owner.peer.as_slice())
                // SAFETY: shutdown on a descriptor number is memory-safe;
                // it is the same live connection, checked just above.
                && unsafe { libc::shutdown(key.1, libc::SHUT_RDWR) } == 0
            {
                cut += 1;
            }
        }
        cut
    }

    /// How many connections are noted for `device`.
    #[cfg(test)]
    pub fn count(&self, device: &str) -> usize {
        self.owners.values().filter(|o| o.device == device).count()
    }
}

/// The address of the peer of socket `fd`, as raw bytes.
fn peer_of(fd: i32) -> Option<Vec<u8>> {
    // SAFETY: sockaddr_storage is plain data, valid when zeroed.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: addr and len describe a buffer of len bytes we own.
    let rc = unsafe {
        libc::getpeername(
            fd,
            (&mut addr as *mut libc::sockaddr_storage).cast::<libc::sockaddr>(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let len = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: getpeername wrote len bytes of addr.
    let bytes = unsafe {
        std::slice::from_raw_parts((&addr as *const libc::sockaddr_storage).cast::<u8>(), len)
    };
    Some(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd as _;

    use super::*;

    #[test]
    fn cutting_a_device_ends_its_connections_only() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).unwrap());
            accepted.push(listener.accept().unwrap().0);
        }
        let mut peers = Peers::default();
        peers.note(0, accepted[0].as_raw_fd(), "pi-a");
        peers.note(1, accepted[1].as_raw_fd(), "pi-a");
        peers.note(0, accepted[2].as_raw_fd(), "pi-b");
        assert_eq!(peers.count("pi-a"), 2);
        // A connection that ended is forgotten.
        peers.ended(1, accepted[1].as_raw_fd());
        assert_eq!(peers.cut("pi-a", None), 1);
        assert_eq!(peers.count("pi-a"), 0);
        let mut buf = [0u8; 1];
        assert_eq!(
            clients[0].read(&mut buf).unwrap(),
            0,
            "pi-a's was shut down"
        );
        clients[2]
            .set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        assert!(clients[2].read(&mut buf).is_err(), "pi-b's is still open");
        assert_eq!(peers.count("pi-b"), 1);
    }

    #[test]
    fn cutting_one_socket_of_a_device_leaves_its_others() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..2 {
            clients.push(TcpStream::connect(addr).unwrap());
            accepted.push(listener.accept().unwrap().0);
        }
        let mut peers = Peers::default();
        peers.note(0, accepted[0].as_raw_fd(), "pi-a");
        peers.note(1, accepted[1].as_raw_fd(), "pi-a");
        assert_eq!(peers.cut("pi-a", Some(1)), 1);
        let mut buf = [0u8; 1];
        assert_eq!(
            clients[1].read(&mut buf).unwrap(),
            0,
            "socket 1's was shut down"
        );
        clients[0]
            .set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        assert!(
            clients[0].read(&mut buf).is_err(),
            "socket 0's is still open"
        );
        assert_eq!(peers.count("pi-a"), 1);
    }

    #[test]
    fn a_descriptor_now_used_by_another_connection_is_not_cut() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _first = TcpStream::connect(addr).unwrap();
        let accepted = listener.accept().unwrap().0;
        let mut peers = Peers::default();
        peers.note(0, accepted.as_raw_fd(), "pi-a");
        // The number comes to name a newer connection before the end of
        // the first was seen (a reused descriptor).
        let mut other = TcpStream::connect(addr).unwrap();
        let newer = listener.accept().unwrap().0;
        // SAFETY: both descriptors are open and owned here; dup2 swaps
        // what `accepted`'s number refers to, with no moment it is free.
        let fd = unsafe { libc::dup2(newer.as_raw_fd(), accepted.as_raw_fd()) };
        assert_eq!(fd, accepted.as_raw_fd());
        assert_eq!(peers.cut("pi-a", None), 0);
        other
            .set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        let mut buf = [0u8; 1];
        assert!(
            other.read(&mut buf).is_err(),
            "the newer connection is open"
        );
    }
}
