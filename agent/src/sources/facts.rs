//! What the device is, for the hub's inventory ([`DeviceFacts`], sent in
//! the Offer): the OS release, kernel, hardware model and serial, memory,
//! and each network interface with its hardware address and IP addresses.
//!
//! The hardware (model, serial, memory) is read once, at start; the OS
//! release, kernel and interfaces again once a minute, and the agent sends
//! its Offer again when they changed (a DHCP lease moved, Wi-Fi came up,
//! an upgrade). Everything but
//! the IP addresses is a file under `/proc`, `/sys` or `/etc`, read from a
//! root the tests choose; the addresses come from `getifaddrs(3)` (through
//! the `if-addrs` crate), which asks the kernel over netlink. A field the
//! system does not have (no device tree on a PC, no DMI on a Pi) stays
//! empty; addresses that cannot be read are said once, with why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetmq_protocol::{
    DeviceFacts, FACTS_MAX_ADDRESSES, FACTS_MAX_INTERFACES, FACTS_MAX_TEXT, Interface,
};
use tracing::warn;

/// How often the facts are read again.
pub const REFRESH: Duration = Duration::from_secs(60);

/// Each interface's IP addresses (`ip/prefix`), as the system lists them.
pub type Addresses = Vec<(String, String)>;

/// The facts as last read, and when to read them again.
pub struct Facts {
    root: PathBuf,
    current: DeviceFacts,
    next: Instant,
    /// Why the addresses could not be read, once said (said again only
    /// after they could be).
    said: Option<String>,
}

impl Facts {
    /// Reads the facts now, from the system at `root` (`/` outside tests).
    pub fn read(root: impl Into<PathBuf>, now: Instant) -> Facts {
        let root = root.into();
        let mut facts = Facts {
            current: hardware(&root),
            root,
            next: now,
            said: None,
        };
        facts.refresh(now);
        facts
    }

    /// The facts as last read.
    pub fn current(&self) -> &DeviceFacts {
        &self.current
    }

    /// Why the IP addresses could not be read last time (empty when
    /// they could).
    pub fn problem(&self) -> &str {
        self.said.as_deref().unwrap_or_default()
    }

    /// When they are to be read again.
    pub fn due_at(&self) -> Instant {
        self.next
    }

    /// Reads them again if due; true when they changed.
    pub fn refresh_if_due(&mut self, now: Instant) -> bool {
        now >= self.next && self.refresh(now)
    }

    fn refresh(&mut self, now: Instant) -> bool {
        self.next = now + REFRESH;
        let addresses = match system_addresses() {
            Ok(a) => {
                self.said = None;
                a
            }
            Err(e) => {
                let why = e.to_string();
                if self.said.as_ref() != Some(&why) {
                    warn!(
                        error = %why,
                        "this device's IP addresses cannot be read, so the hub lists none (under systemd, the unit must allow AF_NETLINK)"
                    );
                    self.said = Some(why);
                }
                Vec::new()
            }
        };
        let mut read = self.current.clone();
        read_changing(&self.root, &addresses, &mut read);
        let changed = read != self.current;
        self.current = read;
        changed
    }
}

/// The system's IP addresses, loopback's left out.
fn system_addresses() -> std::io::Result<Addresses> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .filter(|i| !i.is_loopback())
        .map(|i| {
            let prefix = match &i.addr {
                if_addrs::IfAddr::V4(a) => a.prefixlen,
                if_addrs::IfAddr::V6(a) => a.prefixlen,
            };
            (i.name.clone(), format!("{}/{prefix}", i.ip()))
        })
        .collect())
}

/// The facts from the files under `root` and the addresses given, all
/// at once (the tests' way in; [`Facts`] reads the hardware once).
#[cfg(test)]
fn gather(root: &Path, addresses: &[(String, String)]) -> DeviceFacts {
    let mut facts = hardware(root);
    read_changing(root, addresses, &mut facts);
    facts
}

