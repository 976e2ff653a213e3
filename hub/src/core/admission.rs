//! Admission: who may speak for a device. The ZAP verdict on a CURVE
//! handshake, the allow list in force, and the per-device rate limit.
//!
//! The ZAP handler lets a CURVE client in only if its public key is on the
//! allow list, and answers with the device id as the connection's user id.
//! libzmq stamps that id on every message from the connection, and the hub
//! drops any message whose claimed device is not that id: a device cannot
//! speak for another.

use std::collections::{HashMap, HashSet};

use tracing::{debug, info, warn};

use fleetmq_net::OPERATOR_ZAP_DOMAIN;

use super::bucket::{Bucket, Rate};
use super::knocks::Knocks;
use super::{Core, Now};
use crate::enrolment::AllowList;
use crate::operators::Operators;

/// How often idle rate-limit buckets are forgotten, in ticks.
const FORGET_TICKS: u32 = 50;
/// Most devices remembered for once-per-episode log lines.
const LOGGED_MAX: usize = 1024;
/// How long a device pinned anew has to say Hello before its broadcast
/// connection is cut anyway.
const REGROUP_HELLO_MS: u64 = 5_000;

/// The allow list in force and the rate limits: what admission needs to
/// remember between messages.
#[derive(Debug)]
pub struct Admission {
    /// The enrolment in force; `None` when the hub runs plaintext.
    list: Option<AllowList>,
    /// Unknown keys already logged, so a knocking stranger logs once.
    logged: HashSet<String>,
    /// Keys not on the list that tried to get in: devices waiting to be
    /// enrolled (`fleetmq-hub pending`).
    knocks: Knocks,
    /// Keys revoked while this hub runs, with the device each was enrolled
    /// as (at most [`LOGGED_MAX`]): a revoked device that keeps trying to
    /// connect is named, not taken for a stranger. The list's own
    /// `# revoked` lines (left by `fleetmq-hub revoke`) name them across
    /// restarts; this holds the ones removed by hand too.
    revoked: HashMap<String, String>,
    rate: RateLimit,
    device_rate: u32,
    /// Devices currently over their rate, logged once per episode.
    over_rate: HashSet<String>,
    /// Who may use the remote operator socket.
    operators: Operators,
    /// `security.pinned_groups_only`: a device the list pins to no groups
    /// is in none.
    pinned_only: bool,
    /// Online devices pinned anew, asked for a Hello: their broadcast
    /// connections are cut at that Hello, or at this deadline (ms on the
    /// monotonic clock) if none comes.
    regrouped: HashMap<String, u64>,
}

impl Admission {
    pub fn new(list: Option<AllowList>, security: &crate::config::Security) -> Admission {
        let (device_rate, device_burst) = (security.device_rate, security.device_burst);
        Admission {
            list,
            logged: HashSet::new(),
            knocks: Knocks::default(),
            revoked: HashMap::new(),
            rate: RateLimit::new(device_rate, device_burst),
            device_rate,
            over_rate: HashSet::new(),
            operators: Operators::default(),
            regrouped: HashMap::new(),
            pinned_only: security.pinned_groups_only,
        }
    }

    /// Whether the hub checks keys (CURVE) or believes routing ids.
    pub fn secure(&self) -> bool {
        self.list.is_some()
    }

    /// Whether `device` was let in once and has no key on the list now (on
    /// a plaintext hub, never).
    pub fn is_revoked(&self, device: &str) -> bool {
        self.list.as_ref().is_some_and(|l| !l.has_device(device))
    }

    /// The keys waiting to be enrolled.
    pub(super) fn knocks(&self) -> &Knocks {
        &self.knocks
    }

    /// The allow list in force; `None` when the hub runs plaintext.
    pub(super) fn list(&self) -> Option<&AllowList> {
        self.list.as_ref()
    }

    /// Number of keys enrolled.
    pub fn keys(&self) -> usize {
        self.list.as_ref().map_or(0, AllowList::len)
    }

    /// The groups the allow list pins `device` to, if it pins them (none,
    /// under `security.pinned_groups_only`, for a device it lists without).
    pub fn groups_of(&self, device: &str) -> Option<&[String]> {
        let list = self.list.as_ref()?;
        match list.groups_of(device) {
            Some(groups) => Some(groups),
            None if self.pinned_only && list.has_device(device) => Some(&[]),
            None => None,
        }
    }

    /// Whether `what` is logged for the first time since the allow list
    /// last changed (at most [`LOGGED_MAX`] things are remembered).
    pub(super) fn first_time(&mut self, what: String) -> bool {
        self.logged.len() < LOGGED_MAX && self.logged.insert(what)
    }

