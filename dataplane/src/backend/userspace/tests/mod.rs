//! Deterministic tests of the user-space stack ([`stack`]) and of whole
//! workers over it ([`worker`]), on [`MemoryDevice`] links: no root, no
//! sockets, no threads, no clock. Time is simulated: a fixed base
//! `Instant` plus offsets, advanced by the harness ([`next_time`]), and
//! smoltcp's time is taken from it on both ends.
//!
//! The other end of each link is a client host ([`Host`]): a plain smoltcp
//! interface with its own TCP sockets, whose byte streams the tests write
//! and read ([`Stream`]).
//!
//! Faults come from a seeded PRNG: a failing test prints its seed, and
//! `BLIPMQ_SEED=<seed> cargo test --release -p blipmq-dataplane --lib
//! backend::userspace::tests` replays it.

mod stack;
mod worker;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr};

use super::memory::{Faults, MemoryDevice};
use super::{PacketDevice, StackConfig};

/// The broker's address and port on every link.
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PORT: u16 = 4222;
/// How much simulated time a step takes while frames are on a link: the
/// link's one-way latency, as the stacks see it.
const LATENCY: Duration = Duration::from_micros(50);

/// The seed of a test's faults: `BLIPMQ_SEED` from the environment, else
/// the test's own default.
fn seed(default: u64) -> u64 {
    match std::env::var("BLIPMQ_SEED") {
        Ok(seed) => seed.parse().expect("BLIPMQ_SEED is a u64"),
        Err(_) => default,
    }
}

/// Loss, reordering, duplication and corruption all at once.
fn rough(loss: f64) -> Faults {
    Faults {
        loss,
        duplicate: 0.01,
        reorder: 0.03,
        reorder_depth: 3,
        corrupt: 0.01,
        queue_limit: 0,
    }
}

/// The broker's stack on a link (10.0.0.1/24): small buffers, a small
/// listener pool, a fixed seed.
fn stack_config(mac: [u8; 6], seed: u64) -> StackConfig {
    StackConfig {
        addr: SERVER_IP,
        prefix: 24,
        gateway: None,
        mac,
        port: PORT,
        nats_port: None,
        rx_buffer: 64 << 10,
        tx_buffer: 64 << 10,
        rto_min: crate::config::DEFAULT_TCP_RTO_MIN,
        segment_offload: None,
        listeners: 8,
        timeout: Duration::from_secs(30),
        linger: Duration::from_secs(2),
        seed: Some(seed),
        shared_address: false,
    }
}

/// When the next step runs: one latency on while frames move, else at the
/// earliest deadline of either side (never sooner than one latency on).
/// None: nothing will ever happen again.
fn next_time(
    now: Instant,
    busy: bool,
    deadlines: impl IntoIterator<Item = Option<Instant>>,
) -> Option<Instant> {
    if busy {
        return Some(now + LATENCY);
    }
    let at = deadlines.into_iter().flatten().min()?;
    Some(at.max(now + LATENCY))
}

/// A world of stacks and links, driven step by step on simulated time.
trait Simulation: Sized {
    /// Every party takes one turn, then time moves on.
    fn step(&mut self);
    /// Simulated time since the start.
    fn elapsed(&self) -> Duration;
    /// The seed of the world's faults.
    fn seed(&self) -> u64;

    /// Steps until `done`, at most `max_steps` times: failing says what
    /// did not happen, after how much simulated time, with which seed.
    fn run_until(&mut self, what: &str, max_steps: usize, mut done: impl FnMut(&mut Self) -> bool) {
        for _ in 0..max_steps {
            if done(self) {
                return;
            }
            self.step();
        }
        assert!(
            done(self),
            "{what}: not done after {max_steps} steps, {:?} of simulated time (seed {})",
            self.elapsed(),
            self.seed()
        );
    }
}

/// One TCP connection of a test: bytes still to put into its socket, and
/// what was read from it.
#[derive(Default)]
struct Stream {
    out: Vec<u8>,
    received: Vec<u8>,
    /// Read the socket on each pump (a test stops reading to let windows
    /// close).
    paused: bool,
    /// The peer's FIN came and everything before it was read.
    eof: bool,
}

