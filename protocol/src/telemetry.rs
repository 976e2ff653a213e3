//! The telemetry batch: samples and chat lines, compactly.
//!
//! A batch is what an agent sends upstream and what the hub stores and acks
//! as one unit, keyed by (device id, `seq`). It is compact on purpose:
//!
//! * metric names are interned: `names` lists each once, a sample refers to
//!   its name by index;
//! * timestamps are a `base_ts_ms` plus a signed per-record offset, which is
//!   one or two bytes for records taken within a few seconds of each other;
//! * integers are zigzag varints, so counters and small gauges take few bytes.
//!
//! ```text
//! Batch    = seq varint(u64) | base_ts_ms varint(u64) | names Vec<String>
//!          | samples Vec<Sample> | chat Vec<ChatLine>
//! Sample   = name varint(u32, index into names) | offset_ms zigzag(i32) | Value
//! Value    = 0x00 zigzag(i64)            (Int)
//!          | 0x01 f64 little-endian      (Float)
//! ChatLine = offset_ms zigzag(i32) | text String
//! ```
//!
//! A batch holding log lines travels as a [`LogBatch`] (kind 0x09): the
//! same fields, then the log sources and lines.
//!
//! ```text
//! LogBatch = Batch's fields | sources Vec<String> | logs Vec<LogLine>
//! LogLine  = source varint(u32, index into sources) | offset_ms zigzag(i32) | text String
//! ```

use std::collections::HashMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest metric name, in bytes.
pub const MAX_METRIC_NAME_LEN: usize = 128;
/// Longest chat line, in bytes.
pub const MAX_CHAT_LEN: usize = 2000;
/// Longest log line, in bytes: an agent cuts a longer one here.
pub const MAX_LOG_LINE_LEN: usize = 4096;
/// Most records (samples and chat lines) one batch may hold: bounds the
/// work one message costs the hub.
pub const MAX_BATCH_RECORDS: usize = 20_000;
/// Most batches an agent keeps sent and not yet acked: a resend comes
/// within this many of the device's newest batch, and the hub looks for
/// it among that many.
pub const MAX_IN_FLIGHT: usize = 1024;
/// The latest record time a batch may carry: 9999-12-31T23:59:59.999Z, in
/// ms since the Unix epoch. It fits an `i64` (SQLite, Prometheus) and a
/// JSON number exactly. There is no earliest but the epoch: a Pi without a
/// real-time clock says 1970 until NTP answers, and is stored as it says.
pub const MAX_TS_MS: u64 = 253_402_300_799_999;

/// One sample's value: an integer or a float.
///
/// On the wire (postcard) it is an enum; in human-readable formats (JSON) it
/// is a plain number.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Value {
    /// Counters and other whole numbers: a zigzag varint on the wire.
    Int(i64),
    /// Gauges and rates: eight bytes, IEEE 754 little-endian.
    Float(f64),
}

#[derive(Serialize, Deserialize)]
enum WireValue {
    Int(i64),
    Float(f64),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum HumanValue {
    Int(i64),
    Float(f64),
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (*self, s.is_human_readable()) {
            (Value::Int(v), true) => HumanValue::Int(v).serialize(s),
            (Value::Float(v), true) => HumanValue::Float(v).serialize(s),
            (Value::Int(v), false) => WireValue::Int(v).serialize(s),
            (Value::Float(v), false) => WireValue::Float(v).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            Ok(match HumanValue::deserialize(d)? {
                HumanValue::Int(v) => Value::Int(v),
                HumanValue::Float(v) => Value::Float(v),
            })
        } else {
            Ok(match WireValue::deserialize(d)? {
                WireValue::Int(v) => Value::Int(v),
                WireValue::Float(v) => Value::Float(v),
            })
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
        }
    }
}

/// One measurement inside a [`Batch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Sample {
    /// Index into [`Batch::names`].
    pub name: u32,
    /// Milliseconds from [`Batch::base_ts_ms`]; negative when the clock stepped back.
    pub offset_ms: i32,
    /// The measured value.
    pub value: Value,
}

