//! The one socket builder.

use serde::{Deserialize, Serialize};

/// Socket options every fleetmq socket sets. The defaults suit a fleet of a
/// few thousand devices on links that come and go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketOptions {
    /// How long a closing socket may try to deliver queued messages.
    pub linger_ms: i32,
    /// Messages queued per peer for sending before sends block or drop.
    pub send_hwm: i32,
    /// Messages queued per peer on receipt.
    pub recv_hwm: i32,
    /// Largest frame accepted; a peer that sends a bigger one is disconnected.
    pub max_message_bytes: i64,
    /// First reconnect delay. Each connecting socket draws its own from
    /// between this and twice this, because libzmq's exponential backoff
    /// (with a maximum set) has no jitter: without it, a fleet whose hub
    /// restarts would reconnect in lockstep.
    pub reconnect_ms: i32,
    /// Reconnect delays double up to this.
    pub reconnect_max_ms: i32,
    /// ZMTP heartbeat interval; 0 turns heartbeats off.
    pub heartbeat_ms: i32,
    /// A peer silent for this long after a heartbeat is taken for dead.
    pub heartbeat_timeout_ms: i32,
}

/// A socket's first reconnect delay: `base` plus up to `base` more, at
/// random, and no more than `max` (when set).
fn jittered(base: i32, max: i32) -> i32 {
    if base <= 0 {
        return base;
    }
    let ivl = base.saturating_add(fastrand::i32(0..=base));
    if max > 0 { ivl.min(max.max(base)) } else { ivl }
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            linger_ms: 200,
            send_hwm: 1000,
            recv_hwm: 1000,
            max_message_bytes: 1 << 20,
            reconnect_ms: 500,
            reconnect_max_ms: 30_000,
            heartbeat_ms: 5_000,
            heartbeat_timeout_ms: 15_000,
        }
    }
}

/// A socket could not be made, configured, bound or connected.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// libzmq refused to create the socket.
    #[error("could not create a {kind} socket: {source}")]
    Create {
        /// Socket type.
        kind: &'static str,
        /// libzmq's error.
        source: zmq::Error,
    },
    /// libzmq refused an option.
    #[error("could not set {option} on a {kind} socket: {source}")]
    Option {
        /// Socket type.
        kind: &'static str,
        /// The option.
        option: &'static str,
        /// libzmq's error.
        source: zmq::Error,
    },
    /// Bind failed (address in use, bad address).
    #[error(
        "could not bind {kind} to {endpoint}: {source} (is another process using it, or is the address wrong?)"
    )]
    Bind {
        /// Socket type.
        kind: &'static str,
        /// Endpoint asked for.
        endpoint: String,
        /// libzmq's error.
        source: zmq::Error,
    },
    /// Connect failed (malformed endpoint; unreachable peers are retried by libzmq).
    #[error("could not connect {kind} to {endpoint} (use tcp://HOST:PORT): {source}")]
    Connect {
        /// Socket type.
        kind: &'static str,
        /// Endpoint asked for.
        endpoint: String,
        /// libzmq's error.
        source: zmq::Error,
    },
    /// Sending or receiving failed.
    #[error("{op} on {kind} failed: {source}")]
    Io {
        /// Socket type.
        kind: &'static str,
        /// "send" or "recv".
        op: &'static str,
        /// libzmq's error.
        source: zmq::Error,
    },
}

/// How the agent-facing sockets authenticate and encrypt.
#[derive(Clone, Default)]
pub enum Security {
    /// No encryption, no authentication (ZeroMQ's NULL mechanism): only for
    /// a trusted network, when the operator asks for it.
    #[default]
    Plaintext,
    /// CURVE server: this secret key, and a ZAP handler in the same context
    /// decides who gets in.
    CurveServer {
        /// The hub's secret key (Z85).
        secret: String,
    },
    /// CURVE client: the server's public key, and our own pair (Z85).
    CurveClient {
        /// The hub's public key.
        server: String,
        /// Our key pair.
        ours: crate::keys::KeyPair,
    },
}

impl Security {
    /// "curve" or "plaintext", for logs and status.
    pub fn name(&self) -> &'static str {
        match self {
            Security::Plaintext => "plaintext",
            _ => "curve",
        }
    }
}

/// The ZAP domain the hub's sockets ask their handler about.
pub const ZAP_DOMAIN: &str = "fleetmq";
/// The ZAP domain of the hub's remote operator socket.
pub const OPERATOR_ZAP_DOMAIN: &str = "fleetmq-operator";

/// Connections a bound socket lets wait to be taken (libzmq's default is
/// 100; the kernel caps it at `net.core.somaxconn`). After a hub restart
/// every device reconnects within its first reconnect interval, five
/// sockets each: a connection the backlog cannot hold has its SYN dropped
/// and waits a second or more for the retry.
pub const LISTEN_BACKLOG: i32 = 4096;

