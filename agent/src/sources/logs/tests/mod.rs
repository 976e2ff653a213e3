use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::time::Instant;

use super::*;
use fleetmq_protocol::telemetry::MAX_LOG_LINE_LEN;

fn config(files: &[&Path], start_at: StartAt) -> LogsConfig {
    LogsConfig {
        files: files
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        start_at,
        ..LogsConfig::default()
    }
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn texts(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| match r {
            Record::Log { text, .. } => text.clone(),
            other => panic!("not a log line: {other:?}"),
        })
        .collect()
}

/// Polls and commits, as the agent does when the spool takes the lines.
fn read(t: &mut Tailer) -> Vec<String> {
    read_at(t, Instant::now())
}

/// The same, at `now` on the monotonic clock.
fn read_at(t: &mut Tailer, now: Instant) -> Vec<String> {
    let records = t.poll(7, now);
    t.commit();
    texts(&records)
}

const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

#[test]
fn lines_are_read_whole_with_their_source_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "old\n");
    let mut t = Tailer::open(&config(&[&log], StartAt::End), dir.path());
    assert!(
        read(&mut t).is_empty(),
        "start_at = end skips what was there"
    );
    append(&log, "one\r\ntwo\nthr");
    let records = t.poll(42, Instant::now());
    t.commit();
    assert_eq!(
        records,
        vec![
            Record::Log {
                ts_ms: 42,
                source: log.to_string_lossy().into_owned(),
                text: "one".into()
            },
            Record::Log {
                ts_ms: 42,
                source: log.to_string_lossy().into_owned(),
                text: "two".into()
            },
        ]
    );
    // The unfinished line waits for its end.
    append(&log, "ee\n");
    assert_eq!(read(&mut t), ["three"]);
    assert_eq!(t.status()[0].lines, 3);
    assert_eq!(t.status()[0].state, "following");
}

#[test]
fn start_at_beginning_reads_what_the_file_holds() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "a\nb\n");
    let mut t = Tailer::open(&config(&[&log], StartAt::Beginning), dir.path());
    assert_eq!(read(&mut t), ["a", "b"]);
}

#[test]
fn lines_not_taken_by_the_spool_are_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let mut t = Tailer::open(&config(&[&log], StartAt::End), dir.path());
    append(&log, "a\nb\n");
    assert_eq!(texts(&t.poll(1, Instant::now())), ["a", "b"]);
    t.rewind();
    assert_eq!(read(&mut t), ["a", "b"]);
    assert!(read(&mut t).is_empty());
}

#[test]
fn a_restart_reads_on_from_where_each_file_was_left() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let cfg = config(&[&log], StartAt::End);
    let mut t = Tailer::open(&cfg, dir.path());
    append(&log, "a\n");
    assert_eq!(read(&mut t), ["a"]);
    append(&log, "b\n");
    // Read but never taken: not kept as read.
    let _ = t.poll(1, Instant::now());
    drop(t);
    append(&log, "c\n");
    let mut t = Tailer::open(&cfg, dir.path());
    assert_eq!(read(&mut t), ["b", "c"]);
}

#[test]
fn a_rotated_file_is_read_to_its_end_then_the_new_one_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let mut t = Tailer::open(&config(&[&log], StartAt::End), dir.path());
    append(&log, "a\n");
    assert_eq!(read(&mut t), ["a"]);
    // Written after the last poll, then rotated as logrotate does: the
    // last line unfinished.
    append(&log, "b\nunfinished");
    let rotated = dir.path().join("app.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    append(&log, "new 1\n");
    let t0 = Instant::now();
    assert_eq!(read_at(&mut t, t0), ["b"]);
    // The program writes on to the file it has open until it reopens its
    // log: read on until it stops growing.
    append(&rotated, " after all\nlast\n");
    assert_eq!(
        read_at(&mut t, t0 + SECOND),
        ["unfinished after all", "last"]
    );
    assert!(read_at(&mut t, t0 + 2 * SECOND).is_empty());
    assert_eq!(t.status()[0].state, "reading a rotated file to its end");
    assert!(
        read_at(&mut t, t0 + 6 * SECOND).is_empty(),
        "still for 5 s: let go"
    );
    assert_eq!(read_at(&mut t, t0 + 7 * SECOND), ["new 1"]);
    append(&log, "new 2\n");
    assert_eq!(read_at(&mut t, t0 + 8 * SECOND), ["new 2"]);
    assert_eq!(t.status()[0].state, "following");
}

#[test]
fn the_unfinished_last_line_of_a_rotated_file_is_sent_once_it_is_let_go() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let mut t = Tailer::open(&config(&[&log], StartAt::End), dir.path());
    append(&log, "never finished");
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    let t0 = Instant::now();
    assert!(read_at(&mut t, t0).is_empty());
    assert_eq!(read_at(&mut t, t0 + 6 * SECOND), ["never finished"]);
    assert!(
        t.status()[0].state.starts_with("missing"),
        "{:?}",
        t.status()
    );
}

#[test]
fn a_rotated_file_deleted_before_it_was_read_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let mut t = Tailer::open(&config(&[&log], StartAt::End), dir.path());
    append(&log, "kept\n");
    std::fs::remove_file(&log).unwrap();
    let t0 = Instant::now();
    assert_eq!(read_at(&mut t, t0), ["kept"]);
    assert!(read_at(&mut t, t0 + 6 * SECOND).is_empty());
    assert!(t.status()[0].state.starts_with("missing"));
    append(&log, "back\n");
    assert_eq!(read_at(&mut t, t0 + 7 * SECOND), ["back"]);
    assert_eq!(t.status()[0].state, "following");
}

