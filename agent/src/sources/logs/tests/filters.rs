//! `keep_lines` and `drop_lines`, and a source's own (`[logs.filters]`).

use super::journal::{fake_journalctl, fake_journalctl_of, journal_config};
use super::*;

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `entry`'s own lists in `cfg`.
fn own(cfg: &mut LogsConfig, entry: &str, keep: &[&str], drop: &[&str]) {
    let lists = SourceFilter {
        keep_lines: strings(keep),
        drop_lines: strings(drop),
    };
    cfg.filters.insert(entry.to_string(), lists);
}

fn filtered(files: &[&Path], keep: &[&str], drop: &[&str]) -> LogsConfig {
    LogsConfig {
        keep_lines: keep.iter().map(|s| s.to_string()).collect(),
        drop_lines: drop.iter().map(|s| s.to_string()).collect(),
        ..config(files, StartAt::End)
    }
}

#[test]
fn a_line_is_sent_when_it_holds_a_kept_text_and_no_dropped_one() {
    let f = filter::Filter::new(
        &["ERROR".into(), "WARN".into()],
        &["GET /health* 200".into()],
    );
    assert!(
        f.sends("2026-12-06 ERROR disk full"),
        "anywhere in the line"
    );
    assert!(f.sends("WARN"), "the whole line");
    assert!(!f.sends("2026-12-06 INFO started"), "holds no kept text");
    assert!(!f.sends("error: lower case"), "case matters");
    assert!(
        !f.sends("WARN GET /health/ready 200 1ms"),
        "* and ? within the text"
    );
    assert!(f.sends("WARN GET /health 500"));
    let none = filter::Filter::new(&[], &[]);
    assert!(none.sends("anything"), "no lists: every line");
    let drop_only = filter::Filter::new(&[], &["level=debug".into()]);
    assert!(drop_only.sends("level=info msg=up"));
    assert!(!drop_only.sends("ts=1 level=debug msg=tick"));
}

#[test]
fn lines_left_out_are_not_sent_nor_read_again_and_status_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let cfg = filtered(&[&log], &[], &["DEBUG"]);
    assert_eq!(check(&cfg), Ok(()));
    let mut t = Tailer::open(&cfg, dir.path());
    append(&log, "INFO up\nDEBUG tick\nDEBUG tock\nERROR down\n");
    assert_eq!(read(&mut t), ["INFO up", "ERROR down"]);
    append(&log, "DEBUG only\n");
    assert!(read(&mut t).is_empty(), "a poll of dropped lines alone");
    let status = &t.status()[0];
    assert_eq!((status.lines, status.dropped), (2, 3));
    assert_eq!(
        status.offset,
        std::fs::metadata(&log).unwrap().len(),
        "read past them"
    );
    // A restart reads on after them: they are not read again.
    drop(t);
    let mut t = Tailer::open(&cfg, dir.path());
    append(&log, "INFO after\n");
    assert_eq!(read(&mut t), ["INFO after"]);
}

#[test]
fn lines_refused_by_the_spool_are_not_counted_as_dropped_twice() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let mut t = Tailer::open(&filtered(&[&log], &[], &["DEBUG"]), dir.path());
    append(&log, "DEBUG a\nINFO b\n");
    assert_eq!(texts(&t.poll(1, Instant::now())), ["INFO b"]);
    t.rewind();
    assert_eq!(read(&mut t), ["INFO b"], "read again");
    let status = &t.status()[0];
    assert_eq!((status.lines, status.dropped), (1, 1));
}

#[test]
fn a_multi_line_entry_is_kept_or_dropped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let mut cfg = filtered(&[&log], &["ERROR"], &[]);
    cfg.multiline
        .insert(log.to_string_lossy().into_owned(), "20??-".into());
    let mut t = Tailer::open(&cfg, dir.path());
    append(
        &log,
        "2026-1 ERROR boom\n  at a\n2026-2 INFO fine\n  at b\n2026-3 INFO next\n",
    );
    assert_eq!(read(&mut t), ["2026-1 ERROR boom\n  at a"]);
    assert_eq!(t.status()[0].dropped, 1);
}

#[test]
fn a_pattern_counts_what_its_files_dropped_and_status_shows_none_without_a_filter() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("app");
    std::fs::create_dir(&logs).unwrap();
    let mut cfg = filtered(&[], &[], &["noise"]);
    cfg.files = vec![format!("{}/*.log", logs.display())];
    let mut t = Tailer::open(&cfg, dir.path());
    append(&logs.join("a.log"), "noise\nsignal\n");
    append(&logs.join("b.log"), "noise\n");
    assert_eq!(read(&mut t), ["signal"]);
    let status = t.status();
    assert_eq!((status[0].lines, status[0].dropped), (1, 2));
    let json = serde_json::to_value(&status[1]).unwrap();
    assert_eq!(json["dropped"], 1);
    let plain = FileStatus {
        dropped: 0,
        ..status[1].clone()
    };
    let json = serde_json::to_value(&plain).unwrap();
    assert!(json.get("dropped").is_none(), "shown once there are some");
}

