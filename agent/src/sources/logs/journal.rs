//! The systemd journal, read as `journalctl --follow --output=export`
//! prints it (the agent is static and links no libsystemd; journalctl is
//! the journal's own reader, as Vector's journald source uses it; the
//! export format is a few lines to read, with every field whole, where
//! JSON would need a JSON reader in the agent).
//!
//! Each entry's `MESSAGE` becomes log lines (one per line of it), its
//! source `journal:UNIT` (the systemd unit, else the syslog identifier,
//! else the command), its time the entry's own. An entry counts once the
//! spool took its lines; the cursor of the last one is kept with the
//! files' offsets, and journalctl is started after it again (a restart of
//! the agent, or of journalctl when it ends). Entries journalctl printed
//! and the spool has not taken wait in memory; journalctl waits on its
//! pipe behind them, so the journal itself is the buffer.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader};

use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fleetmq_protocol::telemetry::MAX_METRIC_NAME_LEN;
use tracing::{info, warn};

use super::{Counts, LogsConfig, StartAt, split_lines};
use crate::telemetry::uplink::Record;

/// What the reader threads hand over: entries, what journalctl said on
/// stderr, and its end.
enum Read {
    Entry(Entry),
    Said(String),
    Ended(String),
}

/// One journal entry as log lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub cursor: String,
    /// Its own time (`__REALTIME_TIMESTAMP`), ms since the epoch; `None`
    /// is stamped when read.
    pub ts_ms: Option<u64>,
    pub source: String,
    pub lines: Vec<String>,
}

/// Entries journalctl may print ahead of what the agent took in (besides
/// the poll's budget the agent holds).
const AHEAD: usize = 256;
/// How long after journalctl ended (or could not start) it is run again.
const RESTART: Duration = Duration::from_secs(10);

/// The journal and where it was left.
#[derive(Debug)]
pub struct Journal {
    program: String,
    units: Vec<String>,
    /// `--priority`, if any.
    priority: String,
    start_at: StartAt,
    /// The cursor of the last entry the spool took.
    pub(super) cursor: Option<String>,
    running: Option<Running>,
    restart_at: Option<Instant>,
    /// Entries read, not yet taken; the first `polled` went in the last
    /// poll.
    held: VecDeque<Entry>,
    polled: usize,
    /// What journalctl last said on stderr, this run.
    said: Option<String>,
    pub(super) state: String,
    /// Lines sent and left out.
    pub(super) count: Counts,
}

#[derive(Debug)]
struct Running {
    child: Child,
    from: mpsc::Receiver<Read>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Journal {
    /// The journal as `cfg` says to read it, after `cursor` if any.
    pub fn new(cfg: &LogsConfig, cursor: Option<String>) -> Self {
        Journal {
            program: cfg.journalctl.clone(),
            units: cfg.journal_units.clone(),
            priority: cfg.journal_priority.clone(),
            start_at: cfg.start_at,
            cursor,
            running: None,
            restart_at: None,
            held: VecDeque::new(),
            polled: 0,
            said: None,
            state: "starting".into(),
            count: Counts::default(),
        }
    }

    /// journalctl's arguments: after the last entry read (held or
    /// taken), or where `start_at` says.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["--follow", "--output=export", "--no-pager"]
            .map(String::from)
            .to_vec();
        match self.held.back().map(|e| &e.cursor).or(self.cursor.as_ref()) {
            Some(cursor) => args.push(format!("--after-cursor={cursor}")),
            None if self.start_at == StartAt::End => args.push("--lines=0".into()),
            // Since this boot: the journal may hold months.
            None => args.push("--boot".into()),
        }
        args.extend(self.units.iter().map(|u| format!("--unit={u}")));
        if !self.priority.is_empty() {
            args.push(format!("--priority={}", self.priority));
        }
        args
    }

