//! Log files followed as `tail -F` follows them, each line a record for the
//! hub (`[logs] files`).
//!
//! The file itself is the buffer: a poll reads on from where the last
//! accepted line ended, at most a budget of lines, and only complete lines
//! (a line still being written waits for its end). What was read counts
//! only once the spool has it ([`Tailer::commit`]); until then the next
//! poll reads the same bytes again ([`Tailer::rewind`] after a refusal).
//! So a line is lost only if its file is gone before the agent reads it.
//!
//! A file renamed away (logrotate's default) is read on through the
//! descriptor the agent holds until it has not grown for 5 s (the program
//! writing it reopens its log), then to its end, its last unfinished line
//! included, before the new file at the path is read from its start. A file cut short in
//! place (`copytruncate`) is read again from its start. Where each file
//! was left is kept in `DATA_DIR/logs.state` (its device, inode and
//! offset), so a restart reads on from there: lines read again after a
//! crash between the spool and that file are sent twice (at least once).
//!
//! An entry with `*` or `?` in its file name is a pattern ([`glob`]): the
//! files of its directory it matches are followed, and new ones are looked
//! for at every poll (read from their beginning). A matched file is
//! followed through a rename as any other; one already read under another
//! name is not read again.
//!
//! The systemd journal is read through journalctl ([`journal`]), its
//! cursor kept beside the files' offsets.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fleetmq_protocol::telemetry::MAX_LOG_LINE_LEN;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::telemetry::uplink::Record;

mod glob;
mod journal;
mod state;
use glob::Pattern;
use journal::Journal;
pub use journal::{Entry, entry_of, read_entry};
use state::{Kept, Mark};

/// The `[logs]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Files to follow, by absolute path; each line is sent with the path
    /// as its source. `*` and `?` in a file name match every such file of
    /// its directory, those that come later included.
    pub files: Vec<String>,
    /// How often the files are looked at.
    pub poll_ms: u64,
    /// Most lines read from one file a second; past it the rest waits in
    /// the file for the next poll.
    pub max_lines_per_s: u32,
    /// Where a file first seen at start is read from: `end` (only what is
    /// written from now on) or `beginning`. A file that appears later, or
    /// replaces a rotated one, is read from its beginning. For the
    /// journal, `beginning` is this boot's entries.
    pub start_at: StartAt,
    /// Read the systemd journal too (through `journalctl`).
    pub journal: bool,
    /// Only these units' entries (`ssh.service`); empty: every entry.
    pub journal_units: Vec<String>,
    /// Only entries of this priority or more urgent (`warning`: emerg to
    /// warning); empty: every entry.
    pub journal_priority: String,
    /// The journal's reader.
    pub journalctl: String,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            files: Vec::new(),
            poll_ms: 1_000,
            max_lines_per_s: 1_000,
            start_at: StartAt::End,
            journal: false,
            journal_units: Vec::new(),
            journal_priority: String::new(),
            journalctl: "journalctl".into(),
        }
    }
}

/// Where a file first seen at start is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    End,
    Beginning,
}

/// Why a `[logs]` section cannot be used.
pub fn check(cfg: &LogsConfig) -> Result<(), (&'static str, String)> {
    for (i, path) in cfg.files.iter().enumerate() {
        if !path.starts_with('/') {
            return Err((
                "logs.files",
                format!("{path:?} is not an absolute path: give the file's whole path"),
            ));
        }
        if !fleetmq_protocol::telemetry::valid_metric_name(path) {
            return Err((
                "logs.files",
                format!(
                    "{path:?}: a path is sent with every line, so it must be 1 to {} printable bytes",
                    fleetmq_protocol::telemetry::MAX_METRIC_NAME_LEN
                ),
            ));
        }
        if cfg.files[..i].contains(path) {
            return Err(("logs.files", format!("{path:?} is listed twice")));
        }
        if glob::is_pattern(path) {
            glob::check(path).map_err(|e| ("logs.files", e))?;
        }
    }
    if !cfg.journal_priority.is_empty() && !PRIORITIES.contains(&cfg.journal_priority.as_str()) {
        return Err((
            "logs.journal_priority",
            format!(
                "{:?} is not a priority: one of {}, or \"\" for every entry",
                cfg.journal_priority,
                PRIORITIES[..8].join(", ")
            ),
        ));
    }
    if cfg.poll_ms < 100 {
        return Err((
            "logs.poll_ms",
            format!("{} ms is too short: the least is 100 ms", cfg.poll_ms),
        ));
    }
    if cfg.max_lines_per_s == 0 {
        return Err(("logs.max_lines_per_s", "must be more than 0".into()));
    }
    if let Some(unit) = cfg
        .journal_units
        .iter()
        .find(|u| u.is_empty() || u.starts_with('-') || u.chars().any(char::is_whitespace))
    {
        return Err((
            "logs.journal_units",
            format!("{unit:?} is not a unit name (such as \"ssh.service\")"),
        ));
    }
    if cfg.journalctl.is_empty() {
        return Err((
            "logs.journalctl",
            "names no program: give \"journalctl\" or its path".into(),
        ));
    }
    Ok(())
}

