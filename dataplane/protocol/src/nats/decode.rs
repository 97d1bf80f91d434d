//! Decoding client → server ops in place from a byte buffer.
//!
//! Stateless: each call parses the buffer from its start, so a caller that
//! got `Ok(None)` appends more bytes and calls again. Control lines are
//! bounded by [`NatsLimits::max_control_line`], so re-parsing a partial line
//! costs little.

use super::error::NatsError;
use super::NatsLimits;

/// One client op, borrowed from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOp<'a> {
    /// `CONNECT <json>`: the JSON is parsed by [`ConnectOptions::parse`].
    ///
    /// [`ConnectOptions::parse`]: super::ConnectOptions::parse
    Connect {
        json: &'a [u8],
    },
    /// `PUB <subject> [reply] <#bytes>\r\n<payload>\r\n`.
    Pub {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        payload: &'a [u8],
    },
    /// `HPUB <subject> [reply] <#header bytes> <#total bytes>\r\n<headers><payload>\r\n`.
    Hpub {
        subject: &'a [u8],
        reply: Option<&'a [u8]>,
        headers: &'a [u8],
        payload: &'a [u8],
    },
    /// `SUB <subject> [queue] <sid>`. The sid is an opaque token to
    /// nats-server (clients send decimals), so it stays bytes.
    Sub {
        subject: &'a [u8],
        queue: Option<&'a [u8]>,
        sid: &'a [u8],
    },
    /// `UNSUB <sid> [max_msgs]`. `max_msgs` is 0 when absent or not a
    /// decimal of at most 9 digits: nats-server then removes the
    /// subscription at once, as it does for 0.
    Unsub {
        sid: &'a [u8],
        max_msgs: u32,
    },
    Ping,
    Pong,
}

/// The ops a client may send, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpName {
    Connect,
    Pub,
    Hpub,
    Sub,
    Unsub,
    Ping,
    Pong,
}

impl OpName {
    fn label(self) -> &'static str {
        match self {
            OpName::Connect => "CONNECT",
            OpName::Pub => "PUB",
            OpName::Hpub => "HPUB",
            OpName::Sub => "SUB",
            OpName::Unsub => "UNSUB",
            OpName::Ping => "PING",
            OpName::Pong => "PONG",
        }
    }

    fn text(self) -> &'static [u8] {
        self.label().as_bytes()
    }
}

pub(super) fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

/// Which op `buf` starts with, case-insensitively. `Ok(None)` until enough
/// bytes arrived to tell; an error at the first byte that fits no op name,
/// as nats-server's byte-by-byte state machine does.
fn read_op_name(buf: &[u8]) -> Result<Option<OpName>, NatsError> {
    let Some(first) = buf.first() else {
        return Ok(None);
    };
    let name = match first.to_ascii_uppercase() {
        b'C' => OpName::Connect,
        b'H' => OpName::Hpub,
        b'S' => OpName::Sub,
        b'U' => OpName::Unsub,
        b'P' => match buf.get(1).map(u8::to_ascii_uppercase) {
            None => return Ok(None),
            Some(b'U') => OpName::Pub,
            Some(b'I') => OpName::Ping,
            Some(b'O') => OpName::Pong,
            Some(_) => return Err(NatsError::UnknownOperation),
        },
        _ => return Err(NatsError::UnknownOperation),
    };
    for (expected, got) in name.text().iter().zip(buf) {
        if !got.eq_ignore_ascii_case(expected) {
            return Err(NatsError::UnknownOperation);
        }
    }
    if buf.len() < name.text().len() {
        return Ok(None);
    }
    Ok(Some(name))
}

/// Where the arguments start: after the blanks that follow the op name.
/// `Ok(None)` while only blanks have arrived.
fn find_args_start(
    buf: &[u8],
    name: OpName,
    limits: &NatsLimits,
) -> Result<Option<usize>, NatsError> {
    let name_end = name.text().len();
    let blanks_from = match name {
        // PING/PONG ignore whatever follows up to the newline.
        OpName::Ping | OpName::Pong => return Ok(Some(name_end)),
        // CONNECT needs no blank before its JSON.
        OpName::Connect => name_end,
        OpName::Pub | OpName::Hpub | OpName::Sub | OpName::Unsub => match buf.get(name_end) {
            None => return Ok(None),
            Some(&byte) if is_blank(byte) => name_end + 1,
            Some(_) => return Err(NatsError::UnknownOperation),
        },
    };
    skip_blanks(buf, blanks_from, limits)
}

