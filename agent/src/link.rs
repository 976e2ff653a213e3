//! Why the hub has not welcomed us: a device that cannot get in says so,
//! within a few seconds, with what to do about it, in its log and in
//! `status`.
//!
//! Plain state fed with what the driver saw (socket monitor events, the
//! hub's answers, a name lookup) and the time; no sockets. A problem is
//! logged once per episode; an episode ends when the hub welcomes us.
//!
//! | what we saw by the deadline | the problem |
//! |---|---|
//! | the hub's name does not resolve | [`Problem::Unresolvable`] |
//! | no TCP connection (refused, no route, nothing there) | [`Problem::NothingListening`] |
//! | connected, but no handshake | [`Problem::NoHandshake`] (hub key or plaintext/CURVE mismatch) |
//! | the hub refused our key | [`Problem::KeyRefused`] |
//! | handshake done, but no Welcome | [`Problem::NotWelcomed`] (or the hub's own [`Problem::Refused`] reason) |

use std::time::{Duration, Instant};

/// How long after starting (or losing the hub) the agent waits for a
/// Welcome before it says why there is none, unless the hub said why
/// itself (a refused key, a Refusal), which is told at once: within the
/// five seconds the README promises.
pub const GRACE: Duration = Duration::from_secs(4);

/// What the driver saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A TCP connection to the hub was made.
    Connected,
    /// A handshake with the hub completed.
    Handshake,
    /// The hub refused this device's key (ZAP).
    KeyRefused,
    /// A handshake failed otherwise (wrong hub key, plaintext vs CURVE).
    HandshakeFailed,
    /// The hub welcomed us: all is well.
    Welcome,
    /// The connection to the hub ended.
    Disconnected,
    /// The hub sent a Refusal with this reason.
    Refusal(String),
    /// The name lookup of the hub's host failed, with this reason.
    Unresolvable(String),
}

/// Why the agent is not linked to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Unresolvable { host: String, why: String },
    NothingListening { hub: String },
    NoHandshake { hub: String },
    KeyRefused { hub: String },
    NotWelcomed { hub: String },
    Refused { reason: String },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Unresolvable { host, why } => write!(
                f,
                "the hub's name {host} does not resolve ({why}); check `hub` in the config or --hub"
            ),
            Problem::NothingListening { hub } => write!(
                f,
                "nothing answers at {hub}: is the hub running, is this its address and telemetry port (7750 by default), and does a firewall let it through?"
            ),
            Problem::NoHandshake { hub } => write!(
                f,
                "connected to {hub} but no handshake completed: is hub_public_key the hub's (its DATA_DIR/hub.pub), and do both sides agree on --insecure?"
            ),
            Problem::KeyRefused { hub } => write!(
                f,
                "the hub at {hub} refused this device's key: enrol it with `fleetmq-hub allow DEVICE 'KEY'` (the key is in DATA_DIR/agent.pub)"
            ),
            Problem::NotWelcomed { hub } => write!(
                f,
                "the hub at {hub} let us in but does not answer Hello: is this key enrolled under another device id? (the hub counts it under impersonations)"
            ),
            Problem::Refused { reason } => write!(f, "the hub refused us: {reason}"),
        }
    }
}

/// What the link has been through since the last Welcome.
#[derive(Debug, Clone)]
pub struct LinkWatch {
    hub: String,
    /// Since when we have been without a Welcome; `None` while welcomed.
    waiting_since: Option<Instant>,
    connected: bool,
    handshake: bool,
    key_refused: bool,
    refusal: Option<String>,
    unresolvable: Option<String>,
    /// The problem last reported, so each is told once per episode.
    told: Option<Problem>,
}

impl LinkWatch {
    /// Watching the link to `hub` (`tcp://HOST:PORT`) from `now`.
    pub fn new(hub: &str, now: Instant) -> LinkWatch {
        LinkWatch {
            hub: hub.to_string(),
            waiting_since: Some(now),
            connected: false,
            handshake: false,
            key_refused: false,
            refusal: None,
            unresolvable: None,
            told: None,
        }
    }

    /// Something happened on the link.
    pub fn seen(&mut self, what: Seen, now: Instant) {
        match what {
            Seen::Welcome => {
                *self = LinkWatch {
                    waiting_since: None,
                    ..LinkWatch::new(&self.hub, now)
                };
            }
            // What was reached in this episode stays known: a hub that
            // drops a handshake it cannot read (another hub's key) ends
            // each connection it was offered, and that is no handshake,
            // not nothing listening.
            Seen::Disconnected => {
                self.waiting_since.get_or_insert(now);
            }
            Seen::Connected => {
                self.connected = true;
                self.unresolvable = None;
            }
            Seen::Handshake => {
                self.connected = true;
                self.handshake = true;
                self.key_refused = false;
            }
            Seen::KeyRefused => self.key_refused = true,
            Seen::HandshakeFailed => self.connected = true,
            Seen::Refusal(reason) => self.refusal = Some(reason),
            Seen::Unresolvable(why) => self.unresolvable = Some(why),
        }
    }

    fn overdue(&self, now: Instant) -> bool {
        self.waiting_since
            .is_some_and(|since| now.saturating_duration_since(since) >= GRACE)
    }