/// What `journal_priority` may be, as journalctl's `--priority` takes it.
const PRIORITIES: [&str; 16] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug", "0", "1", "2", "3", "4",
    "5", "6", "7",
];

/// Most files followed at once through patterns (each holds a descriptor).
const MAX_MATCHED: usize = 256;

/// How many files let go after a rotation are remembered, so that one
/// matched again under its new name is read on, not again.
const LET_GO_KEPT: usize = 64;

/// Most bytes read from one file in one poll.
const READ_CHUNK: usize = 256 * 1024;

/// One followed file.
#[derive(Debug)]
struct Followed {
    path: String,
    /// The pattern it matched, if it was not listed by its path.
    pattern: Option<usize>,
    /// The file being read: the one at `path`, or the one renamed away
    /// from it until it is read to its end.
    file: Option<File>,
    /// Its device and inode.
    id: (u64, u64),
    /// Where the lines accepted so far end.
    offset: u64,
    /// Where the lines read by the last poll end, once accepted.
    read_to: u64,
    /// The file at the path replaced the one being read: read this one
    /// to its end, then move on.
    draining: bool,
    /// Missing (or unreadable) the last time it was looked for: when it
    /// comes, it is read from its beginning.
    absent: Option<String>,
    /// Lines read and accepted.
    lines: u64,
    /// Lines the last poll read, not yet accepted.
    pending: u64,
    /// While draining: the rotated file's size when last looked at, and
    /// since when it has not grown.
    drain_size: u64,
    still_since: Option<Instant>,
    /// The rotated file has not grown for [`ROTATE_WAIT`]: its last line
    /// ends at its end, and once read it is let go.
    letting_go: bool,
}

/// How long a rotated file is read on after it stopped growing: a
/// program writes to it until it reopens its log (logrotate's postrotate
/// tells it to), as Fluent Bit's `Rotate_Wait`.
const ROTATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What `status` shows of one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileStatus {
    pub path: String,
    /// `following`, `reading a rotated file to its end`, or why not.
    pub state: String,
    pub offset: u64,
    pub lines: u64,
}

/// Every followed file, and where each was left.
#[derive(Debug)]
pub struct Tailer {
    files: Vec<Followed>,
    patterns: Vec<Pattern>,
    /// Files let go after a rotation: (device, inode) and their offset.
    let_go: Vec<((u64, u64), u64)>,
    journal: Option<Journal>,
    marks_path: PathBuf,
    lines_per_poll: usize,
    start_at: StartAt,
}

fn id_of(m: &std::fs::Metadata) -> (u64, u64) {
    (m.dev(), m.ino())
}

