//! The smoltcp side of a worker: one interface, its TCP sockets (in small
//! socket sets behind a demux by peer, see [`Stack`]), a pool of listening
//! sockets, and the map from the core's connection ids to sockets.
//!
//! smoltcp has no accept backlog: a listening socket *becomes* the
//! connection when a SYN arrives. So the stack keeps `listeners` sockets in
//! the LISTEN state at all times: each time one of them takes a SYN, a new
//! listening socket is added in the same loop iteration, so a burst of up
//! to `listeners` simultaneous SYNs is answered. Past that, up to
//! 4 × `listeners` handshakes may be half-open; a SYN that finds no socket
//! listening is dropped unanswered, as a kernel drops a SYN its full queue
//! cannot take, and the client's SYN retransmission comes back for it
//! (smoltcp would reset it: the client's connect would fail, refused). A
//! socket that completes the handshake is handed to the worker, which gets
//! a connection id from the core ([`Stack::bind`]); one that fails it (RST,
//! timeout) listens again.

use std::net::Ipv4Addr;
use std::time::Duration;

use ahash::{AHashMap, AHashSet};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities};
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpListenEndpoint};

use super::PacketDevice;
use crate::worker::ConnId;

/// Connections per socket set: the sockets smoltcp scans for one frame.
const SHARD_SIZE: usize = 64;

/// Settings of a user-space TCP stack.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub mac: [u8; 6],
    pub port: u16,
    /// A second port, for NATS clients (`nats.listen`'s port).
    pub nats_port: Option<u16>,
    pub rx_buffer: usize,
    pub tx_buffer: usize,
    /// Floor of the retransmission timeout.
    pub rto_min: Duration,
    /// The device cuts TCP segments larger than its link at this many
    /// payload bytes (segmentation offload): sockets then send up to the
    /// device's MTU at once to peers that take that MSS.
    pub segment_offload: Option<usize>,
    /// Sockets kept in LISTEN.
    pub listeners: usize,
    /// How long a connection may leave sent data unacknowledged (or a
    /// handshake unanswered) before it is aborted.
    pub timeout: Duration,
    /// How long a closed connection's socket may go on sending its last
    /// bytes and FIN before it is aborted.
    pub linger: Duration,
    /// Seeds smoltcp's random numbers (initial sequence numbers, IP ids);
    /// None: from the clock and the pid. Tests on simulated time fix it so
    /// that a run replays byte for byte.
    pub seed: Option<u64>,
    /// Other workers' stacks own connections on the same address: a segment
    /// of an unknown connection may be theirs, so it is dropped (and
    /// counted) instead of reset. Only SYNs open connections here.
    pub shared_address: bool,
}

impl StackConfig {
    /// The settings a broker's stack takes from its config: the port of
    /// `server.listen`, the linger of `server.drain_timeout`, a 30 s
    /// timeout; the backend fills in its address, MAC and buffers.
    pub fn for_broker(config: &crate::config::Config) -> StackConfig {
        StackConfig {
            addr: Ipv4Addr::UNSPECIFIED,
            prefix: 32,
            gateway: None,
            mac: [0; 6],
            port: config.server.listen.port(),
            nats_port: config
                .nats
                .listen_addr()
                .ok()
                .flatten()
                .map(|addr| addr.port()),
            rx_buffer: 256 << 10,
            tx_buffer: 256 << 10,
            rto_min: crate::config::DEFAULT_TCP_RTO_MIN,
            segment_offload: None,
            listeners: 64,
            timeout: Duration::from_secs(30),
            linger: config.server.drain_timeout,
            seed: None,
            shared_address: false,
        }
    }
}

/// A connection's ends: the peer's IPv4 address and port, and the local
/// port (the stack's address is always the local address).
type PeerKey = (u32, u16, u16);

/// Where a connection's socket lives.
#[derive(Debug, Clone, Copy)]
struct Slot {
    shard: u32,
    handle: SocketHandle,
    key: Option<PeerKey>,
}

/// What the ingress demux finds for a peer.
#[derive(Debug, Clone, Copy)]
struct Route {
    shard: u32,
    handle: SocketHandle,
    /// None once the core released the connection (closing).
    cid: Option<ConnId>,
}

