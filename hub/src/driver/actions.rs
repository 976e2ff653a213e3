//! Carrying out what the core asked ([`Action`]): sends to devices, to
//! the broadcast, jobs and commands sockets and to operators, reads handed
//! to the readers, messages to the cluster and the webhooks, and reporting
//! back to the core what it needs to know (a command or job that could not
//! be handed out).

use fleetmq_net::send_frames;
use fleetmq_protocol::{OperatorError, Response};
use tracing::{debug, info, warn};

use super::{CLUSTER, Driver, REMOTE, now, readers};
use crate::core::{Action, Carrying, Sent};

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
                Action::Enrol {
                    client,
                    id,
                    device,
                    public_key,
                } => {
                    let result = match &self.watch {
                        Some(list) => enrol_in(list.path(), &device, &public_key),
                        None => Err("this hub has no allow list".to_string()),
                    };
                    // Applied before the answer: the device gets in at
                    // its next handshake, and no longer waits.
                    self.reload_allow_list();
                    self.core.enrolled(&client, id, result);
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

/// Writes an operator's enrolment to the allow list file, as `fleetmq-hub
/// allow` does (the hub applies the file as it applies that): what became
/// of it, in `allow --json`'s words, or why it could not be written.
fn enrol_in(path: &std::path::Path, device: &str, key: &str) -> Result<String, String> {
    use crate::enrolment::Edit;
    let quoted = fleetmq_net::keys::quoted(key);
    match crate::enrolment::allow(path, device, key, None) {
        Ok(edit) => {
            if edit != Edit::AlreadyThere {
                info!(device, public_key = %quoted, file = %path.display(), "an operator enrolled a device");
            }
            Ok(edit.enrolled_word().into())
        }
        Err(e) => Err(format!(
            "could not enrol {device} in {}: {e}",
            path.display()
        )),
    }
}
