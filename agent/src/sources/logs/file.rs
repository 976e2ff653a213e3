//! One followed file: read on from where the spool's last line ended,
//! through a rename (read until it stops growing) and a truncation, as
//! `tail -F` does (see the module above).

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::time::Instant;

use tracing::{info, warn};

use super::lines::{join_entries, lines_ending, texts};
use super::{Counts, Mark, StartAt, id_of};
use crate::telemetry::uplink::Record;

/// Most bytes read from one file in one poll.
const READ_CHUNK: usize = 256 * 1024;

/// One followed file.
#[derive(Debug)]
pub(super) struct Followed {
    pub(super) path: String,
    /// The pattern it matched, if it was not listed by its path.
    pub(super) pattern: Option<usize>,
    /// The file being read: the one at `path`, or the one renamed away
    /// from it until it is read to its end.
    pub(super) file: Option<File>,
    /// Its device and inode.
    pub(super) id: (u64, u64),
    /// Where the lines accepted so far end.
    pub(super) offset: u64,
    /// Where the lines read by the last poll end, once accepted.
    pub(super) read_to: u64,
    /// The file at the path replaced the one being read: read this one
    /// to its end, then move on.
    pub(super) draining: bool,
    /// Missing (or unreadable) the last time it was looked for: when it
    /// comes, it is read from its beginning.
    pub(super) absent: Option<String>,
    /// Lines sent and left out.
    pub(super) count: Counts,
    /// While draining: the rotated file's size when last looked at, and
    /// since when it has not grown.
    pub(super) drain_size: u64,
    pub(super) still_since: Option<Instant>,
    /// The rotated file has not grown for [`ROTATE_WAIT`]: its last line
    /// ends at its end, and once read it is let go.
    pub(super) letting_go: bool,
    /// Multi-line entries: how a line that begins one begins (a pattern,
    /// ending in `*`); `None`: each line is an entry.
    pub(super) begins: Option<String>,
    /// The file's size when last seen to change, and when.
    pub(super) grew: Option<(u64, Instant)>,
}

/// How long the last entry of a file with multi-line entries waits for
/// lines that continue it, once the file stopped growing.
const ENTRY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a rotated file is read on after it stopped growing: a
/// program writes to it until it reopens its log (logrotate's postrotate
/// tells it to), as Fluent Bit's `Rotate_Wait`.
const ROTATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Followed {
    pub(super) fn open(
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
            count: Counts::default(),
            drain_size: 0,
            still_since: None,
            letting_go: false,
            begins: None,
            grew: None,
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

    pub(super) fn poll(&mut self, now_ms: u64, now: Instant, budget: usize, out: &mut Vec<Record>) {
        self.look();
        let Some(file) = &mut self.file else { return };
        let size = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                warn!(path = %self.path, error = %e, "could not look at a log file");
                return;
            }
        };
        if self.grew.is_none_or(|(was, _)| was != size) {
            self.grew = Some((size, now));
        }
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
        let lines = lines_ending(&buf, budget, at_end);
        let (lines, used) = match &self.begins {
            None => texts(lines),
            Some(begins) => {
                // Everything written is read, and nothing came for a
                // while: the last entry is whole.
                let all = lines.last().is_some_and(|(_, end)| *end == got)
                    && self.offset + got as u64 == size;
                let quiet = self
                    .grew
                    .is_some_and(|(_, t)| now.saturating_duration_since(t) >= ENTRY_WAIT);
                let stuck = lines.len() >= budget;
                join_entries(lines, begins.as_bytes(), at_end || (all && quiet), stuck)
            }
        };
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
    pub(super) fn finish_drain(&mut self) -> Option<((u64, u64), u64)> {
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
