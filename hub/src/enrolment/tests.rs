//! The allow list file: parsing, pinned groups, edits and the watch.

use super::*;

fn key() -> String {
    fleetmq_net::keys::generate().unwrap().public
}

#[test]
fn the_list_parses_and_bad_lines_name_their_number() {
    let (a, b) = (key(), key());
    let text = format!("# enrolled\n\npi-a {a}\n  pi-b   {b}  \npi-a {a}\n");
    let list = AllowList::parse(Path::new("allow"), &text).unwrap();
    assert_eq!(list.device(&a), Some("pi-a"));
    assert_eq!(list.device(&b), Some("pi-b"));
    assert_eq!(list.len(), 2);

    let cases = [
        (
            "pi-a\n".to_string(),
            "line 1",
            "DEVICE_ID PUBLIC_KEY [groups",
        ),
        (format!("pi-a {a} north\n"), "line 1", "is not groups="),
        (format!("pi-a {a} groups=a/b\n"), "line 1", "a/b"),
        (
            format!("pi-a {a} groups=north\npi-a {b} groups=south\n"),
            "line 2",
            "pinned to groups=north on line 1",
        ),
        (
            format!("#\npi a {a} b\n"),
            "line 2",
            "DEVICE_ID PUBLIC_KEY [groups",
        ),
        (
            "pi-a short\n".to_string(),
            "line 1",
            "characters where a key has 40",
        ),
        (format!("bad/id {a}\n"), "line 1", "bad/id"),
        (
            format!("pi-a {a}\npi-b {a}\n"),
            "line 2",
            "already pi-a's (line 1)",
        ),
    ];
    for (text, line, why) in cases {
        let err = AllowList::parse(Path::new("/etc/allow"), &text)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/allow") && err.contains(line) && err.contains(why),
            "{text:?}: {err}"
        );
    }
}

#[test]
fn edits_add_revoke_and_keep_comments_and_other_devices() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowed_devices");
    let (a, b, c) = (key(), key(), key());
    let added = |others: &[&String]| Edit::Added {
        others: others.iter().map(|k| k.to_string()).collect(),
    };
    assert_eq!(allow(&path, "pi-a", &a, None).unwrap(), added(&[]));
    assert_eq!(allow(&path, "pi-a", &a, None).unwrap(), Edit::AlreadyThere);
    assert_eq!(
        allow(&path, "pi-a", &c, None).unwrap(),
        added(&[&a]),
        "a second key says which the device had"
    );
    assert_eq!(allow(&path, "pi-b", &b, None).unwrap(), added(&[]));
    let err = allow(&path, "pi-b", &a, None).unwrap_err().to_string();
    assert!(err.contains("enrolled as pi-a"), "{err}");
    let before = AllowList::load(&path).unwrap();

    assert_eq!(
        revoke(&path, "pi-a", Some(&b)).unwrap(),
        Edit::NotThere,
        "not pi-a's"
    );
    assert_eq!(revoke(&path, "pi-a", Some(&c)).unwrap(), Edit::Removed(1));
    assert_eq!(
        AllowList::load(&path).unwrap().keys_of("pi-a"),
        vec![a.as_str()]
    );
    assert_eq!(allow(&path, "pi-a", &c, None).unwrap(), added(&[&a]));
    assert_eq!(revoke(&path, "pi-a", None).unwrap(), Edit::Removed(2));
    assert_eq!(revoke(&path, "pi-a", None).unwrap(), Edit::NotThere);
    let after = AllowList::load(&path).unwrap();
    assert_eq!(after.device(&b), Some("pi-b"));
    assert!(!after.has_device("pi-a"));
    let mut want = vec![("pi-a".to_string(), a), ("pi-a".to_string(), c)];
    want.sort();
    assert_eq!(before.revoked_in(&after), want);
    assert!(fs::read_to_string(&path).unwrap().starts_with(HEADER));
}

#[test]
fn a_groups_word_pins_a_device_on_every_line_and_edits_keep_it() {
    let (a, b, c) = (key(), key(), key());
    let text = format!("pi-a {a} groups=north,barns,north\npi-a {b}\npi-b {c}\n");
    let list = AllowList::parse(Path::new("allow"), &text).unwrap();
    let pinned = ["barns".to_string(), "north".to_string()];
    assert_eq!(list.groups_of("pi-a"), Some(&pinned[..]));
    assert_eq!(list.groups_of("pi-b"), None, "names its own");
    let again = AllowList::parse(Path::new("allow"), &list.render()).unwrap();
    assert_eq!(again, list, "rendered with the word on each line");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowed_devices");
    let north = vec!["north".to_string()];
    let south = vec!["south".to_string()];
    assert!(matches!(
        allow(&path, "pi-a", &a, Some(&north)).unwrap(),
        Edit::Added { .. }
    ));
    // A second key without --groups takes the device's groups.
    allow(&path, "pi-a", &b, None).unwrap();
    let list = AllowList::load(&path).unwrap();
    assert_eq!(list.groups_of("pi-a"), Some(&north[..]));
    assert_eq!(
        allow(&path, "pi-a", &a, Some(&north)).unwrap(),
        Edit::AlreadyThere
    );
    // Re-pinning rewrites every line of the device, and only its.
    allow(&path, "pi-b", &c, None).unwrap();
    assert_eq!(
        allow(&path, "pi-a", &b, Some(&south)).unwrap(),
        Edit::Regrouped
    );
    let after = AllowList::load(&path).unwrap();
    assert_eq!(after.groups_of("pi-a"), Some(&south[..]));
    assert_eq!(after.groups_of("pi-b"), None);
    assert_eq!(after.keys_of("pi-a").len(), 2);
    assert_eq!(list.regrouped_in(&after), vec!["pi-a".to_string()]);
    // Pinned to no group at all.
    allow(&path, "pi-b", &c, Some(&[])).unwrap();
    assert_eq!(
        AllowList::load(&path).unwrap().groups_of("pi-b"),
        Some(&[][..])
    );
}

