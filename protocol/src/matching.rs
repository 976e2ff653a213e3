//! Which devices an operator means by what they are: `model~zero`,
//! `os~bullseye`, `kernel!=6.6.51+rpt-rpi-v8`, `memory<1G`. A job or a
//! fleet command narrowed by such filters runs on the devices its aim
//! names (or every device, with no other aim) that match every one; the
//! command line lists whom they match with `fleetmq-hub devices --where`.
//!
//! A filter is `FIELD OP VALUE`, with no spaces around the operator:
//! * `=` the field is the value, exactly; `!=` it is not;
//! * `~` it holds the value, case aside; `!~` it does not;
//! * `<`, `>` for `memory` only: less, more than a size (`512M`, `1G`).
//!
//! A list field (`address`, `mac`, `interface`) matches `=` and `~` when
//! one of the device's does, `!=` and `!~` when none does. A field the hub
//! does not know for a device (an agent of a release before facts, or one
//! that could not read it) matches no filter, not even a negative one: a
//! command aimed at "every kernel but 6.6" does not reach a device whose
//! kernel is unknown.

use std::fmt;

use crate::messages::DeviceFacts;
use crate::operator::DeviceInfo;

/// Most filters one job or command carries.
pub const MATCHING_MAX: usize = 8;
/// Most bytes of a filter's value (the longest fact).
pub const MATCHING_MAX_VALUE: usize = crate::facts::FACTS_MAX_TEXT;

/// The fields a filter may name, in the words it uses.
const FIELDS: [(&str, Field); 10] = [
    ("model", Field::Model),
    ("os", Field::Os),
    ("kernel", Field::Kernel),
    ("serial", Field::Serial),
    ("memory", Field::Memory),
    ("address", Field::Address),
    ("mac", Field::Mac),
    ("interface", Field::Interface),
    ("version", Field::Version),
    ("arch", Field::Arch),
];

/// One filter, read from its words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// As the operator wrote it.
    text: String,
    field: Field,
    op: Op,
    value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Model,
    Os,
    Kernel,
    Serial,
    Memory,
    Address,
    Mac,
    Interface,
    Version,
    Arch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Is,
    IsNot,
    Holds,
    HoldsNot,
    Below,
    Above,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    /// As written (for `=` and `!=`), and lowercased once (for `~`, `!~`).
    Text {
        exact: String,
        lower: String,
    },
    Bytes(u64),
}

/// The operators, longest first so that `!=` is not read as `=`.
const OPS: [(&str, Op); 6] = [
    ("!=", Op::IsNot),
    ("!~", Op::HoldsNot),
    ("=", Op::Is),
    ("~", Op::Holds),
    ("<", Op::Below),
    (">", Op::Above),
];