impl Tailer {
    /// Opens the files of `cfg`, each where `logs.state` in `data_dir` says
    /// it was left, or as `start_at` says for a file it does not name.
    pub fn open(cfg: &LogsConfig, data_dir: &Path) -> Tailer {
        let marks_path = data_dir.join("logs.state");
        let read = match std::fs::read_to_string(&marks_path) {
            Ok(text) => Kept::parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Kept::default()),
            Err(e) => Err(e.to_string()),
        };
        let kept = read.unwrap_or_else(|e| {
            warn!(file = %marks_path.display(), error = %e, "where the log files were left cannot be read; each is read as if first seen");
            Kept::default()
        });
        let lines_per_poll = (u64::from(cfg.max_lines_per_s) * cfg.poll_ms / 1000).max(1) as usize;
        let (patterns, paths): (Vec<&String>, Vec<&String>) =
            cfg.files.iter().partition(|f| glob::is_pattern(f));
        let files = (paths.into_iter())
            .map(|path| Followed::open(path, None, kept.files.get(path), cfg.start_at))
            .collect();
        let patterns = (patterns.into_iter())
            .map(|p| Pattern::new(p, kept.globs.contains(p)))
            .collect();
        let journal = cfg.journal.then(|| Journal::new(cfg, kept.journal));
        let mut tailer = Tailer {
            files,
            patterns,
            let_go: Vec::new(),
            journal,
            marks_path,
            lines_per_poll,
            start_at: cfg.start_at,
        };
        tailer.look_for_matches(&kept.files);
        // Where each source starts is kept at once: lines written while the
        // agent is stopped are read at its next start even when none came
        // meanwhile.
        if !tailer.is_empty()
            && let Err(e) = tailer.save()
        {
            warn!(file = %tailer.marks_path.display(), error = %e, "could not keep where the log files start; lines written before the next start may be missed");
        }
        tailer
    }

    /// True when there is nothing to follow.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.patterns.is_empty() && self.journal.is_none()
    }

    /// Follows the files the patterns match that are not followed yet, and
    /// lets go those matched before that are gone. `marks` says where a
    /// file was left before a start.
    fn look_for_matches(&mut self, marks: &BTreeMap<String, Mark>) {
        if self.patterns.is_empty() {
            return;
        }
        self.files.retain(|f| {
            let gone = f.pattern.is_some()
                && f.file.is_none()
                && std::fs::metadata(&f.path).is_err_and(|e| e.kind() == io::ErrorKind::NotFound);
            if gone {
                info!(path = %f.path, "a matched log file is gone; no longer followed");
            }
            !gone
        });
        for (i, p) in self.patterns.iter_mut().enumerate() {
            for path in p.paths() {
                if self.files.iter().any(|f| f.path == path) {
                    continue;
                }
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                let id = id_of(&meta);
                // Renamed from a followed name, and still read under it.
                if self.files.iter().any(|f| f.file.is_some() && f.id == id) {
                    continue;
                }
                if self.files.iter().filter(|f| f.pattern.is_some()).count() >= MAX_MATCHED {
                    warn!(pattern = %p.text, path, "{MAX_MATCHED} matched log files are followed already; this one is not (narrow the patterns)");
                    continue;
                }
                if !fleetmq_protocol::telemetry::valid_metric_name(&path) {
                    warn!(pattern = %p.text, path, "a matched log file's path is too long to be a source; not followed");
                    continue;
                }
                // Read before under another name: on from there.
                let read_before = (self.let_go.iter())
                    .find(|(was, _)| *was == id)
                    .map(|&((dev, ino), offset)| Mark { dev, ino, offset });
                let mark = read_before.or_else(|| marks.get(&path).copied());
                let start = if p.seen {
                    StartAt::Beginning
                } else {
                    self.start_at
                };
                self.files
                    .push(Followed::open(&path, Some(i), mark.as_ref(), start));
            }
            p.seen = true;
        }
    }

    /// The new complete lines of every file, stamped `now_ms`, and the
    /// journal's new entries, at most a poll's budget from each. They
    /// count once [`Tailer::commit`]ed.
    pub fn poll(&mut self, now_ms: u64, now: Instant) -> Vec<Record> {
        self.look_for_matches(&BTreeMap::new());
        let mut out = Vec::new();
        for f in &mut self.files {
            f.poll(now_ms, now, self.lines_per_poll, &mut out);
        }
        if let Some(j) = &mut self.journal {
            j.poll(now_ms, now, self.lines_per_poll, &mut out);
        }
        out
    }

    /// The lines of the last poll are in the spool: go on after them, and
    /// keep where each file was left.
    pub fn commit(&mut self) {
        let mut moved = false;
        for f in &mut self.files {
            if f.read_to != f.offset {
                f.lines += f.pending;
                f.offset = f.read_to;
                moved = true;
            }
            if let Some(done) = f.finish_drain() {
                if self.let_go.len() == LET_GO_KEPT {
                    self.let_go.remove(0);
                }
                self.let_go.push(done);
            }
        }
        if let Some(j) = &mut self.journal {
            moved |= j.commit();
        }
        if moved && let Err(e) = self.save() {
            warn!(file = %self.marks_path.display(), error = %e, "could not keep where the log files were left; after a restart some lines may be sent again");
        }
    }

    /// The lines of the last poll were not taken: the next poll reads them
    /// again.
    pub fn rewind(&mut self) {
        for f in &mut self.files {
            f.read_to = f.offset;
            f.pending = 0;
        }
        if let Some(j) = &mut self.journal {
            j.rewind();
        }
    }

    fn save(&self) -> io::Result<()> {
        let files: BTreeMap<String, Mark> = self
            .files
            .iter()
            .filter(|f| f.file.is_some())
            .map(|f| {
                let (dev, ino) = f.id;
                let mark = Mark {
                    dev,
                    ino,
                    offset: f.offset,
                };
                (f.path.clone(), mark)
            })
            .collect();
        let kept = Kept {
            files,
            globs: self.patterns.iter().map(|p| p.text.clone()).collect(),
            journal: self.journal.as_ref().and_then(|j| j.cursor.clone()),
        };
        let tmp = self.marks_path.with_extension("state.tmp");
        std::fs::write(&tmp, kept.text())?;
        std::fs::rename(&tmp, &self.marks_path)
    }

    /// Each file's state, each pattern's, and the journal's (as
    /// `journal`), for `status`.
    pub fn status(&self) -> Vec<FileStatus> {
        let patterns = self.patterns.iter().enumerate().map(|(i, p)| {
            let matched = self.files.iter().filter(|f| f.pattern == Some(i));
            let (count, lines) = matched.fold((0, 0), |(n, l), f| (n + 1, l + f.lines));
            FileStatus {
                path: p.text.clone(),
                state: match &p.trouble {
                    Some(why) => why.clone(),
                    None if count == 1 => "1 file matches".into(),
                    None => format!("{count} files match"),
                },
                offset: 0,
                lines,
            }
        });
        let files = self.files.iter().map(|f| FileStatus {
            path: f.path.clone(),
            state: match (&f.absent, f.draining) {
                (Some(why), _) => why.clone(),
                (None, true) => "reading a rotated file to its end".into(),
                (None, false) => "following".into(),
            },
            offset: f.offset,
            lines: f.lines,
        });
        let journal = self.journal.iter().map(|j| FileStatus {
            path: "journal".into(),
            state: j.state.clone(),
            offset: 0,
            lines: j.lines,
        });
        patterns.chain(files).chain(journal).collect()
    }
}

