//! WAL checkpoints off the hub loop.
//!
//! In WAL mode every commit appends pages to `hub.db-wal`; a checkpoint
//! copies them into `hub.db` and fsyncs it, so that the WAL can start over.
//! SQLite runs one on the committing connection when the WAL passes 1,000
//! pages: on the hub loop, in the middle of acking, a fifth of the loop's
//! time at 1,000 devices. Here a thread of its own does it with its own
//! connection, at most once every [`PACE`] after commits, while the loop
//! goes on committing (a passive checkpoint copies what is committed and
//! takes no lock a writer waits for).
//!
//! The writing connections keep SQLite's own checkpoint for a WAL past
//! [`WRITER_CHECKPOINT_PAGES`]: the WAL can only start over once a
//! checkpoint has copied all of it, which this thread may never see under
//! a steady stream of commits. Then the writer copies only what the thread
//! has not, and the WAL stays bounded. The bound is set by what a checkpoint
//! costs: each copies every page changed since the last, and at 1,000
//! devices the WAL grows by thousands of pages a second, nearly all of
//! them per-device index leaves that the next commits change again. With
//! the bound at 10,000 pages the writer reached it before the thread came
//! round and did most of the copying itself (perf: 11 % of the hub's CPU,
//! the thread's 1 %), each checkpoint copying pages the last one had; at
//! 40,000 the thread does most of it, and ingest at 1,000 devices was 9
//! to 21 % higher (README, Benchmarks).
//!
//! SQLite reuses the WAL file rather than shrinking it, so one burst would
//! leave up to 160 MB on a card that has little. This thread cuts it back
//! (a truncating checkpoint) once the burst is over: when [`CALM`]
//! checkpoints in a row found every commit copied and the WAL holding
//! less than [`WAL_KEEP_BYTES`] (a steady trickle, as a fleet at rest
//! sends), or when no commit came for [`QUIET`]. Not under load: SQLite's
//! own cut-back (`journal_size_limit`, at the first commit after each
//! start-over) made the WAL grow again under a heavy stream, and each
//! commit that grew it synced the file's size too: ingest was 8 to 16 %
//! lower (`fleetmq-bench ingest --agents 100,1000`).
//!
//! Durability does not change: a commit is acked once its WAL pages are
//! synced, as before, and a checkpoint syncs `hub.db` before the WAL is
//! reused.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tracing::{debug, warn};

use super::{Doing, StoreError, Synchronous, connect};

/// Commits within this time of each other are checkpointed together: a
/// page written by many commits (an index leaf) is copied once.
pub const PACE: Duration = Duration::from_millis(1000);
/// WAL pages past which the committing connection checkpoints itself
/// (about 160 MB with 4 KB pages).
pub const WRITER_CHECKPOINT_PAGES: u32 = 40_000;
/// A WAL file larger than this (16 MB) is emptied once the hub is calm or
/// quiet.
pub const WAL_KEEP_BYTES: u64 = 16 << 20;
/// Without a commit for this long after a checkpoint, the thread empties
/// a WAL file larger than [`WAL_KEEP_BYTES`].
pub const QUIET: Duration = Duration::from_secs(5);
/// After this many checkpoints in a row that copied every commit, of a WAL
/// holding less than [`WAL_KEEP_BYTES`], the thread empties a WAL file
/// larger than that.
pub const CALM: u32 = 5;
/// How long emptying the WAL waits for a reader to leave it or a commit to
/// finish before it gives up until the next quiet spell.
const CUT_BACK_WAIT: Duration = Duration::from_millis(100);

