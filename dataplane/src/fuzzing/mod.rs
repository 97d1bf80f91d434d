//! The session fuzz target's logic (`dataplane/fuzz`), shared with the test
//! that replays its corpus. Not part of the API.
//!
//! [`fuzz_session`] decodes the fuzz input into a script of actions with
//! [`arbitrary`] and plays it on two worker cores joined by small rings, as a
//! backend would: accepts in either dialect, well-formed frames and raw
//! bytes into connections, partial writes, simulated time, ring polls,
//! drains and closes. The input's first byte picks the setup: pacing of slow
//! consumers, users with permissions (each accepted connection presents the
//! next of a fixed list of credentials, some wrong), and publish rate limits
//! with either policy. Beyond "no panic" it checks, after every action:
//!
//! - every byte a connection is sent is a well-formed server frame (op) of
//!   its dialect;
//! - no connection has more than `max_pending_bytes` plus one frame queued
//!   (bad or greedy input never grows the broker's memory without bound);
//! - the broker-wide connection count is the sum of the cores' and of the
//!   connections the driver holds.

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use blipmq_protocol::{decode_frame, encode, ServerFrame, FRAME_ALLOWANCE};

use crate::config::{Config, RatePolicy};
use crate::rings::RingRegion;
use crate::server::core_config;
use crate::worker::{ConnId, Dialect, Shared, WorkerCore};

mod seeds;
pub use seeds::session_seeds;

/// Two workers, so that records, barriers and interest cross rings.
const WORKERS: usize = 2;
/// The smallest ring, so that publishers fill it and wait for room.
const RING_BYTES: usize = 4096;
/// Small limits, so that the fuzzer reaches them with short inputs.
const MAX_PAYLOAD: u32 = 512;
const MAX_PENDING: usize = 4096;
const MAX_CONNECTIONS: usize = 6;
/// The most a connection may hold queued: the limit plus the frame that
/// found it full (a message, or the ERROR of a slow consumer's cut).
const MAX_QUEUED: usize = MAX_PENDING + MAX_PAYLOAD as usize + FRAME_ALLOWANCE as usize;
/// Actions per input: bounds the work of one run whatever the input.
const MAX_ACTIONS: usize = 512;

/// Subjects and filters the structured frames use: few, so that
/// subscriptions and publishes meet.
const SUBJECTS: &[&[u8]] = &[
    b"a",
    b"a.b",
    b"a.*",
    b"a.>",
    b">",
    b"b.c",
    b"_INBOX.r",
    b"*",
    b"a..b",
    b"",
];

fn subject(index: u8) -> &'static [u8] {
    SUBJECTS[index as usize % SUBJECTS.len()]
}

/// One step of the script.
#[derive(Debug, Clone, PartialEq, Arbitrary)]
enum Action {
    Accept {
        worker: bool,
        nats: bool,
    },
    /// A well-formed frame (op) in the connection's dialect.
    Frame {
        conn: u8,
        frame: Frame,
    },
    /// Anything at all.
    Raw {
        conn: u8,
        bytes: RawBytes,
    },
    /// The backend writes up to `max` bytes of the connection's output.
    Write {
        conn: u8,
        max: u16,
    },
    /// Every connection's output written, as far as it goes.
    Flush,
    /// Both cores' loops come round: peers polled, iterations finished.
    Poll,
    Advance {
        millis: u16,
    },
    PeerClosed {
        conn: u8,
    },
    /// The socket failed: the backend forgets the connection at once.
    Reset {
        conn: u8,
    },
    Drain {
        worker: bool,
    },
}

/// Up to [`MAX_RAW`] bytes after a two-byte length: in one piece, so that
/// the fuzzer's byte mutations and dictionary land in them whole.
#[derive(Debug, Clone, PartialEq)]
struct RawBytes(Vec<u8>);

const MAX_RAW: usize = 2048;

impl<'a> Arbitrary<'a> for RawBytes {
    fn arbitrary(input: &mut Unstructured<'a>) -> arbitrary::Result<RawBytes> {
        let len = usize::from(u16::arbitrary(input)?) % (MAX_RAW + 1);
        Ok(RawBytes(input.bytes(len.min(input.len()))?.to_vec()))
    }
}