impl Stream {
    fn send(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Moves bytes between the stream and its socket.
    fn pump(&mut self, socket: &mut tcp::Socket<'_>) {
        if !self.out.is_empty() && socket.may_send() {
            if let Ok(n) = socket.send_slice(&self.out) {
                self.out.drain(..n);
            }
        }
        if self.paused {
            return;
        }
        let received = &mut self.received;
        while socket.can_recv() {
            let read = socket.recv(|bytes| {
                received.extend_from_slice(bytes);
                (bytes.len(), ())
            });
            if read.is_err() {
                break;
            }
        }
        let after_fin = matches!(
            socket.state(),
            State::CloseWait | State::LastAck | State::Closing | State::TimeWait
        );
        if after_fin && !socket.can_recv() {
            self.eof = true;
        }
    }
}

/// A client host: a smoltcp interface on the other end of a link, and its
/// connections to the broker, each a socket and a [`Stream`].
struct Host {
    iface: Interface,
    device: MemoryDevice,
    sockets: SocketSet<'static>,
    conns: Vec<(SocketHandle, Stream)>,
    epoch: Instant,
    next_port: u16,
    buffer: usize,
}

impl Host {
    /// A host at `ip` (in 10.0.0.0/24) whose sockets have `buffer` bytes
    /// each way.
    fn new(
        mut device: MemoryDevice,
        ip: Ipv4Addr,
        seed: u64,
        epoch: Instant,
        buffer: usize,
    ) -> Host {
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(device.mac())));
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(ip.into(), 24))
                .expect("room for one address");
        });
        Host {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            conns: Vec::new(),
            epoch,
            next_port: 40_000,
            buffer,
        }
    }

    fn time(&self, now: Instant) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(now.duration_since(self.epoch).as_micros() as i64)
    }

    /// Opens a connection to the broker; returns its index.
    fn connect(&mut self) -> usize {
        let handle = self.open_socket();
        self.conns.push((handle, Stream::default()));
        self.conns.len() - 1
    }

    fn open_socket(&mut self) -> SocketHandle {
        let rx = tcp::SocketBuffer::new(vec![0; self.buffer]);
        let tx = tcp::SocketBuffer::new(vec![0; self.buffer]);
        let mut socket = tcp::Socket::new(rx, tx);
        socket.set_nagle_enabled(false);
        socket.set_ack_delay(None);
        let port = self.next_port;
        self.next_port += 1;
        socket
            .connect(
                self.iface.context(),
                (IpAddress::Ipv4(SERVER_IP), PORT),
                port,
            )
            .expect("connect");
        self.sockets.add(socket)
    }

    fn socket(&mut self, conn: usize) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.conns[conn].0)
    }

    fn state(&self, conn: usize) -> State {
        self.sockets.get::<tcp::Socket>(self.conns[conn].0).state()
    }

    fn stream(&mut self, conn: usize) -> &mut Stream {
        &mut self.conns[conn].1
    }

    fn send(&mut self, conn: usize, bytes: &[u8]) {
        self.stream(conn).send(bytes);
    }

    /// One turn of the host: move the streams' bytes, run the interface,
    /// and send what it made.
    fn poll(&mut self, now: Instant) {
        let ts = self.time(now);
        self.pump();
        self.iface.poll(ts, &mut self.device, &mut self.sockets);
        self.pump();
        // What the streams just put into the sockets goes out this turn.
        self.iface.poll(ts, &mut self.device, &mut self.sockets);
        self.device.flush_tx();
    }

    fn pump(&mut self) {
        for (handle, stream) in &mut self.conns {
            stream.pump(self.sockets.get_mut::<tcp::Socket>(*handle));
        }
    }

    /// When the host next needs a poll without input.
    fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let ts = self.time(now);
        let at = self.iface.poll_at(ts, &self.sockets)?;
        Some(self.epoch + Duration::from_micros(at.total_micros().max(0) as u64))
    }

    /// Whether frames are on the link, or bytes wait to enter a socket
    /// that has room.
    fn busy(&self) -> bool {
        self.device.in_flight() > 0
            || self.device.tx_pending()
            || self.conns.iter().any(|(handle, stream)| {
                !stream.out.is_empty() && self.sockets.get::<tcp::Socket>(*handle).can_send()
            })
    }
}
