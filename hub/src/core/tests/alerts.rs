//! Alerts on a fake clock: a rule's condition held for its time fires
//! once, repeats on its interval, and resolves once when it ends.

use super::*;
use crate::config::{Alerts, RuleConfig};
use crate::core::alerts::{Notice, Status};

fn fleet(rules: &[(&str, &str, u64)], repeat_ms: u64) -> Fleet {
    let rules = rules
        .iter()
        .map(|(name, when, for_ms)| RuleConfig {
            name: name.to_string(),
            when: when.to_string(),
            for_ms: *for_ms,
            ..RuleConfig::default()
        })
        .collect();
    fleet_of(rules, repeat_ms)
}

fn fleet_of(rules: Vec<RuleConfig>, repeat_ms: u64) -> Fleet {
    let alerts = Alerts {
        repeat_ms,
        rules,
        ..Alerts::default()
    };
    Fleet::with(HubConfig {
        alerts,
        ..HubConfig::default()
    })
}

/// A log rule: `log contains "TEXT"` with its options.
fn log_rule(
    name: &str,
    text: &str,
    source: Option<&str>,
    window_ms: u64,
    at_least: u32,
) -> RuleConfig {
    RuleConfig {
        name: name.into(),
        when: format!("log contains {text:?}"),
        source: source.map(String::from),
        window_ms: Some(window_ms),
        at_least: Some(at_least),
        ..RuleConfig::default()
    }
}

/// A batch holding `lines`: (source, text).
fn logs(seq: u64, lines: &[(&str, &str)]) -> Upstream {
    let mut b = BatchBuilder::new(seq);
    for (source, text) in lines {
        b.push_log(source, T0, text).unwrap();
    }
    Upstream::from_batch(b.finish())
}

/// Ticks every 100 ms from `from` to `to` (both ms after T0), keeping
/// `alive` online with a heartbeat a tick; the notices sent.
fn run(f: &mut Fleet, from: u64, to: u64, alive: &[&str]) -> Vec<Notice> {
    let mut notices = Vec::new();
    let mut t = from;
    while t <= to {
        for d in alive {
            let beat = fleetmq_protocol::Heartbeat { uptime_ms: t };
            f.up(d, d, Upstream::Heartbeat(beat), T0 + t);
        }
        f.core.tick(at(T0 + t));
        for a in f.actions() {
            if let Action::Alert(n) = a {
                notices.push(n);
            }
        }
        t += 100;
    }
    notices
}

/// The one notice sent: its status, rule and device.
fn one(notices: &[Notice]) -> (Status, &str, &str) {
    match notices {
        [n] => (n.status, n.rule.as_str(), n.device.as_str()),
        other => panic!("want one notice, got {other:?}"),
    }
}

fn bye(f: &mut Fleet, device: &str, now: u64) {
    let bye = fleetmq_protocol::Bye {
        reason: "off".into(),
    };
    f.up(device, device, Upstream::Bye(bye), T0 + now);
}

#[test]
fn a_device_away_past_its_time_fires_once_and_resolves_once_when_back() {
    let mut f = fleet(&[("device-offline", "offline", 60_000)], 0);
    f.hello("pi-a", T0);
    f.hello("pi-b", T0);
    assert!(run(&mut f, 100, 2_000, &["pi-a", "pi-b"]).is_empty());
    bye(&mut f, "pi-a", 2_000);
    assert!(
        run(&mut f, 2_100, 61_900, &["pi-b"]).is_empty(),
        "not before it has been away for_ms"
    );
    let fired = run(&mut f, 62_000, 63_000, &["pi-b"]);
    let [n] = &fired[..] else {
        panic!("want one notice, got {fired:?}")
    };
    assert_eq!(
        (n.status, n.rule.as_str(), n.device.as_str()),
        (Status::Firing, "device-offline", "pi-a")
    );
    assert!(n.summary.contains("pi-a offline for 1 min"), "{n:?}");
    assert!(
        run(&mut f, 63_100, 600_000, &["pi-b"]).is_empty(),
        "once: no repeat interval"
    );
    f.operator(5, Request::Alerts, T0 + 600_000);
    match to_operator(&f.actions()).as_slice() {
        [(5, Response::Alerts(list))] => {
            assert_eq!(list.len(), 1);
            assert!(list[0].firing && list[0].device == "pi-a", "{list:?}");
        }
        other => panic!("{other:?}"),
    }
    f.hello("pi-a", T0 + 600_100);
    let back = run(&mut f, 600_100, 602_000, &["pi-a", "pi-b"]);
    let [n] = &back[..] else {
        panic!("want one notice, got {back:?}")
    };
    assert_eq!((n.status, n.device.as_str()), (Status::Resolved, "pi-a"));
    assert!(n.ends_ms > n.starts_ms);
    assert!(run(&mut f, 602_100, 700_000, &["pi-a", "pi-b"]).is_empty());
}