/// The context and the options for every socket made from it.
#[derive(Clone)]
pub struct Sockets {
    ctx: zmq::Context,
    opts: SocketOptions,
    security: Security,
}

impl Sockets {
    /// A new context with these options.
    pub fn new(opts: SocketOptions) -> Self {
        Sockets {
            ctx: zmq::Context::new(),
            opts,
            security: Security::Plaintext,
        }
    }

    /// Sockets built with [`Builder::secure`] use `security`.
    pub fn with_security(mut self, security: Security) -> Self {
        self.security = security;
        self
    }

    /// What [`Builder::secure`] applies.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// The options sockets get.
    pub fn options(&self) -> &SocketOptions {
        &self.opts
    }

    /// The context, for inproc endpoints shared with other threads.
    pub fn context(&self) -> &zmq::Context {
        &self.ctx
    }

    /// Starts building a socket of this type.
    pub fn build(&self, kind: zmq::SocketType) -> Builder<'_> {
        Builder {
            sockets: self,
            kind,
            routing_id: None,
            subscriptions: Vec::new(),
            router_mandatory: false,
            router_handover: false,
            xpub_manual: false,
            send_hwm: None,
            recv_hwm: None,
            immediate: false,
            monitor: None,
            secure: false,
            zap_domain: ZAP_DOMAIN,
            batch: None,
            kernel_liveness: false,
        }
    }
}

/// A socket being configured; nothing touches the network until
/// [`Builder::bind`] or [`Builder::connect`].
pub struct Builder<'a> {
    sockets: &'a Sockets,
    kind: zmq::SocketType,
    routing_id: Option<Vec<u8>>,
    subscriptions: Vec<Vec<u8>>,
    router_mandatory: bool,
    router_handover: bool,
    xpub_manual: bool,
    send_hwm: Option<i32>,
    recv_hwm: Option<i32>,
    immediate: bool,
    monitor: Option<(String, i32)>,
    secure: bool,
    zap_domain: &'static str,
    batch: Option<(i32, i32)>,
    kernel_liveness: bool,
}

/// libzmq 4.3's draft socket options (the hub's libzmq is built with the
/// draft API), and a stable one the zmq crate has no setter for.
const IN_BATCH_SIZE: i32 = 101;
const OUT_BATCH_SIZE: i32 = 102;
/// `ZMQ_TCP_MAXRT`: TCP_USER_TIMEOUT on Linux, in milliseconds.
const TCP_MAXRT: i32 = 80;
/// `ZMQ_XPUB_MANUAL`: the application applies each subscription.
const XPUB_MANUAL: i32 = 71;

/// Sets an int socket option the zmq crate has no setter for.
fn set_int(socket: &mut zmq::Socket, option: i32, value: i32) -> zmq::Result<()> {
    // SAFETY: the socket pointer is live for the call (we hold the socket),
    // and libzmq reads exactly size_of::<i32>() bytes from the pointer.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            socket.as_mut_ptr(),
            option,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: zmq_errno reads libzmq's thread-local error number.
        Err(zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }))
    }
}

/// Applies a subscription or its end (`1` or `0`, then the topic) that a
/// manual XPUB just passed up, to the connection it came from. libzmq
/// knows that connection only until the socket's next read.
pub fn apply_subscription(xpub: &zmq::Socket, frame: &[u8]) -> zmq::Result<()> {
    match frame.split_first() {
        Some((1, topic)) => xpub.set_subscribe(topic),
        Some((0, topic)) => xpub.set_unsubscribe(topic),
        _ => Ok(()),
    }
}

fn kind_name(kind: zmq::SocketType) -> &'static str {
    use zmq::SocketType::*;
    match kind {
        PAIR => "PAIR",
        PUB => "PUB",
        SUB => "SUB",
        REQ => "REQ",
        REP => "REP",
        DEALER => "DEALER",
        ROUTER => "ROUTER",
        PULL => "PULL",
        PUSH => "PUSH",
        XPUB => "XPUB",
        XSUB => "XSUB",
        STREAM => "STREAM",
    }
}

