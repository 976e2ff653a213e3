//! The desired configuration: layers of keys (`fleet`, `group:NAME`,
//! `device:ID`), each key stamped with the version of the edit that last
//! touched it; a key taken out of a layer stays as a row without a value,
//! so its version still counts. What each device last applied.

use std::collections::HashMap;

use rusqlite::{OptionalExtension as _, params};

use super::{Doing as _, Store, StoreError};

/// Most bytes of keys and values one layer holds.
pub const MAX_LAYER_BYTES: usize = 32 * 1024;

/// Why an edit was not made.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("the configuration is at version {now}, not {expected}: read it again and retry")]
    Conflict { expected: u64, now: u64 },
    #[error(
        "layer {layer} would hold {bytes} bytes of keys and values; the most is {MAX_LAYER_BYTES}"
    )]
    TooLarge { layer: String, bytes: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One key of one layer: `None` when the layer no longer sets it.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerKey {
    pub layer: String,
    pub key: String,
    pub value: Option<String>,
    pub version: u64,
}

/// The configuration's version: the newest edit's, or the floor a backup
/// set (`marks`: `config.version`) for a hub started on it.
const VERSION: &str = "SELECT max(coalesce((SELECT max(version) FROM config), 0), \
     coalesce((SELECT value FROM marks WHERE name = 'config.version'), 0))";

impl Store {
    /// The configuration's version: the newest edit's (0: none yet).
    pub fn config_version(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(VERSION, [], |r| r.get::<_, i64>(0))
            .map(|v| v.max(0) as u64)
            .doing("reading the configuration's version")
    }

    /// Sets and unsets keys of `layer` in one edit; returns the new version.
    pub fn config_edit(
        &mut self,
        layer: &str,
        set: &[(String, String)],
        unset: &[String],
        if_version: u64,
    ) -> Result<u64, EditError> {
        self.config_edit_at(layer, set, unset, if_version, None)
    }

    /// [`Store::config_edit`] as version `at` when given (front-ends: the
    /// edit's place in the cluster's configuration stream, the same on
    /// every front-end); an edit at a version this store has reached
    /// already is not applied again.
    pub fn config_edit_at(
        &mut self,
        layer: &str,
        set: &[(String, String)],
        unset: &[String],
        if_version: u64,
        at: Option<u64>,
    ) -> Result<u64, EditError> {
        let tx = self.conn.transaction().doing("editing the configuration")?;
        let now: i64 = tx
            .query_row(VERSION, [], |r| r.get(0))
            .doing("editing the configuration")?;
        let now = now.max(0) as u64;
        if let Some(at) = at
            && now >= at
        {
            return Ok(at);
        }
        if if_version != 0 && if_version != now {
            return Err(EditError::Conflict {
                expected: if_version,
                now,
            });
        }
        let version = at.unwrap_or(now + 1);
        for (key, value) in set {
            tx.execute(
                "INSERT INTO config (layer, key, value, version) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (layer, key) DO UPDATE SET value = ?3, version = ?4",
                params![layer, key, value, version as i64],
            )
            .doing("editing the configuration")?;
        }
        for key in unset {
            tx.execute(
                "UPDATE config SET value = NULL, version = ?3
                 WHERE layer = ?1 AND key = ?2 AND value IS NOT NULL",
                params![layer, key, version as i64],
            )
            .doing("editing the configuration")?;
        }
        let bytes: i64 = tx
            .query_row(
                "SELECT coalesce(sum(length(key) + length(value)), 0) FROM config
                 WHERE layer = ?1 AND value IS NOT NULL",
                [layer],
                |r| r.get(0),
            )
            .doing("editing the configuration")?;
        if bytes as usize > MAX_LAYER_BYTES {
            return Err(EditError::TooLarge {
                layer: layer.to_string(),
                bytes: bytes as usize,
            });
        }
        tx.commit().doing("editing the configuration")?;
        Ok(version)
    }

    /// Forgets the desired configuration and what devices applied of it
    /// (a hub becoming a front-end takes the cluster's instead).
    pub fn config_clear(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("DELETE FROM config; DELETE FROM config_applied;")
            .doing("clearing the desired configuration")
    }

    /// Every key of every layer, by layer.
    pub fn config_all(
        &self,
    ) -> Result<std::collections::HashMap<String, Vec<LayerKey>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT layer, key, value, version FROM config ORDER BY layer, key")
            .doing("reading the configuration")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(LayerKey {
                    layer: r.get(0)?,
                    key: r.get(1)?,
                    value: r.get(2)?,
                    version: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })
            .doing("reading the configuration")?;
        let mut out: std::collections::HashMap<String, Vec<LayerKey>> = Default::default();
        for row in rows {
            let k = row.doing("reading the configuration")?;
            out.entry(k.layer.clone()).or_default().push(k);
        }
        Ok(out)
    }

    /// Every key of the given layers.
    pub fn config_layers(&self, layers: &[String]) -> Result<Vec<LayerKey>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, value, version FROM config WHERE layer = ?1 ORDER BY key")
            .doing("reading the configuration")?;
        let mut out = Vec::new();
        for layer in layers {
            let rows = stmt
                .query_map([layer], |r| {
                    Ok(LayerKey {
                        layer: layer.clone(),
                        key: r.get(0)?,
                        value: r.get(1)?,
                        version: r.get::<_, i64>(2)?.max(0) as u64,
                    })
                })
                .doing("reading the configuration")?;
            for row in rows {
                out.push(row.doing("reading the configuration")?);
            }
        }
        Ok(out)
    }

    /// Records what a device applied: the version, and the keys it did not.
    pub fn config_applied(
        &self,
        device: &str,
        version: u64,
        errors: &[(String, String)],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO config_applied (device, version, errors, at_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (device) DO UPDATE SET version = ?2, errors = ?3, at_ms = ?4",
                params![device, version as i64, super::json(&errors), now_ms as i64],
            )
            .doing("recording an applied configuration")?;
        Ok(())
    }

    /// What a device last applied: (version, errors); (0, none) if nothing.
    pub fn config_applied_by(&self, device: &str) -> Result<Applied, StoreError> {
        let row: Option<(i64, String)> = self
            .conn
            .query_row(
                "SELECT version, errors FROM config_applied WHERE device = ?1",
                [device],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .doing("reading an applied configuration")?;
        Ok(row.map_or((0, Vec::new()), applied))
    }

    /// What every device that applied a configuration last applied, by
    /// device, in one read (`config status` over a whole fleet).
    pub fn config_applied_all(&self) -> Result<HashMap<String, Applied>, StoreError> {
        let mut stmt = (self.conn)
            .prepare_cached("SELECT device, version, errors FROM config_applied")
            .doing("preparing applied configurations")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
            .doing("reading applied configurations")?;
        rows.map(|row| {
            let (device, row): (String, (i64, String)) =
                row.doing("reading an applied configuration")?;
            Ok((device, applied(row)))
        })
        .collect()
    }
}

/// What a device applied: the version and each key it refused, with why.
pub type Applied = (u64, Vec<(String, String)>);

fn applied((version, errors): (i64, String)) -> Applied {
    (
        version.max(0) as u64,
        serde_json::from_str(&errors).unwrap_or_default(),
    )
}
