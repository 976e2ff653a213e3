//! Retention: what the store deletes so it stays bounded, a small step at
//! a time.
//!
//! Each call of [`Store::prune`] deletes at most [`STEP`] rows of each
//! kind that is past its age or its size, oldest first, in one short
//! transaction, and says whether any kind had more to delete. The hub
//! calls it once a second, and again on the next tick while there is more,
//! so a store far over its limits (a limit lowered, a hub that was off for
//! a month) is brought back in many steps between rounds of ingest rather
//! than in one long delete that would stall it.
//!
//! | kind | age by | size by |
//! |---|---|---|
//! | telemetry | when the hub stored the batch (`received_ms`, indexed) | bytes of batch bodies, kept in `totals` |
//! | logs (batches holding log lines; first, and telemetry's limits hold them too) | the same, in a partial index of log batches alone | their bytes, kept in `totals` as `logs` |
//! | chat | the line's time, oldest ids first | rows |
//! | jobs | when a done or failed job last changed; queued and leased jobs are never pruned | rows of done or failed jobs |
//! | commands | when the command was sent, oldest ids first (fleet commands too, with their devices' shares) | rows (of the command log) |
//!
//! Chat and the command log are pruned from their oldest id onwards and stop
//! at the first row that is young enough, so a step never scans the table.
//!
//! The newest row of each kind but jobs is never pruned, however old:
//! SQLite gives a new row the highest id plus one, so a table emptied
//! would start its ids again at 1, and a reader that keeps its place by
//! id (`telemetry --after`, `--follow`, the chat's) would see nothing new
//! until the ids passed it again. Jobs keep their highest id in `marks`
//! instead (see `jobs.rs`), since a finished job must go with its output.

use rusqlite::{Connection, params};

use super::{Doing as _, Store, StoreError};
use crate::config::Retention;

/// Most rows of one kind deleted in one step.
pub const STEP: usize = 1_000;

/// What one step deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Telemetry batches.
    pub batches: u64,
    /// Records (samples and chat lines) in them.
    pub records: u64,
    /// Bytes of their bodies.
    pub bytes: u64,
    /// Chat lines.
    pub chat: u64,
    /// Done or failed jobs.
    pub jobs: u64,
    /// Command log entries.
    pub commands: u64,
    /// Some kind is still past a limit: call again soon.
    pub more: bool,
}

impl Pruned {
    /// True when the step deleted nothing.
    pub fn is_empty(&self) -> bool {
        self.batches + self.chat + self.jobs + self.commands == 0
    }
}

/// A batch retention deletes: its id, body bytes, records, and whether it
/// holds log lines.
struct Victim {
    id: i64,
    bytes: u64,
    records: u64,
    logs: bool,
}

impl Victim {
    /// From a row of `id, length(body), records, logs > 0`.
    fn of(r: &rusqlite::Row<'_>) -> rusqlite::Result<Victim> {
        Ok(Victim {
            id: r.get(0)?,
            bytes: r.get::<_, i64>(1)? as u64,
            records: r.get::<_, i64>(2)? as u64,
            logs: r.get(3)?,
        })
    }
}

/// Deletes `victims` in `tx` and commits, keeping the `totals` rows in
/// step: the bytes gone, and those of them that held log lines.
fn delete_batches(
    tx: rusqlite::Transaction<'_>,
    victims: &[Victim],
) -> Result<(u64, u64), StoreError> {
    if victims.is_empty() {
        return Ok((0, 0));
    }
    let gone: u64 = victims.iter().map(|v| v.bytes).sum();
    let logs_gone: u64 = victims.iter().filter(|v| v.logs).map(|v| v.bytes).sum();
    {
        let mut delete = tx
            .prepare_cached("DELETE FROM batches WHERE id = ?1")
            .doing("pruning batches")?;
        for v in victims {
            delete.execute(params![v.id]).doing("pruning batches")?;
        }
        let mut count = tx
            .prepare_cached("UPDATE totals SET bytes = max(bytes - ?1, 0) WHERE kind = ?2")
            .doing("counting stored bytes")?;
        count
            .execute(params![gone as i64, "telemetry"])
            .and_then(|_| count.execute(params![logs_gone as i64, "logs"]))
            .doing("counting stored bytes")?;
    }
    tx.commit().doing("committing a prune")?;
    Ok((gone, logs_gone))
}

