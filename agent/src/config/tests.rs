//! The agent's configuration: parsing, defaults and what validation refuses.

use super::*;

#[test]
fn the_printed_example_is_exactly_the_defaults() {
    let parsed: AgentConfig = fleetmq_net::config::parse(Path::new("example"), EXAMPLE).unwrap();
    assert_eq!(parsed, AgentConfig::default());
}

#[test]
fn the_printed_example_tells_every_key() {
    let missing = fleetmq_net::config::unprinted_keys::<AgentConfig>(EXAMPLE).unwrap();
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "keys print-config leaves out"
    );
}

#[test]
fn hub_public_key_may_name_the_hub_pub_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = fleetmq_net::keys::generate().unwrap().public;
    std::fs::write(dir.path().join("hub.pub"), format!("{key}\n")).unwrap();
    let config = dir.path().join("agent.toml");
    // Beside the config file, and as an absolute path.
    let absolute = dir.path().join("hub.pub").display().to_string();
    for named in ["hub.pub".to_string(), absolute] {
        std::fs::write(
            &config,
            format!("device_id = 'pi-1'\nhub_public_key = '{named}'\n"),
        )
        .unwrap();
        let mut c = AgentConfig::load(Some(&config)).unwrap();
        c.validate("agent.toml").unwrap();
        assert_eq!(c.hub_public_key, key, "{named}");
    }
    // The line itself, in single quotes as keygen prints it.
    std::fs::write(
        &config,
        format!("device_id = 'pi-1'\nhub_public_key = '{key}'\n"),
    )
    .unwrap();
    let mut c = AgentConfig::load(Some(&config)).unwrap();
    c.validate("agent.toml").unwrap();
    assert_eq!(c.hub_public_key, key);
    // Neither a key nor a file: the error says both ways.
    std::fs::write(&config, "device_id = 'pi-1'\nhub_public_key = 'nope.pub'\n").unwrap();
    let mut c = AgentConfig::load(Some(&config)).unwrap();
    let err = c.validate("agent.toml").unwrap_err().to_string();
    assert!(
        err.contains("hub_public_key") && err.contains("path of that file"),
        "{err}"
    );
}

#[test]
fn intervals_below_their_minimum_are_refused() {
    let ok = || AgentConfig {
        device_id: "pi-1".into(),
        ..AgentConfig::default()
    };
    let mut c = ok();
    c.telemetry.sample_interval_ms = 1;
    let err = c.validate("a.toml").unwrap_err().to_string();
    assert!(
        err.contains("telemetry.sample_interval_ms") && err.contains("the least is 100 ms"),
        "{err}"
    );
    let mut c = ok();
    c.host.interval_ms = 1;
    let err = c.validate("a.toml").unwrap_err().to_string();
    assert!(err.contains("host.interval_ms"), "{err}");
    let mut c = ok();
    c.host.interval_ms = 0;
    c.telemetry.sample_interval_ms = 100;
    c.presence.heartbeat_ms = 100;
    assert!(
        c.validate("a.toml").is_ok(),
        "0 turns host metrics off; 100 is allowed"
    );
}

#[test]
fn a_window_past_what_the_hub_looks_back_over_is_refused() {
    let mut c = AgentConfig {
        device_id: "pi-1".into(),
        ..AgentConfig::default()
    };
    c.telemetry.max_in_flight = fleetmq_protocol::telemetry::MAX_IN_FLIGHT;
    assert!(c.validate("a.toml").is_ok(), "1,024 is allowed");
    c.telemetry.max_in_flight += 1;
    let err = c.validate("a.toml").unwrap_err().to_string();
    assert!(
        err.contains("telemetry.max_in_flight") && err.contains("at most 1024"),
        "{err}"
    );
}

#[test]
fn errors_name_the_key_and_what_to_write() {
    let mut c = AgentConfig {
        device_id: "pi/1".into(),
        ..AgentConfig::default()
    };
    let err = c.validate("a.toml").unwrap_err().to_string();
    assert!(
        err.contains("a.toml") && err.contains("device_id") && err.contains("'/'"),
        "{err}"
    );

    let mut c = AgentConfig {
        device_id: "pi-1".into(),
        ..AgentConfig::default()
    };
    c.jobs.allow = vec!["shell".into()];
    let err = c.validate("a.toml").unwrap_err().to_string();
    assert!(
        err.contains("jobs.allow") && err.contains("\"echo\""),
        "{err}"
    );

    c.jobs.allow = vec![];
    c.exec.programs = vec!["../bin/sh".into()];
    let err = c.validate("a.toml").unwrap_err().to_string();
    assert!(err.contains("exec.programs"), "{err}");

    let err = fleetmq_net::config::parse::<AgentConfig>(Path::new("a.toml"), "hub = 5\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("a.toml") && err.contains("hub"), "{err}");
}

#[test]
fn statsd_percentiles_are_numbers_above_0_and_at_most_100() {
    let mut c: AgentConfig = fleetmq_net::config::parse(
        Path::new("a.toml"),
        "device_id = 'pi-1'\n[ingest]\npercentiles = [50, 99.9]\n",
    )
    .unwrap();
    c.validate("a.toml").unwrap();
    assert_eq!(c.ingest.percentiles, [50.0, 99.9]);
    c.ingest.percentiles = vec![0.0];
    let err = c.validate("a.toml").unwrap_err().to_string();
    assert!(
        err.contains("ingest.percentiles") && err.contains("[50, 90, 99]"),
        "{err}"
    );
    c.ingest.percentiles = vec![50.0];
    c.ingest.statsd_interval_ms = 10;
    let err = c.validate("a.toml").unwrap_err().to_string();
    assert!(err.contains("ingest.statsd_interval_ms"), "{err}");
}

#[test]
fn an_empty_device_id_becomes_the_host_name() {
    let mut c = AgentConfig::default();
    c.validate("defaults").unwrap();
    assert!(fleetmq_protocol::validate_device_id(&c.device_id).is_ok());
}