impl Matcher {
    /// Reads a filter, saying what is wrong with it if it is not one.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let op_at = text.find(['=', '!', '~', '<', '>']).unwrap_or(text.len());
        let (name, rest) = text.split_at(op_at);
        let Some(&(op_text, op)) = OPS.iter().find(|(o, _)| rest.starts_with(o)) else {
            return Err(format!(
                "filter {text:?} is not FIELD OP VALUE: use = != ~ !~ (or < > for memory), e.g. model~zero"
            ));
        };
        let lower_name = name.to_ascii_lowercase();
        let Some(&(_, field)) = FIELDS.iter().find(|(n, _)| *n == lower_name) else {
            let names: Vec<&str> = FIELDS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "filter {text:?}: no field {name:?}; the fields are {}",
                names.join(", ")
            ));
        };
        let value = &rest[op_text.len()..];
        if value.is_empty() {
            return Err(format!("filter {text:?} has no value after {op_text}"));
        }
        if value.len() > MATCHING_MAX_VALUE || value.chars().any(char::is_control) {
            return Err(format!(
                "filter {text:?}: a value is at most {MATCHING_MAX_VALUE} bytes with no control characters"
            ));
        }
        let value = match (field, op) {
            (Field::Memory, Op::Below | Op::Above) => {
                Value::Bytes(size(value).ok_or_else(|| {
                    format!("filter {text:?}: give memory as a size, like 512M or 2G")
                })?)
            }
            (Field::Memory, _) => {
                return Err(format!(
                    "filter {text:?}: memory takes < or >, like memory<1G"
                ));
            }
            (_, Op::Below | Op::Above) => {
                return Err(format!(
                    "filter {text:?}: < and > are for memory; use = != ~ !~"
                ));
            }
            _ => Value::Text {
                exact: value.to_string(),
                lower: value.to_lowercase(),
            },
        };
        Ok(Matcher {
            text: text.to_string(),
            field,
            op,
            value,
        })
    }

    /// Reads every filter of a job or command: at most [`MATCHING_MAX`].
    pub fn parse_all(texts: &[String]) -> Result<Vec<Matcher>, String> {
        if texts.len() > MATCHING_MAX {
            return Err(format!("{} filters: at most {MATCHING_MAX}", texts.len()));
        }
        texts.iter().map(|t| Matcher::parse(t)).collect()
    }

    /// Whether `device` matches, by what the hub knows of it.
    pub fn matches(&self, device: &DeviceInfo) -> bool {
        let facts = &device.facts;
        match (self.field, &self.value) {
            (Field::Memory, Value::Bytes(limit)) => {
                let m = facts.memory_bytes;
                m > 0
                    && if self.op == Op::Below {
                        m < *limit
                    } else {
                        m > *limit
                    }
            }
            (Field::Address | Field::Mac | Field::Interface, Value::Text { exact, lower }) => {
                // No facts: the hub knows none of the device's interfaces.
                !facts.is_empty() && self.any_or_none(list(facts, self.field), exact, lower)
            }
            (field, Value::Text { exact, lower }) => {
                let known = single(device, field);
                !known.is_empty() && self.any_or_none(std::iter::once(known), exact, lower)
            }
            (_, Value::Bytes(_)) => false,
        }
    }

    /// `=` and `~`: one of `known` does; `!=` and `!~`: none does.
    fn any_or_none<'a>(
        &self,
        mut known: impl Iterator<Item = &'a str>,
        exact: &str,
        lower: &str,
    ) -> bool {
        match self.op {
            Op::Is => known.any(|k| k == exact),
            Op::IsNot => !known.any(|k| k == exact),
            Op::Holds => known.any(|k| k.to_lowercase().contains(lower)),
            Op::HoldsNot => !known.any(|k| k.to_lowercase().contains(lower)),
            Op::Below | Op::Above => false,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether every one of `filters` matches `device` (none: yes).
pub fn matches_all(filters: &[Matcher], device: &DeviceInfo) -> bool {
    filters.iter().all(|m| m.matches(device))
}

/// A one-valued field as the hub knows it; empty when it does not.
fn single(device: &DeviceInfo, field: Field) -> &str {
    let facts = &device.facts;
    match field {
        Field::Model => &facts.model,
        Field::Os => &facts.os_release,
        Field::Kernel => &facts.kernel,
        Field::Serial => &facts.serial,
        Field::Version => &device.agent_version,
        Field::Arch => &device.arch,
        Field::Memory | Field::Address | Field::Mac | Field::Interface => "",
    }
}

/// A list field's values: interface names, macs (those it has), or
/// addresses without their prefix length.
fn list(facts: &DeviceFacts, field: Field) -> impl Iterator<Item = &str> {
    facts.interfaces.iter().flat_map(move |i| {
        let values: Vec<&str> = match field {
            Field::Interface => vec![i.name.as_str()],
            Field::Mac if !i.mac.is_empty() => vec![i.mac.as_str()],
            Field::Address => (i.addresses.iter())
                .map(|a| a.split_once('/').map_or(a.as_str(), |(ip, _)| ip))
                .collect(),
            _ => Vec::new(),
        };
        values
    })
}

/// `512M`, `1G`, `1.5G`, `2GiB`, `1048576`: bytes, in units of 1,024.
fn size(text: &str) -> Option<u64> {
    let lower = text.to_ascii_lowercase();
    let digits = lower.trim_end_matches("ib").trim_end_matches('b');
    let (number, unit) = match digits.char_indices().last()? {
        (i, c @ ('k' | 'm' | 'g' | 't')) => (&digits[..i], c),
        _ => (digits, ' '),
    };
    let scale: u64 = match unit {
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        't' => 1 << 40,
        _ => 1,
    };
    let n: f64 = number
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)?;
    let bytes = n * scale as f64;
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests;
