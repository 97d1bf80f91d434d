//! Per-connection guards against abuse: the handshake deadline, the publish
//! rates (token buckets) and the broker-wide count of connections per
//! client IP address.
//!
//! Time is an input: the buckets refill from the `now` the backend passes
//! into the core, so the publish path makes no syscall for the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::Config;
pub use crate::config::RatePolicy;

/// The guards' settings, from `auth.timeout` and `limits.*`; a reload
/// carries them to the workers whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectionLimits {
    /// From accept until CONNECT is accepted; zero = no limit.
    pub handshake_timeout: Duration,
    /// Published messages per second per connection; 0 = unlimited.
    pub max_msgs_per_sec: u64,
    /// Published payload bytes per second per connection; 0 = unlimited.
    pub max_bytes_per_sec: u64,
    pub rate_policy: RatePolicy,
    /// Connections per client IP address across the broker; 0 = unlimited.
    pub max_connections_per_ip: usize,
}

impl ConnectionLimits {
    pub fn from_config(config: &Config) -> ConnectionLimits {
        let limits = &config.limits;
        ConnectionLimits {
            handshake_timeout: config.auth.timeout,
            max_msgs_per_sec: limits.max_msgs_per_sec,
            max_bytes_per_sec: limits.max_bytes_per_sec,
            rate_policy: limits.rate_policy,
            max_connections_per_ip: limits.max_connections_per_ip,
        }
    }

    /// When a connection accepted at `now` must have completed CONNECT;
    /// none when off, or too far to tell from never.
    pub fn handshake_deadline(&self, now: Instant) -> Option<Instant> {
        if self.handshake_timeout.is_zero() {
            return None;
        }
        now.checked_add(self.handshake_timeout)
    }
}

/// A token bucket: `rate` tokens a second, holding at most one second's
/// worth (the burst). An item costing more than a whole second's worth
/// passes once the bucket is full and leaves it in debt, so that it is
/// neither stuck forever nor a way around the average rate.
///
/// Kept in billionths of a token, so that a refill of `rate` tokens a
/// second over some nanoseconds is exact: no drift however it is sliced.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    /// Tokens per second; 0 = unlimited.
    rate: u64,
    /// Billionths of a token; below zero in debt (see above).
    nano_tokens: i128,
    refilled: Instant,
}

const NANOS: i128 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            nano_tokens: i128::from(rate) * NANOS,
            refilled: now,
        }
    }

    fn burst(&self) -> i128 {
        i128::from(self.rate) * NANOS
    }

    /// A new rate, for a reload; the tokens held stay within the new burst.
    pub fn set_rate(&mut self, rate: u64) {
        let was_unlimited = self.rate == 0;
        self.rate = rate;
        if was_unlimited {
            self.nano_tokens = self.burst();
        }
        self.nano_tokens = self.nano_tokens.min(self.burst());
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_nanos();
        self.refilled = self.refilled.max(now);
        let elapsed = i128::try_from(elapsed).unwrap_or(i128::MAX);
        let added = elapsed.saturating_mul(i128::from(self.rate));
        self.nano_tokens = self.nano_tokens.saturating_add(added).min(self.burst());
    }

    /// Whether an item of `cost` may pass at `now` (nothing is taken).
    pub fn admits(&mut self, cost: u64, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        self.refill(now);
        self.nano_tokens >= i128::from(cost.min(self.rate)) * NANOS
    }

    /// Takes `cost` for an item that passed.
    pub fn take(&mut self, cost: u64) {
        if self.rate != 0 {
            self.nano_tokens -= i128::from(cost) * NANOS;
        }
    }
}

/// One connection's publish budget: messages and payload bytes a second.
#[derive(Debug, Clone, Copy)]
pub struct PublishRate {
    msgs: TokenBucket,
    bytes: TokenBucket,
}

impl PublishRate {
    pub fn new(limits: &ConnectionLimits, now: Instant) -> PublishRate {
        PublishRate {
            msgs: TokenBucket::new(limits.max_msgs_per_sec, now),
            bytes: TokenBucket::new(limits.max_bytes_per_sec, now),
        }
    }

    pub fn set_limits(&mut self, limits: &ConnectionLimits) {
        self.msgs.set_rate(limits.max_msgs_per_sec);
        self.bytes.set_rate(limits.max_bytes_per_sec);
    }

    /// Whether a message of `bytes` may be published at `now`; charge it
    /// with [`charge`](Self::charge) once it is.
    pub fn admits(&mut self, bytes: usize, now: Instant) -> bool {
        // Both refill, whatever the first says.
        let msgs = self.msgs.admits(1, now);
        let bytes = self.bytes.admits(bytes as u64, now);
        msgs && bytes
    }

    pub fn charge(&mut self, bytes: usize) {
        self.msgs.take(1);
        self.bytes.take(bytes as u64);
    }
}

/// Shards of [`ConnectionsPerIp`]: few, as only accepts and closes lock one.
const IP_SHARDS: usize = 16;

/// Open connections by client IP address, across all workers. Each accept
/// and each close of a connection with a known peer locks one shard of a
/// small map for an increment or a decrement; the message path never
/// touches it.
pub struct ConnectionsPerIp {
    shards: [Mutex<HashMap<IpAddr, usize>>; IP_SHARDS],
    hasher: ahash::RandomState,
}

