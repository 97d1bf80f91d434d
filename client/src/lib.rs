//! A blocking Rust client for the BlipMQ broker (wire protocol v1).
//!
//! A [`Client`] owns one TCP connection and two threads: a writer that sends
//! buffered frames in large batches, and a reader that routes each MESSAGE to
//! its [`Subscription`] by sid and answers the broker's PINGs. `Client` is
//! `Send + Sync` and cheap to clone; every clone uses the same connection.
//! With [`Options::tls`] the connection is TLS (rustls; see [`TlsOptions`]
//! and the [`tls`] module for how the two threads share it).
//!
//! ```no_run
//! use std::time::Duration;
//! use blipmq_client::{Client, Error};
//!
//! fn main() -> Result<(), Error> {
//!     let client = Client::connect("127.0.0.1:9999")?;
//!
//!     // Once subscribe returns, the subscription is visible broker-wide.
//!     let sub = client.subscribe("orders.*")?;
//!     client.publish("orders.new", b"42 apples")?; // buffered, no round trip
//!     let msg = sub.recv_timeout(Duration::from_secs(1))?;
//!     println!("{}: {:?}", msg.subject, msg.payload);
//!
//!     // A responder answers on the reply subject of each request...
//!     let service = client.subscribe("time.now")?;
//!     let responder = client.clone();
//!     std::thread::spawn(move || {
//!         while let Ok(request) = service.recv() {
//!             if let Some(reply) = &request.reply {
//!                 let _ = responder.publish(reply, b"12:00");
//!             }
//!         }
//!     });
//!     // ...and a requester waits for the first answer.
//!     let answer = client.request("time.now", b"", Duration::from_secs(2))?;
//!     println!("the time is {:?}", answer.payload);
//!
//!     // Flushes, sends DISCONNECT, waits for the broker to close.
//!     client.close()
//! }
//! ```
//!
//! Errors the broker sends for frames that asked for no answer (for example
//! 403 on a non-acked publish) cannot fail that publish; the latest one is
//! kept and returned by [`Client::last_error`].

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod conn;
mod error;
pub mod tls;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use blipmq_protocol::Info;
use blipmq_protocol::{encode, validate_filter, validate_queue, validate_subject};
use bytes::Bytes;

use conn::{lock, Expect, Inbox, Inner, SubEntry, SubKind};
pub use error::Error;
use error::Reason;
/// The rustls this client is built with, for [`TlsOptions::config`].
pub use rustls;
pub use tls::TlsOptions;

/// Connection options; start from [`Options::default`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Client name sent in CONNECT (shown by the broker's control plane).
    pub name: Option<String>,
    /// Authentication token sent in CONNECT.
    pub token: Option<String>,
    /// User name and password sent in CONNECT (`user`, `pass`), for a
    /// broker with `[[auth.users]]`.
    pub user: Option<(String, String)>,
    /// Bound on the TCP connect and on the INFO/CONNECT/OK handshake (default 5 s).
    pub connect_timeout: Duration,
    /// Bound on waiting for an answer: acks, flush, and the broker closing
    /// after DISCONNECT (default 5 s).
    pub request_timeout: Duration,
    /// Secure the connection with TLS (the broker's `[tls]`); None: plain
    /// TCP. Against a TLS broker a client without TLS hears no INFO (the
    /// broker waits for a TLS handshake) and gives up after
    /// `connect_timeout` with [`Error::Timeout`], or [`Error::Closed`] if
    /// the broker's handshake timeout closes the connection first.
    pub tls: Option<TlsOptions>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            name: None,
            token: None,
            user: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            tls: None,
        }
    }
}

/// A message delivered to a [`Subscription`] or returned by [`Client::request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The subject it was published on.
    pub subject: String,
    /// The reply subject the publisher asked answers to go to.
    pub reply: Option<String>,
    /// The payload.
    pub payload: Bytes,
    /// The sid of the subscription it was delivered to.
    pub sid: u32,
}

/// A connection to a BlipMQ broker. Clones share the connection; it closes
/// on [`Client::close`], or in the background once every clone is dropped.
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

/// Dropped with the last `Client` clone: starts a graceful close in the
/// background (everything buffered is written, then DISCONNECT).
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.begin_close();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server_id", &self.inner().info.server_id)
            .field("closed", &self.is_closed())
            .finish()
    }
}

fn invalid_subject(subject: &str, err: blipmq_protocol::SubjectError) -> Error {
    Error::InvalidSubject(format!("{err}: {subject:?}"))
}

impl Client {
    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// Connects with default [`Options`].
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Client, Error> {
        Client::connect_with(addr, Options::default())
    }

