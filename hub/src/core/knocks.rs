//! Keys waiting to be enrolled: every key not on the allow list that tries
//! a CURVE handshake, with where and when it tried, so that an operator
//! enrols a new device from a list (`fleetmq-hub pending`, the console)
//! rather than from the hub's log. Held in memory only: a device that
//! waits redials, and is listed again after a restart at its next attempt.
//! An operator enrols one with [`Request::Enrol`] (`allow_edits.rs`).
//!
//! [`Request::Enrol`]: fleetmq_protocol::Request::Enrol

use std::collections::HashMap;

use fleetmq_protocol::PendingKey;

use super::Core;

/// Most keys held. Past it the one heard from longest ago makes room: a
/// flood of made-up keys cannot grow the hub, and pushes out only keys
/// that stopped trying.
pub(super) const MOST_KEYS: usize = 1024;

/// The keys that knocked, by key.
#[derive(Debug, Default)]
pub(super) struct Knocks {
    keys: HashMap<String, PendingKey>,
}

impl Knocks {
    /// A handshake from `key` at `address` was refused at `wall_ms`.
    pub(super) fn knocked(&mut self, key: &str, address: &str, wall_ms: u64) {
        if let Some(k) = self.keys.get_mut(key) {
            k.address = address.to_string();
            k.last_ms = k.last_ms.max(wall_ms);
            k.attempts += 1;
            return;
        }
        if self.keys.len() >= MOST_KEYS
            && let Some(oldest) = self
                .keys
                .values()
                .min_by_key(|k| k.last_ms)
                .map(|k| k.public_key.clone())
        {
            self.keys.remove(&oldest);
        }
        self.keys.insert(
            key.to_string(),
            PendingKey {
                public_key: key.to_string(),
                address: address.to_string(),
                first_ms: wall_ms,
                last_ms: wall_ms,
                attempts: 1,
            },
        );
    }

    /// Keeps only the keys `waiting` says are still not enrolled.
    pub(super) fn retain(&mut self, waiting: impl Fn(&str) -> bool) {
        self.keys.retain(|key, _| waiting(key));
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Every key, newest attempt first.
    pub(super) fn list(&self) -> Vec<PendingKey> {
        let mut out: Vec<PendingKey> = self.keys.values().cloned().collect();
        out.sort_by(|a, b| (b.last_ms, &a.public_key).cmp(&(a.last_ms, &b.public_key)));
        out
    }
}

impl Core {
    /// Keys not on the allow list that tried to connect since the hub
    /// started, newest attempt first.
    pub(super) fn pending_keys(&self) -> Vec<fleetmq_protocol::PendingKey> {
        self.admission.knocks().list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_is_listed_once_with_its_attempts_newest_first() {
        let mut k = Knocks::default();
        k.knocked("A", "10.0.0.1", 1_000);
        k.knocked("B", "10.0.0.2", 2_000);
        k.knocked("A", "10.0.0.9", 3_000);
        let list = k.list();
        assert_eq!(list.len(), 2);
        assert_eq!(
            (list[0].public_key.as_str(), list[0].address.as_str()),
            ("A", "10.0.0.9"),
            "the newest attempt first, from where it came last"
        );
        assert_eq!(
            (list[0].first_ms, list[0].last_ms, list[0].attempts),
            (1_000, 3_000, 2)
        );
        assert_eq!((list[1].public_key.as_str(), list[1].attempts), ("B", 1));

        k.retain(|key| key != "A");
        assert_eq!(k.list().len(), 1, "an enrolled key leaves the list");
        assert_eq!(k.list()[0].public_key, "B");
    }

    #[test]
    fn a_flood_of_keys_is_held_to_a_bound_and_pushes_out_the_quiet_ones() {
        let mut k = Knocks::default();
        k.knocked("patient", "10.0.0.1", 0);
        for i in 0..MOST_KEYS as u64 {
            k.knocked(&format!("made-up-{i}"), "10.6.6.6", 10 + i);
            if i % 100 == 0 {
                k.knocked("patient", "10.0.0.1", 10 + i);
            }
        }
        let list = k.list();
        assert_eq!(list.len(), MOST_KEYS);
        assert!(
            list.iter().any(|p| p.public_key == "patient"),
            "a device still trying stays listed"
        );
        assert!(
            !list.iter().any(|p| p.public_key == "made-up-0"),
            "the key heard from longest ago made room"
        );
    }
}
