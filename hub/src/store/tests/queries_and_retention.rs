//! Telemetry queries by name, tag and time, and retention, on a clock the
//! tests set.

use super::*;
use crate::config::{KeepBytes, KeepLogs, KeepRows, Retention};
use fleetmq_protocol::{BatchBuilder, LogQuery, TelemetryQuery, Value};

const T0: u64 = 1_700_000_000_000;
const HOUR: u64 = 3_600_000;

/// A batch of `(name, ts_ms)` samples, each valued by its position.
fn batch(seq: u64, samples: &[(&str, u64)]) -> fleetmq_protocol::Batch {
    let mut b = BatchBuilder::new(seq);
    for (i, (name, ts)) in samples.iter().enumerate() {
        b.push_sample(name, *ts, Value::Int(i as i64)).unwrap();
    }
    b.finish()
}

fn query() -> TelemetryQuery {
    TelemetryQuery {
        device: None,
        name: None,
        after_id: 0,
        limit: 100,
        since_ms: 0,
        until_ms: 0,
        newest: false,
        tags: vec![],
    }
}

/// (device, name, ts) of what a query returns.
fn found(store: &Store, q: &TelemetryQuery) -> Vec<(String, String, u64)> {
    store
        .telemetry(q)
        .unwrap()
        .into_iter()
        .map(|r| (r.device, r.name, r.ts_ms))
        .collect()
}

fn row(device: &str, name: &str, ts: u64) -> (String, String, u64) {
    (device.into(), name.into(), ts)
}

fn log_query() -> LogQuery {
    LogQuery {
        device: None,
        source: None,
        contains: String::new(),
        after_id: 0,
        limit: 100,
        since_ms: 0,
        until_ms: 0,
        newest: false,
    }
}

/// (device, source, text) of what a log query returns.
fn lines(store: &Store, q: &LogQuery) -> Vec<(String, String, String)> {
    store
        .logs(q)
        .unwrap()
        .into_iter()
        .map(|r| (r.device, r.source, r.text))
        .collect()
}

fn line(device: &str, source: &str, text: &str) -> (String, String, String) {
    (device.into(), source.into(), text.into())
}

#[test]
fn log_lines_are_found_by_device_source_text_and_time_and_read_on_by_cursor() {
    let mut store = Store::in_memory().unwrap();
    let mut b = BatchBuilder::new(1);
    b.push_sample("host.temp_c", T0, Value::Int(40)).unwrap();
    b.push_log("/var/log/syslog", T0, "sshd: accepted").unwrap();
    b.push_log("/var/log/app.log", T0 + 1, "started").unwrap();
    b.push_log("/var/log/syslog", T0 + HOUR, "sshd: closed")
        .unwrap();
    store_as("pi-a", &mut store, b.finish(), T0);
    let mut b = BatchBuilder::new(1);
    b.push_log("/var/log/syslog", T0 + 2, "cron: ran").unwrap();
    store_as("pi-b", &mut store, b.finish(), T0);
    // A batch of samples alone is no log line, and its samples are as
    // they were beside log lines.
    store_as("pi-b", &mut store, batch(2, &[("x", T0)]), T0);
    assert_eq!(found(&store, &query()).len(), 2);

    assert_eq!(
        lines(&store, &log_query()),
        [
            line("pi-a", "/var/log/syslog", "sshd: accepted"),
            line("pi-a", "/var/log/app.log", "started"),
            line("pi-a", "/var/log/syslog", "sshd: closed"),
            line("pi-b", "/var/log/syslog", "cron: ran"),
        ]
    );
    let q = LogQuery {
        device: Some("pi-a".into()),
        source: Some("/var/log/syslog".into()),
        ..log_query()
    };
    assert_eq!(
        lines(&store, &q),
        [
            line("pi-a", "/var/log/syslog", "sshd: accepted"),
            line("pi-a", "/var/log/syslog", "sshd: closed"),
        ]
    );
    let q = LogQuery {
        contains: "sshd".into(),
        until_ms: T0 + 1,
        ..log_query()
    };
    assert_eq!(
        lines(&store, &q),
        [line("pi-a", "/var/log/syslog", "sshd: accepted")]
    );
    // The newest two, oldest of them first; then on from a cursor.
    let q = LogQuery {
        limit: 2,
        newest: true,
        ..log_query()
    };
    assert_eq!(
        lines(&store, &q),
        [
            line("pi-a", "/var/log/syslog", "sshd: closed"),
            line("pi-b", "/var/log/syslog", "cron: ran"),
        ]
    );
    let first = store
        .logs(&LogQuery {
            limit: 1,
            ..log_query()
        })
        .unwrap();
    let q = LogQuery {
        after_id: first[0].id,
        limit: 2,
        ..log_query()
    };
    assert_eq!(
        lines(&store, &q),
        [
            line("pi-a", "/var/log/app.log", "started"),
            line("pi-a", "/var/log/syslog", "sshd: closed"),
        ]
    );
}

