//! The desired configuration, in the manner of the zguide's Clone
//! pattern: the hub keeps it as layers, every edit bumps one version, and
//! each device gets its merged document when it is behind: on (re)connect
//! its Offer says the version it last applied, and the hub sends the
//! document only if a newer change applies to it; changes while it is
//! connected are sent at once. The device answers with what it applied.
//!
//! Layers, later ones winning: `fleet`, then `group:NAME` for each of the
//! device's groups in name order, then `device:ID`.

use fleetmq_protocol::{
    ConfigDoc, ConfigEdit, ConfigReport, ConfigState, ConfigView, Desired, OperatorError, Response,
    validate_device_id, validate_group,
};
use tracing::{info, warn};

use super::{Core, Now};
use crate::store::{EditError, Facts, LayerKey, MAX_LAYER_BYTES};

/// The longest key, and value, an edit may set.
const MAX_KEY: usize = 128;
const MAX_VALUE: usize = 4096;
/// Refused keys kept of one device's report.
const MAX_REPORTED: usize = 256;
/// Documents an edit sends per tick (the rest on the next ones).
const CONFIG_SENDS_PER_TICK: usize = 256;

/// The layers that apply to a device in `groups`, in order.
pub fn layers(device: &str, groups: &[String]) -> Vec<String> {
    let mut sorted: Vec<&String> = groups.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut out = vec!["fleet".to_string()];
    out.extend(sorted.into_iter().map(|g| format!("group:{g}")));
    out.push(format!("device:{device}"));
    out
}

/// Merged keys: (key, value, the layer it came from).
pub type Entries = Vec<(String, String, String)>;

/// Merges `keys` (in layer order): each key's value and the layer it came
/// from, and the version of the newest change among them.
pub fn merge(keys: &[LayerKey]) -> (u64, Entries) {
    let mut merged: std::collections::BTreeMap<&str, (&str, &str)> = Default::default();
    let mut version = 0;
    for k in keys {
        version = version.max(k.version);
        // A key taken out of this layer (no value): what a lower layer
        // says stands.
        if let Some(v) = &k.value {
            merged.insert(&k.key, (v, &k.layer));
        }
    }
    let entries = merged
        .into_iter()
        .map(|(k, (v, l))| (k.to_string(), v.to_string(), l.to_string()))
        .collect();
    (version, entries)
}

/// The keys of `names` (in that order) from every layer's keys.
fn keys_of(
    all: &std::collections::HashMap<String, Vec<LayerKey>>,
    names: &[String],
) -> Vec<LayerKey> {
    names
        .iter()
        .filter_map(|n| all.get(n))
        .flatten()
        .cloned()
        .collect()
}

/// Checks a layer's name.
fn check_layer(layer: &str) -> Result<(), String> {
    match layer.split_once(':') {
        None if layer == "fleet" => Ok(()),
        Some(("group", g)) => validate_group(g).map_err(|e| e.to_string()),
        Some(("device", d)) => validate_device_id(d).map_err(|e| e.to_string()),
        _ => Err(format!(
            "layer {layer:?}: use fleet, group:NAME or device:ID"
        )),
    }
}

/// Checks a key: dotted words of `a-z 0-9 _`.
fn check_key(key: &str) -> Result<(), String> {
    let good = !key.is_empty()
        && key.len() <= MAX_KEY
        && key.split('.').all(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        });
    if good {
        Ok(())
    } else {
        Err(format!(
            "key {key:?}: use dotted words of a-z, 0-9 and _, at most {MAX_KEY} bytes (e.g. host.interval_ms, app.greeting)"
        ))
    }
}

impl Core {
    /// A device's groups, as its last Hello named them, and whether they
    /// changed since it applied a document (one read of its row).
    fn groups_of(&self, device: &str) -> Result<Option<(Vec<String>, bool)>, OperatorError> {
        let row = self
            .store
            .device_groups(device)
            .map_err(|e| OperatorError::Storage(e.to_string()))?;
        // A front-end knows the devices other front-ends hold too.
        Ok(row.or_else(|| self.cluster_groups(device).map(|g| (g, false))))
    }

    /// A device's merged document: its version and entries.
    fn desired_for(
        &self,
        device: &str,
        groups: &[String],
    ) -> Result<(u64, Entries), OperatorError> {
        let keys = self
            .store
            .config_layers(&layers(device, groups))
            .map_err(|e| OperatorError::Storage(e.to_string()))?;
        Ok(merge(&keys))
    }

    /// Sends `device` its document if a change newer than `applied`
    /// applies to it, or its groups changed since it applied one (the
    /// document of its new layers may be older, or lack keys it holds).
    pub(super) fn send_config_if_behind(&mut self, device: &str, applied: u64) {
        match self.groups_of(device) {
            Ok(Some((groups, stale))) => self.send_config(device, &groups, applied, stale),
            Ok(None) => {}
            Err(e) => warn!(device, error = %e, "could not read the desired configuration"),
        }
    }

