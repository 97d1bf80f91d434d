//! One worker's broker state, sans-IO: the facade over its parts (see the
//! module list in `worker/mod.rs`), and the paths that run through several
//! of them: frames in, routing, records from the other workers, closes.
//!
//! The backend feeds it bytes, time and ring records, and takes from it the
//! bytes to write and the connections to close. Nothing here blocks, and the
//! publish path neither locks nor allocates.

use std::io::IoSlice;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blipmq_protocol::{encode, nats, ErrorCode};

use self::control::ControlPort;
use super::connections::{CloseReason, Connections, Overdue, Wait};
use super::delivery::Delivery;
use super::dialect::{self, Dialect};
use super::groups::{GroupPicks, Target};
use super::hub::{HubPort, HUB_SUBSCRIBER};
use super::latency::LatencyClock;
use super::limits::{ConnectionLimits, ConnectionsPerIp, RatePolicy};
use super::peers::Peers;
use super::records::{self, GroupNames, Message, Record, Routing};
use super::subscriptions::Subscriptions;
use super::sweep::Sweep;
use crate::rings::WorkerRings;
use crate::router::{SubKey, WorkerId, WorkerSet};
use crate::session::{Input, Session, SessionConfig, Step};
use crate::stats::{Counter, StatsSegment, WorkerStats};
use crate::tls::{TlsFailure, TlsServer};

pub type ConnId = usize;

/// How often the core's timers run: server PINGs, close deadlines, buffer
/// trimming, the heartbeat.
pub const TICK: Duration = Duration::from_millis(100);

/// Settings of a worker core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub session: Arc<SessionConfig>,
    pub max_pending_bytes: usize,
    /// See `limits.slow_consumer_grace`; zero turns pacing off.
    pub slow_consumer_grace: Duration,
    pub drain_timeout: Duration,
    pub cache_subjects: usize,
    pub max_connections: usize,
    /// The NATS listener's address, for the INFO NATS clients get.
    pub nats_addr: Option<std::net::SocketAddr>,
    /// TLS on both listeners, when configured.
    pub tls: Option<Arc<TlsServer>>,
    /// The handshake timeout, the publish rates, connections per IP.
    pub limits: ConnectionLimits,
}

/// What all workers share: the connection counts behind the broker-wide
/// limits, and the stats segment each worker writes its own block of.
pub struct Shared {
    pub connections: AtomicUsize,
    pub connections_per_ip: ConnectionsPerIp,
    pub stats: StatsSegment,
    /// The clock read times travel on between workers.
    pub latency_clock: LatencyClock,
}

impl Shared {
    pub fn new(stats: StatsSegment) -> Shared {
        Shared {
            connections: AtomicUsize::new(0),
            connections_per_ip: ConnectionsPerIp::default(),
            stats,
            latency_clock: LatencyClock::new(Instant::now()),
        }
    }
}

impl Default for Shared {
    /// With an anonymous stats segment that only this process reads.
    fn default() -> Shared {
        let stats = StatsSegment::anonymous(crate::config::MAX_WORKERS)
            .expect("an anonymous mapping of a few KiB");
        Shared::new(stats)
    }
}

/// Who published the message being routed, and what it asked of the
/// routing.
#[derive(Clone, Copy)]
struct Publisher<'q> {
    cid: ConnId,
    /// Whose subscriptions are its own: its connection's, or the hub's for
    /// a message from the hub.
    own: ConnId,
    /// Its own subscriptions get the message too (NATS `echo`).
    echo: bool,
    /// A request nobody subscribes to is answered with a 503 status.
    no_responders: bool,
    groups: Groups<'q>,
}

/// The queue groups a published message goes to (one member each).
#[derive(Clone, Copy)]
enum Groups<'q> {
    All,
    /// Only these (a hub's LMSG names the groups it left to this broker).
    Named(nats::leaf::Queues<'q>),
}

