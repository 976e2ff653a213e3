//! The hub's own state as text: its counters (and each front-end's), the
//! alerts, a device's connects and disconnects.

use std::fmt::Write as _;

use fleetmq_protocol::HubStats;

use super::{fmt_ts, line};

/// The hub's counters, grouped, one a line.
pub fn fmt_stats(s: &HubStats) -> String {
    let mut out = String::new();
    let mut group = |title: &str, rows: &[(&str, String)]| {
        let _ = writeln!(out, "{title}");
        for (k, v) in rows {
            let _ = writeln!(out, "  {k:<22} {v}");
        }
    };
    group(
        "hub",
        &[
            ("version", s.hub_version.clone()),
            ("up", format!("{:.1} s", s.uptime_ms as f64 / 1000.0)),
            ("security", s.security.clone()),
            (
                "store",
                if s.storage_problem.is_empty() {
                    "writable".to_string()
                } else {
                    format!("NOT WRITABLE: {}", line(&s.storage_problem))
                },
            ),
        ],
    );
    group(
        "devices",
        &[
            ("online", s.devices_online.to_string()),
            ("known", s.devices_known.to_string()),
            ("enrolled keys", s.devices_allowed.to_string()),
            ("keys pending", s.keys_pending.to_string()),
        ],
    );
    group(
        "telemetry",
        &[
            ("batches stored", s.batches_stored.to_string()),
            ("samples stored", s.samples_stored.to_string()),
            ("log lines stored", s.log_lines_stored.to_string()),
            ("duplicates ignored", s.batches_duplicate.to_string()),
            ("throttled", s.batches_throttled.to_string()),
            ("rejected", s.batches_rejected.to_string()),
            ("renumbered", s.batches_renumbered.to_string()),
            ("bytes in store", s.telemetry_bytes.to_string()),
            ("of them log lines", s.log_bytes.to_string()),
        ],
    );
    group(
        "work",
        &[
            ("jobs dispatched", s.jobs_dispatched.to_string()),
            ("results received", s.results_received.to_string()),
            ("results refused", s.results_refused.to_string()),
            ("commands sent", s.commands_sent.to_string()),
            ("commands timed out", s.commands_timed_out.to_string()),
        ],
    );
    group(
        "refused",
        &[
            ("handshakes refused", s.handshakes_refused.to_string()),
            ("handshakes failed", s.handshakes_failed.to_string()),
            ("impersonations", s.impersonations.to_string()),
            ("rate limited", s.rate_limited.to_string()),
            ("connection conflicts", s.connection_conflicts.to_string()),
            ("frames dropped", s.frames_dropped.to_string()),
            ("dropped, not reading", s.messages_undelivered.to_string()),
            ("subscriptions refused", s.subscriptions_refused.to_string()),
            ("disconnects", s.disconnects.to_string()),
        ],
    );
    group(
        "pruned since start",
        &[
            ("batches", s.pruned_batches.to_string()),
            ("records in them", s.pruned_records.to_string()),
            ("chat lines", s.pruned_chat.to_string()),
            ("jobs", s.pruned_jobs.to_string()),
            ("commands", s.pruned_commands.to_string()),
        ],
    );
    if !s.front_ends.is_empty() {
        out.push_str(&fmt_front_ends(&s.front_ends));
    }
    out
}

/// Connects and disconnects one a line, newest first.
pub fn fmt_presence(log: &[fleetmq_protocol::PresenceEvent]) -> String {
    if log.is_empty() {
        return "no connect or disconnect kept for this device\n".into();
    }
    let mut out = String::new();
    for e in log {
        let _ = writeln!(
            out,
            "{}  {:<8} {}",
            fmt_ts(e.at_ms),
            if e.online { "online" } else { "offline" },
            line(&e.why)
        );
    }
    out
}

/// The audit trail, newest first: when, who, what, and a refused act
/// marked so.
pub fn fmt_audit(log: &[fleetmq_protocol::AuditEntry]) -> String {
    if log.is_empty() {
        return "no operator has acted on this hub yet\n".into();
    }
    let mut out = format!("{:<24} {:<20} ACT\n", "WHEN", "OPERATOR");
    for e in log {
        let refused = if e.allowed {
            ""
        } else {
            "  (refused: the role does not allow it)"
        };
        let _ = writeln!(
            out,
            "{:<24} {:<20} {}{refused}",
            fmt_ts(e.at_ms),
            line(&e.operator),
            line(&e.act)
        );
    }
    out
}

/// Keys waiting to be enrolled, one a line, newest attempt first, and how
/// to enrol one.
pub fn fmt_pending(keys: &[fleetmq_protocol::PendingKey]) -> String {
    if keys.is_empty() {
        return "no key outside the allow list has tried to connect since the hub started\n".into();
    }
    let mut out = format!(
        "{:<42} {:<16} {:<24} {:<24} ATTEMPTS\n",
        "KEY", "FROM", "FIRST", "LAST"
    );
    for k in keys {
        let _ = writeln!(
            out,
            "{:<42} {:<16} {:<24} {:<24} {}",
            fleetmq_net::keys::quoted(&k.public_key),
            line(&k.address),
            fmt_ts(k.first_ms),
            fmt_ts(k.last_ms),
            k.attempts
        );
    }
    out.push_str("enrol one with: fleetmq-hub allow DEVICE 'KEY'\n");
    out
}

