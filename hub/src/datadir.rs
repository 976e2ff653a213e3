//! The hub's data directory: created if missing, and held by one hub at a
//! time. Two hubs on one directory would share the SQLite file and the
//! keys, and the second would overwrite `endpoints.json`, so that after it
//! stopped every operator command went to a dead address.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

/// The lock file in the data directory; it holds the owner's pid.
const LOCK_FILE: &str = "hub.lock";

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "{} is in use by another fleetmq-hub{}; stop that one, or give this one its own --data-dir",
        dir.display(),
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse { dir: PathBuf, pid: Option<u32> },
    #[error("preparing the data directory {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The data directory, locked for as long as this value lives (the kernel
/// drops the lock when the process ends, however it ends).
#[derive(Debug)]
pub struct DataDir {
    _lock: File,
}

impl DataDir {
    /// Creates `dir` if needed and takes its lock, or says who holds it.
    pub fn lock(dir: &Path) -> Result<DataDir, DataDirError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DataDirError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        // SAFETY: flock on a descriptor this File owns; no memory is shared.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(&path)(e));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let pid = text.trim().parse().ok();
            return Err(DataDirError::InUse {
                dir: dir.to_path_buf(),
                pid,
            });
        }
        file.set_len(0).map_err(io(&path))?;
        file.rewind().map_err(io(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
        Ok(DataDir { _lock: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_second_is_told_who() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let first = DataDir::lock(&data).unwrap();
        // flock locks belong to the open file: a second open is refused even
        // within one process, as a second hub would be.
        let err = DataDir::lock(&data).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("(pid {})", std::process::id())) && text.contains("--data-dir"),
            "{text}"
        );
        drop(first);
        DataDir::lock(&data).expect("free again once the first is gone");
    }
}
