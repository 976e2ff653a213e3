//! The devices' rows: their connects and disconnects, and forgetting one.

use super::*;

/// A device's log of connects and disconnects keeps its newest entries.
#[test]
fn the_presence_log_keeps_each_devices_newest() {
    let store = Store::in_memory().unwrap();
    let most = u64::from(PRESENCE_LOG_KEEP);
    for i in 0..most + 50 {
        store
            .log_presence("pi-1", i % 2 == 0, i, &format!("n{i}"))
            .unwrap();
    }
    store.log_presence("pi-2", true, 1, "hello").unwrap();
    let kept = store.presence_log("pi-1", 1_000).unwrap();
    assert_eq!(kept.len() as u64, most);
    assert_eq!(kept[0].why, format!("n{}", most + 49), "newest first");
    assert_eq!(kept.last().unwrap().why, "n50", "the oldest went");
    assert_eq!(store.presence_log("pi-2", 10).unwrap().len(), 1);
}

/// Forgetting a decommissioned device takes it out of every list and calls
/// off what waits for it, but keeps its batch numbers: once it speaks
/// again it is back, and a batch it resends is stored once.
#[test]
fn a_forgotten_device_leaves_the_lists_and_comes_back_with_its_numbers() {
    let mut store = Store::in_memory().unwrap();
    for seq in 1..=3 {
        assert_eq!(
            store_as("pi-a", &mut store, numbered(seq, 10), 1),
            Stored::New
        );
    }
    store.touch("pi-b", 1).unwrap();
    let both: Vec<String> = ["pi-a", "pi-b"].map(String::from).to_vec();
    let job = store
        .submit_aimed(&echo_job(3), "all", &both, u64::MAX, 2)
        .unwrap();
    let command = store
        .fleet_submit(
            &fleetmq_protocol::Command::Ping,
            "all",
            &both,
            0,
            u64::MAX / 2,
            2,
        )
        .unwrap();

    store.log_presence("pi-a", true, 1, "hello").unwrap();
    store.log_presence("pi-b", true, 1, "hello").unwrap();
    assert_eq!(store.forget_device("pi-a", 3).unwrap(), Some((1, 1)));
    assert!(
        store.presence_log("pi-a", 10).unwrap().is_empty(),
        "its connects go"
    );
    assert_eq!(store.presence_log("pi-b", 10).unwrap().len(), 1);
    assert_eq!(
        store.forget_device("pi-a", 4).unwrap(),
        None,
        "forgotten already"
    );
    assert_eq!(
        store.forget_device("pi-z", 4).unwrap(),
        None,
        "never heard from"
    );
    let ids = listed_ids(&store);
    assert_eq!(ids, ["pi-b"]);
    assert_eq!(store.device_count().unwrap(), 1);
    assert!(!store.device_known("pi-a").unwrap());
    assert_eq!(store.device_groups("pi-a").unwrap(), None);

    // What waited for pi-a never goes; pi-b's share and run still do.
    assert!(store.aimed_due("pi-a", 10, 5).unwrap().is_empty());
    assert_eq!(store.aimed_due("pi-b", 10, 5).unwrap().len(), 1);
    let runs = store.job(job).unwrap().unwrap().runs;
    let run_a = runs.iter().find(|r| r.device == "pi-a").unwrap();
    assert_eq!(run_a.state, JobState::Failed);
    assert!(
        run_a
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("forgotten")
    );
    let waiting: Vec<String> = store
        .fleet_waiting(5)
        .unwrap()
        .into_iter()
        .map(|w| w.device)
        .collect();
    assert_eq!(waiting, ["pi-b"]);
    let answers = store.fleet_answers(command).unwrap().unwrap();
    assert!(
        answers[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("forgotten")
    );

    // Enrolled again and heard from: back, and its numbers still hold.
    store.touch("pi-a", 6).unwrap();
    assert!(store.device_known("pi-a").unwrap());
    assert_eq!(
        store_as("pi-a", &mut store, numbered(3, 10), 7),
        Stored::Duplicate
    );
    assert_eq!(
        store_as("pi-a", &mut store, numbered(4, 10), 7),
        Stored::New
    );
    assert_eq!(held(&store, "pi-a"), [(1, 1), (2, 1), (3, 1), (4, 1)]);
    let again = store.devices(Facts::Read).unwrap();
    assert_eq!((again[0].id.as_str(), again[0].batches), ("pi-a", 4));
}

/// On a front-end: what forgetting would call off is counted before the
/// cluster is asked; a device the cluster forgot is forgotten here even
/// before its telemetry is read from the stream, and stays so until the
/// cluster says it is back.
#[test]
fn a_device_the_cluster_forgot_stays_forgotten_here_until_the_cluster_remembers_it() {
    let mut store = Store::in_memory().unwrap();
    store.touch("pi-a", 1).unwrap();
    let both: Vec<String> = ["pi-a", "pi-b"].map(String::from).to_vec();
    store
        .submit_aimed(&echo_job(3), "all", &both, u64::MAX, 2)
        .unwrap();
    assert_eq!(store.forget_counts("pi-a").unwrap(), (1, 0));
    assert_eq!(store.forget_counts("pi-z").unwrap(), (0, 0));
    store.forget_from_cluster("pi-a", 3).unwrap();
    assert_eq!(store.forget_counts("pi-a").unwrap(), (0, 0), "called off");
    // Told twice (the bucket's word after this front-end's own): the same.
    store.forget_from_cluster("pi-a", 4).unwrap();

    // Never heard of here: forgotten before its telemetry comes.
    store.forget_from_cluster("pi-n", 5).unwrap();
    assert_eq!(
        store_as("pi-n", &mut store, numbered(1, 10), 6),
        Stored::New
    );
    assert!(!store.device_known("pi-n").unwrap());
    assert_eq!(store.device_count().unwrap(), 0);

    // Back at another front-end: listed again, its numbers kept.
    store.remember("pi-n").unwrap();
    store.remember("pi-q").unwrap();
    let ids = listed_ids(&store);
    assert_eq!(ids, ["pi-n"]);
    assert_eq!(held(&store, "pi-n"), [(1, 1)]);
}

/// A hub.db from before `forget` gains the column; its devices are all
/// listed, and one can be forgotten.
#[test]
fn a_hub_db_from_before_forget_lists_its_devices_and_can_forget_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Synchronous::Full).unwrap();
        store.touch("pi-a", 1).unwrap();
        store.touch("pi-b", 1).unwrap();
        store
            .conn
            .execute_batch("ALTER TABLE devices DROP COLUMN forgotten_ms")
            .unwrap();
    }
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    assert_eq!(store.device_count().unwrap(), 2);
    assert_eq!(store.forget_device("pi-a", 2).unwrap(), Some((0, 0)));
    let ids = listed_ids(&store);
    assert_eq!(ids, ["pi-b"]);
}

