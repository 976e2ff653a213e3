//! The audit trail: each act an operator asked of the hub, who asked, and
//! whether their role allowed it. The newest [`AUDIT_KEEP`] allowed acts
//! are kept, and apart from them the newest [`REFUSED_KEEP`] refused.

use fleetmq_protocol::AuditEntry;

use super::commands::LogWrite;
pub use super::commands::{AUDIT_KEEP, REFUSED_KEEP};
use super::{Doing as _, Store, StoreError};

impl Store {
    /// Records one act; written with the command log (the hub flushes it
    /// every tick), so that a flood of acts costs one commit a tick.
    pub fn audit_record(&mut self, at_ms: u64, operator: &str, act: &str, allowed: bool) {
        self.log_queue.push(LogWrite::Audit {
            at_ms,
            operator: operator.to_string(),
            act: act.to_string(),
            allowed,
        });
        self.flush_log_if_full();
    }

    /// The newest `limit` entries, newest first.
    pub fn audit(&mut self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.flush_log()?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, at_ms, operator, act, allowed FROM audit ORDER BY id DESC LIMIT ?1",
            )
            .doing("reading the audit trail")?;
        let rows = stmt
            .query_map([limit.clamp(1, (AUDIT_KEEP + REFUSED_KEEP) as u32)], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at_ms: r.get::<_, i64>(1)? as u64,
                    operator: r.get(2)?,
                    act: r.get(3)?,
                    allowed: r.get(4)?,
                })
            })
            .doing("reading the audit trail")?;
        rows.collect::<Result<_, _>>()
            .doing("reading the audit trail")
    }
}
