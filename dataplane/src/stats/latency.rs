//! The in-broker latency histogram: how long each delivered message spent
//! in the broker, from the read that completed its PUBLISH to the write
//! that handed it to its subscriber's TCP stack.
//!
//! Buckets are log-linear over nanoseconds, fixed at build time, so that a
//! worker records a sample with a few shifts and three relaxed stores into
//! its stats block (no allocation, no lock), and readers add workers and
//! subtract snapshots bucket by bucket. Each power of two is split into
//! [`SUB_BUCKETS`] equal buckets: a value is known to within 12.5 %.
//!
//! ```text
//! bucket  0..8     0..8 ns, one nanosecond each
//! bucket  8 + 8·(e−3) + s   [(8+s)·2^(e−3), (9+s)·2^(e−3)) ns, e = ⌊log2 v⌋ ≥ 3
//! bucket  LATENCY_BUCKETS − 1   also every value from 2^34 ns (17 s) on
//! ```

use std::time::Duration;

/// Buckets per power of two (3 bits of the value below its leading one).
pub const SUB_BUCKETS: usize = 8;
const SUB_BITS: u32 = SUB_BUCKETS.trailing_zeros();
/// Values from 2^LAST_POWER ns on fall into the last bucket.
const LAST_POWER: u32 = 34;
/// Number of buckets of a histogram.
pub const LATENCY_BUCKETS: usize = SUB_BUCKETS * (LAST_POWER - SUB_BITS + 1) as usize;
/// Cells of a worker block after the counters: the sum of the samples,
/// the largest one, then the buckets.
pub const LATENCY_CELLS: usize = 2 + LATENCY_BUCKETS;
/// Index of the sum cell, then the max cell, then the first bucket.
pub(crate) const SUM_CELL: usize = 0;
pub(crate) const MAX_CELL: usize = 1;
pub(crate) const FIRST_BUCKET_CELL: usize = 2;

/// The bucket of a sample of `nanos`.
#[inline]
pub const fn bucket_of(nanos: u64) -> usize {
    if nanos < SUB_BUCKETS as u64 {
        return nanos as usize;
    }
    let power = 63 - nanos.leading_zeros();
    if power >= LAST_POWER {
        return LATENCY_BUCKETS - 1;
    }
    let sub = (nanos >> (power - SUB_BITS)) as usize & (SUB_BUCKETS - 1);
    SUB_BUCKETS * (power - SUB_BITS + 1) as usize + sub
}

/// The smallest value of bucket `index`, in nanoseconds.
pub const fn bucket_floor(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64;
    }
    let power = (index / SUB_BUCKETS) as u32 - 1 + SUB_BITS;
    let sub = (index % SUB_BUCKETS) as u64;
    (SUB_BUCKETS as u64 + sub) << (power - SUB_BITS)
}

/// The first value past bucket `index`, in nanoseconds (`u64::MAX` for the
/// last bucket, which has no end).
pub const fn bucket_end(index: usize) -> u64 {
    if index + 1 >= LATENCY_BUCKETS {
        u64::MAX
    } else {
        bucket_floor(index + 1)
    }
}

/// A histogram read from a stats segment (or built by tests): counts per
/// bucket, the sum of the samples and the largest one, in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    buckets: Vec<u64>,
    sum_nanos: u64,
    max_nanos: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: vec![0; LATENCY_BUCKETS],
            sum_nanos: 0,
            max_nanos: 0,
        }
    }
}

impl LatencyHistogram {
    /// From the cells of a worker block, in [`LATENCY_CELLS`] order.
    /// Panics unless there are exactly [`LATENCY_CELLS`] of them.
    pub fn from_cells(cells: &[u64]) -> LatencyHistogram {
        assert_eq!(cells.len(), LATENCY_CELLS, "latency cells");
        LatencyHistogram {
            buckets: cells[FIRST_BUCKET_CELL..].to_vec(),
            sum_nanos: cells[SUM_CELL],
            max_nanos: cells[MAX_CELL],
        }
    }

    /// From its non-empty buckets, each named by its smallest value in
    /// nanoseconds (as [`nonzero_buckets`](Self::nonzero_buckets) gives
    /// them), the sum and the maximum.
    pub fn from_parts(
        buckets: impl IntoIterator<Item = (u64, u64)>,
        sum_nanos: u64,
        max_nanos: u64,
    ) -> LatencyHistogram {
        let mut histogram = LatencyHistogram {
            sum_nanos,
            max_nanos,
            ..LatencyHistogram::default()
        };
        for (floor, count) in buckets {
            let bucket = &mut histogram.buckets[bucket_of(floor)];
            *bucket = bucket.wrapping_add(count);
        }
        histogram
    }

