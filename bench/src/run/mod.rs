//! Running load against a broker: publishers and subscribers over the
//! protocol clients of [`crate::proto`].

pub mod dpdk;
pub mod flood;
pub mod flow;
pub mod idle;
pub mod messages;

use std::time::Instant;

/// A monotonic clock shared by every thread of a run, in nanoseconds since
/// the run began: payload timestamps and receive times use the same base.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            base: Instant::now(),
        }
    }

    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Sleeps of a few microseconds are honoured (default timer slack is 50 µs).
pub fn fine_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes integer arguments only (no pointer
    // is read or written) and affects this thread's timer slack alone.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Latency histogram in nanoseconds, 1 ns to 60 s, 3 significant digits.
pub fn new_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}
