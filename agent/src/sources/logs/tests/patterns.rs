//! Patterns of files and multi-line entries.

use super::*;

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
fn a_matched_file_that_cannot_be_a_source_is_counted_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("a.log"), "");
    let long = format!("{}.log", "x".repeat(130));
    append(&dir.path().join(&long), "");
    let mut t = Tailer::open(
        &pattern_config(dir.path(), "*.log", StartAt::End),
        dir.path(),
    );
    assert!(read(&mut t).is_empty());
    assert_eq!(
        t.status()[0].state,
        "1 followed; 1 more matches and is not (see the agent's log)"
    );
    assert_eq!(t.status().len(), 2, "the pattern and a.log");
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

#[test]
fn a_link_to_a_file_is_matched_as_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("app");
    std::fs::create_dir(&logs).unwrap();
    let outside = dir.path().join("elsewhere.txt");
    append(&outside, "");
    std::os::unix::fs::symlink(&outside, logs.join("linked.log")).unwrap();
    std::os::unix::fs::symlink(dir.path(), logs.join("dir-link.log")).unwrap();
    let mut t = Tailer::open(&pattern_config(&logs, "*.log", StartAt::End), dir.path());
    append(&outside, "through the link\n");
    assert_eq!(read(&mut t), ["through the link"]);
    assert_eq!(
        t.status()[0].state,
        "1 file matches",
        "not the link to a directory"
    );
}