#[test]
fn a_name_matches_its_series_with_any_tags_and_tags_narrow_it() {
    let mut store = Store::in_memory().unwrap();
    let root = "host.disk.used_pct{mount=/}";
    let data = "host.disk.used_pct{mount=/data}";
    let b = batch(1, &[(root, T0), (data, T0 + 1), ("host.temp_c", T0 + 2)]);
    store_as("pi-a", &mut store, b, T0);
    store_as("pi-b", &mut store, batch(1, &[(root, T0 + 3)]), T0);

    let name = |n: &str| TelemetryQuery {
        name: Some(n.into()),
        ..query()
    };
    assert_eq!(
        found(&store, &name("host.disk.used_pct")),
        [
            row("pi-a", root, T0),
            row("pi-a", data, T0 + 1),
            row("pi-b", root, T0 + 3)
        ]
    );
    assert_eq!(
        found(&store, &name(data)),
        [row("pi-a", data, T0 + 1)],
        "a name with tags is that one series"
    );
    let tagged = TelemetryQuery {
        tags: vec!["mount=/".into()],
        ..name("host.disk.used_pct")
    };
    assert_eq!(
        found(&store, &tagged),
        [row("pi-a", root, T0), row("pi-b", root, T0 + 3)]
    );
    let any_mount = TelemetryQuery {
        tags: vec!["mount".into()],
        device: Some("pi-a".into()),
        ..query()
    };
    assert_eq!(
        found(&store, &any_mount),
        [row("pi-a", root, T0), row("pi-a", data, T0 + 1)]
    );
    assert!(found(&store, &name("host.disk")).is_empty(), "no prefixes");
}

#[test]
fn the_newest_rows_come_back_oldest_first_within_a_time_range() {
    let mut store = Store::in_memory().unwrap();
    // Three batches an hour apart, stored when they were taken.
    for (i, at) in [T0, T0 + HOUR, T0 + 2 * HOUR].into_iter().enumerate() {
        let b = batch(i as u64 + 1, &[("m", at), ("m", at + 1), ("n", at + 2)]);
        store_as("pi-a", &mut store, b, at);
    }
    let newest = TelemetryQuery {
        name: Some("m".into()),
        newest: true,
        limit: 3,
        ..query()
    };
    assert_eq!(
        found(&store, &newest),
        [
            row("pi-a", "m", T0 + HOUR + 1),
            row("pi-a", "m", T0 + 2 * HOUR),
            row("pi-a", "m", T0 + 2 * HOUR + 1)
        ]
    );
    let window = TelemetryQuery {
        name: Some("m".into()),
        since_ms: T0 + HOUR,
        until_ms: T0 + HOUR + 1,
        ..query()
    };
    assert_eq!(
        found(&store, &window),
        [row("pi-a", "m", T0 + HOUR), row("pi-a", "m", T0 + HOUR + 1)]
    );
    // A cursor past the end reads nothing; after it, only what comes next.
    let end = store.telemetry_cursor().unwrap();
    let after_end = TelemetryQuery {
        after_id: end,
        ..query()
    };
    assert!(found(&store, &after_end).is_empty());
    store_as(
        "pi-a",
        &mut store,
        batch(9, &[("m", T0 + 3 * HOUR)]),
        T0 + 3 * HOUR,
    );
    assert_eq!(found(&store, &after_end), [row("pi-a", "m", T0 + 3 * HOUR)]);
}

