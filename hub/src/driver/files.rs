//! What the hub reads from files before it binds a socket: its key pair,
//! the allow lists, the HTTP tokens and certificate, the webhooks'
//! authorities. `run` starts from them; `check-config` reads them and
//! stops, so that a file that would stop the hub is found before a restart.

use super::*;

/// The files a hub with this configuration starts from, read and checked.
pub struct Files {
    /// The hub's key pair, if it has one yet (none read with `--insecure`).
    pub keys: Option<keys::KeyPair>,
    /// The allow list (none with `--insecure`).
    pub allow: Option<AllowList>,
    /// The remote operators' allow list, when `listen.operator_remote` is
    /// set.
    pub operators: Option<Operators>,
    /// The HTTP side's, when `listen.http` is set.
    pub http: Option<HttpFiles>,
    /// The authorities `https://` webhooks are checked against, when one
    /// is set.
    pub roots: Option<Vec<ureq::tls::Certificate<'static>>>,
}

/// The HTTP side's files.
pub struct HttpFiles {
    /// The bearer token every request but `/health` and the page needs
    /// (made at start when its file is missing).
    pub token: Option<TokenFile>,
    /// The token that may also act.
    pub admin: Option<TokenFile>,
    /// The HTTPS certificate and key.
    pub certs: Option<std::sync::Arc<crate::operator::http::tls::Certs>>,
}

/// Reads and checks the files `config` names, writing nothing; the first
/// that would stop the hub is the error.
pub fn read(config: &HubConfig, insecure: bool) -> Result<Files, Error> {
    let (keys, allow) = if insecure {
        (None, None)
    } else {
        let pair = keys::load(&config.data_dir, "hub").map_err(Error::Keys)?;
        let list = AllowList::read(&config.allow_list_path()).map_err(Error::AllowList)?;
        (pair, Some(list))
    };
    let operators = if config.listen.operator_remote.is_empty() {
        None
    } else if insecure {
        return Err(Error::RemoteNeedsCurve);
    } else {
        let path = config.operator_allow_list_path();
        Some(Operators::load(&path).map_err(Error::Operators)?)
    };
    let http = if config.listen.http.is_empty() {
        None
    } else {
        let token = (config.http_token_path())
            .map(|p| TokenFile::read(&p))
            .transpose()?;
        // The configuration holds it as IP:PORT (HubConfig::validate).
        if let Ok(at) = config.listen.http.parse::<std::net::SocketAddr>() {
            crate::operator::http::may_serve(&config.listen.http, at.ip(), token.is_some())?;
        }
        let admin = (config.http_admin_token_path())
            .map(|p| TokenFile::read(&p))
            .transpose()?;
        let certs = (config.http_tls_paths())
            .map(|(cert, key)| crate::operator::http::tls::Certs::load(&cert, &key))
            .transpose()
            .map_err(HttpError::Tls)?;
        Some(HttpFiles {
            token,
            admin,
            certs,
        })
    };
    if !config.cluster.servers.is_empty() {
        cluster_files(config)?;
    }
    let roots = (config.alerts.any_https())
        .then(|| super::webhooks::roots(config.alerts_ca_path().as_deref()))
        .transpose()
        .map_err(Error::WebhookRoots)?;
    Ok(Files {
        keys,
        allow,
        operators,
        http,
        roots,
    })
}

/// The files a front-end connects to NATS with, each readable, and each
/// that holds certificates holding at least one (NATS reads them itself
/// when it connects).
fn cluster_files(config: &HubConfig) -> Result<(), Error> {
    let c = &config.cluster;
    for (key, file, certificates) in [
        ("cluster.credentials", &c.credentials, false),
        ("cluster.tls_ca", &c.tls_ca, true),
        ("cluster.tls_cert", &c.tls_cert, true),
        ("cluster.tls_key", &c.tls_key, false),
    ] {
        if file.as_os_str().is_empty() {
            continue;
        }
        let path = config.data_dir.join(file);
        if certificates {
            crate::operator::http::tls::pem_certificates(&path, key).map_err(Error::ClusterFile)?;
        } else if let Err(e) = std::fs::File::open(&path) {
            return Err(Error::ClusterFile(format!(
                "reading {key} {}: {e}",
                path.display()
            )));
        }
    }
    Ok(())
}

