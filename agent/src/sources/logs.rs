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
//!
//! Lines of either that `keep_lines` and `drop_lines` leave out
//! ([`filter`]), or a source's own lists in `[logs.filters]` (a file, a
//! pattern, the journal, or one unit of it), are read and counted, not
//! sent.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::telemetry::uplink::Record;

mod file;
mod filter;
mod glob;
mod journal;
mod lines;
mod state;
use file::Followed;
use filter::{Counts, Filter};
use glob::Pattern;
use journal::Journal;
pub use journal::{Entry, entry_of, read_entry};
pub use lines::split_lines;
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
    /// Multi-line entries (a stack trace with the line that logged it):
    /// for an entry of `files` (as written there), how a line that begins
    /// an entry begins (`*` any run, `?` any one byte); any other
    /// line continues the entry before it.
    pub multiline: BTreeMap<String, String>,
    /// When not empty, only lines that hold one of these are sent (`*`
    /// any run, `?` any one byte; case matters); of the files' and the
    /// journal's, a multi-line entry as a whole.
    pub keep_lines: Vec<String>,
    /// Lines that hold one of these are not sent (read and counted in
    /// `status` only).
    pub drop_lines: Vec<String>,
    /// Lists of one source's own, for an entry of `files` (as written
    /// there), `journal`, or `journal:UNIT` (one unit's lines, after the
    /// journal's lists): applied after `keep_lines` and `drop_lines`, so
    /// such a line is sent when it passes both.
    pub filters: BTreeMap<String, SourceFilter>,
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
            multiline: BTreeMap::new(),
            keep_lines: Vec::new(),
            drop_lines: Vec::new(),
            filters: BTreeMap::new(),
            start_at: StartAt::End,
            journal: false,
            journal_units: Vec::new(),
            journal_priority: String::new(),
            journalctl: "journalctl".into(),
        }
    }
}

/// One source's own `keep_lines` and `drop_lines` (`[logs.filters]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceFilter {
    pub keep_lines: Vec<String>,
    pub drop_lines: Vec<String>,
}

/// The `[logs.filters]` entry that names the journal.
pub const JOURNAL_ENTRY: &str = "journal";
/// How an entry that names one unit of the journal begins (`journal:UNIT`,
/// the source its lines are sent from).
const JOURNAL_UNIT: &str = "journal:";