#[test]
fn an_edit_refuses_a_list_that_does_not_parse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowed_devices");
    fs::write(&path, "pi-a nonsense\n").unwrap();
    let err = allow(&path, "pi-b", &key(), None).unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
    assert_eq!(fs::read_to_string(&path).unwrap(), "pi-a nonsense\n");
}

#[test]
fn the_watch_sees_a_replaced_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowed_devices");
    let mut w = Watch::new(&path);
    assert!(!w.changed());
    AllowList::load(&path).unwrap();
    assert!(w.changed());
    assert!(!w.changed());
    allow(&path, "pi-a", &key(), None).unwrap();
    assert!(w.changed(), "a rename gives a new inode");
}

#[test]
fn revoke_leaves_a_line_that_names_the_key_until_it_is_enrolled_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowed_devices");
    let (a, b) = (key(), key());
    allow(&path, "pi-a", &a, Some(&["north".to_string()])).unwrap();
    allow(&path, "pi-b", &b, None).unwrap();
    assert_eq!(revoke(&path, "pi-a", None).unwrap(), Edit::Removed(1));
    let text = fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(REVOKED_MARK))
        .unwrap_or_else(|| panic!("no revoked line: {text}"));
    assert!(
        line.starts_with(&format!("# revoked pi-a {a} on 20")) && line.ends_with('Z'),
        "{line}"
    );
    let list = AllowList::load(&path).unwrap();
    assert_eq!(list.revoked_device(&a), Some("pi-a"));
    assert_eq!(list.device(&a), None, "revoked is not enrolled");
    assert!(!list.has_device("pi-a"));
    assert_eq!(list.revoked_device(&b), None);
    let again = AllowList::parse(Path::new("allow"), &list.render()).unwrap();
    assert_eq!(again, list, "rendered with its revoked line");

    // Enrolled again, the key is no longer a revoked one.
    allow(&path, "pi-a", &a, None).unwrap();
    let list = AllowList::load(&path).unwrap();
    assert_eq!(list.device(&a), Some("pi-a"));
    assert_eq!(list.revoked_device(&a), None);
    let text = fs::read_to_string(&path).unwrap();
    assert!(!text.lines().any(|l| l.starts_with(REVOKED_MARK)), "{text}");

    // Comments that only look like one are comments.
    let text = format!("# revoked: pi-x, last spring\n# revoked pi-y not-a-key\npi-b {b}\n");
    let list = AllowList::parse(Path::new("allow"), &text).unwrap();
    let plain = AllowList::parse(Path::new("allow"), &format!("pi-b {b}\n")).unwrap();
    assert_eq!(list, plain, "no revoked key read from them");
}

#[test]
fn the_cluster_writing_the_file_keeps_revoked_lines_and_adds_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowed_devices");
    let (a, b, c) = (key(), key(), key());
    allow(&path, "pi-a", &a, None).unwrap();
    allow(&path, "pi-b", &b, None).unwrap();
    allow(&path, "pi-c", &c, None).unwrap();
    revoke(&path, "pi-c", None).unwrap();
    let seen = AllowList::load(&path).unwrap();
    // The cluster's list: pi-a revoked through another front-end.
    let (list, _) = AllowList::from_pairs([("pi-b", b.as_str())]);
    assert_eq!(write_unless_changed(&path, &list, &seen).unwrap(), None);
    let after = AllowList::load(&path).unwrap();
    assert!(after.same_enrolment(&list));
    assert_eq!(after.revoked_device(&a), Some("pi-a"), "gone from the list");
    assert_eq!(
        after.revoked_device(&c),
        Some("pi-c"),
        "the file's line kept"
    );

    // An edit that landed first is not overwritten.
    allow(&path, "pi-d", &key(), None).unwrap();
    let edited = write_unless_changed(&path, &list, &after).unwrap();
    assert!(edited.is_some_and(|e| e.has_device("pi-d")));
    assert!(AllowList::load(&path).unwrap().has_device("pi-d"));
}
