//! The agent's configuration: defaults, the commented example, validation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetmq_net::SocketOptions;
use fleetmq_net::config::ConfigError;
use serde::{Deserialize, Serialize};

use crate::may_set::{DEFAULT_MAY_SET, KEYS, unknown_pattern};
use crate::sources::host::{GROUPS, HostConfig};
use crate::sources::ingest::IngestConfig;
use crate::sources::logs::LogsConfig;
use crate::telemetry::spool::{Fsync, FullPolicy, SpoolConfig};
use crate::telemetry::uplink::UplinkLimits;

/// The commented default configuration, printed by `print-config`.
pub const EXAMPLE: &str = include_str!("../agent.example.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub device_id: String,
    pub hub: String,
    pub hub_public_key: String,
    pub data_dir: PathBuf,
    pub groups: Vec<String>,
    pub one_connection: bool,
    pub telemetry: Telemetry,
    pub spool: Spool,
    pub host: HostConfig,
    pub ingest: IngestConfig,
    pub logs: LogsConfig,
    pub presence: Presence,
    pub jobs: Jobs,
    pub commands: Commands,
    pub exec: Exec,
    pub remote: RemoteConfig,
    pub net: SocketOptions,
}

/// What the hub's desired configuration may change here (see `remote`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RemoteConfig {
    /// Keys the hub may set: exact names, or `prefix.*`.
    pub may_set: Vec<String>,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            may_set: DEFAULT_MAY_SET.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Telemetry {
    pub sample_interval_ms: u64,
    pub flush_interval_ms: u64,
    pub batch_max_records: usize,
    pub max_in_flight: usize,
    pub ack_timeout_ms: u64,
    pub ack_timeout_max_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Spool {
    pub max_bytes: u64,
    pub segment_bytes: u64,
    pub when_full: FullPolicy,
    pub fsync: FsyncMode,
    pub fsync_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncMode {
    Interval,
    Always,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Presence {
    pub heartbeat_ms: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jobs {
    pub allow: Vec<String>,
    pub max_concurrent: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Commands {
    pub allow: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Exec {
    pub programs: Vec<String>,
    pub timeout_ms: u32,
    pub max_output_bytes: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            device_id: String::new(),
            hub: "tcp://127.0.0.1:7750".into(),
            hub_public_key: String::new(),
            data_dir: PathBuf::from("fleetmq-agent-data"),
            groups: Vec::new(),
            one_connection: true,
            telemetry: Telemetry::default(),
            spool: Spool::default(),
            host: HostConfig::default(),
            ingest: IngestConfig::default(),
            logs: LogsConfig::default(),
            presence: Presence::default(),
            jobs: Jobs::default(),
            commands: Commands::default(),
            exec: Exec::default(),
            remote: RemoteConfig::default(),
            net: SocketOptions::default(),
        }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            sample_interval_ms: 10_000,
            flush_interval_ms: 1_000,
            batch_max_records: 500,
            max_in_flight: 16,
            ack_timeout_ms: 5_000,
            ack_timeout_max_ms: 60_000,
        }
    }
}

impl Default for Spool {
    fn default() -> Self {
        Spool {
            max_bytes: 64 << 20,
            segment_bytes: 1 << 20,
            when_full: FullPolicy::DropOldest,
            fsync: FsyncMode::Interval,
            fsync_interval_ms: 1_000,
        }
    }
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            heartbeat_ms: 5_000,
        }
    }
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            allow: vec!["echo".into()],
            max_concurrent: 1,
        }
    }
}

impl Default for Commands {
    fn default() -> Self {
        Commands {
            allow: vec!["ping".into(), "status".into()],
        }
    }
}

impl Default for Exec {
    fn default() -> Self {
        Exec {
            programs: Vec::new(),
            timeout_ms: 30_000,
            max_output_bytes: 65_536,
        }
    }
}

impl AgentConfig {
    /// The hubs to connect to, in order: `hub` split at commas. The agent
    /// is on one at a time and moves to the next when its hub goes away.
    pub fn hubs(&self) -> Vec<&str> {
        self.hub
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect()
    }
}

/// The host name made into a valid device id.
pub fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let id: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(fleetmq_protocol::names::MAX_NAME_LEN)
        .collect();
    if id.is_empty() { "device".into() } else { id }
}

