//! One leaf-node link to a NATS hub, sans-IO: BlipMQ's side of
//! `[[leafnode.remotes]]`. It owns no socket: the caller dials when told,
//! feeds the bytes it reads and the time, writes what [`LeafLink::output`]
//! holds, and gets back what must happen locally (deliver a hub message,
//! the hub's interest changed, dial, close).
//!
//! What the link does (protocol notes: [`blipmq_protocol::nats::leaf`]):
//! - the handshake: INFO → CONNECT (name, credentials, headers) and PING;
//!   the link is up when the hub has accepted CONNECT (its `connect_info`
//!   INFO, when it announced one) and answered the PING; all within
//!   `handshake_timeout` of the dial;
//! - local interest, aggregated per (filter, queue group): `LS+` on the
//!   first subscription and `LS-` on the last; a queue group's `LS+` is
//!   sent again with its member count (weight) on every change, as
//!   nats-server does; everything is sent again after a reconnect, with the
//!   link's own `$LDS.` loop-detection subject;
//! - the hub's interest, in the router's subscription index
//!   ([`LeafLink::hub_interest`]);
//! - filters, as nats-server applies a remote's `deny_exports` /
//!   `deny_imports`: `export` decides which local messages may go to the hub
//!   and which hub interest is recorded (the hub wanting a subject we never
//!   send is moot); `import` decides which local interest is announced with
//!   `LS+` and which hub messages are delivered;
//! - loops: a message that came from the hub is never sent back
//!   ([`Origin::Hub`]), and the hub echoing our `$LDS.` subject means this
//!   broker reached the cluster twice: the link closes and waits
//!   `loop_delay` before it dials again;
//! - keepalive: a PING every `ping_interval`, the link closed as stale past
//!   `max_pings_out` unanswered; reconnects after an exponential back-off
//!   (with a seeded jitter), each attempt on the next URL: the configured
//!   ones, then the hub cluster's others that its INFOs advertised
//!   (`leafnode_urls`), so that a leaf told of one node finds the rest;
//! - while the link is down, messages are counted as dropped, never queued;
//!   nor is more than `max_pending_bytes` of output kept for a slow hub.

mod backoff;
mod hub_interest;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use blipmq_protocol::nats::leaf::{
    decode_hub_op, encode, HubInfo, HubOp, LeafConnect, LeafDecodeError, LeafMsg, QueueWeight,
    LOOP_DETECTION_PREFIX,
};
use blipmq_protocol::nats::NatsLimits;

use crate::auth::SubjectRules;
use crate::router::Matches;
use backoff::Backoff;
use hub_interest::{split_key, HubInterest};

pub use hub_interest::{interest_key, InterestChange};

/// Credentials for the hub's CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Credentials {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    /// Read by a hub's client authorization (`authorization { token }`).
    Token(String),
}

/// What one link needs to know.
#[derive(Debug)]
pub struct LeafLinkConfig {
    /// The leaf's name in CONNECT (the hub's `/leafz` shows it).
    pub name: String,
    /// Hub addresses (`host:port`), tried in turn.
    pub urls: Vec<String>,
    pub credentials: Credentials,
    /// Announced in CONNECT; the TLS itself is the caller's.
    pub tls_required: bool,
    pub export: SubjectRules,
    pub import: SubjectRules,
    pub limits: NatsLimits,
    /// From the dial to an accepted CONNECT.
    pub handshake_timeout: Duration,
    pub ping_interval: Duration,
    pub max_pings_out: u32,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// The wait before dialling again after a loop was detected.
    pub loop_delay: Duration,
    /// Output kept for the hub at most; messages past it are dropped.
    pub max_pending_bytes: usize,
    /// Seeds the jitter and the loop-detection id (a random seed in
    /// production, a fixed one in tests).
    pub seed: u64,
}

impl LeafLinkConfig {
    /// nats-server's timers: 2 min pings, 2 unanswered, 1 s reconnect (here
    /// the floor of the back-off, capped at 30 s), 30 s after a loop.
    pub fn new(name: impl Into<String>, urls: Vec<String>) -> LeafLinkConfig {
        LeafLinkConfig {
            name: name.into(),
            urls,
            credentials: Credentials::None,
            tls_required: false,
            export: SubjectRules::default(),
            import: SubjectRules::default(),
            limits: NatsLimits::default(),
            handshake_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(120),
            max_pings_out: 2,
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            loop_delay: Duration::from_secs(30),
            max_pending_bytes: 64 << 20,
            seed: 0,
        }
    }
}

