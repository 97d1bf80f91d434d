//! Minimal clients for the three wire protocols, spoken directly over a
//! `TcpStream` (or TLS over it, with `--tls`) so that no client library's
//! overhead differs between brokers.
//!
//! Each protocol is a [`Wire`]: it encodes the few requests the bench sends
//! (handshake, subscribe, publish, ping, pong) into a caller's buffer and
//! parses server events in place from a [`Reader`]'s buffer, without an
//! allocation per message.

pub mod blipmq;
pub mod conn;
pub mod nats;
pub mod reader;
pub mod resp;

pub use conn::{await_pong, open, Conn, ReadHalf, WriteHalf};
pub use reader::Reader;

/// One thing a server said, borrowed from the read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A delivered message's payload.
    Msg(&'a [u8]),
    Ping,
    Pong,
    /// OK / +OK, INFO, a subscribe confirmation: nothing to do.
    Ack,
    /// Redis: the reply to PUBLISH, the number of clients that received it.
    Receivers(i64),
    /// An error from the server; `code` is BlipMQ's ERROR code, 0 elsewhere.
    Error {
        code: u16,
        text: &'a [u8],
    },
    /// The server is closing the connection (BlipMQ DISCONNECT).
    Disconnect(&'a [u8]),
}

/// Bytes that cannot be parsed as the protocol: a broker or harness bug.
#[derive(Debug, Clone)]
pub struct ProtoError(pub String);

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProtoError {}

pub type Parsed<'a> = Result<Option<(Event<'a>, usize)>, ProtoError>;

/// A broker's client protocol, as far as the bench needs it.
pub trait Wire: Copy + Send + Sync + 'static {
    /// Over TLS, the server's greeting comes in the clear before the TLS
    /// handshake (NATS), rather than inside it (BlipMQ's binary protocol).
    const INFO_BEFORE_TLS: bool;
    /// What a client sends right after connecting (CONNECT), possibly nothing.
    fn put_hello(out: &mut Vec<u8>, name: &str);
    fn put_subscribe(out: &mut Vec<u8>, subject: &str, sid: u32, queue: Option<&str>);
    /// Everything of a publish request before its payload. A publisher
    /// encodes it once per run and copies it in front of every payload.
    fn put_publish_head(out: &mut Vec<u8>, subject: &str, payload_len: usize);
    /// Everything after the payload.
    fn publish_tail() -> &'static [u8];
    fn put_ping(out: &mut Vec<u8>);
    fn put_pong(out: &mut Vec<u8>);
    /// Parses the first event of `buf`: `Ok(None)` when it is incomplete,
    /// otherwise the event and the bytes it took.
    fn parse(buf: &[u8]) -> Parsed<'_>;
}

/// Appends the decimal digits of `n`.
pub(crate) fn put_decimal(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Parses an unsigned decimal; `None` on anything else.
pub(crate) fn parse_decimal(bytes: &[u8]) -> Option<usize> {
    if bytes.is_empty() || bytes.len() > 18 {
        return None;
    }
    let mut n = 0usize;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + (b - b'0') as usize;
    }
    Some(n)
}

/// The payload every message carries: who sent it, its number and, for
/// latency runs, when it was meant to be sent.
pub mod payload {
    /// Bytes of the header; the smallest payload is exactly this.
    pub const HEADER: usize = 16;

    /// Writes the header into the first 16 bytes of `payload`.
    #[inline]
    pub fn stamp(payload: &mut [u8], publisher: u32, seq: u32, timestamp_ns: u64) {
        payload[0..4].copy_from_slice(&publisher.to_le_bytes());
        payload[4..8].copy_from_slice(&seq.to_le_bytes());
        payload[8..16].copy_from_slice(&timestamp_ns.to_le_bytes());
    }

    /// `(publisher, seq, timestamp_ns)`, or `None` for a payload too short.
    #[inline]
    pub fn read(payload: &[u8]) -> Option<(u32, u32, u64)> {
        if payload.len() < HEADER {
            return None;
        }
        let publisher = u32::from_le_bytes(payload[0..4].try_into().ok()?);
        let seq = u32::from_le_bytes(payload[4..8].try_into().ok()?);
        let ts = u64::from_le_bytes(payload[8..16].try_into().ok()?);
        Some((publisher, seq, ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_round_trip() {
        for n in [0usize, 7, 10, 16384, 1 << 40] {
            let mut out = Vec::new();
            put_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            assert_eq!(parse_decimal(&out), Some(n));
        }
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"1x"), None);
    }

    #[test]
    fn payload_round_trip() {
        let mut p = [0u8; 16];
        payload::stamp(&mut p, 3, 99, 123_456);
        assert_eq!(payload::read(&p), Some((3, 99, 123_456)));
        assert_eq!(payload::read(&p[..15]), None);
    }
}