#[test]
fn a_rule_with_where_watches_only_the_devices_whose_facts_match() {
    let rule = RuleConfig {
        name: "zero-offline".into(),
        when: "offline".into(),
        for_ms: 1_000,
        matching: vec!["model~zero".into()],
        ..RuleConfig::default()
    };
    let mut f = fleet_of(vec![rule], 0);
    for (device, model) in [("pi-a", "Raspberry Pi Zero W"), ("pi-b", "Raspberry Pi 4")] {
        f.hello(device, T0);
        let facts = fleetmq_protocol::DeviceFacts {
            model: model.into(),
            ..Default::default()
        };
        f.up(device, device, super::facts::offer(&[], facts), T0);
    }
    assert!(run(&mut f, 100, 1_000, &["pi-a", "pi-b"]).is_empty());
    bye(&mut f, "pi-a", 1_000);
    bye(&mut f, "pi-b", 1_000);
    let fired = run(&mut f, 1_100, 5_000, &[]);
    assert_eq!(one(&fired), (Status::Firing, "zero-offline", "pi-a"));
}

#[test]
fn a_metric_past_its_threshold_fires_after_holding_repeats_and_resolves() {
    let mut f = fleet(&[("hot", "temp_c > 80", 5_000)], 20_000);
    f.hello("pi-a", T0);
    f.up("pi-a", "pi-a", batch(1, 85.0), T0 + 100);
    // A blip shorter than for_ms: pending, then forgotten.
    assert!(run(&mut f, 100, 3_000, &["pi-a"]).is_empty());
    f.operator(6, Request::Alerts, T0 + 3_000);
    match to_operator(&f.actions()).as_slice() {
        [(6, Response::Alerts(list))] => {
            assert!(list.len() == 1 && !list[0].firing, "pending: {list:?}")
        }
        other => panic!("{other:?}"),
    }
    f.up("pi-a", "pi-a", batch(2, 70.0), T0 + 3_000);
    assert!(run(&mut f, 3_100, 10_000, &["pi-a"]).is_empty());
    // Held: fires once, with the value; repeats every repeat_ms.
    f.up("pi-a", "pi-a", batch(3, 90.0), T0 + 10_000);
    let fired = run(&mut f, 10_100, 16_000, &["pi-a"]);
    let [n] = &fired[..] else {
        panic!("want one notice, got {fired:?}")
    };
    assert_eq!((n.status, n.value), (Status::Firing, 90.0));
    assert_eq!(n.series, "temp_c");
    let again = run(&mut f, 16_100, 36_500, &["pi-a"]);
    assert_eq!(again.len(), 1, "repeated once in 20 s: {again:?}");
    assert_eq!(again[0].starts_ms, n.starts_ms, "the same alert");
    f.up("pi-a", "pi-a", batch(4, 60.0), T0 + 36_500);
    let over = run(&mut f, 36_600, 40_000, &["pi-a"]);
    assert_eq!(one(&over).0, Status::Resolved);
}

