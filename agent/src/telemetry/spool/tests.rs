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
    let (mut s, _) = Spool::open(cfg.clone(), now).unwrap();
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
    let (mut s, rec) =
        Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest), now).unwrap();
    assert!(rec.unacked.is_empty() && rec.unpacked == 0);
    for i in 0..10 {
        s.append(&[sample(i)], now).unwrap();
    }
    assert_eq!(pack(&mut s, 7, 4), vec![0, 1, 2, 3]);
    assert_eq!(pack(&mut s, 8, 3), vec![4, 5, 6]);
    s.acked(7).unwrap();
    drop(s); // as if killed: nothing is flushed at the end

    let (mut s, rec) =
        Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest), now).unwrap();
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

    let (mut s, rec) = Spool::open(cfg.clone(), now).unwrap();
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
    let (_, rec) = Spool::open(cfg, now).unwrap();
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

    let (mut s, rec) = Spool::open(cfg, now).unwrap();
    assert_eq!(s.counters.corrupt_entries, 1);
    assert_eq!(rec.unpacked, 4);
    assert_eq!(pack(&mut s, 1, 100), vec![0, 1, 3, 4]);
}

#[test]
fn a_full_spool_drops_whole_oldest_segments_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let now = Instant::now();
    let max = 5 * 4096;
    let (mut s, _) = Spool::open(config(dir.path(), max, FullPolicy::DropOldest), now).unwrap();
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
    let (mut s, _) = Spool::open(config(dir.path(), max, FullPolicy::RefuseNew), now).unwrap();
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
    let (mut s, _) = Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest), now).unwrap();
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
    let (_, rec) = Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest), now).unwrap();
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
    let (mut s, _) = Spool::open(config(dir.path(), 1 << 20, FullPolicy::DropOldest), now).unwrap();
    for i in 0..3 {
        s.append(&[sample(i)], now).unwrap();
    }
    s.sync(now).unwrap();
    drop(s);
    let file = &segment_files(dir.path())[0];
    let bytes = std::fs::read(file).unwrap();
    let whole = scan_segment(&bytes);
    assert_eq!((whole.entries, whole.torn, whole.corrupt), (3, false, 0));
    assert_eq!(whole.valid, bytes.len() as u64);
    let cut = scan_segment(&bytes[..bytes.len() - 1]);
    assert_eq!((cut.entries, cut.torn), (2, true), "a write cut short");
}
