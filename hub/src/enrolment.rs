//! The allow list file: its format, the edits `allow` and `revoke` make,
//! and the watch that tells a running hub it changed. What the hub decides
//! with the list is in [`crate::core`] (admission).
//!
//! The allow list is a text file, one enrolled device per line:
//!
//! ```text
//! # comments start with '#'
//! pi-kitchen  rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7
//! pi-barn     Cx2]&kL!w0Zb8.Qe@Tq1n>VfR9s4u+Hy7mP3dGj6  groups=north,barns
//! ```
//!
//! A device may have more than one key (while it rotates keys); a key
//! belongs to one device. A `groups=` word pins the device's groups: the
//! hub then takes them from here, whatever its Hello says (a device named
//! on no such line names its own). Every line of a device that has the
//! word must name the same groups; a line without it takes them. The ZAP handler lets a CURVE client in only if its
//! public key is listed, and answers with the device id as the connection's
//! user id. libzmq stamps that id on every message from the connection, and
//! the hub drops any message whose claimed device is not that id: a device
//! cannot speak for another.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use fleetmq_protocol::{validate_device_id, validate_group};

mod revoked;
pub use revoked::REVOKED_MARK;
use revoked::{Revoked, parse_revoked};

/// The most an allow list file may hold: about half a million devices.
pub const LIST_FILE_MAX: u64 = 64 << 20;

/// The header a new allow list file starts with.
const HEADER: &str = "\
# fleetmq allow list: one enrolled device per line, DEVICE_ID PUBLIC_KEY,
# and optionally groups=GROUP,GROUP to pin the device's groups (the hub
# then ignores the groups its Hello names).
# The public key is the Z85 line of the device's agent.pub.
# `fleetmq-hub allow DEVICE KEY` and `fleetmq-hub revoke DEVICE` edit this
# file; so may you. A running hub applies changes within a second, and
# closes the connections of a revoked device. `revoke` leaves a line
# '# revoked DEVICE KEY on TIME', by which the hub (after a restart too)
# names a revoked device that still tries to connect.
";

/// A problem with the allow list, naming the file and line.
#[derive(Debug, thiserror::Error)]
pub enum AllowError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {why}")]
    Line {
        path: PathBuf,
        line: usize,
        why: String,
    },
}

/// The enrolled devices: public key (Z85) to device id, and the groups
/// of the devices whose groups the list pins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    by_key: HashMap<String, String>,
    devices: HashSet<String>,
    groups: HashMap<String, Vec<String>>,
    /// Keys revoked, as the file's `# revoked DEVICE KEY ...` lines name
    /// them: key to the line (device, then what follows the key). A key
    /// enrolled again is not here.
    revoked: BTreeMap<String, Revoked>,
}

/// The word that pins a device's groups: `groups=a,b` (`groups=` alone
/// pins it to none).
pub const GROUPS_WORD: &str = "groups=";

/// The groups a `groups=` word names, checked as broadcasts to them are.
pub fn parse_groups(word: &str) -> Result<Vec<String>, String> {
    match word.strip_prefix(GROUPS_WORD) {
        Some(list) => parse_group_list(list),
        None => Err(format!(
            "{word:?} is not {GROUPS_WORD}GROUP,GROUP (the third word pins the device's groups)"
        )),
    }
}

/// Comma-separated group names (none for an empty list), sorted and each
/// once, checked as broadcasts to them are.
pub fn parse_group_list(list: &str) -> Result<Vec<String>, String> {
    let mut groups: Vec<String> = Vec::new();
    for g in list.split(',').filter(|g| !g.is_empty()) {
        validate_group(g).map_err(|e| e.to_string())?;
        if !groups.iter().any(|have| have == g) {
            groups.push(g.to_string());
        }
    }
    groups.sort();
    Ok(groups)
}

/// `groups` as the word that pins them.
pub fn groups_word(groups: &[String]) -> String {
    format!("{GROUPS_WORD}{}", groups.join(","))
}

