//! The batch's tests: series names, the builder's interning and offsets,
//! validation past what postcard checks, and values in JSON.

use super::*;

#[test]
fn a_series_metric_is_its_name_before_the_tags() {
    assert_eq!(metric_of("host.temp_c{zone=cpu}"), "host.temp_c");
    assert_eq!(metric_of("host.load1"), "host.load1");
    assert_eq!(
        metric_of("host.temp_c{zone=cpu}"),
        split_series("host.temp_c{zone=cpu}").0
    );
}

#[test]
fn newest_samples_hold_each_name_once_at_its_latest_time() {
    let mut b = BatchBuilder::new(1);
    for (name, ts_ms, v) in [
        ("cpu", 1_000, 1),
        ("temp", 3_000, 40),
        ("cpu", 5_000, 2),
        ("cpu", 2_000, 9),
        ("temp", 3_000, 41),
        ("load", 4_000, 7),
    ] {
        b.push_sample(name, ts_ms, Value::Int(v)).unwrap();
    }
    let batch = b.finish();
    let got: Vec<(&str, u64, Value)> = batch
        .newest_samples()
        .into_iter()
        .map(|s| (s.name, s.ts_ms, s.value))
        .collect();
    // A sample out of order does not go back in time; of two at one
    // time the later in the batch wins, as a reader of every sample
    // in turn would keep it.
    assert_eq!(
        got,
        [
            ("cpu", 5_000, Value::Int(2)),
            ("temp", 3_000, Value::Int(41)),
            ("load", 4_000, Value::Int(7)),
        ]
    );
    let mut by_every_sample = std::collections::HashMap::new();
    for s in batch.resolved_samples() {
        let slot = by_every_sample.entry(s.name).or_insert((0, Value::Int(0)));
        if s.ts_ms >= slot.0 {
            *slot = (s.ts_ms, s.value);
        }
    }
    assert_eq!(by_every_sample.len(), got.len());
    for (name, ts_ms, value) in got {
        assert_eq!(by_every_sample[name], (ts_ms, value));
    }
}

#[test]
fn a_series_has_one_spelling_and_splits_back() {
    let tags = [("mount", "/data"), ("dev", "sda1")];
    let name = series_name("disk.used_bytes", &tags).unwrap();
    assert_eq!(name, "disk.used_bytes{dev=sda1,mount=/data}");
    let (base, split) = split_series(&name);
    assert_eq!(base, "disk.used_bytes");
    assert_eq!(split, [("dev", "sda1"), ("mount", "/data")]);
    let none: [(&str, &str); 0] = [];
    assert_eq!(series_name("cpu", &none).unwrap(), "cpu");
    // Names that only look like series stay whole.
    for plain in ["cpu", "a{b}", "{x=1}", "a{1x=2}", "a{x=}", "a{x=1,x}"] {
        assert_eq!(split_series(plain), (plain, vec![]), "{plain}");
    }
}

#[test]
fn bad_series_parts_are_refused_with_the_reason() {
    let err = |name: &str, tags: &[(&str, &str)]| series_name(name, tags).unwrap_err();
    assert!(matches!(err("a{", &[]), SeriesError::BadName(_)));
    assert!(matches!(err("", &[]), SeriesError::BadName(_)));
    assert!(matches!(
        err("a", &[("9x", "1")]),
        SeriesError::BadTagKey(_)
    ));
    assert!(matches!(
        err("a", &[("k", "a,b")]),
        SeriesError::BadTagValue { .. }
    ));
    assert!(matches!(
        err("a", &[("k", "")]),
        SeriesError::BadTagValue { .. }
    ));
    assert!(matches!(
        err("a", &[("k", "1"), ("k", "2")]),
        SeriesError::DuplicateTag(_)
    ));
    let long = "v".repeat(120);
    assert!(matches!(
        err("metric", &[("k", &long)]),
        SeriesError::TooLong(_)
    ));
    assert!(
        err("a", &[("k", "a=b")])
            .to_string()
            .contains("other than , =")
    );
}