fn retention() -> Retention {
    let off = KeepRows {
        max_age_s: 0,
        max_rows: 0,
    };
    Retention {
        telemetry: KeepBytes {
            max_age_s: 0,
            max_bytes: 0,
        },
        logs: KeepLogs::default(),
        chat: off,
        jobs: off,
        commands: off,
    }
}

/// A batch of one log line.
fn log_batch(seq: u64, text: &str, ts: u64) -> fleetmq_protocol::Batch {
    let mut b = BatchBuilder::new(seq);
    b.push_log("/var/log/app.log", ts, text).unwrap();
    b.finish()
}

#[test]
fn log_batches_are_pruned_by_their_own_limits_and_samples_are_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), Synchronous::Normal).unwrap();
    // Hour by hour: samples, a log line, samples, a log line, samples.
    let mut seq = 0;
    for h in 0..5 {
        seq += 1;
        let at = T0 + h * HOUR;
        let b = if h % 2 == 0 {
            batch(seq, &[("m", at)])
        } else {
            log_batch(seq, &format!("line {h}"), at)
        };
        store_as("pi-a", &mut store, b, at);
    }
    let logs = store.log_bytes();
    assert!(logs > 0 && logs < store.telemetry_bytes());
    let texts = |store: &Store| -> Vec<String> {
        store
            .logs(&log_query())
            .unwrap()
            .into_iter()
            .map(|r| r.text)
            .collect()
    };
    let samples = |store: &Store| store.telemetry(&query()).unwrap().len();

    // By age: the log line of hour 1 goes; the samples of hour 0 stay.
    let mut rules = retention();
    rules.logs.max_age_s = 2 * 3600;
    let p = store.prune(&rules, T0 + 4 * HOUR).unwrap();
    assert_eq!((p.batches, p.more), (1, false));
    assert_eq!(
        (texts(&store), samples(&store)),
        (vec!["line 3".to_string()], 3)
    );
    assert_eq!(store.log_bytes(), logs / 2);

    // The counts survive a restart; by bytes, the oldest log line goes
    // until the rest fits (none left here but the newest batch's kind).
    drop(store);
    let mut store = Store::open(dir.path(), Synchronous::Normal).unwrap();
    assert_eq!(store.log_bytes(), logs / 2);
    let mut rules = retention();
    rules.logs.max_bytes = 1;
    let p = store.prune(&rules, T0 + 4 * HOUR).unwrap();
    assert_eq!(p.batches, 1);
    assert_eq!(
        (texts(&store).len(), samples(&store), store.log_bytes()),
        (0, 3, 0)
    );

    // A batch of an older agent, log lines and samples together, is
    // telemetry: [retention.logs] leaves it.
    let mut mixed = BatchBuilder::new(8);
    mixed
        .push_sample("m", T0 + 4 * HOUR, Value::Int(1))
        .unwrap();
    mixed
        .push_log("/var/log/app.log", T0 + 4 * HOUR, "mixed")
        .unwrap();
    store_as("pi-a", &mut store, mixed.finish(), T0 + 4 * HOUR);
    assert_eq!(store.log_bytes(), 0);
    store.prune(&rules, T0 + 4 * HOUR).unwrap();
    assert_eq!(
        (texts(&store), samples(&store)),
        (vec!["mixed".to_string()], 4)
    );

    // Telemetry's own limits take log batches too, and count them.
    store_as(
        "pi-a",
        &mut store,
        log_batch(6, "line 5", T0 + 5 * HOUR),
        T0 + 5 * HOUR,
    );
    store_as(
        "pi-a",
        &mut store,
        batch(7, &[("m", T0 + 6 * HOUR)]),
        T0 + 6 * HOUR,
    );
    let mut rules = retention();
    rules.telemetry.max_age_s = 3600 / 2;
    store.prune(&rules, T0 + 6 * HOUR).unwrap();
    assert_eq!(
        (texts(&store).len(), samples(&store), store.log_bytes()),
        (0, 1, 0)
    );
}

