//! The store against SQLite files in a temporary directory.

use super::*;
use fleetmq_protocol::{JobSubmission, Outcome, Output};

/// An echo job for the work queue, tried `max_attempts` times.
pub(crate) fn echo_job(max_attempts: u32) -> JobSubmission {
    JobSubmission {
        spec: JobSpec::Echo { text: "hi".into() },
        timeout_ms: 1_000,
        lease_ms: 5_000,
        max_attempts,
        devices: vec![],
        groups: vec![],
        all: false,
        ttl_ms: 0,
        matching: vec![],
    }
}

/// Stores `batch` from `device` as the hub does (the frame after its version
/// and kind bytes), and says what became of it.
pub(crate) fn store_as(
    device: &str,
    store: &mut Store,
    batch: fleetmq_protocol::Batch,
    now: u64,
) -> Stored {
    let frame = fleetmq_protocol::Upstream::from_batch(batch.clone())
        .encode()
        .unwrap();
    let incoming = [Incoming {
        device,
        batch: &batch,
        body: fleetmq_protocol::envelope::open(&frame).unwrap().1,
    }];
    store.store_batches(&incoming, now).unwrap().0[0].clone()
}

/// The page's chat panel and its command list read the newest rows.
#[test]
fn the_newest_chat_lines_and_commands_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_700_000_000_000u64;
    let mut store = Store::open(dir.path(), Synchronous::Full).unwrap();
    let mut b = fleetmq_protocol::BatchBuilder::new(1);
    for i in 0..15u64 {
        b.push_chat(t0 + i, &format!("line {i}")).unwrap();
    }
    store_as("pi-a", &mut store, b.finish(), t0);
    let texts: Vec<String> = store
        .recent_chat(3)
        .unwrap()
        .into_iter()
        .map(|c| c.text)
        .collect();
    assert_eq!(texts, ["line 12", "line 13", "line 14"]);

    let ping = store.log_command("pi-a", &fleetmq_protocol::Command::Ping, t0);
    store.log_command("pi-a", &fleetmq_protocol::Command::Status, t0 + 1);
    store.log_command_result(ping, "timed out", t0 + 2);
    let log = store.commands(10).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].result, None, "newest first, still in flight");
    assert_eq!(log[1].result.as_deref(), Some("timed out"));
    assert_eq!(log[1].ended_ms, Some(t0 + 2));
    assert!(log[1].command.contains("Ping"), "{}", log[1].command);
}

/// The command log is written a tick later; what was flushed survives a
/// restart, and ids go on from where they were.
#[test]
fn the_command_log_is_written_by_flush_and_ids_go_on_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), Synchronous::Full).unwrap();
    let first = store.log_command("pi-a", &fleetmq_protocol::Command::Ping, 1);
    store.log_command_result(first, "pong", 2);
    let unfinished = store.log_command("pi-b", &fleetmq_protocol::Command::Status, 3);
    store.flush_log().unwrap();
    drop(store);

    let mut store = Store::open(dir.path(), Synchronous::Full).unwrap();
    let next = store.log_command("pi-a", &fleetmq_protocol::Command::Ping, 4);
    assert!(
        next > unfinished && unfinished > first,
        "{first} {unfinished} {next}"
    );
    // Reading the log writes what is queued first.
    let log = store.commands(10).unwrap();
    let got: Vec<_> = log
        .iter()
        .map(|c| (c.id, c.device.as_str(), c.result.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (next, "pi-a", None),
            (unfinished, "pi-b", None),
            (first, "pi-a", Some("pong")),
        ]
    );
}

/// A resend is a duplicate; the same number with other content (another
/// agent with this device id) is refused with the next free number.
#[test]
fn a_batch_number_taken_with_other_content_is_refused_with_the_next_free_one() {
    let mut store = Store::in_memory().unwrap();
    let store_one = |store: &mut Store, seq: u64, value: i64| {
        let mut b = fleetmq_protocol::BatchBuilder::new(seq);
        b.push_sample("n", 1_000, fleetmq_protocol::Value::Int(value))
            .unwrap();
        store_as("pi-a", store, b.finish(), 1)
    };
    assert_eq!(store_one(&mut store, 1, 10), Stored::New);
    assert_eq!(store_one(&mut store, 1, 10), Stored::Duplicate);
    assert_eq!(store_one(&mut store, 1, 11), Stored::Taken { from: 2 });
    assert_eq!(store_one(&mut store, 5, 50), Stored::New);
    assert_eq!(store_one(&mut store, 1, 12), Stored::Taken { from: 6 });
    assert_eq!(store_one(&mut store, 6, 12), Stored::New);
}