    /// Sends `device` (in `groups`) its document if a change newer than
    /// `applied` applies to it, or, `stale`, whatever its version, unless
    /// it holds nothing and has nothing to hold.
    fn send_config(&mut self, device: &str, groups: &[String], applied: u64, stale: bool) {
        let (version, entries) = match self.desired_for(device, groups) {
            Ok(d) => d,
            Err(e) => return warn!(device, error = %e, "could not read the desired configuration"),
        };
        let nothing = entries.is_empty() && applied == 0;
        let due = version > applied || (stale && !nothing);
        if !due {
            return;
        }
        let values = entries.into_iter().map(|(k, v, _)| (k, v)).collect();
        info!(
            device,
            version, applied, "sending the desired configuration"
        );
        self.send_down(device, Desired(ConfigDoc { version, values }).into());
    }

    /// A device applied a document.
    pub(super) fn config_applied(&mut self, device: &str, mut report: ConfigReport, now: Now) {
        // What a device reports is kept per device: bounded, as a document is.
        report.errors.truncate(MAX_REPORTED);
        for (k, e) in &mut report.errors {
            fleetmq_net::text::truncate(k, MAX_VALUE);
            fleetmq_net::text::truncate(e, MAX_VALUE);
        }
        if !report.errors.is_empty() {
            warn!(device, version = report.version, errors = ?report.errors, "the device refused keys of its desired configuration");
        }
        if let Err(e) =
            self.store
                .config_applied(device, report.version, &report.errors, now.wall_ms)
        {
            warn!(device, error = %e, "could not record an applied configuration");
        }
        // It applied a document of its layers as they are now.
        if let Err(e) = self.store.config_fresh(device) {
            warn!(device, error = %e, "could not record an applied configuration");
        }
        // Every front-end's `config status` shows it.
        self.tell_config_applied(device, &report);
    }

    /// An operator's edit: checked, stored, and sent to the devices it
    /// applies to that are online.
    pub(super) fn config_edit(&mut self, edit: ConfigEdit) -> Response {
        if let Err(e) = self.check_edit(&edit) {
            return Response::Error(e);
        }
        match self.apply_edit(&edit, None) {
            Ok(version) => Response::ConfigVersion { version },
            Err(e) => Response::Error(e),
        }
    }

    /// Whether `edit` may be made: its layer, keys, values, and every known
    /// device's document after it.
    pub(super) fn check_edit(&self, edit: &ConfigEdit) -> Result<(), OperatorError> {
        let bad = |m: String| OperatorError::BadRequest(m);
        check_layer(&edit.layer).map_err(bad)?;
        if edit.set.is_empty() && edit.unset.is_empty() {
            return Err(bad("nothing to set or unset".into()));
        }
        for key in edit.set.iter().map(|(k, _)| k).chain(&edit.unset) {
            check_key(key).map_err(bad)?;
        }
        if let Some((k, _)) = edit.set.iter().find(|(_, v)| v.len() > MAX_VALUE) {
            return Err(bad(format!("the value of {k} is over {MAX_VALUE} bytes")));
        }
        self.check_documents(edit)
    }

    /// Stores a checked edit (as version `at`, on a front-end) and queues
    /// the documents of the online devices it applies to.
    pub(super) fn apply_edit(
        &mut self,
        edit: &ConfigEdit,
        at: Option<u64>,
    ) -> Result<u64, OperatorError> {
        let version = self
            .store
            .config_edit_at(&edit.layer, &edit.set, &edit.unset, edit.if_version, at)
            .map_err(|e| match e {
                EditError::Store(e) => OperatorError::Storage(e.to_string()),
                e => OperatorError::BadRequest(e.to_string()),
            })?;
        info!(layer = %edit.layer, version, set = edit.set.len(), unset = edit.unset.len(), "desired configuration changed");
        let online: Vec<(String, Vec<String>)> = match self.store.devices(Facts::Skip) {
            Ok(d) => d
                .into_iter()
                .filter(|d| self.presence.is_online(&d.id) && self.offers.contains_key(&d.id))
                .filter(|d| layers(&d.id, &d.groups).contains(&edit.layer))
                .map(|d| (d.id, d.groups))
                .collect(),
            Err(e) => {
                warn!(error = %e, "could not list devices to send the configuration to");
                Vec::new()
            }
        };
        // Sent a few hundred a tick: a fleet-wide edit does not stall the
        // loop, or queue every device's document at once.
        self.config_outbox
            .extend(online.into_iter().map(|(d, g)| (d, g, version - 1)));
        self.send_config_outbox();
        Ok(version)
    }

    /// Sends the next documents an edit made due (on each tick).
    pub(super) fn send_config_outbox(&mut self) {
        for _ in 0..CONFIG_SENDS_PER_TICK {
            let Some((device, groups, applied)) = self.config_outbox.pop_front() else {
                return;
            };
            if self.presence.is_online(&device) {
                self.send_config(&device, &groups, applied, false);
            }
        }
    }