#[test]
fn telemetry_past_its_age_or_its_bytes_is_pruned_oldest_first_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), Synchronous::Normal).unwrap();
    for (i, at) in [T0, T0 + HOUR, T0 + 2 * HOUR].into_iter().enumerate() {
        store_as(
            "pi-a",
            &mut store,
            batch(i as u64 + 1, &[("m", at), ("m", at + 1)]),
            at,
        );
    }
    let all = store.telemetry_bytes();
    let one = all / 3;
    assert!(all > 0 && all.is_multiple_of(3), "{all}");

    let mut rules = retention();
    rules.telemetry.max_age_s = 90 * 60;
    let p = store.prune(&rules, T0 + 2 * HOUR).unwrap();
    assert_eq!((p.batches, p.records, p.bytes, p.more), (1, 2, one, false));
    assert_eq!(store.telemetry_bytes(), 2 * one);
    assert!(store.prune(&rules, T0 + 2 * HOUR).unwrap().is_empty());

    // The byte count survives a restart, and a cap deletes the oldest
    // until the rest fits.
    drop(store);
    let mut store = Store::open(dir.path(), Synchronous::Normal).unwrap();
    assert_eq!(store.telemetry_bytes(), 2 * one);
    let mut rules = retention();
    rules.telemetry.max_bytes = one;
    let p = store.prune(&rules, T0 + 2 * HOUR).unwrap();
    assert_eq!((p.batches, store.telemetry_bytes()), (1, one));
    let left: Vec<u64> = store
        .telemetry(&query())
        .unwrap()
        .iter()
        .map(|r| r.ts_ms)
        .collect();
    assert_eq!(left, [T0 + 2 * HOUR, T0 + 2 * HOUR + 1]);
}

#[test]
fn a_store_far_over_its_limit_is_pruned_a_step_at_a_time() {
    let mut store = Store::in_memory().unwrap();
    let n = retention::STEP as u64 * 2 + 10;
    let items: Vec<(fleetmq_protocol::Batch, Vec<u8>)> = (1..=n)
        .map(|seq| {
            let b = batch(seq, &[("m", T0)]);
            let frame = fleetmq_protocol::Upstream::Batch(b.clone())
                .encode()
                .unwrap();
            let body = fleetmq_protocol::envelope::open(&frame).unwrap().1.to_vec();
            (b, body)
        })
        .collect();
    let incoming: Vec<Incoming<'_>> = items
        .iter()
        .map(|(batch, body)| Incoming {
            device: "pi-a",
            batch,
            body,
        })
        .collect();
    store.store_batches(&incoming, T0).unwrap();
    let mut rules = retention();
    rules.telemetry.max_age_s = 60;
    let steps: Vec<(u64, bool)> = (0..4)
        .map(|_| store.prune(&rules, T0 + HOUR).unwrap())
        .map(|p| (p.batches, p.more))
        .collect();
    let step = retention::STEP as u64;
    // All of them are past their age; the newest stays, so that the next
    // batch's id follows it (a reader's `--after` cursor stays good).
    assert_eq!(steps, [(step, true), (step, true), (9, false), (0, false)]);
    let kept = store.telemetry(&query()).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    store_as(
        "pi-a",
        &mut store,
        batch(n + 1, &[("m", T0 + HOUR)]),
        T0 + HOUR,
    );
    let after = TelemetryQuery {
        after_id: kept[0].id,
        ..query()
    };
    let new = store.telemetry(&after).unwrap();
    assert_eq!(
        new.len(),
        1,
        "the new batch comes after the cursor: {new:?}"
    );
}