impl AgentConfig {
    /// Reads `path`, or the defaults when there is none. Call
    /// [`AgentConfig::validate`] after applying command-line overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(AgentConfig::default());
        };
        let mut cfg: AgentConfig = fleetmq_net::config::load(path)?;
        // A relative key file is found beside the config file.
        let key = Path::new(&cfg.hub_public_key);
        if !cfg.hub_public_key.is_empty()
            && fleetmq_net::keys::check(&cfg.hub_public_key).is_err()
            && key.is_relative()
            && let Some(dir) = path.parent()
            && dir.join(key).is_file()
        {
            cfg.hub_public_key = dir.join(key).to_string_lossy().into_owned();
        }
        Ok(cfg)
    }

    /// Fills in the device id and checks values that parse but make no sense.
    pub fn validate(&mut self, source: &str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            source_name: source.to_string(),
            key,
            message,
        };
        if self.device_id.is_empty() {
            self.device_id = hostname();
        }
        fleetmq_protocol::validate_device_id(&self.device_id)
            .map_err(|e| invalid("device_id", e.to_string()))?;
        if self.hubs().is_empty() {
            return Err(invalid(
                "hub",
                "names no hub: use tcp://HOST:PORT, or several separated by commas".into(),
            ));
        }
        for hub in self.hubs() {
            fleetmq_net::endpoint::validate(hub, false).map_err(|m| invalid("hub", m))?;
            if !hub.starts_with("tcp://") {
                return Err(invalid(
                    "hub",
                    format!("{hub:?} must be tcp://HOST:PORT (several: separated by commas)"),
                ));
            }
        }
        if !self.hub_public_key.is_empty() {
            // The hub's hub.pub line, or the path of a copy of that file.
            self.hub_public_key = fleetmq_net::keys::key_or_file(&self.hub_public_key)
                .map_err(|e| invalid("hub_public_key", e.to_string()))?;
        }
        for g in &self.groups {
            fleetmq_protocol::validate_group(g).map_err(|e| invalid("groups", e.to_string()))?;
        }
        crate::sources::logs::check(&self.logs).map_err(|(key, message)| invalid(key, message))?;
        let t = &self.telemetry;
        for (key, v) in [
            ("telemetry.sample_interval_ms", t.sample_interval_ms),
            ("telemetry.flush_interval_ms", t.flush_interval_ms),
            ("telemetry.ack_timeout_ms", t.ack_timeout_ms),
            ("telemetry.batch_max_records", t.batch_max_records as u64),
            ("spool.segment_bytes", self.spool.segment_bytes),
            ("spool.fsync_interval_ms", self.spool.fsync_interval_ms),
            ("telemetry.max_in_flight", t.max_in_flight as u64),
            (
                "presence.heartbeat_ms",
                u64::from(self.presence.heartbeat_ms),
            ),
            ("jobs.max_concurrent", self.jobs.max_concurrent as u64),
            ("exec.timeout_ms", u64::from(self.exec.timeout_ms)),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be more than 0".into()));
            }
        }
        // Shorter than these, a Pi spends its CPU on timers and /proc.
        let host_ms = self.host.interval_ms;
        for (key, v, min) in [
            ("telemetry.sample_interval_ms", t.sample_interval_ms, 100),
            ("telemetry.flush_interval_ms", t.flush_interval_ms, 10),
            ("telemetry.ack_timeout_ms", t.ack_timeout_ms, 100),
            (
                "presence.heartbeat_ms",
                u64::from(self.presence.heartbeat_ms),
                100,
            ),
            ("spool.fsync_interval_ms", self.spool.fsync_interval_ms, 10),
            (
                "ingest.statsd_interval_ms",
                self.ingest.statsd_interval_ms,
                100,
            ),
            (
                "host.interval_ms",
                host_ms,
                if host_ms == 0 { 0 } else { 100 },
            ),
        ] {
            if v < min {
                return Err(invalid(
                    key,
                    format!("{v} ms is too short: the least is {min} ms"),
                ));
            }
        }
        if t.ack_timeout_max_ms < t.ack_timeout_ms {
            return Err(invalid(
                "telemetry.ack_timeout_max_ms",
                format!(
                    "must be at least telemetry.ack_timeout_ms ({})",
                    t.ack_timeout_ms
                ),
            ));
        }
        let most = fleetmq_protocol::telemetry::MAX_IN_FLIGHT;
        if t.max_in_flight > most {
            return Err(invalid(
                "telemetry.max_in_flight",
                format!(
                    "must be at most {most}: the hub knows a resend only within that many of a device's newest batch"
                ),
            ));
        }
        let most = fleetmq_protocol::telemetry::MAX_BATCH_RECORDS;
        if t.batch_max_records > most {
            return Err(invalid(
                "telemetry.batch_max_records",
                format!("must be at most {most}, the most a hub takes in one batch"),
            ));
        }
        if self.spool.segment_bytes < 4096 || self.spool.segment_bytes > 64 << 20 {
            return Err(invalid(
                "spool.segment_bytes",
                "must be between 4096 and 67108864".into(),
            ));
        }
        if self.spool.max_bytes < 2 * self.spool.segment_bytes {
            return Err(invalid(
                "spool.max_bytes",
                format!(
                    "must be at least twice spool.segment_bytes ({}), so that a full spool can drop its oldest segment",
                    self.spool.segment_bytes
                ),
            ));
        }
        if let Some(group) = self.host.unknown_group() {
            return Err(invalid(
                "host.collect",
                format!("{group:?} is not a host metric group; use any of {GROUPS:?}"),
            ));
        }
        if self.ingest.unix.contains('/') {
            return Err(invalid(
                "ingest.unix",
                format!(
                    "{:?} must be a file name in the data directory",
                    self.ingest.unix
                ),
            ));
        }
        if !self.ingest.udp.is_empty() && self.ingest.udp.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "ingest.udp",
                format!(
                    "{:?} must be IP:PORT, e.g. \"127.0.0.1:8125\", or \"\" for off",
                    self.ingest.udp
                ),
            ));
        }
        if self.ingest.percentiles.len() > 10
            || self
                .ingest
                .percentiles
                .iter()
                .any(|p| !(*p > 0.0 && *p <= 100.0))
        {
            return Err(invalid(
                "ingest.percentiles",
                "takes at most 10, each above 0 and at most 100, e.g. [50, 90, 99]".into(),
            ));
        }
        for kind in &self.jobs.allow {
            if !matches!(kind.as_str(), "echo" | "exec") {
                return Err(invalid(
                    "jobs.allow",
                    format!("{kind:?} is not a job kind; use \"echo\" or \"exec\""),
                ));
            }
        }
        for name in &self.commands.allow {
            if !matches!(name.as_str(), "ping" | "status" | "exec") {
                return Err(invalid(
                    "commands.allow",
                    format!("{name:?} is not a command; use \"ping\", \"status\" or \"exec\""),
                ));
            }
        }
        if let Some(bad) = unknown_pattern(&self.remote.may_set) {
            return Err(invalid(
                "remote.may_set",
                format!(
                    "{bad:?} names no key the hub can set; use {}, app.* or app.NAME, or a prefix like host.*",
                    KEYS.join(", ")
                ),
            ));
        }
        for p in &self.exec.programs {
            if p.is_empty() || (p.contains('/') && !p.starts_with('/')) {
                return Err(invalid(
                    "exec.programs",
                    format!("{p:?} must be a program name (looked up in PATH) or an absolute path"),
                ));
            }
        }
        Ok(())
    }

    pub fn uplink_limits(&self) -> UplinkLimits {
        let t = &self.telemetry;
        UplinkLimits {
            flush_interval: Duration::from_millis(t.flush_interval_ms),
            batch_max_records: t.batch_max_records,
            max_in_flight: t.max_in_flight,
            ack_timeout: Duration::from_millis(t.ack_timeout_ms),
            ack_timeout_max: Duration::from_millis(t.ack_timeout_max_ms),
        }
    }

    pub fn spool_config(&self) -> SpoolConfig {
        let s = &self.spool;
        SpoolConfig {
            dir: self.data_dir.join("spool"),
            max_bytes: s.max_bytes,
            segment_bytes: s.segment_bytes,
            policy: s.when_full,
            fsync: match s.fsync {
                FsyncMode::Always => Fsync::Always,
                FsyncMode::Interval => Fsync::Interval(Duration::from_millis(s.fsync_interval_ms)),
            },
        }
    }
}

#[cfg(test)]
mod tests;
