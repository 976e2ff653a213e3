//! The audit trail: each act an operator asked of the hub, who asked, and
//! whether their role allowed it. The newest [`AUDIT_KEEP`] are kept.

use fleetmq_protocol::AuditEntry;
use rusqlite::params;

use super::{Doing as _, Store, StoreError};

/// Entries kept; older ones are removed as new ones come.
pub const AUDIT_KEEP: i64 = 10_000;

impl Store {
    /// Records one act.
    pub fn audit_record(
        &self,
        at_ms: u64,
        operator: &str,
        act: &str,
        allowed: bool,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO audit (at_ms, operator, act, allowed) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![at_ms as i64, operator, act, allowed]))
            .doing("recording an operator's act")?;
        let newest = self.conn.last_insert_rowid();
        if newest % 100 == 0 {
            self.conn
                .execute("DELETE FROM audit WHERE id <= ?1", [newest - AUDIT_KEEP])
                .doing("pruning the audit trail")?;
        }
        Ok(())
    }

    /// The newest `limit` entries, newest first.
    pub fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, at_ms, operator, act, allowed FROM audit ORDER BY id DESC LIMIT ?1",
            )
            .doing("reading the audit trail")?;
        let rows = stmt
            .query_map([limit.clamp(1, AUDIT_KEEP as u32)], |r| {
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
