//! Backends move bytes between the network and a [`WorkerCore`]: the only
//! I/O of the dataplane.
//!
//! A backend is a [`Backend`] (a factory, run on the starting thread) that
//! hands each worker a [`WorkerTransport`], which the worker's own thread
//! turns into a [`Transport`]. One [`driver::Driver`] runs every worker's
//! loop over its transport; no backend has a loop of its own.
//!
//! * `kernel` (the default): epoll on kernel sockets, one SO_REUSEPORT
//!   listener per worker.
//! * `userspace`: the smoltcp TCP/IP stack, written once over a
//!   [`userspace::PacketDevice`]: AF_PACKET rings (`afpacket`), an
//!   in-memory pair for tests (`userspace::memory`), DPDK ports.
//!
//! # The transport contract
//!
//! A transport belongs to one worker thread and is never shared. Each loop
//! turn the driver calls, in this order:
//!
//! 1. [`Transport::wait`]`(timeout)`: block for at most `timeout` until the
//!    network or a peer worker (through the worker's [`WorkerPoll`] waker)
//!    has something; with a zero timeout, only collect readiness without
//!    blocking. The driver passes a non-zero timeout only after the core
//!    agreed to sleep (`WorkerCore::prepare_sleep`), and never more than
//!    the earliest of the core's and the transport's deadlines
//!    ([`Transport::poll_timeout`]). Spurious returns are allowed.
//! 2. [`Transport::poll_ingress`]: take in what arrived since the last
//!    call and report it through [`Ingress`]: new connections (each gets its
//!    id from the core there and then), connections that may have bytes to
//!    read, connections that may take more output. Reporting a connection
//!    that has nothing is harmless; missing one is a hang: a connection
//!    whose read or write ended in `WouldBlock` must be reported again once
//!    it can progress (edge-triggered).
//! 3. [`Transport::read`] on reported connections, repeatedly, while the
//!    core wants input: each call hands at most one chunk of bytes to the
//!    sink, in stream order.
//! 4. [`Transport::write`] on connections with output: takes a prefix of
//!    the slices (all of them, or as much as fits) and says how much.
//! 5. [`Transport::close`] when the core is done with a connection; the
//!    transport may keep flushing its last bytes and FIN
//!    ([`Transport::is_lingering`]) but never reports its id again. The
//!    driver then tells the core (`WorkerCore::on_closed`); an id may be
//!    reused for a new connection afterwards.
//! 6. [`Transport::poll_egress`]: the end of the turn: send what the turn
//!    wrote (one tx burst for the packet backends) and run timers.
//!
//! When the core's tick is due, [`Transport::report`] writes the
//! transport's counters into the worker's stats block first.
//!
//! On shutdown the driver calls [`Transport::stop_accepting`] once, keeps
//! turning until the core has no connections and the transport is not
//! lingering (or the drain deadline passes), closes what is left and calls
//! [`Transport::shutdown`] last.
//!
//! A transport may assume that ids it is given come from the core of its
//! own worker and are open (reported by it and not closed).
//!
//! [`WorkerCore`]: crate::worker::WorkerCore

pub mod afpacket;
// Frees its leaked mbuf pool and keeps the thread's CPU affinity across
// the EAL's start: the only `unsafe` outside ffi/.
#[cfg(feature = "dpdk")]
#[allow(unsafe_code)]
pub mod dpdk;
pub mod driver;
pub mod kernel;
pub mod userspace;

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Poll, Token, Waker};

use crate::config::PollStrategy;
use crate::stats::WorkerStats;
use crate::worker::{ConnId, Dialect, WorkerCore};

/// The token of a worker's waker in its poll instance.
pub const WAKER: Token = Token(usize::MAX - 2);

/// The poll instance and waker of a worker, made before its thread starts so
/// that every worker can hold every other's waker.
pub struct WorkerPoll {
    pub(crate) poll: Poll,
    pub waker: Arc<Waker>,
}

impl WorkerPoll {
    pub fn new() -> io::Result<WorkerPoll> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(WorkerPoll { poll, waker })
    }
}

/// How an idle worker waits for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitPolicy {
    pub strategy: PollStrategy,
    /// With [`PollStrategy::Adaptive`]: how long to keep polling after the
    /// last work before sleeping in [`Transport::wait`].
    pub spin: Duration,
}

impl WaitPolicy {
    /// Sleep as soon as there is nothing to do (the kernel backend: epoll
    /// wakes it).
    pub const SLEEP_WHEN_IDLE: WaitPolicy = WaitPolicy {
        strategy: PollStrategy::Adaptive,
        spin: Duration::ZERO,
    };
}

/// Makes the transports of a broker's workers. Constructed on the starting
/// thread before any worker runs (binding listeners, opening devices,
/// initialising a driver library); kept alive until every worker stopped.
pub trait Backend: Send + 'static {
    type Worker: WorkerTransport;
    /// The backend's name, for logs.
    fn name(&self) -> &'static str;
    /// The address clients connect to.
    fn local_addr(&self) -> SocketAddr;
    /// The address NATS clients connect to, when the backend serves them.
    fn nats_addr(&self) -> Option<SocketAddr> {
        None
    }
    /// How idle workers wait.
    fn wait_policy(&self) -> WaitPolicy;
    /// Whether its transports open connections ([`Transport::connect`]).
    fn opens_connections(&self) -> bool {
        false
    }
    /// Worker `id`'s part, called once per worker in id order.
    fn worker(&mut self, id: usize) -> io::Result<Self::Worker>;
    /// The device, for the control plane; none for kernel sockets.
    fn port_monitor(&self) -> Option<Arc<dyn PortMonitor>> {
        None
    }
    /// Whether the rings between workers should be in hugepages (where the
    /// host has set them aside for the dataplane).
    fn hugepage_rings(&self) -> bool {
        false
    }
}

