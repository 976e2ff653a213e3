//! The agent's small files in its data directory.
//!
//! * `seq`: the next batch sequence number not yet handed out. Numbers are
//!   reserved in blocks, so the file is written once per block, not per
//!   batch; after a crash the agent skips the rest of the block. A sequence
//!   number is never reused, which is what lets the hub drop resends.
//! * `jobs-run`: ids of jobs this device started, one per line, written
//!   before the job starts, so a job id never runs twice, even across a crash.
//!
//! Telemetry not yet acked lives in the spool (see `spool`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use fleetmq_protocol::Outcome;

/// Sequence numbers reserved per write of the `seq` file.
const SEQ_BLOCK: u64 = 1024;

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    fleetmq_net::files::write_atomically(path, bytes, None)
}

/// Writes `bytes` at the start of `path` (made if missing), without
/// truncating it, and syncs it.
fn write_in_place(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    file.write_all(bytes)?;
    // A longer file (edited by hand) is cut to the number: shrinking needs
    // no space either.
    if file.metadata()?.len() > bytes.len() as u64 {
        file.set_len(bytes.len() as u64)?;
    }
    file.sync_data()
}

pub struct SeqFile {
    path: PathBuf,
    next: u64,
    reserved: u64,
}

impl SeqFile {
    /// Opens the file. If it is missing, numbering starts at 1; if it is
    /// unreadable, numbering starts above anything this clock could have
    /// handed out before (milliseconds since the epoch times the block),
    /// and the caller is told why.
    pub fn open(path: PathBuf, now_ms: u64) -> io::Result<(Self, Option<String>)> {
        let (next, note) = match std::fs::read_to_string(&path) {
            Ok(text) => match text.trim().parse::<u64>() {
                Ok(n) => (n.max(1), None),
                Err(_) => (
                    now_ms.saturating_mul(SEQ_BLOCK),
                    Some(format!(
                        "{} is not a number; continuing from a clock-based sequence",
                        path.display()
                    )),
                ),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Made now, while there is room, so that reserving numbers
                // later needs none; if there is none, the first reservation
                // tries again.
                let _ = write_in_place(&path, format!("{:020}\n", 1).as_bytes());
                (1, None)
            }
            Err(e) => return Err(fleetmq_net::files::with_path(&path, e)),
        };
        Ok((
            SeqFile {
                path,
                next,
                reserved: next,
            },
            note,
        ))
    }

    /// Numbers below `from` are not taken from now on (the hub holds them
    /// from another agent with this id).
    pub fn skip_to(&mut self, from: u64) {
        self.next = self.next.max(from);
    }

    /// The next sequence number, reserving a new block on disk when needed.
    ///
    /// The block's end is written over the file in place, always 20 digits
    /// and a newline, so a reservation needs no new space on a full disk.
    /// A write torn by a crash leaves the new number's first digits over the
    /// old one's last: never less than the old reservation, which is all
    /// that was handed out.
    pub fn take(&mut self) -> io::Result<u64> {
        if self.next >= self.reserved {
            let until = self.next + SEQ_BLOCK;
            write_in_place(&self.path, format!("{until:020}\n").as_bytes())
                .map_err(|e| fleetmq_net::files::with_path(&self.path, e))?;
            self.reserved = until;
        }
        let n = self.next;
        self.next += 1;
        Ok(n)
    }
}

/// Jobs this device has started, and results it can send again.
pub struct JobMemory {
    path: PathBuf,
    ids: HashSet<u64>,
    order: VecDeque<u64>,
    cap: usize,
    /// Lines in the file, to know when to compact it.
    lines: usize,
    results: HashMap<u64, Outcome>,
    result_order: VecDeque<u64>,
}

/// Results kept in memory for re-sending when a job is handed out again.
const RESULTS_KEPT: usize = 64;

