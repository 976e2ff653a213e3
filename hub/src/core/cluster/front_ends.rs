//! What the live front-ends say of themselves: each reports its own
//! traffic, the fleetmq-hub version it runs and what it applies from the
//! cluster ([`CLUSTER_FEATURES`]) every 5 s, into the front-ends bucket.
//! `stats` shows them, and a request every front-end must apply (a job
//! cancel, a forget) is refused while a live front-end does not apply it:
//! an older front-end would skip it, and its store would disagree with
//! the others' for good.

use fleetmq_protocol::{CLUSTER_FEATURES, FrontEndStats, OperatorError};
use tracing::{info, warn};

use super::super::{Core, Now};
use crate::cluster::ToCluster;

/// Ticks between a front-end's reports of its own traffic (5 s).
const REPORT_EVERY_TICKS: u32 = 50;

/// The fleetmq-hub version this front-end runs.
const VERSION: &str = env!("CARGO_PKG_VERSION");

impl Core {
    /// The front-ends alive now.
    pub fn front_ends_live(&mut self, names: Vec<String>) {
        self.cluster.live = names.into_iter().collect();
    }

    /// The front-ends alive now, each with its last report (one that has
    /// not reported yet, or not as JSON, lives without figures). A live
    /// front-end without some of this one's features is said in the log,
    /// once until that changes.
    pub fn front_ends_reported(&mut self, live: Vec<(String, Vec<u8>)>) {
        let mut reports: Vec<FrontEndStats> = live
            .iter()
            .filter(|(name, _)| *name != self.cluster.name)
            .filter_map(|(_, report)| serde_json::from_slice(report).ok())
            .collect();
        reports.sort_by(|a, b| a.name.cmp(&b.name));
        let lacking: Vec<(String, Vec<&'static str>)> = (reports.iter())
            .filter_map(|r| {
                let missing = r.lacking();
                (!missing.is_empty()).then(|| (r.name.clone(), missing))
            })
            .collect();
        if lacking != self.cluster.told_lacking {
            for (name, missing) in &lacking {
                let runs = runs(reports.iter().find(|r| r.name == *name));
                warn!(
                    front_end = %name,
                    runs = %runs,
                    lacks = %missing.join(", "),
                    "a live front-end runs an older fleetmq-hub than this one ({VERSION}): job cancel and forget are refused while it lacks them, and it skips log lines on the telemetry stream; upgrade it"
                );
            }
            if lacking.is_empty() {
                info!("every live front-end applies what this one does");
            }
            self.cluster.told_lacking = lacking;
        }
        self.cluster.reports = reports;
        self.front_ends_live(live.into_iter().map(|(name, _)| name).collect());
    }

    /// Whether every live front-end applies `feature` (one of
    /// [`CLUSTER_FEATURES`]), by its last report: if not, `what` (the
    /// request) is refused, naming each front-end that does not and why.
    /// One that has not reported yet (it started less than 5 s ago) is not
    /// known to apply it.
    pub(in crate::core) fn every_front_end_applies(
        &self,
        feature: &str,
        what: &str,
    ) -> Result<(), OperatorError> {
        let mut names: Vec<&String> = (self.cluster.live.iter())
            .filter(|name| **name != self.cluster.name)
            .collect();
        names.sort();
        let lacking: Vec<String> = names
            .into_iter()
            .filter_map(|name| {
                let report = self.cluster.reports.iter().find(|r| r.name == *name);
                match report {
                    Some(r) if !r.lacking().contains(&feature) => None,
                    None => Some(format!(
                        "{name} has not reported what it runs yet (a front-end does within 5 s of starting)"
                    )),
                    Some(r) => Some(format!("{name} runs {}, without {feature}", runs(Some(r)))),
                }
            })
            .collect();
        if lacking.is_empty() {
            return Ok(());
        }
        Err(OperatorError::BadRequest(format!(
            "{what} must be applied by every front-end, and {}; nothing was done: upgrade it to fleetmq-hub {VERSION} (or wait for its report) and try again",
            lacking.join("; ")
        )))
    }

    /// This front-end's own traffic since it started, and what it runs.
    pub(in crate::core) fn own_report(&self, now: Now) -> FrontEndStats {
        let c = &self.counters;
        FrontEndStats {
            name: self.cluster.name.clone(),
            reported_ms: now.wall_ms,
            devices_online: self.presence.online_count() as u32,
            batches_accepted: c.batches_replicated,
            batches_throttled: c.batches_throttled,
            frames_dropped: c.frames_dropped,
            jobs_dispatched: c.jobs_dispatched,
            results_received: c.results_received,
            commands_sent: c.commands_sent,
            handshakes_refused: c.handshakes_refused,
            disconnects: c.disconnects,
            version: VERSION.to_string(),
            features: CLUSTER_FEATURES.iter().map(|f| f.to_string()).collect(),
        }
    }

    /// Tells the cluster this front-end's own traffic (at the first tick,
    /// so that the others soon know what it runs, then every 5 s).
    pub(in crate::core) fn report(&mut self, now: Now) {
        let due = self.ticks == 1 || self.ticks.is_multiple_of(REPORT_EVERY_TICKS);
        if self.is_front_end() && due {
            match serde_json::to_vec(&self.own_report(now)) {
                Ok(report) => self.tell_cluster(ToCluster::Report { report }),
                Err(e) => warn!(error = %e, "could not write this front-end's report"),
            }
        }
    }

    /// Every live front-end's own traffic, this one's as of now, by name
    /// (none on a single hub).
    pub(in crate::core) fn front_end_stats(&self, now: Now) -> Vec<FrontEndStats> {
        if !self.is_front_end() {
            return Vec::new();
        }
        let mut all: Vec<FrontEndStats> = (self.cluster.reports.iter())
            .filter(|r| self.cluster.live.contains(&r.name))
            .cloned()
            .collect();
        all.push(self.own_report(now));
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

/// What a front-end runs, as its report says, for people.
fn runs(report: Option<&FrontEndStats>) -> String {
    match report {
        Some(r) if !r.version.is_empty() => format!("fleetmq-hub {}", r.version),
        _ => "a fleetmq-hub from before front-ends reported their versions".into(),
    }
}
