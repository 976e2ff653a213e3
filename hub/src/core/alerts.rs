//! Alerts: the rules of `[alerts]` checked once a second against what the
//! hub knows of each device (online, last seen, groups, facts) and the newest
//! value of each series. An alert is one rule on one device (and, for a
//! metric, one series):
//!
//! ```text
//!   condition holds ─► pending ─(held for_ms)─► firing ─► notice "firing"
//!        ▲                │ no longer              │ every repeat_ms: again
//!        └── forgotten ◄──┘                        │ condition gone, or the
//!                                                  ▼ device or series gone
//!                                          notice "resolved", forgotten
//! ```
//!
//! `offline` counts from the device's last sign of life, so a device that
//! went away while the hub was down is not given the time again. A log
//! rule holds while enough matching lines arrived within its window: each
//! stored batch's lines are looked at as it is stored ([`Alerts::saw_logs`]),
//! here and, on front-ends, from the stream, so any front-end may check.
//! `config refused` holds while a device's last report of the desired
//! configuration refused keys (the store's, as `config status` reads it;
//! on front-ends the reports come from the stream too). On front-ends,
//! the live front-end first by name checks the rules, so each notice is
//! sent once.

use std::collections::{BTreeMap, HashMap, VecDeque};

use fleetmq_protocol::matching::matches_all;
use fleetmq_protocol::telemetry::metric_of;
use fleetmq_protocol::{AlertInfo, Batch, DeviceInfo, LatestValue};

use super::{Action, Core, Now};
use crate::config::{Condition, LogWatch, Rule};
use crate::store::{Applied, Facts};

/// Ticks between checks (a second).
const CHECK_EVERY_TICKS: u32 = 10;

/// Firing, or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Firing,
    Resolved,
}

/// What the webhooks are told.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub status: Status,
    pub rule: String,
    pub device: String,
    /// The series (metric rules), or empty.
    pub series: String,
    /// The rule's condition as written.
    pub condition: String,
    /// The value that made it fire (metric rules), or the seconds offline.
    pub value: f64,
    pub summary: String,
    /// When it began firing, wall-clock ms.
    pub starts_ms: u64,
    /// When it resolved (0 while firing).
    pub ends_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    rule: usize,
    device: String,
    series: String,
}

#[derive(Debug, Clone)]
struct State {
    /// Since when the condition holds (monotonic ms).
    pending_since: u64,
    /// When it began firing (wall ms), once it does.
    firing_since: Option<u64>,
    /// When its last notice went (monotonic ms).
    last_sent: u64,
    value: f64,
    summary: String,
}

/// The lines a log rule matched on one device lately.
#[derive(Debug, Default)]
struct Matched {
    /// When the newest `at_least` arrived (monotonic ms), oldest first.
    times: VecDeque<u64>,
    /// Lines matched since the first of this run (the alert's value).
    count: u64,
    /// The newest line, and its source.
    source: String,
    text: String,
}

/// How much of a matched line a notice quotes.
const QUOTE_BYTES: usize = 200;

/// The rules and where each alert stands.
#[derive(Debug, Default)]
pub struct Alerts {
    rules: Vec<Rule>,
    repeat_ms: u64,
    states: BTreeMap<Key, State>,
    /// Log rules' recent matches, by (rule, device).
    matched: HashMap<(usize, String), Matched>,
}

/// What holds now for one (rule, device, series): its value and summary.
type Holding = BTreeMap<Key, (f64, String, u64)>;

impl Alerts {
    pub fn new(rules: Vec<Rule>, repeat_ms: u64) -> Alerts {
        Alerts {
            rules,
            repeat_ms,
            states: BTreeMap::new(),
            matched: HashMap::new(),
        }
    }

    /// Looks at the log lines of a batch `device` sent, stored at `mono_ms`.
    pub fn saw_logs(&mut self, device: &str, batch: &Batch, mono_ms: u64) {
        if batch.logs.is_empty() {
            return;
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let Condition::Log(watch) = &rule.condition else {
                continue;
            };
            // The lines of one batch arrived together: counted at once,
            // the newest kept.
            let (mut n, mut newest) = (0u64, None);
            for (_, source, text) in batch.resolved_logs() {
                if watch.source.as_deref().is_none_or(|s| s == source) && text.contains(&watch.text)
                {
                    n += 1;
                    newest = Some((source, text));
                }
            }
            let Some((source, text)) = newest else {
                continue;
            };
            let m = self.matched.entry((i, device.to_string())).or_default();
            let keep = watch.at_least as usize;
            for _ in 0..n.min(keep as u64) {
                if m.times.len() == keep {
                    m.times.pop_front();
                }
                m.times.push_back(mono_ms);
            }
            m.count += n;
            source.clone_into(&mut m.source);
            text.clone_into(&mut m.text);
        }
    }

