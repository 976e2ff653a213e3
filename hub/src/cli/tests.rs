use std::ffi::OsString;

use super::*;

#[test]
fn devices_picks_by_state_and_group() {
    let device =
        |id: &str, online, revoked, conflicts, groups: &[&str]| fleetmq_protocol::DeviceInfo {
            id: id.into(),
            online,
            revoked,
            conflicts,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..crate::store::unknown_device()
        };
    let fleet = [
        device("up", true, false, 0, &["north"]),
        device("down", false, false, 0, &["south"]),
        device("gone", false, true, 0, &["north"]),
        device("cloned", true, false, 3, &[]),
    ];
    let picked = |states: &[DeviceState], groups: &[&str]| {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        fleet
            .iter()
            .filter(|d| device_matches(d, states, &groups))
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(picked(&[], &[]), ["up", "down", "gone", "cloned"]);
    assert_eq!(picked(&[DeviceState::Online], &[]), ["up", "cloned"]);
    assert_eq!(
        picked(&[DeviceState::Offline], &[]),
        ["down"],
        "revoked is not offline"
    );
    assert_eq!(
        picked(&[DeviceState::Revoked, DeviceState::Conflict], &[]),
        ["gone", "cloned"]
    );
    assert_eq!(picked(&[], &["north", "south"]), ["up", "down", "gone"]);
    assert_eq!(picked(&[DeviceState::Online], &["north"]), ["up"]);
    assert!(picked(&[], &["nowhere"]).is_empty());
}

#[test]
fn allow_takes_a_key_that_starts_with_a_dash_as_the_key() {
    let key = "-^abcdefghijabcdefghijabcdefghijabcdefgh";
    let cli = Cli::try_parse_from(["fleetmq-hub", "allow", "pi-a", key]).unwrap();
    let Cmd::Allow(a) = cli.command else {
        panic!("not allow");
    };
    assert_eq!((a.device.as_str(), a.key.as_str()), ("pi-a", key));
}

#[test]
fn options_go_anywhere_and_a_double_dash_ends_them() {
    let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.command);
    let Ok(Cmd::Job(JobCmd::Submit(a))) = parse(&[
        "fleetmq-hub",
        "job",
        "submit",
        "--wait",
        "echo",
        "hello",
        "--json",
    ]) else {
        panic!("not job submit");
    };
    assert!(a.op.json && a.wait);
    assert_eq!(a.args, ["hello"]);
    let Ok(Cmd::Command(a)) = parse(&[
        "fleetmq-hub",
        "command",
        "--group",
        "lab",
        "exec",
        "--",
        "ls",
        "-l",
        "--json",
    ]) else {
        panic!("not command");
    };
    assert!(!a.op.json, "after --, --json is a word");
    assert_eq!(a.aim.group, ["lab"]);
    assert_eq!(a.words, ["exec", "ls", "-l", "--json"]);
    let dash = parse(&["fleetmq-hub", "command", "pi-a", "exec", "ls", "-l"]);
    let err = dash.err().expect("an option it does not know").to_string();
    assert!(err.contains("-- -l"), "the hint says how: {err}");
}

/// `parse` after the options before the subcommand are moved.
fn parse_moved(args: &[&str]) -> Result<Cmd, clap::Error> {
    let args = args.iter().map(OsString::from).collect();
    Cli::try_parse_from(options_after_the_subcommand(args)).map(|c| c.command)
}

#[test]
fn options_go_before_the_subcommand_too() {
    let Ok(Cmd::Devices(a)) = parse_moved(&["fleetmq-hub", "--json", "devices"]) else {
        panic!("not devices");
    };
    assert!(a.op.json);
    let Ok(Cmd::Job(JobCmd::Show(a))) = parse_moved(&[
        "fleetmq-hub",
        "--data-dir",
        "d",
        "--hub-timeout-ms=50",
        "--json",
        "job",
        "show",
        "7",
    ]) else {
        panic!("not job show");
    };
    assert!(a.op.json && a.op.hub_timeout_ms == 50);
    assert_eq!(a.op.data_dir.as_deref(), Some(std::path::Path::new("d")));
    // Words after `--` stay words, wherever the options were.
    let Ok(Cmd::Command(a)) = parse_moved(&[
        "fleetmq-hub",
        "--json",
        "command",
        "pi-a",
        "exec",
        "--",
        "ls",
        "--json",
    ]) else {
        panic!("not command");
    };
    assert!(a.op.json);
    assert_eq!(a.words, ["pi-a", "exec", "ls", "--json"]);
    // A short option's value is its value, not the subcommand.
    let Ok(Cmd::Run(a)) = parse_moved(&["fleetmq-hub", "-c", "h.toml", "run"]) else {
        panic!("not run");
    };
    assert_eq!(a.config.as_deref(), Some(std::path::Path::new("h.toml")));
    // Help and mistakes are clap's, as before.
    let help = parse_moved(&["fleetmq-hub", "--help", "devices"]).err();
    assert_eq!(
        help.map(|e| e.kind()),
        Some(clap::error::ErrorKind::DisplayHelp)
    );
    let wrong = parse_moved(&["fleetmq-hub", "--json", "nothing"]).err();
    assert_eq!(
        wrong.map(|e| e.kind()),
        Some(clap::error::ErrorKind::UnknownArgument)
    );
}

#[test]
fn where_narrows_a_command_and_the_device_list() {
    let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.command);
    let Ok(Cmd::Command(a)) = parse(&[
        "fleetmq-hub",
        "command",
        "--where",
        "model~zero",
        "--where",
        "memory<1G",
        "ping",
    ]) else {
        panic!("not command");
    };
    assert!(a.aim.aimed(), "filters alone aim at the fleet");
    assert_eq!(a.aim.matching, ["model~zero", "memory<1G"]);
    assert_eq!(a.words, ["ping"]);
    let listing = parse(&["fleetmq-hub", "command", "--list", "--where", "os~x"]);
    assert!(listing.is_err(), "--where is no filter of --list");
    let Ok(Cmd::Devices(d)) = parse(&["fleetmq-hub", "devices", "--where", "os~bookworm"]) else {
        panic!("not devices");
    };
    assert_eq!(d.matching, ["os~bookworm"]);
}

#[test]
fn where_is_sent_only_to_a_hub_that_honours_it() {
    let mut stats = fleetmq_protocol::HubStats {
        hub_version: "0.1.0".into(),
        ..Default::default()
    };
    let why = super::work::before_matching(&stats).expect("an older hub names no features");
    assert!(why.contains("would act on every device of the aim, so nothing was sent"));
    stats.features = vec!["matching".into()];
    assert_eq!(super::work::before_matching(&stats), None);
}
