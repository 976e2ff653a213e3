//! What one device may cost the hub, counted in work rather than messages:
//! records and bytes a second (each with a burst) and distinct series.
//!
//! A batch over a rate is answered `Throttled` with how long until the
//! budget has room; the agent keeps it and sends it again then. A batch
//! that would take the device past its distinct-series budget can never be
//! stored and is `Rejected`. Either way it is counted, never acked. Rates
//! run on the monotonic clock.

use std::collections::HashMap;

use fleetmq_protocol::{Batch, Rejected, Throttled};
use tracing::{info, warn};

use super::bucket::{Bucket, Rate};
use super::{Core, Now};
use crate::config::Limits;

/// Devices whose budget episode is logged at most; past it, only counted.
const LOGGED_MAX: usize = 10_000;

#[derive(Debug)]
struct Spend {
    records: Bucket,
    bytes: Bucket,
    /// The device was told to wait until then, and why.
    held: Option<(u64, String)>,
}

/// Why a batch waits: which budget, its figures, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    pub retry_after_ms: u32,
    pub reason: String,
}

/// Every device's spending against [`Limits`].
#[derive(Debug)]
pub struct Budgets {
    limits: Limits,
    spent: HashMap<String, Spend>,
    /// Devices in a throttled episode (logged once each).
    throttled: std::collections::HashSet<String>,
}

impl Budgets {
    pub fn new(limits: Limits) -> Budgets {
        Budgets {
            limits,
            spent: HashMap::new(),
            throttled: Default::default(),
        }
    }

    /// Charges a batch of `records` and `bytes` to `device` at `now_ms`
    /// (monotonic). It is taken from both rates only if both have room;
    /// otherwise nothing is taken and the answer says how long to wait.
    pub fn charge(
        &mut self,
        device: &str,
        records: usize,
        bytes: usize,
        now_ms: u64,
    ) -> Result<(), Throttle> {
        let l = &self.limits;
        let r_rate = Rate::new(l.device_records_per_s, l.device_records_burst);
        let b_rate = Rate::new(l.device_bytes_per_s, l.device_bytes_burst);
        let spend = match self.spent.get_mut(device) {
            Some(s) => s,
            None => self.spent.entry(device.to_string()).or_insert(Spend {
                records: Bucket::full(r_rate, now_ms),
                bytes: Bucket::full(b_rate, now_ms),
                held: None,
            }),
        };
        spend.records.refill(r_rate, now_ms);
        spend.bytes.refill(b_rate, now_ms);
        let (records, bytes) = (records as f64, bytes as f64);
        // Both or neither: a batch is taken from each budget only if each
        // has room for it.
        let r_wait = spend.records.wait_ms(r_rate, records);
        let b_wait = spend.bytes.wait_ms(b_rate, bytes);
        if r_wait == 0 && b_wait == 0 {
            spend.records.spend(r_rate, records);
            spend.bytes.spend(b_rate, bytes);
            return Ok(());
        }
        let reason = if r_wait >= b_wait {
            format!(
                "{records} records is over this device's budget of {} records a second (burst {}; limits.device_records_per_s)",
                l.device_records_per_s, l.device_records_burst
            )
        } else {
            format!(
                "{bytes} bytes is over this device's budget of {} bytes a second (burst {}; limits.device_bytes_per_s)",
                l.device_bytes_per_s, l.device_bytes_burst
            )
        };
        let wait = r_wait.max(b_wait).min(u64::from(u32::MAX));
        spend.held = Some((now_ms + wait, reason.clone()));
        Err(Throttle {
            retry_after_ms: wait as u32,
            reason,
        })
    }

    /// If `device` was told to wait and that time has not come, what is
    /// left of the wait: its batches until then are answered without
    /// being read, so a device that does not wait costs the hub little.
    pub fn held(&self, device: &str, now_ms: u64) -> Option<Throttle> {
        let (until, reason) = self.spent.get(device)?.held.as_ref()?;
        (*until > now_ms).then(|| Throttle {
            retry_after_ms: (until - now_ms).min(u64::from(u32::MAX)) as u32,
            reason: reason.clone(),
        })
    }

    /// Forgets devices whose buckets have long been full, so the map does
    /// not grow with every id ever seen.
    pub fn forget_idle(&mut self, now_ms: u64) {
        let l = &self.limits;
        let idle_ms = Rate::new(l.device_records_per_s, l.device_records_burst)
            .fill_ms()
            .max(Rate::new(l.device_bytes_per_s, l.device_bytes_burst).fill_ms())
            .max(1000);
        self.spent.retain(|_, s| {
            now_ms.saturating_sub(s.records.at_ms().max(s.bytes.at_ms())) <= idle_ms
        });
    }
}

