//! The per-connection protocol state machine, sans-IO.
//!
//! A [`Session`] takes decoded frames and the time, and says what must happen:
//! an answer, an error, a close, or a command for the router. It knows the
//! handshake, the limits, the sids of its subscriptions and the ping timers;
//! it owns no socket and no subscription storage.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blipmq_protocol::nats::{self, ClientOp, ConnectOptions, ServerInfo};
use blipmq_protocol::{
    decode_frame, validate_filter, validate_queue, validate_subject, Connect, ErrorCode,
    FrameError, Info, Op, RawFrame, Request, PROTOCOL_VERSION,
};

use crate::auth::{ReplyGrants, User, UserTable};
use crate::router::SubKey;

#[cfg(test)]
mod auth_tests;
#[cfg(test)]
mod nats_tests;
#[cfg(test)]
mod tests;

/// The limits and settings a session enforces; shared by all sessions of a
/// worker and swapped whole on reload.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub server_id: String,
    pub max_payload: u32,
    pub max_topic_length: u16,
    /// 0 = unlimited.
    pub max_subscriptions: u32,
    pub token: Option<String>,
    /// `[[auth.users]]`; empty when there are none (never beside `token`).
    pub users: Arc<UserTable>,
    pub ping_interval: Duration,
    pub max_pings_out: u32,
}

impl SessionConfig {
    /// Whether CONNECT must carry credentials.
    pub fn auth_required(&self) -> bool {
        self.token.is_some() || !self.users.is_empty()
    }

    /// The largest frame accepted: `max_payload` plus room for the header,
    /// topic, reply subject, sid and counts.
    pub fn max_frame_len(&self) -> u32 {
        self.max_payload
            .saturating_add(blipmq_protocol::FRAME_ALLOWANCE)
    }

    /// The INFO a NATS client gets on accept; `client_id` is the
    /// connection's serial, `listen` the NATS listener's address.
    pub fn nats_info(&self, client_id: u64, listen: Option<std::net::SocketAddr>) -> ServerInfo {
        let defaults = ServerInfo::default();
        ServerInfo {
            host: listen.map_or(defaults.host.clone(), |addr| addr.ip().to_string()),
            port: listen.map_or(defaults.port, |addr| addr.port()),
            server_id: self.server_id.clone(),
            server_name: self.server_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            headers: SERVER_HEADERS,
            auth_required: self.auth_required(),
            max_payload: self.max_payload.min(i32::MAX as u32) as i32,
            client_id,
            ..defaults
        }
    }

    /// The INFO body sent on accept; `tls_required` when the broker has TLS.
    pub fn info_json(&self, worker: usize, tls_required: bool) -> Vec<u8> {
        let info = Info {
            server_id: self.server_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: PROTOCOL_VERSION,
            max_payload: self.max_payload as u64,
            max_topic_length: self.max_topic_length as u64,
            auth_required: self.auth_required(),
            tls_required,
            worker: Some(worker as u32),
        };
        serde_json::to_vec(&info).expect("INFO serialises")
    }
}

/// The protocol a connection speaks: BlipMQ's binary one, or NATS's text
/// one (a second listener). Both run through the same session; the worker's
/// `dialect` module writes each one's server frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// protocol.md's binary frames.
    #[default]
    Binary,
    /// The NATS client protocol, as nats-server 2.9 speaks it.
    Nats,
}

/// What the front of a connection's unread bytes holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// Part of a frame: wait for more bytes.
    Partial,
    /// One frame of `len` bytes (its `op`, for the counters, when it is a
    /// known one) and what it asks for.
    Frame {
        step: Step<'a>,
        len: usize,
        op: Option<Op>,
    },
    /// Bytes that cannot be decoded: what to do (ERROR and close); the rest
    /// of the input is worthless.
    Invalid(Step<'a>),
}

/// One published message, as the session hands it to routing and the
/// rings carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Message<'a> {
    pub subject: &'a [u8],
    pub reply: Option<&'a [u8]>,
    /// A NATS header block (`NATS/1.0\r\n...\r\n\r\n`) from HPUB; empty
    /// when none. Only NATS subscribers that enabled headers see it.
    pub headers: &'a [u8],
    pub payload: &'a [u8],
}

