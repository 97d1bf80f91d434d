//! The user-space TCP worker loop. It mirrors the kernel backend's loop:
//! receive, feed the core, drain the peers' rings, finish the iteration,
//! tick, flush, then send (one tx burst and one kick).
//!
//! Waiting: with [`PollStrategy::Busy`] the loop never sleeps. With
//! [`PollStrategy::Adaptive`] it spins for `spin` after the last work, then
//! blocks in a `mio::Poll` that holds the device's fd (readable when the
//! kernel hands over an rx block: at most `block_timeout_ms` after a frame
//! arrives) and the worker's `Waker` (rung by other workers per the ring
//! wake-up protocol, and on shutdown), bounded by the next tick and
//! smoltcp's next timer.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;

use super::{PacketDevice, Stack};
use crate::backend::WorkerPoll;
use crate::config::PollStrategy;
use crate::worker::{ConnId, WorkerCore};

const DEVICE: Token = Token(0);
/// How often timers (server PINGs, close deadlines) are checked.
const TICK: Duration = Duration::from_millis(100);
/// Frames received per loop iteration.
const RX_BUDGET: usize = 256;
/// Receive-buffer reads per connection per iteration.
const READS_PER_TURN: usize = 4;

/// How an idle worker waits.
#[derive(Debug, Clone, Copy)]
pub struct WaitConfig {
    pub strategy: PollStrategy,
    pub spin: Duration,
}

pub struct UserspaceWorker<D: PacketDevice> {
    core: WorkerCore,
    device: D,
    stack: Stack,
    poll: Poll,
    wakers: Arc<[Arc<Waker>]>,
    shutdown: Arc<AtomicBool>,
    drain_timeout: Duration,
    wait: WaitConfig,
    can_sleep: bool,
    /// Connections left unread because the core did not want input.
    held: Vec<ConnId>,
    /// Connections whose output did not fit the socket's send buffer.
    blocked: Vec<ConnId>,
    ids: Vec<ConnId>,
    dirty: Vec<ConnId>,
    from_core: Vec<ConnId>,
    established: Vec<SocketHandle>,
}

enum ReadOutcome {
    Drained,
    /// Unread bytes left: the turn's reads are used up.
    Held,
    Closed,
}

