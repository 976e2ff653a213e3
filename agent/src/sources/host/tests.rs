use super::*;

/// A fake clock: `at(s)` is `s` seconds after the first reading.
fn at(s: u64) -> Instant {
    thread_local!(static T0: Instant = Instant::now());
    T0.with(|t0| *t0 + Duration::from_secs(s))
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn value(samples: &Samples, name: &str) -> Option<Value> {
    samples.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

/// A Raspberry Pi 3 as its /proc and /sys look, cut down.
fn pi(root: &Path) {
    write(
        root,
        "proc/stat",
        "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3 4\n",
    );
    write(root, "proc/loadavg", "0.52 0.38 0.30 1/123 4567\n");
    write(
        root,
        "proc/meminfo",
        "MemTotal:         948304 kB\nMemFree:  100 kB\nMemAvailable:     474152 kB\nSwapTotal: 102396 kB\nSwapFree: 102396 kB\n",
    );
    write(
        root,
        "proc/mounts",
        "/dev/root / ext4 rw 0 0\nproc /proc proc rw 0 0\n/dev/root / ext4 rw 0 0\n",
    );
    write(
        root,
        "proc/net/dev",
        "Inter-|   Receive  |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n    lo: 999 1 0 0 0 0 0 0 999 1 0 0 0 0 0 0\n  eth0: 123456 10 0 0 0 0 0 0 654321 20 0 0 0 0 0 0\n",
    );
    write(root, "proc/uptime", "3600.25 7000.00\n");
    write(root, "sys/class/thermal/thermal_zone0/temp", "48312\n");
    write(
        root,
        "sys/class/thermal/thermal_zone0/type",
        "cpu-thermal\n",
    );
    write(root, PI_THROTTLED, "0x50005\n");
}

#[test]
fn a_pi_reports_every_group() {
    let dir = tempfile::tempdir().unwrap();
    pi(dir.path());
    let mut host = Host::new(dir.path(), HostConfig::default());
    let (first, skipped) = host.collect(at(0));
    assert!(skipped.is_empty(), "{skipped:?}");
    // CPU use needs two readings.
    assert_eq!(value(&first, "host.cpu.used_pct"), None);
    assert_eq!(value(&first, "host.load5"), Some(Value::Float(0.38)));
    assert_eq!(
        value(&first, "host.mem.total_bytes"),
        Some(Value::Int(948_304 * 1024))
    );
    assert_eq!(value(&first, "host.mem.used_pct"), Some(Value::Float(50.0)));
    assert_eq!(value(&first, "host.swap.used_bytes"), Some(Value::Int(0)));
    assert!(value(&first, "host.disk.total_bytes{mount=/}").is_some());
    assert_eq!(
        first
            .iter()
            .filter(|(n, _)| n == "host.disk.used_pct{mount=/}")
            .count(),
        1,
        "a mount listed twice is read once"
    );
    assert_eq!(
        value(&first, "host.net.rx_bytes{iface=eth0}"),
        Some(Value::Int(123_456))
    );
    assert_eq!(
        value(&first, "host.net.tx_bytes{iface=eth0}"),
        Some(Value::Int(654_321))
    );
    assert_eq!(value(&first, "host.net.rx_bytes{iface=lo}"), None);
    assert_eq!(value(&first, "host.uptime_s"), Some(Value::Float(3600.25)));
    assert_eq!(
        value(&first, "host.temp_c{zone=cpu-thermal}"),
        Some(Value::Float(48.312))
    );
    // 0x50005: under-voltage and throttled now, both also since boot.
    assert_eq!(
        value(&first, "host.pi.throttled"),
        Some(Value::Int(0x50005))
    );
    assert_eq!(value(&first, "host.pi.under_voltage"), Some(Value::Int(1)));
    assert_eq!(value(&first, "host.pi.freq_capped"), Some(Value::Int(0)));
    assert_eq!(value(&first, "host.pi.throttled_now"), Some(Value::Int(1)));

    // 100 more jiffies, 25 of them busy.
    write(dir.path(), "proc/stat", "cpu  115 0 110 875 0 0 0 0 0 0\n");
    let (second, _) = host.collect(at(1));
    assert_eq!(
        value(&second, "host.cpu.used_pct"),
        Some(Value::Float(25.0))
    );
}

#[test]
fn a_proc_file_kept_open_is_read_afresh() {
    // The real /proc: uptime moves on, and the same open file shows it.
    let host = Host::new("/", HostConfig::default());
    let uptime = || -> f64 {
        let text = host.read("proc/uptime").unwrap();
        text.split_whitespace().next().unwrap().parse().unwrap()
    };
    let first = uptime();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while uptime() <= first {
        assert!(
            std::time::Instant::now() < deadline,
            "uptime stayed at {first}"
        );
    }
    assert_eq!(host.open.borrow().len(), 1, "one file, opened once");
}

#[test]
fn thermal_zones_are_found_once_and_then_only_read() {
    let dir = tempfile::tempdir().unwrap();
    pi(dir.path());
    let mut host = Host::new(dir.path(), HostConfig::default());
    host.collect(at(0));
    // Gone now, but the zone's type was learnt: no scan names it again.
    std::fs::remove_file(dir.path().join("sys/class/thermal/thermal_zone0/type")).unwrap();
    write(
        dir.path(),
        "sys/class/thermal/thermal_zone0/temp",
        "51000\n",
    );
    let (second, _) = host.collect(at(1));
    assert_eq!(
        value(&second, "host.temp_c{zone=cpu-thermal}"),
        Some(Value::Float(51.0))
    );
    // No zone read sends the next reading looking for zones again.
    write(dir.path(), "sys/class/thermal/thermal_zone0/temp", "gone\n");
    let (third, newly) = host.collect(at(2));
    assert!(value(&third, "host.temp_c{zone=cpu-thermal}").is_none());
    assert!(
        newly.iter().any(|s| s.starts_with("temperature: ")),
        "{newly:?}"
    );
    assert!(host.zones.is_empty());
    // A minute later the zones are looked for again, and found.
    pi(dir.path());
    write(
        dir.path(),
        "sys/class/thermal/thermal_zone0/temp",
        "52000\n",
    );
    let (soon, _) = host.collect(at(61));
    assert!(value(&soon, "host.temp_c{zone=cpu-thermal}").is_none());
    let (later, _) = host.collect(at(62));
    assert_eq!(
        value(&later, "host.temp_c{zone=cpu-thermal}"),
        Some(Value::Float(52.0))
    );
}

#[test]
fn missing_files_skip_their_group_and_are_said_once() {
    let dir = tempfile::tempdir().unwrap();
    pi(dir.path());
    std::fs::remove_dir_all(dir.path().join("sys")).unwrap();
    let mut host = Host::new(dir.path(), HostConfig::default());
    let (samples, skipped) = host.collect(at(0));
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].starts_with("temperature: ") && skipped[0].contains("thermal"));
    assert!(skipped[1].starts_with("throttled: ") && skipped[1].contains("Raspberry Pi"));
    assert!(value(&samples, "host.load1").is_some(), "the others go on");
    let (_, again) = host.collect(at(1));
    assert!(again.is_empty(), "said once: {again:?}");
    assert_eq!(host.skipped().count(), 2);
    // Not looked for within the minute; the firmware's file appears.
    write(dir.path(), PI_THROTTLED, "0x0\n");
    let (soon, _) = host.collect(at(59));
    assert!(value(&soon, "host.pi.throttled").is_none());
    let (later, _) = host.collect(at(60));
    assert_eq!(value(&later, "host.pi.throttled"), Some(Value::Int(0)));
    assert_eq!(
        host.skipped().count(),
        1,
        "only temperature is still missing"
    );
}