/// What the control plane may ask a backend about its device, live (the
/// `port` command, `/metrics`): read on the control plane's threads, never
/// a worker's.
pub trait PortMonitor: Send + Sync {
    /// The device: its name, driver, link and the counters it keeps for
    /// the whole port, as JSON.
    fn describe(&self) -> serde_json::Value;
    /// The device's extended statistics, `(name, value)`.
    fn xstats(&self) -> Vec<(String, u64)>;
}

impl std::fmt::Debug for dyn PortMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortMonitor")
    }
}

/// One worker's part of a backend, moved to the worker's thread.
pub trait WorkerTransport: Send + 'static {
    type Transport: Transport;
    /// Becomes the transport, on the worker's own (pinned) thread.
    fn start(self, poll: WorkerPoll, now: Instant) -> io::Result<Self::Transport>;
}

/// What one [`Transport::read`] call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Bytes went to the sink; there may be more.
    Data,
    /// Nothing to read now.
    WouldBlock,
    /// The peer sent FIN and every byte before it was read.
    Eof,
    /// The connection is broken (reset, timed out, I/O error).
    Failed,
}

/// What one [`Transport::write`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Took this many bytes from the front of the slices (at least one).
    Wrote(usize),
    /// Takes nothing now; the connection is reported again when it does.
    WouldBlock,
    /// The connection is broken.
    Failed,
}

/// The I/O of one worker; see the module documentation for the contract.
pub trait Transport {
    /// Waits at most `timeout` for readiness; zero only collects it.
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;
    /// Work the loop must come back for without sleeping (received frames
    /// not taken in yet, transmissions to retry).
    fn has_pending(&self) -> bool;
    /// When the transport next needs a turn without any input (its own
    /// timers), if ever.
    fn poll_timeout(&mut self, now: Instant) -> Option<Instant>;
    /// Takes in what arrived; returns whether anything did.
    fn poll_ingress(&mut self, now: Instant, ingress: &mut Ingress<'_>) -> bool;
    /// Opens a connection to `addr` as `cid` (the broker's own, e.g. to a
    /// leaf-node hub). It is established when `cid` is first reported
    /// writable; until then `read` and `write` would block. A refused or
    /// failed attempt is reported readable and then reads as `Failed`. An
    /// error here means the attempt could not start.
    fn connect(&mut self, cid: ConnId, addr: SocketAddr) -> io::Result<()> {
        let _ = (cid, addr);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this backend does not open connections",
        ))
    }
    /// Reads one chunk of `cid`'s bytes into `sink`.
    fn read(&mut self, cid: ConnId, sink: impl FnOnce(&[u8])) -> Read;
    /// Writes a prefix of `data` to `cid`.
    fn write(&mut self, cid: ConnId, data: &[IoSlice<'_>]) -> Write;
    /// The core is done with `cid`.
    fn close(&mut self, cid: ConnId, now: Instant);
    /// End of a turn: transmit, run timers.
    fn poll_egress(&mut self, now: Instant);
    /// Accept no more connections (the drain began).
    fn stop_accepting(&mut self, now: Instant);
    /// Whether closed connections are still sending their last bytes.
    fn is_lingering(&self) -> bool;
    /// The worker stops: abort what is left and send the last frames.
    fn shutdown(&mut self, now: Instant);
    /// Writes the transport's counters (the `port_*` ones) into the
    /// worker's stats block; called at the core's tick.
    fn report(&mut self, _stats: &WorkerStats) {}
}

/// What a transport reports from [`Transport::poll_ingress`].
pub struct Ingress<'a> {
    pub(crate) core: &'a mut WorkerCore,
    pub(crate) readable: &'a mut Vec<ConnId>,
    pub(crate) writable: &'a mut Vec<ConnId>,
    pub(crate) now: Instant,
}

impl Ingress<'_> {
    /// A new connection from `peer`, speaking `dialect`: its id in the core
    /// (which queues INFO, or refuses it with an ERROR; the per-IP limit
    /// needs the peer here). It is read this turn.
    pub fn accept(&mut self, peer: Option<SocketAddr>, dialect: Dialect) -> ConnId {
        let cid = self.core.accept_from(self.now, dialect, peer);
        self.readable.push(cid);
        cid
    }

    /// A connection accepted this turn that the transport could not keep.
    pub fn abandon(&mut self, cid: ConnId) {
        self.readable.retain(|&c| c != cid);
        self.core.on_closed(cid);
    }

    /// `cid` may have bytes to read.
    pub fn readable(&mut self, cid: ConnId) {
        self.readable.push(cid);
    }

    /// `cid` may take more output.
    pub fn writable(&mut self, cid: ConnId) {
        self.writable.push(cid);
    }
}
