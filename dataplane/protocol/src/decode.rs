//! Decoding frames in place from a byte buffer.
//!
//! Two layers: [`decode_frame`] does the framing (length checks, the 413 rule)
//! and yields a [`RawFrame`] borrowing the buffer; [`Request::parse`] and
//! [`ServerFrame::parse`] check ops, flags and fixed fields for each direction.

use crate::frame::{flags, ErrorCode, Op, HEADER_LEN, LEN_PREFIX};

/// One frame, borrowed from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    pub op: u8,
    pub flags: u8,
    pub topic: &'a [u8],
    pub body: &'a [u8],
}

/// Why bytes cannot be a frame. Every variant closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// `len` exceeds the broker's frame limit, or a payload exceeds `max_payload`.
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    TooLarge { len: u64, limit: u64 },
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

impl FrameError {
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::Malformed(_) => ErrorCode::BadRequest,
        }
    }
}

fn be_u16(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Decodes the first frame of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame, and
/// `Ok(Some((frame, consumed)))` otherwise. A `len` over `max_len` is refused
/// as soon as the length field is read, before the body arrives.
pub fn decode_frame(buf: &[u8], max_len: u32) -> Result<Option<(RawFrame<'_>, usize)>, FrameError> {
    if buf.len() < LEN_PREFIX {
        return Ok(None);
    }
    let len = be_u32(buf);
    if len < 4 {
        return Err(FrameError::Malformed(
            "length shorter than the frame header",
        ));
    }
    if len > max_len {
        return Err(FrameError::TooLarge {
            len: len as u64,
            limit: max_len as u64,
        });
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let topic_len = be_u16(&buf[5..7]) as usize;
    if 4 + topic_len > len as usize {
        return Err(FrameError::Malformed("topic longer than the frame"));
    }
    let total = LEN_PREFIX + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let topic_end = HEADER_LEN + topic_len;
    Ok(Some((
        RawFrame {
            op: buf[4],
            flags: buf[7],
            topic: &buf[HEADER_LEN..topic_end],
            body: &buf[topic_end..total],
        },
        total,
    )))
}

/// Checks the op and its flags; the op must be one `direction_ok` accepts.
fn checked_op(frame: &RawFrame<'_>, direction_ok: fn(Op) -> bool) -> Result<Op, FrameError> {
    let op = Op::from_u8(frame.op).ok_or(FrameError::Malformed("unknown op"))?;
    if !direction_ok(op) {
        return Err(FrameError::Malformed("op not allowed in this direction"));
    }
    if frame.flags & !op.allowed_flags() != 0 {
        return Err(FrameError::Malformed("flag not allowed on this op"));
    }
    Ok(op)
}

fn require_empty(part: &[u8], what: &'static str) -> Result<(), FrameError> {
    if part.is_empty() {
        Ok(())
    } else {
        Err(FrameError::Malformed(what))
    }
}

/// Splits `u16 reply_len, reply, rest` off the front of a body.
fn split_reply(body: &[u8]) -> Result<(&[u8], &[u8]), FrameError> {
    if body.len() < 2 {
        return Err(FrameError::Malformed("body shorter than its reply length"));
    }
    let reply_len = be_u16(body) as usize;
    let rest = &body[2..];
    if rest.len() < reply_len {
        return Err(FrameError::Malformed("reply subject longer than the body"));
    }
    Ok(rest.split_at(reply_len))
}

/// A client → broker frame with its fixed fields checked.
///
/// Subjects are not validated here: an invalid subject is answered with
/// ERROR 400 while the connection stays open, which is the session's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    Connect {
        json: &'a [u8],
    },
    Publish {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        payload: &'a [u8],
        ack: bool,
    },
    Subscribe {
        filter: &'a [u8],
        sid: u32,
        queue: Option<&'a [u8]>,
        ack: bool,
    },
    Unsubscribe {
        sid: u32,
        max_msgs: u32,
        ack: bool,
    },
    Ping,
    Pong,
    Disconnect,
}