/// A small socket set: what smoltcp walks for a frame of one of its
/// connections, and on egress.
struct Shard {
    sockets: SocketSet<'static>,
    /// Sockets in the set (bound or closing).
    len: usize,
    /// Bound connections, for a timer-driven poll (a socket may time out).
    members: Vec<ConnId>,
    /// Listed in `Stack::dirty`: needs an egress poll this iteration.
    dirty: bool,
    /// smoltcp's next timer for the set, as of its last egress poll.
    poll_at: Option<smoltcp::time::Instant>,
}

/// What the stack itself dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StackStats {
    /// TCP segments of connections this stack does not own (another
    /// worker's, with `shared_address`), dropped rather than reset.
    pub rx_not_owned: u64,
    /// SYNs left unanswered because every listener was taken (the clients
    /// retransmit them).
    pub syns_dropped: u64,
}

/// A socket the core closed, still sending its last bytes and FIN.
struct Closing {
    slot: Slot,
    deadline: std::time::Instant,
    aborted: bool,
}

/// Per-frame cost is kept flat as connections grow: smoltcp's
/// `Interface::poll_*` walks every socket of the set it is given, so the
/// stack keeps several sets. Listening and half-open sockets live in
/// `listen_set`; a socket that completes its handshake moves to a shard of
/// at most [`SHARD_SIZE`] sockets. Each received frame is demultiplexed by
/// its peer (IPv4 source address and TCP source port) before smoltcp sees
/// it, and handed to the interface together with the set that owns that
/// peer (or with `listen_set`: SYNs, ARP, ICMP, strays, which smoltcp
/// resets). Egress polls only the sets that received, were written to, or
/// have a timer due.
pub struct Stack {
    config: StackConfig,
    iface: Interface,
    caps: DeviceCapabilities,
    epoch: std::time::Instant,
    /// Sockets listening or in the middle of a handshake.
    listen_set: SocketSet<'static>,
    /// The pool, each socket with the port it listens on.
    listeners: Vec<(SocketHandle, u16)>,
    listen_dirty: bool,
    /// The interface processed `listen_set` since the listeners were last
    /// looked at: a handshake may have started, completed or failed.
    /// Without it, each turn would look at every listener for nothing.
    listeners_changed: bool,
    listen_poll_at: Option<smoltcp::time::Instant>,
    accepting: bool,
    shards: Vec<Shard>,
    /// Shards with fewer than SHARD_SIZE sockets.
    with_room: Vec<u32>,
    /// Shards to poll on egress.
    dirty: Vec<u32>,
    /// Established (and closing) sockets by peer.
    routes: AHashMap<PeerKey, Route>,
    /// Peers of the listeners in the middle of a handshake (as of the last
    /// `take_established`): their segments go to `listen_set`.
    half_open: AHashSet<PeerKey>,
    /// The socket of each connection, by connection id.
    conns: Vec<Option<Slot>>,
    closing: Vec<Closing>,
    /// Connections that received a frame (or whose timers ran) since the
    /// last [`Stack::take_touched`].
    touched: Vec<ConnId>,
    stats: StackStats,
}

/// smoltcp's clock: microseconds since the stack started.
fn timestamp(epoch: std::time::Instant, now: std::time::Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.saturating_duration_since(epoch).as_micros() as i64)
}

/// The ends of a TCP/IPv4 Ethernet frame sent to one of `config`'s ports;
/// None for anything else (ARP, ICMP, other ports, malformed frames).
fn peer_of(frame: &[u8], config: &StackConfig) -> Option<PeerKey> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip[9] != 6 || ip.len() < ihl + 4 {
        return None;
    }
    let tcp = &ip[ihl..];
    let port = u16::from_be_bytes([tcp[2], tcp[3]]);
    if port != config.port && Some(port) != config.nats_port {
        return None;
    }
    let addr = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
    Some((addr, u16::from_be_bytes([tcp[0], tcp[1]]), port))
}

/// The ends of a socket's connection.
fn peer_key(socket: &tcp::Socket<'_>) -> Option<PeerKey> {
    let peer = socket.remote_endpoint()?;
    let local = socket.local_endpoint()?;
    match peer.addr {
        IpAddress::Ipv4(addr) => Some((u32::from(addr), peer.port, local.port)),
    }
}

/// Whether a TCP/IPv4 Ethernet frame (as [`peer_of`] found it) opens a
/// connection: SYN without ACK.
fn is_syn(frame: &[u8]) -> bool {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let flags = frame.get(14 + ihl + 13).copied().unwrap_or(0);
    flags & 0x12 == 0x02
}

