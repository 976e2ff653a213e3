//! The agent's local control socket, `DATA_DIR/control.sock`: how programs
//! on the device hand it samples (`fleetmq-agent send`) and read its status
//! (`fleetmq-agent status`).
//!
//! One request per connection, one line each way:
//!
//! ```text
//! send NAME=VALUE ... [TAG=TEXT ...] ->  ok N           (all spooled)
//!                                    ->  error: REASON  (none spooled)
//! status                             ->  {JSON}
//! ```
//!
//! `ok` is written only after the records are in the spool, so a sender
//! that reads `ok` knows they will reach the hub (or be counted as dropped
//! by the spool's policy). The socket is mode 0600 in the data directory:
//! only the agent's user may use it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetmq_protocol::Value;
use fleetmq_protocol::telemetry::series_name;
use serde::Serialize;

use crate::telemetry::spool::FullPolicy;

/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its line.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(500);

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// What `fleetmq-agent status` prints: one JSON object.
#[derive(Debug, Serialize)]
pub struct Status {
    pub device: String,
    pub agent_version: String,
    pub arch: String,
    pub groups: Vec<String>,
    pub uptime_ms: u64,
    pub hub: String,
    /// "curve", or "plaintext" when run with --insecure.
    pub security: &'static str,
    /// The telemetry connection is up.
    pub connected: bool,
    /// The hub's Welcome came, and the other sockets are connected or
    /// everything travels on the telemetry connection.
    pub linked: bool,
    /// Everything travels on the telemetry connection (the hub offered it
    /// and `one_connection` is on).
    pub one_connection: bool,
    /// Why the hub has not welcomed this agent (empty when it has, or while
    /// it is still within its first few seconds).
    pub hub_problem: String,
    pub batches: BatchCounts,
    pub records: RecordCounts,
    pub spool: SpoolStatus,
    pub jobs_run: u64,
    pub commands_answered: u64,
    /// Host metric groups skipped, each with why.
    pub host_skipped: Vec<String>,
    /// What this device is, as the hub is told (in the Offer).
    pub facts: fleetmq_protocol::DeviceFacts,
    /// Why the facts lack the IP addresses, if they do.
    pub facts_problem: String,
    pub ingest: crate::sources::ingest::IngestStatus,
    /// The `[logs]` files.
    pub logs: LogsStatus,
    /// The last SIGHUP.
    pub reload: ReloadStatus,
    /// The hub's desired configuration as applied here.
    pub config: ConfigStatus,
}

/// The `[logs]` files and where each stands.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LogsStatus {
    pub files: Vec<crate::sources::logs::FileStatus>,
    /// Why no file is read now (empty while they are read).
    pub waiting: String,
}

/// The hub's configuration on this device.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ConfigStatus {
    /// The version applied (0: none yet).
    pub version: u64,
    /// The keys applied and their values.
    pub values: std::collections::BTreeMap<String, String>,
    /// Keys not applied, each with why.
    pub errors: Vec<(String, String)>,
}

/// What the last SIGHUP did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ReloadStatus {
    /// When, in ms since the Unix epoch; 0 for never.
    pub at_ms: u64,
    /// Keys whose new values are in effect, dotted (`host.interval_ms`).
    pub applied: Vec<String>,
    /// Keys that changed but keep their running values until a restart.
    pub needs_restart: Vec<String>,
    /// Why the new configuration was not taken, if it was not.
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct BatchCounts {
    pub sent: u64,
    pub acked: u64,
    pub resent: u64,
    /// Sent again under a new number: the hub held theirs from another
    /// agent with this device id (a reinstall, or a cloned SD card).
    pub renumbered: u64,
    /// Held back by the hub: over this device's budget (records or bytes
    /// a second), each sent again when the hub said.
    pub throttled: u64,
    pub in_flight: u32,
}

#[derive(Debug, Serialize)]
pub struct RecordCounts {
    pub acked: u64,
    /// In the spool, not yet in a batch.
    pub waiting: u64,
    pub dropped: Dropped,
}

/// Records given up on, by cause.
#[derive(Debug, Serialize)]
pub struct Dropped {
    pub spool_full_oldest: u64,
    pub spool_full_refused: u64,
    pub lost_to_corruption: u64,
    pub refused_by_protocol: u64,
    /// In batches the hub rejected: invalid (a peer of another version),
    /// or past this device's distinct-series budget.
    pub rejected_by_hub: u64,
}

#[derive(Debug, Serialize)]
pub struct SpoolStatus {
    pub bytes: u64,
    pub max_bytes: u64,
    pub when_full: FullPolicy,
    pub torn_tails_cut: u64,
    pub corrupt_entries_skipped: u64,
}

/// A parsed request.
#[derive(Debug, PartialEq)]
pub enum Request {
    Send(Vec<(String, Value)>),
    Status,
}

/// Parses one request line; the error says what was wrong.
pub fn parse(line: &str) -> Result<Request, String> {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("status") => Ok(Request::Status),
        Some("send") => parse_send(words).map(Request::Send),
        Some(other) => Err(format!("unknown request {other:?}; use send or status")),
        None => Err("empty request".into()),
    }
}

