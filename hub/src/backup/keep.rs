//! `fleetmq-hub backup --keep N DIR`: DIR holds a series of backups, each
//! in a directory named by when it was made (`hub-20261205T195804Z`, so
//! that names sort by age). A new one is made first; only once it is
//! whole are the oldest beyond the newest N removed, so a failed backup
//! never costs an old one. Only directories with that name and a `hub.db`
//! are taken for backups, and one is removed only if it holds nothing but
//! files (what a backup writes): anything else is left, and said.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Backup, BackupError, backup};
use crate::config::HubConfig;

/// What `backup --keep` did.
#[derive(Debug, Serialize)]
pub struct Kept {
    /// The new backup.
    #[serde(flatten)]
    pub backup: Backup,
    /// Older backups removed, oldest first.
    pub removed: Vec<PathBuf>,
    /// Older backups that were to go but could not, with why.
    pub left: Vec<(PathBuf, String)>,
}

impl Kept {
    /// A backup made on its own, with no series to keep.
    pub fn alone(backup: Backup) -> Kept {
        Kept {
            backup,
            removed: Vec::new(),
            left: Vec::new(),
        }
    }
}

/// The name of a backup made at `now_ms` (ms since the epoch).
pub fn name_at(now_ms: u64) -> String {
    // `2026-12-05T19:58:04.123Z` -> `20261205T195804Z`.
    let stamp = crate::operator::format::fmt_ts(now_ms);
    let (date_time, _) = stamp.split_once('.').unwrap_or((&stamp, ""));
    let compact: String = date_time
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    format!("hub-{compact}Z")
}

/// Whether `name` is one [`name_at`] gives, or one [`free_name`] gives.
/// Read as bytes: a directory's name may be any text, and a byte offset
/// into it need not fall between characters.
fn is_backup_name(name: &str) -> bool {
    let digits = |b: &[u8]| b.iter().all(u8::is_ascii_digit);
    let Some(rest) = name.as_bytes().strip_prefix(b"hub-") else {
        return false;
    };
    if rest.len() < 16 {
        return false;
    }
    let (stamp, suffix) = rest.split_at(16);
    digits(&stamp[..8])
        && stamp[8] == b'T'
        && digits(&stamp[9..15])
        && stamp[15] == b'Z'
        && (suffix.is_empty() || (suffix.len() == 4 && suffix[0] == b'-' && digits(&suffix[1..])))
}

/// Makes a backup in `parent` named by `now_ms`, then removes the oldest
/// backups there beyond the newest `keep` (at least 1).
pub fn backup_keeping(
    config: &HubConfig,
    parent: &Path,
    keep: usize,
    now_ms: u64,
) -> Result<Kept, BackupError> {
    if keep == 0 {
        return Err(BackupError::KeepNone);
    }
    let made = backup(config, &free_name(parent, now_ms))?;
    let mut backups = backups_in(parent)?;
    backups.sort();
    let over = backups.len().saturating_sub(keep);
    let (mut removed, mut left) = (Vec::new(), Vec::new());
    for old in backups.into_iter().take(over) {
        match remove_backup(&old) {
            Ok(()) => removed.push(old),
            Err(why) => left.push((old, why)),
        }
    }
    Ok(Kept {
        backup: made,
        removed,
        left,
    })
}

/// Where a backup made at `now_ms` goes in `parent`: its [`name_at`], or
/// with `-002`, `-003`... after it when backups came within one second
/// (which sorts after it, and before the next second's).
fn free_name(parent: &Path, now_ms: u64) -> PathBuf {
    let name = name_at(now_ms);
    let mut path = parent.join(&name);
    let mut n = 1;
    while path.exists() && n < 999 {
        n += 1;
        path = parent.join(format!("{name}-{n:03}"));
    }
    path
}

/// The backups in `parent`: directories named as [`name_at`] names them
/// that hold a `hub.db`.
fn backups_in(parent: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let io = |source| BackupError::Io {
        path: parent.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(parent).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let named = (path.file_name().and_then(|n| n.to_str())).is_some_and(is_backup_name);
        if named && path.is_dir() && path.join("hub.db").is_file() {
            found.push(path);
        }
    }
    Ok(found)
}

