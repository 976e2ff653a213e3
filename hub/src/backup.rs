//! `fleetmq-hub backup`: a copy of a hub's data directory that is itself a
//! data directory, taken while the hub runs and goes on storing.
//!
//! The store is copied with SQLite's `VACUUM INTO`: one read transaction,
//! so the copy is the store as one commit left it (batches, devices' batch
//! numbers, jobs, configuration together), while the hub's commits go on
//! into the write-ahead log. The copy is synced and checked
//! (`quick_check`) before it counts, and its job ids and configuration
//! version are moved on (a hub started on it must not give a number the
//! lost hub gave after the copy: devices remember both).
//! Beside it go the files a hub cannot
//! be rebuilt without: its key pair (agents trust its public key) and its
//! allow lists, each under its own name.

use std::fs::{self, DirBuilder, File};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::config::HubConfig;

mod keep;
pub use keep::{Kept, backup_keeping};

/// What a backup wrote.
#[derive(Debug, Serialize)]
pub struct Backup {
    /// The backup directory.
    pub dir: PathBuf,
    /// Each file written; `hub.db` first.
    pub files: Vec<Written>,
}

/// One file of a backup.
#[derive(Debug, Serialize)]
pub struct Written {
    pub name: String,
    pub bytes: u64,
}

/// Why a backup was not made. Nothing of the hub's own is changed either way.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "{}: no hub.db there; is it the hub's data directory? (--data-dir, or --config for its data_dir)",
        .0.display()
    )]
    NoStore(PathBuf),
    #[error("{} is not empty: a backup never replaces files; name a new directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("{}: SQLite needs the backup's path as UTF-8 text; choose another", .0.display())]
    NotUtf8(PathBuf),
    #[error("--keep 0 would remove the backup just made: keep at least 1")]
    KeepNone,
    #[error("copying the store into {}", path.display())]
    Store {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the copy in {} failed SQLite's check ({why}); it was removed, and the hub's own store is untouched",
        path.display()
    )]
    Check { path: PathBuf, why: String },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BackupError {
    /// A mistake in what was asked for, not a failure while copying.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            BackupError::NoStore(_)
                | BackupError::NotEmpty(_)
                | BackupError::NotUtf8(_)
                | BackupError::KeepNone
        )
    }
}

/// How long the copy waits for a lock the hub holds (a checkpoint that
/// truncates the log holds one for milliseconds).
const BUSY: Duration = Duration::from_secs(10);