/// Where the first byte after the run of blanks from `blanks_from` is;
/// `Ok(None)` while only blanks have arrived.
pub(super) fn skip_blanks(
    buf: &[u8],
    blanks_from: usize,
    limits: &NatsLimits,
) -> Result<Option<usize>, NatsError> {
    // nats-server skips any run of blanks; a stateless decoder must bound
    // what it asks the caller to keep, so a run longer than a whole control
    // line is refused like an over-long line, whether or not more follows
    // (which keeps the answer the same however the input is split).
    let limit = limits.max_control_line;
    let rest = buf.get(blanks_from..).unwrap_or_default();
    let window = rest.get(..=limit).unwrap_or(rest);
    match window.iter().position(|&b| !is_blank(b)) {
        Some(offset) => Ok(Some(blanks_from + offset)),
        None if rest.len() > limit => Err(NatsError::MaxControlLine { limit }),
        None => Ok(None),
    }
}

/// A complete control line: its arguments and the index of its `\n`.
pub(super) struct Line<'a> {
    pub(super) args: &'a [u8],
    pub(super) newline: usize,
}

/// Finds the `\n` that ends the line whose arguments start at `args_start`.
///
/// As parser.go does: the first argument byte is taken as is (even a `\r` or
/// `\n`) when `first_byte_verbatim` (every op but PING/PONG), a `\r`
/// anywhere later in the line drops the last byte before the `\n`, and the
/// arguments may be at most `max_control_line` bytes, which is also checked
/// on a partial line.
pub(super) fn read_line<'a>(
    buf: &'a [u8],
    first_byte_verbatim: bool,
    args_start: usize,
    limits: &NatsLimits,
) -> Result<Option<Line<'a>>, NatsError> {
    let limit = limits.max_control_line;
    let scan_from = args_start + usize::from(first_byte_verbatim);
    // Arguments of limit + 2 bytes without a `\n` are too long whatever
    // comes next, so the scan never runs past that.
    let scan_end = buf
        .len()
        .min(args_start.saturating_add(limit).saturating_add(2));
    let window = buf.get(scan_from..scan_end).unwrap_or_default();
    let newline = memchr::memchr(b'\n', window).map(|offset| scan_from + offset);
    // The `\r` of a CRLF sits right before the `\n`; only a bare `\n` line
    // (or a partial one) needs a scan for a `\r` elsewhere.
    let searched = match newline {
        Some(newline) => buf.get(scan_from..newline).unwrap_or_default(),
        None => window,
    };
    let saw_cr = searched.last() == Some(&b'\r') || searched.contains(&b'\r');
    let too_long = NatsError::MaxControlLine { limit };
    let drop = usize::from(saw_cr);
    let Some(newline) = newline else {
        let partial_len = buf.len().saturating_sub(args_start).saturating_sub(drop);
        return if partial_len > limit {
            Err(too_long)
        } else {
            Ok(None)
        };
    };
    let args = buf
        .get(args_start..newline.saturating_sub(drop).max(args_start))
        .unwrap_or_default();
    if args.len() > limit {
        return Err(too_long);
    }
    Ok(Some(Line { args, newline }))
}

/// Splits `args` into at most `N` tokens at runs of `separators`; `None`
/// when there are more. Returns the tokens and how many there are.
pub(super) fn split_args<const N: usize>(
    args: &[u8],
    separators: impl Fn(u8) -> bool,
) -> Option<([&[u8]; N], usize)> {
    let mut tokens: [&[u8]; N] = [&[]; N];
    let mut count = 0;
    for token in args.split(|&b| separators(b)).filter(|t| !t.is_empty()) {
        *tokens.get_mut(count)? = token;
        count += 1;
    }
    Some((tokens, count))
}

/// SUB and UNSUB split at `\r` and `\n` too (client.go's `splitArg`).
pub(super) fn is_sub_separator(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

/// A size as nats-server's `parseSize` reads it: 1 to 9 ASCII digits.
pub(super) fn parse_size(token: &[u8]) -> Option<usize> {
    if token.is_empty() || token.len() > 9 {
        return None;
    }
    token.iter().try_fold(0usize, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + usize::from(b - b'0'))
    })
}

/// Checks the `\r\n` after a payload of `size` bytes starting at
/// `body_start`, and returns the payload and the bytes consumed.
pub(super) fn read_payload(
    buf: &[u8],
    body_start: usize,
    size: usize,
) -> Result<Option<(&[u8], usize)>, NatsError> {
    let Some(body_end) = body_start.checked_add(size) else {
        return Ok(None);
    };
    // Each terminator byte is checked as soon as it is there, so a bad one
    // is refused without waiting for the next read.
    match buf.get(body_end) {
        None => return Ok(None),
        Some(b'\r') => {}
        Some(_) => return Err(NatsError::MissingPayloadCrlf),
    }
    match buf.get(body_end + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(NatsError::MissingPayloadCrlf),
    }
    match buf.get(body_start..body_end) {
        Some(payload) => Ok(Some((payload, body_end + 2))),
        None => Ok(None),
    }
}

type Decoded<'a> = Result<Option<(ClientOp<'a>, usize)>, NatsError>;

