//! The connection's machinery: shared state, the handshake, the reader thread
//! and the writer thread.
//!
//! Correlating answers. The broker answers OK, ERROR and PONG in the order of
//! the frames they answer, but ERROR carries no id, and the broker may send
//! ERROR for a frame that asked for no answer (a non-acked PUBLISH that is not
//! permitted, a rate limit, an UNSUBSCRIBE of a sid the broker already
//! removed), or unsolicited (503 slow consumer, 408). So every frame that
//! waits for an answer is followed, in the same critical section, by a PING,
//! and every waiter is resolved by that PING's PONG:
//!
//! * a flush is a PING and its waiter;
//! * an acked request is the ACK-flagged frame, then a PING, and one waiter;
//!   the answer to the acked frame is the last OK or ERROR before the PONG
//!   (nothing is sent between the two). An ERROR it displaces answered an
//!   earlier non-acked frame and becomes the connection's last error.
//!
//! Waiters are registered under the same lock, in the same order, as their
//! bytes are appended to the output buffer, so the FIFO of waiters is in wire
//! order.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blipmq_protocol::{
    decode_frame, encode, Connect, Info, RawFrame, ServerFrame, FRAME_ALLOWANCE, PROTOCOL_VERSION,
};
use bytes::Bytes;

use crate::error::{Error, Reason};
use crate::{Message, Options};

/// Above this many unwritten bytes, publishers wait for the writer.
pub(crate) const OUT_HIGH_WATER: usize = 4 << 20;
/// Initial (and shrunk-back) size of the read buffer.
const READ_BUF_INITIAL: usize = 64 << 10;
/// Largest INFO frame accepted during the handshake, before limits are known.
const HANDSHAKE_MAX_FRAME: u32 = 1 << 20;

/// Locks a mutex, ignoring poisoning: no invariant here spans a panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard)
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn wait_timeout<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> MutexGuard<'a, T> {
    match cv.wait_timeout(guard, timeout) {
        Ok((guard, _)) => guard,
        Err(poisoned) => poisoned.into_inner().0,
    }
}

/// What the broker answered to an acked frame.
enum Answer {
    Ok,
    Error(u16, String),
}

/// The result handed to a waiting request.
pub(crate) type WaitResult = Result<(), Reason>;

/// One PING in flight, and whoever waits for its PONG.
struct Waiter {
    /// An ACK-flagged frame immediately precedes this PING.
    acked: bool,
    /// The last OK or ERROR seen while this waiter was at the front.
    answer: Option<Answer>,
    tx: SyncSender<WaitResult>,
}

/// What a request waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// Nothing: fire and forget.
    None,
    /// The PONG of a PING appended after the frame (flush).
    Pong,
    /// The answer to an ACK-flagged frame, then the PONG of the PING after it.
    Ack,
}

/// Output side, under one lock: bytes not yet written and the waiters.
struct Out {
    buf: Vec<u8>,
    waiters: VecDeque<Waiter>,
    /// Set once, when the connection is gone.
    dead: Option<Reason>,
    /// The client sent (or queued) DISCONNECT; no new operations.
    closing: bool,
    /// The writer failed; the reader is finding out why.
    write_failed: Option<Reason>,
    /// The latest ERROR that answered no waiting request.
    last_error: Option<(u16, String)>,
    /// The writer waits on `data_cv`.
    writer_idle: bool,
    /// Publishers waiting on `space_cv`.
    blocked: usize,
}

impl Out {
    /// Can new frames be queued?
    fn check(&self) -> Result<(), Error> {
        if let Some(reason) = &self.dead {
            return Err(reason.to_error());
        }
        if self.closing {
            return Err(Error::Closed);
        }
        if let Some(reason) = &self.write_failed {
            return Err(reason.to_error());
        }
        Ok(())
    }
}

/// How a subscription's messages are delivered.
pub(crate) enum SubKind {
    /// To a [`crate::Subscription`]'s channel.
    Plain(Sender<Message>),
    /// The client's request inbox: by the last token of the subject.
    Inbox,
}

