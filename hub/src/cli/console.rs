//! `console-url`: the console's address with the HTTP token in its
//! fragment (`/#token=...`, which the browser never sends; the page keeps
//! it and sends it as a bearer token), so that an admin opens the console
//! of a hub whose token files only the hub's user may read.

use std::process::ExitCode;

use super::hub::config_at;
use super::{ConsoleUrlArgs, say, usage};
use crate::config::HubConfig;
use crate::operator::http::TokenFile;

pub(super) fn url(a: &ConsoleUrlArgs) -> anyhow::Result<ExitCode> {
    let config = config_at(&a.at)?;
    let base = address(&config)?;
    let (role, path) = if a.admin {
        let path = config.http_admin_token_path().ok_or_else(|| {
            usage("security.http_admin_token_file is not set, so the console cannot act: set it, and the hub makes the file at its next start")
        })?;
        ("admin", Some(path))
    } else {
        ("read", config.http_token_path())
    };
    let url = match path.as_deref().map(TokenFile::read).transpose() {
        Ok(Some(TokenFile::Held(token))) => format!("{base}/#token={token}"),
        Ok(Some(TokenFile::Missing(path))) => anyhow::bail!(
            "{} does not exist yet: the hub makes it at its next start",
            path.display()
        ),
        Ok(None) => format!("{base}/"),
        Err(e) => anyhow::bail!(
            "{e}; run this as the hub's user, who alone may read it (sudo -u fleetmq fleetmq-hub console-url --config ...)"
        ),
    };
    say(
        a.at.json,
        serde_json::json!({ "url": url, "role": role }),
        format!("{url}\n"),
    );
    Ok(ExitCode::SUCCESS)
}

/// Where the running hub serves HTTP (its endpoints.json), else where its
/// configuration says it will; an address that means every interface is
/// given as this machine's loopback.
fn address(config: &HubConfig) -> anyhow::Result<String> {
    let written = crate::operator::client::written_endpoints(&config.data_dir)
        .ok()
        .flatten()
        .map(|eps| eps.http)
        .filter(|http| !http.is_empty());
    let url = match written {
        Some(url) => url,
        None if config.listen.http.is_empty() => {
            anyhow::bail!(
                "this hub serves no HTTP (listen.http is \"\"): set listen.http, e.g. \"127.0.0.1:7756\""
            )
        }
        None => {
            let tls = config.http_tls_paths().is_some();
            format!(
                "{}://{}",
                if tls { "https" } else { "http" },
                config.listen.http
            )
        }
    };
    Ok(url
        .replacen("://0.0.0.0:", "://127.0.0.1:", 1)
        .replacen("://[::]:", "://[::1]:", 1))
}
