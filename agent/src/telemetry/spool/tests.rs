//! The spool against files in a temporary directory.

use super::*;
use fleetmq_protocol::Value;

fn config(dir: &Path, max_bytes: u64, policy: FullPolicy) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes,
        segment_bytes: 4096,
        policy,
        fsync: Fsync::Interval(Duration::from_secs(1)),
    }
}

fn sample(i: i64) -> Record {
    Record::Sample {
        name: "test.n".into(),
        ts_ms: 1_000 + i as u64,
        value: Value::Int(i),
    }
}

fn value(r: &Record) -> i64 {
    match r {
        Record::Sample {
            value: Value::Int(v),
            ..
        } => *v,
        other => panic!("unexpected {other:?}"),
    }
}

/// Packs up to `n` records as batch `seq`; returns their values.
fn pack(s: &mut Spool, seq: u64, n: usize) -> Vec<i64> {
    let peeked = s.peek(n).unwrap();
    let (first, last, after) = (
        peeked[0].0,
        peeked[peeked.len() - 1].0,
        peeked[peeked.len() - 1].2,
    );
    s.packed(
        Some(seq),
        first,
        last,
        peeked.len() as u64,
        after,
        Instant::now(),
    )
    .unwrap();
    peeked.iter().map(|(_, r, _)| value(r)).collect()
}

/// A spool holding samples 0..5 in one segment; returns its path.
fn five_samples(cfg: &SpoolConfig, now: Instant) -> PathBuf {
    let (mut s, _) = Spool::open(cfg.clone()).unwrap();
    for i in 0..5 {
        s.append(&[sample(i)], now).unwrap();
    }
    segment_files(&cfg.dir).remove(0)
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn the_checksum_is_crc32_iso_hdlc_so_older_spools_still_read() {
    // The catalogue's check value: what every earlier agent wrote.
    assert_eq!(checksum(b"123456789"), 0xCBF4_3926);
}

#[test]
fn unacked_batches_and_waiting_records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let (mut s, rec) = Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest)).unwrap();
    assert!(rec.unacked.is_empty() && rec.unpacked == 0);
    for i in 0..10 {
        s.append(&[sample(i)], now).unwrap();
    }
    assert_eq!(pack(&mut s, 7, 4), vec![0, 1, 2, 3]);
    assert_eq!(pack(&mut s, 8, 3), vec![4, 5, 6]);
    s.acked(7).unwrap();
    drop(s); // as if killed: nothing is flushed at the end

    let (mut s, rec) = Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest)).unwrap();
    assert_eq!(rec.unacked.len(), 1, "batch 7 was acked, 8 was not");
    let b = &rec.unacked[0];
    assert_eq!(b.seq, 8, "resent under its own sequence number");
    assert_eq!(
        b.records.iter().map(value).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    assert_eq!(rec.unpacked, 3);
    assert_eq!(pack(&mut s, 9, 100), vec![7, 8, 9]);
    s.append(&[sample(10)], now).unwrap();
    assert_eq!(
        pack(&mut s, 10, 100),
        vec![10],
        "ids continue after a restart"
    );
    assert_eq!(s.counters, SpoolCounters::default());
}

#[test]
fn a_torn_tail_is_cut_off_and_counted_and_writing_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let cfg = config(dir.path(), 1 << 20, FullPolicy::DropOldest);
    let seg = &five_samples(&cfg, now);
    let len = fs::metadata(seg).unwrap().len();
    // A crash in the middle of writing the last record.
    OpenOptions::new()
        .write(true)
        .open(seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let (mut s, rec) = Spool::open(cfg.clone()).unwrap();
    assert_eq!(s.counters.torn_tails, 1);
    assert_eq!(rec.unpacked, 4, "the torn record was never whole");
    assert!(
        rec.notes.iter().any(|n| n.contains("torn tail")),
        "{:?}",
        rec.notes
    );
    s.append(&[sample(99)], now).unwrap();
    assert_eq!(pack(&mut s, 1, 100), vec![0, 1, 2, 3, 99]);
    drop(s);
    let (_, rec) = Spool::open(cfg).unwrap();
    assert_eq!(rec.unacked[0].records.len(), 5, "clean after the cut");
}