impl<D: PacketDevice> UserspaceWorker<D> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        core: WorkerCore,
        mut device: D,
        stack: Stack,
        poll: WorkerPoll,
        wakers: Arc<[Arc<Waker>]>,
        shutdown: Arc<AtomicBool>,
        drain_timeout: Duration,
        wait: WaitConfig,
    ) -> io::Result<UserspaceWorker<D>> {
        let mut fds: Vec<RawFd> = Vec::new();
        device.wait_fds(&mut fds);
        for fd in &fds {
            poll.poll
                .registry()
                .register(&mut SourceFd(fd), DEVICE, Interest::READABLE)?;
        }
        let can_sleep = wait.strategy == PollStrategy::Adaptive && !fds.is_empty();
        device.flush_tx();
        Ok(UserspaceWorker {
            core,
            device,
            stack,
            poll: poll.poll,
            wakers,
            shutdown,
            drain_timeout,
            wait,
            can_sleep,
            held: Vec::new(),
            blocked: Vec::new(),
            ids: Vec::new(),
            dirty: Vec::new(),
            from_core: Vec::new(),
            established: Vec::new(),
        })
    }

    /// The worker loop; returns once drained after shutdown.
    pub fn run(mut self) -> io::Result<WorkerCore> {
        let mut events = Events::with_capacity(16);
        let mut next_tick = Instant::now() + TICK;
        let mut drain_deadline: Option<Instant> = None;
        let mut idle_since: Option<Instant> = None;
        let mut worked = true;
        let can_sleep = self.can_sleep;
        loop {
            self.core.take_resumed(&mut self.held);
            let before = Instant::now();
            let busy = worked
                || self.core.has_pending_work()
                || !self.held.is_empty()
                || self.device.tx_pending()
                || self.device.rx_ready();
            if busy {
                idle_since = None;
            } else if can_sleep {
                let idle = *idle_since.get_or_insert(before);
                if before.duration_since(idle) >= self.wait.spin {
                    self.sleep(&mut events, before, next_tick)?;
                    idle_since = None;
                }
            }

            let now = Instant::now();
            let received = self.stack.poll_ingress(&mut self.device, now, RX_BUDGET);
            worked = received > 0;
            self.accept_new(now);
            worked |= self.core.poll_peers(now) > 0;
            // Only the connections that received frames (or ran timers),
            // and those with unread input held back: not all of them.
            self.stack.take_touched(&mut self.ids);
            self.ids.append(&mut self.held);
            if !self.ids.is_empty() {
                self.ids.sort_unstable();
                self.ids.dedup();
                let ids = std::mem::take(&mut self.ids);
                self.read(&ids, now);
                self.ids = ids;
            }
            self.core.finish_iteration(now);
            for worker in self.core.take_wake().iter() {
                // A failed wake only delays the peer to its next tick.
                let _ = self.wakers[worker as usize].wake();
            }
            if now >= next_tick {
                self.core.on_tick(now);
                next_tick = now + TICK;
            }
            self.flush(now);
            self.stack.poll_egress(&mut self.device, now);
            self.device.flush_tx();
            self.stack.reap(now);

            if self.shutdown.load(Ordering::Relaxed) && drain_deadline.is_none() {
                drain_deadline = Some(now + self.drain_timeout);
                self.stack.stop_listening();
                self.core.begin_drain(now);
                self.flush(now);
                self.stack.poll_egress(&mut self.device, now);
                self.device.flush_tx();
                worked = true;
            }
            if let Some(deadline) = drain_deadline {
                let done = self.core.connection_count() == 0 && self.stack.closing_count() == 0;
                if done || now >= deadline {
                    self.close_all(now);
                    self.stack.abort_all();
                    self.stack.poll_egress(&mut self.device, Instant::now());
                    self.device.flush_tx();
                    tracing::info!(worker = self.core.id(), stats = ?self.device.stats(), "afpacket worker stopped");
                    return Ok(self.core);
                }
            }
        }
    }

    /// Blocks until a frame, a wake-up, the next tick or smoltcp's next timer.
    fn sleep(&mut self, events: &mut Events, now: Instant, next_tick: Instant) -> io::Result<()> {
        let mut timeout = next_tick.saturating_duration_since(now);
        if let Some(delay) = self.stack.poll_delay(now) {
            timeout = timeout.min(delay);
        }
        if timeout.is_zero() || !self.core.prepare_sleep() {
            return Ok(());
        }
        // The rx check after announcing the sleep: a block handed over
        // after it wakes the fd (the poll is edge-triggered, but the event
        // is queued at hand-over time, so it cannot be missed).
        if !self.device.rx_ready() {
            match self.poll.poll(events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.core.woke_up();
                    return Err(e);
                }
            }
        }
        self.core.woke_up();
        Ok(())
    }

    fn accept_new(&mut self, now: Instant) {
        self.stack.take_established(&mut self.established);
        for i in 0..self.established.len() {
            let handle = self.established[i];
            let cid = self.core.accept(now);
            self.stack.bind(cid, handle);
            if let Some(peer) = self.stack.socket(cid).remote_endpoint() {
                let ip = std::net::IpAddr::from(peer.addr);
                self.core
                    .set_peer(cid, std::net::SocketAddr::from((ip, peer.port)));
            }
            self.held.push(cid);
        }
    }

    fn read(&mut self, ids: &[ConnId], now: Instant) {
        for &cid in ids {
            if !self.stack.has(cid) {
                continue;
            }
            match self.read_conn(cid, now) {
                ReadOutcome::Drained => {}
                ReadOutcome::Held => self.held.push(cid),
                ReadOutcome::Closed => self.close(cid, now),
            }
        }
        self.held.sort_unstable();
        self.held.dedup();
    }

    fn read_conn(&mut self, cid: ConnId, now: Instant) -> ReadOutcome {
        let UserspaceWorker { core, stack, .. } = self;
        let socket = stack.socket(cid);
        if socket.state() == State::Closed {
            // Reset by the peer, or timed out.
            return ReadOutcome::Closed;
        }
        for _ in 0..READS_PER_TURN {
            if core.is_closing(cid) {
                return ReadOutcome::Drained;
            }
            if !socket.can_recv() {
                break;
            }
            if !core.wants_input(cid) {
                // Waiting: the bytes stay in the receive buffer, whose window
                // paces the sender; the core hands the connection back when
                // it resumes (`take_resumed`).
                return ReadOutcome::Drained;
            }
            let read = socket.recv(|bytes| {
                core.on_received(cid, bytes, now);
                (bytes.len(), bytes.len())
            });
            if read.is_err() {
                return ReadOutcome::Closed;
            }
        }
        if socket.can_recv() {
            return ReadOutcome::Held;
        }
        if !socket.may_recv() && !core.is_closing(cid) {
            // FIN received and everything before it read.
            core.on_peer_closed(cid);
            if core.should_close(cid, now) {
                return ReadOutcome::Closed;
            }
        }
        ReadOutcome::Drained
    }

    /// Moves queued output into the sockets and closes connections that
    /// are done.
    fn flush(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        self.core.take_dirty(&mut self.from_core);
        dirty.extend_from_slice(&self.from_core);
        dirty.append(&mut self.blocked);
        dirty.sort_unstable();
        dirty.dedup();
        for &cid in &dirty {
            if !self.stack.has(cid) {
                continue;
            }
            let UserspaceWorker {
                core,
                stack,
                blocked,
                ..
            } = self;
            let socket = stack.socket(cid);
            let mut failed = socket.state() == State::Closed;
            while !failed {
                let pending = core.output(cid);
                if pending.is_empty() {
                    break;
                }
                if !socket.may_send() {
                    failed = true;
                    break;
                }
                match socket.send_slice(pending) {
                    Ok(0) => {
                        blocked.push(cid);
                        break;
                    }
                    Ok(n) => core.on_output_written(cid, n),
                    Err(_) => failed = true,
                }
            }
            if failed || self.core.should_close(cid, now) {
                self.close(cid, now);
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    fn close(&mut self, cid: ConnId, now: Instant) {
        if self.stack.has(cid) {
            self.stack.release(cid, now, self.drain_timeout);
            self.core.on_closed(cid);
        }
    }

    fn close_all(&mut self, now: Instant) {
        self.stack.conn_ids(&mut self.ids);
        let ids = std::mem::take(&mut self.ids);
        for &cid in &ids {
            self.close(cid, now);
        }
        self.ids = ids;
    }
}
