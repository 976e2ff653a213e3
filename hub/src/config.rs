//! The hub's configuration: defaults, the commented example, validation.

use std::path::{Path, PathBuf};

use fleetmq_net::SocketOptions;
use fleetmq_net::config::ConfigError;
use serde::Deserialize;

use crate::store::Synchronous;

mod alerts;
mod cluster;
pub use alerts::{Alerts, Condition, LogWatch, Op, Rule, RuleConfig};
pub use cluster::Cluster;

/// The commented default configuration, printed by `print-config`.
pub const EXAMPLE: &str = include_str!("../hub.example.toml");

/// Everything the hub can be told.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    pub data_dir: PathBuf,
    pub listen: Listen,
    pub storage: Storage,
    pub presence: Presence,
    pub jobs: Jobs,
    pub commands: Commands,
    pub security: Security,
    pub limits: Limits,
    pub retention: Retention,
    pub cluster: Cluster,
    pub alerts: Alerts,
    pub net: SocketOptions,
}

/// How long, and how much, the store keeps of each kind (see
/// `store::retention`). A limit of 0 is off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    pub telemetry: KeepBytes,
    pub logs: KeepLogs,
    pub chat: KeepRows,
    pub jobs: KeepRows,
    pub commands: KeepRows,
}

/// Telemetry: batches older than `max_age_s` (by when the hub stored
/// them), and the oldest past `max_bytes` of batch bodies, are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepBytes {
    pub max_age_s: u64,
    pub max_bytes: u64,
}

/// Log lines: batches holding them older than `max_age_s`, and the oldest
/// of them past `max_bytes`, are deleted, so that logs cannot crowd out
/// samples; `[retention.telemetry]` applies to them too. 0 is off (the
/// default: they are kept as telemetry is).
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepLogs {
    pub max_age_s: u64,
    pub max_bytes: u64,
}

/// Chat lines, finished jobs, the command log: rows older than
/// `max_age_s`, and the oldest past `max_rows`, are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepRows {
    pub max_age_s: u64,
    pub max_rows: u64,
}

/// Thirty days.
const MONTH_S: u64 = 30 * 86_400;

impl Default for KeepBytes {
    fn default() -> Self {
        KeepBytes {
            max_age_s: MONTH_S,
            max_bytes: 0,
        }
    }
}

impl Default for KeepRows {
    fn default() -> Self {
        KeepRows {
            max_age_s: MONTH_S,
            max_rows: 100_000,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            telemetry: KeepBytes::default(),
            logs: KeepLogs::default(),
            chat: KeepRows {
                max_rows: 1_000_000,
                ..KeepRows::default()
            },
            jobs: KeepRows::default(),
            commands: KeepRows::default(),
        }
    }
}

