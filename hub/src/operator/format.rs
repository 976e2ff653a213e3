//! How operator answers are shown to people: one function per kind of
//! answer, returning the text (and, where it can fail, whether it did).
//!
//! Everything a device sent (host names, versions, groups, metric names,
//! chat, command output) passes through [`line()`] or [`block()`] on its way
//! to a terminal: control characters (escape sequences, a carriage return
//! that hides a line) and the Unicode controls that reorder text are shown
//! as `\u{..}` escapes, never acted on. JSON output is exact.

use std::fmt::Write as _;

pub use fleetmq_net::text::{block, line};

use fleetmq_protocol::{
    AgentStatus, ChatRow, Command, ConfigState, ConfigView, DeviceInfo, FleetAnswer,
    FleetCommandInfo, JobInfo, JobSpec, JobState, LogRow, Outcome, Output, Reply, TelemetryRow,
};

mod stats;
pub use stats::{fmt_alerts, fmt_audit, fmt_pending, fmt_presence, fmt_stats};

/// `2026-11-21T20:20:28.123Z` from milliseconds since the Unix epoch.
pub fn fmt_ts(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// What `job cancel ID` stopped.
pub fn fmt_cancelled(id: u64, stopped: u32, running: u32) -> String {
    match (stopped, running) {
        (0, 0) => {
            format!("job {id} had already ended: nothing to cancel (`fleetmq-hub job show {id}`)\n")
        }
        _ => format!(
            "job {id} cancelled: {stopped} not yet handed out will not be; \
             {running} running on a device finish there, with no further attempt \
             (`fleetmq-hub job show {id}`)\n"
        ),
    }
}

/// What `forget DEVICE` did.
pub fn fmt_forgotten(device: &str, runs: u32, shares: u32) -> String {
    let called_off = match (runs, shares) {
        (0, 0) => String::new(),
        _ => {
            format!("; called off what waited for it: {runs} job run(s), {shares} command share(s)")
        }
    };
    format!(
        "forgot {device}: it is gone from devices, /metrics, the console and alerts{called_off}. \
         Its stored telemetry stays until retention removes it; if it is enrolled and \
         connects again, it comes back\n"
    )
}

/// What `command --cancel ID` stopped.
pub fn fmt_command_cancelled(id: u64, stopped: u32, sent: u32) -> String {
    match (stopped, sent) {
        (0, 0) => format!(
            "command {id} had ended on every device: nothing to cancel (`fleetmq-hub command --answers {id}`)\n"
        ),
        _ => format!(
            "command {id} cancelled: {stopped} device(s) not yet sent it will not be; \
             {sent} sent it answer or time out as before (`fleetmq-hub command --answers {id}`)\n"
        ),
    }
}

pub fn fmt_devices(devices: &[DeviceInfo]) -> String {
    // Front-ends over NATS: which one holds each device.
    let front_ends = devices.iter().any(|d| !d.front_end.is_empty());
    let mut out = format!(
        "{:<24} {:<8} {:<24} {:<24} {:<8} {:<8} {:>8}  GROUPS{}\n",
        "DEVICE",
        "STATE",
        "SINCE",
        "LAST SEEN",
        "ARCH",
        "VERSION",
        "BATCHES",
        if front_ends { "  FRONT-END" } else { "" }
    );
    for d in devices {
        let state = match (d.revoked, d.online, d.listening) {
            (true, _, _) => "revoked",
            (false, true, true) => "online",
            (false, true, false) => "online*",
            (false, false, _) => "offline",
        };
        let _ = write!(
            out,
            "{:<24} {:<8} {:<24} {:<24} {:<8} {:<8} {:>8}  {}",
            d.id,
            state,
            fmt_ts(d.since_ms),
            fmt_ts(d.last_seen_ms),
            line(&d.arch),
            line(&d.agent_version),
            d.batches,
            line(&d.groups.join(","))
        );
        if front_ends {
            let _ = write!(out, "  {}", line(&d.front_end));
        }
        out.push('\n');
    }
    if devices.iter().any(|d| d.online && !d.listening) {
        out.push_str("(online*: connected, broadcast subscription not live yet)\n");
    }
    for d in devices.iter().filter(|d| d.conflicts > 0) {
        let _ = writeln!(
            out,
            "{}: {} messages refused from a second agent with its key, the last from {}: a cloned SD card? Give each device its own key and id",
            d.id,
            d.conflicts,
            line(&d.conflict_address)
        );
    }
    let off = crate::core::clocks::SAY_OFF_MS;
    for d in devices {
        if let Some(offset) = d.clock_offset_ms.filter(|o| o.unsigned_abs() >= off) {
            let _ = writeln!(
                out,
                "{}: its clock is {} the hub's, and its samples are stamped by it: is NTP reachable from it?",
                d.id,
                crate::core::clocks::words(offset)
            );
        }
    }
    out
}

/// `devices --facts`: what each device is and where it is on its network,
/// as its agent said (a device whose agent said nothing shows dashes).
pub fn fmt_inventory(devices: &[DeviceInfo]) -> String {
    let rows: Vec<[String; 6]> = devices
        .iter()
        .map(|d| {
            let f = &d.facts;
            let or_dash = |s: &str| match s {
                "" => "-".to_string(),
                s => line(s).into_owned(),
            };
            let memory = match f.memory_bytes {
                0 => "-".into(),
                b => format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
            };
            let addresses: Vec<String> = (f.interfaces.iter())
                .filter(|i| !i.addresses.is_empty())
                .map(|i| format!("{} {}", line(&i.name), line(&i.addresses.join(","))))
                .collect();
            [
                line(&d.id).into_owned(),
                or_dash(&f.model),
                or_dash(&f.os_release),
                or_dash(&f.kernel),
                memory,
                or_dash(&addresses.join("  ")),
            ]
        })
        .collect();
    let head = ["DEVICE", "MODEL", "OS", "KERNEL", "MEMORY", "ADDRESSES"].map(String::from);
    let width = |c: usize| {
        let cells = rows.iter().chain([&head]).map(|r| r[c].chars().count());
        cells.max().unwrap_or(0)
    };
    let widths: Vec<usize> = (0..5).map(width).collect();
    let mut out = String::new();
    for row in [&head].into_iter().chain(&rows) {
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(out, "{cell:<w$}  ");
        }
        let _ = writeln!(out, "{}", row[5]);
    }
    out
}

