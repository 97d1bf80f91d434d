//! Encoding frames into a caller's buffer (`Vec<u8>`, `BytesMut`, ...).
//!
//! Inputs are trusted to fit the wire: a topic of at most `u16::MAX` bytes and
//! a frame of at most `u32::MAX` bytes. Callers validate subjects and limits
//! before they encode.

use bytes::BufMut;

use crate::frame::{flags, ErrorCode, Op, HEADER_LEN};

/// Writes the frame header and topic; the caller then writes `body_len` bytes.
pub fn put_header<B: BufMut>(out: &mut B, op: Op, flag_bits: u8, topic: &[u8], body_len: usize) {
    debug_assert!(topic.len() <= u16::MAX as usize);
    let len = 4 + topic.len() + body_len;
    debug_assert!(len <= u32::MAX as usize);
    out.put_u32(len as u32);
    out.put_u8(op as u8);
    out.put_u16(topic.len() as u16);
    out.put_u8(flag_bits);
    out.put_slice(topic);
}

/// Total bytes of a frame with this topic and body length.
pub fn frame_len(topic_len: usize, body_len: usize) -> usize {
    HEADER_LEN + topic_len + body_len
}

fn reply_part_len(reply: Option<&[u8]>) -> usize {
    reply.map_or(0, |r| 2 + r.len())
}

fn put_reply<B: BufMut>(out: &mut B, reply: Option<&[u8]>) {
    if let Some(reply) = reply {
        debug_assert!(reply.len() <= u16::MAX as usize);
        out.put_u16(reply.len() as u16);
        out.put_slice(reply);
    }
}

fn reply_flag(reply: Option<&[u8]>) -> u8 {
    if reply.is_some() {
        flags::REPLY
    } else {
        0
    }
}

fn ack_flag(ack: bool) -> u8 {
    if ack {
        flags::ACK
    } else {
        0
    }
}

/// Bytes of the MESSAGE frame [`put_message`] writes.
pub fn message_len(subject: &[u8], reply: Option<&[u8]>, payload_len: usize) -> usize {
    frame_len(subject.len(), 4 + reply_part_len(reply) + payload_len)
}

/// MESSAGE header up to (not including) the payload: the caller appends
/// `payload_len` payload bytes, or hands them to writev separately.
pub fn put_message_head<B: BufMut>(
    out: &mut B,
    subject: &[u8],
    sid: u32,
    reply: Option<&[u8]>,
    payload_len: usize,
) {
    let body_len = 4 + reply_part_len(reply) + payload_len;
    put_header(out, Op::Message, reply_flag(reply), subject, body_len);
    out.put_u32(sid);
    put_reply(out, reply);
}

pub fn put_message<B: BufMut>(
    out: &mut B,
    subject: &[u8],
    sid: u32,
    reply: Option<&[u8]>,
    payload: &[u8],
) {
    put_message_head(out, subject, sid, reply, payload.len());
    out.put_slice(payload);
}

pub fn put_ok<B: BufMut>(out: &mut B) {
    put_header(out, Op::Ok, 0, b"", 0);
}

pub fn put_error<B: BufMut>(out: &mut B, code: ErrorCode, reason: &str) {
    put_header(out, Op::Error, 0, b"", 2 + reason.len());
    out.put_u16(code.as_u16());
    out.put_slice(reason.as_bytes());
}

pub fn put_info<B: BufMut>(out: &mut B, json: &[u8]) {
    put_header(out, Op::Info, 0, b"", json.len());
    out.put_slice(json);
}

pub fn put_ping<B: BufMut>(out: &mut B) {
    put_header(out, Op::Ping, 0, b"", 0);
}

pub fn put_pong<B: BufMut>(out: &mut B) {
    put_header(out, Op::Pong, 0, b"", 0);
}

/// DISCONNECT; `reason` is empty from a client, a UTF-8 reason from the broker.
pub fn put_disconnect<B: BufMut>(out: &mut B, reason: &str) {
    put_header(out, Op::Disconnect, 0, b"", reason.len());
    out.put_slice(reason.as_bytes());
}

pub fn put_connect<B: BufMut>(out: &mut B, json: &[u8]) {
    put_header(out, Op::Connect, 0, b"", json.len());
    out.put_slice(json);
}

pub fn put_publish<B: BufMut>(
    out: &mut B,
    subject: &[u8],
    reply: Option<&[u8]>,
    payload: &[u8],
    ack: bool,
) {
    let body_len = reply_part_len(reply) + payload.len();
    put_header(
        out,
        Op::Publish,
        reply_flag(reply) | ack_flag(ack),
        subject,
        body_len,
    );
    put_reply(out, reply);
    out.put_slice(payload);
}

pub fn put_subscribe<B: BufMut>(
    out: &mut B,
    filter: &[u8],
    sid: u32,
    queue: Option<&[u8]>,
    ack: bool,
) {
    let queue = queue.unwrap_or_default();
    put_header(out, Op::Subscribe, ack_flag(ack), filter, 4 + queue.len());
    out.put_u32(sid);
    out.put_slice(queue);
}

/// UNSUBSCRIBE; `max_msgs` of 0 removes the subscription at once.
pub fn put_unsubscribe<B: BufMut>(out: &mut B, sid: u32, max_msgs: u32, ack: bool) {
    let body_len = if max_msgs == 0 { 4 } else { 8 };
    put_header(out, Op::Unsubscribe, ack_flag(ack), b"", body_len);
    out.put_u32(sid);
    if max_msgs != 0 {
        out.put_u32(max_msgs);
    }
}