/// What does not change while the system runs: the model, the serial
/// number and the memory.
fn hardware(root: &Path) -> DeviceFacts {
    let text = |rel: &str| std::fs::read_to_string(root.join(rel)).ok();
    let cpuinfo = text("proc/cpuinfo").unwrap_or_default();
    // The device tree's strings end with a NUL.
    let tree = |rel: &str| text(rel).map(|t| t.trim_end_matches('\0').trim().to_string());
    let model = tree("proc/device-tree/model")
        .filter(|m| !m.is_empty())
        .or_else(|| field(&cpuinfo, "Model"))
        .or_else(|| text("sys/class/dmi/id/product_name").map(|t| t.trim().to_string()))
        .unwrap_or_default();
    let serial = tree("proc/device-tree/serial-number")
        .filter(|s| !s.is_empty())
        .or_else(|| field(&cpuinfo, "Serial"))
        .unwrap_or_default();
    let memory_bytes = text("proc/meminfo")
        .and_then(|t| field(&t, "MemTotal"))
        .and_then(|kb| kb.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb.saturating_mul(1024));
    DeviceFacts {
        model: bounded(model),
        serial: bounded(serial),
        memory_bytes,
        ..DeviceFacts::default()
    }
}

/// What is read again each minute, into `facts`: the OS release (an
/// upgrade changes it), the kernel's release (one small file) and the
/// interfaces with their addresses.
fn read_changing(root: &Path, addresses: &[(String, String)], facts: &mut DeviceFacts) {
    let text = |rel: &str| std::fs::read_to_string(root.join(rel)).ok();
    let os_release = text("etc/os-release")
        .or_else(|| text("usr/lib/os-release"))
        .and_then(|t| pretty_name(&t))
        .unwrap_or_default();
    facts.os_release = bounded(os_release);
    facts.kernel = bounded(text("proc/sys/kernel/osrelease").unwrap_or_default());
    facts.interfaces = interfaces(root, addresses);
}

/// The network interfaces: those `/sys/class/net` lists (with their
/// hardware address) and those with an address, loopback left out, in
/// name order; IPv4 addresses before IPv6 ones.
fn interfaces(root: &Path, addresses: &[(String, String)]) -> Vec<Interface> {
    let net = root.join("sys/class/net");
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    for entry in std::fs::read_dir(&net).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let read = |file: &str| std::fs::read_to_string(net.join(&name).join(file));
        // ARPHRD_LOOPBACK
        if name == "lo" || read("type").is_ok_and(|t| t.trim() == "772") {
            continue;
        }
        // All zeros, of whatever length: a device without one (a tunnel).
        let mac = (read("address").ok())
            .map(|a| a.trim().to_string())
            .filter(|a| a.chars().any(|c| !matches!(c, '0' | ':')))
            .unwrap_or_default();
        let interface = Interface {
            name: bounded(name.clone()),
            mac: bounded(mac),
            addresses: Vec::new(),
        };
        by_name.insert(name, interface);
    }
    for (name, address) in addresses {
        let interface = by_name.entry(name.clone()).or_insert_with(|| Interface {
            name: bounded(name.clone()),
            ..Interface::default()
        });
        interface.addresses.push(bounded(address.clone()));
    }
    by_name
        .into_values()
        .take(FACTS_MAX_INTERFACES)
        .map(|mut i| {
            // Stable: the system's order within each family.
            i.addresses.sort_by_key(|a| a.contains(':'));
            i.addresses.truncate(FACTS_MAX_ADDRESSES);
            i
        })
        .collect()
}

/// A `Key : value` line's value (`/proc/cpuinfo`, `/proc/meminfo`).
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

/// `PRETTY_NAME` of an os-release file, else `NAME` and `VERSION`
/// (os-release(5): shell-style assignments, values maybe quoted).
fn pretty_name(text: &str) -> Option<String> {
    let value = |key: &str| {
        text.lines().find_map(|line| {
            let v = line.trim().strip_prefix(key)?.strip_prefix('=')?;
            Some(unquote(v)).filter(|v| !v.is_empty())
        })
    };
    value("PRETTY_NAME").or_else(|| {
        let name = value("NAME")?;
        Some(match value("VERSION") {
            Some(version) => format!("{name} {version}"),
            None => name,
        })
    })
}

/// A value without its quotes, backslash escapes undone.
fn unquote(v: &str) -> String {
    let v = v.trim();
    let inner = ['"', '\'']
        .iter()
        .find_map(|q| v.strip_prefix(*q)?.strip_suffix(*q))
        .unwrap_or(v);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// At most [`FACTS_MAX_TEXT`] bytes, cut at a character, without
/// control characters.
fn bounded(text: String) -> String {
    let mut out: String = text.chars().filter(|c| !c.is_control()).collect();
    fleetmq_net::text::truncate(&mut out, FACTS_MAX_TEXT);
    out
}

#[cfg(test)]
mod tests;