impl Default for ConnectionsPerIp {
    fn default() -> ConnectionsPerIp {
        ConnectionsPerIp {
            shards: std::array::from_fn(|_| Mutex::default()),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl ConnectionsPerIp {
    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        let shard = self.hasher.hash_one(ip) as usize % IP_SHARDS;
        // A panic while holding it leaves only a count behind: keep going.
        self.shards[shard]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one more connection from `ip`, unless it already holds `max`
    /// (0 = unlimited); returns whether it was counted.
    pub fn try_add(&self, ip: IpAddr, max: usize) -> bool {
        let mut shard = self.shard(ip);
        let count = shard.entry(ip).or_insert(0);
        if max != 0 && *count >= max {
            return false;
        }
        *count += 1;
        true
    }

    /// A connection [`try_add`](Self::try_add) counted is gone.
    pub fn remove(&self, ip: IpAddr) {
        let mut shard = self.shard(ip);
        if let Some(count) = shard.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                shard.remove(&ip);
            }
        }
    }

    /// Open connections from `ip`.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.shard(ip).get(&ip).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    #[test]
    fn a_bucket_passes_one_seconds_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, start);
        for _ in 0..10 {
            assert!(bucket.admits(1, start));
            bucket.take(1);
        }
        assert!(!bucket.admits(1, start), "past the burst");
        assert!(!bucket.admits(1, after(start, 99)));
        assert!(bucket.admits(1, after(start, 100)), "one token a tenth");
        bucket.take(1);
        assert!(!bucket.admits(1, after(start, 150)));
        // A long idle time refills one burst, no more.
        let later = after(start, 60_000);
        let mut passed = 0;
        while bucket.admits(1, later) {
            bucket.take(1);
            passed += 1;
        }
        assert_eq!(passed, 10);
    }

    #[test]
    fn a_bucket_at_rate_zero_admits_everything() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(0, now);
        for _ in 0..1000 {
            assert!(bucket.admits(u64::MAX, now));
            bucket.take(u64::MAX);
        }
    }

    #[test]
    fn an_item_over_the_burst_passes_when_full_and_leaves_debt() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100, start);
        assert!(bucket.admits(250, start));
        bucket.take(250);
        // 150 in debt: 1.5 s until anything passes again.
        assert!(!bucket.admits(1, after(start, 1_500)));
        assert!(bucket.admits(1, after(start, 1_510)));
        // Not before the bucket is full again.
        assert!(!bucket.admits(250, after(start, 2_400)));
        assert!(bucket.admits(250, after(start, 2_500)));
    }

    #[test]
    fn a_bucket_keeps_the_average_rate_over_time() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, start);
        let mut passed = 0u64;
        // A greedy sender, asking every millisecond for 10 s.
        for ms in 0..10_000 {
            let now = after(start, ms);
            while bucket.admits(1, now) {
                bucket.take(1);
                passed += 1;
            }
        }
        // The burst plus 1000 a second.
        assert!((10_900..=11_000).contains(&passed), "{passed}");
    }

    #[test]
    fn a_reload_changes_the_rate_and_caps_the_tokens() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(0, start);
        bucket.set_rate(5);
        let mut passed = 0;
        while bucket.admits(1, start) {
            bucket.take(1);
            passed += 1;
        }
        assert_eq!(passed, 5, "unlimited to limited starts with a full burst");
        let mut bucket = TokenBucket::new(100, start);
        bucket.set_rate(2);
        assert!(bucket.admits(1, start));
        bucket.take(2);
        assert!(
            !bucket.admits(1, start),
            "the tokens were capped at the new burst"
        );
    }

    #[test]
    fn publish_rate_needs_both_budgets() {
        let start = Instant::now();
        let limits = ConnectionLimits {
            max_msgs_per_sec: 100,
            max_bytes_per_sec: 1000,
            ..ConnectionLimits::default()
        };
        let mut rate = PublishRate::new(&limits, start);
        // 1000 bytes pass as 4 messages of 250: the byte budget binds.
        for _ in 0..4 {
            assert!(rate.admits(250, start));
            rate.charge(250);
        }
        assert!(!rate.admits(1, start));
        // 100 empty messages: the message budget binds.
        let mut rate = PublishRate::new(&limits, start);
        for _ in 0..100 {
            assert!(rate.admits(0, start));
            rate.charge(0);
        }
        assert!(!rate.admits(0, start));
    }

    #[test]
    fn the_handshake_deadline_is_off_at_zero() {
        let now = Instant::now();
        let off = ConnectionLimits::default();
        assert_eq!(off.handshake_deadline(now), None);
        let on = ConnectionLimits {
            handshake_timeout: Duration::from_secs(2),
            ..off
        };
        assert_eq!(
            on.handshake_deadline(now),
            Some(now + Duration::from_secs(2))
        );
        let endless = ConnectionLimits {
            handshake_timeout: Duration::MAX,
            ..off
        };
        assert_eq!(endless.handshake_deadline(now), None, "no overflow panic");
    }

    #[test]
    fn connections_per_ip_are_capped_and_freed() {
        let ips = ConnectionsPerIp::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        assert!(ips.try_add(a, 2));
        assert!(ips.try_add(a, 2));
        assert!(!ips.try_add(a, 2), "a third from the same address");
        assert!(ips.try_add(b, 2), "another address has its own count");
        assert_eq!(ips.count(a), 2);
        ips.remove(a);
        assert!(ips.try_add(a, 2), "room again after one closed");
        assert!(ips.try_add(a, 0), "0 = unlimited, still counted");
        assert_eq!(ips.count(a), 3);
        for _ in 0..3 {
            ips.remove(a);
        }
        ips.remove(b);
        assert_eq!((ips.count(a), ips.count(b)), (0, 0));
        assert!(ips.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }
}
