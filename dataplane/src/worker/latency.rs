//! The in-broker latency of each delivered message (see
//! [`crate::stats::latency`]): from the read that completed its PUBLISH to
//! the write that handed it to its subscriber's TCP stack (the kernel's
//! socket buffer, or smoltcp's), time in the rings between workers
//! included.
//!
//! The read time is taken once per read batch (the time the backend passes
//! with the bytes), carried with the message in its ring record, and kept
//! per subscriber connection as runs of queued messages read at the same
//! time. A write that carries a run's last byte records the whole run at
//! once, so a message costs a comparison at queueing and a share of one
//! histogram update at writing.

use std::time::Instant;

use crate::stats::WorkerStats;

/// Nanoseconds since a moment every worker shares, so that a read time
/// travels between workers as a `u64`.
#[derive(Debug, Clone, Copy)]
pub struct LatencyClock {
    epoch: Instant,
}

impl LatencyClock {
    pub fn new(epoch: Instant) -> LatencyClock {
        LatencyClock { epoch }
    }

    /// `at` on this clock (0 for a time before the epoch).
    #[inline]
    pub fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

/// Runs a connection keeps; a queue of messages from more read batches
/// than this (a subscriber well behind) merges its newest runs.
const RUNS: usize = 8;

/// Queued messages read at the same time, up to a position in the
/// connection's output stream.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    /// Stream position just past the run's last message.
    end: u64,
    read_at: u64,
    messages: u32,
}

/// A connection's queued messages that are not written yet, as runs in
/// stream order. Positions count every byte ever queued to the connection
/// (see `Outbound::position`).
#[derive(Debug, Default)]
pub(super) struct PendingStamps {
    runs: [Run; RUNS],
    first: usize,
    len: usize,
}

impl PendingStamps {
    /// A message read at `read_at` was queued, ending at stream position
    /// `end`.
    #[inline]
    pub(super) fn queued(&mut self, end: u64, read_at: u64) {
        if self.len > 0 {
            let last = &mut self.runs[(self.first + self.len - 1) % RUNS];
            if last.read_at == read_at || self.len == RUNS {
                // Merged with the newest run: timed from the earlier read,
                // so a merge can only overstate a message's latency.
                last.end = end;
                last.read_at = last.read_at.min(read_at);
                last.messages = last.messages.saturating_add(1);
                return;
            }
        }
        self.runs[(self.first + self.len) % RUNS] = Run {
            end,
            read_at,
            messages: 1,
        };
        self.len += 1;
    }

    /// The stream is written up to position `written` at `now`: records
    /// every run that ends there or before.
    #[inline]
    pub(super) fn written(&mut self, written: u64, now: u64, stats: &WorkerStats) {
        while self.len > 0 {
            let run = self.runs[self.first];
            if run.end > written {
                return;
            }
            stats.record_latency(now.saturating_sub(run.read_at), run.messages.into());
            self.first = (self.first + 1) % RUNS;
            self.len -= 1;
        }
    }

    /// Forgets the queued messages: they will not be written (a slow
    /// consumer's queue was cut).
    pub(super) fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::StatsSegment;

    fn recorded(segment: &StatsSegment) -> crate::stats::LatencyHistogram {
        segment.snapshot().latency(Some(0))
    }

    #[test]
    fn runs_are_recorded_when_their_last_byte_is_written() {
        let segment = StatsSegment::anonymous(1).unwrap();
        let stats = segment.worker(0).unwrap();
        let mut stamps = PendingStamps::default();
        // Two messages read at 1,000 ns, one at 5,000 ns.
        stamps.queued(100, 1_000);
        stamps.queued(200, 1_000);
        stamps.queued(300, 5_000);
        stamps.written(150, 20_000, &stats);
        assert_eq!(
            recorded(&segment).count(),
            0,
            "the first run is half written"
        );
        stamps.written(250, 21_000, &stats);
        let h = recorded(&segment);
        assert_eq!(h.count(), 2);
        assert_eq!(h.sum_nanos(), 2 * 20_000);
        stamps.written(300, 25_000, &stats);
        let h = recorded(&segment);
        assert_eq!(h.count(), 3);
        assert_eq!(h.max_nanos(), 20_000);
        assert_eq!(h.sum_nanos(), 2 * 20_000 + 20_000);
    }

    #[test]
    fn a_full_set_of_runs_merges_into_the_newest_with_the_earlier_time() {
        let segment = StatsSegment::anonymous(1).unwrap();
        let stats = segment.worker(0).unwrap();
        let mut stamps = PendingStamps::default();
        for i in 0..RUNS as u64 + 2 {
            stamps.queued((i + 1) * 10, 1_000 * (i + 1));
        }
        stamps.written(u64::MAX, 100_000, &stats);
        let h = recorded(&segment);
        assert_eq!(h.count(), RUNS as u64 + 2);
        // The last three messages were timed from the eighth run's read.
        let merged = 3 * (100_000 - 8_000);
        let unmerged: u64 = (1..RUNS as u64).map(|i| 100_000 - 1_000 * i).sum();
        assert_eq!(h.sum_nanos(), merged + unmerged);
    }

    #[test]
    fn cleared_stamps_record_nothing() {
        let segment = StatsSegment::anonymous(1).unwrap();
        let stats = segment.worker(0).unwrap();
        let mut stamps = PendingStamps::default();
        stamps.queued(10, 1);
        stamps.clear();
        stamps.written(u64::MAX, 100, &stats);
        assert_eq!(recorded(&segment).count(), 0);
    }
}
