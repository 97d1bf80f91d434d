//! The worker loop, written once for every backend: it drives a
//! [`WorkerCore`] over a [`Transport`] (see the contract in
//! [`crate::backend`]).
//!
//! A turn: take in what the network brought (new connections, readable and
//! writable ones), drain the peers' rings, read the connections that have
//! bytes, end the core's iteration (barriers, stalled publishers, ring
//! batches), wake peers that got records, run the core's timers when due,
//! open the connection the core asked for (to a leaf-node hub), flush
//! output, and end the transport's turn (one tx burst). Between turns the
//! loop waits only when the core, the transport and the wait policy
//! agree that there is nothing to do, and never past the core's or the
//! transport's next deadline.
//!
//! [`Driver::turn`] is one turn at a given time, so that tests can drive a
//! worker deterministically; [`Driver::run`] loops on the clock.

use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Waker;

use super::{Ingress, Read, Transport, WaitPolicy, Write};
use crate::config::PollStrategy;
use crate::stats::Counter;
use crate::worker::{ConnId, WorkerCore};

/// Reads per connection per turn, so that one busy publisher cannot starve
/// the others.
const READS_PER_TURN: usize = 4;
/// Slices gathered per write: a queue of shared payloads alternates header
/// and payload, so this covers 256 messages per call (IOV_MAX is 1024).
const WRITE_SLICES: usize = 512;

/// Whether the worker goes on after a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    Running,
    /// Drained after shutdown: the loop ends.
    Stopped,
}

enum ReadOutcome {
    /// Read until the transport had no more, or the core wanted no more.
    Drained,
    /// The turn's reads are used up; read again next turn.
    More,
    Closed,
}

pub struct Driver<T: Transport> {
    core: WorkerCore,
    transport: T,
    policy: WaitPolicy,
    wakers: Arc<[Arc<Waker>]>,
    shutdown: Arc<AtomicBool>,
    drain_timeout: Duration,
    /// Set when the drain began: the time by which the worker stops.
    drain_deadline: Option<Instant>,
    /// Connections to read this turn (reported by the transport, resumed by
    /// the core, or left with unread bytes last turn).
    readable: Vec<ConnId>,
    /// Connections the transport says take more output.
    writable: Vec<ConnId>,
    /// Connections to flush this turn.
    flushing: Vec<ConnId>,
    from_core: Vec<ConnId>,
    /// Whether the last turn did anything (then the next one does not wait).
    worked: bool,
    /// Since when the worker has had nothing to do.
    idle_since: Option<Instant>,
}

impl<T: Transport> Driver<T> {
    pub fn new(
        core: WorkerCore,
        transport: T,
        policy: WaitPolicy,
        wakers: Arc<[Arc<Waker>]>,
        shutdown: Arc<AtomicBool>,
        drain_timeout: Duration,
    ) -> Driver<T> {
        Driver {
            core,
            transport,
            policy,
            wakers,
            shutdown,
            drain_timeout,
            drain_deadline: None,
            readable: Vec::new(),
            writable: Vec::new(),
            flushing: Vec::new(),
            from_core: Vec::new(),
            worked: true,
            idle_since: None,
        }
    }

    pub fn core(&self) -> &WorkerCore {
        &self.core
    }

