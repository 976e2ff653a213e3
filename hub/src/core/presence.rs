//! Who is online: pure state driven by messages and the clock, no I/O.
//!
//! A device comes online with any message (a Hello, or anything after a hub
//! restart) and goes offline on Bye or when `offline_after_heartbeats` of its
//! own heartbeat intervals pass in silence. Whether its broadcast
//! subscription is live is tracked separately, from the XPUB socket.

use std::collections::{HashMap, HashSet};

use fleetmq_protocol::{DeviceFacts, Hello, HelloRequest, PinnedGroups, Welcome, validate_group};
use tracing::{info, warn};

use super::{Core, Now};

/// Heartbeat interval assumed for a device that has not said Hello.
const DEFAULT_HEARTBEAT_MS: u64 = 5_000;

#[derive(Debug, Clone, PartialEq)]
struct Session {
    since: Now,
    /// Silence is timed on `last_seen.mono_ms`; `wall_ms` is shown.
    last_seen: Now,
    heartbeat_ms: u64,
    said_hello: bool,
}

impl Session {
    /// A session that starts now.
    fn new(now: Now, heartbeat_ms: u64, said_hello: bool) -> Self {
        Session {
            since: now,
            last_seen: now,
            heartbeat_ms,
            said_hello,
        }
    }
}

/// What a message from a device changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The device was offline and is now online.
    pub came_online: bool,
    /// The hub has no Hello for this session (it restarted): ask for one.
    pub needs_hello: bool,
}

#[derive(Debug)]
pub struct Presence {
    sessions: HashMap<String, Session>,
    listening: HashSet<String>,
    offline_after: u64,
}

impl Presence {
    pub fn new(offline_after_heartbeats: u32) -> Self {
        Presence {
            sessions: HashMap::new(),
            listening: HashSet::new(),
            offline_after: u64::from(offline_after_heartbeats.max(1)),
        }
    }

    /// A Hello arrived. Returns true if the device came online with it.
    pub fn hello(&mut self, id: &str, heartbeat_ms: u32, now: Now) -> bool {
        let heartbeat_ms = u64::from(heartbeat_ms.max(100));
        match self.sessions.get_mut(id) {
            Some(s) => {
                s.last_seen = now;
                s.heartbeat_ms = heartbeat_ms;
                s.said_hello = true;
                false
            }
            None => {
                self.sessions
                    .insert(id.to_string(), Session::new(now, heartbeat_ms, true));
                true
            }
        }
    }

    /// Any other message arrived.
    pub fn seen(&mut self, id: &str, now: Now) -> Seen {
        match self.sessions.get_mut(id) {
            Some(s) => {
                s.last_seen = now;
                Seen {
                    came_online: false,
                    needs_hello: !s.said_hello,
                }
            }
            None => {
                self.sessions.insert(
                    id.to_string(),
                    Session::new(now, DEFAULT_HEARTBEAT_MS, false),
                );
                Seen {
                    came_online: true,
                    needs_hello: true,
                }
            }
        }
    }

    /// A Bye arrived. Returns the last-seen wall time if the device was
    /// online.
    pub fn bye(&mut self, id: &str) -> Option<u64> {
        self.sessions.remove(id).map(|s| s.last_seen.wall_ms)
    }

    /// Devices whose silence has lasted too long on the monotonic clock,
    /// with their last-seen wall time; they are offline from now on.
    pub fn sweep(&mut self, now_mono_ms: u64) -> Vec<(String, u64)> {
        let limit = self.offline_after;
        let gone: Vec<(String, u64)> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                now_mono_ms.saturating_sub(s.last_seen.mono_ms) > s.heartbeat_ms * limit
            })
            .map(|(id, s)| (id.clone(), s.last_seen.wall_ms))
            .collect();
        for (id, _) in &gone {
            self.sessions.remove(id);
        }
        gone
    }

    pub fn is_online(&self, id: &str) -> bool {
        self.sessions.contains_key(id)
    }

    /// (online since, last seen) on the wall clock, for an online device.
    pub fn times(&self, id: &str) -> Option<(u64, u64)> {
        self.sessions
            .get(id)
            .map(|s| (s.since.wall_ms, s.last_seen.wall_ms))
    }

    /// When an online device came online.
    pub fn online_since(&self, id: &str) -> Option<Now> {
        self.sessions.get(id).map(|s| s.since)
    }

    pub fn online_count(&self) -> usize {
        self.sessions.len()
    }

    /// The devices online now.
    pub fn online(&self) -> impl Iterator<Item = &str> {
        self.sessions.keys().map(String::as_str)
    }

    /// The XPUB socket saw the device's own topic subscribed or dropped.
    pub fn set_listening(&mut self, id: &str, on: bool) {
        if on {
            self.listening.insert(id.to_string());
        } else {
            self.listening.remove(id);
        }
    }

    pub fn is_listening(&self, id: &str) -> bool {
        self.listening.contains(id)
    }
}