/// A batch numbered `seq` from pi-a holding `value`.
pub(crate) fn numbered(seq: u64, value: i64) -> fleetmq_protocol::Batch {
    let mut b = fleetmq_protocol::BatchBuilder::new(seq);
    b.push_sample("n", 1_000, fleetmq_protocol::Value::Int(value))
        .unwrap();
    b.finish()
}

/// How many batches the store holds under each number of `device`.
pub(crate) fn held(store: &Store, device: &str) -> Vec<(i64, i64)> {
    let mut stmt = store
        .conn
        .prepare("SELECT seq, count(*) FROM batches WHERE device = ?1 GROUP BY seq ORDER BY seq")
        .unwrap();
    stmt.query_map([device], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Stores pi-a's batches one by one, (number, value) each, and checks what
/// became of each.
fn expect(store: &mut Store, steps: &[(u64, i64, Stored)]) {
    for (seq, value, want) in steps {
        let got = store_as("pi-a", store, numbered(*seq, *value), 1);
        assert_eq!(&got, want, "batch {seq} holding {value}");
    }
}

/// What the store knows of a device's numbers (its highest, the holes
/// below it) survives a restart: a resend after it is stored once, and a
/// hole is filled.
#[test]
fn a_resend_after_a_restart_is_stored_once_and_a_hole_is_filled() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut store = Store::open(dir.path(), Synchronous::Full).unwrap();
        let new = |seq| (seq, 10, Stored::New);
        expect(&mut store, &[new(1), new(2), new(5)]);
    }
    let mut store = Store::open(dir.path(), Synchronous::Full).unwrap();
    expect(
        &mut store,
        &[
            (5, 10, Stored::Duplicate),
            (2, 10, Stored::Duplicate),
            (4, 10, Stored::New),
            (4, 10, Stored::Duplicate),
            (2, 99, Stored::Taken { from: 6 }),
            (3, 10, Stored::New),
        ],
    );
    assert_eq!(
        held(&store, "pi-a"),
        [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]
    );
    let devices = store.devices(Facts::Read).unwrap();
    assert_eq!(devices[0].batches, 5, "each stored batch counted once");
}

/// A device's first batches may come out of order (a resend after a
/// reconnect overtaken by a batch packed then, or one throttled while the
/// next went through): nothing of the device's was stored, so each is new,
/// not another agent's to renumber.
#[test]
fn batches_overtaken_by_a_devices_first_are_stored_as_new() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), Synchronous::Full).unwrap();
    expect(
        &mut store,
        &[
            (5121, 10, Stored::New),
            (1, 10, Stored::New),
            (1025, 10, Stored::New),
            (1, 10, Stored::Duplicate),
            (5121, 99, Stored::Taken { from: 5122 }),
        ],
    );
    assert_eq!(held(&store, "pi-a"), [(1, 1), (1025, 1), (5121, 1)]);
}

