//! Alerts end to end: a hub with an `offline` rule and a webhook served
//! here; a device stops and the webhook hears the alert fire once; it
//! returns and the webhook hears it resolve once.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use fleetmq_tests::*;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// A webhook on a port the OS picks: each POST's JSON body, in order.
fn webhook() -> (String, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the webhook");
    let url = format!(
        "http://{}/hook",
        listener.local_addr().expect("webhook address")
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if let Ok(v) = serde_json::from_slice(&body)
                && tx.send(v).is_err()
            {
                return;
            }
        }
    });
    (url, rx)
}

/// The next notice the webhook hears: (status, alertname, device).
fn next(rx: &mpsc::Receiver<Value>) -> (String, String, String) {
    let v = rx.recv_timeout(WAIT).expect("a notice at the webhook");
    let alert = &v["alerts"][0];
    (
        v["status"].as_str().unwrap_or("").to_string(),
        alert["labels"]["alertname"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        alert["labels"]["device"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn a_device_that_stops_fires_its_alert_once_and_resolves_it_once_on_return() {
    let _w = watchdog("alerts", LIMIT);
    let (url, heard) = webhook();
    let dir = temp_dir("fleetmq-alerts-");
    let config = format!(
        "[alerts]\nwebhooks = [\"{url}\"]\n\
         [[alerts.rules]]\nname = \"device-offline\"\nwhen = \"offline\"\nfor_ms = 1000\n"
    );
    let hub = Hub::start(dir.path(), &config);
    let mut agent = hub.agent("pi-1", &[]);
    let _other = hub.agent("pi-2", &[]);
    hub.wait_listening("pi-1");
    hub.wait_listening("pi-2");

    // pi-1 stops (killed, no goodbye): offline once its heartbeats stop,
    // and a second later the alert fires, for pi-1 only.
    agent.signal(libc::SIGKILL);
    agent.wait_exit(WAIT);
    assert_eq!(
        next(&heard),
        ("firing".into(), "device-offline".into(), "pi-1".into())
    );
    // Shown while it fires: the command line and /metrics.
    let listed = hub.op(&["alerts"]);
    assert!(listed.ok, "{}", listed.stderr);
    assert_eq!(listed.json[0]["device"], "pi-1", "{:?}", listed.json);
    assert_eq!(listed.json[0]["firing"], true);
    let (_, metrics) = http("GET", &hub.endpoints["http"], "/metrics");
    assert!(
        metrics.contains("fleetmq_alert{alertname=\"device-offline\",device=\"pi-1\"} 1\n"),
        "{metrics}"
    );

    // It returns: resolved, once.
    let _back = hub.agent("pi-1", &[]);
    assert_eq!(
        next(&heard),
        ("resolved".into(), "device-offline".into(), "pi-1".into())
    );
    // Nothing was said twice in between: the next thing the webhook hears
    // is pi-2 stopping.
    drop(_other);
    assert_eq!(
        next(&heard),
        ("firing".into(), "device-offline".into(), "pi-2".into())
    );
}