impl Core {
    /// What a device's Offer says it is: kept in the store (over hub
    /// restarts, shown while it is offline), not in memory; a front-end
    /// also puts a change in the device's holder, for the others. Facts
    /// past their bounds are not kept, and said; its work goes on.
    pub(super) fn keep_facts(&mut self, device: &str, facts: DeviceFacts, now: Now) {
        if let Err(why) = facts.check() {
            return warn!(device, "the device's facts are not kept: {why}");
        }
        // Another board under the same key: its card moved to another
        // Pi, or its key was copied. Said, and kept in its log.
        let before = match facts.serial.is_empty() {
            true => String::new(),
            false => self.store.serial(device).unwrap_or_default(),
        };
        if !before.is_empty() && before != facts.serial {
            let why = format!(
                "another board: serial {} (was {before}); if nobody moved its card, its key may be copied",
                facts.serial
            );
            warn!(
                device,
                "the device reports {why}: revoke it if so (fleetmq-hub revoke {device})"
            );
            self.log_presence(device, true, now, &why);
        }
        match self.store.facts(device, &facts, now.wall_ms) {
            Ok(true) if self.is_front_end() => {
                let device = device.to_string();
                self.tell_cluster(crate::cluster::ToCluster::Facts { device, facts });
            }
            Ok(_) => {}
            Err(e) => self.store_failed("recording a device's facts", &e),
        }
    }

    /// A Hello: the device is online, its description stored, and it is
    /// welcomed with the ports of the other sockets, after a Carry that
    /// offers it to use none of them.
    pub(super) fn hello(&mut self, device: &str, hello: &Hello, now: Now) {
        // Group names follow the rules broadcasts to them are held to: a
        // Hello with a group no broadcast could reach is refused, whole.
        if let Some(e) = hello.groups.iter().find_map(|g| validate_group(g).err()) {
            self.dropped("telemetry", &e);
            let reason = format!("hello refused: {e}");
            return self.send_down(device, fleetmq_protocol::Refusal { reason }.into());
        }
        // Groups the allow list pins are the device's, whatever it says;
        // a device that said others is told which.
        let pinned;
        let mut tell = None;
        let hello = match self.admission.groups_of(device) {
            Some(groups) => {
                let mut said = hello.groups.clone();
                said.sort();
                said.dedup();
                if said != groups {
                    tell = Some(groups.to_vec());
                    warn!(
                        device,
                        said = ?hello.groups,
                        pinned = ?groups,
                        "the device's Hello names other groups than its allow-list entry pins; the allow list's are used (fix the agent's groups, or pin others with fleetmq-hub allow --groups; with security.pinned_groups_only a line without groups= pins none)"
                    );
                }
                pinned = Hello {
                    groups: groups.to_vec(),
                    ..hello.clone()
                };
                &pinned
            }
            None => hello,
        };
        let came = self.presence.hello(device, hello.heartbeat_ms, now);
        self.clocks.hello(device, hello.started_ms);
        if let Err(e) = self.store.hello(device, hello, now.wall_ms) {
            self.store_failed("recording a hello", &e);
        }
        if came {
            self.went_online(device, now, "hello");
        }
        // Every Hello goes to the device's holder, not only the first: one
        // said again while online (asked for after a re-pin, or after this
        // front-end restarted and heard the device first) is how the other
        // front-ends learn its groups and version.
        self.tell_cluster(crate::cluster::ToCluster::Online {
            device: device.to_string(),
            version: hello.agent_version.clone(),
            arch: hello.arch.clone(),
            groups: hello.groups.clone(),
        });
        let welcome = Welcome {
            hub_version: env!("CARGO_PKG_VERSION").into(),
            ports: self.ports.clone(),
        };
        // Carry first: an agent that can keeps to this connection when the
        // Welcome comes; an older agent drops it and connects the ports.
        // TakesLogs likewise: an agent sends log lines only to a hub that
        // said it takes them.
        self.routes.hello(device, &hello.groups);
        if let Some(groups) = tell {
            self.send_down(device, PinnedGroups { groups }.into());
        }
        self.send_down(device, fleetmq_protocol::Carry.into());
        self.send_down(device, fleetmq_protocol::TakesLogs.into());
        self.send_down(device, welcome.into());
        self.regrouped_hello(device);
    }

    /// Any message but Hello and Bye: the device is alive. A device heard
    /// without a Hello in this session (the hub restarted) is asked for one.
    pub(super) fn heard(&mut self, device: &str, now: Now) {
        let seen = self.presence.seen(device, now);
        if seen.came_online {
            self.went_online(device, now, "heard");
            self.tell_cluster(crate::cluster::ToCluster::Online {
                device: device.to_string(),
                version: String::new(),
                arch: String::new(),
                groups: Vec::new(),
            });
        }
        if seen.needs_hello {
            self.send_down(device, HelloRequest.into());
        }
    }