/// What one device may cost the hub in work (see `core::budgets`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Records (samples and chat lines) a second; 0 turns it off.
    pub device_records_per_s: u32,
    /// Records above the rate in a burst; at least a whole batch.
    pub device_records_burst: u32,
    /// Telemetry bytes a second; 0 turns it off.
    pub device_bytes_per_s: u32,
    /// Bytes above the rate in a burst; at least one whole message.
    pub device_bytes_burst: u32,
    /// Distinct series one device may have since the hub started; 0 for
    /// no limit of its own (the hub keeps at most 200,000 in all).
    pub device_series: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            device_records_per_s: 2_000,
            device_records_burst: 40_000,
            device_bytes_per_s: 256 << 10,
            device_bytes_burst: 4 << 20,
            device_series: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Security {
    /// The allow list file; relative to data_dir unless absolute.
    pub allow_list: PathBuf,
    /// Messages a second one device may send the hub (telemetry, results,
    /// command replies together); 0 turns the limit off.
    pub device_rate: u32,
    /// How many messages above the rate a device may send in a burst.
    pub device_burst: u32,
    /// A file holding the bearer token every HTTP request but `/health`
    /// must carry; relative to data_dir unless absolute; empty for none.
    /// Without one the hub serves HTTP on loopback only. Made (mode 600)
    /// at first start when it does not exist.
    pub http_token_file: PathBuf,
    /// A file holding the admin token: a request that carries it may also
    /// act (the page's actions: commands, jobs, announcements); empty for
    /// none, and then HTTP only reads. Made like http_token_file.
    pub http_admin_token_file: PathBuf,
    /// PEM files of the certificate (its chain, the server's first) and
    /// its private key: with both, HTTP is served as HTTPS only; relative
    /// to data_dir unless absolute; empty for none. Read again when they
    /// change.
    pub http_cert_file: PathBuf,
    pub http_key_file: PathBuf,
    /// The operator allow list (remote operators and their roles);
    /// relative to data_dir unless absolute.
    pub operator_allow_list: PathBuf,
    /// A device's groups come only from the allow list: one whose line
    /// pins none (no `groups=` word) is in no group, whatever its Hello
    /// names.
    pub pinned_groups_only: bool,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            allow_list: PathBuf::from("allowed_devices"),
            device_rate: 100,
            device_burst: 500,
            http_token_file: PathBuf::new(),
            http_admin_token_file: PathBuf::new(),
            http_cert_file: PathBuf::new(),
            http_key_file: PathBuf::new(),
            operator_allow_list: PathBuf::from("allowed_operators"),
            pinned_groups_only: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    pub telemetry: String,
    pub broadcast: String,
    pub jobs: String,
    pub results: String,
    pub commands: String,
    /// The local operator socket, plaintext: a loopback `tcp://` address,
    /// or `ipc://PATH`, a Unix socket only the hub's user may open (a
    /// relative PATH is in data_dir). See [`HubConfig::operator_endpoint`].
    pub operator: String,
    /// The CURVE operator socket for remote operators; "" for none.
    pub operator_remote: String,
    /// HTTP (`/metrics`, `/health`, `/api`): HOST:PORT, port 0 for any,
    /// "" for none. Where it listens is written as `http://HOST:PORT`.
    pub http: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    pub synchronous: Synchronous,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Presence {
    pub offline_after_heartbeats: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jobs {
    pub lease_ms: u32,
    pub max_attempts: u32,
    pub timeout_ms: u32,
    /// How long a job aimed at devices waits for an offline one.
    pub ttl_ms: u32,
}

impl Jobs {
    /// On front-ends, the cluster queue's lease (its consumer's ack wait):
    /// `lease_ms`, or longer to fit the default time limit and 5 s.
    pub fn queue_lease_ms(&self) -> u32 {
        self.lease_ms.max(self.timeout_ms.saturating_add(5_000))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Commands {
    pub timeout_ms: u32,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            data_dir: PathBuf::from("fleetmq-data"),
            listen: Listen::default(),
            storage: Storage::default(),
            presence: Presence::default(),
            jobs: Jobs::default(),
            commands: Commands::default(),
            security: Security::default(),
            limits: Limits::default(),
            retention: Retention::default(),
            cluster: Cluster::default(),
            alerts: Alerts::default(),
            net: SocketOptions::default(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        Listen::on("0.0.0.0", Some(7750))
    }
}

impl Listen {
    /// Agent-facing sockets on `host`, at `base` and the next four ports
    /// (or OS-chosen ports for `None`), and the operator socket on
    /// 127.0.0.1 at `base + 5`.
    pub fn on(host: &str, base: Option<u16>) -> Self {
        let ep = |host: &str, offset: u16| match base {
            Some(b) => format!("tcp://{host}:{}", b.saturating_add(offset)),
            None => format!("tcp://{host}:*"),
        };
        Listen {
            telemetry: ep(host, 0),
            broadcast: ep(host, 1),
            jobs: ep(host, 2),
            results: ep(host, 3),
            commands: ep(host, 4),
            operator: ep("127.0.0.1", 5),
            operator_remote: String::new(),
            http: format!("127.0.0.1:{}", base.map_or(0, |b| b.saturating_add(6))),
        }
    }
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            synchronous: Synchronous::Full,
        }
    }
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            offline_after_heartbeats: 3,
        }
    }
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            lease_ms: 30_000,
            max_attempts: 3,
            timeout_ms: 60_000,
            ttl_ms: 86_400_000,
        }
    }
}