impl Core {
    /// Whether `device`'s `batch` (`bytes` on the wire) is within its
    /// budgets. If not, the agent is told (`Rejected` or `Throttled`, with
    /// the batch's number and why) and it is counted.
    pub(super) fn within_budget(
        &mut self,
        device: &str,
        batch: &Batch,
        bytes: usize,
        now: Now,
    ) -> bool {
        let limit = self.budgets.limits.device_series as usize;
        if limit > 0 {
            let new = self.latest.unknown_series(device, &batch.names);
            let known = self.latest.series_count(device);
            if new > 0 && known + new > limit {
                self.counters.batches_rejected += 1;
                let reason = format!(
                    "batch {} refused: it would take this device to {} distinct series, over its budget of {limit} (limits.device_series)",
                    batch.seq,
                    known + new
                );
                warn!(device, %reason, "batch rejected");
                let seq = batch.seq;
                self.send_down(device, Rejected { seq, reason }.into());
                return false;
            }
        }
        let b = &mut self.budgets;
        match b.charge(device, batch.record_count(), bytes, now.mono_ms) {
            Ok(()) => {
                if b.throttled.remove(device) {
                    info!(device, "device back within its budgets");
                }
                true
            }
            Err(t) => {
                self.throttle(device, batch.seq, t);
                false
            }
        }
    }

    /// Batch `seq` of `device` waits: the agent is told, and it is counted.
    pub(super) fn throttle(&mut self, device: &str, seq: u64, t: Throttle) {
        let b = &mut self.budgets;
        if b.throttled.len() < LOGGED_MAX && b.throttled.insert(device.to_string()) {
            warn!(device, reason = %t.reason, "device over its budget; its batches wait (told Throttled, not acked)");
        }
        self.hold_back(device, seq, t);
    }

    /// Tells `device` that batch `seq` was not stored and when to send it
    /// again, and counts it: over its budget, or a store that cannot be
    /// written now.
    pub(super) fn hold_back(&mut self, device: &str, seq: u64, t: Throttle) {
        self.counters.batches_throttled += 1;
        let msg = Throttled {
            seq,
            retry_after_ms: t.retry_after_ms,
            reason: t.reason,
        };
        self.send_down(device, msg.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            device_records_per_s: 1_000,
            device_records_burst: 20_000,
            device_bytes_per_s: 100_000,
            device_bytes_burst: 1_000_000,
            device_series: 100,
        }
    }

    #[test]
    fn a_burst_is_served_then_the_rate_and_the_wait_is_exact() {
        let mut b = Budgets::new(limits());
        assert_eq!(b.charge("pi", 20_000, 10, 0), Ok(()));
        let t = b.charge("pi", 500, 10, 0).unwrap_err();
        assert_eq!(t.retry_after_ms, 500);
        assert!(t.reason.contains("1000 records a second"), "{}", t.reason);
        // Until then the device is held, with what is left of the wait.
        assert_eq!(b.held("pi", 100).map(|t| t.retry_after_ms), Some(400));
        assert_eq!(b.held("pi-2", 100), None);
        // Half a second later there is room for exactly 500.
        assert_eq!(b.charge("pi", 500, 10, 499).unwrap_err().retry_after_ms, 1);
        assert!(b.held("pi", 499).is_some());
        assert_eq!(b.held("pi", 500), None, "the wait it was told is over");
        assert_eq!(b.charge("pi", 500, 10, 500), Ok(()));
        // Another device has its own budget.
        assert_eq!(b.charge("pi-2", 20_000, 10, 500), Ok(()));
    }

    #[test]
    fn bytes_have_their_own_budget_and_nothing_is_taken_when_refused() {
        let mut b = Budgets::new(limits());
        assert_eq!(b.charge("pi", 1, 1_000_000, 0), Ok(()));
        let t = b.charge("pi", 1, 50_000, 0).unwrap_err();
        assert_eq!(t.retry_after_ms, 500);
        assert!(t.reason.contains("bytes a second"), "{}", t.reason);
        // The refused batch took no records.
        assert_eq!(b.charge("pi", 19_999, 0, 0), Ok(()));
    }

    #[test]
    fn a_rate_of_0_is_off_and_idle_devices_are_forgotten() {
        let mut b = Budgets::new(Limits {
            device_records_per_s: 0,
            device_bytes_per_s: 0,
            ..limits()
        });
        for _ in 0..10 {
            assert_eq!(b.charge("pi", 1_000_000, 1 << 30, 0), Ok(()));
        }
        let mut b = Budgets::new(limits());
        b.charge("pi", 1, 1, 0).unwrap();
        b.forget_idle(20_000);
        assert_eq!(b.spent.len(), 1, "refilling for 20 s");
        b.forget_idle(20_001);
        assert!(b.spent.is_empty());
    }
}
