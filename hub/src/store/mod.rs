//! The hub's SQLite store: devices, telemetry batches, chat, jobs, commands.
//!
//! Telemetry is stored one row per batch, holding the batch's postcard body
//! exactly as it arrived: storing is one insert per batch however many
//! samples it has. A resent batch is stored once: each device's row keeps
//! the highest number stored and the holes below it (`numbers.rs`), so a
//! new batch is known without an index on `(device, seq)`, and a number
//! already used is looked up among the device's newest batches. Queries
//! decode bodies on the way out. A sample's row id for cursors is
//! `batch row id << 20 | index in batch`.
//!
//! Everything the hub acks is committed first (WAL; `synchronous=FULL` by
//! default, so an acked batch survives power loss, not only a killed process).
//! The WAL is copied into hub.db by a thread of its own (`checkpoint.rs`), off
//! the loop, which also empties the WAL file once a burst of writes is over.

mod audit;
mod checkpoint;
mod cluster_jobs;
mod commands;
mod config;
mod devices;
mod fleet;
mod jobs;
mod numbers;
mod retention;
mod telemetry;

pub use config::{Applied, EditError, LayerKey, MAX_LAYER_BYTES};
pub use devices::{Facts, PRESENCE_LOG_KEEP, unknown_device};
pub use fleet::FleetWaiting;
pub use retention::Pruned;

use commands::LogWrite;

use std::path::Path;

use fleetmq_protocol::{Batch, JobSpec, JobState};
use rusqlite::Connection;

/// Samples per batch are addressed with 20 bits of the cursor.
const SAMPLE_BITS: u32 = 20;
/// Largest number of samples a batch may have to be addressable by cursor.
pub const MAX_SAMPLES_PER_BATCH: usize = 1 << SAMPLE_BITS;

/// A storage error, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{doing}: {source}")]
pub struct StoreError {
    doing: &'static str,
    #[source]
    source: rusqlite::Error,
}

trait Doing<T> {
    fn doing(self, what: &'static str) -> Result<T, StoreError>;
}

impl<T> Doing<T> for rusqlite::Result<T> {
    fn doing(self, doing: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError { doing, source })
    }
}

/// How durable a commit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync on every commit: acked data survives power loss.
    Full,
    /// fsync at WAL checkpoints: acked data survives a killed hub, not power loss.
    Normal,
}

/// One upstream batch to store.
pub struct Incoming<'a> {
    /// Sender.
    pub device: &'a str,
    /// The decoded batch (validated by the caller).
    pub batch: &'a Batch,
    /// Its postcard body as received.
    pub body: &'a [u8],
}

/// What happened to one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Newly stored.
    New,
    /// Already stored before; nothing written.
    Duplicate,
    /// The device's number is taken by a batch with other content (another
    /// agent with this device id used it); nothing written. `from` is the
    /// lowest number the store does not hold for the device.
    Taken { from: u64 },
}

/// Whether a result's (job, attempt, token) is one the hub handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptCheck {
    /// The job's current attempt, with its token: the result counts.
    Given,
    /// Not the current attempt, or not its token: refused.
    NotGiven,
    /// The job has a result already.
    Finished,
    /// No such job.
    Unknown,
}

/// A job due for dispatch.
pub struct DueJob {
    pub id: u64,
    pub spec: JobSpec,
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout_ms: u32,
    pub lease_ms: u32,
}

