//! The hub's HTTP side: the fleet page at `/`, `/metrics` for Prometheus,
//! `/health`, and the small JSON API the page reads.
//!
//! It runs on its own thread (`server`: hyper on a small tokio runtime)
//! and asks the hub loop through the operator socket, like the command line
//! does, so it never touches the store or the hub's state directly; the
//! reads that scan the store run off the hub loop, so a slow scraper cannot
//! stall the fleet.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

pub use server::{Http, may_serve};
pub use token::{TokenFile, read_token};

use fleetmq_protocol::matching::matches_all;
use fleetmq_protocol::{ChatQuery, LogQuery, Matcher, Request, Response, TelemetryQuery};
use tracing::warn;

use super::{Client, ClientError, views};

/// The fleet page: one file, no external assets, built into the binary.
const PAGE: &str = include_str!("../../web/index.html");

/// How long one HTTP request may wait for the hub loop.
const HUB_WAIT: Duration = Duration::from_secs(2);

/// Why the HTTP side could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(
        "could not listen for HTTP on {addr}: {reason} (set listen.http, or \"\" to turn it off)"
    )]
    Listen { addr: String, reason: String },
    #[error("starting the HTTP thread")]
    Thread(#[source] std::io::Error),
    #[error(
        "refusing to serve HTTP on {addr} without a token: anyone who reaches it could read the fleet; set security.http_token_file, or listen.http on 127.0.0.1"
    )]
    NeedsToken { addr: String },
    #[error("the HTTP token file {}: {why}", path.display())]
    Token { path: PathBuf, why: String },
    /// The certificate or key for HTTPS could not be used.
    #[error("HTTPS: {0}")]
    Tls(String),
}