/// Where the link is, for monitoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Down, waiting to dial.
    Waiting,
    /// Asked the caller to dial; no connection yet.
    Dialling,
    /// Connected, handshake under way.
    Handshaking,
    Up,
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Dial `urls[url_index]` now, then call [`LeafLink::connected`] or
    /// [`LeafLink::disconnected`].
    Connect { url_index: usize, url: String },
    /// Flush what can be flushed of [`LeafLink::output`], then close the
    /// connection; the link already counts as down (no `disconnected` call
    /// is needed).
    Close(CloseReason),
    /// Start TLS on the connection now, as its client: what the link
    /// writes from here on (CONNECT first) must go inside it. The hub's
    /// INFO came in the clear and asked for it, or the remote did.
    StartTls,
    /// The handshake completed: the link is up.
    Up,
    /// A new connection begins: every interest the last hub announced is
    /// gone. (It is kept while the link is down, so that messages for it
    /// are counted as dropped, not as unwanted.)
    HubInterestCleared,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    HandshakeTimeout,
    /// The port answered like a client or route port, not a leafnode one.
    WrongPort,
    /// Unanswered PINGs.
    Stale,
    /// The hub sent `-ERR` (credentials refused, a loop, ...).
    HubError(String),
    /// The hub sent our own `$LDS.` subject back.
    LoopDetected,
    Protocol(LeafDecodeError),
}

/// What [`LeafLink::read`] found at the front of the hub's bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<'a> {
    /// Part of an op: read more.
    Partial,
    /// One op of `consumed` bytes, and what it means locally if anything.
    Op {
        consumed: usize,
        event: Option<Event<'a>>,
    },
    /// The link is closed (see [`LeafLink::poll`] for why): drop the bytes.
    Closed,
}

/// Something the hub's input asks of the broker.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Deliver this message to local subscribers (to one member of each
    /// named queue group); it came from the hub, so never hand it back
    /// ([`Origin::Hub`]).
    Deliver(LeafMsg<'a>),
    /// The hub's interest in `subject` (a filter), for a queue group when
    /// `queue` is set.
    HubInterest {
        subject: &'a [u8],
        queue: Option<QueueWeight<'a>>,
        change: InterestChange,
    },
}

/// Where a message to forward came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A local publisher.
    Local,
    /// The hub (a [`Event::Deliver`]): never sent back.
    Hub,
}

/// A message the caller offers to the hub.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub subject: &'a [u8],
    pub reply: Option<&'a [u8]>,
    pub headers: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// What became of an offered message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    Sent,
    /// The hub wants it neither plainly nor for a named queue group.
    NoInterest,
    /// `export` refuses it.
    Denied,
    /// The link is down, its output full, or the message larger than the
    /// hub's `max_payload` (counted).
    Dropped,
    /// It came from the hub.
    Loop,
}

/// The link's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeafStats {
    pub msgs_in: u64,
    pub bytes_in: u64,
    pub msgs_out: u64,
    pub bytes_out: u64,
    /// Messages for the hub lost: the link was down or full, or they were
    /// over the hub's `max_payload`.
    pub dropped: u64,
    /// Hub messages `import` refused.
    pub import_denied: u64,
    /// Messages `export` refused.
    pub export_denied: u64,
    /// Hub messages offered back to the hub and not sent.
    pub loops_suppressed: u64,
    /// Handshakes completed.
    pub connects: u64,
    /// Links lost (after a dial, whether or not the handshake completed).
    pub disconnects: u64,
    /// Round trip of the last answered PING.
    pub rtt: Option<Duration>,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Waiting {
        until: Instant,
    },
    Dialling {
        deadline: Instant,
    },
    AwaitInfo {
        deadline: Instant,
    },
    /// CONNECT and PING sent.
    AwaitAccept {
        deadline: Instant,
        connect_info_pending: bool,
        pong_pending: bool,
    },
    Up {
        next_ping: Instant,
        pings_out: u32,
        ping_sent: Option<Instant>,
    },
}

pub struct LeafLink {
    config: LeafLinkConfig,
    phase: Phase,
    url_index: usize,
    /// Leafnode URLs of the hub cluster learnt from its INFOs.
    discovered: Vec<String>,
    backoff: Backoff,
    /// `$LDS.<id>`: ours, fixed for the link's life.
    loop_subject: Vec<u8>,
    /// Local subscriptions per interest key (`subject` or `subject queue`).
    local: HashMap<Box<[u8]>, u32>,
    hub: HubInterest,
    hub_info: Option<HubInfo>,
    output: Vec<u8>,
    actions: VecDeque<Action>,
    stats: LeafStats,
}

