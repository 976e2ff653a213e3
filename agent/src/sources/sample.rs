//! What both kinds of local ingest (Influx lines, StatsD) make of a line:
//! a sample, its value, and tag keys made valid.

use fleetmq_protocol::Value;

/// One parsed sample; `ts_ms` is None for "now".
#[derive(Debug, Clone, PartialEq)]
pub struct Ingested {
    pub name: String,
    pub value: Value,
    pub ts_ms: Option<u64>,
}

pub fn number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("{text:?} is not a number")),
    }
}

/// An integer when it is one, else a float.
pub fn value_of(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        Value::Int(v as i64)
    } else {
        Value::Float(v)
    }
}

/// A DogStatsD-style tag key made valid: anything but letters, digits and
/// `_` becomes `_`, and a leading digit gets a `_` before it.
pub fn tag_key(raw: &str) -> String {
    let mut key: String = raw
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if key.starts_with(|c: char| c.is_ascii_digit()) {
        key.insert(0, '_');
    }
    key
}
