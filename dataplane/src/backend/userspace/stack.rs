//! The smoltcp side of a worker: one interface, its TCP sockets, a pool of
//! listening sockets, and the map from the core's connection ids to sockets.
//!
//! smoltcp has no accept backlog: a listening socket *becomes* the
//! connection when a SYN arrives. So the stack keeps `listeners` sockets in
//! the LISTEN state at all times: each time one of them takes a SYN, a new
//! listening socket is added in the same loop iteration, so a burst of up
//! to `listeners` simultaneous SYNs is answered (more are reset by smoltcp
//! and retried by the client). A socket that completes the handshake is
//! handed to the worker, which gets a connection id from the core
//! ([`Stack::bind`]); one that fails it (RST, timeout) listens again.

use std::net::Ipv4Addr;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, PollIngressSingleResult, SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, IpListenEndpoint};

use super::PacketDevice;
use crate::worker::ConnId;

/// Settings of a user-space TCP stack.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mac: [u8; 6],
    pub port: u16,
    pub rx_buffer: usize,
    pub tx_buffer: usize,
    /// Sockets kept in LISTEN.
    pub listeners: usize,
    /// How long a connection may leave sent data unacknowledged (or a
    /// handshake unanswered) before it is aborted.
    pub timeout: Duration,
}

/// A socket the core closed, still sending its last bytes and FIN.
struct Closing {
    handle: SocketHandle,
    deadline: std::time::Instant,
    aborted: bool,
}

pub struct Stack {
    config: StackConfig,
    iface: Interface,
    sockets: SocketSet<'static>,
    epoch: std::time::Instant,
    /// Sockets listening or in the middle of a handshake.
    listeners: Vec<SocketHandle>,
    accepting: bool,
    /// The socket of each connection, by connection id.
    conns: Vec<Option<SocketHandle>>,
    closing: Vec<Closing>,
}

/// smoltcp's clock: microseconds since the stack started.
fn timestamp(epoch: std::time::Instant, now: std::time::Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.saturating_duration_since(epoch).as_micros() as i64)
}

