//! Values read from a segment at one moment, and rates between two reads.

use std::time::Duration;

use super::{Aggregate, Counter, Kind, LatencyHistogram};

/// Every counter of every worker, read at one moment, with broker totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pid: u32,
    start_unix_nanos: u64,
    taken_unix_nanos: u64,
    /// `workers[w][c as usize]`.
    workers: Vec<Vec<u64>>,
    /// By counter, combined per [`Counter::aggregate`].
    totals: Vec<u64>,
    /// Each worker's in-broker latency histogram.
    latency: Vec<LatencyHistogram>,
}

impl Snapshot {
    /// A snapshot of `workers[w][c as usize]` values, taken at
    /// `taken_unix_nanos` from the segment of broker `pid` started at
    /// `start_unix_nanos`; computes the totals. (Readers build these; public
    /// for tests and tools.)
    ///
    /// Panics unless every worker has exactly [`Counter::COUNT`] values.
    pub fn new(
        pid: u32,
        start_unix_nanos: u64,
        taken_unix_nanos: u64,
        workers: Vec<Vec<u64>>,
    ) -> Snapshot {
        for (w, values) in workers.iter().enumerate() {
            assert_eq!(
                values.len(),
                Counter::COUNT,
                "worker {w}: {} values for {} counters",
                values.len(),
                Counter::COUNT
            );
        }
        let totals = Counter::ALL
            .iter()
            .map(|&c| {
                let values = workers.iter().map(|v| v[c as usize]);
                match c.aggregate() {
                    Aggregate::Sum => values.fold(0u64, u64::wrapping_add),
                    Aggregate::Max => values.max().unwrap_or(0),
                    Aggregate::Min => values.min().unwrap_or(0),
                }
            })
            .collect();
        let latency = vec![LatencyHistogram::default(); workers.len()];
        Snapshot {
            pid,
            start_unix_nanos,
            taken_unix_nanos,
            workers,
            totals,
            latency,
        }
    }

    /// With these per-worker latency histograms (empty ones otherwise).
    ///
    /// Panics unless there is one per worker.
    pub fn with_latency(mut self, latency: Vec<LatencyHistogram>) -> Snapshot {
        assert_eq!(
            latency.len(),
            self.workers.len(),
            "one histogram per worker"
        );
        self.latency = latency;
        self
    }

    /// Worker `worker`'s in-broker latency histogram since the broker
    /// started, or all workers' together for `None`. Panics if `worker >=
    /// workers()`.
    pub fn latency(&self, worker: Option<usize>) -> LatencyHistogram {
        merged(&self.latency, worker)
    }

    /// Process id of the broker.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// When the broker started, in nanoseconds since the Unix epoch.
    pub fn start_unix_nanos(&self) -> u64 {
        self.start_unix_nanos
    }

