//! Carrying out what the core asked ([`Action`]): sends to devices, to
//! the broadcast, jobs and commands sockets and to operators, reads handed
//! to the readers, messages to the cluster and the webhooks, and reporting
//! back to the core what it needs to know (a command or job that could not
//! be handed out).

use fleetmq_net::send_frames;
use fleetmq_protocol::{OperatorError, Response};
use tracing::{debug, info, warn};

use super::{CLUSTER, Driver, REMOTE, now, readers};
use crate::core::{Action, AllowEdit, Carrying, Sent};

impl Driver {
    /// An answer to the operator client `client` (tagged with the socket it
    /// came on, or the cluster).
    pub(super) fn send_operator(&mut self, client: &[u8], frame: &[u8]) {
        let (socket, client) = match client.split_first() {
            Some((&REMOTE, id)) => match &self.remote {
                Some((s, _)) => (s, id),
                None => return,
            },
            Some((&CLUSTER, id)) => {
                let id = <[u8; 8]>::try_from(id).map_or(0, u64::from_be_bytes);
                let frame = frame.to_vec();
                if let Some(fe) = &self.cluster {
                    fe.link
                        .send(crate::cluster::ToCluster::Answer { id, frame });
                }
                return;
            }
            Some((_, id)) => (&self.operator, id),
            None => return,
        };
        if let Err(e) = send_frames(socket, &[client, b"", frame]) {
            debug!(error = %e, "operator went away before its answer");
        }
    }

    /// Does what the core asked, reporting back what it needs to know.
    pub(super) fn carry_out(&mut self) {
        // After one job no agent would take, the rest of the round waits.
        let mut jobs_blocked = false;
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Device { route, frame, what } => {
                    match send_frames(&self.upstream, &[&route, &frame]) {
                        Ok(true) if self.core.undelivering() => self.core.delivered(&route),
                        Ok(true) => {}
                        // The device's queue is full: it is not reading.
                        Ok(false) => self.core.undelivered(&route, what, now()),
                        // EHOSTUNREACH: the peer is gone; its agent resends
                        // what was not acked.
                        Err(e) => {
                            let route = String::from_utf8_lossy(&route);
                            debug!(%route, error = %e, "could not answer a device");
                        }
                    }
                }
                Action::Publish { topic, frame } => {
                    if let Err(e) = send_frames(&self.broadcast, &[topic.as_bytes(), &frame]) {
                        warn!(topic, error = %e, "could not publish");
                    }
                }
                Action::Command {
                    corr,
                    route,
                    frame,
                    carried,
                    ..
                } => {
                    let sent = if carried {
                        send_frames(&self.upstream, &[&route, &frame])
                    } else {
                        send_frames(&self.commands, &[&route, b"", &frame])
                    };
                    let sent = match sent {
                        Ok(true) => Sent::Yes,
                        // The device's queue is full: it is not reading.
                        Ok(false) => {
                            if carried {
                                let what = Carrying::Other("Command");
                                self.core.undelivered(&route, what, now());
                            }
                            Sent::NotReading
                        }
                        // EHOSTUNREACH: the device's command socket is not connected.
                        Err(zmq::Error::EHOSTUNREACH) => Sent::Unreachable,
                        Err(e) => Sent::Failed(e.to_string()),
                    };
                    self.core.command_sent(corr, sent, now());
                }
                Action::Job {
                    id,
                    attempt,
                    token,
                    lease_ms,
                    frame,
                } => {
                    if jobs_blocked {
                        continue;
                    }
                    match send_frames(&self.jobs, &[&frame]) {
                        Ok(true) => self.core.job_sent(id, attempt, token, lease_ms, now()),
                        // No agent is connected, or every pipe is full: next tick.
                        Ok(false) => jobs_blocked = true,
                        Err(e) => {
                            warn!(error = %e, "could not hand out a job");
                            jobs_blocked = true;
                        }
                    }
                }
                Action::Operator { client, frame } => self.send_operator(&client, &frame),
                Action::Read { id, request } => {
                    if !self.readers.submit(id, request) {
                        warn!("the readers have stopped; a read is answered with an error");
                        let why = "the hub's readers stopped; restart the hub".to_string();
                        let response = Response::Error(OperatorError::Storage(why));
                        if let Some(frame) = readers::encode(id, response) {
                            self.core.read_done(id, frame);
                        }
                    }
                }
                Action::EditAllowList { client, id, edit } => {
                    let answer = match &self.watch {
                        Some(list) => edit_allow_list(list.path(), edit),
                        None => Err(OperatorError::Storage(
                            "this hub has no allow list file".into(),
                        )),
                    };
                    // Applied before the answer: an enrolled device gets
                    // in at its next handshake, a revoked one is cut off.
                    self.reload_allow_list();
                    self.core.allow_list_edited(&client, id, answer);
                }
                Action::Cluster(msg) => {
                    if !self.cluster.as_ref().is_some_and(|fe| fe.link.send(msg)) {
                        warn!("the cluster link has stopped; restart the hub");
                    }
                }
                Action::Door { open } => self.door(open),
                Action::Alert(notice) => {
                    if let Some(w) = &self.webhooks {
                        w.send(notice);
                    }
                }
                Action::ClusterJob { token, frame } => {
                    let sent = matches!(send_frames(&self.jobs, &[&frame]), Ok(true));
                    self.core.cluster_job_sent(token, sent, now());
                }
                Action::CutDevice { device } => {
                    let cut = self.peers.cut(&device, None);
                    info!(
                        device,
                        connections = cut,
                        "revoked device's connections cut; its next handshake is refused"
                    );
                }
                Action::CutBroadcast { device } => {
                    let cut = self.peers.cut(&device, Some(super::BROADCAST));
                    if cut > 0 {
                        info!(
                            device,
                            "the device's broadcast connection cut; its SUB subscribes again under its new groups"
                        );
                    }
                }
            }
        }
    }
}

