//! How far each device's clock is from the hub's. A Raspberry Pi has no
//! battery-backed clock: it boots with the time it last shut down, and one
//! that never reaches an NTP server stays wrong, so its samples land at the
//! wrong place in every chart and time range, and nothing else says so.
//!
//! An agent that says Hello again whenever its clock steps
//! (`Abilities::hello_on_clock_step`) has its start time in that Hello on
//! the clock it stamps samples with; each Heartbeat then carries its
//! uptime on a clock that never steps. Their sum is the device's clock
//! when it sent the heartbeat, and the difference from the hub's clock at
//! arrival is the offset, less the time the heartbeat took on the way.
//! The largest of the last few estimates (the least delayed) is kept.

use std::collections::{HashMap, VecDeque};

/// Estimates kept per device: the largest of them is the offset.
const WINDOW: usize = 8;

/// An offset at least this large is said: in the hub's log (once a
/// Hello), under `devices`, on the console.
pub const SAY_OFF_MS: u64 = 60_000;

#[derive(Debug, Default)]
struct Clock {
    /// `started_ms` of the device's last Hello.
    started_ms: u64,
    /// Its agent says Hello again when its clock steps.
    trusted: bool,
    /// The latest estimates, since that Hello.
    estimates: VecDeque<i64>,
    /// The offset as last measured (kept while offline).
    offset_ms: Option<i64>,
    /// An offset past [`SAY_OFF_MS`] was logged since the last Hello.
    said: bool,
}

/// Every device's clock, by device id.
#[derive(Debug, Default)]
pub(super) struct Clocks {
    devices: HashMap<String, Clock>,
}

impl Clocks {
    /// A Hello: the start time on the device's clock as it reads now.
    pub(super) fn hello(&mut self, device: &str, started_ms: u64) {
        let c = self.devices.entry(device.to_string()).or_default();
        c.started_ms = started_ms;
        c.estimates.clear();
        c.said = false;
    }

    /// The device's Offer said whether its agent says Hello again when
    /// its clock steps: only then is its start time to be trusted.
    pub(super) fn offered(&mut self, device: &str, hello_on_clock_step: bool) {
        let c = self.devices.entry(device.to_string()).or_default();
        c.trusted = hello_on_clock_step;
        if !c.trusted {
            c.offset_ms = None;
        }
    }

    /// A Heartbeat with `uptime_ms` arrived at `wall_ms` (the hub's
    /// clock). Returns the offset when it has newly grown past
    /// [`SAY_OFF_MS`] since the last Hello, to be said once.
    pub(super) fn heartbeat(&mut self, device: &str, uptime_ms: u64, wall_ms: u64) -> Option<i64> {
        let c = self.devices.get_mut(device).filter(|c| c.trusted)?;
        let theirs = i64::try_from(c.started_ms.saturating_add(uptime_ms)).ok()?;
        let estimate = theirs.saturating_sub(i64::try_from(wall_ms).ok()?);
        if c.estimates.len() == WINDOW {
            c.estimates.pop_front();
        }
        c.estimates.push_back(estimate);
        let offset = c.estimates.iter().copied().max()?;
        c.offset_ms = Some(offset);
        let off = offset.unsigned_abs() >= SAY_OFF_MS;
        (off && !std::mem::replace(&mut c.said, true)).then_some(offset)
    }

    /// The device's offset, if measured (ahead when positive).
    pub(super) fn offset(&self, device: &str) -> Option<i64> {
        self.devices.get(device).and_then(|c| c.offset_ms)
    }

    /// A device forgotten.
    pub(super) fn forget(&mut self, device: &str) {
        self.devices.remove(device);
    }
}

/// An offset in words, to go before "the hub's": `3 d 2 h behind`,
/// `4 min 10 s ahead of`, `in step with`.
pub fn words(offset_ms: i64) -> String {
    let ms = offset_ms.unsigned_abs();
    if ms < 1_000 {
        return "in step with".into();
    }
    let s = ms / 1_000;
    let amount = match (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60) {
        (0, 0, 0, s) => format!("{s} s"),
        (0, 0, m, s) => format!("{m} min {s} s"),
        (0, h, m, _) => format!("{h} h {m} min"),
        (d, h, _, _) => format!("{d} d {h} h"),
    };
    let way = if offset_ms > 0 { "ahead of" } else { "behind" };
    format!("{amount} {way}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB: u64 = 1_800_000_000_000;

    #[test]
    fn the_least_delayed_heartbeat_gives_the_offset() {
        let mut c = Clocks::default();
        // Started 10 s ago by its clock, which is 3 days behind.
        let behind = 3 * 86_400_000;
        c.hello("pi", HUB - behind - 10_000);
        assert_eq!(
            c.heartbeat("pi", 10_000, HUB),
            None,
            "no Offer yet: not trusted"
        );
        assert_eq!(c.offset("pi"), None);
        c.offered("pi", true);
        let said = c.heartbeat("pi", 10_000, HUB + 40);
        assert_eq!(
            said,
            Some(-(behind as i64) - 40),
            "said once, past a minute"
        );
        // Later heartbeats, one delayed 900 ms on the way: the least
        // delayed is kept.
        assert_eq!(c.heartbeat("pi", 11_000, HUB + 1_900), None);
        assert_eq!(c.heartbeat("pi", 12_000, HUB + 2_005), None);
        assert_eq!(c.offset("pi"), Some(-(behind as i64) - 5));

        // NTP steps its clock: the agent says Hello again, and the offset
        // follows at the next heartbeat.
        c.hello("pi", HUB - 10_000);
        assert_eq!(c.heartbeat("pi", 13_000, HUB + 3_010), None);
        assert_eq!(c.offset("pi"), Some(-10));
        assert_eq!(words(-10), "in step with");
    }

    #[test]
    fn an_agent_that_does_not_say_hello_on_a_step_is_not_measured() {
        let mut c = Clocks::default();
        c.hello("old", HUB);
        c.offered("old", false);
        assert_eq!(c.heartbeat("old", 5_000, HUB + 5_000), None);
        assert_eq!(c.offset("old"), None);
    }

    #[test]
    fn offsets_read_in_words() {
        assert_eq!(
            words(-(3 * 86_400_000 + 2 * 3_600_000 + 5)),
            "3 d 2 h behind"
        );
        assert_eq!(words(250_000), "4 min 10 s ahead of");
        assert_eq!(words(-7_200_000), "2 h 0 min behind");
        assert_eq!(words(-42_000), "42 s behind");
    }
}
