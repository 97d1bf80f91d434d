//! Reconnect delays: exponential from a floor to a cap, with a jitter drawn
//! from a seeded generator so that a test clock sees the same delays every
//! run.

use std::time::Duration;

#[derive(Debug, Clone)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    /// Failed attempts since the last good connection.
    failures: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The delay before the next attempt: `min * 2^failures`, capped at
    /// `max`, less up to a quarter (jitter, so that many leaves that lost
    /// one hub do not all return at once).
    pub(super) fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(20)).unwrap_or(u32::MAX);
        let delay = self.min.saturating_mul(factor).min(self.max);
        self.failures = self.failures.saturating_add(1);
        let jitter_permille = self.rng.u32(0..250);
        delay.saturating_sub(delay * jitter_permille / 1000)
    }

    /// After a connection that completed its handshake.
    pub(super) fn reset(&mut self) {
        self.failures = 0;
    }
}
