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

/// One rule, as written: `when` is `offline`, or `METRIC OP NUMBER`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
}

/// What a rule watches.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The device is offline.
    Offline,
    /// The newest value of a series named `metric` (any tags) compares
    /// to `value` by `op`.
    Metric { metric: String, op: Op, value: f64 },
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
}

/// Parses `when`: `offline`, or `METRIC OP NUMBER` (`host.temp_c > 80`).
pub fn parse_condition(when: &str) -> Result<Condition, String> {
    let words: Vec<&str> = when.split_whitespace().collect();
    match words[..] {
        ["offline"] => Ok(Condition::Offline),
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
            "{when:?}: write `offline`, or METRIC OP NUMBER like host.temp_c > 80"
        )),
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
            let condition =
                parse_condition(&r.when).map_err(|e| format!("rule {:?}: {e}", r.name))?;
            rules.push(Rule {
                name: r.name.clone(),
                condition,
                for_ms: r.for_ms,
                groups: r.groups.clone(),
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
        for (bad, says) in [
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
            for_ms: 0,
            groups: vec![],
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
