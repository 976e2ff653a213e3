//! Alert notices to the webhooks of `[alerts]`, on a thread of their own,
//! so the loop never waits on a webhook. Each notice is POSTed to every
//! webhook as Alertmanager's webhook JSON (version 4, one alert a
//! message), tried three times a few seconds apart; one that still fails
//! is logged with why. An `https://` webhook's certificate is checked
//! against this machine's authorities and those of `alerts.ca_file`
//! (rustls, with ring).

use std::path::Path;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use serde_json::json;
use tracing::{debug, info, warn};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::core::alerts::{Notice, Status};
use crate::operator::format::fmt_ts;

/// Notices waiting for the thread; past this many, new ones are dropped
/// (and logged): the webhooks are far behind.
const QUEUE: usize = 1024;
/// Tries per notice and webhook.
const TRIES: u32 = 3;
/// How long one POST may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The thread that tells the webhooks.
pub struct Webhooks {
    tx: mpsc::SyncSender<Notice>,
}

impl Webhooks {
    /// Starts the thread, if there is a webhook to tell; `roots` are the
    /// authorities an `https://` webhook's certificate is checked against
    /// ([`roots`]).
    pub fn start(
        urls: Vec<String>,
        roots: Option<Vec<Certificate<'static>>>,
    ) -> std::io::Result<Option<Webhooks>> {
        if urls.is_empty() {
            return Ok(None);
        }
        let tls = TlsConfig::builder()
            .root_certs(RootCerts::Specific(Arc::new(roots.unwrap_or_default())))
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let (tx, rx) = mpsc::sync_channel::<Notice>(QUEUE);
        std::thread::Builder::new()
            .name("webhooks".into())
            .spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .timeout_global(Some(TIMEOUT))
                    .http_status_as_error(true)
                    .tls_config(tls)
                    .build()
                    .into();
                while let Ok(notice) = rx.recv() {
                    let body = body(&notice).to_string();
                    for url in &urls {
                        post(&agent, url, &body, &notice);
                    }
                }
            })?;
        Ok(Some(Webhooks { tx }))
    }

    /// Queues `notice` for every webhook.
    pub fn send(&self, notice: Notice) {
        if let Err(e) = self.tx.try_send(notice) {
            let notice = match e {
                mpsc::TrySendError::Full(n) | mpsc::TrySendError::Disconnected(n) => n,
            };
            warn!(rule = %notice.rule, device = %notice.device, "an alert notice was dropped: the webhooks are {QUEUE} notices behind (are they reachable?)");
        }
    }
}

/// The authorities an `https://` webhook's certificate may come from:
/// this machine's (as OpenSSL finds them; `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` count) and those in `ca_file`. Fails, saying what to do,
/// when `ca_file` cannot be read or holds no certificate, or when there is
/// none at all.
pub fn roots(ca_file: Option<&Path>) -> Result<Vec<Certificate<'static>>, String> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        warn!(error = %e, "could not read some of this machine's CA certificates");
    }
    let mut roots: Vec<Certificate<'static>> = (found.certs.iter())
        .map(|der| Certificate::from_der(der).to_owned())
        .collect();
    let machine = roots.len();
    if let Some(path) = ca_file {
        let own = crate::operator::http::tls::pem_certificates(path, "alerts.ca_file")?;
        roots.extend(own.iter().map(|der| Certificate::from_der(der).to_owned()));
    }
    if roots.is_empty() {
        return Err("an https:// webhook needs certificate authorities to check it against, and this machine has none: install them (apt install ca-certificates), or name a PEM file in alerts.ca_file".into());
    }
    info!(
        machine,
        ca_file = roots.len() - machine,
        "certificate authorities for https webhooks"
    );
    Ok(roots)
}

fn post(agent: &ureq::Agent, url: &str, body: &str, notice: &Notice) {
    for attempt in 1..=TRIES {
        let sent = agent
            .post(url)
            .content_type("application/json")
            .send(body.as_bytes());
        match sent {
            Ok(_) => {
                return debug!(url, rule = %notice.rule, device = %notice.device, "alert notice sent");
            }
            Err(e) if attempt == TRIES => {
                return warn!(url, rule = %notice.rule, device = %notice.device, error = %e, "an alert notice could not be sent after {TRIES} tries; it is lost (check the webhook)");
            }
            Err(e) => {
                debug!(url, attempt, error = %e, "an alert notice was not taken; trying again");
                std::thread::sleep(Duration::from_secs(u64::from(attempt)));
            }
        }
    }
}

