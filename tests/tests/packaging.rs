//! The files an operator installs: the systemd units pass
//! `systemd-analyze verify`, are sandboxed (`systemd-analyze security`
//! rates their exposure), and the sample configs in /etc load.

use std::path::{Path, PathBuf};
use std::process::Command;

use fleetmq_tests::*;

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

/// `file`, a unit of packaging/systemd, with its ExecStart pointed at this
/// build of `name`, so `verify` can check the command exists; everything
/// else as shipped. It must run the installed binary with `args`.
fn unit_for_this_build(file: &str, name: &str, args: &str, dir: &Path) -> PathBuf {
    let text =
        std::fs::read_to_string(packaging().join("systemd").join(file)).expect("reading the unit");
    let installed = format!("/usr/bin/{name}");
    assert!(
        text.contains(&format!("ExecStart={installed} {args}")),
        "{file} runs the installed binary with {args}: {text}"
    );
    let here = bin(name, "NO_OVERRIDE");
    let path = dir.join(file);
    std::fs::write(&path, text.replace(&installed, &here.to_string_lossy())).unwrap();
    path
}

/// `systemd-analyze verify` passes `units` (a timer with its service),
/// saying nothing.
fn verifies(units: &[&Path]) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .output()
        .expect("systemd-analyze (apt install systemd)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{units:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `unit`'s exposure on systemd's 0-10 scale is at most 2.0 ("OK").
fn sandboxed(unit: &Path) {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let level = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no overall level")
        .to_string();
    eprintln!("{}: {level}", unit.display());
    assert!(
        out.status.success(),
        "{} is too exposed: {report}",
        unit.display()
    );
}

#[test]
fn the_systemd_units_verify_and_are_sandboxed() {
    let dir = temp_dir("fleetmq-units-");
    for (name, config) in [("fleetmq-agent", "agent"), ("fleetmq-hub", "hub")] {
        let args = format!("run --config /etc/fleetmq/{config}.toml");
        let unit = unit_for_this_build(&format!("{name}.service"), name, &args, dir.path());
        verifies(&[&unit]);
        sandboxed(&unit);
    }
}

/// The daily backup: the timer and its service verify, and the service,
/// which keeps the newest 7 backups of the packaged hub, is sandboxed.
#[test]
fn the_backup_timer_and_its_service_verify_and_are_sandboxed() {
    let dir = temp_dir("fleetmq-backup-units-");
    let args = "backup --config /etc/fleetmq/hub.toml --keep 7 /var/lib/fleetmq-hub-backups";
    let unit = unit_for_this_build(
        "fleetmq-hub-backup.service",
        "fleetmq-hub",
        args,
        dir.path(),
    );
    let timer = dir.path().join("fleetmq-hub-backup.timer");
    std::fs::copy(packaging().join("systemd/fleetmq-hub-backup.timer"), &timer).unwrap();
    verifies(&[&unit, &timer]);
    sandboxed(&unit);
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
    // What the agent's unit runs before each reload passes on the shipped
    // file, once the hub's key is given (as the operator sets it).
    run_ok(
        agent_command()
            .arg("check-config")
            .arg("--config")
            .arg(etc.join("agent.toml"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--hub-key", &key]),
    );
    run_ok(
        hub_command()
            .arg("check-config")
            .arg("--config")
            .arg(etc.join("hub.toml"))
            .arg("--data-dir")
            .arg(dir.path()),
    );
}

/// `systemctl reload fleetmq-agent` checks the file before it signals the
/// agent: a reload of a broken file fails and says why.
#[test]
fn the_agents_reload_checks_the_config_first() {
    let text = std::fs::read_to_string(packaging().join("systemd/fleetmq-agent.service")).unwrap();
    let check = text
        .find("ExecReload=/usr/bin/fleetmq-agent check-config --config /etc/fleetmq/agent.toml\n");
    let signal = text.find("ExecReload=/bin/kill -HUP $MAINPID\n");
    assert!(
        matches!((check, signal), (Some(c), Some(s)) if c < s),
        "{text}"
    );
}

/// The Debian packages targets/deb.sh made: (package, Debian arch).
const DEBS: [(&str, &str); 5] = [
    ("fleetmq-agent", "arm64"),
    ("fleetmq-agent", "armhf"),
    ("fleetmq-agent", "armel"),
    ("fleetmq-hub", "arm64"),
    ("fleetmq-hub", "amd64"),
];

fn deb(name: &str, arch: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../target/debian/{name}_{}-1_{arch}.deb",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(
        path.exists(),
        "{} is missing: make the packages with targets/build.sh and targets/deb.sh \
         (scripts/test.sh does)",
        path.display()
    );
    path
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_ok(cmd).stdout).into_owned()
}

#[test]
fn every_package_holds_its_static_binary_unit_config_and_scripts() {
    for (name, arch) in DEBS {
        let deb = deb(name, arch);
        let field = |f: &str| stdout(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f));
        assert_eq!(field("Package").trim(), name);
        assert_eq!(field("Architecture").trim(), arch);
        assert_eq!(
            field("Depends").trim(),
            "",
            "{name} {arch}: static, depends on nothing"
        );
        if name == "fleetmq-hub" {
            assert_eq!(
                field("Recommends").trim(),
                "ca-certificates",
                "{arch}: the authorities https:// webhooks are checked against"
            );
        }

        let listing = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
        let short = name.trim_start_matches("fleetmq-");
        for file in [
            format!("./usr/bin/{name}"),
            format!("./usr/lib/systemd/system/{name}.service"),
            format!("./etc/fleetmq/{short}.toml"),
            format!("./usr/share/doc/{name}/copyright"),
        ] {
            assert!(
                listing.lines().any(|l| l.ends_with(&format!(" {file}"))),
                "{name} {arch} lacks {file}:\n{listing}"
            );
        }

        if name == "fleetmq-hub" {
            for file in [
                "./usr/share/fleetmq-hub/grafana/fleetmq.json",
                "./usr/lib/systemd/system/fleetmq-hub-backup.service",
                "./usr/lib/systemd/system/fleetmq-hub-backup.timer",
            ] {
                assert!(
                    listing.lines().any(|l| l.ends_with(&format!(" {file}"))),
                    "{name} {arch} lacks {file}:\n{listing}"
                );
            }
        }

        // The binary inside: static, for this architecture's CPU.
        let dir = temp_dir("fleetmq-deb-");
        run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dir.path()));
        let binary = dir.path().join("usr/bin").join(name);
        let kind = stdout(Command::new("file").arg("-b").arg(&binary));
        assert!(kind.contains("statically linked"), "{name} {arch}: {kind}");
        let machine = match arch {
            "arm64" => "ARM aarch64",
            "amd64" => "x86-64",
            _ => "ARM, EABI5",
        };
        assert!(kind.contains(machine), "{name} {arch}: {kind}");
        if arch.starts_with("arm") && arch != "arm64" {
            // Both 32-bit packages hold the ARMv6 build: Raspberry Pi OS
            // says armhf on a Pi Zero and Pi 1 too.
            let attrs = stdout(Command::new("readelf").arg("-A").arg(&binary));
            assert!(attrs.contains("Tag_CPU_arch: v6"), "{name} {arch}: {attrs}");
        }

        let control = temp_dir("fleetmq-control-");
        run_ok(
            Command::new("dpkg-deb")
                .arg("-e")
                .arg(&deb)
                .arg(control.path()),
        );
        let read = |f: &str| std::fs::read_to_string(control.path().join(f)).unwrap_or_default();
        assert_eq!(
            read("conffiles").trim(),
            format!("/etc/fleetmq/{short}.toml")
        );
        let postinst = read("postinst");
        assert!(
            postinst.contains("useradd") && postinst.contains("daemon-reload"),
            "{name} {arch}: postinst adds the user and tells systemd: {postinst}"
        );
        assert!(
            read("postrm").contains(&format!("/var/lib/{name}")),
            "purge removes the state"
        );
    }
}