impl Stack {
    pub fn new<D: PacketDevice>(
        config: StackConfig,
        device: &mut D,
        now: std::time::Instant,
    ) -> Stack {
        let epoch = now;
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
        // Initial sequence numbers and ports come from this seed.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        iface_config.random_seed = seed;
        let mut iface = Interface::new(iface_config, device, timestamp(epoch, now));
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(config.addr.into(), config.prefix));
        });
        if let Some(gateway) = config.gateway {
            let _ = iface.routes_mut().add_default_ipv4_route(gateway);
        }
        let mut stack = Stack {
            config,
            iface,
            sockets: SocketSet::new(Vec::new()),
            epoch,
            listeners: Vec::new(),
            accepting: true,
            conns: Vec::new(),
            closing: Vec::new(),
        };
        stack.refill_listeners();
        stack
    }

    pub fn now(&self, now: std::time::Instant) -> smoltcp::time::Instant {
        timestamp(self.epoch, now)
    }

    fn new_socket(&self) -> tcp::Socket<'static> {
        let rx = tcp::SocketBuffer::new(vec![0; self.config.rx_buffer]);
        let tx = tcp::SocketBuffer::new(vec![0; self.config.tx_buffer]);
        let mut socket = tcp::Socket::new(rx, tx);
        // A broker answers small frames at once: no Nagle, no delayed ACK.
        socket.set_nagle_enabled(false);
        socket.set_ack_delay(None);
        socket.set_timeout(Some(self.config.timeout.into()));
        socket
    }

    fn listen(&mut self, handle: SocketHandle) {
        let endpoint = IpListenEndpoint {
            addr: Some(self.config.addr.into()),
            port: self.config.port,
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        if let Err(error) = socket.listen(endpoint) {
            tracing::warn!(?error, "cannot listen");
        }
    }

    /// Tops the pool up to `listeners` sockets in LISTEN.
    fn refill_listeners(&mut self) {
        if !self.accepting {
            return;
        }
        let listening = self
            .listeners
            .iter()
            .filter(|&&h| self.sockets.get::<tcp::Socket>(h).state() == State::Listen)
            .count();
        // Half-open handshakes are bounded too (a SYN flood must not grow
        // the pool without limit): past 4x, new SYNs are reset.
        let room = (4 * self.config.listeners).saturating_sub(self.listeners.len());
        for _ in 0..self.config.listeners.saturating_sub(listening).min(room) {
            let socket = self.new_socket();
            let handle = self.sockets.add(socket);
            self.listen(handle);
            self.listeners.push(handle);
        }
    }

    /// Receives up to `budget` frames; returns how many were processed.
    pub fn poll_ingress<D: PacketDevice>(
        &mut self,
        device: &mut D,
        now: std::time::Instant,
        budget: usize,
    ) -> usize {
        let ts = self.now(now);
        self.iface.poll_maintenance(ts);
        // Each SYN takes a listening socket: top the pool up every half pool
        // of frames, so a burst larger than the pool is not reset.
        let refill_every = (self.config.listeners / 2).max(1);
        let mut processed = 0;
        while processed < budget {
            if processed > 0 && processed % refill_every == 0 {
                self.refill_listeners();
            }
            match self
                .iface
                .poll_ingress_single(ts, device, &mut self.sockets)
            {
                PollIngressSingleResult::None => break,
                _ => processed += 1,
            }
        }
        processed
    }

    /// Sends what the sockets have to send.
    pub fn poll_egress<D: PacketDevice>(&mut self, device: &mut D, now: std::time::Instant) {
        let ts = self.now(now);
        // Bounded: each round sends at least one segment or stops.
        for _ in 0..1024 {
            if self.iface.poll_egress(ts, device, &mut self.sockets)
                == smoltcp::iface::PollResult::None
            {
                break;
            }
        }
    }

    /// Sockets that completed their handshake since the last call; each is
    /// replaced by a new listener. The caller binds each to a connection id.
    pub fn take_established(&mut self, into: &mut Vec<SocketHandle>) {
        into.clear();
        let mut i = 0;
        while i < self.listeners.len() {
            let handle = self.listeners[i];
            let state = self.sockets.get::<tcp::Socket>(handle).state();
            match state {
                State::Listen | State::SynReceived => i += 1,
                State::Closed => {
                    // The handshake failed (RST or timeout): listen again.
                    if self.accepting {
                        self.listen(handle);
                        i += 1;
                    } else {
                        self.sockets.remove(handle);
                        self.listeners.swap_remove(i);
                    }
                }
                _ => {
                    // Established, or already past it (data and FIN in the
                    // same burst): a connection for the core.
                    into.push(handle);
                    self.listeners.swap_remove(i);
                }
            }
        }
        self.refill_listeners();
    }

    /// Records that `handle` carries connection `cid`.
    pub fn bind(&mut self, cid: ConnId, handle: SocketHandle) {
        if self.conns.len() <= cid {
            self.conns.resize(cid + 1, None);
        }
        self.conns[cid] = Some(handle);
    }

    pub fn has(&self, cid: ConnId) -> bool {
        self.conns.get(cid).is_some_and(Option::is_some)
    }

    /// The socket of connection `cid` (which must be bound).
    pub fn socket(&mut self, cid: ConnId) -> &mut tcp::Socket<'static> {
        let handle = self.conns[cid].expect("a bound connection");
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    /// Connection ids bound now.
    pub fn conn_ids(&self, into: &mut Vec<ConnId>) {
        into.clear();
        into.extend(
            self.conns
                .iter()
                .enumerate()
                .filter_map(|(cid, h)| h.map(|_| cid)),
        );
    }

    /// The core is done with `cid`: send what the socket holds, then FIN;
    /// abort after `linger`.
    pub fn release(&mut self, cid: ConnId, now: std::time::Instant, linger: Duration) {
        let Some(handle) = self.conns.get_mut(cid).and_then(Option::take) else {
            return;
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        if socket.state() == State::Closed {
            self.sockets.remove(handle);
            return;
        }
        socket.close();
        self.closing.push(Closing {
            handle,
            deadline: now + linger,
            aborted: false,
        });
    }

    /// Forgets closing sockets that are done; aborts those past their
    /// deadline (their RST goes out with the next egress).
    pub fn reap(&mut self, now: std::time::Instant) {
        let mut i = 0;
        while i < self.closing.len() {
            let entry = &mut self.closing[i];
            let socket = self.sockets.get_mut::<tcp::Socket>(entry.handle);
            let done = match socket.state() {
                // Everything we sent, FIN included, is acknowledged.
                State::Closed | State::TimeWait | State::FinWait2 => true,
                _ if entry.aborted => true,
                _ => false,
            };
            if done {
                let handle = entry.handle;
                self.sockets.remove(handle);
                self.closing.swap_remove(i);
                continue;
            }
            if now >= entry.deadline {
                socket.abort();
                entry.aborted = true;
            }
            i += 1;
        }
    }

    /// Sockets still flushing after their connection was closed.
    pub fn closing_count(&self) -> usize {
        self.closing.len()
    }

    /// Stops accepting: drops every listener (half-open handshakes are reset).
    pub fn stop_listening(&mut self) {
        self.accepting = false;
        for handle in self.listeners.drain(..) {
            let socket = self.sockets.get_mut::<tcp::Socket>(handle);
            socket.abort();
            self.sockets.remove(handle);
        }
    }

    /// Aborts every socket that is left (end of the drain).
    pub fn abort_all(&mut self) {
        for handle in self.conns.iter_mut().filter_map(Option::take) {
            self.sockets.get_mut::<tcp::Socket>(handle).abort();
        }
        for entry in &mut self.closing {
            self.sockets.get_mut::<tcp::Socket>(entry.handle).abort();
            entry.aborted = true;
        }
    }

    /// How long until smoltcp has timers to run; `None` = only on input.
    pub fn poll_delay(&mut self, now: std::time::Instant) -> Option<Duration> {
        let ts = self.now(now);
        self.iface.poll_delay(ts, &self.sockets).map(Duration::from)
    }
}
