//! Telemetry batches and chat: stored in one transaction per round, read
//! back decoded.

use fleetmq_protocol::{Batch, ChatRow, TelemetryQuery, TelemetryRow};
use rusqlite::params;

use super::{Doing as _, Incoming, SAMPLE_BITS, Store, StoreError, Stored};

impl Store {
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
            let mut held = tx
                .prepare_cached("SELECT body FROM batches WHERE device = ?1 AND seq = ?2")
                .doing("preparing batch lookup")?;
            let mut highest = tx
                .prepare_cached("SELECT max(seq) FROM batches WHERE device = ?1")
                .doing("preparing batch lookup")?;
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
                    // A resend carries the very bytes stored before; other
                    // bytes under the number come from another agent.
                    let body: Vec<u8> = held
                        .query_row(params![item.device, b.seq as i64], |r| r.get(0))
                        .doing("reading a stored batch")?;
                    if body == item.body {
                        outcomes.push(Stored::Duplicate);
                    } else {
                        let max: i64 = highest
                            .query_row(params![item.device], |r| r.get(0))
                            .doing("reading a device's highest batch")?;
                        let from = (max as u64).saturating_add(1);
                        outcomes.push(Stored::Taken { from });
                    }
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
}
