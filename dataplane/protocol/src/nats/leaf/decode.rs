//! Decoding hub → leaf ops in place from a byte buffer.
//!
//! Stateless, like the client-op decoder: each call parses from the start
//! of the buffer; `Ok(None)` asks for more bytes.

use crate::nats::decode::{
    is_blank, is_sub_separator, parse_size, read_line, read_payload, skip_blanks, split_args, Line,
};
use crate::nats::{NatsError, NatsLimits};

/// One hub op, borrowed from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubOp<'a> {
    /// `INFO <json>`: parse with [`HubInfo::parse`](super::HubInfo::parse).
    Info {
        json: &'a [u8],
    },
    Ping,
    Pong,
    /// `+OK` (a hub does not send it to a leaf; accepted and ignored).
    Ok,
    /// `-ERR '<text>'`: the text without its quotes.
    Err {
        text: &'a [u8],
    },
    /// `LS+ <subject> [<queue> <weight>]`: the hub wants messages on
    /// `subject` (a filter), or on behalf of `weight` members of a group.
    Sub {
        subject: &'a [u8],
        queue: Option<QueueWeight<'a>>,
    },
    /// `LS- <subject> [<queue>]`: that interest is gone.
    Unsub {
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
    },
    /// `LMSG` or `HMSG`.
    Msg(LeafMsg<'a>),
}

/// A queue group and how many members it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueWeight<'a> {
    pub name: &'a [u8],
    pub weight: u32,
}

/// A message from the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafMsg<'a> {
    pub subject: &'a [u8],
    pub reply: Option<&'a [u8]>,
    /// The groups of which one member each gets the message.
    pub queues: Queues<'a>,
    /// The header block (`NATS/1.0...\r\n\r\n`) of an `HMSG`.
    pub headers: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// The queue names of a message: a run of tokens, split on demand so that
/// decoding allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Queues<'a>(&'a [u8]);

impl<'a> Queues<'a> {
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + Clone + 'a {
        self.0
            .split(|&b| is_sub_separator(b))
            .filter(|token| !token.is_empty())
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.iter().any(|queue| queue == name)
    }
}

/// Why hub input cannot be decoded; every one is final (close the link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeafDecodeError {
    /// The framing errors the client protocol shares: unknown op, over-long
    /// control line, payload too large, bad sizes, missing CRLF.
    #[error(transparent)]
    Framing(#[from] NatsError),
    /// A message with queue names whose second argument is not `+` or `|`.
    #[error("{op}: bad or missing reply indicator")]
    BadReplyIndicator { op: &'static str },
    /// The weight of an `LS+` queue interest is not a decimal.
    #[error("LS+: bad queue weight")]
    BadWeight,
}

/// The ops a hub may send, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpName {
    Info,
    Ping,
    Pong,
    Ok,
    Err,
    Sub,
    Unsub,
    Lmsg,
    Hmsg,
}

const OP_NAMES: [(OpName, &str); 9] = [
    (OpName::Info, "INFO"),
    (OpName::Ping, "PING"),
    (OpName::Pong, "PONG"),
    (OpName::Ok, "+OK"),
    (OpName::Err, "-ERR"),
    (OpName::Sub, "LS+"),
    (OpName::Unsub, "LS-"),
    (OpName::Lmsg, "LMSG"),
    (OpName::Hmsg, "HMSG"),
];

impl OpName {
    fn label(self) -> &'static str {
        OP_NAMES
            .iter()
            .find(|(name, _)| *name == self)
            .map_or("", |(_, label)| label)
    }

    /// Whether a blank must follow the name (and arguments then follow).
    fn takes_args(self) -> bool {
        !matches!(self, OpName::Ping | OpName::Pong | OpName::Ok)
    }
}

/// Which op `buf` starts with, case-insensitively; `Ok(None)` until enough
/// bytes tell. No name is a prefix of another, so the first full match is
/// the op.
fn read_op_name(buf: &[u8]) -> Result<Option<OpName>, NatsError> {
    let mut partial = false;
    for (name, text) in OP_NAMES {
        let text = text.as_bytes();
        let seen = buf.len().min(text.len());
        if !buf[..seen].eq_ignore_ascii_case(&text[..seen]) {
            continue;
        }
        if seen == text.len() {
            return Ok(Some(name));
        }
        partial = true;
    }
    if partial {
        Ok(None)
    } else {
        Err(NatsError::UnknownOperation)
    }
}

type Decoded<'a> = Result<Option<(HubOp<'a>, usize)>, LeafDecodeError>;

/// Decodes the first hub op of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of an op, and
/// `Ok(Some((op, consumed)))` otherwise; `op` borrows `buf`. Errors are
/// final: the link closes.
pub fn decode_hub_op<'a>(buf: &'a [u8], limits: &NatsLimits) -> Decoded<'a> {
    let Some(name) = read_op_name(buf)? else {
        return Ok(None);
    };
    let name_end = name.label().len();
    let args_start = if name.takes_args() {
        match buf.get(name_end) {
            None => return Ok(None),
            Some(&byte) if is_blank(byte) => {}
            Some(_) => return Err(NatsError::UnknownOperation.into()),
        }
        match skip_blanks(buf, name_end + 1, limits)? {
            Some(start) => start,
            None => return Ok(None),
        }
    } else {
        name_end
    };
    let Some(line) = read_line(buf, name.takes_args(), args_start, limits)? else {
        return Ok(None);
    };
    let consumed = line.newline + 1;
    let op = match name {
        OpName::Lmsg | OpName::Hmsg => return decode_msg(buf, &line, name, limits),
        OpName::Info => HubOp::Info { json: line.args },
        OpName::Ping => HubOp::Ping,
        OpName::Pong => HubOp::Pong,
        OpName::Ok => HubOp::Ok,
        OpName::Err => HubOp::Err {
            text: unquote(line.args),
        },
        OpName::Sub => decode_sub(&line)?,
        OpName::Unsub => decode_unsub(&line)?,
    };
    Ok(Some((op, consumed)))
}

