//! Frame layout constants, operations, flags and error codes.

/// Bytes of the `len` field that starts every frame.
pub const LEN_PREFIX: usize = 4;
/// Bytes of `len` + `op` + `topic_len` + `flags`: everything before the topic.
pub const HEADER_LEN: usize = 8;
/// What a legal frame may carry beyond `max_payload`: header, topic, reply
/// subject, sid and counts. A frame longer than `max_payload + FRAME_ALLOWANCE`
/// is refused as soon as its header is read.
pub const FRAME_ALLOWANCE: u32 = 1024;

/// Operation codes, in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    Connect = 0x01,
    Publish = 0x02,
    Subscribe = 0x03,
    Unsubscribe = 0x04,
    Ping = 0x05,
    Pong = 0x06,
    Disconnect = 0x07,
    Message = 0x10,
    Ok = 0x11,
    Error = 0x12,
    Info = 0x13,
}

impl Op {
    pub fn from_u8(byte: u8) -> Option<Op> {
        Some(match byte {
            0x01 => Op::Connect,
            0x02 => Op::Publish,
            0x03 => Op::Subscribe,
            0x04 => Op::Unsubscribe,
            0x05 => Op::Ping,
            0x06 => Op::Pong,
            0x07 => Op::Disconnect,
            0x10 => Op::Message,
            0x11 => Op::Ok,
            0x12 => Op::Error,
            0x13 => Op::Info,
            _ => return None,
        })
    }

    /// Flag bits this op may carry; any other bit is malformed.
    pub fn allowed_flags(self) -> u8 {
        match self {
            Op::Publish => flags::ACK | flags::REPLY,
            Op::Subscribe | Op::Unsubscribe => flags::ACK,
            Op::Message => flags::REPLY,
            _ => 0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Op::Connect => "CONNECT",
            Op::Publish => "PUBLISH",
            Op::Subscribe => "SUBSCRIBE",
            Op::Unsubscribe => "UNSUBSCRIBE",
            Op::Ping => "PING",
            Op::Pong => "PONG",
            Op::Disconnect => "DISCONNECT",
            Op::Message => "MESSAGE",
            Op::Ok => "OK",
            Op::Error => "ERROR",
            Op::Info => "INFO",
        }
    }
}

/// Flag bits.
pub mod flags {
    /// The broker answers OK once the request took effect, or ERROR.
    pub const ACK: u8 = 0x01;
    /// The body starts with a reply subject.
    pub const REPLY: u8 = 0x02;
}

/// ERROR codes of protocol.md. Whether the connection closes afterwards
/// depends on the situation, not only on the code (400 does both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    BadRequest = 400,
    Unauthorized = 401,
    Forbidden = 403,
    NotFound = 404,
    PingTimeout = 408,
    Conflict = 409,
    TooLarge = 413,
    TooMany = 429,
    Unavailable = 503,
}

impl ErrorCode {
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}
