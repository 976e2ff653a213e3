//! A batch as Influx line protocol, the body of each message on the
//! telemetry stream: Telegraf's and Vector's NATS inputs read it as it is.
//!
//! One line per sample: the metric (its name without tags) as the
//! measurement, the series' own tags and `device` as tags (sorted by key),
//! one field `value` (`5i` for an integer, `1.5` for a float), and the
//! timestamp in nanoseconds. A chat line is `fleetmq_chat,device=D
//! text="..."`, a log line `fleetmq_log,device=D,source=PATH text="..."`. A series tag called `device` becomes `device_tag`; a
//! float that is not finite (line protocol has no NaN) is left out of the
//! lines (it stays in the exact batch the message also carries).

use std::fmt::Write;

use fleetmq_protocol::telemetry::split_series;
use fleetmq_protocol::{Batch, Value};

/// The measurement of chat lines.
pub const CHAT_MEASUREMENT: &str = "fleetmq_chat";
/// The measurement of log lines.
pub const LOG_MEASUREMENT: &str = "fleetmq_log";

/// `batch` from `device` as line protocol, one line per sample, chat line
/// and log line, each ending in a newline.
pub fn batch_lines(device: &str, batch: &Batch) -> String {
    let mut out = String::new();
    let device = escape_tag(device);
    for s in batch.resolved_samples() {
        let value = match s.value {
            Value::Int(i) => format!("{i}i"),
            Value::Float(f) if f.is_finite() => format!("{f:?}"),
            Value::Float(_) => continue,
        };
        let (metric, tags) = split_series(s.name);
        let mut tags: Vec<(String, String)> = tags
            .into_iter()
            .map(|(k, v)| {
                let k = if k == "device" { "device_tag" } else { k };
                (escape_tag(k), escape_tag(v))
            })
            .collect();
        tags.push(("device".into(), device.clone()));
        tags.sort();
        out.push_str(&escape_measurement(metric));
        for (k, v) in &tags {
            let _ = write!(out, ",{k}={v}");
        }
        let _ = writeln!(out, " value={value} {}", ns(s.ts_ms));
    }
    for (ts_ms, text) in batch.resolved_chat() {
        let _ = writeln!(
            out,
            "{CHAT_MEASUREMENT},device={device} text=\"{}\" {}",
            escape_string(text),
            ns(ts_ms)
        );
    }
    for (ts_ms, source, text) in batch.resolved_logs() {
        let _ = writeln!(
            out,
            "{LOG_MEASUREMENT},device={device},source={} text=\"{}\" {}",
            escape_tag(source),
            escape_string(text),
            ns(ts_ms)
        );
    }
    out
}

fn ns(ts_ms: u64) -> u128 {
    u128::from(ts_ms) * 1_000_000
}

/// Measurements escape commas and spaces.
fn escape_measurement(s: &str) -> String {
    escape(s, &[',', ' '])
}

/// Tag keys and values escape commas, equals signs and spaces.
fn escape_tag(s: &str) -> String {
    escape(s, &[',', '=', ' '])
}

/// String fields escape double quotes and backslashes; a line break
/// (which ends a line) is written as `\n`.
fn escape_string(s: &str) -> String {
    escape(s, &['"', '\\'])
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

fn escape(s: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use fleetmq_protocol::telemetry::BatchBuilder;

    use super::*;

    #[test]
    fn samples_are_lines_with_the_device_tag_and_nanoseconds() {
        let mut b = BatchBuilder::new(7);
        b.push_sample("cpu.temp", 1_700_000_000_000, Value::Float(48.5))
            .unwrap();
        b.push_sample(
            "disk.free{mount=/var,kind=ssd}",
            1_700_000_001_000,
            Value::Int(42),
        )
        .unwrap();
        b.push_chat(1_700_000_002_000, "said \"hi\" \\ there")
            .unwrap();
        b.push_log("/var/log/my app.log", 1_700_000_003_000, "a=\"b\"")
            .unwrap();
        let lines = batch_lines("pi 1", &b.finish());
        assert_eq!(
            lines,
            "cpu.temp,device=pi\\ 1 value=48.5 1700000000000000000\n\
             disk.free,device=pi\\ 1,kind=ssd,mount=/var value=42i 1700000001000000000\n\
             fleetmq_chat,device=pi\\ 1 text=\"said \\\"hi\\\" \\\\ there\" 1700000002000000000\n\
             fleetmq_log,device=pi\\ 1,source=/var/log/my\\ app.log text=\"a=\\\"b\\\"\" 1700000003000000000\n"
        );
    }

    #[test]
    fn specials_are_escaped_and_what_line_protocol_cannot_hold_is_left_out() {
        let mut b = BatchBuilder::new(1);
        b.push_sample("a,b c{device=x}", 1_000, Value::Float(1.0))
            .unwrap();
        b.push_sample("nan", 1_000, Value::Float(f64::NAN)).unwrap();
        let lines = batch_lines("d=1", &b.finish());
        assert_eq!(
            lines,
            "a\\,b\\ c,device=d\\=1,device_tag=x value=1.0 1000000000\n"
        );
    }
}
