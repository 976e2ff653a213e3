//! Jobs: queued, leased, failed, finished.
//!
//! One table holds three kinds of row: `queue` (the work queue's jobs,
//! handed to whichever agent pulls), `fanout` (a job aimed at devices,
//! groups or the fleet: what the operator submitted, with no work of its
//! own) and `run` (that job on one device, `aim`, under its `parent`).
//! A run is leased, retried and finished as a queue job is; its parent is
//! done once no run is waiting or leased.

use fleetmq_protocol::{JobInfo, JobRun, JobSpec, JobState, JobSubmission, Outcome};
use rusqlite::{OptionalExtension, params};

use super::{AttemptCheck, Doing as _, DueJob, Store, StoreError, json, parse_state};

/// Bytes of output the runs of one aimed job show in all (`job show`): the
/// answer must fit in one operator message (1 MiB by default).
pub(super) const JOB_OUTPUT_BUDGET: usize = 256 * 1024;

/// Cuts a run's output to `most` bytes (stdout first), marking it cut.
pub(super) fn cut_output(o: &mut fleetmq_protocol::Output, most: usize) {
    if o.stdout.len() + o.stderr.len() <= most {
        return;
    }
    fleetmq_net::text::truncate(&mut o.stdout, most);
    fleetmq_net::text::truncate(&mut o.stderr, most.saturating_sub(o.stdout.len()));
    o.truncated = true;
}

/// A new job's id: past every id stored or pruned (the `jobs_last_id`
/// trigger keeps the highest deleted), never one used before. SQLite
/// alone would give the highest stored plus one, and so reuse the ids of
/// the newest jobs once retention pruned them: an agent that ran such an
/// id would answer the new job with the old one's result.
fn next_job_id() -> String {
    format!("{} + 1", super::highest_id("jobs"))
}

