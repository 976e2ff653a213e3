//! Who may connect: the allow list, the ZAP handler's answers, and the
//! per-device rate limit.
//!
//! The allow list is a text file, one enrolled device per line:
//!
//! ```text
//! # comments start with '#'
//! pi-kitchen  rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7
//! ```
//!
//! A device may have more than one key (while it rotates keys); a key
//! belongs to one device. The ZAP handler lets a CURVE client in only if its
//! public key is listed, and answers with the device id as the connection's
//! user id. libzmq stamps that id on every message from the connection, and
//! the hub drops any message whose claimed device is not that id: a device
//! cannot speak for another.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use fleetmq_protocol::validate_device_id;

/// The header a new allow list file starts with.
const HEADER: &str = "\
# fleetmq allow list: one enrolled device per line, DEVICE_ID PUBLIC_KEY.
# The public key is the Z85 line of the device's agent.pub.
# `fleetmq-hub allow DEVICE KEY` and `fleetmq-hub revoke DEVICE` edit this
# file; so may you. A running hub applies changes within a second, and
# closes the connections of a revoked device.
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

/// The enrolled devices: public key (Z85) to device id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    by_key: HashMap<String, String>,
    devices: HashSet<String>,
}

impl AllowList {
    /// Parses the file's text; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, AllowError> {
        let mut by_key: HashMap<String, String> = HashMap::new();
        let mut first_line: HashMap<String, usize> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |why: String| AllowError::Line {
                path: path.to_path_buf(),
                line,
                why,
            };
            let entry = raw.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let mut words = entry.split_whitespace();
            let (Some(device), Some(key), None) = (words.next(), words.next(), words.next()) else {
                return Err(err(format!(
                    "{entry:?} is not DEVICE_ID PUBLIC_KEY (two words)"
                )));
            };
            validate_device_id(device).map_err(|e| err(e.to_string()))?;
            fleetmq_net::keys::check(key)
                .map_err(|why| err(format!("the key for {device}: {why}")))?;
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
        Ok(AllowList { by_key, devices })
    }

    /// Reads the file, creating it (with a header, empty) when missing.
    pub fn load(path: &Path) -> Result<Self, AllowError> {
        let io = |source| AllowError::Io {
            path: path.to_path_buf(),
            source,
        };
        match fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir).map_err(io)?;
                }
                replace(path, HEADER).map_err(io)?;
                Ok(AllowList::default())
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The device this key is enrolled as.
    pub fn device(&self, key: &str) -> Option<&str> {
        self.by_key.get(key).map(String::as_str)
    }

    /// Whether `device` has any key on the list.
    pub fn has_device(&self, device: &str) -> bool {
        self.devices.contains(device)
    }

    /// Number of keys enrolled.
    pub fn len(&self) -> usize {
        self.by_key.len()
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
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// What an edit of the allow list did.
#[derive(Debug, PartialEq, Eq)]
pub enum Edit {
    Added,
    AlreadyThere,
    Removed(usize),
    NotThere,
}

/// Adds `device key` to the file (creating it), or says it is there.
/// Another edit at the same time waits for this one (a lock file).
pub fn allow(path: &Path, device: &str, key: &str) -> Result<Edit, AllowError> {
    edit(path, |list, text| {
        if list.device(key) == Some(device) {
            return Ok((Edit::AlreadyThere, None));
        }
        if let Some(other) = list.device(key) {
            return Err(format!(
                "this key is enrolled as {other}; revoke {other} first"
            ));
        }
        let mut text = text.to_string();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("{device} {key}\n"));
        Ok((Edit::Added, Some(text)))
    })
}

/// Removes every line of `device` from the file.
pub fn revoke(path: &Path, device: &str) -> Result<Edit, AllowError> {
    edit(path, |_, text| {
        let mut removed = 0;
        let kept: String = text
            .lines()
            .filter(|l| {
                let drop = l.split_whitespace().next() == Some(device) && !l.starts_with('#');
                removed += usize::from(drop);
                !drop
            })
            .map(|l| format!("{l}\n"))
            .collect();
        if removed == 0 {
            Ok((Edit::NotThere, None))
        } else {
            Ok((Edit::Removed(removed), Some(kept)))
        }
    })
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
    let text = fs::read_to_string(path).map_err(io)?;
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

/// The answer to one ZAP request (ZeroMQ RFC 27).
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let in as this device.
    Allow(String),
    /// Refused: a CURVE key not on the list.
    UnknownKey { key: String, address: String },
    /// Not a request we understand; refused.
    Malformed(String),
}