    pub(super) fn tick(&mut self, ticks: u32, now: Now) {
        if ticks.is_multiple_of(FORGET_TICKS) {
            self.rate.forget_idle(now.mono_ms);
        }
    }

    /// The device a connection's key is enrolled as, when that is not the
    /// device it claims to be.
    fn enrolled_instead<'a>(&'a self, claimed: &str, user_id: Option<&'a str>) -> Option<&'a str> {
        let list = self.list.as_ref()?;
        user_id.filter(|u| *u != claimed && list.has_device(u))
    }
}

impl Core {
    /// Answers one ZAP request (the frames libzmq sent) with the reply
    /// frames. The list may have changed a moment ago, since the last tick
    /// read it: a key enrolled, revoked, or moved to another device id. So
    /// `reload` is asked first for a newer list (`None` when the file did
    /// not change: one stat()), and every handshake is judged by the file
    /// as it is. A device enrolled a moment ago gets in without waiting
    /// for the next tick and a reconnect, and a key moved from one id to
    /// another within a tick is never let in under the old one (where its
    /// connection would be refused in silence until it reconnected).
    pub fn zap(
        &mut self,
        frames: &[Vec<u8>],
        reload: impl FnOnce() -> Option<AllowList>,
        now: Now,
    ) -> Vec<Vec<u8>> {
        if frames
            .get(2)
            .is_some_and(|d| d == OPERATOR_ZAP_DOMAIN.as_bytes())
        {
            return self.zap_operator(frames);
        }
        if self.admission.list.is_some()
            && let Some(newer) = reload()
        {
            self.allow_list_changed(newer, now);
        }
        let Some(list) = &self.admission.list else {
            let (_, reply) = judge_zap(&AllowList::default(), frames);
            return reply;
        };
        let (verdict, reply) = judge_zap(list, frames);
        match verdict {
            Verdict::Allow(device) => debug!(device, "handshake accepted"),
            Verdict::UnknownKey { key, address } => {
                self.counters.handshakes_refused += 1;
                let revoked = self.revoked_as(&key);
                if revoked.is_none() {
                    self.admission.knocks.knocked(&key, &address, now.wall_ms);
                }
                if self.admission.first_time(key.clone()) {
                    self.refused_key(&key, &address, revoked, now);
                }
            }
            Verdict::Malformed(why) => {
                self.counters.handshakes_refused += 1;
                debug!(%why, "refused a handshake");
            }
        }
        reply
    }

    /// Says, once per key until the allow list changes, that a key not
    /// on the list was refused: a revoked device's by its name, in the
    /// log and in its presence log (`fleetmq-hub presence`), since one
    /// that keeps trying is one to look into; a stranger's with the
    /// command that would enrol it.
    fn refused_key(&mut self, key: &str, address: &str, revoked: Option<String>, now: Now) {
        let quoted = fleetmq_net::keys::quoted(key);
        let Some(device) = revoked else {
            warn!(%address, public_key = %quoted, "refused a key that is not enrolled; if it is yours: fleetmq-hub allow DEVICE {quoted} (`fleetmq-hub pending` lists every key waiting)");
            return;
        };
        warn!(device, %address, public_key = %quoted, "refused a revoked device's key: it is still trying to connect (`fleetmq-hub allow {device} {quoted}` would let it in again)");
        let why = format!("refused: its key is revoked (a connection from {address})");
        self.log_presence(&device, false, now, &why);
    }

    /// The device `key` was enrolled as before it was revoked (by the
    /// list's `# revoked` lines, or while this hub ran), if it was.
    fn revoked_as(&self, key: &str) -> Option<String> {
        let on_file = self
            .admission
            .list
            .as_ref()
            .and_then(|l| l.revoked_device(key));
        on_file
            .or_else(|| self.admission.revoked.get(key).map(String::as_str))
            .map(String::from)
    }

    /// Applies a changed operator allow list.
    pub fn operators_changed(&mut self, operators: Operators) {
        info!(operators = operators.len(), "operator allow list loaded");
        self.admission.operators = operators;
    }