#[test]
fn a_corrupt_entry_in_the_middle_is_skipped_and_the_rest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let cfg = config(dir.path(), 1 << 20, FullPolicy::DropOldest);
    let seg = &five_samples(&cfg, now);
    let mut bytes = fs::read(seg).unwrap();
    let entry = (bytes.len() - HEADER as usize) / 5;
    // Flip a bit in the body of the third record.
    bytes[HEADER as usize + 2 * entry + 10] ^= 0x40;
    fs::write(seg, &bytes).unwrap();

    let (mut s, rec) = Spool::open(cfg).unwrap();
    assert_eq!(s.counters.corrupt_entries, 1);
    assert_eq!(rec.unpacked, 4);
    assert_eq!(pack(&mut s, 1, 100), vec![0, 1, 3, 4]);
}

#[test]
fn a_full_spool_drops_whole_oldest_segments_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let max = 5 * 4096;
    let (mut s, _) = Spool::open(config(dir.path(), max, FullPolicy::DropOldest)).unwrap();
    let mut lowest_kept = 0;
    for i in 0..5_000 {
        let a = s.append(&[sample(i)], now).unwrap();
        if let Some(below) = a.dropped_below {
            lowest_kept = below;
        }
        assert!(s.bytes() <= max, "at {i}: {} bytes", s.bytes());
    }
    assert!(lowest_kept > 1, "something was dropped");
    let dropped = s.counters.dropped;
    assert_eq!(dropped, lowest_kept - 1, "every record below the mark");
    assert_eq!(s.unpacked(), 5_000 - dropped);
    let peeked = s.peek(1).unwrap();
    assert_eq!(peeked[0].0, lowest_kept, "the oldest survivor is next");
    assert_eq!(value(&peeked[0].1), lowest_kept as i64 - 1);
    assert!(segment_files(dir.path()).len() <= 5);
}

#[test]
fn refuse_new_keeps_what_is_spooled_and_counts_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let max = 2 * 4096;
    let (mut s, _) = Spool::open(config(dir.path(), max, FullPolicy::RefuseNew)).unwrap();
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..2_000 {
        match s.append(&[sample(i)], now) {
            Ok(_) => accepted += 1,
            Err(AppendError::Full { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0 && accepted > 0);
    assert_eq!(s.counters.refused, refused);
    assert_eq!(s.counters.dropped, 0);
    assert_eq!(s.unpacked(), accepted);
    assert!(s.full_episode_started());
    assert!(!s.full_episode_started(), "logged once per episode");
    let first = s.peek(1).unwrap();
    assert_eq!(value(&first[0].1), 0, "the oldest is kept");
}

#[test]
fn acked_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let (mut s, _) = Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest)).unwrap();
    for i in 0..2_000 {
        s.append(&[sample(i)], now).unwrap();
    }
    assert!(s.segments() > 3);
    let mut seq = 0;
    while s.unpacked() > 0 {
        seq += 1;
        pack(&mut s, seq, 500);
        s.acked(seq).unwrap();
        s.release(None).unwrap();
    }
    assert_eq!(s.segments(), 1, "only the active segment is left");
    assert_eq!(segment_files(dir.path()).len(), 1);
    drop(s);
    let (_, rec) = Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest)).unwrap();
    assert!(rec.unacked.is_empty() && rec.unpacked == 0);
}

#[test]
fn garbage_never_panics_the_scanner() {
    let mut rng = fastrand::Rng::with_seed(5);
    for _ in 0..2_000 {
        let mut bytes = MAGIC.to_vec();
        let n = rng.usize(0..200);
        bytes.extend((0..n).map(|_| rng.u8(..)));
        let end = scan(&bytes, |_, _| {});
        assert!(end.valid <= bytes.len() as u64);
    }
}

#[test]
fn a_segment_scan_counts_whole_entries_and_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let (mut s, _) = Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest)).unwrap();
    for i in 0..3 {
        s.append(&[sample(i)], now).unwrap();
    }
    s.sync().unwrap();
    drop(s);
    let file = &segment_files(dir.path())[0];
    let bytes = std::fs::read(file).unwrap();
    let whole = scan_segment(&bytes);
    assert_eq!((whole.entries, whole.torn, whole.corrupt), (3, false, 0));
    assert_eq!(whole.valid, bytes.len() as u64);
    let cut = scan_segment(&bytes[..bytes.len() - 1]);
    assert_eq!((cut.entries, cut.torn), (2, true), "a write cut short");
}

