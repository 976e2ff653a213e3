//! StatsD lines, folded per interval as statsd and Telegraf do, so a
//! chatty program costs a few samples per interval, not one per line:
//!
//! ```text
//! c         a counter sums (value / sample rate): one sample, the total
//! g         a gauge keeps its last value (+N / -N change it): one sample
//! ms h d    a timing keeps count (each line counting 1 / sample rate),
//!           min, max, mean and the chosen percentiles: NAME.count,
//!           NAME.min, NAME.max, NAME.mean,
//!           NAME.p50, NAME.p90, NAME.p99 (p99_9 for 99.9)
//! ```
//!
//! An interval opens with its first line and is flushed
//! `ingest.statsd_interval_ms` later, stamped with the flush time; a
//! series with no line in an interval sends nothing. Memory is bounded:
//! at most [`MAX_SERIES`] series per interval (a line for one more is
//! refused, and counted), and percentiles come from at most [`MAX_KEPT`]
//! timings per series, kept as a uniform sample of all of them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fleetmq_protocol::telemetry::series_name;

use super::sample::{Ingested, number, tag_key, value_of};

/// Most series one interval folds; a line for another is refused.
pub const MAX_SERIES: usize = 1_000;
/// Most timings kept per series for its percentiles.
pub const MAX_KEPT: usize = 256;
/// Most gauges whose last value is remembered across intervals (for
/// relative `+N|g`).
const MAX_GAUGES: usize = 10_000;

/// A series' metric name and tags, as a line gave them.
type Named = (String, Vec<(String, String)>);

/// What one line says of its series.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Counter(f64),
    Gauge {
        value: f64,
        relative: bool,
    },
    /// A timing and what it counts for (1 / its sample rate).
    Timing(f64, f64),
}

/// What an interval holds for one series.
#[derive(Debug, Clone, PartialEq)]
enum Folded {
    Counter(f64),
    Gauge(f64),
    /// With its name and tags, for the names it sends.
    Timing(Box<(Timings, Named)>),
}

#[derive(Debug, Clone, PartialEq)]
struct Timings {
    /// Lines folded.
    count: u64,
    /// What they count for: each line 1 / its sample rate, as statsd and
    /// Telegraf count a sampled timing.
    weight: f64,
    sum: f64,
    min: f64,
    max: f64,
    /// A uniform sample of the timings (reservoir), for percentiles.
    kept: Vec<f64>,
}

impl Timings {
    fn new(v: f64, weight: f64) -> Timings {
        Timings {
            count: 1,
            weight,
            sum: v,
            min: v,
            max: v,
            kept: vec![v],
        }
    }

    /// Takes one more timing; `draw(n)` is a uniform pick in `0..n`.
    fn add(&mut self, v: f64, weight: f64, draw: &mut impl FnMut(u64) -> u64) {
        self.count += 1;
        self.weight += weight;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if self.kept.len() < MAX_KEPT {
            self.kept.push(v);
        } else if let Some(slot) = self.kept.get_mut(draw(self.count) as usize) {
            // Each of the `count` timings stays with the same chance.
            *slot = v;
        }
    }

    /// The nearest-rank percentile `p` (0 < p <= 100) of what was kept.
    fn percentile(sorted: &[f64], p: f64) -> f64 {
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }
}

/// The StatsD side of ingest.
pub struct Statsd {
    interval: Duration,
    percentiles: Vec<f64>,
    pending: HashMap<String, Folded>,
    /// When the open interval got its first line.
    opened: Option<Instant>,
    gauges: HashMap<String, f64>,
    /// Lines folded, and lines refused because the interval had
    /// [`MAX_SERIES`] series already.
    pub lines: u64,
    pub over_series_cap: u64,
}

impl Statsd {
    pub fn new(interval_ms: u64, percentiles: &[f64]) -> Statsd {
        Statsd {
            interval: Duration::from_millis(interval_ms),
            percentiles: percentiles.to_vec(),
            pending: HashMap::new(),
            opened: None,
            gauges: HashMap::new(),
            lines: 0,
            over_series_cap: 0,
        }
    }

