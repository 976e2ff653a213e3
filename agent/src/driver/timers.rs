//! The periodic work, done when it is due: sampling, host metrics, StatsD,
//! log files,
//! the spool's sync, redials, heartbeats, the batch flush and resends.

use std::time::{Duration, Instant};

use fleetmq_protocol::{Heartbeat, Upstream};
use tracing::{debug, warn};

use super::{Agent, Error, zmq_error};

/// Periodic work due within this of a wake-up is done in it: sampling, host
/// metrics, StatsD, the spool's sync, heartbeats and the batch flush each
/// keep their own interval, and they drift apart by milliseconds; without
/// it each woke the agent on its own (five wake-ups a second at 1 Hz where
/// two do: one for the work, one for the ack).
const TIMER_SLACK: Duration = Duration::from_millis(10);

impl Agent {
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