/// Decides a ZAP request and builds the reply frames.
pub fn zap(list: &AllowList, frames: &[Vec<u8>]) -> (Verdict, Vec<Vec<u8>>) {
    // version, request id, domain, address, routing id, mechanism, credentials
    let reply = |id: &[u8], code: &str, text: &str, user: &str| {
        vec![
            b"1.0".to_vec(),
            id.to_vec(),
            code.as_bytes().to_vec(),
            text.as_bytes().to_vec(),
            user.as_bytes().to_vec(),
            Vec::new(),
        ]
    };
    let id = frames.get(1).map_or(&[][..], Vec::as_slice);
    if frames.len() < 6 || frames[0] != b"1.0" {
        let why = "not a ZAP 1.0 request".to_string();
        return (Verdict::Malformed(why), reply(id, "500", "bad request", ""));
    }
    let address = String::from_utf8_lossy(&frames[3]).into_owned();
    if frames[5] != b"CURVE" {
        let why = format!(
            "{} mechanism from {address}",
            String::from_utf8_lossy(&frames[5])
        );
        return (Verdict::Malformed(why), reply(id, "400", "CURVE only", ""));
    }
    let Some(key) = frames
        .get(6)
        .filter(|k| k.len() == 32)
        .and_then(|k| zmq::z85_encode(k).ok())
    else {
        let why = format!("CURVE request without a 32-byte key from {address}");
        return (Verdict::Malformed(why), reply(id, "400", "no key", ""));
    };
    match list.device(&key) {
        Some(device) => (
            Verdict::Allow(device.to_string()),
            reply(id, "200", "OK", device),
        ),
        None => (
            Verdict::UnknownKey { key, address },
            reply(id, "400", "key not enrolled", ""),
        ),
    }
}

/// A token bucket per device: `rate` messages a second, bursts of `burst`.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    buckets: HashMap<String, (f64, u64)>,
}

impl RateLimit {
    pub fn new(rate: u32, burst: u32) -> Self {
        RateLimit {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `device` at `now_ms`; false when it has none left.
    pub fn take(&mut self, device: &str, now_ms: u64) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let (tokens, last) = self
            .buckets
            .entry(device.to_string())
            .or_insert((self.burst, now_ms));
        let elapsed = now_ms.saturating_sub(*last) as f64 / 1000.0;
        *tokens = (*tokens + elapsed * self.rate).min(self.burst);
        *last = now_ms;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets devices whose bucket has been full for a while, so the map
    /// does not grow with every id ever seen.
    pub fn forget_idle(&mut self, now_ms: u64) {
        let refill_ms = (self.burst / self.rate.max(f64::MIN_POSITIVE) * 1000.0) as u64;
        self.buckets
            .retain(|_, (_, last)| now_ms.saturating_sub(*last) <= refill_ms.max(1000));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        fleetmq_net::keys::generate().unwrap().public
    }

    #[test]
    fn the_list_parses_and_bad_lines_name_their_number() {
        let (a, b) = (key(), key());
        let text = format!("# enrolled\n\npi-a {a}\n  pi-b   {b}  \npi-a {a}\n");
        let list = AllowList::parse(Path::new("allow"), &text).unwrap();
        assert_eq!(list.device(&a), Some("pi-a"));
        assert_eq!(list.device(&b), Some("pi-b"));
        assert_eq!(list.len(), 2);

        let cases = [
            ("pi-a\n".to_string(), "line 1", "two words"),
            (format!("#\npi a {a}\n"), "line 2", "two words"),
            (
                "pi-a short\n".to_string(),
                "line 1",
                "characters where a key has 40",
            ),
            (format!("bad/id {a}\n"), "line 1", "bad/id"),
            (
                format!("pi-a {a}\npi-b {a}\n"),
                "line 2",
                "already pi-a's (line 1)",
            ),
        ];
        for (text, line, why) in cases {
            let err = AllowList::parse(Path::new("/etc/allow"), &text)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("/etc/allow") && err.contains(line) && err.contains(why),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn edits_add_revoke_and_keep_comments_and_other_devices() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allowed_devices");
        let (a, b, c) = (key(), key(), key());
        assert_eq!(allow(&path, "pi-a", &a).unwrap(), Edit::Added);
        assert_eq!(allow(&path, "pi-a", &a).unwrap(), Edit::AlreadyThere);
        assert_eq!(allow(&path, "pi-a", &c).unwrap(), Edit::Added);
        assert_eq!(allow(&path, "pi-b", &b).unwrap(), Edit::Added);
        let err = allow(&path, "pi-b", &a).unwrap_err().to_string();
        assert!(err.contains("enrolled as pi-a"), "{err}");
        let before = AllowList::load(&path).unwrap();

        assert_eq!(revoke(&path, "pi-a").unwrap(), Edit::Removed(2));
        assert_eq!(revoke(&path, "pi-a").unwrap(), Edit::NotThere);
        let after = AllowList::load(&path).unwrap();
        assert_eq!(after.device(&b), Some("pi-b"));
        assert!(!after.has_device("pi-a"));
        let mut want = vec![("pi-a".to_string(), a), ("pi-a".to_string(), c)];
        want.sort();
        assert_eq!(before.revoked_in(&after), want);
        assert!(fs::read_to_string(&path).unwrap().starts_with(HEADER));
    }

    #[test]
    fn an_edit_refuses_a_list_that_does_not_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allowed_devices");
        fs::write(&path, "pi-a nonsense\n").unwrap();
        let err = allow(&path, "pi-b", &key()).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "pi-a nonsense\n");
    }

    #[test]
    fn the_watch_sees_a_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("allowed_devices");
        let mut w = Watch::new(&path);
        assert!(!w.changed());
        AllowList::load(&path).unwrap();
        assert!(w.changed());
        assert!(!w.changed());
        allow(&path, "pi-a", &key()).unwrap();
        assert!(w.changed(), "a rename gives a new inode");
    }