    /// When this snapshot was read, in nanoseconds since the Unix epoch.
    pub fn taken_unix_nanos(&self) -> u64 {
        self.taken_unix_nanos
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Worker `worker`'s values, indexed by `Counter as usize`. Panics if
    /// `worker >= workers()`.
    pub fn worker(&self, worker: usize) -> &[u64] {
        &self.workers[worker]
    }

    /// One counter of one worker. Panics if `worker >= workers()`.
    pub fn get(&self, worker: usize, counter: Counter) -> u64 {
        self.workers[worker][counter as usize]
    }

    /// The broker total of a counter (sum, or max/min for the gauges where
    /// that is what makes sense, see [`Counter::aggregate`]).
    pub fn total(&self, counter: Counter) -> u64 {
        self.totals[counter as usize]
    }

    /// All totals, indexed by `Counter as usize`.
    pub fn totals(&self) -> &[u64] {
        &self.totals
    }

    /// Sum of the `dropped_*` counters of `worker`, or of all workers for
    /// `None`.
    pub fn drops(&self, worker: Option<usize>) -> u64 {
        Counter::ALL
            .iter()
            .filter(|c| c.is_drop())
            .map(|&c| match worker {
                Some(w) => self.get(w, c),
                None => self.total(c),
            })
            .sum()
    }

    /// Share of poll-loop iterations that found work since the broker
    /// started, for `worker` or all workers (`None`); `None` before the
    /// first iteration.
    pub fn busy_ratio(&self, worker: Option<usize>) -> Option<f64> {
        let (busy, all) = match worker {
            Some(w) => (
                self.get(w, Counter::LoopBusyIterations),
                self.get(w, Counter::LoopIterations),
            ),
            None => (
                self.total(Counter::LoopBusyIterations),
                self.total(Counter::LoopIterations),
            ),
        };
        (all > 0).then(|| busy as f64 / all as f64)
    }

    /// How long before this snapshot `worker` (or, for `None`, the worker
    /// with the oldest heartbeat) last beat; `None` if it never did. Zero
    /// if the heartbeat is ahead of the snapshot's clock.
    pub fn heartbeat_age(&self, worker: Option<usize>) -> Option<Duration> {
        let beat_ms = match worker {
            Some(w) => self.get(w, Counter::HeartbeatUnixMs),
            None => self.total(Counter::HeartbeatUnixMs),
        };
        (beat_ms > 0).then(|| {
            Duration::from_nanos(
                self.taken_unix_nanos
                    .saturating_sub(beat_ms.saturating_mul(1_000_000)),
            )
        })
    }

    /// Per-second rates of the [`Kind::Counter`] counters between `prev`
    /// (read `elapsed` earlier) and this snapshot.
    ///
    /// A counter lower than in `prev` (a broker restart, when the caller
    /// did not notice [`StatsReader::replaced`](super::StatsReader::replaced))
    /// counts from zero, as does a worker missing from `prev`. With a zero
    /// `elapsed`, every rate is 0.
    pub fn rate_since(&self, prev: &Snapshot, elapsed: Duration) -> Rates {
        let secs = elapsed.as_secs_f64();
        let workers: Vec<Vec<f64>> = self
            .workers
            .iter()
            .enumerate()
            .map(|(w, now)| {
                let before = prev.workers.get(w);
                Counter::ALL
                    .iter()
                    .map(|&c| {
                        let i = c as usize;
                        if c.kind() != Kind::Counter || secs == 0.0 {
                            return 0.0;
                        }
                        let old = before.map_or(0, |b| b[i]);
                        let delta = if now[i] >= old { now[i] - old } else { now[i] };
                        delta as f64 / secs
                    })
                    .collect()
            })
            .collect();
        let totals = (0..Counter::COUNT)
            .map(|i| workers.iter().map(|v| v[i]).sum())
            .collect();
        let latency = self
            .latency
            .iter()
            .enumerate()
            .map(|(w, now)| match prev.latency.get(w) {
                Some(before) if now.count() >= before.count() => now.since(before),
                _ => now.clone(),
            })
            .collect();
        Rates {
            elapsed,
            workers,
            totals,
            latency,
        }
    }
}

/// Per-second rates between two [`Snapshot`]s, from
/// [`Snapshot::rate_since`]. Gauges have no rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Rates {
    elapsed: Duration,
    workers: Vec<Vec<f64>>,
    totals: Vec<f64>,
    /// Each worker's latency samples of the interval.
    latency: Vec<LatencyHistogram>,
}

impl Rates {
    /// The time between the two snapshots.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Per-second rate of `counter` on `worker`; `None` for gauges and
    /// unknown workers.
    pub fn get(&self, worker: usize, counter: Counter) -> Option<f64> {
        if counter.kind() != Kind::Counter {
            return None;
        }
        self.workers.get(worker).map(|v| v[counter as usize])
    }

    /// Per-second rate of `counter` over all workers; `None` for gauges.
    pub fn total(&self, counter: Counter) -> Option<f64> {
        (counter.kind() == Kind::Counter).then(|| self.totals[counter as usize])
    }

    /// Rate of `counter` for `worker`, or the total for `None`.
    pub fn rate(&self, worker: Option<usize>, counter: Counter) -> Option<f64> {
        match worker {
            Some(w) => self.get(w, counter),
            None => self.total(counter),
        }
    }

    /// The in-broker latency of the messages delivered in the interval, by
    /// `worker` or of all workers (`None`).
    pub fn latency(&self, worker: Option<usize>) -> LatencyHistogram {
        merged(&self.latency, worker)
    }

    /// Per-second rate of all `dropped_*` counters together.
    pub fn drops(&self, worker: Option<usize>) -> Option<f64> {
        Counter::ALL
            .iter()
            .filter(|c| c.is_drop())
            .map(|&c| self.rate(worker, c))
            .sum()
    }

    /// Share of poll-loop iterations in the interval that found work, for
    /// `worker` or all workers (`None`); `None` if the loop did not turn.
    pub fn busy_ratio(&self, worker: Option<usize>) -> Option<f64> {
        let all = self.rate(worker, Counter::LoopIterations)?;
        let busy = self.rate(worker, Counter::LoopBusyIterations)?;
        (all > 0.0).then(|| busy / all)
    }
}

/// Worker `worker`'s histogram, or all of them merged for `None`.
fn merged(latency: &[LatencyHistogram], worker: Option<usize>) -> LatencyHistogram {
    match worker {
        Some(w) => latency[w].clone(),
        None => {
            let mut total = LatencyHistogram::default();
            for histogram in latency {
                total.merge(histogram);
            }
            total
        }
    }
}