/// What the worker must do for one frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Nothing to send (a PONG from the client, a frame without ACK that needs no answer).
    Nothing,
    /// Answer OK.
    Ok,
    /// Answer PONG.
    Pong,
    /// Answer ERROR; the connection stays open.
    Error(ErrorCode, String),
    /// Answer ERROR, then close the connection.
    Fatal(ErrorCode, String),
    /// Route a message; answer OK afterwards when `ack`.
    Publish { message: Message<'a>, ack: bool },
    /// Add a subscription, then call [`Session::bind_sid`]; answer OK when `ack`.
    Subscribe {
        sid: u32,
        filter: &'a [u8],
        queue: Option<&'a [u8]>,
        ack: bool,
    },
    /// Remove the subscription `key` (sid `sid`) at once when `max_msgs` is 0,
    /// else once it has received `max_msgs` in total; answer OK when `ack`.
    Unsubscribe {
        sid: u32,
        key: SubKey,
        max_msgs: u32,
        ack: bool,
    },
    /// The client said goodbye: flush what is queued for it, then close.
    Disconnect,
    /// Close without a word: a NATS protocol violation that nats-server
    /// answers with no `-ERR`.
    Drop,
}

/// Whether INFO offers NATS clients headers.
const SERVER_HEADERS: bool = true;

/// Why a NATS sid is refused: BlipMQ keeps sids as numbers, as every NATS
/// client sends them.
const NATS_SID_REFUSED: &str = "sid must be a decimal number below 2^32";

/// A NATS sid as BlipMQ's number.
fn nats_sid(sid: &[u8]) -> Option<u32> {
    std::str::from_utf8(sid).ok()?.parse().ok()
}

/// A refusal in nats-server's words: for a subject (of a SUB when `is_sub`,
/// else of a PUB) or past the subscription limit. Rewrites the reason in
/// place, so that the steps that are not errors (every message) pass by
/// reference, not by copy.
#[inline]
fn in_nats_words(mut step: Step<'_>, is_sub: bool) -> Step<'_> {
    if let Step::Error(code, reason) = &mut step {
        match code {
            ErrorCode::BadRequest if is_sub => *reason = "Invalid Subject".into(),
            ErrorCode::BadRequest => *reason = "Invalid Publish Subject".into(),
            ErrorCode::TooMany => *reason = "maximum subscriptions exceeded".into(),
            _ => {}
        }
    }
    step
}

/// The binary op a NATS op counts as.
fn nats_op(op: &ClientOp<'_>) -> Op {
    match op {
        ClientOp::Connect { .. } => Op::Connect,
        ClientOp::Pub { .. } | ClientOp::Hpub { .. } => Op::Publish,
        ClientOp::Sub { .. } => Op::Subscribe,
        ClientOp::Unsub { .. } => Op::Unsubscribe,
        ClientOp::Ping => Op::Ping,
        ClientOp::Pong => Op::Pong,
    }
}

/// The ERROR code of a NATS decoding error, for the statistics and for the
/// worker's NATS error text (which maps `TooLarge` to nats-server's).
fn nats_error_code(error: &nats::NatsError) -> ErrorCode {
    match error {
        nats::NatsError::MaxPayload { .. } => ErrorCode::TooLarge,
        _ => ErrorCode::BadRequest,
    }
}

/// What the timer says for this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    Nothing,
    /// Send a PING.
    SendPing,
    /// Too many PINGs unanswered: ERROR 408, then close.
    Stale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitConnect,
    Open,
}

/// What a NATS client asked for in CONNECT; a binary client gets the
/// defaults (its own messages, no headers, no status messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatsOptions {
    /// Deliver its own messages to its own subscriptions.
    pub echo: bool,
    /// It takes HPUB/HMSG (it asked and the server offers them).
    pub headers: bool,
    /// A request of its that nobody subscribes to gets a 503 status message.
    pub no_responders: bool,
}

impl Default for NatsOptions {
    fn default() -> NatsOptions {
        NatsOptions {
            echo: true,
            headers: false,
            no_responders: false,
        }
    }
}