    /// The non-empty buckets: (smallest value in nanoseconds, samples).
    pub fn nonzero_buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(index, &n)| (bucket_floor(index), n))
    }

    /// Adds `count` samples of `nanos`.
    pub fn record(&mut self, nanos: u64, count: u64) {
        self.buckets[bucket_of(nanos)] += count;
        self.sum_nanos = self.sum_nanos.wrapping_add(nanos.wrapping_mul(count));
        self.max_nanos = self.max_nanos.max(nanos);
    }

    /// Adds another histogram's samples (another worker's).
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine = mine.wrapping_add(*theirs);
        }
        self.sum_nanos = self.sum_nanos.wrapping_add(other.sum_nanos);
        self.max_nanos = self.max_nanos.max(other.max_nanos);
    }

    /// The samples recorded after `earlier` (a read of the same worker, or
    /// total, taken before). The maximum cannot be subtracted: it is the
    /// end of the highest bucket that gained samples, capped by the
    /// maximum since start.
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        let buckets: Vec<u64> = self
            .buckets
            .iter()
            .zip(&earlier.buckets)
            .map(|(now, then)| now.wrapping_sub(*then))
            .collect();
        let max_nanos = buckets
            .iter()
            .rposition(|&n| n > 0)
            .map_or(0, |top| (bucket_end(top) - 1).min(self.max_nanos));
        LatencyHistogram {
            buckets,
            sum_nanos: self.sum_nanos.wrapping_sub(earlier.sum_nanos),
            max_nanos,
        }
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.buckets.iter().fold(0u64, |a, &n| a.wrapping_add(n))
    }

    /// Sum of the samples, in nanoseconds.
    pub fn sum_nanos(&self) -> u64 {
        self.sum_nanos
    }

    /// The largest sample, in nanoseconds (0 without samples).
    pub fn max_nanos(&self) -> u64 {
        self.max_nanos
    }

    /// Samples per bucket, indexed as [`bucket_of`].
    pub fn buckets(&self) -> &[u64] {
        &self.buckets
    }

    /// The value at quantile `q` (0.5, 0.99, 0.999): the last value of the
    /// bucket holding the sample of that rank, so at most 12.5 % above the
    /// true value and never above the maximum; `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let last = bucket_end(index).saturating_sub(1).min(self.max_nanos);
                return Some(Duration::from_nanos(last));
            }
        }
        Some(Duration::from_nanos(self.max_nanos))
    }

    /// Counts for a Prometheus histogram: `(upper bound in seconds, samples
    /// in that range)` for every power of two from 2^10 ns (1.024 µs) to
    /// 2^30 ns (1.07 s), which are bucket edges, so the counts are exact;
    /// then `+Inf`. Not cumulative.
    pub fn prometheus_buckets(&self) -> Vec<(f64, u64)> {
        const FIRST_POWER: u32 = 10;
        const LAST_BOUND_POWER: u32 = 30;
        let mut out = Vec::with_capacity((LAST_BOUND_POWER - FIRST_POWER + 2) as usize);
        let mut index = 0;
        for power in FIRST_POWER..=LAST_BOUND_POWER {
            let bound = 1u64 << power;
            let mut n = 0u64;
            while index < LATENCY_BUCKETS && bucket_end(index) <= bound {
                n = n.wrapping_add(self.buckets[index]);
                index += 1;
            }
            out.push((bound as f64 / 1e9, n));
        }
        let rest = self.buckets[index..]
            .iter()
            .fold(0u64, |a, &n| a.wrapping_add(n));
        out.push((f64::INFINITY, rest));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(7), 7);
        assert_eq!(bucket_of(8), 8);
        assert_eq!(bucket_of(u64::MAX), LATENCY_BUCKETS - 1);
        for index in 0..LATENCY_BUCKETS {
            let floor = bucket_floor(index);
            assert_eq!(bucket_of(floor), index, "floor of {index}");
            if index + 1 < LATENCY_BUCKETS {
                let end = bucket_end(index);
                assert_eq!(bucket_of(end - 1), index, "end of {index}");
                assert_eq!(bucket_of(end), index + 1);
                // At most one eighth wide past the exact ones.
                assert!((end - floor) * 8 <= floor.max(8), "width of {index}");
            }
        }
        assert_eq!(bucket_floor(LATENCY_BUCKETS - 1), 15 << 30);
        assert_eq!(bucket_of((1 << 34) - 1), LATENCY_BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_bucket_ends_capped_by_the_max() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        // 98 samples of 10 µs, one of 50 µs, one of 900 µs.
        h.record(10_000, 98);
        h.record(50_000, 1);
        h.record(900_000, 1);
        assert_eq!(h.count(), 100);
        assert_eq!(h.sum_nanos(), 980_000 + 50_000 + 900_000);
        let p50 = h.quantile(0.5).unwrap().as_nanos() as u64;
        assert!((10_000..=10_000 * 9 / 8).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99).unwrap().as_nanos() as u64;
        assert!((50_000..=50_000 * 9 / 8).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), Some(Duration::from_nanos(900_000)));
        assert_eq!(h.max_nanos(), 900_000);
    }

    #[test]
    fn merge_and_since() {
        let mut a = LatencyHistogram::default();
        a.record(2_000, 3);
        let before = a.clone();
        a.record(40_000, 2);
        let mut b = LatencyHistogram::default();
        b.record(5_000_000, 1);
        let mut total = a.clone();
        total.merge(&b);
        assert_eq!(total.count(), 6);
        assert_eq!(total.max_nanos(), 5_000_000);
        let window = a.since(&before);
        assert_eq!(window.count(), 2);
        assert_eq!(window.sum_nanos(), 80_000);
        assert_eq!(window.max_nanos(), 40_000);
        let parts =
            LatencyHistogram::from_parts(total.nonzero_buckets(), total.sum_nanos(), 5_000_000);
        assert_eq!(parts, total);
        let window = total.since(&before);
        assert_eq!(window.max_nanos(), 5_000_000);
        assert_eq!(a.since(&a).max_nanos(), 0);
    }

    #[test]
    fn prometheus_buckets_are_exact_powers_of_two() {
        let mut h = LatencyHistogram::default();
        h.record(500, 1); // ≤ 1.024 µs
        h.record(1_024, 1); // 1.024 µs is the next bucket: le is exclusive of the edge itself
        h.record(20_000, 4); // ≤ 32.768 µs
        h.record(1 << 33, 1); // +Inf
        let buckets = h.prometheus_buckets();
        assert_eq!(buckets.len(), 22);
        assert_eq!(buckets[0], (1024.0 / 1e9, 1));
        assert_eq!(buckets[1], (2048.0 / 1e9, 1));
        assert_eq!(buckets[5], (32768.0 / 1e9, 4));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), h.count());
    }
}