#[test]
fn the_mount_table_is_read_once_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    pi(dir.path());
    let mut host = Host::new(dir.path(), HostConfig::default());
    let (first, _) = host.collect(at(0));
    assert!(value(&first, "host.disk.total_bytes{mount=/}").is_some());
    // /proc (a real directory here) is mounted from a block device now.
    let table = "/dev/root / ext4 rw 0 0\n/dev/sda1 /proc ext4 rw 0 0\n";
    write(dir.path(), "proc/mounts", table);
    let (soon, _) = host.collect(at(59));
    assert!(value(&soon, "host.disk.total_bytes{mount=/}").is_some());
    assert!(value(&soon, "host.disk.total_bytes{mount=/proc}").is_none());
    let (later, _) = host.collect(at(60));
    assert!(value(&later, "host.disk.total_bytes{mount=/proc}").is_some());
    // A new selection reads it at once.
    host.reconfigure(HostConfig {
        mounts: vec!["/proc".into()],
        ..HostConfig::default()
    });
    let (chosen, _) = host.collect(at(61));
    assert!(value(&chosen, "host.disk.total_bytes{mount=/}").is_none());
    assert!(value(&chosen, "host.disk.total_bytes{mount=/proc}").is_some());
}

#[test]
fn each_block_device_is_read_once_and_images_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    pi(dir.path());
    // The root disk bind-mounted at /proc (a real directory here), a snap
    // on a loop device, and a second disk at /sys.
    let table = "/dev/root / ext4 rw 0 0\n/dev/root /proc ext4 rw 0 0\n\
                 /dev/loop0 /proc squashfs ro 0 0\n/dev/sda1 /sys ext4 rw 0 0\n";
    write(dir.path(), "proc/mounts", table);
    let mut host = Host::new(dir.path(), HostConfig::default());
    let (samples, _) = host.collect(at(0));
    let mounts: Vec<&str> = samples
        .iter()
        .filter_map(|(n, _)| n.strip_prefix("host.disk.total_bytes{mount="))
        .collect();
    assert_eq!(mounts, ["/}", "/sys}"]);
    // Named, a mount is read whatever is mounted there.
    host.reconfigure(HostConfig {
        mounts: vec!["/".into(), "/proc".into()],
        ..HostConfig::default()
    });
    let (chosen, _) = host.collect(at(1));
    assert!(value(&chosen, "host.disk.total_bytes{mount=/proc}").is_some());
    assert!(value(&chosen, "host.disk.total_bytes{mount=/}").is_some());
}

#[test]
fn selection_and_filters_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    pi(dir.path());
    let cfg = HostConfig {
        collect: vec!["network".into(), "disk".into()],
        interfaces: vec!["lo".into()],
        mounts: vec!["/nowhere".into()],
        ..HostConfig::default()
    };
    let mut host = Host::new(dir.path(), cfg);
    let (samples, skipped) = host.collect(at(0));
    let names: Vec<&str> = samples.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["host.net.rx_bytes{iface=lo}", "host.net.tx_bytes{iface=lo}"]
    );
    assert_eq!(
        skipped,
        [r#"disk: none of the mounts ["/nowhere"] is mounted"#]
    );
    let bad = HostConfig {
        collect: vec!["cpu".into(), "gpu".into()],
        ..HostConfig::default()
    };
    assert_eq!(bad.unknown_group(), Some("gpu"));
}

#[test]
fn mount_points_are_unescaped() {
    assert_eq!(unescape_mount(r"/media/my\040disk"), "/media/my disk");
    assert_eq!(unescape_mount(r"/a\\b"), r"/a\\b");
    assert_eq!(unescape_mount("/plain"), "/plain");
}
