//! The journal, read through journalctl (a stand-in here).

use super::*;

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
    let big = vec![b'z'; crate::sources::logs::journal::MAX_FIELD + 10];
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
pub(super) fn fake_journalctl(dir: &Path, entries: &[(&str, &str)]) -> PathBuf {
    let of_app: Vec<_> = (entries.iter())
        .map(|(cursor, message)| (*cursor, "app.service", *message))
        .collect();
    fake_journalctl_of(dir, &of_app)
}

/// [`fake_journalctl`] with each entry's unit: (cursor, unit, message).
pub(super) fn fake_journalctl_of(dir: &Path, entries: &[(&str, &str, &str)]) -> PathBuf {
    let mut script = String::from(
        "#!/bin/sh\necho \"$@\" >> \"$(dirname \"$0\")/args\"\nafter=\"\"\nfor a in \"$@\"; do case \"$a\" in --after-cursor=*) after=\"${a#--after-cursor=}\";; esac; done\nprinting=$([ -z \"$after\" ] && echo yes)\n",
    );
    for (cursor, unit, message) in entries {
        script.push_str(&format!(
            "[ \"$printing\" = yes ] && printf '__CURSOR={cursor}\\n__REALTIME_TIMESTAMP=5000\\n_SYSTEMD_UNIT={unit}\\nMESSAGE={message}\\n\\n'\n[ \"$after\" = \"{cursor}\" ] && printing=yes\n"
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

pub(super) fn journal_config(program: &Path) -> LogsConfig {
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
