//! The periodic work, done when it is due: sampling, host metrics, the
//! device's facts, StatsD, log files,
//! the spool's sync, redials, heartbeats, the batch flush and resends.

use std::time::{Duration, Instant};

use fleetmq_protocol::{Heartbeat, Upstream};
use tracing::{debug, info, warn};

use super::{Agent, Error, zmq_error};

/// Periodic work due within this of a wake-up is done in it: sampling, host
/// metrics, StatsD, the spool's sync, heartbeats and the batch flush each
/// keep their own interval, and they drift apart by milliseconds; without
/// it each woke the agent on its own (five wake-ups a second at 1 Hz where
/// two do: one for the work, one for the ack).
const TIMER_SLACK: Duration = Duration::from_millis(10);

/// A step of the system clock (an NTP sync, `date -s`) at least this big
/// since our Hello is told with a new one: the hub measures how far this
/// device's clock is from its own from that Hello's `started_ms`. A slew
/// moves the monotonic clock alike and is no step.
const CLOCK_STEP_MS: u64 = 1_000;

/// How far the clock stepped (ms, forward when positive), when a Hello
/// said `said` as the agent's start and the clock now says `now`.
fn clock_step(said: u64, now: u64) -> Option<i64> {
    let step = i64::try_from(now).unwrap_or(i64::MAX) - i64::try_from(said).unwrap_or(i64::MAX);
    (step.unsigned_abs() >= CLOCK_STEP_MS).then_some(step)
}

impl Agent {
    /// When this agent started, by the system clock as it reads now: it
    /// moves only when the clock steps. Each Hello says it.
    pub(super) fn started_ms(&self) -> u64 {
        fleetmq_net::now_ms().saturating_sub(self.started.elapsed().as_millis() as u64)
    }

    /// Does the periodic work that is due (or due within [`TIMER_SLACK`]).
    pub(super) fn timers(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        let soon = now + TIMER_SLACK;
        if let Some(problem) = self.link.to_tell(now) {
            warn!("not linked to the hub: {problem}");
        }
        if soon >= self.next_sample {
            self.sample();
            self.next_sample = now + Duration::from_millis(self.cfg.telemetry.sample_interval_ms);
        }
        if self.cfg.host.interval_ms > 0 && soon >= self.next_host {
            self.sample_host();
            self.next_host = now + Duration::from_millis(self.cfg.host.interval_ms);
        }
        // Read whether connected or not; a change goes up at once when it
        // is, else with the next Hello's Offer.
        if self.facts.refresh_if_due(now) && self.connected {
            info!("this device's facts changed (an address, the OS); telling the hub");
            self.send_offer();
        }
        if self.ingest.statsd_due().is_some_and(|t| soon >= t) {
            self.flush_statsd();
        }
        if self.reading_logs() && soon >= self.next_logs {
            self.read_logs();
            self.next_logs = now + Duration::from_millis(self.cfg.logs.poll_ms);
        }
        // Early is safe: a sync sooner than due only shortens what a power
        // cut could take.
        if let Err(e) = self.outbox.sync_if_due(soon) {
            warn!(error = %e, "syncing the spool to disk");
        }
        if self.redial.take_due(now) {
            // libzmq gives up on an endpoint whose handshake was refused;
            // knock again, as a new connection.
            let _ = self.dealer.disconnect(&self.hub);
            self.dealer
                .connect(&self.hub)
                .map_err(zmq_error(format!("connecting to {}", self.hub)))?;
        }
        if self.failover.take_due(now) {
            self.move_hub()?;
        }
        if !self.connected {
            return Ok(());
        }
        if let Some(step) = self
            .said_started_ms
            .and_then(|said| clock_step(said, self.started_ms()))
        {
            info!(
                step_ms = step,
                "the system clock stepped since our Hello; saying Hello again, so that the hub measures this device's clock anew"
            );
            self.said_started_ms = None;
            self.need_hello = Some(now);
        }
        if self.need_hello.is_some_and(|t| now >= t) {
            self.send_hello();
        }
        if soon >= self.next_heartbeat {
            self.heartbeats += 1;
            let hb = Heartbeat {
                uptime_ms: self.started.elapsed().as_millis() as u64,
            };
            self.send_up(Upstream::Heartbeat(hb));
            self.next_heartbeat =
                now + Duration::from_millis(u64::from(self.cfg.presence.heartbeat_ms));
        }
        // Overdue batches first: after a reconnect the hub gets the
        // numbers in order, the oldest before a batch packed now.
        for (seq, frame) in self.outbox.resends(now) {
            debug!(seq, "resending unacked batch");
            self.send_frame(seq, &frame);
        }
        if self.outbox.flush_due(soon) && self.pack_blocked_until.is_none_or(|t| now >= t) {
            self.pack_and_send(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_of_a_second_or_more_is_told_a_tick_s_jitter_is_not() {
        let said = 1_700_000_000_000;
        assert_eq!(clock_step(said, said), None);
        assert_eq!(clock_step(said, said + 999), None, "rounding and jitter");
        assert_eq!(clock_step(said, said - 999), None);
        assert_eq!(
            clock_step(said, said + 3 * 86_400_000),
            Some(3 * 86_400_000),
            "NTP after a Pi's boot"
        );
        assert_eq!(clock_step(said, said - 1_000), Some(-1_000), "set back");
    }
}
