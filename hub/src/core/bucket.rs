//! A token bucket on the monotonic clock: what the per-device message rate
//! ([`super::admission`]) and the per-device budgets in work
//! ([`super::budgets`]) are each made of.

/// Tokens a second, and most tokens a bucket holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_s: f64,
    burst: f64,
}

impl Rate {
    /// `per_s` a second (0: off, every take succeeds) in bursts of `burst`.
    pub fn new(per_s: u32, burst: u32) -> Rate {
        Rate {
            per_s: f64::from(per_s),
            burst: f64::from(burst),
        }
    }

    pub fn is_off(&self) -> bool {
        self.per_s <= 0.0
    }

    /// How long an empty bucket takes to fill: an idle bucket older than
    /// this is full, so it can be forgotten.
    pub fn fill_ms(&self) -> u64 {
        if self.is_off() {
            0
        } else {
            (self.burst / self.per_s * 1000.0) as u64
        }
    }
}

/// One bucket: its tokens when it was last used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at_ms: u64,
}

impl Bucket {
    /// A full bucket at `now_ms`.
    pub fn full(rate: Rate, now_ms: u64) -> Bucket {
        Bucket {
            tokens: rate.burst,
            at_ms: now_ms,
        }
    }

    /// When it was last used.
    pub fn at_ms(&self) -> u64 {
        self.at_ms
    }

    /// Adds what `rate` gave it since it was last used, up to the burst.
    pub fn refill(&mut self, rate: Rate, now_ms: u64) {
        let elapsed_s = now_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed_s * rate.per_s).min(rate.burst);
        self.at_ms = now_ms;
    }

    /// How long until `want` tokens are there, in ms (rounded up); 0 if
    /// they are now, or the rate is off.
    pub fn wait_ms(&self, rate: Rate, want: f64) -> u64 {
        if rate.is_off() || want <= self.tokens {
            0
        } else {
            ((want - self.tokens) / rate.per_s * 1000.0).ceil() as u64
        }
    }

    /// Takes `n` tokens (call after [`Bucket::wait_ms`] said 0).
    pub fn spend(&mut self, rate: Rate, n: f64) {
        if !rate.is_off() {
            self.tokens -= n;
        }
    }

    /// Refills, then takes `n` tokens if they are there: `Err` with how
    /// long until they would be, and nothing taken.
    pub fn take(&mut self, rate: Rate, n: f64, now_ms: u64) -> Result<(), u64> {
        self.refill(rate, now_ms);
        match self.wait_ms(rate, n) {
            0 => {
                self.spend(rate, n);
                Ok(())
            }
            wait => Err(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_serves_its_burst_then_its_rate_and_says_how_long() {
        let rate = Rate::new(10, 5);
        let mut b = Bucket::full(rate, 0);
        for _ in 0..5 {
            assert_eq!(b.take(rate, 1.0, 0), Ok(()));
        }
        assert_eq!(b.take(rate, 1.0, 0), Err(100));
        assert_eq!(
            b.take(rate, 2.0, 150),
            Err(50),
            "nothing taken when refused"
        );
        assert_eq!(b.take(rate, 2.0, 200), Ok(()));
        assert_eq!(rate.fill_ms(), 500);
        let off = Rate::new(0, 5);
        assert_eq!(Bucket::full(off, 0).take(off, 1e9, 0), Ok(()));
    }
}
