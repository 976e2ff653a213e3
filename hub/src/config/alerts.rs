//! `[alerts]`: rules the hub checks every second, and the webhooks told
//! when an alert fires and when it resolves (see `core::alerts`).

use std::path::PathBuf;

use fleetmq_net::config::ConfigError;
use serde::Deserialize;

use super::HubConfig;

/// Alert rules and where their notices go.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// Each notice is POSTed to every one of these
    /// (`http://` or `https://HOST[:PORT]/PATH`).
    pub webhooks: Vec<String>,
    /// PEM certificates of the authorities an `https://` webhook's
    /// certificate may come from, besides this machine's (a private CA);
    /// relative to the data directory. Empty: the machine's only.
    pub ca_file: PathBuf,
    /// A firing alert is sent again this often while it fires (0: never).
    pub repeat_ms: u64,
    pub rules: Vec<RuleConfig>,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            webhooks: Vec::new(),
            ca_file: PathBuf::new(),
            repeat_ms: 4 * 3_600_000,
            rules: Vec::new(),
        }
    }
}

/// One rule, as written: `when` is `offline`, `config refused`, `clock
/// off`, `METRIC OP NUMBER`, or `log contains "TEXT"`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub when: String,
    /// How long the condition must hold before the alert fires (against
    /// flapping); for `offline`, how long the device has been away.
    #[serde(default)]
    pub for_ms: u64,
    /// Only devices in one of these groups (by their last Hello); empty:
    /// every device.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Only devices whose facts match every one of these filters, as
    /// `--where` takes them (`model~zero`); empty: every device.
    #[serde(default, rename = "where")]
    pub matching: Vec<String>,
    /// Log rules: only lines from this source (a file's path, or
    /// `journal:UNIT`); left out: any source.
    #[serde(default)]
    pub source: Option<String>,
    /// Log rules: lines count for this long after they arrive; the alert
    /// resolves once too few arrived within it (default 5 min).
    #[serde(default)]
    pub window_ms: Option<u64>,
    /// Log rules: how many lines must arrive within `window_ms` (default 1).
    #[serde(default)]
    pub at_least: Option<u32>,
    /// `clock off` rules: how far the device's clock may be from the
    /// hub's, either way (default 60 s).
    #[serde(default)]
    pub by_ms: Option<u64>,
}

/// How far a clock may be off when a `clock off` rule says nothing.
pub const CLOCK_OFF_MS: u64 = 60_000;
/// The least a `clock off` rule may allow: the offset is measured to
/// about a heartbeat's time on the way.
const MIN_CLOCK_OFF_MS: u64 = 1_000;

/// A log rule's window when none is given: five minutes.
pub const LOG_WINDOW_MS: u64 = 300_000;
/// The shortest window: the rules are checked once a second.
const MIN_LOG_WINDOW_MS: u64 = 1_000;
/// The most lines a log rule may ask for: each (rule, device) keeps the
/// times of this many (8 KB at most).
const MAX_AT_LEAST: u32 = 1_000;
/// The longest text a log rule looks for.
const MAX_LOG_TEXT: usize = 1_024;

/// What a rule watches.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The device is offline.
    Offline,
    /// The newest value of a series named `metric` (any tags) compares
    /// to `value` by `op`.
    Metric { metric: String, op: Op, value: f64 },
    /// At least `at_least` log lines holding `text` (from `source`, if
    /// named) arrived within the last `window_ms`.
    Log(LogWatch),
    /// The device refused keys of the desired configuration it was last
    /// sent (`config status`: failed).
    ConfigRefused,
    /// The device's clock is `by_ms` or more from the hub's, either way
    /// (`devices`: clock_offset_ms).
    ClockOff { by_ms: u64 },
}

/// What a log rule looks for.
#[derive(Debug, Clone, PartialEq)]
pub struct LogWatch {
    /// Text a line holds, as written (case counts, as in `logs --grep`).
    pub text: String,
    pub source: Option<String>,
    pub window_ms: u64,
    pub at_least: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl Op {
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Gt => left > right,
            Op::Ge => left >= right,
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Eq => left == right,
            Op::Ne => left != right,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "==",
            Op::Ne => "!=",
        }
    }
}

/// A rule, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub condition: Condition,
    pub for_ms: u64,
    pub groups: Vec<String>,
    /// Only devices that match every one (`where`).
    pub matching: Vec<fleetmq_protocol::Matcher>,
}

