//! Encode and decode times of the typical 50-sample batch: fleetmq's
//! postcard batch beside JSON, MessagePack and protobuf of the same data.
//! `cargo bench -p fleetmq-bench --bench wire`.

use criterion::{Criterion, criterion_group, criterion_main};
use fleetmq_bench::wire::{self, FlatBatch, PbBatch};
use fleetmq_protocol::Upstream;
use prost::Message as _;
use std::hint::black_box;

fn encode(c: &mut Criterion) {
    let samples = wire::samples();
    let flat = wire::flat(&samples);
    let pb = wire::protobuf(&samples);
    let mut g = c.benchmark_group("encode 50-sample batch");
    g.bench_function("fleetmq", |b| b.iter(|| wire::fleetmq(black_box(&samples))));
    g.bench_function("JSON", |b| b.iter(|| serde_json::to_vec(black_box(&flat))));
    g.bench_function("MessagePack", |b| {
        b.iter(|| rmp_serde::to_vec_named(black_box(&flat)))
    });
    g.bench_function("protobuf", |b| b.iter(|| black_box(&pb).encode_to_vec()));
    g.finish();
}

fn decode(c: &mut Criterion) {
    let samples = wire::samples();
    let flat = wire::flat(&samples);
    let ours = wire::fleetmq(&samples);
    let json = serde_json::to_vec(&flat).unwrap_or_default();
    let msgpack = rmp_serde::to_vec_named(&flat).unwrap_or_default();
    let pb = wire::protobuf(&samples).encode_to_vec();
    let mut g = c.benchmark_group("decode 50-sample batch");
    g.bench_function("fleetmq", |b| b.iter(|| Upstream::decode(black_box(&ours))));
    g.bench_function("JSON", |b| {
        b.iter(|| serde_json::from_slice::<FlatBatch>(black_box(&json)))
    });
    g.bench_function("MessagePack", |b| {
        b.iter(|| rmp_serde::from_slice::<FlatBatch>(black_box(&msgpack)))
    });
    g.bench_function("protobuf", |b| {
        b.iter(|| PbBatch::decode(black_box(pb.as_slice())))
    });
    g.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