/// A device that yields one already received frame, with the tx token that
/// came with it: how a demultiplexed frame is handed to the interface.
struct OneFrame<'f, T: phy::TxToken> {
    frame: Option<&'f [u8]>,
    tx: Option<T>,
    caps: &'f DeviceCapabilities,
}

struct FrameRx<'f>(&'f [u8]);

impl phy::RxToken for FrameRx<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.0)
    }
}

impl<'f, T: phy::TxToken> phy::Device for OneFrame<'f, T> {
    type RxToken<'a>
        = FrameRx<'f>
    where
        Self: 'a;
    type TxToken<'a>
        = T
    where
        Self: 'a;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(FrameRx<'f>, T)> {
        let frame = self.frame.take()?;
        let tx = self.tx.take()?;
        Some((FrameRx(frame), tx))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<T> {
        self.tx.take()
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

fn earliest(
    a: Option<smoltcp::time::Instant>,
    b: Option<smoltcp::time::Instant>,
) -> Option<smoltcp::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Stack {
    pub fn new<D: PacketDevice>(
        config: StackConfig,
        device: &mut D,
        now: std::time::Instant,
    ) -> Stack {
        super::heap::keep_socket_buffers_mapped();
        let epoch = now;
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
        // Initial sequence numbers and ports come from this seed.
        iface_config.random_seed = config.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
                ^ (u64::from(std::process::id()) << 32)
        });
        let caps = device.capabilities();
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
            caps,
            epoch,
            listen_set: SocketSet::new(Vec::new()),
            listeners: Vec::new(),
            listen_dirty: true,
            listeners_changed: true,
            listen_poll_at: None,
            accepting: true,
            shards: Vec::new(),
            with_room: Vec::new(),
            dirty: Vec::new(),
            routes: AHashMap::new(),
            half_open: AHashSet::new(),
            conns: Vec::new(),
            closing: Vec::new(),
            touched: Vec::new(),
            stats: StackStats::default(),
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
        socket.set_rto_min(self.config.rto_min.into());
        socket.set_segment_offload(self.config.segment_offload);
        socket
    }

    fn listen(&mut self, handle: SocketHandle, port: u16) {
        let endpoint = IpListenEndpoint {
            addr: Some(self.config.addr.into()),
            port,
        };
        let socket = self.listen_set.get_mut::<tcp::Socket>(handle);
        if let Err(error) = socket.listen(endpoint) {
            tracing::warn!(?error, "cannot listen");
        }
        self.listen_dirty = true;
    }

    /// Tops the pool up to `listeners` sockets in LISTEN on each port.
    fn refill_listeners(&mut self) {
        if !self.accepting {
            return;
        }
        let ports = [Some(self.config.port), self.config.nats_port];
        for port in ports.into_iter().flatten() {
            let listening = self
                .listeners
                .iter()
                .filter(|&&(h, p)| {
                    p == port && self.listen_set.get::<tcp::Socket>(h).state() == State::Listen
                })
                .count();
            // Half-open handshakes are bounded too (a SYN flood must not
            // grow the pool without limit): past 4x, new SYNs are reset.
            let on_port = self.listeners.iter().filter(|&&(_, p)| p == port).count();
            let room = (4 * self.config.listeners).saturating_sub(on_port);
            for _ in 0..self.config.listeners.saturating_sub(listening).min(room) {
                let socket = self.new_socket();
                let handle = self.listen_set.add(socket);
                self.listen(handle, port);
                self.listeners.push((handle, port));
            }
        }
    }

    fn mark_dirty(&mut self, shard: u32) {
        let entry = &mut self.shards[shard as usize];
        if !entry.dirty {
            entry.dirty = true;
            self.dirty.push(shard);
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
            if processed > 0 && processed % refill_every == 0 && self.listeners_changed {
                self.refill_listeners();
            }
            let Some((rx, tx)) = device.receive(ts) else {
                break;
            };
            processed += 1;
            let Stack {
                config,
                iface,
                caps,
                listen_set,
                listeners,
                listen_dirty,
                listeners_changed,
                accepting,
                shards,
                dirty,
                routes,
                half_open,
                touched,
                stats,
                ..
            } = self;
            phy::RxToken::consume(rx, |frame| {
                let peer = peer_of(frame, config);
                let route = peer.and_then(|key| routes.get(&key));
                if let (None, Some(key)) = (route, peer) {
                    let syn = is_syn(frame);
                    let handshaking = half_open.contains(&key);
                    if config.shared_address && !syn && !handshaking {
                        stats.rx_not_owned += 1;
                        return;
                    }
                    if syn
                        && !handshaking
                        && *accepting
                        && !listeners.iter().any(|&(h, port)| {
                            port == key.2
                                && listen_set.get::<tcp::Socket>(h).state() == State::Listen
                        })
                    {
                        // Every listener is taken: no answer, so that the
                        // client retransmits (a reset would refuse it).
                        stats.syns_dropped += 1;
                        return;
                    }
                }
                let mut one = OneFrame {
                    frame: Some(frame),
                    tx: Some(tx),
                    caps,
                };
                match route {
                    Some(route) => {
                        let shard = &mut shards[route.shard as usize];
                        iface.poll_ingress_single(ts, &mut one, &mut shard.sockets);
                        if !shard.dirty {
                            shard.dirty = true;
                            dirty.push(route.shard);
                        }
                        if let Some(cid) = route.cid {
                            touched.push(cid);
                        }
                    }
                    None => {
                        iface.poll_ingress_single(ts, &mut one, listen_set);
                        *listen_dirty = true;
                        *listeners_changed = true;
                    }
                }
            });
        }
        processed
    }

    /// Connections that received frames (or ran timers) since the last
    /// call, possibly repeated.
    pub fn take_touched(&mut self, into: &mut Vec<ConnId>) {
        into.clear();
        std::mem::swap(into, &mut self.touched);
    }

    /// Sends what the sockets have to send: polls the sets that received,
    /// were written to, or have a timer due.
    pub fn poll_egress<D: PacketDevice>(&mut self, device: &mut D, now: std::time::Instant) {
        let ts = self.now(now);
        for index in 0..self.shards.len() {
            let shard = &mut self.shards[index];
            if !shard.dirty && shard.poll_at.is_some_and(|at| at <= ts) {
                // A timer: a socket may retransmit, or time out and close.
                shard.dirty = true;
                self.dirty.push(index as u32);
                self.touched.extend_from_slice(&shard.members);
            }
        }
        if self.listen_dirty || self.listen_poll_at.is_some_and(|at| at <= ts) {
            Self::egress_set(&mut self.iface, ts, device, &mut self.listen_set);
            self.listen_poll_at = self.iface.poll_at(ts, &self.listen_set);
            self.listen_dirty = false;
            // Timers ran: a handshake may have timed out.
            self.listeners_changed = true;
        }
        for i in 0..self.dirty.len() {
            let shard = &mut self.shards[self.dirty[i] as usize];
            Self::egress_set(&mut self.iface, ts, device, &mut shard.sockets);
            shard.poll_at = self.iface.poll_at(ts, &shard.sockets);
            shard.dirty = false;
        }
        self.dirty.clear();
    }

    fn egress_set<D: PacketDevice>(
        iface: &mut Interface,
        ts: smoltcp::time::Instant,
        device: &mut D,
        sockets: &mut SocketSet<'static>,
    ) {
        // Bounded: each round sends at least one segment or stops.
        for _ in 0..1024 {
            if iface.poll_egress(ts, device, sockets) == smoltcp::iface::PollResult::None {
                break;
            }
        }
    }

    /// Sockets that completed their handshake since the last call; each is
    /// replaced by a new listener. The caller binds each to a connection id.
    pub fn take_established(&mut self, into: &mut Vec<SocketHandle>) {
        into.clear();
        if !self.listeners_changed {
            return;
        }
        self.listeners_changed = false;
        self.half_open.clear();
        let mut i = 0;
        while i < self.listeners.len() {
            let (handle, port) = self.listeners[i];
            let socket = self.listen_set.get::<tcp::Socket>(handle);
            match socket.state() {
                State::Listen => i += 1,
                State::SynReceived => {
                    if let Some(key) = peer_key(socket) {
                        self.half_open.insert(key);
                    }
                    i += 1;
                }
                State::Closed => {
                    // The handshake failed (RST or timeout): listen again.
                    if self.accepting {
                        self.listen(handle, port);
                        i += 1;
                    } else {
                        self.listen_set.remove(handle);
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

    /// A shard with room for one more socket.
    fn shard_with_room(&mut self) -> u32 {
        if let Some(&shard) = self.with_room.last() {
            return shard;
        }
        let shard = self.shards.len() as u32;
        self.shards.push(Shard {
            sockets: SocketSet::new(Vec::with_capacity(SHARD_SIZE)),
            len: 0,
            members: Vec::with_capacity(SHARD_SIZE),
            dirty: false,
            poll_at: None,
        });
        self.with_room.push(shard);
        shard
    }

    /// Whether a socket from [`Stack::take_established`] came in through
    /// the NATS port.
    pub fn on_nats_port(&self, handle: SocketHandle) -> bool {
        let socket = self.listen_set.get::<tcp::Socket>(handle);
        let port = socket.local_endpoint().map(|end| end.port);
        port.is_some() && port == self.config.nats_port
    }

    /// The peer of a socket from [`Stack::take_established`].
    pub fn established_peer(&self, handle: SocketHandle) -> Option<std::net::SocketAddr> {
        let socket = self.listen_set.get::<tcp::Socket>(handle);
        let peer = socket.remote_endpoint()?;
        let ip = std::net::IpAddr::from(peer.addr);
        Some(std::net::SocketAddr::from((ip, peer.port)))
    }

    /// Records that `handle` (from [`Stack::take_established`]) carries
    /// connection `cid`, and moves its socket into a shard.
    pub fn bind(&mut self, cid: ConnId, handle: SocketHandle) {
        let socket = self.listen_set.remove(handle);
        let shard = self.shard_with_room();
        let entry = &mut self.shards[shard as usize];
        let handle = entry.sockets.add(socket);
        entry.len += 1;
        entry.members.push(cid);
        if entry.len >= SHARD_SIZE {
            self.with_room.pop();
        }
        let key = peer_key(entry.sockets.get::<tcp::Socket>(handle));
        if let Some(key) = key {
            self.routes.insert(
                key,
                Route {
                    shard,
                    handle,
                    cid: Some(cid),
                },
            );
        }
        self.mark_dirty(shard);
        if self.conns.len() <= cid {
            self.conns.resize(cid + 1, None);
        }
        self.conns[cid] = Some(Slot { shard, handle, key });
    }

    pub fn has(&self, cid: ConnId) -> bool {
        self.conns.get(cid).is_some_and(Option::is_some)
    }

    /// The socket of connection `cid` (which must be bound); its set is
    /// polled on the next egress.
    pub fn socket(&mut self, cid: ConnId) -> &mut tcp::Socket<'static> {
        let slot = self.conns[cid].expect("a bound connection");
        self.mark_dirty(slot.shard);
        self.shards[slot.shard as usize]
            .sockets
            .get_mut::<tcp::Socket>(slot.handle)
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

    /// Removes a socket from its shard (and its route).
    fn remove(&mut self, slot: Slot) {
        let shard = &mut self.shards[slot.shard as usize];
        shard.sockets.remove(slot.handle);
        if shard.len == SHARD_SIZE {
            self.with_room.push(slot.shard);
        }
        shard.len -= 1;
        if let Some(key) = slot.key {
            if let Some(route) = self.routes.get(&key) {
                if route.shard == slot.shard && route.handle == slot.handle {
                    self.routes.remove(&key);
                }
            }
        }
    }

    /// The core is done with `cid`: send what the socket holds, then FIN;
    /// abort after the configured linger.
    pub fn release(&mut self, cid: ConnId, now: std::time::Instant) {
        let linger = self.config.linger;
        let Some(slot) = self.conns.get_mut(cid).and_then(Option::take) else {
            return;
        };
        let shard = &mut self.shards[slot.shard as usize];
        if let Some(at) = shard.members.iter().position(|&member| member == cid) {
            shard.members.swap_remove(at);
        }
        if let Some(route) = slot.key.and_then(|key| self.routes.get_mut(&key)) {
            if route.shard == slot.shard && route.handle == slot.handle {
                route.cid = None;
            }
        }
        let socket = shard.sockets.get_mut::<tcp::Socket>(slot.handle);
        if socket.state() == State::Closed {
            self.remove(slot);
            return;
        }
        socket.close();
        self.mark_dirty(slot.shard);
        self.closing.push(Closing {
            slot,
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
            let slot = entry.slot;
            let socket = self.shards[slot.shard as usize]
                .sockets
                .get_mut::<tcp::Socket>(slot.handle);
            let done = match socket.state() {
                // Everything we sent, FIN included, is acknowledged.
                State::Closed | State::TimeWait | State::FinWait2 => true,
                _ if entry.aborted => true,
                _ => false,
            };
            if done {
                self.closing.swap_remove(i);
                self.remove(slot);
                continue;
            }
            if now >= entry.deadline {
                socket.abort();
                entry.aborted = true;
                self.mark_dirty(slot.shard);
            }
            i += 1;
        }
    }

    pub fn stats(&self) -> StackStats {
        self.stats
    }

    /// Sockets still flushing after their connection was closed.
    pub fn closing_count(&self) -> usize {
        self.closing.len()
    }

    /// Stops accepting: drops every listener (half-open handshakes are reset).
    pub fn stop_listening(&mut self) {
        self.accepting = false;
        for (handle, _) in self.listeners.drain(..) {
            let socket = self.listen_set.get_mut::<tcp::Socket>(handle);
            socket.abort();
            self.listen_set.remove(handle);
        }
        self.listen_dirty = true;
    }

    /// Aborts every socket that is left (end of the drain).
    pub fn abort_all(&mut self) {
        for cid in 0..self.conns.len() {
            if let Some(slot) = self.conns[cid].take() {
                self.shards[slot.shard as usize]
                    .sockets
                    .get_mut::<tcp::Socket>(slot.handle)
                    .abort();
                self.mark_dirty(slot.shard);
            }
        }
        for i in 0..self.closing.len() {
            let entry = &mut self.closing[i];
            entry.aborted = true;
            let slot = entry.slot;
            self.shards[slot.shard as usize]
                .sockets
                .get_mut::<tcp::Socket>(slot.handle)
                .abort();
            self.mark_dirty(slot.shard);
        }
    }

    /// How long until smoltcp has timers to run; `None` = only on input.
    pub fn poll_delay(&mut self, now: std::time::Instant) -> Option<Duration> {
        if !self.dirty.is_empty() || self.listen_dirty {
            return Some(Duration::ZERO);
        }
        let ts = self.now(now);
        let mut at = self.listen_poll_at;
        for shard in &self.shards {
            at = earliest(at, shard.poll_at);
        }
        at.map(|at| {
            if at > ts {
                Duration::from(at - ts)
            } else {
                Duration::ZERO
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{is_syn, peer_of, StackConfig};

    fn frame(ethertype: [u8; 2], proto: u8, src: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&ethertype);
        f[14] = 0x45;
        f[14 + 9] = proto;
        f[14 + 12..14 + 16].copy_from_slice(&src);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    fn ports(port: u16, nats_port: Option<u16>) -> StackConfig {
        let mut config = StackConfig::for_broker(&crate::config::Config::default());
        config.port = port;
        config.nats_port = nats_port;
        config
    }

    #[test]
    fn peer_of_tcp_to_our_ports_only() {
        let ours = ports(9999, None);
        let tcp = frame([8, 0], 6, [198, 18, 1, 1], 40000, 9999);
        assert_eq!(peer_of(&tcp, &ours), Some((0xc612_0101, 40000, 9999)));
        assert_eq!(peer_of(&tcp, &ports(1234, None)), None);
        assert_eq!(
            peer_of(&frame([8, 6], 6, [1, 2, 3, 4], 1, 9999), &ours),
            None
        );
        assert_eq!(
            peer_of(&frame([8, 0], 1, [1, 2, 3, 4], 1, 9999), &ours),
            None
        );
        assert_eq!(peer_of(&tcp[..30], &ours), None);
        let mut options = frame([8, 0], 6, [1, 2, 3, 4], 5, 9999);
        options[14] = 0x46; // 24-byte IP header: the ports move by 4.
        options[38..40].copy_from_slice(&7u16.to_be_bytes());
        options[40..42].copy_from_slice(&9999u16.to_be_bytes());
        assert_eq!(peer_of(&options, &ours), Some((0x0102_0304, 7, 9999)));
        // The NATS port too; one peer port to both is two connections.
        let both = ports(9999, Some(4222));
        let nats = frame([8, 0], 6, [198, 18, 1, 1], 40000, 4222);
        assert_eq!(peer_of(&nats, &both), Some((0xc612_0101, 40000, 4222)));
        assert_eq!(peer_of(&tcp, &both), Some((0xc612_0101, 40000, 9999)));
        assert_eq!(peer_of(&nats, &ours), None);
    }

    #[test]
    fn only_a_syn_without_ack_opens_a_connection() {
        let mut syn = frame([8, 0], 6, [1, 2, 3, 4], 5, 9999);
        syn[14 + 20 + 13] = 0x02;
        assert!(is_syn(&syn));
        for flags in [0x12, 0x10, 0x11, 0x00] {
            syn[14 + 20 + 13] = flags;
            assert!(!is_syn(&syn), "{flags:#x}");
        }
    }
}
