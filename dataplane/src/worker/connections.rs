//! A worker's connections and their queues: each one's session, unread
//! input, outbound queue, held answers and close state; the pool of large
//! payloads the queues share; and the lists that say which connections need
//! the backend (dirty), wait for ring room, or hold answers behind a barrier.
//!
//! A part of its own so that a delivery can write into the queues while the
//! subscription index is borrowed for the message's matches.

use std::ops::{Index, IndexMut, Range};
use std::time::{Duration, Instant};

use slab::Slab;

use super::answers::HeldAnswers;
use super::backlog::{Backlog, Pacing};
use super::core::ConnId;
use super::dialect::{self, Dialect};
use super::latency::PendingStamps;
use super::limits::{ConnectionLimits, PublishRate};
use super::outbound::Outbound;
use super::payloads::SharedPayloads;
use crate::session::{Session, Tick};
use crate::stats::{Counter, WorkerStats};
use crate::tls::TlsLink;

/// An empty input buffer larger than this gives its memory back at the next
/// tick (not on every drain, which made a streaming publisher allocate
/// again on every read).
const IDLE_INPUT_CAPACITY: usize = 64 * 1024;
/// Slices of queued output handed to TLS per seal.
const SEAL_SLICES: usize = 64;

/// Why a connection does not process its input now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    None,
    /// A PUBLISH waits for room in a ring (backpressure).
    Room,
    /// A PUBLISH waits for a subscriber it feeds to catch up (pacing).
    Backlog,
    /// A PUBLISH waits for the connection's publish budget to refill
    /// (`limits.rate_policy = "pace"`).
    Rate,
}

pub(super) struct Conn {
    pub(super) session: Session,
    /// Received bytes not yet decoded; the backend appends to it.
    pub(super) input: Vec<u8>,
    /// When the last bytes of `input` were read, on the latency clock.
    pub(super) input_read_at: u64,
    pub(super) output: Outbound,
    /// When the messages queued in `output` were read, for the latency
    /// histogram.
    pub(super) stamps: PendingStamps,
    /// Answers waiting for a barrier, and every answer after them.
    pub(super) held: HeldAnswers,
    pub(super) wait: Wait,
    /// Pushed records to other workers since its last answer.
    pub(super) unsynced: bool,
    /// Set when the connection is on its way out: close once the output is
    /// flushed, or at this deadline.
    pub(super) closing: Option<Instant>,
    /// Cut off as a slow consumer: messages for it are counted as dropped.
    pub(super) slow: bool,
    /// Whether publishers wait for it (see [`Backlog`]).
    pub(super) pacing: Pacing,
    /// Why it closes, for the statistics; an I/O error unless a close began.
    pub(super) close_reason: CloseReason,
    /// Until CONNECT is accepted: when it must have been (`auth.timeout`).
    pub(super) handshake_deadline: Option<Instant>,
    /// Its budget of messages and bytes to publish.
    pub(super) rate: PublishRate,
    /// The address it counts for in the broker's connections per IP.
    pub(super) counted_ip: Option<std::net::IpAddr>,
    /// Listed in [`DirtyList`].
    dirty: bool,
    /// What operators see (`blipmqctl conns`).
    pub(super) info: ConnMeta,
    /// Its TLS, when the broker has TLS: the transport's bytes go through
    /// it both ways.
    pub(super) tls: Option<Box<TlsLink>>,
    /// The broker's own connection to its leaf-node hub: the link, not a
    /// session, speaks on it and keeps its timers.
    pub(super) is_hub_link: bool,
}

impl Conn {
    /// Whether everything that can still be sent was: with TLS, only its
    /// records (plaintext queued during a handshake that never completes
    /// cannot be sent).
    pub(super) fn is_flushed(&self) -> bool {
        match &self.tls {
            Some(tls) if tls.is_handshaking() => tls.pending().is_empty(),
            Some(tls) => tls.pending().is_empty() && self.output.is_empty(),
            None => self.output.is_empty(),
        }
    }

