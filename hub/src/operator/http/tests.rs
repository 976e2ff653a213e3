//! The HTTP side's pure parts: the token file, queries, the Prometheus text.

use super::*;
use fleetmq_protocol::{DeviceInfo, HubStats, LatestValue, Value};

#[test]
fn a_token_file_holds_one_long_word() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("http.token");
    std::fs::write(&path, "  q2Vw8yMZ3pTq9nFv0sBx7KcR\n").unwrap();
    assert_eq!(read_token(&path).unwrap(), "q2Vw8yMZ3pTq9nFv0sBx7KcR");
    for bad in ["", "short\n", "two words are here\n"] {
        std::fs::write(&path, bad).unwrap();
        let e = read_token(&path).unwrap_err().to_string();
        assert!(
            e.contains("http.token") && e.contains("at least 16"),
            "{bad:?}: {e}"
        );
    }
    std::fs::write(&path, "x".repeat(5000)).unwrap();
    assert!(
        read_token(&path)
            .unwrap_err()
            .to_string()
            .contains("one line")
    );
    let e = read_token(&dir.path().join("missing"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");
}

#[test]
fn a_token_file_that_is_missing_is_made_once_for_the_hubs_user_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("http.token");
    let missing = TokenFile::read(&path).unwrap();
    assert_eq!(missing, TokenFile::Missing(path.clone()));
    assert!(
        !path.exists(),
        "reading writes nothing (check-config reads)"
    );
    let (token, made) = missing.clone().token().unwrap();
    assert_eq!(made.as_deref(), Some(path.as_path()));
    assert_eq!(token.len(), 43, "256 bits, URL-safe base64");
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "safe in a URL's fragment: {token}"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        TokenFile::read(&path).unwrap(),
        TokenFile::Held(token.clone())
    );
    // Made meanwhile by another: that one is read, not replaced.
    assert_eq!(missing.token().unwrap(), (token, None));

    let nowhere = dir.path().join("no-such-dir/http.token");
    let e = TokenFile::read(&nowhere)
        .unwrap()
        .token()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no-such-dir") && e.contains("could not be made"),
        "{e}"
    );
    // A file that is there but unreadable as a token is an error, not made
    // again.
    std::fs::write(&path, "short\n").unwrap();
    assert!(TokenFile::read(&path).is_err());
}

#[test]
fn queries_decode_and_bad_escapes_say_so() {
    let q = parse_query("device=pi-a&name=room%2Etemp&x=a+b&flag").unwrap();
    assert_eq!(q["device"], "pi-a");
    assert_eq!(q["name"], "room.temp");
    assert_eq!(q["x"], "a b");
    assert_eq!(q["flag"], "");
    let err = parse_query("device=%zz").unwrap_err();
    assert!(err.contains("%-escape"), "{err}");
    for bad in [
        "device=%+1",
        "device=%-1",
        "device=%4",
        "device=%",
        "device=%é1",
    ] {
        let err = parse_query(bad).unwrap_err();
        assert!(err.contains("%-escape"), "{bad}: {err}");
    }
    assert_eq!(parse_query("device=%2B1").unwrap()["device"], "+1");
}

#[test]
fn a_parameter_a_path_does_not_take_or_one_given_twice_is_refused_by_name() {
    let q = |s: &str| parse_query(s).unwrap();
    let misspelt = unknown_parameter("/api/telemetry", &q("devcie=pi-1&last=5")).unwrap();
    assert!(
        misspelt.contains("\"devcie\"") && misspelt.contains("device, name, tags"),
        "{misspelt}"
    );
    let none = unknown_parameter("/api/stats", &q("x=1")).unwrap();
    assert!(none.contains("takes no parameters"), "{none}");
    for (path, query) in [
        (
            "/api/telemetry",
            "device=a&name=b&tags=k=v&since=1&until=2&last=3&after=4&limit=5",
        ),
        ("/api/series", "device=a&name=b&since=1&until=2&points=3"),
        ("/api/chat", "last=1&after=2&limit=3"),
        (
            "/api/logs",
            "device=a&source=b&grep=c&since=1&until=2&last=3&after=4&limit=5",
        ),
        ("/api/latest", "device=a&name=b,c"),
        ("/api/presence", "device=a&limit=1"),
        ("/api/config", "device=a"),
        ("/api/jobs", "limit=1"),
        ("/api/commands", "limit=1"),
        ("/api/fleet-commands", "limit=1"),
        ("/api/stats", ""),
        // The page and the scrape paths take none, and are not checked.
        ("/metrics", "anything=1"),
        ("/", "anything=1"),
    ] {
        assert_eq!(unknown_parameter(path, &q(query)), None, "{path}?{query}");
    }
    let twice = parse_query("device=a&device=b").unwrap_err();
    assert!(twice.contains("\"device\" is given twice"), "{twice}");
}