impl Builder<'_> {
    /// The routing id peers see (the device id for agent sockets).
    pub fn routing_id(mut self, id: &[u8]) -> Self {
        self.routing_id = Some(id.to_vec());
        self
    }

    /// A SUB prefix to subscribe to before connecting.
    pub fn subscribe(mut self, prefix: &[u8]) -> Self {
        self.subscriptions.push(prefix.to_vec());
        self
    }

    /// ROUTER: fail sends to unknown peers with EHOSTUNREACH instead of
    /// dropping them silently.
    pub fn router_mandatory(mut self) -> Self {
        self.router_mandatory = true;
        self
    }

    /// ROUTER: a reconnecting peer with the same routing id takes over.
    pub fn router_handover(mut self) -> Self {
        self.router_handover = true;
        self
    }

    /// XPUB: pass every subscription and its end up, and apply none of
    /// them until [`apply_subscription`] says so.
    pub fn xpub_manual(mut self) -> Self {
        self.xpub_manual = true;
        self
    }

    /// Overrides both high-water marks for this socket.
    pub fn hwm(mut self, send: i32, recv: i32) -> Self {
        self.send_hwm = Some(send);
        self.recv_hwm = Some(recv);
        self
    }

    /// The bytes each connection reads and writes at once
    /// (`ZMQ_IN_BATCH_SIZE`, `ZMQ_OUT_BATCH_SIZE`; libzmq's default is 8 KB
    /// each). Each connection holds buffers of these sizes, so a socket with
    /// thousands of mostly quiet peers uses less memory with small ones.
    pub fn batch_sizes(mut self, read: i32, write: i32) -> Self {
        self.batch = Some((read, write));
        self
    }

    /// Leaves noticing a dead peer to the kernel rather than to ZMTP
    /// heartbeats: TCP keepalive probes every `heartbeat_ms` while the link
    /// is idle and gives up after `heartbeat_timeout_ms`, as does unacked
    /// data (`TCP_USER_TIMEOUT`). For a socket with thousands of peers:
    /// libzmq keeps heartbeat timers in one ordered map per I/O thread and
    /// cancels one by scanning that map on every heartbeat answered, which
    /// costs O(connections) each time, so a hub with 3,000 agents spent two
    /// cores on it at rest.
    pub fn kernel_liveness(mut self) -> Self {
        self.kernel_liveness = true;
        self
    }

    /// Queue messages only to completed connections (no queueing for peers
    /// that are not there yet).
    pub fn immediate(mut self) -> Self {
        self.immediate = true;
        self
    }

    /// Reports connection events (`ZMQ_EVENT_*` bits) to a PAIR socket
    /// connected to the inproc `endpoint`; set before connecting so the first
    /// handshake is not missed.
    pub fn monitor(mut self, endpoint: &str, events: i32) -> Self {
        self.monitor = Some((endpoint.to_string(), events));
        self
    }

    /// Applies the context's [`Security`] (CURVE unless the operator chose
    /// plaintext): for every socket that crosses the network to a peer.
    pub fn secure(mut self) -> Self {
        self.secure = true;
        self
    }

    /// A CURVE server socket for operators: its handshakes are asked about
    /// under [`OPERATOR_ZAP_DOMAIN`], kept apart from devices'.
    pub fn for_operators(mut self) -> Self {
        self.secure = true;
        self.zap_domain = OPERATOR_ZAP_DOMAIN;
        self
    }

    fn make(&self) -> Result<zmq::Socket, NetError> {
        let kind = kind_name(self.kind);
        let mut socket = self
            .sockets
            .ctx
            .socket(self.kind)
            .map_err(|source| NetError::Create { kind, source })?;
        let o = &self.sockets.opts;
        let opt = |option: &'static str, r: zmq::Result<()>| {
            r.map_err(|source| NetError::Option {
                kind,
                option,
                source,
            })
        };
        opt("ZMQ_LINGER", socket.set_linger(o.linger_ms))?;
        opt(
            "ZMQ_SNDHWM",
            socket.set_sndhwm(self.send_hwm.unwrap_or(o.send_hwm)),
        )?;
        opt(
            "ZMQ_RCVHWM",
            socket.set_rcvhwm(self.recv_hwm.unwrap_or(o.recv_hwm)),
        )?;
        opt("ZMQ_MAXMSGSIZE", socket.set_maxmsgsize(o.max_message_bytes))?;
        opt(
            "ZMQ_RECONNECT_IVL",
            socket.set_reconnect_ivl(jittered(o.reconnect_ms, o.reconnect_max_ms)),
        )?;
        opt(
            "ZMQ_RECONNECT_IVL_MAX",
            socket.set_reconnect_ivl_max(o.reconnect_max_ms),
        )?;
        if o.heartbeat_ms > 0 && self.kernel_liveness {
            // Probes every heartbeat while idle, given up after the timeout;
            // unacknowledged data is given up after the timeout too.
            let secs = (o.heartbeat_ms / 1000).max(1);
            let probes = (o.heartbeat_timeout_ms / o.heartbeat_ms).max(1);
            opt("ZMQ_TCP_KEEPALIVE", socket.set_tcp_keepalive(1))?;
            opt(
                "ZMQ_TCP_KEEPALIVE_IDLE",
                socket.set_tcp_keepalive_idle(secs),
            )?;
            opt(
                "ZMQ_TCP_KEEPALIVE_INTVL",
                socket.set_tcp_keepalive_intvl(secs),
            )?;
            opt(
                "ZMQ_TCP_KEEPALIVE_CNT",
                socket.set_tcp_keepalive_cnt(probes),
            )?;
            opt(
                "ZMQ_TCP_MAXRT",
                set_int(&mut socket, TCP_MAXRT, o.heartbeat_timeout_ms),
            )?;
        } else if o.heartbeat_ms > 0 {
            // No ZMQ_HEARTBEAT_TTL: a TTL makes the hub keep a timer per
            // connection (see kernel_liveness).
            opt(
                "ZMQ_HEARTBEAT_IVL",
                socket.set_heartbeat_ivl(o.heartbeat_ms),
            )?;
            opt(
                "ZMQ_HEARTBEAT_TIMEOUT",
                socket.set_heartbeat_timeout(o.heartbeat_timeout_ms),
            )?;
        }
        if let Some((read, write)) = self.batch {
            opt(
                "ZMQ_IN_BATCH_SIZE",
                set_int(&mut socket, IN_BATCH_SIZE, read),
            )?;
            opt(
                "ZMQ_OUT_BATCH_SIZE",
                set_int(&mut socket, OUT_BATCH_SIZE, write),
            )?;
        }
        if let Some(id) = &self.routing_id {
            opt("ZMQ_ROUTING_ID", socket.set_identity(id))?;
        }
        if self.router_mandatory {
            opt("ZMQ_ROUTER_MANDATORY", socket.set_router_mandatory(true))?;
        }
        if self.router_handover {
            opt("ZMQ_ROUTER_HANDOVER", socket.set_router_handover(true))?;
        }
        if self.xpub_manual {
            opt("ZMQ_XPUB_MANUAL", set_int(&mut socket, XPUB_MANUAL, 1))?;
        }
        if self.immediate {
            opt("ZMQ_IMMEDIATE", socket.set_immediate(true))?;
        }
        for prefix in &self.subscriptions {
            opt("ZMQ_SUBSCRIBE", socket.set_subscribe(prefix))?;
        }
        if self.secure {
            match &self.sockets.security {
                Security::Plaintext => {}
                Security::CurveServer { secret } => {
                    opt("ZMQ_CURVE_SERVER", socket.set_curve_server(true))?;
                    opt(
                        "ZMQ_CURVE_SECRETKEY",
                        socket.set_curve_secretkey(secret.as_bytes()),
                    )?;
                    opt("ZMQ_ZAP_DOMAIN", socket.set_zap_domain(self.zap_domain))?;
                }
                Security::CurveClient { server, ours } => {
                    opt(
                        "ZMQ_CURVE_SERVERKEY",
                        socket.set_curve_serverkey(server.as_bytes()),
                    )?;
                    opt(
                        "ZMQ_CURVE_PUBLICKEY",
                        socket.set_curve_publickey(ours.public.as_bytes()),
                    )?;
                    opt(
                        "ZMQ_CURVE_SECRETKEY",
                        socket.set_curve_secretkey(ours.secret.as_bytes()),
                    )?;
                }
            }
        }
        if let Some((endpoint, events)) = &self.monitor {
            opt("monitor", socket.monitor(endpoint, *events))?;
        }
        Ok(socket)
    }

    /// Binds, returning the socket and the endpoint it actually got (with the
    /// port the OS chose for `tcp://HOST:*`).
    pub fn bind(self, endpoint: &str) -> Result<(zmq::Socket, String), NetError> {
        let kind = kind_name(self.kind);
        let socket = self.make()?;
        socket
            .set_backlog(LISTEN_BACKLOG)
            .map_err(|source| NetError::Option {
                kind,
                option: "ZMQ_BACKLOG",
                source,
            })?;
        let bind_err = |source| NetError::Bind {
            kind,
            endpoint: endpoint.to_string(),
            source,
        };
        socket.bind(endpoint).map_err(bind_err)?;
        let got = socket
            .get_last_endpoint()
            .map_err(bind_err)?
            .unwrap_or_else(|raw| String::from_utf8_lossy(&raw).into_owned());
        Ok((socket, got))
    }

    /// Connects; libzmq keeps reconnecting in the background with the
    /// configured backoff.
    pub fn connect(self, endpoint: &str) -> Result<zmq::Socket, NetError> {
        let kind = kind_name(self.kind);
        let socket = self.make()?;
        socket
            .connect(endpoint)
            .map_err(|source| NetError::Connect {
                kind,
                endpoint: endpoint.to_string(),
                source,
            })?;
        Ok(socket)
    }
}

#[cfg(test)]
mod tests;