pub struct Session {
    config: Arc<SessionConfig>,
    phase: Phase,
    verbose: bool,
    nats: NatsOptions,
    /// The client library and its version, as a NATS client says (for
    /// monitoring).
    client: Option<(String, String)>,
    name: Option<String>,
    sids: HashMap<u32, SubKey>,
    pings_out: u32,
    next_ping: Instant,
    /// Who CONNECT proved the client to be, when it gave a user's
    /// credentials; its permissions apply to every publish and subscribe.
    user: Option<Arc<User>>,
    /// The user names its verified client certificate offers, best first
    /// (for `tls.verify_and_map`); empty without one.
    certificate_names: Vec<String>,
    /// Reply subjects it may answer (`allow_responses`).
    replies: ReplyGrants,
    /// The time of the bytes being handled, for reply grants.
    now: Instant,
}

/// nats-server's words for a refused publish or subscribe, which both
/// dialects send (a NATS client matches on them).
fn permission_violation(what: &str, subject: &[u8], queue: Option<&[u8]>) -> String {
    let subject = String::from_utf8_lossy(subject);
    match queue {
        Some(queue) => format!(
            "Permissions Violation for {what} to \"{subject}\" using queue \"{}\"",
            String::from_utf8_lossy(queue)
        ),
        None => format!("Permissions Violation for {what} to \"{subject}\""),
    }
}

/// Why CONNECT's credentials were refused; the same for every cause, so as
/// not to tell a guesser which part was wrong.
const AUTHORIZATION_FAILED: &str = "authorization failed";

impl Session {
    pub fn new(config: Arc<SessionConfig>, now: Instant) -> Session {
        let next_ping = now + config.ping_interval;
        Session {
            config,
            phase: Phase::AwaitConnect,
            verbose: false,
            nats: NatsOptions::default(),
            client: None,
            name: None,
            sids: HashMap::new(),
            pings_out: 0,
            next_ping,
            user: None,
            certificate_names: Vec::new(),
            replies: ReplyGrants::default(),
            now,
        }
    }

