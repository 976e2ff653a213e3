//! One command for many devices: each member's share is kept in the store
//! and sent, through the one-device command path (`commands.rs`), when its
//! device is online; its answer, timeout or failure is stored for the
//! operator to read ([`fleetmq_protocol::Request::FleetAnswers`]) as it comes. A share that
//! waits past the time to live expires; one sent before a hub restart
//! fails (its answer can no longer arrive, and a command may have acted,
//! so it is not sent twice).
//!
//! The command path answers an operator client; a share's "client" is the
//! hub itself (`commands::INTERNAL_CLIENT`) and its request id its row, and
//! its answer waits there until `Core::fleet_answers_in` stores it.

use fleetmq_protocol::{FleetAnswer, FleetCommand, OperatorError, Response};
use tracing::{info, warn};

use super::commands::{Ask, INTERNAL_CLIENT};
use super::{Core, Now};

impl Core {
    /// An operator's command for several devices: kept, answered with its
    /// id and members, and sent at once to those online.
    pub(super) fn fleet_command(&mut self, fc: FleetCommand, now: Now) -> Response {
        let (target, members) = match self.members(&super::aim::Aim::of_command(&fc)) {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Response::Error(OperatorError::BadRequest(
                    "a fleet command needs devices, groups or all".into(),
                ));
            }
            Err(e) => return Response::Error(e),
        };
        let ttl = if fc.ttl_ms == 0 {
            self.config.jobs.ttl_ms
        } else {
            fc.ttl_ms
        };
        let expires = now.wall_ms.saturating_add(u64::from(ttl));
        match self.store.fleet_submit(
            &fc.command,
            &target,
            &members,
            fc.timeout_ms,
            expires,
            now.wall_ms,
        ) {
            Ok(id) => {
                info!(
                    fleet_command = id,
                    target,
                    devices = members.len(),
                    "fleet command kept"
                );
                self.send_fleet(now);
                Response::FleetCommandQueued {
                    id,
                    devices: members,
                }
            }
            Err(e) => Response::Error(OperatorError::Storage(e.to_string())),
        }
    }

    /// Where fleet command `id` stands on each device.
    pub(super) fn fleet_answers(&mut self, id: u64) -> Response {
        self.fleet_answers_in();
        match self.store.fleet_answers(id) {
            Ok(Some(mut answers)) => {
                for a in &mut answers {
                    if a.state == "waiting" {
                        let elsewhere = self.held_by_other(&a.device).is_some();
                        a.state = if self.presence.is_online(&a.device) || elsewhere {
                            "sending"
                        } else {
                            "offline"
                        }
                        .into();
                    }
                }
                Response::FleetAnswers(answers)
            }
            Ok(None) => Response::Error(OperatorError::NotFound(format!("fleet command {id}"))),
            Err(e) => Response::Error(OperatorError::Storage(e.to_string())),
        }
    }

    /// The newest commands for many devices, with their shares counted.
    pub(super) fn fleet_commands(&mut self, limit: u32) -> Response {
        self.fleet_answers_in();
        match self.store.fleet_commands(limit) {
            Ok(list) => Response::FleetCommands(list),
            Err(e) => Response::Error(OperatorError::Storage(e.to_string())),
        }
    }

    /// Sends the waiting shares whose devices are online; ends those past
    /// their time to live (and, the first time, those a restart cut off).
    pub(super) fn send_fleet(&mut self, now: Now) {
        let first = !self.fleet_started;
        match self.store.fleet_expire(now.wall_ms, first) {
            Ok(0) => {}
            Ok(n) => info!(shares = n, "fleet command shares ended without an answer"),
            Err(e) => return warn!(error = %e, "could not expire fleet commands"),
        }
        self.fleet_started = true;
        let waiting = match self.store.fleet_waiting(now.wall_ms) {
            Ok(w) => w,
            Err(e) => return warn!(error = %e, "could not read fleet commands"),
        };
        for w in waiting {
            let here = self.presence.is_online(&w.device) && self.routes.route(&w.device).is_some();
            if !here && self.held_by_other(&w.device).is_none() {
                continue;
            }
            if let Err(e) = self.store.fleet_mark(w.id, "sent", None, None, now.wall_ms) {
                warn!(error = %e, "could not record a fleet command share");
                continue;
            }
            let ask = Ask {
                device: w.device,
                command: w.command,
                timeout_ms: w.timeout_ms,
                queue_ms: 0,
            };
            if !here {
                // Held by another front-end: asked there.
                if !self.forward_share(w.id, &ask) {
                    let _ = self
                        .store
                        .fleet_mark(w.id, "waiting", None, None, now.wall_ms);
                }
                continue;
            }
            self.command_request(INTERNAL_CLIENT, w.id, ask, now);
        }
        self.fleet_answers_in();
    }

    /// Stores the answers the command path has for shares.
    pub(super) fn fleet_answers_in(&mut self) {
        for (row, response) in self.commands.take_internal() {
            self.fleet_answered(row, response);
        }
    }

    /// How a share ended, from the command path: stored for the operator.
    /// An unreachable device's share waits for it again.
    pub(super) fn fleet_answered(&mut self, row: u64, response: Response) {
        let now = self.wall_ms;
        let marked = match &response {
            Response::Reply { reply, .. } => {
                self.store
                    .fleet_mark(row, "answered", Some(reply), None, now)
            }
            Response::Error(OperatorError::DeviceOffline(_)) => {
                self.store.fleet_mark(row, "waiting", None, None, now)
            }
            Response::Error(e @ OperatorError::TimedOut { .. }) => {
                let why = e.to_string();
                self.store
                    .fleet_mark(row, "timed_out", None, Some(&why), now)
            }
            Response::Error(e) => {
                let why = e.to_string();
                self.store.fleet_mark(row, "failed", None, Some(&why), now)
            }
            other => {
                let why = format!("unexpected answer {other:?}");
                self.store.fleet_mark(row, "failed", None, Some(&why), now)
            }
        };
        if let Err(e) = marked {
            warn!(error = %e, "could not record a fleet command answer");
        }
    }
}

/// Whether a fleet command share has ended (no more will happen to it).
pub fn ended(a: &FleetAnswer) -> bool {
    !matches!(a.state.as_str(), "offline" | "sending" | "sent" | "waiting")
}
