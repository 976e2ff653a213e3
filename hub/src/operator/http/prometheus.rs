//! `/metrics`: the Prometheus text exposition (format 0.0.4) of the hub's
//! counters, its devices, the newest value of every series, and the alerts.

use std::fmt::Write as _;

use fleetmq_protocol::telemetry::{MAX_TS_MS, split_series};
use fleetmq_protocol::{AlertInfo, DeviceInfo, HubStats, LatestValue, Value};

/// A Prometheus label value, escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The Prometheus text exposition (format 0.0.4).
pub fn prometheus(
    s: &HubStats,
    devices: &[DeviceInfo],
    latest: &[LatestValue],
    alerts: &[AlertInfo],
) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP fleetmq_{name} {help}\n# TYPE fleetmq_{name} {kind}\nfleetmq_{name} {value}"
        );
    };
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since the hub started.",
        s.uptime_ms as f64 / 1000.0,
    );
    let gauges = [
        (
            "devices_online",
            "Devices online now.",
            s.devices_online as f64,
        ),
        (
            "devices_known",
            "Devices ever seen.",
            s.devices_known as f64,
        ),
        (
            "devices_allowed",
            "Keys on the allow list.",
            s.devices_allowed as f64,
        ),
        (
            "keys_pending",
            "Keys not on the allow list that tried to connect since the hub started: devices waiting to be enrolled.",
            f64::from(s.keys_pending),
        ),
        (
            "store_writable",
            "1 if the hub can write its store; 0 while it cannot (a full disk), and telemetry waits.",
            f64::from(u8::from(s.storage_problem.is_empty())),
        ),
        (
            "telemetry_stored_bytes",
            "Bytes of telemetry batches in the store (what retention.telemetry.max_bytes holds to).",
            s.telemetry_bytes as f64,
        ),
        (
            "log_stored_bytes",
            "Of those, the bytes of batches holding log lines (what retention.logs.max_bytes holds to).",
            s.log_bytes as f64,
        ),
    ];
    for (name, help, v) in gauges {
        metric(name, "gauge", help, v);
    }
    let counters = [
        ("batches_stored_total", "Batches stored.", s.batches_stored),
        (
            "batches_duplicate_total",
            "Batches received again and not stored twice.",
            s.batches_duplicate,
        ),
        ("samples_stored_total", "Samples stored.", s.samples_stored),
        (
            "log_lines_stored_total",
            "Log lines stored.",
            s.log_lines_stored,
        ),
        (
            "frames_dropped_total",
            "Frames dropped as malformed.",
            s.frames_dropped,
        ),
        (
            "jobs_dispatched_total",
            "Jobs handed out, counting re-dispatches.",
            s.jobs_dispatched,
        ),
        (
            "results_received_total",
            "Job results taken.",
            s.results_received,
        ),
        (
            "commands_sent_total",
            "Commands sent to devices.",
            s.commands_sent,
        ),
        (
            "commands_timed_out_total",
            "Commands that timed out.",
            s.commands_timed_out,
        ),
        (
            "handshakes_refused_total",
            "Handshakes refused: key not enrolled.",
            s.handshakes_refused,
        ),
        (
            "handshakes_failed_total",
            "Handshakes that failed otherwise.",
            s.handshakes_failed,
        ),
        (
            "impersonations_total",
            "Messages claiming another device, dropped.",
            s.impersonations,
        ),
        (
            "rate_limited_total",
            "Messages dropped by the per-device rate limit.",
            s.rate_limited,
        ),
        (
            "disconnects_total",
            "Agent connections that ended.",
            s.disconnects,
        ),
        (
            "connection_conflicts_total",
            "Messages refused from a second agent with a connected device's key.",
            s.connection_conflicts,
        ),
        (
            "batches_renumbered_total",
            "Batches whose number another agent with the same device id had used; renumbered.",
            s.batches_renumbered,
        ),
        (
            "results_refused_total",
            "Job results refused: not from the device the attempt was given to.",
            s.results_refused,
        ),
        (
            "batches_throttled_total",
            "Batches over a device's records or bytes a second; the agent sends them again later.",
            s.batches_throttled,
        ),
        (
            "messages_undelivered_total",
            "Messages for devices on one connection dropped: the device was not reading and its queue was full.",
            s.messages_undelivered,
        ),
        (
            "subscriptions_refused_total",
            "Broadcast subscriptions refused: a topic the device may not hear (another device's, a group outside its pin, or a prefix).",
            s.subscriptions_refused,
        ),
        (
            "batches_rejected_total",
            "Batches never to be stored: invalid, or over a device's distinct-series budget.",
            s.batches_rejected,
        ),
        (
            "pruned_batches_total",
            "Telemetry batches deleted by retention.",
            s.pruned_batches,
        ),
        (
            "pruned_records_total",
            "Records (samples and chat lines) in the batches retention deleted.",
            s.pruned_records,
        ),
        (
            "pruned_chat_total",
            "Chat lines deleted by retention.",
            s.pruned_chat,
        ),
        (
            "pruned_jobs_total",
            "Finished jobs deleted by retention.",
            s.pruned_jobs,
        ),
        (
            "pruned_commands_total",
            "Command log entries deleted by retention.",
            s.pruned_commands,
        ),
    ];
    for (name, help, v) in counters {
        metric(name, "counter", help, v as f64);
    }
    labelled_gauge(
        &mut out,
        "device_online",
        "1 if the device is online.",
        devices,
        |d| {
            (
                format!("device=\"{}\"", label(&d.id)),
                f64::from(u8::from(d.online)),
            )
        },
    );
    labelled_gauge(
        &mut out,
        "device_last_seen_seconds",
        "When the hub last heard from the device (Unix time).",
        devices,
        |d| {
            let seen = d.last_seen_ms as f64 / 1000.0;
            (format!("device=\"{}\"", label(&d.id)), seen)
        },
    );
    labelled_gauge(
        &mut out,
        "device_info",
        "1 for each device, with what it runs and is as labels (its agent's version and architecture; the OS release, kernel and model its agent's facts say, empty from an older agent): join on device to group or alert by them.",
        devices,
        |d| {
            let f = &d.facts;
            let labels = format!(
                "device=\"{}\",agent_version=\"{}\",arch=\"{}\",os_release=\"{}\",kernel=\"{}\",model=\"{}\"",
                label(&d.id),
                label(&d.agent_version),
                label(&d.arch),
                label(&f.os_release),
                label(&f.kernel),
                label(&f.model)
            );
            (labels, 1.0)
        },
    );
    let measured: Vec<(&str, i64)> = (devices.iter())
        .filter_map(|d| Some((d.id.as_str(), d.clock_offset_ms?)))
        .collect();
    labelled_gauge(
        &mut out,
        "device_clock_offset_seconds",
        "How far the device's clock is from the hub's (ahead when positive), from its heartbeats.",
        &measured,
        |(id, offset)| {
            let seconds = *offset as f64 / 1000.0;
            (format!("device=\"{}\"", label(id)), seconds)
        },
    );
    let _ = writeln!(
        out,
        "# HELP fleetmq_metric The newest value of each device metric.\n# TYPE fleetmq_metric gauge"
    );
    for l in latest {
        let v = match l.value {
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
        };
        let (name, tags) = split_series(&l.name);
        let mut labels = format!("device=\"{}\",metric=\"{}\"", label(&l.device), label(name));
        for (k, v) in tag_labels(&tags) {
            let _ = write!(labels, ",{k}=\"{}\"", label(v));
        }
        let _ = write!(out, "fleetmq_metric{{{labels}}} {}", sample_value(v));
        // Ingest keeps times within MAX_TS_MS; an older store's row past
        // it goes out without a time rather than break the scrape.
        if l.ts_ms <= MAX_TS_MS {
            let _ = write!(out, " {}", l.ts_ms);
        }
        out.push('\n');
    }
    front_ends(&mut out, &s.front_ends);
    let _ = writeln!(
        out,
        "# HELP fleetmq_alert 1 while the alert fires, 0 while it is pending (rules in [alerts]).\n# TYPE fleetmq_alert gauge"
    );
    for a in alerts {
        let _ = write!(
            out,
            "fleetmq_alert{{alertname=\"{}\",device=\"{}\"",
            label(&a.rule),
            label(&a.device)
        );
        if !a.series.is_empty() {
            let _ = write!(out, ",series=\"{}\"", label(&a.series));
        }
        let _ = writeln!(out, "}} {}", u8::from(a.firing));
    }
    out
}

