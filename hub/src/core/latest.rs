//! The newest value of every series, kept in memory for `latest`, the page
//! and `/metrics`.
//!
//! It is on the ingest path: each stored batch hands it the newest sample
//! of each of its series ([`fleetmq_protocol::Batch::newest_samples`]), so a
//! batch of one-second readings costs one lookup by `&str` a series, not
//! one a sample, and no allocation; only a new series allocates its names.

use std::collections::HashMap;

use fleetmq_protocol::telemetry::{SampleRef, metric_of};
use fleetmq_protocol::{LatestValue, Value};

/// A device's series: the newest (time, value) of each, by name.
type Series = HashMap<String, (u64, Value)>;

/// Newest values by device, then series name; at most `limit` series.
pub struct Latest {
    by_device: HashMap<String, Series>,
    len: usize,
    limit: usize,
}

impl Latest {
    pub fn new(limit: usize) -> Latest {
        Latest {
            by_device: HashMap::new(),
            len: 0,
            limit,
        }
    }

    /// Records `device`'s samples: a newer (or equally new) timestamp
    /// replaces the value. Once `limit` series are known, new ones are not
    /// kept, so a device inventing names cannot grow the hub's memory.
    pub fn record<'a>(&mut self, device: &str, samples: impl Iterator<Item = SampleRef<'a>>) {
        let series = match self.by_device.get_mut(device) {
            Some(s) => s,
            None if self.len < self.limit => self.by_device.entry(device.to_string()).or_default(),
            None => return,
        };
        for s in samples {
            match series.get_mut(s.name) {
                Some(slot) if s.ts_ms >= slot.0 => *slot = (s.ts_ms, s.value),
                Some(_) => {}
                None if self.len < self.limit => {
                    series.insert(s.name.to_string(), (s.ts_ms, s.value));
                    self.len += 1;
                }
                None => {}
            }
        }
    }

    /// Drops every series of `device` (forgotten).
    pub fn forget(&mut self, device: &str) {
        if let Some(series) = self.by_device.remove(device) {
            self.len -= series.len();
        }
    }

    /// How many series of `device` are known.
    pub fn series_count(&self, device: &str) -> usize {
        self.by_device.get(device).map_or(0, HashMap::len)
    }

    /// How many of `names` are not yet known series of `device`.
    pub fn unknown_series(&self, device: &str, names: &[String]) -> usize {
        match self.by_device.get(device) {
            Some(series) => names
                .iter()
                .filter(|n| !series.contains_key(n.as_str()))
                .count(),
            None => names.len(),
        }
    }

    /// Every value, ordered by device and series name.
    pub fn values(&self) -> Vec<LatestValue> {
        self.matching(None, &[])
    }

    /// The values of `device` (every device: `None`) whose series is one
    /// of `names`, a name without tags matching the metric with any tags
    /// (every series: no names), ordered by device and series name.
    pub fn matching(&self, device: Option<&str>, names: &[String]) -> Vec<LatestValue> {
        let wanted = |name: &str| {
            let metric = metric_of(name);
            names.is_empty() || names.iter().any(|n| n == name || n == metric)
        };
        let devices: Vec<(&String, &Series)> = match device {
            Some(d) => self.by_device.get_key_value(d).into_iter().collect(),
            None => self.by_device.iter().collect(),
        };
        let mut values: Vec<LatestValue> = devices
            .into_iter()
            .flat_map(|(device, series)| {
                series
                    .iter()
                    .filter(|(name, _)| wanted(name))
                    .map(|(name, (ts_ms, value))| LatestValue {
                        device: device.clone(),
                        name: name.clone(),
                        ts_ms: *ts_ms,
                        value: *value,
                    })
            })
            .collect();
        values.sort_by(|a, b| (&a.device, &a.name).cmp(&(&b.device, &b.name)));
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, ts_ms: u64, v: i64) -> SampleRef<'_> {
        SampleRef {
            name,
            ts_ms,
            value: Value::Int(v),
        }
    }

    #[test]
    fn the_newest_value_wins_whatever_the_arrival_order() {
        let mut l = Latest::new(10);
        l.record("pi-b", [sample("cpu", 20, 2)].into_iter());
        l.record(
            "pi-a",
            [sample("temp", 5, 40), sample("cpu", 9, 1)].into_iter(),
        );
        // An older sample arriving late (a resent spool) does not go back in time.
        l.record("pi-b", [sample("cpu", 10, 7)].into_iter());
        l.record("pi-a", [sample("temp", 6, 41)].into_iter());
        let got: Vec<_> = l
            .values()
            .into_iter()
            .map(|v| (v.device, v.name, v.ts_ms, v.value))
            .collect();
        assert_eq!(
            got,
            [
                ("pi-a".into(), "cpu".into(), 9, Value::Int(1)),
                ("pi-a".into(), "temp".into(), 6, Value::Int(41)),
                ("pi-b".into(), "cpu".into(), 20, Value::Int(2)),
            ]
        );
    }

    #[test]
    fn new_series_stop_at_the_limit_and_known_ones_still_update() {
        let mut l = Latest::new(2);
        l.record(
            "pi-a",
            [sample("a", 1, 1), sample("b", 1, 1), sample("c", 1, 1)].into_iter(),
        );
        l.record("pi-z", [sample("a", 1, 1)].into_iter());
        l.record("pi-a", [sample("b", 2, 9)].into_iter());
        let got: Vec<_> = l
            .values()
            .into_iter()
            .map(|v| (v.device, v.name, v.value))
            .collect();
        assert_eq!(
            got,
            [
                ("pi-a".into(), "a".into(), Value::Int(1)),
                ("pi-a".into(), "b".into(), Value::Int(9)),
            ]
        );
    }

    #[test]
    fn latest_values_are_picked_by_device_and_metric_with_any_tags() {
        let mut l = Latest::new(100);
        l.record(
            "pi-1",
            [sample("host.temp_c{zone=cpu}", 1, 1), sample("x", 1, 1)].into_iter(),
        );
        l.record("pi-2", [sample("host.temp_c{zone=cpu}", 1, 1)].into_iter());
        let picked = |device: Option<&str>, names: &[&str]| -> Vec<(String, String)> {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            l.matching(device, &names)
                .into_iter()
                .map(|v| (v.device, v.name))
                .collect()
        };
        let temp = ("pi-1".to_string(), "host.temp_c{zone=cpu}".to_string());
        assert_eq!(picked(Some("pi-1"), &["host.temp_c"]), [temp]);
        assert_eq!(picked(None, &["host.temp_c{zone=cpu}"]).len(), 2);
        assert!(picked(Some("pi-3"), &[]).is_empty());
        assert!(picked(None, &["host.temp"]).is_empty());
        assert_eq!(picked(Some("pi-1"), &[]).len(), 2);
        assert_eq!(
            picked(None, &[]),
            l.values()
                .into_iter()
                .map(|v| (v.device, v.name))
                .collect::<Vec<_>>()
        );
    }
}