/// Parses `when`: `offline`, `config refused`, `METRIC OP NUMBER`
/// (`host.temp_c > 80`), or `log contains "TEXT"` (with the rule's window
/// and source as defaults).
pub fn parse_condition(when: &str) -> Result<Condition, String> {
    if let Some(rest) = log_rule(when) {
        let text = quoted(rest).map_err(|e| {
            format!(
                "{when:?}: {e}; write log contains \"TEXT\", like log contains \"Out of memory\""
            )
        })?;
        if text.is_empty() || text.len() > MAX_LOG_TEXT {
            return Err(format!(
                "{when:?}: the text to look for must be 1 to {MAX_LOG_TEXT} bytes"
            ));
        }
        return Ok(Condition::Log(LogWatch {
            text,
            source: None,
            window_ms: LOG_WINDOW_MS,
            at_least: 1,
        }));
    }
    let words: Vec<&str> = when.split_whitespace().collect();
    match words[..] {
        ["offline"] => Ok(Condition::Offline),
        ["config", "refused"] => Ok(Condition::ConfigRefused),
        ["clock", "off"] => Ok(Condition::ClockOff {
            by_ms: CLOCK_OFF_MS,
        }),
        [metric, op, value] => {
            let op = match op {
                ">" => Op::Gt,
                ">=" => Op::Ge,
                "<" => Op::Lt,
                "<=" => Op::Le,
                "==" => Op::Eq,
                "!=" => Op::Ne,
                other => {
                    return Err(format!(
                        "{other:?} is not a comparison: use >, >=, <, <=, == or !="
                    ));
                }
            };
            if !fleetmq_protocol::telemetry::valid_metric_name(metric) {
                return Err(format!(
                    "{metric:?} is not a metric name: write METRIC OP NUMBER, like host.temp_c > 80"
                ));
            }
            let value: f64 = value
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| format!("{value:?} is not a number"))?;
            Ok(Condition::Metric {
                metric: metric.to_string(),
                op,
                value,
            })
        }
        _ => Err(format!(
            "{when:?}: write `offline`, `config refused`, `clock off`, METRIC OP NUMBER like host.temp_c > 80, or log contains \"TEXT\""
        )),
    }
}

/// What follows `log contains` in `when`, if it is a log rule.
fn log_rule(when: &str) -> Option<&str> {
    let rest = when.trim().strip_prefix("log")?;
    let rest = rest.strip_prefix(char::is_whitespace)?.trim_start();
    let rest = rest.strip_prefix("contains")?;
    Some(rest.strip_prefix(char::is_whitespace)?.trim())
}

/// The text of `"..."` (`\"` and `\\` inside), which must be all of `s`.
fn quoted(s: &str) -> Result<String, String> {
    let inner = s
        .strip_prefix('"')
        .ok_or("the text must be in double quotes")?;
    let mut text = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' if chars.as_str().is_empty() => return Ok(text),
            '"' => return Err(format!("{:?} follows the closing quote", chars.as_str())),
            '\\' => match chars.next() {
                Some(e @ ('"' | '\\')) => text.push(e),
                other => {
                    return Err(format!(
                        "\\{} is not an escape: only \\\" and \\\\ are",
                        other.map(String::from).unwrap_or_default()
                    ));
                }
            },
            c => text.push(c),
        }
    }
    Err("the text has no closing quote".into())
}

/// Applies a rule's `source`, `window_ms` and `at_least`, which only a
/// log rule takes.
fn log_options(condition: &mut Condition, r: &RuleConfig) -> Result<(), String> {
    let Condition::Log(watch) = condition else {
        if r.source.is_some() || r.window_ms.is_some() || r.at_least.is_some() {
            return Err(
                "source, window_ms and at_least are for log rules (when = 'log contains \"TEXT\"')"
                    .into(),
            );
        }
        return Ok(());
    };
    if let Some(source) = &r.source {
        if source.is_empty() || source.len() > 1024 {
            return Err(format!(
                "source {source:?}: a file's path or journal:UNIT, as `logs` shows it"
            ));
        }
        watch.source = Some(source.clone());
    }
    let window_ms = r.window_ms.unwrap_or(LOG_WINDOW_MS);
    if window_ms < MIN_LOG_WINDOW_MS {
        return Err(format!(
            "window_ms = {window_ms}: at least {MIN_LOG_WINDOW_MS} (the rules are checked once a second)"
        ));
    }
    watch.window_ms = window_ms;
    let at_least = r.at_least.unwrap_or(1);
    if !(1..=MAX_AT_LEAST).contains(&at_least) {
        return Err(format!("at_least = {at_least}: 1 to {MAX_AT_LEAST}"));
    }
    watch.at_least = at_least;
    Ok(())
}

