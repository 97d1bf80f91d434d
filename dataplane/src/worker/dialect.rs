//! Server frames in a connection's [`Dialect`]: BlipMQ's binary protocol or
//! NATS's text one. Both run through the same session, routing and queues;
//! only the bytes differ. This is the one place that writes a server frame
//! in either dialect and finds where one ends in a queue.

use blipmq_protocol::nats::encode as nats_encode;
use blipmq_protocol::{encode, ErrorCode, Op, LEN_PREFIX};

use super::connections::Conn;
pub use crate::session::Dialect;
use crate::session::Message;

impl Dialect {
    pub fn put_ok(self, out: &mut Vec<u8>) {
        match self {
            Dialect::Binary => encode::put_ok(out),
            Dialect::Nats => nats_encode::put_ok(out),
        }
    }

    pub fn put_pong(self, out: &mut Vec<u8>) {
        match self {
            Dialect::Binary => encode::put_pong(out),
            Dialect::Nats => nats_encode::put_pong(out),
        }
    }

    pub fn put_ping(self, out: &mut Vec<u8>) {
        match self {
            Dialect::Binary => encode::put_ping(out),
            Dialect::Nats => nats_encode::put_ping(out),
        }
    }

    /// ERROR `code` with `reason`; to a NATS client, `-ERR` with the text
    /// nats-server sends for the same condition.
    pub fn put_error(self, out: &mut Vec<u8>, code: ErrorCode, reason: &str) {
        match self {
            Dialect::Binary => encode::put_error(out, code, reason),
            Dialect::Nats => nats_encode::put_err(out, nats_err_text(code, reason)),
        }
    }

    /// DISCONNECT with `reason`. NATS has no such op: nats-server just
    /// closes, and so does the caller once the queue is flushed. Returns
    /// whether a frame was written.
    pub fn put_disconnect(self, out: &mut Vec<u8>, reason: &str) -> bool {
        match self {
            Dialect::Binary => {
                encode::put_disconnect(out, reason);
                true
            }
            Dialect::Nats => false,
        }
    }

    /// The length of the server frame at the start of `queued`, which the
    /// broker wrote itself (so it is whole and well-formed) and which is
    /// long enough to hold its header.
    pub fn frame_len(self, queued: &[u8]) -> usize {
        match self {
            Dialect::Binary => {
                let prefix = [queued[0], queued[1], queued[2], queued[3]];
                LEN_PREFIX + u32::from_be_bytes(prefix) as usize
            }
            Dialect::Nats => nats_encode::server_op_len(queued),
        }
    }

    /// Whether the frame at the start of `queued` delivers a message.
    pub fn is_message(self, queued: &[u8]) -> bool {
        match self {
            Dialect::Binary => queued[LEN_PREFIX] == Op::Message as u8,
            Dialect::Nats => nats_encode::is_msg(queued),
        }
    }
}

/// The frame a message goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// BlipMQ's MESSAGE (no headers).
    Message,
    /// NATS MSG: the payload alone.
    Msg,
    /// NATS HMSG: headers and payload.
    Hmsg,
}

/// How messages are written to one subscriber: its dialect and, for a NATS
/// client, whether it takes headers (HMSG) or gets the payload alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Format {
    dialect: Dialect,
    headers: bool,
}

impl Format {
    pub(super) fn of(conn: &Conn) -> Format {
        Format::new(conn.output.dialect(), conn.session.nats_options().headers)
    }

    pub(super) fn new(dialect: Dialect, headers: bool) -> Format {
        Format { dialect, headers }
    }

    /// How the message goes out to this subscriber.
    fn shape(self, message: &Message<'_>) -> Shape {
        match self.dialect {
            Dialect::Binary => Shape::Message,
            Dialect::Nats if self.headers && !message.headers.is_empty() => Shape::Hmsg,
            Dialect::Nats => Shape::Msg,
        }
    }

    /// The bytes of one delivered message.
    pub(super) fn message_len(self, message: &Message<'_>, sid: u32) -> usize {
        let Message { subject, reply, .. } = *message;
        let (headers_len, payload_len) = (message.headers.len(), message.payload.len());
        match self.shape(message) {
            Shape::Message => encode::message_len(subject, reply, payload_len),
            Shape::Msg => with_decimal(sid, |sid| {
                nats_encode::msg_len(subject, sid, reply, payload_len)
            }),
            Shape::Hmsg => with_decimal(sid, |sid| {
                nats_encode::hmsg_len(subject, sid, reply, headers_len, payload_len)
            }),
        }
    }

    pub(super) fn put_message(self, out: &mut Vec<u8>, message: &Message<'_>, sid: u32) {
        let m = message;
        match self.shape(message) {
            Shape::Message => encode::put_message(out, m.subject, sid, m.reply, m.payload),
            Shape::Msg => with_decimal(sid, |sid| {
                nats_encode::put_msg(out, m.subject, sid, m.reply, m.payload)
            }),
            Shape::Hmsg => with_decimal(sid, |sid| {
                nats_encode::put_hmsg(out, m.subject, sid, m.reply, m.headers, m.payload)
            }),
        }
    }

