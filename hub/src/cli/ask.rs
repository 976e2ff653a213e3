//! The subcommands that ask a running hub, and how their answers are
//! printed: human text by default; with `--json` one JSON document (an
//! array for lists, `[]` when empty), or JSON Lines, one object a line, for
//! `--follow`.
//!
//! Exit codes, the same for every one of them ([`Exit`]): 0 answered and
//! it went well; 1 answered no (the device refused or failed, the job
//! failed, an unknown or offline device); 2 a mistake on the command line;
//! 3 the hub could not be reached, or refused this operator's key.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use fleetmq_protocol::{
    ChatQuery, ChatRow, ConfigEdit, HubStats, LogQuery, LogRow, Request, Response, TelemetryQuery,
    TelemetryRow,
};
use serde_json::Value;

use super::{ChatArgs, LayerArgs, LogsArgs, OpArgs, Range, TelemetryArgs};
use crate::operator::{Client, ClientError, format, views};

/// How a command line ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exit {
    /// Answered, and it went well.
    Ok = 0,
    /// Answered no: refused, failed, unknown, offline, timed out.
    No = 1,
    /// The command line was wrong.
    Usage = 2,
    /// The hub could not be reached (or found), or refused our key.
    Unreachable = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

impl Exit {
    /// Success or "no".
    pub(super) fn ok_if(ok: bool) -> Exit {
        if ok { Exit::Ok } else { Exit::No }
    }

    /// How a failed call to the hub ends.
    fn of(e: &ClientError) -> Exit {
        match e {
            ClientError::Hub(_) => Exit::No,
            ClientError::TooLarge { .. } | ClientError::Keys(_) => Exit::Usage,
            ClientError::Unreachable { .. }
            | ClientError::NoEndpoint(_)
            | ClientError::Socket { .. }
            | ClientError::KeyRefused { .. }
            | ClientError::HandshakeFailed { .. }
            | ClientError::Protocol { .. } => Exit::Unreachable,
        }
    }
}

/// What to print for an answer: JSON, human text, and whether it succeeded.
pub(super) struct Shown {
    json: Value,
    text: String,
    ok: bool,
}

impl Shown {
    pub(super) fn new(json: Value, text: String, ok: bool) -> Self {
        Shown { json, text, ok }
    }
}

pub(super) fn client(op: &OpArgs) -> Result<Client, ClientError> {
    let mut config = crate::config::HubConfig::load(op.config.as_deref())
        .map_err(|e| ClientError::NoEndpoint(e.to_string()))?;
    if let Some(dir) = &op.data_dir {
        config.data_dir = dir.clone();
    }
    let endpoint = crate::operator::find_endpoint(
        op.hub.as_deref(),
        &config.data_dir,
        &config.operator_endpoint(),
    )?;
    let client = Client::new(endpoint, Duration::from_millis(op.hub_timeout_ms))
        .max_message(config.net.max_message_bytes);
    let no_key = |e: fleetmq_net::keys::KeyError| ClientError::Keys(e.to_string());
    match (&op.hub_key, &op.operator_keys) {
        (None, None) => Ok(client),
        (Some(server), Some(dir)) => {
            let server = fleetmq_net::keys::key_or_file(server).map_err(no_key)?;
            let (secret, public) = fleetmq_net::keys::paths(dir, "operator");
            let ours = fleetmq_net::keys::KeyPair {
                secret: fleetmq_net::keys::read_secret(&secret).map_err(no_key)?,
                public: fleetmq_net::keys::read(&public).map_err(no_key)?,
            };
            Ok(client.curve(server, ours))
        }
        _ => Err(ClientError::Keys(
            "give both --hub-key (the hub's public key) and --operator-keys (the directory of your operator.key, from `fleetmq-hub keygen --operator`)".into(),
        )),
    }
}

/// The config file the hub's Debian package installs.
const PACKAGED_CONFIG: &str = "/etc/fleetmq/hub.toml";

