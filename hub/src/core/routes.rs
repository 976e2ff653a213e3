//! Routes: which connection speaks for a device, and where the hub sends
//! what is meant for it.
//!
//! An agent's DEALERs carry the routing id `<device id>@<nonce>`, the nonce
//! drawn at random when the agent starts and sent only inside the CURVE
//! handshake. The first route heard with a device's key holds the device
//! while the device is online; acks, commands and per-device announcements
//! go to that route only, never to an id a peer chose. A second route for
//! the same device (a cloned SD card, or a restarted agent whose old
//! connection the hub has not seen end) is refused while the holder is
//! online, told why with the holder's address, and counted.
//!
//! A route also says how its agent is reached: an agent whose Offer says
//! `one_connection` (after the hub's Carry) connects none of the hub's
//! other sockets, so its broadcasts, commands and work-queue jobs go down
//! its route too ([`OneConnection`]). A new Hello on a route forgets that
//! until the agent's next Offer.

use std::collections::HashMap;

use fleetmq_protocol::{Refusal, RouteError, names, validate_device_id};
use tracing::warn;

use super::{Core, Now};

/// Most devices and routes remembered for conflicts and warnings.
const REMEMBERED_MAX: usize = 4096;
/// How often a refused connection is told why.
pub const TELL_EVERY_MS: u64 = 60_000;

/// The connection that speaks for a device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    route: Vec<u8>,
    /// The groups of the route's last Hello: the broadcasts it hears.
    groups: Vec<String>,
    /// Set when everything travels on this route.
    one: Option<OneConnection>,
}

/// How an agent that carries everything on its telemetry connection
/// takes broadcasts and jobs (from its Offer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OneConnection {
    /// It wants the chat room's lines.
    pub chat: bool,
    /// Work-queue jobs it runs at once (at least 1).
    pub job_slots: u32,
}

/// Second connections refused for one device, for `devices`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conflicts {
    /// How many messages from another route were refused.
    pub count: u64,
    /// The address the last refused one came from.
    pub address: String,
}

/// What a message's route means for its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The route holds the device (now, or from before): serve it.
    Holds,
    /// Another route holds the device: refuse. `tell` is true when the
    /// sender has not been told so in the last `tell_every_ms`.
    Refused { holder_address: String, tell: bool },
}

#[derive(Debug, Default)]
pub struct Routes {
    held: HashMap<String, Held>,
    conflicts: HashMap<String, Conflicts>,
    /// Refused routes, with when each was last told why.
    told: HashMap<Vec<u8>, u64>,
    /// Where each device's holding connection comes from (its newest,
    /// kept after it goes offline; at most [`ADDRESSES_MAX`] devices).
    addresses: HashMap<String, String>,
}

/// Most devices whose newest address is kept: more than a hub holds.
const ADDRESSES_MAX: usize = 1 << 17;

impl Routes {
    /// A message for `device` arrived from `route` (at `address`).
    /// `online` says whether the device is online now: an offline device's
    /// route is free for any connection with its key.
    pub fn claim(
        &mut self,
        device: &str,
        route: &[u8],
        address: &str,
        online: bool,
        now_ms: u64,
        tell_every_ms: u64,
    ) -> Claim {
        match self.held.get(device) {
            Some(h) if h.route == route => return Claim::Holds,
            Some(_) if online => {
                let holder_address = self.address(device).unwrap_or_default().to_string();
                if self.conflicts.len() < REMEMBERED_MAX || self.conflicts.contains_key(device) {
                    let c = self.conflicts.entry(device.to_string()).or_default();
                    c.count += 1;
                    c.address = address.to_string();
                }
                let tell = self.tell(route, now_ms, tell_every_ms);
                return Claim::Refused {
                    holder_address,
                    tell,
                };
            }
            _ => {}
        }
        let held = Held {
            route: route.to_vec(),
            groups: Vec::new(),
            one: None,
        };
        self.held.insert(device.to_string(), held);
        // The holder's address, for `address` and for telling a refused
        // second agent where the first is.
        if self.addresses.len() < ADDRESSES_MAX || self.addresses.contains_key(device) {
            self.addresses
                .insert(device.to_string(), address.to_string());
        }
        Claim::Holds
    }