impl Store {
    /// Queues a job; returns its id.
    pub fn submit_job(&self, job: &JobSubmission, now_ms: u64) -> Result<u64, StoreError> {
        self.conn
            .execute(
                &format!("INSERT INTO jobs (id, spec, state, max_attempts, timeout_ms, lease_ms, created_ms, updated_ms)
                 VALUES ({}, ?1, 'queued', ?2, ?3, ?4, ?5, ?5)", next_job_id()),
                params![json(&job.spec), job.max_attempts, job.timeout_ms, job.lease_ms, now_ms as i64],
            )
            .doing("queueing a job")?;
        Ok(self.conn.last_insert_rowid() as u64)
    }

    /// Queues `job` aimed at each of `devices` (`target` says how they were
    /// named); a run that has not started by `expires_ms` fails. Returns
    /// the job's id.
    pub fn submit_aimed(
        &mut self,
        job: &JobSubmission,
        target: &str,
        devices: &[String],
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let tx = self.conn.transaction().doing("queueing a job")?;
        tx.execute(
            &format!("INSERT INTO jobs (id, spec, state, max_attempts, timeout_ms, lease_ms, created_ms, updated_ms, kind, target)
             VALUES ({}, ?1, 'queued', ?2, ?3, ?4, ?5, ?5, 'fanout', ?6)", next_job_id()),
            params![json(&job.spec), job.max_attempts, job.timeout_ms, job.lease_ms, now_ms as i64, target],
        )
        .doing("queueing a job")?;
        let id = tx.last_insert_rowid();
        for device in devices {
            tx.execute(
                &format!("INSERT INTO jobs (id, spec, state, max_attempts, timeout_ms, lease_ms, created_ms, updated_ms, kind, aim, parent, expires_ms)
                 VALUES ({}, ?1, 'queued', ?2, ?3, ?4, ?5, ?5, 'run', ?6, ?7, ?8)", next_job_id()),
                params![json(&job.spec), job.max_attempts, job.timeout_ms, job.lease_ms, now_ms as i64, device, id, expires_ms as i64],
            )
            .doing("queueing a job")?;
        }
        tx.commit().doing("queueing a job")?;
        Ok(id as u64)
    }

    /// The devices with runs waiting for them.
    pub fn aimed_devices(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT aim FROM jobs WHERE kind = 'run' AND state = 'queued'")
            .doing("finding aimed jobs")?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .doing("finding aimed jobs")?;
        rows.collect::<Result<_, _>>().doing("finding aimed jobs")
    }

    /// Runs waiting for `device`, oldest first.
    pub fn aimed_due(
        &self,
        device: &str,
        limit: u32,
        now_ms: u64,
    ) -> Result<Vec<DueJob>, StoreError> {
        self.due(
            "SELECT id, spec, attempts, max_attempts, timeout_ms, lease_ms FROM jobs
             WHERE kind = 'run' AND state = 'queued' AND aim = ?2 ORDER BY id LIMIT ?1",
            params![limit, device],
            now_ms,
        )
    }

    /// Fails the runs still waiting at `now_ms` past their time to live
    /// (their device stayed away); returns how many.
    pub fn expire_runs(&self, now_ms: u64) -> Result<usize, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE jobs SET state = 'failed', updated_ms = ?1,
                   error = 'the device did not come online within the job''s time to live'
                 WHERE kind = 'run' AND state = 'queued' AND expires_ms < ?1",
                params![now_ms as i64],
            )
            .doing("expiring aimed jobs")?;
        if n > 0 {
            self.settle(now_ms)?;
        }
        Ok(n)
    }

    /// Cancels job `id`: with an aimed job, each of its runs. Whatever
    /// has not been handed out fails, saying it was cancelled; an attempt
    /// running on a device is given no further one (its result is still
    /// taken). Returns (stopped, running), or `None` for no such job.
    pub fn cancel_job(&self, id: u64, now_ms: u64) -> Result<Option<(u32, u32)>, StoreError> {
        let known = self
            .conn
            .query_row("SELECT 1 FROM jobs WHERE id = ?1", [id as i64], |_| Ok(()))
            .optional()
            .doing("reading a job")?;
        if known.is_none() {
            return Ok(None);
        }
        // A job of the cluster's work queue may be out at a front-end (no
        // store shows which): it is taken off the queue, and a result for
        // an attempt already out is still taken.
        let stopped = self
            .conn
            .execute(
                "UPDATE jobs SET state = 'failed', updated_ms = ?2,
                   error = CASE kind WHEN 'cluster'
                     THEN 'cancelled by an operator: taken off the cluster''s work queue (an attempt already out goes on, and its result is taken)'
                     ELSE 'cancelled by an operator before it was handed out' END
                 WHERE (id = ?1 OR parent = ?1) AND kind != 'fanout' AND state = 'queued'",
                params![id as i64, now_ms as i64],
            )
            .doing("cancelling a job")?;
        let running = self
            .conn
            .execute(
                "UPDATE jobs SET max_attempts = attempts, updated_ms = ?2,
                   error = 'cancelled by an operator while it ran: no further attempt'
                 WHERE (id = ?1 OR parent = ?1) AND state = 'leased'",
                params![id as i64, now_ms as i64],
            )
            .doing("cancelling a job")?;
        self.settle(now_ms)?;
        Ok(Some((stopped as u32, running as u32)))
    }

    /// Marks done every aimed job none of whose runs is waiting or leased.
    pub(super) fn settle(&self, now_ms: u64) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE jobs SET state = 'done', updated_ms = ?1
                 WHERE kind = 'fanout' AND state = 'queued' AND NOT EXISTS
                   (SELECT 1 FROM jobs r WHERE r.parent = jobs.id AND r.state IN ('queued', 'leased'))",
            )
            .and_then(|mut s| s.execute(params![now_ms as i64]))
            .doing("finishing aimed jobs")?;
        Ok(())
    }

    /// A work-queue job the device refused (it does not allow it): back in
    /// the queue for another device, the refusal noted.
    pub fn refused(&self, id: u64, note: &str, now_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE jobs SET state = 'queued', updated_ms = ?3,
                   error = CASE WHEN error IS NULL THEN ?2 ELSE error || '; ' || ?2 END
                 WHERE id = ?1 AND state = 'leased' AND kind = 'queue'",
                params![id as i64, note, now_ms as i64],
            )
            .doing("putting a refused job back in the queue")?;
        Ok(())
    }

    /// Whether job `id` is a run aimed at a device (not the work queue's).
    pub fn is_aimed(&self, id: u64) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT kind = 'run' FROM jobs WHERE id = ?1",
                [id as i64],
                |r| r.get(0),
            )
            .optional()
            .map(|k| k.unwrap_or(false))
            .doing("reading a job")
    }

    /// The runs of aimed job `id`, by device.
    fn runs(&self, id: u64) -> Result<Vec<JobRun>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, aim, state, attempts, updated_ms, outcome, error FROM jobs
                 WHERE parent = ?1 ORDER BY aim",
            )
            .doing("reading a job's runs")?;
        let rows = stmt
            .query_map([id as i64], |r| {
                let state: String = r.get(2)?;
                let outcome: Option<String> = r.get(5)?;
                Ok(JobRun {
                    id: r.get::<_, i64>(0)? as u64,
                    device: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    state: parse_state(&state),
                    attempts: r.get(3)?,
                    updated_ms: r.get::<_, i64>(4)? as u64,
                    outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
                    error: r.get(6)?,
                })
            })
            .doing("reading a job's runs")?;
        rows.collect::<Result<_, _>>().doing("reading a job's runs")
    }

    /// A job as shown, with its runs if it was aimed, their output cut to
    /// `output_budget` bytes in all (an answer must fit in one message).
    fn with_runs(
        &self,
        mut job: JobInfo,
        kind: &str,
        output_budget: usize,
    ) -> Result<JobInfo, StoreError> {
        if kind == "fanout" {
            job.runs = self.runs(job.id)?;
            let each = output_budget / job.runs.len().max(1);
            for run in &mut job.runs {
                if let Some(Outcome::Completed(o) | Outcome::TimedOut(o)) = &mut run.outcome {
                    cut_output(o, each);
                }
            }
            let waiting = job.runs.iter().any(|r| r.state == JobState::Queued);
            let leased = job.runs.iter().any(|r| r.state == JobState::Leased);
            job.state = match (leased, waiting) {
                (true, _) => JobState::Leased,
                (false, true) if job.runs.iter().all(|r| r.state == JobState::Queued) => {
                    JobState::Queued
                }
                (false, true) => JobState::Leased,
                (false, false) => JobState::Done,
            };
            job.attempts = job.runs.iter().map(|r| r.attempts).max().unwrap_or(0);
        }
        Ok(job)
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
            target: match (r.get::<_, String>(12)?, r.get::<_, Option<String>>(14)?) {
                (_, Some(device)) => format!("device {device}"),
                (t, None) if t.is_empty() => "any".into(),
                (t, None) => t,
            },
            runs: Vec::new(),
        })
    }

    const JOB_COLUMNS: &'static str = "id, spec, state, attempts, max_attempts, timeout_ms, lease_ms, created_ms, updated_ms, device, outcome, error, target, kind, aim";

    /// One job.
    pub fn job(&self, id: u64) -> Result<Option<JobInfo>, StoreError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {} FROM jobs WHERE id = ?1", Self::JOB_COLUMNS),
                [id as i64],
                |r| Ok((Self::job_from_row(r)?, r.get::<_, String>(13)?)),
            )
            .optional()
            .doing("reading a job")?;
        row.map(|(job, kind)| self.with_runs(job, &kind, JOB_OUTPUT_BUDGET))
            .transpose()
    }

    /// Recent jobs, newest first (an aimed job once, not each run).
    pub fn jobs(&self, limit: u32) -> Result<Vec<JobInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {} FROM jobs WHERE kind != 'run' ORDER BY id DESC LIMIT ?1",
                Self::JOB_COLUMNS
            ))
            .doing("listing jobs")?;
        let rows = stmt
            .query_map([limit.clamp(1, 10_000)], |r| {
                Ok((Self::job_from_row(r)?, r.get::<_, String>(13)?))
            })
            .doing("listing jobs")?;
        let rows: Vec<(JobInfo, String)> = rows.collect::<Result<_, _>>().doing("listing jobs")?;
        // A list shows where each run stands, not what it printed.
        rows.into_iter()
            .map(|(job, kind)| self.with_runs(job, &kind, 0))
            .collect()
    }

    /// Jobs waiting in the queue, oldest first: new ones and those whose
    /// lease ran out ([`Store::lease_ran_out`]). `now_ms` (wall clock)
    /// stamps a job whose spec cannot be read, which fails.
    pub fn due_jobs(&self, now_ms: u64, limit: u32) -> Result<Vec<DueJob>, StoreError> {
        self.due(
            "SELECT id, spec, attempts, max_attempts, timeout_ms, lease_ms FROM jobs
             WHERE kind = 'queue' AND state = 'queued' ORDER BY id LIMIT ?1",
            params![limit],
            now_ms,
        )
    }

    /// The jobs `sql` (selecting id, spec, attempts, max_attempts,
    /// timeout_ms, lease_ms) finds; one whose spec cannot be read fails.
    fn due(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        now_ms: u64,
    ) -> Result<Vec<DueJob>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).doing("finding due jobs")?;
        let rows = stmt
            .query_map(args, |r| {
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
        let mut unreadable = Vec::new();
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
                Err(e) => unreadable.push((id as u64, format!("job spec unreadable: {e}"))),
            }
        }
        drop(stmt);
        for (id, why) in unreadable {
            self.fail_job(id, &why, now_ms)?;
        }
        Ok(out)
    }

    /// Marks a job handed out for one more attempt.
    /// Attempt `attempts` of job `id` was handed out with `token`; its
    /// lease runs until `lease_until_ms`.
    pub fn lease_job(
        &self,
        id: u64,
        attempts: u32,
        token: u64,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE jobs SET state = 'leased', attempts = ?2, lease_until_ms = ?3, updated_ms = ?4, token = ?5 WHERE id = ?1",
                params![id as i64, attempts, lease_until_ms as i64, now_ms as i64, token as i64],
            )
            .doing("leasing a job")?;
        Ok(())
    }

    /// Every leased job: (id, the lease's wall-clock end, the lease's
    /// length). A starting hub times what is left of each.
    pub fn leased_jobs(&self) -> Result<Vec<(u64, u64, u32)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, COALESCE(lease_until_ms, 0), lease_ms FROM jobs WHERE state = 'leased'",
            )
            .doing("reading job leases")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)?.max(0) as u64,
                    r.get(2)?,
                ))
            })
            .doing("reading job leases")?;
        rows.collect::<Result<_, _>>().doing("reading job leases")
    }

    /// Job `id`'s lease ran out without a result: it waits in the queue
    /// for its next attempt. A job finished meanwhile is left alone.
    pub fn lease_ran_out(&self, id: u64, now_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE jobs SET state = 'queued', updated_ms = ?2 WHERE id = ?1 AND state = 'leased'",
                params![id as i64, now_ms as i64],
            )
            .doing("putting a job back in the queue")?;
        Ok(())
    }

    /// Whether attempt `attempt` of job `id`, with `token`, is the one the
    /// hub handed out last.
    pub fn check_attempt(
        &self,
        id: u64,
        attempt: u32,
        token: u64,
    ) -> Result<AttemptCheck, StoreError> {
        let row: Option<(String, u32, i64)> = self
            .conn
            .query_row(
                "SELECT state, attempts, token FROM jobs WHERE id = ?1",
                [id as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .doing("reading a job")?;
        Ok(match row {
            None => AttemptCheck::Unknown,
            Some((state, _, _)) if state == "done" => AttemptCheck::Finished,
            Some((_, attempts, t)) if attempts == attempt && t == token as i64 && t != 0 => {
                AttemptCheck::Given
            }
            Some(_) => AttemptCheck::NotGiven,
        })
    }

    /// Gives up on a job (one with its result keeps it).
    pub fn fail_job(&self, id: u64, error: &str, now_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE jobs SET state = 'failed', updated_ms = ?3,
                   error = CASE WHEN error IS NULL THEN ?2 ELSE ?2 || ' (' || error || ')' END
                 WHERE id = ?1 AND state != 'done'",
                params![id as i64, error, now_ms as i64],
            )
            .doing("failing a job")?;
        self.settle(now_ms)
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
        if n == 1 {
            self.settle(now_ms)?;
        }
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
}