/// One chat line inside a [`Batch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ChatLine {
    /// Milliseconds from [`Batch::base_ts_ms`].
    pub offset_ms: i32,
    /// What was said, at most [`MAX_CHAT_LEN`] bytes.
    pub text: String,
}

/// One log line inside a [`Batch`] (sent as a [`LogBatch`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct LogLine {
    /// Index into [`Batch::sources`].
    pub source: u32,
    /// Milliseconds from [`Batch::base_ts_ms`].
    pub offset_ms: i32,
    /// The line, without its line end, at most [`MAX_LOG_LINE_LEN`] bytes.
    pub text: String,
}

/// Samples, chat lines and log lines that travel, are stored and are
/// acked as one unit. A batch without log lines is sent as kind 0x03
/// (`sources` and `logs` are not on that wire); one with them as a
/// [`LogBatch`] (kind 0x09).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Batch {
    /// The agent's sequence number; with the device id it names the batch, so
    /// the hub stores a resent batch once.
    pub seq: u64,
    /// Wall-clock milliseconds since the Unix epoch that offsets count from.
    pub base_ts_ms: u64,
    /// Metric names, each once; samples refer to them by index.
    pub names: Vec<String>,
    /// The samples.
    pub samples: Vec<Sample>,
    /// Chat lines said on the device.
    pub chat: Vec<ChatLine>,
    /// Where the log lines come from (a file's path), each once; log
    /// lines refer to them by index.
    #[serde(skip)]
    #[cfg_attr(feature = "arbitrary", arbitrary(default))]
    pub sources: Vec<String>,
    /// Log lines read on the device.
    #[serde(skip)]
    #[cfg_attr(feature = "arbitrary", arbitrary(default))]
    pub logs: Vec<LogLine>,
}

/// A [`Batch`] holding log lines, as kind 0x09 carries it: the batch's
/// fields as kind 0x03 has them, then `sources` and `logs`. A hub that
/// predates log lines does not know the kind, so an agent sends one only
/// to a hub that said it takes them ([`crate::TakesLogs`]).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct LogBatch(pub Batch);

type LogBatchWire = (
    u64,
    u64,
    Vec<String>,
    Vec<Sample>,
    Vec<ChatLine>,
    Vec<String>,
    Vec<LogLine>,
);

impl Serialize for LogBatch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = &self.0;
        (
            b.seq,
            b.base_ts_ms,
            &b.names,
            &b.samples,
            &b.chat,
            &b.sources,
            &b.logs,
        )
            .serialize(s)
    }
}

impl<'de> Deserialize<'de> for LogBatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (seq, base_ts_ms, names, samples, chat, sources, logs) = LogBatchWire::deserialize(d)?;
        Ok(LogBatch(Batch {
            seq,
            base_ts_ms,
            names,
            samples,
            chat,
            sources,
            logs,
        }))
    }
}

/// Decodes a batch body as the hub stores it: the body of a kind 0x03 or
/// a kind 0x09 frame. A 0x09 body is a 0x03 body followed by the log
/// lists, so exactly one of the two reads it whole.
pub fn stored_batch(body: &[u8]) -> Result<Batch, crate::DecodeError> {
    match crate::envelope::body::<Batch>("Batch", body) {
        Err(crate::DecodeError::TrailingBytes { .. }) => {
            crate::envelope::body::<LogBatch>("LogBatch", body).map(|b| b.0)
        }
        other => other,
    }
}

