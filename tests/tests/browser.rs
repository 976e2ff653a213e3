//! The fleet page in a real browser: Debian's headless Chromium opens the
//! page a hub serves, while real agents report to that hub. The test drives
//! Chromium over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
//! commands go in on fd 3, answers and events come out on fd 4, each one a
//! JSON text ended by a NUL byte), so it needs no WebDriver and no port.
//!
//! It checks what an operator looks at: the fleet view (devices online with
//! their key metrics, search, sort), a device's own view (charts of its
//! series read from the store, with units and a readout under the pointer,
//! its configuration, log lines and work), jobs and commands in words with an opened
//! one staying open across refreshes, the front-ends of a cluster and
//! where each device is connected, and the fleet view of 5,000 devices
//! from a swarm (the times to first render and to an update are printed).
//! It saves screenshots next to the test output.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
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
            "--window-size=1400,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        // Its own temporary files go with the profile, and its helpers
        // are in a group of their own, so the test leaves nothing behind.
        .env("TMPDIR", profile.path())
        .process_group(0)
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

    /// Evaluates `expression` in the page and returns its value.
    /// Waits for the button `id`, clicks it, and returns the question the
    /// page asks before it sends anything.
    fn ask_by(&mut self, what: &str, id: &str) -> String {
        let button = format!(r#"document.getElementById("{id}")"#);
        self.wait_until(what, &format!("!!{button}"), "b => b");
        let question = self.eval(&format!(
            r#"(() => {{ {button}.click(); return document.getElementById("a-question").textContent; }})()"#
        ));
        question.as_str().unwrap_or_default().to_string()
    }

    fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "awaitPromise": true, "returnByValue": true }),
        );
        if let Some(e) = result.get("exceptionDetails") {
            panic!("{expression}: threw {e}");
        }
        result["result"]["value"].clone()
    }

    /// Saves a PNG of the page as it is now as `name` in the test's
    /// scratch directory.
    fn save_screenshot(&mut self, name: &str) {
        let png = self.screenshot();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, &png).expect("saving the screenshot");
        println!("screenshot: {}", path.display());
    }

    /// A PNG of the page as it is now.
    fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        decode_base64(shot["data"].as_str().expect("screenshot data"))
    }
}

impl Drop for Browser {
    /// Asks Chromium to close, which ends its helpers and removes what it
    /// wrote, and waits for its pipe to close (up to 10 s); then kills
    /// whatever of its group is left, before the profile is removed.
    fn drop(&mut self) {
        let close = json!({ "id": u64::MAX, "method": "Browser.close" });
        let mut bytes = serde_json::to_vec(&close).unwrap_or_default();
        bytes.push(0);
        if self.to.write_all(&bytes).is_ok() {
            let fd = self.from.get_ref().as_raw_fd();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let mut sink = Vec::new();
            while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
                let mut pfd = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = left.as_millis().clamp(1, 10_000) as libc::c_int;
                // SAFETY: one pollfd of a descriptor this Browser owns.
                if unsafe { libc::poll(&mut pfd, 1, ms) } <= 0 {
                    break;
                }
                sink.clear();
                match self.from.read_until(0, &mut sink) {
                    Ok(0) | Err(_) => break, // closed: Chromium has ended
                    Ok(_) => {}
                }
            }
        }
        // SAFETY: the group Chromium leads, made at its spawn.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn decode_base64(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("Chromium's screenshot is base64")
}

/// What the fleet view shows of each device on its page: state and the
/// key metrics' cells.
const DEVICES: &str = r##"Object.fromEntries([...document.querySelectorAll("#devices tr[data-device]")].map(r => [
    r.dataset.device,
    { state: r.children[1].textContent, cpu: r.children[6].textContent, mem: r.children[7].textContent },
]))"##;

/// The devices the fleet view lists now, in order.
const ROWS: &str = r##"[...document.querySelectorAll("#devices tr")].map(r => r.dataset.device)"##;