    /// Bytes queued for the client: unsent output, sealed or not, and the
    /// answers held behind barriers.
    pub(super) fn queued_len(&self) -> usize {
        self.output.pending_len()
            + self.held.bytes_held()
            + self.tls.as_ref().map_or(0, |tls| tls.pending().len())
    }
}

/// A connection's identity and traffic, for the control plane only.
pub(super) struct ConnMeta {
    /// Unique in the broker: `serial % workers` is this worker's id.
    pub(super) serial: u64,
    pub(super) peer: Option<std::net::SocketAddr>,
    pub(super) accepted: Instant,
    pub(super) msgs_in: u64,
    pub(super) msgs_out: u64,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
}

/// Why a connection closed: each reason has its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CloseReason {
    Client,
    Error,
    SlowConsumer,
    Stale,
    Drain,
    Kicked,
    /// No CONNECT accepted within `auth.timeout`.
    HandshakeTimeout,
}

impl CloseReason {
    pub(super) fn counter(self) -> Counter {
        match self {
            CloseReason::Client => Counter::ConnectionsClosedClient,
            CloseReason::Error => Counter::ConnectionsClosedError,
            CloseReason::SlowConsumer => Counter::ConnectionsClosedSlowConsumer,
            CloseReason::Stale => Counter::ConnectionsClosedStale,
            CloseReason::Drain => Counter::ConnectionsClosedDrain,
            CloseReason::Kicked => Counter::ConnectionsClosedKicked,
            CloseReason::HandshakeTimeout => Counter::HandshakeTimeouts,
        }
    }
}

/// Which deadline of a connection passed (see [`Connections::sweep`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Overdue {
    /// Too many server PINGs unanswered.
    Stale,
    /// No CONNECT accepted within `auth.timeout`.
    Handshake,
}

/// Connections with output or a pending close since the backend last took
/// the list, each listed once.
#[derive(Default)]
pub(super) struct DirtyList(Vec<ConnId>);

impl DirtyList {
    pub(super) fn mark(&mut self, cid: ConnId, conn: &mut Conn) {
        if !conn.dirty {
            conn.dirty = true;
            self.0.push(cid);
        }
    }
}

/// One connection's queue, with what writing into it also takes.
pub(super) struct Queue<'a> {
    pub(super) conn: &'a mut Conn,
    pub(super) payloads: &'a mut SharedPayloads,
    pub(super) dirty: &'a mut DirtyList,
    pub(super) backlog: &'a mut Backlog,
}

pub(super) struct Connections {
    slab: Slab<Conn>,
    /// Large payloads shared by several of the queues.
    payloads: SharedPayloads,
    dirty: DirtyList,
    /// Connections whose PUBLISH waits for ring room ([`Wait::Room`]).
    waiting: Vec<ConnId>,
    /// An empty list with capacity, swapped with `waiting` on each pass.
    waiting_spare: Vec<ConnId>,
    /// Connections that stopped waiting: the backend reads them again.
    resumed: Vec<ConnId>,
    /// Connections with answers held behind a barrier.
    holding: Vec<ConnId>,
    /// Queued bytes past which a subscriber is cut off as a slow consumer.
    max_pending: usize,
    /// Subscribers behind on their queues, which pace their publishers.
    backlog: Backlog,
    /// Connections whose PUBLISH waits for a backlogged subscriber
    /// ([`Wait::Backlog`]).
    paced: Vec<ConnId>,
    /// Connections whose PUBLISH waits for their publish budget
    /// ([`Wait::Rate`]), retried at each tick.
    rate_paced: Vec<ConnId>,
    /// The next accepted connection's [`ConnMeta::serial`]; serials step by
    /// the number of workers, so that each worker's are its own.
    next_serial: u64,
    serial_step: u64,
}