/// On a machine with the packaged hub (`packaged` exists), a command given
/// no --config is pointed at it: its operator socket is a Unix socket in
/// the service's data directory, which only the service's user may open.
fn packaged_hint(config_given: bool, packaged: &Path) -> String {
    if config_given || !packaged.exists() {
        return String::new();
    }
    format!(
        " (the packaged hub, as its user: sudo -u fleetmq fleetmq-hub COMMAND --config {})",
        packaged.display()
    )
}

/// Tells the operator why a call failed (as `{"error"}` too with --json)
/// and how the command ends.
pub(super) fn failed(op: &OpArgs, e: &ClientError) -> ExitCode {
    let message = match (
        e,
        crate::operator::client::unwritten_endpoints(
            op.hub.as_deref(),
            op.config.as_deref(),
            op.data_dir.as_deref(),
        ),
    ) {
        (ClientError::Unreachable { .. }, Some(path)) => format!(
            "{e}; no hub has written {}, so this is the configured operator endpoint: \
             give the running hub's --data-dir (or --config), or --hub{}",
            path.display(),
            packaged_hint(op.config.is_some(), Path::new(PACKAGED_CONFIG))
        ),
        (ClientError::Hub(fleetmq_protocol::OperatorError::DeviceOffline(d)), _) => format!(
            "{e}: `fleetmq-hub devices` shows when it was last seen; a command can wait for \
             it (--queue-ms MS) or be kept until it returns (--device {d} --ttl 1d)"
        ),
        _ => e.to_string(),
    };
    if op.json {
        println!("{}", serde_json::json!({ "error": message }));
    }
    eprintln!("error: {message}");
    Exit::of(e).into()
}

/// Asks once and prints the answer.
pub(super) fn operate(
    op: &OpArgs,
    request: Request,
    extra: Duration,
    show: impl FnOnce(Response) -> Option<Shown>,
) -> anyhow::Result<ExitCode> {
    let answer = client(op).and_then(|mut c| c.call(request, extra));
    let response = match answer {
        Ok(r) => r,
        Err(e) => return Ok(failed(op, &e)),
    };
    let Some(shown) = show(response) else {
        anyhow::bail!("the hub answered with the wrong kind of response");
    };
    if op.json {
        println!("{}", shown.json);
    } else {
        print!("{}", shown.text);
    }
    Ok(Exit::ok_if(shown.ok).into())
}

/// Prints rows as they come: human lines; with --json one array, or JSON
/// Lines when following.
struct Printer {
    json: bool,
    lines: bool,
    count: usize,
}

impl Printer {
    fn new(op: &OpArgs, follow: bool) -> Self {
        let p = Printer {
            json: op.json,
            lines: follow,
            count: 0,
        };
        if p.json && !p.lines {
            print!("[");
        }
        p
    }

    fn row(&mut self, json: Value, human: String) {
        if !self.json {
            println!("{human}");
        } else if self.lines {
            println!("{json}");
        } else {
            print!("{}\n{json}", if self.count == 0 { "" } else { "," });
        }
        self.count += 1;
        // A follower sees each row when it comes.
        let _ = std::io::stdout().flush();
    }

    fn end(self) {
        if self.json && !self.lines {
            println!("{}]", if self.count == 0 { "" } else { "\n" });
        }
    }
}

/// How often --follow asks for new rows when the last read found none.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);
/// Rows asked for at a time when reading on from a cursor.
const PAGE: u32 = 1000;

