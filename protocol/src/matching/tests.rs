use super::*;
use crate::Interface;

/// A Pi Zero on a site's Wi-Fi, as its agent reports it.
fn zero() -> DeviceInfo {
    DeviceInfo {
        id: "pi-zero".into(),
        agent_version: "0.1.0".into(),
        arch: "arm".into(),
        facts: DeviceFacts {
            os_release: "Raspbian GNU/Linux 11 (bullseye)".into(),
            kernel: "6.1.21+".into(),
            model: "Raspberry Pi Zero W Rev 1.1".into(),
            serial: "00000000a1b2c3d4".into(),
            memory_bytes: 436 << 20,
            interfaces: vec![Interface {
                name: "wlan0".into(),
                mac: "b8:27:eb:01:02:03".into(),
                addresses: vec!["192.168.4.17/24".into(), "fe80::1/64".into()],
            }],
        },
        ..DeviceInfo::default()
    }
}

/// A device whose agent predates facts: its version and arch only.
fn older() -> DeviceInfo {
    DeviceInfo {
        id: "pi-old".into(),
        agent_version: "0.0.9".into(),
        arch: "aarch64".into(),
        ..DeviceInfo::default()
    }
}

fn matches(filter: &str, device: &DeviceInfo) -> bool {
    Matcher::parse(filter)
        .unwrap_or_else(|e| panic!("{filter}: {e}"))
        .matches(device)
}

#[test]
fn each_operator_on_a_one_valued_field() {
    let d = zero();
    assert!(matches("model~zero", &d), "~ is case aside");
    assert!(!matches("model~pi 4", &d));
    assert!(matches("model!~pi 4", &d));
    assert!(!matches("model!~ZERO", &d));
    assert!(matches("kernel=6.1.21+", &d));
    assert!(!matches("kernel=6.1.21", &d), "= is the whole value");
    assert!(
        !matches("model=raspberry pi zero w rev 1.1", &d),
        "= is exact"
    );
    assert!(matches("kernel!=6.6.51", &d));
    assert!(matches("os~bullseye", &d));
    assert!(matches("serial=00000000a1b2c3d4", &d));
    assert!(matches("version=0.1.0", &d));
    assert!(matches("arch=arm", &d));
    assert!(!matches("arch=aarch64", &d));
}

#[test]
fn list_fields_match_one_of_or_none_of() {
    let d = zero();
    assert!(matches("interface=wlan0", &d));
    assert!(!matches("interface=eth0", &d));
    assert!(matches("interface!=eth0", &d));
    assert!(!matches("interface!=wlan0", &d));
    assert!(
        matches("address=192.168.4.17", &d),
        "without the prefix length"
    );
    assert!(matches("address~192.168.4.", &d));
    assert!(!matches("address~10.0.", &d));
    assert!(matches("address!~10.0.", &d));
    assert!(matches("address=fe80::1", &d));
    assert!(
        matches("mac~B8:27:EB", &d),
        "a Pi's vendor prefix, case aside"
    );
    assert!(!matches("mac!~b8:27:eb", &d));
}

#[test]
fn memory_is_compared_as_a_size() {
    let d = zero();
    assert!(matches("memory<512M", &d));
    assert!(matches("memory<1G", &d));
    assert!(!matches("memory>1G", &d));
    assert!(matches("memory>400MiB", &d));
    assert!(matches("memory>0.25GB", &d));
    assert!(
        !matches("memory<457179136", &d),
        "exactly 436 MiB is not less"
    );
    assert!(matches("memory<457179137", &d));
}

#[test]
fn what_the_hub_does_not_know_matches_nothing() {
    let d = older();
    // Not even a negative filter: "every kernel but 6.6" must not reach
    // a device whose kernel nobody knows.
    for f in [
        "kernel!=6.6",
        "kernel!~6.6",
        "model!~zero",
        "interface!=eth0",
        "address!~10.",
        "memory<1T",
        "memory>1",
        "serial!=x",
    ] {
        assert!(!matches(f, &d), "{f} matched a device without facts");
    }
    // What its Hello said is known.
    assert!(matches("version!=0.1.0", &d));
    assert!(matches("arch=aarch64", &d));
    // A known device without a serial (a PC) has no serial to compare.
    let mut pc = zero();
    pc.facts.serial.clear();
    assert!(!matches("serial!=x", &pc));
    // One with facts but no interfaces has none of them.
    pc.facts.interfaces.clear();
    assert!(matches("interface!=wlan0", &pc));
    assert!(!matches("interface~w", &pc));
}

#[test]
fn every_filter_must_match() {
    let d = zero();
    let both = Matcher::parse_all(&["model~zero".into(), "os~bullseye".into()]).unwrap();
    assert!(matches_all(&both, &d));
    let one = Matcher::parse_all(&["model~zero".into(), "os~bookworm".into()]).unwrap();
    assert!(!matches_all(&one, &d));
    assert!(matches_all(&[], &d), "no filter: every device");
}

#[test]
fn bad_filters_say_what_is_wrong() {
    let err = |f: &str| Matcher::parse(f).unwrap_err();
    assert!(
        err("model").contains("is not FIELD OP VALUE"),
        "{}",
        err("model")
    );
    assert!(err("model zero").contains("is not FIELD OP VALUE"));
    assert!(err("colour=red").contains("no field \"colour\"; the fields are model, os,"));
    assert!(err("modle~zero").contains("no field \"modle\""));
    assert!(err("!=x").contains("no field \"\""));
    assert!(
        Matcher::parse("Model~zero").is_ok(),
        "a field's name, case aside"
    );
    assert!(err("model~").contains("no value after ~"));
    assert!(err("memory=1G").contains("memory takes < or >"));
    assert!(err("memory<lots").contains("like 512M or 2G"));
    assert!(err("memory<-1G").contains("like 512M or 2G"));
    assert!(err("kernel<6").contains("< and > are for memory"));
    assert!(err(&format!("model={}", "x".repeat(129))).contains("at most 128 bytes"));
    assert!(err("model=a\nb").contains("no control characters"));
    let nine: Vec<String> = (0..9).map(|i| format!("kernel!={i}")).collect();
    assert_eq!(
        Matcher::parse_all(&nine).unwrap_err(),
        "9 filters: at most 8"
    );
}

#[test]
fn a_filter_reads_as_it_was_written() {
    for f in [
        "model~Zero",
        "memory<1.5G",
        "address!~10.0.",
        "kernel=6.1.21+",
    ] {
        assert_eq!(Matcher::parse(f).unwrap().to_string(), f);
    }
}