    fn start(&mut self, now: Instant) {
        let args = self.args();
        let mut command = Command::new(&self.program);
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // journalctl ends with the agent, however it ends (a kill -9
        // included): else it would follow the journal for nobody until
        // its next write found the pipe closed.
        // SAFETY: prctl is async-signal-safe and touches no memory of
        // this process; a kernel (or emulator) without it is let be.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let spawned = command.spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                self.state = format!(
                    "cannot run {} ({e}): install systemd's journalctl, or set logs.journalctl; tried again every {} s",
                    self.program,
                    RESTART.as_secs()
                );
                warn!("journal: {}", self.state);
                self.restart_at = Some(now + RESTART);
                return;
            }
        };
        let (tx, from) = mpsc::sync_channel(AHEAD);
        // What journalctl says on stderr comes before its end: the end is
        // told once stderr is read through too.
        let said = child.stderr.take().map(|err| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if tx.send(Read::Said(line)).is_err() {
                        return;
                    }
                }
            })
        });
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(out);
                let why = loop {
                    match read_entry(&mut reader) {
                        Ok(None) => break "its output ended".to_string(),
                        Ok(Some(fields)) => match entry_of(&fields) {
                            Ok(e) => {
                                if tx.send(Read::Entry(e)).is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                let _ = tx.send(Read::Said(format!("an entry is skipped: {e}")));
                            }
                        },
                        Err(e) => break format!("reading its output: {e}"),
                    }
                };
                if let Some(said) = said {
                    let _ = said.join();
                }
                let _ = tx.send(Read::Ended(why));
            });
        }
        info!(program = %self.program, ?args, "reading the journal");
        self.state = "following".into();
        self.said = None;
        self.running = Some(Running { child, from });
    }

    /// Entries' lines up to `budget` (at least one entry's), stamped
    /// `now_ms` where the entry has no time. They count once committed.
    pub fn poll(&mut self, now_ms: u64, now: Instant, budget: usize, out: &mut Vec<Record>) {
        self.polled = 0;
        if self.running.is_none() && self.restart_at.is_none_or(|t| now >= t) {
            self.restart_at = None;
            self.start(now);
        }
        self.take_read(now, budget);
        let mut lines = 0;
        for e in &self.held {
            if self.polled > 0 && lines + e.lines.len() > budget {
                break;
            }
            lines += e.lines.len();
            self.polled += 1;
            out.extend(e.lines.iter().map(|text| Record::Log {
                ts_ms: e.ts_ms.unwrap_or(now_ms),
                source: e.source.clone(),
                text: text.clone(),
            }));
        }
    }

    /// Moves what the reader threads read into `held`, up to a poll's
    /// budget of entries.
    fn take_read(&mut self, now: Instant, budget: usize) {
        let Some(running) = &self.running else { return };
        let mut end = None;
        while self.held.len() < budget {
            match running.from.try_recv() {
                Ok(Read::Entry(e)) => self.held.push_back(e),
                Ok(Read::Said(line)) => {
                    warn!(program = %self.program, "journal: {line}");
                    if !line.trim().is_empty() {
                        self.state = format!("following; journalctl said: {}", line.trim());
                        self.said = Some(line.trim().to_string());
                    }
                }
                Ok(Read::Ended(why)) => {
                    end = Some(why);
                    break;
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    end = Some("it stopped".to_string());
                    break;
                }
            }
        }
        if let Some(why) = end {
            self.ended(&why, now);
        }
    }

    fn ended(&mut self, why: &str, now: Instant) {
        let status = self
            .running
            .as_mut()
            .and_then(|r| r.child.try_wait().ok().flatten())
            .map_or_else(String::new, |s| format!(", {s}"));
        let said = self
            .said
            .take()
            .map_or_else(String::new, |s| format!("; it said: {s}"));
        self.state = format!(
            "journalctl ended ({why}{status}{said}); started again in {} s",
            RESTART.as_secs()
        );
        warn!("journal: {}", self.state);
        self.running = None;
        self.restart_at = Some(now + RESTART);
    }

    /// The last poll's entries are in the spool.
    pub fn commit(&mut self) -> bool {
        if self.polled == 0 {
            return false;
        }
        for e in self.held.drain(..self.polled) {
            self.cursor = Some(e.cursor);
        }
        self.polled = 0;
        true
    }

    /// The last poll's entries were not taken: the next poll gives them
    /// again.
    pub fn rewind(&mut self) {
        self.polled = 0;
    }
}

