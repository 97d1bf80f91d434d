//! The kernel backend: one SO_REUSEPORT listener and one epoll (mio) instance
//! per worker; sockets are non-blocking and edge-triggered.

use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::{WorkerPoll, WAKER};
use crate::stats::Counter;
use crate::worker::{ConnId, WorkerCore};

/// Runs gathered per writev: a queue of shared payloads alternates header
/// and payload, so this covers 256 messages per call (IOV_MAX is 1024).
const WRITEV_SLICES: usize = 512;

const LISTENER: Token = Token(usize::MAX - 1);
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per connection per loop iteration, so one busy publisher cannot
/// starve the others.
const READS_PER_TURN: usize = 4;
/// How often timers (server PINGs, close deadlines) are checked.
const TICK: Duration = Duration::from_millis(100);

/// Binds `workers` listeners to the same address with SO_REUSEPORT, so the
/// kernel spreads connections over the workers. With port 0 the first
/// listener picks the port and the others join it.
pub fn bind_listeners(addr: SocketAddr, workers: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(workers);
    let mut addr = addr;
    for _ in 0..workers {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

pub struct KernelWorker {
    core: WorkerCore,
    poll: Poll,
    listener: Option<TcpListener>,
    sockets: Vec<Option<TcpStream>>,
    wakers: Arc<[Arc<Waker>]>,
    shutdown: Arc<AtomicBool>,
    drain_timeout: Duration,
    /// Connections that may have unread bytes (edge-triggered readiness).
    readable: Vec<ConnId>,
    scratch: Vec<u8>,
    dirty: Vec<ConnId>,
    from_core: Vec<ConnId>,
}

impl KernelWorker {
    pub fn new(
        core: WorkerCore,
        poll: WorkerPoll,
        listener: std::net::TcpListener,
        wakers: Arc<[Arc<Waker>]>,
        shutdown: Arc<AtomicBool>,
        drain_timeout: Duration,
    ) -> io::Result<KernelWorker> {
        let mut listener = TcpListener::from_std(listener);
        poll.poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(KernelWorker {
            core,
            poll: poll.poll,
            listener: Some(listener),
            sockets: Vec::new(),
            wakers,
            shutdown,
            drain_timeout,
            readable: Vec::new(),
            scratch: vec![0; READ_CHUNK],
            dirty: Vec::new(),
            from_core: Vec::new(),
        })
    }

    /// The worker loop; returns once drained after shutdown.
    pub fn run(mut self) -> io::Result<WorkerCore> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        let mut drain_deadline = None;
        loop {
            self.core.take_resumed(&mut self.readable);
            let busy = self.core.has_pending_work() || !self.readable.is_empty();
            let timeout = if busy {
                Duration::ZERO
            } else {
                next_tick.saturating_duration_since(Instant::now())
            };
            let sleeping = !timeout.is_zero() && self.core.prepare_sleep();
            let timeout = if sleeping { timeout } else { Duration::ZERO };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            if sleeping {
                self.core.woke_up();
            }
            let now = Instant::now();
            self.core.stats.inc(Counter::LoopIterations);
            if !events.is_empty() || busy {
                self.core.stats.inc(Counter::LoopBusyIterations);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(now),
                    WAKER => {}
                    Token(cid) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.readable.push(cid);
                        }
                        if event.is_writable() && self.sockets.get(cid).is_some_and(Option::is_some)
                        {
                            self.dirty.push(cid);
                        }
                    }
                }
            }
            self.core.poll_peers(now);
            self.read_ready(now);
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

            if self.shutdown.load(Ordering::Relaxed) && drain_deadline.is_none() {
                drain_deadline = Some(now + self.drain_timeout);
                if let Some(mut listener) = self.listener.take() {
                    let _ = self.poll.registry().deregister(&mut listener);
                }
                self.core.begin_drain(now);
                self.flush(now);
            }
            if let Some(deadline) = drain_deadline {
                if self.core.connection_count() == 0 || now >= deadline {
                    self.close_all();
                    return Ok(self.core);
                }
            }
        }
    }

    fn accept_all(&mut self, now: Instant) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let cid = self.core.accept(now);
                    self.core.set_peer(cid, peer);
                    let token = Token(cid);
                    if let Err(error) = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        tracing::warn!(%error, "cannot register a connection");
                        self.core.on_closed(cid);
                        continue;
                    }
                    if self.sockets.len() <= cid {
                        self.sockets.resize_with(cid + 1, || None);
                    }
                    self.sockets[cid] = Some(stream);
                    self.readable.push(cid);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // EMFILE and friends: leave the backlog for the next turn.
                    tracing::warn!(%error, "accept failed");
                    return;
                }
            }
        }
    }

    /// Reads from every connection that may have bytes and wants them.
    fn read_ready(&mut self, now: Instant) {
        if self.readable.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.readable);
        pending.sort_unstable();
        pending.dedup();
        for cid in pending.drain(..) {
            match self.read_conn(cid, now) {
                ReadOutcome::Drained => {}
                ReadOutcome::More => self.readable.push(cid),
                ReadOutcome::Closed => self.close(cid),
            }
        }
        if self.readable.is_empty() {
            self.readable = pending;
        }
    }

    fn read_conn(&mut self, cid: ConnId, now: Instant) -> ReadOutcome {
        let Some(Some(stream)) = self.sockets.get_mut(cid) else {
            return ReadOutcome::Drained;
        };
        for _ in 0..READS_PER_TURN {
            if self.core.is_closing(cid) {
                return ReadOutcome::Drained;
            }
            if !self.core.wants_input(cid) {
                // Waiting: leave the bytes in the kernel so TCP paces the
                // sender; the core hands the connection back when it
                // resumes (`take_resumed`).
                return ReadOutcome::Drained;
            }
            match stream.read(&mut self.scratch) {
                Ok(0) => {
                    self.core.on_peer_closed(cid);
                    return if self.core.should_close(cid, now) {
                        ReadOutcome::Closed
                    } else {
                        ReadOutcome::Drained
                    };
                }
                Ok(n) => self.core.on_received(cid, &self.scratch[..n], now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Closed,
            }
        }
        ReadOutcome::More
    }

    /// Writes queued output and closes connections that are done.
    fn flush(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        self.core.take_dirty(&mut self.from_core);
        dirty.extend_from_slice(&self.from_core);
        dirty.sort_unstable();
        dirty.dedup();
        for &cid in &dirty {
            let Some(Some(stream)) = self.sockets.get_mut(cid) else {
                continue;
            };
            let mut failed = false;
            loop {
                let mut slices = [IoSlice::new(&[]); WRITEV_SLICES];
                let filled = self.core.output_vectored(cid, &mut slices);
                if filled == 0 {
                    break;
                }
                match stream.write_vectored(&slices[..filled]) {
                    Ok(0) => {
                        failed = true;
                        break;
                    }
                    Ok(n) => self.core.on_output_written(cid, n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed || self.core.should_close(cid, now) {
                self.close(cid);
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    fn close(&mut self, cid: ConnId) {
        if let Some(slot) = self.sockets.get_mut(cid) {
            if let Some(mut stream) = slot.take() {
                let _ = self.poll.registry().deregister(&mut stream);
                self.core.on_closed(cid);
            }
        }
    }

    fn close_all(&mut self) {
        for cid in 0..self.sockets.len() {
            self.close(cid);
        }
    }
}

enum ReadOutcome {
    /// Read until the socket had no more.
    Drained,
    /// May have more; try again next turn.
    More,
    Closed,
}