    /// Where `device`'s connection comes from (its newest, when offline),
    /// as this hub saw it since it started.
    pub fn address(&self, device: &str) -> Option<&str> {
        (self.addresses.get(device).map(String::as_str)).filter(|a| !a.is_empty())
    }

    /// Whether the connection on `route` should be told why it is refused:
    /// not when it was told in the last `tell_every_ms`.
    pub fn tell(&mut self, route: &[u8], now_ms: u64, tell_every_ms: u64) -> bool {
        let last = self.told.get(route).copied();
        let tell = last.is_none_or(|at| now_ms.saturating_sub(at) >= tell_every_ms)
            && (self.told.len() < REMEMBERED_MAX || last.is_some());
        if tell {
            self.told.insert(route.to_vec(), now_ms);
        }
        tell
    }

    /// The route that speaks for `device`, if one does.
    pub fn route(&self, device: &str) -> Option<&[u8]> {
        self.held.get(device).map(|h| h.route.as_slice())
    }

    /// Whether `route` speaks for `device`.
    pub fn holds(&self, device: &str, route: &[u8]) -> bool {
        self.route(device) == Some(route)
    }

    /// The route holding `device` said Hello with these groups: until its
    /// next Offer it is taken to connect the hub's other sockets.
    pub fn hello(&mut self, device: &str, groups: &[String]) {
        if let Some(h) = self.held.get_mut(device) {
            h.groups = groups.to_vec();
            h.one = None;
        }
    }

    /// The route holding `device` offered to carry everything (`Some`), or
    /// not.
    pub fn carry(&mut self, device: &str, one: Option<OneConnection>) {
        if let Some(h) = self.held.get_mut(device) {
            h.one = one;
        }
    }

    /// How `device` is reached if everything travels on its route.
    pub fn carried(&self, device: &str) -> Option<OneConnection> {
        self.held.get(device).and_then(|h| h.one)
    }

    /// The routes that carry everything and hear broadcasts on `topic`:
    /// the topics their agents' SUB would subscribe to (everyone's, their
    /// groups', and the chat room's if they want it; nothing is published
    /// for one device).
    pub fn hearing(&self, topic: &str) -> Vec<Vec<u8>> {
        let group = names::topic_group(topic);
        let hears = |h: &Held, one: &OneConnection| {
            topic.starts_with(names::ALL_TOPIC)
                || (one.chat && topic.starts_with(names::CHAT_TOPIC))
                || group.is_some_and(|group| h.groups.iter().any(|g| g == group))
        };
        self.held
            .values()
            .filter(|h| h.one.as_ref().is_some_and(|one| hears(h, one)))
            .map(|h| h.route.clone())
            .collect()
    }

    /// The device went offline (Bye, silence, revoked): its route is free.
    pub fn release(&mut self, device: &str) {
        self.held.remove(device);
    }

    /// Drops all that is known of `device`'s connections (forgotten).
    pub fn forget(&mut self, device: &str) {
        self.held.remove(device);
        self.conflicts.remove(device);
        self.addresses.remove(device);
    }

    /// Refused second connections for `device`.
    pub fn conflicts(&self, device: &str) -> Option<&Conflicts> {
        self.conflicts.get(device)
    }

    /// Forgets when refused routes were told, once that is older than
    /// `tell_every_ms`.
    pub fn forget_told(&mut self, now_ms: u64, tell_every_ms: u64) {
        self.told
            .retain(|_, at| now_ms.saturating_sub(*at) < tell_every_ms);
    }
}

impl Core {
    /// Whether the connection on `route` speaks for `device`: it does if it
    /// did, or if the device is offline (then it takes the device over).
    /// Otherwise its message is refused, counted, and the agent is told,
    /// with the address of the one that holds the device.
    pub(super) fn holds(&mut self, device: &str, route: &[u8], address: &str, now: Now) -> bool {
        let online = self.presence.is_online(device);
        let claim = self
            .routes
            .claim(device, route, address, online, now.mono_ms, TELL_EVERY_MS);
        let Claim::Refused {
            holder_address,
            tell,
        } = claim
        else {
            return true;
        };
        self.counters.connection_conflicts += 1;
        if tell {
            warn!(
                device,
                holder = %holder_address,
                from = address,
                "a second agent with this device's key connected while the first is online; refused it (a cloned SD card?)"
            );
            let silent = self.config.presence.offline_after_heartbeats;
            let reason = format!(
                "another agent is connected as {device} from {holder_address}: is this SD card a clone? Give each device its own key and id (fleetmq-agent keygen, then fleetmq-hub allow on the hub). If this device just restarted, it gets in once that connection has missed {silent} heartbeats"
            );
            self.send_to_route(route.to_vec(), Refusal { reason }.into());
        }
        false
    }