impl Groups<'_> {
    fn serves(&self, name: &[u8]) -> bool {
        match self {
            Groups::All => true,
            Groups::Named(names) => names.iter().any(|named| named == name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Pong,
}

/// How far a frame got.
enum Flow {
    /// Consumed; go on with the next frame.
    Continue,
    /// Consumed; stop reading this connection (it closes).
    Stop,
    /// Not consumed; try this frame again later (ring full).
    Retry,
}

pub struct WorkerCore {
    config: CoreConfig,
    info: Vec<u8>,
    shared: Arc<Shared>,
    conns: Connections,
    subscriptions: Subscriptions,
    peers: Peers,
    groups: GroupPicks,
    /// Requests from the control plane and replies to it.
    control: Option<ControlPort>,
    /// The link to the leaf-node hub, on the one worker that owns it.
    hub: Option<Box<HubPort>>,
    now: Instant,
    /// When [`on_tick`](Self::on_tick) is next due.
    next_tick: Instant,
    /// The tick's pass over the connections, in slices.
    sweep: Sweep,
    /// Connections the sweep found past a deadline (kept for its capacity).
    overdue: Vec<(ConnId, Overdue)>,
    draining: bool,
    /// Plaintext out of a TLS connection's last read, kept for its capacity.
    tls_plaintext: Vec<u8>,
    /// Publishers wait for their budget, and a tick refilled it.
    rate_retry_due: bool,
    /// When the input being handled was read, on the latency clock.
    read_at: u64,
    pub stats: WorkerStats,
}

impl WorkerCore {
    pub fn new(
        config: CoreConfig,
        rings: WorkerRings,
        shared: Arc<Shared>,
        now: Instant,
    ) -> WorkerCore {
        // Each worker id takes its own block of the stats segment, once.
        let stats = shared
            .stats
            .worker(rings.id)
            .expect("one core per worker id, within the stats segment");
        // Alive from the start, not only from the first tick.
        stats.heartbeat();
        let id = rings.id;
        let peers = Peers::new(rings);
        WorkerCore {
            info: config.session.info_json(id, config.tls.is_some()),
            conns: Connections::new(
                config.max_pending_bytes,
                config.slow_consumer_grace,
                id,
                peers.workers(),
            ),
            subscriptions: Subscriptions::new(config.cache_subjects),
            groups: GroupPicks::new(id),
            peers,
            config,
            shared,
            control: None,
            hub: None,
            now,
            next_tick: now + TICK,
            sweep: Sweep::default(),
            overdue: Vec::new(),
            draining: false,
            tls_plaintext: Vec::new(),
            rate_retry_due: false,
            read_at: 0,
            stats,
        }
    }

    pub fn id(&self) -> usize {
        self.peers.id()
    }

    /// Large payloads currently shared by subscribers' queues.
    pub fn shared_payloads_in_use(&self) -> usize {
        self.conns.shared_payloads_in_use()
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// A new connection speaking `dialect`, from a peer not known (yet):
    /// see [`accept_from`](Self::accept_from).
    pub fn accept(&mut self, now: Instant, dialect: Dialect) -> ConnId {
        self.accept_from(now, dialect, None)
    }

    /// A new connection from `peer` speaking `dialect`: queue INFO, or
    /// ERROR 503 past the broker's connection limit or the peer address's.
    pub fn accept_from(
        &mut self,
        now: Instant,
        dialect: Dialect,
        peer: Option<std::net::SocketAddr>,
    ) -> ConnId {
        self.now = now;
        let session = Session::new(self.config.session.clone(), now);
        let cid = self
            .conns
            .insert(session, dialect, &self.config.limits, now);
        self.conns[cid].info.peer = peer;
        self.stats.inc(Counter::ConnectionsOpen);
        let open = self.shared.connections.fetch_add(1, Ordering::Relaxed);
        let refusal = if self.draining {
            Some("broker draining")
        } else if open >= self.config.max_connections {
            Some(dialect::CONNECTION_LIMIT)
        } else if !self.count_peer_ip(cid) {
            self.stats.inc(Counter::ConnectionsRefusedPerIp);
            Some(dialect::CONNECTION_LIMIT_PER_IP)
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.stats.inc(Counter::ConnectionsRefused);
            self.send_error(cid, ErrorCode::Unavailable, reason);
            self.start_close(cid, CloseReason::Error);
        } else {
            self.stats.inc(Counter::ConnectionsAccepted);
            if !self.start_tls(cid, dialect) {
                self.queue_info(cid, dialect);
            }
        }
        cid
    }

    /// Queues INFO as the first frame for the session (inside TLS, when
    /// the connection has it).
    fn queue_info(&mut self, cid: ConnId, dialect: Dialect) {
        match dialect {
            Dialect::Binary => encode::put_info(self.conns[cid].output.frames(), &self.info),
            Dialect::Nats => {
                let info = self.nats_info(self.conns[cid].info.serial);
                nats::encode::put_info(self.conns[cid].output.frames(), &info);
            }
        }
        self.stats.inc(Counter::FramesOutInfo);
        self.conns.mark_dirty(cid);
    }

    /// The INFO a NATS client gets: TLS required, or available where
    /// plaintext clients are allowed too.
    fn nats_info(&self, serial: u64) -> nats::ServerInfo {
        let mut info = self.config.session.nats_info(serial, self.config.nats_addr);
        if let Some(tls) = &self.config.tls {
            let settings = tls.settings();
            info.tls_required = settings.required || settings.handshake_first;
            info.tls_available = true;
            info.tls_verify = settings.ca_file.is_some();
        }
        info
    }

    /// Gives a new connection its TLS when the broker has TLS. NATS clients
    /// get INFO in the clear first, then upgrade (unless handshake_first);
    /// returns whether INFO was sent that way. Otherwise INFO is the first
    /// thing sealed once the handshake completes.
    fn start_tls(&mut self, cid: ConnId, dialect: Dialect) -> bool {
        let Some(server) = self.config.tls.clone() else {
            return false;
        };
        let settings = server.settings();
        let clear_info = dialect == Dialect::Nats && !settings.handshake_first;
        let mut prefix = Vec::new();
        if clear_info {
            let info = self.nats_info(self.conns[cid].info.serial);
            nats::encode::put_info(&mut prefix, &info);
            self.stats.inc(Counter::FramesOutInfo);
        }
        match server.link(&prefix, clear_info && !settings.required) {
            Ok(link) => {
                self.conns[cid].tls = Some(Box::new(link));
                self.conns.mark_dirty(cid);
            }
            Err(failure) => {
                tracing::warn!(conn = cid, ?failure, "TLS could not start");
                self.stats.inc(Counter::TlsFailures);
                self.start_close(cid, CloseReason::Error);
            }
        }
        clear_info
    }

    /// Counts the connection for its peer's IP address, unless that holds
    /// `limits.max_connections_per_ip` already; a connection of unknown
    /// peer is not counted and not refused.
    fn count_peer_ip(&mut self, cid: ConnId) -> bool {
        let conn = &mut self.conns[cid];
        let Some(ip) = conn.info.peer.map(|peer| peer.ip()) else {
            return true;
        };
        let max = self.config.limits.max_connections_per_ip;
        let counted = self.shared.connections_per_ip.try_add(ip, max);
        if counted {
            conn.counted_ip = Some(ip);
        }
        counted
    }

    /// Whether the backend should read more from this connection now. A
    /// connection that waits, or holds a frame's worth of undecoded bytes,
    /// is left unread so that TCP paces its sender.
    pub fn wants_input(&self, cid: ConnId) -> bool {
        let conn = &self.conns[cid];
        conn.closing.is_none() && conn.wait == Wait::None
    }

    pub fn is_closing(&self, cid: ConnId) -> bool {
        self.conns[cid].closing.is_some()
    }

    /// The peer will send no more: flush what is queued, then close.
    pub fn on_peer_closed(&mut self, cid: ConnId) {
        self.start_close(cid, CloseReason::Client);
    }

    /// Bytes received from the connection: through its TLS first, when it
    /// has TLS.
    pub fn on_received(&mut self, cid: ConnId, bytes: &[u8], now: Instant) {
        self.now = now;
        self.read_at = self.shared.latency_clock.nanos(now);
        self.stats.add(Counter::BytesIn, bytes.len() as u64);
        let conn = &mut self.conns[cid];
        conn.info.bytes_in += bytes.len() as u64;
        if conn.closing.is_some() {
            return;
        }
        let Some(tls) = conn.tls.as_deref_mut() else {
            return self.on_plaintext(cid, bytes);
        };
        let mut plaintext = std::mem::take(&mut self.tls_plaintext);
        plaintext.clear();
        let received = tls.receive(bytes, &mut plaintext);
        if tls.take_ready() {
            // INFO, queued at accept, can now be sealed and sent.
            self.stats.inc(Counter::TlsHandshakes);
            if let Some(cert) = tls.peer_certificate() {
                // Read once, before any CONNECT it may authenticate.
                conn.session
                    .set_certificate_names(crate::tls::certificate_names(cert));
            }
        }
        let peer_closed = tls.peer_closed();
        self.conns.mark_dirty(cid);
        match received {
            Ok(()) => self.on_plaintext(cid, &plaintext),
            Err(failure) => self.on_tls_failure(cid, failure),
        }
        self.tls_plaintext = plaintext;
        if peer_closed {
            // Its close_notify: flush, answer with ours, close.
            self.on_peer_closed(cid);
        }
    }

    /// Whole frames are handled straight from `bytes`; only what must wait
    /// (a partial frame, or frames behind a stall) is copied into the
    /// connection's buffer.
    fn on_plaintext(&mut self, cid: ConnId, bytes: &[u8]) {
        let conn = &mut self.conns[cid];
        if conn.closing.is_some() || bytes.is_empty() {
            return;
        }
        if conn.input.is_empty() && conn.wait == Wait::None {
            let consumed = self.process_frames(cid, bytes);
            let conn = &mut self.conns[cid];
            if conn.closing.is_none() {
                conn.input.extend_from_slice(&bytes[consumed..]);
                conn.input_read_at = self.read_at;
            }
        } else {
            conn.input.extend_from_slice(bytes);
            conn.input_read_at = self.read_at;
            self.process_input(cid);
        }
    }

    /// A client that broke TLS, or spoke plaintext where TLS is required:
    /// the latter is told so in the clear; both are closed.
    fn on_tls_failure(&mut self, cid: ConnId, failure: TlsFailure) {
        self.stats.inc(Counter::TlsFailures);
        tracing::debug!(conn = cid, ?failure, "TLS failed");
        if failure == TlsFailure::Plaintext {
            let dialect = self.conns[cid].output.dialect();
            let mut answer = Vec::new();
            dialect.put_error(&mut answer, ErrorCode::BadRequest, dialect::TLS_REQUIRED);
            if let Some(tls) = self.conns[cid].tls.as_deref_mut() {
                tls.push_clear(&answer);
            }
            self.stats.inc(Counter::FramesOutError);
        }
        self.start_close(cid, CloseReason::Error);
    }

    /// Bytes queued for the connection, sealed or not, held answers too.
    pub fn pending_output(&self, cid: ConnId) -> usize {
        self.conns[cid].queued_len()
    }

    /// The first contiguous run of bytes waiting to be written to the
    /// connection (empty when none); see also [`output_vectored`](Self::output_vectored).
    pub fn output(&mut self, cid: ConnId) -> &[u8] {
        self.conns.output(cid)
    }

    /// Fills `slices` with the bytes waiting for the connection, in order,
    /// for one writev; returns how many slices were filled.
    pub fn output_vectored<'a>(&'a mut self, cid: ConnId, slices: &mut [IoSlice<'a>]) -> usize {
        self.conns.output_vectored(cid, slices)
    }

    /// `written` bytes of the connection's output reached the transport
    /// at `now`: the time its messages' in-broker latency ends.
    pub fn on_output_written(&mut self, cid: ConnId, written: usize, now: Instant) {
        self.stats.add(Counter::BytesOut, written as u64);
        let now = self.shared.latency_clock.nanos(now);
        self.conns.on_output_written(cid, written, now, &self.stats);
    }

    /// The connection is done: flushed after a close started, or past its
    /// deadline.
    pub fn should_close(&self, cid: ConnId, now: Instant) -> bool {
        let conn = &self.conns[cid];
        conn.closing.is_some_and(|deadline| {
            (conn.is_flushed() && !conn.held.is_holding()) || now >= deadline
        })
    }

    /// Connections with output or a pending close since the last call.
    pub fn take_dirty(&mut self, into: &mut Vec<ConnId>) {
        self.conns.take_dirty(into);
    }

    /// The socket is gone: forget the connection and its subscriptions.
    pub fn on_closed(&mut self, cid: ConnId) {
        if self.conns[cid].is_hub_link {
            return self.on_hub_closed(cid);
        }
        let keys: Vec<SubKey> = self.conns[cid]
            .session
            .subscriptions()
            .map(|(_, key)| key)
            .collect();
        for key in keys {
            self.remove_sub(key);
        }
        let conn = self.conns.remove(cid);
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = conn.counted_ip {
            self.shared.connections_per_ip.remove(ip);
        }
        self.stats.inc(conn.close_reason.counter());
        self.stats.sub(Counter::ConnectionsOpen, 1);
    }

    /// Whether `cid` is an open connection of this core.
    pub fn contains(&self, cid: ConnId) -> bool {
        self.conns.contains(cid)
    }

    /// The ids of the open connections.
    pub fn conn_ids(&self, into: &mut Vec<ConnId>) {
        into.clear();
        into.extend(self.conns.iter().map(|(cid, _)| cid));
    }

    /// When the core next needs [`handle_timeout`](Self::handle_timeout)
    /// even if nothing else happens.
    pub fn poll_timeout(&self) -> Instant {
        let mut due = self.next_tick;
        if let Some(slice) = self.sweep.due() {
            due = due.min(slice);
        }
        if let Some(hub) = &self.hub {
            due = due.min(hub.next_timer());
        }
        due
    }

    /// Runs the timers that are due at `now`: the tick, and one slice of
    /// its pass over the connections.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_tick {
            self.start_tick(now);
            self.next_tick = now + TICK;
        }
        if self.sweep.is_due(now) {
            self.sweep_slice(now);
        }
        self.poll_hub(now);
    }

    /// The whole tick at once: server PINGs, stale connections, handshake
    /// and close deadlines, publishers whose budget refilled.
    pub fn on_tick(&mut self, now: Instant) {
        self.start_tick(now);
        while self.sweep_slice(now) {}
    }

    /// The tick's work for the worker as a whole; starts the pass over the
    /// connections.
    fn start_tick(&mut self, now: Instant) {
        self.now = now;
        self.stats.heartbeat();
        if let Some(hub) = self.hub.as_deref() {
            hub.report(&self.stats);
        }
        self.sweep.start(now);
        // Retried by the next finish_iteration, which publishes what they
        // route to other workers and says whom to wake.
        self.rate_retry_due = self.conns.any_rate_paced();
        let let_go = self.conns.let_go_overdue(now);
        if let_go > 0 {
            self.stats.add(Counter::PacingGraceExpired, let_go as u64);
            tracing::debug!(
                let_go,
                "subscribers behind past their grace: publishers go on"
            );
        }
    }

    /// The next slice of the pass over the connections; returns whether
    /// there was one.
    fn sweep_slice(&mut self, now: Instant) -> bool {
        let Some(slots) = self.sweep.next_slice(now, self.conns.slots()) else {
            return false;
        };
        self.now = now;
        let mut overdue = std::mem::take(&mut self.overdue);
        self.conns.sweep(now, &self.stats, slots, &mut overdue);
        for (cid, passed) in overdue.drain(..) {
            match passed {
                Overdue::Stale => {
                    self.send_error(cid, ErrorCode::PingTimeout, "stale connection: no PONG");
                    self.start_close(cid, CloseReason::Stale);
                }
                Overdue::Handshake => {
                    let reason = dialect::HANDSHAKE_TIMEOUT;
                    self.send_error(cid, ErrorCode::Unauthorized, reason);
                    self.start_close(cid, CloseReason::HandshakeTimeout);
                }
            }
        }
        self.overdue = overdue;
        true
    }

    /// Shutdown: DISCONNECT "draining" to every client, then close each once
    /// flushed, within the drain timeout.
    pub fn begin_drain(&mut self, now: Instant) {
        self.now = now;
        self.draining = true;
        let ids: Vec<ConnId> = self.conns.iter().map(|(cid, _)| cid).collect();
        for cid in ids {
            if self.conns[cid].closing.is_none() {
                let dialect = self.conns[cid].output.dialect();
                if dialect.put_disconnect(self.conns.answer_buffer(cid), "draining") {
                    self.stats.inc(Counter::FramesOutDisconnect);
                }
                self.start_close(cid, CloseReason::Drain);
            }
        }
    }

    /// Work that needs the loop to come round again soon rather than sleep:
    /// control replies, or publishers and rings to resume now that a
    /// subscriber caught up (it did while the backend flushed) or a tick
    /// refilled their publish budgets. Waiting for
    /// peers is not: [`prepare_sleep`](Self::prepare_sleep) sleeps until a
    /// peer releases ring space.
    pub fn has_pending_work(&self) -> bool {
        self.control.as_ref().is_some_and(ControlPort::has_replies)
            || self.conns.backlog_eased()
            || self.rate_retry_due
    }

    /// Whether anything waits for other workers to consume records: a
    /// publisher stalled on a full ring, an answer behind a barrier, control
    /// records outside a full ring.
    pub fn awaits_peers(&self) -> bool {
        self.conns.awaits_room() || self.peers.awaits_consumers()
    }

    /// Moves the connections that stopped waiting into `into`: they may
    /// hold unread input the backend left in the socket.
    pub fn take_resumed(&mut self, into: &mut Vec<ConnId>) {
        self.conns.take_resumed(into);
    }

    /// Handles the records other workers sent. Returns how many.
    pub fn poll_peers(&mut self, now: Instant) -> usize {
        self.now = now;
        let mut handled = 0;
        for from in 0..self.peers.incoming() {
            handled += self.drain_ring(from);
            self.expire_subs();
        }
        self.poll_control();
        handled
    }

    /// Ends a loop iteration: answers connections whose barrier passed,
    /// retries stalled publishers, publishes ring batches and says which
    /// peers to wake (see [`take_wake`](Self::take_wake)).
    pub fn finish_iteration(&mut self, now: Instant) {
        self.now = now;
        self.peers.note_heads_before_retry();
        self.peers.flush_overflow();
        self.peers.advance_barriers();
        self.conns.release_answers(self.peers.barrier_done());
        self.resume_waiting();
        if self.conns.take_backlog_eased() {
            self.peers.resume_paused_rings();
            self.resume_paced();
        }
        if std::mem::take(&mut self.rate_retry_due) {
            for cid in self.conns.take_rate_paced() {
                self.retry(cid, Wait::Rate);
            }
        }
        self.flush_hub();
        self.peers.publish(&self.stats);
    }

    /// Peers that got records this iteration and are asleep.
    pub fn take_wake(&mut self) -> WorkerSet {
        self.peers.take_wake()
    }

    /// Before sleeping: say so, and for what, then check once more that
    /// nothing arrived and, when waiting for peers, that none released
    /// space since the waiters were last retried.
    pub fn prepare_sleep(&mut self) -> bool {
        let on_release = self.awaits_peers();
        self.peers.prepare_sleep(on_release)
    }

    pub fn woke_up(&mut self) {
        self.peers.woke_up();
    }

    // ---- internals ----

    fn start_close(&mut self, cid: ConnId, reason: CloseReason) {
        let deadline = self.now + self.config.drain_timeout;
        self.conns.start_close(cid, reason, deadline);
    }

    fn send_error(&mut self, cid: ConnId, code: ErrorCode, reason: &str) {
        tracing::debug!(conn = cid, code = code.as_u16(), reason, "error");
        let dialect = self.conns[cid].output.dialect();
        dialect.put_error(self.conns.answer_buffer(cid), code, reason);
        self.stats.inc(Counter::FramesOutError);
        self.conns.mark_dirty(cid);
    }

    /// A client that sends frames but does not read their answers (PINGs,
    /// verbose OKs, errors) is a slow consumer too once `max_pending_bytes`
    /// are queued for it, as any client is in nats-server: cut off, so that
    /// its queue stops growing. Returns whether it was.
    fn cut_if_over_pending(&mut self, cid: ConnId) -> bool {
        if !self.conns.is_over_pending(cid) {
            return false;
        }
        let dropped = self.conns.cut_slow_consumer(cid, &self.stats, self.now);
        self.stats.add(Counter::DroppedSlowConsumer, dropped);
        tracing::warn!(
            conn = cid,
            "client not reading its answers cut off as a slow consumer"
        );
        true
    }

    /// Answers now, or once a barrier passes when this connection's earlier
    /// frames reached other workers; the connection goes on meanwhile.
    fn answer(&mut self, cid: ConnId, answer: Answer) -> Flow {
        if self.cut_if_over_pending(cid) {
            return Flow::Stop;
        }
        if self.conns[cid].unsynced {
            let ticket = self.peers.request_barrier();
            self.conns.hold_answers(cid, ticket);
        }
        let dialect = self.conns[cid].output.dialect();
        let out = self.conns.answer_buffer(cid);
        match answer {
            Answer::Ok => {
                dialect.put_ok(out);
                self.stats.inc(Counter::FramesOutOk);
            }
            Answer::Pong => {
                dialect.put_pong(out);
                self.stats.inc(Counter::FramesOutPong);
            }
        }
        self.conns.mark_dirty(cid);
        Flow::Continue
    }

    /// Decodes and handles the bytes kept in the connection's input buffer.
    fn process_input(&mut self, cid: ConnId) {
        let Some(conn) = self.conns.get_mut(cid) else {
            return;
        };
        if conn.wait != Wait::None || conn.closing.is_some() || conn.input.is_empty() {
            return;
        }
        // A PUBLISH that waited is timed from when its bytes were read.
        self.read_at = conn.input_read_at;
        let mut input = std::mem::take(&mut conn.input);
        let consumed = self.process_frames(cid, &input);
        input.drain(..consumed);
        self.conns[cid].input = input;
    }

    /// Handles the whole frames at the front of `bytes`, until the
    /// connection must wait or close; returns how many bytes were consumed.
    fn process_frames(&mut self, cid: ConnId, bytes: &[u8]) -> usize {
        if self.conns[cid].is_hub_link {
            return self.process_hub_input(cid, bytes);
        }
        let dialect = self.conns[cid].output.dialect();
        let mut consumed = 0;
        loop {
            let session = &mut self.conns[cid].session;
            let (step, len, op) = match session.on_bytes(dialect, &bytes[consumed..], self.now) {
                Input::Frame { step, len, op } => (step, len, op),
                Input::Partial => return consumed,
                Input::Invalid(step) => {
                    self.execute(cid, step);
                    return bytes.len();
                }
            };
            let op_counter = op.and_then(Counter::frames_in);
            if let Some(counter) = op_counter {
                self.stats.inc(counter);
            }
            match self.execute(cid, step) {
                Flow::Continue => consumed += len,
                Flow::Stop => return consumed + len,
                Flow::Retry => {
                    if let Some(counter) = op_counter {
                        self.stats.sub(counter, 1);
                    }
                    return consumed;
                }
            }
        }
    }

    fn execute(&mut self, cid: ConnId, step: Step<'_>) -> Flow {
        match step {
            Step::Nothing => Flow::Continue,
            Step::Ok => self.answer(cid, Answer::Ok),
            Step::Pong => self.answer(cid, Answer::Pong),
            Step::Error(code, reason) => {
                if code == ErrorCode::Forbidden {
                    self.stats.inc(Counter::PermissionViolations);
                }
                if self.cut_if_over_pending(cid) {
                    return Flow::Stop;
                }
                self.send_error(cid, code, &reason);
                Flow::Continue
            }
            Step::Fatal(code, reason) => {
                self.send_error(cid, code, &reason);
                self.start_close(cid, CloseReason::Error);
                Flow::Stop
            }
            Step::Publish { message, ack } => {
                let size = message.headers.len() + message.payload.len();
                if !self.conns[cid].rate.admits(size, self.now) {
                    return self.over_rate(cid);
                }
                let options = self.conns[cid].session.nats_options();
                let publisher = Publisher {
                    cid,
                    own: cid,
                    echo: options.echo,
                    no_responders: options.no_responders,
                    groups: Groups::All,
                };
                if let Err(wait) = self.route(publisher, &message) {
                    self.conns.wait(cid, wait);
                    return Flow::Retry;
                }
                self.conns[cid].rate.charge(size);
                if ack {
                    self.answer(cid, Answer::Ok)
                } else {
                    Flow::Continue
                }
            }
            Step::Subscribe {
                sid,
                filter,
                queue,
                ack,
            } => {
                self.subscribe(cid, sid, filter, queue);
                if ack {
                    self.answer(cid, Answer::Ok)
                } else {
                    Flow::Continue
                }
            }
            Step::Unsubscribe {
                key, max_msgs, ack, ..
            } => {
                if self.subscriptions.limit(key, max_msgs) {
                    self.remove_sub(key);
                }
                if ack {
                    self.answer(cid, Answer::Ok)
                } else {
                    Flow::Continue
                }
            }
            Step::Disconnect => {
                self.start_close(cid, CloseReason::Client);
                Flow::Stop
            }
            Step::Drop => {
                self.start_close(cid, CloseReason::Error);
                Flow::Stop
            }
        }
    }

    /// A PUBLISH over the connection's rate: it waits for the budget to
    /// refill (the socket is not read meanwhile), or is refused.
    fn over_rate(&mut self, cid: ConnId) -> Flow {
        match self.config.limits.rate_policy {
            RatePolicy::Pace => {
                self.stats.inc(Counter::RatePaced);
                self.conns.wait(cid, Wait::Rate);
                Flow::Retry
            }
            RatePolicy::Reject => {
                self.stats.inc(Counter::RateRejected);
                self.send_error(cid, ErrorCode::TooMany, dialect::RATE_LIMIT);
                Flow::Continue
            }
        }
    }

    fn subscribe(&mut self, cid: ConnId, sid: u32, filter: &[u8], queue: Option<&[u8]>) -> SubKey {
        let key = self.subscriptions.insert(cid, sid, filter, queue);
        self.stats.inc(Counter::Subscriptions);
        self.peers.broadcast_interest(true, filter, queue);
        self.tell_hub(cid, true, filter, queue);
        // The hub's subscriptions have no connection.
        if let Some(conn) = self.conns.get_mut(cid) {
            conn.session.bind_sid(sid, key);
            conn.unsynced |= self.peers.any();
        }
        key
    }

    fn remove_sub(&mut self, key: SubKey) {
        let sub = self.subscriptions.remove(key);
        self.stats.sub(Counter::Subscriptions, 1);
        self.peers
            .broadcast_interest(false, &sub.filter, sub.queue.as_deref());
        self.tell_hub(sub.conn, false, &sub.filter, sub.queue.as_deref());
        if let Some(conn) = self.conns.get_mut(sub.conn) {
            conn.session.release_sid(sub.sid);
        }
    }

    /// Subscriptions that reached their `max_msgs` during a delivery.
    fn expire_subs(&mut self) {
        while let Some(key) = self.subscriptions.pop_expired() {
            self.remove_sub(key);
        }
    }

    /// Retries the connections whose PUBLISH waited for ring room.
    fn resume_waiting(&mut self) {
        self.peers.note_barrier_before_retry();
        if !self.conns.awaits_room() {
            return;
        }
        let mut waiting = self.conns.take_waiting();
        for cid in waiting.drain(..) {
            self.retry(cid, Wait::Room);
        }
        self.conns.retried(waiting);
    }

    /// Retries the connections paced behind backlogged subscribers, once
    /// one of those caught up.
    fn resume_paced(&mut self) {
        for cid in self.conns.take_paced() {
            self.retry(cid, Wait::Backlog);
        }
    }

    /// Handles the input of a connection that waited; one still stalled
    /// stays out of the backend's reads, or the loop would spin on it.
    fn retry(&mut self, cid: ConnId, wait: Wait) {
        if !self.conns.stop_waiting(cid, wait) {
            return;
        }
        self.process_input(cid);
        if self.wants_input(cid) {
            self.conns.resumed(cid);
        }
    }

    /// Routes one published message: local subscriptions get it now, other
    /// workers with interest get one record each. Having done nothing, says
    /// what to wait for when a needed ring lacks room or a local recipient
    /// is backlogged.
    fn route(&mut self, from: Publisher<'_>, message: &Message<'_>) -> Result<(), Wait> {
        let cid = from.cid;
        let (matches, subs) = self.subscriptions.lookup(message.subject);
        let remote = self.groups.assign(
            matches,
            |key| !from.echo && subs.conn_of(key) == from.own,
            |name| from.groups.serves(name),
        );
        if self.conns.any_backlogged() {
            let mut recipients = matches
                .local
                .iter()
                .copied()
                .chain(self.groups.local_members());
            if recipients.any(|key| self.conns.is_backlogged(subs.conn_of(key))) {
                self.stats.inc(Counter::PacedPublishes);
                return Err(Wait::Backlog);
            }
        }
        for worker in remote.iter() {
            let groups = self.groups.names_for(matches, worker);
            let len = records::data_len(message, groups);
            let producer = self.peers.producer(worker);
            if len > producer.max_record() {
                // Only a message matching a great many queue groups gets
                // here (frames are bounded well below a ring's record size).
                tracing::warn!(len, "message too large for a ring record; refused");
                self.stats.inc(Counter::DroppedOversized);
                return Ok(());
            }
            if !producer.has_room(len) {
                self.stats.inc(Counter::RingFullStalls);
                return Err(Wait::Room);
            }
        }
        let nobody = matches.local.is_empty() && remote.is_empty() && matches.groups.is_empty();
        let recipients = matches.local.len() + self.groups.local_members().count();
        let mut delivery =
            Delivery::start(&mut self.conns, subs, &self.stats, self.now, self.read_at);
        if !from.echo {
            delivery.skip_own(from.own);
        }
        let from_hub = from.own == HUB_SUBSCRIBER;
        if let Some(hub) = self.hub.as_deref_mut() {
            delivery.divert_hub(hub);
        }
        delivery.share_if_worth_it(message.payload, recipients);
        for key in matches
            .local
            .iter()
            .copied()
            .chain(self.groups.local_members())
        {
            delivery.deliver(key, message);
        }
        delivery.finish(message, from_hub);
        for worker in remote.iter() {
            let groups = self.groups.names_for(matches, worker);
            let len = records::data_len(message, groups.clone());
            let producer = self.peers.producer(worker);
            let slot = producer.try_reserve(len).expect("room checked above");
            let routing = Routing {
                read_at: self.read_at,
                from_hub,
                ..Routing::default()
            };
            records::write_data(slot, routing, message, groups);
            producer.commit();
        }
        self.stats.inc(Counter::MessagesPublished);
        let conn = &mut self.conns[cid];
        conn.info.msgs_in += 1;
        if !remote.is_empty() {
            conn.unsynced = true;
        }
        self.expire_subs();
        if let (true, true, Some(reply)) = (nobody, from.no_responders, message.reply) {
            self.answer_no_responders(cid, reply);
        }
        Ok(())
    }

    /// A NATS request nobody subscribes to: the requester's own
    /// subscriptions to its reply subject get the 503 status message, so
    /// that its client fails the request at once (nats-server does the same).
    fn answer_no_responders(&mut self, cid: ConnId, reply: &[u8]) {
        let (matches, subs) = self.subscriptions.lookup(reply);
        for &key in &matches.local {
            let (owner, sid) = subs.owner(key);
            if owner != cid {
                continue;
            }
            let conn = &mut self.conns[cid];
            let mut sid_text = itoa::Buffer::new();
            let sid = sid_text.format(sid).as_bytes();
            nats::encode::put_no_responders(conn.output.frames(), reply, sid);
            self.stats.inc(Counter::FramesOutMessage);
            self.conns.mark_dirty(cid);
        }
    }

    /// Handles up to a batch of records from one peer.
    fn drain_ring(&mut self, from: usize) -> usize {
        const BATCH: usize = 4096;
        // Taken out for the batch, so that each record can use the whole core.
        if self.peers.is_paused(from) {
            return 0;
        }
        let Some(mut consumer) = self.peers.take_incoming(from) else {
            return 0;
        };
        let mut handled = 0;
        while handled < BATCH {
            let Some(record) = consumer.peek() else { break };
            let record = records::read(record);
            if self.conns.any_backlogged() && self.feeds_backlog(&record) {
                // Left in the ring, which fills, so that the publishers
                // behind it wait for room.
                self.stats.inc(Counter::PacedRecords);
                self.peers.pause(from);
                break;
            }
            match record {
                Record::Data {
                    message,
                    groups,
                    routing,
                } => self.deliver_record(&message, groups, routing),
                Record::Interest { add, filter, queue } => {
                    self.subscriptions
                        .on_interest(add, filter, queue, from as WorkerId);
                    if let Some(hub) = self.hub.as_deref_mut() {
                        hub.local_interest(add, filter, queue);
                    }
                }
            }
            consumer.advance();
            // A subscription that reached max_msgs must not be picked for
            // the next record.
            self.expire_subs();
            handled += 1;
        }
        self.peers.put_back(from, consumer, handled > 0);
        handled
    }

    /// Whether a data record would go to a backlogged local subscriber:
    /// a plain match, or any local member of a group it names.
    fn feeds_backlog(&mut self, record: &Record<'_>) -> bool {
        let Record::Data {
            message,
            groups,
            routing,
        } = record
        else {
            return false;
        };
        let (matches, subs) = self.subscriptions.lookup(message.subject);
        let plain: &[SubKey] = if routing.groups_only {
            &[]
        } else {
            &matches.local
        };
        let mut members = matches
            .groups
            .iter()
            .filter(|group| groups.iter().any(|name| name == &*group.name))
            .flat_map(|group| group.local.iter());
        plain
            .iter()
            .chain(&mut members)
            .any(|&key| self.conns.is_backlogged(subs.conn_of(key)))
    }

    /// Delivers a message another worker routed here: to the local plain
    /// subscriptions, and to one local member of each group assigned here.
    /// A group whose members here left meanwhile is forwarded to a member on
    /// another worker, so it is not lost to a stale view.
    fn deliver_record(&mut self, message: &Message<'_>, groups: GroupNames<'_>, routing: Routing) {
        let mut forward: Vec<(&[u8], WorkerId)> = Vec::new();
        let (matches, subs) = self.subscriptions.lookup(message.subject);
        let plain: &[SubKey] = if routing.groups_only {
            &[]
        } else {
            &matches.local
        };
        let mut delivery = Delivery::start(
            &mut self.conns,
            subs,
            &self.stats,
            self.now,
            routing.read_at,
        );
        if let Some(hub) = self.hub.as_deref_mut() {
            delivery.divert_hub(hub);
        }
        delivery.share_if_worth_it(message.payload, plain.len() + groups.iter().count());
        for &key in plain {
            delivery.deliver(key, message);
        }
        let may_forward = routing.hops < records::MAX_HOPS;
        for name in groups.iter() {
            let group = matches.groups.iter().find(|g| &*g.name == name);
            match group.and_then(|group| self.groups.pick_for_record(group, may_forward)) {
                Some(Target::Local(key)) => delivery.deliver(key, message),
                Some(Target::Remote(worker)) => forward.push((name, worker)),
                None => self.stats.inc(Counter::DroppedNoGroupMember),
            }
        }
        delivery.finish(message, routing.from_hub);
        for (name, to) in forward {
            self.stats.inc(Counter::GroupForwards);
            let routing = Routing {
                groups_only: true,
                hops: routing.hops + 1,
                ..routing
            };
            let len = records::data_len(message, std::iter::once(name));
            self.peers.push_control(to as usize, len, |slot| {
                records::write_data(slot, routing, message, std::iter::once(name))
            });
        }
    }
}

pub mod control;
mod hub;