/// What `peek` gives (from memory when it can) against the files.
fn assert_peek_matches_disk(s: &mut Spool, n: usize) {
    let peeked = s.peek(n).unwrap();
    assert_eq!(peeked, s.peek_file(n).unwrap());
}

#[test]
fn the_next_batch_is_packed_from_memory_exactly_as_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1 << 20, FullPolicy::DropOldest);
    let now = Instant::now();
    let (mut s, _) = Spool::open(cfg.clone()).unwrap();
    // Bursts of records, bookkeeping between them, segments turning over.
    let mut next = 0;
    for (round, burst) in [1, 7, 30, 3, 60, 150, 12].into_iter().enumerate() {
        let records: Vec<Record> = (next..next + burst).map(sample).collect();
        s.append(&records, now).unwrap();
        next += burst;
        assert!(s.tail.is_some(), "round {round}: a few records are kept");
        assert_peek_matches_disk(&mut s, 10);
        let seq = round as u64 + 1;
        pack(&mut s, seq, 100);
        s.acked(seq).unwrap();
        assert_peek_matches_disk(&mut s, 1000);
    }
    assert!(s.segments() > 1, "the records crossed segments");

    // The hub away: more than the tail holds. The files serve until every
    // record is in a batch; then memory again.
    let many: Vec<Record> = (next..next + 3000).map(sample).collect();
    s.append(&many, now).unwrap();
    assert!(s.tail.is_none());
    let mut seq = 100;
    while s.unpacked() > 0 {
        assert_peek_matches_disk(&mut s, 500);
        pack(&mut s, seq, 500);
        seq += 1;
    }
    assert!(s.tail.is_some());
    s.append(&[sample(90_001)], now).unwrap();
    assert_peek_matches_disk(&mut s, 10);
    assert_eq!(pack(&mut s, seq, 10), vec![90_001]);

    // A restart with records waiting reads them from the files.
    s.append(&[sample(90_002), sample(90_003)], now).unwrap();
    drop(s);
    let (mut s, _) = Spool::open(cfg).unwrap();
    assert!(s.tail.is_none());
    assert_eq!(pack(&mut s, seq + 1, 10), vec![90_002, 90_003]);
    assert!(s.tail.is_some());
}

#[test]
fn dropping_the_oldest_segment_leaves_the_tail_to_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 3 * 4096, FullPolicy::DropOldest);
    let now = Instant::now();
    let (mut s, _) = Spool::open(cfg).unwrap();
    for i in 0..2000 {
        s.append(&[sample(i)], now).unwrap();
    }
    assert!(s.counters.dropped > 0, "the cap dropped records");
    assert!(s.tail.is_none());
    assert_peek_matches_disk(&mut s, 1000);
    let first = value(&s.peek(1).unwrap()[0].1);
    assert_eq!(
        first as u64,
        2000 - s.unpacked(),
        "what survived is the newest"
    );
}

#[test]
fn an_interval_sync_is_due_an_interval_after_the_first_unsynced_write() {
    let dir = tempfile::tempdir().unwrap();
    let every = Duration::from_secs(1);
    let (mut s, _) = Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest)).unwrap();
    assert_eq!(s.next_sync(), None, "nothing written, nothing to sync");
    let t0 = Instant::now();
    s.append(&[sample(1)], t0).unwrap();
    assert_eq!(s.next_sync(), Some(t0 + every));
    // More writes do not put it off.
    s.append(&[sample(2)], t0 + Duration::from_millis(600))
        .unwrap();
    assert_eq!(s.next_sync(), Some(t0 + every));
    s.sync_if_due(t0 + Duration::from_millis(999)).unwrap();
    assert_eq!(s.next_sync(), Some(t0 + every), "not due yet");
    s.sync_if_due(t0 + every).unwrap();
    assert_eq!(s.next_sync(), None, "synced");
    // However long after the last sync, the next write waits an interval,
    // so the sync falls due with the next sampling.
    let t1 = t0 + Duration::from_secs(5);
    s.append(&[sample(3)], t1).unwrap();
    assert_eq!(s.next_sync(), Some(t1 + every));
}
