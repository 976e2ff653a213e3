//! Forgetting a decommissioned device: once it is offline and, on a hub
//! with an allow list, revoked, `fleetmq-hub forget` takes it out of the
//! device list, `/metrics`, the page, alerts and what a group or the fleet
//! reaches, and calls off the work waiting for it. The store keeps its row
//! (and so its batch numbers) marked forgotten; a message from it later
//! brings it back.
//!
//! On front-ends over NATS the device is marked forgotten in the cluster's
//! holders bucket, which every front-end watches: each forgets it in its
//! own store (a front-end that joins later too, from the bucket), and the
//! device's next connection, wherever it goes, writes a holder that every
//! front-end remembers it by.

use fleetmq_protocol::{OperatorError, Response, validate_device_id};

use super::{Core, Now};
use crate::cluster::{Holder, ToCluster};

impl Core {
    pub(super) fn forget(&mut self, device: String, now: Now) -> Response {
        if let Err(why) = self.may_forget(&device) {
            return Response::Error(OperatorError::BadRequest(why));
        }
        match self.store.forget_device(&device, now.wall_ms) {
            Ok(Some((runs, shares))) => {
                self.forgotten_here(&device);
                tracing::info!(%device, runs, shares, "device forgotten by an operator");
                Response::Forgotten { runs, shares }
            }
            Ok(None) => Response::Error(OperatorError::UnknownDevice(device)),
            Err(e) => Response::Error(OperatorError::Storage(e.to_string())),
        }
    }

    /// Forgetting at a front-end: checked here, then marked in the
    /// cluster's holders bucket; answered once it is ([`Core::forgot`]),
    /// with what waited for the device here.
    pub(super) fn forget_in_cluster(
        &mut self,
        client: &[u8],
        request_id: u64,
        device: String,
    ) -> Result<(), OperatorError> {
        self.may_forget(&device)
            .map_err(OperatorError::BadRequest)?;
        let storage = |e: crate::store::StoreError| OperatorError::Storage(e.to_string());
        let known_here = self.store.device_known(&device).map_err(storage)?;
        let held = self.cluster_holder(&device);
        if !known_here && held.is_none_or(Holder::forgotten) {
            return Err(OperatorError::UnknownDevice(device));
        }
        self.every_front_end_applies("forget", "forgetting a device")?;
        let counts = self.store.forget_counts(&device).map_err(storage)?;
        let ask =
            (self.pending_forgets).hold("devices being forgotten", client, request_id, counts)?;
        self.tell_cluster(ToCluster::Forget { device, ask });
        Ok(())
    }

    /// The cluster's word on [`ToCluster::Forget`] `ask`: with the holder
    /// written, `device` is forgotten here at once (the others hear it
    /// from the bucket) and the operator is answered.
    pub fn forgot(&mut self, ask: u64, device: &str, outcome: Result<Holder, String>) {
        let asked = self.pending_forgets.take(ask);
        let response = match outcome {
            Ok(holder) => {
                self.holder_changed(device, Some(holder));
                let (runs, shares) = asked.as_ref().map_or((0, 0), |a| a.with);
                tracing::info!(%device, runs, shares, "device forgotten by an operator, at every front-end");
                Response::Forgotten { runs, shares }
            }
            Err(why) => Response::Error(OperatorError::BadRequest(why)),
        };
        if let Some(a) = asked {
            self.answer(&a.client, a.request_id, response);
        }
    }

    /// The cluster says `device` was forgotten at `at_ms` (at this
    /// front-end or another): forgotten in this store too.
    pub(super) fn forget_from_cluster(&mut self, device: &str, at_ms: u64) {
        match self.store.forget_from_cluster(device, at_ms) {
            Ok(()) => self.forgotten_here(device),
            Err(e) => self.store_failed("forgetting a device the cluster forgot", &e),
        }
    }

    /// What the hub holds of a forgotten device in memory goes.
    fn forgotten_here(&mut self, device: &str) {
        self.latest.forget(device);
        self.clocks.forget(device);
        self.alerts.forget(device);
        self.routes.forget(device);
    }

    /// Why `device` may not be forgotten now, if it may not.
    fn may_forget(&self, device: &str) -> Result<(), String> {
        validate_device_id(device).map_err(|e| e.to_string())?;
        let secure = self.admission.secure();
        if secure && !self.admission.is_revoked(device) {
            return Err(format!(
                "{device} still has a key on the allow list: revoke it first \
                 (`fleetmq-hub revoke {device}`), which also cuts it off, then forget it"
            ));
        }
        let at = if self.presence.is_online(device) {
            Some(String::new())
        } else {
            (self.held_by_other(device)).map(|frontend| format!(" at front-end {frontend}"))
        };
        if let Some(at) = at {
            return Err(if secure {
                format!(
                    "{device} is still online{at}: its connections close once its revocation is read; try again in a second"
                )
            } else {
                format!(
                    "{device} is online{at}: a plaintext hub lets any agent in, so stop \
                     its agent first, then forget it"
                )
            });
        }
        Ok(())
    }
}