    /// New settings, for the next interval (the open one keeps its own).
    pub fn reconfigure(&mut self, interval_ms: u64, percentiles: &[f64]) {
        self.interval = Duration::from_millis(interval_ms);
        self.percentiles = percentiles.to_vec();
    }

    /// Folds one line into the open interval (opening one at `now`).
    pub fn fold(&mut self, line: &str, now: Instant) -> Result<(), String> {
        self.fold_with(line, now, &mut |n| fastrand::u64(0..n))
    }

    fn fold_with(
        &mut self,
        line: &str,
        now: Instant,
        draw: &mut impl FnMut(u64) -> u64,
    ) -> Result<(), String> {
        let (series, named, kind) = parse(line)?;
        if !self.pending.contains_key(&series) && self.pending.len() >= MAX_SERIES {
            self.over_series_cap += 1;
            return Err(format!(
                "more than {MAX_SERIES} StatsD series in one interval; line refused"
            ));
        }
        self.opened.get_or_insert(now);
        self.lines += 1;
        if let Kind::Gauge { value, relative } = kind {
            let last = self.gauges.get(&series).copied().unwrap_or(0.0);
            let value = if relative { last + value } else { value };
            if self.gauges.len() < MAX_GAUGES || self.gauges.contains_key(&series) {
                self.gauges.insert(series.clone(), value);
            }
            self.pending.insert(series, Folded::Gauge(value));
            return Ok(());
        }
        match (self.pending.get_mut(&series), kind) {
            (Some(Folded::Counter(sum)), Kind::Counter(v)) => *sum += v,
            (Some(Folded::Timing(t)), Kind::Timing(v, w)) => t.0.add(v, w, draw),
            // A new series, or one whose type changed: the line decides.
            (_, Kind::Counter(v)) => {
                self.pending.insert(series, Folded::Counter(v));
            }
            (_, Kind::Timing(v, w)) => {
                let folded = Folded::Timing(Box::new((Timings::new(v, w), named)));
                self.pending.insert(series, folded);
            }
            (_, Kind::Gauge { .. }) => {}
        }
        Ok(())
    }

    /// When the open interval is due, if one is open.
    pub fn due(&self) -> Option<Instant> {
        self.opened.map(|t| t + self.interval)
    }

    /// The open interval's samples, stamped `now_ms`; the next line opens a
    /// new interval. A derived name too long to be a series is skipped.
    pub fn flush(&mut self, now_ms: u64) -> Vec<Ingested> {
        self.opened = None;
        let mut out = Vec::new();
        let mut push = |name: String, v: f64| {
            out.push(Ingested {
                name,
                value: value_of(v),
                ts_ms: Some(now_ms),
            })
        };
        for (series, folded) in self.pending.drain() {
            match folded {
                Folded::Counter(v) | Folded::Gauge(v) => push(series, v),
                Folded::Timing(timing) => {
                    let (mut t, (name, tags)) = *timing;
                    t.kept.sort_by(f64::total_cmp);
                    let mut stats = vec![
                        ("count".to_string(), t.weight),
                        ("min".to_string(), t.min),
                        ("max".to_string(), t.max),
                        ("mean".to_string(), t.sum / t.count as f64),
                    ];
                    for &p in &self.percentiles {
                        stats.push((percentile_label(p), Timings::percentile(&t.kept, p)));
                    }
                    for (suffix, v) in stats {
                        if let Ok(name) = series_name(&format!("{name}.{suffix}"), &tags) {
                            push(name, v);
                        }
                    }
                }
            }
        }
        out
    }
}

/// A percentile's name: `p50`, or `p99_9` for 99.9 (up to three
/// decimals). Written with integers: the agent carries no float printing.
fn percentile_label(p: f64) -> String {
    let milli = (p * 1000.0).round() as u32;
    let (whole, mut frac) = (milli / 1000, milli % 1000);
    if frac == 0 {
        return format!("p{whole}");
    }
    let mut digits = 3;
    while frac % 10 == 0 {
        frac /= 10;
        digits -= 1;
    }
    format!("p{whole}_{frac:0digits$}")
}

