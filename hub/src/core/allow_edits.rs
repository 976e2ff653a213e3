//! An operator's edits of the allow list through the operator socket:
//! [`Request::Enrol`] (a device waiting, let in) and [`Request::Revoke`]
//! (a device lost or decommissioned, cut off). The core checks what it can
//! without the file; the driver writes the file as `fleetmq-hub allow` and
//! `revoke` do ([`super::Action::EditAllowList`]), applies it, and reports
//! with [`Core::allow_list_edited`].
//!
//! [`Request::Enrol`]: fleetmq_protocol::Request::Enrol
//! [`Request::Revoke`]: fleetmq_protocol::Request::Revoke

use fleetmq_protocol::{Enrolment, OperatorError, Response, Revocation};

use super::Core;
use crate::enrolment::AllowList;

/// An edit of the allow list file an operator asked for, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum AllowEdit {
    /// Add the line `device public_key`.
    Enrol { device: String, public_key: String },
    /// Take `device`'s line for `public_key` off, or every line of it.
    Revoke {
        device: String,
        public_key: Option<String>,
    },
}

impl Core {
    /// An operator's [`Request::Enrol`], checked: a device id, a key, not
    /// a key enrolled as another device.
    ///
    /// [`Request::Enrol`]: fleetmq_protocol::Request::Enrol
    pub(super) fn enrol(
        &mut self,
        client: &[u8],
        id: u64,
        e: Enrolment,
    ) -> Result<(), OperatorError> {
        let list = self.allow_list_in_force()?;
        fleetmq_protocol::validate_device_id(&e.device).map_err(bad)?;
        fleetmq_net::keys::check(&e.public_key).map_err(|why| bad(format!("public_key: {why}")))?;
        list.taken(&e.device, &e.public_key).map_err(bad)?;
        self.edit_allow_list(
            client,
            id,
            AllowEdit::Enrol {
                device: e.device,
                public_key: e.public_key,
            },
        );
        Ok(())
    }

    /// An operator's [`Request::Revoke`], checked: a device id, and a key
    /// if one is named. Whether the file lists it is the driver's to say.
    ///
    /// [`Request::Revoke`]: fleetmq_protocol::Request::Revoke
    pub(super) fn revoke(
        &mut self,
        client: &[u8],
        id: u64,
        r: Revocation,
    ) -> Result<(), OperatorError> {
        self.allow_list_in_force()?;
        fleetmq_protocol::validate_device_id(&r.device).map_err(bad)?;
        if let Some(key) = &r.public_key {
            fleetmq_net::keys::check(key).map_err(|why| bad(format!("public_key: {why}")))?;
        }
        self.edit_allow_list(
            client,
            id,
            AllowEdit::Revoke {
                device: r.device,
                public_key: r.public_key,
            },
        );
        Ok(())
    }

    /// The driver wrote (or could not write) an
    /// [`super::Action::EditAllowList`], and applied the file: answers the
    /// operator.
    pub fn allow_list_edited(
        &mut self,
        client: &[u8],
        id: u64,
        answer: Result<Response, OperatorError>,
    ) {
        self.answer(client, id, answer.unwrap_or_else(Response::Error));
    }

    /// The allow list in force, which a plaintext hub has not.
    fn allow_list_in_force(&self) -> Result<&AllowList, OperatorError> {
        self.admission.list().ok_or_else(|| {
            bad("this hub runs --insecure: it has no allow list, and every device gets in")
        })
    }

    fn edit_allow_list(&mut self, client: &[u8], id: u64, edit: AllowEdit) {
        self.out.push_back(super::Action::EditAllowList {
            client: client.to_vec(),
            id,
            edit,
        });
    }
}

fn bad(why: impl std::fmt::Display) -> OperatorError {
    OperatorError::BadRequest(why.to_string())
}