/// `now_ms - age_s`, or `None` when the age limit is off.
fn cutoff(now_ms: u64, max_age_s: u64) -> Option<i64> {
    (max_age_s > 0).then(|| now_ms.saturating_sub(max_age_s.saturating_mul(1000)) as i64)
}

impl Store {
    /// A number kept under `name` (a front-end's place in the telemetry
    /// stream), if one was.
    pub fn mark(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM marks WHERE name = ?1",
                params![name],
                |r| r.get::<_, i64>(0),
            )
            .map(|v| Some(v as u64))
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .doing("reading a mark")
    }

    /// Keeps `value` under `name`.
    pub fn set_mark(&mut self, name: &str, value: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO marks (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, value as i64],
            )
            .map(|_| ())
            .doing("keeping a mark")
    }

    /// Bytes of telemetry stored.
    pub fn telemetry_bytes(&self) -> u64 {
        self.telemetry_bytes
    }

    /// Bytes of batches holding log lines stored.
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Reads the stored byte counts (all batches, and those holding log
    /// lines), counting each once from the batches for a hub.db from
    /// before it was kept.
    pub(super) fn count_telemetry_bytes(&mut self) -> Result<(), StoreError> {
        self.telemetry_bytes = self.stored_bytes("telemetry", "1")?;
        self.log_bytes = self.stored_bytes("logs", "logs > 0")?;
        Ok(())
    }

    /// The `totals` row `kind`, made from the batches `which` picks if
    /// there is none yet.
    fn stored_bytes(&mut self, kind: &str, which: &str) -> Result<u64, StoreError> {
        let kept: Option<i64> = self
            .conn
            .query_row(
                "SELECT bytes FROM totals WHERE kind = ?1",
                params![kind],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .doing("reading the stored byte count")?;
        let bytes = match kept {
            Some(b) => b,
            None => {
                let b: i64 = self
                    .conn
                    .query_row(
                        &format!(
                            "SELECT coalesce(sum(length(body)), 0) FROM batches WHERE {which}"
                        ),
                        [],
                        |r| r.get(0),
                    )
                    .doing("counting stored bytes")?;
                self.conn
                    .execute(
                        "INSERT INTO totals (kind, bytes) VALUES (?1, ?2)",
                        params![kind, b],
                    )
                    .doing("keeping the stored byte count")?;
                b
            }
        };
        Ok(bytes.max(0) as u64)
    }

    /// One step of retention at wall time `now_ms` (see the module docs).
    pub fn prune(&mut self, rules: &Retention, now_ms: u64) -> Result<Pruned, StoreError> {
        let mut done = Pruned::default();
        // Log batches past their own limits first: what they free counts
        // towards telemetry's, which hold them too.
        self.prune_logs(rules, now_ms, &mut done)?;
        self.prune_telemetry(rules, now_ms, &mut done)?;
        let c = &rules.chat;
        let (n, more) = prune_front(
            &self.conn,
            "chat",
            "ts_ms",
            cutoff(now_ms, c.max_age_s),
            c.max_rows,
        )?;
        done.chat = n;
        done.more |= more;
        let (n, more) = self.prune_jobs(rules, now_ms)?;
        done.jobs = n;
        done.more |= more;
        // The command log has its own connection; its queued writes go
        // first, so an answer is never written after its entry is gone.
        self.flush_log()?;
        let c = &rules.commands;
        let (n, more) = prune_front(
            &self.log,
            "commands",
            "sent_ms",
            cutoff(now_ms, c.max_age_s),
            c.max_rows,
        )?;
        done.commands = n;
        done.more |= more;
        if let Some(before) = cutoff(now_ms, c.max_age_s) {
            let (n, more) = self.prune_fleet_commands(before)?;
            done.commands += n;
            done.more |= more;
        }
        Ok(done)
    }

    fn prune_telemetry(
        &mut self,
        rules: &Retention,
        now_ms: u64,
        done: &mut Pruned,
    ) -> Result<(), StoreError> {
        let t = &rules.telemetry;
        let over = |bytes: u64| t.max_bytes > 0 && bytes > t.max_bytes;
        let tx = self.conn.transaction().doing("starting a prune")?;
        let mut victims: Vec<Victim> = Vec::new();
        if let Some(before) = cutoff(now_ms, t.max_age_s) {
            let mut old = tx
                .prepare_cached(
                    "SELECT id, length(body), records, logs > 0 FROM batches WHERE received_ms < ?1
                     AND id < (SELECT max(id) FROM batches) ORDER BY received_ms LIMIT ?2",
                )
                .doing("finding old batches")?;
            let rows = old
                .query_map(params![before, STEP as i64], Victim::of)
                .doing("finding old batches")?;
            for row in rows {
                victims.push(row.doing("finding old batches")?);
            }
        }
        let mut bytes = self.telemetry_bytes
            - victims
                .iter()
                .map(|v| v.bytes)
                .sum::<u64>()
                .min(self.telemetry_bytes);
        if victims.len() < STEP && over(bytes) {
            let after = victims.iter().map(|v| v.id).max().unwrap_or(0);
            let mut oldest = tx
                .prepare_cached(
                    "SELECT id, length(body), records, logs > 0 FROM batches WHERE id > ?1
                     AND id < (SELECT max(id) FROM batches) ORDER BY id LIMIT ?2",
                )
                .doing("finding the oldest batches")?;
            let mut rows = oldest
                .query(params![after, (STEP - victims.len()) as i64])
                .doing("finding the oldest batches")?;
            while over(bytes) {
                let Some(r) = rows.next().doing("finding the oldest batches")? else {
                    break;
                };
                let v = Victim::of(r).doing("finding the oldest batches")?;
                bytes = bytes.saturating_sub(v.bytes);
                victims.push(v);
            }
        }
        let gone = delete_batches(tx, &victims)?;
        self.pruned_batches(&victims, gone, done);
        done.more |= victims.len() >= STEP || over(self.telemetry_bytes);
        Ok(())
    }

    /// `[retention.logs]`: batches holding log lines older than its age,
    /// and the oldest of them while they take more than its bytes, read
    /// by the index of log batches alone.
    fn prune_logs(
        &mut self,
        rules: &Retention,
        now_ms: u64,
        done: &mut Pruned,
    ) -> Result<(), StoreError> {
        let l = &rules.logs;
        let over = |bytes: u64| l.max_bytes > 0 && bytes > l.max_bytes;
        let before = cutoff(now_ms, l.max_age_s).unwrap_or(i64::MIN);
        if before == i64::MIN && !over(self.log_bytes) {
            return Ok(());
        }
        let tx = self.conn.transaction().doing("starting a prune")?;
        let mut victims: Vec<Victim> = Vec::new();
        {
            let mut oldest = tx
                .prepare_cached(
                    "SELECT id, length(body), records, logs > 0, received_ms FROM batches
                     WHERE logs > 0 AND id < (SELECT max(id) FROM batches)
                     ORDER BY received_ms LIMIT ?1",
                )
                .doing("finding old log batches")?;
            let mut rows = oldest
                .query(params![STEP as i64])
                .doing("finding old log batches")?;
            let mut bytes = self.log_bytes;
            while let Some(r) = rows.next().doing("finding old log batches")? {
                let received: i64 = r.get(4).doing("finding old log batches")?;
                if received >= before && !over(bytes) {
                    break;
                }
                let v = Victim::of(r).doing("finding old log batches")?;
                bytes = bytes.saturating_sub(v.bytes);
                victims.push(v);
            }
        }
        let gone = delete_batches(tx, &victims)?;
        self.pruned_batches(&victims, gone, done);
        done.more |= victims.len() >= STEP || over(self.log_bytes);
        Ok(())
    }

    /// What [`delete_batches`] deleted, taken off the byte counts and
    /// counted in `done`.
    fn pruned_batches(&mut self, victims: &[Victim], gone: (u64, u64), done: &mut Pruned) {
        self.telemetry_bytes = self.telemetry_bytes.saturating_sub(gone.0);
        self.log_bytes = self.log_bytes.saturating_sub(gone.1);
        done.batches += victims.len() as u64;
        done.records += victims.iter().map(|v| v.records).sum::<u64>();
        done.bytes += gone.0;
    }

    /// Fleet commands sent before `before`, with their devices' shares.
    fn prune_fleet_commands(&mut self, before: i64) -> Result<(u64, bool), StoreError> {
        let tx = self.conn.transaction().doing("pruning fleet commands")?;
        let old = "SELECT id FROM fleet_commands WHERE created_ms < ?1
                   AND id < (SELECT max(id) FROM fleet_commands) ORDER BY id LIMIT ?2";
        tx.execute(
            &format!("DELETE FROM fleet_answers WHERE fleet IN ({old})"),
            params![before, STEP as i64],
        )
        .doing("pruning fleet commands")?;
        let n = tx
            .execute(
                &format!("DELETE FROM fleet_commands WHERE id IN ({old})"),
                params![before, STEP as i64],
            )
            .doing("pruning fleet commands")?;
        tx.commit().doing("pruning fleet commands")?;
        Ok((n as u64, n >= STEP))
    }

    fn prune_jobs(&mut self, rules: &Retention, now_ms: u64) -> Result<(u64, bool), StoreError> {
        let j = &rules.jobs;
        let finished = "state IN ('done', 'failed')";
        let mut n = 0;
        if let Some(before) = cutoff(now_ms, j.max_age_s) {
            n += self
                .conn
                .execute(
                    &format!(
                        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE {finished}
                         AND updated_ms < ?1 ORDER BY id LIMIT ?2)"
                    ),
                    params![before, STEP as i64],
                )
                .doing("pruning jobs")?;
        }
        if j.max_rows > 0 && n < STEP {
            let count: i64 = self
                .conn
                .query_row(
                    &format!("SELECT count(*) FROM jobs WHERE {finished}"),
                    [],
                    |r| r.get(0),
                )
                .doing("counting jobs")?;
            let excess = (count.max(0) as u64).saturating_sub(j.max_rows);
            let take = excess.min((STEP - n) as u64);
            if take > 0 {
                n += self
                    .conn
                    .execute(
                        &format!(
                            "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE {finished}
                             ORDER BY id LIMIT ?1)"
                        ),
                        params![take as i64],
                    )
                    .doing("pruning jobs")?;
            }
        }
        Ok((n as u64, n >= STEP))
    }
}

