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
//! to 21 % higher (README, Benchmarks). SQLite does not shrink the WAL
//! file: it stays at the largest it grew to.
//!
//! Durability does not change: a commit is acked once its WAL pages are
//! synced, as before, and a checkpoint syncs `hub.db` before the WAL is
//! reused.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
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

/// The checkpoint thread; stopped and joined when dropped.
pub struct Checkpointer {
    nudge: SyncSender<()>,
    stop: Arc<AtomicBool>,
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
        let (nudge, nudged) = sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || run(&conn, &nudged, &stopping));
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
    }
}

/// Waits for a commit, lets [`PACE`] pass so that the commits after it
/// join in, and checkpoints; until stopped.
fn run(conn: &Connection, nudged: &Receiver<()>, stop: &AtomicBool) {
    let mut failing = false;
    loop {
        if nudged.recv().is_err() {
            return;
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
            Ok((wal, copied)) => {
                if failing {
                    warn!("WAL checkpoints work again");
                }
                failing = false;
                debug!(wal, copied, "WAL checkpoint");
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
