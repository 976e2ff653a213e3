//! Which keys the hub's desired configuration may set on this device:
//! `[remote] may_set`'s default, the keys there are, and how a `may_set`
//! entry matches one. Used by `config` (to check `may_set`) and `remote`
//! (to apply what the hub sends).

/// What `[remote] may_set` is by default: what changes how much and how
/// often this device reports, and the free `app.` keys; never what it lets
/// the hub run.
pub const DEFAULT_MAY_SET: &[&str] = &[
    "telemetry.sample_interval_ms",
    "host.*",
    "ingest.statsd_interval_ms",
    "ingest.percentiles",
    "app.*",
];

/// The keys that can be set remotely, besides `app.*`: the protocol's
/// list, which the hub's `config set` checks against too.
pub use fleetmq_protocol::CONFIG_KEYS as KEYS;

/// Whether `may_set` lets the hub set `key`: named exactly, or by a
/// `prefix.*` pattern.
pub fn allowed(may_set: &[impl AsRef<str>], key: &str) -> bool {
    may_set.iter().any(|m| match m.as_ref().strip_suffix(".*") {
        Some(prefix) => key.strip_prefix(prefix).is_some_and(|r| r.starts_with('.')),
        None => m.as_ref() == key,
    })
}

/// A `may_set` entry that names no key this agent can set.
pub fn unknown_pattern(may_set: &[String]) -> Option<&str> {
    may_set.iter().map(String::as_str).find(|m| !names_a_key(m))
}

fn names_a_key(m: &str) -> bool {
    match m.strip_suffix(".*") {
        Some(prefix) => {
            prefix == "app"
                || KEYS
                    .iter()
                    .any(|k| k.strip_prefix(prefix).is_some_and(|r| r.starts_with('.')))
        }
        None => fleetmq_protocol::is_config_key(m),
    }
}