/// Whether a `[logs.filters]` entry names the journal or one of its units.
fn is_journal(entry: &str) -> bool {
    entry == JOURNAL_ENTRY || entry.starts_with(JOURNAL_UNIT)
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
    // An entry files does not list is not an error: the hub may set the
    // files (logs.files) and leave this file's entries unused.
    for (entry, begins) in &cfg.multiline {
        if begins.is_empty() || begins.len() > 256 || begins.chars().any(char::is_control) {
            return Err((
                "logs.multiline",
                format!(
                    "{entry:?} = {begins:?}: give how a line that begins an entry begins, 1 to 256 printable bytes (\"????-??-?? \" for a date)"
                ),
            ));
        }
    }
    filter::check(&cfg.keep_lines).map_err(|e| ("logs.keep_lines", e))?;
    filter::check(&cfg.drop_lines).map_err(|e| ("logs.drop_lines", e))?;
    for (entry, own) in &cfg.filters {
        if entry == JOURNAL_UNIT {
            return Err((
                "logs.filters",
                format!(
                    "{entry:?} names no unit: write \"journal:UNIT\" with the unit as the hub shows a line's source (\"journal:ssh.service\", \"journal:kernel\")"
                ),
            ));
        }
        let name = |list: &str, e: String| ("logs.filters", format!("{entry:?} {list}: {e}"));
        filter::check(&own.keep_lines).map_err(|e| name("keep_lines", e))?;
        filter::check(&own.drop_lines).map_err(|e| name("drop_lines", e))?;
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

/// What `status` shows of one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileStatus {
    pub path: String,
    /// `following`, `reading a rotated file to its end`, or why not.
    pub state: String,
    pub offset: u64,
    /// Lines sent.
    pub lines: u64,
    /// Lines `keep_lines` or `drop_lines` left out (shown once there are
    /// some).
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Every followed file, and where each was left.
#[derive(Debug)]
pub struct Tailer {
    files: Vec<Followed>,
    patterns: Vec<Pattern>,
    /// Files let go after a rotation: (device, inode) and their offset.
    let_go: Vec<((u64, u64), u64)>,
    journal: Option<Journal>,
    /// `[logs]`'s lists, and each `[logs.filters]` entry's after them.
    filter: Filter,
    /// (entry, filter): a few, looked through in order.
    own: Vec<(String, Filter)>,
    /// Whether the log said that the filter leaves lines out.
    told_left_out: bool,
    marks_path: PathBuf,
    lines_per_poll: usize,
    start_at: StartAt,
}

/// How a line that begins an entry of `entry`'s files begins, as a
/// pattern matched against a line's start.
fn begins(cfg: &LogsConfig, entry: &str) -> Option<String> {
    cfg.multiline.get(entry).map(|b| format!("{b}*"))
}

/// `entry`'s own filter, if `[logs.filters]` gives it one.
fn own_filter<'a>(own: &'a [(String, Filter)], entry: &str) -> Option<&'a Filter> {
    own.iter().find(|(e, _)| e == entry).map(|(_, f)| f)
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
            .map(|path| {
                let mut f = Followed::open(path, None, kept.files.get(path), cfg.start_at);
                f.begins = begins(cfg, path);
                f
            })
            .collect();
        let patterns = (patterns.into_iter())
            .map(|p| Pattern::new(p, kept.globs.contains(p), begins(cfg, p)))
            .collect();
        let journal = cfg.journal.then(|| Journal::new(cfg, kept.journal));
        for entry in cfg.multiline.keys().filter(|e| !cfg.files.contains(e)) {
            warn!(
                entry,
                "logs.multiline names what logs.files does not list; unused (name a file or pattern exactly as files does)"
            );
        }
        let read = |e: &String| cfg.files.contains(e) || (cfg.journal && is_journal(e));
        for entry in cfg.filters.keys().filter(|e| !read(e)) {
            warn!(
                entry,
                "logs.filters names what logs.files does not list, nor the journal while it is read; unused (name a file or pattern exactly as files does, \"journal\", or \"journal:UNIT\")"
            );
        }
        let filter = Filter::new(&cfg.keep_lines, &cfg.drop_lines);
        let and = |base: &Filter, f: &SourceFilter| base.clone().and(&f.keep_lines, &f.drop_lines);
        // A unit's lists apply after the journal's.
        let journal_own = cfg.filters.get(JOURNAL_ENTRY).map(|f| and(&filter, f));
        let own = (cfg.filters.iter())
            .map(|(entry, f)| {
                let base = match &journal_own {
                    Some(j) if entry.starts_with(JOURNAL_UNIT) => j,
                    _ => &filter,
                };
                (entry.clone(), and(base, f))
            })
            .collect();
        let mut tailer = Tailer {
            files,
            patterns,
            let_go: Vec::new(),
            journal,
            filter,
            own,
            told_left_out: false,
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
            p.skipped = 0;
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
                let why = if self.files.iter().filter(|f| f.pattern.is_some()).count()
                    >= MAX_MATCHED
                {
                    Some(format!(
                        "{MAX_MATCHED} matched log files are followed already; narrow the patterns"
                    ))
                } else if !fleetmq_protocol::telemetry::valid_metric_name(&path) {
                    Some("its path is too long to be a line's source".to_string())
                } else {
                    None
                };
                if let Some(why) = why {
                    // Said once a pattern; status counts them.
                    if !p.told {
                        warn!(pattern = %p.text, path, "a matched log file is not followed: {why}");
                        p.told = true;
                    }
                    p.skipped += 1;
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
                let mut f = Followed::open(&path, Some(i), mark.as_ref(), start);
                f.begins.clone_from(&p.begins);
                self.files.push(f);
            }
            p.seen = true;
        }
    }

    /// The new complete lines of every file, stamped `now_ms`, and the
    /// journal's new entries, at most a poll's budget from each, less
    /// those the filter leaves out. They count once [`Tailer::commit`]ed.
    pub fn poll(&mut self, now_ms: u64, now: Instant) -> Vec<Record> {
        self.look_for_matches(&BTreeMap::new());
        let mut out = Vec::new();
        let mut left_out = 0;
        for f in &mut self.files {
            let entry = match f.pattern {
                Some(i) => &self.patterns[i].text,
                None => &f.path,
            };
            let filter = own_filter(&self.own, entry).unwrap_or(&self.filter);
            let from = out.len();
            f.poll(now_ms, now, self.lines_per_poll, &mut out);
            left_out += filter.apply(&mut out, from, &mut f.count);
        }
        if let Some(j) = &mut self.journal {
            let filter = own_filter(&self.own, JOURNAL_ENTRY).unwrap_or(&self.filter);
            let own = &self.own;
            // Each line by its unit's lists, if it has any.
            let filter_of = |source: &str| Some(own_filter(own, source).unwrap_or(filter));
            let from = out.len();
            j.poll(now_ms, now, self.lines_per_poll, &mut out);
            left_out += filter::apply_each(&mut out, from, &mut j.count, filter_of);
        }
        // Said once: a filter that leaves out every line is no mystery.
        if left_out > 0 && !self.told_left_out {
            self.told_left_out = true;
            info!(
                lines = left_out,
                "log lines left out by [logs] keep_lines or drop_lines, or [logs.filters]: read past, never sent; status counts them as each source's dropped"
            );
        }
        out
    }

    /// The lines of the last poll are in the spool: go on after them, and
    /// keep where each file was left.
    pub fn commit(&mut self) {
        let mut moved = false;
        for f in &mut self.files {
            f.count.commit();
            if f.read_to != f.offset {
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
            j.count.commit();
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
            f.count.rewind();
        }
        if let Some(j) = &mut self.journal {
            j.count.rewind();
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
            let (count, lines, dropped) = matched.fold((0, 0, 0), |(n, l, d), f| {
                (n + 1, l + f.count.sent, d + f.count.dropped)
            });
            FileStatus {
                path: p.text.clone(),
                state: match (&p.trouble, p.skipped) {
                    (Some(why), _) => why.clone(),
                    (None, 0) if count == 1 => "1 file matches".into(),
                    (None, 0) => format!("{count} files match"),
                    (None, n) => format!(
                        "{count} followed; {n} more {} (see the agent's log)",
                        if n == 1 {
                            "matches and is not"
                        } else {
                            "match and are not"
                        }
                    ),
                },
                offset: 0,
                lines,
                dropped,
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
            lines: f.count.sent,
            dropped: f.count.dropped,
        });
        let journal = self.journal.iter().map(|j| FileStatus {
            path: "journal".into(),
            state: j.state.clone(),
            offset: 0,
            lines: j.count.sent,
            dropped: j.count.dropped,
        });
        patterns.chain(files).chain(journal).collect()
    }
}

#[cfg(test)]
mod tests;