/// `--since`/`--until`: a time ago (`10m`, `2h 30m`, `7d`), a time (RFC
/// 3339, `2026-12-02T10:00:00Z` or with an offset, `+01:00`; a space for
/// the `T` and no zone mean UTC), or milliseconds since the epoch.
pub(super) fn parse_time(flag: &str, text: &str, now_ms: u64) -> anyhow::Result<u64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    if let Ok(ago) = humantime::parse_duration(text) {
        return Ok(now_ms.saturating_sub(ago.as_millis() as u64));
    }
    // humantime reads UTC only: an offset is taken off and applied here.
    let (local, offset_ms) = split_offset(text);
    if let Ok(at) = humantime::parse_rfc3339_weak(local) {
        let utc_ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        return Ok(u64::try_from(utc_ms - offset_ms).unwrap_or(0));
    }
    Err(super::usage(&format!(
        "{flag} {text:?}: give a time ago like 10m, 2h or 7d, a time like 2026-12-02T10:00:00Z \
         or 2026-12-02T11:00:00+01:00, or milliseconds since the epoch"
    )))
}

/// A time's RFC 3339 offset (`+01:00`, `-05:30`) split off its end, in
/// milliseconds east of UTC; none (0) if it has none.
fn split_offset(text: &str) -> (&str, i64) {
    let Some((local, zone)) = text.len().checked_sub(6).and_then(|at| {
        // At a char boundary: the text is the operator's and may be anything.
        Some((text.get(..at)?, text.get(at..)?))
    }) else {
        return (text, 0);
    };
    let b = zone.as_bytes();
    let digits = |i: usize| b[i].is_ascii_digit() && b[i + 1].is_ascii_digit();
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return (text, 0),
    };
    // Only after a time of day: 2026-12-02 ends in -02, not an offset.
    if !(digits(1) && b[3] == b':' && digits(4) && local.contains(':')) {
        return (text, 0);
    }
    let (h, m) = (
        i64::from(b[1] - b'0') * 10 + i64::from(b[2] - b'0'),
        i64::from(b[4] - b'0') * 10 + i64::from(b[5] - b'0'),
    );
    (local, sign * (h * 60 + m) * 60_000)
}

/// The hub's cursors at the end of the store (telemetry, chat).
fn cursors(c: &mut Client) -> Result<HubStats, ClientError> {
    match c.call(Request::Stats, Duration::ZERO)? {
        Response::Stats(s) => Ok(s),
        _ => Err(ClientError::Protocol {
            endpoint: c.endpoint().to_string(),
            reason: "the hub answered stats with another kind of response".into(),
        }),
    }
}

fn telemetry_rows(c: &mut Client, q: TelemetryQuery) -> Result<Vec<TelemetryRow>, ClientError> {
    match c.call(Request::Telemetry(q), Duration::ZERO)? {
        Response::Telemetry(rows) => Ok(rows),
        _ => Err(ClientError::Protocol {
            endpoint: c.endpoint().to_string(),
            reason: "the hub answered a telemetry query with another kind of response".into(),
        }),
    }
}

/// `--since` and `--until` as ms since the epoch (0: not given), refused
/// when they leave nothing between them.
fn time_range(since: Option<&str>, until: Option<&str>) -> anyhow::Result<(u64, u64)> {
    let now = fleetmq_net::now_ms();
    let since_ms = match since {
        Some(t) => parse_time("--since", t, now)?,
        None => 0,
    };
    let until_ms = match until {
        Some(t) => parse_time("--until", t, now)?,
        None => 0,
    };
    if until_ms > 0 && since_ms > until_ms {
        return Err(super::usage(&format!(
            "--since ({}) is after --until ({}): nothing is in that range; swap them?",
            format::fmt_ts(since_ms),
            format::fmt_ts(until_ms)
        )));
    }
    Ok((since_ms, until_ms))
}

/// How a read of rows from stored batches (samples, log lines) goes: a
/// range (from the start, from a cursor, or from a time, without
/// `--last`) read whole, oldest first; otherwise the newest `--last`;
/// and with `--follow`, then every new row as it is stored.
struct Reading {
    range: bool,
    after: Option<i64>,
    last: Option<u32>,
    follow: bool,
}

impl Reading {
    fn of(r: &Range) -> Reading {
        Reading {
            range: r.from_start || r.after.is_some() || (r.since.is_some() && r.last.is_none()),
            after: r.after,
            last: r.last,
            follow: r.follow,
        }
    }
}