    pub fn core_mut(&mut self) -> &mut WorkerCore {
        &mut self.core
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// The worker loop; returns the core once drained after shutdown.
    pub fn run(mut self) -> io::Result<WorkerCore> {
        loop {
            self.wait()?;
            if self.turn(Instant::now()) == Turn::Stopped {
                return Ok(self.core);
            }
        }
    }

    /// Waits for work when there is none (per the wait policy), else only
    /// lets the transport collect readiness.
    fn wait(&mut self) -> io::Result<()> {
        self.core.take_resumed(&mut self.readable);
        let now = Instant::now();
        let busy = self.worked
            || self.core.has_pending_work()
            || !self.readable.is_empty()
            || self.transport.has_pending();
        let timeout = if busy {
            self.idle_since = None;
            Duration::ZERO
        } else {
            self.idle_timeout(now)
        };
        if timeout.is_zero() || !self.core.prepare_sleep() {
            if !busy && self.policy.strategy == PollStrategy::Adaptive {
                // Spinning idle: let a thread that shares this core (a
                // client, another worker) run now rather than at the end of
                // our time slice, milliseconds away.
                std::thread::yield_now();
            }
            return self.transport.wait(Duration::ZERO);
        }
        let result = self.transport.wait(timeout);
        self.core.woke_up();
        self.idle_since = None;
        result
    }

    /// How long an idle worker may sleep now: zero while it still spins,
    /// else until the earliest deadline.
    fn idle_timeout(&mut self, now: Instant) -> Duration {
        match self.policy.strategy {
            PollStrategy::Busy => return Duration::ZERO,
            PollStrategy::Adaptive => {
                let idle = *self.idle_since.get_or_insert(now);
                if now.duration_since(idle) < self.policy.spin {
                    return Duration::ZERO;
                }
            }
        }
        let mut deadline = self.core.poll_timeout();
        if let Some(at) = self.transport.poll_timeout(now) {
            deadline = deadline.min(at);
        }
        deadline.saturating_duration_since(now)
    }

    /// One turn of the loop at `now`.
    pub fn turn(&mut self, now: Instant) -> Turn {
        self.core.take_resumed(&mut self.readable);
        let mut ingress = Ingress {
            core: &mut self.core,
            readable: &mut self.readable,
            writable: &mut self.writable,
            now,
        };
        let mut worked = self.transport.poll_ingress(now, &mut ingress);
        worked |= self.core.poll_peers(now) > 0;
        worked |= self.read_ready(now);
        self.core.finish_iteration(now);
        for worker in self.core.take_wake().iter() {
            // A failed wake only delays the peer to its next tick.
            let _ = self.wakers[worker as usize].wake();
        }
        if now >= self.core.poll_timeout() {
            self.transport.report(&self.core.stats);
            self.core.handle_timeout(now);
        }
        if let Some((cid, addr)) = self.core.take_dial() {
            let result = self.transport.connect(cid, addr);
            self.core.dialled(cid, result, now);
        }
        self.flush(now);
        self.transport.poll_egress(now);

        self.core.stats.inc(Counter::LoopIterations);
        if worked {
            self.core.stats.inc(Counter::LoopBusyIterations);
        }
        self.worked = worked;
        self.drain(now)
    }

    /// Starts the drain on shutdown; stops once it is done or overdue.
    fn drain(&mut self, now: Instant) -> Turn {
        if self.drain_deadline.is_none() && self.shutdown.load(Ordering::Relaxed) {
            self.drain_deadline = Some(now + self.drain_timeout);
            self.transport.stop_accepting(now);
            self.core.begin_drain(now);
            self.flush(now);
            self.transport.poll_egress(now);
            self.worked = true;
        }
        let Some(deadline) = self.drain_deadline else {
            return Turn::Running;
        };
        let done = self.core.connection_count() == 0 && !self.transport.is_lingering();
        if !done && now < deadline {
            return Turn::Running;
        }
        let mut open = Vec::new();
        self.core.conn_ids(&mut open);
        for cid in open {
            self.close(cid, now);
        }
        self.transport.shutdown(now);
        Turn::Stopped
    }

    /// Reads every connection that may have bytes and wants them; returns
    /// whether any bytes were read.
    fn read_ready(&mut self, now: Instant) -> bool {
        if self.readable.is_empty() {
            return false;
        }
        let mut pending = std::mem::take(&mut self.readable);
        pending.sort_unstable();
        pending.dedup();
        let mut read_any = false;
        for cid in pending.drain(..) {
            if !self.core.contains(cid) {
                continue;
            }
            match self.read_conn(cid, now, &mut read_any) {
                ReadOutcome::Drained => {}
                ReadOutcome::More => self.readable.push(cid),
                ReadOutcome::Closed => self.close(cid, now),
            }
        }
        if self.readable.is_empty() {
            // Keep the capacity.
            self.readable = pending;
        }
        read_any
    }

    fn read_conn(&mut self, cid: ConnId, now: Instant, read_any: &mut bool) -> ReadOutcome {
        for _ in 0..READS_PER_TURN {
            if self.core.is_closing(cid) || !self.core.wants_input(cid) {
                // Waiting: the bytes stay with the transport (the kernel's
                // socket buffer, smoltcp's window), which paces the sender;
                // the core hands the connection back when it resumes
                // (`take_resumed`).
                return ReadOutcome::Drained;
            }
            let core = &mut self.core;
            match self
                .transport
                .read(cid, |bytes| core.on_received(cid, bytes, now))
            {
                Read::Data => *read_any = true,
                Read::WouldBlock => return ReadOutcome::Drained,
                Read::Eof => {
                    self.core.on_peer_closed(cid);
                    return if self.core.should_close(cid, now) {
                        ReadOutcome::Closed
                    } else {
                        ReadOutcome::Drained
                    };
                }
                Read::Failed => return ReadOutcome::Closed,
            }
        }
        ReadOutcome::More
    }

    /// Writes queued output and closes connections that are done.
    fn flush(&mut self, now: Instant) {
        let mut flushing = std::mem::take(&mut self.flushing);
        self.core.take_dirty(&mut self.from_core);
        flushing.extend_from_slice(&self.from_core);
        flushing.append(&mut self.writable);
        flushing.sort_unstable();
        flushing.dedup();
        for &cid in &flushing {
            if !self.core.contains(cid) {
                continue;
            }
            let failed = self.write_conn(cid);
            if failed || self.core.should_close(cid, now) {
                self.close(cid, now);
            }
        }
        flushing.clear();
        self.flushing = flushing;
    }

    /// Writes until the connection's output is empty or the transport takes
    /// no more; returns whether the connection failed.
    fn write_conn(&mut self, cid: ConnId) -> bool {
        loop {
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let filled = self.core.output_vectored(cid, &mut slices);
            if filled == 0 {
                return false;
            }
            // Its messages' in-broker latency ends when the write starts:
            // the call itself is the TCP stack's work (on loopback, the
            // receiver's too: about 11 µs per writev on the test VM).
            let started = Instant::now();
            match self.transport.write(cid, &slices[..filled]) {
                Write::Wrote(n) => self.core.on_output_written(cid, n, started),
                Write::WouldBlock => return false,
                Write::Failed => return true,
            }
        }
    }

    fn close(&mut self, cid: ConnId, now: Instant) {
        if self.core.contains(cid) {
            self.transport.close(cid, now);
            self.core.on_closed(cid);
        }
    }
}