    /// Whether a shared payload can be spliced into this subscriber's
    /// message frames: only where the payload ends the frame (binary; a
    /// NATS MSG ends with CRLF after it).
    pub(super) fn splices_payloads(self) -> bool {
        self.dialect == Dialect::Binary
    }
}

/// Calls `f` with `value` in decimal, as NATS writes sids.
fn with_decimal<R>(value: u32, f: impl FnOnce(&[u8]) -> R) -> R {
    f(itoa::Buffer::new().format(value).as_bytes())
}

/// The `-ERR` text nats-server sends for the condition an ERROR code and
/// reason describe; where it has none of its own, BlipMQ's reason.
fn nats_err_text(code: ErrorCode, reason: &str) -> &str {
    match code {
        ErrorCode::TooLarge => "Maximum Payload Violation",
        ErrorCode::Unauthorized if reason == HANDSHAKE_TIMEOUT => "Authentication Timeout",
        ErrorCode::Unauthorized => "Authorization Violation",
        ErrorCode::TooMany if reason == RATE_LIMIT => "Rate Limit Exceeded",
        ErrorCode::PingTimeout => "Stale Connection",
        ErrorCode::Unavailable if reason == SLOW_CONSUMER => "Slow Consumer",
        ErrorCode::Unavailable if reason == CONNECTION_LIMIT => "maximum connections exceeded",
        ErrorCode::BadRequest if reason == TLS_REQUIRED => "Secure Connection - TLS Required",
        _ => reason,
    }
}

/// The reasons of the ERRORs that have a NATS text of their own.
pub const SLOW_CONSUMER: &str = "slow consumer";
pub const CONNECTION_LIMIT: &str = "connection limit reached";
pub const TLS_REQUIRED: &str = "TLS required";
pub const HANDSHAKE_TIMEOUT: &str = "authentication timeout: no CONNECT in time";
/// NATS: 'Rate Limit Exceeded' (nats-server has no such limit).
pub const RATE_LIMIT: &str = "rate limit exceeded";
/// The same text to a NATS client (nats-server has no such limit).
pub const CONNECTION_LIMIT_PER_IP: &str = "maximum connections per IP address exceeded";

#[cfg(test)]
mod tests {
    use super::*;

    fn message<'a>(subject: &'a [u8], reply: Option<&'a [u8]>, payload: &'a [u8]) -> Message<'a> {
        Message {
            subject,
            reply,
            headers: b"NATS/1.0\r\nK: v\r\n\r\n",
            payload,
        }
    }

    #[test]
    fn nats_frames_are_walked_by_their_lengths() {
        let mut queue = Vec::new();
        let dialect = Dialect::Nats;
        let plain = Format::new(dialect, false);
        let with_headers = Format::new(dialect, true);
        let first = message(b"a.b", Some(b"_INBOX.x"), b"hello\r\nworld");
        plain.put_message(&mut queue, &first, 12);
        assert_eq!(queue.len(), plain.message_len(&first, 12));
        let second = message(b"h", None, b"body");
        with_headers.put_message(&mut queue, &second, 3);
        dialect.put_pong(&mut queue);
        dialect.put_error(&mut queue, ErrorCode::Unavailable, SLOW_CONSUMER);
        plain.put_message(&mut queue, &message(b"c", None, b""), 1);
        let mut at = 0;
        let mut lens = Vec::new();
        while at < queue.len() {
            let len = dialect.frame_len(&queue[at..]);
            lens.push((len, dialect.is_message(&queue[at..])));
            at += len;
        }
        assert_eq!(at, queue.len());
        assert_eq!(
            lens,
            vec![
                (plain.message_len(&first, 12), true),
                (with_headers.message_len(&second, 3), true),
                (6, false),
                (b"-ERR 'Slow Consumer'\r\n".len(), false),
                (b"MSG c 1 0\r\n\r\n".len(), true)
            ]
        );
        let text = String::from_utf8_lossy(&queue);
        assert!(text.starts_with("MSG a.b 12 _INBOX.x 12\r\nhello\r\nworld\r\nHMSG h 3 18 22\r\nNATS/1.0\r\nK: v\r\n\r\nbody\r\n"), "{text}");
        assert!(text.ends_with("-ERR 'Slow Consumer'\r\nMSG c 1 0\r\n\r\n"));
    }

    #[test]
    fn binary_frames_are_walked_by_their_length_prefixes_and_carry_no_headers() {
        let mut queue = Vec::new();
        let dialect = Dialect::Binary;
        let format = Format::new(dialect, true);
        let message = message(b"a", None, b"x");
        format.put_message(&mut queue, &message, 1);
        let first = queue.len();
        assert_eq!(first, encode::message_len(b"a", None, 1));
        dialect.put_ok(&mut queue);
        assert_eq!(dialect.frame_len(&queue), first);
        assert!(dialect.is_message(&queue));
        assert!(!dialect.is_message(&queue[first..]));
        assert!(!Dialect::Nats.put_disconnect(&mut Vec::new(), "draining"));
    }
}