pub fn fmt_telemetry(row: &TelemetryRow) -> String {
    format!(
        "{} {} {}={}",
        fmt_ts(row.ts_ms),
        row.device,
        line(&row.name),
        row.value
    )
}

/// A log line; an entry of many lines (a stack trace) goes on in lines
/// indented by two spaces, so that none reads as an entry of its own.
pub fn fmt_log(row: &LogRow) -> String {
    format!(
        "{} {} {}: {}",
        fmt_ts(row.ts_ms),
        row.device,
        line(&row.source),
        block(&row.text).replace('\n', "\n  ")
    )
}

pub fn fmt_chat(row: &ChatRow) -> String {
    format!("{} <{}> {}", fmt_ts(row.ts_ms), row.device, line(&row.text))
}

fn fmt_output(out: &mut String, o: &Output) {
    out.push_str(&block(&o.stdout));
    if !o.stderr.is_empty() {
        let _ = write!(
            out,
            "{}(stderr)\n{}",
            if o.stdout.ends_with('\n') || o.stdout.is_empty() {
                ""
            } else {
                "\n"
            },
            block(&o.stderr)
        );
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "(exit {}, {} ms{})",
        o.exit_code
            .map_or_else(|| "by signal".to_string(), |c| c.to_string()),
        o.duration_ms,
        if o.truncated {
            ", output truncated"
        } else {
            ""
        }
    );
}

/// Human text for an outcome, and whether it counts as success.
pub fn fmt_outcome(outcome: &Outcome) -> (String, bool) {
    let mut out = String::new();
    let ok = match outcome {
        Outcome::Completed(o) => {
            fmt_output(&mut out, o);
            o.exit_code == Some(0)
        }
        Outcome::TimedOut(o) => {
            fmt_output(&mut out, o);
            out.push_str("timed out: killed at its time limit\n");
            false
        }
        Outcome::NotAllowed(what) => {
            let _ = writeln!(
                out,
                "not allowed: {} is not in the device's allow list",
                line(what)
            );
            false
        }
        Outcome::Unknown(what) => {
            let _ = writeln!(out, "not known to the device: {}", line(what));
            false
        }
        Outcome::AlreadyRun => {
            out.push_str("the device had already run this job\n");
            false
        }
        Outcome::Failed(why) => {
            let _ = writeln!(out, "failed: {}", line(why));
            false
        }
    };
    (out, ok)
}