    /// A handshake on the remote operator socket: let in an operator's
    /// key, with `operator:ROLE:NAME` as the connection's user id.
    fn zap_operator(&mut self, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let key = frames.get(6).and_then(|k| fleetmq_net::keys::z85(k));
        let address = frames
            .get(3)
            .map(|a| String::from_utf8_lossy(a).into_owned());
        let id = frames.get(1).map_or(&[][..], Vec::as_slice);
        let found = key
            .as_deref()
            .and_then(|k| self.admission.operators.operator(k));
        let reply = |code: &str, text: &str, user: &str| zap_reply(id, code, text, user);
        if frames.len() < 7 || frames[0] != b"1.0" || frames[5] != b"CURVE" {
            self.counters.handshakes_refused += 1;
            return reply("400", "CURVE only", "");
        }
        match found {
            Some((name, role)) => {
                info!(operator = name, ?role, "operator connected");
                reply("200", "OK", &crate::operators::user_id(name, role))
            }
            None => {
                self.counters.handshakes_refused += 1;
                let key = key
                    .map(|k| fleetmq_net::keys::quoted(&k))
                    .unwrap_or_default();
                if self.admission.first_time(key.clone()) {
                    warn!(address = address.unwrap_or_default(), public_key = %key, "refused an operator key that is not in security.operator_allow_list");
                }
                reply("400", "operator key not allowed", "")
            }
        }
    }

    /// Applies a changed allow list: a device whose key left the list is
    /// marked offline and its connections are cut, so it handshakes again
    /// and is refused. Other devices' connections are not touched.
    pub fn allow_list_changed(&mut self, newer: AllowList, now: Now) {
        let Some(list) = &mut self.admission.list else {
            return;
        };
        let revoked = list.revoked_in(&newer);
        let regrouped = list.regrouped_in(&newer);
        info!(
            keys = newer.len(),
            pinned = newer.pinned().len(),
            revoked = revoked.len(),
            regrouped = regrouped.len(),
            "allow list changed"
        );
        // A key enrolled again is let in before this is looked at.
        let known = &mut self.admission.revoked;
        for (device, key) in &revoked {
            if known.len() < LOGGED_MAX || known.contains_key(key) {
                known.insert(key.clone(), device.clone());
            }
        }
        *list = newer;
        self.admission.logged.clear();
        let list = &*list;
        self.admission
            .knocks
            .retain(|key| list.device(key).is_none());
        for (device, key) in revoked {
            let key = fleetmq_net::keys::quoted(&key);
            warn!(device, public_key = %key, "key revoked; cutting the device off");
            self.went_offline(&device, now, "revoked");
            self.out.push_back(super::Action::CutDevice { device });
        }
        // A device whose pinned groups changed says Hello again, and the
        // hub takes its groups anew from the list. On five sockets its
        // broadcast connection is cut, so that what it subscribes to is
        // checked against the new pin: after that Hello, whose answer
        // tells an agent its groups before its SUB connects again.
        for device in regrouped {
            if self.presence.is_online(&device) {
                info!(
                    device,
                    "the allow list pins other groups; asked the device for a new Hello"
                );
                self.send_down(&device, fleetmq_protocol::HelloRequest.into());
                let deadline = now.mono_ms + REGROUP_HELLO_MS;
                self.admission.regrouped.insert(device, deadline);
            } else {
                self.out.push_back(super::Action::CutBroadcast { device });
            }
        }
    }

    /// After the Hello of a device pinned anew (answered): its broadcast
    /// connection, if any, is cut.
    pub(super) fn regrouped_hello(&mut self, device: &str) {
        if self.admission.regrouped.remove(device).is_some() {
            let device = device.to_string();
            self.out.push_back(super::Action::CutBroadcast { device });
        }
    }

    /// A device pinned anew that has not said Hello in time is cut all
    /// the same.
    pub(super) fn regrouped_overdue(&mut self, now: Now) {
        let out = &mut self.out;
        self.admission.regrouped.retain(|device, deadline| {
            let due = *deadline <= now.mono_ms;
            if due {
                let device = device.clone();
                out.push_back(super::Action::CutBroadcast { device });
            }
            !due
        });
    }

    /// An agent whose key is enrolled as another device than the id it
    /// claims gets nothing served; it is told why (a Refusal naming its
    /// enrolled id, on its own telemetry connection) at most once a minute,
    /// so a misconfigured device says so in its log and status.
    pub(super) fn tell_if_misnamed(
        &mut self,
        route: &[u8],
        claimed: &str,
        user_id: Option<&str>,
        now: Now,
    ) {
        let Some(enrolled) = self.admission.enrolled_instead(claimed, user_id) else {
            return;
        };
        let enrolled = enrolled.to_string();
        if !self
            .routes
            .tell(route, now.mono_ms, super::routes::TELL_EVERY_MS)
        {
            return;
        }
        warn!(
            claimed,
            enrolled_as = %enrolled,
            "an agent whose key is enrolled as {enrolled} connects as {claimed}; told it so"
        );
        let reason = format!(
            "this device's key is enrolled as {enrolled}, not {claimed}: set device_id = '{enrolled}' in the agent's config (or --device-id {enrolled}), or enrol this key as {claimed}"
        );
        self.send_to_route(route.to_vec(), fleetmq_protocol::Refusal { reason }.into());
    }

