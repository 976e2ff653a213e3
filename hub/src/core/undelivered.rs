//! What the hub could not hand a device on one connection: its queue of
//! `[net] send_hwm` messages was full because it was not reading (a stuck
//! agent, a stalled link, or a peer that never reads). libzmq would drop
//! such messages without a word; the hub's telemetry ROUTER is mandatory,
//! so the driver hears of each and tells the core, which counts it
//! (`messages_undelivered`), says so when a device's episode begins (once
//! a minute at most) and when it ends, notes a dropped job on the job, and
//! sends a dropped configuration document again once the device reads. A dropped command is
//! answered at once ([`OperatorError::NotReading`]) rather than after its
//! timeout; see `commands.rs`.
//!
//! [`OperatorError::NotReading`]: fleetmq_protocol::OperatorError::NotReading

use std::collections::HashMap;

use fleetmq_protocol::route_device;
use tracing::{info, warn};

use super::{Core, Now};

/// How often the hub tells of one device not reading, at most: a device
/// that reads slowly fills and frees its queue many times a second.
const TELL_EVERY_MS: u64 = 60_000;

/// Devices whose messages were dropped, each with its episode.
#[derive(Debug, Default)]
pub(super) struct Undelivered {
    devices: HashMap<String, Episode>,
    /// Episodes not over yet.
    active: usize,
}

#[derive(Debug)]
struct Episode {
    /// Messages dropped since the episode began.
    dropped: u64,
    active: bool,
    /// Whether a configuration document was among them.
    config: bool,
    /// Whether this episode was told (else an earlier one was, lately).
    told: bool,
    /// When an episode of this device was last told.
    told_ms: u64,
}

/// An episode that is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ended {
    /// How many messages it dropped, if it was told (else an earlier
    /// episode was, lately, and this one goes unsaid).
    told: Option<u64>,
    /// Whether a configuration document was dropped.
    config: bool,
}

impl Undelivered {
    /// A message for `device` (`config`: a configuration document) was
    /// dropped at `now_ms`: whether to tell.
    fn dropped(&mut self, device: &str, config: bool, now_ms: u64) -> bool {
        let e = self.devices.entry(device.to_string()).or_insert(Episode {
            dropped: 0,
            active: false,
            config: false,
            told: false,
            told_ms: 0,
        });
        if e.active {
            e.dropped += 1;
            e.config |= config;
            return false;
        }
        self.active += 1;
        e.active = true;
        e.dropped = 1;
        e.config = config;
        e.told = e.told_ms == 0 || now_ms.saturating_sub(e.told_ms) >= TELL_EVERY_MS;
        if e.told {
            e.told_ms = now_ms.max(1);
        }
        e.told
    }

    /// A message reached `device`'s queue: the episode it ends, if one
    /// was going on.
    fn delivered(&mut self, device: &str) -> Option<Ended> {
        let e = self.devices.get_mut(device).filter(|e| e.active)?;
        e.active = false;
        self.active -= 1;
        Some(Ended {
            told: e.told.then_some(e.dropped),
            config: std::mem::take(&mut e.config),
        })
    }

    /// `device` went offline: forgotten.
    fn forget(&mut self, device: &str) {
        if self.devices.remove(device).is_some_and(|e| e.active) {
            self.active -= 1;
        }
    }
}

/// What a message the driver could not send to a device carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carrying {
    /// The downstream kind's name (`Ack`, `Work`, `Announcement`, ...).
    pub kind: &'static str,
    /// For a job (`Work`): its id and attempt.
    pub job: Option<(u64, u32)>,
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
        if let Some((id, attempt)) = what.job {
            let note = format!(
                "attempt {attempt} was not delivered: {device} was not reading (its queue of {queue} messages was full); handed out again when its lease runs out"
            );
            warn!(job = id, attempt, device, "{note}");
            if let Err(e) = self.store.note_job(id, &note, now.wall_ms) {
                warn!(job = id, error = %e, "could not note an undelivered job");
            }
        }
        let config = what.kind == "Desired";
        if self.undelivered.dropped(&device, config, now.mono_ms) {
            warn!(
                device,
                kind = what.kind,
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
        if let Some(dropped) = ended.told {
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
        self.undelivered.active > 0
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
        assert_eq!(u.active, 1);
        let ended = Ended {
            told: Some(3),
            config: true,
        };
        assert_eq!(u.delivered("pi-a"), Some(ended));
        assert_eq!(u.delivered("pi-a"), None, "over already");
        assert_eq!(u.active, 0);
        // The next episode dropped no configuration.
        u.dropped("pi-a", false, 2_000);
        assert_eq!(u.delivered("pi-a").map(|e| e.config), Some(false));
    }

    #[test]
    fn a_device_that_fills_and_frees_its_queue_is_told_once_a_minute() {
        let mut u = Undelivered::default();
        assert!(u.dropped("pi-a", false, 1_000));
        assert_eq!(u.delivered("pi-a").and_then(|e| e.told), Some(1));
        // Full again within the minute: counted, not told, nor its end.
        assert!(!u.dropped("pi-a", false, 2_000));
        assert_eq!(u.active, 1);
        let ended = Ended {
            told: None,
            config: false,
        };
        assert_eq!(u.delivered("pi-a"), Some(ended));
        assert!(u.dropped("pi-a", false, 1_000 + TELL_EVERY_MS));
        // Another device is its own episode.
        assert!(u.dropped("pi-b", false, 2_000));
        assert_eq!(u.active, 2);
    }

    #[test]
    fn a_device_gone_offline_mid_episode_is_forgotten() {
        let mut u = Undelivered::default();
        u.dropped("pi-a", false, 1_000);
        u.forget("pi-a");
        assert_eq!(u.active, 0);
        assert!(u.devices.is_empty());
        u.forget("pi-a");
        assert_eq!(u.active, 0);
        // Back and not reading again: told again.
        assert!(u.dropped("pi-a", false, 2_000));
    }
}
