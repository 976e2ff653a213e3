//! Local ingest: device programs hand the agent samples as StatsD or
//! InfluxDB line protocol, over a localhost UDP port and a Unix datagram
//! socket. Both take either format, one or more lines per datagram; a line
//! with a `|` is StatsD, any other is Influx.
//!
//! ```text
//! StatsD  name:value|type[|@rate][|#key:value,...]
//!         c counter (value / rate), g gauge (+N / -N change the last one),
//!         ms h d timing, histogram, distribution; folded per interval
//!         (statsd.rs): a counter sums, a gauge keeps its last value, a
//!         timing gives count, min, max, mean and percentiles
//! Influx  measurement[,key=value...] field=value[,field=value...] [ns]
//!         each numeric or boolean field is a sample named
//!         measurement.field (just measurement for a field named "value");
//!         string fields are not samples and are skipped
//! ```
//!
//! Tags become the series' tags (`name{key=value}`), their keys made valid
//! the same way in both formats (`sample::tag_key`). Every sample goes
//! through the spool like any other; Influx lines go as they come. A malformed line is counted, its
//! reason kept for `status`, and the rest of the datagram still counts.

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fleetmq_protocol::Value;
use fleetmq_protocol::telemetry::series_name;
use serde::{Deserialize, Serialize};

use super::sample::{Ingested, number, tag_key};
use super::statsd::Statsd;

/// Largest datagram read; longer ones are cut by the kernel.
const MAX_DATAGRAM: usize = 65_536;
/// Datagrams taken in one go before the agent's loop gets a turn.
const MAX_DATAGRAMS_PER_DRAIN: usize = 256;
/// Influx timestamps further than this from now are refused (most likely
/// seconds or milliseconds sent where nanoseconds are expected).
const MAX_CLOCK_SKEW_MS: u64 = 10 * 365 * 86_400_000;

/// `[ingest]` in the agent's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// UDP address to listen on; "" turns it off.
    pub udp: String,
    /// Unix datagram socket, relative to the data directory; "" turns it off.
    pub unix: String,
    /// How long StatsD lines are folded before their samples are sent.
    pub statsd_interval_ms: u64,
    /// The percentiles a StatsD timing reports, each in (0, 100].
    pub percentiles: Vec<f64>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            udp: "127.0.0.1:8125".into(),
            unix: "ingest.sock".into(),
            statsd_interval_ms: 10_000,
            percentiles: vec![50.0, 90.0, 99.0],
        }
    }
}

/// What `status` shows of ingest.
#[derive(Debug, Default, Clone, Serialize)]
pub struct IngestStatus {
    /// The UDP address bound, or why not.
    pub udp: String,
    /// The Unix socket's path, or why not.
    pub unix: String,
    pub datagrams: u64,
    /// Samples handed to the spool: Influx fields, and what StatsD
    /// intervals folded their lines into.
    pub samples: u64,
    /// StatsD lines folded into intervals.
    pub statsd_lines: u64,
    /// StatsD lines refused: their interval already had the most series.
    pub statsd_over_series_cap: u64,
    pub malformed: u64,
    /// The last malformed line and what was wrong with it.
    pub last_error: String,
}

pub struct Ingest {
    udp: Option<UdpSocket>,
    unix: Option<(UnixDatagram, PathBuf)>,
    statsd: Statsd,
    pub status: IngestStatus,
    /// A malformed line was logged; quiet until a datagram parses cleanly.
    complained: bool,
    /// Datagrams taken in one drain.
    per_drain: usize,
    /// The receive buffer, kept between drains.
    buf: Vec<u8>,
}

/// What `status` shows for a socket the config turned off.
const OFF_IN_CONFIG: &str = "off: ingest.KEY is \"\" in the config";