/// The checkpoint thread; stopped and joined when dropped.
pub struct Checkpointer {
    nudge: SyncSender<()>,
    stop: Arc<AtomicBool>,
    /// Checkpoints done so far.
    done: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread over `dir/hub.db` and has `writers` (the
    /// connections that commit) tell it of every commit. Without a thread
    /// (the system would not give one) the writers keep checkpointing as
    /// SQLite does by default, and the hub says so.
    pub fn start(
        dir: &Path,
        sync: Synchronous,
        writers: &[&Connection],
    ) -> Result<Option<Checkpointer>, StoreError> {
        let conn = connect(dir, sync)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .doing("setting up the checkpoint connection")?;
        // Only the truncating checkpoint waits, and it holds writers off
        // while it does: not for long.
        conn.busy_timeout(CUT_BACK_WAIT)
            .doing("setting up the checkpoint connection")?;
        let (nudge, nudged) = sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let page: u64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .doing("setting up the checkpoint connection")?;
        // Each page in the WAL has a 24-byte frame header.
        let frame = page + 24;
        let done = Arc::new(AtomicU64::new(0));
        let counting = done.clone();
        let wal = dir.join("hub.db-wal");
        let spawned = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || run(&conn, &wal, frame, &nudged, &stopping, &counting));
        let thread = match spawned {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "no thread for WAL checkpoints; the hub loop does them");
                return Ok(None);
            }
        };
        let checkpointer = Checkpointer {
            nudge,
            stop,
            done,
            thread: Some(thread),
        };
        for writer in writers {
            writer
                .pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
                .doing("setting the writer's checkpoint")?;
            let nudge = checkpointer.nudge.clone();
            writer.commit_hook(Some(move || {
                // Full: a nudge is waiting already.
                let _ = nudge.try_send(());
                false
            }));
        }
        Ok(Some(checkpointer))
    }

    /// How many checkpoints the thread has done.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::Acquire)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let Some(thread) = self.thread.take() else {
            return;
        };
        // Wakes it whether it waits for a commit or paces.
        let _ = self.nudge.try_send(());
        thread.thread().unpark();
        if thread.join().is_err() {
            warn!("the checkpoint thread ended with a panic");
        }
        debug!(checkpoints = self.done(), "the checkpoint thread stopped");
    }
}

