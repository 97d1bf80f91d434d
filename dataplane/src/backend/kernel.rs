//! The kernel backend: one SO_REUSEPORT listener per protocol (BlipMQ's,
//! and NATS's when `[nats] listen` is set) and one epoll (mio) instance per
//! worker; sockets are non-blocking and edge-triggered.

use std::io::{self, IoSlice, Read as _, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::{
    Backend, Ingress, Read, Transport, WaitPolicy, WorkerPoll, WorkerTransport, Write, WAKER,
};
use crate::worker::{ConnId, Dialect};

/// The first listener's token; the others count down from it, clear of
/// [`WAKER`] above and of connection ids, which count up from 0.
const LISTENERS: usize = usize::MAX - 16;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 64 * 1024;

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

/// The kernel backend's factory: the workers' listeners, bound up front.
pub struct KernelBackend {
    local_addr: SocketAddr,
    nats_addr: Option<SocketAddr>,
    /// Per worker, its listener for each protocol.
    listeners: Vec<Vec<(std::net::TcpListener, Dialect)>>,
}

impl KernelBackend {
    /// Binds BlipMQ's listeners on `addr`, and NATS's on `nats` if given.
    pub fn bind(
        addr: SocketAddr,
        nats: Option<SocketAddr>,
        workers: usize,
    ) -> io::Result<KernelBackend> {
        let mut listeners: Vec<Vec<_>> = bind_listeners(addr, workers)?
            .into_iter()
            .map(|listener| vec![(listener, Dialect::Binary)])
            .collect();
        let local_addr = listeners[0][0].0.local_addr()?;
        let mut nats_addr = None;
        if let Some(nats) = nats {
            for (worker, listener) in bind_listeners(nats, workers)?.into_iter().enumerate() {
                nats_addr = Some(listener.local_addr()?);
                listeners[worker].push((listener, Dialect::Nats));
            }
        }
        Ok(KernelBackend {
            local_addr,
            nats_addr,
            listeners,
        })
    }
}

impl Backend for KernelBackend {
    type Worker = KernelWorker;

    fn name(&self) -> &'static str {
        "kernel"
    }

    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn nats_addr(&self) -> Option<SocketAddr> {
        self.nats_addr
    }

    fn wait_policy(&self) -> WaitPolicy {
        WaitPolicy::SLEEP_WHEN_IDLE
    }

    fn opens_connections(&self) -> bool {
        true
    }

    fn worker(&mut self, id: usize) -> io::Result<KernelWorker> {
        let listeners = std::mem::take(&mut self.listeners[id]);
        if listeners.is_empty() {
            return Err(io::Error::other(format!("no listener for worker {id}")));
        }
        Ok(KernelWorker { listeners })
    }
}

/// A worker's listeners, on their way to the worker's thread.
pub struct KernelWorker {
    listeners: Vec<(std::net::TcpListener, Dialect)>,
}

impl WorkerTransport for KernelWorker {
    type Transport = KernelTransport;

    fn start(self, poll: WorkerPoll, _now: Instant) -> io::Result<KernelTransport> {
        let mut listeners = Vec::with_capacity(self.listeners.len());
        for (at, (listener, dialect)) in self.listeners.into_iter().enumerate() {
            let mut listener = TcpListener::from_std(listener);
            poll.poll.registry().register(
                &mut listener,
                Token(LISTENERS - at),
                Interest::READABLE,
            )?;
            listeners.push(Listening {
                listener,
                dialect,
                accepting: false,
            });
        }
        Ok(KernelTransport {
            poll: poll.poll,
            events: Events::with_capacity(1024),
            listeners,
            sockets: Vec::new(),
            scratch: vec![0; READ_CHUNK],
        })
    }
}

/// One listener of a worker, and the protocol its connections speak.
struct Listening {
    listener: TcpListener,
    dialect: Dialect,
    /// It had a connection waiting at the last wait.
    accepting: bool,
}

/// Kernel sockets of one worker, by connection id.
pub struct KernelTransport {
    poll: Poll,
    events: Events,
    /// Empty once the worker stopped accepting.
    listeners: Vec<Listening>,
    sockets: Vec<Option<TcpStream>>,
    scratch: Vec<u8>,
}

impl KernelTransport {
    fn socket(&mut self, cid: ConnId) -> Option<&mut TcpStream> {
        self.sockets.get_mut(cid).and_then(Option::as_mut)
    }