/// A batch that is well-formed postcard but does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// A sample's name index is past the end of `names`.
    #[error("sample {sample} names index {index}, but the batch has {names} names")]
    NameIndex {
        /// Position of the sample in the batch.
        sample: usize,
        /// The index it carried.
        index: u32,
        /// How many names there are.
        names: usize,
    },
    /// A metric name is empty, too long or has control characters.
    #[error("metric name {name:?} is not valid: use 1 to {MAX_METRIC_NAME_LEN} printable bytes")]
    BadName {
        /// The offending name.
        name: String,
    },
    /// A chat line is longer than [`MAX_CHAT_LEN`].
    #[error("chat line of {len} bytes is over the {MAX_CHAT_LEN}-byte limit")]
    ChatTooLong {
        /// Its length.
        len: usize,
    },
    /// A record's time (base plus offset) is before the Unix epoch or
    /// after [`MAX_TS_MS`].
    #[error(
        "record time {base_ts_ms} ms {offset_ms:+} ms is outside 0..={MAX_TS_MS} (the Unix epoch to the end of year 9999); check the writer's clock"
    )]
    Timestamp {
        /// The batch base.
        base_ts_ms: u64,
        /// The offset.
        offset_ms: i32,
    },
    /// More records than [`MAX_BATCH_RECORDS`].
    #[error("{records} records is over the {MAX_BATCH_RECORDS} a batch may hold")]
    TooManyRecords {
        /// Samples, chat lines and log lines.
        records: usize,
    },
    /// A log line is longer than [`MAX_LOG_LINE_LEN`].
    #[error("log line of {len} bytes is over the {MAX_LOG_LINE_LEN}-byte limit")]
    LogLineTooLong {
        /// Its length.
        len: usize,
    },
    /// A log source is empty, too long or has control characters.
    #[error(
        "log source {source_name:?} is not valid: use 1 to {MAX_METRIC_NAME_LEN} printable bytes"
    )]
    BadSource {
        /// The offending source.
        source_name: String,
    },
    /// A log line's source index is past the end of `sources`, or there
    /// are more sources than lines.
    #[error(
        "{sources} log sources for {lines} log lines, or a line naming a source past them: a batch lists only the sources its lines use"
    )]
    SourceIndex {
        /// Sources listed.
        sources: usize,
        /// Log lines.
        lines: usize,
    },
    /// More names than samples: a batch lists only the names its samples
    /// use.
    #[error("{names} names for {samples} samples: a batch lists only the names its samples use")]
    UnusedNames {
        /// Names listed.
        names: usize,
        /// Samples.
        samples: usize,
    },
    /// The record is too far in time from the batch's first record to be
    /// stored as an offset; start a new batch.
    #[error("timestamp {ts_ms} is too far from the batch base {base_ts_ms}; start a new batch")]
    OffsetOutOfRange {
        /// The batch base.
        base_ts_ms: u64,
        /// The record's timestamp.
        ts_ms: u64,
    },
}

/// A sample with its name and absolute timestamp resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleRef<'a> {
    /// Metric name.
    pub name: &'a str,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// The value.
    pub value: Value,
}

/// True if `name` can be a metric name: 1 to [`MAX_METRIC_NAME_LEN`]
/// bytes, no control characters.
pub fn valid_metric_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_METRIC_NAME_LEN && !name.chars().any(char::is_control)
}

/// Longest tag key, in bytes.
pub const MAX_TAG_KEY_LEN: usize = 32;

/// Why a series name could not be made from a metric name and tags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeriesError {
    /// The metric name is empty, too long, or holds `{`, `}` or a control
    /// character.
    #[error("{0:?} is not a metric name: use printable characters other than '{{' and '}}'")]
    BadName(String),
    /// A tag key is not `[A-Za-z_][A-Za-z0-9_]*` of at most [`MAX_TAG_KEY_LEN`] bytes.
    #[error("tag key {0:?} is not valid: use letters, digits and '_', not starting with a digit")]
    BadTagKey(String),
    /// A tag value is empty or holds `,`, `=`, `{`, `}` or a control character.
    #[error(
        "tag {key}={value:?}: a tag value is 1 or more printable characters other than , = {{ }}"
    )]
    BadTagValue {
        /// The tag's key.
        key: String,
        /// The offending value.
        value: String,
    },
    /// The same key twice.
    #[error("tag key {0:?} is given twice")]
    DuplicateTag(String),
    /// The whole series name is longer than [`MAX_METRIC_NAME_LEN`].
    #[error(
        "series {0:?} is longer than {MAX_METRIC_NAME_LEN} bytes; use shorter names or fewer tags"
    )]
    TooLong(String),
}