fn decode_pub<'a>(buf: &'a [u8], line: Line<'a>, limits: &NatsLimits) -> Decoded<'a> {
    let op = OpName::Pub.label();
    let (subject, reply, size) = match split_args::<3>(line.args, is_blank) {
        Some(([subject, size, _], 2)) => (subject, None, size),
        Some(([subject, reply, size], 3)) => (subject, Some(reply), size),
        _ => return Err(NatsError::ArgumentCount { op }),
    };
    let size = parse_size(size).ok_or(NatsError::BadSize { op })?;
    if size > limits.max_payload {
        return Err(NatsError::MaxPayload {
            size,
            limit: limits.max_payload,
        });
    }
    Ok(
        read_payload(buf, line.newline + 1, size)?.map(|(payload, consumed)| {
            (
                ClientOp::Pub {
                    subject,
                    reply,
                    payload,
                },
                consumed,
            )
        }),
    )
}

fn decode_hpub<'a>(buf: &'a [u8], line: Line<'a>, limits: &NatsLimits) -> Decoded<'a> {
    let op = OpName::Hpub.label();
    let (subject, reply, header_size, total_size) = match split_args::<4>(line.args, is_blank) {
        Some(([subject, header, total, _], 3)) => (subject, None, header, total),
        Some(([subject, reply, header, total], 4)) => (subject, Some(reply), header, total),
        _ => return Err(NatsError::ArgumentCount { op }),
    };
    let header_size = parse_size(header_size).ok_or(NatsError::BadHeaderSize)?;
    let total_size = parse_size(total_size).ok_or(NatsError::BadSize { op })?;
    if header_size > total_size {
        return Err(NatsError::HeaderLargerThanTotal);
    }
    if total_size > limits.max_payload {
        return Err(NatsError::MaxPayload {
            size: total_size,
            limit: limits.max_payload,
        });
    }
    let Some((body, consumed)) = read_payload(buf, line.newline + 1, total_size)? else {
        return Ok(None);
    };
    let (headers, payload) = body.split_at(header_size.min(body.len()));
    Ok(Some((
        ClientOp::Hpub {
            subject,
            reply,
            headers,
            payload,
        },
        consumed,
    )))
}

fn decode_sub<'a>(line: &Line<'a>) -> Result<ClientOp<'a>, NatsError> {
    match split_args::<3>(line.args, is_sub_separator) {
        Some(([subject, sid, _], 2)) => Ok(ClientOp::Sub {
            subject,
            queue: None,
            sid,
        }),
        Some(([subject, queue, sid], 3)) => Ok(ClientOp::Sub {
            subject,
            queue: Some(queue),
            sid,
        }),
        _ => Err(NatsError::ArgumentCount {
            op: OpName::Sub.label(),
        }),
    }
}

fn decode_unsub<'a>(line: &Line<'a>) -> Result<ClientOp<'a>, NatsError> {
    match split_args::<2>(line.args, is_sub_separator) {
        Some(([sid, _], 1)) => Ok(ClientOp::Unsub { sid, max_msgs: 0 }),
        Some(([sid, max], 2)) => Ok(ClientOp::Unsub {
            sid,
            // At most 9 digits, so it fits.
            max_msgs: parse_size(max)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
        }),
        _ => Err(NatsError::ArgumentCount {
            op: OpName::Unsub.label(),
        }),
    }
}

/// Decodes the first client op of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of an op, and
/// `Ok(Some((op, consumed)))` otherwise; `op` borrows `buf`. A PUB/HPUB over
/// `max_payload` is refused as soon as its control line is complete. Errors
/// are final: the caller sends [`NatsError::err_text`] if any and closes.
pub fn decode_client_op<'a>(buf: &'a [u8], limits: &NatsLimits) -> Decoded<'a> {
    let Some(name) = read_op_name(buf)? else {
        return Ok(None);
    };
    let Some(args_start) = find_args_start(buf, name, limits)? else {
        return Ok(None);
    };
    let verbatim = !matches!(name, OpName::Ping | OpName::Pong);
    let Some(line) = read_line(buf, verbatim, args_start, limits)? else {
        return Ok(None);
    };
    let line_consumed = line.newline + 1;
    match name {
        OpName::Pub => decode_pub(buf, line, limits),
        OpName::Hpub => decode_hpub(buf, line, limits),
        OpName::Sub => Ok(Some((decode_sub(&line)?, line_consumed))),
        OpName::Unsub => Ok(Some((decode_unsub(&line)?, line_consumed))),
        OpName::Connect => Ok(Some((ClientOp::Connect { json: line.args }, line_consumed))),
        OpName::Ping => Ok(Some((ClientOp::Ping, line_consumed))),
        OpName::Pong => Ok(Some((ClientOp::Pong, line_consumed))),
    }
}
