//! A typical telemetry batch, and the same data in the encodings operators
//! compare us with: JSON, MessagePack and protobuf.
//!
//! The batch is what a Pi's agent sends with its default host metrics: ten
//! series (CPU, load, memory, root disk, network, temperature, uptime), five
//! readings each, ten seconds apart. The other encodings carry the same
//! samples the way a JSON or protobuf telemetry API usually does: one record
//! per sample with its name, timestamp and value.

use fleetmq_protocol::{BatchBuilder, Upstream, Value};
use serde::{Deserialize, Serialize};

/// The device id the batch is from.
pub const DEVICE: &str = "pi-kitchen";
/// Its sequence number.
pub const SEQ: u64 = 123_456;

type Series = (&'static str, fn(u64) -> Value);

const SERIES: [Series; 10] = [
    ("host.cpu.used_pct", |i| {
        Value::Float(12.5 + i as f64 * 1.25)
    }),
    ("host.load1", |i| Value::Float(0.42 + i as f64 * 0.01)),
    ("host.mem.available_bytes", |i| {
        Value::Int(3_400_000_000 - i as i64 * 4096)
    }),
    ("host.mem.used_pct", |i| {
        Value::Float(11.8 + i as f64 * 0.02)
    }),
    ("host.disk.used_pct{mount=/}", |_| Value::Float(37.2)),
    ("host.net.rx_bytes{iface=eth0}", |i| {
        Value::Int(9_876_543_210 + i as i64 * 1_500_000)
    }),
    ("host.net.tx_bytes{iface=eth0}", |i| {
        Value::Int(1_234_567_890 + i as i64 * 200_000)
    }),
    ("host.temp_c{zone=cpu-thermal}", |i| {
        Value::Float(48.3 + i as f64 * 0.1)
    }),
    ("host.uptime_s", |i| {
        Value::Float(86_400.0 + i as f64 * 10.0)
    }),
    ("agent.heartbeats", |i| Value::Int(1_000 + i as i64)),
];

/// One sample as a record, for the comparison encodings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlatSample {
    pub name: String,
    pub ts_ms: u64,
    pub value: Value,
}

/// The batch as a JSON or MessagePack API carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlatBatch {
    pub device: String,
    pub seq: u64,
    pub samples: Vec<FlatSample>,
}

/// The same as a protobuf message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PbBatch {
    #[prost(string, tag = "1")]
    pub device: String,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(message, repeated, tag = "3")]
    pub samples: Vec<PbSample>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PbSample {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint64, tag = "2")]
    pub ts_ms: u64,
    #[prost(oneof = "PbValue", tags = "3, 4")]
    pub value: Option<PbValue>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PbValue {
    #[prost(sint64, tag = "3")]
    Int(i64),
    #[prost(double, tag = "4")]
    Float(f64),
}

/// The typical 50-sample batch's samples.
pub fn samples() -> Vec<FlatSample> {
    let base = 1_795_292_428_000u64;
    let mut out = Vec::new();
    for i in 0..5u64 {
        for (name, value) in SERIES {
            out.push(FlatSample {
                name: name.to_string(),
                ts_ms: base + i * 10_000 + 3,
                value: value(i),
            });
        }
    }
    out
}

/// Our encoding: the whole Upstream frame, version and kind bytes included.
pub fn fleetmq(samples: &[FlatSample]) -> Vec<u8> {
    let mut b = BatchBuilder::new(SEQ);
    for s in samples {
        // The samples are ours and valid; a failure here is a bug in this file.
        b.push_sample(&s.name, s.ts_ms, s.value)
            .expect("the typical batch is valid");
    }
    Upstream::Batch(b.finish())
        .encode()
        .expect("the typical batch encodes")
}

pub fn flat(samples: &[FlatSample]) -> FlatBatch {
    FlatBatch {
        device: DEVICE.into(),
        seq: SEQ,
        samples: samples.to_vec(),
    }
}

pub fn protobuf(samples: &[FlatSample]) -> PbBatch {
    PbBatch {
        device: DEVICE.into(),
        seq: SEQ,
        samples: samples
            .iter()
            .map(|s| PbSample {
                name: s.name.clone(),
                ts_ms: s.ts_ms,
                value: Some(match s.value {
                    Value::Int(i) => PbValue::Int(i),
                    Value::Float(f) => PbValue::Float(f),
                }),
            })
            .collect(),
    }
}

/// Encoded sizes of the typical batch: (encoding, bytes).
pub fn sizes() -> Vec<(&'static str, usize)> {
    use prost::Message as _;
    let s = samples();
    let f = flat(&s);
    vec![
        ("fleetmq (postcard, names interned)", fleetmq(&s).len()),
        ("JSON", serde_json::to_vec(&f).map_or(0, |v| v.len())),
        (
            "MessagePack (maps)",
            rmp_serde::to_vec_named(&f).map_or(0, |v| v.len()),
        ),
        (
            "MessagePack (arrays)",
            rmp_serde::to_vec(&f).map_or(0, |v| v.len()),
        ),
        ("protobuf", protobuf(&s).encode_to_vec().len()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn every_encoding_carries_the_same_fifty_samples() {
        let s = samples();
        assert_eq!(s.len(), 50);
        let f = flat(&s);
        // serde_json parses floats to within an ulp, not always exactly.
        let json: FlatBatch = serde_json::from_slice(&serde_json::to_vec(&f).unwrap()).unwrap();
        assert_eq!((json.device.as_str(), json.seq), (DEVICE, SEQ));
        for (a, b) in json.samples.iter().zip(&f.samples) {
            assert_eq!((&a.name, a.ts_ms), (&b.name, b.ts_ms));
            let (x, y) = (
                a.value.to_string().parse::<f64>().unwrap(),
                b.value.to_string().parse::<f64>().unwrap(),
            );
            assert!((x - y).abs() <= y.abs() * 1e-12, "{x} vs {y}");
        }
        assert_eq!(json.samples.len(), 50);
        let named: FlatBatch =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&f).unwrap()).unwrap();
        assert_eq!(named, f);
        let pb = PbBatch::decode(protobuf(&s).encode_to_vec().as_slice()).unwrap();
        assert_eq!(pb, protobuf(&s));
        let Upstream::Batch(ours) = Upstream::decode(&fleetmq(&s)).unwrap() else {
            panic!("not a batch");
        };
        let back: Vec<FlatSample> = ours
            .resolved_samples()
            .map(|r| FlatSample {
                name: r.name.to_string(),
                ts_ms: r.ts_ms,
                value: r.value,
            })
            .collect();
        assert_eq!(back, s);
    }
}