    /// The problem now: what the hub said at once, else the stage reached
    /// if the hub has not welcomed us within [`GRACE`].
    pub fn problem(&self, now: Instant) -> Option<Problem> {
        self.waiting_since?;
        let hub = self.hub.clone();
        if let Some(reason) = &self.refusal {
            return Some(Problem::Refused {
                reason: reason.clone(),
            });
        }
        if self.key_refused {
            return Some(Problem::KeyRefused { hub });
        }
        if !self.overdue(now) {
            return None;
        }
        Some(if self.handshake {
            Problem::NotWelcomed { hub }
        } else if self.connected {
            Problem::NoHandshake { hub }
        } else if let Some(why) = &self.unresolvable {
            let host =
                fleetmq_net::endpoint::host_port(&self.hub).map_or(hub, |(h, _)| h.to_string());
            Problem::Unresolvable {
                host,
                why: why.clone(),
            }
        } else {
            Problem::NothingListening { hub }
        })
    }

    /// The problem to log now: one not told before in this episode.
    pub fn to_tell(&mut self, now: Instant) -> Option<Problem> {
        let problem = self.problem(now)?;
        if self.told.as_ref() == Some(&problem) {
            return None;
        }
        self.told = Some(problem.clone());
        Some(problem)
    }

    /// When the next check is worth making.
    pub fn next_check(&self) -> Option<Instant> {
        let since = self.waiting_since?;
        let at = since + GRACE;
        // After the deadline, checks follow events; the loop's own timers
        // bring it back often enough.
        (self.told.is_none()).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: &str = "tcp://hub.lan:7750";

    #[test]
    fn nothing_is_said_within_the_grace() {
        let t0 = Instant::now();
        let mut w = LinkWatch::new(HUB, t0);
        assert_eq!(w.to_tell(t0 + GRACE - Duration::from_millis(1)), None);
        assert_eq!(w.next_check(), Some(t0 + GRACE));
        assert_eq!(
            w.to_tell(t0 + GRACE),
            Some(Problem::NothingListening { hub: HUB.into() })
        );
        assert_eq!(w.to_tell(t0 + GRACE * 2), None, "told once");
        assert_eq!(w.next_check(), None);
    }

    #[test]
    fn each_stage_names_its_own_problem() {
        let t0 = Instant::now();
        let late = t0 + GRACE;
        let case = |events: &[Seen]| {
            let mut w = LinkWatch::new(HUB, t0);
            for e in events {
                w.seen(e.clone(), t0);
            }
            w.problem(late)
        };
        let hub = HUB.to_string();
        assert_eq!(
            case(&[Seen::Unresolvable("no such host".into())]),
            Some(Problem::Unresolvable {
                host: "hub.lan".into(),
                why: "no such host".into()
            })
        );
        assert_eq!(
            case(&[Seen::Connected]),
            Some(Problem::NoHandshake { hub: hub.clone() })
        );
        assert_eq!(
            case(&[Seen::Connected, Seen::KeyRefused]),
            Some(Problem::KeyRefused { hub: hub.clone() })
        );
        assert_eq!(
            case(&[Seen::Connected, Seen::Handshake]),
            Some(Problem::NotWelcomed { hub: hub.clone() })
        );
        let why = "this key is enrolled as pi-2, not pi-1".to_string();
        assert_eq!(
            case(&[Seen::Handshake, Seen::Refusal(why.clone())]),
            Some(Problem::Refused { reason: why })
        );
        assert_eq!(case(&[Seen::Handshake, Seen::Welcome]), None);
        assert_eq!(
            case(&[
                Seen::Connected,
                Seen::HandshakeFailed,
                Seen::Disconnected,
                Seen::Connected,
                Seen::Disconnected
            ]),
            Some(Problem::NoHandshake { hub: hub.clone() }),
            "a hub that drops each handshake it cannot read (another hub's key)"
        );
    }

    #[test]
    fn what_the_hub_said_is_told_at_once() {
        let t0 = Instant::now();
        let mut w = LinkWatch::new(HUB, t0);
        w.seen(Seen::Connected, t0);
        assert_eq!(w.to_tell(t0), None, "connecting is not a problem yet");
        w.seen(Seen::KeyRefused, t0);
        assert_eq!(w.to_tell(t0), Some(Problem::KeyRefused { hub: HUB.into() }));
        assert_eq!(w.to_tell(t0 + GRACE), None, "told once");
        let why = "another agent is connected as pi-1".to_string();
        w.seen(Seen::Refusal(why.clone()), t0);
        assert_eq!(w.to_tell(t0), Some(Problem::Refused { reason: why }));
        w.seen(Seen::Welcome, t0);
        assert_eq!(w.problem(t0 + GRACE), None, "welcomed: no problem");
    }

    #[test]
    fn a_welcome_ends_the_episode_and_a_loss_starts_another() {
        let t0 = Instant::now();
        let mut w = LinkWatch::new(HUB, t0);
        w.seen(Seen::Handshake, t0);
        w.seen(Seen::Welcome, t0);
        assert_eq!(w.problem(t0 + GRACE * 10), None);
        assert_eq!(w.next_check(), None);
        let t1 = t0 + Duration::from_secs(60);
        w.seen(Seen::Disconnected, t1);
        assert_eq!(w.to_tell(t1 + GRACE - Duration::from_millis(1)), None);
        assert_eq!(
            w.to_tell(t1 + GRACE),
            Some(Problem::NothingListening { hub: HUB.into() })
        );
    }
}