impl Connections {
    pub(super) fn new(
        max_pending: usize,
        slow_consumer_grace: Duration,
        worker: usize,
        workers: usize,
    ) -> Connections {
        Connections {
            slab: Slab::new(),
            payloads: SharedPayloads::default(),
            dirty: DirtyList::default(),
            waiting: Vec::new(),
            waiting_spare: Vec::new(),
            resumed: Vec::new(),
            holding: Vec::new(),
            max_pending,
            backlog: Backlog::new(max_pending, slow_consumer_grace),
            paced: Vec::new(),
            rate_paced: Vec::new(),
            next_serial: worker as u64,
            serial_step: workers as u64,
        }
    }

    pub(super) fn insert(
        &mut self,
        session: Session,
        dialect: Dialect,
        limits: &ConnectionLimits,
        now: Instant,
    ) -> ConnId {
        let conn = Conn {
            session,
            input: Vec::new(),
            input_read_at: 0,
            output: Outbound::new(dialect),
            stamps: PendingStamps::default(),
            held: HeldAnswers::default(),
            wait: Wait::None,
            unsynced: false,
            closing: None,
            slow: false,
            pacing: Pacing::Idle,
            close_reason: CloseReason::Error,
            handshake_deadline: limits.handshake_deadline(now),
            rate: PublishRate::new(limits, now),
            counted_ip: None,
            dirty: false,
            info: ConnMeta {
                serial: self.next_serial,
                peer: None,
                accepted: now,
                msgs_in: 0,
                msgs_out: 0,
                bytes_in: 0,
                bytes_out: 0,
            },
            tls: None,
            is_hub_link: false,
        };
        self.next_serial += self.serial_step;
        self.slab.insert(conn)
    }

    /// Forgets the connection; its queue's shared payloads are released.
    pub(super) fn remove(&mut self, cid: ConnId) -> Conn {
        let mut conn = self.slab.remove(cid);
        conn.output.release_all(&mut self.payloads);
        self.backlog.forget(cid, &mut conn.pacing);
        if conn.held.is_holding() {
            self.holding.retain(|&c| c != cid);
        }
        conn
    }

    pub(super) fn max_pending(&self) -> usize {
        self.max_pending
    }

    pub(super) fn set_max_pending(&mut self, max_pending: usize, slow_consumer_grace: Duration) {
        self.max_pending = max_pending;
        self.backlog.set_limits(max_pending, slow_consumer_grace);
    }

    pub(super) fn len(&self) -> usize {
        self.slab.len()
    }

    pub(super) fn contains(&self, cid: ConnId) -> bool {
        self.slab.contains(cid)
    }