fn valid_tag_key(key: &str) -> bool {
    let mut chars = key.chars();
    key.len() <= MAX_TAG_KEY_LEN
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_tag_value(value: &str) -> bool {
    !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_control() || matches!(c, ',' | '=' | '{' | '}'))
}

/// The series name for `name` with `tags`: `name` alone without tags,
/// else `name{k1=v1,k2=v2}` with the keys sorted, so one series always has
/// one spelling. It travels as an ordinary metric name (see PROTOCOL.md).
pub fn series_name<K: AsRef<str>, V: AsRef<str>>(
    name: &str,
    tags: &[(K, V)],
) -> Result<String, SeriesError> {
    if !valid_metric_name(name) || name.contains(['{', '}']) {
        return Err(SeriesError::BadName(name.to_string()));
    }
    let mut sorted: Vec<(&str, &str)> =
        tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
    sorted.sort_unstable();
    let mut out = name.to_string();
    for (i, (key, value)) in sorted.iter().enumerate() {
        if !valid_tag_key(key) {
            return Err(SeriesError::BadTagKey(key.to_string()));
        }
        if !valid_tag_value(value) {
            return Err(SeriesError::BadTagValue {
                key: key.to_string(),
                value: value.to_string(),
            });
        }
        if i > 0 && sorted[i - 1].0 == *key {
            return Err(SeriesError::DuplicateTag(key.to_string()));
        }
        out.push(if i == 0 { '{' } else { ',' });
        out.push_str(key);
        out.push('=');
        out.push_str(value);
    }
    if !sorted.is_empty() {
        out.push('}');
    }
    if out.len() > MAX_METRIC_NAME_LEN {
        return Err(SeriesError::TooLong(out));
    }
    Ok(out)
}

/// The metric of a series name: what comes before its tags (`host.temp_c`
/// of `host.temp_c{zone=cpu}`). Cheaper than [`split_series`] when the tags
/// are not wanted.
pub fn metric_of(series: &str) -> &str {
    series.split_once('{').map_or(series, |(metric, _)| metric)
}

/// Splits a series name into its metric name and tags. A name that is not
/// of the `name{k=v,...}` form (as [`series_name`] writes it) is a metric
/// name without tags.
pub fn split_series(series: &str) -> (&str, Vec<(&str, &str)>) {
    let parsed = series
        .strip_suffix('}')
        .and_then(|s| s.split_once('{'))
        .and_then(|(name, inner)| {
            let tags = inner
                .split(',')
                .map(|pair| {
                    pair.split_once('=')
                        .filter(|(k, v)| valid_tag_key(k) && valid_tag_value(v))
                })
                .collect::<Option<Vec<_>>>()?;
            (!name.is_empty()).then_some((name, tags))
        });
    parsed.unwrap_or((series, Vec::new()))
}

fn absolute(base_ts_ms: u64, offset_ms: i32) -> Result<u64, BatchError> {
    base_ts_ms
        .checked_add_signed(i64::from(offset_ms))
        .filter(|&ts| ts <= MAX_TS_MS)
        .ok_or(BatchError::Timestamp {
            base_ts_ms,
            offset_ms,
        })
}