/// Removes one backup directory, if it holds only files; else says what
/// it holds besides.
fn remove_backup(dir: &Path) -> Result<(), String> {
    let entries: Vec<PathBuf> = fs::read_dir(dir)
        .and_then(|list| list.map(|e| e.map(|e| e.path())).collect())
        .map_err(|e| e.to_string())?;
    if let Some(other) = entries.iter().find(|p| !p.is_file()) {
        return Err(format!(
            "it holds {}, which a backup does not write: left as it is",
            other.display()
        ));
    }
    for file in &entries {
        fs::remove_file(file).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    fs::remove_dir(dir).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::tests::hub_dir;
    use super::*;

    const DAY_MS: u64 = 86_400_000;
    /// 2026-12-05T19:58:04.123Z.
    const T0: u64 = 1_796_500_684_123;

    #[test]
    fn a_backup_is_named_by_its_time_so_that_names_sort_by_age() {
        assert_eq!(name_at(T0), "hub-20261205T195804Z");
        assert!(is_backup_name(&name_at(T0)));
        assert!(name_at(T0) < name_at(T0 + DAY_MS));
        for other in [
            "hub-20261205T1958éZ",
            "hub-abcdefgéT195804Z",
            "hub-20261205T195804Z-1000",
            "hub-2026",
            "hub-20261205T1958Z",
            "db-20261205T195804Z",
            "hub-20261205X195804Z",
        ] {
            assert!(!is_backup_name(other), "{other}");
        }
    }

    #[test]
    fn the_newest_backups_are_kept_and_nothing_else_is_touched() {
        let (dir, config) = hub_dir();
        let parent = dir.path().join("backups");
        // Not ours: a directory named otherwise, and one named as a backup
        // that holds no store.
        fs::create_dir_all(parent.join("notes")).unwrap();
        fs::create_dir_all(parent.join(name_at(T0 - DAY_MS))).unwrap();
        for day in 0..3 {
            let kept = backup_keeping(&config, &parent, 2, T0 + day * DAY_MS).unwrap();
            assert_eq!(kept.backup.dir, parent.join(name_at(T0 + day * DAY_MS)));
            let gone: Vec<PathBuf> = if day == 2 {
                vec![parent.join(name_at(T0))]
            } else {
                vec![]
            };
            assert_eq!(kept.removed, gone, "day {day}");
        }
        let mut names: Vec<String> = fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                name_at(T0 - DAY_MS),
                name_at(T0 + DAY_MS),
                name_at(T0 + 2 * DAY_MS),
                "notes".into()
            ]
        );
    }

    #[test]
    fn backups_within_one_second_get_names_that_sort_after_it() {
        let (dir, config) = hub_dir();
        let parent = dir.path().join("backups");
        let dirs: Vec<PathBuf> = (0..3)
            .map(|_| backup_keeping(&config, &parent, 2, T0).unwrap().backup.dir)
            .collect();
        let name = name_at(T0);
        assert_eq!(
            dirs,
            [
                parent.join(&name),
                parent.join(format!("{name}-002")),
                parent.join(format!("{name}-003"))
            ]
        );
        assert!(is_backup_name(&format!("{name}-002")) && !is_backup_name(&format!("{name}-x")));
        assert!(!parent.join(&name).exists(), "the oldest of the three went");
        let next = backup_keeping(&config, &parent, 2, T0 + 1_000).unwrap();
        assert_eq!(next.removed, [parent.join(format!("{name}-002"))]);
    }

    #[test]
    fn a_backup_holding_what_a_backup_does_not_write_is_left_and_said() {
        let (dir, config) = hub_dir();
        let parent = dir.path().join("backups");
        backup_keeping(&config, &parent, 1, T0).unwrap();
        fs::create_dir(parent.join(name_at(T0)).join("mine")).unwrap();
        let kept = backup_keeping(&config, &parent, 1, T0 + DAY_MS).unwrap();
        assert!(kept.removed.is_empty());
        assert_eq!(kept.left.len(), 1);
        assert!(kept.left[0].1.contains("mine"), "{:?}", kept.left);
        assert!(parent.join(name_at(T0)).join("hub.db").exists());
        let e = backup_keeping(&config, &parent, 0, T0 + 2 * DAY_MS).unwrap_err();
        assert!(e.is_usage(), "{e}");
    }
}