#[test]
fn a_revoked_device_resolves_its_alerts_and_only_the_first_front_end_checks() {
    let mut f = fleet(&[("off", "offline", 1_000)], 0);
    f.hello("pi-a", T0);
    bye(&mut f, "pi-a", 100);
    let fired = run(&mut f, 200, 3_000, &[]);
    assert_eq!(fired.len(), 1, "{fired:?}");
    let (_, b_key) = f.keys[1].clone();
    let only_b = AllowList::parse(Path::new("a"), &format!("pi-b {b_key}\n")).unwrap();
    f.core.allow_list_changed(only_b, at(T0 + 3_000));
    let over = run(&mut f, 3_100, 4_000, &[]);
    assert_eq!(one(&over).0, Status::Resolved);

    // Front-ends: fe-a checks while it is the first live one by name.
    let mut fe = fleet(&[("off", "offline", 1_000)], 0);
    fe.core.front_end("fe-b");
    fe.core.front_ends_live(vec!["fe-a".into(), "fe-b".into()]);
    fe.hello("pi-a", T0);
    bye(&mut fe, "pi-a", 100);
    assert!(run(&mut fe, 200, 3_000, &[]).is_empty(), "fe-a checks");
    fe.core.front_ends_live(vec!["fe-b".into()]);
    assert_eq!(run(&mut fe, 3_100, 4_000, &[]).len(), 1, "fe-a is gone");
}