/// On a front-end over NATS, each live front-end as it last reported: the
/// version it runs, and how many of the features the cluster applies it
/// lacks (an older release mid-upgrade: a job cancel or a forget is refused
/// while it is live). Every front-end's scrape shows them all. Nothing on
/// a single hub.
fn front_ends(out: &mut String, front_ends: &[fleetmq_protocol::FrontEndStats]) {
    if front_ends.is_empty() {
        return;
    }
    let name = |f: &fleetmq_protocol::FrontEndStats| format!("front_end=\"{}\"", label(&f.name));
    labelled_gauge(
        out,
        "front_end_info",
        "Each live front-end and the fleetmq-hub version it runs (empty: a release from before versions were reported).",
        front_ends,
        |f| {
            (
                format!("{},version=\"{}\"", name(f), label(&f.version)),
                1.0,
            )
        },
    );
    labelled_gauge(
        out,
        "front_end_lacking_features",
        "Features the cluster applies that the front-end lacks; while above 0, job cancel and forget are refused: upgrade it.",
        front_ends,
        |f| (name(f), f.lacking().len() as f64),
    );
}

/// A gauge with labels: its HELP and TYPE, then a line for each of `rows`
/// with the labels (escaped) and the value `line` gives it.
fn labelled_gauge<T>(
    out: &mut String,
    name: &str,
    help: &str,
    rows: &[T],
    line: impl Fn(&T) -> (String, f64),
) {
    let _ = writeln!(
        out,
        "# HELP fleetmq_{name} {help}\n# TYPE fleetmq_{name} gauge"
    );
    for row in rows {
        let (labels, value) = line(row);
        let _ = writeln!(out, "fleetmq_{name}{{{labels}}} {value}");
    }
}