pub(crate) struct SubEntry {
    pub(crate) kind: SubKind,
    /// Messages delivered so far.
    pub(crate) delivered: u64,
    /// Remove the entry once `delivered` reaches this (UNSUBSCRIBE max_msgs).
    pub(crate) max: Option<u64>,
}

/// The request inbox, created on the first request.
pub(crate) struct Inbox {
    /// `_INBOX.<random>`; a request's reply subject appends `.<n>`.
    pub(crate) prefix: String,
}

/// State shared by the client handles, the subscriptions and the threads.
pub(crate) struct Inner {
    pub(crate) info: Info,
    pub(crate) request_timeout: Duration,
    /// Longest subject accepted, from INFO (at most `u16::MAX`).
    pub(crate) max_topic: usize,
    /// Largest payload accepted, from INFO (clamped to what a frame can carry).
    pub(crate) max_payload: u64,
    /// Largest frame accepted from the broker (`len` field).
    max_frame: u32,
    /// For shutting the socket down; the threads own clones.
    stream: TcpStream,
    out: Mutex<Out>,
    /// The writer waits here for bytes.
    data_cv: Condvar,
    /// Publishers wait here for the writer to drain the buffer.
    space_cv: Condvar,
    /// `close` and the writer wait here for the connection to end.
    dead_cv: Condvar,
    pub(crate) subs: Mutex<HashMap<u32, SubEntry>>,
    pub(crate) next_sid: AtomicU32,
    pub(crate) inbox: Mutex<Option<Inbox>>,
    pub(crate) requests: Mutex<HashMap<u64, SyncSender<Message>>>,
    pub(crate) next_request: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    /// Appends a frame (and, for `expect`, a PING and its waiter) to the output
    /// buffer. With `block`, waits while the buffer is over the high-water
    /// mark. Returns the waiter's receiver for [`Expect::Pong`] and [`Expect::Ack`].
    pub(crate) fn enqueue(
        &self,
        encode_frame: impl FnOnce(&mut Vec<u8>),
        expect: Expect,
        block: bool,
    ) -> Result<Option<Receiver<WaitResult>>, Error> {
        let mut out = lock(&self.out);
        if block {
            while out.buf.len() > OUT_HIGH_WATER && out.check().is_ok() {
                out.blocked += 1;
                out = wait(&self.space_cv, out);
                out.blocked -= 1;
            }
        }
        out.check()?;
        encode_frame(&mut out.buf);
        let rx = if expect == Expect::None {
            None
        } else {
            encode::put_ping(&mut out.buf);
            let (tx, rx) = mpsc::sync_channel(1);
            out.waiters.push_back(Waiter {
                acked: expect == Expect::Ack,
                answer: None,
                tx,
            });
            Some(rx)
        };
        self.wake_writer(&mut out);
        Ok(rx)
    }

    fn wake_writer(&self, out: &mut Out) {
        if out.writer_idle {
            out.writer_idle = false;
            self.data_cv.notify_one();
        }
    }