/// Runs `r` and prints each row as `show` makes it (JSON, text):
/// `fetch(client, after_id, limit, newest)` asks for a page of rows, `id`
/// is a row's cursor.
fn show_rows<R>(
    op: &OpArgs,
    r: Reading,
    fetch: impl FnMut(&mut Client, i64, u32, bool) -> Result<Vec<R>, ClientError>,
    id: impl Fn(&R) -> i64,
    show: impl Fn(&R) -> (Value, String),
) -> ExitCode {
    let mut c = match client(op) {
        Ok(c) => c,
        Err(e) => return failed(op, &e),
    };
    let mut out = Printer::new(op, r.follow);
    let result = read_rows(&mut c, r, fetch, id, |rows| {
        for row in rows {
            let (json, text) = show(row);
            out.row(json, text);
        }
    });
    out.end();
    match result {
        Ok(()) => Exit::Ok.into(),
        Err(e) => failed(op, &e),
    }
}

/// The reading itself, on `c`: pages of rows, each given to `print` as
/// it comes.
fn read_rows<R>(
    c: &mut Client,
    r: Reading,
    mut fetch: impl FnMut(&mut Client, i64, u32, bool) -> Result<Vec<R>, ClientError>,
    id: impl Fn(&R) -> i64,
    mut print: impl FnMut(&[R]),
) -> Result<(), ClientError> {
    let mut cursor = r.after.unwrap_or(0);
    if r.range {
        loop {
            let rows = fetch(c, cursor, PAGE, false)?;
            print(&rows);
            match rows.last() {
                Some(row) => cursor = id(row),
                None => break,
            }
        }
    } else {
        let end = if r.follow {
            cursors(c)?.telemetry_cursor
        } else {
            0
        };
        // --follow alone starts now; --last N shows N first.
        let last = r.last.unwrap_or(if r.follow { 0 } else { 100 });
        if last > 0 {
            let rows = fetch(c, 0, last, true)?;
            print(&rows);
            cursor = rows.last().map_or(0, &id);
        }
        cursor = cursor.max(end);
    }
    if !r.follow {
        return Ok(());
    }
    loop {
        let end = cursors(c)?.telemetry_cursor;
        let rows = fetch(c, cursor, PAGE, false)?;
        print(&rows);
        match rows.last() {
            Some(row) => cursor = id(row),
            // Nothing new matched: everything stored before `end` was
            // looked at, so the next read starts past it.
            None => {
                cursor = cursor.max(end);
                std::thread::sleep(FOLLOW_EVERY);
            }
        }
    }
}

pub(super) fn telemetry(a: TelemetryArgs) -> anyhow::Result<ExitCode> {
    let r = &a.range;
    let (since_ms, until_ms) = time_range(r.since.as_deref(), r.until.as_deref())?;
    if let Some(t) = a
        .tag
        .iter()
        .find(|t| t.split('=').next().is_none_or(str::is_empty))
    {
        return Err(super::usage(&format!(
            "--tag {t:?}: give KEY=VALUE, or KEY for any value; the key is empty"
        )));
    }
    let query = |after_id: i64, limit: u32, newest: bool| TelemetryQuery {
        device: a.device.clone(),
        name: a.name.clone(),
        after_id,
        limit,
        since_ms,
        until_ms,
        newest,
        tags: a.tag.clone(),
    };
    Ok(show_rows(
        &a.op,
        Reading::of(r),
        |c, after, limit, newest| telemetry_rows(c, query(after, limit, newest)),
        |r| r.id,
        |r| (views::sample(r), format::fmt_telemetry(r)),
    ))
}

fn log_rows(c: &mut Client, q: LogQuery) -> Result<Vec<LogRow>, ClientError> {
    match c.call(Request::Logs(q), Duration::ZERO)? {
        Response::Logs(rows) => Ok(rows),
        _ => Err(ClientError::Protocol {
            endpoint: c.endpoint().to_string(),
            reason: "the hub answered a log query with another kind of response".into(),
        }),
    }
}