#[test]
fn a_matching_log_line_fires_at_once_and_resolves_once_its_window_passes() {
    let rules = vec![
        log_rule("oom", "Out of memory", Some("journal:kernel"), 10_000, 1),
        log_rule("io", "I/O error", None, 10_000, 3),
    ];
    let mut f = fleet_of(rules, 0);
    f.hello("pi-a", T0);
    f.hello_in("pi-b", &["south"], T0);
    // Text that does not match, and matching text from another source.
    f.up(
        "pi-a",
        "pi-a",
        logs(
            1,
            &[
                ("journal:kernel", "out of memory"),
                ("/var/log/app.log", "Out of memory"),
            ],
        ),
        T0 + 100,
    );
    assert!(run(&mut f, 100, 3_000, &["pi-a", "pi-b"]).is_empty());

    let line = "Out of memory: Killed process 812 (python3)";
    f.up(
        "pi-a",
        "pi-a",
        logs(2, &[("journal:kernel", line)]),
        T0 + 3_050,
    );
    let fired = run(&mut f, 3_100, 4_000, &["pi-a", "pi-b"]);
    let [n] = &fired[..] else {
        panic!("want one notice, got {fired:?}")
    };
    assert_eq!(
        (
            n.status,
            n.rule.as_str(),
            n.device.as_str(),
            n.series.as_str(),
            n.value
        ),
        (Status::Firing, "oom", "pi-a", "", 1.0)
    );
    assert!(
        n.summary.contains(line) && n.summary.contains("journal:kernel"),
        "{n:?}"
    );
    assert_eq!(
        n.condition,
        r#"log contains "Out of memory" from journal:kernel, a line within 10 s"#
    );
    // Another line keeps it firing (said once), and counts.
    f.up(
        "pi-a",
        "pi-a",
        logs(3, &[("journal:kernel", line)]),
        T0 + 9_000,
    );
    assert!(run(&mut f, 4_100, 18_900, &["pi-a", "pi-b"]).is_empty());
    f.operator(7, Request::Alerts, T0 + 18_900);
    match to_operator(&f.actions()).as_slice() {
        [(7, Response::Alerts(list))] => {
            assert!(
                list.len() == 1 && list[0].firing && list[0].value == 2.0,
                "{list:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    // No matching line for the window after the last: resolved, once.
    let over = run(&mut f, 19_000, 25_000, &["pi-a", "pi-b"]);
    let (status, rule, _) = one(&over);
    assert_eq!((status, rule), (Status::Resolved, "oom"));

    // at_least = 3: two lines within the window are not enough, three are.
    let io = ("/var/log/app.log", "sda: I/O error, dev sda, sector 42");
    f.up("pi-b", "pi-b", logs(1, &[io, io]), T0 + 25_000);
    assert!(
        run(&mut f, 25_100, 36_000, &["pi-a", "pi-b"]).is_empty(),
        "two, then the window passed"
    );
    f.up("pi-b", "pi-b", logs(2, &[io]), T0 + 36_000);
    assert!(
        run(&mut f, 36_100, 37_000, &["pi-a", "pi-b"]).is_empty(),
        "the first two are too old"
    );
    f.up("pi-b", "pi-b", logs(3, &[io, io]), T0 + 37_000);
    let fired = run(&mut f, 37_100, 38_000, &["pi-a", "pi-b"]);
    assert_eq!(one(&fired), (Status::Firing, "io", "pi-b"));
    // A resent batch (already stored) is not looked at again.
    f.up("pi-b", "pi-b", logs(3, &[io, io]), T0 + 38_000);
    f.operator(8, Request::Alerts, T0 + 38_000);
    match to_operator(&f.actions()).as_slice() {
        [(8, Response::Alerts(list))] => assert_eq!(list[0].value, 3.0, "{list:?}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn log_rules_keep_to_their_groups_see_the_stream_and_forget_forgotten_devices() {
    let mut rule = log_rule("panic", "panic", None, 5_000, 1);
    rule.groups = vec!["north".into()];
    let mut f = fleet_of(vec![rule.clone()], 0);
    f.hello_in("pi-a", &["north"], T0);
    f.hello("pi-b", T0);
    let both = &["pi-a", "pi-b"];
    f.up(
        "pi-b",
        "pi-b",
        logs(1, &[("/app", "kernel panic")]),
        T0 + 100,
    );
    assert!(
        run(&mut f, 100, 2_000, both).is_empty(),
        "pi-b is not in north"
    );
    f.up(
        "pi-a",
        "pi-a",
        logs(1, &[("/app", "kernel panic")]),
        T0 + 2_000,
    );
    assert_eq!(run(&mut f, 2_100, 3_000, both).len(), 1);
    // Revoked (resolved), forgotten, enrolled again and back within the
    // window: what it logged before it was forgotten is not held against it.
    let [(_, a_key), (_, b_key)] = f.keys.clone().try_into().unwrap();
    let list = |text: String| AllowList::parse(Path::new("a"), &text).unwrap();
    f.core
        .allow_list_changed(list(format!("pi-b {b_key}\n")), at(T0 + 3_000));
    let over = run(&mut f, 3_100, 4_000, &["pi-b"]);
    assert_eq!(one(&over).0, Status::Resolved);
    f.operator(
        7,
        Request::Forget {
            device: "pi-a".into(),
        },
        T0 + 4_000,
    );
    let forgot = to_operator(&f.actions());
    assert!(
        matches!(&forgot[..], [(7, Response::Forgotten { .. })]),
        "{forgot:?}"
    );
    let both_keys = format!("pi-a {a_key}\npi-b {b_key}\n");
    f.core.allow_list_changed(list(both_keys), at(T0 + 4_000));
    f.hello_in("pi-a", &["north"], T0 + 4_100);
    assert!(run(&mut f, 4_100, 6_000, both).is_empty());

    // A front-end looks at lines read from the stream too, as any
    // front-end may be the one that checks.
    let mut fe = fleet_of(vec![rule], 0);
    fe.core.front_end("fe-b");
    fe.core.front_ends_live(vec!["fe-b".into()]);
    fe.hello_in("pi-a", &["north"], T0);
    let frame = logs(1, &[("/app", "kernel panic")]).encode().unwrap();
    let (_, body) = fleetmq_protocol::envelope::open(&frame).unwrap();
    fe.core
        .from_stream(&[("pi-a".into(), body.to_vec())], 1, at(T0 + 100));
    let fired = run(&mut fe, 200, 2_000, &["pi-a"]);
    assert_eq!(one(&fired), (Status::Firing, "panic", "pi-a"));
}

/// A device's report of the desired configuration: its version and the
/// keys it refused, with why.
fn applied(version: u64, refused: &[(&str, &str)]) -> Upstream {
    let errors = (refused.iter())
        .map(|(k, why)| (k.to_string(), why.to_string()))
        .collect();
    Upstream::Applied(fleetmq_protocol::Applied(fleetmq_protocol::ConfigReport {
        version,
        errors,
    }))
}

#[test]
fn a_device_that_refuses_keys_of_its_configuration_fires_until_it_applies_one() {
    let mut f = fleet(&[("config-refused", "config refused", 5_000)], 0);
    f.hello("pi-a", T0);
    f.hello("pi-b", T0);
    f.up("pi-b", "pi-b", applied(1, &[]), T0 + 100);
    let why = "1 ms is too short: the least is 100 ms";
    f.up(
        "pi-a",
        "pi-a",
        applied(1, &[("host.interval_ms", why)]),
        T0 + 100,
    );
    assert!(
        run(&mut f, 200, 5_000, &["pi-a", "pi-b"]).is_empty(),
        "not before it has held for_ms"
    );
    let fired = run(&mut f, 5_100, 6_200, &["pi-a", "pi-b"]);
    assert_eq!(one(&fired), (Status::Firing, "config-refused", "pi-a"));
    let n = &fired[0];
    assert_eq!((n.condition.as_str(), n.value), ("config refused", 1.0));
    assert_eq!(
        n.summary,
        format!("pi-a refused 1 key of configuration version 1: host.interval_ms: {why}")
    );
    assert!(
        run(&mut f, 6_300, 20_000, &["pi-a", "pi-b"]).is_empty(),
        "once"
    );
    // The operator takes the key out; the device applies what it is sent.
    f.up("pi-a", "pi-a", applied(2, &[]), T0 + 20_050);
    let resolved = run(&mut f, 20_100, 21_200, &["pi-a", "pi-b"]);
    assert_eq!(one(&resolved), (Status::Resolved, "config-refused", "pi-a"));
}

/// A device whose Hello (and Offer: it says Hello again when its clock
/// steps) puts its start `behind_ms` behind the hub's clock.
fn hello_with_clock(f: &mut Fleet, device: &str, behind_ms: u64, now: u64) {
    let hello = Hello {
        agent_version: "0.1.0".into(),
        arch: "aarch64".into(),
        os: "linux".into(),
        hostname: device.into(),
        groups: Vec::new(),
        heartbeat_ms: 1_000,
        // Started at T0 by the hub's clock.
        started_ms: T0 - behind_ms,
    };
    f.up(device, device, hello.into(), T0 + now);
    let offer = fleetmq_protocol::Offer(fleetmq_protocol::Abilities {
        job_kinds: Vec::new(),
        exec_programs: Vec::new(),
        config_version: 0,
        one_connection: true,
        chat: false,
        job_slots: 0,
        hello_on_clock_step: true,
        facts: fleetmq_protocol::DeviceFacts::default(),
    });
    f.up(device, device, Upstream::Offer(offer), T0 + now);
}

#[test]
fn a_device_whose_clock_is_off_fires_until_ntp_steps_it_back() {
    let rule = RuleConfig {
        name: "clock".into(),
        when: "clock off".into(),
        by_ms: Some(120_000),
        ..RuleConfig::default()
    };
    let mut f = fleet_of(vec![rule], 0);
    // pi-a booted three days in the past (no clock battery); pi-b's
    // clock is 90 s behind, within the rule's two minutes.
    hello_with_clock(&mut f, "pi-a", 3 * 86_400_000, 0);
    hello_with_clock(&mut f, "pi-b", 90_000, 0);
    let fired = run(&mut f, 100, 1_200, &["pi-a", "pi-b"]);
    assert_eq!(one(&fired), (Status::Firing, "clock", "pi-a"));
    let n = &fired[0];
    assert_eq!(n.condition, "clock off by 2 min or more");
    assert_eq!(n.value, -259_200.0);
    assert_eq!(n.summary, "pi-a's clock is 3 d 0 h behind the hub's");
    let devices = f.core.fleet_devices(crate::store::Facts::Read).unwrap();
    let offset = |id: &str| devices.iter().find(|d| d.id == id).unwrap().clock_offset_ms;
    assert_eq!(
        (offset("pi-a"), offset("pi-b")),
        (Some(-259_200_000), Some(-90_000))
    );
    assert!(
        run(&mut f, 1_300, 5_000, &["pi-a", "pi-b"]).is_empty(),
        "once"
    );
    // NTP answers: the clock steps, the agent says Hello again.
    hello_with_clock(&mut f, "pi-a", 0, 5_050);
    let resolved = run(&mut f, 5_100, 6_200, &["pi-a", "pi-b"]);
    assert_eq!(one(&resolved), (Status::Resolved, "clock", "pi-a"));
}
