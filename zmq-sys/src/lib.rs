//! Raw declarations of the libzmq 4.3 C API (`zmq.h`) used by the `zmq`
//! crate, for a libzmq built statically with libsodium (CURVE on).
//!
//! Only the ABI is here: constants, the two public structs, and function
//! prototypes, in the names and types `zmq.h` gives them.
#![allow(non_camel_case_types)]
#![no_std]

// Linked for its static libsodium, which libzmq's CURVE calls.
extern crate libsodium_sys as _;

use libc::{c_char, c_int, c_long, c_short, c_void, size_t};

/// `zmq_fd_t`: a plain file descriptor on Unix.
pub type RawFd = c_int;

/// `zmq_msg_t`: 64 opaque bytes, aligned like a pointer.
#[repr(C)]
#[cfg_attr(target_pointer_width = "64", repr(align(8)))]
#[cfg_attr(target_pointer_width = "32", repr(align(4)))]
#[derive(Clone, Copy)]
pub struct zmq_msg_t {
    unused_: [u8; 64],
}

impl Default for zmq_msg_t {
    fn default() -> Self {
        zmq_msg_t { unused_: [0; 64] }
    }
}

/// `zmq_pollitem_t`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct zmq_pollitem_t {
    pub socket: *mut c_void,
    pub fd: RawFd,
    pub events: c_short,
    pub revents: c_short,
}

/// `zmq_free_fn`.
pub type zmq_free_fn = unsafe extern "C" fn(data: *mut c_void, hint: *mut c_void);

/// Error numbers: the system's where POSIX defines them, libzmq's own above
/// `ZMQ_HAUSNUMERO` otherwise.
pub mod errno {
    use libc::c_int;

    pub const ZMQ_HAUSNUMERO: c_int = 156_384_712;
    pub const EFSM: c_int = ZMQ_HAUSNUMERO + 51;
    pub const ENOCOMPATPROTO: c_int = ZMQ_HAUSNUMERO + 52;
    pub const ETERM: c_int = ZMQ_HAUSNUMERO + 53;
    pub const EMTHREAD: c_int = ZMQ_HAUSNUMERO + 54;

    // The numbers zmq.h gives these where the system has none; libzmq on
    // Linux uses the system's, but callers match both.
    pub const ENOTSUP_ALT: c_int = ZMQ_HAUSNUMERO + 1;
    pub const EPROTONOSUPPORT_ALT: c_int = ZMQ_HAUSNUMERO + 2;
    pub const ENOBUFS_ALT: c_int = ZMQ_HAUSNUMERO + 3;
    pub const ENETDOWN_ALT: c_int = ZMQ_HAUSNUMERO + 4;
    pub const EADDRINUSE_ALT: c_int = ZMQ_HAUSNUMERO + 5;
    pub const EADDRNOTAVAIL_ALT: c_int = ZMQ_HAUSNUMERO + 6;
    pub const ECONNREFUSED_ALT: c_int = ZMQ_HAUSNUMERO + 7;
    pub const EINPROGRESS_ALT: c_int = ZMQ_HAUSNUMERO + 8;
    pub const ENOTSOCK_ALT: c_int = ZMQ_HAUSNUMERO + 9;
    pub const EMSGSIZE_ALT: c_int = ZMQ_HAUSNUMERO + 10;
    pub const EAFNOSUPPORT_ALT: c_int = ZMQ_HAUSNUMERO + 11;
    pub const ENETUNREACH_ALT: c_int = ZMQ_HAUSNUMERO + 12;
    pub const ECONNABORTED_ALT: c_int = ZMQ_HAUSNUMERO + 13;
    pub const ECONNRESET_ALT: c_int = ZMQ_HAUSNUMERO + 14;
    pub const ENOTCONN_ALT: c_int = ZMQ_HAUSNUMERO + 15;
    pub const ETIMEDOUT_ALT: c_int = ZMQ_HAUSNUMERO + 16;
    pub const EHOSTUNREACH_ALT: c_int = ZMQ_HAUSNUMERO + 17;
    pub const ENETRESET_ALT: c_int = ZMQ_HAUSNUMERO + 18;

