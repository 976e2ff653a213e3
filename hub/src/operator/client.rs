//! A Lazy Pirate client for the hub's operator socket.
//!
//! A REQ socket that sent and never heard back cannot send again. So each
//! attempt waits with a timeout, and on timeout the socket is closed and a
//! new one tries again, a few times, before the hub is declared unreachable.
//! The request id stays the same across attempts, and the hub answers a
//! repeated id from memory, so a retried `job submit` queues one job.
//!
//! On CURVE (the remote operator socket) each socket's handshakes are
//! watched by a socket monitor: a key the hub refuses, or a handshake that
//! cannot succeed, ends the call at once with what to fix, rather than
//! after every attempt's timeout.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetmq_net::poll::{event, next_event};
use fleetmq_net::{SocketOptions, Sockets};
use fleetmq_protocol::{
    OperatorError, OperatorFrame, OperatorReplyFrame, OperatorRequest, Request, Response,
};

use crate::config::Listen as Endpoints;

/// Why an operator call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "the hub at {endpoint} did not answer after {attempts} attempts of {per_attempt_ms} ms (is `fleetmq-hub run` running, and is this its operator endpoint?)"
    )]
    Unreachable {
        endpoint: String,
        attempts: u32,
        per_attempt_ms: u64,
    },
    /// A local operator socket on a Unix socket (`ipc://PATH`) that this
    /// user cannot open: libzmq would retry in silence until the timeout.
    #[error("the hub's operator socket {}: {why}", path.display())]
    Socket { path: PathBuf, why: String },
    #[error("cannot find the hub's operator endpoint: {0}")]
    NoEndpoint(String),
    #[error("for the hub's remote operator socket: {0}")]
    Keys(String),
    #[error(
        "the hub at {endpoint} refused this operator's key {key} at the handshake: the hub's operator allow list (DATA_DIR/allowed_operators) needs the line `NAME read KEY` or `NAME admin KEY` (`fleetmq-hub keygen --operator NAME` printed the commands that add it)"
    )]
    KeyRefused { endpoint: String, key: String },
    #[error(
        "the CURVE handshake with {endpoint} failed: is it the hub's listen.operator_remote (the local operator socket is plaintext: leave out --hub-key and --operator-keys for it), and is --hub-key the hub's public key?"
    )]
    HandshakeFailed { endpoint: String },
    #[error("talking to the hub at {endpoint}: {reason}")]
    Protocol { endpoint: String, reason: String },
    #[error("{0}")]
    Hub(OperatorError),
    #[error(
        "the request is {bytes} bytes; the hub takes at most {max} (net.max_message_bytes): send less"
    )]
    TooLarge { bytes: usize, max: i64 },
}

/// Where the operator socket is: an explicit endpoint; else the
/// endpoints.json a running hub wrote into its data directory; else, when
/// there is none, the `configured` operator endpoint if its port is fixed
/// (a hub that binds `*` can only be found through endpoints.json).
pub fn find_endpoint(
    explicit: Option<&str>,
    data_dir: &Path,
    configured: &str,
) -> Result<String, ClientError> {
    if let Some(ep) = explicit {
        fleetmq_net::endpoint::validate(ep, false).map_err(ClientError::NoEndpoint)?;
        return Ok(ep.to_string());
    }
    let hint = "pass --hub tcp://HOST:PORT, or the hub's --config or --data-dir";
    match written_endpoints(data_dir)
        .map_err(|why| ClientError::NoEndpoint(format!("{why}; {hint}")))?
    {
        Some(eps) => Ok(eps.operator),
        None if fleetmq_net::endpoint::port(configured).is_some_and(|p| p > 0)
            || fleetmq_net::endpoint::ipc_path(configured).is_some() =>
        {
            Ok(configured.to_string())
        }
        None => Err(ClientError::NoEndpoint(format!(
            "there is no {}: no hub has run with this data directory; {hint}",
            data_dir.join(ENDPOINTS_FILE).display()
        ))),
    }
}

/// The file a running hub writes its endpoints into, in its data
/// directory.
pub const ENDPOINTS_FILE: &str = "endpoints.json";

