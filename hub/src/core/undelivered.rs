//! What the hub could not hand a device on one connection: its queue of
//! `[net] send_hwm` messages was full because it was not reading (a stuck
//! agent, a stalled link, or a peer that never reads). libzmq would drop
//! such messages without a word; the hub's telemetry ROUTER is mandatory,
//! so the driver hears of each and tells the core, which counts it
//! (`messages_undelivered`), says so when a device's episode begins (once
//! a minute at most) and when it ends, notes a dropped job on the job, and
//! sends a dropped configuration document again once the device reads. A
//! dropped command is answered at once ([`OperatorError::NotReading`])
//! rather than after its timeout; see `commands.rs`.
//!
//! [`OperatorError::NotReading`]: fleetmq_protocol::OperatorError::NotReading

use std::collections::HashMap;

use fleetmq_protocol::{Downstream, route_device};
use tracing::{info, warn};

use super::{Core, Now};

/// How often the hub tells of one device not reading, at most: a device
/// that reads slowly fills and frees its queue many times a second.
const TELL_EVERY_MS: u64 = 60_000;

/// The episodes going on, and when each device's was last told.
#[derive(Debug, Default)]
pub(super) struct Undelivered {
    /// Devices whose messages are being dropped now.
    going_on: HashMap<String, Episode>,
    /// When an episode of each device was last told (kept until the
    /// device goes offline, so a slow reader is told once a minute).
    told_ms: HashMap<String, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Episode {
    /// Messages dropped since it began.
    dropped: u64,
    /// Whether a configuration document was among them.
    config: bool,
    /// Whether it was told (else an earlier one was, lately).
    told: bool,
}

/// What a message the driver could not send to a device carried, as far
/// as what follows from dropping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrying {
    /// A job (`Work`): its attempt is lost.
    Job { id: u64, attempt: u32 },
    /// A configuration document (`Desired`): sent again once it reads.
    Config,
    /// Anything else, by its kind's name (`Ack`, `Announcement`, ...).
    Other(&'static str),
}

impl Carrying {
    /// What `msg` carries.
    pub fn of(msg: &Downstream) -> Carrying {
        match msg {
            Downstream::Work(job) => Carrying::Job {
                id: job.id,
                attempt: job.attempt,
            },
            Downstream::Desired(_) => Carrying::Config,
            other => Carrying::Other(other.name()),
        }
    }

    /// The kind's name, for the log.
    fn kind(self) -> &'static str {
        match self {
            Carrying::Job { .. } => "Work",
            Carrying::Config => "Desired",
            Carrying::Other(kind) => kind,
        }
    }
}

impl Undelivered {
    /// A message for `device` (`config`: a configuration document) was
    /// dropped at `now_ms`: whether to tell.
    fn dropped(&mut self, device: &str, config: bool, now_ms: u64) -> bool {
        if let Some(e) = self.going_on.get_mut(device) {
            e.dropped += 1;
            e.config |= config;
            return false;
        }
        let told = self
            .told_ms
            .get(device)
            .is_none_or(|&at| now_ms.saturating_sub(at) >= TELL_EVERY_MS);
        if told {
            self.told_ms.insert(device.to_string(), now_ms);
        }
        let episode = Episode {
            dropped: 1,
            config,
            told,
        };
        self.going_on.insert(device.to_string(), episode);
        told
    }

    /// A message reached `device`'s queue: the episode it ends, if one
    /// was going on.
    fn delivered(&mut self, device: &str) -> Option<Episode> {
        self.going_on.remove(device)
    }

    /// Whether some device's messages are being dropped.
    fn any(&self) -> bool {
        !self.going_on.is_empty()
    }

    /// `device` went offline: forgotten.
    fn forget(&mut self, device: &str) {
        self.going_on.remove(device);
        self.told_ms.remove(device);
    }
}

impl Core {
    /// The driver could not send a message to `route`: the device's queue
    /// is full. Counted, told once per episode, and noted on a job.
    pub fn undelivered(&mut self, route: &[u8], what: Carrying, now: Now) {
        self.counters.messages_undelivered += 1;
        let device = match route_device(route) {
            Ok(d) => d.to_string(),
            Err(_) => String::from_utf8_lossy(route).into_owned(),
        };
        let queue = self.config.net.send_hwm;
        if let Carrying::Job { id, attempt } = what {
            let note = format!(
                "attempt {attempt} was not delivered: {device} was not reading (its queue of {queue} messages was full); handed out again when its lease runs out"
            );
            warn!(job = id, attempt, device, "{note}");
            if let Err(e) = self.store.note_job(id, &note, now.wall_ms) {
                warn!(job = id, error = %e, "could not note an undelivered job");
            }
        }
        let config = what == Carrying::Config;
        if self.undelivered.dropped(&device, config, now.mono_ms) {
            warn!(
                device,
                kind = what.kind(),
                queue,
                "the device is not reading what the hub sends and its queue is full: acks, broadcasts, jobs, commands and configuration for it are dropped until it reads again (it resends the batches not acked; commands fail at once; a job waits for its lease to run out; its configuration is sent again once it reads). Look at the device's link and agent"
            );
        }
    }