#[test]
fn chat_jobs_and_commands_are_pruned_by_age_and_rows_and_queued_jobs_stay() {
    let mut store = Store::in_memory().unwrap();
    let mut b = BatchBuilder::new(1);
    for i in 0..10u64 {
        b.push_chat(T0 + i * HOUR, &format!("line {i}")).unwrap();
    }
    store_as("pi-a", &mut store, b.finish(), T0);
    let job = super::echo_job(1);
    let queued = store.submit_job(&job, T0).unwrap();
    let done: Vec<u64> = (0..3)
        .map(|i| {
            let id = store.submit_job(&job, T0).unwrap();
            store.fail_job(id, "gave up", T0 + i * HOUR).unwrap();
            id
        })
        .collect();
    for i in 0..5 {
        store.log_command("pi-a", &fleetmq_protocol::Command::Ping, T0 + i * HOUR);
    }
    let devices = ["pi-a".to_string()];
    let ping = fleetmq_protocol::Command::Ping;
    let fleet = store
        .fleet_submit(&ping, "all", &devices, 0, T0 + HOUR, T0)
        .unwrap();
    let young = store
        .fleet_submit(&ping, "all", &devices, 0, T0 + 6 * HOUR, T0 + 5 * HOUR)
        .unwrap();

    let mut rules = retention();
    // At 10 h with 2.5 h kept, chat from before 7.5 h goes (lines 0-7)...
    rules.chat.max_age_s = 2 * 3600 + 1800;
    rules.jobs.max_age_s = 3600 + 1800;
    rules.commands.max_rows = 2;
    rules.commands.max_age_s = 9 * 3600;
    let p = store.prune(&rules, T0 + 10 * HOUR).unwrap();
    // The command log: 3 past its rows (the 2 left are younger than 9 h);
    // and the fleet command of 10 h ago.
    assert_eq!((p.chat, p.jobs, p.commands), (8, 3, 4));
    assert!(store.fleet_answers(fleet).unwrap().is_none());
    assert!(store.fleet_answers(young).unwrap().is_some());
    let chat: Vec<String> = store
        .recent_chat(100)
        .unwrap()
        .into_iter()
        .map(|c| c.text)
        .collect();
    assert_eq!(chat, ["line 8", "line 9"]);
    let jobs: Vec<u64> = store.jobs(100).unwrap().iter().map(|j| j.id).collect();
    assert_eq!(jobs, [queued], "a queued job is never pruned: {done:?}");
    // The pruned jobs' ids are never given again: an agent that ran one
    // would answer a new job with its result.
    let next = store.submit_job(&job, T0 + 10 * HOUR).unwrap();
    let aimed = store
        .submit_aimed(&job, "pi-a", &devices, T0 + 11 * HOUR, T0 + 10 * HOUR)
        .unwrap();
    assert_eq!((next, aimed), (done[2] + 1, done[2] + 2));
    assert_eq!(store.commands(100).unwrap().len(), 2);

    // ...and a row cap keeps the newest.
    let mut rules = retention();
    rules.chat.max_rows = 1;
    assert_eq!(store.prune(&rules, T0).unwrap().chat, 1);
    let chat: Vec<String> = store
        .recent_chat(100)
        .unwrap()
        .into_iter()
        .map(|c| c.text)
        .collect();
    assert_eq!(chat, ["line 9"]);

    // The newest row of each stays however old, so that ids never go
    // back to 1 (a reader's cursor would skip what came next).
    let mut rules = retention();
    rules.chat.max_age_s = 1;
    rules.commands.max_age_s = 1;
    let far = T0 + 1000 * HOUR;
    store.prune(&rules, far).unwrap();
    assert_eq!(store.recent_chat(100).unwrap().len(), 1);
    assert_eq!(store.commands(100).unwrap().len(), 1);
    assert!(store.fleet_answers(young).unwrap().is_some());
}