impl Followed {
    fn open(
        path: &str,
        pattern: Option<usize>,
        mark: Option<&Mark>,
        start_at: StartAt,
    ) -> Followed {
        let mut f = Followed {
            path: path.to_string(),
            pattern,
            file: None,
            id: (0, 0),
            offset: 0,
            read_to: 0,
            draining: false,
            absent: None,
            lines: 0,
            pending: 0,
            drain_size: 0,
            still_since: None,
            letting_go: false,
        };
        let (file, meta) = match File::open(path).and_then(|file| Ok((file.metadata()?, file))) {
            Ok((meta, file)) => (file, meta),
            Err(e) => {
                f.gone(&e);
                return f;
            }
        };
        f.id = id_of(&meta);
        f.offset = match mark {
            Some(m) if (m.dev, m.ino) == f.id && m.offset <= meta.len() => m.offset,
            Some(m) if (m.dev, m.ino) == f.id => {
                warn!(
                    path,
                    "the log file is shorter than where it was left (cut short while the agent was stopped); reading it from its beginning"
                );
                0
            }
            Some(_) => {
                warn!(
                    path,
                    "the log file was replaced while the agent was stopped (rotated); reading the new one from its beginning"
                );
                0
            }
            None if start_at == StartAt::Beginning => 0,
            None => meta.len(),
        };
        f.read_to = f.offset;
        f.file = Some(file);
        info!(path, offset = f.offset, "following a log file");
        f
    }

    fn gone(&mut self, e: &io::Error) {
        let why = match e.kind() {
            io::ErrorKind::NotFound => {
                "missing: read from its beginning once it is there".to_string()
            }
            _ => format!("cannot be read ({e}): read from its beginning once it can be"),
        };
        // A matched file that is gone is let go (see look_for_matches).
        let matched_gone = self.pattern.is_some() && e.kind() == io::ErrorKind::NotFound;
        if self.absent.as_ref() != Some(&why) && !matched_gone {
            warn!(path = %self.path, "log file {why}");
        }
        self.absent = Some(why);
    }

    /// Looks at the path: a file there now that is not the one being read
    /// (rotated) makes the one being read drain; a file where there was
    /// none is opened from its beginning.
    fn look(&mut self) {
        match std::fs::metadata(&self.path) {
            Ok(meta) if self.file.is_none() => match File::open(&self.path) {
                Ok(file) => {
                    info!(path = %self.path, "log file is there; reading it from its beginning");
                    self.file = Some(file);
                    self.id = id_of(&meta);
                    (self.offset, self.read_to) = (0, 0);
                    self.absent = None;
                }
                Err(e) => self.gone(&e),
            },
            Ok(meta) if id_of(&meta) != self.id => self.draining = true,
            Ok(_) => {}
            // Renamed away, not yet replaced: read what it holds.
            Err(_) if self.file.is_some() => self.draining = true,
            Err(e) => self.gone(&e),
        }
    }

