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
mod tests {
    use std::time::Duration;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn one(line: &str) -> Result<Vec<Ingested>, String> {
        influx(line, NOW)
    }

    fn sample(name: &str, value: Value, ts_ms: Option<u64>) -> Ingested {
        Ingested {
            name: name.into(),
            value,
            ts_ms,
        }
    }

    #[test]
    fn influx_lines_become_samples() {
        assert_eq!(
            one("env,room=lab temp=21.5,hum=40i,ok=true,note=\"fine, dry\" 1700000000123000000"),
            Ok(vec![
                sample(
                    "env.temp{room=lab}",
                    Value::Float(21.5),
                    Some(1_700_000_000_123)
                ),
                sample("env.hum{room=lab}", Value::Int(40), Some(1_700_000_000_123)),
                sample("env.ok{room=lab}", Value::Int(1), Some(1_700_000_000_123)),
            ])
        );
        assert_eq!(
            one("pump value=3"),
            Ok(vec![sample("pump", Value::Float(3.0), None)])
        );
        assert_eq!(
            one(r"my\ pump,site=north\ yard value=1u"),
            Ok(vec![sample(
                "my pump{site=north yard}",
                Value::Int(1),
                None
            )])
        );
        assert_eq!(one("# a comment"), Ok(vec![]));
    }

    #[test]
    fn influx_tag_keys_are_made_valid_as_statsd_ones() {
        assert_eq!(
            one("env,k8s.pod=web-1,host-name=pi\\ 3 t=1i"),
            Ok(vec![sample(
                "env.t{host_name=pi 3,k8s_pod=web-1}",
                Value::Int(1),
                None
            )])
        );
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        let err = |line: &str| one(line).unwrap_err();
        assert!(err("just words here and more").contains("Influx needs"));
        assert!(err("m").contains("Influx needs"));
        assert!(err("m f=abc").contains("not a number"));
        assert!(err("m f=1x2i").contains("not an integer"));
        assert!(err("m,tag f=1").contains("not key=value"));
        assert!(err("m f=1 1700000000").contains("nanoseconds"));
        assert!(err("m f=1 soon").contains("not an integer"));
        assert!(err("m,k=a\\,b f=1").contains("tag k="));
    }