/// Copies the data directory `config` names into `to`, a new or empty
/// directory (made with mode 0700: it holds the hub's secret key).
pub fn backup(config: &HubConfig, to: &Path) -> Result<Backup, BackupError> {
    let store = config.data_dir.join("hub.db");
    if !store.is_file() {
        return Err(BackupError::NoStore(config.data_dir.clone()));
    }
    let target = to.join("hub.db");
    let Some(target_text) = target.to_str() else {
        return Err(BackupError::NotUtf8(to.to_path_buf()));
    };
    let made = new_directory(to)?;
    let done = fill(config, &store, to, target_text);
    if done.is_err() {
        // Half a backup is worse than none: what was written goes (the
        // directory was empty, or new).
        if made {
            let _ = fs::remove_dir_all(to);
        } else if let Ok(entries) = fs::read_dir(to) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    done
}

/// Writes the backup into the empty directory `to`.
fn fill(config: &HubConfig, store: &Path, to: &Path, target: &str) -> Result<Backup, BackupError> {
    let sqlite = |source| BackupError::Store {
        path: to.to_path_buf(),
        source,
    };
    let conn =
        Connection::open_with_flags(store, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(sqlite)?;
    conn.busy_timeout(BUSY).map_err(sqlite)?;
    conn.execute("VACUUM INTO ?1", [target]).map_err(sqlite)?;
    drop(conn);
    let target = Path::new(target);
    move_numbers_on(target).map_err(sqlite)?;
    sync(target)?;
    if let Err(why) = check(target) {
        let path = target.to_path_buf();
        return Err(BackupError::Check { path, why });
    }
    let mut files = vec![Written {
        name: "hub.db".into(),
        bytes: size(target)?,
    }];

    let keys = ["hub.key", "hub.pub"].map(|k| config.data_dir.join(k));
    let lists = [config.allow_list_path(), config.operator_allow_list_path()];
    let tokens = [config.http_token_path(), config.http_admin_token_path()];
    for from in keys
        .into_iter()
        .chain(lists)
        .chain(tokens.into_iter().flatten())
    {
        let Some(name) = from.file_name() else {
            continue;
        };
        if !from.is_file() {
            continue; // a plaintext hub has no keys, a quiet one no lists
        }
        let into = to.join(name);
        // std's copy gives the copy the original's mode: hub.key stays 0600.
        fs::copy(&from, &into).map_err(|source| BackupError::Io {
            path: from.clone(),
            source,
        })?;
        sync(&into)?;
        files.push(Written {
            name: name.to_string_lossy().into_owned(),
            bytes: size(&into)?,
        });
    }
    sync(to)?;
    Ok(Backup {
        dir: to.to_path_buf(),
        files,
    })
}

/// How far a hub started on the copy moves its job and fleet command ids
/// and its configuration version on: more than the hub it was copied from
/// hands out between a backup and its restore. Devices remember two of
/// them: an agent answers a job id it ran with that job's result instead
/// of running it, and a device is sent the configuration only when its
/// version is past the one it applied. A fleet command's id is what an
/// operator's script reads its answers by.
pub const GAP: i64 = 1_000_000_000;

/// Makes the copy's next job and fleet command ids, and its
/// configuration's version, [`GAP`] past the highest it holds.
fn move_numbers_on(db: &Path) -> Result<(), rusqlite::Error> {
    let mut conn = Connection::open(db)?;
    let tx = conn.transaction()?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    )?;
    for table in ["jobs", "fleet_commands"] {
        tx.execute(
            &format!(
                "INSERT INTO marks (name, value) VALUES ('{table}.last_id', {} + ?1) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                crate::store::highest_id(table)
            ),
            [GAP],
        )?;
    }
    // Every key's stamp moves alike, so their order stays, and devices
    // are sent what applies to them; the next edit goes on from there.
    tx.execute(
        "INSERT INTO marks (name, value) VALUES ('config.version', \
         coalesce((SELECT max(version) FROM config), 0) + ?1) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        [GAP],
    )?;
    tx.execute("UPDATE config SET version = version + ?1", [GAP])?;
    tx.commit()
}

/// Makes `dir` (mode 0700) or takes it if it exists and is empty;
/// whether it made it.
fn new_directory(dir: &Path) -> Result<bool, BackupError> {
    let io = |source| BackupError::Io {
        path: dir.to_path_buf(),
        source,
    };
    match fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::NotEmpty(dir.to_path_buf()));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map(|()| true)
            .map_err(io),
        Err(e) => Err(io(e)),
    }
}

/// SQLite's `quick_check` of the copy: `Ok` when it reads "ok".
fn check(db: &Path) -> Result<(), String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| e.to_string())?;
    let verdict: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(verdict)
    }
}