/// Alerts one a line, firing first: state, since, rule, what.
pub fn fmt_alerts(alerts: &[fleetmq_protocol::AlertInfo]) -> String {
    if alerts.is_empty() {
        return "no alert is firing or pending\n".into();
    }
    let mut sorted: Vec<&fleetmq_protocol::AlertInfo> = alerts.iter().collect();
    sorted.sort_by_key(|a| (!a.firing, a.since_ms));
    let mut out = format!("{:<8} {:<24} {:<20} WHAT\n", "STATE", "SINCE", "RULE");
    for a in sorted {
        let _ = writeln!(
            out,
            "{:<8} {:<24} {:<20} {}",
            if a.firing { "FIRING" } else { "pending" },
            fmt_ts(a.since_ms),
            line(&a.rule),
            line(&a.summary)
        );
    }
    out
}

/// Each front-end's own traffic, one a line, and the fleet's total.
fn fmt_front_ends(front_ends: &[fleetmq_protocol::FrontEndStats]) -> String {
    let mut out = format!(
        "front-ends (each one's own traffic, as it last reported)\n  {:<16} {:>7} {:>12} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}  {:<10} REPORTED\n",
        "NAME",
        "ONLINE",
        "BATCHES",
        "THROTTLED",
        "DROPPED",
        "JOBS",
        "RESULTS",
        "COMMANDS",
        "REFUSED",
        "VERSION"
    );
    let mut total = fleetmq_protocol::FrontEndStats {
        name: "all".into(),
        ..Default::default()
    };
    let mut row = |f: &fleetmq_protocol::FrontEndStats, version: &str, when: String| {
        let _ = writeln!(
            out,
            "  {:<16} {:>7} {:>12} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}  {:<10} {when}",
            line(&f.name),
            f.devices_online,
            f.batches_accepted,
            f.batches_throttled,
            f.frames_dropped,
            f.jobs_dispatched,
            f.results_received,
            f.commands_sent,
            f.handshakes_refused,
            line(version),
        );
    };
    // What each front-end lacks of what this client's version applies.
    let mut lacking = Vec::new();
    for f in front_ends {
        let version = if f.version.is_empty() {
            "older"
        } else {
            &f.version
        };
        row(f, version, fmt_ts(f.reported_ms));
        let missing = f.lacking();
        if !missing.is_empty() {
            lacking.push((f.name.as_str(), missing));
        }
        total.devices_online += f.devices_online;
        total.batches_accepted += f.batches_accepted;
        total.batches_throttled += f.batches_throttled;
        total.frames_dropped += f.frames_dropped;
        total.jobs_dispatched += f.jobs_dispatched;
        total.results_received += f.results_received;
        total.commands_sent += f.commands_sent;
        total.handshakes_refused += f.handshakes_refused;
        total.disconnects += f.disconnects;
    }
    row(&total, "", String::new());
    for (name, missing) in lacking {
        let _ = writeln!(
            out,
            "  {} lacks {}: job cancel and forget are refused while it is live, and it skips log lines on the stream; upgrade it",
            line(name),
            missing.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_front_end_is_a_row_and_the_fleet_the_sum() {
        let fe = |name: &str, online: u32, batches: u64| fleetmq_protocol::FrontEndStats {
            name: name.into(),
            reported_ms: 0,
            devices_online: online,
            batches_accepted: batches,
            batches_throttled: 1,
            jobs_dispatched: 2,
            results_received: 2,
            version: "0.1.0".into(),
            features: fleetmq_protocol::CLUSTER_FEATURES
                .map(String::from)
                .to_vec(),
            ..Default::default()
        };
        let out = fmt_front_ends(&[fe("fe-a", 3, 1_000), fe("fe-b", 2, 500)]);
        let rows: Vec<Vec<&str>> = out
            .lines()
            .skip(2)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0][..4], ["fe-a", "3", "1000", "1"], "{out}");
        assert_eq!(rows[2][..6], ["all", "5", "1500", "2", "0", "4"], "{out}");
        assert_eq!(rows[0][9], "0.1.0", "{out}");
        assert_eq!(out.lines().count(), 5, "nothing lacking: {out}");
    }

    #[test]
    fn a_front_end_without_a_feature_is_named_with_what_it_lacks() {
        // As a front-end from before versions were reported: none.
        let mut old = fleetmq_protocol::FrontEndStats {
            name: "fe-old".into(),
            devices_online: 1,
            ..Default::default()
        };
        let out = fmt_front_ends(std::slice::from_ref(&old));
        assert!(out.contains("  fe-old                 1"), "{out}");
        assert!(out.contains(" older "), "{out}");
        assert!(
            out.contains(
                "fe-old lacks job_cancel, forget, log_batches: job cancel and forget are refused"
            ),
            "{out}"
        );
        old.version = "0.1.0".into();
        old.features = vec!["job_cancel".into(), "forget".into()];
        let out = fmt_front_ends(&[old]);
        assert!(out.contains("fe-old lacks log_batches:"), "{out}");
    }
}
