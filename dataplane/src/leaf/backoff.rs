//! Reconnect delays: exponential from a floor to a cap, with a jitter drawn
//! from a seeded generator so that a test clock sees the same delays every
//! run.

use std::time::Duration;

/// SplitMix64: a tiny generator; jitter and loop-detection ids need spread,
/// not secrecy.
#[derive(Debug, Clone)]
pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    pub(super) fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[derive(Debug, Clone)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    /// Failed attempts since the last good connection.
    failures: u32,
    rng: SplitMix64,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            failures: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// The delay before the next attempt: `min * 2^failures`, capped at
    /// `max`, less up to a quarter (jitter, so that many leaves that lost
    /// one hub do not all return at once).
    pub(super) fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(20)).unwrap_or(u32::MAX);
        let delay = self.min.saturating_mul(factor).min(self.max);
        self.failures = self.failures.saturating_add(1);
        let jitter_permille = u32::try_from(self.rng.next_u64() % 250).unwrap_or(0);
        delay.saturating_sub(delay * jitter_permille / 1000)
    }

    /// After a connection that completed its handshake.
    pub(super) fn reset(&mut self) {
        self.failures = 0;
    }
}
