//! How answers read as text: commands, outcomes, devices, and what a
//! device sent, kept from driving the terminal.

use super::*;

#[test]
fn a_log_entry_of_many_lines_goes_on_indented_and_controls_are_escaped() {
    let row = LogRow {
        id: 1,
        device: "pi-1".into(),
        seq: 1,
        ts_ms: 0,
        source: "/var/log/app.log".into(),
        text: "boom\n  at a.c:1\n2026-01-01 fake\u{1b}[2J".into(),
    };
    let shown = fmt_log(&row);
    assert!(
        shown.ends_with("pi-1 /var/log/app.log: boom\n    at a.c:1\n  2026-01-01 fake\\u{1b}[2J"),
        "{shown}"
    );
}

#[test]
fn a_command_reads_as_its_command_line() {
    let exec = Command::Exec {
        program: "ls".into(),
        args: vec!["-l".into(), "/data".into()],
        timeout_ms: 0,
    };
    assert_eq!(fmt_command(&exec), "exec ls -l /data");
    assert_eq!(fmt_command(&Command::Ping), "ping");
    let other = Command::Other {
        name: "reboot".into(),
        args: vec!["now".into()],
    };
    assert_eq!(fmt_command(&other), "reboot now");
}

#[test]
fn a_device_with_a_second_agent_is_named_under_the_table() {
    let device = |id: &str, conflicts| DeviceInfo {
        id: id.into(),
        online: true,
        listening: true,
        conflicts,
        conflict_address: "10.0.0.7".into(),
        ..crate::store::unknown_device()
    };
    let out = fmt_devices(&[device("pi-1", 0), device("pi-2", 4)]);
    assert!(
        out.ends_with("pi-2: 4 messages refused from a second agent with its key, the last from 10.0.0.7: a cloned SD card? Give each device its own key and id\n"),
        "{out}"
    );
    assert!(!out.contains("pi-1: "), "{out}");
}

#[test]
fn a_device_whose_clock_is_a_minute_off_is_named_under_the_table() {
    let device = |id: &str, clock_offset_ms| DeviceInfo {
        id: id.into(),
        clock_offset_ms,
        ..crate::store::unknown_device()
    };
    let out = fmt_devices(&[
        device("pi-1", Some(-59_999)),
        device("pi-2", Some(-(3 * 86_400_000 + 7_200_000))),
        device("pi-3", None),
        device("pi-4", Some(61_000)),
    ]);
    assert!(
        out.contains("\npi-2: its clock is 3 d 2 h behind the hub's, and its samples are stamped by it: is NTP reachable from it?\n"),
        "{out}"
    );
    assert!(
        out.contains("\npi-4: its clock is 1 min 1 s ahead of the hub's"),
        "{out}"
    );
    assert!(!out.contains("pi-1: ") && !out.contains("pi-3: "), "{out}");
}

#[test]
fn what_a_device_sent_cannot_drive_the_terminal() {
    let chat = ChatRow {
        id: 1,
        device: "pi-1".into(),
        ts_ms: 0,
        text: "\x1b]0;owned\x07hi".into(),
    };
    assert!(fmt_chat(&chat).ends_with("<pi-1> \\u{1b}]0;owned\\u{7}hi"));
    let (text, _) = fmt_outcome(&Outcome::Completed(Output {
        exit_code: Some(0),
        stdout: "ok\n\x1b[31mred\n".into(),
        stderr: String::new(),
        truncated: false,
        duration_ms: 1,
    }));
    assert!(text.starts_with("ok\n\\u{1b}[31mred\n"), "{text:?}");
    assert!(!text.contains('\x1b'));
}

#[test]
fn timestamps_are_rfc3339_utc() {
    assert_eq!(fmt_ts(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(fmt_ts(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(fmt_ts(1_795_292_428_999), "2026-11-21T20:20:28.999Z");
}

#[test]
fn the_inventory_says_what_each_device_is_and_where_on_its_network() {
    use fleetmq_protocol::{DeviceFacts, Interface};
    let pi = DeviceInfo {
        id: "pi-1".into(),
        facts: DeviceFacts {
            os_release: "Raspbian GNU/Linux 12 (bookworm)".into(),
            kernel: "6.6.31+rpt-rpi-v8".into(),
            model: "Raspberry Pi 4 Model B Rev 1.4".into(),
            serial: "10000000e3a5c3f1".into(),
            memory_bytes: 3_884_360 * 1024,
            interfaces: vec![
                Interface {
                    name: "eth0".into(),
                    mac: "dc:a6:32:01:02:03".into(),
                    addresses: vec![],
                },
                Interface {
                    name: "wlan0".into(),
                    mac: "dc:a6:32:01:02:04".into(),
                    addresses: vec!["192.168.1.23/24".into(), "fe80::1/64".into()],
                },
            ],
        },
        ..crate::store::unknown_device()
    };
    let old = DeviceInfo {
        id: "pi-old".into(),
        ..crate::store::unknown_device()
    };
    let out = fmt_inventory(&[pi, old]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "DEVICE  MODEL                           OS                                KERNEL             MEMORY   ADDRESSES",
            "pi-1    Raspberry Pi 4 Model B Rev 1.4  Raspbian GNU/Linux 12 (bookworm)  6.6.31+rpt-rpi-v8  3.7 GiB  wlan0 192.168.1.23/24,fe80::1/64",
            "pi-old  -                               -                                 -                  -        -",
        ]
    );
}