/// Waits for a commit, lets [`PACE`] pass so that the commits after it
/// join in, and checkpoints; empties a large WAL file (`wal`, in which a
/// page takes `frame` bytes) when calm or quiet; until stopped.
fn run(
    conn: &Connection,
    wal: &Path,
    frame: u64,
    nudged: &Receiver<()>,
    stop: &AtomicBool,
    done: &AtomicU64,
) {
    let mut failing = false;
    let mut checkpointed = false;
    // Checkpoints in a row that copied every commit of a small WAL.
    let mut caught_up = 0;
    loop {
        let next = if checkpointed {
            nudged.recv_timeout(QUIET)
        } else {
            nudged.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        match next {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => {
                checkpointed = false;
                caught_up = 0;
                if !stop.load(Ordering::Acquire) {
                    cut_back(conn, wal);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let until = Instant::now() + PACE;
        loop {
            if stop.load(Ordering::Acquire) {
                return;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::park_timeout(left);
        }
        match checkpoint(conn) {
            Ok((pages, copied)) => {
                if failing {
                    warn!("WAL checkpoints work again");
                }
                failing = false;
                checkpointed = true;
                done.fetch_add(1, Ordering::AcqRel);
                debug!(pages, copied, "WAL checkpoint");
                let calm = pages == copied && (pages.max(0) as u64) * frame < WAL_KEEP_BYTES;
                caught_up = if calm { caught_up + 1 } else { 0 };
                if caught_up >= CALM {
                    caught_up = 0;
                    cut_back(conn, wal);
                }
            }
            // The writer's own checkpoint still bounds the WAL; said once
            // until it works again.
            Err(e) if !failing => {
                warn!(error = %e, "a WAL checkpoint failed; the hub loop will do them");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Empties the WAL file if it is larger than [`WAL_KEEP_BYTES`]: a
/// truncating checkpoint, which waits up to [`CUT_BACK_WAIT`] for readers
/// to leave the WAL and a commit to finish, and holds the next commit off
/// while it copies what is left and truncates (milliseconds on a quiet
/// hub).
fn cut_back(conn: &Connection, wal: &Path) {
    let bytes = std::fs::metadata(wal).map_or(0, |m| m.len());
    if bytes <= WAL_KEEP_BYTES {
        return;
    }
    let done = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    match done {
        Ok(0) => debug!(bytes, "WAL file emptied"),
        // Busy: a reader still uses the WAL; the next calm or quiet spell
        // tries again.
        Ok(_) => debug!(bytes, "WAL file in use; not emptied"),
        Err(e) => warn!(error = %e, bytes, "emptying the WAL file failed; it stays at its size"),
    }
}

/// A passive checkpoint: the pages in the WAL and how many of them are in
/// `hub.db` now.
fn checkpoint(conn: &Connection) -> Result<(i64, i64), StoreError> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
    .doing("checkpointing the WAL")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_bytes(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("hub.db")).map_or(0, |m| m.len())
    }

    /// A commit reaches hub.db by the thread's checkpoint within about
    /// PACE; the writer alone would leave it in the WAL.
    #[test]
    fn commits_reach_the_database_file_without_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let writer = connect(dir.path(), Synchronous::Full).unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let thread = Checkpointer::start(dir.path(), Synchronous::Full, &[&writer])
            .unwrap()
            .unwrap();
        let writers_own: u32 = writer
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(writers_own, WRITER_CHECKPOINT_PAGES);
        let before = db_bytes(dir.path());
        writer
            .execute("INSERT INTO t VALUES (zeroblob(400000))", [])
            .unwrap();
        // 100 pages: far below the writer's own checkpoint.
        let deadline = Instant::now() + Duration::from_secs(10);
        while db_bytes(dir.path()) < before + 400_000 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            db_bytes(dir.path()) >= before + 400_000,
            "hub.db is {} bytes, {before} before the commit",
            db_bytes(dir.path())
        );
        let stopped = Instant::now();
        drop(thread);
        assert!(
            stopped.elapsed() < PACE * 4,
            "stopping took {:?}",
            stopped.elapsed()
        );
    }

    fn wal_bytes(dir: &Path) -> u64 {
        std::fs::metadata(dir.join("hub.db-wal")).map_or(0, |m| m.len())
    }

    /// A writer with the thread, after a commit larger than the WAL is
    /// kept at, once the thread has copied it into hub.db.
    fn after_a_burst(dir: &Path) -> (Connection, Checkpointer) {
        let writer = connect(dir, Synchronous::Full).unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let thread = Checkpointer::start(dir, Synchronous::Full, &[&writer])
            .unwrap()
            .unwrap();
        let burst = WAL_KEEP_BYTES * 3 / 2;
        let before = db_bytes(dir);
        writer
            .execute("INSERT INTO t VALUES (zeroblob(?1))", [burst as i64])
            .unwrap();
        assert!(wal_bytes(dir) > WAL_KEEP_BYTES);
        let deadline = Instant::now() + Duration::from_secs(10);
        while thread.done() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(db_bytes(dir) >= before + burst, "not checkpointed");
        (writer, thread)
    }

    /// Under a trickle of commits after a burst (a fleet at rest), the
    /// thread empties the WAL file, and every commit is kept.
    #[test]
    fn a_trickle_after_a_burst_empties_the_wal_file() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _thread) = after_a_burst(dir.path());
        let mut rows = 1;
        let deadline = Instant::now() + PACE * (CALM + 10);
        // Each commit is well within QUIET of the last.
        while wal_bytes(dir.path()) > WAL_KEEP_BYTES && Instant::now() < deadline {
            writer.execute("INSERT INTO t VALUES (x'01')", []).unwrap();
            rows += 1;
            std::thread::sleep(PACE / 5);
        }
        let left = wal_bytes(dir.path());
        assert!(left <= WAL_KEEP_BYTES, "the WAL file is {left} bytes");
        writer.execute("INSERT INTO t VALUES (x'01')", []).unwrap();
        let kept: i64 = writer
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, rows + 1);
    }

    /// With no commit after a burst, the thread empties the WAL file, and
    /// what was committed is in hub.db.
    #[test]
    fn a_quiet_hub_empties_a_large_wal_file() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, thread) = after_a_burst(dir.path());
        let deadline = Instant::now() + QUIET + Duration::from_secs(10);
        while wal_bytes(dir.path()) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(wal_bytes(dir.path()), 0, "the WAL file was not emptied");
        drop(thread);
        drop(writer);
        let reopened = connect(dir.path(), Synchronous::Full).unwrap();
        let size: i64 = reopened
            .query_row("SELECT length(x) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(size as u64, WAL_KEEP_BYTES * 3 / 2);
    }

    /// Without a commit the thread does nothing, and stops when asked.
    #[test]
    fn an_idle_store_is_left_alone_and_stops_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let writer = connect(dir.path(), Synchronous::Full).unwrap();
        let thread = Checkpointer::start(dir.path(), Synchronous::Full, &[&writer])
            .unwrap()
            .unwrap();
        let stopped = Instant::now();
        drop(thread);
        assert!(
            stopped.elapsed() < PACE,
            "stopping took {:?}",
            stopped.elapsed()
        );
    }
}
