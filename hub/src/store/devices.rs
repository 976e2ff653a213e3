//! The devices the hub has heard from: their rows (what each said in its
//! Hello and Offer, when it was seen, its batch numbers), their connects and
//! disconnects, and forgetting a decommissioned one.

use fleetmq_protocol::{DeviceFacts, DeviceInfo, Hello};
use rusqlite::{OptionalExtension, params};

use super::{Doing as _, Store, StoreError, json};

/// Connects and disconnects kept per device (the oldest go first).
pub const PRESENCE_LOG_KEEP: u32 = 200;

/// What forgetting device `?1` calls off: its job runs not handed out, and
/// its command shares not sent ([`Store::forget_device`] fails them,
/// [`Store::forget_counts`] counts them).
const RUNS_WAITING: &str = "FROM jobs WHERE kind = 'run' AND state = 'queued' AND aim = ?1";
const SHARES_WAITING: &str = "FROM fleet_answers WHERE device = ?1 AND state = 'waiting'";

/// Whether [`Store::devices`] reads each device's facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Facts {
    Read,
    Skip,
}

impl Store {
    /// Records a Hello: creates or updates the device row. Groups other
    /// than the row's mark its configuration stale (in the same write, so
    /// a hub stopped before the device's Offer still knows): the layers
    /// its document merges changed, which its version alone does not say.
    /// So does a new row: the device may have applied a document of other
    /// groups elsewhere (at another front-end, before it moved here).
    pub fn hello(&self, id: &str, h: &Hello, now_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO devices (id, agent_version, arch, os, hostname, groups, first_seen_ms, last_seen_ms, since_ms, config_stale)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7, 1)
                 ON CONFLICT (id) DO UPDATE SET agent_version = ?2, arch = ?3, os = ?4, hostname = ?5,
                   groups = ?6, last_seen_ms = ?7, forgotten_ms = NULL,
                   config_stale = config_stale OR groups IS NOT ?6",
                params![id, h.agent_version, h.arch, h.os, h.hostname, json(&h.groups), now_ms as i64],
            )
            .doing("recording a hello")?;
        Ok(())
    }

    /// Keeps what a device's Offer said it is (its row made if need be);
    /// true if they changed. The same facts again change nothing, so a
    /// reconnect writes no page.
    pub fn facts(&self, id: &str, facts: &DeviceFacts, now_ms: u64) -> Result<bool, StoreError> {
        // None (an older agent's) as NULL: its Offers write nothing either.
        let facts = (!facts.is_empty()).then(|| json(facts));
        let changed = self
            .conn
            .execute(
                "INSERT INTO devices (id, first_seen_ms, last_seen_ms, since_ms, facts) VALUES (?1, ?2, ?2, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET facts = ?3 WHERE facts IS NOT ?3",
                params![id, now_ms as i64, facts],
            )
            .doing("recording a device's facts")?;
        Ok(changed > 0)
    }

    /// The board serial number the device's stored facts name; empty when
    /// none is known. SQLite takes the one field out of the JSON.
    pub fn serial(&self, id: &str) -> Result<String, StoreError> {
        let serial: Option<Option<String>> = self
            .conn
            .prepare_cached("SELECT json_extract(facts, '$.serial') FROM devices WHERE id = ?1")
            .and_then(|mut stmt| stmt.query_row([id], |r| r.get(0)).optional())
            .doing("reading a device's serial number")?;
        Ok(serial.flatten().unwrap_or_default())
    }

    /// Whether a change of the device's groups left the configuration it
    /// applied stale (see [`Store::hello`]); the hub reads it with its
    /// groups, [`Store::device_groups`].
    #[cfg(test)]
    pub fn config_stale(&self, id: &str) -> Result<bool, StoreError> {
        (self.device_groups(id)).map(|row| row.is_some_and(|(_, stale)| stale))
    }

    /// The device applied a document of its layers as they are: no longer
    /// stale. Writes nothing when it was not.
    pub fn config_fresh(&self, id: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE devices SET config_stale = 0 WHERE id = ?1 AND config_stale != 0",
                [id],
            )
            .doing("marking a device's configuration applied")?;
        Ok(())
    }

    /// Makes sure a device row exists (a device heard from before its hello).
    pub fn touch(&self, id: &str, now_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO devices (id, first_seen_ms, last_seen_ms, since_ms) VALUES (?1, ?2, ?2, ?2)
                 ON CONFLICT (id) DO UPDATE SET last_seen_ms = max(last_seen_ms, ?2), forgotten_ms = NULL",
                params![id, now_ms as i64],
            )
            .doing("recording a device")?;
        Ok(())
    }

    /// Records a presence change: online or offline since `since_ms`.
    pub fn presence(&self, id: &str, since_ms: u64, last_seen_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE devices SET since_ms = ?2, last_seen_ms = max(last_seen_ms, ?3) WHERE id = ?1",
                params![id, since_ms as i64, last_seen_ms as i64],
            )
            .doing("recording presence")?;
        Ok(())
    }

    /// `device` came online (or went offline) at `at_ms`, for `why`; the
    /// device's oldest entries past [`PRESENCE_LOG_KEEP`] go.
    pub fn log_presence(
        &self,
        device: &str,
        online: bool,
        at_ms: u64,
        why: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO presence_log (device, online, at_ms, why) VALUES (?1, ?2, ?3, ?4)",
            )
            .and_then(|mut s| s.execute(params![device, online, at_ms as i64, why]))
            .doing("logging a connect or disconnect")?;
        self.conn
            .prepare_cached(
                "DELETE FROM presence_log WHERE device = ?1 AND id <= (SELECT id FROM presence_log
                   WHERE device = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )
            .and_then(|mut s| s.execute(params![device, PRESENCE_LOG_KEEP]))
            .doing("logging a connect or disconnect")?;
        Ok(())
    }

    /// A device's newest connects and disconnects, newest first.
    pub fn presence_log(
        &self,
        device: &str,
        limit: u32,
    ) -> Result<Vec<fleetmq_protocol::PresenceEvent>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT online, at_ms, why FROM presence_log WHERE device = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .doing("reading connects and disconnects")?;
        let rows = stmt
            .query_map(params![device, limit.min(PRESENCE_LOG_KEEP)], |r| {
                Ok(fleetmq_protocol::PresenceEvent {
                    online: r.get(0)?,
                    at_ms: r.get::<_, i64>(1)?.max(0) as u64,
                    why: r.get(2)?,
                })
            })
            .doing("reading connects and disconnects")?;
        rows.collect::<Result<_, _>>()
            .doing("reading connects and disconnects")
    }

    /// True if the hub has heard from this device (and not forgotten it).
    pub fn device_known(&self, id: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("SELECT 1 FROM devices WHERE id = ?1 AND forgotten_ms IS NULL")
            .and_then(|mut stmt| stmt.query_row([id], |_| Ok(())))
            .optional()
            .map(|r| r.is_some())
            .doing("looking up a device")
    }

    /// Every device; `online`/`listening` are filled in by the caller.
    /// Their facts only when asked to [`Facts::Read`] them: reading them
    /// costs about twice the rest of a row (20 against 7 ms for 10,000
    /// devices), and most callers (the alert check each second among
    /// them) look at none.
    pub fn devices(&self, facts: Facts) -> Result<Vec<DeviceInfo>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, agent_version, arch, os, hostname, groups, since_ms, last_seen_ms, batches,
                   CASE WHEN ?1 THEN facts END
                 FROM devices WHERE forgotten_ms IS NULL ORDER BY id",
            )
            .doing("listing devices")?;
        let rows = stmt
            .query_map([facts == Facts::Read], |r| {
                let groups: String = r.get(5)?;
                Ok(DeviceInfo {
                    id: r.get(0)?,
                    agent_version: r.get(1)?,
                    arch: r.get(2)?,
                    os: r.get(3)?,
                    hostname: r.get(4)?,
                    groups: serde_json::from_str(&groups).unwrap_or_default(),
                    since_ms: r.get::<_, i64>(6)? as u64,
                    last_seen_ms: r.get::<_, i64>(7)? as u64,
                    batches: r.get::<_, i64>(8)? as u64,
                    // Written by this hub from checked facts; unreadable
                    // (a hand edit) reads as none.
                    facts: (r.get::<_, Option<String>>(9)?)
                        .and_then(|f| serde_json::from_str(&f).ok())
                        .unwrap_or_default(),
                    ..unknown_device()
                })
            })
            .doing("listing devices")?;
        rows.collect::<Result<_, _>>().doing("listing devices")
    }

    /// A device's groups, as its last Hello named them, and whether they
    /// changed since it applied a document of its configuration (see
    /// [`Store::hello`]); `None` for a device never heard from.
    pub fn device_groups(&self, id: &str) -> Result<Option<(Vec<String>, bool)>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT groups, config_stale FROM devices WHERE id = ?1 AND forgotten_ms IS NULL",
            )
            .and_then(|mut stmt| {
                stmt.query_row([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                    .optional()
            })
            .map(|row| {
                row.map(|(g, stale)| (serde_json::from_str(&g).unwrap_or_default(), stale != 0))
            })
            .doing("looking up a device's groups")
    }

    /// Devices heard from and not forgotten, for stats.
    pub fn device_count(&self) -> Result<u32, StoreError> {
        let devices: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM devices WHERE forgotten_ms IS NULL",
                [],
                |r| r.get(0),
            )
            .doing("counting devices")?;
        Ok(devices as u32)
    }

    /// Forgets a decommissioned device: it leaves the device list (and so
    /// `/metrics`, the page, alerts, configuration status and what `--all`
    /// or `--group` reaches), and the job runs and command shares waiting
    /// for it fail, saying so. Its row stays, with its batch numbers, so
    /// that if it comes back (enrolled again) its resent batches are still
    /// known. A forgotten device is offline, so any message from it first
    /// brings it online, whose [`Store::touch`] (or [`Store::hello`])
    /// undoes this; the batch path need not. Its log of connects goes;
    /// its telemetry and chat stay until retention removes them. Returns (runs, shares)
    /// called off, or `None` for a device not known (or forgotten already).
    pub fn forget_device(&self, id: &str, now_ms: u64) -> Result<Option<(u32, u32)>, StoreError> {
        const RUN: &str =
            "its device was forgotten (`fleetmq-hub forget`) before it was handed out";
        const SHARE: &str = "its device was forgotten (`fleetmq-hub forget`) before it was sent";
        let tx = self
            .conn
            .unchecked_transaction()
            .doing("forgetting a device")?;
        let forgot = tx
            .execute(
                "UPDATE devices SET forgotten_ms = ?2 WHERE id = ?1 AND forgotten_ms IS NULL",
                params![id, now_ms as i64],
            )
            .doing("forgetting a device")?;
        if forgot == 0 {
            return Ok(None);
        }
        let runs = tx
            .execute(
                &format!(
                    "UPDATE jobs SET state = 'failed', updated_ms = ?2, error = ?3
                     WHERE rowid IN (SELECT rowid {RUNS_WAITING})"
                ),
                params![id, now_ms as i64, RUN],
            )
            .doing("forgetting a device's job runs")?;
        let shares = tx
            .execute(
                &format!(
                    "UPDATE fleet_answers SET state = 'failed', ended_ms = ?2, error = ?3
                     WHERE rowid IN (SELECT rowid {SHARES_WAITING})"
                ),
                params![id, now_ms as i64, SHARE],
            )
            .doing("forgetting a device's command shares")?;
        tx.execute("DELETE FROM config_applied WHERE device = ?1", [id])
            .doing("forgetting a device's configuration status")?;
        tx.execute("DELETE FROM presence_log WHERE device = ?1", [id])
            .doing("forgetting a device's connects")?;
        self.settle(now_ms)?;
        tx.commit().doing("forgetting a device")?;
        Ok(Some((runs as u32, shares as u32)))
    }

    /// What forgetting `id` would call off now: (runs, shares), as
    /// [`Store::forget_device`] would count them.
    pub fn forget_counts(&self, id: &str) -> Result<(u32, u32), StoreError> {
        let count = |from: &str| {
            self.conn
                .query_row(&format!("SELECT count(*) {from}"), [id], |r| {
                    r.get::<_, u32>(0)
                })
                .doing("counting what waits for a device")
        };
        Ok((count(RUNS_WAITING)?, count(SHARES_WAITING)?))
    }

    /// A device the cluster says an operator forgot (front-ends): as
    /// [`Store::forget_device`], and for a device this store has not heard
    /// of yet (a front-end reading the stream from its start), a row
    /// marked forgotten, which what the stream holds of it then leaves so.
    pub fn forget_from_cluster(&self, id: &str, now_ms: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO devices (id, first_seen_ms, last_seen_ms, since_ms) VALUES (?1, ?2, ?2, ?2)
                 ON CONFLICT (id) DO NOTHING",
                params![id, now_ms as i64],
            )
            .doing("forgetting a device")?;
        self.forget_device(id, now_ms).map(|_| ())
    }

    /// A forgotten device came back at another front-end: it is listed
    /// here again (nothing happens to one not forgotten).
    pub fn remember(&self, id: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE devices SET forgotten_ms = NULL WHERE id = ?1 AND forgotten_ms IS NOT NULL",
            )
            .and_then(|mut s| s.execute([id]))
            .doing("remembering a device")?;
        Ok(())
    }
}

/// A device nothing is known of yet: offline, never seen, no Hello; set
/// what is known over it.
pub fn unknown_device() -> DeviceInfo {
    DeviceInfo {
        id: String::new(),
        online: false,
        listening: false,
        since_ms: 0,
        last_seen_ms: 0,
        agent_version: String::new(),
        arch: String::new(),
        os: String::new(),
        hostname: String::new(),
        groups: Vec::new(),
        batches: 0,
        revoked: false,
        conflicts: 0,
        conflict_address: String::new(),
        front_end: String::new(),
        clock_offset_ms: None,
        address: String::new(),
        facts: DeviceFacts::default(),
    }
}