#[derive(Debug, Clone, PartialEq, Arbitrary)]
enum Frame {
    Connect {
        verbose: bool,
        echo: bool,
        headers: bool,
        no_responders: bool,
    },
    Subscribe {
        filter: u8,
        sid: u8,
        queue: Option<u8>,
        ack: bool,
    },
    Unsubscribe {
        sid: u8,
        max_msgs: u8,
        ack: bool,
    },
    Publish {
        subject: u8,
        reply: Option<u8>,
        len: u16,
        ack: bool,
        headers: bool,
    },
    Ping,
    Pong,
    Disconnect,
}

impl Frame {
    /// Encodes the frame as a client of `dialect` would send it, with
    /// `credentials` (JSON members and a comma) in CONNECT.
    fn encode(&self, dialect: Dialect, credentials: &str, out: &mut Vec<u8>) {
        match dialect {
            Dialect::Binary => self.encode_binary(credentials, out),
            Dialect::Nats => self.encode_nats(credentials, out),
        }
    }

    fn encode_binary(&self, credentials: &str, out: &mut Vec<u8>) {
        match *self {
            Frame::Connect { verbose, .. } => {
                let json = format!(r#"{{{credentials}"protocol":1,"verbose":{verbose}}}"#);
                encode::put_connect(out, json.as_bytes());
            }
            Frame::Subscribe {
                filter,
                sid,
                queue,
                ack,
            } => {
                let queue = queue.map(|q| [b'q', b'0' + q % 3]);
                encode::put_subscribe(
                    out,
                    subject(filter),
                    sid.into(),
                    queue.as_ref().map(|q| &q[..]),
                    ack,
                );
            }
            Frame::Unsubscribe { sid, max_msgs, ack } => {
                encode::put_unsubscribe(out, sid.into(), max_msgs.into(), ack)
            }
            Frame::Publish {
                subject: to,
                reply,
                len,
                ack,
                ..
            } => {
                let payload = payload(len);
                encode::put_publish(out, subject(to), reply.map(subject), &payload, ack);
            }
            Frame::Ping => encode::put_ping(out),
            Frame::Pong => encode::put_pong(out),
            Frame::Disconnect => encode::put_disconnect(out, ""),
        }
    }

    fn encode_nats(&self, credentials: &str, out: &mut Vec<u8>) {
        // Writes into a Vec cannot fail.
        let _ = match *self {
            Frame::Connect {
                verbose,
                echo,
                headers,
                no_responders,
            } => write!(
                out,
                "CONNECT {{{credentials}\"verbose\":{verbose},\"echo\":{echo},\"headers\":{headers},\
                 \"no_responders\":{no_responders}}}\r\n"
            ),
            Frame::Subscribe {
                filter, sid, queue, ..
            } => {
                out.extend_from_slice(b"SUB ");
                out.extend_from_slice(subject(filter));
                match queue {
                    Some(q) => write!(out, " q{} {sid}\r\n", q % 3),
                    None => write!(out, " {sid}\r\n"),
                }
            }
            Frame::Unsubscribe { sid, max_msgs, .. } => match max_msgs {
                0 => write!(out, "UNSUB {sid}\r\n"),
                max => write!(out, "UNSUB {sid} {max}\r\n"),
            },
            Frame::Publish {
                subject: to,
                reply,
                len,
                headers,
                ..
            } => {
                let payload = payload(len);
                out.extend_from_slice(if headers { b"HPUB " } else { b"PUB " });
                out.extend_from_slice(subject(to));
                if let Some(reply) = reply {
                    out.push(b' ');
                    out.extend_from_slice(subject(reply));
                }
                const HEADERS: &[u8] = b"NATS/1.0\r\nK: v\r\n\r\n";
                let _ = if headers {
                    let total = HEADERS.len() + payload.len();
                    write!(out, " {} {total}\r\n", HEADERS.len())
                        .and_then(|()| out.write_all(HEADERS))
                } else {
                    write!(out, " {}\r\n", payload.len())
                };
                out.extend_from_slice(&payload);
                out.write_all(b"\r\n")
            }
            Frame::Ping => out.write_all(b"PING\r\n"),
            Frame::Pong => out.write_all(b"PONG\r\n"),
            Frame::Disconnect => out.write_all(b"QUIT\r\n"),
        };
    }
}

/// A payload of `len` bytes modulo a little over the limit, so that both
/// sides of it are reached.
fn payload(len: u16) -> Vec<u8> {
    vec![b'p'; len as usize % (MAX_PAYLOAD as usize + 64)]
}

/// Users with permissions, written the way an operator would; plain
/// passwords, since a bcrypt check per CONNECT would slow the fuzzer a
/// thousandfold.
const USERS: &str = r#"
[[auth.users]]
user = "alice"
password = "pw"
permissions.publish = { allow = ["a", "a.>", "_INBOX.>"], deny = ["a.b"] }
permissions.subscribe = { allow = ["a.*", "b.c", "_INBOX.>"], deny = ["a.b"] }

[[auth.users]]
user = "bob"
token = "tk"
permissions.publish = { deny = [">"] }
permissions.allow_responses = { max = 2, expires = "1s" }
"#;

/// What the `n`th accepted connection presents in CONNECT when users are
/// configured: a user and password, a user's token, nothing, a wrong
/// password.
fn credentials(n: usize, dialect: Dialect) -> &'static str {
    match (n % 4, dialect) {
        (0, _) => r#""user":"alice","pass":"pw","#,
        (1, Dialect::Binary) => r#""token":"tk","#,
        (1, Dialect::Nats) => r#""auth_token":"tk","#,
        (2, _) => "",
        _ => r#""user":"alice","pass":"nope","#,
    }
}

