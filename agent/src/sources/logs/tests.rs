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
fn patterns_match_names_as_a_shell_does() {
    use super::glob::matches;
    for (pattern, name, want) in [
        ("*.log", "app.log", true),
        ("*.log", "app.log.1", false),
        ("*.log*", "app.log.1", true),
        ("app-?.log", "app-1.log", true),
        ("app-?.log", "app-12.log", false),
        ("*", "", true),
        ("a*b*c", "aXbYbZc", true),
        ("a*b*c", "aXbYbZ", false),
        ("**x", "yyx", true),
        ("x", "X", false),
    ] {
        assert_eq!(
            matches(pattern.as_bytes(), name.as_bytes()),
            want,
            "{pattern} {name}"
        );
    }
}

/// `DIR/PATTERN` as a `files` entry.
fn pattern_config(dir: &Path, pattern: &str, start_at: StartAt) -> LogsConfig {
    LogsConfig {
        files: vec![format!("{}/{pattern}", dir.display())],
        start_at,
        ..LogsConfig::default()
    }
}

#[test]
fn a_pattern_follows_the_files_it_matches_and_those_that_come_later() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("app");
    std::fs::create_dir(&logs).unwrap();
    append(&logs.join("a.log"), "there before\n");
    append(&logs.join("notes.txt"), "not a log\n");
    append(&logs.join(".hidden.log"), "hidden\n");
    append(&logs.join("old.log.2.gz"), "\u{1f}\u{8b} compressed\n");
    std::fs::create_dir(logs.join("dir.log")).unwrap();
    let cfg = pattern_config(&logs, "*.log*", StartAt::End);
    let mut t = Tailer::open(&cfg, dir.path());
    assert!(
        read(&mut t).is_empty(),
        "start_at = end: what a.log held is skipped"
    );
    append(&logs.join("a.log"), "a1\n");
    append(&logs.join("b.log"), "b1\nb2\n");
    assert_eq!(
        read(&mut t),
        ["a1", "b1", "b2"],
        "a file that came later, from its start"
    );
    let records = t.poll(1, Instant::now());
    assert!(records.is_empty());
    let status = t.status();
    let shown: Vec<(&str, &str, u64)> = (status.iter())
        .map(|s| (s.path.as_str(), s.state.as_str(), s.lines))
        .collect();
    let a = logs.join("a.log").to_string_lossy().into_owned();
    let b = logs.join("b.log").to_string_lossy().into_owned();
    assert_eq!(
        shown,
        [
            (cfg.files[0].as_str(), "2 files match", 3),
            (a.as_str(), "following", 1),
            (b.as_str(), "following", 2),
        ]
    );
    // Deleted: read to its end through the descriptor, then let go.
    append(&logs.join("b.log"), "b3\n");
    std::fs::remove_file(logs.join("b.log")).unwrap();
    let now = Instant::now();
    assert_eq!(read_at(&mut t, now), ["b3"]);
    assert!(read_at(&mut t, now + 6 * SECOND).is_empty());
    assert!(read_at(&mut t, now + 7 * SECOND).is_empty());
    assert_eq!(t.status().len(), 2, "{:?}", t.status());
    assert_eq!(t.status()[0].state, "1 file matches");
}

#[test]
fn a_rotated_file_the_pattern_matches_again_is_not_read_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let mut t = Tailer::open(
        &pattern_config(dir.path(), "app.log*", StartAt::End),
        dir.path(),
    );
    append(&log, "one\n");
    assert_eq!(read(&mut t), ["one"]);
    // logrotate: renamed to app.log.1, which the pattern matches too.
    append(&log, "two\n");
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, "three, in the new file\n");
    append(&dir.path().join("app.log.1"), "four, after the rename\n");
    let now = Instant::now();
    assert_eq!(read_at(&mut t, now), ["two", "four, after the rename"]);
    assert!(read_at(&mut t, now + SECOND).is_empty());
    // Stopped growing: let go, and the new file read from its start.
    assert!(read_at(&mut t, now + 6 * SECOND).is_empty());
    assert_eq!(
        read_at(&mut t, now + 7 * SECOND),
        ["three, in the new file"]
    );
    // app.log.1 is followed from where it was left, not from its start.
    append(&dir.path().join("app.log.1"), "five, late\n");
    assert_eq!(read_at(&mut t, now + 8 * SECOND), ["five, late"]);
}