    /// Connects, reads INFO, sends CONNECT and waits for OK. An ERROR answer
    /// (401 bad token, ...) is [`Error::Server`]. Each address `addr`
    /// resolves to is tried in turn. With [`Options::tls`] the TLS handshake
    /// comes first; its failures (certificate not trusted, refused) are
    /// [`Error::Tls`].
    pub fn connect_with(addr: impl ToSocketAddrs, options: Options) -> Result<Client, Error> {
        let mut last_err = None;
        let mut stream = None;
        for addr in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, options.connect_timeout) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(err) => last_err = Some(err),
            }
        }
        let stream = match stream {
            Some(stream) => stream,
            None => {
                let err = last_err
                    .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address"));
                return Err(match err.kind() {
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Error::Timeout,
                    _ => Error::Io(err),
                });
            }
        };
        stream.set_nodelay(true)?;
        let deadline = Instant::now() + options.connect_timeout;
        let inner = match &options.tls {
            None => {
                let (reader, writer) = (stream.try_clone()?, stream.try_clone()?);
                Inner::establish(stream, reader, writer, &options, deadline)?
            }
            Some(tls_options) => {
                let config = tls_options.client_config()?;
                let server_name = tls_options.server_name_for(stream.peer_addr()?)?;
                let (reader, writer) =
                    tls::handshake(stream.try_clone()?, config, server_name, deadline)?;
                Inner::establish(stream, reader, writer, &options, deadline)?
            }
        };
        Ok(Client {
            handle: Arc::new(Handle { inner }),
        })
    }

    /// The INFO the broker sent on connect.
    pub fn server_info(&self) -> &Info {
        &self.inner().info
    }

    fn check_subject(&self, subject: &str) -> Result<(), Error> {
        validate_subject(subject.as_bytes(), self.inner().max_topic)
            .map_err(|err| invalid_subject(subject, err))
    }

    fn check_payload(&self, payload: &[u8]) -> Result<(), Error> {
        let max = self.inner().max_payload;
        if payload.len() as u64 > max {
            return Err(Error::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        Ok(())
    }

    fn publish_frame(
        &self,
        subject: &str,
        reply: Option<&str>,
        payload: &[u8],
        ack: bool,
    ) -> Result<(), Error> {
        self.check_subject(subject)?;
        if let Some(reply) = reply {
            self.check_subject(reply)?;
        }
        self.check_payload(payload)?;
        let encode_frame = |buf: &mut Vec<u8>| {
            encode::put_publish(
                buf,
                subject.as_bytes(),
                reply.map(str::as_bytes),
                payload,
                ack,
            )
        };
        if ack {
            self.inner().request_acked(encode_frame)
        } else {
            self.inner()
                .enqueue(encode_frame, Expect::None, true)
                .map(drop)
        }
    }

    /// Publishes `payload` on `subject`. Buffered: returns once the frame is
    /// queued for the writer thread, which may block while more than 4 MiB
    /// are waiting to be written. Use [`Client::flush`] to know it took effect.
    pub fn publish(&self, subject: &str, payload: &[u8]) -> Result<(), Error> {
        self.publish_frame(subject, None, payload, false)
    }

    /// Publishes with a reply subject, buffered like [`Client::publish`].
    pub fn publish_with_reply(
        &self,
        subject: &str,
        reply: &str,
        payload: &[u8],
    ) -> Result<(), Error> {
        self.publish_frame(subject, Some(reply), payload, false)
    }

    /// Publishes with flag ACK and waits (up to `request_timeout`) for the
    /// broker's OK: the message is then queued for every matching
    /// subscription. An ERROR answer is [`Error::Server`].
    pub fn publish_acked(&self, subject: &str, payload: &[u8]) -> Result<(), Error> {
        self.publish_frame(subject, None, payload, true)
    }

    fn subscribe_frame(&self, filter: &str, group: Option<&str>) -> Result<Subscription, Error> {
        let inner = self.inner();
        validate_filter(filter.as_bytes(), inner.max_topic)
            .map_err(|err| invalid_subject(filter, err))?;
        if let Some(group) = group {
            validate_queue(group.as_bytes(), inner.max_topic)
                .map_err(|err| invalid_subject(group, err))?;
        }
        let sid = inner.next_sid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        lock(&inner.subs).insert(
            sid,
            SubEntry {
                kind: SubKind::Plain(tx),
                delivered: 0,
                max: None,
            },
        );
        let result = inner.request_acked(|buf| {
            encode::put_subscribe(buf, filter.as_bytes(), sid, group.map(str::as_bytes), true)
        });
        match result {
            Ok(()) => Ok(Subscription {
                inner: Arc::clone(inner),
                sid,
                rx,
                active: true,
            }),
            Err(err) => {
                lock(&inner.subs).remove(&sid);
                if matches!(err, Error::Timeout) {
                    // The broker may yet create it: take it back.
                    let _ = inner.enqueue(
                        |buf| encode::put_unsubscribe(buf, sid, 0, false),
                        Expect::None,
                        false,
                    );
                }
                Err(err)
            }
        }
    }

    /// Subscribes to `filter` (wildcards `*` and `>` allowed) and waits for
    /// the broker's OK: on return the subscription is visible to every
    /// publisher on the broker.
    pub fn subscribe(&self, filter: &str) -> Result<Subscription, Error> {
        self.subscribe_frame(filter, None)
    }

    /// Like [`Client::subscribe`], as a member of queue group `group`: each
    /// message goes to one member of the group.
    pub fn queue_subscribe(&self, filter: &str, group: &str) -> Result<Subscription, Error> {
        self.subscribe_frame(filter, Some(group))
    }

    /// The request inbox prefix, subscribing `<prefix>.*` on first use.
    fn inbox_prefix(&self) -> Result<String, Error> {
        let inner = self.inner();
        let mut inbox = lock(&inner.inbox);
        if let Some(inbox) = &*inbox {
            return Ok(inbox.prefix.clone());
        }
        let prefix = format!("_INBOX.{}", random_token());
        let filter = format!("{prefix}.*");
        validate_filter(filter.as_bytes(), inner.max_topic)
            .map_err(|err| invalid_subject(&filter, err))?;
        let sid = inner.next_sid.fetch_add(1, Ordering::Relaxed);
        lock(&inner.subs).insert(
            sid,
            SubEntry {
                kind: SubKind::Inbox,
                delivered: 0,
                max: None,
            },
        );
        let result = inner
            .request_acked(|buf| encode::put_subscribe(buf, filter.as_bytes(), sid, None, true));
        if let Err(err) = result {
            lock(&inner.subs).remove(&sid);
            return Err(err);
        }
        *inbox = Some(Inbox {
            prefix: prefix.clone(),
        });
        Ok(prefix)
    }

    /// Publishes `payload` on `subject` with a unique reply subject
    /// `_INBOX.<random>.<n>` and waits up to `timeout` for the first answer.
    /// The first request subscribes the client's inbox `_INBOX.<random>.*`
    /// (one round trip); later requests cost none beyond their own.
    pub fn request(
        &self,
        subject: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Message, Error> {
        self.check_subject(subject)?;
        self.check_payload(payload)?;
        let inner = self.inner();
        let prefix = self.inbox_prefix()?;
        let id = inner.next_request.fetch_add(1, Ordering::Relaxed);
        let reply = format!("{prefix}.{id}");
        self.check_subject(&reply)?;
        let (tx, rx) = mpsc::sync_channel(1);
        lock(&inner.requests).insert(id, tx);
        let sent = inner.enqueue(
            |buf| {
                encode::put_publish(
                    buf,
                    subject.as_bytes(),
                    Some(reply.as_bytes()),
                    payload,
                    false,
                )
            },
            Expect::None,
            true,
        );
        if let Err(err) = sent {
            lock(&inner.requests).remove(&id);
            return Err(err);
        }
        match rx.recv_timeout(timeout) {
            Ok(message) => Ok(message),
            Err(RecvTimeoutError::Timeout) => {
                lock(&inner.requests).remove(&id);
                // The answer may have arrived just before the removal.
                rx.try_recv().map_err(|_| Error::Timeout)
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(inner.dead_reason().unwrap_or(Reason::Closed).to_error())
            }
        }
    }

    /// Writes everything buffered, sends PING and waits (up to
    /// `request_timeout`) for PONG: afterwards every earlier frame of this
    /// connection took effect in the broker.
    pub fn flush(&self) -> Result<(), Error> {
        let inner = self.inner();
        match inner.enqueue(|_| {}, Expect::Pong, true)? {
            Some(rx) => inner.wait_answer(rx),
            None => Ok(()),
        }
    }

    /// Flushes, sends DISCONNECT, waits until the broker closes the
    /// connection (bounded by `request_timeout`), and joins the client's
    /// threads. Closes the connection for every clone. Returns the flush's
    /// error, if any (the connection is closed regardless).
    pub fn close(self) -> Result<(), Error> {
        let inner = Arc::clone(self.inner());
        let flushed = self.flush();
        inner.begin_close();
        if !inner.wait_dead(inner.request_timeout) {
            inner.fail(Reason::Closed);
        }
        inner.join_threads();
        match flushed {
            Ok(()) | Err(Error::Closed) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// True once the connection is closed, closing, or lost.
    pub fn is_closed(&self) -> bool {
        self.inner().is_closed()
    }

    /// The latest ERROR from the broker that answered no waiting request:
    /// an error for a non-acked frame (403 on a publish, 404 on a dropped
    /// subscription's UNSUBSCRIBE, 429), or one the broker sent on its own
    /// (503 slow consumer, 408).
    pub fn last_error(&self) -> Option<Error> {
        self.inner().last_error()
    }
}

/// Messages for one subscription, in the order the broker delivered them.
/// Dropping it without [`Subscription::unsubscribe`] sends a non-acked
/// UNSUBSCRIBE (best effort).
pub struct Subscription {
    inner: Arc<Inner>,
    sid: u32,
    rx: Receiver<Message>,
    /// Still registered: Drop unsubscribes.
    active: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("sid", &self.sid)
            .finish()
    }
}

impl Subscription {
    /// The subscription's id on this connection (a per-client counter from 1).
    pub fn sid(&self) -> u32 {
        self.sid
    }

    /// Why no more messages come: the connection's end ([`Error::Server`],
    /// [`Error::Disconnected`], [`Error::Protocol`]), else [`Error::Closed`].
    fn end_error(&self) -> Error {
        self.inner
            .dead_reason()
            .map_or(Error::Closed, |reason| reason.to_recv_error())
    }

    /// Waits for the next message. Once the connection is gone (or the
    /// subscription ended after `unsubscribe_after`) and the queue is empty:
    /// [`Error::Closed`], or why the broker closed ([`Error::Disconnected`],
    /// [`Error::Server`], [`Error::Protocol`]).
    pub fn recv(&self) -> Result<Message, Error> {
        self.rx.recv().map_err(|_| self.end_error())
    }

    /// Like [`Subscription::recv`], giving up with [`Error::Timeout`] after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message, Error> {
        self.rx.recv_timeout(timeout).map_err(|err| match err {
            RecvTimeoutError::Timeout => Error::Timeout,
            RecvTimeoutError::Disconnected => self.end_error(),
        })
    }

    /// The next message if one is queued.
    pub fn try_recv(&self) -> Option<Message> {
        self.rx.try_recv().ok()
    }

    /// Sends UNSUBSCRIBE with ACK and waits for the broker's OK. Messages
    /// still queued are dropped.
    pub fn unsubscribe(mut self) -> Result<(), Error> {
        self.active = false;
        let registered = lock(&self.inner.subs).remove(&self.sid).is_some();
        if !registered {
            // Ended by `unsubscribe_after` (the broker removed it too), or
            // the connection is gone.
            return match self.inner.dead_reason() {
                Some(reason) => Err(reason.to_error()),
                None => Ok(()),
            };
        }
        let sid = self.sid;
        self.inner
            .request_acked(|buf| encode::put_unsubscribe(buf, sid, 0, true))
    }

    /// Asks the broker (with ACK) to remove the subscription once it has
    /// delivered `max_msgs` messages in total, counting those already
    /// delivered; 0 removes it at once. After the last message, `recv`
    /// returns [`Error::Closed`].
    pub fn unsubscribe_after(&self, max_msgs: u32) -> Result<(), Error> {
        {
            let mut subs = lock(&self.inner.subs);
            match subs.get_mut(&self.sid) {
                None => {
                    return match self.inner.dead_reason() {
                        Some(reason) => Err(reason.to_error()),
                        None => Ok(()),
                    }
                }
                Some(entry) if max_msgs == 0 || entry.delivered >= max_msgs as u64 => {
                    subs.remove(&self.sid);
                }
                Some(entry) => entry.max = Some(max_msgs as u64),
            }
        }
        let sid = self.sid;
        self.inner
            .request_acked(|buf| encode::put_unsubscribe(buf, sid, max_msgs, true))
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let registered = lock(&self.inner.subs).remove(&self.sid).is_some();
        if registered {
            let sid = self.sid;
            let _ = self.inner.enqueue(
                |buf| encode::put_unsubscribe(buf, sid, 0, false),
                Expect::None,
                false,
            );
        }
    }
}

/// 22 characters of `[0-9A-Za-z]`, unique per process and call, hard to guess.
fn random_token() -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let mut token = String::with_capacity(22);
    for round in 0..2u64 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u64(round);
        let mut value = hasher.finish();
        for _ in 0..11 {
            token.push(ALPHABET[(value % 62) as usize] as char);
            value /= 62;
        }
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn client_is_send_sync_and_subscription_is_send() {
        assert_send_sync::<Client>();
        assert_send::<Subscription>();
        assert_send_sync::<Error>();
    }

    #[test]
    fn random_tokens_are_valid_tokens_and_differ() {
        let a = random_token();
        let b = random_token();
        assert_eq!(a.len(), 22);
        assert_ne!(a, b);
        assert!(validate_subject(format!("_INBOX.{a}.1").as_bytes(), 255).is_ok());
    }
}
