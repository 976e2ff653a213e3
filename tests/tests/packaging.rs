//! The files an operator installs: the systemd units pass
//! `systemd-analyze verify`, are sandboxed (`systemd-analyze security`
//! rates their exposure), and the sample configs in /etc load.

use std::path::{Path, PathBuf};
use std::process::Command;

use fleetmq_tests::*;

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

/// The unit with its ExecStart pointed at this build, so `verify` can check
/// the command exists; everything else as shipped.
fn unit_for_this_build(name: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(packaging().join("systemd").join(format!("{name}.service")))
        .expect("reading the unit");
    let installed = format!("/usr/bin/{name}");
    assert!(
        text.contains(&format!("ExecStart={installed} run --config /etc/fleetmq/")),
        "the unit runs the installed binary with the /etc config: {text}"
    );
    let here = bin(name, "NO_OVERRIDE");
    let path = dir.join(format!("{name}.service"));
    std::fs::write(&path, text.replace(&installed, &here.to_string_lossy())).unwrap();
    path
}

#[test]
fn the_systemd_units_verify_and_are_sandboxed() {
    let dir = temp_dir("fleetmq-units-");
    for name in ["fleetmq-agent", "fleetmq-hub"] {
        let unit = unit_for_this_build(name, dir.path());
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit)
            .output()
            .expect("systemd-analyze (apt install systemd)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Exposure on systemd's 0-10 scale, in tenths: at most 2.0 ("OK").
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(&unit)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&out.stdout);
        let level = report
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("no overall level")
            .to_string();
        eprintln!("{name}: {level}");
        assert!(out.status.success(), "{name} is too exposed: {report}");
    }
}

#[test]
fn the_sample_configs_for_etc_load() {
    let dir = temp_dir("fleetmq-etc-");
    let etc = packaging().join("etc");
    let key = Keys::new().public;
    run_ok(
        hub_command()
            .arg("allow")
            .arg("--config")
            .arg(etc.join("hub.toml"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["pi-a", &key]),
    );
    run_ok(
        agent_command()
            .arg("keygen")
            .arg("--config")
            .arg(etc.join("agent.toml"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--device-id", "pi-a"]),
    );
    assert!(dir.path().join("agent.key").exists());
}
