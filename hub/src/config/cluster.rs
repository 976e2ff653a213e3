//! `[cluster]`: a hub as a front-end over a NATS JetStream cluster.

use std::path::PathBuf;

use fleetmq_net::config::ConfigError;
use serde::Deserialize;

use super::HubConfig;

/// Front-end over a NATS JetStream cluster (see `crate::cluster`): empty
/// `servers` is the single hub on SQLite.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cluster {
    /// NATS servers, `nats://HOST:PORT` or `tls://HOST:PORT`.
    pub servers: Vec<String>,
    /// This front-end's name, unique in the cluster and the same across
    /// restarts; empty for the machine's host name.
    pub name: String,
    /// A NATS credentials file (`.creds`); relative to data_dir unless
    /// absolute; empty for none.
    pub credentials: PathBuf,
    /// A CA certificate file the servers' TLS certificates are checked
    /// against; empty for the system's roots. Naming one requires TLS.
    pub tls_ca: PathBuf,
    /// A client certificate and its key, for servers that verify clients.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Copies JetStream keeps of every stream and bucket the hub makes.
    pub replicas: u8,
    /// How long JetStream remembers a batch's id to store a resent batch
    /// once (seconds).
    pub dedupe_window_s: u64,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            servers: Vec::new(),
            name: String::new(),
            credentials: PathBuf::new(),
            tls_ca: PathBuf::new(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            replicas: 3,
            dedupe_window_s: 900,
        }
    }
}

impl HubConfig {
    pub(super) fn validate_cluster(
        &self,
        invalid: &impl Fn(&'static str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let c = &self.cluster;
        for server in &c.servers {
            let ok = ["nats://", "tls://"].iter().any(|scheme| {
                server
                    .strip_prefix(scheme)
                    .and_then(|rest| rest.rsplit_once(':'))
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
            });
            if !ok {
                return Err(invalid(
                    "cluster.servers",
                    format!("{server:?} must be nats://HOST:PORT or tls://HOST:PORT"),
                ));
            }
        }
        if c.servers.is_empty() {
            return Ok(());
        }
        if !(1..=5).contains(&c.replicas) {
            return Err(invalid(
                "cluster.replicas",
                format!(
                    "{} is not a JetStream replica count: use 1 to 5 (3 in a 3-node cluster)",
                    c.replicas
                ),
            ));
        }
        if c.dedupe_window_s < 60 {
            return Err(invalid(
                "cluster.dedupe_window_s",
                "must be at least 60: agents send an unacked batch again after up to 60 s".into(),
            ));
        }
        if c.tls_cert.as_os_str().is_empty() != c.tls_key.as_os_str().is_empty() {
            return Err(invalid(
                "cluster.tls_cert",
                "tls_cert and tls_key go together: name both, or neither".into(),
            ));
        }
        if !c.name.is_empty() && !crate::cluster::valid_name(&c.name) {
            return Err(invalid(
                "cluster.name",
                format!(
                    "{:?} must be 1 to 64 letters, digits, '-' or '_' (it is part of NATS subjects and keys)",
                    c.name
                ),
            ));
        }
        Ok(())
    }
}
