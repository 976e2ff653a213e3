//! What a SIGHUP changes: the difference between the running configuration
//! and the one just read, split into what applies at once and what waits
//! for a restart. Plain data in, plain data out.

use crate::config::AgentConfig;

/// Keys (or sections) that changed, by when they take effect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Changed, and applied to the running agent now.
    pub applied: Vec<&'static str>,
    /// Changed, but kept at their running values until a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Compares the running configuration `old` with `new`.
pub fn diff(old: &AgentConfig, new: &AgentConfig) -> Diff {
    let mut d = Diff::default();
    let mut check = |key: &'static str, changed: bool, live: bool| {
        if changed {
            if live {
                &mut d.applied
            } else {
                &mut d.needs_restart
            }
            .push(key);
        }
    };
    let (t0, t1) = (&old.telemetry, &new.telemetry);
    check(
        "telemetry.sample_interval_ms",
        t0.sample_interval_ms != t1.sample_interval_ms,
        true,
    );
    check("host", old.host != new.host, true);
    check("jobs", old.jobs != new.jobs, true);
    check("commands", old.commands != new.commands, true);
    check("exec", old.exec != new.exec, true);
    // The hub learned the heartbeat interval from our Hello.
    check("presence", old.presence != new.presence, false);
    check("device_id", old.device_id != new.device_id, false);
    check("hub", old.hub != new.hub, false);
    check(
        "hub_public_key",
        old.hub_public_key != new.hub_public_key,
        false,
    );
    check("data_dir", old.data_dir != new.data_dir, false);
    check("groups", old.groups != new.groups, false);
    check(
        "one_connection",
        old.one_connection != new.one_connection,
        false,
    );
    let mut same_t = t1.clone();
    same_t.sample_interval_ms = t0.sample_interval_ms;
    check(
        "telemetry (other than sample_interval_ms)",
        *t0 != same_t,
        false,
    );
    check("spool", old.spool != new.spool, false);
    let (i0, i1) = (&old.ingest, &new.ingest);
    check(
        "ingest.statsd_interval_ms, ingest.percentiles",
        i0.statsd_interval_ms != i1.statsd_interval_ms || i0.percentiles != i1.percentiles,
        true,
    );
    check(
        "ingest.udp, ingest.unix",
        i0.udp != i1.udp || i0.unix != i1.unix,
        false,
    );
    check("remote", old.remote != new.remote, true);
    check("net", old.net != new.net, false);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let d = diff(&old, &new);
        assert_eq!(
            d.applied,
            vec!["telemetry.sample_interval_ms", "host", "exec"]
        );
        assert_eq!(d.needs_restart, vec!["presence", "hub", "spool"]);
    }

    #[test]
    fn another_telemetry_key_is_not_taken_for_the_interval() {
        let old = AgentConfig::default();
        let mut new = old.clone();
        new.telemetry.batch_max_records += 1;
        let d = diff(&old, &new);
        assert_eq!(d.applied, Vec::<&str>::new());
        assert_eq!(
            d.needs_restart,
            vec!["telemetry (other than sample_interval_ms)"]
        );
    }
}