/// Counters for an exposition test.
fn stats() -> HubStats {
    HubStats {
        hub_version: "0.1.0".into(),
        uptime_ms: 1000,
        devices_online: 1,
        devices_known: 1,
        batches_stored: 1,
        batches_duplicate: 0,
        samples_stored: 7,
        frames_dropped: 0,
        jobs_dispatched: 0,
        results_received: 0,
        commands_sent: 0,
        commands_timed_out: 0,
        security: "curve".into(),
        devices_allowed: 1,
        handshakes_refused: 0,
        handshakes_failed: 0,
        impersonations: 0,
        rate_limited: 0,
        disconnects: 0,
        connection_conflicts: 0,
        batches_renumbered: 0,
        results_refused: 0,
        batches_throttled: 0,
        batches_rejected: 0,
        storage_problem: String::new(),
        telemetry_cursor: 0,
        chat_cursor: 0,
        telemetry_bytes: 900,
        pruned_batches: 2,
        pruned_records: 20,
        pruned_chat: 0,
        pruned_jobs: 0,
        pruned_commands: 0,
        front_ends: vec![],
        messages_undelivered: 0,
        subscriptions_refused: 0,
        log_lines_stored: 3,
        log_bytes: 7,
        keys_pending: 2,
        features: vec![],
    }
}