/// Flushes `path` (a file or a directory) to the disk.
fn sync(path: &Path) -> Result<(), BackupError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|source| BackupError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn size(path: &Path) -> Result<u64, BackupError> {
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| BackupError::Io {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, Synchronous};
    use std::os::unix::fs::PermissionsExt as _;

    /// A hub's data directory with a store, keys and an allow list.
    pub(super) fn hub_dir() -> (tempfile::TempDir, HubConfig) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        drop(Store::open(&data, Synchronous::Full).unwrap());
        fs::write(data.join("hub.key"), "secret\n").unwrap();
        fs::set_permissions(data.join("hub.key"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(data.join("hub.pub"), "public\n").unwrap();
        fs::write(data.join("allowed_devices"), "pi-1 KEY\n").unwrap();
        let config = HubConfig {
            data_dir: data,
            ..HubConfig::default()
        };
        (dir, config)
    }

    #[test]
    fn a_backup_is_a_data_directory_with_the_keys_and_lists() {
        let (dir, config) = hub_dir();
        let to = dir.path().join("backups/monday");
        let done = backup(&config, &to).unwrap();
        let names: Vec<&str> = done.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["hub.db", "hub.key", "hub.pub", "allowed_devices"]);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode(&to.join("hub.key")),
            0o600,
            "the secret key stays private"
        );
        assert_eq!(mode(&to), 0o700);
        assert_eq!(
            fs::read_to_string(to.join("allowed_devices")).unwrap(),
            "pi-1 KEY\n"
        );
        // The copy opens as a store, and gives job ids past any the hub
        // can have given since.
        let mut original = Store::open(&config.data_dir, Synchronous::Full).unwrap();
        let mut restored = Store::open(&to, Synchronous::Full).unwrap();
        let job = crate::store::tests::echo_job(1);
        assert_eq!(original.submit_job(&job, 0).unwrap(), 1);
        assert_eq!(restored.submit_job(&job, 0).unwrap(), GAP as u64 + 1);
        // The configuration too: a device that applied a version the lost
        // hub reached after the copy is sent the restored one.
        let set = [("app.x".to_string(), "1".to_string())];
        assert_eq!(original.config_edit("fleet", &set, &[], 0).unwrap(), 1);
        assert_eq!(
            restored.config_edit("fleet", &set, &[], 0).unwrap(),
            GAP as u64 + 1
        );
        // And fleet commands, read by their ids.
        let ping = fleetmq_protocol::Command::Ping;
        let fleet = |s: &mut Store| s.fleet_submit(&ping, "all", &[], 0, 1, 0).unwrap();
        assert_eq!(fleet(&mut original), 1);
        assert_eq!(fleet(&mut restored), GAP as u64 + 1);
    }

    #[test]
    fn a_backup_replaces_nothing_and_needs_a_store() {
        let (dir, config) = hub_dir();
        let to = dir.path().join("full");
        fs::create_dir(&to).unwrap();
        fs::write(to.join("hub.db"), "older backup").unwrap();
        let e = backup(&config, &to).unwrap_err();
        assert!(matches!(e, BackupError::NotEmpty(_)) && e.is_usage(), "{e}");
        assert_eq!(
            fs::read_to_string(to.join("hub.db")).unwrap(),
            "older backup"
        );

        let elsewhere = HubConfig {
            data_dir: dir.path().join("nowhere"),
            ..HubConfig::default()
        };
        let e = backup(&elsewhere, &dir.path().join("new")).unwrap_err();
        assert!(e.to_string().contains("no hub.db there"), "{e}");
        assert!(
            !dir.path().join("new").exists(),
            "nothing made for a failed backup"
        );
    }

    #[test]
    fn a_backup_that_fails_leaves_nothing_behind() {
        let (dir, config) = hub_dir();
        fs::write(config.data_dir.join("hub.db"), vec![7u8; 8192]).unwrap();
        let made = dir.path().join("made");
        let e = backup(&config, &made).unwrap_err();
        assert!(
            matches!(e, BackupError::Store { .. }) && !e.is_usage(),
            "{e}"
        );
        assert!(!made.exists(), "the directory it made is gone");
        let given = dir.path().join("given");
        fs::create_dir(&given).unwrap();
        backup(&config, &given).unwrap_err();
        let left: Vec<_> = fs::read_dir(&given).unwrap().collect();
        assert!(
            left.is_empty(),
            "an empty directory given stays, empty: {left:?}"
        );
    }
}