impl AllowList {
    /// Parses the file's text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, AllowError> {
        let mut by_key: HashMap<String, String> = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        // Each pinned device's groups, with the line that first named them.
        let mut groups_line: HashMap<String, (usize, Vec<String>)> = HashMap::new();
        let mut revoked = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |why: String| AllowError::Line {
                path: path.to_path_buf(),
                line,
                why,
            };
            let entry = raw.trim();
            if let Some((key, entry)) = parse_revoked(entry) {
                revoked.insert(key, entry);
                continue;
            }
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let mut words = entry.split_whitespace();
            let (Some(device), Some(key), pin, None) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                return Err(err(format!(
                    "{entry:?} is not DEVICE_ID PUBLIC_KEY [groups=GROUP,GROUP]"
                )));
            };
            validate_device_id(device).map_err(|e| err(e.to_string()))?;
            fleetmq_net::keys::check(key)
                .map_err(|why| err(format!("the key for {device}: {why}")))?;
            if let Some(word) = pin {
                let groups = parse_groups(word).map_err(|why| err(format!("{device}: {why}")))?;
                match groups_line.get(device) {
                    Some((at, had)) if *had != groups => {
                        return Err(err(format!(
                            "{device} is pinned to {} on line {at}: every line of a device names the same groups (or none)",
                            groups_word(had)
                        )));
                    }
                    Some(_) => {}
                    None => {
                        groups_line.insert(device.to_string(), (line, groups));
                    }
                }
            }
            if let Some(other) = by_key.get(key) {
                if other != device {
                    return Err(err(format!(
                        "this key is already {other}'s (line {}); a key belongs to one device",
                        first_line.get(key).copied().unwrap_or_default()
                    )));
                }
                continue;
            }
            first_line.insert(key.to_string(), line);
            by_key.insert(key.to_string(), device.to_string());
        }
        let devices = by_key.values().cloned().collect();
        let groups = groups_line.into_iter().map(|(d, (_, g))| (d, g)).collect();
        revoked.retain(|key, _| !by_key.contains_key(key));
        Ok(AllowList {
            by_key,
            devices,
            groups,
            revoked,
        })
    }

    /// The device `key` was enrolled as, if the file says it was revoked.
    pub fn revoked_device(&self, key: &str) -> Option<&str> {
        self.revoked.get(key).map(|r| r.device.as_str())
    }

    /// Whether the list says the same of who is enrolled and their groups
    /// as `other` (the `# revoked` lines aside).
    pub fn same_enrolment(&self, other: &AllowList) -> bool {
        (&self.by_key, &self.devices, &self.groups)
            == (&other.by_key, &other.devices, &other.groups)
    }

    /// Reads the file, creating it (with a header, empty) when missing.
    pub fn load(path: &Path) -> Result<Self, AllowError> {
        create_if_missing(path)?;
        Self::read(path)
    }

    /// Reads the file; a missing one is an empty list, and nothing is
    /// written.
    pub fn read(path: &Path) -> Result<Self, AllowError> {
        match fleetmq_net::files::read_capped(path, LIST_FILE_MAX) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AllowList::default()),
            Err(source) => Err(AllowError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The device this key is enrolled as.
    pub fn device(&self, key: &str) -> Option<&str> {
        self.by_key.get(key).map(String::as_str)
    }

    /// Why `key` may not be enrolled as `device`: it is another device's.
    pub fn taken(&self, device: &str, key: &str) -> Result<(), String> {
        match self.device(key).filter(|d| *d != device) {
            Some(other) => Err(format!(
                "this key is enrolled as {other}; revoke {other} first"
            )),
            None => Ok(()),
        }
    }

    /// The keys enrolled for `device`, sorted.
    pub fn keys_of(&self, device: &str) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .by_key
            .iter()
            .filter(|(_, d)| d.as_str() == device)
            .map(|(k, _)| k.as_str())
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Whether `device` has any key on the list.
    pub fn has_device(&self, device: &str) -> bool {
        self.devices.contains(device)
    }

    /// The groups the list pins `device` to, if it pins them.
    pub fn groups_of(&self, device: &str) -> Option<&[String]> {
        self.groups.get(device).map(Vec::as_slice)
    }

    /// Every pinned device and its groups, sorted.
    pub fn pinned(&self) -> Vec<(&str, &[String])> {
        let mut pinned: Vec<(&str, &[String])> = self
            .groups
            .iter()
            .map(|(d, g)| (d.as_str(), g.as_slice()))
            .collect();
        pinned.sort_unstable();
        pinned
    }

    /// Pins `device` (enrolled) to `groups`.
    pub fn pin(&mut self, device: &str, groups: Vec<String>) {
        if self.devices.contains(device) {
            self.groups.insert(device.to_string(), groups);
        }
    }

    /// Number of keys enrolled.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key is enrolled.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every (device, key) pair, sorted.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        let mut pairs: Vec<(&str, &str)> = self
            .by_key
            .iter()
            .map(|(key, device)| (device.as_str(), key.as_str()))
            .collect();
        pairs.sort_unstable();
        pairs
    }

    /// A list of these (device, key) pairs; a key that is already another
    /// device's is left out (a key belongs to one device), and returned.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> (AllowList, Vec<(String, String)>) {
        let mut list = AllowList::default();
        let mut clashes = Vec::new();
        for (device, key) in pairs {
            match list.by_key.get(key) {
                Some(other) if other != device => {
                    clashes.push((device.to_string(), key.to_string()))
                }
                _ => {
                    list.by_key.insert(key.to_string(), device.to_string());
                    list.devices.insert(device.to_string());
                }
            }
        }
        (list, clashes)
    }

    /// The list as the file holds it: the header, then a line per key
    /// (a pinned device's lines each name its groups).
    pub fn render(&self) -> String {
        let mut text = HEADER.to_string();
        for (device, key) in self.pairs() {
            match self.groups_of(device) {
                Some(groups) => text.push_str(&format!("{device} {key} {}\n", groups_word(groups))),
                None => text.push_str(&format!("{device} {key}\n")),
            }
        }
        for (key, revoked) in &self.revoked {
            text.push_str(&revoked.line(key));
        }
        text
    }

    /// Devices on both lists whose pinned groups differ from `self` to
    /// `newer` (pinned, unpinned, or other groups), sorted.
    pub fn regrouped_in(&self, newer: &AllowList) -> Vec<String> {
        let mut changed: Vec<String> = self
            .devices
            .intersection(&newer.devices)
            .filter(|d| self.groups_of(d) != newer.groups_of(d))
            .cloned()
            .collect();
        changed.sort();
        changed
    }

    /// Keys (with their device) that were in `self` and are gone from, or
    /// moved to another device in, `newer`.
    pub fn revoked_in(&self, newer: &AllowList) -> Vec<(String, String)> {
        let mut gone: Vec<(String, String)> = self
            .by_key
            .iter()
            .filter(|(key, device)| newer.device(key) != Some(device.as_str()))
            .map(|(key, device)| (device.clone(), key.clone()))
            .collect();
        gone.sort();
        gone
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so the
/// hub never reads half a list.
fn replace(path: &Path, text: &str) -> std::io::Result<()> {
    fleetmq_net::files::write_atomically(path, text.as_bytes(), None)
}

/// What an edit of the allow list did.
#[derive(Debug, PartialEq, Eq)]
pub enum Edit {
    /// Added; `others` are the keys the device had before (a rotation).
    Added {
        others: Vec<String>,
    },
    AlreadyThere,
    /// The key was there; the device's groups were pinned anew.
    Regrouped,
    Removed(usize),
    NotThere,
}

impl Edit {
    /// What an enrolment did, in `allow --json`'s words (the same for the
    /// operator request `Enrol`).
    pub fn enrolled_word(&self) -> &'static str {
        match self {
            Edit::AlreadyThere => "already_enrolled",
            Edit::Regrouped => "regrouped",
            Edit::Added { others } if !others.is_empty() => "enrolled_another_key",
            _ => "enrolled",
        }
    }
}

