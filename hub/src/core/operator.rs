//! Operator requests (from the command line, the HTTP side, scripts): the
//! reads are answered from the store and the core's state; the requests
//! that act go to their flow (commands, jobs, broadcasts).

use fleetmq_protocol::{
    Announcement, DeviceInfo, HubStats, OperatorError, OperatorFrame, OperatorRequest, Request,
    Response, Target,
};

use super::commands::Ask;
use super::{Core, Now};
use crate::store::{Facts, StoreError};

/// Who sent an operator request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    /// The plaintext operator socket on this machine: may do anything.
    Local,
    /// The CURVE operator socket, with the ZAP user id of the connection.
    Remote(Option<&'a str>),
    /// Another front-end, passing on a request its operator made there
    /// (checked, and kept in its audit trail, there).
    Cluster,
}

impl Core {
    /// One message on an operator socket: `[client][][frame]`.
    pub fn operator(&mut self, frames: &[Vec<u8>], caller: Caller<'_>, now: Now) {
        let [client, empty, frame] = frames else {
            return self.dropped("operator", "request without the REQ envelope");
        };
        if !empty.is_empty() {
            return self.dropped("operator", "request without the REQ envelope");
        }
        match OperatorFrame::decode(frame) {
            Ok(OperatorFrame::Request(req)) => {
                let allowed = permitted(caller, &req.request);
                self.audit(client, caller, req.id, &req.request, allowed.is_ok(), now);
                if let Err(why) = allowed {
                    let e = OperatorError::Forbidden(why);
                    return self.answer(client, req.id, Response::Error(e));
                }
                if self.forward(client, frame, &req.request) {
                    return;
                }
                self.operator_request(client, req, now)
            }
            Err(e) => {
                self.dropped("operator", &e);
                let id = OperatorFrame::request_id(frame).unwrap_or(0);
                let e = OperatorError::BadRequest(e.to_string());
                self.answer(client, id, Response::Error(e));
            }
        }
    }