#[test]
fn the_journal_s_lines_are_filtered_too() {
    let dir = tempfile::tempdir().unwrap();
    let program = fake_journalctl(
        dir.path(),
        &[("c1", "kept one"), ("c2", "dropped"), ("c3", "kept two")],
    );
    let cfg = LogsConfig {
        keep_lines: vec!["kept".into()],
        ..journal_config(&program)
    };
    let mut t = Tailer::open(&cfg, dir.path());
    // journalctl runs on its own: poll until its three entries are in.
    let mut got = Vec::new();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while t.status()[0].lines + t.status()[0].dropped < 3 && Instant::now() < deadline {
        got.extend(read(&mut t));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(got, ["kept one", "kept two"]);
    let status = &t.status()[0];
    assert_eq!((status.lines, status.dropped), (2, 1));
}

#[test]
fn bad_filters_say_what_is_wrong() {
    let mut cfg = LogsConfig {
        drop_lines: vec![String::new()],
        ..LogsConfig::default()
    };
    let (key, why) = check(&cfg).unwrap_err();
    assert_eq!(key, "logs.drop_lines");
    assert!(why.contains("1 to 256 printable bytes"), "{why}");
    cfg.drop_lines = vec!["ok".into()];
    cfg.keep_lines = (0..65).map(|i| i.to_string()).collect();
    let (key, why) = check(&cfg).unwrap_err();
    assert_eq!(key, "logs.keep_lines");
    assert!(why.contains("at most 64"), "{why}");
}

#[test]
fn a_source_s_own_lists_apply_after_the_logs_lists() {
    let f = filter::Filter::new(&[], &["debug".into()]).and(&["ERROR".into()], &["retry".into()]);
    assert!(f.sends("ERROR disk full"));
    assert!(
        !f.sends("ERROR debug dump"),
        "[logs]'s drop_lines still apply"
    );
    assert!(!f.sends("ERROR retry 3"), "and the source's own");
    assert!(!f.sends("INFO up"), "the source's keep_lines");
    let both = filter::Filter::new(&["app".into()], &[]).and(&["ERROR".into()], &[]);
    assert!(both.sends("app ERROR"), "holds a text of each keep_lines");
    assert!(!both.sends("app INFO"));
    assert!(!both.sends("sys ERROR"));
    // A source's own keep_lines of "*" keeps every line (as the hub writes
    // SOURCE=* to undo a file's list).
    let every = filter::Filter::new(&[], &["debug".into()]).and(&["*".into()], &[]);
    assert!(every.sends("INFO up") && every.sends(""));
    assert!(!every.sends("debug dump"), "the other lists still apply");
}

#[test]
fn a_file_a_pattern_and_the_journal_each_take_their_own_lists() {
    let dir = tempfile::tempdir().unwrap();
    let syslog = dir.path().join("syslog");
    let apps = dir.path().join("app");
    std::fs::create_dir(&apps).unwrap();
    append(&syslog, "");
    let program = fake_journalctl(
        dir.path(),
        &[
            ("c1", "sshd accepted"),
            ("c2", "pam_unix session"),
            ("c3", "cron ran"),
        ],
    );
    let pattern = format!("{}/*.log", apps.display());
    let mut cfg = LogsConfig {
        files: vec![syslog.to_string_lossy().into_owned(), pattern.clone()],
        drop_lines: strings(&["DEBUG"]),
        ..journal_config(&program)
    };
    own(&mut cfg, &syslog.to_string_lossy(), &["ERROR", "WARN"], &[]);
    own(&mut cfg, &pattern, &[], &["GET /health"]);
    own(&mut cfg, "journal", &[], &["pam_unix", "cron"]);
    assert_eq!(check(&cfg), Ok(()));
    let mut t = Tailer::open(&cfg, dir.path());
    append(
        &syslog,
        "INFO up
ERROR disk
WARN DEBUG both
WARN hot
",
    );
    append(
        &apps.join("a.log"),
        "GET /health 200
INFO started
DEBUG tick
",
    );
    // journalctl runs on its own: poll until its three entries are in.
    let journal = |t: &Tailer| t.status().into_iter().find(|s| s.path == "journal");
    let mut got = Vec::new();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while journal(&t).is_none_or(|j| j.lines + j.dropped < 3) && Instant::now() < deadline {
        got.extend(read(&mut t));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    got.sort();
    assert_eq!(
        got,
        ["ERROR disk", "INFO started", "WARN hot", "sshd accepted"]
    );
    let counts: Vec<(String, u64, u64)> = (t.status().into_iter())
        .map(|s| (s.path, s.lines, s.dropped))
        .collect();
    let a_log = apps.join("a.log").to_string_lossy().into_owned();
    for (path, lines, dropped) in [
        (syslog.to_string_lossy().into_owned(), 2, 2),
        (a_log, 1, 2),
        ("journal".to_string(), 1, 2),
    ] {
        assert!(
            counts.contains(&(path.clone(), lines, dropped)),
            "{path}: {lines} sent, {dropped} dropped, in {counts:?}"
        );
    }
}

#[test]
fn a_unit_of_the_journal_takes_its_own_lists_after_the_journal_s() {
    let dir = tempfile::tempdir().unwrap();
    let program = fake_journalctl_of(
        dir.path(),
        &[
            ("c1", "ssh.service", "Accepted publickey"),
            ("c2", "ssh.service", "Failed password"),
            ("c3", "ssh.service", "pam_unix session opened"),
            ("c4", "cron.service", "Failed to run job"),
            ("c5", "cron.service", "pam_unix session opened"),
            ("c6", "cron.service", "ran job"),
        ],
    );
    let mut cfg = LogsConfig {
        journal_units: Vec::new(),
        ..journal_config(&program)
    };
    own(&mut cfg, "journal", &[], &["pam_unix"]);
    own(&mut cfg, "journal:ssh.service", &["Failed"], &[]);
    own(&mut cfg, "journal:nginx.service", &["never"], &[]);
    assert_eq!(check(&cfg), Ok(()));
    let mut t = Tailer::open(&cfg, dir.path());
    // journalctl runs on its own: poll until its six entries are in.
    let journal = |t: &Tailer| t.status().into_iter().find(|s| s.path == "journal");
    let mut got = Vec::new();
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while journal(&t).is_none_or(|j| j.lines + j.dropped < 6) && Instant::now() < deadline {
        got.extend(read(&mut t));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    got.sort();
    // ssh keeps only its failures; cron only loses the journal's drop; a
    // unit's lists do not reach another unit's lines.
    assert_eq!(got, ["Failed password", "Failed to run job", "ran job"]);
    let j = journal(&t).unwrap();
    assert_eq!((j.lines, j.dropped), (3, 3));
}

#[test]
fn a_journal_entry_without_a_unit_is_refused() {
    let mut cfg = LogsConfig::default();
    own(&mut cfg, "journal:", &[], &["x"]);
    let (key, why) = check(&cfg).unwrap_err();
    assert_eq!(key, "logs.filters");
    assert!(why.contains("journal:ssh.service"), "{why}");
}

#[test]
fn a_source_s_bad_list_names_the_source() {
    let mut cfg = LogsConfig::default();
    own(&mut cfg, "/var/log/syslog", &[""], &[]);
    let (key, why) = check(&cfg).unwrap_err();
    assert_eq!(key, "logs.filters");
    assert!(
        why.starts_with("\"/var/log/syslog\" keep_lines: ") && why.contains("1 to 256"),
        "{why}"
    );
    let mut cfg = LogsConfig::default();
    let many = SourceFilter {
        drop_lines: (0..65).map(|i| i.to_string()).collect(),
        ..SourceFilter::default()
    };
    cfg.filters.insert("journal".into(), many);
    let (key, why) = check(&cfg).unwrap_err();
    assert_eq!(key, "logs.filters");
    assert!(
        why.starts_with("\"journal\" drop_lines: ") && why.contains("at most 64"),
        "{why}"
    );
}

#[test]
fn filters_read_from_the_config_file() {
    let text = r#"
files = ["/var/log/syslog"]
drop_lines = ["DEBUG"]
[filters."/var/log/syslog"]
keep_lines = ["ERROR"]
[filters.journal]
drop_lines = ["pam_unix"]
[filters."journal:ssh.service"]
keep_lines = ["Failed"]
"#;
    let parse = |text| fleetmq_net::config::parse::<LogsConfig>(Path::new("agent.toml"), text);
    let cfg = parse(text).unwrap();
    assert_eq!(cfg.filters["/var/log/syslog"].keep_lines, ["ERROR"]);
    assert_eq!(cfg.filters["journal"].drop_lines, ["pam_unix"]);
    assert_eq!(cfg.filters["journal:ssh.service"].keep_lines, ["Failed"]);
    let wrong = "[filters.journal]\nkeep = [\"x\"]\n";
    let e = parse(wrong).unwrap_err().to_string();
    assert!(e.contains("unknown field `keep`"), "{e}");
}
