//! The protocol as another language reads it: `tests/conformance/client.py`
//! is an agent and an operator client written from `protocol/PROTOCOL.md`
//! alone (it reads none of the Rust crates), and here it talks to a real
//! hub, beside a real agent, on CURVE. Every frame it reads must decode
//! exactly as the document says, and every answer must be the one the
//! document promises. `tests/conformance/jetstream.py` reads what a
//! front-end over NATS keeps in JetStream as the document's last section
//! says another program may, with a NATS client of its own, and
//! `tests/conformance/http_api.py` uses the HTTP API as the README tells
//! a program to, `operator_cli.py` the operator's command line, and
//! `device_ingest.py` the agent's local ingest (StatsD, Influx lines,
//! `fleetmq-agent send`), `alerts.py` hears the alerts' webhooks (http and
//! https) as an Alertmanager receiver would, `https.py` reads the page and
//! API over HTTPS and renews their certificate, `desired_config.py` sets the desired
//! configuration, `aimed_work.py` aims jobs and commands at devices,
//! groups and the fleet, `retention.py` bounds the store,
//! `remote_operator.py` is an operator on another machine,
//! `host_metrics.py` reads what a device reports of itself and reloads it,
//! `device_logs.py` follows a device's log files,
//! and `enrolment.py` lets devices in, or hears why not (`fleet.py`
//! starts their own hubs and agents).
//! They need Debian's `python3-zmq` and nats-server, which
//! `scripts/test.sh` installs.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleetmq_tests::cluster::{NatsCluster, start_front_end};
use fleetmq_tests::*;

const LIMIT: Duration = Duration::from_secs(120);

/// `tests/conformance/NAME` on Debian's Python with `args`, as a test
/// process; fails the test with what it printed, and `hub`'s log, unless
/// it passed.
fn run_script(dir: &Path, name: &str, args: &[String], hub: &Hub) {
    run_script_beside(dir, name, args, || hub.proc.log_text());
}

/// [`run_script`] for a script that starts its own hub (logging into
/// `WORK/hub.log`) and agents, with the commands that run them and a
/// directory of its own.
fn run_script_alone(name: &str) {
    let dir = temp_dir("fleetmq-conformance-");
    let dir = dir.path();
    let args = [
        format!("--hub-command={}", command_line(&hub_command())),
        format!("--agent-command={}", command_line(&agent_command())),
        format!("--work={}", dir.display()),
    ];
    let log = dir.join("hub.log");
    run_script_beside(dir, name, &args, || {
        std::fs::read_to_string(&log).unwrap_or_else(|e| format!("{}: {e}", log.display()))
    });
}

fn run_script_beside(dir: &Path, name: &str, args: &[String], hub_log: impl Fn() -> String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("conformance")
        .join(name);
    let mut cmd = Command::new(python());
    cmd.arg(&script).args(args);
    let mut client = spawn(name, cmd, dir.join(format!("{name}.log")), false);
    let status = client.exited_within(LIMIT - Duration::from_secs(30));
    if status.is_none() {
        client.signal(libc::SIGKILL);
    }
    let printed = client.rest_of_lines().join("\n");
    let Some(status) = status else {
        panic!(
            "{name} did not end in time; it printed:\n{printed}\nits stderr:\n{}",
            client.log_text()
        );
    };
    assert!(
        status.success(),
        "{name} ended with {status}; it printed:\n{printed}\nits stderr:\n{}\nthe hub's log:\n{}",
        client.log_text(),
        hub_log()
    );
    assert!(
        printed.contains("checks passed"),
        "{name} printed no summary:\n{printed}"
    );
    println!("{printed}");
}