#[test]
fn the_console_shows_the_fleet_a_device_with_charts_and_work_in_words() {
    let _w = watchdog("browser", LIMIT);
    let dir = temp_dir("fleetmq-browser-");
    // A reader's token and an admin's.
    std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
    std::fs::write(dir.path().join("data/read.token"), format!("{READ}\n")).expect("token");
    std::fs::write(dir.path().join("data/admin.token"), format!("{ADMIN}\n")).expect("token");
    let hub = Hub::start(
        dir.path(),
        "[security]\nhttp_token_file = \"read.token\"\nhttp_admin_token_file = \"admin.token\"\n",
    );
    // Host metrics often, so that the charts move.
    let fast = agent_config("[host]\ninterval_ms = 300\n");
    // pi-b1 follows a log file, read back on its page.
    let app_log = dir.path().join("pi-b1-app.log");
    std::fs::write(&app_log, "").expect("pi-b1's log file");
    let logging = format!(
        "{fast}[logs]\nfiles = [{:?}]\npoll_ms = 200\n",
        app_log.to_string_lossy()
    );
    let _a = start_agent(
        &hub.link(),
        dir.path(),
        "pi-b1",
        "run",
        &logging,
        &["north"],
    );
    let _b = start_agent(&hub.link(), dir.path(), "pi-b2", "run", &fast, &["south"]);
    hub.wait_answering("pi-b1");
    hub.wait_answering("pi-b2");
    let mut chat = hub.chat_agent("pi-b3", &[]);
    chat.write_line("hello from the browser test");
    let job = hub.op(&["job", "submit", "--wait", "echo", "page job"]);
    assert!(job.ok, "{}", job.stderr);
    let refused = hub.op(&[
        "job", "submit", "--device", "pi-b2", "exec", "--", "uname", "-a",
    ]);
    assert!(refused.ok, "{}", refused.stderr);
    let ping = hub.op(&["command", "pi-b2", "ping"]);
    assert!(ping.ok, "{}", ping.stderr);

    // The fleet view, for a reader: every device with its state and key
    // metrics, and nothing to act with.
    let mut page = Browser::open(&format!("{}/#token={READ}", hub.endpoints["http"]));
    page.wait_until(
        "both devices online, with CPU and memory",
        DEVICES,
        r#"d => ["pi-b1", "pi-b2"].every(id => d[id] && d[id].state === "online" && d[id].mem.endsWith("%"))"#,
    );
    let me = page.eval(r#"(async () => (await get("/api/me")).role)()"#);
    assert_eq!(me, "read");
    assert_eq!(
        page.eval(r#"document.getElementById("actions").hidden"#),
        json!(true),
        "a reader is shown no actions"
    );
    // The header: what the store holds, what came since the start, and a
    // store that cannot be written said in words (a full disk, as the hub
    // reports it in stats: here put into the page's answer).
    page.wait_until(
        "the header",
        r#"document.getElementById("summary").textContent"#,
        r#"t => /devices online · [\d.]+ (B|KiB|MiB) of telemetry stored · \d+ samples since start · .* up \d+ s$/.test(t)"#,
    );
    page.eval(
        r#"(() => { window.realFetch = window.fetch;
        window.fetch = async (path, o) => { const r = await window.realFetch(path, o);
            if (!String(path).startsWith("/api/stats")) return r;
            const s = await r.json(); s.storage_problem = "disk full (test)";
            return new Response(JSON.stringify(s), { status: 200 }); }; })()"#,
    );
    page.wait_until(
        "a storage problem said",
        r#"document.getElementById("error").textContent"#,
        r#"t => t.includes("cannot store telemetry: disk full (test)") && t.includes("send it again")"#,
    );
    page.eval("window.fetch = window.realFetch");
    page.wait_until(
        "the storage problem gone once the hub stores again",
        r#"document.getElementById("error").textContent"#,
        r#"t => t === """#,
    );
    page.wait_until(
        "the chat line",
        r#"document.getElementById("chat").textContent"#,
        r#"t => t.includes("hello from the browser test") && t.includes("pi-b3")"#,
    );
    // Search, and a group filter.
    page.eval(r#"(() => { const q = document.getElementById("q"); q.value = "b2"; q.dispatchEvent(new Event("input")); })()"#);
    let shown = page.eval(ROWS);
    assert_eq!(shown, json!(["pi-b2"]), "search");
    // From three characters on, what a device is: every agent here runs
    // this machine's kernel.
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("the kernel");
    page.eval(&format!(
        r#"(() => {{ const q = document.getElementById("q"); q.value = {}; q.dispatchEvent(new Event("input")); }})()"#,
        json!(kernel.trim())
    ));
    let mut shown: Vec<String> = serde_json::from_value(page.eval(ROWS)).expect("rows");
    shown.sort();
    assert_eq!(shown, ["pi-b1", "pi-b2", "pi-b3"], "search by kernel");
    // A search written as filters shows whom the hub's filters pick.
    let search = |page: &mut Browser, q: &str| {
        page.eval(&format!(
            r#"(() => {{ const q = document.getElementById("q"); q.value = {}; q.dispatchEvent(new Event("input")); }})()"#,
            json!(q)
        ));
    };
    search(&mut page, &format!("kernel={}, memory>1M", kernel.trim()));
    let picked = page.wait_until("the rows the filters pick", ROWS, "r => r.length === 3");
    let mut picked: Vec<String> = serde_json::from_value(picked).expect("rows");
    picked.sort();
    assert_eq!(picked, ["pi-b1", "pi-b2", "pi-b3"], "search by filters");
    search(&mut page, "kernel!=0");
    page.wait_until("a negative filter", ROWS, "r => r.length === 3");
    search(&mut page, "kernel=0");
    page.wait_until(
        "no device on kernel 0",
        r#"document.getElementById("page").textContent"#,
        r#"t => t === "no device matches""#,
    );
    search(&mut page, "colour=red");
    page.wait_until(
        "why a filter is not one",
        r#"document.getElementById("page").textContent"#,
        r#"t => t.startsWith('search: where: filter "colour=red": no field "colour"')"#,
    );
    page.eval(r#"(() => { const q = document.getElementById("q"); q.value = ""; q.dispatchEvent(new Event("input"));
        const g = document.getElementById("f-group"); g.value = "north"; g.dispatchEvent(new Event("change")); })()"#);
    let shown = page.eval(ROWS);
    assert_eq!(shown, json!(["pi-b1"]), "group filter");
    page.eval(r#"(() => { const g = document.getElementById("f-group"); g.value = ""; g.dispatchEvent(new Event("change"));
        document.querySelector('th[data-sort="id"]').click(); })()"#);
    let shown = page.eval(ROWS);
    assert_eq!(shown[0], "pi-b3", "sorted by device, descending: {shown}");
    page.save_screenshot("fleet-view.png");

    // A device's own view: a chart of each series from the store, with
    // its unit on the axis and a readout under the pointer.
    page.eval(r##"location.hash = "#/device/pi-b1""##);
    let chart = r#"(() => { const c = document.querySelector('[data-series="host.mem.used_pct"]');
        // The card is placed before its series arrives; its axis is drawn with it.
        if (!c) return null; const svg = c.querySelector("svg"); if (!svg.querySelector(".axis")) return null;
        return { points: +(svg.dataset.points || 0), axis: svg.querySelector(".axis").textContent, readout: c.querySelector(".readout").textContent }; })()"#;
    let seen = page.wait_until(
        "pi-b1's memory chart with points",
        chart,
        "c => c && c.points >= 2",
    );
    assert!(seen["axis"].as_str().unwrap().contains('%'), "{seen}");
    assert!(seen["readout"].as_str().unwrap().contains('%'), "{seen}");
    assert_eq!(
        page.eval(r#"!!document.getElementById("revoke-device")"#),
        false,
        "a reader is not offered to revoke a device"
    );
    let hovered = page.eval(r#"(() => { const svg = document.querySelector('[data-series="host.mem.used_pct"] svg');
        const b = svg.getBoundingClientRect();
        svg.dispatchEvent(new MouseEvent("mousemove", { clientX: b.left + b.width * 0.95, clientY: b.top + 20 }));
        return { shown: svg.querySelector(".cursor").getAttribute("visibility"), readout: svg.parentNode.querySelector(".readout").textContent }; })()"#);
    assert_eq!(
        hovered["shown"], "visible",
        "the cursor follows the pointer: {hovered}"
    );
    // Every chart's three value ticks read differently: a flat series (the
    // disk's size) and one that moves by a few KiB in GiB (memory available).
    let ticks = page.wait_until(
        "every chart of pi-b1 drawn",
        r#"[...document.querySelectorAll('#d-charts [data-series]')].map(c =>
            [c.dataset.series, [...c.querySelectorAll('.axis text')].slice(0, 3).map(t => t.textContent)])"#,
        "cs => cs.length >= 5 && cs.every(([, t]) => t.length === 3)",
    );
    for chart in ticks.as_array().unwrap() {
        let labels: Vec<&str> = chart[1]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        assert!(
            labels[0] != labels[1] && labels[1] != labels[2] && labels[0] != labels[2],
            "{}'s axis repeats a value: {labels:?}",
            chart[0]
        );
    }
    // Bytes through an interface count up since boot: charted per second,
    // once two of its buckets are in (the charts are read every 10 s).
    let rate = page.wait_until(
        "pi-b1's received bytes as a rate",
        r#"(() => { const c = document.querySelector('[data-series^="host.net.rx_bytes"]');
        return c && c.querySelector(".axis") && { title: c.querySelector("h3").textContent, axis: c.querySelector(".axis").textContent,
            readout: c.querySelector(".readout").textContent, last: c.querySelector("svg").dataset.last }; })()"#,
        r#"c => c && c.last !== """#,
    );
    assert!(
        rate["title"].as_str().unwrap().ends_with("per second")
            && rate["axis"].as_str().unwrap().contains("B/s")
            && rate["readout"].as_str().unwrap().contains("B/s"),
        "an interface's bytes are charted as a rate: {rate}"
    );
    let last: f64 = rate["last"].as_str().unwrap().parse().unwrap();
    assert!(last >= 0.0, "a rate is never negative: {rate}");
    page.wait_until(
        "pi-b1's facts and configuration",
        r#"document.getElementById("d-facts").textContent + "|" + document.getElementById("d-config").textContent"#,
        r#"t => t.includes("online since") && t.includes("north") && t.includes("desired version")"#,
    );
    // Its clock, measured from its heartbeats: on this machine, the hub's.
    page.wait_until(
        "pi-b1's clock in step with the hub's",
        r#"(document.getElementById("d-clock") || {}).textContent"#,
        r#"t => t === "in step with the hub's""#,
    );
    assert_eq!(
        page.eval(r#"document.getElementById("d-address").textContent"#),
        "127.0.0.1",
        "where it connects from"
    );
    // What its agent said it is: this machine's kernel.
    let system = page.eval(r#"document.getElementById("d-system").textContent"#);
    assert!(
        (system.as_str().unwrap_or_default()).ends_with(&format!(" · kernel {}", kernel.trim())),
        "its OS and kernel: {system}"
    );
    let hardware = page.eval(r#"document.getElementById("d-hardware").textContent"#);
    assert!(
        hardware.as_str().unwrap_or_default().contains(" memory"),
        "its hardware and memory: {hardware}"
    );
    page.wait_until(
        "pi-b1's connects and disconnects",
        r#"document.getElementById("d-presence").textContent"#,
        r#"t => t.includes("online") && t.includes("hello")"#,
    );
    std::fs::write(&app_log, "pump started\nvalve <b>open</b>\n").expect("pi-b1's log lines");
    page.wait_until(
        "pi-b1's log lines, newest first, as text",
        r##"[...document.querySelectorAll("#d-logs tr")].map(r => r.textContent).join("|")"##,
        r#"t => /valve <b>open<\/b>.*\|.*pump started/.test(t)"#,
    );
    page.eval(r#"(() => { const g = document.getElementById("d-grep"); g.value = "pump"; g.dispatchEvent(new Event("input")); })()"#);
    page.wait_until(
        "only the lines holding what was typed",
        r##"[...document.querySelectorAll("#d-logs tr")].map(r => r.textContent).join("|")"##,
        r#"t => t.includes("pump started") && !t.includes("valve")"#,
    );
    page.save_screenshot("device-view.png");

    // The range reads the store again.
    page.eval(r#"document.querySelector('#d-range [data-range="86400000"]').click()"#);
    page.wait_until(
        "the 24 h range",
        r#"document.querySelector('#d-range .active').textContent + "|" + (document.querySelector('[data-series="host.mem.used_pct"] .axis')?.textContent ?? "")"#,
        r#"t => t.startsWith("24 h|") && /[A-Z][a-z]{2} \d/.test(t)"#,
    );

    // The fleet's log lines: every device's, each naming its device, then
    // filtered, then followed (a line written now comes without a reload).
    page.eval(r##"location.hash = "#/logs""##);
    page.wait_until(
        "the fleet's log lines, newest first, each with its device",
        r##"[...document.querySelectorAll("#l-lines tr")].map(r => r.textContent + "@" + (r.querySelector("a")?.getAttribute("href") ?? "")).join("|")"##,
        r##"t => /valve <b>open<\/b>@#\/device\/pi-b1\|.*pump started@#\/device\/pi-b1/.test(t)"##,
    );
    page.eval(r#"(() => { const g = document.getElementById("l-grep"); g.value = "pump"; g.dispatchEvent(new Event("input")); })()"#);
    page.wait_until(
        "only the fleet's lines holding what was typed",
        r##"[...document.querySelectorAll("#l-lines tr")].map(r => r.textContent).join("|")"##,
        r#"t => t.includes("pump started") && !t.includes("valve")"#,
    );
    let mut more = std::fs::OpenOptions::new()
        .append(true)
        .open(&app_log)
        .expect("pi-b1's log file");
    std::io::Write::write_all(&mut more, b"valve shut\npump stopped\n").expect("more log lines");
    page.wait_until(
        "a line written now, followed in, on top",
        r##"[...document.querySelectorAll("#l-lines tr")].map(r => r.textContent).join("|")"##,
        r#"t => /^[^|]*pump stopped\|[^|]*pump started$/.test(t)"#,
    );
    page.save_screenshot("logs-view.png");

    // Work in words: the refused job says refused, the command pong; a job
    // opened stays open across refreshes.
    page.eval(r##"location.hash = "#/work""##);
    let jobs = page.wait_until(
        "the jobs",
        r#"document.getElementById("jobs").textContent"#,
        r#"t => t.includes("echo page job") && t.includes("done") && t.includes("refused")"#,
    );
    assert!(
        !jobs.as_str().unwrap().contains("{\""),
        "no raw JSON: {jobs}"
    );
    page.wait_until(
        "the command",
        r#"document.getElementById("commands").textContent"#,
        r#"t => t.includes("pi-b2") && t.includes("ping") && t.includes("pong")"#,
    );
    let opened = page.eval(r#"(() => { const d = document.querySelector('#jobs details.item');
        d.querySelector("summary").click(); return { key: d.dataset.item, refreshes: window.fleetmq.refreshes }; })()"#);
    let key = opened["key"].as_str().unwrap().to_string();
    let after = opened["refreshes"].as_u64().unwrap() + 2;
    page.wait_until(
        "two more refreshes",
        "window.fleetmq.refreshes",
        &format!("n => n >= {after}"),
    );
    let still = page.eval(&format!(
        r#"document.querySelector('[data-item="{key}"]').open"#
    ));
    assert_eq!(still, json!(true), "an opened job stays open");
    page.save_screenshot("work-view.png");
    drop(page);

    // An admin acts from the page: each action shown in words and sent
    // only once confirmed.
    let mut admin = Browser::open(&format!("{}/#token={ADMIN}", hub.endpoints["http"]));
    admin.eval(r##"location.hash = "#/device/pi-b1""##);
    admin.wait_until(
        "the actions, aimed at pi-b1",
        r#"document.getElementById("actions").hidden ? "" : document.getElementById("a-target").value"#,
        r#"t => t === "device:pi-b1""#,
    );
    let act = |page: &mut Browser, target: &str, kind: &str, text: &str| -> Value {
        page.eval(&format!(
            r#"(() => {{ document.getElementById("a-target").value = {target:?};
                document.getElementById("a-kind").value = {kind:?};
                document.getElementById("a-text").value = {text:?};
                document.getElementById("a-review").click();
                return document.getElementById("a-question").textContent; }})()"#
        ))
    };
    let confirming = r#"document.getElementById("a-confirm").offsetParent !== null"#;
    assert_eq!(
        admin.eval(confirming),
        json!(false),
        "nothing to confirm yet"
    );
    let question = act(&mut admin, "device:pi-b1", "ping", "");
    assert_eq!(admin.eval(confirming), json!(true), "asked before sending");
    assert_eq!(question, "Really ping device pi-b1?");
    admin.eval(r#"document.getElementById("a-send").click()"#);
    admin.wait_until(
        "the ping's answer",
        r#"document.getElementById("a-result").textContent"#,
        r#"t => t === "pi-b1: pong""#,
    );
    assert_eq!(admin.eval(confirming), json!(false));
    // Cancelled: nothing is sent.
    let question = act(&mut admin, "all", "broadcast", "not sent");
    assert_eq!(question, "Really announce “not sent” to every device?");
    admin.eval(r#"document.getElementById("a-cancel").click()"#);
    // Narrowed by what the devices are: north's devices on this kernel.
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let only = format!("kernel={}", kernel.trim());
    let set_where = |page: &mut Browser, filters: &str| {
        page.eval(&format!(
            r#"(() => {{ const w = document.getElementById("a-where");
                w.value = {filters:?}; w.dispatchEvent(new Event("input")); }})()"#
        ));
    };
    let says = r#"document.getElementById("a-where-says").textContent"#;
    set_where(&mut admin, &only);
    act(&mut admin, "device:pi-b1", "ping", "");
    assert_eq!(
        admin.eval(confirming),
        json!(false),
        "not asked: a filter does not narrow one device"
    );
    assert_eq!(
        admin.eval(r#"document.getElementById("a-result").textContent"#),
        "“only where” narrows a group or every device, not one device"
    );
    // Before it is sent, the page says whom the filters pick.
    admin.eval(
        r#"(() => { const t = document.getElementById("a-target");
            t.value = "group:north"; t.dispatchEvent(new Event("change")); })()"#,
    );
    admin.wait_until(
        "whom the filters pick in north",
        says,
        r#"t => t === "matches 1: pi-b1""#,
    );
    set_where(&mut admin, "colour=red");
    admin.wait_until(
        "why a filter is not one",
        says,
        r#"t => t.includes('no field "colour"; the fields are model')"#,
    );
    set_where(&mut admin, &only);
    admin.wait_until(
        "whom they pick again",
        says,
        r#"t => t.startsWith("matches 1")"#,
    );
    let question = act(&mut admin, "group:north", "ping", "");
    assert_eq!(question, format!("Really ping group north where {only}?"));
    admin.eval(r#"document.getElementById("a-send").click()"#);
    admin.wait_until(
        "the narrowed ping sent to pi-b1 alone",
        r#"document.getElementById("a-result").textContent"#,
        r#"t => /^command \d+ sent to 1 device\(s\)/.test(t)"#,
    );
    let listed = hub.op(&["command", "--list", "1"]);
    assert_eq!(
        listed.json[0]["target"],
        format!("groups north where {only}")
    );
    set_where(&mut admin, "");
    admin.wait_until("nothing said without filters", says, r#"t => t === """#);
    let question = act(&mut admin, "group:north", "job", "echo from the page");
    assert_eq!(
        question,
        "Really submit the job “echo from the page” for group north?"
    );
    admin.eval(r#"document.getElementById("a-send").click()"#);
    let said = admin.wait_until(
        "the job's id",
        r#"document.getElementById("a-result").textContent"#,
        r#"t => /^job \d+ submitted/.test(t)"#,
    );
    let id = said
        .as_str()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .to_string();
    wait_for("the page's job done on pi-b1", || {
        let r = hub.op(&["job", "show", &id]);
        let job = r.json.first()?.clone();
        (job["runs"][0]["device"] == "pi-b1" && job["runs"][0]["state"] == "done").then_some(())
    });
    let question = act(&mut admin, "all", "broadcast", "hello from the page");
    assert_eq!(
        question,
        "Really announce “hello from the page” to every device?"
    );
    admin.eval(r#"document.getElementById("a-send").click()"#);
    admin.wait_until(
        "the announcement made",
        r#"document.getElementById("a-result").textContent"#,
        r#"t => t.startsWith("announced")"#,
    );
    chat.lines_until("the announcement at pi-b3", |l| {
        l == "[all] hello from the page"
    });
    assert!(
        !chat.log_text().contains("not sent"),
        "the cancelled announcement was not sent"
    );
    // The desired configuration of a device, set and taken out from the page.
    let question = act(
        &mut admin,
        "device:pi-b1",
        "config",
        r#"app.mode=eco app.motto="as one" -app.old"#,
    );
    assert_eq!(
        question,
        r#"Really change the configuration of device pi-b1: app.mode=eco app.motto="as one" -app.old?"#
    );
    admin.eval(r#"document.getElementById("a-send").click()"#);
    admin.wait_until(
        "the configuration's new version",
        r#"document.getElementById("a-result").textContent"#,
        r#"t => /^configuration version \d+ \(device:pi-b1\)/.test(t)"#,
    );
    admin.wait_until(
        "the device's configuration box showing the key",
        r#"document.getElementById("d-config").textContent"#,
        r#"t => t.includes("app.modeecodevice:pi-b1")"#,
    );
    let shown = hub.op(&["config", "show", "pi-b1"]);
    let entries = &shown.json[0]["entries"];
    assert!(
        (entries.as_array().into_iter().flatten())
            .any(|e| e["key"] == "app.mode" && e["value"] == "eco" && e["layer"] == "device:pi-b1"),
        "{entries:?}"
    );
    assert!(
        (entries.as_array().into_iter().flatten())
            .any(|e| e["key"] == "app.motto" && e["value"] == "as one"),
        "a quoted value keeps its space: {entries:?}"
    );
    // A device that refuses a key is picked out on the fleet view.
    let r = hub.op(&["config", "set", "--device", "pi-b2", "host.interval_ms=1"]);
    assert!(r.ok, "{}", r.stderr);
    wait_for("pi-b2 refusing an interval under its minimum", || {
        let r = hub.op(&["config", "status"]);
        let devices = r.json.first()?["devices"].as_array()?.clone();
        devices
            .iter()
            .any(|d| d["device"] == "pi-b2" && d["state"] == "failed")
            .then_some(())
    });
    admin.eval(r##"location.hash = "#/""##);
    admin.eval(
        r#"(() => { const s = document.getElementById("f-config");
            s.value = "failed"; s.onchange({ target: s }); })()"#,
    );
    admin.wait_until(
        "only the device whose configuration failed, counted in the filter",
        &format!(
            r#"JSON.stringify([{ROWS}, document.getElementById("f-config").selectedOptions[0].textContent])"#
        ),
        r#"t => t === JSON.stringify([["pi-b2"], "configuration failed (1)"])"#,
    );
    admin.eval(
        r#"(() => { const s = document.getElementById("f-config");
            s.value = ""; s.onchange({ target: s }); })()"#,
    );
    let r = hub.op(&["config", "unset", "--device", "pi-b2", "host.interval_ms"]);
    assert!(r.ok, "{}", r.stderr);
    admin.eval(r##"location.hash = "#/device/pi-b1""##);
    act(&mut admin, "device:pi-b1", "config", "app.mode");
    assert_eq!(admin.eval(confirming), json!(false), "nothing to confirm");
    assert_eq!(
        admin.eval(r#"document.getElementById("a-result").textContent"#),
        json!("“app.mode”: write KEY=VALUE to set a key, -KEY to take one out")
    );
    admin.save_screenshot("actions.png");
    // A job that no device takes waits; the admin calls it off from Work.
    let r = hub.op(&["job", "submit", "exec", "--", "nothing-takes-this"]);
    assert!(r.ok, "{}", r.stderr);
    let stuck = r.json[0]["id"].as_u64().expect("a job id");
    admin.eval(r##"location.hash = "#/work""##);
    admin.wait_until(
        "the waiting job's cancel button",
        &format!(r#"!!document.querySelector('button.cancel-job[data-job="{stuck}"]')"#),
        "b => b",
    );
    let question = admin.eval(&format!(
        r#"(() => {{ document.querySelector('button.cancel-job[data-job="{stuck}"]').click();
            return document.getElementById("a-question").textContent; }})()"#
    ));
    assert_eq!(
        question,
        format!("Really cancel job {stuck} “exec nothing-takes-this”?").as_str(),
        "asked in words before it is sent"
    );
    admin.eval(r#"document.getElementById("a-send").click()"#);
    admin.wait_until(
        "the job cancelled",
        r#"document.getElementById("a-result").textContent"#,
        r#"t => t.includes("cancelled: 1 not yet handed out")"#,
    );
    let job = hub.op(&["job", "show", &stuck.to_string()]);
    assert_eq!(job.json[0]["state"], "failed", "{:?}", job.json);
    assert!(
        job.json[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cancelled by an operator")),
        "{:?}",
        job.json
    );
    // Ended: no button any more.
    admin.wait_until(
        "no cancel button on an ended job",
        &format!(r#"!!document.querySelector('button.cancel-job[data-job="{stuck}"]')"#),
        "b => !b",
    );
    // A device taken out of service: revoked from its page, it is offered
    // to be forgotten, and once forgotten it is gone from the fleet.
    admin.eval(r##"location.hash = "#/device/pi-b3""##);
    let question = admin.ask_by("pi-b3's revoke button", "revoke-device");
    assert!(
        question.starts_with("Really revoke pi-b3: every key of it leaves the allow list"),
        "asked in words before it is sent: {question}"
    );
    admin.eval(r#"document.getElementById("a-send").click()"#);
    admin.wait_until(
        "pi-b3 revoked",
        r#"document.getElementById("a-result").textContent"#,
        r#"t => t === "revoked pi-b3 (1 key(s)): cut off, and refused until it is enrolled again""#,
    );
    let list = std::fs::read_to_string(hub.link().hub_data.join("allowed_devices"))
        .expect("the hub's allow list file");
    assert!(
        list.contains("# revoked pi-b3 "),
        "the hub's allow list file says so: {list}"
    );
    // A command kept for the revoked pi-b3 (once it is cut off) waits;
    // the admin calls it off from Work.
    wait_for("pi-b3 revoked and offline", || {
        let devices = hub.op(&["devices"]).json;
        let d = devices.iter().find(|d| d["id"] == "pi-b3")?;
        (d["revoked"] == true && d["online"] == false).then_some(())
    });
    let kept = hub.op(&["command", "--device", "pi-b3", "--wait-ms", "0", "ping"]);
    let kept = kept.json[0]["id"].as_u64().expect("a command id");
    admin.eval(r##"location.hash = "#/work""##);
    let button =
        format!(r#"document.querySelector('button.cancel-command[data-command="{kept}"]')"#);
    admin.wait_until(
        "the waiting command's cancel button",
        &format!("!!{button}"),
        "b => b",
    );
    let question = admin.eval(&format!(
        r#"(() => {{ {button}.click(); return document.getElementById("a-question").textContent; }})()"#
    ));
    assert_eq!(
        question,
        format!("Really cancel command {kept} “ping” for the 1 device(s) not sent it yet?")
            .as_str(),
        "asked in words before it is sent"
    );
    admin.eval(r#"document.getElementById("a-send").click()"#);
    admin.wait_until(
        "the command cancelled",
        r#"document.getElementById("a-result").textContent"#,
        r#"t => t.includes("cancelled: 1 device(s) not yet sent it will not be")"#,
    );
    admin.wait_until(
        "no cancel button once nothing waits",
        &format!("!!{button}"),
        "b => !b",
    );
    // Who did what: the cancel, on top, as the console's.
    let newest = admin.wait_until(
        "the cancel in the audit trail",
        r##"(() => { const r = document.querySelector("#audit tr"); return r ? [...r.children].map(c => c.textContent) : null; })()"##,
        &format!("r => r && r[2] === \"cancel command {kept}\""),
    );
    assert_eq!(newest[1], "console", "{newest}");
    assert_eq!(newest[3], "", "allowed: {newest}");
    admin.eval(r##"location.hash = "#/device/pi-b3""##);
    let question = admin.ask_by("pi-b3 revoked, with a forget button", "forget-device");
    assert!(
        question.starts_with("Really forget pi-b3: it leaves the fleet list"),
        "asked in words before it is sent: {question}"
    );
    admin.eval(r#"document.getElementById("a-send").click()"#);
    admin.wait_until(
        "pi-b3 forgotten",
        r#"document.getElementById("a-result").textContent"#,
        r#"t => t.startsWith("forgot pi-b3")"#,
    );
    let devices = hub.op(&["devices"]);
    assert!(
        devices.json.iter().all(|d| d["id"] != "pi-b3")
            && devices.json.iter().any(|d| d["id"] == "pi-b1"),
        "{:?}",
        devices.json
    );
    admin.wait_until(
        "pi-b3's page says the hub does not know it",
        r#"document.getElementById("d-facts").textContent"#,
        r#"t => t.includes("not known to this hub")"#,
    );

    // A new device knocks. Both pages list its key: a reader's with the
    // command that enrols it, an admin's with a box and a button that do.
    let mut stranger = hub.link();
    stranger.enrol = false;
    let newbie = start_agent(&stranger, dir.path(), "pi-b9", "run", &fast, &[]);
    newbie.wait_log("the hub refused this device's key");
    let key = std::fs::read_to_string(dir.path().join("pi-b9/data/agent.pub")).unwrap();
    let key = key.trim();
    let row = format!(r#"document.querySelector('#pending-keys tr[data-key="{key}"]')"#);
    let mut page = Browser::open(&format!("{}/#token={READ}", hub.endpoints["http"]));
    page.wait_until(
        "the reader is shown the waiting key and the command that enrols it",
        &format!("{row} && {row}.textContent"),
        &format!(
            r#"t => t && t.includes("127.0.0.1") && t.includes("fleetmq-hub allow DEVICE '{key}'")"#
        ),
    );
    assert_eq!(
        page.eval(&format!("!!{row}.querySelector('button')")),
        json!(false)
    );
    drop(page);
    admin.eval(r##"location.hash = "#/""##);
    admin.wait_until(
        "the admin is shown it with an Enrol button",
        &format!("!!({row} && {row}.querySelector('button.enrol'))"),
        "b => b",
    );
    let question = admin.eval(&format!(
        r#"(() => {{ {row}.querySelector("input.enrol-as").value = "pi-b9";
            {row}.querySelector("button.enrol").click();
            return document.getElementById("a-question").textContent; }})()"#
    ));
    assert!(
        question
            .as_str()
            .is_some_and(|q| q.starts_with(&format!("Really enrol pi-b9 with the key {key}"))),
        "asked in words before it is sent: {question}"
    );
    admin.eval(r#"document.getElementById("a-send").click()"#);
    admin.wait_until(
        "pi-b9 enrolled",
        r#"document.getElementById("a-result").textContent"#,
        r#"t => t === "enrolled pi-b9: it gets in at its next try""#,
    );
    hub.wait_answering("pi-b9");
    admin.wait_until(
        "nothing waits any more",
        r#"document.getElementById("pending-box").hidden"#,
        "h => h",
    );
    // A reader's token cannot act, whatever the page does.
    for path in [
        "/api/command",
        "/api/job/cancel",
        "/api/command/cancel",
        "/api/forget",
        "/api/enrol",
        "/api/revoke",
    ] {
        let (status, _) = http_with(
            "POST",
            &hub.endpoints["http"],
            path,
            &[&format!("Authorization: Bearer {READ}")],
        );
        assert_eq!(status, 403, "{path}");
    }
}

/// Each front-end's row in the page's front-ends table, by name.
const FRONT_ENDS: &str = r##"Object.fromEntries([...document.querySelectorAll("#front-ends tr[data-front-end]")].map(r => [
    r.dataset.frontEnd, r.children[1].textContent,
]))"##;

#[test]
fn the_console_of_a_front_end_shows_every_front_end_and_where_devices_are() {
    let _w = watchdog("browser on front-ends", LIMIT);
    let dir = temp_dir("fleetmq-browser-fe-");
    let nats = fleetmq_tests::cluster::NatsCluster::start(&dir.path().join("nats"));
    let a = fleetmq_tests::cluster::start_front_end(&dir.path().join("a"), &nats, "fe-a", None, "");
    let b = fleetmq_tests::cluster::start_front_end(
        &dir.path().join("b"),
        &nats,
        "fe-b",
        Some(&a.dir.join("data")),
        "",
    );
    let _agent = a.agent("pi-f1", &[]);
    a.wait_answering("pi-f1");

    // fe-b's page: both front-ends with the version they run, and the
    // device fe-a holds, online there, with what it said in its Hello
    // there.
    let mut page = Browser::open(&b.endpoints["http"]);
    let version = env!("CARGO_PKG_VERSION");
    page.wait_until(
        "both front-ends listed with their version",
        FRONT_ENDS,
        &format!(r#"f => f["fe-a"] === "{version}" && f["fe-b"] === "{version}""#),
    );
    page.wait_until(
        "pi-f1 online at fe-a, with the version it said there",
        r##"[...document.querySelectorAll("#devices tr[data-device='pi-f1'] td")].map(c => c.textContent)"##,
        &format!(r#"c => c[1] === "online" && c[3] === "{version}" && c[5] === "now, at fe-a""#),
    );
    // A front-end of an earlier release (its report, without version and
    // features, put into the page's answer): what it lacks, in words.
    page.eval(
        r#"(() => { const realFetch = window.fetch;
        window.fetch = async (path, o) => { const r = await realFetch(path, o);
            if (!String(path).startsWith("/api/stats")) return r;
            const s = await r.json();
            for (const f of s.front_ends) if (f.name === "fe-a") { f.version = ""; f.features = []; }
            return new Response(JSON.stringify(s), { status: 200 }); }; })()"#,
    );
    page.wait_until(
        "fe-a said to lack what fe-b applies",
        r##"[...document.querySelectorAll("#front-ends tr[data-lacks]")].map(r => r.textContent)"##,
        r#"l => l.length === 1 && l[0].startsWith("fe-a lacks job_cancel, forget, log_batches: job cancel and forget are refused")"#,
    );
    let rows = page.eval(FRONT_ENDS);
    assert_eq!(rows, json!({"fe-a": "older", "fe-b": version}));
    page.save_screenshot("front-ends.png");
}

const READ: &str = "reader-token-0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";

/// Connects `count` simulated devices to a plaintext hub's telemetry
/// ROUTER: each says Hello (with a heartbeat interval longer than the
/// test, so it stays online without beating) and sends one batch of key
/// metrics. Returns the sockets, which hold the devices online.
fn swarm(endpoint: &str, count: usize) -> (Vec<zmq::Context>, Vec<zmq::Socket>) {
    use fleetmq_protocol::{BatchBuilder, Hello, Upstream, Value as V};
    let mut contexts = Vec::new();
    let mut sockets = Vec::new();
    for i in 0..count {
        if i % 900 == 0 {
            contexts.push(zmq::Context::new());
        }
        let ctx = contexts.last().expect("a context");
        let device = format!("swarm-{i:05}");
        let s = ctx.socket(zmq::DEALER).expect("socket");
        s.set_linger(0).expect("linger");
        s.set_identity(&route(&device, "browsertest00000"))
            .expect("identity");
        s.connect(endpoint).expect("connect");
        let hello = Upstream::Hello(Hello {
            agent_version: if i % 10 == 0 { "0.9.0" } else { "1.0.0" }.into(),
            arch: "aarch64".into(),
            os: "linux".into(),
            hostname: device.clone(),
            groups: vec![format!("site-{}", i % 7)],
            heartbeat_ms: 600_000,
            started_ms: 0,
        });
        s.send(hello.encode().expect("hello"), 0).expect("send");
        let mut b = BatchBuilder::new(1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        for (name, v) in [
            ("host.cpu.used_pct", (i % 100) as f64),
            ("host.mem.used_pct", 40.0),
            ("host.temp_c{zone=cpu}", 50.0 + (i % 30) as f64),
        ] {
            b.push_sample(name, now, V::Float(v)).expect("sample");
        }
        s.send(Upstream::Batch(b.finish()).encode().expect("batch"), 0)
            .expect("send");
        sockets.push(s);
    }
    (contexts, sockets)
}

#[test]
fn the_fleet_view_stays_responsive_with_5000_devices() {
    let _w = watchdog("browser, 5,000 devices", LIMIT);
    const COUNT: usize = 5_000;
    let dir = temp_dir("fleetmq-browser-5k-");
    let hub = Hub::start_with(dir.path(), &["--insecure", "--bind", "127.0.0.1:*"]);
    let (_contexts, sockets) = swarm(hub.telemetry(), COUNT);
    wait_for("every simulated device online", || {
        let r = hub.op(&["stats"]);
        (r.json.first()?["devices_online"].as_u64()? == COUNT as u64).then_some(())
    });
    let mut page = Browser::open(&format!("{}/", hub.endpoints["http"]));
    let first = page.wait_until(
        "the first page of 5,000 devices",
        r#"({ page: document.getElementById("page").textContent, t: window.fleetmq })"#,
        r#"v => v.page.startsWith("1–100 of 5000") && v.t.firstRenderMs !== null"#,
    );
    let renders = first["t"]["renders"].as_u64().unwrap();
    let later = page.wait_until(
        "an update of the 5,000 devices",
        "window.fleetmq",
        &format!(
            "t => t.renders >= {} && t.lastRefreshMs !== null",
            renders + 1
        ),
    );
    println!(
        "5,000 devices: first render {:.0} ms after the page began loading; an update: {:.0} ms fetching and drawing, of which {:.1} ms drawing {} rows",
        first["t"]["firstRenderMs"].as_f64().unwrap(),
        later["lastRefreshMs"].as_f64().unwrap(),
        later["lastRenderMs"].as_f64().unwrap(),
        later["rendered"]
    );
    // Search reaches past the first page; filters count.
    page.eval(r#"(() => { const q = document.getElementById("q"); q.value = "swarm-04999"; q.dispatchEvent(new Event("input")); })()"#);
    let shown = page.eval(ROWS);
    assert_eq!(shown, json!(["swarm-04999"]));
    page.eval(r#"(() => { const q = document.getElementById("q"); q.value = ""; q.dispatchEvent(new Event("input"));
        const v = document.getElementById("f-version"); v.value = "0.9.0"; v.dispatchEvent(new Event("change")); })()"#);
    let counted = page.eval(r#"document.getElementById("page").textContent"#);
    assert!(
        counted
            .as_str()
            .unwrap()
            .starts_with("1–100 of 500 (of 5000)"),
        "{counted}"
    );
    page.save_screenshot("fleet-view-5000.png");
    drop(sockets);
}