/// A notice as Alertmanager's webhook receivers take it (version 4).
pub fn body(n: &Notice) -> serde_json::Value {
    let status = match n.status {
        Status::Firing => "firing",
        Status::Resolved => "resolved",
    };
    let mut labels = json!({"alertname": n.rule, "device": n.device});
    if !n.series.is_empty() {
        labels["series"] = json!(n.series);
    }
    let annotations = json!({
        "summary": n.summary,
        "condition": n.condition,
        "value": n.value.to_string(),
    });
    let ends = if n.ends_ms == 0 {
        "0001-01-01T00:00:00Z".to_string()
    } else {
        fmt_ts(n.ends_ms)
    };
    let key = format!("{}\u{0}{}\u{0}{}", n.rule, n.device, n.series);
    json!({
        "version": "4",
        "groupKey": format!("fleetmq:{}", key.replace('\u{0}', "/")),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "fleetmq",
        "groupLabels": {"alertname": n.rule},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": "",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": fmt_ts(n.starts_ms),
            "endsAt": ends,
            "generatorURL": "",
            "fingerprint": format!("{:016x}", fingerprint(&key)),
        }],
    })
}

/// FNV-1a of `key`: the same alert has the same fingerprint everywhere.
fn fingerprint(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate authority made for this test alone (its key thrown
    /// away): what an operator's private CA file holds.
    const AUTHORITY: &str = "-----BEGIN CERTIFICATE-----
MIIBozCCAUmgAwIBAgIUFgXer6XaV38AEhrxXjhv7bMhaFcwCgYIKoZIzj0EAwIw
JjEkMCIGA1UEAwwbZmxlZXRtcSB1bml0IHRlc3QgYXV0aG9yaXR5MCAXDTI2MTIw
NTIyMjYxN1oYDzIxMjYxMTExMjIyNjE3WjAmMSQwIgYDVQQDDBtmbGVldG1xIHVu
aXQgdGVzdCBhdXRob3JpdHkwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAR9XqPi
BPl+jZBKdL9M5LSTYbcX2qnhCh8xsCXIeTi/5NLcwx+rd4IlkNYpd86VSJ87elnx
1BMuJ+yxn37fnmJ1o1MwUTAdBgNVHQ4EFgQUh1IUgqFUwpBcCyxsQivPgBMmIuAw
HwYDVR0jBBgwFoAUh1IUgqFUwpBcCyxsQivPgBMmIuAwDwYDVR0TAQH/BAUwAwEB
/zAKBggqhkjOPQQDAgNIADBFAiBWOzVc8c9mishL3HQgOXYYlsg25wQxOiFc9ON1
xtk3DgIhALzkQmWYfHlWcbcb45V9ORjell4V7DMJ0Xn2IBc4e3v/
-----END CERTIFICATE-----
";

    #[test]
    fn a_ca_file_adds_its_authorities_and_a_bad_one_says_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let machine = roots(None).map_or(0, |r| r.len());
        let ca = file("ca.pem", AUTHORITY);
        assert_eq!(roots(Some(&ca)).unwrap().len(), machine + 1);
        let two = file("two.pem", &format!("{AUTHORITY}{AUTHORITY}"));
        assert_eq!(roots(Some(&two)).unwrap().len(), machine + 2);

        let missing = dir.path().join("missing.pem");
        let why = roots(Some(&missing)).unwrap_err();
        assert!(
            why.contains("reading alerts.ca_file") && why.contains("missing.pem"),
            "{why}"
        );
        let junk = file("junk.pem", "not a certificate\n");
        let why = roots(Some(&junk)).unwrap_err();
        assert!(why.contains("holds no certificate"), "{why}");
    }

    #[test]
    fn a_notice_is_alertmanagers_webhook_json() {
        let notice = Notice {
            status: Status::Resolved,
            rule: "hot".into(),
            device: "pi-1".into(),
            series: "host.temp_c".into(),
            condition: "host.temp_c > 80".into(),
            value: 82.5,
            summary: "pi-1 host.temp_c = 82.5 (> 80)".into(),
            starts_ms: 1_795_292_428_999,
            ends_ms: 1_795_292_488_999,
        };
        let b = body(&notice);
        assert_eq!(b["version"], "4");
        assert_eq!(b["status"], "resolved");
        let alert = &b["alerts"][0];
        assert_eq!(alert["labels"]["alertname"], "hot");
        assert_eq!(alert["labels"]["device"], "pi-1");
        assert_eq!(alert["labels"]["series"], "host.temp_c");
        assert_eq!(alert["startsAt"], "2026-11-21T20:20:28.999Z");
        assert_eq!(alert["endsAt"], "2026-11-21T20:21:28.999Z");
        assert_eq!(alert["annotations"]["summary"], notice.summary);
        let firing = Notice {
            status: Status::Firing,
            ends_ms: 0,
            ..notice
        };
        let again = body(&firing);
        assert_eq!(again["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(
            again["alerts"][0]["fingerprint"], alert["fingerprint"],
            "the same alert, the same fingerprint"
        );
    }
}
