use super::*;

#[test]
fn times_are_ago_a_timestamp_or_epoch_milliseconds() {
    let now = 1_800_000_000_000;
    assert_eq!(parse_time("--since", "10m", now).unwrap(), now - 600_000);
    assert_eq!(
        parse_time("--since", "2h 30m", now).unwrap(),
        now - 9_000_000
    );
    assert_eq!(
        parse_time("--since", "7d", now).unwrap(),
        now - 7 * 86_400_000
    );
    assert_eq!(
        parse_time("--until", "2026-12-02T10:00:00Z", now).unwrap(),
        1_796_205_600_000
    );
    assert_eq!(
        parse_time("--until", "2026-12-02 10:00:00", now).unwrap(),
        1_796_205_600_000
    );
    assert_eq!(parse_time("--since", "1234", now).unwrap(), 1234);
    // The same instant with an offset, east and west of UTC.
    for t in [
        "2026-12-02T11:00:00+01:00",
        "2026-12-02T04:30:00-05:30",
        "2026-12-02T10:00:00+00:00",
        "2026-12-02 12:00:00+02:00",
    ] {
        assert_eq!(
            parse_time("--until", t, now).unwrap(),
            1_796_205_600_000,
            "{t}"
        );
    }
    for bad in [
        "2026-12-02T10:00:00+1:00",
        "2026-12-02T10:00:00+01",
        "x+01:00",
        "é+01:00",
    ] {
        assert!(parse_time("--since", bad, now).is_err(), "{bad}");
    }
    let err = parse_time("--since", "yesterday-ish", now)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--since \"yesterday-ish\"") && err.contains("10m"),
        "{err}"
    );
}

/// A command that finds no hub on a machine with the packaged hub is
/// pointed at its config, which only the service's user may use.
#[test]
fn a_lost_command_on_a_packaged_hubs_machine_is_pointed_at_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let packaged = dir.path().join("hub.toml");
    assert_eq!(packaged_hint(false, &packaged), "", "no packaged hub here");
    std::fs::write(&packaged, "").unwrap();
    let hint = packaged_hint(false, &packaged);
    assert!(
        hint.contains("sudo -u fleetmq")
            && hint.contains(&format!("--config {}", packaged.display())),
        "{hint}"
    );
    assert_eq!(packaged_hint(true, &packaged), "", "a --config was given");
}