impl Ingest {
    /// Binds what `cfg` asks for. A socket that cannot be bound is not
    /// fatal: the reason is returned to log and is shown in `status`.
    pub fn open(cfg: &IngestConfig, data_dir: &Path) -> (Ingest, Vec<String>) {
        let mut problems = Vec::new();
        let mut status = IngestStatus {
            udp: OFF_IN_CONFIG.replace("KEY", "udp"),
            unix: OFF_IN_CONFIG.replace("KEY", "unix"),
            ..IngestStatus::default()
        };
        let udp = (!cfg.udp.is_empty())
            .then(|| bind_udp(&cfg.udp))
            .and_then(|r| match r {
                Ok((sock, addr)) => {
                    status.udp = addr;
                    Some(sock)
                }
                Err(e) => {
                    status.udp = format!("off: {e}");
                    problems.push(format!("ingest UDP {}: {e}", cfg.udp));
                    None
                }
            });
        let unix = (!cfg.unix.is_empty())
            .then(|| bind_unix(&data_dir.join(&cfg.unix)))
            .and_then(|r| match r {
                Ok((sock, path)) => {
                    status.unix = path.display().to_string();
                    Some((sock, path))
                }
                Err(e) => {
                    status.unix = format!("off: {e}");
                    problems.push(format!("ingest socket {}: {e}", cfg.unix));
                    None
                }
            });
        let ingest = Ingest {
            udp,
            unix,
            statsd: Statsd::new(cfg.statsd_interval_ms, &cfg.percentiles),
            status,
            complained: false,
            per_drain: MAX_DATAGRAMS_PER_DRAIN,
            buf: Vec::new(),
        };
        (ingest, problems)
    }