#[test]
fn a_file_cut_short_in_place_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let mut t = Tailer::open(&config(&[&log], StartAt::End), dir.path());
    append(&log, "a long first line\n");
    assert_eq!(read(&mut t), ["a long first line"]);
    std::fs::write(&log, "b\n").unwrap();
    assert_eq!(read(&mut t), ["b"]);
}

#[test]
fn a_missing_file_is_read_from_its_start_once_it_is_there() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("later.log");
    let mut t = Tailer::open(&config(&[&log], StartAt::End), dir.path());
    assert!(read(&mut t).is_empty());
    assert!(
        t.status()[0].state.starts_with("missing"),
        "{:?}",
        t.status()
    );
    append(&log, "first\n");
    assert_eq!(read(&mut t), ["first"]);
}

#[test]
fn a_poll_reads_at_most_its_budget_and_the_rest_waits() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let mut cfg = config(&[&log], StartAt::End);
    (cfg.max_lines_per_s, cfg.poll_ms) = (4, 500);
    let mut t = Tailer::open(&cfg, dir.path());
    append(&log, "1\n2\n3\n4\n5\n");
    assert_eq!(read(&mut t), ["1", "2"]);
    assert_eq!(read(&mut t), ["3", "4"]);
    assert_eq!(read(&mut t), ["5"]);
}

#[test]
fn long_lines_go_in_pieces_and_nothing_of_them_is_lost() {
    let long = "é".repeat(MAX_LOG_LINE_LEN); // two bytes each
    let text = format!("{long}\nshort\n");
    let (lines, used) = split_lines(text.as_bytes(), 100, false);
    assert_eq!(used, text.len());
    assert!(lines.iter().all(|l| l.len() <= MAX_LOG_LINE_LEN));
    assert_eq!(lines.concat(), format!("{long}short"));
    assert_eq!(lines.last().map(String::as_str), Some("short"));
    // Bytes that are not UTF-8 stay within the limit once replaced.
    let junk = vec![0xffu8; MAX_LOG_LINE_LEN + 10];
    let (lines, used) = split_lines(&junk, 100, true);
    assert_eq!(used, junk.len());
    assert!(lines.iter().all(|l| l.len() <= MAX_LOG_LINE_LEN));
    assert_eq!(
        lines.iter().map(|l| l.chars().count()).sum::<usize>(),
        junk.len()
    );
}

#[test]
fn bad_configurations_say_what_is_wrong() {
    let mut cfg = LogsConfig {
        files: vec!["var/log/syslog".into()],
        ..LogsConfig::default()
    };
    assert!(check(&cfg).unwrap_err().1.contains("absolute"));
    cfg.files = vec!["/a".into(), "/a".into()];
    assert!(check(&cfg).unwrap_err().1.contains("twice"));
    cfg.files = vec![format!("/{}", "x".repeat(200))];
    assert!(check(&cfg).unwrap_err().1.contains("128"));
    cfg.files = vec!["/var/log/syslog".into()];
    cfg.poll_ms = 10;
    assert_eq!(check(&cfg).unwrap_err().0, "logs.poll_ms");
    cfg.poll_ms = 1000;
    assert_eq!(check(&cfg), Ok(()));
    cfg.files = vec!["/var/log/*/app.log".into()];
    assert!(check(&cfg).unwrap_err().1.contains("only the file name"));
    cfg.files = vec!["/var/log/app/*.log".into(), "/var/log/app-?.log".into()];
    assert_eq!(check(&cfg), Ok(()));
    cfg.journal_priority = "warn".into();
    let (key, why) = check(&cfg).unwrap_err();
    assert_eq!(key, "logs.journal_priority");
    assert!(why.contains("emerg, alert, crit, err, warning"), "{why}");
    cfg.journal_priority = "4".into();
    assert_eq!(check(&cfg), Ok(()));
}

#[test]
fn lines_written_while_the_agent_was_stopped_are_read_though_none_came_before() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "before the first start\n");
    let cfg = config(&[&log], StartAt::End);
    let mut t = Tailer::open(&cfg, dir.path());
    assert!(read(&mut t).is_empty());
    drop(t);
    append(&log, "while stopped\n");
    let mut t = Tailer::open(&cfg, dir.path());
    assert_eq!(read(&mut t), ["while stopped"]);
}

#[test]
fn an_unreadable_record_of_where_files_were_left_starts_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "a\n");
    std::fs::write(dir.path().join("logs.state"), "file 1 2\n").unwrap();
    let mut t = Tailer::open(&config(&[&log], StartAt::End), dir.path());
    assert!(read(&mut t).is_empty());
    append(&log, "b\n");
    assert_eq!(read(&mut t), ["b"]);
    let kept = std::fs::read_to_string(dir.path().join("logs.state")).unwrap();
    let m = std::fs::metadata(&log).unwrap();
    assert_eq!(
        kept,
        format!("file {} {} 4 {}\n", m.dev(), m.ino(), log.display())
    );
}

#[test]
fn the_state_file_reads_back_what_it_wrote_and_names_a_bad_line() {
    let text = "file 8 9 10 /var/log/my app.log\nfile 1 2 3 /a\njournal s=1;i=2\n";
    let kept = Kept::parse(text).unwrap();
    assert_eq!(
        kept.text(),
        "file 1 2 3 /a\nfile 8 9 10 /var/log/my app.log\njournal s=1;i=2\n"
    );
    assert_eq!(Kept::parse(&kept.text()), Ok(kept));
    assert_eq!(Kept::parse(""), Ok(Kept::default()));
    for bad in [
        "file 1 2 x /a",
        "file 1 2 3",
        "file 1 2 3 ",
        "journal ",
        "other 1",
        "{}",
    ] {
        let e = Kept::parse(bad).unwrap_err();
        assert!(e.contains("line 1"), "{bad}: {e}");
    }
}

mod filters;
mod journal;
mod patterns;
