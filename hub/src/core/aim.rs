//! Jobs aimed at devices, groups or the whole fleet: one run on each
//! member, handed to that device alone (Downstream `Work` on its telemetry
//! connection), kept in the store until the device is online, within the
//! job's time to live (the zguide's Titanic pattern).
//!
//! ```text
//!   submit --device/--group/--all ─► a run per member, queued
//!   member online, its Offer known ─► takes the kind and program? ─► Work, leased ─► done
//!                                          │ no                           │ lease ran out: queued again
//!                                          └► refused, never sent          (or failed past its attempts)
//!   member away past the time to live ─► failed
//! ```
//!
//! Members are the devices known when the job is submitted: named ones,
//! those whose last Hello named one of the groups, or every device; of
//! them, with filters (`--where model~zero`), those whose facts match. A
//! device says what it takes on in its `Offer` after each Hello; until the
//! hub has heard one (an agent older than this), runs for it wait.

use std::collections::{HashMap, HashSet};

use fleetmq_net::text::shell_word;
use fleetmq_protocol::matching::matches_all;
use fleetmq_protocol::{
    Abilities, Downstream, FleetCommand, Job, JobSpec, JobSubmission, Matcher, OperatorError,
    Outcome, validate_device_id, validate_group,
};
use tracing::{info, warn};

use super::routes::OneConnection;
use super::slots::MAX_JOB_SLOTS;
use super::{Core, Now};
use crate::cluster::jobs::JobEvent;
use crate::store::Facts;

/// Runs handed to one device per round of dispatch.
const PER_DEVICE: u32 = 16;

/// The most an Offer may name: job kinds, programs, bytes in a name.
const MAX_OFFER_KINDS: usize = 16;
const MAX_OFFER_PROGRAMS: usize = 1024;
const MAX_OFFER_NAME: usize = 1024;

/// Whether a device that offered `abilities` takes `spec`; if not, what
/// it does not allow, named as the agent itself names it in a
/// `NotAllowed` (`job kind "exec"`, `program "df"`), so that every
/// refusal reads "... is not in the device's allow list".
pub fn refusal(abilities: &Abilities, spec: &JobSpec) -> Option<String> {
    let kind = match spec {
        JobSpec::Echo { .. } => "echo",
        JobSpec::Exec { .. } => "exec",
    };
    if !abilities.job_kinds.iter().any(|k| k == kind) {
        return Some(format!("job kind {kind:?}"));
    }
    match spec {
        JobSpec::Exec { program, .. } if !abilities.exec_programs.contains(program) => {
            Some(format!("program {program:?}"))
        }
        _ => None,
    }
}

/// What devices said they take on, by device id.
pub type Offers = HashMap<String, Abilities>;

/// Who may take work-queue jobs of one kind and program.
#[derive(Debug)]
pub(super) struct Takers {
    /// Online agents on one connection that take them, with their slots.
    carried: Vec<(String, u32)>,
    /// `None` when every online agent that may pull jobs takes them (an
    /// agent whose Offer is not known, an older one, is taken to), so they
    /// can go on the work queue's socket; else the online pullers that take
    /// them (reachable now), by id, maybe none.
    pullers: Option<Vec<String>>,
}

/// Where one work-queue job goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Taker {
    /// On the work queue's socket, to whichever agent pulls it.
    Queue,
    /// As `Work` to this device; `carried` when it is on one connection
    /// (the job is then in its hands until its result).
    Device { device: String, carried: bool },
    /// Only agents on one connection take it, and their hands are full.
    Busy,
    /// No device online takes it.
    Nobody,
}

