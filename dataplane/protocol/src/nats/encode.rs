//! Encoding server → client ops into a caller's buffer (`Vec<u8>`,
//! `BytesMut`, ...), byte for byte as nats-server writes them.
//!
//! Inputs are trusted: subjects, reply subjects and sids are tokens without
//! blanks or newlines (the decoder only yields such tokens), and callers
//! check sizes against their limits before they encode.

use bytes::BufMut;

use super::json::ServerInfo;

const CRLF: &[u8] = b"\r\n";

/// The header block of the no-responders status message nats-server 2.9
/// sends: a status line and the blank line that ends the headers.
pub const NO_RESPONDERS_HEADERS: &[u8] = b"NATS/1.0 503\r\n\r\n";

/// Writes `value` in decimal without allocating.
pub fn put_decimal<B: BufMut>(out: &mut B, value: usize) {
    out.put_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// `MSG <subject> <sid> [reply] <#bytes>\r\n`: the caller then appends the
/// payload and `\r\n` (or hands the payload to writev separately).
pub fn put_msg_head<B: BufMut>(
    out: &mut B,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    payload_len: usize,
) {
    out.put_slice(b"MSG ");
    put_subject_sid_reply(out, subject, sid, reply);
    put_decimal(out, payload_len);
    out.put_slice(CRLF);
}

/// `MSG <subject> <sid> [reply] <#bytes>\r\n<payload>\r\n`.
pub fn put_msg<B: BufMut>(
    out: &mut B,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    payload: &[u8],
) {
    put_msg_head(out, subject, sid, reply, payload.len());
    out.put_slice(payload);
    out.put_slice(CRLF);
}

/// `HMSG <subject> <sid> [reply] <#header bytes> <#total bytes>\r\n`: the
/// caller then appends headers, payload and `\r\n`.
pub fn put_hmsg_head<B: BufMut>(
    out: &mut B,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    headers_len: usize,
    payload_len: usize,
) {
    out.put_slice(b"HMSG ");
    put_subject_sid_reply(out, subject, sid, reply);
    put_decimal(out, headers_len);
    out.put_u8(b' ');
    put_decimal(out, headers_len + payload_len);
    out.put_slice(CRLF);
}

/// `HMSG <subject> <sid> [reply] <#hdr> <#total>\r\n<headers><payload>\r\n`;
/// `headers` is the whole block, `NATS/1.0...\r\n\r\n`.
pub fn put_hmsg<B: BufMut>(
    out: &mut B,
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    headers: &[u8],
    payload: &[u8],
) {
    put_hmsg_head(out, subject, sid, reply, headers.len(), payload.len());
    out.put_slice(headers);
    out.put_slice(payload);
    out.put_slice(CRLF);
}

fn put_subject_sid_reply<B: BufMut>(out: &mut B, subject: &[u8], sid: &[u8], reply: Option<&[u8]>) {
    out.put_slice(subject);
    out.put_u8(b' ');
    out.put_slice(sid);
    out.put_u8(b' ');
    if let Some(reply) = reply {
        out.put_slice(reply);
        out.put_u8(b' ');
    }
}

/// The status message nats-server 2.9 sends to a requester whose request
/// found no subscriber and who asked for `no_responders`: an HMSG on the
/// request's reply subject, to the sid of the subscription that covers it,
/// with headers `NATS/1.0 503\r\n\r\n` and no payload:
/// `HMSG <reply> <sid> 16 16\r\nNATS/1.0 503\r\n\r\n\r\n`.
///
/// nats-server 2.11+ adds a `Nats-Subject: <subject>` header; clients read
/// only the status, so the 2.9 form is kept.
pub fn put_no_responders<B: BufMut>(out: &mut B, reply: &[u8], sid: &[u8]) {
    put_hmsg(out, reply, sid, None, NO_RESPONDERS_HEADERS, b"");
}

/// `INFO <json> \r\n`, with the space before CRLF nats-server writes
/// (`bytes.Join` of INFO, the JSON and CRLF with spaces). Allocates for the
/// JSON; INFO is sent once per connection.
pub fn put_info<B: BufMut>(out: &mut B, info: &ServerInfo) {
    out.put_slice(b"INFO ");
    // Strings, integers and bools only: serializing cannot fail.
    let json = serde_json::to_vec(info).unwrap_or_default();
    out.put_slice(&json);
    out.put_slice(b" \r\n");
}

pub fn put_ok<B: BufMut>(out: &mut B) {
    out.put_slice(b"+OK\r\n");
}

/// `-ERR '<text>'\r\n`; `text` is one of nats-server's messages, such as
/// [`NatsError::err_text`](super::NatsError::err_text).
pub fn put_err<B: BufMut>(out: &mut B, text: &str) {
    out.put_slice(b"-ERR '");
    out.put_slice(text.as_bytes());
    out.put_slice(b"'\r\n");
}

pub fn put_ping<B: BufMut>(out: &mut B) {
    out.put_slice(b"PING\r\n");
}

pub fn put_pong<B: BufMut>(out: &mut B) {
    out.put_slice(b"PONG\r\n");
}

/// Bytes [`put_msg`] writes, for reserving buffer space up front.
pub fn msg_len(subject: &[u8], sid: &[u8], reply: Option<&[u8]>, payload_len: usize) -> usize {
    b"MSG ".len()
        + subject_sid_reply_len(subject, sid, reply)
        + decimal_len(payload_len)
        + 2
        + payload_len
        + 2
}

/// Bytes [`put_hmsg`] writes.
pub fn hmsg_len(
    subject: &[u8],
    sid: &[u8],
    reply: Option<&[u8]>,
    headers_len: usize,
    payload_len: usize,
) -> usize {
    let total = headers_len + payload_len;
    b"HMSG ".len()
        + subject_sid_reply_len(subject, sid, reply)
        + decimal_len(headers_len)
        + 1
        + decimal_len(total)
        + 2
        + total
        + 2
}

fn subject_sid_reply_len(subject: &[u8], sid: &[u8], reply: Option<&[u8]>) -> usize {
    subject.len() + 1 + sid.len() + 1 + reply.map_or(0, |r| r.len() + 1)
}

fn decimal_len(mut value: usize) -> usize {
    let mut digits = 1;
    while value >= 10 {
        value /= 10;
        digits += 1;
    }
    digits
}

/// The length of the server op at the start of `queued`, as this module
/// writes them: its control line, and for MSG/HMSG the size that ends that
/// line, the payload and its CRLF. For a server that walks its own queued
/// output (`queued` holds at least the op's control line).
pub fn server_op_len(queued: &[u8]) -> usize {
    let line_end = memchr::memchr(b'\n', queued).map_or(queued.len(), |at| at + 1);
    if !is_msg(queued) {
        return line_end;
    }
    let line = &queued[..line_end.saturating_sub(CRLF.len())];
    let size_at = memchr::memrchr(b' ', line).map_or(0, |at| at + 1);
    let size = line[size_at..].iter().fold(0usize, |n, &digit| {
        n * 10 + usize::from(digit.wrapping_sub(b'0'))
    });
    line_end + size + CRLF.len()
}

/// Whether the server op at the start of `queued` is a MSG or HMSG.
pub fn is_msg(queued: &[u8]) -> bool {
    queued.starts_with(b"MSG ") || queued.starts_with(b"HMSG ")
}