    fn operator_request(&mut self, client: &[u8], req: OperatorRequest, now: Now) {
        if self.retried(client, req.id) {
            return;
        }
        if super::reads::off_loop(&req.request) {
            return self.read_off_loop(client, req.id, req.request);
        }
        let storage = |e: StoreError| Response::Error(OperatorError::Storage(e.to_string()));
        let response = match req.request {
            Request::Devices => self.devices().unwrap_or_else(storage),
            Request::Command {
                device,
                command,
                timeout_ms,
            } => {
                let ask = Ask {
                    device,
                    command,
                    timeout_ms,
                    queue_ms: 0,
                };
                return self.command_request(client, req.id, ask, now);
            }
            Request::QueuedCommand {
                device,
                command,
                timeout_ms,
                queue_ms,
            } => {
                let ask = Ask {
                    device,
                    command,
                    timeout_ms,
                    queue_ms,
                };
                return self.command_request(client, req.id, ask, now);
            }
            Request::SubmitJob(job) if self.is_front_end() => {
                match self.submit_to_cluster(client, req.id, job, now) {
                    Ok(()) => return,
                    Err(e) => Response::Error(e),
                }
            }
            Request::ConfigEdit(edit) if self.is_front_end() => {
                match self.config_edit_in_cluster(client, req.id, edit) {
                    Ok(()) => return,
                    Err(e) => Response::Error(e),
                }
            }
            Request::SubmitJob(job) => match self.submit_job(job, now) {
                Ok(id) => {
                    self.answer(client, req.id, Response::JobSubmitted { id });
                    // A new job goes out now rather than on the next tick.
                    return self.dispatch_jobs(now);
                }
                Err(e) => Response::Error(e),
            },
            Request::CancelJob { id } if self.is_front_end() => {
                match self.cancel_in_cluster(client, req.id, id, now) {
                    Ok(()) => return,
                    Err(e) => Response::Error(e),
                }
            }
            Request::CancelJob { id } => match self.store.cancel_job(id, now.wall_ms) {
                Ok(Some((stopped, running))) => {
                    self.waiting.remove(&id);
                    tracing::info!(job = id, stopped, running, "job cancelled by an operator");
                    Response::JobCancelled { stopped, running }
                }
                Ok(None) => Response::Error(OperatorError::NotFound(format!("job {id}"))),
                Err(e) => storage(e),
            },
            Request::CancelCommand { id } => match self.store.fleet_cancel(id, now.wall_ms) {
                Ok(Some((stopped, sent))) => {
                    tracing::info!(
                        command = id,
                        stopped,
                        sent,
                        "command cancelled by an operator"
                    );
                    Response::CommandCancelled { stopped, sent }
                }
                Ok(None) => Response::Error(OperatorError::NotFound(format!("fleet command {id}"))),
                Err(e) => storage(e),
            },
            Request::Job { id } => match self.store.job(id) {
                Ok(Some(j)) => Response::Job(j),
                Ok(None) => Response::Error(OperatorError::NotFound(format!("job {id}"))),
                Err(e) => storage(e),
            },
            Request::Broadcast { target, text } => match target.topic() {
                Ok(topic) => {
                    let device = match &target {
                        Target::Device(d) => Some(d.clone()),
                        _ => None,
                    };
                    let msg = Announcement {
                        ts_ms: now.wall_ms,
                        target,
                        text,
                    };
                    match device {
                        // Only on the device's own connection, which holds
                        // its key (a plaintext hub's PUB topics are anyone's).
                        Some(d) if self.routes.route(&d).is_none() => {
                            Response::Error(self.not_here(d))
                        }
                        Some(d) => {
                            self.send_down(&d, msg.into());
                            Response::Broadcast { topic }
                        }
                        None => {
                            self.publish(&topic, msg.clone().into());
                            // Every front-end's agents hear it once.
                            if self.is_front_end()
                                && let Ok(frame) = fleetmq_protocol::Broadcast::from(msg).encode()
                            {
                                let topic = topic.clone();
                                self.tell_cluster(crate::cluster::ToCluster::Broadcast {
                                    topic,
                                    frame,
                                });
                            }
                            Response::Broadcast { topic }
                        }
                    }
                }
                Err(e) => Response::Error(OperatorError::BadRequest(e.to_string())),
            },
            Request::Forget { device } if self.is_front_end() => {
                match self.forget_in_cluster(client, req.id, device) {
                    Ok(()) => return,
                    Err(e) => Response::Error(e),
                }
            }
            Request::Forget { device } => self.forget(device, now),
            Request::FleetCommand(fc) => self.fleet_command(fc, now),
            Request::FleetAnswers { id } => self.fleet_answers(id),
            Request::FleetCommands { limit } => self.fleet_commands(limit),
            Request::ConfigEdit(edit) => self.config_edit(edit),
            Request::ConfigShow { device } => self.config_show(&device),
            Request::ConfigStatus => self.config_status(),
            Request::Alerts => Response::Alerts(self.alert_list(now)),
            Request::PresenceLog { device, limit } => self
                .store
                .presence_log(&device, limit)
                .map(Response::PresenceLog)
                .unwrap_or_else(storage),
            Request::Pending => Response::Pending(self.pending_keys()),
            Request::Audit { limit } => self
                .store
                .audit(limit)
                .map(Response::Audit)
                .unwrap_or_else(storage),
            Request::Enrol(e) => match self.enrol(client, req.id, e) {
                Ok(()) => return,
                Err(e) => Response::Error(e),
            },
            Request::Revoke(r) => match self.revoke(client, req.id, r) {
                Ok(()) => return,
                Err(e) => Response::Error(e),
            },
            Request::Stats => self.stats(now).unwrap_or_else(storage),
            Request::Latest => Response::Latest(self.latest.values()),
            Request::LatestOf { device, names } => {
                Response::Latest(self.latest.matching(device.as_deref(), &names))
            }
            // Answered off the loop, above.
            read => super::reads::answer(&mut self.store, read),
        };
        self.answer(client, req.id, response);
    }

    fn devices(&self) -> Result<Response, StoreError> {
        self.fleet_devices(Facts::Read).map(Response::Devices)
    }