/// What a device's Offer said it is survives a restart; the same facts
/// again write nothing; a hub.db from before facts gains the column.
#[test]
fn a_devices_facts_are_kept_over_a_restart_and_the_same_again_change_nothing() {
    use fleetmq_protocol::{DeviceFacts, Interface};
    let facts = DeviceFacts {
        kernel: "6.6.31+rpt-rpi-v8".into(),
        model: "Raspberry Pi 4 Model B Rev 1.4".into(),
        memory_bytes: 4 << 30,
        interfaces: vec![Interface {
            name: "wlan0".into(),
            mac: "dc:a6:32:01:02:04".into(),
            addresses: vec!["192.168.1.23/24".into()],
        }],
        ..DeviceFacts::default()
    };
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), Synchronous::Full).unwrap();
        store.touch("pi-old", 1).unwrap();
        store
            .conn
            .execute_batch("ALTER TABLE devices DROP COLUMN facts")
            .unwrap();
    }
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    assert!(
        !store.facts("pi-old", &DeviceFacts::default(), 2).unwrap(),
        "an older agent's none: nothing to write"
    );
    assert!(store.facts("pi-a", &facts, 2).unwrap());
    assert!(!store.facts("pi-a", &facts, 3).unwrap());
    assert_eq!(
        store.conn.changes(),
        0,
        "the same facts again write nothing"
    );
    drop(store);
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    let listed: Vec<(String, DeviceFacts)> = (store.devices(Facts::Read).unwrap().into_iter())
        .map(|d| (d.id, d.facts))
        .collect();
    assert_eq!(
        listed,
        [
            ("pi-a".to_string(), facts),
            ("pi-old".to_string(), DeviceFacts::default())
        ]
    );
    // A listing that does not need them skips them.
    let bare = store.devices(Facts::Skip).unwrap();
    assert!(bare.len() == 2 && bare.iter().all(|d| d.facts.is_empty()));
}

/// The ids `devices` lists, in its order.
fn listed_ids(store: &Store) -> Vec<String> {
    (store.devices(Facts::Skip).unwrap().into_iter())
        .map(|d| d.id)
        .collect()
}

#[test]
fn a_change_of_groups_marks_the_configuration_stale_until_one_is_applied() {
    let hello = |groups: &[&str]| fleetmq_protocol::Hello {
        agent_version: "0.1.0".into(),
        arch: "aarch64".into(),
        os: "linux".into(),
        hostname: "pi-a".into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        heartbeat_ms: 1_000,
        started_ms: 1,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    store.hello("pi-a", &hello(&["north"]), 1).unwrap();
    assert!(
        store.config_stale("pi-a").unwrap(),
        "new here: it may have applied another front-end's"
    );
    store.config_fresh("pi-a").unwrap();
    store.hello("pi-a", &hello(&["north"]), 2).unwrap();
    assert!(!store.config_stale("pi-a").unwrap(), "the same groups");
    store.hello("pi-a", &hello(&["north", "south"]), 3).unwrap();
    store.hello("pi-a", &hello(&["north", "south"]), 4).unwrap();
    assert!(
        store.config_stale("pi-a").unwrap(),
        "until a document is applied"
    );
    drop(store);
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    assert!(store.config_stale("pi-a").unwrap(), "kept over a restart");
    store.config_fresh("pi-a").unwrap();
    assert!(!store.config_stale("pi-a").unwrap());
    store.config_fresh("pi-a").unwrap();
    assert_eq!(store.conn.changes(), 0, "nothing to write when fresh");
    assert!(!store.config_stale("pi-z").unwrap(), "an unknown device");
    // A hub.db from before the mark gains it, none stale.
    store
        .conn
        .execute_batch("ALTER TABLE devices DROP COLUMN config_stale")
        .unwrap();
    drop(store);
    let store = Store::open(dir.path(), Synchronous::Full).unwrap();
    assert!(!store.config_stale("pi-a").unwrap());
    store.hello("pi-a", &hello(&[]), 5).unwrap();
    assert!(store.config_stale("pi-a").unwrap());
}