pub struct Store {
    conn: Connection,
    /// The command log's own connection to hub.db, with `synchronous =
    /// NORMAL`: it is a record of what operators did, not data the hub
    /// acked, so it never waits for the disk.
    log: Connection,
    /// Command log writes not yet written: they are written together by
    /// [`Store::flush_log`] (the hub calls it every tick), so logging costs
    /// a command's round trip nothing. A killed hub loses at most a tick
    /// of log entries; a power cut may lose a few more.
    log_queue: Vec<LogWrite>,
    /// Audit entries written since the trail was last pruned.
    audit_unpruned: usize,
    /// The id the next logged command gets.
    next_log_id: i64,
    /// Bytes of batch bodies stored (the `totals` row `telemetry`, kept
    /// in step with every store and prune): what retention's `max_bytes`
    /// is held to. Known only to the writing store, 0 in a reader.
    telemetry_bytes: u64,
    /// Of those, the bytes of batches holding log lines (the `totals` row
    /// `logs`): what `[retention.logs]` is held to.
    log_bytes: u64,
    /// The batch numbers each device seen since the start holds, as its
    /// row has them ([`numbers`]). Known only to the writing store.
    numbers: std::collections::HashMap<String, numbers::Numbers>,
    /// The batches are unique on (device, seq): a hub.db made by an
    /// earlier hub.
    seq_unique: bool,
    /// Copies the WAL into hub.db off the hub loop (the writing store's
    /// only; stopped after the connections above are closed).
    _checkpoints: Option<checkpoint::Checkpointer>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    agent_version TEXT NOT NULL DEFAULT '',
    arch TEXT NOT NULL DEFAULT '',
    os TEXT NOT NULL DEFAULT '',
    hostname TEXT NOT NULL DEFAULT '',
    groups TEXT NOT NULL DEFAULT '[]',
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    since_ms INTEGER NOT NULL,
    batches INTEGER NOT NULL DEFAULT 0,
    high_seq INTEGER,
    holes TEXT,
    forgotten_ms INTEGER,
    facts TEXT,
    config_stale INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    records INTEGER NOT NULL,
    wire_version INTEGER NOT NULL,
    body BLOB NOT NULL,
    logs INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batches_time ON batches (received_ms);
CREATE INDEX IF NOT EXISTS batches_device ON batches (device, id, seq);
CREATE TABLE IF NOT EXISTS totals (
    kind TEXT PRIMARY KEY,
    bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS marks (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chat (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    timeout_ms INTEGER NOT NULL,
    lease_ms INTEGER NOT NULL,
    lease_until_ms INTEGER,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    device TEXT,
    outcome TEXT,
    error TEXT,
    token INTEGER NOT NULL DEFAULT 0,
    kind TEXT NOT NULL DEFAULT 'queue',
    aim TEXT,
    parent INTEGER,
    target TEXT NOT NULL DEFAULT '',
    expires_ms INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, lease_until_ms);
CREATE TABLE IF NOT EXISTS config (
    layer TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT,
    version INTEGER NOT NULL,
    PRIMARY KEY (layer, key)
);
CREATE TABLE IF NOT EXISTS config_applied (
    device TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    errors TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_commands (
    id INTEGER PRIMARY KEY,
    command TEXT NOT NULL,
    target TEXT NOT NULL,
    timeout_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS fleet_answers (
    id INTEGER PRIMARY KEY,
    fleet INTEGER NOT NULL,
    device TEXT NOT NULL,
    state TEXT NOT NULL,
    reply TEXT,
    error TEXT,
    ended_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS fleet_answers_state ON fleet_answers (state);
CREATE INDEX IF NOT EXISTS fleet_answers_fleet ON fleet_answers (fleet);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    command TEXT NOT NULL,
    sent_ms INTEGER NOT NULL,
    answered_ms INTEGER,
    result TEXT
);
CREATE TABLE IF NOT EXISTS presence_log (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    online INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    why TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS presence_log_device ON presence_log (device, id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    operator TEXT NOT NULL,
    act TEXT NOT NULL,
    allowed INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS jobs_last_id AFTER DELETE ON jobs BEGIN
    INSERT INTO marks (name, value) VALUES ('jobs.last_id', old.id)
    ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value);
END;
";

/// The highest id `table` has given: its highest row's, or the floor kept
/// in `marks` under `TABLE.last_id` (the highest pruned job's, or one a
/// backup set past the copy's), whichever is higher. Tables whose ids a
/// device or an operator's script remembers give the next id past it.
pub(crate) fn highest_id(table: &str) -> String {
    format!(
        "max(coalesce((SELECT max(id) FROM {table}), 0), \
         coalesce((SELECT value FROM marks WHERE name = '{table}.last_id'), 0))"
    )
}

fn json<T: serde::Serialize>(v: &T) -> String {
    // Serializing our own plain data types to JSON cannot fail.
    serde_json::to_string(v).unwrap_or_else(|e| format!("\"unserializable: {e}\""))
}

fn parse_state(s: &str) -> JobState {
    match s {
        "leased" => JobState::Leased,
        "done" => JobState::Done,
        "failed" => JobState::Failed,
        _ => JobState::Queued,
    }
}

/// A connection to `dir/hub.db` in WAL mode.
fn connect(dir: &Path, sync: Synchronous) -> Result<Connection, StoreError> {
    let conn = Connection::open(dir.join("hub.db")).doing("opening hub.db")?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .doing("switching hub.db to WAL")?;
    let sync = match sync {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .doing("setting synchronous")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .doing("setting busy timeout")?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if needed) `hub.db` in `dir`.
    pub fn open(dir: &Path, sync: Synchronous) -> Result<Self, StoreError> {
        let conn = connect(dir, sync)?;
        conn.execute_batch(SCHEMA).doing("creating tables")?;
        let mut store = Store::over(conn, connect(dir, Synchronous::Normal)?)?;
        store.ready_to_write()?;
        store._checkpoints =
            checkpoint::Checkpointer::start(dir, sync, &[&store.conn, &store.log])?;
        Ok(store)
    }

    /// Another store over `dir/hub.db`, for reads only (`query_only`): the
    /// readers that answer operator reads off the hub loop each have one,
    /// beside the loop's own connection (WAL lets readers and the writer
    /// go on at once). The loop's [`Store::open`] made the schema.
    pub fn open_reader(dir: &Path) -> Result<Self, StoreError> {
        let read_only = || -> Result<Connection, StoreError> {
            let conn = connect(dir, Synchronous::Normal)?;
            conn.pragma_update(None, "query_only", true)
                .doing("making a read-only connection")?;
            Ok(conn)
        };
        Store::over(read_only()?, read_only()?)
    }

    /// The store over `conn` (schema in place) and the command log's own
    /// connection to the same database.
    fn over(conn: Connection, log: Connection) -> Result<Self, StoreError> {
        // A hub.db from before job tokens: the column is added, 0 (no
        // attempt handed out with a token yet).
        if conn.prepare("SELECT token FROM jobs LIMIT 0").is_err() {
            conn.execute_batch("ALTER TABLE jobs ADD COLUMN token INTEGER NOT NULL DEFAULT 0")
                .doing("adding the jobs token column")?;
        }
        // A hub.db from before the devices' batch numbers: each device's
        // are read from its batches when it is first seen
        // (`high_seq` NULL). Its batches keep their unique index on
        // (device, seq), which also refuses a number stored twice.
        if conn
            .prepare("SELECT high_seq FROM devices LIMIT 0")
            .is_err()
        {
            conn.execute_batch(
                "ALTER TABLE devices ADD COLUMN high_seq INTEGER;
                 ALTER TABLE devices ADD COLUMN holes TEXT;",
            )
            .doing("adding the devices' batch numbers")?;
        }
        // A hub.db from before `forget`: no device is forgotten.
        if conn
            .prepare("SELECT forgotten_ms FROM devices LIMIT 0")
            .is_err()
        {
            conn.execute_batch("ALTER TABLE devices ADD COLUMN forgotten_ms INTEGER")
                .doing("adding the devices' forgotten column")?;
        }
        // A hub.db from before devices' facts: none known until each
        // device's next Offer.
        if conn.prepare("SELECT facts FROM devices LIMIT 0").is_err() {
            conn.execute_batch("ALTER TABLE devices ADD COLUMN facts TEXT")
                .doing("adding the devices' facts column")?;
        }
        // A hub.db from before a change of groups marked the device's
        // configuration stale: none is.
        if (conn.prepare("SELECT config_stale FROM devices LIMIT 0")).is_err() {
            conn.execute_batch(
                "ALTER TABLE devices ADD COLUMN config_stale INTEGER NOT NULL DEFAULT 0",
            )
            .doing("adding the devices' configuration mark")?;
        }
        // A hub.db from before log lines were kept apart: its batches count
        // as holding none (they are kept by [retention.telemetry]).
        if conn.prepare("SELECT logs FROM batches LIMIT 0").is_err() {
            conn.execute_batch("ALTER TABLE batches ADD COLUMN logs INTEGER NOT NULL DEFAULT 0")
                .doing("adding the batches' log line count")?;
        }
        // A hub.db from before aimed jobs: every job is the work queue's.
        if conn.prepare("SELECT kind FROM jobs LIMIT 0").is_err() {
            conn.execute_batch(
                "ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'queue';
                 ALTER TABLE jobs ADD COLUMN aim TEXT;
                 ALTER TABLE jobs ADD COLUMN parent INTEGER;
                 ALTER TABLE jobs ADD COLUMN target TEXT NOT NULL DEFAULT '';
                 ALTER TABLE jobs ADD COLUMN expires_ms INTEGER;",
            )
            .doing("adding the aimed job columns")?;
        }

        let seq_unique: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master
                 WHERE type = 'index' AND name LIKE 'sqlite_autoindex_batches_%'",
                [],
                |r| r.get(0),
            )
            .doing("reading the batches' indexes")?;
        let last: i64 = conn
            .query_row("SELECT coalesce(max(id), 0) FROM commands", [], |r| {
                r.get(0)
            })
            .doing("reading the command log")?;
        Ok(Store {
            conn,
            log,
            log_queue: Vec::new(),
            audit_unpruned: 0,
            next_log_id: last + 1,
            telemetry_bytes: 0,
            log_bytes: 0,
            numbers: std::collections::HashMap::new(),
            seq_unique,
            _checkpoints: None,
        })
    }

    /// What only the writing store does once it is open: indexes on
    /// columns an older hub.db gained in [`Store::over`], and the stored
    /// byte count.
    fn ready_to_write(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch(
                "CREATE INDEX IF NOT EXISTS jobs_aimed ON jobs (kind, state, aim);
                 CREATE INDEX IF NOT EXISTS jobs_parent ON jobs (parent);
                 CREATE INDEX IF NOT EXISTS batches_logs ON batches (received_ms) WHERE logs > 0;",
            )
            .doing("indexing aimed jobs and log batches")?;
        self.count_telemetry_bytes()
    }

    /// A store in memory, gone when dropped: for tests of the core.
    pub fn in_memory() -> Result<Self, StoreError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // Two connections to one database need a shared cache and a name.
        let name = format!(
            "file:fleetmq-{}-{}?mode=memory&cache=shared",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let open = || Connection::open_with_flags(&name, flags).doing("opening a memory store");
        let conn = open()?;
        conn.execute_batch(SCHEMA).doing("creating tables")?;
        let mut store = Store::over(conn, open()?)?;
        store.ready_to_write()?;
        Ok(store)
    }
}

#[cfg(test)]
pub(crate) mod tests;