/// `check-config`: what a hub with `config` would start from, in a few
/// lines, or the error that would stop it. Nothing is bound, locked or
/// written: a running hub may be serving from the same data directory.
pub fn check(config: &HubConfig, source: &str, insecure: bool) -> Result<String, Error> {
    let files = read(config, insecure)?;
    let l = &config.listen;
    let security = match (&files.keys, &files.allow) {
        (_, None) => "plaintext (--insecure)".to_string(),
        (pair, Some(list)) => format!(
            "CURVE, {}, {} key(s) on the allow list {}",
            if pair.is_some() {
                "with the hub's key pair"
            } else {
                "with a key pair made at first start"
            },
            list.len(),
            config.allow_list_path().display()
        ),
    };
    let remote = match &files.operators {
        Some(list) => format!("{} ({} operator(s) allowed)", l.operator_remote, list.len()),
        None => "none".into(),
    };
    let http = match &files.http {
        None => "off".to_string(),
        Some(h) => format!(
            "{}://{} ({}{})",
            if h.certs.is_some() { "https" } else { "http" },
            l.http,
            match &h.token {
                Some(TokenFile::Held(_)) => "a bearer token",
                Some(TokenFile::Missing(_)) => "a bearer token made at first start",
                None => "no token: this machine only",
            },
            match &h.admin {
                Some(TokenFile::Held(_)) => ", an admin token that may act",
                Some(TokenFile::Missing(_)) => ", an admin token that may act, made at first start",
                None => "",
            }
        ),
    };
    let cluster = match config.cluster.servers.as_slice() {
        [] => "none".to_string(),
        servers => format!("a front-end over NATS at {}", servers.join(", ")),
    };
    Ok(format!(
        "ok: {source}\n\
         \x20 data        {}\n\
         \x20 agents      {}, {security}\n\
         \x20 operators   {}; remote: {remote}\n\
         \x20 HTTP        {http}\n\
         \x20 alerts      {} rule(s), {} webhook(s)\n\
         \x20 cluster     {cluster}\n",
        config.data_dir.display(),
        l.telemetry,
        operators_here(config),
        config.alerts.rules.len(),
        config.alerts.webhooks.len(),
    ))
}

/// Where operators on this machine reach the hub, and who may.
fn operators_here(config: &HubConfig) -> String {
    let endpoint = config.operator_endpoint();
    if fleetmq_net::endpoint::ipc_path(&endpoint).is_some() {
        format!("{endpoint} (the hub's user only)")
    } else {
        format!("{endpoint} (any user on this machine)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> HubConfig {
        HubConfig {
            data_dir: dir.to_path_buf(),
            ..HubConfig::default()
        }
    }

    #[test]
    fn a_check_writes_nothing_and_says_what_would_run() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let said = check(&config_in(&data), "hub.toml", false).unwrap();
        assert!(
            said.starts_with("ok: hub.toml\n")
                && said.contains("a key pair made at first start, 0 key(s)")
                && said.contains("HTTP        http://127.0.0.1:7756 (no token: this machine only)"),
            "{said}"
        );
        assert!(!data.exists(), "nothing is made, not even the allow list");
        let plain = check(&config_in(&data), "hub.toml", true).unwrap();
        assert!(plain.contains("plaintext (--insecure)"), "{plain}");
    }

    #[test]
    fn what_would_stop_the_hub_stops_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let mut remote = config_in(dir.path());
        remote.listen.operator_remote = "tcp://0.0.0.0:7757".into();
        let e = check(&remote, "hub.toml", true).unwrap_err();
        assert!(matches!(e, Error::RemoteNeedsCurve), "{e}");

        let mut open = config_in(dir.path());
        open.listen.http = "0.0.0.0:7756".into();
        let e = check(&open, "hub.toml", false).unwrap_err().to_string();
        assert!(e.contains("without a token"), "{e}");
        std::fs::write(dir.path().join("http.token"), "q2Vw8yMZ3pTq9nFv0sBx7KcR\n").unwrap();
        open.security.http_token_file = "http.token".into();
        let said = check(&open, "hub.toml", false).unwrap();
        assert!(said.contains("0.0.0.0:7756 (a bearer token)"), "{said}");

        let mut front_end = config_in(dir.path());
        front_end.cluster.servers = vec!["nats://127.0.0.1:4222".into()];
        front_end.cluster.credentials = "fe.creds".into();
        let e = check(&front_end, "hub.toml", false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cluster.credentials") && e.contains("fe.creds"),
            "{e}"
        );
        std::fs::write(dir.path().join("fe.creds"), "a creds file").unwrap();
        front_end.cluster.tls_ca = "ca.pem".into();
        std::fs::write(dir.path().join("ca.pem"), "not PEM").unwrap();
        let e = check(&front_end, "hub.toml", false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cluster.tls_ca") && e.contains("no certificate"),
            "{e}"
        );
        front_end.cluster.tls_ca = PathBuf::new();
        let said = check(&front_end, "hub.toml", false).unwrap();
        assert!(
            said.contains("a front-end over NATS at nats://127.0.0.1:4222"),
            "{said}"
        );

        std::fs::write(dir.path().join("allowed_devices"), "pi-1 short\n").unwrap();
        let e = format!(
            "{:#}",
            anyhow::Error::from(check(&open, "hub.toml", false).unwrap_err())
        );
        assert!(e.contains("line 1") && e.contains("pi-1"), "{e}");
    }
}
