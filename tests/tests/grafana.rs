//! The Grafana dashboard in packaging/grafana: it parses as a dashboard, and
//! every query in it names a metric a running hub's /metrics serves.

use std::collections::BTreeSet;
use std::time::Duration;

use fleetmq_tests::*;
use serde_json::Value;

/// The `fleetmq_...` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("fleetmq_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        out.push(name);
    }
    out
}

/// The series a PromQL expression picks by exact name (`metric="NAME"`).
fn series_names(expr: &str) -> Vec<String> {
    expr.split("metric=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(String::from)
        .collect()
}

/// Series only a Raspberry Pi (or a machine with a thermal zone) sends.
const HARDWARE_ONLY: &[&str] = &[
    "host.temp_c",
    "host.pi.under_voltage",
    "host.pi.throttled_now",
];

#[test]
fn the_dashboard_queries_only_metrics_the_hub_serves() {
    let _w = watchdog("grafana", Duration::from_secs(120));
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/grafana/fleetmq.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert_eq!(dash["uid"], "fleetmq-fleet");
    let variables: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .expect("template variables")
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "device"]);

    let (mut wanted, mut series) = (BTreeSet::new(), BTreeSet::new());
    let panels = dash["panels"].as_array().expect("panels");
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().expect("each panel has targets");
        assert!(!targets.is_empty(), "{} queries nothing", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("a PromQL expression");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{}: {expr} names no metric", p["title"]);
            wanted.extend(names);
            series.extend(series_names(expr));
        }
        // Panels sit on the 24-column grid.
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{}",
            p["title"]
        );
    }
    assert!(wanted.len() > 20, "{wanted:?}");

    // A hub with one device: every metric the dashboard asks for is served.
    let dir = temp_dir("fleetmq-grafana-");
    let hub = Hub::start(dir.path(), "");
    let _agent = hub.agent("pi-g", &[]);
    hub.wait_listening("pi-g");
    let url = hub.endpoints["http"].clone();
    // Every series a device panel names, as this machine's agent sends it.
    let sent: Vec<String> = series
        .iter()
        .filter(|s| !HARDWARE_ONLY.contains(&s.as_str()))
        .map(|s| format!("device=\"pi-g\",metric=\"{s}\""))
        .collect();
    assert!(sent.len() >= 4, "{series:?}");
    let served = wait_for("/metrics with every series of pi-g's panels", || {
        let (status, body) = http("GET", &url, "/metrics");
        (status == 200 && sent.iter().all(|s| body.contains(s.as_str()))).then_some(body)
    });
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|m| !served.contains(&format!("# TYPE {m} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard asks for {missing:?}, which /metrics does not serve"
    );
}