    /// Offline now, for `why` (bye, revoked), if it was online.
    pub(super) fn went_offline(&mut self, device: &str, now: Now, why: &str) {
        self.routes.release(device);
        self.handed.forget_device(device);
        self.forget_undelivered(device);
        if let Some(last) = self.presence.bye(device) {
            if let Err(e) = self.store.presence(device, now.wall_ms, last) {
                self.store_failed("recording presence", &e);
            }
            self.log_presence(device, false, now, why);
            info!(device, why, "device offline");
            let device = device.to_string();
            self.tell_cluster(crate::cluster::ToCluster::Offline { device });
        }
    }

    /// Devices silent for too long go offline.
    pub(super) fn sweep_presence(&mut self, now: Now) {
        for (device, last) in self.presence.sweep(now.mono_ms) {
            self.routes.release(&device);
            self.handed.forget_device(&device);
            self.forget_undelivered(&device);
            info!(device, "device offline (silent)");
            if let Err(e) = self.store.presence(&device, now.wall_ms, last) {
                self.store_failed("recording presence", &e);
            }
            self.log_presence(&device, false, now, "silent");
            self.tell_cluster(crate::cluster::ToCluster::Offline { device });
        }
    }

    fn went_online(&mut self, device: &str, now: Now, why: &str) {
        if let Err(e) = self.store.touch(device, now.wall_ms) {
            self.store_failed("recording a device", &e);
        }
        if let Err(e) = self.store.presence(device, now.wall_ms, now.wall_ms) {
            self.store_failed("recording presence", &e);
        }
        self.log_presence(device, true, now, why);
        info!(device, "device online");
    }

    /// Keeps a connect or disconnect in the device's log.
    pub(super) fn log_presence(&mut self, device: &str, online: bool, now: Now, why: &str) {
        // A Bye's reason is the device's own words: kept short.
        let mut why = why.to_string();
        fleetmq_net::text::truncate(&mut why, 200);
        if let Err(e) = self.store.log_presence(device, online, now.wall_ms, &why) {
            self.store_failed("logging a connect or disconnect", &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wall clock, 2023-11-14, when the monotonic one reads 0.
    const WALL: u64 = 1_700_000_000_000;

    /// `ms` on the monotonic clock, with the wall clock in step.
    fn at(ms: u64) -> Now {
        Now {
            mono_ms: ms,
            wall_ms: WALL + ms,
        }
    }

    #[test]
    fn hello_brings_a_device_online_and_silence_takes_it_offline() {
        let mut p = Presence::new(3);
        assert!(p.hello("pi-1", 1_000, at(10_000)));
        assert!(!p.hello("pi-1", 1_000, at(10_500)));
        assert_eq!(
            p.seen("pi-1", at(11_000)),
            Seen {
                came_online: false,
                needs_hello: false
            }
        );
        // Three intervals after the last message: still online at the edge.
        assert!(p.sweep(14_000).is_empty());
        assert_eq!(p.sweep(14_001), vec![("pi-1".to_string(), WALL + 11_000)]);
        assert!(!p.is_online("pi-1"));
    }

    #[test]
    fn a_device_heard_without_hello_is_asked_for_one() {
        let mut p = Presence::new(3);
        assert_eq!(
            p.seen("pi-2", at(0)),
            Seen {
                came_online: true,
                needs_hello: true
            }
        );
        assert_eq!(
            p.seen("pi-2", at(1)),
            Seen {
                came_online: false,
                needs_hello: true
            }
        );
        p.hello("pi-2", 5_000, at(2));
        assert_eq!(
            p.seen("pi-2", at(3)),
            Seen {
                came_online: false,
                needs_hello: false
            }
        );
        assert_eq!(p.times("pi-2"), Some((WALL, WALL + 3)));
    }

    #[test]
    fn bye_is_offline_at_once_and_listening_is_separate() {
        let mut p = Presence::new(3);
        p.hello("pi-3", 5_000, at(0));
        p.set_listening("pi-3", true);
        assert_eq!(p.bye("pi-3"), Some(WALL));
        assert_eq!(p.bye("pi-3"), None);
        assert!(p.is_listening("pi-3"));
        p.set_listening("pi-3", false);
        assert!(!p.is_listening("pi-3"));
    }

    #[test]
    fn silence_is_timed_on_the_monotonic_clock_whatever_the_wall_clock_does() {
        let mut p = Presence::new(3);
        p.hello("pi-4", 1_000, at(0));
        // The system clock steps an hour forward, then a day back: only
        // the monotonic clock times silence.
        let ahead = Now {
            mono_ms: 500,
            wall_ms: WALL + 3_600_000,
        };
        p.seen("pi-4", ahead);
        assert!(p.sweep(3_500).is_empty());
        let behind = Now {
            mono_ms: 3_000,
            wall_ms: WALL - 86_400_000,
        };
        p.seen("pi-4", behind);
        assert!(p.sweep(6_000).is_empty());
        assert_eq!(p.times("pi-4"), Some((WALL, WALL - 86_400_000)));
        assert_eq!(
            p.sweep(6_001),
            vec![("pi-4".to_string(), WALL - 86_400_000)]
        );
    }
}
