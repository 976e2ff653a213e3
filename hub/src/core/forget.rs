//! Forgetting a decommissioned device: once it is offline and, on a hub
//! with an allow list, revoked, `fleetmq-hub forget` takes it out of the
//! device list, `/metrics`, the page, alerts and what a group or the fleet
//! reaches, and calls off the work waiting for it. The store keeps its row
//! (and so its batch numbers) marked forgotten; a message from it later
//! brings it back.

use fleetmq_protocol::{OperatorError, Response, validate_device_id};

use super::{Core, Now};

impl Core {
    pub(super) fn forget(&mut self, device: String, now: Now) -> Response {
        if let Err(why) = self.may_forget(&device) {
            return Response::Error(OperatorError::BadRequest(why));
        }
        match self.store.forget_device(&device, now.wall_ms) {
            Ok(Some((runs, shares))) => {
                self.latest.forget(&device);
                self.routes.forget(&device);
                tracing::info!(%device, runs, shares, "device forgotten by an operator");
                Response::Forgotten { runs, shares }
            }
            Ok(None) => Response::Error(OperatorError::UnknownDevice(device)),
            Err(e) => Response::Error(OperatorError::Storage(e.to_string())),
        }
    }

    /// Why `device` may not be forgotten now, if it may not.
    fn may_forget(&self, device: &str) -> Result<(), String> {
        validate_device_id(device).map_err(|e| e.to_string())?;
        if self.is_front_end() {
            return Err("a front-end over NATS cannot forget a device yet: every \
                 front-end's store holds the devices, filled from the cluster's stream"
                .into());
        }
        let secure = self.admission.secure();
        if secure && !self.admission.is_revoked(device) {
            return Err(format!(
                "{device} still has a key on the allow list: revoke it first \
                 (`fleetmq-hub revoke {device}`), which also cuts it off, then forget it"
            ));
        }
        if self.presence.is_online(device) {
            return Err(if secure {
                format!(
                    "{device} is still online: its connections close once its revocation is read; try again in a second"
                )
            } else {
                format!(
                    "{device} is online: a plaintext hub lets any agent in, so stop \
                     its agent first, then forget it"
                )
            });
        }
        Ok(())
    }
}
