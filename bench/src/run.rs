//! Starting the real binaries for a benchmark, and stopping them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

/// `name` beside this binary (cargo puts them all in target/release).
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("finding this program")?;
    let path = me
        .parent()
        .context("this program has no directory")?
        .join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build it with cargo build --release -p {name}",
        path.display()
    );
    Ok(path)
}

/// A loopback port the OS picked as free.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(free_ports(1)?[0])
}

/// `n` loopback ports the OS picked as free, all different: each is held
/// until all are picked (one at a time, the OS can hand out the same port
/// twice, and a NATS node got the same port for clients and routes).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(held
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?)
}

/// `program -c CONF` (a server reading its config file), its output to
/// `log`; stopped when dropped.
pub fn server(program: &Path, conf: &Path, log: &Path) -> anyhow::Result<Running> {
    let child = Command::new(program)
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(Running { child })
}

/// A child process, stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Running {
    pub child: Child,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A hub started for a benchmark.
pub struct Hub {
    pub proc: Running,
    /// Its endpoints, from the JSON line it prints at start.
    pub endpoints: serde_json::Value,
}

impl Hub {
    /// Starts `fleetmq-hub run --insecure` on OS-chosen loopback ports with
    /// `config` (TOML) in `dir`; its log goes to `dir/hub.log`.
    pub fn start(dir: &Path, config: &str) -> anyhow::Result<Hub> {
        Hub::start_with(dir, config, &[])
    }

    /// [`Hub::start`] with more `run` arguments (`--nats`, `--name`).
    pub fn start_with(dir: &Path, config: &str, more: &[&str]) -> anyhow::Result<Hub> {
        Hub::spawn(dir, config, &[&["--insecure"], more].concat())
    }

    /// A hub with CURVE on, as fleets run it: `hub` is its key pair and
    /// `allow_list` its allow list (`DEVICE_ID PUBLIC_KEY` lines), both
    /// written to its data directory first.
    pub fn start_secure(
        dir: &Path,
        config: &str,
        hub: &fleetmq_net::keys::KeyPair,
        allow_list: &str,
    ) -> anyhow::Result<Hub> {
        let data = dir.join("data");
        fleetmq_net::keys::write(&data, "hub", hub, false)?;
        std::fs::write(data.join("allowed_devices"), allow_list)?;
        Hub::spawn(dir, config, &[])
    }

    fn spawn(dir: &Path, config: &str, more: &[&str]) -> anyhow::Result<Hub> {
        std::fs::create_dir_all(dir)?;
        let cfg = dir.join("hub.toml");
        std::fs::write(&cfg, config)?;
        let log = std::fs::File::create(dir.join("hub.log"))?;
        let mut child = Command::new(sibling("fleetmq-hub")?)
            .arg("run")
            .arg("--config")
            .arg(&cfg)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--bind", "127.0.0.1:*"])
            .args(more)
            .env("FLEETMQ_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting fleetmq-hub")?;
        let stdout = child.stdout.take().context("the hub's stdout")?;
        let proc = Running { child };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the hub's first line")?;
        let endpoints: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("the hub printed {line:?}, not its endpoints"))?;
        Ok(Hub { proc, endpoints })
    }

    pub fn endpoint(&self, name: &str) -> anyhow::Result<String> {
        self.endpoints[name]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("the hub printed no {name} endpoint"))
    }
}

/// Starts `fleetmq-agent run --insecure` as `device` against `hub`, with
/// `config` (TOML), in `dir/device`: the agent beside this program, or
/// `binary` (a static build, say).
pub fn agent(
    binary: Option<&Path>,
    dir: &Path,
    hub: &str,
    device: &str,
    config: &str,
) -> anyhow::Result<Running> {
    let home = dir.join(device);
    std::fs::create_dir_all(&home)?;
    let cfg = home.join("agent.toml");
    std::fs::write(&cfg, config)?;
    let log = std::fs::File::create(home.join("agent.log"))?;
    let program = match binary {
        Some(path) => path.to_path_buf(),
        None => sibling("fleetmq-agent")?,
    };
    let child = Command::new(&program)
        .arg("run")
        .arg("--config")
        .arg(&cfg)
        .args(["--hub", hub, "--device-id", device, "--insecure"])
        .arg("--data-dir")
        .arg(home.join("data"))
        .env("FLEETMQ_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(Running { child })
}

/// Three nats-server nodes with JetStream in one cluster, on ports the OS
/// had free; with `sync`, each writes to disk before it acks
/// (`sync_interval: always`), else on the server's own schedule.
/// `FLEETMQ_NATS_SERVER`, or the one `scripts/test.sh` installs.
pub struct Nats {
    pub nodes: Vec<Running>,
    /// Client URLs, comma-separated.
    pub urls: String,
}

/// The pinned nats-server the test command installs (or
/// `FLEETMQ_NATS_SERVER`).
pub fn nats_server() -> anyhow::Result<PathBuf> {
    let server = match std::env::var_os("FLEETMQ_NATS_SERVER") {
        Some(p) => PathBuf::from(p),
        None => sibling("fleetmq-bench")?
            .parent()
            .and_then(Path::parent)
            .map(|target| target.join("tools/nats/bin/nats-server"))
            .context("finding target/tools")?,
    };
    anyhow::ensure!(
        server.exists(),
        "{} is missing: scripts/test.sh installs it (or set FLEETMQ_NATS_SERVER)",
        server.display()
    );
    Ok(server)
}

impl Nats {
    pub fn start(dir: &Path, sync: bool) -> anyhow::Result<Nats> {
        let program = nats_server()?;
        let ports: Vec<(u16, u16)> = free_ports(6)?.chunks(2).map(|p| (p[0], p[1])).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, r)| format!("\"nats-route://127.0.0.1:{r}\""))
            .collect();
        let mut nodes = Vec::new();
        for (i, (client, route)) in ports.iter().enumerate() {
            let node = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&node)?;
            let conf = node.join("nats.conf");
            std::fs::write(
                &conf,
                format!(
                    "server_name: n{i}\nlisten: \"127.0.0.1:{client}\"\nmax_payload: 8MB\n\
                     max_connections: 100000\n\
                     jetstream {{ store_dir: \"{}\"{} }}\n\
                     cluster {{ name: fleetmq, listen: \"127.0.0.1:{route}\", routes: [{}] }}\n",
                    node.join("js").display(),
                    if sync { ", sync_interval: always" } else { "" },
                    routes.join(", ")
                ),
            )?;
            nodes.push(server(&program, &conf, &node.join("nats.log"))?);
        }
        let urls: Vec<String> = ports
            .iter()
            .map(|(c, _)| format!("nats://127.0.0.1:{c}"))
            .collect();
        Ok(Nats {
            nodes,
            urls: urls.join(","),
        })
    }
}
