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

use serde::Serialize;
use tracing::{info, warn};

use crate::telemetry::uplink::Record;

mod config;
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

pub use config::{JOURNAL_ENTRY, LogsConfig, SourceFilter, StartAt, check};
use config::{is_journal, names_unit};

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
                    Some(j) if names_unit(entry) => j,
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