impl Batch {
    /// Checks what postcard cannot: indices, names, lengths and timestamps.
    /// The hub refuses a batch that fails this rather than store half of it.
    pub fn validate(&self) -> Result<(), BatchError> {
        let records = self.record_count();
        if records > MAX_BATCH_RECORDS {
            return Err(BatchError::TooManyRecords { records });
        }
        if self.names.len() > self.samples.len() {
            return Err(BatchError::UnusedNames {
                names: self.names.len(),
                samples: self.samples.len(),
            });
        }
        if let Some(name) = self.names.iter().find(|n| !valid_metric_name(n)) {
            return Err(BatchError::BadName { name: name.clone() });
        }
        for (i, s) in self.samples.iter().enumerate() {
            if s.name as usize >= self.names.len() {
                return Err(BatchError::NameIndex {
                    sample: i,
                    index: s.name,
                    names: self.names.len(),
                });
            }
            absolute(self.base_ts_ms, s.offset_ms)?;
        }
        for c in &self.chat {
            if c.text.len() > MAX_CHAT_LEN {
                return Err(BatchError::ChatTooLong { len: c.text.len() });
            }
            absolute(self.base_ts_ms, c.offset_ms)?;
        }
        let bad_index = || BatchError::SourceIndex {
            sources: self.sources.len(),
            lines: self.logs.len(),
        };
        if self.sources.len() > self.logs.len() {
            return Err(bad_index());
        }
        if let Some(source) = self.sources.iter().find(|n| !valid_metric_name(n)) {
            return Err(BatchError::BadSource {
                source_name: source.clone(),
            });
        }
        for line in &self.logs {
            if line.text.len() > MAX_LOG_LINE_LEN {
                return Err(BatchError::LogLineTooLong {
                    len: line.text.len(),
                });
            }
            if line.source as usize >= self.sources.len() {
                return Err(bad_index());
            }
            absolute(self.base_ts_ms, line.offset_ms)?;
        }
        Ok(())
    }

    /// The log lines with their sources and absolute timestamps: (time,
    /// source, text). Lines that do not resolve are skipped; call
    /// [`Batch::validate`] first to refuse them.
    pub fn resolved_logs(&self) -> impl Iterator<Item = (u64, &str, &str)> {
        self.logs.iter().filter_map(|l| {
            Some((
                absolute(self.base_ts_ms, l.offset_ms).ok()?,
                self.sources.get(l.source as usize)?.as_str(),
                l.text.as_str(),
            ))
        })
    }

    /// The samples with names and timestamps resolved. Records that do not
    /// resolve are skipped; call [`Batch::validate`] first to refuse them.
    pub fn resolved_samples(&self) -> impl Iterator<Item = SampleRef<'_>> {
        self.samples.iter().filter_map(|s| {
            Some(SampleRef {
                name: self.names.get(s.name as usize)?,
                ts_ms: absolute(self.base_ts_ms, s.offset_ms).ok()?,
                value: s.value,
            })
        })
    }

    /// The newest sample of each name (the later one in the batch when two
    /// share a time), in the order of `names`: what a reader keeping the
    /// newest value of every series needs, with one look-up a name
    /// instead of one a sample (a batch of 1 Hz readings holds each
    /// series many times).
    pub fn newest_samples(&self) -> Vec<SampleRef<'_>> {
        let mut newest: Vec<Option<(u64, Value)>> = vec![None; self.names.len()];
        for s in &self.samples {
            let (Some(slot), Ok(ts_ms)) = (
                newest.get_mut(s.name as usize),
                absolute(self.base_ts_ms, s.offset_ms),
            ) else {
                continue;
            };
            if slot.is_none_or(|(t, _)| ts_ms >= t) {
                *slot = Some((ts_ms, s.value));
            }
        }
        self.names
            .iter()
            .zip(newest)
            .filter_map(|(name, n)| n.map(|(ts_ms, value)| SampleRef { name, ts_ms, value }))
            .collect()
    }

    /// The chat lines with absolute timestamps.
    pub fn resolved_chat(&self) -> impl Iterator<Item = (u64, &str)> {
        self.chat.iter().filter_map(|c| {
            Some((
                absolute(self.base_ts_ms, c.offset_ms).ok()?,
                c.text.as_str(),
            ))
        })
    }

    /// Samples, chat lines and log lines.
    pub fn record_count(&self) -> usize {
        self.samples.len() + self.chat.len() + self.logs.len()
    }
}

