//! The `[logs]` section as the agent's file (and the hub, where `may_set`
//! lets it) writes it, and why one cannot be used ([`check`]): the files
//! and patterns followed, the journal, multi-line entries, the line
//! filters of every source and of each one, and the pace of reading.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{filter, glob};

/// The `[logs]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Files to follow, by absolute path; each line is sent with the path
    /// as its source. `*` and `?` in a file name match every such file of
    /// its directory, those that come later included.
    pub files: Vec<String>,
    /// How often the files are looked at.
    pub poll_ms: u64,
    /// Most lines read from one file a second; past it the rest waits in
    /// the file for the next poll.
    pub max_lines_per_s: u32,
    /// Multi-line entries (a stack trace with the line that logged it):
    /// for an entry of `files` (as written there), how a line that begins
    /// an entry begins (`*` any run, `?` any one byte); any other
    /// line continues the entry before it.
    pub multiline: BTreeMap<String, String>,
    /// When not empty, only lines that hold one of these are sent (`*`
    /// any run, `?` any one byte; case matters); of the files' and the
    /// journal's, a multi-line entry as a whole.
    pub keep_lines: Vec<String>,
    /// Lines that hold one of these are not sent (read and counted in
    /// `status` only).
    pub drop_lines: Vec<String>,
    /// Lists of one source's own, for an entry of `files` (as written
    /// there), `journal`, or `journal:UNIT` (one unit's lines, after the
    /// journal's lists): applied after `keep_lines` and `drop_lines`, so
    /// such a line is sent when it passes both.
    pub filters: BTreeMap<String, SourceFilter>,
    /// Where a file first seen at start is read from: `end` (only what is
    /// written from now on) or `beginning`. A file that appears later, or
    /// replaces a rotated one, is read from its beginning. For the
    /// journal, `beginning` is this boot's entries.
    pub start_at: StartAt,
    /// Read the systemd journal too (through `journalctl`).
    pub journal: bool,
    /// Only these units' entries (`ssh.service`); empty: every entry.
    pub journal_units: Vec<String>,
    /// Only entries of this priority or more urgent (`warning`: emerg to
    /// warning); empty: every entry.
    pub journal_priority: String,
    /// The journal's reader.
    pub journalctl: String,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            files: Vec::new(),
            poll_ms: 1_000,
            max_lines_per_s: 1_000,
            multiline: BTreeMap::new(),
            keep_lines: Vec::new(),
            drop_lines: Vec::new(),
            filters: BTreeMap::new(),
            start_at: StartAt::End,
            journal: false,
            journal_units: Vec::new(),
            journal_priority: String::new(),
            journalctl: "journalctl".into(),
        }
    }
}

/// One source's own `keep_lines` and `drop_lines` (`[logs.filters]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceFilter {
    pub keep_lines: Vec<String>,
    pub drop_lines: Vec<String>,
}

/// The `[logs.filters]` entry that names the journal.
pub const JOURNAL_ENTRY: &str = "journal";
/// How an entry that names one unit of the journal begins (`journal:UNIT`,
/// the source its lines are sent from).
const JOURNAL_UNIT: &str = "journal:";

/// Whether a `[logs.filters]` entry names one unit of the journal.
pub(super) fn names_unit(entry: &str) -> bool {
    entry.starts_with(JOURNAL_UNIT)
}

/// Whether a `[logs.filters]` entry names the journal or one of its units.
pub(super) fn is_journal(entry: &str) -> bool {
    entry == JOURNAL_ENTRY || names_unit(entry)
}

/// Where a file first seen at start is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    End,
    Beginning,
}

/// Why a `[logs]` section cannot be used.
pub fn check(cfg: &LogsConfig) -> Result<(), (&'static str, String)> {
    for (i, path) in cfg.files.iter().enumerate() {
        if !path.starts_with('/') {
            return Err((
                "logs.files",
                format!("{path:?} is not an absolute path: give the file's whole path"),
            ));
        }
        if !fleetmq_protocol::telemetry::valid_metric_name(path) {
            return Err((
                "logs.files",
                format!(
                    "{path:?}: a path is sent with every line, so it must be 1 to {} printable bytes",
                    fleetmq_protocol::telemetry::MAX_METRIC_NAME_LEN
                ),
            ));
        }
        if cfg.files[..i].contains(path) {
            return Err(("logs.files", format!("{path:?} is listed twice")));
        }
        if glob::is_pattern(path) {
            glob::check(path).map_err(|e| ("logs.files", e))?;
        }
    }
    // An entry files does not list is not an error: the hub may set the
    // files (logs.files) and leave this file's entries unused.
    for (entry, begins) in &cfg.multiline {
        if begins.is_empty() || begins.len() > 256 || begins.chars().any(char::is_control) {
            return Err((
                "logs.multiline",
                format!(
                    "{entry:?} = {begins:?}: give how a line that begins an entry begins, 1 to 256 printable bytes (\"????-??-?? \" for a date)"
                ),
            ));
        }
    }
    filter::check(&cfg.keep_lines).map_err(|e| ("logs.keep_lines", e))?;
    filter::check(&cfg.drop_lines).map_err(|e| ("logs.drop_lines", e))?;
    for (entry, own) in &cfg.filters {
        if entry == JOURNAL_UNIT {
            return Err((
                "logs.filters",
                format!(
                    "{entry:?} names no unit: write \"journal:UNIT\" with the unit as the hub shows a line's source (\"journal:ssh.service\", \"journal:kernel\")"
                ),
            ));
        }
        let name = |list: &str, e: String| ("logs.filters", format!("{entry:?} {list}: {e}"));
        filter::check(&own.keep_lines).map_err(|e| name("keep_lines", e))?;
        filter::check(&own.drop_lines).map_err(|e| name("drop_lines", e))?;
    }
    if !cfg.journal_priority.is_empty() && !PRIORITIES.contains(&cfg.journal_priority.as_str()) {
        return Err((
            "logs.journal_priority",
            format!(
                "{:?} is not a priority: one of {}, or \"\" for every entry",
                cfg.journal_priority,
                PRIORITIES[..8].join(", ")
            ),
        ));
    }
    if cfg.poll_ms < 100 {
        return Err((
            "logs.poll_ms",
            format!("{} ms is too short: the least is 100 ms", cfg.poll_ms),
        ));
    }
    if cfg.max_lines_per_s == 0 {
        return Err(("logs.max_lines_per_s", "must be more than 0".into()));
    }
    if let Some(unit) = cfg
        .journal_units
        .iter()
        .find(|u| u.is_empty() || u.starts_with('-') || u.chars().any(char::is_whitespace))
    {
        return Err((
            "logs.journal_units",
            format!("{unit:?} is not a unit name (such as \"ssh.service\")"),
        ));
    }
    if cfg.journalctl.is_empty() {
        return Err((
            "logs.journalctl",
            "names no program: give \"journalctl\" or its path".into(),
        ));
    }
    Ok(())
}

/// What `journal_priority` may be, as journalctl's `--priority` takes it.
const PRIORITIES: [&str; 16] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug", "0", "1", "2", "3", "4",
    "5", "6", "7",
];