/// The words of `send`: samples `NAME=VALUE` (an integer, else a finite
/// float), then optionally tags `KEY=TEXT` that every sample gets. The
/// first word whose value is not a number starts the tags.
pub fn parse_send<'a>(
    words: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<(String, Value)>, String> {
    let mut samples = Vec::new();
    let mut tags: Vec<(&str, &str)> = Vec::new();
    for word in words {
        let (name, value) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} is not NAME=VALUE"))?;
        match number(value) {
            Some(Ok(v)) if tags.is_empty() => samples.push((name, v)),
            Some(Ok(_)) => {
                return Err(format!(
                    "{word:?} comes after the tag {:?}; give samples first, then tags",
                    tags.last().map_or("", |t| t.0)
                ));
            }
            Some(Err(())) => return Err(format!("{name}: {value:?} is not a finite number")),
            None if samples.is_empty() => {
                return Err(format!(
                    "{name}: {value:?} is not a number (start with NAME=NUMBER; words after the samples are tags)"
                ));
            }
            None => tags.push((name, value)),
        }
    }
    if samples.is_empty() {
        return Err("send needs at least one NAME=VALUE".into());
    }
    samples
        .into_iter()
        .map(|(name, value)| {
            let series = series_name(name, &tags).map_err(|e| e.to_string())?;
            Ok((series, value))
        })
        .collect()
}

/// Some(Ok) for a number, Some(Err) for one that is not finite, None for
/// text.
fn number(text: &str) -> Option<Result<Value, ()>> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Ok(Value::Int(i)));
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Some(Ok(Value::Float(f))),
        Ok(_) => Some(Err(())),
        Err(_) => None,
    }
}

pub struct Control {
    listener: UnixListener,
    path: PathBuf,
}

impl Control {
    /// Listens at `path`. A socket file left by an agent that died is
    /// replaced; one that a running agent answers on is an error.
    pub fn bind(path: PathBuf) -> io::Result<Control> {
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{} is in use: another agent runs with this data directory",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(&path)?;
        }
        let listener = UnixListener::bind(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(Control { listener, path })
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.listener.as_raw_fd()
    }

    /// Every waiting client with its request line. Answer each with
    /// [`reply`].
    pub fn requests(&self) -> Vec<(UnixStream, String)> {
        let mut out = Vec::new();
        while let Ok((stream, _)) = self.listener.accept() {
            // A connection closed without a line (another agent checking
            // whether this socket is alive) needs no answer.
            match read_request(&stream) {
                Ok(line) if !line.is_empty() => out.push((stream, line)),
                _ => {}
            }
        }
        out
    }
}

fn read_request(stream: &UnixStream) -> io::Result<String> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(stream.take(MAX_REQUEST)).read_line(&mut line)?;
    Ok(line.trim_end().to_string())
}

/// Writes the reply line; a client that left is no one's problem.
pub fn reply(stream: UnixStream, text: &str) {
    let _ = (&stream).write_all(format!("{text}\n").as_bytes());
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why a question to a running agent got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("connecting to {} (is the agent running with this data directory?)", path.display())]
    Connect {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to the agent")]
    Io(#[source] io::Error),
    #[error("the agent closed the connection without a reply")]
    NoReply,
}

/// The client side: sends `request` to the agent at `path`, returns its
/// reply line.
pub fn request(path: &Path, request: &str) -> Result<String, RequestError> {
    let stream = UnixStream::connect(path).map_err(|source| RequestError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(RequestError::Io)?;
    (&stream)
        .write_all(format!("{request}\n").as_bytes())
        .map_err(RequestError::Io)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .map_err(RequestError::Io)?;
    if reply.is_empty() {
        return Err(RequestError::NoReply);
    }
    Ok(reply.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_or_say_what_is_wrong() {
        assert_eq!(parse("status"), Ok(Request::Status));
        assert_eq!(
            parse("send a.b=3 t=2.5"),
            Ok(Request::Send(vec![
                ("a.b".into(), Value::Int(3)),
                ("t".into(), Value::Float(2.5))
            ]))
        );
        assert_eq!(
            parse("send disk.free=5 t=2 mount=/data site=lab"),
            Ok(Request::Send(vec![
                ("disk.free{mount=/data,site=lab}".into(), Value::Int(5)),
                ("t{mount=/data,site=lab}".into(), Value::Int(2))
            ]))
        );
        assert!(parse("send").unwrap_err().contains("NAME=VALUE"));
        assert!(parse("send x").unwrap_err().contains("not NAME=VALUE"));
        assert!(parse("send x=abc").unwrap_err().contains("not a number"));
        assert!(
            parse("send x=inf")
                .unwrap_err()
                .contains("not a finite number")
        );
        assert!(parse("send =1").unwrap_err().contains("metric name"));
        assert!(
            parse("send a=1 k=v b=2")
                .unwrap_err()
                .contains("samples first")
        );
        assert!(parse("send a=1 9k=v").unwrap_err().contains("tag key"));
        assert!(parse("send a{=1").unwrap_err().contains("metric name"));
        assert!(parse("reboot").unwrap_err().contains("unknown request"));
    }

    #[test]
    fn a_client_gets_the_reply_and_a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(dir.path());
        drop(UnixListener::bind(&path).unwrap()); // left behind by a dead agent
        let control = Control::bind(path.clone()).unwrap();
        let err = Control::bind(path.clone()).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        let client = std::thread::spawn({
            let path = path.clone();
            move || request(&path, "send x=1").unwrap()
        });
        let mut seen = Vec::new();
        while !client.is_finished() {
            for (stream, line) in control.requests() {
                seen.push(line);
                reply(stream, "ok 1");
            }
            let mut fds = [libc::pollfd {
                fd: control.fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd for the duration of the call.
            unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) };
        }
        assert_eq!(client.join().unwrap(), "ok 1");
        assert_eq!(seen, vec!["send x=1"]);
    }
}