/// Applies a rule's `by_ms`, which only a `clock off` rule takes.
fn clock_options(condition: &mut Condition, r: &RuleConfig) -> Result<(), String> {
    match (condition, r.by_ms) {
        (Condition::ClockOff { by_ms }, Some(given)) => {
            if given < MIN_CLOCK_OFF_MS {
                return Err(format!("by_ms = {given}: at least {MIN_CLOCK_OFF_MS}"));
            }
            *by_ms = given;
            Ok(())
        }
        (_, None) => Ok(()),
        (_, Some(_)) => Err("by_ms is for clock rules (when = \"clock off\")".into()),
    }
}

impl Alerts {
    /// The rules, checked (their names unique).
    pub fn checked_rules(&self) -> Result<Vec<Rule>, String> {
        let mut rules: Vec<Rule> = Vec::with_capacity(self.rules.len());
        for r in &self.rules {
            let ok_name = !r.name.is_empty()
                && r.name.len() <= 64
                && r.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !ok_name {
                return Err(format!(
                    "rule name {:?}: 1 to 64 letters, digits, '-', '_' or '.'",
                    r.name
                ));
            }
            if rules.iter().any(|x| x.name == r.name) {
                return Err(format!("two rules are named {:?}", r.name));
            }
            for g in &r.groups {
                fleetmq_protocol::validate_group(g)
                    .map_err(|e| format!("rule {:?}: group {g:?}: {e}", r.name))?;
            }
            let matching = fleetmq_protocol::Matcher::parse_all(&r.matching)
                .map_err(|e| format!("rule {:?}: where: {e}", r.name))?;
            let mut condition =
                parse_condition(&r.when).map_err(|e| format!("rule {:?}: {e}", r.name))?;
            log_options(&mut condition, r).map_err(|e| format!("rule {:?}: {e}", r.name))?;
            clock_options(&mut condition, r).map_err(|e| format!("rule {:?}: {e}", r.name))?;
            rules.push(Rule {
                name: r.name.clone(),
                condition,
                for_ms: r.for_ms,
                groups: r.groups.clone(),
                matching,
            });
        }
        Ok(rules)
    }
}

impl HubConfig {
    pub(super) fn validate_alerts(
        &self,
        invalid: &impl Fn(&'static str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        for hook in &self.alerts.webhooks {
            check_webhook(hook).map_err(|m| invalid("alerts.webhooks", m))?;
        }
        self.alerts
            .checked_rules()
            .map(|_| ())
            .map_err(|m| invalid("alerts.rules", m))
    }
}

impl Alerts {
    /// Whether some webhook is `https://` (and so needs the authorities
    /// to check its certificate against).
    pub fn any_https(&self) -> bool {
        self.webhooks.iter().any(|w| w.starts_with("https://"))
    }
}