/// An entry's fields, each a name and its value, in journalctl's order.
pub type Fields = Vec<(String, Vec<u8>)>;

/// The most of one field's value taken from journalctl: what is over it
/// is read and dropped, and the line says how much. It bounds what the
/// entries held in memory take.
pub const MAX_FIELD: usize = 16 * 1024;

/// Reads one entry of journalctl's export format (`--output=export`,
/// systemd's Journal Export Format): `KEY=value` lines, or for a value
/// that is not one line of text, `KEY`, its length as a little-endian
/// u64, the bytes and a line end; a blank line ends the entry. `None` at
/// the end of the output.
pub fn read_entry(r: &mut impl std::io::BufRead) -> std::io::Result<Option<Fields>> {
    use std::io::{Error, ErrorKind, Read as _};
    let mut fields = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            // The end; an entry cut short by it is not one.
            return Ok(None);
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.is_empty() {
            if fields.is_empty() {
                continue;
            }
            return Ok(Some(fields));
        }
        match text.iter().position(|&b| b == b'=') {
            Some(eq) => {
                let key = String::from_utf8_lossy(&text[..eq]).into_owned();
                let value = &text[eq + 1..];
                fields.push((
                    key,
                    cut(value[..value.len().min(MAX_FIELD)].to_vec(), value.len()),
                ));
            }
            None => {
                let key = String::from_utf8_lossy(text).into_owned();
                let mut len = [0u8; 8];
                r.read_exact(&mut len)?;
                let len = u64::from_le_bytes(len);
                let mut value = Vec::new();
                r.by_ref()
                    .take(len.min(MAX_FIELD as u64))
                    .read_to_end(&mut value)?;
                let over = len.saturating_sub(MAX_FIELD as u64);
                std::io::copy(&mut r.by_ref().take(over), &mut std::io::sink())?;
                let value = cut(value, usize::try_from(len).unwrap_or(usize::MAX));
                let mut end = [0u8; 1];
                r.read_exact(&mut end)?;
                if end != *b"\n" {
                    return Err(Error::new(
                        ErrorKind::InvalidData,
                        "a binary field does not end in a line end",
                    ));
                }
                fields.push((key, value));
            }
        }
    }
}

/// `kept`, the first bytes of a value `len` long, saying how many more
/// there were if any.
fn cut(mut kept: Vec<u8>, len: usize) -> Vec<u8> {
    let over = len.saturating_sub(kept.len());
    if over > 0 {
        kept.extend_from_slice(format!(" [{over} more bytes not sent]").as_bytes());
    }
    kept
}

/// An entry's fields as log lines: `MESSAGE`, a line for each of its
/// lines, from `journal:UNIT` (the systemd unit, else the syslog
/// identifier, else the command), at `__REALTIME_TIMESTAMP`.
pub fn entry_of(fields: &[(String, Vec<u8>)]) -> Result<Entry, String> {
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    };
    let text = |key: &str| field(key).map(String::from_utf8_lossy);
    let cursor = text("__CURSOR").ok_or("it has no __CURSOR")?.into_owned();
    let ts_ms = text("__REALTIME_TIMESTAMP")
        .and_then(|us| us.parse::<u64>().ok())
        .map(|us| us / 1000);
    let name = ["_SYSTEMD_UNIT", "SYSLOG_IDENTIFIER", "_COMM"]
        .iter()
        .find_map(|k| text(k).filter(|v| !v.is_empty()));
    // A source is at most 128 bytes without control characters.
    let mut source: String = name
        .map_or_else(|| "journal".into(), |n| format!("journal:{n}"))
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    while source.len() > MAX_METRIC_NAME_LEN {
        source.pop();
    }
    let message = field("MESSAGE").unwrap_or_default();
    let message = message.strip_suffix(b"\n").unwrap_or(message);
    let (lines, _) = split_lines(message, usize::MAX, true);
    Ok(Entry {
        cursor,
        ts_ms,
        source,
        lines,
    })
}