/// The setup the input's first byte picks, one bit each.
#[derive(Debug, Clone, Copy)]
struct Setup(u8);

impl Setup {
    fn pacing(self) -> bool {
        self.0 & 1 != 0
    }

    fn users(self) -> bool {
        self.0 & 2 != 0
    }

    fn rate_limits(self) -> bool {
        self.0 & 4 != 0
    }

    fn reject_over_rate(self) -> bool {
        self.0 & 8 != 0
    }
}

/// A connection the driver holds, with the bytes written to it that do not
/// make a whole frame yet.
struct Conn {
    worker: usize,
    cid: ConnId,
    dialect: Dialect,
    /// What it presents in CONNECT (empty without users).
    credentials: &'static str,
    received: Vec<u8>,
}

struct Broker {
    cores: Vec<WorkerCore>,
    shared: Arc<Shared>,
    conns: Vec<Conn>,
    users: bool,
    accepted: usize,
    now: Instant,
}

impl Broker {
    fn new(setup: Setup) -> Broker {
        let mut config = if setup.users() {
            Config::from_toml_str(USERS).expect("the fuzz users' config")
        } else {
            Config::default()
        };
        config.server.server_name = "fuzz".into();
        config.server.ping_interval = Duration::from_secs(1);
        config.server.max_pings_out = 2;
        config.server.drain_timeout = Duration::from_secs(1);
        config.server.max_connections = MAX_CONNECTIONS;
        config.limits.max_payload = MAX_PAYLOAD;
        config.limits.max_topic_length = 16;
        config.limits.max_subscriptions = 4;
        config.limits.max_pending_bytes = MAX_PENDING as u64;
        if setup.pacing() {
            config.limits.slow_consumer_grace = Duration::from_millis(300);
        } else {
            config.limits.slow_consumer_grace = Duration::ZERO;
        }
        if setup.rate_limits() {
            config.limits.max_msgs_per_sec = 5;
            config.limits.max_bytes_per_sec = 2048;
            config.limits.rate_policy = if setup.reject_over_rate() {
                RatePolicy::Reject
            } else {
                RatePolicy::Pace
            };
        }
        config.dataplane.cache_subjects = 4;
        let config = core_config(&config);
        let now = Instant::now();
        let shared = Arc::new(Shared::default());
        let cores = RingRegion::new(WORKERS, RING_BYTES)
            .expect("an anonymous mapping of a few pages")
            .into_workers()
            .into_iter()
            .map(|rings| WorkerCore::new(config.clone(), rings, shared.clone(), now))
            .collect();
        Broker {
            cores,
            shared,
            conns: Vec::new(),
            users: setup.users(),
            accepted: 0,
            now,
        }
    }

    fn pick(&self, conn: u8) -> Option<usize> {
        (!self.conns.is_empty()).then(|| conn as usize % self.conns.len())
    }