/// Writes an operator's edit to the allow list file, as `fleetmq-hub
/// allow` and `revoke` do (the hub applies the file as it applies theirs):
/// the answer, in their `--json` words, or why it could not be done.
fn edit_allow_list(path: &std::path::Path, edit: AllowEdit) -> Result<Response, OperatorError> {
    use crate::enrolment::{self, Edit};
    let file = path.display();
    let failed = |what: &str, e: enrolment::AllowError| {
        OperatorError::Storage(format!("could not {what} in {file}: {e}"))
    };
    match edit {
        AllowEdit::Enrol { device, public_key } => {
            let quoted = fleetmq_net::keys::quoted(&public_key);
            let edit = enrolment::allow(path, &device, &public_key, None)
                .map_err(|e| failed(&format!("enrol {device}"), e))?;
            if edit != Edit::AlreadyThere {
                info!(device, public_key = %quoted, %file, "an operator enrolled a device");
            }
            Ok(Response::Enrolled {
                result: edit.enrolled_word().into(),
            })
        }
        AllowEdit::Revoke { device, public_key } => {
            match enrolment::revoke(path, &device, public_key.as_deref())
                .map_err(|e| failed(&format!("revoke {device}"), e))?
            {
                Edit::Removed(n) => {
                    info!(device, removed_keys = n, %file, "an operator revoked a device");
                    Ok(Response::Revoked {
                        removed_keys: u32::try_from(n).unwrap_or(u32::MAX),
                    })
                }
                _ => {
                    let what = enrolment::revoked_words(&device, public_key.as_deref());
                    let hint = match public_key {
                        Some(_) => "",
                        None => {
                            " (`fleetmq-hub devices --state revoked` lists the devices cut off)"
                        }
                    };
                    Err(OperatorError::NotFound(format!(
                        "{what} is not on the allow list{hint}"
                    )))
                }
            }
        }
    }
}
