//! The fleet page in a real browser: Debian's headless Chromium opens the
//! page a hub serves, while real agents report to that hub. The test drives
//! Chromium over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
//! commands go in on fd 3, answers and events come out on fd 4, each one a
//! JSON text ended by a NUL byte), so it needs no WebDriver and no port.
//!
//! It checks what an operator looks at: both devices listed as online, a
//! metric's chart gaining points as new samples arrive, the chat line, the
//! job and the command. It saves a screenshot next to the test output.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleetmq_tests::*;
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(180);
/// How long the page may take to show what a step waits for.
const PAGE_WAIT_MS: u64 = 30_000;

/// Debian's chromium, or the browser `FLEETMQ_CHROMIUM` names.
fn chromium() -> String {
    std::env::var("FLEETMQ_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// A pipe whose ends close on exec; returns (read, write).
fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    (fds[0], fds[1])
}

/// Makes `fd` the child's descriptor `target`, open across exec.
fn place(fd: RawFd, target: RawFd) -> std::io::Result<()> {
    // SAFETY: plain descriptor calls between fork and exec.
    let rc = unsafe {
        if fd == target {
            libc::fcntl(fd, libc::F_SETFD, 0)
        } else {
            libc::dup2(fd, target)
        }
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

struct Browser {
    child: Child,
    to: File,
    from: BufReader<File>,
    next_id: u64,
    session: String,
    /// Events read while waiting for an answer, oldest first.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts headless Chromium and opens `url` in a new tab.
    fn open(url: &str) -> Browser {
        let profile = temp_dir("fleetmq-chromium-");
        let (cmd_read, cmd_write) = pipe();
        let (out_read, out_write) = pipe();
        let mut cmd = Command::new(chromium());
        cmd.args([
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // SAFETY: only async-signal-safe descriptor calls run in the child.
        unsafe {
            cmd.pre_exec(move || {
                place(cmd_read, 3)?;
                place(out_write, 4)
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "starting {}: {e}; install Debian's chromium (scripts/test.sh does)",
                chromium()
            )
        });
        // SAFETY: each descriptor is ours alone from here on.
        let (to, from) = unsafe {
            libc::close(cmd_read);
            libc::close(out_write);
            (File::from_raw_fd(cmd_write), File::from_raw_fd(out_read))
        };
        let mut browser = Browser {
            child,
            to,
            from: BufReader::new(from),
            next_id: 0,
            session: String::new(),
            events: Vec::new(),
            _profile: profile,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        // Scripts may run only once the page has loaded.
        browser.call("Page.enable", json!({}));
        browser.call("Page.navigate", json!({ "url": url }));
        browser.wait_event("Page.loadEventFired");
        browser
    }

    /// Reads one message from Chromium.
    fn read(&mut self, doing: &str) -> Value {
        let mut raw = Vec::new();
        let n = self
            .from
            .read_until(0, &mut raw)
            .unwrap_or_else(|e| panic!("{doing}: reading from Chromium: {e}"));
        assert!(n > 0, "{doing}: Chromium closed its pipe");
        raw.pop();
        serde_json::from_slice(&raw)
            .unwrap_or_else(|e| panic!("{doing}: Chromium sent {raw:?}: {e}"))
    }

    /// Waits for the page's event `method`.
    fn wait_event(&mut self, method: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
            return self.events.remove(i);
        }
        loop {
            let msg = self.read(method);
            if msg["method"] == method {
                return msg;
            }
        }
    }

    /// Sends one command (to the page once attached) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("{method}: writing to Chromium: {e}"));
        loop {
            let answer = self.read(method);
            if answer.get("method").is_some() {
                self.events.push(answer);
                continue;
            }
            if answer["id"] != id {
                continue; // another session's answer
            }
            if let Some(err) = answer.get("error") {
                panic!("{method} failed: {err}");
            }
            return answer["result"].clone();
        }
    }

    /// Evaluates `probe` (a JS expression) in the page until `done` (a JS
    /// function of the probe's value) is true, re-checking whenever the page
    /// changes; returns the value. Fails with the last value seen after
    /// [`PAGE_WAIT_MS`].
    fn wait_until(&mut self, what: &str, probe: &str, done: &str) -> Value {
        let expression = format!(
            r#"new Promise(resolve => {{
                const probe = () => {probe};
                const done = {done};
                let settled = false;
                const check = () => {{
                    if (settled) return;
                    const v = probe();
                    if (done(v)) {{ settled = true; observer.disconnect(); resolve({{ ok: true, v }}); }}
                }};
                const observer = new MutationObserver(check);
                observer.observe(document.body, {{ subtree: true, childList: true, attributes: true, characterData: true }});
                setTimeout(() => {{ if (!settled) {{ settled = true; observer.disconnect(); resolve({{ ok: false, v: probe() }}); }} }}, {PAGE_WAIT_MS});
                check();
            }})"#
        );
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
        );
        if let Some(e) = result.get("exceptionDetails") {
            panic!("{what}: the probe threw: {e}");
        }
        let answer = &result["result"]["value"];
        assert!(
            answer["ok"] == true,
            "{what}: not shown within {PAGE_WAIT_MS} ms; the page showed {}",
            answer["v"]
        );
        answer["v"].clone()
    }

    /// A PNG of the page as it is now.
    fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        decode_base64(shot["data"].as_str().expect("screenshot data"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("Chromium's screenshot is base64")
}

/// Where the screenshot goes: cargo's scratch directory for integration
/// tests (target/tmp), which the test run prints.
fn screenshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fleet-page.png")
}

/// What the page shows of each device: state, and per metric how many
/// points its chart has and its last value.
const DEVICES: &str = r#"Object.fromEntries([...document.querySelectorAll("tr[data-device]")].map(r => [
    r.dataset.device,
    {
        state: r.children[1].textContent,
        charts: Object.fromEntries([...r.querySelectorAll("span.metric")].map(s => [
            s.dataset.metric,
            { points: +s.querySelector("svg").dataset.points, last: s.querySelector("svg").dataset.last },
        ])),
    },
]))"#;