impl JobMemory {
    pub fn open(path: PathBuf, cap: usize) -> io::Result<Self> {
        let mut mem = JobMemory {
            path,
            ids: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
            lines: 0,
            results: HashMap::new(),
            result_order: VecDeque::new(),
        };
        match std::fs::read_to_string(&mem.path) {
            // A torn last line does not parse and is skipped.
            Ok(text) => {
                for line in text.lines() {
                    mem.lines += 1;
                    if let Ok(id) = line.trim().parse() {
                        mem.remember(id);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(fleetmq_net::files::with_path(&mem.path, e)),
        }
        Ok(mem)
    }

    fn remember(&mut self, id: u64) {
        if self.ids.insert(id) {
            self.order.push_back(id);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    pub fn has_run(&self, id: u64) -> bool {
        self.ids.contains(&id)
    }

    /// Records that `id` is starting, durably, before it runs.
    pub fn starting(&mut self, id: u64) -> io::Result<()> {
        self.remember(id);
        if self.lines >= 2 * self.cap {
            // Rewrite the file with only the ids still remembered.
            let text: String = self.order.iter().map(|id| format!("{id}\n")).collect();
            write_atomically(&self.path, text.as_bytes())
                .map_err(|e| fleetmq_net::files::with_path(&self.path, e))?;
            self.lines = self.order.len();
            return Ok(());
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| fleetmq_net::files::with_path(&self.path, e))?;
        writeln!(f, "{id}")
            .and_then(|()| f.sync_data())
            .map_err(|e| fleetmq_net::files::with_path(&self.path, e))?;
        self.lines += 1;
        Ok(())
    }

    pub fn finished(&mut self, id: u64, outcome: Outcome) {
        if self.results.insert(id, outcome).is_none() {
            self.result_order.push_back(id);
        }
        while self.result_order.len() > RESULTS_KEPT {
            if let Some(old) = self.result_order.pop_front() {
                self.results.remove(&old);
            }
        }
    }

    pub fn result(&self, id: u64) -> Option<&Outcome> {
        self.results.get(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_is_written_in_place_and_a_torn_one_never_goes_back() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seq");
        // An older agent's file: the number alone.
        std::fs::write(&path, "2048").unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        let (mut s, _) = SeqFile::open(path.clone(), 0).unwrap();
        assert_eq!(s.take().unwrap(), 2048);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "00000000000000003072\n"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().ino(),
            inode,
            "the same file, no new one"
        );
        // A crash in the middle of the next reservation leaves a prefix of
        // the new number over the old: never below what was reserved.
        let torn = format!(
            "{}{}",
            &format!("{:020}", 4096)[..18],
            &format!("{:020}\n", 3072)[18..]
        );
        std::fs::write(&path, &torn).unwrap();
        let (mut s, _) = SeqFile::open(path, 0).unwrap();
        assert!(s.take().unwrap() >= 3072, "{torn:?}");
    }

    #[test]
    fn sequence_numbers_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seq");
        let (mut s, note) = SeqFile::open(path.clone(), 0).unwrap();
        assert!(note.is_none());
        let first: Vec<u64> = (0..3).map(|_| s.take().unwrap()).collect();
        assert_eq!(first, [1, 2, 3]);
        drop(s); // a crash: the rest of the block is skipped
        let (mut s, _) = SeqFile::open(path.clone(), 0).unwrap();
        assert!(s.take().unwrap() > 3);
        std::fs::write(&path, "garbage").unwrap();
        let (mut s, note) = SeqFile::open(path, 5).unwrap();
        assert!(note.unwrap().contains("not a number"));
        assert!(s.take().unwrap() >= 5 * SEQ_BLOCK);
    }

    #[test]
    fn job_ids_are_remembered_across_restarts_and_torn_lines_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs-run");
        let mut m = JobMemory::open(path.clone(), 100).unwrap();
        m.starting(7).unwrap();
        m.starting(9).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"12x")
            .unwrap();
        let m = JobMemory::open(path, 100).unwrap();
        assert!(m.has_run(7) && m.has_run(9) && !m.has_run(12));
    }

    #[test]
    fn job_memory_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs-run");
        let mut m = JobMemory::open(path.clone(), 10).unwrap();
        for id in 0..50 {
            m.starting(id).unwrap();
        }
        assert!(!m.has_run(0) && m.has_run(49));
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 20, "{lines} lines");
        let m = JobMemory::open(path, 10).unwrap();
        assert!(m.has_run(45));
    }
}