#[test]
fn after_a_restart_a_pattern_reads_files_that_came_meanwhile_from_their_start() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("a.log"), "before the first start\n");
    let cfg = pattern_config(dir.path(), "*.log", StartAt::End);
    let t = Tailer::open(&cfg, dir.path());
    drop(t);
    append(&dir.path().join("a.log"), "while stopped\n");
    append(&dir.path().join("b.log"), "came while stopped\n");
    let mut t = Tailer::open(&cfg, dir.path());
    assert_eq!(read(&mut t), ["while stopped", "came while stopped"]);
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

/// One entry in journalctl's export format; a field whose value is
/// `None`-keyed text goes as text, one given as bytes as a binary field.
fn export(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in fields {
        if value.contains(&b'\n') || std::str::from_utf8(value).is_err() {
            out.extend_from_slice(key.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value);
        } else {
            out.extend_from_slice(format!("{key}=").as_bytes());
            out.extend_from_slice(value);
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

fn entries(bytes: &[u8]) -> Vec<Entry> {
    let mut r = std::io::BufReader::new(bytes);
    let mut out = Vec::new();
    while let Some(fields) = read_entry(&mut r).unwrap() {
        out.push(entry_of(&fields).unwrap());
    }
    out
}

#[test]
fn a_journal_entry_is_its_message_lines_from_its_unit_at_its_time() {
    let mut bytes = export(&[
        ("__CURSOR", b"s=1;i=2"),
        ("__REALTIME_TIMESTAMP", b"1700000000123456"),
        ("_SYSTEMD_UNIT", b"ssh.service"),
        ("SYSLOG_IDENTIFIER", b"sshd"),
        ("MESSAGE", b"Accepted key\nfor pi\n"),
    ]);
    // No unit: the syslog identifier; bytes that are not UTF-8.
    bytes.extend(export(&[
        ("__CURSOR", b"c2"),
        ("SYSLOG_IDENTIFIER", b"kernel"),
        ("MESSAGE", &[b'h', b'i', 0xff]),
    ]));
    // Nothing to name it by; a unit name too long for a source.
    bytes.extend(export(&[("__CURSOR", b"c3"), ("MESSAGE", b"x")]));
    let long = "u".repeat(300);
    bytes.extend(export(&[
        ("__CURSOR", b"c4"),
        ("_SYSTEMD_UNIT", long.as_bytes()),
        ("MESSAGE", b"y"),
    ]));
    let got = entries(&bytes);
    assert_eq!(
        got[0],
        Entry {
            cursor: "s=1;i=2".into(),
            ts_ms: Some(1_700_000_000_123),
            source: "journal:ssh.service".into(),
            lines: vec!["Accepted key".into(), "for pi".into()],
        }
    );
    assert_eq!(
        (got[1].source.as_str(), got[1].ts_ms),
        ("journal:kernel", None)
    );
    assert_eq!(got[1].lines, ["hi\u{fffd}"]);
    assert_eq!(got[2].source, "journal");
    assert_eq!(got[3].source.len(), 128, "a source is at most 128 bytes");
    assert_eq!(got.len(), 4);
    let no_cursor = export(&[("MESSAGE", b"x")]);
    let fields = read_entry(&mut std::io::BufReader::new(&no_cursor[..]))
        .unwrap()
        .unwrap();
    assert!(entry_of(&fields).unwrap_err().contains("__CURSOR"));
}

#[test]
fn a_journal_field_over_the_limit_is_cut_and_says_so_and_the_next_entry_reads() {
    let big = vec![b'z'; journal::MAX_FIELD + 10];
    let mut bytes = export(&[("__CURSOR", b"c1"), ("MESSAGE", &big), ("X", b"\n")]);
    bytes.extend(export(&[("__CURSOR", b"c2"), ("MESSAGE", b"next")]));
    let got = entries(&bytes);
    let text = got[0].lines.concat();
    assert!(
        text.starts_with("zzz") && text.ends_with(" [10 more bytes not sent]"),
        "{}",
        &text[text.len() - 40..]
    );
    assert_eq!(got[1].lines, ["next"]);
    // An entry cut short by the end of the output is not one.
    let cut = &bytes[..bytes.len() - 5];
    let mut r = std::io::BufReader::new(cut);
    assert!(read_entry(&mut r).unwrap().is_some());
    assert!(matches!(read_entry(&mut r), Ok(None)));
}

/// A journalctl that prints the entries after the cursor it is given
/// (every one without), records its arguments, and then follows (waits).
fn fake_journalctl(dir: &Path, entries: &[(&str, &str)]) -> PathBuf {
    let mut script = String::from(
        "#!/bin/sh\necho \"$@\" >> \"$(dirname \"$0\")/args\"\nafter=\"\"\nfor a in \"$@\"; do case \"$a\" in --after-cursor=*) after=\"${a#--after-cursor=}\";; esac; done\nprinting=$([ -z \"$after\" ] && echo yes)\n",
    );
    for (cursor, message) in entries {
        script.push_str(&format!(
            "[ \"$printing\" = yes ] && printf '__CURSOR={cursor}\\n__REALTIME_TIMESTAMP=5000\\n_SYSTEMD_UNIT=app.service\\nMESSAGE={message}\\n\\n'\n[ \"$after\" = \"{cursor}\" ] && printing=yes\n"
        ));
    }
    // Follows while the test runs, and not a moment longer.
    script.push_str(
        "echo 'a warning on stderr' >&2\nwhile kill -0 $PPID 2>/dev/null; do sleep 0.1; done\n",
    );
    let path = dir.join("journalctl");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

fn journal_config(program: &Path) -> LogsConfig {
    LogsConfig {
        journal: true,
        journalctl: program.to_string_lossy().into_owned(),
        journal_units: vec!["app.service".into()],
        journal_priority: "warning".into(),
        ..LogsConfig::default()
    }
}

/// Polls until `n` lines came (journalctl runs on its own), and commits.
fn journal_lines(t: &mut Tailer, n: usize) -> Vec<String> {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let got = texts(&t.poll(1, Instant::now()));
        if got.len() >= n || Instant::now() > deadline {
            t.commit();
            return got;
        }
        t.rewind();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn the_journal_is_read_through_journalctl_and_on_from_its_cursor_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let program = fake_journalctl(dir.path(), &[("c1", "one"), ("c2", "two"), ("c3", "three")]);
    let cfg = journal_config(&program);
    let mut t = Tailer::open(&cfg, dir.path());
    assert!(!t.is_empty());
    let first = t.poll(1, Instant::now());
    t.commit();
    let mut got = texts(&first);
    got.extend(journal_lines(&mut t, 3 - got.len()));
    assert_eq!(got, ["one", "two", "three"]);
    let status = t.status();
    assert_eq!(status[0].path, "journal");
    assert_eq!(status[0].lines, 3);
    drop(t);
    let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
    assert_eq!(
        args.lines().next(),
        Some("--follow --output=export --no-pager --lines=0 --unit=app.service --priority=warning"),
        "first seen: from now on, this unit only, warnings and worse"
    );
    // Started again, it asks for what came after the last entry taken.
    let mut t = Tailer::open(&cfg, dir.path());
    let _ = t.poll(1, Instant::now());
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let args = loop {
        let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
        if args.lines().count() == 2 || Instant::now() > deadline {
            break args;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        args.lines()
            .nth(1)
            .is_some_and(|a| a.contains("--after-cursor=c3")),
        "{args}"
    );
}

#[test]
fn journal_entries_not_taken_are_given_again_and_a_missing_journalctl_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let program = fake_journalctl(dir.path(), &[("c1", "one")]);
    let mut t = Tailer::open(&journal_config(&program), dir.path());
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let got = loop {
        let got = texts(&t.poll(1, Instant::now()));
        if !got.is_empty() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(got, ["one"]);
    t.rewind();
    assert_eq!(texts(&t.poll(1, Instant::now())), ["one"], "given again");
    drop(t);

    let cfg = journal_config(&dir.path().join("no-such-journalctl"));
    let mut t = Tailer::open(&cfg, dir.path());
    assert!(t.poll(1, Instant::now()).is_empty());
    let state = &t.status()[0].state;
    assert!(
        state.contains("cannot run") && state.contains("logs.journalctl"),
        "{state}"
    );

    // One that gives up says why, in its words.
    let failing = dir.path().join("failing-journalctl");
    std::fs::write(
        &failing,
        "#!/bin/sh\necho 'No journal files were opened: Permission denied' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &failing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut t = Tailer::open(&journal_config(&failing), dir.path());
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let state = loop {
        let _ = t.poll(1, Instant::now());
        let state = t.status()[0].state.clone();
        if state.contains("ended") || Instant::now() > deadline {
            break state;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        state.contains("journalctl ended")
            && state.contains("Permission denied")
            && state.contains("started again in 10 s"),
        "{state}"
    );
}

#[test]
fn lines_that_do_not_begin_an_entry_join_the_one_before() {
    use super::lines::{join_entries, lines_ending};
    let text = "  stray, before any entry\n2026-12-06 05:00:00 ERROR boom\nTraceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad\n2026-12-06 05:00:01 INFO next\n";
    let lines = lines_ending(text.as_bytes(), 100, false);
    let begins = b"????-??-?? *";
    let (entries, used) = join_entries(lines.clone(), begins, false, false);
    assert_eq!(
        entries,
        [
            "  stray, before any entry",
            "2026-12-06 05:00:00 ERROR boom\nTraceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad",
        ]
    );
    assert_eq!(
        &text[used..],
        "2026-12-06 05:00:01 INFO next\n",
        "the last entry may go on: read again"
    );
    let (entries, used) = join_entries(lines.clone(), begins, true, false);
    assert_eq!(
        (entries.len(), used),
        (3, text.len()),
        "taken once it is done"
    );
    // An entry is never longer than a line may be: what would pass it
    // begins an entry of its own.
    let long = format!("2026-12-06 x\n{}\n{}\n", "a".repeat(3000), "b".repeat(3000));
    let (entries, _) = join_entries(
        lines_ending(long.as_bytes(), 100, false),
        begins,
        true,
        false,
    );
    assert_eq!(entries.len(), 2);
    assert!(entries.iter().all(|e| e.len() <= MAX_LOG_LINE_LEN));
    // A budget spent inside one entry still moves on.
    let (entries, _) = join_entries(lines_ending(text.as_bytes(), 2, false), begins, false, true);
    assert_eq!(entries, ["  stray, before any entry"]);
    let one = lines_ending(b"2026-12-06 a\n  b\n", 2, false);
    let (entries, _) = join_entries(one, begins, false, true);
    assert_eq!(entries, ["2026-12-06 a\n  b"]);
}

#[test]
fn a_file_with_multi_line_entries_sends_each_whole_once_the_next_begins_or_it_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let mut cfg = config(&[&log], StartAt::End);
    let path = log.to_string_lossy().into_owned();
    cfg.multiline.insert(path.clone(), "????-??-?? ".into());
    assert_eq!(check(&cfg), Ok(()));
    let mut t = Tailer::open(&cfg, dir.path());
    let now = Instant::now();
    append(
        &log,
        "2026-12-06 05:00:00 ERROR boom\nTraceback:\n  File \"x.py\"\nValueError: bad\n2026-12-06 05:00:01 INFO next\n",
    );
    assert_eq!(
        read_at(&mut t, now),
        ["2026-12-06 05:00:00 ERROR boom\nTraceback:\n  File \"x.py\"\nValueError: bad"]
    );
    assert!(
        read_at(&mut t, now + SECOND / 2).is_empty(),
        "the last entry may go on"
    );
    append(&log, "  and goes on\n");
    assert!(read_at(&mut t, now + SECOND).is_empty());
    assert_eq!(
        read_at(&mut t, now + 2 * SECOND + SECOND / 10),
        ["2026-12-06 05:00:01 INFO next\n  and goes on"],
        "a second after the file stopped growing, it is whole"
    );
    assert_eq!(t.status()[0].lines, 2, "entries count as lines");
    assert!(read_at(&mut t, now + 5 * SECOND).is_empty());

    cfg.multiline.insert(path, "\u{7}".into());
    let (key, why) = check(&cfg).unwrap_err();
    assert_eq!(key, "logs.multiline");
    assert!(why.contains("printable"), "{why}");
}