impl LeafLink {
    /// A link that dials `urls[0]` at the first [`poll`](Self::poll).
    pub fn new(config: LeafLinkConfig, now: Instant) -> LeafLink {
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let loop_subject = loop_detection_subject(&mut rng);
        LeafLink {
            backoff: Backoff::new(config.reconnect_min, config.reconnect_max, rng.u64(..)),
            config,
            phase: Phase::Waiting { until: now },
            url_index: 0,
            discovered: Vec::new(),
            loop_subject,
            local: HashMap::new(),
            hub: HubInterest::default(),
            hub_info: None,
            output: Vec::new(),
            actions: VecDeque::new(),
            stats: LeafStats::default(),
        }
    }

    pub fn state(&self) -> LinkState {
        match self.phase {
            Phase::Waiting { .. } => LinkState::Waiting,
            Phase::Dialling { .. } => LinkState::Dialling,
            Phase::AwaitInfo { .. } | Phase::AwaitAccept { .. } => LinkState::Handshaking,
            Phase::Up { .. } => LinkState::Up,
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self.phase, Phase::Up { .. })
    }

    pub fn stats(&self) -> &LeafStats {
        &self.stats
    }

    /// Which URL [`current_url`](Self::current_url) is: the configured
    /// ones first, then those the hub advertised.
    pub fn url_index(&self) -> usize {
        self.url_index
    }

    /// The URL dialled last (or next).
    pub fn current_url(&self) -> &str {
        let configured = &self.config.urls;
        match configured.get(self.url_index) {
            Some(url) => url,
            None => self
                .discovered
                .get(self.url_index - configured.len())
                .map_or("", String::as_str),
        }
    }

    /// The hub cluster's other leafnode URLs its INFOs advertised, tried
    /// after the configured ones.
    pub fn discovered_urls(&self) -> &[String] {
        &self.discovered
    }

    /// Adds the leafnode URLs an INFO advertised that are not known yet.
    fn learn_urls(&mut self, info: &HubInfo) {
        for url in info.leafnode_urls.iter().flatten() {
            let known = self.config.urls.contains(url) || self.discovered.contains(url);
            if !known && self.discovered.len() < MAX_DISCOVERED_URLS {
                self.discovered.push(url.clone());
            }
        }
    }

    /// The hub's INFO, once one arrived on the current connection.
    pub fn hub_info(&self) -> Option<&HubInfo> {
        self.hub_info.as_ref()
    }

    /// Our loop-detection subject (`$LDS.<id>`).
    pub fn loop_subject(&self) -> &[u8] {
        &self.loop_subject
    }