    pub(super) fn get_mut(&mut self, cid: ConnId) -> Option<&mut Conn> {
        self.slab.get_mut(cid)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (ConnId, &Conn)> {
        self.slab.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (ConnId, &mut Conn)> {
        self.slab.iter_mut()
    }

    /// A connection and what writing into its queue also takes: the shared
    /// payloads, the dirty list and the backlog.
    pub(super) fn queue(&mut self, cid: ConnId) -> Queue<'_> {
        Queue {
            conn: &mut self.slab[cid],
            payloads: &mut self.payloads,
            dirty: &mut self.dirty,
            backlog: &mut self.backlog,
        }
    }

    /// The pool of payloads shared by several queues.
    pub(super) fn payloads_mut(&mut self) -> &mut SharedPayloads {
        &mut self.payloads
    }

    pub(super) fn shared_payloads_in_use(&self) -> usize {
        self.payloads.live()
    }

    pub(super) fn mark_dirty(&mut self, cid: ConnId) {
        self.dirty.mark(cid, &mut self.slab[cid]);
    }

    /// See [`WorkerCore::take_dirty`](super::WorkerCore::take_dirty).
    pub(super) fn take_dirty(&mut self, into: &mut Vec<ConnId>) {
        into.clear();
        std::mem::swap(into, &mut self.dirty.0);
        for &cid in into.iter() {
            if let Some(conn) = self.slab.get_mut(cid) {
                conn.dirty = false;
            }
        }
    }

    /// Closes the connection once flushed, or at `deadline`; a close already
    /// begun keeps its deadline and reason.
    pub(super) fn start_close(&mut self, cid: ConnId, reason: CloseReason, deadline: Instant) {
        let conn = &mut self.slab[cid];
        if conn.closing.is_none() {
            conn.closing = Some(deadline);
            conn.close_reason = reason;
        }
        self.mark_dirty(cid);
    }

    /// Output queued for the connection: see [`WorkerCore::output`](super::WorkerCore::output).
    pub(super) fn output(&mut self, cid: ConnId) -> &[u8] {
        self.seal(cid);
        let conn = &self.slab[cid];
        match &conn.tls {
            Some(tls) => tls.pending(),
            None => conn.output.front(&self.payloads),
        }
    }

    /// Fills `slices` with the bytes for the transport, sealing queued
    /// output into TLS records first where the connection has TLS.
    pub(super) fn output_vectored<'a>(
        &'a mut self,
        cid: ConnId,
        slices: &mut [std::io::IoSlice<'a>],
    ) -> usize {
        self.seal(cid);
        let conn = &self.slab[cid];
        match &conn.tls {
            Some(tls) if tls.pending().is_empty() || slices.is_empty() => 0,
            Some(tls) => {
                slices[0] = std::io::IoSlice::new(tls.pending());
                1
            }
            None => conn.output.gather(&self.payloads, slices),
        }
    }

    /// Encrypts queued output into the connection's TLS records, as far as
    /// the TLS link takes it; then, once a closing connection's output is
    /// all sealed, its close_notify.
    fn seal(&mut self, cid: ConnId) {
        let conn = &mut self.slab[cid];
        let Some(tls) = conn.tls.as_deref_mut() else {
            return;
        };
        while tls.wants_plaintext() {
            let mut slices = [std::io::IoSlice::new(&[]); SEAL_SLICES];
            let filled = conn.output.gather(&self.payloads, &mut slices);
            if filled == 0 {
                if conn.closing.is_some() {
                    tls.close_notify();
                }
                return;
            }
            let taken = tls.seal(&slices[..filled]);
            if taken == 0 {
                return;
            }
            conn.output.advance(taken, &mut self.payloads);
            let pending = conn.output.pending_len();
            self.backlog.on_written(cid, &mut conn.pacing, pending);
        }
    }

    /// `written` bytes reached the transport at `now` (latency clock):
    /// the messages they complete are recorded in the latency histogram.
    /// With TLS, the messages sealed so far count as written once every
    /// sealed record is.
    pub(super) fn on_output_written(
        &mut self,
        cid: ConnId,
        written: usize,
        now: u64,
        stats: &WorkerStats,
    ) {
        let conn = &mut self.slab[cid];
        conn.info.bytes_out += written as u64;
        if let Some(tls) = conn.tls.as_deref_mut() {
            tls.advance(written);
            if tls.pending().is_empty() {
                conn.stamps.written(conn.output.taken(), now, stats);
            }
            return;
        }
        conn.output.advance(written, &mut self.payloads);
        conn.stamps.written(conn.output.taken(), now, stats);
        let pending = conn.output.pending_len();
        self.backlog.on_written(cid, &mut conn.pacing, pending);
    }

    /// Whether any subscriber is backlogged (publishing must check).
    pub(super) fn any_backlogged(&self) -> bool {
        self.backlog.any()
    }

    /// Whether `cid` is a backlogged subscriber still to be paced for.
    pub(super) fn is_backlogged(&self, cid: ConnId) -> bool {
        self.slab
            .get(cid)
            .is_some_and(|conn| conn.pacing == Pacing::Backlogged && conn.closing.is_none())
    }

    /// Whether the client has `max_pending_bytes` or more queued: then it
    /// must get no more answers either (see [`WorkerCore`]'s `answer`).
    pub(super) fn is_over_pending(&self, cid: ConnId) -> bool {
        self.slab[cid].queued_len() >= self.max_pending
    }

    /// Cuts `cid` off as a slow consumer: its unsent messages are dropped
    /// (returns how many), ERROR 503 goes where its socket still takes
    /// bytes, and it closes at once.
    pub(super) fn cut_slow_consumer(
        &mut self,
        cid: ConnId,
        stats: &WorkerStats,
        now: Instant,
    ) -> u64 {
        let conn = &mut self.slab[cid];
        let dropped = conn.output.discard_unsent(&mut self.payloads);
        conn.stamps.clear();
        let dialect = conn.output.dialect();
        dialect.put_error(
            conn.output.frames(),
            blipmq_protocol::ErrorCode::Unavailable,
            dialect::SLOW_CONSUMER,
        );
        stats.inc(Counter::FramesOutError);
        conn.slow = true;
        conn.closing = Some(now);
        conn.close_reason = CloseReason::SlowConsumer;
        self.backlog.forget(cid, &mut conn.pacing);
        self.dirty.mark(cid, conn);
        dropped
    }

    /// Lets go of the subscribers backlogged for longer than the grace
    /// period: their publishers go on without them. Returns how many.
    pub(super) fn let_go_overdue(&mut self, now: Instant) -> usize {
        let overdue = self.backlog.overdue(now);
        for &cid in &overdue {
            self.backlog.forget(cid, &mut self.slab[cid].pacing);
        }
        overdue.len()
    }

    /// Whether a subscriber caught up (or left) since the last
    /// [`take_backlog_eased`](Self::take_backlog_eased).
    pub(super) fn backlog_eased(&self) -> bool {
        self.backlog.is_eased()
    }

    /// Whether a subscriber caught up (or left) since the last call.
    pub(super) fn take_backlog_eased(&mut self) -> bool {
        self.backlog.take_eased()
    }

    /// Where the connection's next answer (OK, PONG, ERROR, DISCONNECT)
    /// goes: behind the held ones, if any.
    pub(super) fn answer_buffer(&mut self, cid: ConnId) -> &mut Vec<u8> {
        let conn = &mut self.slab[cid];
        if conn.held.is_holding() {
            conn.held.buffer()
        } else {
            conn.output.frames()
        }
    }

    /// Holds the connection's next answer, and every one after it, until
    /// barrier `ticket` is done.
    pub(super) fn hold_answers(&mut self, cid: ConnId, ticket: u64) {
        let conn = &mut self.slab[cid];
        conn.unsynced = false;
        if !conn.held.is_holding() {
            self.holding.push(cid);
        }
        conn.held.hold_until(ticket);
    }

    /// Moves answers whose barriers passed (every ticket up to `done`) into
    /// their connections' output.
    pub(super) fn release_answers(&mut self, done: u64) {
        self.holding.retain(|&cid| {
            let conn = &mut self.slab[cid];
            if conn.held.release(done, conn.output.frames()) {
                self.dirty.mark(cid, conn);
            }
            conn.held.is_holding()
        });
    }

    /// The connection's PUBLISH waits for ring room or for a backlogged
    /// subscriber; it is listed to be retried.
    pub(super) fn wait(&mut self, cid: ConnId, wait: Wait) {
        self.slab[cid].wait = wait;
        match wait {
            Wait::None => {}
            Wait::Room => self.waiting.push(cid),
            Wait::Backlog => self.paced.push(cid),
            Wait::Rate => self.rate_paced.push(cid),
        }
    }

    pub(super) fn any_rate_paced(&self) -> bool {
        !self.rate_paced.is_empty()
    }

    /// The connections waiting for their publish budget, to retry.
    pub(super) fn take_rate_paced(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.rate_paced)
    }

