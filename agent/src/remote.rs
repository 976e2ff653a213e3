//! The hub's desired configuration, as this device takes it: only the keys
//! its own config lets the hub set (`[remote] may_set`), each checked the
//! way the config file's values are, applied over the local file, and kept
//! in `DATA_DIR/remote` so a reboot keeps what was applied.
//!
//! Plain data in, plain data out: the driver applies the result live.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::AgentConfig;
use crate::may_set::{KEYS, allowed};

/// What the hub's configuration set here: its version and the values
/// applied (keys that were refused are not in it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Remote {
    pub version: u64,
    pub values: BTreeMap<String, String>,
}

/// Where it is kept.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("remote")
}

/// The file's first line, saying what it is.
const HEADER: &str =
    "# the hub's configuration as applied here; see `fleetmq-agent config get KEY`";

/// The file: a header, `version N`, then one `KEY VALUE` a line, the value
/// with `\` and line breaks escaped (`\\`, `\n`). Keys have no spaces.
fn render(remote: &Remote) -> String {
    let mut out = format!("{HEADER}\nversion {}\n", remote.version);
    for (key, value) in &remote.values {
        let value = value
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        out.push_str(&format!("{key} {value}\n"));
    }
    out
}

fn parse(text: &str) -> Result<Remote, String> {
    let mut remote = Remote::default();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        if key == "version" && n <= 1 {
            remote.version = value
                .parse()
                .map_err(|_| format!("line {}: {value:?} is not a version", n + 1))?;
            continue;
        }
        let mut out = String::with_capacity(value.len());
        let mut chars = value.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some('\\') => out.push('\\'),
                other => return Err(format!("line {}: a bad escape {other:?}", n + 1)),
            }
        }
        remote.values.insert(key.to_string(), out);
    }
    Ok(remote)
}

/// What was applied before, or nothing (none yet, or unreadable: said in
/// the error).
pub fn load(data_dir: &Path) -> Result<Remote, String> {
    let p = path(data_dir);
    match std::fs::read_to_string(&p) {
        Ok(text) => parse(&text).map_err(|e| {
            format!(
                "{} is not readable ({e}); the hub sends its configuration again",
                p.display()
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Remote::default()),
        Err(e) => Err(format!("reading {}: {e}", p.display())),
    }
}

/// Keeps what was applied, atomically (a crash leaves the old or the new).
pub fn save(data_dir: &Path, remote: &Remote) -> io::Result<()> {
    fleetmq_net::files::write_atomically(&path(data_dir), render(remote).as_bytes(), None)
}

/// A comma-separated list, spaces around items trimmed; "" is empty.
fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// A list of `SOURCE=TEXT` items (`logs.filters.keep_lines`,
/// `logs.multiline`): each source's texts, in the order given. The source
/// is split at the first `=`, so a text may hold one. `example` shows the
/// form in the error.
fn by_source(
    key: &str,
    value: &str,
    example: &str,
) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut texts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in list(value) {
        match item.split_once('=') {
            Some((source, text)) if !source.trim().is_empty() => {
                let text = text.trim().to_string();
                texts
                    .entry(source.trim().to_string())
                    .or_default()
                    .push(text);
            }
            _ => {
                return Err(format!(
                    "{key}: {item:?} names no source: write SOURCE=TEXT, the source as the agent's [logs] tables name it ({example})"
                ));
            }
        }
    }
    Ok(texts)
}

fn number(key: &str, value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{key} = {value:?} is not a whole number of ms"))
}

/// Sets one key on `cfg`.
fn set(cfg: &mut AgentConfig, key: &str, value: &str) -> Result<(), String> {
    match key {
        "telemetry.sample_interval_ms" => cfg.telemetry.sample_interval_ms = number(key, value)?,
        "host.interval_ms" => cfg.host.interval_ms = number(key, value)?,
        "host.collect" => cfg.host.collect = list(value),
        "host.mounts" => cfg.host.mounts = list(value),
        "host.interfaces" => cfg.host.interfaces = list(value),
        "ingest.statsd_interval_ms" => cfg.ingest.statsd_interval_ms = number(key, value)?,
        "ingest.percentiles" => {
            cfg.ingest.percentiles = list(value)
                .iter()
                .map(|p| p.parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("{key} = {value:?}: give numbers like 50,90,99"))?;
        }
        "jobs.allow" => cfg.jobs.allow = list(value),
        "commands.allow" => cfg.commands.allow = list(value),
        "exec.programs" => cfg.exec.programs = list(value),
        "logs.files" => cfg.logs.files = list(value),
        "logs.journal" => {
            cfg.logs.journal = value
                .parse()
                .map_err(|_| format!("{key} = {value:?}: give true or false"))?;
        }
        "logs.journal_units" => cfg.logs.journal_units = list(value),
        "logs.journal_priority" => cfg.logs.journal_priority = value.trim().to_string(),
        "logs.keep_lines" => cfg.logs.keep_lines = list(value),
        "logs.drop_lines" => cfg.logs.drop_lines = list(value),
        "logs.poll_ms" => cfg.logs.poll_ms = number(key, value)?,
        "logs.max_lines_per_s" => {
            cfg.logs.max_lines_per_s = value
                .trim()
                .parse()
                .map_err(|_| format!("{key} = {value:?} is not a whole number of lines"))?;
        }
        "logs.multiline" => {
            for (source, begins) in by_source(key, value, "/var/log/app.log=????-??-??")? {
                let [begins] = <[String; 1]>::try_from(begins).map_err(|_| {
                    format!("{key}: {source:?} is given more than one beginning; give one")
                })?;
                cfg.logs.multiline.insert(source, begins);
            }
        }
        "logs.filters.keep_lines" | "logs.filters.drop_lines" => {
            let example = "/var/log/syslog=error, journal:ssh.service=Failed";
            for (source, texts) in by_source(key, value, example)? {
                let own = cfg.logs.filters.entry(source).or_default();
                if key.ends_with("keep_lines") {
                    own.keep_lines = texts;
                } else {
                    own.drop_lines = texts;
                }
            }
        }
        k if k.starts_with("app.") && k.len() > 4 => {}
        _ => {
            return Err(format!(
                "{key} cannot be set from the hub (keys: {}, app.*)",
                KEYS.join(", ")
            ));
        }
    }
    Ok(())
}

/// The outcome of applying a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The local config with the accepted keys over it.
    pub config: AgentConfig,
    /// The accepted keys and values.
    pub applied: BTreeMap<String, String>,
    /// The refused keys, each with why.
    pub errors: Vec<(String, String)>,
}