    /// A message reached `route`'s queue: if its device's were being
    /// dropped, that is over: the log says how many were, and a dropped
    /// configuration document is sent again if the device is behind.
    pub fn delivered(&mut self, route: &[u8]) {
        let Ok(device) = route_device(route) else {
            return;
        };
        let Some(ended) = self.undelivered.delivered(device) else {
            return;
        };
        if ended.told {
            let dropped = ended.dropped;
            info!(
                device,
                dropped, "the device reads again; messages for it are delivered again"
            );
        }
        if ended.config {
            match self.store.config_applied_by(device) {
                Ok((applied, _)) => self.send_config_if_behind(device, applied),
                Err(e) => {
                    warn!(device, error = %e, "could not read the configuration a device applied")
                }
            }
        }
    }

    /// Whether some device's messages are being dropped: only then need
    /// the driver report a message that was delivered.
    pub fn undelivering(&self) -> bool {
        self.undelivered.any()
    }

    /// A device that went offline: its episode, if any, ends with it.
    pub(super) fn forget_undelivered(&mut self, device: &str) {
        self.undelivered.forget(device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_episode_is_told_when_it_begins_and_when_it_ends() {
        let mut u = Undelivered::default();
        assert!(u.dropped("pi-a", false, 1_000));
        assert!(!u.dropped("pi-a", true, 1_001), "once an episode");
        assert!(!u.dropped("pi-a", false, 1_002));
        assert_eq!(u.going_on.len(), 1);
        let ended = Episode {
            dropped: 3,
            config: true,
            told: true,
        };
        assert_eq!(u.delivered("pi-a"), Some(ended));
        assert_eq!(u.delivered("pi-a"), None, "over already");
        assert!(!u.any());
        // The next episode dropped no configuration.
        u.dropped("pi-a", false, 2_000);
        assert_eq!(u.delivered("pi-a").map(|e| e.config), Some(false));
    }

    #[test]
    fn a_device_that_fills_and_frees_its_queue_is_told_once_a_minute() {
        let mut u = Undelivered::default();
        assert!(u.dropped("pi-a", false, 1_000));
        let once = u.delivered("pi-a").unwrap();
        assert_eq!((once.told, once.dropped), (true, 1));
        // Full again within the minute: counted, not told, nor its end.
        assert!(!u.dropped("pi-a", false, 2_000));
        assert_eq!(u.going_on.len(), 1);
        let ended = Episode {
            dropped: 1,
            config: false,
            told: false,
        };
        assert_eq!(u.delivered("pi-a"), Some(ended));
        assert!(u.dropped("pi-a", false, 1_000 + TELL_EVERY_MS));
        // Another device is its own episode.
        assert!(u.dropped("pi-b", false, 2_000));
        assert_eq!(u.going_on.len(), 2);
    }

    #[test]
    fn what_a_message_carries_decides_what_follows_its_drop() {
        let ack = Downstream::Ack(fleetmq_protocol::Ack { seq: 1 });
        assert_eq!(Carrying::of(&ack), Carrying::Other("Ack"));
        let doc = fleetmq_protocol::ConfigDoc {
            version: 1,
            values: vec![],
        };
        let desired = Downstream::Desired(fleetmq_protocol::Desired(doc));
        assert_eq!(Carrying::of(&desired).kind(), "Desired");
        assert_eq!(Carrying::of(&desired), Carrying::Config);
    }

    #[test]
    fn a_device_gone_offline_mid_episode_is_forgotten() {
        let mut u = Undelivered::default();
        u.dropped("pi-a", false, 1_000);
        u.forget("pi-a");
        assert!(!u.any());
        assert!(u.going_on.is_empty() && u.told_ms.is_empty());
        u.forget("pi-a");
        assert!(!u.any());
        // Back and not reading again: told again.
        assert!(u.dropped("pi-a", false, 2_000));
    }
}