#[test]
fn builder_interns_names_and_offsets_timestamps() {
    let mut b = BatchBuilder::new(3);
    b.push_sample("cpu", 1_000, Value::Float(0.5)).unwrap();
    b.push_sample("mem", 1_010, Value::Int(42)).unwrap();
    b.push_sample("cpu", 990, Value::Float(0.25)).unwrap();
    b.push_chat(1_020, "hi").unwrap();
    let batch = b.finish();
    assert_eq!(batch.names, ["cpu", "mem"]);
    assert_eq!(batch.base_ts_ms, 1_000);
    assert_eq!(batch.samples[2].offset_ms, -10);
    batch.validate().unwrap();
    let resolved: Vec<_> = batch.resolved_samples().collect();
    assert_eq!(
        resolved[2],
        SampleRef {
            name: "cpu",
            ts_ms: 990,
            value: Value::Float(0.25)
        }
    );
    assert_eq!(batch.resolved_chat().collect::<Vec<_>>(), [(1_020, "hi")]);
}

#[test]
fn builder_refuses_what_cannot_be_an_offset_and_keeps_the_batch() {
    let mut b = BatchBuilder::new(0);
    b.push_sample("x", 0, Value::Int(1)).unwrap();
    let far = u64::from(u32::MAX) * 2;
    assert!(matches!(
        b.push_sample("x", far, Value::Int(2)),
        Err(BatchError::OffsetOutOfRange { .. })
    ));
    assert!(matches!(
        b.push_sample("", 1, Value::Int(2)),
        Err(BatchError::BadName { .. })
    ));
    assert!(matches!(
        b.push_chat(1, &"x".repeat(MAX_CHAT_LEN + 1)),
        Err(BatchError::ChatTooLong { .. })
    ));
    assert_eq!(b.len(), 1);
}

#[test]
fn validate_catches_what_postcard_cannot() {
    let mut batch = BatchBuilder::new(0).finish();
    batch.names = vec!["a".into()];
    batch.samples = vec![Sample {
        name: 1,
        offset_ms: 0,
        value: Value::Int(0),
    }];
    assert!(matches!(
        batch.validate(),
        Err(BatchError::NameIndex { index: 1, .. })
    ));
    batch.samples[0].name = 0;
    batch.samples[0].offset_ms = -1;
    assert!(matches!(
        batch.validate(),
        Err(BatchError::Timestamp { .. })
    ));
    // The latest time is the last millisecond of year 9999; past it
    // (2^63 + 5 broke every Prometheus scrape once) is refused.
    batch.samples[0].offset_ms = 0;
    batch.base_ts_ms = MAX_TS_MS;
    assert_eq!(batch.validate(), Ok(()));
    batch.samples[0].offset_ms = 1;
    assert!(matches!(
        batch.validate(),
        Err(BatchError::Timestamp { .. })
    ));
    batch.base_ts_ms = (1 << 63) + 5;
    batch.samples[0].offset_ms = 0;
    let e = batch.validate().unwrap_err().to_string();
    assert!(e.contains("outside 0..=") && e.contains("clock"), "{e}");
    batch.samples.clear();
    assert!(matches!(
        batch.validate(),
        Err(BatchError::UnusedNames {
            names: 1,
            samples: 0
        })
    ));
    batch.names.clear();
    batch.chat = vec![
        ChatLine {
            offset_ms: 0,
            text: String::new(),
        };
        MAX_BATCH_RECORDS + 1
    ];
    assert!(matches!(
        batch.validate(),
        Err(BatchError::TooManyRecords { records }) if records == MAX_BATCH_RECORDS + 1
    ));
    batch.chat.pop();
    batch.base_ts_ms = 0;
    assert_eq!(batch.validate(), Ok(()));
    batch.chat.clear();
    batch.names = vec!["bad\nname".into()];
    batch.samples = vec![Sample {
        name: 0,
        offset_ms: 0,
        value: Value::Int(0),
    }];
    assert!(matches!(batch.validate(), Err(BatchError::BadName { .. })));
}