/// A webhook must be `http://` or `https://HOST[:PORT][/PATH]`.
fn check_webhook(url: &str) -> Result<(), String> {
    let rest = (url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://")))
    .ok_or_else(|| format!("{url:?} must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{url:?} names no host: http(s)://HOST[:PORT]/PATH"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_and_bad_ones_say_how_to_write_them() {
        assert_eq!(parse_condition("offline"), Ok(Condition::Offline));
        assert_eq!(
            parse_condition(" config  refused "),
            Ok(Condition::ConfigRefused)
        );
        let why = parse_condition("config failed").unwrap_err();
        assert!(why.contains("`config refused`"), "{why}");
        assert_eq!(
            parse_condition("clock off"),
            Ok(Condition::ClockOff {
                by_ms: CLOCK_OFF_MS
            })
        );
        assert!(
            parse_condition("clock wrong")
                .unwrap_err()
                .contains("`clock off`")
        );
        assert_eq!(
            parse_condition("host.temp_c > 80"),
            Ok(Condition::Metric {
                metric: "host.temp_c".into(),
                op: Op::Gt,
                value: 80.0
            })
        );
        assert!(matches!(
            parse_condition("host.pi.under_voltage == 1"),
            Ok(Condition::Metric { op: Op::Eq, .. })
        ));
        assert_eq!(
            parse_condition(r#"log  contains  "Out of memory: \"x\" \\ y" "#),
            Ok(Condition::Log(LogWatch {
                text: r#"Out of memory: "x" \ y"#.into(),
                source: None,
                window_ms: LOG_WINDOW_MS,
                at_least: 1,
            }))
        );
        for (bad, says) in [
            ("log contains oom", "in double quotes"),
            (r#"log contains "oom"#, "no closing quote"),
            (r#"log contains "oom" now"#, "follows the closing quote"),
            (r#"log contains "a\nb""#, "not an escape"),
            (r#"log contains """#, "1 to 1024 bytes"),
            ("log oom", "write `offline`"),
            ("host.temp_c => 80", "not a comparison"),
            ("host.temp_c > hot", "not a number"),
            ("temp too high", "not a comparison"),
            ("", "write `offline`"),
            ("a b", "write `offline`"),
        ] {
            let e = parse_condition(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn rules_and_webhooks_are_checked() {
        let rule = |name: &str, when: &str| RuleConfig {
            name: name.into(),
            when: when.into(),
            ..RuleConfig::default()
        };
        let alerts = |rules| Alerts {
            rules,
            ..Alerts::default()
        };
        assert!(
            alerts(vec![rule("off", "offline"), rule("hot", "t > 1")])
                .checked_rules()
                .is_ok()
        );
        let twice = alerts(vec![rule("a", "offline"), rule("a", "offline")]);
        assert!(twice.checked_rules().unwrap_err().contains("two rules"));
        let unnamed = alerts(vec![rule("", "offline")]);
        assert!(unnamed.checked_rules().unwrap_err().contains("rule name"));
        let log = |source: Option<&str>, window_ms, at_least| RuleConfig {
            source: source.map(String::from),
            window_ms,
            at_least,
            ..rule("oom", r#"log contains "oom""#)
        };
        let clock = |by_ms| RuleConfig {
            by_ms,
            ..rule("clock", "clock off")
        };
        let checked = alerts(vec![clock(Some(300_000))]).checked_rules().unwrap();
        assert_eq!(checked[0].condition, Condition::ClockOff { by_ms: 300_000 });
        let e = alerts(vec![clock(Some(10))]).checked_rules().unwrap_err();
        assert!(e.contains("by_ms = 10: at least 1000"), "{e}");
        let misplaced = RuleConfig {
            by_ms: Some(60_000),
            ..rule("off", "offline")
        };
        let e = alerts(vec![misplaced]).checked_rules().unwrap_err();
        assert!(e.contains("by_ms is for clock rules"), "{e}");
        let checked = alerts(vec![log(Some("journal:kernel"), Some(60_000), Some(3))])
            .checked_rules()
            .unwrap();
        assert_eq!(
            checked[0].condition,
            Condition::Log(LogWatch {
                text: "oom".into(),
                source: Some("journal:kernel".into()),
                window_ms: 60_000,
                at_least: 3
            })
        );
        for (bad, says) in [
            (log(None, Some(999), None), "window_ms = 999: at least 1000"),
            (log(None, None, Some(0)), "at_least = 0: 1 to 1000"),
            (log(Some(""), None, None), "journal:UNIT"),
            (
                RuleConfig {
                    source: Some("/var/log/syslog".into()),
                    ..rule("hot", "t > 1")
                },
                "are for log rules",
            ),
            (
                RuleConfig {
                    matching: vec!["colour=red".into()],
                    ..rule("hot", "t > 1")
                },
                "where: filter \"colour=red\": no field",
            ),
        ] {
            let e = alerts(vec![bad]).checked_rules().unwrap_err();
            assert!(e.contains(says) && e.contains("rule \""), "{e}");
        }
        assert!(check_webhook("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_webhook("https://ntfy.sh/x").is_ok());
        assert!(check_webhook("ftp://x").unwrap_err().contains("https://"));
        assert!(check_webhook("http:///x").is_err());
        assert!(
            check_webhook("https:// x/y")
                .unwrap_err()
                .contains("no host")
        );
    }
}
