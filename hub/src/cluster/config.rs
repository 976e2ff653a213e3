//! The desired configuration across front-ends: every edit, and every
//! device's report of what it applied, is an event on the stream
//! [`CONFIG_STREAM`]. Every front-end (the one the operator asked too)
//! applies the events in the stream's order, an edit at the version of its
//! place in the stream, so all front-ends hold the same layers and
//! versions; each sends documents to the devices it holds.

use fleetmq_protocol::{ConfigEdit, ConfigReport};
use serde::{Deserialize, Serialize};

pub const CONFIG_STREAM: &str = "FLEETMQ_CONFIG";
pub const CONFIG_SUBJECT: &str = "fleetmq.config.events";

/// An event of the configuration stream (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ConfigEvent {
    /// An operator's edit, checked where it was asked (`origin`, which
    /// answers the operator's request `ask` once it has applied it).
    Edit {
        origin: String,
        ask: u64,
        edit: ConfigEdit,
    },
    /// What a device applied, as it reported it to its front-end.
    Applied {
        device: String,
        report: ConfigReport,
        at_ms: u64,
    },
}

impl ConfigEvent {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<ConfigEvent> {
        serde_json::from_slice(bytes).ok()
    }
}