    /// The descriptors to poll for POLLIN.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = Vec::new();
        fds.extend(self.udp.as_ref().map(|s| s.as_raw_fd()));
        fds.extend(self.unix.as_ref().map(|(s, _)| s.as_raw_fd()));
        fds
    }

    /// Reads every waiting datagram. Returns the Influx samples (StatsD
    /// lines are folded until [`Ingest::statsd_due`]), and the first
    /// malformed line of an episode (to log once).
    pub fn drain(&mut self, now_ms: u64, now: Instant) -> (Vec<Ingested>, Option<String>) {
        // Allocated on first use: an agent nobody sends to never pays for it.
        self.buf.resize(MAX_DATAGRAM, 0);
        let buf = self.buf.as_mut_slice();
        let mut datagrams = Vec::new();
        // A flood waits in the kernel's buffer (which drops the excess)
        // while the loop serves everything else between drains.
        while datagrams.len() < self.per_drain {
            let mut got = None;
            if let Some(s) = &self.udp {
                got = s.recv(buf).ok();
            }
            if got.is_none()
                && let Some((s, _)) = &self.unix
            {
                got = s.recv(buf).ok();
            }
            match got {
                Some(n) => datagrams.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                None => break,
            }
        }
        let mut out = Vec::new();
        let mut complaint = None;
        for text in datagrams {
            self.status.datagrams += 1;
            let mut clean = true;
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let parsed = if line.contains('|') {
                    self.statsd.fold(line, now).map(|()| Vec::new())
                } else {
                    influx(line, now_ms)
                };
                match parsed {
                    Ok(samples) => out.extend(samples),
                    Err(why) => {
                        clean = false;
                        self.status.malformed += 1;
                        let shown: String = line.chars().take(200).collect();
                        self.status.last_error = format!("{shown:?}: {why}");
                        if !self.complained {
                            self.complained = true;
                            complaint = Some(self.status.last_error.clone());
                        }
                    }
                }
            }
            if clean {
                self.complained = false;
            }
        }
        self.status.samples += out.len() as u64;
        self.status.statsd_lines = self.statsd.lines;
        self.status.statsd_over_series_cap = self.statsd.over_series_cap;
        (out, complaint)
    }

    /// When the open StatsD interval is to be flushed, if one is open.
    pub fn statsd_due(&self) -> Option<Instant> {
        self.statsd.due()
    }

    /// The open StatsD interval's samples, stamped `now_ms`.
    /// New StatsD folding settings (the listening sockets stay).
    pub fn reconfigure(&mut self, cfg: &IngestConfig) {
        self.statsd
            .reconfigure(cfg.statsd_interval_ms, &cfg.percentiles);
    }

    pub fn flush_statsd(&mut self, now_ms: u64) -> Vec<Ingested> {
        let out = self.statsd.flush(now_ms);
        self.status.samples += out.len() as u64;
        out
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if let Some((_, path)) = &self.unix {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn bind_udp(addr: &str) -> io::Result<(UdpSocket, String)> {
    let sock = UdpSocket::bind(addr)?;
    sock.set_nonblocking(true)?;
    let bound = sock.local_addr()?.to_string();
    Ok((sock, bound))
}

fn bind_unix(path: &Path) -> io::Result<(UnixDatagram, PathBuf)> {
    // A datagram socket file left by an agent that died: nothing listens
    // on it any more (the control socket already proved this data
    // directory is ours).
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    let sock = UnixDatagram::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    // Programs of other users on the device may feed it, as with UDP.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o622))?;
    sock.set_nonblocking(true)?;
    Ok((sock, path.to_path_buf()))
}

/// Splits at `sep` outside double quotes and not after a backslash.
fn split_unescaped(text: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(n @ (',' | '=' | ' ' | '"' | '\\'))) => {
                out.push(n);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

fn influx(line: &str, now_ms: u64) -> Result<Vec<Ingested>, String> {
    if line.starts_with('#') {
        return Ok(Vec::new()); // a comment
    }
    let sections: Vec<&str> = split_unescaped(line, ' ')
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let (head, fields, ts) = match sections[..] {
        [h, f] => (h, f, None),
        [h, f, t] => (h, f, Some(t)),
        _ => {
            return Err(
                "Influx needs 'measurement[,tag=v] field=value [timestamp]' (or StatsD name:value|type)"
                    .into(),
            );
        }
    };
    let ts_ms = match ts {
        None => None,
        Some(t) => {
            let ns: i64 = t
                .parse()
                .map_err(|_| format!("timestamp {t:?} is not an integer"))?;
            let ms = (ns / 1_000_000).max(0) as u64;
            if ms.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
                return Err(format!(
                    "timestamp {t} is years from now; Influx timestamps are nanoseconds"
                ));
            }
            Some(ms)
        }
    };
    let mut head = split_unescaped(head, ',').into_iter();
    let measurement = unescape(head.next().unwrap_or_default());
    let mut tags = Vec::new();
    for tag in head {
        let (k, v) = tag
            .split_once('=')
            .ok_or_else(|| format!("tag {tag:?} is not key=value"))?;
        // Made valid as a StatsD tag key is (`k8s.pod` is `k8s_pod`): a
        // key Telegraf or a client library chose is not a reason to lose
        // the line.
        tags.push((tag_key(&unescape(k)), unescape(v)));
    }
    let mut out = Vec::new();
    for field in split_unescaped(fields, ',') {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| format!("field {field:?} is not key=value"))?;
        let value = if v.starts_with('"') {
            continue; // strings are not samples
        } else if let Some(i) = v.strip_suffix(['i', 'u']) {
            Value::Int(
                i.parse()
                    .map_err(|_| format!("field {k}: {v:?} is not an integer"))?,
            )
        } else {
            match v {
                "t" | "T" | "true" | "True" | "TRUE" => Value::Int(1),
                "f" | "F" | "false" | "False" | "FALSE" => Value::Int(0),
                _ => Value::Float(number(v).map_err(|e| format!("field {k}: {e}"))?),
            }
        };
        let key = unescape(k);
        let name = if key == "value" {
            measurement.clone()
        } else {
            format!("{measurement}.{key}")
        };
        let name = series_name(&name, &tags).map_err(|e| e.to_string())?;
        out.push(Ingested { name, value, ts_ms });
    }
    if out.is_empty() && !fields.contains('"') {
        return Err("no fields".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