    fn poll(&mut self, now_ms: u64, now: Instant, budget: usize, out: &mut Vec<Record>) {
        self.pending = 0;
        self.look();
        let Some(file) = &mut self.file else { return };
        let size = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                warn!(path = %self.path, error = %e, "could not look at a log file");
                return;
            }
        };
        if self.draining {
            if size != self.drain_size || self.still_since.is_none() {
                (self.drain_size, self.still_since) = (size, Some(now));
            }
            self.letting_go = self
                .still_since
                .is_some_and(|t| now.saturating_duration_since(t) >= ROTATE_WAIT);
        }
        if size < self.offset {
            warn!(path = %self.path, "log file was cut short in place (copytruncate); reading it from its beginning");
            (self.offset, self.read_to) = (0, 0);
        }
        if size == self.offset {
            return;
        }
        let want = (size - self.offset).min(READ_CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        let read = file
            .seek(SeekFrom::Start(self.offset))
            .and_then(|_| read_full(file, &mut buf));
        let got = match read {
            Ok(n) => n,
            Err(e) => {
                warn!(path = %self.path, error = %e, "could not read a log file; trying again at the next poll");
                return;
            }
        };
        buf.truncate(got);
        // A rotated file that stopped growing has no more to come: its
        // last line ends at its end, finished or not.
        let at_end = self.letting_go && self.offset + got as u64 == size;
        let (lines, used) = split_lines(&buf, budget, at_end);
        self.pending = lines.len() as u64;
        self.read_to = self.offset + used as u64;
        out.extend(lines.into_iter().map(|text| Record::Log {
            ts_ms: now_ms,
            source: self.path.clone(),
            text,
        }));
    }

    /// A rotated file that stopped growing and is read to its end is let
    /// go (its id and offset returned), and the path's new file (if any) is
    /// read from its beginning at the next poll.
    fn finish_drain(&mut self) -> Option<((u64, u64), u64)> {
        let drained = self.letting_go
            && self
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .is_some_and(|m| m.len() <= self.offset);
        if !drained {
            return None;
        }
        info!(path = %self.path, "rotated log file read to its end; following the new one");
        let done = (self.id, self.offset);
        self.file = None;
        (self.draining, self.letting_go, self.still_since) = (false, false, None);
        self.look();
        Some(done)
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The complete lines at the start of `bytes`, at most `budget` of them,
/// without their line ends (`\n`, or `\r\n`), and how many bytes they
/// took. A line longer than [`MAX_LOG_LINE_LEN`] is sent in pieces of at
/// most that many bytes; what follows the last line end waits for its end,
/// unless `at_end` (the file will not grow). Bytes that are not UTF-8 are
/// sent as U+FFFD.
pub fn split_lines(bytes: &[u8], budget: usize, at_end: bool) -> (Vec<String>, usize) {
    let mut lines = Vec::new();
    let mut used = 0;
    while lines.len() < budget && used < bytes.len() {
        let rest = &bytes[used..];
        let window = &rest[..rest.len().min(MAX_LOG_LINE_LEN + 1)];
        let (line, took) = match window.iter().position(|&b| b == b'\n') {
            Some(end) => (&rest[..end], end + 1),
            None if rest.len() > MAX_LOG_LINE_LEN => {
                let cut = piece_end(rest);
                (&rest[..cut], cut)
            }
            None if at_end => (rest, rest.len()),
            None => break,
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = String::from_utf8_lossy(line);
        // U+FFFD takes three bytes where a stray byte took one.
        if text.len() > MAX_LOG_LINE_LEN {
            let cut = piece_end(&line[..MAX_LOG_LINE_LEN / 3]);
            lines.push(String::from_utf8_lossy(&line[..cut]).into_owned());
            used += cut;
            continue;
        }
        lines.push(text.into_owned());
        used += took;
    }
    (lines, used)
}

/// Where a piece of a long line ends: at most [`MAX_LOG_LINE_LEN`] bytes,
/// not inside a UTF-8 character.
fn piece_end(bytes: &[u8]) -> usize {
    let mut cut = bytes.len().min(MAX_LOG_LINE_LEN);
    // Back off continuation bytes (10xxxxxx), at most three.
    for _ in 0..3 {
        if cut < bytes.len() && cut > 0 && bytes[cut] & 0xC0 == 0x80 {
            cut -= 1;
        }
    }
    cut.max(1)
}

#[cfg(test)]
mod tests;
