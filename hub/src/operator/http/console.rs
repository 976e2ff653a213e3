//! What the fleet page asks beyond the plain API: the newest values of a
//! few metrics or one device (so a page of 5,000 devices does not fetch
//! every series every time), and one series over a range, cut into
//! buckets of min, mean and max, so a chart of a week is a few hundred
//! points read from the store.

use std::collections::HashMap;
use std::time::Duration;

use fleetmq_protocol::{Request, Response, TelemetryQuery, TelemetryRow, Value};
use serde_json::json;

use super::{Answer, failed, json};
use crate::operator::Client;

/// Rows read per request to the hub, and at most per chart.
const PAGE_ROWS: u32 = 10_000;
const MOST_ROWS: usize = 200_000;
/// Buckets a chart may ask for.
const MOST_POINTS: u64 = 2_000;

/// `/api/latest?device=D&name=A,B`: the newest values, only those asked
/// for (selected by the hub).
pub fn latest(hub: &mut Client, query: &HashMap<String, String>) -> Answer {
    let request = Request::LatestOf {
        device: query.get("device").cloned(),
        names: query
            .get("name")
            .map(|n| {
                n.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    };
    match hub.call(request, Duration::ZERO) {
        Ok(Response::Latest(some)) => json(&some),
        Ok(_) => (500, "text/plain", "unexpected answer\n".into()),
        Err(e) => failed(e),
    }
}

/// One chart's points: `[time, min, mean, max]` per bucket that has a
/// sample, oldest first.
pub fn buckets(rows: &[TelemetryRow], since: u64, until: u64, points: u64) -> Vec<[f64; 4]> {
    let width = (until.saturating_sub(since) / points.max(1)).max(1);
    let slots = (until.saturating_sub(since) / width + 1) as usize;
    // (min, sum, max, count) per bucket.
    let mut acc: Vec<Option<(f64, f64, f64, u32)>> = vec![None; slots];
    for r in rows {
        let v = match r.value {
            Value::Int(i) => i as f64,
            Value::Float(f) if f.is_finite() => f,
            Value::Float(_) => continue,
        };
        if r.ts_ms < since || r.ts_ms > until {
            continue;
        }
        let Some(slot) = acc.get_mut(((r.ts_ms - since) / width) as usize) else {
            continue;
        };
        *slot = Some(match *slot {
            Some((lo, sum, hi, n)) => (lo.min(v), sum + v, hi.max(v), n + 1),
            None => (v, v, v, 1),
        });
    }
    acc.into_iter()
        .enumerate()
        .filter_map(|(b, slot)| {
            let (lo, sum, hi, n) = slot?;
            let t = since + b as u64 * width + width / 2;
            Some([t as f64, lo, sum / f64::from(n), hi])
        })
        .collect()
}

/// `/api/series?device=D&name=SERIES&since=MS&until=MS&points=N`.
pub fn series(hub: &mut Client, query: &HashMap<String, String>, now_ms: u64) -> Answer {
    let (Some(device), Some(name)) = (query.get("device"), query.get("name")) else {
        return (
            400,
            "text/plain",
            "series needs device=D and name=SERIES\n".into(),
        );
    };
    let number = |key: &str, default: u64| -> Result<u64, Answer> {
        query.get(key).map_or(Ok(default), |v| {
            v.parse().map_err(|_| {
                (
                    400,
                    "text/plain",
                    format!("{key}={v:?} is not a whole number\n"),
                )
            })
        })
    };
    let (since, until, points) = match (
        number("since", now_ms.saturating_sub(3_600_000)),
        number("until", now_ms),
        number("points", 300),
    ) {
        (Ok(s), Ok(u), Ok(p)) => (s, u, p.clamp(1, MOST_POINTS)),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
    };
    let mut rows: Vec<TelemetryRow> = Vec::new();
    let mut after = 0;
    let truncated = loop {
        let q = TelemetryQuery {
            device: Some(device.clone()),
            name: Some(name.clone()),
            after_id: after,
            limit: PAGE_ROWS,
            since_ms: since,
            until_ms: until,
            newest: false,
            tags: Vec::new(),
        };
        let page = match hub.call(Request::Telemetry(q), Duration::ZERO) {
            Ok(Response::Telemetry(page)) => page,
            Ok(_) => return (500, "text/plain", "unexpected answer\n".into()),
            Err(e) => return failed(e),
        };
        let full = page.len() as u32 == PAGE_ROWS;
        after = page.last().map_or(after, |r| r.id);
        rows.extend(page);
        if !full {
            break false;
        }
        if rows.len() >= MOST_ROWS {
            break true;
        }
    };
    json(&json!({
        "device": device,
        "name": name,
        "since": since,
        "until": until,
        "samples": rows.len(),
        "truncated": truncated,
        "points": buckets(&rows, since, until, points),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts_ms: u64, value: f64) -> TelemetryRow {
        TelemetryRow {
            id: ts_ms as i64,
            device: "pi".into(),
            seq: 1,
            ts_ms,
            name: "t".into(),
            value: Value::Float(value),
        }
    }

    #[test]
    fn a_range_is_cut_into_buckets_of_min_mean_and_max() {
        let rows = [
            row(1_000, 1.0),
            row(1_400, 3.0),
            row(2_100, 10.0),
            row(9_000, 5.0),
            row(20_000, 99.0),
        ];
        let got = buckets(&rows, 1_000, 11_000, 10);
        assert_eq!(
            got,
            [
                [1_500.0, 1.0, 2.0, 3.0],
                [2_500.0, 10.0, 10.0, 10.0],
                [9_500.0, 5.0, 5.0, 5.0]
            ],
            "outside the range left out, empty buckets left out"
        );
    }
}
