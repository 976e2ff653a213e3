//! The hub's SQLite store: devices, telemetry batches, chat, jobs, commands.
//!
//! Telemetry is stored one row per batch, holding the batch's postcard body
//! exactly as it arrived, with `UNIQUE(device, seq)`: storing is one insert
//! per batch however many samples it has, and a resent batch is ignored by the
//! constraint. Queries decode bodies on the way out. A sample's row id for
//! cursors is `batch row id << 20 | index in batch`.
//!
//! Everything the hub acks is committed first (WAL; `synchronous=FULL` by
//! default, so an acked batch survives power loss, not only a killed process).

use std::path::Path;

use fleetmq_protocol::{
    Batch, ChatRow, CommandInfo, DeviceInfo, Hello, JobInfo, JobSpec, JobState, JobSubmission,
    Outcome, TelemetryQuery, TelemetryRow,
};
use rusqlite::{Connection, OptionalExtension, params};

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
    /// The id the next logged command gets.
    next_log_id: i64,
}

/// A command log write waiting for [`Store::flush_log`].
enum LogWrite {
    Sent {
        id: i64,
        device: String,
        command: String,
        at_ms: u64,
    },
    Ended {
        id: i64,
        result: String,
        at_ms: u64,
    },
}

/// Queued command log writes that make [`Store::flush_log`] write at once.
const LOG_QUEUE_MAX: usize = 256;
/// Queued writes kept while the log cannot be written (a full disk).
const LOG_QUEUE_LIMIT: usize = 16 * LOG_QUEUE_MAX;

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
    batches INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    records INTEGER NOT NULL,
    wire_version INTEGER NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (device, seq)
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
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, lease_until_ms);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    command TEXT NOT NULL,
    sent_ms INTEGER NOT NULL,
    answered_ms INTEGER,
    result TEXT
);
";

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
        let log = connect(dir, Synchronous::Normal)?;
        let last: i64 = conn
            .query_row("SELECT coalesce(max(id), 0) FROM commands", [], |r| {
                r.get(0)
            })
            .doing("reading the command log")?;
        Ok(Store {
            conn,
            log,
            log_queue: Vec::new(),
            next_log_id: last + 1,
        })
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
        let log = open()?;
        Ok(Store {
            conn,
            log,
            log_queue: Vec::new(),
            next_log_id: 1,
        })
    }

    /// Records a Hello: creates or updates the device row.
    pub fn hello(&self, id: &str, h: &Hello, now_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO devices (id, agent_version, arch, os, hostname, groups, first_seen_ms, last_seen_ms, since_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7)
                 ON CONFLICT (id) DO UPDATE SET agent_version = ?2, arch = ?3, os = ?4, hostname = ?5,
                   groups = ?6, last_seen_ms = ?7",
                params![id, h.agent_version, h.arch, h.os, h.hostname, json(&h.groups), now_ms as i64],
            )
            .doing("recording a hello")?;
        Ok(())
    }

    /// Makes sure a device row exists (a device heard from before its hello).
    pub fn touch(&self, id: &str, now_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO devices (id, first_seen_ms, last_seen_ms, since_ms) VALUES (?1, ?2, ?2, ?2)
                 ON CONFLICT (id) DO UPDATE SET last_seen_ms = max(last_seen_ms, ?2)",
                params![id, now_ms as i64],
            )
            .doing("recording a device")?;
        Ok(())
    }

    /// Records a presence change: online or offline since `since_ms`.
    pub fn presence(&self, id: &str, since_ms: u64, last_seen_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE devices SET since_ms = ?2, last_seen_ms = max(last_seen_ms, ?3) WHERE id = ?1",
                params![id, since_ms as i64, last_seen_ms as i64],
            )
            .doing("recording presence")?;
        Ok(())
    }

    /// True if the hub has ever heard from this device.
    pub fn device_known(&self, id: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM devices WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([id], |_| Ok(())))
            .optional()
            .map(|r| r.is_some())
            .doing("looking up a device")
    }

    /// Every device; `online`/`listening` are filled in by the caller.
    pub fn devices(&self) -> Result<Vec<DeviceInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, agent_version, arch, os, hostname, groups, since_ms, last_seen_ms, batches
                 FROM devices ORDER BY id",
            )
            .doing("listing devices")?;
        let rows = stmt
            .query_map([], |r| {
                let groups: String = r.get(5)?;
                Ok(DeviceInfo {
                    id: r.get(0)?,
                    online: false,
                    listening: false,
                    agent_version: r.get(1)?,
                    arch: r.get(2)?,
                    os: r.get(3)?,
                    hostname: r.get(4)?,
                    groups: serde_json::from_str(&groups).unwrap_or_default(),
                    since_ms: r.get::<_, i64>(6)? as u64,
                    last_seen_ms: r.get::<_, i64>(7)? as u64,
                    batches: r.get::<_, i64>(8)? as u64,
                })
            })
            .doing("listing devices")?;
        rows.collect::<Result<_, _>>().doing("listing devices")
    }

    /// Stores batches in one transaction. Nothing is acked until this returns
    /// `Ok`; on error nothing of the call is stored and agents resend.
    /// Returns one outcome per batch and the chat rows that are new.
    pub fn store_batches(
        &mut self,
        items: &[Incoming<'_>],
        now_ms: u64,
    ) -> Result<(Vec<Stored>, Vec<ChatRow>), StoreError> {
        let tx = self.conn.transaction().doing("starting a transaction")?;
        let mut outcomes = Vec::with_capacity(items.len());
        let mut chat = Vec::new();
        {
            let mut device = tx
                .prepare_cached(
                    "INSERT INTO devices (id, first_seen_ms, last_seen_ms, since_ms, batches) VALUES (?1, ?2, ?2, ?2, 1)
                     ON CONFLICT (id) DO UPDATE SET batches = batches + 1, last_seen_ms = max(last_seen_ms, ?2)",
                )
                .doing("preparing device update")?;
            let mut batch = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO batches (device, seq, received_ms, records, wire_version, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .doing("preparing batch insert")?;
            let mut line = tx
                .prepare_cached(
                    "INSERT INTO chat (device, seq, ts_ms, text) VALUES (?1, ?2, ?3, ?4)",
                )
                .doing("preparing chat insert")?;
            for item in items {
                let b = item.batch;
                let inserted = batch
                    .execute(params![
                        item.device,
                        b.seq as i64,
                        now_ms as i64,
                        b.record_count() as i64,
                        fleetmq_protocol::VERSION,
                        item.body
                    ])
                    .doing("storing a batch")?;
                if inserted == 0 {
                    outcomes.push(Stored::Duplicate);
                    continue;
                }
                device
                    .execute(params![item.device, now_ms as i64])
                    .doing("counting a batch")?;
                for (ts_ms, text) in b.resolved_chat() {
                    line.execute(params![item.device, b.seq as i64, ts_ms as i64, text])
                        .doing("storing chat")?;
                    chat.push(ChatRow {
                        id: tx.last_insert_rowid(),
                        device: item.device.to_string(),
                        ts_ms,
                        text: text.to_string(),
                    });
                }
                outcomes.push(Stored::New);
            }
        }
        tx.commit().doing("committing batches")?;
        Ok((outcomes, chat))
    }

    /// Samples after a cursor, oldest first.
    pub fn telemetry(&self, q: &TelemetryQuery) -> Result<Vec<TelemetryRow>, StoreError> {
        let limit = q.limit.clamp(1, 10_000) as usize;
        let after = q.after_id.max(0);
        let after_batch = after >> SAMPLE_BITS;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, device, seq, body FROM batches
                 WHERE id >= ?1 AND (?2 IS NULL OR device = ?2) ORDER BY id LIMIT 1000",
            )
            .doing("reading telemetry")?;
        let mut out = Vec::new();
        let mut from = after_batch;
        'scan: loop {
            let mut rows = stmt
                .query(params![from, q.device])
                .doing("reading telemetry")?;
            let mut last = None;
            while let Some(r) = rows.next().doing("reading telemetry")? {
                let id: i64 = r.get(0).doing("reading telemetry")?;
                let device: String = r.get(1).doing("reading telemetry")?;
                let seq: i64 = r.get(2).doing("reading telemetry")?;
                let body: Vec<u8> = r.get(3).doing("reading telemetry")?;
                last = Some(id);
                // Bodies were validated before they were stored; one that no
                // longer decodes is skipped rather than failing the query.
                let Ok(batch) = fleetmq_protocol::envelope::body::<Batch>("Batch", &body) else {
                    continue;
                };
                for (i, s) in batch.resolved_samples().enumerate() {
                    let row_id = (id << SAMPLE_BITS) | i as i64;
                    if row_id <= after || q.name.as_deref().is_some_and(|n| n != s.name) {
                        continue;
                    }
                    out.push(TelemetryRow {
                        id: row_id,
                        device: device.clone(),
                        seq: seq as u64,
                        ts_ms: s.ts_ms,
                        name: s.name.to_string(),
                        value: s.value,
                    });
                    if out.len() >= limit {
                        break 'scan;
                    }
                }
            }
            match last {
                Some(id) => from = id + 1,
                None => break,
            }
        }
        Ok(out)
    }

    /// Chat lines after a cursor, oldest first.
    pub fn chat(&self, after_id: i64, limit: u32) -> Result<Vec<ChatRow>, StoreError> {
        self.chat_rows(
            "SELECT id, device, ts_ms, text FROM chat WHERE id > ?1 ORDER BY id LIMIT ?2",
            params![after_id, limit.clamp(1, 10_000)],
        )
    }

    /// The newest `limit` chat lines, oldest of them first.
    pub fn recent_chat(&self, limit: u32) -> Result<Vec<ChatRow>, StoreError> {
        let mut rows = self.chat_rows(
            "SELECT id, device, ts_ms, text FROM chat ORDER BY id DESC LIMIT ?1",
            params![limit.clamp(1, 10_000)],
        )?;
        rows.reverse();
        Ok(rows)
    }

    /// Chat rows that `sql` (selecting id, device, ts_ms, text) finds.
    fn chat_rows(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<ChatRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).doing("reading chat")?;
        let rows = stmt
            .query_map(args, |r| {
                Ok(ChatRow {
                    id: r.get(0)?,
                    device: r.get(1)?,
                    ts_ms: r.get::<_, i64>(2)? as u64,
                    text: r.get(3)?,
                })
            })
            .doing("reading chat")?;
        rows.collect::<Result<_, _>>().doing("reading chat")
    }

    /// The newest `limit` entries of the command log, newest first.
    pub fn commands(&mut self, limit: u32) -> Result<Vec<CommandInfo>, StoreError> {
        self.flush_log()?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, device, command, sent_ms, answered_ms, result FROM commands
                 ORDER BY id DESC LIMIT ?1",
            )
            .doing("reading the command log")?;
        let rows = stmt
            .query_map(params![limit.clamp(1, 10_000)], |r| {
                Ok(CommandInfo {
                    id: r.get(0)?,
                    device: r.get(1)?,
                    command: r.get(2)?,
                    sent_ms: r.get::<_, i64>(3)? as u64,
                    ended_ms: r.get::<_, Option<i64>>(4)?.map(|v| v as u64),
                    result: r.get(5)?,
                })
            })
            .doing("reading the command log")?;
        rows.collect::<Result<_, _>>()
            .doing("reading the command log")
    }

    /// Queues a job; returns its id.
    pub fn submit_job(&self, job: &JobSubmission, now_ms: u64) -> Result<u64, StoreError> {
        self.conn
            .execute(
                "INSERT INTO jobs (spec, state, max_attempts, timeout_ms, lease_ms, created_ms, updated_ms)
                 VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?5)",
                params![json(&job.spec), job.max_attempts, job.timeout_ms, job.lease_ms, now_ms as i64],
            )
            .doing("queueing a job")?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobInfo> {
        let spec: String = r.get(1)?;
        let state: String = r.get(2)?;
        let outcome: Option<String> = r.get(10)?;
        Ok(JobInfo {
            id: r.get::<_, i64>(0)? as u64,
            spec: serde_json::from_str(&spec).unwrap_or(JobSpec::Echo {
                text: format!("(unreadable job spec: {spec})"),
            }),
            state: parse_state(&state),
            attempts: r.get(3)?,
            max_attempts: r.get(4)?,
            timeout_ms: r.get(5)?,
            lease_ms: r.get(6)?,
            created_ms: r.get::<_, i64>(7)? as u64,
            updated_ms: r.get::<_, i64>(8)? as u64,
            device: r.get(9)?,
            outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
            error: r.get(11)?,
        })
    }

    const JOB_COLUMNS: &'static str = "id, spec, state, attempts, max_attempts, timeout_ms, lease_ms, created_ms, updated_ms, device, outcome, error";

    /// One job.
    pub fn job(&self, id: u64) -> Result<Option<JobInfo>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {} FROM jobs WHERE id = ?1", Self::JOB_COLUMNS),
                [id as i64],
                Self::job_from_row,
            )
            .optional()
            .doing("reading a job")
    }

    /// Recent jobs, newest first.
    pub fn jobs(&self, limit: u32) -> Result<Vec<JobInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {} FROM jobs ORDER BY id DESC LIMIT ?1",
                Self::JOB_COLUMNS
            ))
            .doing("listing jobs")?;
        let rows = stmt
            .query_map([limit.clamp(1, 10_000)], Self::job_from_row)
            .doing("listing jobs")?;
        rows.collect::<Result<_, _>>().doing("listing jobs")
    }

    /// Jobs that are queued, or leased with the lease run out.
    pub fn due_jobs(&self, now_ms: u64, limit: u32) -> Result<Vec<DueJob>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, spec, attempts, max_attempts, timeout_ms, lease_ms FROM jobs
                 WHERE state = 'queued' OR (state = 'leased' AND lease_until_ms <= ?1)
                 ORDER BY id LIMIT ?2",
            )
            .doing("finding due jobs")?;
        let rows = stmt
            .query_map(params![now_ms as i64, limit], |r| {
                let spec: String = r.get(1)?;
                Ok((
                    r.get::<_, i64>(0)?,
                    spec,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .doing("finding due jobs")?;
        let mut out = Vec::new();
        for row in rows {
            let (id, spec, attempts, max_attempts, timeout_ms, lease_ms) =
                row.doing("finding due jobs")?;
            match serde_json::from_str(&spec) {
                Ok(spec) => out.push(DueJob {
                    id: id as u64,
                    spec,
                    attempts,
                    max_attempts,
                    timeout_ms,
                    lease_ms,
                }),
                Err(e) => self.fail_job(id as u64, &format!("job spec unreadable: {e}"), now_ms)?,
            }
        }
        Ok(out)
    }

    /// Marks a job handed out for one more attempt.
    pub fn lease_job(
        &self,
        id: u64,
        attempts: u32,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE jobs SET state = 'leased', attempts = ?2, lease_until_ms = ?3, updated_ms = ?4 WHERE id = ?1",
                params![id as i64, attempts, lease_until_ms as i64, now_ms as i64],
            )
            .doing("leasing a job")?;
        Ok(())
    }

    /// Gives up on a job.
    pub fn fail_job(&self, id: u64, error: &str, now_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE jobs SET state = 'failed', error = ?2, updated_ms = ?3 WHERE id = ?1",
                params![id as i64, error, now_ms as i64],
            )
            .doing("failing a job")?;
        Ok(())
    }

    /// Takes a job's result. Returns false if the job already has one (or
    /// does not exist): the first result wins.
    pub fn finish_job(
        &self,
        id: u64,
        device: &str,
        outcome: &Outcome,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE jobs SET state = 'done', device = ?2, outcome = ?3, error = NULL, updated_ms = ?4
                 WHERE id = ?1 AND state != 'done'",
                params![id as i64, device, json(outcome), now_ms as i64],
            )
            .doing("storing a job result")?;
        Ok(n == 1)
    }

    /// Notes why an attempt produced no result (e.g. the agent had already run it).
    pub fn note_job(&self, id: u64, note: &str, now_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE jobs SET error = ?2, updated_ms = ?3 WHERE id = ?1 AND state != 'done'",
                params![id as i64, note, now_ms as i64],
            )
            .doing("noting a job attempt")?;
        Ok(())
    }

    /// Logs a command sent to a device; returns its id in the log. The
    /// entry is written by the next [`Store::flush_log`].
    pub fn log_command(
        &mut self,
        device: &str,
        command: &fleetmq_protocol::Command,
        now_ms: u64,
    ) -> i64 {
        let id = self.next_log_id;
        self.next_log_id += 1;
        self.log_queue.push(LogWrite::Sent {
            id,
            device: device.to_string(),
            command: json(command),
            at_ms: now_ms,
        });
        self.flush_log_if_full();
        id
    }

    /// Records how a logged command ended (written by the next flush).
    pub fn log_command_result(&mut self, id: i64, result: &str, now_ms: u64) {
        self.log_queue.push(LogWrite::Ended {
            id,
            result: result.to_string(),
            at_ms: now_ms,
        });
        self.flush_log_if_full();
    }

    fn flush_log_if_full(&mut self) {
        if self.log_queue.len() < LOG_QUEUE_MAX {
            return;
        }
        if let Err(e) = self.flush_log() {
            tracing::warn!(error = %e, queued = self.log_queue.len(), "could not write the command log; will retry");
            if self.log_queue.len() >= LOG_QUEUE_LIMIT {
                tracing::error!(
                    lost = self.log_queue.len(),
                    "the command log cannot be written: dropping its queued entries (commands still run)"
                );
                self.log_queue.clear();
            }
        }
    }

    /// Writes the queued command log entries in one transaction. On error
    /// they stay queued for the next call.
    pub fn flush_log(&mut self) -> Result<(), StoreError> {
        if self.log_queue.is_empty() {
            return Ok(());
        }
        let tx = self.log.transaction().doing("starting a transaction")?;
        {
            let mut sent = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO commands (id, device, command, sent_ms) VALUES (?1, ?2, ?3, ?4)",
                )
                .doing("logging a command")?;
            let mut ended = tx
                .prepare_cached("UPDATE commands SET answered_ms = ?2, result = ?3 WHERE id = ?1")
                .doing("logging a command result")?;
            for w in &self.log_queue {
                match w {
                    LogWrite::Sent {
                        id,
                        device,
                        command,
                        at_ms,
                    } => sent.execute(params![id, device, command, *at_ms as i64]),
                    LogWrite::Ended { id, result, at_ms } => {
                        ended.execute(params![id, *at_ms as i64, result])
                    }
                }
                .doing("writing the command log")?;
            }
        }
        tx.commit().doing("writing the command log")?;
        self.log_queue.clear();
        Ok(())
    }

    /// Devices ever heard from, for stats.
    pub fn device_count(&self) -> Result<u32, StoreError> {
        let devices: i64 = self
            .conn
            .query_row("SELECT count(*) FROM devices", [], |r| r.get(0))
            .doing("counting devices")?;
        Ok(devices as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmq_protocol::Output;

    /// The page's chat panel and its command list read the newest rows.
    #[test]
    fn the_newest_chat_lines_and_commands_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_700_000_000_000u64;
        let mut store = Store::open(dir.path(), Synchronous::Full).unwrap();
        let mut b = fleetmq_protocol::BatchBuilder::new(1);
        for i in 0..15u64 {
            b.push_chat(t0 + i, &format!("line {i}")).unwrap();
        }
        let batch = b.finish();
        // Stored as received: the frame after its version and kind bytes.
        let frame = fleetmq_protocol::Upstream::Batch(batch.clone())
            .encode()
            .unwrap();
        let incoming = [Incoming {
            device: "pi-a",
            batch: &batch,
            body: &frame[2..],
        }];
        store.store_batches(&incoming, t0).unwrap();
        let texts: Vec<String> = store
            .recent_chat(3)
            .unwrap()
            .into_iter()
            .map(|c| c.text)
            .collect();
        assert_eq!(texts, ["line 12", "line 13", "line 14"]);

        let ping = store.log_command("pi-a", &fleetmq_protocol::Command::Ping, t0);
        store.log_command("pi-a", &fleetmq_protocol::Command::Status, t0 + 1);
        store.log_command_result(ping, "timed out", t0 + 2);
        let log = store.commands(10).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].result, None, "newest first, still in flight");
        assert_eq!(log[1].result.as_deref(), Some("timed out"));
        assert_eq!(log[1].ended_ms, Some(t0 + 2));
        assert!(log[1].command.contains("Ping"), "{}", log[1].command);
    }

    /// The command log is written a tick later; what was flushed survives a
    /// restart, and ids go on from where they were.
    #[test]
    fn the_command_log_is_written_by_flush_and_ids_go_on_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), Synchronous::Full).unwrap();
        let first = store.log_command("pi-a", &fleetmq_protocol::Command::Ping, 1);
        store.log_command_result(first, "pong", 2);
        let unfinished = store.log_command("pi-b", &fleetmq_protocol::Command::Status, 3);
        store.flush_log().unwrap();
        drop(store);

        let mut store = Store::open(dir.path(), Synchronous::Full).unwrap();
        let next = store.log_command("pi-a", &fleetmq_protocol::Command::Ping, 4);
        assert!(
            next > unfinished && unfinished > first,
            "{first} {unfinished} {next}"
        );
        // Reading the log writes what is queued first.
        let log = store.commands(10).unwrap();
        let got: Vec<_> = log
            .iter()
            .map(|c| (c.id, c.device.as_str(), c.result.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (next, "pi-a", None),
                (unfinished, "pi-b", None),
                (first, "pi-a", Some("pong")),
            ]
        );
    }

    /// Lease timing on a clock the test sets: a job is due while queued,
    /// not while its lease runs, due again the moment it runs out, and all
    /// of it survives closing and reopening the store (a hub restart).
    #[test]
    fn leases_run_out_on_the_given_clock_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_700_000_000_000u64;
        let store = Store::open(dir.path(), Synchronous::Full).unwrap();
        let job = JobSubmission {
            spec: JobSpec::Echo { text: "hi".into() },
            timeout_ms: 1_000,
            lease_ms: 5_000,
            max_attempts: 3,
        };
        let id = store.submit_job(&job, t0).unwrap();
        let due = store.due_jobs(t0, 10).unwrap();
        assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![id]);
        assert_eq!(due[0].attempts, 0);
        store.lease_job(id, 1, t0 + 5_000, t0).unwrap();
        assert!(store.due_jobs(t0 + 4_999, 10).unwrap().is_empty());
        drop(store);

        let store = Store::open(dir.path(), Synchronous::Full).unwrap();
        let due = store.due_jobs(t0 + 5_000, 10).unwrap();
        assert_eq!(due.len(), 1, "the lease ran out: handed out again");
        assert_eq!((due[0].attempts, due[0].max_attempts), (1, 3));
        store.lease_job(id, 2, t0 + 10_000, t0 + 5_000).unwrap();
        let done = Outcome::Completed(Output {
            exit_code: Some(0),
            stdout: "hi".into(),
            stderr: String::new(),
            truncated: false,
            duration_ms: 5,
        });
        assert!(store.finish_job(id, "pi-1", &done, t0 + 6_000).unwrap());
        assert!(
            !store.finish_job(id, "pi-2", &done, t0 + 6_001).unwrap(),
            "the first result wins"
        );
        assert!(store.due_jobs(t0 + 60_000, 10).unwrap().is_empty());
        let info = store.job(id).unwrap().unwrap();
        assert_eq!((info.state, info.attempts), (JobState::Done, 2));
        assert_eq!(info.device.as_deref(), Some("pi-1"));
    }
}
