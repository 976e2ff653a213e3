//! `files` entries with `*` or `?` in their file name
//! (`/var/log/app/*.log`): every regular file of that directory whose
//! name matches is followed, as a file listed by its path would be, and the
//! directory is looked at again at every poll for files that came since.

use std::path::{Path, PathBuf};

/// Names never matched: a compressed copy of a rotated log is not text.
const COMPRESSED: [&str; 5] = [".gz", ".xz", ".bz2", ".zst", ".zip"];

/// Whether a `files` entry is a pattern.
pub fn is_pattern(entry: &str) -> bool {
    entry.contains(['*', '?'])
}

/// Why a pattern cannot be used, if it cannot: only its file name may
/// hold `*` or `?`.
pub fn check(pattern: &str) -> Result<(), String> {
    let (dir, name) = split(pattern);
    if is_pattern(dir) {
        return Err(format!(
            "{pattern:?}: only the file name may hold * or ?, not a directory (write /var/log/app/*.log)"
        ));
    }
    if name.is_empty() {
        return Err(format!("{pattern:?} names no file"));
    }
    Ok(())
}

fn split(pattern: &str) -> (&str, &str) {
    match pattern.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => ("", pattern),
    }
}

/// One pattern, and what `status` says of it.
#[derive(Debug)]
pub struct Pattern {
    pub text: String,
    dir: PathBuf,
    name: String,
    /// Followed before (`logs.state` names it): a file it matches now that
    /// has no mark came since, and is read from its beginning.
    pub seen: bool,
    /// Why the directory could not be read at the last look, if it could
    /// not (said once each time it changes).
    pub trouble: Option<String>,
    /// Multi-line entries of the files it matches (see `Followed`).
    pub begins: Option<String>,
    /// Files it matched at the last look that are not followed (too many,
    /// or a path too long), and whether that was said.
    pub skipped: usize,
    pub told: bool,
}

impl Pattern {
    pub fn new(text: &str, seen: bool, begins: Option<String>) -> Pattern {
        let (dir, name) = split(text);
        Pattern {
            text: text.to_string(),
            dir: PathBuf::from(dir),
            name: name.to_string(),
            seen,
            trouble: None,
            begins,
            skipped: 0,
            told: false,
        }
    }

    /// The paths of the regular files the pattern matches now, in order.
    pub fn paths(&mut self) -> Vec<String> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                let why = format!("its directory cannot be read ({e})");
                if self.trouble.as_ref() != Some(&why) {
                    tracing::warn!(pattern = %self.text, "log files: {why}; looked at again at every poll");
                }
                self.trouble = Some(why);
                return Vec::new();
            }
        };
        self.trouble = None;
        let mut paths: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.file_name().into_string().ok()?, e)))
            .filter(|(name, _)| {
                matches(self.name.as_bytes(), name.as_bytes())
                    && (!name.starts_with('.') || self.name.starts_with('.'))
                    && !COMPRESSED.iter().any(|z| name.ends_with(z))
            })
            .map(|(name, e)| (join(&self.dir, &name), e))
            // The directory says what each entry is: only a link is looked
            // at, not every file at every poll.
            .filter(|(path, e)| match e.file_type() {
                Ok(t) if t.is_symlink() => std::fs::metadata(path).is_ok_and(|m| m.is_file()),
                Ok(t) => t.is_file(),
                Err(_) => false,
            })
            .map(|(path, _)| path)
            .collect();
        paths.sort();
        paths
    }
}

fn join(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

/// Whether `name` matches `pattern`, where `*` is any run of bytes
/// (none included) and `?` any one byte; every other byte is itself.
pub fn matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and where in `name` it has matched up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` take one more byte, and try again.
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}