impl Core {
    /// Who may take a work-queue job with `spec`, so that no device is
    /// handed a job it would refuse.
    pub(super) fn queue_takers(&self, spec: &JobSpec) -> Takers {
        let mut carried = Vec::new();
        let mut pullers: Vec<String> = Vec::new();
        // Online agents that may pull without having said what they take
        // (older ones), and whether a puller or an agent on one connection
        // would refuse it.
        let (mut unknown, mut puller_refuses, mut carried_refuses) = (false, false, false);
        for device in self.presence.online() {
            let one = self.routes.carried(device);
            match self.offers.get(device) {
                None => unknown |= one.is_none(),
                Some(a) if a.job_kinds.is_empty() => {}
                Some(a) if refusal(a, spec).is_some() => match one {
                    Some(_) => carried_refuses = true,
                    None => puller_refuses = true,
                },
                Some(_) => match one {
                    Some(one) => carried.push((device.to_string(), one.job_slots)),
                    None => pullers.push(device.to_string()),
                },
            }
        }
        carried.sort_unstable();
        // An agent on one connection pulls nothing: its refusal keeps the
        // job off the work queue's socket only when no puller is there.
        let may_pull = unknown || !pullers.is_empty() || !carried_refuses;
        if !puller_refuses && may_pull {
            return Takers {
                carried,
                pullers: None,
            };
        }
        pullers.retain(|d| self.routes.route(d).is_some());
        pullers.sort_unstable();
        Takers {
            carried,
            pullers: Some(pullers),
        }
    }

    /// Where the `turn`-th job for `takers` goes: to an agent on one
    /// connection with room first, then as before to the pullers.
    pub(super) fn queue_taker(&self, takers: &Takers, turn: u64) -> Taker {
        if let Some(device) = self.handed.pick(&takers.carried, turn) {
            return Taker::Device {
                device,
                carried: true,
            };
        }
        match &takers.pullers {
            None => Taker::Queue,
            Some(p) if !p.is_empty() => Taker::Device {
                device: p[(turn % p.len() as u64) as usize].clone(),
                carried: false,
            },
            Some(_) if takers.carried.is_empty() => Taker::Nobody,
            Some(_) => Taker::Busy,
        }
    }

    /// Whether an online agent on one connection has room for a job of
    /// some kind: a front-end then takes one from the cluster's queue.
    pub fn room_for_jobs(&self) -> bool {
        self.presence.online().any(|device| {
            self.routes.carried(device).is_some_and(|one| {
                self.offers
                    .get(device)
                    .is_some_and(|a| !a.job_kinds.is_empty())
                    && self.handed.has_room(device, one.job_slots)
            })
        })
    }

    /// A device said what it takes on: its waiting runs go out now. An
    /// offer past the limits a real config has is refused (the hub keeps
    /// one per device).
    pub(super) fn offered(&mut self, device: &str, abilities: Abilities, now: Now) {
        let names = abilities.job_kinds.iter().chain(&abilities.exec_programs);
        if abilities.job_kinds.len() > MAX_OFFER_KINDS
            || abilities.exec_programs.len() > MAX_OFFER_PROGRAMS
            || names.clone().any(|n| n.len() > MAX_OFFER_NAME)
        {
            self.counters.frames_dropped += 1;
            warn!(
                device,
                "an offer past its limits refused; jobs wait for a valid one"
            );
            let reason = format!(
                "offer refused: at most {MAX_OFFER_KINDS} job kinds and {MAX_OFFER_PROGRAMS} programs of {MAX_OFFER_NAME} bytes"
            );
            return self.send_down(device, fleetmq_protocol::Refusal { reason }.into());
        }
        let one = abilities.one_connection.then_some(OneConnection {
            chat: abilities.chat,
            job_slots: abilities.job_slots.clamp(1, MAX_JOB_SLOTS),
        });
        self.routes.carry(device, one);
        self.offers.insert(device.to_string(), abilities);
        self.dispatch_to(device, now);
    }