/// A hub.db from before the devices kept their numbers (batches unique on
/// (device, seq)) goes on storing each batch once after the upgrade, and
/// finds a resend by its number however old it is.
#[test]
fn a_hub_db_from_before_the_numbers_stores_each_batch_once_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let body = |seq: u64| {
        let frame = fleetmq_protocol::Upstream::Batch(numbered(seq, 10))
            .encode()
            .unwrap();
        fleetmq_protocol::envelope::open(&frame).unwrap().1.to_vec()
    };
    {
        let old = rusqlite::Connection::open(dir.path().join("hub.db")).unwrap();
        old.execute_batch(
            "CREATE TABLE devices (id TEXT PRIMARY KEY, agent_version TEXT NOT NULL DEFAULT '',
                 arch TEXT NOT NULL DEFAULT '', os TEXT NOT NULL DEFAULT '',
                 hostname TEXT NOT NULL DEFAULT '', groups TEXT NOT NULL DEFAULT '[]',
                 first_seen_ms INTEGER NOT NULL, last_seen_ms INTEGER NOT NULL,
                 since_ms INTEGER NOT NULL, batches INTEGER NOT NULL DEFAULT 0);
             CREATE TABLE batches (id INTEGER PRIMARY KEY, device TEXT NOT NULL,
                 seq INTEGER NOT NULL, received_ms INTEGER NOT NULL, records INTEGER NOT NULL,
                 wire_version INTEGER NOT NULL, body BLOB NOT NULL, UNIQUE (device, seq));
             INSERT INTO devices (id, first_seen_ms, last_seen_ms, since_ms, batches)
                 VALUES ('pi-a', 1, 1, 1, 1100);",
        )
        .unwrap();
        for seq in 1..=1100u64 {
            old.execute(
                "INSERT INTO batches (device, seq, received_ms, records, wire_version, body)
                 VALUES ('pi-a', ?1, 1, 1, 1, ?2)",
                rusqlite::params![seq as i64, body(seq)],
            )
            .unwrap();
        }
    }
    let mut store = Store::open(dir.path(), Synchronous::Full).unwrap();
    expect(
        &mut store,
        &[
            (1100, 10, Stored::Duplicate),
            (1, 10, Stored::Duplicate),
            (1, 99, Stored::Taken { from: 1101 }),
            (1101, 10, Stored::New),
            (1101, 10, Stored::Duplicate),
        ],
    );
    let held = held(&store, "pi-a");
    assert_eq!(held.len(), 1101);
    assert!(held.iter().all(|&(_, n)| n == 1), "each number once");
    assert_eq!(store.devices(Facts::Read).unwrap()[0].batches, 1101);
    // Its batches gained the log line count (none), and log batches count.
    assert_eq!(store.log_bytes(), 0);
    let mut logged = fleetmq_protocol::BatchBuilder::new(1102);
    logged
        .push_log("/var/log/app.log", 1, "after the upgrade")
        .unwrap();
    assert_eq!(
        store_as("pi-a", &mut store, logged.finish(), 2),
        Stored::New
    );
    assert!(store.log_bytes() > 0);
}

/// A batch and its resend in the same round: stored once, the resend
/// acked as a duplicate; another agent's bytes under the number in the
/// same round are told to renumber.
#[test]
fn a_number_twice_in_one_round_is_stored_once() {
    let mut store = Store::in_memory().unwrap();
    let encoded = |b: &fleetmq_protocol::Batch| {
        let frame = fleetmq_protocol::Upstream::Batch(b.clone())
            .encode()
            .unwrap();
        fleetmq_protocol::envelope::open(&frame).unwrap().1.to_vec()
    };
    let (one, other) = (numbered(7, 10), numbered(7, 99));
    let (body, other_body) = (encoded(&one), encoded(&other));
    let incoming = [
        Incoming {
            device: "pi-a",
            batch: &one,
            body: &body,
        },
        Incoming {
            device: "pi-a",
            batch: &one,
            body: &body,
        },
        Incoming {
            device: "pi-a",
            batch: &other,
            body: &other_body,
        },
    ];
    let (outcomes, _) = store.store_batches(&incoming, 1).unwrap();
    assert_eq!(
        outcomes,
        [Stored::New, Stored::Duplicate, Stored::Taken { from: 8 }]
    );
    assert_eq!(held(&store, "pi-a"), [(7, 1)]);
}

/// A resend is looked for among its device's newest batches only: one
/// stored further back than any agent keeps in flight is taken for another
/// agent's number, and renumbered. A resend after a crash, numbered far
/// below the highest (the agent skipped the rest of its block), is found.
#[test]
fn a_number_stored_further_back_than_any_resend_comes_is_renumbered() {
    let mut store = Store::in_memory().unwrap();
    let back = super::telemetry::LOOK_BACK;
    expect(&mut store, &[(1, 10, Stored::New), (5000, 10, Stored::New)]);
    expect(&mut store, &[(1, 10, Stored::Duplicate)]);
    // 5000 becomes the oldest of the newest `back`, 1 is past them.
    let later: Vec<fleetmq_protocol::Batch> =
        (5001..5000 + back).map(|seq| numbered(seq, 10)).collect();
    let frames: Vec<Vec<u8>> = later
        .iter()
        .map(|b| {
            let frame = fleetmq_protocol::Upstream::Batch(b.clone())
                .encode()
                .unwrap();
            fleetmq_protocol::envelope::open(&frame).unwrap().1.to_vec()
        })
        .collect();
    let incoming: Vec<Incoming<'_>> = later
        .iter()
        .zip(&frames)
        .map(|(batch, body)| Incoming {
            device: "pi-a",
            batch,
            body,
        })
        .collect();
    store.store_batches(&incoming, 1).unwrap();
    expect(
        &mut store,
        &[
            (5000, 10, Stored::Duplicate),
            (1, 10, Stored::Taken { from: 5000 + back }),
            (4999, 10, Stored::New),
        ],
    );
}

