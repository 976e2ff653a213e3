//! The desired configuration on a front-end (see
//! [`crate::cluster::config`]): an edit is checked here, then put on the
//! cluster's configuration stream; every front-end applies the stream's
//! events in order, an edit at the version of its place in the stream, and
//! the front-end that was asked answers the operator once it has applied
//! it. What a device applied goes on the stream too, so `config status`
//! is the whole fleet's from any front-end.

use fleetmq_protocol::{ConfigEdit, ConfigReport, OperatorError, Response};
use tracing::warn;

use super::{Action, Core, Now};
use crate::cluster::ToCluster;
use crate::cluster::config::ConfigEvent;

/// The store's mark of the configuration events applied.
pub const CONFIG_MARK: &str = "config_events";

impl Core {
    /// An operator's edit at a front-end: checked here, then applied by
    /// every front-end in the stream's order; answered then.
    pub(super) fn config_edit_in_cluster(
        &mut self,
        client: &[u8],
        request_id: u64,
        edit: ConfigEdit,
    ) -> Result<(), OperatorError> {
        self.check_edit(&edit)?;
        let ask = (self.pending_edits).hold("configuration edits", client, request_id, ())?;
        let event = ConfigEvent::Edit {
            origin: self.cluster.name().to_string(),
            ask,
            edit,
        };
        self.out.push_back(Action::Cluster(ToCluster::Config {
            event: event.encode(),
        }));
        Ok(())
    }

    /// A device's report, for every front-end (front-ends only).
    pub(super) fn tell_config_applied(&mut self, device: &str, report: &ConfigReport) {
        if !self.is_front_end() {
            return;
        }
        let event = ConfigEvent::Applied {
            device: device.to_string(),
            report: report.clone(),
            at_ms: self.wall_ms,
        };
        self.tell_cluster(ToCluster::Config {
            event: event.encode(),
        });
    }

    /// Configuration events from the cluster, in the stream's order: (its
    /// sequence, the event).
    pub fn config_events(&mut self, events: &[(u64, Vec<u8>)], last: u64, now: Now) {
        for (seq, bytes) in events {
            let Some(event) = ConfigEvent::decode(bytes) else {
                warn!(seq, "a configuration event could not be read; skipped");
                continue;
            };
            match event {
                ConfigEvent::Edit { origin, ask, edit } => {
                    let applied = self.apply_edit(&edit, Some(*seq));
                    if let Err(e) = &applied {
                        warn!(seq, error = %e, "a configuration edit from the cluster was not applied (every front-end decides the same)");
                    }
                    if origin == self.cluster.name()
                        && let Some(asked) = self.pending_edits.take(ask)
                    {
                        let response = match applied {
                            Ok(version) => Response::ConfigVersion { version },
                            Err(e) => Response::Error(e),
                        };
                        self.answer(&asked.client, asked.request_id, response);
                    }
                }
                ConfigEvent::Applied {
                    device,
                    report,
                    at_ms,
                } => {
                    if let Err(e) =
                        self.store
                            .config_applied(&device, report.version, &report.errors, at_ms)
                    {
                        self.store_failed("recording an applied configuration", &e);
                    }
                }
            }
        }
        if let Err(e) = self.store.set_mark(CONFIG_MARK, last) {
            self.store_failed("keeping the place in the configuration events", &e);
        }
        let _ = now;
    }
}