#[test]
fn values_are_plain_numbers_in_json() {
    assert_eq!(serde_json::to_string(&Value::Int(5)).unwrap(), "5");
    assert_eq!(serde_json::to_string(&Value::Float(0.5)).unwrap(), "0.5");
    assert_eq!(serde_json::from_str::<Value>("7").unwrap(), Value::Int(7));
    assert_eq!(
        serde_json::from_str::<Value>("7.5").unwrap(),
        Value::Float(7.5)
    );
}

#[test]
fn log_lines_travel_as_kind_0x09_and_a_batch_without_them_as_before() {
    use crate::Upstream;
    let mut b = BatchBuilder::new(5);
    b.push_sample("cpu", 1_000, Value::Int(1)).unwrap();
    let plain = b.finish();
    let frame = Upstream::from_batch(plain.clone()).encode().unwrap();
    assert_eq!(frame[1], 0x03, "no log line: the kind every hub reads");

    let mut b = BatchBuilder::new(6);
    b.push_sample("cpu", 1_000, Value::Int(1)).unwrap();
    b.push_log("/var/log/syslog", 1_001, "one").unwrap();
    b.push_log("/var/log/app.log", 1_002, "two").unwrap();
    b.push_log("/var/log/syslog", 1_003, "three").unwrap();
    let logged = b.finish();
    assert_eq!(logged.sources, ["/var/log/syslog", "/var/log/app.log"]);
    assert_eq!(logged.record_count(), 4);
    let frame = Upstream::from_batch(logged.clone()).encode().unwrap();
    assert_eq!(frame[1], 0x09);
    assert_eq!(Upstream::batch_seq(&frame), Some(6));
    assert_eq!(
        Upstream::decode(&frame).unwrap(),
        Upstream::LogBatch(LogBatch(logged.clone()))
    );
    assert_eq!(
        logged.resolved_logs().collect::<Vec<_>>(),
        [
            (1_001, "/var/log/syslog", "one"),
            (1_002, "/var/log/app.log", "two"),
            (1_003, "/var/log/syslog", "three"),
        ]
    );
    // What the hub stores is the body after the envelope: either kind
    // reads back whole, and only as itself.
    assert_eq!(stored_batch(&frame[2..]).unwrap(), logged);
    let plain_frame = Upstream::Batch(plain.clone()).encode().unwrap();
    assert_eq!(stored_batch(&plain_frame[2..]).unwrap(), plain);
    assert!(crate::envelope::body::<LogBatch>("LogBatch", &plain_frame[2..]).is_err());
}

#[test]
fn log_lines_are_checked_like_the_rest() {
    let mut b = BatchBuilder::new(1);
    assert_eq!(
        b.push_log("/l", 0, &"x".repeat(MAX_LOG_LINE_LEN + 1)),
        Err(BatchError::LogLineTooLong {
            len: MAX_LOG_LINE_LEN + 1
        })
    );
    assert!(matches!(
        b.push_log("", 0, "x"),
        Err(BatchError::BadSource { .. })
    ));
    assert!(b.is_empty(), "a refused line leaves the batch as it was");
    b.push_log("/l", 10, &"x".repeat(MAX_LOG_LINE_LEN)).unwrap();
    let good = b.finish();
    assert_eq!(good.validate(), Ok(()));

    let mut bad = good.clone();
    bad.logs[0].source = 1;
    assert!(matches!(
        bad.validate(),
        Err(BatchError::SourceIndex { .. })
    ));
    let mut bad = good.clone();
    bad.sources.push("/unused".into());
    assert!(matches!(
        bad.validate(),
        Err(BatchError::SourceIndex { .. })
    ));
    let mut bad = good.clone();
    bad.sources[0] = "a\u{1}b".into();
    assert!(matches!(bad.validate(), Err(BatchError::BadSource { .. })));
    let mut bad = good.clone();
    bad.logs[0].text.push('x');
    assert!(matches!(
        bad.validate(),
        Err(BatchError::LogLineTooLong { .. })
    ));
    let mut bad = good;
    bad.logs[0].offset_ms = -100;
    assert!(matches!(bad.validate(), Err(BatchError::Timestamp { .. })));
}
