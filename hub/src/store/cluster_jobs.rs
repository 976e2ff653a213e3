//! Jobs as a front-end over NATS records them: every job and run comes
//! from the cluster's job events, in the stream's order, with the ids the
//! cluster gave them (see `crate::cluster::jobs`). A work-queue job's row
//! is never handed out from this store (the cluster's queue hands it
//! out); a run is, by the front-end holding its device, as on a single
//! hub. What becomes of them (finished, failed, cancelled) is applied with
//! the single hub's calls in `jobs.rs`.

use fleetmq_protocol::JobSubmission;
use rusqlite::{OptionalExtension, params};

use super::{Doing as _, Store, StoreError, json};

impl Store {
    /// A job of the cluster's queue, as its events show it here (front-ends;
    /// never handed out from this store). Known already: unchanged.
    pub fn insert_cluster_job(
        &self,
        id: u64,
        job: &JobSubmission,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT OR IGNORE INTO jobs (id, kind, spec, state, max_attempts, timeout_ms, lease_ms, created_ms, updated_ms)
                 VALUES (?1, 'cluster', ?2, 'queued', ?3, ?4, ?5, ?6, ?6)",
                params![id as i64, json(&job.spec), job.max_attempts, job.timeout_ms, job.lease_ms, now_ms as i64],
            )
            .doing("recording a cluster job")?;
        Ok(())
    }

    /// An aimed job of the cluster, as its event shows it here (front-ends):
    /// the job as `id` and its runs as (run id, device), the same ids in
    /// every front-end's store. Known already: unchanged.
    pub fn insert_cluster_aimed(
        &mut self,
        id: u64,
        job: &JobSubmission,
        target: &str,
        runs: &[(u64, &str)],
        expires_ms: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction().doing("recording a cluster job")?;
        let new = tx
            .execute(
                "INSERT OR IGNORE INTO jobs (id, spec, state, max_attempts, timeout_ms, lease_ms, created_ms, updated_ms, kind, target)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?6, 'fanout', ?7)",
                params![id as i64, json(&job.spec), job.max_attempts, job.timeout_ms, job.lease_ms, now_ms as i64, target],
            )
            .doing("recording a cluster job")?;
        if new == 0 {
            return Ok(());
        }
        for (run, device) in runs {
            tx.execute(
                "INSERT OR IGNORE INTO jobs (id, spec, state, max_attempts, timeout_ms, lease_ms, created_ms, updated_ms, kind, aim, parent, expires_ms)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?6, 'run', ?7, ?8, ?9)",
                params![*run as i64, json(&job.spec), job.max_attempts, job.timeout_ms, job.lease_ms, now_ms as i64, device, id as i64, expires_ms as i64],
            )
            .doing("recording a cluster job")?;
        }
        tx.commit().doing("recording a cluster job")
    }

    /// Another front-end handed attempt `attempt` of run `id` out with
    /// `token`, its lease running until `lease_until_ms`: shown leased
    /// here too, unless it is over here (done, failed or cancelled: its
    /// result is still taken) or this store knows a later attempt.
    /// Returns whether it changed anything.
    pub fn run_sent(
        &self,
        id: u64,
        attempt: u32,
        token: u64,
        lease_until_ms: u64,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE jobs SET state = 'leased', attempts = ?2, lease_until_ms = ?3, updated_ms = ?4, token = ?5
                 WHERE id = ?1 AND kind = 'run' AND state IN ('queued', 'leased') AND attempts < ?2",
                params![id as i64, attempt, lease_until_ms as i64, now_ms as i64, token as i64],
            )
            .doing("recording a run handed out")?;
        Ok(n == 1)
    }

    /// Whether job `id` is over (done, failed or cancelled); `None` for a
    /// job not known here.
    pub fn job_over(&self, id: u64) -> Result<Option<bool>, StoreError> {
        self.conn
            .query_row(
                "SELECT state IN ('done', 'failed') FROM jobs WHERE id = ?1",
                [id as i64],
                |r| r.get(0),
            )
            .optional()
            .doing("reading a job")
    }
}