/// An empty root for dpkg: its database and the account files useradd
/// edits.
fn dpkg_root() -> tempfile::TempDir {
    let root = temp_dir("fleetmq-root-");
    let r = root.path();
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    for (file, line) in [
        ("passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("group", "root:x:0:\n"),
        ("shadow", "root:*:19000:0:99999:7:::\n"),
        ("gshadow", "root:*::\n"),
    ] {
        std::fs::write(r.join("etc").join(file), line).unwrap();
    }
    root
}

/// dpkg on `root` with the maintainer scripts run outside a chroot, so a
/// root of another architecture needs no emulator for them; they act
/// under DPKG_ROOT.
fn dpkg(root: &Path) -> Command {
    let mut cmd = Command::new("dpkg");
    cmd.arg(format!("--root={}", root.display())).args([
        "--force-script-chrootless",
        "--force-architecture",
        "--log=/dev/null",
    ]);
    cmd
}

#[test]
fn the_armhf_agent_package_runs_on_a_pi_zeros_cpu() {
    let _w = watchdog("armhf deb on ARMv6", std::time::Duration::from_secs(120));
    let root = dpkg_root();
    let r = root.path();
    run_ok(dpkg(r).arg("-i").arg(deb("fleetmq-agent", "armhf")));
    // What apt installs on Raspberry Pi OS (32-bit) runs on a Pi Zero's
    // ARM1176, not only on a Pi 2's Cortex-A7.
    let data = temp_dir("fleetmq-deb-armhf-");
    let out = run_ok(
        Command::new("qemu-arm-static")
            .args(["-cpu", "arm1176"])
            .arg(r.join("usr/bin/fleetmq-agent"))
            .arg("keygen")
            .arg("--config")
            .arg(r.join("etc/fleetmq/agent.toml"))
            .arg("--data-dir")
            .arg(data.path())
            .args(["--device-id", "pi-zero"]),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("fleetmq-hub allow pi-zero "));
}

#[test]
fn the_arm64_agent_package_installs_where_its_unit_looks_and_purges_clean() {
    let _w = watchdog("deb install", std::time::Duration::from_secs(120));
    let root = dpkg_root();
    let r = root.path();
    run_ok(dpkg(r).arg("-i").arg(deb("fleetmq-agent", "arm64")));

    let status = stdout(
        Command::new("dpkg-query")
            .arg(format!("--root={}", r.display()))
            .args(["-W", "-f=${Status}", "fleetmq-agent"]),
    );
    assert_eq!(status, "install ok installed");
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("fleetmq:") && l.ends_with(":/nonexistent:/usr/sbin/nologin")),
        "postinst made the service user: {passwd}"
    );

    // Every path the unit names is where the package put it.
    let unit = std::fs::read_to_string(r.join("usr/lib/systemd/system/fleetmq-agent.service"))
        .expect("the unit is installed");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(words[..2], ["/usr/bin/fleetmq-agent", "run"], "{exec}");
    let config = words[words.iter().position(|w| *w == "--config").unwrap() + 1];
    assert!(r.join(words[0].trim_start_matches('/')).is_file(), "{exec}");
    assert!(r.join(config.trim_start_matches('/')).is_file(), "{exec}");

    // The installed binary runs on a Pi 3's CPU and reads the installed config.
    let data = temp_dir("fleetmq-deb-data-");
    let out = run_ok(
        Command::new("qemu-aarch64-static")
            .args(["-cpu", "cortex-a53"])
            .arg(r.join("usr/bin/fleetmq-agent"))
            .arg("keygen")
            .arg("--config")
            .arg(r.join(config.trim_start_matches('/')))
            .arg("--data-dir")
            .arg(data.path())
            .args(["--device-id", "pi-deb"]),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("fleetmq-hub allow pi-deb "));

    // Purge: the files, the conffile and the state directory go.
    std::fs::create_dir_all(r.join("var/lib/fleetmq-agent/spool")).unwrap();
    run_ok(dpkg(r).args(["--purge", "fleetmq-agent"]));
    for gone in [
        "usr/bin/fleetmq-agent",
        "usr/lib/systemd/system/fleetmq-agent.service",
        "etc/fleetmq/agent.toml",
        "var/lib/fleetmq-agent",
    ] {
        assert!(!r.join(gone).exists(), "{gone} is left after purge");
    }
}