    /// The user CONNECT authenticated, if it named one (or, with
    /// `tls.verify_and_map`, the user its client certificate names).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref().map(User::name)
    }

    /// The client's certificate was verified and offers these names, best
    /// first; with `tls.verify_and_map` the first that is a user's is the
    /// connection's user.
    pub fn set_certificate_names(&mut self, names: Vec<String>) {
        self.certificate_names = names;
    }

    fn certificate_user(&self) -> Option<Arc<User>> {
        let names = self.certificate_names.iter().map(String::as_str);
        self.config.users.by_certificate(names).cloned()
    }

    /// Applies a reloaded configuration to a live connection and checks
    /// its credentials again, as nats-server does: false when they no
    /// longer hold (its user is gone or has new credentials, the token
    /// changed, or credentials are now required) and it must be closed.
    /// Otherwise its user's new permissions apply from its next frame. A
    /// connection whose user came from its certificate is mapped again.
    pub fn reauthorize(&mut self, config: Arc<SessionConfig>) -> bool {
        let old = std::mem::replace(&mut self.config, config);
        if self.phase != Phase::Open || !self.config.auth_required() {
            self.user = None;
            return true;
        }
        if self.config.users.maps_certificates() {
            self.user = self.certificate_user();
            return self.user.is_some();
        }
        if old.users.maps_certificates() {
            // Its certificate was its credential, and no longer is.
            self.user = None;
            return false;
        }
        match self.user.take() {
            Some(user) => match self.config.users.find(user.name()) {
                Some(reloaded) if reloaded.same_credential(&user) => {
                    self.user = Some(reloaded.clone());
                    true
                }
                _ => false,
            },
            None => old.token.is_some() && old.token == self.config.token,
        }
    }

    /// A message is about to be delivered to this connection: whether its
    /// user may receive it, and, with `allow_responses`, a grant to answer
    /// its reply subject.
    pub fn on_delivery(&mut self, subject: &[u8], reply: Option<&[u8]>, now: Instant) -> bool {
        let Some(user) = &self.user else {
            return true;
        };
        let permissions = user.permissions();
        if !permissions.may_receive(subject) {
            return false;
        }
        if let (Some(reply), Some(limits)) = (reply, permissions.responses()) {
            self.replies.grant(reply, limits, now);
        }
        true
    }

    /// Checks CONNECT's credentials against the configuration: `Ok` with
    /// the user they name, if any, or the ERROR that closes the connection.
    fn authenticate(
        &self,
        token: Option<&str>,
        user: Option<&str>,
        pass: Option<&str>,
    ) -> Result<Option<Arc<User>>, Step<'static>> {
        let refused = || Step::Fatal(ErrorCode::Unauthorized, AUTHORIZATION_FAILED.into());
        if let Some(expected) = &self.config.token {
            let valid = token.is_some_and(|token| {
                subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), token.as_bytes()).into()
            });
            return if valid { Ok(None) } else { Err(refused()) };
        }
        let users = &self.config.users;
        if users.is_empty() {
            return Ok(None);
        }
        if users.maps_certificates() {
            // As nats-server: CONNECT's credentials are not looked at.
            return self.certificate_user().map(Some).ok_or_else(refused);
        }
        let found = match user {
            Some(name) => users.by_password(name, pass.unwrap_or_default()),
            None => token.and_then(|token| users.by_token(token)),
        };
        found.cloned().map(Some).ok_or_else(refused)
    }

    pub fn config(&self) -> &Arc<SessionConfig> {
        &self.config
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The client library and its version, from a NATS CONNECT.
    pub fn client(&self) -> Option<(&str, &str)> {
        self.client
            .as_ref()
            .map(|(lang, version)| (lang.as_str(), version.as_str()))
    }

    /// What the client asked for in a NATS CONNECT.
    pub fn nats_options(&self) -> NatsOptions {
        self.nats
    }

    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    pub fn subscription_count(&self) -> usize {
        self.sids.len()
    }

    /// The subscriptions of this connection, for cleanup on close.
    pub fn subscriptions(&self) -> impl Iterator<Item = (u32, SubKey)> + '_ {
        self.sids.iter().map(|(&sid, &key)| (sid, key))
    }

    /// Records the subscription the worker created for a [`Step::Subscribe`].
    pub fn bind_sid(&mut self, sid: u32, key: SubKey) {
        self.sids.insert(sid, key);
    }

    /// Frees a sid once its subscription is gone.
    pub fn release_sid(&mut self, sid: u32) {
        self.sids.remove(&sid);
    }

    /// Decodes the first frame of `bytes` in `dialect` and says what it asks
    /// for.
    pub fn on_bytes<'a>(&mut self, dialect: Dialect, bytes: &'a [u8], now: Instant) -> Input<'a> {
        self.now = now;
        match dialect {
            Dialect::Binary => match decode_frame(bytes, self.config.max_frame_len()) {
                Ok(Some((frame, len))) => Input::Frame {
                    op: Op::from_u8(frame.op),
                    step: self.on_frame(frame),
                    len,
                },
                Ok(None) => Input::Partial,
                Err(error) => Input::Invalid(self.on_frame_error(error)),
            },
            Dialect::Nats => {
                let limits = nats::NatsLimits {
                    max_control_line: nats::MAX_CONTROL_LINE_SIZE,
                    max_payload: self.config.max_payload as usize,
                };
                match nats::decode_client_op(bytes, &limits) {
                    Ok(Some((op, len))) => Input::Frame {
                        op: Some(nats_op(&op)),
                        step: self.on_nats_op(op),
                        len,
                    },
                    Ok(None) => Input::Partial,
                    Err(error) => Input::Invalid(match error.err_text() {
                        Some(text) => Step::Fatal(nats_error_code(&error), text.into()),
                        None => Step::Drop,
                    }),
                }
            }
        }
    }

    /// A frame that could not be decoded: ERROR and close.
    pub fn on_frame_error(&self, error: FrameError) -> Step<'static> {
        Step::Fatal(error.code(), error.to_string())
    }

    /// Interprets one frame.
    pub fn on_frame<'a>(&mut self, frame: RawFrame<'a>) -> Step<'a> {
        let request = match Request::parse(frame) {
            Ok(request) => request,
            Err(error) => return self.on_frame_error(error),
        };
        if self.phase == Phase::AwaitConnect {
            return self.on_first_frame(request);
        }
        self.on_request(request)
    }

    /// Interprets one op of a NATS client (`blipmq_protocol::nats`): the
    /// same requests as the binary protocol's, with NATS's CONNECT, its
    /// decimal sids and its silent UNSUB of an unknown sid.
    pub fn on_nats_op<'a>(&mut self, op: ClientOp<'a>) -> Step<'a> {
        if self.phase == Phase::AwaitConnect {
            return match op {
                ClientOp::Connect { json } => self.on_nats_connect(json),
                _ => Step::Fatal(
                    ErrorCode::Unauthorized,
                    "CONNECT must be the first operation".into(),
                ),
            };
        }
        let ack = self.verbose;
        let is_sub = matches!(op, ClientOp::Sub { .. });
        let request = match op {
            ClientOp::Connect { .. } => {
                return Step::Fatal(ErrorCode::BadRequest, "CONNECT sent twice".into())
            }
            ClientOp::Pub {
                subject,
                reply,
                payload,
            } => Request::Publish {
                subject,
                reply,
                payload,
                ack,
            },
            ClientOp::Hpub {
                subject,
                reply,
                headers,
                payload,
            } => {
                if !self.nats.headers {
                    // nats-server closes such a client without a word
                    // (ErrMsgHeadersNotSupported is a parse error).
                    return Step::Drop;
                }
                let message = Message {
                    subject,
                    reply,
                    headers,
                    payload,
                };
                return in_nats_words(self.on_publish(message, ack), false);
            }
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => match nats_sid(sid) {
                Some(sid) => Request::Subscribe {
                    filter: subject,
                    sid,
                    queue,
                    ack,
                },
                None => return Step::Error(ErrorCode::BadRequest, NATS_SID_REFUSED.into()),
            },
            ClientOp::Unsub { sid, max_msgs } => match nats_sid(sid) {
                // nats-server ignores an UNSUB of a sid it does not know.
                Some(sid) if self.sids.contains_key(&sid) => {
                    Request::Unsubscribe { sid, max_msgs, ack }
                }
                _ if ack => return Step::Ok,
                _ => return Step::Nothing,
            },
            ClientOp::Ping => Request::Ping,
            ClientOp::Pong => Request::Pong,
        };
        in_nats_words(self.on_request(request), is_sub)
    }

    fn on_nats_connect<'a>(&mut self, json: &[u8]) -> Step<'a> {
        let connect =
            match ConnectOptions::parse(json).and_then(|c| c.check(SERVER_HEADERS).map(|()| c)) {
                Ok(connect) => connect,
                Err(error) => return Step::Fatal(ErrorCode::BadRequest, error.to_string()),
            };
        // With `auth.token`, a token goes as `auth_token`, or as the
        // password of a client that only has a user/password setting.
        let token = match self.config.token {
            Some(_) => connect.auth_token.as_deref().or(connect.pass.as_deref()),
            None => connect.auth_token.as_deref(),
        };
        match self.authenticate(token, connect.user.as_deref(), connect.pass.as_deref()) {
            Ok(user) => self.user = user,
            Err(refused) => return refused,
        }
        self.phase = Phase::Open;
        self.verbose = connect.verbose;
        let headers = connect.headers_enabled(SERVER_HEADERS);
        self.nats = NatsOptions {
            echo: connect.echo,
            headers,
            no_responders: connect.no_responders && headers,
        };
        self.name = (!connect.name.is_empty()).then_some(connect.name);
        self.client = Some((connect.lang, connect.version));
        if self.verbose {
            Step::Ok
        } else {
            Step::Nothing
        }
    }

    /// A request of an open session, whatever protocol carried it.
    fn on_request<'a>(&mut self, request: Request<'a>) -> Step<'a> {
        match request {
            Request::Connect { .. } => {
                Step::Fatal(ErrorCode::BadRequest, "CONNECT sent twice".into())
            }
            Request::Publish {
                subject,
                reply,
                payload,
                ack,
            } => self.on_publish(
                Message {
                    subject,
                    reply,
                    headers: &[],
                    payload,
                },
                ack || self.verbose,
            ),
            Request::Subscribe {
                filter,
                sid,
                queue,
                ack,
            } => self.on_subscribe(filter, sid, queue, ack || self.verbose),
            Request::Unsubscribe { sid, max_msgs, ack } => match self.sids.get(&sid) {
                Some(&key) => Step::Unsubscribe {
                    sid,
                    key,
                    max_msgs,
                    ack: ack || self.verbose,
                },
                None => Step::Error(ErrorCode::NotFound, format!("unknown sid {sid}")),
            },
            Request::Ping => Step::Pong,
            Request::Pong => {
                self.pings_out = 0;
                Step::Nothing
            }
            Request::Disconnect => Step::Disconnect,
        }
    }

    fn on_first_frame<'a>(&mut self, request: Request<'a>) -> Step<'a> {
        let Request::Connect { json } = request else {
            return Step::Fatal(
                ErrorCode::Unauthorized,
                "CONNECT must be the first frame".into(),
            );
        };
        let connect = match Connect::parse(json) {
            Ok(connect) => connect,
            Err(reason) => return Step::Fatal(ErrorCode::BadRequest, reason.into()),
        };
        match self.authenticate(
            connect.token.as_deref(),
            connect.user.as_deref(),
            connect.pass.as_deref(),
        ) {
            Ok(user) => self.user = user,
            Err(refused) => return refused,
        }
        self.phase = Phase::Open;
        self.verbose = connect.verbose;
        self.name = connect.name;
        Step::Ok
    }

    fn on_publish<'a>(&mut self, message: Message<'a>, ack: bool) -> Step<'a> {
        let size = message.headers.len() + message.payload.len();
        if size > self.config.max_payload as usize {
            return Step::Fatal(
                ErrorCode::TooLarge,
                format!(
                    "payload of {size} bytes exceeds max_payload {}",
                    self.config.max_payload
                ),
            );
        }
        let max_len = self.config.max_topic_length as usize;
        if let Err(error) = validate_subject(message.subject, max_len) {
            return Step::Error(ErrorCode::BadRequest, error.to_string());
        }
        if let Some(reply) = message.reply {
            if let Err(error) = validate_subject(reply, max_len) {
                return Step::Error(ErrorCode::BadRequest, format!("reply: {error}"));
            }
        }
        if let Some(user) = &self.user {
            if !user.permissions().may_publish(message.subject)
                && !self.replies.take(message.subject, self.now)
            {
                return Step::Error(
                    ErrorCode::Forbidden,
                    permission_violation("Publish", message.subject, None),
                );
            }
        }
        Step::Publish { message, ack }
    }

    fn on_subscribe<'a>(
        &self,
        filter: &'a [u8],
        sid: u32,
        queue: Option<&'a [u8]>,
        ack: bool,
    ) -> Step<'a> {
        let max_len = self.config.max_topic_length as usize;
        if let Err(error) = validate_filter(filter, max_len) {
            return Step::Error(ErrorCode::BadRequest, error.to_string());
        }
        if let Some(queue) = queue {
            if let Err(error) = validate_queue(queue, max_len) {
                return Step::Error(ErrorCode::BadRequest, format!("queue group: {error}"));
            }
        }
        if let Some(user) = &self.user {
            if !user.permissions().may_subscribe(filter) {
                return Step::Error(
                    ErrorCode::Forbidden,
                    permission_violation("Subscription", filter, queue),
                );
            }
        }
        if self.sids.contains_key(&sid) {
            return Step::Error(ErrorCode::Conflict, format!("sid {sid} already in use"));
        }
        let max = self.config.max_subscriptions;
        if max != 0 && self.sids.len() >= max as usize {
            return Step::Error(
                ErrorCode::TooMany,
                format!("subscription limit of {max} reached"),
            );
        }
        Step::Subscribe {
            sid,
            filter,
            queue,
            ack,
        }
    }

    /// When the timer next wants attention.
    pub fn next_deadline(&self) -> Instant {
        self.next_ping
    }

    /// Drives the server PINGs: one every `ping_interval`; with
    /// `max_pings_out` unanswered, the connection is stale.
    pub fn on_tick(&mut self, now: Instant) -> Tick {
        if now < self.next_ping {
            return Tick::Nothing;
        }
        self.next_ping = now + self.config.ping_interval;
        if self.pings_out >= self.config.max_pings_out {
            return Tick::Stale;
        }
        self.pings_out += 1;
        Tick::SendPing
    }
}
