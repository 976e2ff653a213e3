//! What a SIGHUP changes: the difference between the running configuration
//! and the one just read, split into what applies at once and what waits
//! for a restart. Plain data in, plain data out.

use serde_json::Value;

use crate::config::AgentConfig;

/// Keys that changed, by when they take effect: dotted as in the config
/// file (`spool.max_bytes`; a list is one key), sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Changed, and applied to the running agent now.
    pub applied: Vec<String>,
    /// Changed, but kept at their running values until a restart.
    pub needs_restart: Vec<String>,
}

/// What a SIGHUP applies at once: a key, or every key of a `section.*`,
/// matched as `[remote] may_set` matches.
/// Any other key waits for a restart, so a key added to the config is
/// safe until it is made live here and in the driver's `apply_live`.
const LIVE: &[&str] = &[
    "telemetry.sample_interval_ms",
    "host.*",
    "ingest.statsd_interval_ms",
    "ingest.percentiles",
    "jobs.*",
    "commands.*",
    "exec.*",
    "remote.*",
    "logs.*",
];

fn live(key: &str) -> bool {
    crate::may_set::allowed(LIVE, key)
}

/// Compares the running configuration `old` with `new`, key by key.
pub fn diff(old: &AgentConfig, new: &AgentConfig) -> Diff {
    let mut changed = Vec::new();
    if old.data_dir != new.data_dir {
        // Compared as paths: one need not be UTF-8, which JSON needs.
        changed.push("data_dir".to_string());
    }
    let as_json = |c: &AgentConfig| {
        let mut c = c.clone();
        c.data_dir = Default::default();
        serde_json::to_value(c)
    };
    match (as_json(old), as_json(new)) {
        (Ok(a), Ok(b)) => keys_that_differ("", &a, &b, &mut changed),
        (Err(e), _) | (_, Err(e)) => {
            if old != new {
                changed.push(format!("(keys not listed: {e})"));
            }
        }
    }
    changed.sort();
    let (applied, needs_restart) = changed.into_iter().partition(|k| live(k));
    Diff {
        applied,
        needs_restart,
    }
}

/// The dotted keys under `prefix` whose values differ between `a` and
/// `b`.
fn keys_that_differ(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    if let (Value::Object(a), Value::Object(b)) = (a, b) {
        let path = |key: &str| {
            if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}.{key}")
            }
        };
        for (key, va) in a {
            let path = path(key);
            match b.get(key) {
                Some(vb) => keys_that_differ(&path, va, vb, out),
                None => out.push(path),
            }
        }
        // A key only `b` has: an entry added to a table such as
        // `[logs.multiline]` or `[logs.filters]`.
        for key in b.keys().filter(|k| !a.contains_key(*k)) {
            out.push(path(key));
        }
    } else if a != b {
        out.push(prefix.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sources_change_at_once() {
        let old = AgentConfig::default();
        let mut new = old.clone();
        new.logs.files = vec!["/var/log/syslog".into()];
        new.logs.journal = true;
        assert_eq!(
            diff(&old, &new),
            Diff {
                applied: vec!["logs.files".into(), "logs.journal".into()],
                needs_restart: vec![],
            }
        );
    }

    #[test]
    fn an_entry_added_to_or_taken_from_a_table_is_a_change() {
        let old = AgentConfig::default();
        let mut new = old.clone();
        new.logs
            .multiline
            .insert("/var/log/app.log".into(), "20??-".into());
        let own = crate::sources::logs::SourceFilter {
            keep_lines: vec!["error".into()],
            drop_lines: vec![],
        };
        new.logs.filters.insert("/var/log/syslog".into(), own);
        let added = Diff {
            applied: vec![
                "logs.filters./var/log/syslog".into(),
                "logs.multiline./var/log/app.log".into(),
            ],
            needs_restart: vec![],
        };
        assert_eq!(diff(&old, &new), added, "added");
        assert_eq!(diff(&new, &old), added, "taken away");
    }

    #[test]
    fn live_keys_apply_and_the_rest_wait_for_a_restart() {
        let old = AgentConfig::default();
        assert_eq!(diff(&old, &old.clone()), Diff::default(), "nothing changed");
        let mut new = old.clone();
        new.telemetry.sample_interval_ms += 1_000;
        new.host.interval_ms += 1_000;
        new.exec.timeout_ms += 1;
        new.hub = "tcp://elsewhere:7750".into();
        new.presence.heartbeat_ms += 1;
        new.spool.max_bytes += 1;
        new.net.send_hwm += 1;
        let d = diff(&old, &new);
        assert_eq!(
            d.applied,
            [
                "exec.timeout_ms",
                "host.interval_ms",
                "telemetry.sample_interval_ms"
            ]
        );
        assert_eq!(
            d.needs_restart,
            [
                "hub",
                "net.send_hwm",
                "presence.heartbeat_ms",
                "spool.max_bytes"
            ]
        );
    }

    #[test]
    fn a_key_is_named_as_the_config_file_writes_it() {
        let old = AgentConfig::default();
        let mut new = old.clone();
        new.telemetry.batch_max_records += 1;
        new.ingest.udp = String::new();
        new.ingest.percentiles.push(99.9);
        new.groups = vec!["barns".into()];
        new.data_dir = "elsewhere".into();
        let d = diff(&old, &new);
        assert_eq!(d.applied, ["ingest.percentiles"]);
        assert_eq!(
            d.needs_restart,
            [
                "data_dir",
                "groups",
                "ingest.udp",
                "telemetry.batch_max_records"
            ]
        );
    }

    #[test]
    fn a_section_prefix_is_not_a_key_prefix() {
        assert!(live("host.mounts"));
        assert!(!live("hostname"), "`host.` is a section, not a prefix");
        assert!(!live("telemetry.sample_interval_ms_max"));
    }
}