/// One StatsD line: its series, its name and tags apart, and what it says.
fn parse(line: &str) -> Result<(String, Named, Kind), String> {
    let mut parts = line.split('|');
    let (name, raw) = parts
        .next()
        .and_then(|p| p.rsplit_once(':'))
        .ok_or("StatsD needs name:value|type")?;
    let kind = parts.next().unwrap_or_default();
    let mut rate = 1.0;
    let mut tags = Vec::new();
    for part in parts {
        if let Some(r) = part.strip_prefix('@') {
            rate = number(r)?;
            if !(rate > 0.0 && rate <= 1.0) {
                return Err(format!("sample rate {r} is not in (0, 1]"));
            }
        } else if let Some(list) = part.strip_prefix('#') {
            for tag in list.split(',').filter(|t| !t.is_empty()) {
                let (k, v) = tag.split_once(':').unwrap_or((tag, "true"));
                tags.push((tag_key(k), v.to_string()));
            }
        }
        // Other extensions (container ids, timestamps) are ignored.
    }
    let series = series_name(name, &tags).map_err(|e| e.to_string())?;
    let kind = match kind {
        "c" => Kind::Counter(number(raw)? / rate),
        "g" => Kind::Gauge {
            value: number(raw)?,
            relative: raw.starts_with(['+', '-']),
        },
        "ms" | "h" | "d" => Kind::Timing(number(raw)?, 1.0 / rate),
        "s" => return Err("StatsD sets (|s) are not supported; send a gauge".into()),
        other => {
            return Err(format!(
                "unknown StatsD type {other:?}; use c, g, ms, h or d"
            ));
        }
    };
    Ok((series, (name.to_string(), tags), kind))
}

