//! Host metrics, read straight from /proc and /sys: CPU use, load, memory,
//! disk use per mount, network bytes per interface, uptime, temperatures
//! and the Raspberry Pi firmware's throttling flags.
//!
//! Every group reads its own files. A group whose files are missing (no
//! thermal zone on a VM, no Pi firmware) is skipped and said once, with
//! the reason, and looked at again once a minute; the others go on. The
//! mount table behind `disk` is read once a minute too: mounts change
//! rarely, and /proc/mounts is the dearest file of the lot to make.
//!
//! | group         | series                                                   |
//! |---------------|----------------------------------------------------------|
//! | `cpu`         | `host.cpu.used_pct` (from the second reading on)         |
//! | `load`        | `host.load1`, `host.load5`, `host.load15`                |
//! | `memory`      | `host.mem.{total,available}_bytes`, `host.mem.used_pct`, `host.swap.used_bytes` |
//! | `disk`        | `host.disk.{total,used}_bytes{mount=M}`, `host.disk.used_pct{mount=M}` |
//! | `network`     | `host.net.{rx,tx}_bytes{iface=I}` (counters since boot)  |
//! | `uptime`      | `host.uptime_s`                                          |
//! | `temperature` | `host.temp_c{zone=TYPE}`                                 |
//! | `throttled`   | `host.pi.throttled` (the firmware's bit mask), `host.pi.under_voltage`, `host.pi.freq_capped`, `host.pi.throttled_now`, `host.pi.soft_temp_limit` (0 or 1, now) |

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetmq_protocol::Value;
use fleetmq_protocol::telemetry::series_name;
use serde::{Deserialize, Serialize};

/// Every group, in the order they are read.
pub const GROUPS: [&str; 8] = [
    "cpu",
    "load",
    "memory",
    "disk",
    "network",
    "uptime",
    "temperature",
    "throttled",
];

/// How long a group that could not be read is left before it is tried again.
const RETRY_SKIPPED: Duration = Duration::from_secs(60);
/// File systems `disk` leaves out unless `mounts` names them: read-only
/// images (snaps, a mounted CD) that are always 100 % used.
const IMAGE_FS: &[&str] = &["squashfs", "iso9660", "erofs", "cramfs"];

/// How long the mount points read from /proc/mounts are used.
const MOUNTS_FOR: Duration = Duration::from_secs(60);

/// Where the kernel lists thermal zones.
const THERMAL: &str = "sys/class/thermal";
/// Where the Raspberry Pi kernel exposes the firmware's throttling flags.
const PI_THROTTLED: &str = "sys/devices/platform/soc/soc:firmware/get_throttled";

/// `[host]` in the agent's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// How often to read; 0 turns host metrics off.
    pub interval_ms: u64,
    /// Which groups to read (see [`GROUPS`]).
    pub collect: Vec<String>,
    /// Mount points for `disk`; empty means every mounted block device,
    /// once, but for read-only images.
    pub mounts: Vec<String>,
    /// Interfaces for `network`; empty means every one but `lo`.
    pub interfaces: Vec<String>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            interval_ms: 10_000,
            collect: GROUPS.iter().map(|g| g.to_string()).collect(),
            mounts: Vec::new(),
            interfaces: Vec::new(),
        }
    }
}

impl HostConfig {
    /// The first name in `collect` that is not a group.
    pub fn unknown_group(&self) -> Option<&str> {
        self.collect
            .iter()
            .map(String::as_str)
            .find(|g| !GROUPS.contains(g))
    }
}

/// Reads host metrics under a root directory (`/`, or a test's fixture).
pub struct Host {
    root: PathBuf,
    cfg: HostConfig,
    /// The last /proc/stat reading: (busy, total) jiffies.
    last_cpu: Option<(u64, u64)>,
    /// Groups skipped, with why and when they were last tried; each is
    /// logged once.
    skipped: BTreeMap<&'static str, (String, Instant)>,
    /// The files read every interval, kept open: /proc and /sys make a
    /// file's text afresh when it is read again from the start, and an
    /// open and a close per file each second were about a tenth of an idle
    /// agent's CPU. One that fails to read is closed and opened again next
    /// time.
    open: RefCell<Vec<(String, File)>>,
    /// Thermal zones found: each one's temperature file (relative to the
    /// root) and its type. Found once and then only read; looked for again
    /// while none can be read.
    zones: Vec<(String, String)>,
    /// The mount points `disk` reads, and when /proc/mounts named them.
    mounts: Option<(Instant, Vec<String>)>,
}

