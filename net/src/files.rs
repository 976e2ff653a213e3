//! Small files written whole: a reader (another process, or this one after
//! a power cut) sees the old content or the new, never half of it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Writes `bytes` to `path` through `PATH.tmp`, synced, then renamed over
/// `path`; the directory is synced too where the file system allows it, so
/// the rename survives a power cut. With `mode`, the file has exactly
/// those permission bits (whatever the umask); without, the usual ones.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut open = OpenOptions::new();
    open.write(true).create_new(true);
    if let Some(mode) = mode {
        open.mode(mode);
    }
    let mut f = open.open(&tmp)?;
    if let Some(mode) = mode {
        // The umask may have taken bits away; it must not have added any.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename itself durable; not every file system allows this.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Reads a text file of at most `max` bytes. A larger one (or a device
/// like /dev/zero given by mistake) is an error that names the limit,
/// after reading no more than `max + 1` bytes.
pub fn read_capped(path: &Path, max: u64) -> io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    File::open(path)?.take(max + 1).read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes: is this the right file?"),
        ));
    }
    Ok(text)
}

/// `e`, with `path` in front of its message, so it says which file.
pub fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Whether `e` says the disk (or the user's quota) is full.
pub fn disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Keeps room on the disk for the day it fills: makes `path` a file of `bytes`
/// zero bytes if it is missing. A disk without room leaves it for later
/// (nothing half-made stays). The agent's spool and the hub's data
/// directory each keep one, and [`give_up_reserve`] when a write they
/// cannot do without finds the disk full.
pub fn keep_reserve(path: &Path, bytes: usize) {
    if path.exists() {
        return;
    }
    let made = File::create(path).and_then(|mut f| f.write_all(&vec![0u8; bytes]));
    if made.is_err() {
        let _ = fs::remove_file(path);
    }
}

/// Frees the reserve at `path`; true if there was one to free.
pub fn give_up_reserve(path: &Path) -> bool {
    fs::remove_file(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_with_the_mode_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seq");
        write_atomically(&path, b"1", None).unwrap();
        write_atomically(&path, b"22", Some(0o600)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"22");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!path.with_extension("tmp").exists(), "no temporary left");
        // A stale temporary from a crash is replaced, not an error.
        fs::write(path.with_extension("tmp"), b"half").unwrap();
        write_atomically(&path, b"333", None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"333");
    }

    #[test]
    fn errors_name_the_file() {
        let e = with_path(Path::new("/x/seq"), io::Error::other("disk full"));
        assert_eq!(e.to_string(), "/x/seq: disk full");
    }
}