impl Default for Commands {
    fn default() -> Self {
        Commands { timeout_ms: 5_000 }
    }
}

impl HubConfig {
    /// Reads `path`, or the defaults when there is none, and validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let config: HubConfig = match path {
            Some(p) => fleetmq_net::config::load(p)?,
            None => HubConfig::default(),
        };
        let source = path.map_or_else(|| "defaults".to_string(), |p| p.display().to_string());
        config.validate(&source)?;
        Ok(config)
    }

    /// The local operator endpoint, to bind and to find: `listen.operator`,
    /// with a relative `ipc://` path taken from data_dir and made absolute,
    /// so that a command run from any directory reaches it.
    pub fn operator_endpoint(&self) -> String {
        match fleetmq_net::endpoint::ipc_path(&self.listen.operator) {
            Some(path) if !Path::new(path).is_absolute() => {
                let file = self.data_dir.join(path);
                let file = std::path::absolute(&file).unwrap_or(file);
                format!("ipc://{}", file.display())
            }
            _ => self.listen.operator.clone(),
        }
    }

    /// Where the allow list is.
    pub fn allow_list_path(&self) -> PathBuf {
        self.data_dir.join(&self.security.allow_list)
    }

    pub fn operator_allow_list_path(&self) -> PathBuf {
        self.data_dir.join(&self.security.operator_allow_list)
    }

    /// `file` in the data directory (unless absolute), if one is set.
    fn data_file(&self, file: &Path) -> Option<PathBuf> {
        (!file.as_os_str().is_empty()).then(|| self.data_dir.join(file))
    }

    /// The HTTP token file, if one is set.
    pub fn http_token_path(&self) -> Option<PathBuf> {
        self.data_file(&self.security.http_token_file)
    }

    /// The HTTP admin token file, if one is set.
    pub fn http_admin_token_path(&self) -> Option<PathBuf> {
        self.data_file(&self.security.http_admin_token_file)
    }

    /// The certificate and key files HTTP is served over TLS with, if
    /// both are set.
    pub fn http_tls_paths(&self) -> Option<(PathBuf, PathBuf)> {
        let s = &self.security;
        Some((
            self.data_file(&s.http_cert_file)?,
            self.data_file(&s.http_key_file)?,
        ))
    }

    /// The authorities' file for `https://` webhooks, if one is set.
    pub fn alerts_ca_path(&self) -> Option<PathBuf> {
        self.data_file(&self.alerts.ca_file)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self, source: &str) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            source_name: source.to_string(),
            key,
            message,
        };
        let l = &self.listen;
        for (key, ep) in [
            ("listen.telemetry", &l.telemetry),
            ("listen.broadcast", &l.broadcast),
            ("listen.jobs", &l.jobs),
            ("listen.results", &l.results),
            ("listen.commands", &l.commands),
            ("listen.operator", &l.operator),
        ] {
            fleetmq_net::endpoint::validate(ep, true).map_err(|m| invalid(key, m))?;
        }
        if let Some(path) = fleetmq_net::endpoint::ipc_path(&l.operator)
            && (path.is_empty() || path.starts_with('@'))
        {
            return Err(invalid(
                "listen.operator",
                format!(
                    "{:?} needs a file: write ipc://operator.sock (in data_dir) or ipc:///ABSOLUTE/PATH; an abstract socket (ipc://@NAME) has no permissions, so any local user could act as the operator",
                    l.operator
                ),
            ));
        }
        let loopback = match l.operator.strip_prefix("tcp://") {
            Some(rest) => rest.rsplit_once(':').is_some_and(|(h, _)| is_loopback(h)),
            // ipc:// is a file on this machine; inproc:// reaches no one.
            None => true,
        };
        if !loopback {
            return Err(invalid(
                "listen.operator",
                format!(
                    "{:?} is not a loopback address: this socket is plaintext and unauthenticated, so it stays on 127.0.0.1; for operators on other machines set listen.operator_remote (CURVE, with security.operator_allow_list)",
                    l.operator
                ),
            ));
        }
        if !l.operator_remote.is_empty() {
            fleetmq_net::endpoint::validate(&l.operator_remote, true)
                .map_err(|m| invalid("listen.operator_remote", m))?;
        }
        if !l.http.is_empty() && l.http.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "listen.http",
                format!(
                    "{:?} must be IP:PORT like 127.0.0.1:7756 (port 0 lets the OS pick), or \"\" for no HTTP",
                    l.http
                ),
            ));
        }
        let s = &self.security;
        if s.http_cert_file.as_os_str().is_empty() != s.http_key_file.as_os_str().is_empty() {
            return Err(invalid(
                "security.http_cert_file",
                "HTTPS needs both security.http_cert_file and security.http_key_file (PEM), or neither for plain HTTP".into(),
            ));
        }
        if self.presence.offline_after_heartbeats == 0 {
            return Err(invalid(
                "presence.offline_after_heartbeats",
                "must be at least 1".into(),
            ));
        }
        if self.jobs.lease_ms == 0 {
            return Err(invalid("jobs.lease_ms", "must be more than 0".into()));
        }
        if self.jobs.max_attempts == 0 {
            return Err(invalid("jobs.max_attempts", "must be at least 1".into()));
        }
        if self.commands.timeout_ms == 0 {
            return Err(invalid("commands.timeout_ms", "must be more than 0".into()));
        }
        if self.security.allow_list.as_os_str().is_empty() {
            return Err(invalid(
                "security.allow_list",
                "needs a file name (the default is allowed_devices in data_dir)".into(),
            ));
        }
        if self.security.device_rate > 0 && self.security.device_burst == 0 {
            return Err(invalid(
                "security.device_burst",
                "must be at least 1 while device_rate is on".into(),
            ));
        }
        if self.net.max_message_bytes < 4096 {
            return Err(invalid(
                "net.max_message_bytes",
                "must be at least 4096".into(),
            ));
        }
        let l = &self.limits;
        let most = fleetmq_protocol::telemetry::MAX_BATCH_RECORDS;
        if l.device_records_per_s > 0 && (l.device_records_burst as usize) < most {
            return Err(invalid(
                "limits.device_records_burst",
                format!(
                    "must be at least {most} (one whole batch) while device_records_per_s is on"
                ),
            ));
        }
        if l.device_bytes_per_s > 0 && i64::from(l.device_bytes_burst) < self.net.max_message_bytes
        {
            return Err(invalid(
                "limits.device_bytes_burst",
                format!(
                    "must be at least net.max_message_bytes ({}) while device_bytes_per_s is on",
                    self.net.max_message_bytes
                ),
            ));
        }
        let (t, logs) = (&self.retention.telemetry, &self.retention.logs);
        for (key, theirs, ours) in [
            ("retention.logs.max_age_s", logs.max_age_s, t.max_age_s),
            ("retention.logs.max_bytes", logs.max_bytes, t.max_bytes),
        ] {
            if theirs > 0 && ours > 0 && theirs > ours {
                return Err(invalid(
                    key,
                    format!(
                        "{theirs} is more than [retention.telemetry]'s {ours}, which holds log lines too: lower it, or raise telemetry's"
                    ),
                ));
            }
        }
        self.validate_cluster(&invalid)?;
        self.validate_alerts(&invalid)
    }
}

/// Whether `host` (as in an endpoint) is this machine only.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests;