    /// Whom `aim` names, in words, and those devices; `None` when it names
    /// nobody (the work queue, for a job).
    pub(super) fn members(
        &self,
        aim: &Aim<'_>,
    ) -> Result<Option<(String, Vec<String>)>, OperatorError> {
        if aim.is_empty() {
            return Ok(None);
        }
        let bad = |e: String| OperatorError::BadRequest(e);
        let filters = Matcher::parse_all(aim.matching).map_err(bad)?;
        for d in aim.devices {
            validate_device_id(d).map_err(|e| bad(e.to_string()))?;
        }
        for g in aim.groups {
            validate_group(g).map_err(|e| bad(e.to_string()))?;
        }
        // On a front-end, the devices other front-ends have held too, with
        // what their holders say of them.
        let storage = |e: crate::store::StoreError| OperatorError::Storage(e.to_string());
        let facts = match filters.is_empty() {
            true => Facts::Skip,
            false => Facts::Read,
        };
        let known = self.fleet_devices(facts).map_err(storage)?;
        let ids: HashSet<&str> = known.iter().map(|k| k.id.as_str()).collect();
        if let Some(d) = aim.devices.iter().find(|d| !ids.contains(d.as_str())) {
            return Err(OperatorError::UnknownDevice(d.clone()));
        }
        let named: HashSet<&str> = aim.devices.iter().map(String::as_str).collect();
        let everyone = aim.all || (aim.devices.is_empty() && aim.groups.is_empty());
        let mut members: Vec<String> = (known.iter())
            .filter(|d| {
                let in_group = d.groups.iter().any(|g| aim.groups.contains(g));
                let aimed = named.contains(d.id.as_str()) || ((everyone || in_group) && !d.revoked);
                aimed && matches_all(&filters, d)
            })
            .map(|d| d.id.clone())
            .collect();
        // By id, whatever order the store lists them in: a run's id follows
        // its member's place.
        members.sort_unstable();
        let words = aim.words();
        if members.is_empty() {
            let what = if filters.is_empty() {
                "`fleetmq-hub devices` lists devices and their groups".to_string()
            } else {
                let each = aim
                    .matching
                    .iter()
                    .map(|m| format!(" --where {}", shell_word(m)));
                format!(
                    "`fleetmq-hub devices{}` lists whom the filters match",
                    each.collect::<String>()
                )
            };
            return Err(bad(format!("no known device is in {words}: {what}")));
        }
        Ok(Some((words, members)))
    }

    /// Queues `job` (defaults filled in) on each of `members`.
    pub(super) fn submit_aimed(
        &mut self,
        job: &JobSubmission,
        target: &str,
        members: &[String],
        now: Now,
    ) -> Result<u64, OperatorError> {
        let expires = self.expires_ms(job, now);
        let id = self
            .store
            .submit_aimed(job, target, members, expires, now.wall_ms)
            .map_err(|e| OperatorError::Storage(e.to_string()))?;
        info!(
            job = id,
            target,
            devices = members.len(),
            "aimed job queued"
        );
        for device in members {
            self.dispatch_to(device, now);
        }
        Ok(id)
    }

    /// When the runs of `job`, submitted now, fail if not started.
    pub(super) fn expires_ms(&self, job: &JobSubmission, now: Now) -> u64 {
        let ttl = if job.ttl_ms == 0 {
            self.config.jobs.ttl_ms
        } else {
            job.ttl_ms
        };
        now.wall_ms.saturating_add(u64::from(ttl))
    }

    /// Hands out the runs waiting for devices that are online and have
    /// said what they take on, and fails those past their time to live.
    pub(super) fn dispatch_aimed(&mut self, now: Now) {
        if self.ticks.is_multiple_of(10) {
            match self.store.expire_runs(now.wall_ms) {
                Ok(0) => {}
                Ok(n) => info!(
                    runs = n,
                    "aimed jobs failed: their devices stayed away past the time to live"
                ),
                Err(e) => warn!(error = %e, "could not expire aimed jobs"),
            }
        }
        let waiting = match self.store.aimed_devices() {
            Ok(d) => d,
            Err(e) => return warn!(error = %e, "could not read aimed jobs"),
        };
        for device in waiting {
            self.dispatch_to(&device, now);
        }
    }