/// Applies `values` over `local`, key by key: a key `may_set` does not
/// name, that cannot be set, or whose value the config would refuse, is an
/// error and leaves its local value.
pub fn apply(local: &AgentConfig, values: &[(String, String)]) -> Outcome {
    let mut config = local.clone();
    let mut applied = BTreeMap::new();
    let mut errors = Vec::new();
    for (key, value) in values {
        if !allowed(&local.remote.may_set, key) {
            errors.push((
                key.clone(),
                "not in this device's [remote] may_set: the device keeps its own value".into(),
            ));
            continue;
        }
        let mut candidate = config.clone();
        let checked = set(&mut candidate, key, value).and_then(|()| {
            candidate
                .validate("the hub's configuration")
                .map_err(|e| e.to_string())
        });
        match checked {
            Ok(()) => {
                config = candidate;
                applied.insert(key.clone(), value.clone());
            }
            Err(e) => errors.push((key.clone(), e)),
        }
    }
    Outcome {
        config,
        applied,
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::may_set::unknown_pattern;

    fn doc(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn may_set_caps_what_the_hub_can_change() {
        let mut local = AgentConfig::default();
        local.exec.programs = vec!["uptime".into()];
        let out = apply(
            &local,
            &doc(&[
                ("host.interval_ms", "5000"),
                ("app.greeting", "hello"),
                ("exec.programs", "uptime,sh"),
                ("jobs.allow", "echo,exec"),
            ]),
        );
        assert_eq!(out.config.host.interval_ms, 5000);
        assert_eq!(out.config.exec.programs, ["uptime"], "never widened");
        assert_eq!(out.config.jobs.allow, local.jobs.allow);
        assert_eq!(
            out.applied.keys().collect::<Vec<_>>(),
            ["app.greeting", "host.interval_ms"]
        );
        let refused: Vec<&str> = out.errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(refused, ["exec.programs", "jobs.allow"]);
        assert!(out.errors[0].1.contains("may_set"));

        // Named in may_set, the exec list can be set.
        local.remote.may_set.push("exec.programs".into());
        let out = apply(&local, &doc(&[("exec.programs", "uptime,df")]));
        assert_eq!(out.config.exec.programs, ["uptime", "df"]);
    }

    #[test]
    fn log_sources_are_set_from_the_hub_only_where_may_set_names_them() {
        let mut local = AgentConfig::default();
        let logs = doc(&[
            ("logs.files", "/var/log/syslog, /var/log/app.log"),
            ("logs.journal", "true"),
            ("logs.journal_units", "ssh.service"),
            ("logs.journal_priority", "warning"),
            ("logs.drop_lines", "level=debug, GET /health* 200"),
        ]);
        let out = apply(&local, &logs);
        assert_eq!(out.config.logs, local.logs, "not by default");
        assert_eq!(out.errors.len(), 5);
        local.remote.may_set.push("logs.*".into());
        let out = apply(&local, &logs);
        assert_eq!(
            out.config.logs.files,
            ["/var/log/syslog", "/var/log/app.log"]
        );
        assert!(out.config.logs.journal);
        assert_eq!(out.config.logs.journal_units, ["ssh.service"]);
        assert_eq!(out.config.logs.journal_priority, "warning");
        assert_eq!(
            out.config.logs.drop_lines,
            ["level=debug", "GET /health* 200"]
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let out = apply(
            &local,
            &doc(&[
                ("logs.journal", "yes"),
                ("logs.files", "var/log/syslog"),
                ("logs.keep_lines", "ERROR,WA\u{7}RN"),
            ]),
        );
        assert_eq!(
            out.config.logs, local.logs,
            "bad values leave the local ones"
        );
        let why: Vec<&str> = out.errors.iter().map(|(_, e)| e.as_str()).collect();
        assert!(
            why[0].contains("true or false")
                && why[1].contains("absolute")
                && why[2].contains("printable"),
            "{why:?}"
        );
    }

    #[test]
    fn a_source_s_own_lists_are_set_from_the_hub_over_the_file_s() {
        use crate::sources::logs::SourceFilter;
        let mut local = AgentConfig::default();
        let lists = |keep: &[&str], drop: &[&str]| SourceFilter {
            keep_lines: keep.iter().map(|s| s.to_string()).collect(),
            drop_lines: drop.iter().map(|s| s.to_string()).collect(),
        };
        let syslog = "/var/log/syslog";
        (local.logs.filters).insert(syslog.into(), lists(&["ERROR"], &["cron"]));
        (local.logs.filters).insert("journal".into(), lists(&[], &["pam_unix"]));
        let set = doc(&[
            (
                "logs.filters.keep_lines",
                "/var/log/syslog=error, /var/log/syslog=warn, journal:ssh.service=Failed",
            ),
            (
                "logs.filters.drop_lines",
                "/var/log/app.log=GET /health=200",
            ),
        ]);
        let out = apply(&local, &set);
        assert_eq!(out.config.logs, local.logs, "not by default");
        local.remote.may_set.push("logs.filters.*".into());
        let out = apply(&local, &set);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let filters = &out.config.logs.filters;
        // The hub's list replaces the file's for each source it names; the
        // rest of the file's stays.
        assert_eq!(filters[syslog], lists(&["error", "warn"], &["cron"]));
        assert_eq!(filters["journal"], lists(&[], &["pam_unix"]));
        assert_eq!(filters["journal:ssh.service"], lists(&["Failed"], &[]));
        assert_eq!(
            filters["/var/log/app.log"],
            lists(&[], &["GET /health=200"])
        );

        let bad = doc(&[
            ("logs.filters.keep_lines", "error"),
            ("logs.filters.drop_lines", "=cron"),
        ]);
        let out = apply(&local, &bad);
        assert_eq!(out.config.logs, local.logs);
        for (key, why) in &out.errors {
            assert!(
                why.contains("names no source") && why.contains("SOURCE=TEXT"),
                "{key}: {why}"
            );
        }
        assert_eq!(out.errors.len(), 2);
        let out = apply(
            &local,
            &doc(&[("logs.filters.drop_lines", "/var/log/syslog=")]),
        );
        assert_eq!(out.config.logs, local.logs);
        assert!(out.errors[0].1.contains("printable"), "{:?}", out.errors);
    }

    #[test]
    fn multi_line_entries_and_the_pace_of_reading_are_set_from_the_hub() {
        let mut local = AgentConfig::default();
        local.remote.may_set.push("logs.*".into());
        let syslog = "/var/log/syslog";
        (local.logs.multiline).insert(syslog.into(), "<".into());
        let out = apply(
            &local,
            &doc(&[
                ("logs.multiline", "/var/log/app/*.log=????-??-??"),
                ("logs.poll_ms", "500"),
                ("logs.max_lines_per_s", "20"),
            ]),
        );
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let logs = &out.config.logs;
        assert_eq!(logs.multiline["/var/log/app/*.log"], "????-??-??");
        assert_eq!(logs.multiline[syslog], "<", "the file's other entries stay");
        assert_eq!((logs.poll_ms, logs.max_lines_per_s), (500, 20));

        let out = apply(
            &local,
            &doc(&[
                ("logs.multiline", "/var/log/a.log=<, /var/log/a.log=["),
                ("logs.poll_ms", "10"),
                ("logs.max_lines_per_s", "many"),
            ]),
        );
        assert_eq!(out.config.logs, local.logs);
        let why: Vec<&str> = out.errors.iter().map(|(_, e)| e.as_str()).collect();
        assert!(
            why[0].contains("more than one beginning")
                && why[1].contains("the least is 100 ms")
                && why[2].contains("whole number of lines"),
            "{why:?}"
        );
    }

    #[test]
    fn a_bad_value_is_refused_with_why_and_the_rest_applies() {
        let local = AgentConfig::default();
        let out = apply(
            &local,
            &doc(&[
                ("telemetry.sample_interval_ms", "5"),
                ("host.interval_ms", "soon"),
                ("ingest.percentiles", "50,99"),
                ("host.collect", "cpu,warp"),
                ("no.such", "1"),
            ]),
        );
        assert_eq!(out.config.ingest.percentiles, [50.0, 99.0]);
        assert_eq!(
            out.config.telemetry.sample_interval_ms,
            local.telemetry.sample_interval_ms
        );
        let errors: BTreeMap<&str, &str> = out
            .errors
            .iter()
            .map(|(k, e)| (k.as_str(), e.as_str()))
            .collect();
        assert!(
            errors["telemetry.sample_interval_ms"].contains("100"),
            "{errors:?}"
        );
        assert!(
            errors["host.interval_ms"].contains("whole number"),
            "{errors:?}"
        );
        assert!(errors["host.collect"].contains("warp"), "{errors:?}");
        assert!(errors["no.such"].contains("may_set"), "{errors:?}");
    }

    #[test]
    fn patterns_match_whole_segments() {
        let may: Vec<String> = vec!["host.*".into(), "app.*".into()];
        assert!(allowed(&may, "host.interval_ms"));
        assert!(allowed(&may, "app.x.y"));
        assert!(!allowed(&may, "hostile.x"));
        assert!(!allowed(&may, "exec.programs"));
        assert_eq!(unknown_pattern(&may), None);
        let bad: Vec<String> = vec!["telemetry.flush_interval_ms".into()];
        assert_eq!(unknown_pattern(&bad), Some("telemetry.flush_interval_ms"));
    }

    #[test]
    fn what_was_applied_survives_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Remote::default());
        let mut r = Remote {
            version: 7,
            ..Remote::default()
        };
        r.values.insert("app.x".into(), "1".into());
        r.values
            .insert("app.motd".into(), "two\nlines, a \\ and a \r".into());
        r.values.insert("app.empty".into(), String::new());
        save(dir.path(), &r).unwrap();
        assert_eq!(load(dir.path()).unwrap(), r);
        std::fs::write(path(dir.path()), "version x\n").unwrap();
        assert!(load(dir.path()).unwrap_err().contains("not readable"));
        std::fs::write(path(dir.path()), "version 1\napp.x a\\q\n").unwrap();
        assert!(load(dir.path()).unwrap_err().contains("bad escape"));
    }
}
