//! Jobs: queued, leased, failed, finished.

use fleetmq_protocol::{JobInfo, JobSpec, JobSubmission, Outcome};
use rusqlite::{OptionalExtension, params};

use super::{AttemptCheck, Doing as _, DueJob, Store, StoreError, json, parse_state};

impl Store {
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

    /// Jobs waiting in the queue, oldest first: new ones and those whose
    /// lease ran out ([`Store::lease_ran_out`]). `now_ms` (wall clock)
    /// stamps a job whose spec cannot be read, which fails.
    pub fn due_jobs(&self, now_ms: u64, limit: u32) -> Result<Vec<DueJob>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, spec, attempts, max_attempts, timeout_ms, lease_ms FROM jobs
                 WHERE state = 'queued' ORDER BY id LIMIT ?1",
            )
            .doing("finding due jobs")?;
        let rows = stmt
            .query_map(params![limit], |r| {
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
}