/// The endpoints a hub wrote into `data_dir` when it started (`None`:
/// no hub has written any there), or why they could not be read.
pub fn written_endpoints(data_dir: &Path) -> Result<Option<Endpoints>, String> {
    let path = data_dir.join(ENDPOINTS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{} could not be read ({e})", path.display())),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("{} is not valid: {e}", path.display()))
}

/// The endpoints.json the hub was looked for in, when there is none and
/// no `--hub` (`explicit`) was given: the usual reason for asking the
/// wrong place. `config` and `data_dir` as the command line gave them.
pub fn unwritten_endpoints(
    explicit: Option<&str>,
    config: Option<&Path>,
    data_dir: Option<&Path>,
) -> Option<std::path::PathBuf> {
    if explicit.is_some() {
        return None;
    }
    let loaded = crate::config::HubConfig::load(config).ok()?;
    let path = data_dir.unwrap_or(&loaded.data_dir).join(ENDPOINTS_FILE);
    (!path.exists()).then_some(path)
}

pub struct Client {
    sockets: Sockets,
    /// Our public key when speaking CURVE to a remote operator socket
    /// (named when the hub refuses it); `None`: plaintext to the local one.
    curve_key: Option<String>,
    /// The largest request the hub takes; a larger one fails at once.
    max_bytes: i64,
    endpoint: String,
    /// The REQ socket of this attempt, and for CURVE its handshake monitor.
    socket: Option<(zmq::Socket, Option<zmq::Socket>)>,
    /// Monitors made so far: each socket's has an inproc name of its own.
    monitors: u32,
    timeout: Duration,
    attempts: u32,
    /// Each connection's routing id starts with this (then a random
    /// part), so that the hub tells whose requests they are; `None`:
    /// libzmq's own.
    routing_prefix: Option<&'static [u8]>,
}

/// The handshake events an operator client listens for on CURVE.
const HANDSHAKE_EVENTS: u16 = event::HANDSHAKE_FAILED_AUTH
    | event::HANDSHAKE_FAILED_PROTOCOL
    | event::HANDSHAKE_FAILED_NO_DETAIL
    | event::HANDSHAKE_SUCCEEDED;

impl Client {
    pub fn new(endpoint: String, timeout: Duration) -> Self {
        Client {
            sockets: Sockets::new(SocketOptions {
                linger_ms: 0,
                ..SocketOptions::default()
            }),
            curve_key: None,
            max_bytes: SocketOptions::default().max_message_bytes,
            endpoint,
            socket: None,
            monitors: 0,
            timeout,
            attempts: 3,
            routing_prefix: None,
        }
    }

    /// Names each connection `prefix` and a random part: the hub's audit
    /// trail tells its acts by the prefix.
    pub fn routing_prefix(mut self, prefix: &'static [u8]) -> Self {
        self.routing_prefix = Some(prefix);
        self
    }

    /// The hub's `net.max_message_bytes`: a larger request fails at once
    /// rather than after every attempt's timeout (the hub drops the
    /// connection that sends it).
    pub fn max_message(mut self, bytes: i64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Speaks CURVE, as operator `ours`, to a hub whose public key is
    /// `server`: for the hub's remote operator socket.
    pub fn curve(mut self, server: String, ours: fleetmq_net::keys::KeyPair) -> Self {
        self.curve_key = Some(ours.public.clone());
        let security = fleetmq_net::Security::CurveClient { server, ours };
        self.sockets = self.sockets.with_security(security);
        self
    }

    /// The hub's operator endpoint this client talks to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn protocol(&self, reason: impl std::fmt::Display) -> ClientError {
        ClientError::Protocol {
            endpoint: self.endpoint.clone(),
            reason: reason.to_string(),
        }
    }

    /// Sends `request`, waiting `extra` longer than usual per attempt (for a
    /// command the device itself may take time to answer).
    pub fn call(&mut self, request: Request, extra: Duration) -> Result<Response, ClientError> {
        let id = fastrand::u64(1..);
        let frame = OperatorFrame::from(OperatorRequest { id, request })
            .encode()
            .map_err(|e| self.protocol(e))?;
        if self.max_bytes > 0 && frame.len() as i64 > self.max_bytes {
            return Err(ClientError::TooLarge {
                bytes: frame.len(),
                max: self.max_bytes,
            });
        }
        let per_attempt = self.timeout + extra;
        for attempt in 1..=self.attempts {
            if self.socket.is_none() {
                self.socket = Some(self.open()?);
            }
            let Some((socket, monitor)) = &self.socket else {
                continue;
            };
            socket.send(&frame, 0).map_err(|e| self.protocol(e))?;
            let answered = match self.answered(socket, monitor.as_ref(), per_attempt) {
                Ok(answered) => answered,
                Err(e) => {
                    // A handshake that cannot succeed: this socket is done.
                    self.socket = None;
                    return Err(e);
                }
            };
            if !answered {
                // Lazy Pirate: abandon this socket, its REQ state is stuck.
                self.socket = None;
                if attempt < self.attempts {
                    tracing::warn!(
                        "the hub at {} did not answer within {} ms; trying again (attempt {} of {})",
                        self.endpoint,
                        per_attempt.as_millis(),
                        attempt + 1,
                        self.attempts
                    );
                }
                continue;
            }
            let reply = socket.recv_bytes(0).map_err(|e| self.protocol(e))?;
            let OperatorReplyFrame::Response(resp) =
                OperatorReplyFrame::decode(&reply).map_err(|e| self.protocol(e))?;
            return match resp.response {
                Response::Error(e) => Err(ClientError::Hub(e)),
                _ if resp.id != id => Err(self.protocol("answer to another request")),
                r => Ok(r),
            };
        }
        Err(ClientError::Unreachable {
            endpoint: self.endpoint.clone(),
            attempts: self.attempts,
            per_attempt_ms: per_attempt.as_millis() as u64,
        })
    }

    /// A REQ socket connected to the hub; on CURVE with a monitor of its
    /// handshakes, so that a refused key is said at once.
    fn open(&mut self) -> Result<(zmq::Socket, Option<zmq::Socket>), ClientError> {
        if let Some(path) = fleetmq_net::endpoint::ipc_path(&self.endpoint) {
            may_open(Path::new(path))?;
        }
        let mut builder = self.sockets.build(zmq::REQ);
        if let Some(prefix) = self.routing_prefix {
            let mut id = prefix.to_vec();
            id.extend_from_slice(format!("{:016x}", fastrand::u64(..)).as_bytes());
            builder = builder.routing_id(&id);
        }
        let mut monitor = None;
        if self.curve_key.is_some() {
            // The monitor's reader is connected first (inproc allows that),
            // so that no event of the first handshake is lost before it.
            self.monitors += 1;
            let name = format!("inproc://fleetmq-operator-handshakes-{}", self.monitors);
            let reader = self.sockets.build(zmq::PAIR).connect(&name);
            monitor = Some(reader.map_err(|e| self.protocol(e))?);
            builder = builder.secure().monitor(&name, i32::from(HANDSHAKE_EVENTS));
        }
        let socket = builder
            .connect(&self.endpoint)
            .map_err(|e| self.protocol(e))?;
        Ok((socket, monitor))
    }

    /// Waits up to `wait` for the answer on `socket`; false when none came.
    /// A handshake the hub refused ends the wait with why, and so does a
    /// wait in which every handshake failed and none succeeded (a hub key
    /// that is not the hub's: the hub drops such a handshake unanswered).
    fn answered(
        &self,
        socket: &zmq::Socket,
        monitor: Option<&zmq::Socket>,
        wait: Duration,
    ) -> Result<bool, ClientError> {
        let deadline = Instant::now() + wait;
        let (mut failed, mut succeeded) = (false, false);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut items = vec![socket.as_poll_item(zmq::POLLIN)];
            if let Some(m) = monitor {
                items.push(m.as_poll_item(zmq::POLLIN));
            }
            zmq::poll(&mut items, left.as_millis() as i64).map_err(|e| self.protocol(e))?;
            if items[0].is_readable() {
                return Ok(true);
            }
            let events = monitor.filter(|_| items.get(1).is_some_and(|i| i.is_readable()));
            while let Some(e) = events
                .map(next_event)
                .transpose()
                .map_err(|e| self.protocol(e))?
                .flatten()
            {
                match e.kind {
                    event::HANDSHAKE_FAILED_AUTH => return Err(self.key_refused()),
                    event::HANDSHAKE_FAILED_PROTOCOL => return Err(self.handshake_failed()),
                    event::HANDSHAKE_SUCCEEDED => succeeded = true,
                    _ => failed = true,
                }
            }
            if Instant::now() >= deadline {
                if failed && !succeeded {
                    return Err(self.handshake_failed());
                }
                return Ok(false);
            }
        }
    }

    fn key_refused(&self) -> ClientError {
        ClientError::KeyRefused {
            endpoint: self.endpoint.clone(),
            key: fleetmq_net::keys::quoted(self.curve_key.as_deref().unwrap_or_default()),
        }
    }

    fn handshake_failed(&self) -> ClientError {
        ClientError::HandshakeFailed {
            endpoint: self.endpoint.clone(),
        }
    }
}