/// How a script's device reaches `hub` with `keys`: the arguments
/// client.py and jetstream.py share. `--name=value`, since a Z85 key may
/// begin with `-`.
fn device_args(hub: &Hub, keys: &Keys, device: &str) -> Vec<String> {
    let hub_key = hub.key.as_deref().expect("the hub runs on CURVE");
    vec![
        format!("--telemetry={}", hub.telemetry()),
        format!("--operator={}", hub.endpoints["operator"]),
        format!("--hub-key={hub_key}"),
        format!("--public={}", keys.public),
        format!("--secret={}", keys.secret),
        format!("--device={device}"),
    ]
}

/// `cmd`'s program and arguments as one line a shell (and Python's shlex)
/// splits back into them: a runner such as QEMU, then the binary.
fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|word| format!("'{}'", word.to_string_lossy().replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Debian's Python, where `apt install python3-zmq` puts pyzmq, unless
/// `FLEETMQ_PYTHON` names another.
fn python() -> String {
    std::env::var("FLEETMQ_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".to_string())
}

#[test]
fn a_client_written_from_protocol_md_speaks_with_the_hub() {
    let _w = watchdog("conformance", LIMIT);
    let dir = temp_dir("fleetmq-conformance-");
    let (admin, reader) = (Keys::new(), Keys::new());
    std::fs::create_dir_all(dir.path().join("data")).expect("the hub's data directory");
    let operators = format!("ada admin {}\nrex read {}\n", admin.public, reader.public);
    std::fs::write(dir.path().join("data/allowed_operators"), operators)
        .expect("writing allowed_operators");
    let (token, admin_token) = (
        "read-token-for-the-conformance-test",
        "admin-token-for-the-conformance-test",
    );
    for (file, value) in [("http.token", token), ("admin.token", admin_token)] {
        std::fs::write(dir.path().join("data").join(file), format!("{value}\n"))
            .expect("writing an HTTP token");
    }
    let hub = Hub::start(
        dir.path(),
        "[listen]\noperator_remote = \"tcp://127.0.0.1:*\"\n\
         [security]\nhttp_token_file = \"http.token\"\nhttp_admin_token_file = \"admin.token\"\n",
    );
    // The real agent takes no jobs, so work-queue jobs go to the client.
    let config = "[presence]\nheartbeat_ms = 300\n[jobs]\nallow = []\n\
                  [commands]\nallow = [\"ping\", \"status\"]\n[ingest]\nudp = \"127.0.0.1:0\"\n";
    let _real = start_agent(&hub.link(), dir.path(), "rs-1", "run", config, &[]);
    hub.wait_answering("rs-1");

    // py-1 keeps to one connection; py-1-five connects every port.
    let keys = Keys::new();
    hub.link().allow("py-1", &keys.public);
    let five = Keys::new();
    hub.link().allow("py-1-five", &five.public);
    // Enrolled once the hub has read its allow list again.
    hub.proc.wait_log("allow list changed keys=3");
    let ports = ["broadcast", "jobs", "results", "commands"]
        .map(|name| hub.port(name).to_string())
        .join(",");
    let protocol = Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol/PROTOCOL.md");
    let mut args = device_args(&hub, &keys, "py-1");
    args.extend([
        format!("--public5={}", five.public),
        format!("--secret5={}", five.secret),
        "--real-agent=rs-1".to_string(),
        format!("--operator-remote={}", hub.endpoints["operator_remote"]),
        format!("--admin-public={}", admin.public),
        format!("--admin-secret={}", admin.secret),
        format!("--reader-public={}", reader.public),
        format!("--reader-secret={}", reader.secret),
        format!("--ports={ports}"),
        format!("--protocol={}", protocol.display()),
    ]);
    run_script(dir.path(), "client.py", &args, &hub);

    // The HTTP API over what client.py left in the store.
    let args = [
        format!("--http={}", hub.endpoints["http"]),
        format!("--operator={}", hub.endpoints["operator"]),
        format!("--token={token}"),
        format!("--admin-token={admin_token}"),
        "--device=py-1".to_string(),
        "--real-agent=rs-1".to_string(),
        format!("--telemetry={}", hub.telemetry()),
        format!("--hub-key={}", hub.key.as_deref().unwrap_or_default()),
    ];
    run_script(dir.path(), "http_api.py", &args, &hub);

    // The operator's command line over the same store, and a device's own
    // programs feeding an agent the script enrols and starts itself.
    let data = dir.path().join("data");
    let args = [
        format!("--hub-command={}", command_line(&hub_command())),
        format!("--data-dir={}", data.display()),
        "--device=py-1".to_string(),
        "--real-agent=rs-1".to_string(),
    ];
    run_script(dir.path(), "operator_cli.py", &args, &hub);
    let work = dir.path().join("device-ingest");
    std::fs::create_dir_all(&work).expect("a directory for device_ingest.py");
    let args = [
        format!("--hub-command={}", command_line(&hub_command())),
        format!("--agent-command={}", command_line(&agent_command())),
        format!("--data-dir={}", data.display()),
        format!("--work={}", work.display()),
    ];
    run_script(dir.path(), "device_ingest.py", &args, &hub);
}

#[test]
fn alerts_reach_a_webhook_as_alertmanager_receivers_take_them() {
    let _w = watchdog("conformance of alerts", LIMIT);
    run_script_alone("alerts.py");
}

#[test]
fn the_page_and_api_are_served_over_https_as_the_readme_says() {
    let _w = watchdog("conformance of HTTPS", LIMIT);
    run_script_alone("https.py");
}

#[test]
fn the_desired_configuration_reaches_devices_as_the_readme_says() {
    let _w = watchdog("conformance of the desired configuration", LIMIT);
    run_script_alone("desired_config.py");
}

#[test]
fn jobs_and_commands_aimed_at_devices_groups_and_the_fleet_as_the_readme_says() {
    let _w = watchdog("conformance of aimed jobs and commands", LIMIT);
    run_script_alone("aimed_work.py");
}

#[test]
fn the_store_stays_within_its_retention_limits_as_the_readme_says() {
    let _w = watchdog("conformance of retention", LIMIT);
    run_script_alone("retention.py");
}

#[test]
fn operators_on_other_machines_reach_the_hub_as_the_readme_says() {
    let _w = watchdog("conformance of remote operators", LIMIT);
    run_script_alone("remote_operator.py");
}

#[test]
fn a_device_reports_its_host_and_reloads_as_the_readme_says() {
    let _w = watchdog("conformance of host metrics and reload", LIMIT);
    run_script_alone("host_metrics.py");
}

#[test]
fn devices_get_in_or_say_why_as_the_readme_says() {
    let _w = watchdog("conformance of enrolment", LIMIT);
    run_script_alone("enrolment.py");
}

#[test]
fn a_device_sends_its_log_files_as_the_readme_says() {
    let _w = watchdog("conformance of log files", LIMIT);
    run_script_alone("device_logs.py");
}

#[test]
fn a_backup_taken_beside_a_running_hub_restores_as_the_readme_says() {
    let _w = watchdog("conformance of backups", LIMIT);
    run_script_alone("backup.py");
}

#[test]
fn what_front_ends_keep_in_jetstream_reads_as_protocol_md_says() {
    let _w = watchdog("conformance over NATS", LIMIT);
    let dir = temp_dir("fleetmq-conformance-nats-");
    let nats = NatsCluster::start(&dir.path().join("nats"));
    let hub = start_front_end(&dir.path().join("fe"), &nats, "fe-c", None, "");
    let keys = Keys::new();
    hub.link().allow("py-js", &keys.public);
    // On a front-end, an enrolment is in force once it has been to the
    // cluster's bucket and back.
    hub.proc.wait_log("allow list changed keys=1");
    let mut args = device_args(&hub, &keys, "py-js");
    args.extend([
        format!("--nats=nats://127.0.0.1:{}", nats.client_ports()[0]),
        "--front-end=fe-c".to_string(),
    ]);
    run_script(dir.path(), "jetstream.py", &args, &hub);
}