    /// Every device known, as it stands now (on a front-end: across the
    /// cluster); with their facts if asked to [`Facts::Read`] them.
    pub(super) fn fleet_devices(&self, facts: Facts) -> Result<Vec<DeviceInfo>, StoreError> {
        let mut devices: Vec<DeviceInfo> = self.store.devices(facts)?;
        for d in &mut devices {
            d.revoked = self.admission.is_revoked(&d.id);
            d.online = self.presence.is_online(&d.id);
            // An agent on one connection hears broadcasts on it.
            d.listening = self.presence.is_listening(&d.id)
                || (d.online && self.routes.carried(&d.id).is_some());
            if let Some(c) = self.routes.conflicts(&d.id) {
                d.conflicts = c.count;
                d.conflict_address = c.address.clone();
            }
            if let Some((since, last)) = self.presence.times(&d.id) {
                d.since_ms = since;
                d.last_seen_ms = d.last_seen_ms.max(last);
            }
            if d.online && self.is_front_end() {
                d.front_end = self.cluster.name().to_string();
            }
            d.clock_offset_ms = self.clocks.offset(&d.id);
            if let Some(address) = self.routes.address(&d.id) {
                d.address = address.to_string();
            }
        }
        if !self.is_front_end() {
            return Ok(devices);
        }
        // A front-end shows every device the cluster remembers: online at
        // another front-end, or held there once (one revoked or gone quiet
        // before this store had a batch of it shows, offline).
        let mut at: std::collections::HashMap<String, usize> = (devices.iter().enumerate())
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        for (id, h) in self.remembered() {
            let i = *at.entry(id.clone()).or_insert_with(|| {
                devices.push(DeviceInfo {
                    id: id.clone(),
                    since_ms: h.since_ms,
                    last_seen_ms: h.since_ms,
                    revoked: self.admission.is_revoked(id),
                    ..crate::store::unknown_device()
                });
                devices.len() - 1
            });
            let d = &mut devices[i];
            // What it said in its last Hello at another front-end (this
            // store has only the Hellos said here, if any).
            if !d.online && !h.version.is_empty() {
                d.agent_version.clone_from(&h.version);
                d.arch.clone_from(&h.arch);
            }
            if d.groups.is_empty() {
                d.groups.clone_from(&h.groups);
            }
            // What it is: its holder's facts when another front-end holds
            // it (the newest), else this store's, else its holder's.
            let elsewhere = self.held_by_other(id).is_some();
            if facts == Facts::Read && !h.facts.is_empty() && (elsewhere || d.facts.is_empty()) {
                d.facts.clone_from(&h.facts);
            }
            if elsewhere {
                d.online = true;
                d.since_ms = h.since_ms;
                d.front_end = h.frontend.clone();
            } else if !d.online && !h.online {
                // When it went offline: its last sign of life, for a
                // front-end that never held it.
                d.last_seen_ms = d.last_seen_ms.max(h.since_ms);
            }
        }
        // By id, as a single hub lists them.
        devices.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(devices)
    }

    fn stats(&self, now: Now) -> Result<Response, StoreError> {
        let devices_known = if self.is_front_end() {
            self.fleet_devices(Facts::Skip)?.len() as u32
        } else {
            self.store.device_count()?
        };
        let c = &self.counters;
        let secure = self.admission.secure();
        Ok(Response::Stats(HubStats {
            hub_version: env!("CARGO_PKG_VERSION").into(),
            uptime_ms: now.mono_ms.saturating_sub(self.started.mono_ms),
            devices_online: (self.presence.online_count() + self.online_elsewhere().count()) as u32,
            devices_known,
            batches_stored: c.batches_stored,
            batches_duplicate: c.batches_duplicate,
            samples_stored: c.samples_stored,
            frames_dropped: c.frames_dropped,
            jobs_dispatched: c.jobs_dispatched,
            results_received: c.results_received,
            commands_sent: c.commands_sent,
            commands_timed_out: c.commands_timed_out,
            security: if secure { "curve" } else { "plaintext" }.into(),
            devices_allowed: self.admission.keys() as u32,
            handshakes_refused: c.handshakes_refused,
            handshakes_failed: c.handshakes_failed,
            impersonations: c.impersonations,
            rate_limited: c.rate_limited,
            disconnects: c.disconnects,
            connection_conflicts: c.connection_conflicts,
            batches_renumbered: c.batches_renumbered,
            results_refused: c.results_refused,
            batches_throttled: c.batches_throttled,
            batches_rejected: c.batches_rejected,
            storage_problem: self
                .storage
                .clone()
                .or_else(|| {
                    let why = self.cluster_problem.as_ref()?;
                    Some(format!("the NATS cluster does not take telemetry: {why}"))
                })
                .unwrap_or_default(),
            telemetry_cursor: self.store.telemetry_cursor()?,
            chat_cursor: self.store.chat_cursor()?,
            telemetry_bytes: self.store.telemetry_bytes(),
            pruned_batches: c.pruned.batches,
            pruned_records: c.pruned.records,
            pruned_chat: c.pruned.chat,
            pruned_jobs: c.pruned.jobs,
            pruned_commands: c.pruned.commands,
            front_ends: self.front_end_stats(now),
            messages_undelivered: c.messages_undelivered,
            subscriptions_refused: c.subscriptions_refused,
            log_lines_stored: c.log_lines_stored,
            log_bytes: self.store.log_bytes(),
            keys_pending: self.admission.knocks().len() as u32,
            features: fleetmq_protocol::HUB_FEATURES.map(String::from).to_vec(),
        }))
    }
}

/// Whether `caller` may make `request`: a remote operator by its role.
fn permitted(caller: Caller<'_>, request: &Request) -> Result<(), String> {
    let Caller::Remote(user) = caller else {
        return Ok(());
    };
    match user.and_then(crate::operators::from_user_id) {
        Some((_, role)) if role.may(request) => Ok(()),
        Some((name, _)) => Err(format!(
            "operator {name} has the read role; commands, jobs and broadcasts need admin (in the hub's security.operator_allow_list)"
        )),
        None => Err("this connection is not an enrolled operator's".into()),
    }
}