    #[test]
    fn zap_lets_in_listed_keys_as_their_device_and_refuses_the_rest() {
        let pair = zmq::CurveKeyPair::new().unwrap();
        let z85 = zmq::z85_encode(&pair.public_key).unwrap();
        let list = AllowList::parse(Path::new("a"), &format!("pi-a {z85}\n")).unwrap();
        let request = |mech: &[u8], cred: &[u8]| {
            vec![
                b"1.0".to_vec(),
                b"7".to_vec(),
                b"fleetmq".to_vec(),
                b"10.0.0.9".to_vec(),
                Vec::new(),
                mech.to_vec(),
                cred.to_vec(),
            ]
        };
        let (v, reply) = zap(&list, &request(b"CURVE", &pair.public_key));
        assert_eq!(v, Verdict::Allow("pi-a".into()));
        assert_eq!(reply[1], b"7");
        assert_eq!(reply[2], b"200");
        assert_eq!(reply[4], b"pi-a");

        let stranger = zmq::CurveKeyPair::new().unwrap();
        let (v, reply) = zap(&list, &request(b"CURVE", &stranger.public_key));
        assert!(matches!(v, Verdict::UnknownKey { ref address, .. } if address == "10.0.0.9"));
        assert_eq!(reply[2], b"400");
        assert_eq!(reply[4], b"");

        let (v, reply) = zap(&list, &request(b"NULL", b""));
        assert!(matches!(v, Verdict::Malformed(_)));
        assert_eq!(reply[2], b"400");
        let (_, reply) = zap(&list, &[b"2.0".to_vec(), b"1".to_vec()]);
        assert_eq!(reply[2], b"500");
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_the_rate() {
        let mut r = RateLimit::new(10, 5);
        let took = (0..20).filter(|_| r.take("pi-a", 1000)).count();
        assert_eq!(took, 5, "the burst");
        assert!(r.take("pi-b", 1000), "per device");
        assert!(!r.take("pi-a", 1050), "half a token after 50 ms");
        assert!(r.take("pi-a", 1100), "one token after 100 ms");
        r.forget_idle(100_000);
        assert!(r.buckets.is_empty());
        assert!(RateLimit::new(0, 0).take("x", 0), "0 turns it off");
    }
}
