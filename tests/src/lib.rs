//! Helpers for the end-to-end tests: real `fleetmq-hub` and `fleetmq-agent`
//! processes on ports the OS picks, each test under a hard timeout.
//!
//! * Binaries come from the workspace's `target/debug` unless
//!   `FLEETMQ_HUB_BIN` / `FLEETMQ_AGENT_BIN` name others (an ARM build).
//! * `FLEETMQ_AGENT_RUNNER` / `FLEETMQ_HUB_RUNNER` are prefixes for the
//!   agent or the hub, e.g. `qemu-aarch64-static -cpu cortex-a53`, so the
//!   same tests run an ARM agent under QEMU against a native hub, or an ARM
//!   hub (and its operator command line) under QEMU with native agents.
//! * Every process is killed when its handle drops, and by the kernel
//!   (`PR_SET_PDEATHSIG`) if the test process dies first.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod audit;
pub mod cluster;

/// How long any one wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Path of a workspace binary, or the override from `env`.
pub fn bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let p = target_dir().join("debug").join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace` first (or set {env})",
        p.display()
    );
    p
}

/// Kills the whole test process if a test runs past `limit`: the hard
/// timeout, whichever test runner is used. Child processes die with it.
///
/// Made first in a test, it is dropped last: when the test fails, it says
/// why once more after the logs its processes print as they drop, so the
/// reason is at the end of the output, where a CI summary that keeps only
/// the tail still shows it.
pub fn watchdog(name: &'static str, limit: Duration) -> Watchdog {
    KEEP_PANICS.call_once(|| {
        let print = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.with(|p| *p.borrow_mut() = Some(info.to_string()));
            print(info);
        }));
    });
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
            eprintln!("test {name} passed its hard timeout of {limit:?}; aborting");
            std::process::exit(124);
        }
    });
    Watchdog { name, _done: tx }
}

static KEEP_PANICS: std::sync::Once = std::sync::Once::new();

thread_local! {
    /// This thread's last panic, as the panic hook printed it.
    static PANICKED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Dropping it (test end, pass or fail) stops the watchdog.
pub struct Watchdog {
    name: &'static str,
    _done: mpsc::Sender<()>,
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(why) = PANICKED.with(|p| p.borrow_mut().take())
        {
            eprintln!("---- {} failed: thread {why}", self.name);
        }
    }
}

/// Waits for `check` to return `Some`, checking again every 25 ms (a cheap
/// poll of state the test cannot subscribe to), and fails after [`WAIT`].
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A running process with its stdout lines on a channel and its stderr in a
/// file (printed when the test fails).
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    pub log: PathBuf,
}

/// Starts `cmd` as a [`Proc`]: stdout on its channel, stderr into `log`,
/// stdin piped if `stdin`, killed with the test.
pub fn spawn(name: &str, mut cmd: Command, log: PathBuf, stdin: bool) -> Proc {
    let err = std::fs::File::create(&log).expect("creating a log file");
    cmd.stdout(Stdio::piped()).stderr(err).stdin(if stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Proc {
        name: name.to_string(),
        stdin: child.stdin.take(),
        child,
        lines,
        log,
    }
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The remote ports of this process's established TCP connections,
    /// sorted.
    pub fn tcp_peer_ports(&self) -> Vec<u16> {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("its descriptors");
        let inodes: Vec<String> = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|target| {
                let t = target.to_string_lossy();
                Some(t.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
            })
            .collect();
        let mut ports: Vec<u16> = ["tcp", "tcp6"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(format!("/proc/{}/net/{f}", self.pid())).ok())
            .flat_map(|table| {
                table
                    .lines()
                    .skip(1)
                    .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
                    .collect::<Vec<_>>()
            })
            // Field 2 is the remote address (hex ADDR:PORT), 3 the state
            // (01: established), 9 the inode.
            .filter(|w| w.len() > 9 && w[3] == "01" && inodes.contains(&w[9]))
            .filter_map(|w| u16::from_str_radix(w[2].rsplit(':').next()?, 16).ok())
            .collect();
        ports.sort_unstable();
        ports
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// The next stdout line, waiting up to [`WAIT`].
    pub fn line(&self) -> String {
        self.lines.recv_timeout(WAIT).unwrap_or_else(|_| {
            panic!(
                "{} printed no line; its log:\n{}",
                self.name,
                self.log_text()
            )
        })
    }

    /// Reads stdout lines until one satisfies `pred`; returns the lines read.
    pub fn lines_until(&self, what: &str, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let done = pred(&l);
                    seen.push(l);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!(
                    "{} never printed {what}; it printed {seen:?}; its log:\n{}",
                    self.name,
                    self.log_text()
                ),
            }
        }
    }

    /// Every stdout line not read yet, up to the end of its output (for a
    /// process that has exited), waiting up to [`WAIT`] for the end.
    pub fn rest_of_lines(&self) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut rest = Vec::new();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            rest.push(line);
        }
        rest
    }

    pub fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is piped");
        writeln!(stdin, "{line}").expect("writing to stdin");
        stdin.flush().expect("flushing stdin");
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the log to contain `needle`.
    pub fn wait_log(&self, needle: &str) {
        wait_for(&format!("{} to log {needle:?}", self.name), || {
            self.log_text().contains(needle).then_some(())
        });
    }

    /// Waits for the log to contain `needle` somewhere after `marker`.
    pub fn wait_log_after(&self, marker: &str, needle: &str) {
        wait_for(
            &format!("{} to log {needle:?} after {marker:?}", self.name),
            || {
                let text = self.log_text();
                let at = text.find(marker)?;
                text[at..].contains(needle).then_some(())
            },
        );
    }

    /// Waits up to `limit` for exit; returns the status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (std::process::ExitStatus, Duration) {
        let start = Instant::now();
        let status = self.exited_within(limit).unwrap_or_else(|| {
            panic!(
                "{} did not exit within {limit:?}; its log:\n{}",
                self.name,
                self.log_text()
            )
        });
        (status, start.elapsed())
    }

    /// Its exit status, if it exits within `limit`.
    pub fn exited_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for a child") {
                return Some(status);
            }
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log_text());
        }
    }
}

/// A hub on OS-chosen ports in its own data directory.
pub struct Hub {
    pub proc: Proc,
    pub dir: PathBuf,
    pub endpoints: HashMap<String, String>,
    /// The hub's public key; `None` when it runs with --insecure.
    pub key: Option<String>,
}

/// How agents reach a hub: its telemetry address and, for a CURVE hub, its
/// public key and the data directory whose allow list enrols them.
#[derive(Debug, Clone)]
pub struct Link {
    pub telemetry: String,
    pub hub_key: Option<String>,
    pub hub_data: PathBuf,
    /// Agents started on this link are enrolled first (as an operator would
    /// have done); false to start one the hub does not know.
    pub enrol: bool,
}

/// A CURVE key pair in Z85.
#[derive(Debug, Clone)]
pub struct Keys {
    pub public: String,
    pub secret: String,
}

impl Keys {
    pub fn new() -> Keys {
        let pair = zmq::CurveKeyPair::new().expect("CURVE key pair");
        Keys {
            public: zmq::z85_encode(&pair.public_key).expect("z85"),
            secret: zmq::z85_encode(&pair.secret_key).expect("z85"),
        }
    }
}

impl Default for Keys {
    fn default() -> Self {
        Keys::new()
    }
}

impl Link {
    /// Gives `device` a key pair in its data directory `agent_data` (or
    /// keeps the one there) and enrols it with `fleetmq-hub allow`, as an
    /// operator would. Returns the public key.
    pub fn enrol(&self, agent_data: &Path, device: &str) -> String {
        use std::os::unix::fs::OpenOptionsExt;
        let public = agent_data.join("agent.pub");
        let key = match std::fs::read_to_string(&public) {
            Ok(k) => k.trim().to_string(),
            Err(_) => {
                let keys = Keys::new();
                std::fs::create_dir_all(agent_data).expect("agent data dir");
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(agent_data.join("agent.key"))
                    .expect("writing agent.key");
                writeln!(f, "{}", keys.secret).expect("writing agent.key");
                std::fs::write(&public, format!("{}\n", keys.public)).expect("writing agent.pub");
                keys.public
            }
        };
        self.allow(device, &key);
        key
    }

    /// `fleetmq-hub allow DEVICE KEY` on this hub's data directory.
    pub fn allow(&self, device: &str, key: &str) {
        run_ok(
            hub_command()
                .arg("allow")
                .arg("--data-dir")
                .arg(&self.hub_data)
                .args([device, key]),
        );
    }

    /// `fleetmq-hub allow DEVICE KEY --groups GROUPS`: pins the device's
    /// groups (`""` for none).
    pub fn pin(&self, device: &str, key: &str, groups: &str) {
        run_ok(
            hub_command()
                .arg("allow")
                .arg("--data-dir")
                .arg(&self.hub_data)
                .args([device, key, "--groups", groups]),
        );
    }

    /// A raw socket of `kind` that speaks CURVE to this hub with `keys`
    /// (plaintext for an insecure hub), for tests that play a peer.
    pub fn socket(&self, ctx: &zmq::Context, kind: zmq::SocketType, keys: &Keys) -> zmq::Socket {
        let s = ctx.socket(kind).expect("socket");
        s.set_linger(0).expect("linger");
        if let Some(server) = &self.hub_key {
            s.set_curve_serverkey(server.as_bytes())
                .expect("server key");
            s.set_curve_publickey(keys.public.as_bytes())
                .expect("public key");
            s.set_curve_secretkey(keys.secret.as_bytes())
                .expect("secret key");
        }
        s
    }
}

/// A routing id `<device>@<nonce>` as an agent sets it, with a fixed nonce
/// of the test's choosing.
pub fn route(device: &str, nonce: &str) -> Vec<u8> {
    fleetmq_protocol::route(device, nonce).into_bytes()
}

impl Hub {
    /// Starts `fleetmq-hub run --bind 127.0.0.1:*` with `config` (TOML) in `dir`.
    pub fn start(dir: &Path, config: &str) -> Hub {
        std::fs::create_dir_all(dir).expect("creating hub dir");
        let cfg = dir.join("hub.toml");
        std::fs::write(&cfg, config).expect("writing hub config");
        Hub::start_with(
            dir,
            &["--config", &cfg.to_string_lossy(), "--bind", "127.0.0.1:*"],
        )
    }

    /// Starts the hub with exactly these `run` arguments (plus --data-dir).
    pub fn start_with(dir: &Path, args: &[&str]) -> Hub {
        Hub::try_start(dir, args)
            .unwrap_or_else(|log| panic!("the hub printed no line; its log:\n{log}"))
    }

    /// [`Hub::start_with`], or the log of a hub that exited (or printed
    /// nothing within [`WAIT`]) before its first line.
    fn try_start(dir: &Path, args: &[&str]) -> Result<Hub, String> {
        let mut cmd = hub_command();
        cmd.arg("run")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(args)
            .env("FLEETMQ_LOG", "debug");
        let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let proc = spawn("hub", cmd, dir.join(format!("hub-{n}.log")), false);
        let Ok(first) = proc.lines.recv_timeout(WAIT) else {
            return Err(proc.log_text());
        };
        let eps: Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("hub's first line {first:?} is not JSON: {e}"));
        let mut endpoints: HashMap<String, String> = eps
            .as_object()
            .expect("endpoints object")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("endpoint string").to_string()))
            .collect();
        let key = match endpoints.remove("security").as_deref() {
            Some("curve") => {
                let path = dir.join("data/hub.pub");
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                Some(text.trim().to_string())
            }
            Some("plaintext") => None,
            other => panic!("hub's first line names no security ({other:?}): {first}"),
        };
        Ok(Hub {
            proc,
            dir: dir.to_path_buf(),
            endpoints,
            key,
        })
    }

    pub fn telemetry(&self) -> &str {
        &self.endpoints["telemetry"]
    }

    /// The port of the endpoint `name` printed at start (`telemetry`,
    /// `jobs`, `http`...).
    pub fn port(&self, name: &str) -> u16 {
        let ep = &self.endpoints[name];
        ep.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the hub's {name} endpoint has no port: {ep}"))
    }

    /// This hub's ports, as a config that makes a restarted hub listen
    /// there too.
    pub fn same_ports(&self) -> String {
        let listen: String = [
            "telemetry",
            "broadcast",
            "jobs",
            "results",
            "commands",
            "operator",
        ]
        .iter()
        .map(|k| format!("{k} = \"{}\"\n", self.endpoints[*k]))
        .collect();
        format!("[listen]\n{listen}http = \"127.0.0.1:0\"\n")
    }

    /// Starts the hub again in `dir` (same store) with `config`, on the
    /// ports it had. Those came from the OS's ephemeral range, from which
    /// the OS also picks the local port of every outgoing connection: one
    /// made after the old hub died (an agent retrying, a NATS client) may
    /// hold a port for a moment. The start is tried again until it binds,
    /// for up to [`WAIT`].
    pub fn restart(dir: &Path, config: &str) -> Hub {
        let path = dir.join("same-ports.toml");
        std::fs::write(&path, config).expect("writing hub config");
        let args = ["--config", &path.to_string_lossy()];
        let deadline = Instant::now() + WAIT;
        loop {
            match Hub::try_start(dir, &args) {
                Ok(hub) => return hub,
                Err(log) if log.contains("Address already in use") && Instant::now() < deadline => {
                    eprintln!("a port of the old hub is in use; starting it again");
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(log) => panic!("the hub printed no line; its log:\n{log}"),
            }
        }
    }

    /// How agents reach this hub.
    pub fn link(&self) -> Link {
        Link {
            telemetry: self.telemetry().to_string(),
            hub_key: self.key.clone(),
            hub_data: self.dir.join("data"),
            enrol: true,
        }
    }

    /// `fleetmq-agent run` for `device`, with the test config, in this hub's directory.
    pub fn agent(&self, device: &str, groups: &[&str]) -> Proc {
        start_agent(
            &self.link(),
            &self.dir,
            device,
            "run",
            &agent_config(""),
            groups,
        )
    }

    /// `fleetmq-agent chat` for `device` with stdin piped.
    pub fn chat_agent(&self, device: &str, groups: &[&str]) -> Proc {
        self.chat_agent_with(device, groups, &agent_config(""))
    }

    /// [`Hub::chat_agent`] with its own configuration.
    pub fn chat_agent_with(&self, device: &str, groups: &[&str], config: &str) -> Proc {
        start_agent(&self.link(), &self.dir, device, "chat", config, groups)
    }

    /// `fleetmq-hub ARGS` pointed at this hub with `--json`, the flags placed
    /// right after the subcommand (options go anywhere before a `--`).
    pub fn operator_command(&self, args: &[&str]) -> Command {
        let mut cmd = hub_command();
        let verbs = if matches!(args.first(), Some(&"job" | &"config")) {
            2
        } else {
            1
        };
        let (path, rest) = args.split_at(verbs.min(args.len()));
        cmd.args(path)
            .args([
                "--data-dir",
                &self.dir.join("data").to_string_lossy(),
                "--json",
            ])
            .args(rest)
            .env("FLEETMQ_LOG", "warn");
        cmd
    }

    /// Runs an operator subcommand with `--json`; returns exit success,
    /// what it printed (one JSON document: a list's items, or the one
    /// object) and stderr.
    pub fn op(&self, args: &[&str]) -> OpResult {
        let out = self
            .operator_command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running fleetmq-hub {args:?}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let doc: Value = if stdout.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&stdout).unwrap_or_else(|e| {
                panic!("{args:?} printed {stdout:?}, not one JSON document: {e}")
            })
        };
        OpResult {
            ok: out.status.success(),
            code: out.status.code(),
            json: match doc {
                Value::Array(items) => items,
                Value::Null => Vec::new(),
                one => vec![one],
            },
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `devices`, as a map from device id to its JSON.
    pub fn devices(&self) -> HashMap<String, Value> {
        let r = self.op(&["devices"]);
        assert!(r.ok, "devices failed: {}", r.stderr);
        r.json
            .iter()
            .map(|d| (d["id"].as_str().expect("id").to_string(), d.clone()))
            .collect()
    }

    /// Waits until `device` is online with its broadcast subscription live.
    pub fn wait_listening(&self, device: &str) -> Value {
        wait_for(&format!("{device} online and listening"), || {
            self.devices()
                .remove(device)
                .filter(|d| d["online"] == true && d["listening"] == true)
        })
    }

    /// Waits until `device` is listening and answers a ping: its command
    /// socket connects a moment after the broadcast one, and until then the
    /// hub rightly calls it offline for commands.
    pub fn wait_answering(&self, device: &str) {
        self.wait_listening(device);
        wait_for(&format!("{device} to answer a ping"), || {
            self.op(&["command", device, "ping"]).ok.then_some(())
        });
    }

    /// Every stored telemetry row of `device`.
    pub fn telemetry_rows(&self, device: &str) -> Vec<Value> {
        let r = self.op(&["telemetry", "--device", device, "--from-start"]);
        assert!(r.ok, "telemetry failed: {}", r.stderr);
        r.json
    }

    pub fn stats(&self) -> Value {
        let r = self.op(&["stats"]);
        assert!(r.ok, "stats failed: {}", r.stderr);
        r.json[0].clone()
    }
}

/// What an operator command printed.
#[derive(Debug)]
pub struct OpResult {
    pub ok: bool,
    /// The exit code (see the README's exit codes).
    pub code: Option<i32>,
    /// A list's items, or the one object printed.
    pub json: Vec<Value>,
    pub stderr: String,
}

/// `fleetmq-agent status` of the agent whose data directory is `data`.
pub fn agent_status(data: &Path) -> Value {
    let out = run_ok(agent_command().arg("status").arg("--data-dir").arg(data));
    serde_json::from_slice(&out.stdout).expect("status is JSON")
}

/// Config for a test agent: fast timers, exec of a few harmless programs.
/// [`agent_config`] for an agent that connects every hub socket, as an
/// agent older than one connection does (`one_connection = false`).
pub fn agent_config_on_five(extra: &str) -> String {
    format!("one_connection = false\n{}", agent_config(extra))
}

pub fn agent_config(extra: &str) -> String {
    format!(
        "[telemetry]\nsample_interval_ms = 200\nflush_interval_ms = 100\nack_timeout_ms = 500\n\
         [presence]\nheartbeat_ms = 300\n\
         [jobs]\nallow = [\"echo\", \"exec\"]\n\
         [commands]\nallow = [\"ping\", \"status\", \"exec\"]\n\
         [exec]\nprograms = [\"echo\", \"sleep\", \"mkdir\"]\ntimeout_ms = 20000\n\
         [ingest]\nudp = \"127.0.0.1:0\"\n{extra}"
    )
}

/// `fleetmq-agent`, behind `FLEETMQ_AGENT_RUNNER` (e.g. a QEMU) if set.
pub fn agent_command() -> Command {
    program("fleetmq-agent", "FLEETMQ_AGENT_BIN", "FLEETMQ_AGENT_RUNNER")
}

/// `fleetmq-hub`, behind `FLEETMQ_HUB_RUNNER` if set.
pub fn hub_command() -> Command {
    program("fleetmq-hub", "FLEETMQ_HUB_BIN", "FLEETMQ_HUB_RUNNER")
}

/// The binary `name` (see [`bin`]) behind the runner prefix in `runner_env`.
fn program(name: &str, bin_env: &str, runner_env: &str) -> Command {
    let runner: Vec<String> = std::env::var(runner_env)
        .map(|r| r.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let path = bin(name, bin_env);
    match runner.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(&path);
            c
        }
        None => Command::new(&path),
    }
}

/// Runs `cmd` to its end and requires it to succeed; the failure shows the
/// command and what it printed on stderr.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh temporary directory named with `prefix`, removed on drop.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}

/// Starts an agent (`run`, or `chat` with stdin piped) for `device` in `dir`.
pub fn start_agent(
    link: &Link,
    dir: &Path,
    device: &str,
    mode: &str,
    config: &str,
    groups: &[&str],
) -> Proc {
    start_agent_in(&[], link, dir, device, mode, config, groups)
}

/// [`start_agent`] behind `prefix`, e.g. `ip netns exec NAME` to run the
/// agent in a network namespace.
pub fn start_agent_in(
    prefix: &[&str],
    link: &Link,
    dir: &Path,
    device: &str,
    mode: &str,
    config: &str,
    groups: &[&str],
) -> Proc {
    let (cmd, log) = agent_command_in(prefix, link, dir, device, mode, config, groups);
    spawn(device, cmd, log, mode == "chat")
}

/// `fleetmq-agent chat` for `device` on `link` with `extra` arguments
/// (e.g. `--wait 5s`), its stdin piped.
pub fn start_chat(link: &Link, dir: &Path, device: &str, config: &str, extra: &[&str]) -> Proc {
    let (mut cmd, log) = agent_command_in(&[], link, dir, device, "chat", config, &[]);
    cmd.args(extra);
    spawn(device, cmd, log, true)
}

/// The command [`start_agent_in`] runs, with the log file it writes.
fn agent_command_in(
    prefix: &[&str],
    link: &Link,
    dir: &Path,
    device: &str,
    mode: &str,
    config: &str,
    groups: &[&str],
) -> (Command, PathBuf) {
    let home = dir.join(device);
    std::fs::create_dir_all(&home).expect("creating agent dir");
    let cfg = home.join("agent.toml");
    std::fs::write(&cfg, config).expect("writing agent config");
    let agent = agent_command();
    let mut cmd = match prefix.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(agent.get_program()).args(agent.get_args());
            c
        }
        None => agent,
    };
    cmd.arg(mode)
        .arg("--config")
        .arg(&cfg)
        .args(["--hub", &link.telemetry, "--device-id", device])
        .arg("--data-dir")
        .arg(home.join("data"))
        .env("FLEETMQ_LOG", "debug");
    match &link.hub_key {
        Some(key) => {
            if link.enrol {
                link.enrol(&home.join("data"), device);
            }
            cmd.args(["--hub-key", key]);
        }
        None => {
            cmd.arg("--insecure");
        }
    }
    for g in groups {
        cmd.args(["--group", g]);
    }
    let n = std::fs::read_dir(&home).map(|d| d.count()).unwrap_or(0);
    (cmd, home.join(format!("agent-{n}.log")))
}

/// The architecture the agent under test reports: `FLEETMQ_AGENT_ARCH` when
/// it is a cross build (aarch64, armv7, armv6), else this machine's.
pub fn agent_arch() -> String {
    std::env::var("FLEETMQ_AGENT_ARCH").unwrap_or_else(|_| std::env::consts::ARCH.to_string())
}

/// `GET path` from a hub's `http://HOST:PORT`: the status and the body.
pub fn http(method: &str, url: &str, path: &str) -> (u16, String) {
    http_with(method, url, path, &[])
}