    /// Waits for a waiter's result, bounded by the request timeout.
    pub(crate) fn wait_answer(&self, rx: Receiver<WaitResult>) -> Result<(), Error> {
        match rx.recv_timeout(self.request_timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(reason.to_error()),
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout),
            Err(RecvTimeoutError::Disconnected) => {
                Err(self.dead_reason().unwrap_or(Reason::Closed).to_error())
            }
        }
    }

    /// Sends a frame with ACK, then waits for its answer.
    pub(crate) fn request_acked(
        &self,
        encode_frame: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), Error> {
        match self.enqueue(encode_frame, Expect::Ack, true)? {
            Some(rx) => self.wait_answer(rx),
            None => Ok(()),
        }
    }

    pub(crate) fn dead_reason(&self) -> Option<Reason> {
        lock(&self.out).dead.clone()
    }

    pub(crate) fn is_closed(&self) -> bool {
        let out = lock(&self.out);
        out.dead.is_some() || out.closing
    }

    pub(crate) fn last_error(&self) -> Option<Error> {
        lock(&self.out)
            .last_error
            .as_ref()
            .map(|(code, reason)| Error::Server {
                code: *code,
                reason: reason.clone(),
            })
    }

    /// Queues DISCONNECT; afterwards no operation is accepted. The writer
    /// writes everything up to it, then waits (bounded) for the broker to
    /// close. Does not block.
    pub(crate) fn begin_close(&self) {
        let mut out = lock(&self.out);
        if out.dead.is_some() || out.closing {
            return;
        }
        out.closing = true;
        encode::put_disconnect(&mut out.buf, "");
        self.wake_writer(&mut out);
        self.space_cv.notify_all();
    }

    /// Waits until the connection is gone, for at most `timeout`.
    pub(crate) fn wait_dead(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut out = lock(&self.out);
        while out.dead.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            out = wait_timeout(&self.dead_cv, out, deadline - now);
        }
        true
    }

    /// Ends the connection (once): every waiter, pending request and
    /// subscription fails with `reason`, and the socket is shut down.
    pub(crate) fn fail(&self, reason: Reason) {
        let waiters = {
            let mut out = lock(&self.out);
            if out.dead.is_some() {
                return;
            }
            out.dead = Some(reason.clone());
            out.buf = Vec::new();
            self.data_cv.notify_all();
            self.space_cv.notify_all();
            self.dead_cv.notify_all();
            std::mem::take(&mut out.waiters)
        };
        let _ = self.stream.shutdown(Shutdown::Both);
        for waiter in waiters {
            let _ = waiter.tx.try_send(Err(reason.clone()));
        }
        // Dropping the senders ends every receiver; they read `dead`.
        let subs = std::mem::take(&mut *lock(&self.subs));
        drop(subs);
        let requests = std::mem::take(&mut *lock(&self.requests));
        drop(requests);
    }

    /// Joins the reader and writer threads (once they ended).
    pub(crate) fn join_threads(&self) {
        let handles = std::mem::take(&mut *lock(&self.threads));
        let me = std::thread::current().id();
        for handle in handles {
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
    }

    /// Routes OK, ERROR and PONG to the front waiter (see the module doc).
    fn on_answer(&self, incoming: Incoming) -> Result<(), String> {
        let mut guard = lock(&self.out);
        let out = &mut *guard;
        match incoming {
            Incoming::Ok => match out.waiters.front_mut() {
                Some(waiter) if waiter.acked => match waiter.answer.replace(Answer::Ok) {
                    None => {}
                    Some(Answer::Ok) => return Err("two OKs for one acked request".into()),
                    Some(Answer::Error(code, reason)) => out.last_error = Some((code, reason)),
                },
                _ => return Err("OK with no acked request pending".into()),
            },
            Incoming::Error(code, reason) => match out.waiters.front_mut() {
                Some(waiter) if waiter.acked && !matches!(waiter.answer, Some(Answer::Ok)) => {
                    if let Some(Answer::Error(code, reason)) =
                        waiter.answer.replace(Answer::Error(code, reason))
                    {
                        out.last_error = Some((code, reason));
                    }
                }
                // No acked request is open: an answer to a non-acked frame,
                // or unsolicited (slow consumer, ping timeout).
                _ => out.last_error = Some((code, reason)),
            },
            Incoming::Pong => {
                let Some(waiter) = out.waiters.pop_front() else {
                    return Err("PONG with no PING pending".into());
                };
                let result = match (waiter.acked, waiter.answer) {
                    (false, _) => Ok(()),
                    (true, Some(Answer::Ok)) => Ok(()),
                    (true, Some(Answer::Error(code, reason))) => {
                        Err(Reason::Server { code, reason })
                    }
                    (true, None) => return Err("PONG before the answer to an acked request".into()),
                };
                // A waiter that timed out is gone; nothing to tell it.
                let _ = waiter.tx.try_send(result);
            }
        }
        Ok(())
    }

    /// Routes a MESSAGE to its subscription (or pending request) by sid.
    fn on_message(
        &self,
        subject: &[u8],
        sid: u32,
        reply: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), String> {
        let subject =
            std::str::from_utf8(subject).map_err(|_| "MESSAGE subject is not UTF-8".to_string())?;
        let reply = match reply {
            Some(reply) => Some(
                std::str::from_utf8(reply)
                    .map_err(|_| "MESSAGE reply subject is not UTF-8".to_string())?
                    .to_owned(),
            ),
            None => None,
        };
        let mut subs = lock(&self.subs);
        // Unknown sid: a message in flight when the subscription ended.
        let Some(entry) = subs.get_mut(&sid) else {
            return Ok(());
        };
        let message = Message {
            subject: subject.to_owned(),
            reply,
            payload: Bytes::copy_from_slice(payload),
            sid,
        };
        match &entry.kind {
            SubKind::Plain(tx) => {
                let _ = tx.send(message);
                entry.delivered += 1;
                if entry.max.is_some_and(|max| entry.delivered >= max) {
                    subs.remove(&sid);
                }
            }
            SubKind::Inbox => {
                drop(subs);
                let id = subject
                    .rsplit('.')
                    .next()
                    .and_then(|token| token.parse::<u64>().ok());
                if let Some(id) = id {
                    if let Some(tx) = lock(&self.requests).remove(&id) {
                        let _ = tx.try_send(message);
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues a PONG for the broker's PING (no checks: the reader must not block).
    fn send_pong(&self) {
        let mut out = lock(&self.out);
        if out.dead.is_none() && out.write_failed.is_none() {
            encode::put_pong(&mut out.buf);
            self.wake_writer(&mut out);
        }
    }
}

enum Incoming {
    Ok,
    Error(u16, String),
    Pong,
}

/// A growable read buffer; frames are decoded in place.
struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// A frame copied out of the read buffer (handshake only).
struct OwnedFrame {
    op: u8,
    flags: u8,
    topic: Vec<u8>,
    body: Vec<u8>,
}

impl OwnedFrame {
    fn raw(&self) -> RawFrame<'_> {
        RawFrame {
            op: self.op,
            flags: self.flags,
            topic: &self.topic,
            body: &self.body,
        }
    }
}

impl ReadBuf {
    fn new() -> ReadBuf {
        ReadBuf {
            buf: vec![0; READ_BUF_INITIAL],
            start: 0,
            end: 0,
        }
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Reads more bytes, making room first (compacting, then growing up to
    /// one frame of `max_frame`). Returns 0 at end of stream.
    fn fill(&mut self, stream: &mut impl Read, max_frame: u32) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > 16 * READ_BUF_INITIAL {
                self.buf = vec![0; READ_BUF_INITIAL];
            }
        }
        if self.end == self.buf.len() && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // A partial frame fills the buffer; its length is known (the
            // buffer is far longer than a length prefix) and within max_frame.
            let limit = 4 + max_frame as usize;
            let needed = match self.buf.get(..4) {
                Some(prefix) => {
                    4 + u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize
                }
                None => limit,
            };
            let new_len = (self.buf.len() * 2)
                .max(needed)
                .min(limit)
                .max(self.buf.len() + 1);
            self.buf.resize(new_len, 0);
        }
        loop {
            match stream.read(&mut self.buf[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    return Ok(n);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// Reads one whole frame from `stream` (handshake: blocking with the
    /// timeout set on `socket`, the socket under it).
    fn next_owned(
        &mut self,
        stream: &mut impl Read,
        socket: &TcpStream,
        max_frame: u32,
        deadline: Instant,
    ) -> Result<OwnedFrame, Error> {
        loop {
            match decode_frame(self.data(), max_frame) {
                Ok(Some((frame, consumed))) => {
                    let owned = OwnedFrame {
                        op: frame.op,
                        flags: frame.flags,
                        topic: frame.topic.to_vec(),
                        body: frame.body.to_vec(),
                    };
                    self.start += consumed;
                    return Ok(owned);
                }
                Ok(None) => {}
                Err(err) => return Err(Error::Protocol(err.to_string())),
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Timeout);
            }
            socket.set_read_timeout(Some(remaining))?;
            match self.fill(stream, max_frame) {
                Ok(0) => return Err(Error::Closed),
                Ok(_) => {}
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(Error::Timeout)
                }
                Err(err) => return Err(Error::from(err)),
            }
        }
    }
}

fn write_with_deadline(
    stream: &mut impl Write,
    socket: &TcpStream,
    bytes: &[u8],
    deadline: Instant,
) -> Result<(), Error> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(Error::Timeout);
    }
    socket.set_write_timeout(Some(remaining))?;
    stream.write_all(bytes).map_err(|err| match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::Timeout,
        _ => Error::from(err),
    })
}

/// INFO → CONNECT → OK over `reader` and `writer` (the socket itself, or
/// TLS over it), before the threads start. Bytes the broker sent after its
/// OK stay in `rbuf` for the reader.
fn handshake(
    reader: &mut impl Read,
    writer: &mut impl Write,
    socket: &TcpStream,
    rbuf: &mut ReadBuf,
    options: &Options,
    deadline: Instant,
) -> Result<Info, Error> {
    let info = loop {
        let frame = rbuf.next_owned(reader, socket, HANDSHAKE_MAX_FRAME, deadline)?;
        match ServerFrame::parse(frame.raw()).map_err(|err| Error::Protocol(err.to_string()))? {
            ServerFrame::Info { json } => {
                let info: Info = serde_json::from_slice(json)
                    .map_err(|err| Error::Protocol(format!("bad INFO: {err}")))?;
                break info;
            }
            ServerFrame::Ping => {
                let mut pong = Vec::new();
                encode::put_pong(&mut pong);
                write_with_deadline(writer, socket, &pong, deadline)?;
            }
            ServerFrame::Error { code, reason } => {
                return Err(Error::Server {
                    code,
                    reason: String::from_utf8_lossy(reason).into_owned(),
                })
            }
            ServerFrame::Disconnect { reason } => {
                return Err(Error::Disconnected {
                    reason: String::from_utf8_lossy(reason).into_owned(),
                })
            }
            _ => return Err(Error::Protocol("expected INFO first".into())),
        }
    };
    if info.protocol != PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "unsupported protocol version {}",
            info.protocol
        )));
    }
    let connect = Connect {
        protocol: PROTOCOL_VERSION,
        name: options.name.clone(),
        token: options.token.clone(),
        user: options.user.as_ref().map(|(user, _)| user.clone()),
        pass: options.user.as_ref().map(|(_, pass)| pass.clone()),
        verbose: false,
    };
    let json = serde_json::to_vec(&connect).map_err(|err| Error::Protocol(err.to_string()))?;
    let mut frame = Vec::with_capacity(json.len() + 8);
    encode::put_connect(&mut frame, &json);
    write_with_deadline(writer, socket, &frame, deadline)?;
    let max_frame = max_frame(&info);
    loop {
        let frame = rbuf.next_owned(reader, socket, max_frame, deadline)?;
        match ServerFrame::parse(frame.raw()).map_err(|err| Error::Protocol(err.to_string()))? {
            ServerFrame::Ok => break,
            ServerFrame::Error { code, reason } => {
                return Err(Error::Server {
                    code,
                    reason: String::from_utf8_lossy(reason).into_owned(),
                })
            }
            ServerFrame::Ping => {
                let mut pong = Vec::new();
                encode::put_pong(&mut pong);
                write_with_deadline(writer, socket, &pong, deadline)?;
            }
            ServerFrame::Disconnect { reason } => {
                return Err(Error::Disconnected {
                    reason: String::from_utf8_lossy(reason).into_owned(),
                })
            }
            _ => return Err(Error::Protocol("expected OK or ERROR after CONNECT".into())),
        }
    }
    socket.set_read_timeout(None)?;
    socket.set_write_timeout(None)?;
    Ok(info)
}

