//! When to dial the hub again after it refused a handshake. libzmq takes a
//! refused handshake as final for that connection, so the agent dials
//! again itself, backing off like libzmq's own reconnects: the first
//! retry after `reconnect_ms`, each next one twice as late up to
//! `reconnect_max_ms`, each with up to half its delay again of random
//! jitter, so a fleet refused at once does not knock again at once. A
//! handshake that succeeds starts the back-off over.
//!
//! Plain state with the time passed in: no sockets, no clock.

use std::time::{Duration, Instant};

/// The redial schedule.
#[derive(Debug, Clone)]
pub struct Redial {
    base: Duration,
    most: Duration,
    /// The delay of the last redial (zero: none since the last success).
    delay: Duration,
    /// When to dial next, if a redial is due.
    at: Option<Instant>,
}

impl Redial {
    /// Backing off from `reconnect_ms` to `reconnect_max_ms`.
    pub fn new(reconnect_ms: u64, reconnect_max_ms: u64) -> Redial {
        let base = Duration::from_millis(reconnect_ms.max(1));
        let most = Duration::from_millis(reconnect_max_ms.max(reconnect_ms).max(1));
        Redial {
            base,
            most,
            delay: Duration::ZERO,
            at: None,
        }
    }

    /// The hub refused us at `now`: schedule a redial, unless one is
    /// already scheduled. `jitter` picks a number in `0..=max`.
    pub fn refused(&mut self, now: Instant, jitter: impl FnOnce(u64) -> u64) {
        if self.at.is_some() {
            return;
        }
        self.delay = if self.delay.is_zero() {
            self.base
        } else {
            (self.delay * 2).min(self.most)
        };
        let half = self.delay.as_millis() as u64 / 2;
        let extra = Duration::from_millis(jitter(half).min(half));
        self.at = Some(now + self.delay + extra);
    }

    /// A handshake succeeded: the next refusal starts from `reconnect_ms`.
    pub fn connected(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// When the next redial is due, if one is.
    pub fn due_at(&self) -> Option<Instant> {
        self.at
    }

    /// Whether to dial now; once it says yes, the redial is done.
    pub fn take_due(&mut self, now: Instant) -> bool {
        take_if_due(&mut self.at, now)
    }
}

/// When to move to the next hub of several (`hub = "tcp://a:7750,tcp://b:7750"`):
/// the agent stays on one hub at a time and moves on once it has not been
/// linked to it for [`FAILOVER_AFTER`] plus up to as much again of random
/// jitter, so the agents of a hub that died spread over the others instead
/// of arriving at once. With one hub it never moves.
#[derive(Debug, Clone)]
pub struct Failover {
    hubs: usize,
    at: Option<Instant>,
}

/// How long an agent waits for its hub to come back before it moves on.
pub const FAILOVER_AFTER: Duration = Duration::from_secs(2);

impl Failover {
    /// Failing over between `hubs` hubs.
    pub fn new(hubs: usize) -> Failover {
        Failover { hubs, at: None }
    }

    /// The link is down at `now` (lost, or not made yet): move on later,
    /// unless a move is already due. `jitter` picks a number in `0..=max`.
    pub fn lost(&mut self, now: Instant, jitter: impl FnOnce(u64) -> u64) {
        if self.hubs < 2 || self.at.is_some() {
            return;
        }
        let most = FAILOVER_AFTER.as_millis() as u64;
        self.at = Some(now + FAILOVER_AFTER + Duration::from_millis(jitter(most).min(most)));
    }

    /// There are `hubs` hubs now (a name resolved to several addresses).
    pub fn set_hubs(&mut self, hubs: usize) {
        self.hubs = hubs;
    }

    /// Linked: stay.
    pub fn linked(&mut self) {
        self.at = None;
    }

    /// When a move is due, if one is.
    pub fn due_at(&self) -> Option<Instant> {
        self.at
    }

