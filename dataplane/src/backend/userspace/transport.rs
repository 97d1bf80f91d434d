//! The user-space TCP transport: smoltcp sockets over a [`PacketDevice`],
//! for every packet backend (AF_PACKET, DPDK, the in-memory test pair).
//!
//! A turn receives up to [`RX_BUDGET`] frames through the stack, hands
//! completed handshakes to the core, and at its end polls smoltcp's egress
//! and sends the burst with one device flush.
//!
//! Waiting: the device's descriptors (readable when frames arrive) and the
//! worker's waker (rung by other workers and on shutdown) share one
//! `mio::Poll`. A device without descriptors cannot wake the worker, so
//! its sleeps are short and grow while idle (`back_off`).

use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;

use super::{PacketDevice, Stack, StackConfig};
use crate::backend::{Ingress, Read, Transport, WorkerPoll, WorkerTransport, Write};
use crate::stats::WorkerStats;
use crate::worker::{ConnId, Dialect};

const DEVICE: Token = Token(0);
/// Frames received per turn.
pub const RX_BUDGET: usize = 256;
/// The longest sleep of a device that cannot wake the worker, and the
/// first one.
const MAX_BACK_OFF: Duration = Duration::from_millis(1);
const MIN_BACK_OFF: Duration = Duration::from_micros(20);

/// A device and its stack's settings, on their way to the worker's thread.
pub struct UserspaceWorker<D: PacketDevice> {
    pub device: D,
    pub stack: StackConfig,
}

impl<D: PacketDevice + Send + 'static> WorkerTransport for UserspaceWorker<D> {
    type Transport = UserspaceTransport<D>;

    fn start(self, poll: WorkerPoll, now: Instant) -> io::Result<UserspaceTransport<D>> {
        UserspaceTransport::new(self.device, self.stack, poll.poll, now)
    }
}

pub struct UserspaceTransport<D: PacketDevice> {
    device: D,
    stack: Stack,
    poll: Poll,
    events: Events,
    /// Whether the device has descriptors that wake the poll.
    device_wakes: bool,
    /// The next sleep of a device that cannot wake the worker.
    back_off: Duration,
    /// Connections whose output did not fit their socket's send buffer.
    blocked: Vec<ConnId>,
    established: Vec<SocketHandle>,
    touched: Vec<ConnId>,
}

impl<D: PacketDevice> UserspaceTransport<D> {
    pub fn new(
        mut device: D,
        config: StackConfig,
        poll: Poll,
        now: Instant,
    ) -> io::Result<UserspaceTransport<D>> {
        let mut fds: Vec<RawFd> = Vec::new();
        device.wait_fds(&mut fds);
        for fd in &fds {
            poll.registry()
                .register(&mut SourceFd(fd), DEVICE, Interest::READABLE)?;
        }
        let stack = Stack::new(config, &mut device, now);
        device.flush_tx();
        Ok(UserspaceTransport {
            device,
            stack,
            poll,
            events: Events::with_capacity(16),
            device_wakes: !fds.is_empty(),
            back_off: MIN_BACK_OFF,
            blocked: Vec::new(),
            established: Vec::new(),
            touched: Vec::new(),
        })
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    fn accept_new(&mut self, ingress: &mut Ingress<'_>) {
        self.stack.take_established(&mut self.established);
        for i in 0..self.established.len() {
            let handle = self.established[i];
            let dialect = if self.stack.on_nats_port(handle) {
                Dialect::Nats
            } else {
                Dialect::Binary
            };
            let peer = self.stack.established_peer(handle);
            let cid = ingress.accept(peer, dialect);
            self.stack.bind(cid, handle);
        }
    }
}

impl<D: PacketDevice> Transport for UserspaceTransport<D> {
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        if timeout.is_zero() {
            // A busy (or spinning) turn: the next sleep starts short again.
            self.back_off = MIN_BACK_OFF;
            return Ok(());
        }
        let wakes = self.device_wakes && self.device.arm_wait();
        // The rx check after the core announced the sleep and the device
        // armed its wake-up: a frame handed over after this wakes the fd
        // (the event is queued at hand-over time, so it cannot be missed).
        if self.device.rx_ready() {
            self.device.disarm_wait();
            return Ok(());
        }
        let timeout = if wakes {
            timeout
        } else {
            let sleep = timeout.min(self.back_off);
            self.back_off = (self.back_off * 2).min(MAX_BACK_OFF);
            sleep
        };
        let result = match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        };
        self.device.disarm_wait();
        result
    }

    fn has_pending(&self) -> bool {
        self.device.tx_pending() || self.device.rx_ready()
    }

    fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        self.stack.poll_delay(now).map(|delay| now + delay)
    }

    fn poll_ingress(&mut self, now: Instant, ingress: &mut Ingress<'_>) -> bool {
        let received = self.stack.poll_ingress(&mut self.device, now, RX_BUDGET);
        self.accept_new(ingress);
        // Only the connections that received frames (or ran timers): not
        // all of them.
        self.stack.take_touched(&mut self.touched);
        for &cid in &self.touched {
            ingress.readable(cid);
        }
        for cid in self.blocked.drain(..) {
            ingress.writable(cid);
        }
        received > 0
    }

    fn read(&mut self, cid: ConnId, sink: impl FnOnce(&[u8])) -> Read {
        if !self.stack.has(cid) {
            return Read::Failed;
        }
        let socket = self.stack.socket(cid);
        if socket.state() == State::Closed {
            // Reset by the peer, or timed out.
            return Read::Failed;
        }
        if socket.can_recv() {
            let read = socket.recv(|bytes| {
                sink(bytes);
                (bytes.len(), ())
            });
            return match read {
                Ok(()) => Read::Data,
                Err(_) => Read::Failed,
            };
        }
        if socket.may_recv() {
            Read::WouldBlock
        } else {
            // FIN received and everything before it read.
            Read::Eof
        }
    }

    fn write(&mut self, cid: ConnId, data: &[IoSlice<'_>]) -> Write {
        if !self.stack.has(cid) {
            return Write::Failed;
        }
        let socket = self.stack.socket(cid);
        if socket.state() == State::Closed || !socket.may_send() {
            return Write::Failed;
        }
        let mut written = 0;
        for slice in data {
            match socket.send_slice(slice) {
                Ok(n) => {
                    written += n;
                    if n < slice.len() {
                        break;
                    }
                }
                Err(_) => return Write::Failed,
            }
        }
        if written == 0 {
            self.blocked.push(cid);
            return Write::WouldBlock;
        }
        Write::Wrote(written)
    }

    fn close(&mut self, cid: ConnId, now: Instant) {
        self.stack.release(cid, now);
    }

    fn poll_egress(&mut self, now: Instant) {
        self.stack.poll_egress(&mut self.device, now);
        self.device.flush_tx();
        self.stack.reap(now);
    }

    fn stop_accepting(&mut self, _now: Instant) {
        self.stack.stop_listening();
    }

    fn is_lingering(&self) -> bool {
        self.stack.closing_count() > 0
    }

    fn report(&mut self, stats: &WorkerStats) {
        self.device.stats().report(&self.stack.stats(), stats);
        if let Some(nic) = self.device.nic_stats() {
            nic.report(stats);
        }
    }

    fn shutdown(&mut self, now: Instant) {
        self.stack.abort_all();
        self.stack.poll_egress(&mut self.device, now);
        self.device.flush_tx();
        tracing::info!(
            device = ?self.device.stats(),
            stack = ?self.stack.stats(),
            "user-space transport stopped"
        );
    }
}