    #[test]
    fn both_sockets_take_lines_and_count_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = IngestConfig {
            udp: "127.0.0.1:0".into(),
            unix: "in.sock".into(),
            ..IngestConfig::default()
        };
        let (mut ingest, problems) = Ingest::open(&cfg, dir.path());
        assert!(problems.is_empty(), "{problems:?}");
        let t0 = Instant::now();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.send_to(b"a:1|c\nbad line\n", &ingest.status.udp)
            .unwrap();
        let unix = UnixDatagram::unbound().unwrap();
        unix.send_to(b"b v=2", dir.path().join("in.sock")).unwrap();
        let mut got = Vec::new();
        let mut complaints = Vec::new();
        while ingest.status.datagrams < 2 {
            let mut fds: Vec<libc::pollfd> = ingest
                .fds()
                .into_iter()
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: `fds` is a valid array of pollfd for its length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 5_000) };
            assert!(n > 0, "no datagram arrived within 5 s");
            let (s, c) = ingest.drain(NOW, t0);
            got.extend(s);
            complaints.extend(c);
        }
        // The Influx sample at once; the StatsD line when its interval is
        // flushed.
        let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b.v"]);
        assert_eq!(ingest.statsd_due(), Some(t0 + Duration::from_secs(10)));
        let folded = ingest.flush_statsd(NOW);
        assert_eq!(folded.len(), 1);
        assert_eq!(
            (folded[0].name.as_str(), folded[0].value),
            ("a", Value::Int(1))
        );
        assert_eq!((ingest.status.statsd_lines, ingest.status.samples), (1, 2));
        assert_eq!(ingest.status.malformed, 1);
        assert_eq!(complaints.len(), 1);
        assert!(ingest.status.last_error.contains("bad line"));
        // A flood is taken a slice at a time, so the agent's loop goes on.
        // (A few datagrams: a Unix socket's queue is short, and a sender
        // blocks when it is full.)
        ingest.per_drain = 3;
        let unix_path = dir.path().join("in.sock");
        for i in 0..5 {
            unix.send_to(format!("n v={i}").as_bytes(), &unix_path)
                .unwrap();
        }
        let (first, _) = ingest.drain(NOW, t0);
        assert_eq!(first.len(), 3);
        let (rest, _) = ingest.drain(NOW, t0);
        assert_eq!(rest.len(), 2);

        let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
        let busy = IngestConfig {
            udp: taken.local_addr().unwrap().to_string(),
            unix: String::new(),
            ..IngestConfig::default()
        };
        let (second, problems) = Ingest::open(&busy, dir.path());
        assert_eq!(problems.len(), 1, "a port in use is said, not fatal");
        assert!(second.status.udp.starts_with("off: "));
        assert_eq!(
            second.status.unix, "off: ingest.unix is \"\" in the config",
            "a socket turned off says so in status"
        );
    }

    /// What a local program sends is a peer's input: any line, random or
    /// a valid one mangled, is refused with a reason or becomes samples a
    /// batch takes (a valid name, a finite value, a time in range), so a
    /// line accepted here is never one the spool or the hub turns away.
    #[test]
    fn any_line_is_refused_with_a_reason_or_becomes_samples_a_batch_takes() {
        let mut rng = fastrand::Rng::with_seed(19);
        let valid = [
            "env,room=hall temp=21.5,hum=40i",
            "pump value=3i 1700000000000000000",
            "s,a=b f=t,g=\"text\",h=-1.5e3",
            "x\\,y,k\\ =v\\= f=1u",
            "door.opened:1|c|#room:hall,floor:2",
            "t:12|ms|@0.5",
            "g:-3|g",
            "set:7|s",
        ];
        let alphabet: Vec<char> = "aZ09._-,= |:#@\"\\{}\t\u{0}\u{7f}\u{1b}éµ∞eiutfTF+-.ns"
            .chars()
            .collect();
        // Whole words a parser must weigh: numbers at and past the edges.
        let words = [
            "NaN",
            "nan",
            "inf",
            "-inf",
            "Infinity",
            "1e999",
            "-1e999",
            "1e-400",
            "-0",
            "9223372036854775807i",
            "9223372036854775808i",
            "-9223372036854775809i",
            "18446744073709551616u",
            "99999999999999999999999",
            "0x10",
            "1_000",
        ];
        let mut statsd = Statsd::new(1_000, &[50.0, 99.0]);
        let now = Instant::now();
        let mut accepted = Vec::new();
        let mut refused = 0;
        for i in 0..40_000 {
            let mut line: Vec<char> = if i % 2 == 0 {
                valid[rng.usize(..valid.len())].chars().collect()
            } else {
                Vec::new()
            };
            for _ in 0..rng.usize(1..12) {
                let c = alphabet[rng.usize(..alphabet.len())];
                if rng.u8(..4) == 0 {
                    let at = rng.usize(..=line.len());
                    let word = words[rng.usize(..words.len())];
                    line.splice(at..at, word.chars());
                    continue;
                }
                match rng.u8(..3) {
                    0 if !line.is_empty() => {
                        line.remove(rng.usize(..line.len()));
                    }
                    1 if !line.is_empty() => {
                        let at = rng.usize(..line.len());
                        line[at] = c;
                    }
                    _ => line.insert(rng.usize(..=line.len()), c),
                }
            }
            let text: String = line.into_iter().collect();
            // As drain hands lines over.
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let parsed = if line.contains('|') {
                    statsd.fold(line, now).map(|()| Vec::new())
                } else {
                    influx(line, NOW)
                };
                match parsed {
                    Ok(samples) => accepted.extend(samples),
                    Err(why) => {
                        refused += 1;
                        assert!(!why.trim().is_empty(), "{line:?} refused without a reason");
                    }
                }
            }
        }
        accepted.extend(statsd.flush(NOW));
        assert!(
            refused > 1_000 && accepted.len() > 1_000,
            "{refused} refused, {} accepted",
            accepted.len()
        );
        for s in &accepted {
            if let Value::Float(v) = s.value {
                assert!(
                    v.is_finite(),
                    "accepted a value that is not a number: {s:?}"
                );
            }
            let mut batch = fleetmq_protocol::BatchBuilder::new(0);
            if let Err(e) = batch.push_sample(&s.name, s.ts_ms.unwrap_or(NOW), s.value) {
                panic!("accepted, but a batch refuses it: {s:?}: {e}");
            }
        }
    }
}