/// Deletes from the front (lowest ids) of `table`: rows whose `time` is
/// before `before`, stopping at the first that is not, and rows past
/// `max_rows` (0: no cap). Ids only grow and only the front is deleted, so
/// the rows are `max(id) - min(id) + 1` without counting them. Returns how
/// many were deleted and whether more are due.
fn prune_front(
    conn: &Connection,
    table: &str,
    time: &str,
    before: Option<i64>,
    max_rows: u64,
) -> Result<(u64, bool), StoreError> {
    let (first, last): (Option<i64>, Option<i64>) = conn
        .query_row(&format!("SELECT min(id), max(id) FROM {table}"), [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .doing("finding what to prune")?;
    let (Some(first), Some(last)) = (first, last) else {
        return Ok((0, false));
    };
    let rows = (last - first + 1).max(0) as u64;
    // Everything below `upto` goes: past the row cap...
    let mut upto = first;
    if max_rows > 0 && rows > max_rows {
        upto = first + (rows - max_rows).min(STEP as u64) as i64;
    }
    // ...and then the old ones, up to the first young one.
    if let Some(before) = before {
        let young: Option<i64> = conn
            .query_row(
                &format!(
                    "SELECT min(id) FROM (SELECT id, {time} FROM {table} WHERE id >= ?1
                     ORDER BY id LIMIT ?2) WHERE {time} >= ?3"
                ),
                params![upto, STEP as i64, before],
                |r| r.get(0),
            )
            .doing("finding what to prune")?;
        upto = young
            .unwrap_or((upto + STEP as i64).min(last + 1))
            .max(upto);
    }
    // The newest row stays, so that ids never go back (module docs).
    upto = upto.min(first + STEP as i64).min(last);
    if upto <= first {
        return Ok((0, false));
    }
    let n = conn
        .execute(&format!("DELETE FROM {table} WHERE id < ?1"), params![upto])
        .doing("pruning")?;
    let left = (last - upto + 1).max(0) as u64;
    let more = n >= STEP || (max_rows > 0 && left > max_rows);
    Ok((n as u64, more))
}
