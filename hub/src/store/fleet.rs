//! Commands for many devices: one row per command and one per device it
//! is for, kept until every device answered, timed out, or stayed away past
//! the command's time to live, and across hub restarts.

use fleetmq_protocol::{Command, FleetAnswer, FleetCommandInfo, Reply};
use rusqlite::params;

use super::{Doing as _, Store, StoreError, json};

/// A device's share of a fleet command, waiting to be sent.
pub struct FleetWaiting {
    /// Its row: what the answer is stored under.
    pub id: u64,
    pub device: String,
    pub command: Command,
    pub timeout_ms: u32,
}

impl Store {
    /// Keeps `command` for each of `devices` until `expires_ms`; returns
    /// its id.
    pub fn fleet_submit(
        &mut self,
        command: &Command,
        target: &str,
        devices: &[String],
        timeout_ms: u32,
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let tx = self.conn.transaction().doing("keeping a fleet command")?;
        tx.execute(
            // Past a backup's floor too, so that `command --answers ID`
            // never names a command the lost hub gave that number.
            &format!(
                "INSERT INTO fleet_commands (id, command, target, timeout_ms, created_ms, expires_ms)
                 VALUES ({} + 1, ?1, ?2, ?3, ?4, ?5)",
                super::highest_id("fleet_commands")
            ),
            params![
                json(command),
                target,
                timeout_ms,
                now_ms as i64,
                expires_ms as i64
            ],
        )
        .doing("keeping a fleet command")?;
        let id = tx.last_insert_rowid();
        for device in devices {
            tx.execute(
                "INSERT INTO fleet_answers (fleet, device, state) VALUES (?1, ?2, 'waiting')",
                params![id, device],
            )
            .doing("keeping a fleet command")?;
        }
        tx.commit().doing("keeping a fleet command")?;
        Ok(id as u64)
    }