/// Room for topic, reply subject, sid and counts beyond a payload: the
/// protocol's allowance, or two maximal subjects if INFO allows longer ones.
fn frame_overhead(info: &Info) -> u64 {
    let max_topic = info.max_topic_length.min(u16::MAX as u64);
    (FRAME_ALLOWANCE as u64).max(2 * max_topic + 64)
}

/// Largest payload the client will send or accept, clamped so a frame fits `u32`.
pub(crate) fn max_payload(info: &Info) -> u64 {
    info.max_payload.min(u32::MAX as u64 - frame_overhead(info))
}

/// Largest `len` field accepted from the broker.
fn max_frame(info: &Info) -> u32 {
    (max_payload(info) + frame_overhead(info)).min(u32::MAX as u64) as u32
}

impl Inner {
    fn new(info: Info, options: &Options, stream: TcpStream) -> Inner {
        let max_topic = info.max_topic_length.min(u16::MAX as u64) as usize;
        let max_payload = max_payload(&info);
        let max_frame = max_frame(&info);
        Inner {
            info,
            request_timeout: options.request_timeout,
            max_topic,
            max_payload,
            max_frame,
            stream,
            out: Mutex::new(Out {
                buf: Vec::with_capacity(64 << 10),
                waiters: VecDeque::new(),
                dead: None,
                closing: false,
                write_failed: None,
                last_error: None,
                writer_idle: false,
                blocked: 0,
            }),
            data_cv: Condvar::new(),
            space_cv: Condvar::new(),
            dead_cv: Condvar::new(),
            subs: Mutex::new(HashMap::new()),
            next_sid: AtomicU32::new(1),
            inbox: Mutex::new(None),
            requests: Mutex::new(HashMap::new()),
            next_request: AtomicU64::new(1),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// INFO → CONNECT → OK over `reader_stream` and `writer_stream` (clones
    /// of `socket`, or the halves of TLS over it), then the connection's
    /// reader thread on the one and writer thread on the other.
    pub(crate) fn establish(
        socket: TcpStream,
        mut reader_stream: impl Read + Send + 'static,
        mut writer_stream: impl Write + Send + 'static,
        options: &Options,
        deadline: Instant,
    ) -> Result<Arc<Inner>, Error> {
        let mut rbuf = ReadBuf::new();
        let info = handshake(
            &mut reader_stream,
            &mut writer_stream,
            &socket,
            &mut rbuf,
            options,
            deadline,
        )?;
        let inner = Arc::new(Inner::new(info, options, socket));
        inner.start(reader_stream, writer_stream, rbuf)?;
        Ok(inner)
    }

    fn start(
        self: &Arc<Self>,
        reader_stream: impl Read + Send + 'static,
        writer_stream: impl Write + Send + 'static,
        rbuf: ReadBuf,
    ) -> io::Result<()> {
        let reader = {
            let inner = Arc::clone(self);
            std::thread::Builder::new()
                .name("blipmq-client-reader".into())
                .spawn(move || reader_loop(inner, reader_stream, rbuf))?
        };
        let writer = {
            let inner = Arc::clone(self);
            std::thread::Builder::new()
                .name("blipmq-client-writer".into())
                .spawn(move || writer_loop(inner, writer_stream))
        };
        let writer = match writer {
            Ok(writer) => writer,
            Err(err) => {
                self.fail(Reason::io(&err));
                let _ = reader.join();
                return Err(err);
            }
        };
        lock(&self.threads).extend([reader, writer]);
        Ok(())
    }
}

/// What the reader remembers to explain the end of the connection.
#[derive(Default)]
struct ReaderState {
    /// The last frame read was this ERROR.
    last_frame_error: Option<(u16, String)>,
    /// The broker sent DISCONNECT with this reason.
    disconnect: Option<String>,
}

fn reader_loop(inner: Arc<Inner>, mut stream: impl Read, mut rbuf: ReadBuf) {
    let mut state = ReaderState::default();
    let reason = read_frames(&inner, &mut stream, &mut rbuf, &mut state);
    inner.fail(reason);
}

/// Decodes and handles frames until the connection ends; returns why.
fn read_frames(
    inner: &Inner,
    stream: &mut impl Read,
    rbuf: &mut ReadBuf,
    state: &mut ReaderState,
) -> Reason {
    loop {
        loop {
            let (frame, consumed) = match decode_frame(rbuf.data(), inner.max_frame) {
                Ok(Some(decoded)) => decoded,
                Ok(None) => break,
                Err(err) => return Reason::Protocol(err.to_string()),
            };
            if let Err(msg) = handle_frame(inner, frame, state) {
                return Reason::Protocol(msg);
            }
            rbuf.start += consumed;
        }
        match rbuf.fill(stream, inner.max_frame) {
            Ok(0) => return end_reason(inner, state, None),
            Ok(_) => {}
            Err(err) => return end_reason(inner, state, Some(err)),
        }
    }
}

fn handle_frame(inner: &Inner, frame: RawFrame<'_>, state: &mut ReaderState) -> Result<(), String> {
    let frame = ServerFrame::parse(frame).map_err(|err| err.to_string())?;
    state.last_frame_error = None;
    match frame {
        ServerFrame::Message {
            subject,
            sid,
            reply,
            payload,
        } => inner.on_message(subject, sid, reply, payload)?,
        ServerFrame::Ok => inner.on_answer(Incoming::Ok)?,
        ServerFrame::Pong => inner.on_answer(Incoming::Pong)?,
        ServerFrame::Error { code, reason } => {
            let reason = String::from_utf8_lossy(reason).into_owned();
            state.last_frame_error = Some((code, reason.clone()));
            inner.on_answer(Incoming::Error(code, reason))?;
        }
        ServerFrame::Ping => inner.send_pong(),
        ServerFrame::Disconnect { reason } => {
            state.disconnect = Some(String::from_utf8_lossy(reason).into_owned());
        }
        // A later INFO (an update) changes nothing this client uses.
        ServerFrame::Info { .. } => {}
    }
    Ok(())
}

fn end_reason(inner: &Inner, state: &mut ReaderState, err: Option<io::Error>) -> Reason {
    let out = lock(&inner.out);
    if out.closing {
        Reason::Closed
    } else if let Some((code, reason)) = state.last_frame_error.take() {
        Reason::Server { code, reason }
    } else if let Some(reason) = state.disconnect.take() {
        Reason::Disconnected(reason)
    } else if let Some(reason) = &out.write_failed {
        reason.clone()
    } else if let Some(err) = err {
        Reason::io(&err)
    } else {
        Reason::Closed
    }
}

fn writer_loop(inner: Arc<Inner>, mut stream: impl Write) {
    let mut batch: Vec<u8> = Vec::with_capacity(64 << 10);
    loop {
        {
            let mut out = lock(&inner.out);
            loop {
                if out.dead.is_some() {
                    return;
                }
                if !out.buf.is_empty() {
                    break;
                }
                if out.closing {
                    // DISCONNECT is written; let the broker close, bounded.
                    drop(out);
                    inner.wait_dead(inner.request_timeout);
                    inner.fail(Reason::Closed);
                    return;
                }
                out.writer_idle = true;
                out = wait(&inner.data_cv, out);
            }
            out.writer_idle = false;
            std::mem::swap(&mut out.buf, &mut batch);
            if out.blocked > 0 {
                inner.space_cv.notify_all();
            }
        }
        if let Err(err) = stream.write_all(&batch) {
            // Keep reading: the broker's last frame (an ERROR) usually
            // explains a broken pipe better than the pipe does.
            let reason = Reason::io(&err);
            {
                let mut out = lock(&inner.out);
                out.write_failed = Some(reason.clone());
                inner.space_cv.notify_all();
            }
            let _ = inner.stream.shutdown(Shutdown::Write);
            inner.wait_dead(inner.request_timeout);
            inner.fail(reason);
            return;
        }
        batch.clear();
        if batch.capacity() > 2 * OUT_HIGH_WATER {
            batch = Vec::with_capacity(64 << 10);
        }
    }
}