    fn play(&mut self, action: Action) {
        match action {
            Action::Accept { worker, nats } => {
                let worker = usize::from(worker);
                let dialect = if nats { Dialect::Nats } else { Dialect::Binary };
                let cid = self.cores[worker].accept(self.now, dialect);
                let credentials = match self.users {
                    true => credentials(self.accepted, dialect),
                    false => "",
                };
                self.accepted += 1;
                self.conns.push(Conn {
                    worker,
                    cid,
                    dialect,
                    credentials,
                    received: Vec::new(),
                });
            }
            Action::Frame { conn, frame } => {
                if let Some(i) = self.pick(conn) {
                    let mut bytes = Vec::new();
                    let conn = &self.conns[i];
                    frame.encode(conn.dialect, conn.credentials, &mut bytes);
                    self.receive(i, &bytes);
                }
            }
            Action::Raw { conn, bytes } => {
                if let Some(i) = self.pick(conn) {
                    self.receive(i, &bytes.0);
                }
            }
            Action::Write { conn, max } => {
                if let Some(i) = self.pick(conn) {
                    self.write(i, max.into());
                }
            }
            Action::Flush => {
                for i in 0..self.conns.len() {
                    self.write(i, usize::MAX);
                }
            }
            Action::Poll => {
                for core in &mut self.cores {
                    core.poll_peers(self.now);
                    core.finish_iteration(self.now);
                }
            }
            Action::Advance { millis } => {
                self.now += Duration::from_millis(millis.into());
                for core in &mut self.cores {
                    core.handle_timeout(self.now);
                    core.finish_iteration(self.now);
                }
            }
            Action::PeerClosed { conn } => {
                if let Some(i) = self.pick(conn) {
                    let Conn { worker, cid, .. } = self.conns[i];
                    self.cores[worker].on_peer_closed(cid);
                }
            }
            Action::Reset { conn } => {
                if let Some(i) = self.pick(conn) {
                    let Conn { worker, cid, .. } = self.conns.swap_remove(i);
                    self.cores[worker].on_closed(cid);
                    self.cores[worker].finish_iteration(self.now);
                }
            }
            Action::Drain { worker } => {
                let worker = usize::from(worker);
                self.cores[worker].begin_drain(self.now);
                self.cores[worker].finish_iteration(self.now);
            }
        }
        self.close_finished();
        self.check();
    }

    /// Bytes from the client, when the backend would read them.
    fn receive(&mut self, i: usize, bytes: &[u8]) {
        let Conn { worker, cid, .. } = self.conns[i];
        let core = &mut self.cores[worker];
        if core.wants_input(cid) {
            core.on_received(cid, bytes, self.now);
            core.finish_iteration(self.now);
        }
    }

    /// Writes up to `max` bytes of the connection's output, and checks that
    /// they continue a stream of well-formed frames.
    fn write(&mut self, i: usize, max: usize) {
        let conn = &mut self.conns[i];
        let core = &mut self.cores[conn.worker];
        let mut left = max;
        while left > 0 {
            let run = core.output(conn.cid);
            if run.is_empty() {
                break;
            }
            let len = run.len().min(left);
            conn.received.extend_from_slice(&run[..len]);
            core.on_output_written(conn.cid, len, self.now);
            left -= len;
        }
        let whole = match conn.dialect {
            Dialect::Binary => whole_binary_frames(&conn.received),
            Dialect::Nats => whole_nats_ops(&conn.received),
        };
        conn.received.drain(..whole);
    }