    /// Every device's share still waiting to be sent, within its time to
    /// live at `now_ms`.
    pub fn fleet_waiting(&self, now_ms: u64) -> Result<Vec<FleetWaiting>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT a.id, a.device, c.command, c.timeout_ms FROM fleet_answers a
                 JOIN fleet_commands c ON c.id = a.fleet
                 WHERE a.state = 'waiting' AND c.expires_ms >= ?1 ORDER BY a.id",
            )
            .doing("reading fleet commands")?;
        let rows = stmt
            .query_map(params![now_ms as i64], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get(1)?,
                    r.get::<_, String>(2)?,
                    r.get(3)?,
                ))
            })
            .doing("reading fleet commands")?;
        let mut out = Vec::new();
        for row in rows {
            let (id, device, command, timeout_ms) = row.doing("reading fleet commands")?;
            // Written by this hub from a decoded command; one that does not
            // read back is skipped (and expires).
            if let Ok(command) = serde_json::from_str(&command) {
                out.push(FleetWaiting {
                    id: id as u64,
                    device,
                    command,
                    timeout_ms,
                });
            }
        }
        Ok(out)
    }

    /// Records where a device's share stands: `state`, with the device's
    /// `reply` or an `error` once it ended.
    pub fn fleet_mark(
        &self,
        id: u64,
        state: &str,
        reply: Option<&Reply>,
        error: Option<&str>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let ended = if matches!(state, "waiting" | "sent") {
            0
        } else {
            now_ms as i64
        };
        self.conn
            .prepare_cached(
                "UPDATE fleet_answers SET state = ?2, reply = ?3, error = ?4, ended_ms = ?5 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![id as i64, state, reply.map(json), error, ended]))
            .doing("recording a fleet answer")?;
        Ok(())
    }

    /// Ends the shares still waiting past their time to live, and (`first`,
    /// on a hub's first call) those sent before a restart, whose answers
    /// can no longer arrive.
    pub fn fleet_expire(&self, now_ms: u64, first: bool) -> Result<usize, StoreError> {
        let mut n = self
            .conn
            .execute(
                "UPDATE fleet_answers SET state = 'expired', ended_ms = ?1,
                   error = 'the device did not come online within the command''s time to live'
                 WHERE state = 'waiting' AND fleet IN (SELECT id FROM fleet_commands WHERE expires_ms < ?1)",
                params![now_ms as i64],
            )
            .doing("expiring fleet commands")?;
        if first {
            n += self
                .conn
                .execute(
                    "UPDATE fleet_answers SET state = 'failed', ended_ms = ?1,
                       error = 'the hub restarted before the device answered'
                     WHERE state = 'sent'",
                    params![now_ms as i64],
                )
                .doing("ending fleet commands")?;
        }
        Ok(n)
    }

    /// Whether fleet command `id` was ever given (and not pruned).
    fn fleet_command_known(&self, id: u64) -> Result<bool, StoreError> {
        let known: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM fleet_commands WHERE id = ?1",
                [id as i64],
                |r| r.get(0),
            )
            .doing("reading a fleet command")?;
        Ok(known > 0)
    }

    /// Cancels fleet command `id`: each share not yet sent fails, saying
    /// it was cancelled. Returns (stopped, sent and not yet answered), or
    /// `None` for no such command.
    pub fn fleet_cancel(&self, id: u64, now_ms: u64) -> Result<Option<(u32, u32)>, StoreError> {
        if !self.fleet_command_known(id)? {
            return Ok(None);
        }
        let stopped = self
            .conn
            .execute(
                "UPDATE fleet_answers SET state = 'failed', ended_ms = ?2,
                   error = 'cancelled by an operator before it was sent'
                 WHERE fleet = ?1 AND state = 'waiting'",
                params![id as i64, now_ms as i64],
            )
            .doing("cancelling a fleet command")?;
        let sent: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM fleet_answers WHERE fleet = ?1 AND state = 'sent'",
                [id as i64],
                |r| r.get(0),
            )
            .doing("cancelling a fleet command")?;
        Ok(Some((stopped as u32, sent as u32)))
    }

    /// The newest `limit` fleet commands, newest first, each with how many
    /// of its shares are in each state.
    pub fn fleet_commands(&self, limit: u32) -> Result<Vec<FleetCommandInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT c.id, c.command, c.target, c.created_ms, c.expires_ms, a.state, count(a.id)
                 FROM (SELECT * FROM fleet_commands ORDER BY id DESC LIMIT ?1) c
                 LEFT JOIN fleet_answers a ON a.fleet = c.id
                 GROUP BY c.id, a.state ORDER BY c.id DESC, a.state",
            )
            .doing("listing fleet commands")?;
        let rows = stmt
            .query_map(params![limit.clamp(1, 1_000)], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<String>>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .doing("listing fleet commands")?;
        let mut out: Vec<FleetCommandInfo> = Vec::new();
        for row in rows {
            let (id, command, target, created, expires, state, n) =
                row.doing("listing fleet commands")?;
            let id = id as u64;
            if out.last().is_none_or(|c| c.id != id) {
                // Written by this hub from a decoded command; one that does
                // not read back is shown as a command it does not know.
                let command = serde_json::from_str(&command).unwrap_or(Command::Other {
                    name: command,
                    args: Vec::new(),
                });
                out.push(FleetCommandInfo {
                    id,
                    command,
                    target,
                    created_ms: created.max(0) as u64,
                    expires_ms: expires.max(0) as u64,
                    states: Vec::new(),
                });
            }
            if let (Some(state), Some(c)) = (state, out.last_mut()) {
                c.states.push((state, n as u32));
            }
        }
        Ok(out)
    }

    /// Where fleet command `id` stands on each device (`None`: no such
    /// command). A share waiting to be sent reads `waiting`.
    pub fn fleet_answers(&self, id: u64) -> Result<Option<Vec<FleetAnswer>>, StoreError> {
        if !self.fleet_command_known(id)? {
            return Ok(None);
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT device, state, reply, error, ended_ms FROM fleet_answers
                 WHERE fleet = ?1 ORDER BY device",
            )
            .doing("reading a fleet command")?;
        let rows = stmt
            .query_map([id as i64], |r| {
                let reply: Option<String> = r.get(2)?;
                Ok(FleetAnswer {
                    device: r.get(0)?,
                    state: r.get(1)?,
                    reply: reply.and_then(|j| serde_json::from_str(&j).ok()),
                    error: r.get(3)?,
                    ended_ms: r.get::<_, i64>(4)?.max(0) as u64,
                })
            })
            .doing("reading a fleet command")?;
        let mut answers: Vec<FleetAnswer> = rows
            .collect::<Result<_, _>>()
            .doing("reading a fleet command")?;
        // The answer must fit in one message: programs' output is cut to a
        // share of a budget.
        let each = super::jobs::JOB_OUTPUT_BUDGET / answers.len().max(1);
        for a in &mut answers {
            if let Some(Reply::Outcome(
                fleetmq_protocol::Outcome::Completed(o) | fleetmq_protocol::Outcome::TimedOut(o),
            )) = &mut a.reply
            {
                super::jobs::cut_output(o, each);
            }
        }
        Ok(Some(answers))
    }
}
