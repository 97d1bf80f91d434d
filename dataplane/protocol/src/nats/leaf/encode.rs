//! Encoding leaf → hub ops into a caller's buffer.
//!
//! Inputs are trusted as in [`crate::nats::encode`]: subjects, reply
//! subjects and queue names are tokens without blanks or newlines.

use bytes::BufMut;

use super::json::LeafConnect;
use crate::nats::encode::put_decimal;
pub use crate::nats::encode::{put_ping, put_pong};

const CRLF: &[u8] = b"\r\n";

/// `CONNECT <json>\r\n`. Allocates for the JSON; sent once per connection.
pub fn put_connect<B: BufMut>(out: &mut B, connect: &LeafConnect) {
    out.put_slice(b"CONNECT ");
    // Strings and bools only: serializing cannot fail.
    out.put_slice(&serde_json::to_vec(connect).unwrap_or_default());
    out.put_slice(CRLF);
}

/// `LS+ <subject>\r\n`, or `LS+ <subject> <queue> <weight>\r\n` for a queue
/// group standing for `weight` members.
pub fn put_sub<B: BufMut>(out: &mut B, subject: &[u8], queue: Option<(&[u8], u32)>) {
    out.put_slice(b"LS+ ");
    out.put_slice(subject);
    if let Some((name, weight)) = queue {
        out.put_u8(b' ');
        out.put_slice(name);
        out.put_u8(b' ');
        put_decimal(out, weight as usize);
    }
    out.put_slice(CRLF);
}

/// `LS- <subject> [<queue>]\r\n`: the key of the `LS+` it withdraws.
pub fn put_unsub<B: BufMut>(out: &mut B, subject: &[u8], queue: Option<&[u8]>) {
    out.put_slice(b"LS- ");
    out.put_slice(subject);
    if let Some(name) = queue {
        out.put_u8(b' ');
        out.put_slice(name);
    }
    out.put_slice(CRLF);
}

/// The control line of a message: `LMSG` (no `headers_len`) or `HMSG`, the
/// reply, the queue groups (`+ <reply> <queue>...` or `| <queue>...` when
/// there are some) and the sizes. The caller appends headers, payload and
/// CRLF.
pub fn put_msg_head<'q, B, Q>(
    out: &mut B,
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: Q,
    headers_len: Option<usize>,
    payload_len: usize,
) where
    B: BufMut,
    Q: IntoIterator<Item = &'q [u8]>,
{
    out.put_slice(if headers_len.is_some() {
        b"HMSG "
    } else {
        b"LMSG "
    });
    out.put_slice(subject);
    out.put_u8(b' ');
    let mut queues = queues.into_iter().peekable();
    if queues.peek().is_some() {
        match reply {
            Some(reply) => {
                out.put_slice(b"+ ");
                out.put_slice(reply);
                out.put_u8(b' ');
            }
            None => out.put_slice(b"| "),
        }
        for queue in queues {
            out.put_slice(queue);
            out.put_u8(b' ');
        }
    } else if let Some(reply) = reply {
        out.put_slice(reply);
        out.put_u8(b' ');
    }
    if let Some(headers_len) = headers_len {
        put_decimal(out, headers_len);
        out.put_u8(b' ');
        put_decimal(out, headers_len + payload_len);
    } else {
        put_decimal(out, payload_len);
    }
    out.put_slice(CRLF);
}

/// A whole `LMSG`/`HMSG`: see [`put_msg_head`].
pub fn put_msg<'q, B, Q>(
    out: &mut B,
    subject: &[u8],
    reply: Option<&[u8]>,
    queues: Q,
    headers: Option<&[u8]>,
    payload: &[u8],
) where
    B: BufMut,
    Q: IntoIterator<Item = &'q [u8]>,
{
    put_msg_head(
        out,
        subject,
        reply,
        queues,
        headers.map(<[u8]>::len),
        payload.len(),
    );
    if let Some(headers) = headers {
        out.put_slice(headers);
    }
    out.put_slice(payload);
    out.put_slice(CRLF);
}
