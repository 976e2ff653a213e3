//! The command log: what operators sent and what came back; and the audit
//! trail's entries and their pruning (`audit.rs` adds and reads them).
//! Writes are queued and written together, off the command's round trip.

use fleetmq_protocol::CommandInfo;
use rusqlite::params;

use super::{Doing as _, Store, StoreError, json};

/// A command log write waiting for [`Store::flush_log`].
pub(super) enum LogWrite {
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
    /// An entry of the audit trail (`audit.rs`).
    Audit {
        at_ms: u64,
        operator: String,
        act: String,
        allowed: bool,
    },
}

/// Allowed acts kept; older ones are removed as new ones come.
pub const AUDIT_KEEP: i64 = 10_000;
/// Refused acts kept, apart: a read operator sending act after act cannot
/// push what was done out of the trail.
pub const REFUSED_KEEP: i64 = 1_000;
/// Entries written between two prunes (each reads up to 11,000 rows): the
/// trail holds at most this many more than it keeps.
const PRUNE_EVERY: usize = 100;

/// Queued command log writes that make [`Store::flush_log`] write at once.
const LOG_QUEUE_MAX: usize = 256;
/// Queued writes kept while the log cannot be written (a full disk).
const LOG_QUEUE_LIMIT: usize = 16 * LOG_QUEUE_MAX;

impl Store {
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

    pub(super) fn flush_log_if_full(&mut self) {
        if self.log_queue.len() < LOG_QUEUE_MAX {
            return;
        }
        if let Err(e) = self.flush_log() {
            tracing::warn!(error = %e, queued = self.log_queue.len(), "could not write the command log and audit trail; will retry");
            if self.log_queue.len() >= LOG_QUEUE_LIMIT {
                tracing::error!(
                    lost = self.log_queue.len(),
                    "the command log and audit trail cannot be written: dropping their queued entries (commands still run)"
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
            let mut audit = tx
                .prepare_cached(
                    "INSERT INTO audit (at_ms, operator, act, allowed) VALUES (?1, ?2, ?3, ?4)",
                )
                .doing("recording an operator's act")?;
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
                    LogWrite::Audit {
                        at_ms,
                        operator,
                        act,
                        allowed,
                    } => audit.execute(params![*at_ms as i64, operator, act, allowed]),
                }
                .doing("writing the command log")?;
            }
        }
        let audited = (self.log_queue.iter())
            .filter(|w| matches!(w, LogWrite::Audit { .. }))
            .count();
        let unpruned = self.audit_unpruned + audited;
        if unpruned >= PRUNE_EVERY {
            prune_audit(&tx)?;
        }
        tx.commit().doing("writing the command log")?;
        self.log_queue.clear();
        self.audit_unpruned = if unpruned >= PRUNE_EVERY { 0 } else { unpruned };
        Ok(())
    }
}

/// Keeps the newest [`AUDIT_KEEP`] allowed acts and [`REFUSED_KEEP`]
/// refused ones, in the command log's transaction.
fn prune_audit(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    for (allowed, keep) in [(true, AUDIT_KEEP), (false, REFUSED_KEEP)] {
        tx.execute(
            "DELETE FROM audit WHERE allowed = ?1 AND id < (
               SELECT id FROM audit WHERE allowed = ?1
               ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![allowed, keep - 1],
        )
        .doing("pruning the audit trail")?;
    }
    Ok(())
}