    pub use libc::{
        EACCES, EADDRINUSE, EADDRNOTAVAIL, EAFNOSUPPORT, EAGAIN, EBUSY, ECONNABORTED, ECONNREFUSED,
        ECONNRESET, EFAULT, EHOSTUNREACH, EINPROGRESS, EINTR, EINVAL, EMFILE, EMSGSIZE,
        ENAMETOOLONG, ENETDOWN, ENETRESET, ENETUNREACH, ENOBUFS, ENODEV, ENOENT, ENOMEM, ENOTCONN,
        ENOTSOCK, ENOTSUP, EPROTO, EPROTONOSUPPORT, ETIMEDOUT,
    };
}

/// `#define`d integer constants, typed `u32` as the `zmq` crate expects.
macro_rules! constants {
    ($($name:ident = $value:expr;)+) => { $(pub const $name: u32 = $value;)+ };
}

// Socket types.
constants! {
    ZMQ_PAIR = 0; ZMQ_PUB = 1; ZMQ_SUB = 2; ZMQ_REQ = 3; ZMQ_REP = 4; ZMQ_DEALER = 5;
    ZMQ_ROUTER = 6; ZMQ_PULL = 7; ZMQ_PUSH = 8; ZMQ_XPUB = 9; ZMQ_XSUB = 10; ZMQ_STREAM = 11;
}

// Socket options.
constants! {
    ZMQ_AFFINITY = 4; ZMQ_ROUTING_ID = 5; ZMQ_SUBSCRIBE = 6; ZMQ_UNSUBSCRIBE = 7; ZMQ_RATE = 8;
    ZMQ_RECOVERY_IVL = 9; ZMQ_SNDBUF = 11; ZMQ_RCVBUF = 12; ZMQ_RCVMORE = 13; ZMQ_FD = 14;
    ZMQ_EVENTS = 15; ZMQ_TYPE = 16; ZMQ_LINGER = 17; ZMQ_RECONNECT_IVL = 18; ZMQ_BACKLOG = 19;
    ZMQ_RECONNECT_IVL_MAX = 21; ZMQ_MAXMSGSIZE = 22; ZMQ_SNDHWM = 23; ZMQ_RCVHWM = 24;
    ZMQ_MULTICAST_HOPS = 25; ZMQ_RCVTIMEO = 27; ZMQ_SNDTIMEO = 28; ZMQ_LAST_ENDPOINT = 32;
    ZMQ_ROUTER_MANDATORY = 33; ZMQ_TCP_KEEPALIVE = 34; ZMQ_TCP_KEEPALIVE_CNT = 35;
    ZMQ_TCP_KEEPALIVE_IDLE = 36; ZMQ_TCP_KEEPALIVE_INTVL = 37; ZMQ_IMMEDIATE = 39;
    ZMQ_XPUB_VERBOSE = 40; ZMQ_ROUTER_RAW = 41; ZMQ_IPV6 = 42; ZMQ_MECHANISM = 43;
    ZMQ_PLAIN_SERVER = 44; ZMQ_PLAIN_USERNAME = 45; ZMQ_PLAIN_PASSWORD = 46; ZMQ_CURVE_SERVER = 47;
    ZMQ_CURVE_PUBLICKEY = 48; ZMQ_CURVE_SECRETKEY = 49; ZMQ_CURVE_SERVERKEY = 50;
    ZMQ_PROBE_ROUTER = 51; ZMQ_REQ_CORRELATE = 52; ZMQ_REQ_RELAXED = 53; ZMQ_CONFLATE = 54;
    ZMQ_ZAP_DOMAIN = 55; ZMQ_ROUTER_HANDOVER = 56; ZMQ_TOS = 57; ZMQ_CONNECT_ROUTING_ID = 61;
    ZMQ_GSSAPI_SERVER = 62; ZMQ_GSSAPI_PRINCIPAL = 63; ZMQ_GSSAPI_SERVICE_PRINCIPAL = 64;
    ZMQ_GSSAPI_PLAINTEXT = 65; ZMQ_HANDSHAKE_IVL = 66; ZMQ_SOCKS_PROXY = 68; ZMQ_XPUB_NODROP = 69;
    ZMQ_BLOCKY = 70; ZMQ_XPUB_MANUAL = 71; ZMQ_XPUB_WELCOME_MSG = 72; ZMQ_STREAM_NOTIFY = 73;
    ZMQ_INVERT_MATCHING = 74; ZMQ_HEARTBEAT_IVL = 75; ZMQ_HEARTBEAT_TTL = 76;
    ZMQ_HEARTBEAT_TIMEOUT = 77; ZMQ_XPUB_VERBOSER = 78; ZMQ_CONNECT_TIMEOUT = 79;
    ZMQ_TCP_MAXRT = 80; ZMQ_THREAD_SAFE = 81; ZMQ_MULTICAST_MAXTPDU = 84; ZMQ_USE_FD = 89;
    ZMQ_BINDTODEVICE = 92;
}