#[test]
fn the_exposition_has_help_type_and_escaped_labels() {
    let stats = stats();
    let pi_a = DeviceInfo {
        id: "pi-a".into(),
        online: true,
        listening: true,
        since_ms: 1000,
        last_seen_ms: 1500,
        agent_version: "0.1.0".into(),
        arch: "aarch64".into(),
        os: "linux".into(),
        hostname: "pi".into(),
        batches: 1,
        clock_offset_ms: Some(-90_500),
        facts: fleetmq_protocol::DeviceFacts {
            os_release: "Raspbian GNU/Linux 12 (bookworm)".into(),
            kernel: "6.6.31+rpt-rpi-v8".into(),
            model: "Raspberry Pi 4 Model B \"Rev\" 1.4".into(),
            ..Default::default()
        },
        ..crate::store::unknown_device()
    };
    // An agent whose clock the hub does not measure has no offset line.
    let unmeasured = DeviceInfo {
        id: "pi-old".into(),
        ..crate::store::unknown_device()
    };
    let devices = vec![pi_a, unmeasured];
    let latest = vec![
        LatestValue {
            device: "pi-a".into(),
            name: "odd\"name".into(),
            ts_ms: 99,
            value: Value::Int(3),
        },
        LatestValue {
            device: "pi-a".into(),
            name: "host.disk.used_pct{device=sda,mount=/}".into(),
            ts_ms: 99,
            value: Value::Float(12.5),
        },
    ];
    let alerts = vec![
        fleetmq_protocol::AlertInfo {
            rule: "hot".into(),
            device: "pi-a".into(),
            series: "host.temp_c".into(),
            firing: true,
            since_ms: 1,
            value: 81.0,
            summary: String::new(),
        },
        fleetmq_protocol::AlertInfo {
            rule: "off".into(),
            device: "pi-b".into(),
            series: String::new(),
            firing: false,
            since_ms: 1,
            value: 60.0,
            summary: String::new(),
        },
    ];
    let text = prometheus(&stats, &devices, &latest, &alerts);
    assert!(
        text.contains(
            "fleetmq_alert{alertname=\"hot\",device=\"pi-a\",series=\"host.temp_c\"} 1\n"
        ),
        "{text}"
    );
    assert!(text.contains("fleetmq_alert{alertname=\"off\",device=\"pi-b\"} 0\n"));
    assert!(text.contains("# TYPE fleetmq_devices_online gauge\nfleetmq_devices_online 1\n"));
    assert!(text.contains("fleetmq_samples_stored_total 7\n"));
    assert!(text.contains("fleetmq_log_lines_stored_total 3\n"));
    assert!(text.contains("fleetmq_log_stored_bytes 7\n"));
    assert!(text.contains("fleetmq_device_online{device=\"pi-a\"} 1\n"));
    assert!(text.contains("fleetmq_device_last_seen_seconds{device=\"pi-a\"} 1.5\n"));
    assert!(text.contains("fleetmq_device_clock_offset_seconds{device=\"pi-a\"} -90.5\n"));
    assert!(!text.contains("fleetmq_device_clock_offset_seconds{device=\"pi-old\"}"));
    assert!(
        text.contains(
            "fleetmq_device_info{device=\"pi-a\",agent_version=\"0.1.0\",arch=\"aarch64\",os_release=\"Raspbian GNU/Linux 12 (bookworm)\",kernel=\"6.6.31+rpt-rpi-v8\",model=\"Raspberry Pi 4 Model B \\\"Rev\\\" 1.4\"} 1\n"
        ),
        "{text}"
    );
    assert!(text.contains(
        "fleetmq_device_info{device=\"pi-old\",agent_version=\"\",arch=\"\",os_release=\"\",kernel=\"\",model=\"\"} 1\n"
    ));
    assert!(
        text.contains("fleetmq_metric{device=\"pi-a\",metric=\"odd\\\"name\"} 3 99\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "fleetmq_metric{device=\"pi-a\",metric=\"host.disk.used_pct\",tag_device=\"sda\",mount=\"/\"} 12.5 99\n"
        ),
        "{text}"
    );
}

#[test]
fn front_ends_show_their_version_and_what_they_lack_and_a_single_hub_none() {
    let single = prometheus(&stats(), &[], &[], &[]);
    assert!(!single.contains("front_end"), "{single}");
    let current = fleetmq_protocol::FrontEndStats {
        name: "fe-a".into(),
        version: "0.1.0".into(),
        features: fleetmq_protocol::CLUSTER_FEATURES
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    let older = fleetmq_protocol::FrontEndStats {
        name: "fe-\"b".into(),
        ..Default::default()
    };
    let text = prometheus(
        &HubStats {
            front_ends: vec![current, older],
            ..stats()
        },
        &[],
        &[],
        &[],
    );
    for line in [
        "# TYPE fleetmq_front_end_info gauge\n",
        "fleetmq_front_end_info{front_end=\"fe-a\",version=\"0.1.0\"} 1\n",
        "fleetmq_front_end_info{front_end=\"fe-\\\"b\",version=\"\"} 1\n",
        "# TYPE fleetmq_front_end_lacking_features gauge\n",
        "fleetmq_front_end_lacking_features{front_end=\"fe-a\"} 0\n",
        "fleetmq_front_end_lacking_features{front_end=\"fe-\\\"b\"} 3\n",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
}

#[test]
fn tags_that_clash_with_the_hubs_labels_are_renamed_until_unique() {
    let labels = |tags: &[(&'static str, &'static str)]| -> Vec<String> {
        tag_labels(tags).into_iter().map(|(k, _)| k).collect()
    };
    assert_eq!(labels(&[("mount", "/")]), ["mount"]);
    assert_eq!(
        labels(&[("__name__", "x"), ("device", "sda"), ("metric", "m")]),
        ["tag___name__", "tag_device", "tag_metric"]
    );
    assert_eq!(
        labels(&[
            ("device", "a"),
            ("tag_device", "b"),
            ("tag_tag_device", "c")
        ]),
        ["tag_tag_tag_device", "tag_device", "tag_tag_device"]
    );
}

#[test]
fn values_and_times_are_written_as_the_text_format_reads_them() {
    assert_eq!(sample_value(f64::INFINITY), "+Inf");
    assert_eq!(sample_value(f64::NEG_INFINITY), "-Inf");
    assert_eq!(sample_value(f64::NAN), "NaN");
    assert_eq!(sample_value(-2.5), "-2.5");
    let latest = |ts_ms| {
        vec![LatestValue {
            device: "pi-a".into(),
            name: "x".into(),
            ts_ms,
            value: Value::Float(f64::INFINITY),
        }]
    };
    let stats = stats();
    let text = prometheus(&stats, &[], &latest(5), &[]);
    assert!(
        text.contains("fleetmq_metric{device=\"pi-a\",metric=\"x\"} +Inf 5\n"),
        "{text}"
    );
    // A time no scrape could carry is left out, not written.
    let text = prometheus(&stats, &[], &latest((1 << 63) + 5), &[]);
    assert!(
        text.contains("fleetmq_metric{device=\"pi-a\",metric=\"x\"} +Inf\n"),
        "{text}"
    );
}