/// Adds `device key` to the file (creating it), or says it is there;
/// with `groups`, pins the device's groups on every line of it. Another
/// edit at the same time waits for this one (a lock file).
pub fn allow(
    path: &Path,
    device: &str,
    key: &str,
    groups: Option<&[String]>,
) -> Result<Edit, AllowError> {
    edit(path, |list, text| {
        list.taken(device, key)?;
        let there = list.device(key) == Some(device);
        let regroup = groups.is_some_and(|g| list.groups_of(device) != Some(g));
        if there && !regroup {
            return Ok((Edit::AlreadyThere, None));
        }
        let word = groups.map(|g| format!(" {}", groups_word(g)));
        // Enrolled again, the key is no longer a revoked one.
        let text: String = text
            .lines()
            .filter(|l| parse_revoked(l.trim()).is_none_or(|(k, _)| k != key))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut text: String = match &word {
            Some(word) if regroup => text
                .lines()
                .map(|l| {
                    let mut words = l.split_whitespace();
                    match (words.next(), words.next()) {
                        (Some(d), Some(k)) if d == device => format!("{d} {k}{word}\n"),
                        _ => format!("{l}\n"),
                    }
                })
                .collect(),
            _ => text.to_string(),
        };
        if there {
            return Ok((Edit::Regrouped, Some(text)));
        }
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("{device} {key}{}\n", word.unwrap_or_default()));
        let others = list.keys_of(device).into_iter().map(String::from).collect();
        Ok((Edit::Added { others }, Some(text)))
    })
}