fn unquote(text: &[u8]) -> &[u8] {
    let text = text.strip_prefix(b"'").unwrap_or(text);
    text.strip_suffix(b"'").unwrap_or(text)
}

fn decode_sub<'a>(line: &Line<'a>) -> Result<HubOp<'a>, LeafDecodeError> {
    match split_args::<3>(line.args, is_sub_separator) {
        Some(([subject, _, _], 1)) => Ok(HubOp::Sub {
            subject,
            queue: None,
        }),
        Some(([subject, name, weight], 3)) => {
            let weight = parse_size(weight).ok_or(LeafDecodeError::BadWeight)?;
            Ok(HubOp::Sub {
                subject,
                queue: Some(QueueWeight {
                    name,
                    // At most 9 digits, so it fits.
                    weight: u32::try_from(weight).unwrap_or(u32::MAX),
                }),
            })
        }
        _ => Err(argument_count(OpName::Sub)),
    }
}

fn decode_unsub<'a>(line: &Line<'a>) -> Result<HubOp<'a>, LeafDecodeError> {
    match split_args::<2>(line.args, is_sub_separator) {
        Some(([subject, _], 1)) => Ok(HubOp::Unsub {
            subject,
            queue: None,
        }),
        Some(([subject, queue], 2)) => Ok(HubOp::Unsub {
            subject,
            queue: Some(queue),
        }),
        _ => Err(argument_count(OpName::Unsub)),
    }
}

fn argument_count(name: OpName) -> LeafDecodeError {
    NatsError::ArgumentCount { op: name.label() }.into()
}

/// The tokens of a message's arguments with where each starts, split as
/// client.go's `processLeafMsgArgs` does.
fn tokens(args: &[u8]) -> impl Iterator<Item = (usize, &[u8])> + Clone {
    let base = args.as_ptr() as usize;
    args.split(|&b| is_sub_separator(b))
        .filter(|token| !token.is_empty())
        .map(move |token| (token.as_ptr() as usize - base, token))
}

fn decode_msg<'a>(
    buf: &'a [u8],
    line: &Line<'a>,
    name: OpName,
    limits: &NatsLimits,
) -> Decoded<'a> {
    let op = name.label();
    let args = line.args;
    // The sizes at the end: one for LMSG, header and total for HMSG.
    let sizes = if name == OpName::Hmsg { 2 } else { 1 };
    let count = tokens(args).count();
    if count < 1 + sizes {
        return Err(argument_count(name));
    }
    let mut all = tokens(args);
    let (_, subject) = all.next().unwrap_or_default();
    let before_sizes = count - 1 - sizes;
    let (reply, queues) = match before_sizes {
        0 => (None, Queues::default()),
        1 => (all.next().map(|(_, reply)| reply), Queues::default()),
        _ => {
            let (_, indicator) = all.next().unwrap_or_default();
            let reply = match indicator {
                b"+" => all.next().map(|(_, reply)| reply),
                b"|" => None,
                _ => return Err(LeafDecodeError::BadReplyIndicator { op }),
            };
            let queue_count = before_sizes - 1 - usize::from(reply.is_some());
            let mut queue_tokens = all.clone().take(queue_count);
            let queues = match (queue_tokens.next(), queue_tokens.last()) {
                (Some((first, _)), Some((last, token))) => &args[first..last + token.len()],
                (Some((first, token)), None) => &args[first..first + token.len()],
                _ => &[],
            };
            if queue_count > 0 {
                all.nth(queue_count - 1);
            }
            (reply, Queues(queues))
        }
    };
    let mut size_of = |what: fn(&'static str) -> NatsError| {
        all.next()
            .and_then(|(_, token)| parse_size(token))
            .ok_or(what(op))
    };
    let header_size = if name == OpName::Hmsg {
        Some(size_of(|_| NatsError::BadHeaderSize)?)
    } else {
        None
    };
    let total = size_of(|op| NatsError::BadSize { op })?;
    if header_size.is_some_and(|header| header > total) {
        return Err(NatsError::HeaderLargerThanTotal.into());
    }
    if total > limits.max_payload {
        return Err(NatsError::MaxPayload {
            size: total,
            limit: limits.max_payload,
        }
        .into());
    }
    let Some((body, consumed)) = read_payload(buf, line.newline + 1, total)? else {
        return Ok(None);
    };
    let (headers, payload) = match header_size {
        Some(header) => {
            let (headers, payload) = body.split_at(header.min(body.len()));
            (Some(headers), payload)
        }
        None => (None, body),
    };
    Ok(Some((
        HubOp::Msg(LeafMsg {
            subject,
            reply,
            queues,
            headers,
            payload,
        }),
        consumed,
    )))
}