type Samples = Vec<(String, Value)>;

impl Host {
    pub fn new(root: impl Into<PathBuf>, cfg: HostConfig) -> Host {
        Host {
            root: root.into(),
            cfg,
            last_cpu: None,
            skipped: BTreeMap::new(),
            open: RefCell::new(Vec::new()),
            zones: Vec::new(),
            mounts: None,
        }
    }

    /// Takes a new selection; what was said about skipped groups is said
    /// again if they are still missing.
    pub fn reconfigure(&mut self, cfg: HostConfig) {
        self.cfg = cfg;
        self.skipped.clear();
        self.mounts = None;
    }

    /// Groups skipped so far, each with the reason.
    pub fn skipped(&self) -> impl Iterator<Item = String> + '_ {
        self.skipped
            .iter()
            .map(|(g, (why, _))| format!("{g}: {why}"))
    }

    /// Reads every selected group, at `now`. Returns the samples, and the
    /// groups that were skipped for the first time with why. A group
    /// skipped less than a minute ago is not tried.
    pub fn collect(&mut self, now: Instant) -> (Samples, Vec<String>) {
        let mut out = Vec::new();
        let mut newly = Vec::new();
        for group in GROUPS {
            if !self.cfg.collect.iter().any(|g| g == group) {
                continue;
            }
            if let Some((_, tried)) = self.skipped.get(group)
                && now < *tried + RETRY_SKIPPED
            {
                continue;
            }
            let result = match group {
                "cpu" => self.cpu(&mut out),
                "load" => self.load(&mut out),
                "memory" => self.memory(&mut out),
                "disk" => self.disk(&mut out, now),
                "network" => self.network(&mut out),
                "uptime" => self.uptime(&mut out),
                "temperature" => self.temperature(&mut out),
                _ => self.throttled(&mut out),
            };
            match result {
                Ok(()) => {
                    self.skipped.remove(group);
                }
                Err(why) => {
                    if !self.skipped.contains_key(group) {
                        newly.push(format!("{group}: {why}"));
                    }
                    self.skipped.insert(group, (why, now));
                }
            }
        }
        (out, newly)
    }

    fn read(&self, rel: &str) -> Result<String, String> {
        let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", self.root.join(rel).display());
        let mut open = self.open.borrow_mut();
        let at = match open.iter().position(|(r, _)| r == rel) {
            Some(at) => at,
            None => {
                let file = File::open(self.root.join(rel)).map_err(|e| failed(&e))?;
                open.push((rel.to_string(), file));
                open.len() - 1
            }
        };
        let file = &open[at].1;
        let mut text = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match file.read_at(&mut chunk, text.len() as u64) {
                Ok(0) => break,
                Ok(n) => text.extend_from_slice(&chunk[..n]),
                Err(e) => {
                    open.swap_remove(at);
                    return Err(failed(&e));
                }
            }
        }
        String::from_utf8(text).map_err(|e| failed(&e))
    }

    fn cpu(&mut self, out: &mut Samples) -> Result<(), String> {
        let text = self.read("proc/stat")?;
        let jiffies: Vec<u64> = text
            .lines()
            .find_map(|l| l.strip_prefix("cpu "))
            .ok_or("proc/stat has no cpu line")?
            .split_whitespace()
            .map(|w| w.parse().unwrap_or(0))
            .collect();
        let total: u64 = jiffies.iter().sum();
        // idle and iowait are the 4th and 5th fields.
        let idle = jiffies.get(3).copied().unwrap_or(0) + jiffies.get(4).copied().unwrap_or(0);
        let busy = total.saturating_sub(idle);
        if let Some((last_busy, last_total)) = self.last_cpu.replace((busy, total)) {
            let dt = total.saturating_sub(last_total);
            if dt > 0 {
                let pct = 100.0 * busy.saturating_sub(last_busy) as f64 / dt as f64;
                out.push(("host.cpu.used_pct".into(), Value::Float(pct.min(100.0))));
            }
        }
        Ok(())
    }

    fn load(&self, out: &mut Samples) -> Result<(), String> {
        let text = self.read("proc/loadavg")?;
        let mut words = text.split_whitespace();
        for name in ["host.load1", "host.load5", "host.load15"] {
            let v: f64 = words
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or("proc/loadavg is not three numbers")?;
            out.push((name.into(), Value::Float(v)));
        }
        Ok(())
    }

    fn memory(&self, out: &mut Samples) -> Result<(), String> {
        let text = self.read("proc/meminfo")?;
        let field = |key: &str| -> Option<i64> {
            let rest = text.lines().find_map(|l| l.strip_prefix(key))?;
            let kb: i64 = rest
                .trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(kb * 1024)
        };
        let total = field("MemTotal").ok_or("proc/meminfo has no MemTotal")?;
        let available = field("MemAvailable").ok_or("proc/meminfo has no MemAvailable")?;
        out.push(("host.mem.total_bytes".into(), Value::Int(total)));
        out.push(("host.mem.available_bytes".into(), Value::Int(available)));
        if total > 0 {
            let used = 100.0 * (total - available) as f64 / total as f64;
            out.push(("host.mem.used_pct".into(), Value::Float(used)));
        }
        if let (Some(st), Some(sf)) = (field("SwapTotal"), field("SwapFree")) {
            out.push(("host.swap.used_bytes".into(), Value::Int(st - sf)));
        }
        Ok(())
    }

    fn disk(&mut self, out: &mut Samples, now: Instant) -> Result<(), String> {
        let mounts = match self.mounts.take() {
            Some((read, mounts)) if now < read + MOUNTS_FOR => (read, mounts),
            _ => (now, self.wanted_mounts()?),
        };
        let mut found = false;
        for mount in &mounts.1 {
            let Some((total, free)) = statvfs(Path::new(mount)) else {
                continue;
            };
            let tags = [("mount", mount.as_str())];
            let (Ok(t), Ok(u), Ok(p)) = (
                series_name("host.disk.total_bytes", &tags),
                series_name("host.disk.used_bytes", &tags),
                series_name("host.disk.used_pct", &tags),
            ) else {
                continue; // a mount point a tag cannot carry
            };
            let used = total.saturating_sub(free);
            out.push((t, Value::Int(total as i64)));
            out.push((u, Value::Int(used as i64)));
            if total > 0 {
                out.push((p, Value::Float(100.0 * used as f64 / total as f64)));
            }
            found = true;
        }
        self.mounts = Some(mounts);
        if !found {
            return Err(if self.cfg.mounts.is_empty() {
                "no mounted block device in proc/mounts".into()
            } else {
                format!("none of the mounts {:?} is mounted", self.cfg.mounts)
            });
        }
        Ok(())
    }

    /// The mount points /proc/mounts names that `disk` reads, each once:
    /// those asked for, or every mounted block device at its first mount
    /// point (a bind mount or a second subvolume is the same file system
    /// again), but for read-only images, which are always full.
    fn wanted_mounts(&self) -> Result<Vec<String>, String> {
        let text = self.read("proc/mounts")?;
        let mut wanted = Vec::new();
        let mut devices = Vec::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let (Some(dev), Some(mount), Some(fs)) = (words.next(), words.next(), words.next())
            else {
                continue;
            };
            let mount = unescape_mount(mount);
            let asked = if self.cfg.mounts.is_empty() {
                let new =
                    dev.starts_with("/dev/") && !IMAGE_FS.contains(&fs) && !devices.contains(&dev);
                devices.push(dev);
                new
            } else {
                self.cfg.mounts.contains(&mount)
            };
            if asked && !wanted.contains(&mount) {
                wanted.push(mount);
            }
        }
        Ok(wanted)
    }

    fn network(&self, out: &mut Samples) -> Result<(), String> {
        let text = self.read("proc/net/dev")?;
        let mut found = false;
        for line in text.lines() {
            let Some((iface, counters)) = line.split_once(':') else {
                continue;
            };
            let iface = iface.trim();
            let wanted = if self.cfg.interfaces.is_empty() {
                iface != "lo"
            } else {
                self.cfg.interfaces.iter().any(|i| i == iface)
            };
            if !wanted {
                continue;
            }
            // Receive has 8 fields, then transmit; bytes come first in each.
            let fields: Vec<i64> = counters
                .split_whitespace()
                .map(|w| w.parse().unwrap_or(0))
                .collect();
            let tags = [("iface", iface)];
            let (Some(&rx), Some(&tx), Ok(r), Ok(t)) = (
                fields.first(),
                fields.get(8),
                series_name("host.net.rx_bytes", &tags),
                series_name("host.net.tx_bytes", &tags),
            ) else {
                continue;
            };
            out.push((r, Value::Int(rx)));
            out.push((t, Value::Int(tx)));
            found = true;
        }
        if !found {
            return Err("no matching interface in proc/net/dev".into());
        }
        Ok(())
    }

    fn uptime(&self, out: &mut Samples) -> Result<(), String> {
        let v: f64 = self
            .read("proc/uptime")?
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .ok_or("proc/uptime does not start with a number")?;
        out.push(("host.uptime_s".into(), Value::Float(v)));
        Ok(())
    }

    fn temperature(&mut self, out: &mut Samples) -> Result<(), String> {
        if self.zones.is_empty() {
            self.zones = self.thermal_zones()?;
        }
        let mut found = false;
        for (temp, kind) in &self.zones {
            let Some(milli) = (self.read(temp).ok()).and_then(|t| t.trim().parse::<i64>().ok())
            else {
                continue;
            };
            if let Ok(name) = series_name("host.temp_c", &[("zone", kind.as_str())]) {
                out.push((name, Value::Float(milli as f64 / 1000.0)));
                found = true;
            }
        }
        if !found {
            self.zones.clear();
            return Err(format!(
                "{} has no readable thermal zone (normal on a VM)",
                self.root.join(THERMAL).display()
            ));
        }
        Ok(())
    }

    /// The thermal zones under the root, in order: each one's temperature
    /// file (relative to the root) and its type (the zone's own name if it
    /// has none).
    fn thermal_zones(&self) -> Result<Vec<(String, String)>, String> {
        let dir = self.root.join(THERMAL);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with("thermal_zone"))
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|n| {
                let kind = std::fs::read_to_string(dir.join(&n).join("type"))
                    .map_or_else(|_| n.clone(), |t| t.trim().to_string());
                (format!("{THERMAL}/{n}/temp"), kind)
            })
            .collect())
    }

    fn throttled(&self, out: &mut Samples) -> Result<(), String> {
        let text = self
            .read(PI_THROTTLED)
            .map_err(|e| format!("{e} (only Raspberry Pi kernels have it)"))?;
        let t = text.trim();
        let bits = u32::from_str_radix(t.trim_start_matches("0x"), 16)
            .map_err(|_| format!("{PI_THROTTLED}: {t:?} is not a hex number"))?;
        out.push(("host.pi.throttled".into(), Value::Int(i64::from(bits))));
        for (bit, name) in [
            (0, "host.pi.under_voltage"),
            (1, "host.pi.freq_capped"),
            (2, "host.pi.throttled_now"),
            (3, "host.pi.soft_temp_limit"),
        ] {
            out.push((name.into(), Value::Int(i64::from((bits >> bit) & 1))));
        }
        Ok(())
    }
}

/// /proc/mounts writes space, tab, newline and backslash as octal escapes.
fn unescape_mount(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (total, available to unprivileged users) bytes of the filesystem at `path`.
fn statvfs(path: &Path) -> Option<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: `c` is a valid C string and `st` a properly sized out-value;
    // statvfs only writes into it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

#[cfg(test)]
mod tests;