// Message properties, send and receive flags, security mechanisms.
constants! {
    ZMQ_MORE = 1; ZMQ_SHARED = 3;
    ZMQ_DONTWAIT = 1; ZMQ_SNDMORE = 2;
    ZMQ_NULL = 0; ZMQ_PLAIN = 1; ZMQ_CURVE = 2; ZMQ_GSSAPI = 3;
}

// Context options.
constants! {
    ZMQ_IO_THREADS = 1; ZMQ_MAX_SOCKETS = 2; ZMQ_SOCKET_LIMIT = 3; ZMQ_THREAD_PRIORITY = 3;
    ZMQ_THREAD_SCHED_POLICY = 4; ZMQ_MAX_MSGSZ = 5; ZMQ_MSG_T_SIZE = 6;
}

// zmq_poll events.
constants! { ZMQ_POLLIN = 1; ZMQ_POLLOUT = 2; ZMQ_POLLERR = 4; ZMQ_POLLPRI = 8; }

// Socket monitor events.
constants! {
    ZMQ_EVENT_CONNECTED = 0x0001; ZMQ_EVENT_CONNECT_DELAYED = 0x0002; ZMQ_EVENT_CONNECT_RETRIED = 0x0004;
    ZMQ_EVENT_LISTENING = 0x0008; ZMQ_EVENT_BIND_FAILED = 0x0010; ZMQ_EVENT_ACCEPTED = 0x0020;
    ZMQ_EVENT_ACCEPT_FAILED = 0x0040; ZMQ_EVENT_CLOSED = 0x0080; ZMQ_EVENT_CLOSE_FAILED = 0x0100;
    ZMQ_EVENT_DISCONNECTED = 0x0200; ZMQ_EVENT_MONITOR_STOPPED = 0x0400; ZMQ_EVENT_ALL = 0xFFFF;
    ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL = 0x0800; ZMQ_EVENT_HANDSHAKE_SUCCEEDED = 0x1000;
    ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL = 0x2000; ZMQ_EVENT_HANDSHAKE_FAILED_AUTH = 0x4000;
}