    /// A telemetry message whose routing id is not `<device id>@<nonce>`:
    /// dropped. An agent older than the hub sets the bare device id; when
    /// its key is that device's, it is told to upgrade, once a minute.
    pub(super) fn refuse_route(
        &mut self,
        route: &[u8],
        user_id: Option<&str>,
        e: &RouteError,
        now: Now,
    ) {
        self.dropped("telemetry", e);
        if let RouteError::NoNonce(id) = e
            && validate_device_id(id).is_ok()
            && self.admit("telemetry", id, user_id, now)
            && self.routes.tell(route, now.mono_ms, TELL_EVERY_MS)
        {
            warn!(device = %id, "an agent without a route nonce connected; told it to upgrade");
            let reason = e.to_string();
            self.send_to_route(route.to_vec(), Refusal { reason }.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    #[test]
    fn the_first_route_holds_a_device_until_it_goes_offline() {
        let mut r = Routes::default();
        assert_eq!(
            r.claim("pi-1", b"pi-1@a", "10.0.0.1", false, 0, MIN),
            Claim::Holds
        );
        assert_eq!(r.route("pi-1"), Some(&b"pi-1@a"[..]));
        // The same route again (a reconnect) keeps it.
        assert_eq!(
            r.claim("pi-1", b"pi-1@a", "10.0.0.1", true, 1, MIN),
            Claim::Holds
        );

        // A second agent with the same key, while the first is online.
        let refused = r.claim("pi-1", b"pi-1@b", "10.0.0.2", true, 2, MIN);
        assert_eq!(
            refused,
            Claim::Refused {
                holder_address: "10.0.0.1".into(),
                tell: true
            }
        );
        assert!(r.holds("pi-1", b"pi-1@a"));
        assert!(!r.holds("pi-1", b"pi-1@b"));
        // Told once a minute, counted every time.
        let again = r.claim("pi-1", b"pi-1@b", "10.0.0.2", true, 3, MIN);
        assert!(matches!(again, Claim::Refused { tell: false, .. }));
        let later = r.claim("pi-1", b"pi-1@b", "10.0.0.2", true, 2 + MIN, MIN);
        assert!(matches!(later, Claim::Refused { tell: true, .. }));
        let c = r.conflicts("pi-1").unwrap();
        assert_eq!((c.count, c.address.as_str()), (3, "10.0.0.2"));

        assert_eq!(
            r.address("pi-1"),
            Some("10.0.0.1"),
            "the holder's, not the refused one's"
        );

        // Offline (silence or Bye): the next route takes the device.
        r.release("pi-1");
        assert_eq!(r.route("pi-1"), None);
        assert_eq!(r.address("pi-1"), Some("10.0.0.1"), "kept while offline");
        assert_eq!(
            r.claim("pi-1", b"pi-1@b", "10.0.0.2", false, 5, MIN),
            Claim::Holds
        );
        assert!(r.holds("pi-1", b"pi-1@b"));
        // A holder left over from an offline device does not block.
        assert_eq!(
            r.claim("pi-1", b"pi-1@c", "10.0.0.3", false, 6, MIN),
            Claim::Holds
        );
        // Other devices are not affected.
        assert_eq!(
            r.claim("pi-2", b"pi-2@a", "10.0.0.9", false, 7, MIN),
            Claim::Holds
        );
        assert!(r.conflicts("pi-2").is_none());
        assert_eq!(r.address("pi-1"), Some("10.0.0.3"), "the newest");
        r.forget("pi-1");
        assert_eq!(r.address("pi-1"), None);
    }
}
