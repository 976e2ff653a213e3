//! Work-queue jobs in the hands of agents on one connection. Such an agent
//! pulls nothing: the hub sends it `Work` itself, so the hub must also do
//! what a PULL socket's queue did, and hand it no more than it can run
//! (its Offer's `job_slots`) plus one waiting. A job leaves its device's
//! hands with its result, when its lease runs out, or when the device goes
//! offline (an agent that comes back has lost what was waiting).

use std::collections::HashMap;

/// Jobs handed out beyond what the device runs at once, so that it starts
/// the next one without waiting for the hub.
const AHEAD: u32 = 1;

/// The most jobs the hub counts a device as running at once, whatever its
/// Offer says: one agent (a misconfigured one, or a device someone took
/// over) cannot draw the whole work queue into its hands, where each job
/// would wait out its lease and lose an attempt.
pub const MAX_JOB_SLOTS: u32 = 64;

/// One attempt in a device's hands.
#[derive(Debug)]
struct InHands {
    device: String,
    until_mono_ms: u64,
}

/// The attempts handed to agents on one connection, by token.
#[derive(Debug, Default)]
pub struct Handed {
    by_token: HashMap<u64, InHands>,
    per_device: HashMap<String, u32>,
}

impl Handed {
    /// The attempt with `token` went to `device`, leased until `until_mono_ms`.
    pub fn give(&mut self, token: u64, device: &str, until_mono_ms: u64) {
        let held = InHands {
            device: device.to_string(),
            until_mono_ms,
        };
        if let Some(old) = self.by_token.insert(token, held) {
            self.release(&old.device);
        }
        *self.per_device.entry(device.to_string()).or_default() += 1;
    }

    /// The attempt with `token` came back (a result, whatever it says).
    pub fn done(&mut self, token: u64) {
        if let Some(h) = self.by_token.remove(&token) {
            self.release(&h.device);
        }
    }

    /// Attempts whose lease ran out by `now_mono_ms` leave their devices'
    /// hands.
    pub fn expire(&mut self, now_mono_ms: u64) {
        let out: Vec<u64> = (self.by_token.iter())
            .filter(|(_, h)| h.until_mono_ms <= now_mono_ms)
            .map(|(&t, _)| t)
            .collect();
        for token in out {
            self.done(token);
        }
    }

    /// `device` went offline: what it held is its no more.
    pub fn forget_device(&mut self, device: &str) {
        if self.per_device.remove(device).is_some() {
            self.by_token.retain(|_, h| h.device != device);
        }
    }

    /// How many attempts `device` holds.
    pub fn load(&self, device: &str) -> u32 {
        self.per_device.get(device).copied().unwrap_or(0)
    }

    /// Whether `device`, running `slots` jobs at once, has room for one more.
    pub fn has_room(&self, device: &str, slots: u32) -> bool {
        self.load(device) < slots.saturating_add(AHEAD)
    }

    /// Of `takers` (a device and its slots), one with room: the least
    /// loaded, and among those the `turn`-th, so equal devices share the
    /// work.
    pub fn pick(&self, takers: &[(String, u32)], turn: u64) -> Option<String> {
        let room = |(d, slots): &&(String, u32)| self.has_room(d, *slots);
        let least = takers
            .iter()
            .filter(room)
            .map(|(d, _)| self.load(d))
            .min()?;
        let equal: Vec<&String> = (takers.iter().filter(room))
            .filter(|(d, _)| self.load(d) == least)
            .map(|(d, _)| d)
            .collect();
        Some(equal[(turn % equal.len() as u64) as usize].clone())
    }

    fn release(&mut self, device: &str) {
        if let Some(n) = self.per_device.get_mut(device) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_device.remove(device);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn takers(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        list.iter().map(|(d, s)| (d.to_string(), *s)).collect()
    }

    #[test]
    fn a_device_gets_its_slots_and_one_more_then_waits_for_a_result() {
        let mut h = Handed::default();
        let t = takers(&[("pi-1", 2)]);
        for token in 1..=3 {
            assert_eq!(h.pick(&t, token).as_deref(), Some("pi-1"));
            h.give(token, "pi-1", 1_000);
        }
        assert_eq!(h.pick(&t, 4), None, "two running, one waiting: full");
        h.done(2);
        assert_eq!(h.pick(&t, 4).as_deref(), Some("pi-1"));
        h.done(2);
        assert_eq!(
            h.load("pi-1"),
            2,
            "a second result for a token frees nothing"
        );
    }

    #[test]
    fn the_least_loaded_device_is_picked_and_equals_take_turns() {
        let mut h = Handed::default();
        let t = takers(&[("a", 4), ("b", 4), ("c", 4)]);
        h.give(1, "a", 1_000);
        let picked: Vec<String> = (0..4).filter_map(|turn| h.pick(&t, turn)).collect();
        assert!(picked.iter().all(|d| d != "a"), "{picked:?}");
        assert!(picked.contains(&"b".into()) && picked.contains(&"c".into()));
    }

    #[test]
    fn leases_that_run_out_and_devices_that_leave_free_their_slots() {
        let mut h = Handed::default();
        let t = takers(&[("pi-1", 1)]);
        h.give(1, "pi-1", 1_000);
        h.give(2, "pi-1", 5_000);
        assert_eq!(h.pick(&t, 0), None);
        h.expire(999);
        assert_eq!(h.pick(&t, 0), None, "not yet");
        h.expire(1_000);
        assert_eq!(h.load("pi-1"), 1);
        assert_eq!(h.pick(&t, 0).as_deref(), Some("pi-1"));
        h.forget_device("pi-1");
        assert_eq!(h.load("pi-1"), 0);
        h.done(2);
        assert_eq!(
            h.load("pi-1"),
            0,
            "a result after the device left changes nothing"
        );
    }

    #[test]
    fn no_takers_no_pick() {
        assert_eq!(Handed::default().pick(&[], 0), None);
    }
}