unsafe extern "C" {
    pub fn zmq_errno() -> c_int;
    pub fn zmq_strerror(errnum: c_int) -> *const c_char;
    pub fn zmq_version(major: *mut c_int, minor: *mut c_int, patch: *mut c_int);
    pub fn zmq_has(capability: *const c_char) -> c_int;

    pub fn zmq_ctx_new() -> *mut c_void;
    pub fn zmq_ctx_term(context: *mut c_void) -> c_int;
    pub fn zmq_ctx_shutdown(context: *mut c_void) -> c_int;
    pub fn zmq_ctx_set(context: *mut c_void, option: c_int, optval: c_int) -> c_int;
    pub fn zmq_ctx_get(context: *mut c_void, option: c_int) -> c_int;
    pub fn zmq_ctx_destroy(context: *mut c_void) -> c_int;

    pub fn zmq_msg_init(msg: *mut zmq_msg_t) -> c_int;
    pub fn zmq_msg_init_size(msg: *mut zmq_msg_t, size: size_t) -> c_int;
    pub fn zmq_msg_init_data(
        msg: *mut zmq_msg_t,
        data: *mut c_void,
        size: size_t,
        ffn: Option<zmq_free_fn>,
        hint: *mut c_void,
    ) -> c_int;
    pub fn zmq_msg_send(msg: *mut zmq_msg_t, s: *mut c_void, flags: c_int) -> c_int;
    pub fn zmq_msg_recv(msg: *mut zmq_msg_t, s: *mut c_void, flags: c_int) -> c_int;
    pub fn zmq_msg_close(msg: *mut zmq_msg_t) -> c_int;
    pub fn zmq_msg_move(dest: *mut zmq_msg_t, src: *mut zmq_msg_t) -> c_int;
    pub fn zmq_msg_copy(dest: *mut zmq_msg_t, src: *mut zmq_msg_t) -> c_int;
    pub fn zmq_msg_data(msg: *mut zmq_msg_t) -> *mut c_void;
    pub fn zmq_msg_size(msg: *const zmq_msg_t) -> size_t;
    pub fn zmq_msg_more(msg: *const zmq_msg_t) -> c_int;
    pub fn zmq_msg_get(msg: *const zmq_msg_t, property: c_int) -> c_int;
    pub fn zmq_msg_set(msg: *mut zmq_msg_t, property: c_int, optval: c_int) -> c_int;
    pub fn zmq_msg_gets(msg: *const zmq_msg_t, property: *const c_char) -> *const c_char;

    pub fn zmq_socket(context: *mut c_void, type_: c_int) -> *mut c_void;
    pub fn zmq_close(s: *mut c_void) -> c_int;
    pub fn zmq_setsockopt(
        s: *mut c_void,
        option: c_int,
        optval: *const c_void,
        optvallen: size_t,
    ) -> c_int;
    pub fn zmq_getsockopt(
        s: *mut c_void,
        option: c_int,
        optval: *mut c_void,
        optvallen: *mut size_t,
    ) -> c_int;
    pub fn zmq_bind(s: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_connect(s: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_unbind(s: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_disconnect(s: *mut c_void, addr: *const c_char) -> c_int;
    pub fn zmq_send(s: *mut c_void, buf: *const c_void, len: size_t, flags: c_int) -> c_int;
    pub fn zmq_recv(s: *mut c_void, buf: *mut c_void, len: size_t, flags: c_int) -> c_int;
    pub fn zmq_socket_monitor(s: *mut c_void, addr: *const c_char, events: c_int) -> c_int;

    pub fn zmq_poll(items: *mut zmq_pollitem_t, nitems: c_int, timeout: c_long) -> c_int;
    pub fn zmq_proxy(frontend: *mut c_void, backend: *mut c_void, capture: *mut c_void) -> c_int;
    pub fn zmq_proxy_steerable(
        frontend: *mut c_void,
        backend: *mut c_void,
        capture: *mut c_void,
        control: *mut c_void,
    ) -> c_int;

    pub fn zmq_z85_encode(dest: *mut c_char, data: *const u8, size: size_t) -> *mut c_char;
    pub fn zmq_z85_decode(dest: *mut u8, string: *const c_char) -> *mut u8;
    pub fn zmq_curve_keypair(z85_public_key: *mut c_char, z85_secret_key: *mut c_char) -> c_int;
    pub fn zmq_curve_public(z85_public_key: *mut c_char, z85_secret_key: *const c_char) -> c_int;
}

unsafe extern "C" {
    /// Defined by the settings header our build script compiles into
    /// libzmq in place of its `config.hpp`.
    static fleetmq_zmq_message_pipe_granularity: c_int;
    /// Defined by the changed `session_base.cpp` (`build/source.rs`).
    static fleetmq_zmq_zap_pipe_closes: c_int;
}

/// Messages per allocation in a libzmq pipe, as this libzmq was built
/// (libzmq's own default is 256; see `build.rs`).
pub fn message_pipe_granularity() -> u32 {
    // SAFETY: a constant int defined in the linked libzmq.
    unsafe { fleetmq_zmq_message_pipe_granularity as u32 }
}

/// Whether this libzmq closes an accepted connection's pipe to the ZAP
/// handler once its handshake is over (our change; see
/// `build/source.rs`), rather than keeping it for the connection's life.
pub fn zap_pipe_closes() -> bool {
    // SAFETY: a constant int defined in the linked libzmq.
    unsafe { fleetmq_zmq_zap_pipe_closes == 1 }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn structs_have_the_layout_of_zmq_h() {
        assert_eq!(size_of::<zmq_msg_t>(), 64);
        assert_eq!(align_of::<zmq_msg_t>(), size_of::<*mut c_void>());
        let ptr = size_of::<*mut c_void>();
        assert_eq!(offset_of!(zmq_pollitem_t, fd), ptr);
        assert_eq!(offset_of!(zmq_pollitem_t, events), ptr + 4);
        assert_eq!(offset_of!(zmq_pollitem_t, revents), ptr + 6);
    }

    #[test]
    fn the_linked_library_is_4_3_5_with_curve() {
        let (mut major, mut minor, mut patch) = (0, 0, 0);
        // SAFETY: plain FFI calls with valid pointers and a NUL-terminated string.
        unsafe {
            zmq_version(&mut major, &mut minor, &mut patch);
            assert_eq!((major, minor, patch), (4, 3, 5));
            assert_eq!(zmq_has(c"curve".as_ptr()), 1);
        }
    }

    #[test]
    fn libzmq_is_built_with_our_pipe_granularity() {
        let set: u32 = env!("FLEETMQ_ZMQ_PIPE_GRANULARITY").parse().unwrap();
        assert_eq!(message_pipe_granularity(), set);
        assert_ne!(set, 256, "libzmq's own value: the override is not needed");
    }

    #[test]
    fn libzmq_is_built_without_the_websocket_transport() {
        // SAFETY: a plain FFI call with a NUL-terminated string.
        let ws = unsafe { zmq_has(c"ws".as_ptr()) };
        assert_eq!(ws, 0, "ws:// is compiled in; build.rs turns it off");
    }

    #[test]
    fn libzmq_is_built_with_the_zap_pipe_closed_after_the_handshake() {
        assert!(zap_pipe_closes());
    }

    #[test]
    fn libzmq_numbers_a_messages_connection_without_iostreams() {
        // A message's __fd property (which the hub reads to tell
        // connections apart) is the connection's descriptor, written out
        // by the string builder that stands in for std::ostringstream
        // (see build.rs).
        // SAFETY: sockets on a fresh context, used and closed here; the
        // buffer outlives the call and its length is passed with it; the
        // message is initialised before use and closed after, and the
        // string libzmq returns is read while the message lives.
        unsafe {
            let ctx = zmq_ctx_new();
            let pull = zmq_socket(ctx, ZMQ_PULL as c_int);
            let push = zmq_socket(ctx, ZMQ_PUSH as c_int);
            assert_eq!(zmq_bind(pull, c"tcp://127.0.0.1:*".as_ptr()), 0);
            // A hard limit: a message that never arrives fails the test.
            let wait_ms: c_int = 10_000;
            let len_of = std::mem::size_of::<c_int>();
            let timeout = (&raw const wait_ms).cast();
            assert_eq!(
                zmq_setsockopt(pull, ZMQ_RCVTIMEO as c_int, timeout, len_of),
                0
            );
            let mut endpoint = [0u8; 256];
            let mut len: size_t = endpoint.len();
            let option = ZMQ_LAST_ENDPOINT as c_int;
            assert_eq!(
                zmq_getsockopt(pull, option, endpoint.as_mut_ptr().cast(), &mut len),
                0
            );
            assert_eq!(zmq_connect(push, endpoint.as_ptr().cast()), 0);
            assert_eq!(zmq_send(push, b"x".as_ptr().cast(), 1, 0), 1);
            let mut msg: zmq_msg_t = core::mem::zeroed();
            assert_eq!(zmq_msg_init(&mut msg), 0);
            assert_eq!(zmq_msg_recv(&mut msg, pull, 0), 1, "no message within 10 s");
            let fd = zmq_msg_gets(&msg, c"__fd".as_ptr());
            assert!(!fd.is_null(), "no __fd on the message");
            let fd = std::ffi::CStr::from_ptr(fd).to_str().unwrap();
            let number: i32 = fd.parse().unwrap_or_else(|_| panic!("__fd {fd:?}"));
            assert!(number > 2, "{fd}");
            assert_eq!(zmq_msg_close(&mut msg), 0);
            assert_eq!(zmq_close(push), 0);
            assert_eq!(zmq_close(pull), 0);
            assert_eq!(zmq_ctx_term(ctx), 0);
        }
    }

    /// An int socket option of `fd` at `level`.
    fn int_option(fd: c_int, level: c_int, name: c_int) -> c_int {
        let (mut value, mut len) = (0 as c_int, size_of::<c_int>() as libc::socklen_t);
        // SAFETY: getsockopt on a descriptor of this process, into a local
        // int whose size is passed with it.
        let rc =
            unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &raw mut len) };
        assert_eq!(rc, 0, "getsockopt({fd}, {level}, {name})");
        value
    }

    /// This process's descriptors whose /proc link starts with `kind`.
    #[cfg(target_os = "linux")]
    fn descriptors(kind: &str) -> std::vec::Vec<c_int> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let link = std::fs::read_link(e.path()).ok()?;
                let fd: c_int = e.file_name().to_str()?.parse().ok()?;
                link.to_str()?.starts_with(kind).then_some(fd)
            })
            .collect()
    }

    /// `ZMQ_TCP_KEEPALIVE` reaches the kernel: a connection a listening
    /// socket accepts has keepalive on with the idle time, interval and
    /// count asked for (libzmq set none of them before build.rs said
    /// Linux has them).
    #[test]
    #[cfg(target_os = "linux")]
    fn accepted_connections_have_the_keepalive_asked_for() {
        use std::net::TcpStream;
        use std::os::fd::AsRawFd as _;
        // SAFETY: a socket on a fresh context, used and closed here; the
        // buffers outlive the calls and their lengths are passed with them.
        unsafe {
            let ctx = zmq_ctx_new();
            let s = zmq_socket(ctx, ZMQ_ROUTER as c_int);
            for (option, value) in [
                (ZMQ_TCP_KEEPALIVE, 1),
                (ZMQ_TCP_KEEPALIVE_IDLE, 7),
                (ZMQ_TCP_KEEPALIVE_INTVL, 3),
                (ZMQ_TCP_KEEPALIVE_CNT, 4),
            ] {
                let value: c_int = value;
                let len = size_of::<c_int>();
                let set = zmq_setsockopt(s, option as c_int, (&raw const value).cast(), len);
                assert_eq!(set, 0);
            }
            assert_eq!(zmq_bind(s, c"tcp://127.0.0.1:*".as_ptr()), 0);
            let mut buf = [0u8; 64];
            let mut len: size_t = buf.len();
            let got = zmq_getsockopt(
                s,
                ZMQ_LAST_ENDPOINT as c_int,
                buf.as_mut_ptr().cast(),
                &mut len,
            );
            assert_eq!(got, 0);
            let name = std::ffi::CStr::from_bytes_until_nul(&buf).unwrap();
            let address = name.to_str().unwrap().strip_prefix("tcp://").unwrap();
            let client = TcpStream::connect(address).unwrap();
            let ours = client.local_addr().unwrap();
            // The accepted end: the socket in this process whose peer is
            // our client, once libzmq's I/O thread has accepted it.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let accepted = loop {
                let found = descriptors("socket:").into_iter().find(|&fd| {
                    let peer = libc_peer(fd);
                    fd != client.as_raw_fd() && peer == Some(ours)
                });
                if let Some(fd) = found {
                    break fd;
                }
                assert!(std::time::Instant::now() < deadline, "never accepted");
                std::thread::sleep(std::time::Duration::from_millis(5));
            };
            assert_eq!(
                int_option(accepted, libc::SOL_SOCKET, libc::SO_KEEPALIVE),
                1
            );
            assert_eq!(
                int_option(accepted, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
                7
            );
            assert_eq!(
                int_option(accepted, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
                3
            );
            assert_eq!(
                int_option(accepted, libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
                4
            );
            drop(client);
            assert_eq!(zmq_close(s), 0);
            assert_eq!(zmq_ctx_term(ctx), 0);
        }
    }

    /// The IPv4 peer of socket `fd`, if it has one.
    fn libc_peer(fd: c_int) -> Option<std::net::SocketAddr> {
        // SAFETY: getpeername into a zeroed sockaddr_in whose size is passed.
        unsafe {
            let mut sa: libc::sockaddr_in = core::mem::zeroed();
            let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let rc = libc::getpeername(fd, (&raw mut sa).cast(), &raw mut len);
            if rc != 0 || c_int::from(sa.sin_family) != libc::AF_INET {
                return None;
            }
            let ip = std::net::Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
            Some((ip, u16::from_be(sa.sin_port)).into())
        }
    }

    /// libzmq's mailboxes are eventfds, and neither they nor its epoll
    /// descriptors pass to programs the process runs (close-on-exec).
    #[test]
    #[cfg(target_os = "linux")]
    fn libzmq_descriptors_are_eventfds_closed_on_exec() {
        // SAFETY: a socket on a fresh context, checked and closed here.
        unsafe {
            let ctx = zmq_ctx_new();
            let s = zmq_socket(ctx, ZMQ_PAIR as c_int);
            assert!(!s.is_null());
            let eventfds = descriptors("anon_inode:[eventfd]");
            assert!(
                !eventfds.is_empty(),
                "no eventfd: mailboxes are socket pairs"
            );
            for fd in eventfds
                .into_iter()
                .chain(descriptors("anon_inode:[eventpoll]"))
            {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                // Another test may have closed it since it was listed.
                if flags >= 0 {
                    assert_ne!(flags & libc::FD_CLOEXEC, 0, "descriptor {fd} is inherited");
                }
            }
            assert_eq!(zmq_close(s), 0);
            assert_eq!(zmq_ctx_term(ctx), 0);
        }
    }

    #[test]
    fn libzmq_uses_our_error_numbers() {
        // SAFETY: a socket on a fresh context, used and closed here.
        unsafe {
            let ctx = zmq_ctx_new();
            let s = zmq_socket(ctx, ZMQ_REQ as c_int);
            // A REQ socket cannot receive before it sent: EFSM.
            let mut buf = [0u8; 1];
            assert_eq!(
                zmq_recv(s, buf.as_mut_ptr().cast(), 1, ZMQ_DONTWAIT as c_int),
                -1
            );
            assert_eq!(zmq_errno(), errno::EFSM);
            assert_eq!(zmq_close(s), 0);
            assert_eq!(zmq_ctx_term(ctx), 0);
            // libzmq's own text for our ETERM number is its "terminated" message.
            let msg = std::ffi::CStr::from_ptr(zmq_strerror(errno::ETERM));
            assert!(msg.to_string_lossy().contains("terminated"), "{msg:?}");
        }
    }
}