    /// Forgets what `device`'s lines matched (a forgotten device).
    pub fn forget(&mut self, device: &str) {
        self.matched.retain(|(_, d), _| d != device);
    }

    /// Drops matches whose newest line is older than its rule's window.
    pub(super) fn expire_matches(&mut self, now_ms: u64) {
        let rules = &self.rules;
        self.matched
            .retain(|(rule, _), m| match &rules[*rule].condition {
                Condition::Log(w) => m
                    .times
                    .back()
                    .is_some_and(|t| now_ms.saturating_sub(*t) < w.window_ms),
                _ => false,
            });
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The metrics the rules watch (none when every rule is `offline`).
    fn metrics(&self) -> Vec<String> {
        let mut names: Vec<String> = (self.rules.iter())
            .filter_map(|r| match &r.condition {
                Condition::Metric { metric, .. } => Some(metric.clone()),
                Condition::Offline
                | Condition::Log(_)
                | Condition::ConfigRefused
                | Condition::ClockOff { .. } => None,
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Whether a rule looks at the devices' facts (`where`).
    fn watches_facts(&self) -> bool {
        self.rules.iter().any(|r| !r.matching.is_empty())
    }

    /// Whether a rule watches what devices applied of the configuration.
    fn watches_config(&self) -> bool {
        (self.rules.iter()).any(|r| r.condition == Condition::ConfigRefused)
    }

    /// Checks every rule against `devices`, the newest values and what
    /// devices last applied of the configuration (by device), at `now`:
    /// the notices to send.
    pub fn check(
        &mut self,
        devices: &[DeviceInfo],
        latest: &[LatestValue],
        applied: &HashMap<String, Applied>,
        now: Now,
    ) -> Vec<Notice> {
        let holding = self.holding(devices, latest, applied, now);
        let mut out = Vec::new();
        // Gone, or no longer holding: resolved if it fired, else forgotten.
        let over: Vec<Key> = (self.states.keys())
            .filter(|k| !holding.contains_key(*k))
            .cloned()
            .collect();
        for key in over {
            let Some(state) = self.states.remove(&key) else {
                continue;
            };
            if let Some(since) = state.firing_since {
                out.push(self.notice(&key, &state, Status::Resolved, since, now.wall_ms));
            }
        }
        for (key, (value, summary, held_ms)) in holding {
            let state = self.states.entry(key.clone()).or_insert_with(|| State {
                pending_since: now.mono_ms.saturating_sub(held_ms),
                firing_since: None,
                last_sent: 0,
                value,
                summary: summary.clone(),
            });
            state.value = value;
            state.summary = summary;
            let for_ms = self.rules[key.rule].for_ms;
            let due = match state.firing_since {
                None => now.mono_ms.saturating_sub(state.pending_since) >= for_ms,
                Some(_) => {
                    self.repeat_ms > 0
                        && now.mono_ms.saturating_sub(state.last_sent) >= self.repeat_ms
                }
            };
            if !due {
                continue;
            }
            let since = *state.firing_since.get_or_insert(now.wall_ms);
            state.last_sent = now.mono_ms;
            let state = state.clone();
            out.push(self.notice(&key, &state, Status::Firing, since, 0));
        }
        out
    }

    /// Every (rule, device, series) whose condition holds now, with its
    /// value, summary, and how long it has held already (offline: since
    /// the device's last sign of life).
    fn holding(
        &self,
        devices: &[DeviceInfo],
        latest: &[LatestValue],
        applied: &HashMap<String, Applied>,
        now: Now,
    ) -> Holding {
        let mut holding = Holding::new();
        // Each value names its device: found by id, not by a scan a value.
        let by_id: std::collections::HashMap<&str, &DeviceInfo> =
            devices.iter().map(|d| (d.id.as_str(), d)).collect();
        for (i, rule) in self.rules.iter().enumerate() {
            let watched = |d: &DeviceInfo| {
                !d.revoked
                    && (rule.groups.is_empty() || d.groups.iter().any(|g| rule.groups.contains(g)))
                    && matches_all(&rule.matching, d)
            };
            match &rule.condition {
                Condition::Offline => {
                    for d in devices.iter().filter(|d| watched(d) && !d.online) {
                        if d.last_seen_ms == 0 {
                            continue;
                        }
                        let away = now.wall_ms.saturating_sub(d.last_seen_ms);
                        let key = Key {
                            rule: i,
                            device: d.id.clone(),
                            series: String::new(),
                        };
                        let summary = format!("{} offline for {}", d.id, words(away));
                        holding.insert(key, (away as f64 / 1000.0, summary, away));
                    }
                }
                Condition::Metric { metric, op, value } => {
                    for v in latest {
                        if metric_of(&v.name) != metric {
                            continue;
                        }
                        let Some(d) = by_id.get(v.device.as_str()) else {
                            continue;
                        };
                        let Some(x) = number(&v.value) else { continue };
                        if !watched(d) || !op.holds(x, *value) {
                            continue;
                        }
                        let key = Key {
                            rule: i,
                            device: v.device.clone(),
                            series: v.name.clone(),
                        };
                        let summary =
                            format!("{} {} = {x} ({} {value})", v.device, v.name, op.symbol());
                        holding.insert(key, (x, summary, 0));
                    }
                }
                Condition::Log(watch) => {
                    for ((_, device), m) in self.matched.iter().filter(|((r, _), _)| *r == i) {
                        let Some(d) = by_id.get(device.as_str()) else {
                            continue;
                        };
                        if !watched(d) || !log_holds(watch, m, now.mono_ms) {
                            continue;
                        }
                        let key = Key {
                            rule: i,
                            device: device.clone(),
                            series: String::new(),
                        };
                        holding.insert(key, (m.count as f64, log_summary(device, m), 0));
                    }
                }
                Condition::ClockOff { by_ms } => {
                    for d in devices.iter().filter(|d| watched(d)) {
                        let Some(offset) = d.clock_offset_ms else {
                            continue;
                        };
                        if offset.unsigned_abs() < *by_ms {
                            continue;
                        }
                        let key = Key {
                            rule: i,
                            device: d.id.clone(),
                            series: String::new(),
                        };
                        let summary = format!(
                            "{}'s clock is {} the hub's",
                            d.id,
                            super::clocks::words(offset)
                        );
                        holding.insert(key, (offset as f64 / 1000.0, summary, 0));
                    }
                }
                Condition::ConfigRefused => {
                    for (device, (version, refused)) in applied {
                        let Some(d) = by_id.get(device.as_str()) else {
                            continue;
                        };
                        if refused.is_empty() || !watched(d) {
                            continue;
                        }
                        let key = Key {
                            rule: i,
                            device: device.clone(),
                            series: String::new(),
                        };
                        let summary = refused_summary(device, *version, refused);
                        holding.insert(key, (refused.len() as f64, summary, 0));
                    }
                }
            }
        }
        holding
    }

    fn notice(&self, key: &Key, state: &State, status: Status, since: u64, ends: u64) -> Notice {
        let rule = &self.rules[key.rule];
        Notice {
            status,
            rule: rule.name.clone(),
            device: key.device.clone(),
            series: key.series.clone(),
            condition: condition_text(&rule.condition),
            value: state.value,
            summary: state.summary.clone(),
            starts_ms: since,
            ends_ms: ends,
        }
    }

    /// Where each alert stands: pending or firing.
    pub fn list(&self, now: Now) -> Vec<AlertInfo> {
        self.states
            .iter()
            .map(|(key, s)| AlertInfo {
                rule: self.rules[key.rule].name.clone(),
                device: key.device.clone(),
                series: key.series.clone(),
                firing: s.firing_since.is_some(),
                since_ms: s.firing_since.unwrap_or_else(|| {
                    now.wall_ms
                        .saturating_sub(now.mono_ms.saturating_sub(s.pending_since))
                }),
                value: s.value,
                summary: s.summary.clone(),
            })
            .collect()
    }
}

fn condition_text(c: &Condition) -> String {
    match c {
        Condition::Offline => "offline".into(),
        Condition::ConfigRefused => "config refused".into(),
        Condition::ClockOff { by_ms } => format!("clock off by {} or more", words(*by_ms)),
        Condition::Metric { metric, op, value } => format!("{metric} {} {value}", op.symbol()),
        Condition::Log(w) => {
            let text = w.text.replace('\\', "\\\\").replace('"', "\\\"");
            let mut out = format!("log contains \"{text}\"");
            if let Some(source) = &w.source {
                out += &format!(" from {source}");
            }
            let lines = match w.at_least {
                1 => "a line".to_string(),
                n => format!("{n} lines"),
            };
            out + &format!(", {lines} within {}", words(w.window_ms))
        }
    }
}

/// Whether the newest `at_least` matches all came within the window.
fn log_holds(watch: &LogWatch, m: &Matched, now_ms: u64) -> bool {
    m.times.len() >= watch.at_least as usize
        && m.times
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) < watch.window_ms)
}

/// `pi-3 logged "Out of memory: Killed process 812" (journal:kernel);
/// 3 matching lines`, the line cut to [`QUOTE_BYTES`].
fn log_summary(device: &str, m: &Matched) -> String {
    let mut quote = m.text.clone();
    if fleetmq_net::text::truncate(&mut quote, QUOTE_BYTES) {
        quote.push('…');
    }
    let lines = match m.count {
        1 => "1 matching line".to_string(),
        n => format!("{n} matching lines"),
    };
    format!("{device} logged {quote:?} ({}); {lines}", m.source)
}

/// `pi-3 refused 2 keys of configuration version 7: host.interval_ms: 5 ms
/// is too short ...`, cut to [`QUOTE_BYTES`].
fn refused_summary(device: &str, version: u64, refused: &[(String, String)]) -> String {
    let mut why = (refused.iter())
        .map(|(key, why)| format!("{key}: {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    if fleetmq_net::text::truncate(&mut why, QUOTE_BYTES) {
        why.push('…');
    }
    let keys = match refused.len() {
        1 => "1 key".to_string(),
        n => format!("{n} keys"),
    };
    format!("{device} refused {keys} of configuration version {version}: {why}")
}

fn number(v: &fleetmq_protocol::Value) -> Option<f64> {
    match v {
        fleetmq_protocol::Value::Int(i) => Some(*i as f64),
        fleetmq_protocol::Value::Float(f) if f.is_finite() => Some(*f),
        fleetmq_protocol::Value::Float(_) => None,
    }
}

/// `ms` in words: `42 s`, `5 min`, `3 h 10 min`, `2 d 4 h`.
fn words(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

impl Core {
    /// Checks the alert rules once a second; on front-ends, only the live
    /// front-end first by name does.
    pub(super) fn check_alerts(&mut self, now: Now) {
        if self.alerts.is_empty() || !self.ticks.is_multiple_of(CHECK_EVERY_TICKS) {
            return;
        }
        // Every front-end keeps the log rules' matches (any may come to
        // check), so every one lets old ones go.
        self.alerts.expire_matches(now.mono_ms);
        if !self.checks_alerts() {
            return;
        }
        let facts = match self.alerts.watches_facts() {
            true => Facts::Read,
            false => Facts::Skip,
        };
        let devices = match self.fleet_devices(facts) {
            Ok(d) => d,
            Err(e) => {
                return tracing::warn!(error = %e, "could not read the devices to check alerts");
            }
        };
        // Only the values the rules watch, not every series of the fleet.
        let metrics = self.alerts.metrics();
        let latest = if metrics.is_empty() {
            Vec::new()
        } else {
            self.latest.matching(None, &metrics)
        };
        // What devices applied, read only when a rule watches it (one
        // read of the store, as `config status` makes).
        let applied = if self.alerts.watches_config() {
            match self.store.config_applied_all() {
                Ok(a) => a,
                Err(e) => {
                    return tracing::warn!(error = %e, "could not read what devices applied to check alerts");
                }
            }
        } else {
            HashMap::new()
        };
        for notice in self.alerts.check(&devices, &latest, &applied, now) {
            match notice.status {
                Status::Firing => {
                    tracing::warn!(rule = %notice.rule, device = %notice.device, summary = %notice.summary, "alert firing")
                }
                Status::Resolved => {
                    tracing::info!(rule = %notice.rule, device = %notice.device, "alert resolved")
                }
            }
            self.counters.alert_notices += 1;
            self.out.push_back(Action::Alert(notice));
        }
    }

    /// Alerts where they stand.
    pub(super) fn alert_list(&self, now: Now) -> Vec<AlertInfo> {
        self.alerts.list(now)
    }
}
