//! Telemetry batches (samples, chat and log lines) and chat: stored in
//! one transaction per round, read back decoded.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use fleetmq_protocol::telemetry::MAX_IN_FLIGHT;
use fleetmq_protocol::{Batch, ChatRow, LogQuery, LogRow, TelemetryQuery, TelemetryRow};
use rusqlite::{OptionalExtension as _, params};

use super::numbers::Numbers;
use super::{Doing as _, Incoming, SAMPLE_BITS, Store, StoreError, Stored};

/// How far ahead of the hub's clock a device's clock may run for a
/// `since_ms` query to still find its samples by when they were stored.
pub const CLOCK_AHEAD_MS: u64 = 10 * 60 * 1000;

/// How many of a device's newest batches are looked through for one whose
/// number is not new: a resend comes within the agent's window of its
/// newest (`telemetry.max_in_flight`, 16 by default, at most
/// [`MAX_IN_FLIGHT`]), so one not found among these is taken for another
/// agent's and renumbered (stored, once, under its new number). It also
/// bounds what a device sending numbers it never used can cost the loop:
/// at most this many rows read a message.
pub const LOOK_BACK: u64 = MAX_IN_FLIGHT as u64;

/// Batches read from SQLite at a time.
const PAGE: u32 = 1000;

/// Which batches a query reads, and how many rows it wants.
#[derive(Clone, Copy)]
struct Scan<'q> {
    device: Option<&'q str>,
    /// Rows with a larger id than this.
    after: i64,
    since_ms: u64,
    newest: bool,
    limit: u32,
}

impl<'q> Scan<'q> {
    /// A query's scan; a negative cursor is the start.
    fn new(
        device: Option<&'q str>,
        after_id: i64,
        since_ms: u64,
        newest: bool,
        limit: u32,
    ) -> Self {
        Scan {
            device,
            after: after_id.max(0),
            since_ms,
            newest,
            limit,
        }
    }
}

/// Which samples a [`TelemetryQuery`] wants.
struct Filter<'q> {
    /// The metric name, and whether it must match with its tags exactly.
    name: Option<(&'q str, bool)>,
    /// Tags every matching series carries: `key=value`, or `key` for any
    /// value.
    tags: Vec<(&'q str, Option<&'q str>)>,
    since_ms: u64,
    until_ms: u64,
}

impl<'q> Filter<'q> {
    fn new(q: &'q TelemetryQuery) -> Self {
        Filter {
            name: q.name.as_deref().map(|n| (n, n.contains('{'))),
            tags: q
                .tags
                .iter()
                .map(|t| match t.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (t.as_str(), None),
                })
                .collect(),
            since_ms: q.since_ms,
            until_ms: q.until_ms,
        }
    }

    fn matches(&self, series: &str, ts_ms: u64) -> bool {
        if ts_ms < self.since_ms || (self.until_ms > 0 && ts_ms > self.until_ms) {
            return false;
        }
        if self.name.is_none() && self.tags.is_empty() {
            return true;
        }
        let (metric, tags) = fleetmq_protocol::telemetry::split_series(series);
        let named = match self.name {
            None => true,
            Some((name, true)) => name == series,
            Some((name, false)) => name == metric,
        };
        named
            && self.tags.iter().all(|(key, value)| {
                tags.iter()
                    .any(|(k, v)| k == key && value.is_none_or(|value| value == *v))
            })
    }
}