    /// Forgets the connections the backend would close now.
    fn close_finished(&mut self) {
        let mut i = 0;
        while i < self.conns.len() {
            let Conn { worker, cid, .. } = self.conns[i];
            if self.cores[worker].should_close(cid, self.now) {
                self.cores[worker].on_closed(cid);
                self.conns.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn check(&self) {
        let open: usize = self.cores.iter().map(WorkerCore::connection_count).sum();
        assert_eq!(open, self.conns.len(), "connections the cores hold");
        assert_eq!(
            self.shared.connections.load(Ordering::Relaxed),
            open,
            "the broker-wide connection count"
        );
        for conn in &self.conns {
            let queued = self.cores[conn.worker].pending_output(conn.cid);
            assert!(
                queued <= MAX_QUEUED,
                "{queued} bytes queued for a {:?} connection, over {MAX_QUEUED}",
                conn.dialect
            );
        }
    }
}

/// The length of the whole binary frames at the start of `stream`; panics
/// on a frame a client could not parse.
fn whole_binary_frames(stream: &[u8]) -> usize {
    let mut at = 0;
    while let Some((raw, len)) = decode_frame(&stream[at..], u32::MAX).expect("a server frame") {
        if let Err(error) = ServerFrame::parse(raw) {
            panic!("the broker sent a frame a client cannot parse: {error:?} {raw:?}");
        }
        at += len;
    }
    at
}

/// The length of the whole NATS server ops at the start of `stream`;
/// panics on anything but INFO, MSG, HMSG, PING, PONG, +OK and -ERR with
/// CRLF line ends and payloads of the sizes they announce.
fn whole_nats_ops(stream: &[u8]) -> usize {
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        let Some(line_len) = rest.windows(2).position(|w| w == b"\r\n") else {
            assert!(
                !rest.contains(&b'\n'),
                "a bare LF from the broker: {rest:?}"
            );
            return at;
        };
        let line = &rest[..line_len];
        let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let payload = match words.as_slice() {
            [b"+OK"] | [b"PING"] | [b"PONG"] => 0,
            [b"-ERR", ..] => {
                assert!(
                    line.len() > 6 && line[5] == b'\'' && line.ends_with(b"'"),
                    "{line:?}"
                );
                0
            }
            // nats-server's trailing space.
            [b"INFO", json, b""] => {
                serde_json::from_slice::<serde_json::Value>(json).expect("INFO's JSON");
                0
            }
            [b"MSG", _subject, _sid, .., size] => size_of(size) + 2,
            [b"HMSG", _subject, _sid, .., header_size, total] => {
                assert!(
                    size_of(header_size) <= size_of(total),
                    "HMSG sizes: {line:?}"
                );
                size_of(total) + 2
            }
            _ => panic!("not a NATS server op: {:?}", String::from_utf8_lossy(line)),
        };
        let end = line_len + 2 + payload;
        if rest.len() < end {
            return at;
        }
        if payload > 0 {
            assert_eq!(&rest[end - 2..end], b"\r\n", "a payload of the wrong size");
        }
        at += end;
    }
}

fn size_of(token: &[u8]) -> usize {
    std::str::from_utf8(token)
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a size: {token:?}"))
}

/// Plays the script decoded from `data`; panics on a broken invariant (see
/// the module docs).
pub fn fuzz_session(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let setup = Setup(input.arbitrary::<u8>().unwrap_or(0));
    let mut broker = Broker::new(setup);
    for _ in 0..MAX_ACTIONS {
        match input.arbitrary::<Action>() {
            Ok(action) => broker.play(action),
            Err(_) => break,
        }
        if input.is_empty() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Counter;

    /// The total of `counter` over both cores after playing the seed `name`.
    fn counted_by_seed(name: &str, counter: Counter) -> u64 {
        let (_, script) = session_seeds()
            .into_iter()
            .find(|(seed, _)| *seed == name)
            .expect("a seed of that name");
        let mut input = Unstructured::new(&script);
        let mut broker = Broker::new(Setup(input.arbitrary().unwrap()));
        while !input.is_empty() {
            broker.play(input.arbitrary().unwrap());
        }
        broker
            .cores
            .iter()
            .map(|core| core.stats.get(counter))
            .sum()
    }

    /// The setups' seeds reach the code they are there for, so that the
    /// fuzzer starts from inside it.
    #[test]
    fn seeds_reach_permissions_and_rate_limits() {
        let refused = counted_by_seed("users_and_permissions", Counter::PermissionViolations);
        // alice's subscription to a.> and publish to a.b; bob's third
        // answer and his publish to a.
        assert_eq!(refused, 4);
        // The request to bob and his two answers.
        assert_eq!(
            counted_by_seed("users_and_permissions", Counter::MessagesDelivered),
            3
        );
        assert!(counted_by_seed("rate_limit_reject", Counter::RateRejected) > 0);
        assert!(counted_by_seed("rate_limit_pace", Counter::RatePaced) > 0);
        assert_eq!(counted_by_seed("rate_limit_pace", Counter::RateRejected), 0);
    }
}