/// [`http`] with extra header lines (a `Host:` line among them replaces
/// the address).
pub fn http_with(method: &str, url: &str, path: &str, headers: &[&str]) -> (u16, String) {
    use std::io::Read;
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connecting to the hub's HTTP");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let named = headers.iter().any(|h| h.starts_with("Host:"));
    let host = if named {
        String::new()
    } else {
        format!("Host: {addr}\r\n")
    };
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(s, "{method} {path} HTTP/1.0\r\n{host}{extra}\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("an HTTP answer");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// A small tmpfs mounted at a directory (made if missing) and unmounted
/// when dropped: a disk that fills up. Mounting needs root, which the test
/// suite has (scripts/test.sh runs as root).
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(path).expect("making the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs at {} failed (the full-disk tests need root, as scripts/test.sh runs): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Fills it to the last byte with a file of its own; returns the file
    /// (remove it to give the room back).
    pub fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).expect("creating the filler");
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        // Whatever a whole page could not take.
        while f.write_all(&chunk[..1]).is_ok() {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Waits until the agent with data directory `data` answers `status`.
pub fn wait_status(data: &Path) {
    wait_for("the agent answering status", || {
        let out = agent_command()
            .arg("status")
            .arg("--data-dir")
            .arg(data)
            .output();
        out.ok().filter(|o| o.status.success()).map(|_| ())
    });
}

/// A TCP endpoint on loopback where nothing listens (a hub that is away).
pub fn nobody_listening() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    let port = l.local_addr().expect("its address").port();
    format!("tcp://127.0.0.1:{port}")
}