    /// Bytes to write to the hub; the caller drains what it wrote.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// The next thing to do, timers included; call until `None`, and again
    /// at [`next_timer`](Self::next_timer).
    pub fn poll(&mut self, now: Instant) -> Option<Action> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        match self.phase {
            Phase::Waiting { until } if now >= until => {
                self.phase = Phase::Dialling {
                    deadline: now + self.config.handshake_timeout,
                };
                return Some(Action::Connect {
                    url_index: self.url_index,
                    url: self.current_url().to_owned(),
                });
            }
            Phase::Dialling { deadline }
            | Phase::AwaitInfo { deadline }
            | Phase::AwaitAccept { deadline, .. }
                if now >= deadline =>
            {
                self.close(CloseReason::HandshakeTimeout, now);
            }
            Phase::Up {
                next_ping,
                pings_out,
                ..
            } if now >= next_ping => {
                if pings_out >= self.config.max_pings_out {
                    self.close(CloseReason::Stale, now);
                } else {
                    encode::put_ping(&mut self.output);
                    self.phase = Phase::Up {
                        next_ping: now + self.config.ping_interval,
                        pings_out: pings_out + 1,
                        ping_sent: Some(now),
                    };
                }
            }
            _ => {}
        }
        self.actions.pop_front()
    }

    /// When [`poll`](Self::poll) has something to do next by the clock.
    pub fn next_timer(&self) -> Instant {
        match self.phase {
            Phase::Waiting { until } => until,
            Phase::Dialling { deadline }
            | Phase::AwaitInfo { deadline }
            | Phase::AwaitAccept { deadline, .. } => deadline,
            Phase::Up { next_ping, .. } => next_ping,
        }
    }

    /// The dial asked for by [`Action::Connect`] succeeded.
    pub fn connected(&mut self, _now: Instant) {
        if let Phase::Dialling { deadline } = self.phase {
            self.output.clear();
            self.hub_info = None;
            self.phase = Phase::AwaitInfo { deadline };
            if self.hub.clear() {
                self.actions.push_back(Action::HubInterestCleared);
            }
        }
    }

    /// The dial failed or the connection was lost.
    pub fn disconnected(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Waiting { .. }) {
            let delay = self.backoff.next_delay();
            self.go_down(now + delay);
        }
    }

    /// Decodes the op at the front of `input` (bytes from the hub) and acts
    /// on it. Call again with the rest while it returns [`Read::Op`].
    pub fn read<'a>(&mut self, input: &'a [u8], now: Instant) -> Read<'a> {
        if matches!(self.phase, Phase::Waiting { .. } | Phase::Dialling { .. }) {
            return Read::Closed;
        }
        let (op, consumed) = match decode_hub_op(input, &self.config.limits) {
            Ok(Some(decoded)) => decoded,
            Ok(None) => return Read::Partial,
            Err(error) => {
                self.close(CloseReason::Protocol(error), now);
                return Read::Closed;
            }
        };
        let event = match op {
            HubOp::Info { json } => {
                self.on_info(json, now);
                None
            }
            HubOp::Ping => {
                encode::put_pong(&mut self.output);
                None
            }
            HubOp::Pong => {
                self.on_pong(now);
                None
            }
            HubOp::Ok => None,
            HubOp::Err { text } => {
                let text = String::from_utf8_lossy(text).into_owned();
                self.close(CloseReason::HubError(text), now);
                None
            }
            HubOp::Sub { subject, queue } => self.on_hub_sub(subject, queue, now),
            HubOp::Unsub { subject, queue } => {
                self.hub
                    .remove(subject, queue)
                    .then_some(Event::HubInterest {
                        subject,
                        queue: queue.map(|name| QueueWeight { name, weight: 0 }),
                        change: InterestChange::Removed,
                    })
            }
            HubOp::Msg(msg) => self.on_hub_msg(msg),
        };
        if matches!(self.phase, Phase::Waiting { .. }) {
            return Read::Closed;
        }
        Read::Op { consumed, event }
    }

    fn on_info(&mut self, json: &[u8], now: Instant) {
        let info = match HubInfo::parse(json) {
            Ok(info) => info,
            Err(error) => {
                self.close(CloseReason::Protocol(error.into()), now);
                return;
            }
        };
        self.learn_urls(&info);
        match self.phase {
            Phase::AwaitInfo { deadline } => {
                if !info.is_leafnode_port() {
                    self.close(CloseReason::WrongPort, now);
                    return;
                }
                if self.config.tls_required || info.tls_required {
                    self.actions.push_back(Action::StartTls);
                }
                let connect = self.connect_body(&info);
                encode::put_connect(&mut self.output, &connect);
                encode::put_ping(&mut self.output);
                self.phase = Phase::AwaitAccept {
                    deadline,
                    connect_info_pending: info.info_on_connect,
                    pong_pending: true,
                };
                self.hub_info = Some(info);
            }
            Phase::AwaitAccept {
                deadline,
                pong_pending,
                ..
            } if info.connect_info => {
                self.phase = Phase::AwaitAccept {
                    deadline,
                    connect_info_pending: false,
                    pong_pending,
                };
                self.finish_handshake_if_done(now);
            }
            // An async INFO: the cluster's URLs changed (learnt above).
            _ => {}
        }
    }

    fn connect_body(&self, info: &HubInfo) -> LeafConnect {
        let (user, pass, auth_token) = match &self.config.credentials {
            Credentials::None => (None, None, None),
            Credentials::UserPassword { user, password } => {
                (Some(user.clone()), Some(password.clone()), None)
            }
            Credentials::Token(token) => (None, None, Some(token.clone())),
        };
        LeafConnect {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            user,
            pass,
            auth_token,
            tls_required: self.config.tls_required || info.tls_required,
            server_id: String::new(),
            name: self.config.name.clone(),
            cluster: String::new(),
            headers: info.headers,
        }
    }

    fn on_pong(&mut self, now: Instant) {
        match self.phase {
            Phase::AwaitAccept {
                deadline,
                connect_info_pending,
                ..
            } => {
                self.phase = Phase::AwaitAccept {
                    deadline,
                    connect_info_pending,
                    pong_pending: false,
                };
                self.finish_handshake_if_done(now);
            }
            Phase::Up {
                next_ping,
                ping_sent,
                ..
            } => {
                if let Some(sent) = ping_sent {
                    self.stats.rtt = Some(now.saturating_duration_since(sent));
                }
                self.phase = Phase::Up {
                    next_ping,
                    pings_out: 0,
                    ping_sent: None,
                };
            }
            _ => {}
        }
    }

    fn finish_handshake_if_done(&mut self, now: Instant) {
        let Phase::AwaitAccept {
            connect_info_pending: false,
            pong_pending: false,
            ..
        } = self.phase
        else {
            return;
        };
        self.phase = Phase::Up {
            next_ping: now + self.config.ping_interval,
            pings_out: 0,
            ping_sent: None,
        };
        self.backoff.reset();
        self.stats.connects += 1;
        encode::put_sub(&mut self.output, &self.loop_subject, None);
        for (key, &count) in &self.local {
            let (subject, queue) = split_key(key);
            if self.config.import.permits_filter(subject) {
                encode::put_sub(&mut self.output, subject, queue.map(|name| (name, count)));
            }
        }
        self.actions.push_back(Action::Up);
    }

    fn on_hub_sub<'a>(
        &mut self,
        subject: &'a [u8],
        queue: Option<QueueWeight<'a>>,
        now: Instant,
    ) -> Option<Event<'a>> {
        if subject == self.loop_subject.as_slice() {
            self.close(CloseReason::LoopDetected, now);
            return None;
        }
        // The hub's own `$LDS.` subject passes every filter, as in
        // nats-server: it must reach the other leaves.
        if !subject.starts_with(LOOP_DETECTION_PREFIX)
            && !self.config.export.permits_filter(subject)
        {
            return None;
        }
        let change = self
            .hub
            .add(subject, queue.map(|queue| (queue.name, queue.weight)));
        Some(Event::HubInterest {
            subject,
            queue,
            change,
        })
    }

    fn on_hub_msg<'a>(&mut self, msg: LeafMsg<'a>) -> Option<Event<'a>> {
        if !self.config.import.permits_subject(msg.subject) {
            self.stats.import_denied += 1;
            return None;
        }
        self.stats.msgs_in += 1;
        self.stats.bytes_in += (msg.payload.len() + msg.headers.map_or(0, <[u8]>::len)) as u64;
        Some(Event::Deliver(msg))
    }

    /// Counts one more local subscription on `filter` (in `queue` if any)
    /// and tells the hub when that changes what it must send us.
    pub fn add_interest(&mut self, filter: &[u8], queue: Option<&[u8]>) {
        let key = interest_key(filter, queue);
        let count = self.local.entry(key.into_boxed_slice()).or_insert(0);
        *count = count.saturating_add(1);
        let count = *count;
        // Plain interest is announced once; a group's weight every time.
        if (queue.is_some() || count == 1) && self.announces(filter) {
            encode::put_sub(&mut self.output, filter, queue.map(|name| (name, count)));
        }
    }

    /// Undoes one [`add_interest`](Self::add_interest); false if there was
    /// no such interest.
    pub fn remove_interest(&mut self, filter: &[u8], queue: Option<&[u8]>) -> bool {
        let key = interest_key(filter, queue);
        let Some(count) = self.local.get_mut(key.as_slice()) else {
            return false;
        };
        *count -= 1;
        let count = *count;
        if count == 0 {
            self.local.remove(key.as_slice());
        }
        if self.announces(filter) {
            match (count, queue) {
                (0, _) => encode::put_unsub(&mut self.output, filter, queue),
                (_, Some(name)) => encode::put_sub(&mut self.output, filter, Some((name, count))),
                (_, None) => {}
            }
        }
        true
    }

    /// Whether interest in `filter` goes to the hub now.
    fn announces(&self, filter: &[u8]) -> bool {
        self.is_up() && self.config.import.permits_filter(filter)
    }

    /// Local subscriptions counted, per (filter, queue) key.
    pub fn local_interest_len(&self) -> usize {
        self.local.len()
    }

    /// Who on the hub wants `subject`: `local` has one entry per plain
    /// interest, `groups` one per queue group (see
    /// [`hub_group_weight`](Self::hub_group_weight)).
    pub fn hub_interest(&mut self, subject: &[u8]) -> &Matches {
        self.hub.lookup(subject)
    }

    /// Whether the hub wants `subject` at all.
    pub fn hub_wants(&mut self, subject: &[u8]) -> bool {
        !self.hub.lookup(subject).is_empty()
    }

    /// The weight of a hub queue group on `filter`.
    pub fn hub_group_weight(&self, filter: &[u8], queue: &[u8]) -> Option<u32> {
        self.hub.weight(filter, queue)
    }

    pub fn hub_interest_len(&self) -> usize {
        self.hub.len()
    }

    /// Offers a message to the hub. It is sent when the hub has plain
    /// interest in its subject or interest for one of `queues` (the groups
    /// the caller wants the hub to serve: those without a local member it
    /// chose), naming the latter; never when it came from the hub.
    /// `unsent` is the output the caller took from [`output`](Self::output)
    /// and has not written yet: it counts against `max_pending_bytes`.
    pub fn forward<'q, Q>(
        &mut self,
        msg: &Outgoing<'_>,
        queues: Q,
        origin: Origin,
        unsent: usize,
    ) -> Forwarded
    where
        Q: IntoIterator<Item = &'q [u8]>,
        Q::IntoIter: Clone,
    {
        if origin == Origin::Hub {
            self.stats.loops_suppressed += 1;
            return Forwarded::Loop;
        }
        if !self.config.export.permits_subject(msg.subject) {
            self.stats.export_denied += 1;
            return Forwarded::Denied;
        }
        // A hub without headers gets the message without them, as
        // nats-server treats such a receiver; one over the hub's
        // max_payload would make it close the link.
        let hub = self.hub_info.as_ref();
        let headers = msg.headers.filter(|_| hub.is_some_and(|info| info.headers));
        let size = msg.payload.len() + headers.map_or(0, <[u8]>::len);
        let too_large =
            hub.is_some_and(|info| info.max_payload > 0 && size as i64 > info.max_payload);
        let full = self.output.len() + unsent >= self.config.max_pending_bytes;
        if !self.is_up() || too_large || full {
            self.stats.dropped += 1;
            return Forwarded::Dropped;
        }
        let matches = self.hub.lookup(msg.subject);
        let plain = !matches.local.is_empty();
        let hub_groups = queues
            .into_iter()
            .filter(|queue| matches.groups.iter().any(|group| &*group.name == *queue));
        if !plain && hub_groups.clone().next().is_none() {
            return Forwarded::NoInterest;
        }
        encode::put_msg(
            &mut self.output,
            msg.subject,
            msg.reply,
            hub_groups,
            headers,
            msg.payload,
        );
        self.stats.msgs_out += 1;
        self.stats.bytes_out += size as u64;
        Forwarded::Sent
    }

    /// Closes the link from this side (`Action::Close`), then waits.
    fn close(&mut self, reason: CloseReason, now: Instant) {
        let delay = match reason {
            CloseReason::LoopDetected => self.config.loop_delay,
            CloseReason::HubError(ref text) if text.contains("Loop detected") => {
                self.config.loop_delay
            }
            _ => self.backoff.next_delay(),
        };
        self.actions.push_back(Action::Close(reason));
        self.go_down(now + delay);
    }

    fn go_down(&mut self, retry_at: Instant) {
        self.stats.disconnects += 1;
        self.phase = Phase::Waiting { until: retry_at };
        let urls = self.config.urls.len() + self.discovered.len();
        self.url_index = (self.url_index + 1) % urls.max(1);
    }
}

impl std::fmt::Debug for LeafLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeafLink")
            .field("state", &self.state())
            .field("url", &self.current_url())
            .field("local_interest", &self.local.len())
            .field("hub_interest", &self.hub.len())
            .finish_non_exhaustive()
    }
}

/// Advertised hub URLs kept at most (a cluster's nodes).
const MAX_DISCOVERED_URLS: usize = 64;

/// `$LDS.` and 22 base-62 characters, like nats-server's nuid.
fn loop_detection_subject(rng: &mut fastrand::Rng) -> Vec<u8> {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut subject = LOOP_DETECTION_PREFIX.to_vec();
    for _ in 0..22 {
        subject.push(DIGITS[rng.usize(..DIGITS.len())]);
    }
    subject
}