    /// Refuses an edit that would make any known device's merged document
    /// larger than [`MAX_LAYER_BYTES`] (keys and values).
    fn check_documents(&self, edit: &ConfigEdit) -> Result<(), OperatorError> {
        let storage = |e: crate::store::StoreError| OperatorError::Storage(e.to_string());
        let all = self.store.config_all().map_err(storage)?;
        for d in self.store.devices(Facts::Skip).map_err(storage)? {
            let names = layers(&d.id, &d.groups);
            let Some(at) = names.iter().position(|l| *l == edit.layer) else {
                continue;
            };
            let rank = |k: &LayerKey| names.iter().position(|l| *l == k.layer).unwrap_or(0);
            let mut keys = keys_of(&all, &names);
            keys.retain(|k| {
                k.layer != edit.layer
                    || !(edit.unset.contains(&k.key) || edit.set.iter().any(|(s, _)| *s == k.key))
            });
            // The edited layer's new keys go where the layer stands.
            let split = keys.iter().position(|k| rank(k) > at).unwrap_or(keys.len());
            let edited = edit.set.iter().map(|(key, value)| LayerKey {
                layer: edit.layer.clone(),
                key: key.clone(),
                value: Some(value.clone()),
                version: 0,
            });
            keys.splice(split..split, edited);
            let (_, entries) = merge(&keys);
            let bytes: usize = entries.iter().map(|(k, v, _)| k.len() + v.len()).sum();
            if bytes > MAX_LAYER_BYTES {
                return Err(OperatorError::BadRequest(format!(
                    "{}'s configuration would be {bytes} bytes of keys and values; a device's document holds at most {MAX_LAYER_BYTES}",
                    d.id
                )));
            }
        }
        Ok(())
    }

    /// One device's merged document, each key with its layer.
    pub(super) fn config_show(&self, device: &str) -> Response {
        let groups = match self.groups_of(device) {
            Ok(Some((g, _))) => g,
            Ok(None) => return Response::Error(OperatorError::UnknownDevice(device.into())),
            Err(e) => return Response::Error(e),
        };
        let view = (|| -> Result<ConfigView, OperatorError> {
            let storage = |e: crate::store::StoreError| OperatorError::Storage(e.to_string());
            let (desired_version, entries) = self.desired_for(device, &groups)?;
            let (applied_version, errors) =
                self.store.config_applied_by(device).map_err(storage)?;
            Ok(ConfigView {
                device: device.into(),
                version: self.store.config_version().map_err(storage)?,
                desired_version,
                applied_version,
                entries,
                errors,
            })
        })();
        match view {
            Ok(v) => Response::ConfigShow(v),
            Err(e) => Response::Error(e),
        }
    }

    /// Every known device's desired and applied versions.
    pub(super) fn config_status(&self) -> Response {
        let status = (|| -> Result<Vec<ConfigState>, OperatorError> {
            let storage = |e: crate::store::StoreError| OperatorError::Storage(e.to_string());
            let all = self.store.config_all().map_err(storage)?;
            // One read for the fleet, not one a device, on the hub loop.
            let mut applied = self.store.config_applied_all().map_err(storage)?;
            let mut out = Vec::new();
            for d in self.store.devices(Facts::Skip).map_err(storage)? {
                let (desired_version, _) = merge(&keys_of(&all, &layers(&d.id, &d.groups)));
                let (applied_version, errors) = applied.remove(&d.id).unwrap_or_default();
                out.push(ConfigState {
                    device: d.id,
                    groups: d.groups,
                    desired_version,
                    applied_version,
                    errors,
                });
            }
            Ok(out)
        })();
        match status {
            Ok(s) => Response::ConfigStatus(s),
            Err(e) => Response::Error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(layer: &str, k: &str, v: Option<&str>, version: u64) -> LayerKey {
        LayerKey {
            layer: layer.into(),
            key: k.into(),
            value: v.map(String::from),
            version,
        }
    }

    #[test]
    fn later_layers_win_and_an_unset_key_falls_back_but_still_counts() {
        assert_eq!(
            layers("pi-1", &["south".into(), "north".into()]),
            ["fleet", "group:north", "group:south", "device:pi-1"]
        );
        let keys = [
            key("fleet", "host.interval_ms", Some("10000"), 1),
            key("fleet", "app.mode", Some("eco"), 2),
            key("group:north", "host.interval_ms", Some("5000"), 3),
            key("device:pi-1", "app.mode", None, 7),
        ];
        let (version, entries) = merge(&keys);
        assert_eq!(version, 7, "taking a key out is a change too");
        assert_eq!(
            entries,
            [
                ("app.mode".into(), "eco".into(), "fleet".into()),
                (
                    "host.interval_ms".into(),
                    "5000".into(),
                    "group:north".into()
                ),
            ]
        );
    }

    #[test]
    fn layers_and_keys_are_checked() {
        assert!(check_layer("fleet").is_ok());
        assert!(check_layer("group:north").is_ok());
        assert!(check_layer("device:pi-1").is_ok());
        assert!(check_layer("group:no rth").is_err());
        assert!(
            check_layer("pi-1")
                .unwrap_err()
                .contains("fleet, group:NAME or device:ID")
        );
        assert!(check_key("app.greeting").is_ok());
        assert!(check_key("App.x").is_err());
        assert!(check_key("a..b").is_err());
    }
}