#[cfg(test)]
mod tests {
    use fleetmq_protocol::Value;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    /// The samples one interval of `lines` flushes, as (name, value).
    fn interval(statsd: &mut Statsd, lines: &[&str]) -> Vec<(String, Value)> {
        let t0 = Instant::now();
        for line in lines {
            statsd.fold(line, t0).unwrap();
        }
        assert_eq!(statsd.due(), Some(t0 + Duration::from_secs(10)));
        let out = statsd.flush(NOW);
        assert_eq!(statsd.due(), None, "the next line opens the next interval");
        assert!(out.iter().all(|s| s.ts_ms == Some(NOW)));
        let mut got: Vec<(String, Value)> = out.into_iter().map(|s| (s.name, s.value)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        got
    }

    fn named(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn counters_sum_and_gauges_keep_the_last_value() {
        let mut s = Statsd::new(10_000, &[50.0]);
        let got = interval(
            &mut s,
            &[
                "door.opened:1|c",
                "door.opened:2|c",
                "door.opened:1|c|@0.25|#site:lab,floor:2",
                "tank:40|g",
                "tank:-2.5|g",
                "x:1|c|#9th-key,host.name:a",
            ],
        );
        assert_eq!(
            got,
            named(&[
                ("door.opened", Value::Int(3)),
                ("door.opened{floor=2,site=lab}", Value::Int(4)),
                ("tank", Value::Float(37.5)),
                ("x{_9th_key=true,host_name=a}", Value::Int(1)),
            ])
        );
        // A relative gauge builds on the last interval's value; a series
        // with no line sends nothing.
        let got = interval(&mut s, &["tank:+2.5|g"]);
        assert_eq!(got, named(&[("tank", Value::Int(40))]));
        assert_eq!(s.lines, 7);
    }

    #[test]
    fn timings_become_count_min_max_mean_and_percentiles() {
        let mut s = Statsd::new(10_000, &[50.0, 90.0, 99.9]);
        let lines: Vec<String> = (1..=100).map(|v| format!("req:{v}|ms|#path:/a")).collect();
        let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        let got = interval(&mut s, &lines);
        assert_eq!(
            got,
            named(&[
                ("req.count{path=/a}", Value::Int(100)),
                ("req.max{path=/a}", Value::Int(100)),
                ("req.mean{path=/a}", Value::Float(50.5)),
                ("req.min{path=/a}", Value::Int(1)),
                ("req.p50{path=/a}", Value::Int(50)),
                ("req.p90{path=/a}", Value::Int(90)),
                ("req.p99_9{path=/a}", Value::Int(100)),
            ])
        );
    }

    #[test]
    fn a_sampled_timing_counts_for_one_over_its_rate() {
        let mut s = Statsd::new(10_000, &[50.0]);
        let got = interval(&mut s, &["db:10|ms|@0.1", "db:30|ms|@0.5", "db:20|ms"]);
        assert_eq!(
            got,
            named(&[
                // 10 + 2 + 1 timings stand behind these three lines; the
                // mean and the percentiles are of the lines' values.
                ("db.count", Value::Int(13)),
                ("db.max", Value::Int(30)),
                ("db.mean", Value::Int(20)),
                ("db.min", Value::Int(10)),
                ("db.p50", Value::Int(20)),
            ])
        );
    }

    #[test]
    fn a_flood_is_bounded_in_memory_and_in_samples() {
        let mut s = Statsd::new(10_000, &[50.0]);
        let t0 = Instant::now();
        // 10,000 timings of one series keep MAX_KEPT of them, a uniform
        // sample (here: every draw lands in the reservoir's first half).
        let mut draws = 0u64;
        for v in 0..10_000 {
            s.fold_with(&format!("t:{v}|ms"), t0, &mut |n| {
                draws += 1;
                n % (MAX_KEPT as u64 / 2)
            })
            .unwrap();
        }
        assert_eq!(draws, 10_000 - MAX_KEPT as u64);
        let Some(Folded::Timing(timing)) = s.pending.get("t") else {
            panic!("{:?}", s.pending);
        };
        let t = &timing.0;
        assert_eq!((t.count, t.kept.len()), (10_000, MAX_KEPT));
        assert_eq!((t.min, t.max), (0.0, 9_999.0));
        // 10,000 counter lines a second for ten seconds: one sample.
        for _ in 0..100_000 {
            s.fold("hits:1|c", t0).unwrap();
        }
        // Series beyond the cap are refused, and counted.
        for i in 0..MAX_SERIES + 5 {
            let _ = s.fold(&format!("s{i}:1|c"), t0);
        }
        assert_eq!(s.over_series_cap, 7, "two series were already open");
        let err = s.fold("one.more:1|c", t0).unwrap_err();
        assert!(err.contains("series in one interval"), "{err}");
        let out = s.flush(NOW);
        // 998 counters, hits, and t's count, min, max, mean and p50.
        assert_eq!(out.len(), (MAX_SERIES - 2) + 1 + 5, "{}", out.len());
        assert!(out.contains(&Ingested {
            name: "hits".into(),
            value: Value::Int(100_000),
            ts_ms: Some(NOW)
        }));
    }

    #[test]
    fn percentiles_are_named_without_a_dot() {
        let names: Vec<String> = [50.0, 99.0, 99.9, 99.99, 0.5, 100.0, 12.345]
            .into_iter()
            .map(percentile_label)
            .collect();
        assert_eq!(
            names,
            ["p50", "p99", "p99_9", "p99_99", "p0_5", "p100", "p12_345"]
        );
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        let err = |line: &str| parse(line).unwrap_err();
        assert!(err("x:1|s").contains("sets"));
        assert!(err("x:1|q").contains("unknown StatsD type"));
        assert!(err("x|c").contains("name:value"));
        assert!(err("x:abc|c").contains("not a number"));
        assert!(err("x:1|c|@2").contains("sample rate"));
        assert!(err("x{:1|c").contains("not a metric name"));
    }
}
