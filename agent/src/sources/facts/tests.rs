use super::*;

/// Writes `files` (path under the root, contents) into a new root.
fn root(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in files {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn addresses(list: &[(&str, &str)]) -> Addresses {
    list.iter()
        .map(|(n, a)| (n.to_string(), a.to_string()))
        .collect()
}

#[test]
fn a_pi_is_told_by_its_device_tree_os_release_and_interfaces() {
    let dir = root(&[
        (
            "etc/os-release",
            "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Raspbian GNU/Linux 12 (bookworm)\"\nID=raspbian\n",
        ),
        ("proc/sys/kernel/osrelease", "6.6.31+rpt-rpi-v8\n"),
        ("proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\0"),
        ("proc/device-tree/serial-number", "10000000e3a5c3f1\0"),
        (
            "proc/cpuinfo",
            "processor\t: 0\nBogoMIPS\t: 108.00\n\nRevision\t: c03114\nSerial\t\t: 10000000e3a5c3f1\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n",
        ),
        (
            "proc/meminfo",
            "MemTotal:        3884360 kB\nMemFree:  1 kB\n",
        ),
        ("sys/class/net/lo/address", "00:00:00:00:00:00\n"),
        ("sys/class/net/lo/type", "772\n"),
        ("sys/class/net/wlan0/address", "dc:a6:32:01:02:04\n"),
        ("sys/class/net/wlan0/type", "1\n"),
        ("sys/class/net/eth0/address", "dc:a6:32:01:02:03\n"),
        ("sys/class/net/eth0/type", "1\n"),
    ]);
    let facts = gather(
        dir.path(),
        &addresses(&[
            ("wlan0", "fe80::dea6:32ff:fe01:204/64"),
            ("wlan0", "192.168.1.23/24"),
            ("tun0", "10.8.0.6/24"),
        ]),
    );
    assert_eq!(facts.os_release, "Raspbian GNU/Linux 12 (bookworm)");
    assert_eq!(facts.kernel, "6.6.31+rpt-rpi-v8");
    assert_eq!(facts.model, "Raspberry Pi 4 Model B Rev 1.4");
    assert_eq!(facts.serial, "10000000e3a5c3f1");
    assert_eq!(facts.memory_bytes, 3_884_360 * 1024);
    let listed: Vec<_> = (facts.interfaces.iter())
        .map(|i| (i.name.as_str(), i.mac.as_str(), i.addresses.clone()))
        .collect();
    assert_eq!(
        listed,
        [
            ("eth0", "dc:a6:32:01:02:03", vec![]),
            ("tun0", "", vec!["10.8.0.6/24".to_string()]),
            (
                "wlan0",
                "dc:a6:32:01:02:04",
                vec![
                    "192.168.1.23/24".into(),
                    "fe80::dea6:32ff:fe01:204/64".into()
                ]
            ),
        ],
        "name order, loopback left out, an unplugged port with its mac, IPv4 first"
    );
}

#[test]
fn an_older_pi_without_a_device_tree_and_a_pc_use_cpuinfo_and_dmi() {
    let pi = root(&[
        (
            "proc/cpuinfo",
            "Hardware\t: BCM2835\nSerial\t\t: 00000000abcdef12\nModel\t\t: Raspberry Pi Zero W Rev 1.1\n",
        ),
        (
            "usr/lib/os-release",
            "NAME=Raspbian\nVERSION='11 (bullseye)'\n",
        ),
    ]);
    let facts = gather(pi.path(), &[]);
    assert_eq!(facts.model, "Raspberry Pi Zero W Rev 1.1");
    assert_eq!(facts.serial, "00000000abcdef12");
    assert_eq!(
        facts.os_release, "Raspbian 11 (bullseye)",
        "NAME and VERSION without a PRETTY_NAME, from usr/lib"
    );
    let pc = root(&[("sys/class/dmi/id/product_name", "NUC7i3BNH\n")]);
    let facts = gather(pc.path(), &[]);
    assert_eq!(
        (facts.model.as_str(), facts.serial.as_str()),
        ("NUC7i3BNH", "")
    );
    assert_eq!(
        (
            facts.os_release.as_str(),
            facts.kernel.as_str(),
            facts.memory_bytes
        ),
        ("", "", 0),
        "what the system lacks stays empty"
    );
}

#[test]
fn what_the_agent_sends_stays_within_the_protocol_s_bounds() {
    let long = "a\u{e9}".repeat(100);
    let dir = root(&[("proc/device-tree/model", &format!("{long}\n\0"))]);
    let many: Addresses = (0..40)
        .flat_map(|i| (0..20).map(move |a| (format!("veth{i:02}"), format!("10.{i}.0.{a}/32"))))
        .collect();
    let facts = gather(dir.path(), &many);
    assert_eq!(facts.check(), Ok(()));
    assert!(facts.model.len() <= FACTS_MAX_TEXT && facts.model.starts_with("a\u{e9}a"));
    assert_eq!(facts.interfaces.len(), FACTS_MAX_INTERFACES);
    assert_eq!(facts.interfaces[0].addresses.len(), FACTS_MAX_ADDRESSES);
}

#[test]
fn os_release_values_are_unquoted_as_a_shell_would() {
    assert_eq!(
        pretty_name("PRETTY_NAME=\"Ubuntu \\\"Noble\\\" 24.04\"\n").as_deref(),
        Some("Ubuntu \"Noble\" 24.04")
    );
    assert_eq!(
        pretty_name("PRETTY_NAME=Alpine\n").as_deref(),
        Some("Alpine")
    );
    assert_eq!(
        pretty_name("PRETTY_NAME=\"\"\nNAME=x\n").as_deref(),
        Some("x")
    );
    assert_eq!(pretty_name("ID=debian\n"), None);
}

#[test]
fn facts_are_read_again_when_due_and_said_changed_only_when_they_did() {
    let dir = root(&[("proc/sys/kernel/osrelease", "6.1.0\n")]);
    let start = Instant::now();
    let mut facts = Facts::read(dir.path(), start);
    assert_eq!(facts.current().kernel, "6.1.0");
    assert_eq!(facts.due_at(), start + REFRESH);
    assert!(!facts.refresh_if_due(start + REFRESH / 2), "not due");
    std::fs::write(dir.path().join("proc/sys/kernel/osrelease"), "6.6.0\n").unwrap();
    assert!(!facts.refresh_if_due(start + REFRESH / 2), "not due yet");
    assert_eq!(facts.current().kernel, "6.1.0");
    assert!(facts.refresh_if_due(start + REFRESH), "changed");
    assert_eq!(facts.current().kernel, "6.6.0");
    assert!(!facts.refresh_if_due(start + REFRESH * 2), "the same again");
}