impl Store {
    /// Stores batches in one transaction. Nothing is acked until this returns
    /// `Ok`; on error nothing of the call is stored and agents resend.
    /// Returns one outcome per batch and the chat rows that are new.
    ///
    /// A batch whose number is above its device's highest, or in a hole
    /// below it, is new (`Numbers`). Any other is looked for among the
    /// device's newest `LOOK_BACK` batches: the very bytes stored before
    /// make it a resend, acked again; other bytes, or none found, mean
    /// another agent uses the number, and it is told where to go on from.
    pub fn store_batches(
        &mut self,
        items: &[Incoming<'_>],
        now_ms: u64,
    ) -> Result<(Vec<Stored>, Vec<ChatRow>), StoreError> {
        let tx = self.conn.transaction().doing("starting a transaction")?;
        let mut outcomes = Vec::with_capacity(items.len());
        let mut chat = Vec::new();
        let (mut added, mut added_logs) = (0u64, 0u64);
        // Each device in the round: its numbers as they become, and its
        // new batches.
        let mut round: HashMap<&str, Seen> = HashMap::new();
        {
            let mut device = tx
                .prepare_cached(
                    "INSERT INTO devices (id, first_seen_ms, last_seen_ms, since_ms, batches, high_seq, holes)
                     VALUES (?1, ?2, ?2, ?2, ?3, ?4, ?5)
                     ON CONFLICT (id) DO UPDATE SET batches = batches + ?3,
                         last_seen_ms = max(last_seen_ms, ?2), high_seq = ?4, holes = ?5",
                )
                .doing("preparing device update")?;
            let mut batch = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO batches (device, seq, received_ms, records, wire_version, body, logs)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .doing("preparing batch insert")?;
            // Newest first, in the (device, id, seq) index alone: a look
            // that finds nothing reads no batch. A hub.db from before still
            // has its unique index on (device, seq): the number is found
            // at once, however old.
            let look = if self.seq_unique {
                // LIMIT ?3 only keeps both looks' parameters the same.
                "SELECT body FROM batches WHERE device = ?1 AND seq = ?2 LIMIT ?3"
            } else {
                "SELECT body FROM batches WHERE id = (
                     SELECT id FROM (SELECT id, seq FROM batches WHERE device = ?1
                         ORDER BY id DESC LIMIT ?3)
                     WHERE seq = ?2 LIMIT 1)"
            };
            let mut held = tx.prepare_cached(look).doing("preparing batch lookup")?;
            let mut line = tx
                .prepare_cached(
                    "INSERT INTO chat (device, seq, ts_ms, text) VALUES (?1, ?2, ?3, ?4)",
                )
                .doing("preparing chat insert")?;
            for item in items {
                let b = item.batch;
                // Kept by [retention.logs] when it holds log lines alone
                // (an older agent mixed them with samples: telemetry).
                let log_lines = if b.record_count() == b.logs.len() {
                    b.logs.len()
                } else {
                    0
                };
                let seen = match round.entry(item.device) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let known = match self.numbers.get(item.device) {
                            Some(n) => n.clone(),
                            None => numbers_of(&tx, item.device)?,
                        };
                        e.insert(Seen {
                            numbers: known,
                            new: 0,
                        })
                    }
                };
                let inserted = seen.numbers.is_new(b.seq)
                    && batch
                        .execute(params![
                            item.device,
                            b.seq as i64,
                            now_ms as i64,
                            b.record_count() as i64,
                            fleetmq_protocol::VERSION,
                            item.body,
                            log_lines as i64
                        ])
                        .doing("storing a batch")?
                        == 1;
                if !inserted {
                    // A resend carries the very bytes stored before; other
                    // bytes under the number come from another agent. One
                    // not found so far back is taken for another's too.
                    let body: Option<Vec<u8>> = held
                        .query_row(params![item.device, b.seq as i64, LOOK_BACK as i64], |r| {
                            r.get(0)
                        })
                        .optional()
                        .doing("reading a stored batch")?;
                    if body.as_deref() == Some(item.body) {
                        outcomes.push(Stored::Duplicate);
                    } else {
                        let from = seen.numbers.next_free();
                        outcomes.push(Stored::Taken { from });
                    }
                    continue;
                }
                seen.numbers.add(b.seq);
                seen.new += 1;
                added += item.body.len() as u64;
                if log_lines > 0 {
                    added_logs += item.body.len() as u64;
                }
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
            // One statement a device with new batches, however many of
            // them the round holds (up to its window).
            for (id, seen) in &round {
                if seen.new == 0 {
                    continue;
                }
                let (n, high) = (seen.new, seen.numbers.high().map(|h| h as i64));
                device
                    .execute(params![
                        id,
                        now_ms as i64,
                        n,
                        high,
                        seen.numbers.holes_text()
                    ])
                    .doing("counting a device's batches")?;
            }
        }
        if added > 0 {
            tx.prepare_cached("UPDATE totals SET bytes = bytes + ?1 WHERE kind = 'telemetry'")
                .and_then(|mut s| s.execute(params![added as i64]))
                .doing("counting stored bytes")?;
        }
        if added_logs > 0 {
            tx.prepare_cached("UPDATE totals SET bytes = bytes + ?1 WHERE kind = 'logs'")
                .and_then(|mut s| s.execute(params![added_logs as i64]))
                .doing("counting stored bytes")?;
        }
        tx.commit().doing("committing batches")?;
        self.telemetry_bytes += added;
        self.log_bytes += added_logs;
        for (id, seen) in round {
            match self.numbers.get_mut(id) {
                Some(known) => *known = seen.numbers,
                None => {
                    self.numbers.insert(id.to_string(), seen.numbers);
                }
            }
        }
        Ok((outcomes, chat))
    }

    /// Samples after a cursor that match the query: the oldest of them,
    /// or with `newest` the newest (see [`TelemetryQuery`]); returned
    /// oldest first either way (see [`Store::scan_batches`]).
    pub fn telemetry(&self, q: &TelemetryQuery) -> Result<Vec<TelemetryRow>, StoreError> {
        let filter = Filter::new(q);
        let scan = Scan::new(
            q.device.as_deref(),
            q.after_id,
            q.since_ms,
            q.newest,
            q.limit,
        );
        self.scan_batches(scan, "reading telemetry", |id, device, seq, batch| {
            batch
                .resolved_samples()
                .enumerate()
                .map(|(i, s)| ((id << SAMPLE_BITS) | i as i64, s))
                .filter(|(row_id, s)| *row_id > scan.after && filter.matches(s.name, s.ts_ms))
                .map(|(row_id, s)| TelemetryRow {
                    id: row_id,
                    device: device.to_string(),
                    seq,
                    ts_ms: s.ts_ms,
                    name: s.name.to_string(),
                    value: s.value,
                })
                .collect()
        })
    }

    /// Log lines after a cursor that match the query, found as
    /// [`Store::telemetry`] finds samples (a line's row id is its batch's
    /// id and its place in the batch, as a sample's).
    pub fn logs(&self, q: &LogQuery) -> Result<Vec<LogRow>, StoreError> {
        let scan = Scan::new(
            q.device.as_deref(),
            q.after_id,
            q.since_ms,
            q.newest,
            q.limit,
        );
        let wanted = |ts_ms: u64, source: &str, text: &str| {
            ts_ms >= q.since_ms
                && (q.until_ms == 0 || ts_ms <= q.until_ms)
                && q.source.as_deref().is_none_or(|s| s == source)
                && text.contains(q.contains.as_str())
        };
        self.scan_batches(scan, "reading log lines", |id, device, seq, batch| {
            batch
                .resolved_logs()
                .enumerate()
                .map(|(i, line)| ((id << SAMPLE_BITS) | i as i64, line))
                .filter(|(row_id, (ts_ms, source, text))| {
                    *row_id > scan.after && wanted(*ts_ms, source, text)
                })
                .map(|(row_id, (ts_ms, source, text))| LogRow {
                    id: row_id,
                    device: device.to_string(),
                    seq,
                    ts_ms,
                    source: source.to_string(),
                    text: text.to_string(),
                })
                .collect()
        })
    }

    /// The rows `rows_of` makes of stored batches (each batch's rows in
    /// its order, after the cursor), `scan.limit` at most: the oldest, or
    /// with `newest` the newest; returned oldest first either way.
    ///
    /// Batches are found by device (indexed with their ids) and by when
    /// the hub stored them (indexed): a record taken at or after
    /// `since_ms` was stored after it, give or take a device clock that
    /// runs ahead of the hub's, which `CLOCK_AHEAD_MS` allows for. Bodies
    /// are decoded on the way out.
    fn scan_batches<R>(
        &self,
        scan: Scan<'_>,
        doing: &'static str,
        mut rows_of: impl FnMut(i64, &str, u64, &Batch) -> Vec<R>,
    ) -> Result<Vec<R>, StoreError> {
        let limit = scan.limit.clamp(1, 10_000) as usize;
        let order = if scan.newest { "DESC" } else { "ASC" };
        let device = if scan.device.is_some() {
            "device = ?3"
        } else {
            "?3 IS NULL"
        };
        let sql = format!(
            "SELECT id, device, seq, body FROM batches WHERE id >= ?1 AND id <= ?2 AND {device}
             ORDER BY id {order} LIMIT {PAGE}"
        );
        let mut stmt = self.conn.prepare_cached(&sql).doing(doing)?;
        let mut out = Vec::new();
        // The batch ids still to look at, narrowed page by page.
        let (mut low, mut high) = (scan.after >> SAMPLE_BITS, i64::MAX);
        if scan.since_ms > 0 {
            low = low
                .max(self.first_batch_stored_since(scan.since_ms.saturating_sub(CLOCK_AHEAD_MS))?);
        }
        'scan: loop {
            let mut rows = stmt.query(params![low, high, scan.device]).doing(doing)?;
            let mut last = None;
            while let Some(r) = rows.next().doing(doing)? {
                let id: i64 = r.get(0).doing(doing)?;
                let device: String = r.get(1).doing(doing)?;
                let seq: i64 = r.get(2).doing(doing)?;
                let body: Vec<u8> = r.get(3).doing(doing)?;
                last = Some(id);
                // Bodies were validated before they were stored; one that no
                // longer decodes is skipped rather than failing the query.
                let Ok(batch) = fleetmq_protocol::stored_batch(&body) else {
                    continue;
                };
                let mut matched = rows_of(id, &device, seq as u64, &batch);
                if scan.newest {
                    matched.reverse();
                }
                for row in matched {
                    out.push(row);
                    if out.len() >= limit {
                        break 'scan;
                    }
                }
            }
            match last {
                Some(id) if scan.newest => high = id - 1,
                Some(id) => low = id + 1,
                None => break,
            }
        }
        if scan.newest {
            out.reverse();
        }
        Ok(out)
    }

    /// The id of the first batch the hub stored at or after `ms` (ids
    /// and store times rise together), `i64::MAX` for none.
    fn first_batch_stored_since(&self, ms: u64) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT id FROM batches WHERE received_ms >= ?1 ORDER BY received_ms LIMIT 1",
            )
            .and_then(|mut s| s.query_row(params![ms as i64], |r| r.get(0)).optional())
            .map(|id| id.unwrap_or(i64::MAX))
            .doing("finding batches by time")
    }

    /// A telemetry cursor past every sample stored so far.
    pub fn telemetry_cursor(&self) -> Result<i64, StoreError> {
        let last: i64 = self
            .conn
            .query_row("SELECT coalesce(max(id), 0) FROM batches", [], |r| r.get(0))
            .doing("reading the newest batch")?;
        Ok(if last == 0 {
            0
        } else {
            (last << SAMPLE_BITS) | ((1 << SAMPLE_BITS) - 1)
        })
    }

    /// The id of the newest chat line, 0 for none.
    pub fn chat_cursor(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT coalesce(max(id), 0) FROM chat", [], |r| r.get(0))
            .doing("reading the newest chat line")
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
}

/// A device in a round being stored.
struct Seen {
    /// Its batch numbers, with the round's new batches added.
    numbers: Numbers,
    /// Its new batches in the round.
    new: i64,
}

/// A device's batch numbers as its row holds them; from its batches for a
/// row from before they were kept there.
fn numbers_of(tx: &rusqlite::Transaction<'_>, device: &str) -> Result<Numbers, StoreError> {
    let row: Option<(Option<i64>, Option<String>)> = tx
        .prepare_cached("SELECT high_seq, holes FROM devices WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row(params![device], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .doing("reading a device's batch numbers")?;
    let high = match row {
        Some((Some(high), _)) => Some(high),
        // A device not seen yet, or seen by a hub.db from before: its
        // batches (indexed on (device, seq) in such a hub.db).
        _ => tx
            .prepare_cached("SELECT max(seq) FROM batches WHERE device = ?1")
            .and_then(|mut s| s.query_row(params![device], |r| r.get(0)))
            .doing("reading a device's highest batch")?,
    };
    let holes = row.and_then(|(_, holes)| holes);
    Ok(Numbers::from_row(high.map(|h| h as u64), holes.as_deref()))
}