type Answer = (u16, &'static str, String);

fn json<T: serde::Serialize>(value: &T) -> Answer {
    match serde_json::to_string(value) {
        Ok(text) => (200, "application/json", text),
        Err(e) => (500, "text/plain", format!("could not encode: {e}\n")),
    }
}

/// The hub's answer as JSON, if it is the kind `pick` takes.
fn answer(
    result: Result<Response, ClientError>,
    pick: impl FnOnce(Response) -> Option<Answer>,
) -> Answer {
    match result {
        Ok(r) => pick(r).unwrap_or_else(|| (500, "text/plain", "unexpected answer\n".into())),
        Err(e) => failed(e),
    }
}

fn failed(e: ClientError) -> Answer {
    match e {
        ClientError::Hub(e) => (400, "text/plain", format!("{e}\n")),
        other => {
            warn!(error = %other, "HTTP request could not reach the hub loop");
            (
                503,
                "text/plain",
                format!("the hub did not answer: {other}\n"),
            )
        }
    }
}

/// The query parameters each JSON path takes. Any other is refused, so a
/// misspelt filter (`devcie=pi-1`) is told rather than ignored, which would
/// answer for the whole fleet.
const PARAMETERS: &[(&str, &[&str])] = &[
    ("/api/stats", &[]),
    ("/api/devices", &["where"]),
    ("/api/alerts", &[]),
    ("/api/pending", &[]),
    ("/api/latest", &["device", "name"]),
    ("/api/presence", &["device", "limit"]),
    ("/api/audit", &["limit"]),
    ("/api/config", &["device"]),
    (
        "/api/series",
        &["device", "name", "since", "until", "points"],
    ),
    (
        "/api/telemetry",
        &[
            "device", "name", "tags", "since", "until", "last", "after", "limit",
        ],
    ),
    (
        "/api/logs",
        &[
            "device", "source", "grep", "since", "until", "last", "after", "limit",
        ],
    ),
    ("/api/chat", &["last", "after", "limit"]),
    ("/api/jobs", &["limit"]),
    ("/api/commands", &["limit"]),
    ("/api/fleet-commands", &["limit"]),
];

/// Why `query` does not suit `path`, if a JSON path's parameter is not
/// one it takes.
fn unknown_parameter(path: &str, query: &HashMap<String, String>) -> Option<String> {
    let (_, takes) = PARAMETERS.iter().find(|(p, _)| *p == path)?;
    let mut unknown: Vec<&str> = query
        .keys()
        .map(String::as_str)
        .filter(|k| !takes.contains(k))
        .collect();
    unknown.sort_unstable();
    let first = unknown.first()?;
    Some(if takes.is_empty() {
        format!("{path} takes no parameters; {first:?} is not one")
    } else {
        format!(
            "{path} has no parameter {first:?}; it takes {}",
            takes.join(", ")
        )
    })
}

/// Answers one GET of `url` (path and query).
fn route(hub: &mut Client, url: &str) -> Answer {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let query = match parse_query(query) {
        Ok(q) => q,
        Err(e) => return (400, "text/plain", format!("{e}\n")),
    };
    if let Some(e) = unknown_parameter(path, &query) {
        return (400, "text/plain", format!("{e}\n"));
    }
    let number = |key: &str, default: u64| -> Result<u64, String> {
        query.get(key).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("{key}={v:?} is not a whole number"))
        })
    };
    let limit = match number("limit", 100) {
        Ok(n) => n.min(10_000) as u32,
        Err(e) => return (400, "text/plain", format!("{e}\n")),
    };
    let after = match number("after", 0) {
        Ok(n) => n as i64,
        Err(e) => return (400, "text/plain", format!("{e}\n")),
    };
    let call = |hub: &mut Client, r| hub.call(r, Duration::ZERO);
    match path {
        "/" | "/index.html" => (200, "text/html; charset=utf-8", PAGE.to_string()),
        "/health" => match call(hub, Request::Stats) {
            // The loop answers, but cannot store telemetry: not healthy.
            Ok(Response::Stats(s)) if !s.storage_problem.is_empty() => {
                let (_, content_type, body) = json(&serde_json::json!({
                    "status": "storage_failing",
                    "why": s.storage_problem,
                    "uptime_ms": s.uptime_ms,
                    "devices_online": s.devices_online,
                    "security": s.security,
                }));
                (503, content_type, body)
            }
            Ok(Response::Stats(s)) => json(&serde_json::json!({
                "status": "ok",
                "uptime_ms": s.uptime_ms,
                "devices_online": s.devices_online,
                "security": s.security,
            })),
            Ok(_) => (500, "text/plain", "unexpected answer\n".into()),
            Err(e) => failed(e),
        },
        "/metrics" => {
            let stats = call(hub, Request::Stats);
            let devices = call(hub, Request::Devices);
            let latest = call(hub, Request::Latest);
            let alerts = call(hub, Request::Alerts);
            match (stats, devices, latest, alerts) {
                (
                    Ok(Response::Stats(s)),
                    Ok(Response::Devices(d)),
                    Ok(Response::Latest(l)),
                    Ok(Response::Alerts(a)),
                ) => (
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    prometheus(&s, &d, &l, &a),
                ),
                (Err(e), _, _, _) | (_, Err(e), _, _) | (_, _, Err(e), _) | (_, _, _, Err(e)) => {
                    failed(e)
                }
                _ => (500, "text/plain", "unexpected answer\n".into()),
            }
        }
        "/api/stats" => answer(call(hub, Request::Stats), |r| match r {
            Response::Stats(s) => Some(json(&s)),
            _ => None,
        }),
        "/api/devices" => {
            let filters = query.get("where").map_or(Ok(Vec::new()), |w| {
                let each = w.split(',').filter(|f| !f.is_empty()).map(String::from);
                Matcher::parse_all(&each.collect::<Vec<_>>())
            });
            match filters {
                Ok(filters) => answer(call(hub, Request::Devices), |r| match r {
                    Response::Devices(d) => Some(json(
                        &(d.iter())
                            .filter(|d| matches_all(&filters, d))
                            .map(views::device)
                            .collect::<Vec<_>>(),
                    )),
                    _ => None,
                }),
                Err(why) => (400, "text/plain", format!("where: {why}\n")),
            }
        }
        "/api/presence" => match query.get("device") {
            Some(device) => {
                let request = Request::PresenceLog {
                    device: device.clone(),
                    limit: limit.min(200),
                };
                answer(call(hub, request), |r| match r {
                    Response::PresenceLog(log) => Some(json(&log)),
                    _ => None,
                })
            }
            None => (400, "text/plain", "presence needs device=D\n".into()),
        },
        "/api/alerts" => answer(call(hub, Request::Alerts), |r| match r {
            Response::Alerts(a) => Some(json(&a)),
            _ => None,
        }),
        "/api/audit" => answer(call(hub, Request::Audit { limit }), |r| match r {
            Response::Audit(log) => Some(json(&log)),
            _ => None,
        }),
        "/api/pending" => answer(call(hub, Request::Pending), |r| match r {
            Response::Pending(keys) => Some(json(&keys)),
            _ => None,
        }),
        "/api/latest" => console::latest(hub, &query),
        "/api/series" => console::series(hub, &query, fleetmq_net::now_ms()),
        "/api/config" => match query.get("device") {
            Some(device) => answer(
                call(
                    hub,
                    Request::ConfigShow {
                        device: device.clone(),
                    },
                ),
                |r| match r {
                    Response::ConfigShow(v) => Some(json(&views::config_view(&v))),
                    _ => None,
                },
            ),
            // Without a device: every device's versions, as `config status`.
            None => answer(call(hub, Request::ConfigStatus), |r| match r {
                Response::ConfigStatus(s) => Some(json(&views::config_status(&s))),
                _ => None,
            }),
        },
        "/api/telemetry" | "/api/logs" => {
            let (since_ms, until_ms) = match (number("since", 0), number("until", 0)) {
                (Ok(s), Ok(u)) => (s, u),
                (Err(e), _) | (_, Err(e)) => return (400, "text/plain", format!("{e}\n")),
            };
            // last=N: the newest N rows that match; else from `after`.
            let (newest, limit) = match number("last", 0) {
                Ok(0) => (false, limit),
                Ok(n) => (true, n.min(10_000) as u32),
                Err(e) => return (400, "text/plain", format!("{e}\n")),
            };
            let device = query.get("device").cloned();
            if path == "/api/logs" {
                let q = LogQuery {
                    device,
                    source: query.get("source").cloned(),
                    contains: query.get("grep").cloned().unwrap_or_default(),
                    after_id: after,
                    limit,
                    since_ms,
                    until_ms,
                    newest,
                };
                return answer(call(hub, Request::Logs(q)), |r| match r {
                    Response::Logs(rows) => Some(json(&rows)),
                    _ => None,
                });
            }
            let q = TelemetryQuery {
                device,
                name: query.get("name").cloned(),
                after_id: after,
                limit,
                since_ms,
                until_ms,
                newest,
                tags: query
                    .get("tags")
                    .map(|t| t.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            };
            answer(call(hub, Request::Telemetry(q)), |r| match r {
                Response::Telemetry(rows) => Some(json(&rows)),
                _ => None,
            })
        }
        "/api/chat" => {
            // last=N: the newest N lines; else from the `after` cursor.
            let request = match query.get("last").map(|v| v.parse::<u32>()) {
                Some(Ok(n)) => Request::RecentChat { limit: n },
                Some(Err(_)) => {
                    return (400, "text/plain", "last must be a whole number\n".into());
                }
                None => Request::Chat(ChatQuery {
                    after_id: after,
                    limit,
                }),
            };
            answer(call(hub, request), |r| match r {
                Response::Chat(rows) => Some(json(&rows)),
                _ => None,
            })
        }
        "/api/jobs" => answer(call(hub, Request::Jobs { limit }), |r| match r {
            Response::Jobs(jobs) => Some(json(&jobs.iter().map(views::job).collect::<Vec<_>>())),
            _ => None,
        }),
        "/api/fleet-commands" => answer(call(hub, Request::FleetCommands { limit }), |r| match r {
            Response::FleetCommands(list) => Some(json(
                &list.iter().map(views::fleet_command).collect::<Vec<_>>(),
            )),
            _ => None,
        }),
        "/api/commands" => answer(call(hub, Request::Commands { limit }), |r| match r {
            Response::Commands(log) => Some(json(
                &log.iter().map(views::command_info).collect::<Vec<_>>(),
            )),
            _ => None,
        }),
        _ => (
            404,
            "text/plain",
            "not found; try /, /metrics, /health, /api/stats, /api/devices, /api/latest, \
             /api/telemetry?device=D&name=N&tags=K=V,..&since=MS&until=MS&last=N&after=ID&limit=N, /api/logs?device=D&source=PATH&grep=TEXT&last=N, /api/chat?last=N, /api/jobs, \
             /api/commands, /api/fleet-commands, /api/alerts, /api/latest?device=D&name=A,B, \
             /api/series?device=D&name=SERIES&since=MS&until=MS&points=N, /api/config, /api/config?device=D, /api/presence?device=D&limit=N, /api/pending, /api/audit?limit=N\n"
                .into(),
        ),
    }
}

/// `a=1&b=x%20y` as a map; an undecodable escape is an error.
fn parse_query(query: &str) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = unescape(k)?;
        if map.insert(k.clone(), unescape(v)?).is_some() {
            return Err(format!(
                "{k:?} is given twice; give it once (a list such as name=A,B takes commas)"
            ));
        }
    }
    Ok(map)
}

fn unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Two hex digits: from_str_radix alone would take "+1".
                let hex = s
                    .get(i + 1..i + 3)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad %-escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

mod actions;
mod console;
mod prometheus;
mod server;
pub mod tls;
mod token;

pub use prometheus::prometheus;
#[cfg(test)]
use prometheus::{sample_value, tag_labels};
#[cfg(test)]
mod tests;