    /// Whether to move now; once it says yes, the move is done (call
    /// [`Failover::lost`] again to time the next).
    pub fn take_due(&mut self, now: Instant) -> bool {
        take_if_due(&mut self.at, now)
    }
}

/// Whether the deadline `at` has come by `now`; if so it is taken (done).
fn take_if_due(at: &mut Option<Instant>, now: Instant) -> bool {
    if at.is_some_and(|at| now >= at) {
        *at = None;
        return true;
    }
    false
}

/// `rotation` with the entry `hub` replaced by the addresses its name
/// resolved to (an address already in the rotation is not repeated).
pub fn expand(rotation: &[String], hub: &str, addrs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(rotation.len() + addrs.len());
    for h in rotation {
        let add: &[String] = if h == hub {
            addrs
        } else {
            std::slice::from_ref(h)
        };
        for a in add {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
    }
    out
}

/// The hub after `current` in `rotation` (the first if `current` is not
/// in it, as a name replaced by its addresses is not).
pub fn next_hub(rotation: &[String], current: &str) -> Option<String> {
    let next = match rotation.iter().position(|h| h == current) {
        Some(i) => rotation.get((i + 1) % rotation.len()),
        None => rotation.first(),
    };
    next.cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_several_addresses_becomes_each_of_them_in_the_rotation() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let rotation = s(&["tcp://fe.lan:7750", "tcp://10.0.0.9:7750"]);
        let addrs = s(&[
            "tcp://10.0.0.1:7750",
            "tcp://10.0.0.2:7750",
            "tcp://10.0.0.9:7750",
        ]);
        let expanded = expand(&rotation, "tcp://fe.lan:7750", &addrs);
        assert_eq!(
            expanded,
            s(&[
                "tcp://10.0.0.1:7750",
                "tcp://10.0.0.2:7750",
                "tcp://10.0.0.9:7750"
            ])
        );
        // Connected through the name: the first address is next.
        assert_eq!(
            next_hub(&expanded, "tcp://fe.lan:7750").as_deref(),
            Some("tcp://10.0.0.1:7750")
        );
        assert_eq!(
            next_hub(&expanded, "tcp://10.0.0.9:7750").as_deref(),
            Some("tcp://10.0.0.1:7750")
        );
        assert_eq!(next_hub(&[], "tcp://x:1"), None);
    }

    #[test]
    fn an_agent_moves_on_only_after_its_hub_stays_away_and_never_with_one_hub() {
        let t0 = Instant::now();
        let mut one = Failover::new(1);
        one.lost(t0, |_| 0);
        assert_eq!(one.due_at(), None);

        let mut f = Failover::new(3);
        f.lost(t0, |max| max);
        let due = f.due_at().unwrap();
        assert_eq!(due, t0 + FAILOVER_AFTER * 2);
        // Lost again before the move: the first deadline stands.
        f.lost(t0 + Duration::from_secs(1), |_| 0);
        assert_eq!(f.due_at(), Some(due));
        assert!(!f.take_due(due - Duration::from_millis(1)));
        // Back in time: no move.
        f.linked();
        assert!(!f.take_due(due));
        f.lost(t0, |_| 0);
        assert!(f.take_due(t0 + FAILOVER_AFTER));
        assert!(!f.take_due(t0 + FAILOVER_AFTER), "a move is taken once");
    }

    #[test]
    fn delays_double_to_the_cap_and_jitter_stays_within_half() {
        let t0 = Instant::now();
        let mut r = Redial::new(100, 1_000);
        let mut now = t0;
        let mut delays = Vec::new();
        for round in 0..6u64 {
            // Jitter at its lowest, its highest, and out of range (clamped).
            let pick = [0, u64::MAX, 7][round as usize % 3];
            r.refused(now, |max| pick.min(max * 2));
            let at = r.due_at().unwrap();
            let delay = at - now;
            let base = [100, 200, 400, 800, 1_000, 1_000][round as usize];
            let base = Duration::from_millis(base);
            assert!(
                delay >= base && delay <= base + base / 2,
                "round {round}: {delay:?} outside {base:?}..={:?}",
                base + base / 2
            );
            delays.push(delay);
            assert!(!r.take_due(at - Duration::from_millis(1)), "not early");
            assert!(r.take_due(at));
            assert!(!r.take_due(at), "once");
            now = at;
        }
        r.connected();
        r.refused(now, |_| 0);
        assert_eq!(r.due_at(), Some(now + Duration::from_millis(100)));
    }

    #[test]
    fn a_refusal_while_one_is_scheduled_changes_nothing() {
        let t0 = Instant::now();
        let mut r = Redial::new(100, 1_000);
        r.refused(t0, |_| 0);
        r.refused(t0 + Duration::from_millis(50), |_| 0);
        assert_eq!(r.due_at(), Some(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn random_jitter_never_leaves_its_bounds() {
        let mut r = Redial::new(50, 400);
        let t0 = Instant::now();
        for _ in 0..1_000 {
            r.connected();
            r.refused(t0, |max| fastrand::u64(0..=max));
            let d = r.due_at().unwrap() - t0;
            assert!(d >= Duration::from_millis(50) && d <= Duration::from_millis(75));
            r.take_due(t0 + d);
        }
    }
}