fn fmt_status(s: &AgentStatus) -> String {
    format!(
        "device:            {}\nversion:           {} ({})\ngroups:            {}\nuptime:            {:.1} s\nbatches sent:      {}\nbatches acked:     {}\nbatches resent:    {}\nin flight:         {}\nrecords pending:   {}\nrecords dropped:   {}\njobs run:          {}\ncommands answered: {}\n",
        line(&s.device),
        line(&s.agent_version),
        line(&s.arch),
        line(&s.groups.join(",")),
        s.uptime_ms as f64 / 1000.0,
        s.batches_sent,
        s.batches_acked,
        s.batches_resent,
        s.in_flight,
        s.records_pending,
        s.records_dropped,
        s.jobs_run,
        s.commands_answered
    )
}

pub fn fmt_reply(device: &str, reply: &Reply) -> (String, bool) {
    match reply {
        Reply::Pong { uptime_ms } => (
            format!(
                "pong from {device} (agent up {:.1} s)\n",
                *uptime_ms as f64 / 1000.0
            ),
            true,
        ),
        Reply::Status(s) => (fmt_status(s), true),
        Reply::Outcome(o) => fmt_outcome(o),
    }
}

/// What a job does, as a command line: `echo TEXT` or `exec PROGRAM ARGS`.
pub fn fmt_spec(spec: &JobSpec) -> String {
    match spec {
        JobSpec::Echo { text } => format!("echo {}", line(text)),
        JobSpec::Exec { program, args } => {
            let mut s = format!("exec {}", line(program));
            for a in args {
                s.push(' ');
                s.push_str(&line(a));
            }
            s
        }
    }
}

/// A command as its command line: `ping`, `exec PROGRAM ARGS`, `NAME ARGS`.
pub fn fmt_command(c: &Command) -> String {
    let (head, rest): (&[&str], &[String]) = match c {
        Command::Ping => (&["ping"], &[]),
        Command::Status => (&["status"], &[]),
        Command::Exec { program, args, .. } => (&["exec", program], args),
        Command::Other { name, args } => (&[name], args),
    };
    (head.iter().copied())
        .chain(rest.iter().map(String::as_str))
        .map(line)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `command --list`: each command for many devices, its shares counted.
pub fn fmt_fleet_commands(list: &[FleetCommandInfo]) -> String {
    let mut out = format!(
        "{:>6} {:<24} {:<20} {:<20} SHARES\n",
        "ID", "GIVEN", "FOR", "COMMAND"
    );
    for c in list {
        let mut shares: Vec<String> = (c.states.iter())
            .map(|(state, n)| format!("{n} {}", state.replace('_', " ")))
            .collect();
        if shares.is_empty() {
            shares.push("none".into());
        }
        let waiting = c.states.iter().any(|(s, n)| s == "waiting" && *n > 0);
        let until = if waiting {
            format!(" (may wait until {})", fmt_ts(c.expires_ms))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:>6} {:<24} {:<20} {:<20} {}{until}",
            c.id,
            fmt_ts(c.created_ms),
            line(&c.target),
            fmt_command(&c.command),
            shares.join(", ")
        );
    }
    out
}

/// A device's configuration: a line of versions, then each key.
pub fn fmt_config_view(v: &ConfigView) -> String {
    let state =
        crate::operator::views::config_state(v.desired_version, v.applied_version, &v.errors);
    let mut out = format!(
        "{}: desired version {}, applied {} ({}); the configuration is at version {}\n",
        v.device,
        v.desired_version,
        v.applied_version,
        state.replace('_', " "),
        v.version
    );
    if v.entries.is_empty() {
        out.push_str("(no key set for this device)\n");
    } else {
        let _ = writeln!(out, "{:<32} {:<24} LAYER", "KEY", "VALUE");
        for (k, val, layer) in &v.entries {
            let _ = writeln!(out, "{:<32} {:<24} {}", line(k), line(val), line(layer));
        }
    }
    for (k, e) in &v.errors {
        let _ = writeln!(out, "refused by the device: {}: {}", line(k), line(e));
    }
    out
}