pub(super) fn logs(a: LogsArgs) -> anyhow::Result<ExitCode> {
    let r = &a.range;
    let (since_ms, until_ms) = time_range(r.since.as_deref(), r.until.as_deref())?;
    let query = |after_id: i64, limit: u32, newest: bool| LogQuery {
        device: a.device.clone(),
        source: a.source.clone(),
        contains: a.grep.clone().unwrap_or_default(),
        after_id,
        limit,
        since_ms,
        until_ms,
        newest,
    };
    Ok(show_rows(
        &a.op,
        Reading::of(r),
        |c, after, limit, newest| log_rows(c, query(after, limit, newest)),
        |r| r.id,
        |r| (views::log_line(r), format::fmt_log(r)),
    ))
}

fn chat_rows(c: &mut Client, request: Request) -> Result<Vec<ChatRow>, ClientError> {
    match c.call(request, Duration::ZERO)? {
        Response::Chat(rows) => Ok(rows),
        _ => Err(ClientError::Protocol {
            endpoint: c.endpoint().to_string(),
            reason: "the hub answered a chat query with another kind of response".into(),
        }),
    }
}

pub(super) fn chat(a: ChatArgs) -> anyhow::Result<ExitCode> {
    let mut c = match client(&a.op) {
        Ok(c) => c,
        Err(e) => return Ok(failed(&a.op, &e)),
    };
    let mut out = Printer::new(&a.op, a.follow);
    let print = |rows: &[ChatRow], out: &mut Printer| {
        for r in rows {
            out.row(views::chat(r), format::fmt_chat(r));
        }
    };
    let after = |after_id| {
        Request::Chat(ChatQuery {
            after_id,
            limit: PAGE,
        })
    };
    let mut cursor = 0;
    let result = (|| -> Result<(), ClientError> {
        if a.from_start {
            loop {
                let rows = chat_rows(&mut c, after(cursor))?;
                print(&rows, &mut out);
                match rows.last() {
                    Some(r) => cursor = r.id,
                    None => break,
                }
            }
        } else {
            let last = a.last.unwrap_or(if a.follow { 0 } else { 100 });
            cursor = if a.follow {
                cursors(&mut c)?.chat_cursor
            } else {
                0
            };
            if last > 0 {
                let rows = chat_rows(&mut c, Request::RecentChat { limit: last })?;
                print(&rows, &mut out);
                cursor = cursor.max(rows.last().map_or(0, |r| r.id));
            }
        }
        if !a.follow {
            return Ok(());
        }
        loop {
            let rows = chat_rows(&mut c, after(cursor))?;
            print(&rows, &mut out);
            match rows.last() {
                Some(r) => cursor = r.id,
                None => std::thread::sleep(FOLLOW_EVERY),
            }
        }
    })();
    out.end();
    Ok(match result {
        Ok(()) => Exit::Ok.into(),
        Err(e) => failed(&a.op, &e),
    })
}

/// `config set` and `config unset`: one edit of one layer.
pub(super) fn config_edit(
    op: &OpArgs,
    layer: &LayerArgs,
    set: Vec<(String, String)>,
    unset: Vec<String>,
) -> anyhow::Result<ExitCode> {
    let layer_name = layer.layer();
    let what: Vec<String> = set
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain(unset.iter().map(|k| format!("-{k}")))
        .collect();
    let req = Request::ConfigEdit(ConfigEdit {
        layer: layer_name.clone(),
        set,
        unset,
        if_version: layer.if_version,
    });
    operate(op, req, Duration::ZERO, |r| match r {
        Response::ConfigVersion { version } => Some(Shown::new(
            serde_json::json!({ "version": version, "layer": layer_name }),
            format!(
                "configuration version {version}: {layer_name}: {}; online devices it applies to get it now, the others when they connect (`fleetmq-hub config status`)\n",
                what.join(" ")
            ),
            true,
        )),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