    /// The connections paced behind backlogged subscribers, to retry.
    pub(super) fn take_paced(&mut self) -> Vec<ConnId> {
        std::mem::take(&mut self.paced)
    }

    pub(super) fn awaits_room(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// The connections waiting for ring room, to retry, in a list to hand
    /// back with [`retried`](Self::retried).
    pub(super) fn take_waiting(&mut self) -> Vec<ConnId> {
        // Swap in the spare list, so that a connection that keeps waiting
        // (a publisher stalled on a full ring) costs no allocation per turn.
        let spare = std::mem::take(&mut self.waiting_spare);
        std::mem::replace(&mut self.waiting, spare)
    }

    pub(super) fn retried(&mut self, mut list: Vec<ConnId>) {
        list.clear();
        self.waiting_spare = list;
    }

    /// Ends the connection's `wait`; false for a stale entry of
    /// [`take_waiting`](Self::take_waiting) or [`take_paced`](Self::take_paced):
    /// the connection closed and its slot may have been reused. (Kept, it
    /// would keep the worker awaiting peers.)
    pub(super) fn stop_waiting(&mut self, cid: ConnId, wait: Wait) -> bool {
        match self.slab.get_mut(cid) {
            Some(conn) if conn.wait == wait => {
                conn.wait = Wait::None;
                true
            }
            _ => false,
        }
    }

    /// The connection stopped waiting with input the backend may have left
    /// in its socket.
    pub(super) fn resumed(&mut self, cid: ConnId) {
        self.resumed.push(cid);
    }

    pub(super) fn take_resumed(&mut self, into: &mut Vec<ConnId>) {
        into.append(&mut self.resumed);
    }

    /// The connections' share of a tick: buffers trimmed, closes past their
    /// deadline listed dirty, server PINGs queued. Returns the connections
    /// past a deadline of theirs, and which.
    ///
    /// The handshake deadlines ride on this walk over every connection,
    /// which the PINGs need anyway: a comparison each, no structure of
    /// their own to keep.
    /// Connection slots a sweep goes over (ids are below it).
    pub(super) fn slots(&self) -> usize {
        self.slab.capacity()
    }

    /// The tick's work for the connections in `slots` (see `sweep.rs`):
    /// trims idle buffers, queues server PINGs, and adds those past a
    /// deadline to `overdue`.
    pub(super) fn sweep(
        &mut self,
        now: Instant,
        stats: &WorkerStats,
        slots: Range<usize>,
        overdue: &mut Vec<(ConnId, Overdue)>,
    ) {
        for cid in slots {
            let Some(conn) = self.slab.get_mut(cid) else {
                continue;
            };
            conn.output.trim();
            if conn.input.is_empty() && conn.input.capacity() > IDLE_INPUT_CAPACITY {
                conn.input = Vec::new();
            }
            if let Some(deadline) = conn.closing {
                if now >= deadline {
                    self.dirty.mark(cid, conn);
                }
                continue;
            }
            if conn.is_hub_link {
                continue;
            }
            if let Some(deadline) = conn.handshake_deadline {
                if conn.session.is_open() {
                    conn.handshake_deadline = None;
                } else if now >= deadline {
                    overdue.push((cid, Overdue::Handshake));
                    continue;
                }
            }
            match conn.session.on_tick(now) {
                Tick::Nothing => {}
                Tick::SendPing => {
                    let dialect = conn.output.dialect();
                    dialect.put_ping(conn.output.frames());
                    stats.inc(Counter::FramesOutPing);
                    self.dirty.mark(cid, conn);
                }
                Tick::Stale => overdue.push((cid, Overdue::Stale)),
            }
        }
    }
}

impl Index<ConnId> for Connections {
    type Output = Conn;

    fn index(&self, cid: ConnId) -> &Conn {
        &self.slab[cid]
    }
}

impl IndexMut<ConnId> for Connections {
    fn index_mut(&mut self, cid: ConnId) -> &mut Conn {
        &mut self.slab[cid]
    }
}