/// Builds a [`Batch`], interning names and computing offsets.
#[derive(Debug)]
pub struct BatchBuilder {
    batch: Batch,
    base_set: bool,
    index: HashMap<String, u32>,
    source_index: HashMap<String, u32>,
}

impl BatchBuilder {
    /// An empty batch with this sequence number.
    pub fn new(seq: u64) -> Self {
        BatchBuilder {
            batch: Batch {
                seq,
                base_ts_ms: 0,
                names: Vec::new(),
                samples: Vec::new(),
                chat: Vec::new(),
                sources: Vec::new(),
                logs: Vec::new(),
            },
            base_set: false,
            index: HashMap::new(),
            source_index: HashMap::new(),
        }
    }

    fn offset(&mut self, ts_ms: u64) -> Result<i32, BatchError> {
        if !self.base_set {
            self.batch.base_ts_ms = ts_ms;
            self.base_set = true;
        }
        let base = self.batch.base_ts_ms;
        let delta = i128::from(ts_ms) - i128::from(base);
        i32::try_from(delta).map_err(|_| BatchError::OffsetOutOfRange {
            base_ts_ms: base,
            ts_ms,
        })
    }

    /// Adds a sample. Fails, leaving the batch as it was, if the name is not
    /// valid or the timestamp is too far from the batch's first record.
    pub fn push_sample(&mut self, name: &str, ts_ms: u64, value: Value) -> Result<(), BatchError> {
        if !valid_metric_name(name) {
            return Err(BatchError::BadName { name: name.into() });
        }
        let was_set = self.base_set;
        let offset_ms = self
            .offset(ts_ms)
            .inspect_err(|_| self.base_set = was_set)?;
        let next = self.batch.names.len() as u32;
        let name = *self.index.entry(name.to_string()).or_insert_with(|| {
            self.batch.names.push(name.to_string());
            next
        });
        self.batch.samples.push(Sample {
            name,
            offset_ms,
            value,
        });
        Ok(())
    }

    /// Adds a chat line, refusing one over [`MAX_CHAT_LEN`] bytes.
    pub fn push_chat(&mut self, ts_ms: u64, text: &str) -> Result<(), BatchError> {
        if text.len() > MAX_CHAT_LEN {
            return Err(BatchError::ChatTooLong { len: text.len() });
        }
        let was_set = self.base_set;
        let offset_ms = self
            .offset(ts_ms)
            .inspect_err(|_| self.base_set = was_set)?;
        self.batch.chat.push(ChatLine {
            offset_ms,
            text: text.to_string(),
        });
        Ok(())
    }

    /// Adds a log line from `source`, refusing one over
    /// [`MAX_LOG_LINE_LEN`] bytes or a source that is not 1 to
    /// [`MAX_METRIC_NAME_LEN`] printable bytes.
    pub fn push_log(&mut self, source: &str, ts_ms: u64, text: &str) -> Result<(), BatchError> {
        if text.len() > MAX_LOG_LINE_LEN {
            return Err(BatchError::LogLineTooLong { len: text.len() });
        }
        if !valid_metric_name(source) {
            return Err(BatchError::BadSource {
                source_name: source.into(),
            });
        }
        let was_set = self.base_set;
        let offset_ms = self
            .offset(ts_ms)
            .inspect_err(|_| self.base_set = was_set)?;
        let next = self.batch.sources.len() as u32;
        let source = *self
            .source_index
            .entry(source.to_string())
            .or_insert_with(|| {
                self.batch.sources.push(source.to_string());
                next
            });
        self.batch.logs.push(LogLine {
            source,
            offset_ms,
            text: text.to_string(),
        });
        Ok(())
    }

    /// Records added so far.
    pub fn len(&self) -> usize {
        self.batch.record_count()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The finished batch.
    pub fn finish(self) -> Batch {
        self.batch
    }
}

#[cfg(test)]
mod tests;