    /// Accepts every connection waiting on listener `at`.
    fn accept_all(&mut self, at: usize, ingress: &mut Ingress<'_>) {
        let Listening {
            listener, dialect, ..
        } = &self.listeners[at];
        loop {
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let cid = ingress.accept(Some(peer), *dialect);
                    if let Err(error) = self.poll.registry().register(
                        &mut stream,
                        Token(cid),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        tracing::warn!(%error, "cannot register a connection");
                        ingress.abandon(cid);
                        continue;
                    }
                    if self.sockets.len() <= cid {
                        self.sockets.resize_with(cid + 1, || None);
                    }
                    self.sockets[cid] = Some(stream);
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
}

impl Transport for KernelTransport {
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn has_pending(&self) -> bool {
        false
    }

    fn poll_timeout(&mut self, _now: Instant) -> Option<Instant> {
        None
    }

    fn poll_ingress(&mut self, _now: Instant, ingress: &mut Ingress<'_>) -> bool {
        let arrived = !self.events.is_empty();
        for event in self.events.iter() {
            match event.token() {
                WAKER => {}
                Token(token) if token <= LISTENERS && token > LISTENERS - self.listeners.len() => {
                    self.listeners[LISTENERS - token].accepting = true;
                }
                Token(cid) => {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        ingress.readable(cid);
                    }
                    if event.is_writable() && self.sockets.get(cid).is_some_and(Option::is_some) {
                        ingress.writable(cid);
                    }
                }
            }
        }
        self.events.clear();
        for at in 0..self.listeners.len() {
            if std::mem::take(&mut self.listeners[at].accepting) {
                self.accept_all(at, ingress);
            }
        }
        arrived
    }

    fn connect(&mut self, cid: ConnId, addr: SocketAddr) -> io::Result<()> {
        let mut stream = TcpStream::connect(addr)?;
        let _ = stream.set_nodelay(true);
        self.poll.registry().register(
            &mut stream,
            Token(cid),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        if self.sockets.len() <= cid {
            self.sockets.resize_with(cid + 1, || None);
        }
        self.sockets[cid] = Some(stream);
        Ok(())
    }

    fn read(&mut self, cid: ConnId, sink: impl FnOnce(&[u8])) -> Read {
        let Some(stream) = self.sockets.get_mut(cid).and_then(Option::as_mut) else {
            return Read::Failed;
        };
        loop {
            match stream.read(&mut self.scratch) {
                Ok(0) => return Read::Eof,
                Ok(n) => {
                    sink(&self.scratch[..n]);
                    return Read::Data;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Read::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Read::Failed,
            }
        }
    }

    fn write(&mut self, cid: ConnId, data: &[IoSlice<'_>]) -> Write {
        let Some(stream) = self.socket(cid) else {
            return Write::Failed;
        };
        loop {
            match stream.write_vectored(data) {
                Ok(0) => return Write::Failed,
                Ok(n) => return Write::Wrote(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Write::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Write::Failed,
            }
        }
    }

    fn close(&mut self, cid: ConnId, _now: Instant) {
        if let Some(mut stream) = self.sockets.get_mut(cid).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut stream);
        }
    }

    fn poll_egress(&mut self, _now: Instant) {}

    fn stop_accepting(&mut self, _now: Instant) {
        for mut listening in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listening.listener);
        }
    }

    fn is_lingering(&self) -> bool {
        false
    }

    fn shutdown(&mut self, _now: Instant) {
        for cid in 0..self.sockets.len() {
            self.close(cid, _now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener as StdListener;

    use super::*;

    fn transport() -> KernelTransport {
        let mut backend =
            KernelBackend::bind("127.0.0.1:0".parse().unwrap(), None, 1).expect("bind");
        let worker = backend.worker(0).expect("worker");
        worker
            .start(WorkerPoll::new().expect("poll"), Instant::now())
            .expect("start")
    }

    /// Waits for readiness until `attempt` says it is done; at most 5 s.
    fn until<T>(
        transport: &mut KernelTransport,
        mut attempt: impl FnMut(&mut KernelTransport) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(done) = attempt(transport) {
                return done;
            }
            assert!(Instant::now() < deadline, "timed out");
            transport.wait(Duration::from_millis(10)).expect("wait");
            transport.events.clear();
        }
    }

    #[test]
    fn an_opened_connection_carries_bytes_both_ways() {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let mut transport = transport();
        let cid = 3;
        transport
            .connect(cid, listener.local_addr().unwrap())
            .expect("connect");
        let wrote = until(&mut transport, |t| {
            match t.write(cid, &[IoSlice::new(b"hello")]) {
                Write::Wrote(n) => Some(n),
                Write::WouldBlock => None,
                Write::Failed => panic!("write failed"),
            }
        });
        assert_eq!(wrote, 5);
        let (mut peer, _) = listener.accept().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = [0; 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        peer.write_all(b"world").unwrap();
        let mut received = Vec::new();
        until(&mut transport, |t| {
            match t.read(cid, |bytes| received.extend_from_slice(bytes)) {
                Read::Data if received.len() >= 5 => Some(()),
                Read::Data | Read::WouldBlock => None,
                other => panic!("read: {other:?}"),
            }
        });
        assert_eq!(received, b"world");
    }

    #[test]
    fn a_refused_connection_reads_as_failed() {
        // A port just freed: nothing listens there.
        let addr = StdListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut transport = transport();
        transport.connect(0, addr).expect("the attempt starts");
        until(&mut transport, |t| match t.read(0, |_| {}) {
            Read::Failed => Some(()),
            Read::WouldBlock => None,
            other => panic!("read: {other:?}"),
        });
    }
}