/// The labels a series' tags become. A tag named like one of the hub's own
/// labels (`device`, `metric`) or with Prometheus's reserved `__` prefix
/// gets `tag_` in front, again until it is unlike every other label on the
/// line: `device` becomes `tag_device`, or `tag_tag_device` if the series
/// also has a `tag_device` tag. Other tag keys are valid label names as
/// they are (the protocol holds them to `[A-Za-z_][A-Za-z0-9_]*`).
pub(super) fn tag_labels<'a>(tags: &[(&'a str, &'a str)]) -> Vec<(String, &'a str)> {
    let taken = |name: &str, done: &[(String, &str)]| {
        matches!(name, "device" | "metric")
            || tags.iter().any(|(k, _)| *k == name)
            || done.iter().any(|(k, _)| k == name)
    };
    let mut out: Vec<(String, &str)> = Vec::with_capacity(tags.len());
    for &(k, v) in tags {
        let mut name = k.to_string();
        if matches!(k, "device" | "metric") || k.starts_with("__") {
            name = format!("tag_{k}");
            while taken(&name, &out) {
                name.insert_str(0, "tag_");
            }
        }
        out.push((name, v));
    }
    out
}

/// A sample value as the text format writes it: `NaN`, `+Inf`, `-Inf` or
/// a number (Rust alone would write `inf`).
pub(super) fn sample_value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        v.to_string()
    }
}