/// What `revoke` takes off, in words: `DEVICE`, or `DEVICE with key 'KEY'`.
pub fn revoked_words(device: &str, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("{device} with key {}", fleetmq_net::keys::quoted(k)),
        None => device.to_string(),
    }
}

/// Removes `device`'s line for `key`, or every line of `device` when
/// `key` is `None`, leaving a `# revoked` line ([`REVOKED_MARK`]) for each.
pub fn revoke(path: &Path, device: &str, key: Option<&str>) -> Result<Edit, AllowError> {
    let now = std::time::SystemTime::now();
    edit(path, |_, text| {
        let mut removed = 0;
        let kept: String = text
            .lines()
            .map(|l| {
                let mut words = l.split_whitespace();
                let (d, k) = (words.next(), words.next());
                match k {
                    Some(k)
                        if d == Some(device)
                            && key.is_none_or(|key| k == key)
                            && !l.trim_start().starts_with('#') =>
                    {
                        removed += 1;
                        Revoked::at(device, now).line(k)
                    }
                    _ => format!("{l}\n"),
                }
            })
            .collect();
        if removed == 0 {
            Ok((Edit::NotThere, None))
        } else {
            Ok((Edit::Removed(removed), Some(kept)))
        }
    })
}

/// Writes the allow list file, with its header and no device, if there is
/// none: where an operator looks to enrol one.
pub fn create_if_missing(path: &Path) -> Result<(), AllowError> {
    if path.exists() {
        return Ok(());
    }
    let io = |source| AllowError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io)?;
    }
    replace(path, HEADER).map_err(io)
}

/// Reads, changes and atomically rewrites the file under a lock, refusing to
/// touch a file that does not parse (the operator should fix it first).
fn edit(
    path: &Path,
    change: impl FnOnce(&AllowList, &str) -> Result<(Edit, Option<String>), String>,
) -> Result<Edit, AllowError> {
    let io = |source| AllowError::Io {
        path: path.to_path_buf(),
        source,
    };
    AllowList::load(path)?;
    let lock_path = path.with_extension("lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io)?;
    // flock, not File::lock: that needs a newer Rust than our MSRV.
    // SAFETY: flock on a descriptor we own; it touches no memory.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    let text = fleetmq_net::files::read_capped(path, LIST_FILE_MAX).map_err(io)?;
    let list = AllowList::parse(path, &text)?;
    let (what, new) = change(&list, &text).map_err(|why| AllowError::Line {
        path: path.to_path_buf(),
        line: 0,
        why,
    })?;
    if let Some(new) = new {
        AllowList::parse(path, &new)?;
        replace(path, &new).map_err(io)?;
    }
    Ok(what)
}

/// Writes `list` as the whole file, under the edits' lock, unless the file
/// changed since `seen` (an edit landed first): then nothing is written
/// and the file's own list is returned, to be dealt with first.
pub fn write_unless_changed(
    path: &Path,
    list: &AllowList,
    seen: &AllowList,
) -> Result<Option<AllowList>, AllowError> {
    let mut changed = None;
    let at = std::time::SystemTime::now();
    edit(path, |now, _| {
        if !now.same_enrolment(seen) {
            changed = Some(now.clone());
            return Ok((Edit::NotThere, None));
        }
        // The file's `# revoked` lines stay, and a key the list no
        // longer holds gets one.
        let mut list = list.clone();
        list.revoked.clone_from(&now.revoked);
        for (device, key) in now.revoked_in(&list) {
            list.revoked.insert(key, Revoked::at(&device, at));
        }
        list.revoked.retain(|key, _| !list.by_key.contains_key(key));
        Ok((Edit::NotThere, Some(list.render())))
    })?;
    Ok(changed)
}

/// Notices when the allow list file changes (written in place or replaced).
#[derive(Debug)]
pub struct Watch {
    path: PathBuf,
    stamp: Option<(i64, i64, u64, u64)>,
}

impl Watch {
    pub fn new(path: &Path) -> Self {
        let mut w = Watch {
            path: path.to_path_buf(),
            stamp: None,
        };
        w.stamp = w.current();
        w
    }

    fn current(&self) -> Option<(i64, i64, u64, u64)> {
        fs::metadata(&self.path)
            .ok()
            .map(|m| (m.mtime(), m.mtime_nsec(), m.size(), m.ino()))
    }

    /// True once per change since the last call.
    pub fn changed(&mut self) -> bool {
        let now = self.current();
        if now == self.stamp {
            return false;
        }
        self.stamp = now;
        true
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests;
