//! The hub's configuration: the printed example, and what validation
//! refuses.

use super::*;

#[test]
fn the_printed_example_is_exactly_the_defaults() {
    let parsed: HubConfig = fleetmq_net::config::parse(Path::new("example"), EXAMPLE).unwrap();
    assert_eq!(parsed, HubConfig::default());
}

#[test]
fn the_printed_example_tells_every_key() {
    let missing = fleetmq_net::config::unprinted_keys::<HubConfig>(EXAMPLE).unwrap();
    assert_eq!(
        missing,
        Vec::<String>::new(),
        "keys print-config leaves out"
    );
}

#[test]
fn errors_name_the_file_and_the_key() {
    let err = fleetmq_net::config::parse::<HubConfig>(
        Path::new("/etc/hub.toml"),
        "[jobs]\nlease_ms = \"soon\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/etc/hub.toml") && err.contains("lease_ms"),
        "{err}"
    );

    let err =
        fleetmq_net::config::parse::<HubConfig>(Path::new("h.toml"), "[jobs]\nleese_ms = 1\n")
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("leese_ms") && err.contains("lease_ms"),
        "{err}"
    );

    let mut c = HubConfig::default();
    c.listen.jobs = "localhost:80".into();
    let err = c.validate("h.toml").unwrap_err().to_string();
    assert!(
        err.contains("h.toml") && err.contains("listen.jobs") && err.contains("tcp://HOST:PORT"),
        "{err}"
    );
}

#[test]
fn a_budget_burst_holds_at_least_one_whole_batch_or_message() {
    let mut c = HubConfig::default();
    c.limits.device_records_burst = 19_999;
    let err = c.validate("hub.toml").unwrap_err().to_string();
    assert!(
        err.contains("limits.device_records_burst") && err.contains("20000"),
        "{err}"
    );
    c.limits.device_records_per_s = 0;
    assert!(
        c.validate("hub.toml").is_ok(),
        "a rate that is off needs no burst"
    );
    c.limits.device_bytes_burst = 4096;
    let err = c.validate("hub.toml").unwrap_err().to_string();
    assert!(err.contains("net.max_message_bytes (1048576)"), "{err}");
}

#[test]
fn the_plaintext_operator_socket_stays_on_this_machine() {
    let mut c = HubConfig::default();
    for local in [
        "tcp://127.0.0.1:*",
        "tcp://[::1]:7755",
        "tcp://localhost:7755",
    ] {
        c.listen.operator = local.into();
        assert!(c.validate("h.toml").is_ok(), "{local}");
    }
    c.listen.operator = "tcp://0.0.0.0:7755".into();
    let err = c.validate("h.toml").unwrap_err().to_string();
    assert!(
        err.contains("listen.operator") && err.contains("listen.operator_remote"),
        "{err}"
    );
    c.listen.operator = "tcp://127.0.0.1:7755".into();
    c.listen.operator_remote = "tcp://0.0.0.0".into();
    let err = c.validate("h.toml").unwrap_err().to_string();
    assert!(err.contains("listen.operator_remote"), "{err}");
}

/// A Unix socket keeps the local operator socket to the hub's user; a
/// relative path is in data_dir, absolute so any working directory finds it.
#[test]
fn the_operator_socket_may_be_a_file_in_the_data_directory() {
    let mut c = HubConfig {
        data_dir: PathBuf::from("/var/lib/fleetmq-hub"),
        ..HubConfig::default()
    };
    assert_eq!(c.operator_endpoint(), "tcp://127.0.0.1:7755");
    c.listen.operator = "ipc://operator.sock".into();
    assert!(c.validate("h.toml").is_ok());
    assert_eq!(
        c.operator_endpoint(),
        "ipc:///var/lib/fleetmq-hub/operator.sock"
    );
    c.listen.operator = "ipc:///run/hub/op.sock".into();
    assert_eq!(c.operator_endpoint(), "ipc:///run/hub/op.sock");

    c.data_dir = PathBuf::from("fleetmq-data");
    c.listen.operator = "ipc://operator.sock".into();
    let here = std::env::current_dir().unwrap();
    assert_eq!(
        c.operator_endpoint(),
        format!(
            "ipc://{}",
            here.join("fleetmq-data/operator.sock").display()
        )
    );

    for open_to_all in ["ipc://", "ipc://@fleetmq"] {
        c.listen.operator = open_to_all.into();
        let err = c.validate("h.toml").unwrap_err().to_string();
        assert!(
            err.contains("listen.operator") && err.contains("ipc://operator.sock"),
            "{open_to_all}: {err}"
        );
    }
}