/// Every device's configuration state, then each group's counts.
pub fn fmt_config_status(s: &[ConfigState]) -> String {
    let mut out = format!(
        "{:<24} {:>8} {:>8} {:<8}  GROUPS\n",
        "DEVICE", "DESIRED", "APPLIED", "STATE"
    );
    let mut groups: std::collections::BTreeMap<&str, [u32; 3]> = Default::default();
    for d in s {
        let state =
            crate::operator::views::config_state(d.desired_version, d.applied_version, &d.errors);
        let _ = writeln!(
            out,
            "{:<24} {:>8} {:>8} {:<8}  {}",
            d.device,
            d.desired_version,
            d.applied_version,
            state.replace('_', " "),
            line(&d.groups.join(","))
        );
        for (k, e) in &d.errors {
            let _ = writeln!(out, "  refused: {}: {}", line(k), line(e));
        }
        for g in &d.groups {
            let c = groups.entry(g).or_default();
            c[match state {
                "in_sync" => 0,
                "pending" => 1,
                _ => 2,
            }] += 1;
        }
    }
    for (g, [sync, pending, failed]) in groups {
        let _ = writeln!(
            out,
            "group {}: {sync} in sync, {pending} pending, {failed} failed",
            line(g)
        );
    }
    out
}

/// One device's share of a fleet command, once it ended.
pub fn fmt_fleet_answer(a: &FleetAnswer) -> String {
    match &a.reply {
        Some(r) => {
            let (text, _) = fmt_reply(&a.device, r);
            match r {
                Reply::Pong { .. } => text,
                _ => format!("--- {}:\n{text}", a.device),
            }
        }
        None => format!(
            "--- {}: {}{}\n",
            a.device,
            a.state.replace('_', " "),
            a.error
                .as_deref()
                .map(|e| format!(": {}", line(e)))
                .unwrap_or_default()
        ),
    }
}

pub fn fmt_job(j: &JobInfo) -> (String, bool) {
    let state = crate::operator::views::job_state(j);
    if !j.runs.is_empty() {
        return fmt_aimed(j, state);
    }
    let mut out = format!(
        "job {}: {state}, attempt {}/{}{}: {}\n",
        j.id,
        j.attempts,
        j.max_attempts,
        j.device
            .as_deref()
            .map(|d| format!(", on {d}"))
            .unwrap_or_default(),
        fmt_spec(&j.spec)
    );
    if let Some(e) = &j.error {
        let _ = writeln!(out, "note: {}", line(e));
    }
    let mut ok = j.state == JobState::Done;
    if let Some(o) = &j.outcome {
        let (text, good) = fmt_outcome(o);
        out.push_str(&text);
        ok &= good;
    }
    (out, ok)
}

/// An aimed job: a summary line, then each device's run.
fn fmt_aimed(j: &JobInfo, state: &str) -> (String, bool) {
    let counts: Vec<String> = crate::operator::views::summary(j)
        .iter()
        .map(|(word, n)| format!("{n} {word}"))
        .collect();
    let mut out = format!(
        "job {} for {}: {state}: {} device(s): {}: {}\n",
        j.id,
        line(&j.target),
        j.runs.len(),
        counts.join(", "),
        fmt_spec(&j.spec)
    );
    for r in &j.runs {
        let _ = writeln!(
            out,
            "--- {}: {}, attempt {}/{}",
            r.device,
            crate::operator::views::run_state(r),
            r.attempts,
            j.max_attempts
        );
        if let Some(e) = &r.error {
            let _ = writeln!(out, "note: {}", line(e));
        }
        if let Some(o) = &r.outcome {
            out.push_str(&fmt_outcome(o).0);
        }
    }
    (out, state == "done")
}

/// Jobs one a line: id, state, attempts, where it runs, what it does.
pub fn fmt_jobs(jobs: &[JobInfo]) -> String {
    let mut out = format!(
        "{:>6} {:<10} {:>8} {:<24} {:<24} WORK\n",
        "JOB", "STATE", "ATTEMPTS", "ON", "UPDATED"
    );
    for j in jobs {
        let on = match (&j.device, j.runs.len()) {
            (_, n) if n > 0 => format!("{} ({n})", line(&j.target)),
            (Some(d), _) => d.clone(),
            (None, _) => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:>6} {:<10} {:>8} {:<24} {:<24} {}",
            j.id,
            crate::operator::views::job_state(j),
            format!("{}/{}", j.attempts, j.max_attempts),
            on,
            fmt_ts(j.updated_ms),
            fmt_spec(&j.spec)
        );
    }
    out
}

#[cfg(test)]
mod tests;