/// Whether this user can open the Unix socket at `path`, asked of the
/// kernel by connecting (and hanging up at once: the hub's libzmq drops a
/// connection that never greets). libzmq retries a refused `ipc://`
/// connect in silence, so without this a user the socket is not open to
/// would wait out every attempt and hear only that the hub did not answer.
fn may_open(path: &Path) -> Result<(), ClientError> {
    use std::io::ErrorKind;
    let Err(e) = std::os::unix::net::UnixStream::connect(path) else {
        return Ok(());
    };
    let why = match e.kind() {
        ErrorKind::NotFound => "there is no such socket: is `fleetmq-hub run` running, with this as its listen.operator?".to_string(),
        ErrorKind::PermissionDenied => "permission denied: it is open only to the hub's user; run the command as that user (for the packaged hub: sudo -u fleetmq fleetmq-hub COMMAND --config /etc/fleetmq/hub.toml)".to_string(),
        ErrorKind::ConnectionRefused => "nothing answers on it (a hub that stopped left it behind): start the hub".to_string(),
        _ => e.to_string(),
    };
    Err(ClientError::Socket {
        path: path.to_path_buf(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_endpoint_comes_from_the_flag_then_the_file_then_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let configured = "tcp://127.0.0.1:7755";
        let found = |explicit| find_endpoint(explicit, dir.path(), configured);
        assert_eq!(found(None).unwrap(), configured, "no file: the config");
        let wild = find_endpoint(None, dir.path(), "tcp://127.0.0.1:*").unwrap_err();
        assert!(wild.to_string().contains("--config"), "{wild}");
        let unix = "ipc:///var/lib/fleetmq-hub/operator.sock";
        assert_eq!(
            find_endpoint(None, dir.path(), unix).unwrap(),
            unix,
            "no file: a Unix socket's path is fixed"
        );
        std::fs::write(
            dir.path().join("endpoints.json"),
            r#"{"telemetry":"tcp://127.0.0.1:1","broadcast":"tcp://127.0.0.1:2","jobs":"tcp://127.0.0.1:3","results":"tcp://127.0.0.1:4","commands":"tcp://127.0.0.1:5","operator":"tcp://127.0.0.1:40001","http":""}"#,
        )
        .unwrap();
        assert_eq!(found(None).unwrap(), "tcp://127.0.0.1:40001", "the file");
        assert_eq!(
            found(Some("tcp://10.0.0.1:7755")).unwrap(),
            "tcp://10.0.0.1:7755",
            "the flag"
        );
    }

    /// libzmq retries an `ipc://` connect in silence; the client says at
    /// once why it cannot open the socket. (A socket open to another user
    /// only is covered end to end, in `hostile.rs`.)
    #[test]
    fn a_unix_operator_socket_that_cannot_be_opened_says_why_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator.sock");
        let endpoint = format!("ipc://{}", path.display());
        let mut client = Client::new(endpoint, Duration::from_secs(30));
        let err = client.call(Request::Devices, Duration::ZERO).unwrap_err();
        assert!(
            matches!(&err, ClientError::Socket { why, .. } if why.contains("no such socket")),
            "{err}"
        );

        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(may_open(&path).is_ok());
        drop(listener); // its file stays behind, as a dead hub's would
        let err = may_open(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("nothing answers"),
            "{err}"
        );
    }
}