#[test]
fn the_fleet_page_shows_devices_live_charts_chat_jobs_and_commands() {
    let _w = watchdog("browser", LIMIT);
    let dir = temp_dir("fleetmq-browser-");
    let hub = Hub::start(dir.path(), "");
    // Host metrics often, so that the charts in the rows move.
    let fast = agent_config("[host]\ninterval_ms = 300\n");
    let _a = start_agent(&hub.link(), dir.path(), "pi-b1", "run", &fast, &[]);
    let _b = start_agent(&hub.link(), dir.path(), "pi-b2", "run", &fast, &[]);
    hub.wait_answering("pi-b1");
    hub.wait_answering("pi-b2");
    let mut chat = hub.chat_agent("pi-b3", &[]);
    chat.write_line("hello from the browser test");
    let job = hub.op(&["job", "submit", "--wait", "echo", "page job"]);
    assert!(job.ok, "{}", job.stderr);
    let ping = hub.op(&["command", "pi-b2", "ping"]);
    assert!(ping.ok, "{}", ping.stderr);

    let mut page = Browser::open(&format!("{}/", hub.endpoints["http"]));
    let shown = page.wait_until(
        "both devices online",
        DEVICES,
        r#"d => ["pi-b1", "pi-b2"].every(id => d[id] && d[id].state === "online")"#,
    );
    let first = shown["pi-b1"]["charts"]["host.mem.used_pct"]["points"]
        .as_u64()
        .unwrap_or(0);
    // The chart gains points as the agent's newer samples arrive.
    let later = page.wait_until(
        "pi-b1's memory chart to gain two points",
        DEVICES,
        &format!(
            r#"d => d["pi-b1"] && d["pi-b1"].charts["host.mem.used_pct"] && d["pi-b1"].charts["host.mem.used_pct"].points >= {}"#,
            first + 2
        ),
    );
    let chart = &later["pi-b1"]["charts"]["host.mem.used_pct"];
    assert!(
        chart["last"].as_str().unwrap().parse::<f64>().unwrap() > 0.0,
        "{chart}"
    );
    page.wait_until(
        "the chat line",
        r#"document.getElementById("chat").textContent"#,
        r#"t => t.includes("hello from the browser test") && t.includes("pi-b3")"#,
    );
    page.wait_until(
        "the job",
        r#"document.getElementById("jobs").textContent"#,
        r#"t => t.includes("echo page job") && t.includes("done")"#,
    );
    page.wait_until(
        "the command",
        r#"document.getElementById("commands").textContent"#,
        r#"t => t.includes("pi-b2") && t.includes("ping") && t.includes("pong")"#,
    );

    let png = page.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let path = screenshot_path();
    std::fs::write(&path, &png).expect("saving the screenshot");
    println!("screenshot of the fleet page: {}", path.display());
}