    /// Hands `device` its waiting runs, if it can take them now; refuses
    /// at once, never sending it, a run it would refuse. On a front-end,
    /// what it did is an event for every front-end's store.
    pub(super) fn dispatch_to(&mut self, device: &str, now: Now) {
        if !self.presence.is_online(device) || self.routes.route(device).is_none() {
            return;
        }
        let Some(abilities) = self.offers.get(device).cloned() else {
            return;
        };
        let due = match self.store.aimed_due(device, PER_DEVICE, now.wall_ms) {
            Ok(d) => d,
            Err(e) => return warn!(device, error = %e, "could not read aimed jobs"),
        };
        for run in due {
            if let Some(what) = refusal(&abilities, &run.spec) {
                info!(job = run.id, device, not_allowed = %what,
                    "aimed job refused without sending it: the device's Offer does not take it");
                let outcome = Outcome::NotAllowed(what);
                if let Err(e) = self.store.finish_job(run.id, device, &outcome, now.wall_ms) {
                    warn!(job = run.id, error = %e, "could not record a refusal");
                }
                self.run_event(JobEvent::Finished {
                    id: run.id,
                    device: device.to_string(),
                    outcome,
                    at_ms: now.wall_ms,
                });
                continue;
            }
            if run.attempts >= run.max_attempts {
                let why = format!(
                    "no result after {} attempt(s) of {} ms each",
                    run.attempts, run.lease_ms
                );
                if let Err(e) = self.store.fail_job(run.id, &why, now.wall_ms) {
                    warn!(job = run.id, error = %e, "could not fail a job");
                }
                self.run_event(JobEvent::Failed {
                    id: run.id,
                    why,
                    at_ms: now.wall_ms,
                });
                continue;
            }
            let token = match (self.tokens)() {
                Ok(t) => t,
                Err(e) => {
                    return warn!(error = %e, "could not draw a job token; jobs wait for the next tick");
                }
            };
            let attempt = run.attempts + 1;
            let job = Job {
                id: run.id,
                attempt,
                spec: run.spec,
                timeout_ms: run.timeout_ms,
                token,
            };
            self.send_down(device, Downstream::Work(job));
            self.job_sent(run.id, attempt, token, run.lease_ms, now);
            self.run_event(JobEvent::Sent {
                id: run.id,
                device: device.to_string(),
                attempt,
                token,
                lease_ms: run.lease_ms,
                at_ms: now.wall_ms,
            });
        }
    }
}

/// Whom an operator aims a job or a fleet command at, as the request
/// says: devices, groups, the fleet, narrowed by filters on what the
/// devices are.
pub(super) struct Aim<'a> {
    pub devices: &'a [String],
    pub groups: &'a [String],
    pub all: bool,
    pub matching: &'a [String],
}

impl<'a> Aim<'a> {
    pub(super) fn of_job(j: &'a JobSubmission) -> Self {
        Aim {
            devices: &j.devices,
            groups: &j.groups,
            all: j.all,
            matching: &j.matching,
        }
    }

    pub(super) fn of_command(c: &'a FleetCommand) -> Self {
        Aim {
            devices: &c.devices,
            groups: &c.groups,
            all: c.all,
            matching: &c.matching,
        }
    }

    /// No aim at all: a job for the work queue.
    pub(super) fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.groups.is_empty() && !self.all && self.matching.is_empty()
    }

    /// The aim in words (`devices pi-1,pi-2 and groups north`, `all where
    /// model~zero, os~bullseye`): what `command --list` and a job show it
    /// for, and what the audit trail says.
    pub(super) fn words(&self) -> String {
        let mut named = Vec::new();
        if !self.devices.is_empty() {
            named.push(format!("devices {}", self.devices.join(",")));
        }
        if !self.groups.is_empty() {
            named.push(format!("groups {}", self.groups.join(",")));
        }
        if self.all || named.is_empty() {
            named.push("all".into());
        }
        let mut words = named.join(" and ");
        if !self.matching.is_empty() {
            words = format!("{words} where {}", self.matching.join(", "));
        }
        words
    }
}