impl<'a> Request<'a> {
    pub fn parse(frame: RawFrame<'a>) -> Result<Request<'a>, FrameError> {
        let op = checked_op(&frame, |op| (op as u8) < 0x10)?;
        let ack = frame.flags & flags::ACK != 0;
        Ok(match op {
            Op::Connect => {
                require_empty(frame.topic, "CONNECT carries no topic")?;
                Request::Connect { json: frame.body }
            }
            Op::Publish => {
                let (reply, payload) = if frame.flags & flags::REPLY != 0 {
                    let (reply, payload) = split_reply(frame.body)?;
                    (Some(reply), payload)
                } else {
                    (None, frame.body)
                };
                Request::Publish {
                    subject: frame.topic,
                    reply,
                    payload,
                    ack,
                }
            }
            Op::Subscribe => {
                if frame.body.len() < 4 {
                    return Err(FrameError::Malformed("SUBSCRIBE body shorter than its sid"));
                }
                let queue = &frame.body[4..];
                Request::Subscribe {
                    filter: frame.topic,
                    sid: be_u32(frame.body),
                    queue: (!queue.is_empty()).then_some(queue),
                    ack,
                }
            }
            Op::Unsubscribe => {
                require_empty(frame.topic, "UNSUBSCRIBE carries no topic")?;
                let max_msgs = match frame.body.len() {
                    4 => 0,
                    8 => be_u32(&frame.body[4..]),
                    _ => {
                        return Err(FrameError::Malformed(
                            "UNSUBSCRIBE body must be 4 or 8 bytes",
                        ))
                    }
                };
                Request::Unsubscribe {
                    sid: be_u32(frame.body),
                    max_msgs,
                    ack,
                }
            }
            Op::Ping | Op::Pong | Op::Disconnect => {
                require_empty(frame.topic, "control frame carries no topic")?;
                require_empty(frame.body, "control frame carries no body")?;
                match op {
                    Op::Ping => Request::Ping,
                    Op::Pong => Request::Pong,
                    _ => Request::Disconnect,
                }
            }
            Op::Message | Op::Ok | Op::Error | Op::Info => unreachable!("filtered by direction"),
        })
    }
}

/// A broker → client frame with its fixed fields checked (the client's side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFrame<'a> {
    Info {
        json: &'a [u8],
    },
    Ok,
    Error {
        code: u16,
        reason: &'a [u8],
    },
    Message {
        subject: &'a [u8],
        sid: u32,
        reply: Option<&'a [u8]>,
        payload: &'a [u8],
    },
    Ping,
    Pong,
    Disconnect {
        reason: &'a [u8],
    },
}

impl<'a> ServerFrame<'a> {
    pub fn parse(frame: RawFrame<'a>) -> Result<ServerFrame<'a>, FrameError> {
        let op = checked_op(&frame, |op| {
            matches!(
                op,
                Op::Info | Op::Ok | Op::Error | Op::Message | Op::Ping | Op::Pong | Op::Disconnect
            )
        })?;
        if op != Op::Message {
            require_empty(frame.topic, "only MESSAGE carries a topic")?;
        }
        Ok(match op {
            Op::Info => ServerFrame::Info { json: frame.body },
            Op::Ok => {
                require_empty(frame.body, "OK carries no body")?;
                ServerFrame::Ok
            }
            Op::Error => {
                if frame.body.len() < 2 {
                    return Err(FrameError::Malformed("ERROR body shorter than its code"));
                }
                ServerFrame::Error {
                    code: be_u16(frame.body),
                    reason: &frame.body[2..],
                }
            }
            Op::Message => {
                if frame.body.len() < 4 {
                    return Err(FrameError::Malformed("MESSAGE body shorter than its sid"));
                }
                let sid = be_u32(frame.body);
                let rest = &frame.body[4..];
                let (reply, payload) = if frame.flags & flags::REPLY != 0 {
                    let (reply, payload) = split_reply(rest)?;
                    (Some(reply), payload)
                } else {
                    (None, rest)
                };
                ServerFrame::Message {
                    subject: frame.topic,
                    sid,
                    reply,
                    payload,
                }
            }
            Op::Ping | Op::Pong => {
                require_empty(frame.body, "PING/PONG carries no body")?;
                if op == Op::Ping {
                    ServerFrame::Ping
                } else {
                    ServerFrame::Pong
                }
            }
            Op::Disconnect => ServerFrame::Disconnect { reason: frame.body },
            _ => unreachable!("filtered by direction"),
        })
    }
}