/// A round holding several batches of a device counts each new one once
/// on its device, and a resend in it not at all.
#[test]
fn a_round_counts_each_devices_new_batches() {
    let mut store = Store::in_memory().unwrap();
    let batch = |seq: u64| {
        let mut b = fleetmq_protocol::BatchBuilder::new(seq);
        b.push_sample("n", 1_000, fleetmq_protocol::Value::Int(seq as i64))
            .unwrap();
        let batch = b.finish();
        let frame = fleetmq_protocol::Upstream::Batch(batch.clone())
            .encode()
            .unwrap();
        let body = fleetmq_protocol::envelope::open(&frame).unwrap().1.to_vec();
        (batch, body)
    };
    // pi-a 1 is stored before the round, which resends it.
    assert_eq!(store_as("pi-a", &mut store, batch(1).0, 5), Stored::New);
    let round = [
        ("pi-a", batch(2)),
        ("pi-b", batch(1)),
        ("pi-a", batch(3)),
        ("pi-a", batch(1)),
    ];
    let incoming: Vec<Incoming<'_>> = round
        .iter()
        .map(|(device, (batch, body))| Incoming {
            device,
            batch,
            body,
        })
        .collect();
    let (outcomes, _) = store.store_batches(&incoming, 9).unwrap();
    assert_eq!(
        outcomes,
        [Stored::New, Stored::New, Stored::New, Stored::Duplicate]
    );
    let counted: Vec<(String, u64, u64)> = store
        .devices(Facts::Read)
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.batches, d.last_seen_ms))
        .collect();
    assert_eq!(
        counted,
        [("pi-a".to_string(), 3, 9), ("pi-b".to_string(), 1, 9)]
    );
}

/// `config status` reads what every device applied at once, as each
/// device's own read finds it.
#[test]
fn what_every_device_applied_is_read_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Synchronous::Normal).unwrap();
    assert!(store.config_applied_all().unwrap().is_empty());
    let refused = [("app.x".to_string(), "not in may_set".to_string())];
    store.config_applied("pi-1", 3, &[], 10).unwrap();
    store.config_applied("pi-2", 4, &refused, 11).unwrap();
    store.config_applied("pi-1", 5, &[], 12).unwrap();
    let all = store.config_applied_all().unwrap();
    assert_eq!(all.len(), 2);
    for device in ["pi-1", "pi-2"] {
        assert_eq!(all[device], store.config_applied_by(device).unwrap());
    }
    assert_eq!(all["pi-1"], (5, vec![]));
    assert_eq!(all["pi-2"], (4, refused.to_vec()));
}

mod devices;
mod queries_and_retention;
mod work;

/// The audit trail keeps the newest allowed acts and, apart, the newest
/// refused ones: a flood of refused acts (a read operator's) cannot push
/// out what was done.
#[test]
fn the_audit_trail_keeps_the_newest_acts_and_refusals_apart() {
    use super::audit::{AUDIT_KEEP, REFUSED_KEEP};
    let mut s = Store::in_memory().unwrap();
    for i in 1..=3 {
        s.audit_record(i, "ada (admin)", &format!("revoke pi-{i}"), true);
    }
    let flood = AUDIT_KEEP + 250;
    for i in 0..flood {
        s.audit_record(100 + i as u64, "rex (read)", "forget pi-1", false);
    }
    let all = s.audit(u32::MAX).unwrap();
    let refused = all.iter().filter(|e| !e.allowed).count() as i64;
    assert!(
        (REFUSED_KEEP..REFUSED_KEEP + 100).contains(&refused),
        "{refused}"
    );
    let done: Vec<&str> = (all.iter().filter(|e| e.allowed))
        .map(|e| e.act.as_str())
        .collect();
    assert_eq!(done, ["revoke pi-3", "revoke pi-2", "revoke pi-1"]);
    for i in 0..AUDIT_KEEP + 250 {
        s.audit_record(20_000 + i as u64, "local", &format!("cancel job {i}"), true);
    }
    let all = s.audit(u32::MAX).unwrap();
    let allowed = all.iter().filter(|e| e.allowed).count() as i64;
    assert!(
        (AUDIT_KEEP..AUDIT_KEEP + 100).contains(&allowed),
        "{allowed}"
    );
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all[0].act, format!("cancel job {}", AUDIT_KEEP + 249));
}