    /// Whether a message that claims to come from `device` may be served:
    /// on CURVE its connection must be enrolled as that very device (and
    /// still be on the list), and the device must be within its rate.
    pub(super) fn admit(
        &mut self,
        socket: &str,
        device: &str,
        user_id: Option<&str>,
        now: Now,
    ) -> bool {
        let a = &mut self.admission;
        if let Some(list) = &a.list {
            let enrolled_as = user_id.filter(|u| list.has_device(u));
            if enrolled_as != Some(device) {
                self.counters.impersonations += 1;
                debug!(
                    socket,
                    claimed = device,
                    key_of = user_id.unwrap_or("nobody"),
                    "dropped a message claiming another device"
                );
                return false;
            }
        }
        if a.rate.take(device, now.mono_ms) {
            if a.over_rate.remove(device) {
                info!(device, "device back under its rate limit");
            }
            return true;
        }
        self.counters.rate_limited += 1;
        if a.over_rate.len() < LOGGED_MAX && a.over_rate.insert(device.to_string()) {
            warn!(
                device,
                rate = a.device_rate,
                "device is over its rate limit; dropping its messages (unacked, so an honest agent resends)"
            );
        }
        false
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

/// A ZAP reply: version, request id, status code and text, user id, no
/// metadata.
fn zap_reply(id: &[u8], code: &str, text: &str, user: &str) -> Vec<Vec<u8>> {
    vec![
        b"1.0".to_vec(),
        id.to_vec(),
        code.as_bytes().to_vec(),
        text.as_bytes().to_vec(),
        user.as_bytes().to_vec(),
        Vec::new(),
    ]
}

/// Decides a ZAP request and builds the reply frames.
pub fn judge_zap(list: &AllowList, frames: &[Vec<u8>]) -> (Verdict, Vec<Vec<u8>>) {
    // version, request id, domain, address, routing id, mechanism, credentials
    let reply = zap_reply;
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
    let Some(key) = frames.get(6).and_then(|k| fleetmq_net::keys::z85(k)) else {
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
    rate: Rate,
    buckets: HashMap<String, Bucket>,
}

impl RateLimit {
    pub fn new(rate: u32, burst: u32) -> Self {
        RateLimit {
            rate: Rate::new(rate, burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `device` at `now_ms` (monotonic); false when it has none left.
    pub fn take(&mut self, device: &str, now_ms: u64) -> bool {
        if self.rate.is_off() {
            return true;
        }
        let rate = self.rate;
        let bucket = match self.buckets.get_mut(device) {
            Some(b) => b,
            None => self
                .buckets
                .entry(device.to_string())
                .or_insert(Bucket::full(rate, now_ms)),
        };
        bucket.take(rate, 1.0, now_ms).is_ok()
    }

    /// Forgets devices whose bucket has been full for a while, so the map
    /// does not grow with every id ever seen.
    pub fn forget_idle(&mut self, now_ms: u64) {
        let idle_ms = self.rate.fill_ms().max(1000);
        self.buckets
            .retain(|_, b| now_ms.saturating_sub(b.at_ms()) <= idle_ms);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

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
        let (v, reply) = judge_zap(&list, &request(b"CURVE", &pair.public_key));
        assert_eq!(v, Verdict::Allow("pi-a".into()));
        assert_eq!(reply[1], b"7");
        assert_eq!(reply[2], b"200");
        assert_eq!(reply[4], b"pi-a");

        let stranger = zmq::CurveKeyPair::new().unwrap();
        let (v, reply) = judge_zap(&list, &request(b"CURVE", &stranger.public_key));
        assert!(matches!(v, Verdict::UnknownKey { ref address, .. } if address == "10.0.0.9"));
        assert_eq!(reply[2], b"400");
        assert_eq!(reply[4], b"");

        let (v, reply) = judge_zap(&list, &request(b"NULL", b""));
        assert!(matches!(v, Verdict::Malformed(_)));
        assert_eq!(reply[2], b"400");
        let (_, reply) = judge_zap(&list, &[b"2.0".to_vec(), b"1".to_vec()]);
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
