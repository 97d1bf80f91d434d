//! Test-only pieces of a NATS client, written independently of the codec:
//! an owned model of client ops, an encoder that writes them as a client
//! would (in several styles), a naive parser of server output, and a caller
//! that feeds the decoder in chunks.

use super::{decode_client_op, ClientOp, NatsError, NatsLimits};

/// A client op, owned: the reference model the decoder is compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Connect(Vec<u8>),
    Pub {
        subject: Vec<u8>,
        reply: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    Hpub {
        subject: Vec<u8>,
        reply: Option<Vec<u8>>,
        headers: Vec<u8>,
        payload: Vec<u8>,
    },
    Sub {
        subject: Vec<u8>,
        queue: Option<Vec<u8>>,
        sid: Vec<u8>,
    },
    Unsub {
        sid: Vec<u8>,
        max_msgs: u32,
    },
    Ping,
    Pong,
}

impl Op {
    pub fn from_decoded(op: &ClientOp<'_>) -> Op {
        let owned = |bytes: &[u8]| bytes.to_vec();
        match *op {
            ClientOp::Connect { json } => Op::Connect(owned(json)),
            ClientOp::Pub {
                subject,
                reply,
                payload,
            } => Op::Pub {
                subject: owned(subject),
                reply: reply.map(owned),
                payload: owned(payload),
            },
            ClientOp::Hpub {
                subject,
                reply,
                headers,
                payload,
            } => Op::Hpub {
                subject: owned(subject),
                reply: reply.map(owned),
                headers: owned(headers),
                payload: owned(payload),
            },
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => Op::Sub {
                subject: owned(subject),
                queue: queue.map(owned),
                sid: owned(sid),
            },
            ClientOp::Unsub { sid, max_msgs } => Op::Unsub {
                sid: owned(sid),
                max_msgs,
            },
            ClientOp::Ping => Op::Ping,
            ClientOp::Pong => Op::Pong,
        }
    }
}

/// How a client writes its control lines; the decoder must not care.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub lowercase: bool,
    /// Between the op name and each argument.
    pub blank: &'static str,
    /// `"\r\n"`, or `"\n"` as a hand-typed (telnet) client may send.
    pub line_end: &'static str,
}

pub const PLAIN: Style = Style {
    lowercase: false,
    blank: " ",
    line_end: "\r\n",
};

/// Writes `op` as a client would.
pub fn encode_op(out: &mut Vec<u8>, op: &Op, style: Style) {
    let mut name = |text: &str| {
        if style.lowercase {
            out.extend_from_slice(text.to_ascii_lowercase().as_bytes());
        } else {
            out.extend_from_slice(text.as_bytes());
        }
    };
    match op {
        Op::Connect(_) => name("CONNECT"),
        Op::Pub { .. } => name("PUB"),
        Op::Hpub { .. } => name("HPUB"),
        Op::Sub { .. } => name("SUB"),
        Op::Unsub { .. } => name("UNSUB"),
        Op::Ping => name("PING"),
        Op::Pong => name("PONG"),
    }
    let mut args: Vec<Vec<u8>> = Vec::new();
    match op {
        Op::Connect(json) => args.push(json.clone()),
        Op::Pub {
            subject,
            reply,
            payload,
        } => {
            args.push(subject.clone());
            args.extend(reply.clone());
            args.push(payload.len().to_string().into_bytes());
        }
        Op::Hpub {
            subject,
            reply,
            headers,
            payload,
        } => {
            args.push(subject.clone());
            args.extend(reply.clone());
            args.push(headers.len().to_string().into_bytes());
            args.push((headers.len() + payload.len()).to_string().into_bytes());
        }
        Op::Sub {
            subject,
            queue,
            sid,
        } => {
            args.push(subject.clone());
            args.extend(queue.clone());
            args.push(sid.clone());
        }
        Op::Unsub { sid, max_msgs } => {
            args.push(sid.clone());
            if *max_msgs != 0 {
                args.push(max_msgs.to_string().into_bytes());
            }
        }
        Op::Ping | Op::Pong => {}
    }
    for arg in args {
        out.extend_from_slice(style.blank.as_bytes());
        out.extend_from_slice(&arg);
    }
    out.extend_from_slice(style.line_end.as_bytes());
    match op {
        Op::Pub { payload, .. } => {
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\r\n");
        }
        Op::Hpub {
            headers, payload, ..
        } => {
            out.extend_from_slice(headers);
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\r\n");
        }
        _ => {}
    }
}

pub fn encode_ops(ops: &[Op], style: Style) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        encode_op(&mut out, op, style);
    }
    out
}

/// What a caller ends up with after feeding all its chunks.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub ops: Vec<Op>,
    pub error: Option<NatsError>,
    /// Bytes left in the buffer, undecoded, when no error occurred.
    pub leftover: usize,
}

/// Feeds `chunks` one after the other into a buffer, as a read loop would,
/// decoding all it can after each and dropping what was consumed.
pub fn decode_chunks(chunks: &[&[u8]], limits: &NatsLimits) -> Outcome {
    let mut buffer = Vec::new();
    let mut ops = Vec::new();
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            match decode_client_op(&buffer, limits) {
                Ok(Some((op, consumed))) => {
                    assert!(consumed > 0 && consumed <= buffer.len());
                    ops.push(Op::from_decoded(&op));
                    buffer.drain(..consumed);
                }
                Ok(None) => break,
                Err(error) => {
                    return Outcome {
                        ops,
                        error: Some(error),
                        leftover: 0,
                    }
                }
            }
        }
    }
    Outcome {
        ops,
        error: None,
        leftover: buffer.len(),
    }
}

pub fn decode_whole(stream: &[u8], limits: &NatsLimits) -> Outcome {
    decode_chunks(&[stream], limits)
}

/// A server op as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    Info(serde_json::Value),
    Msg {
        subject: Vec<u8>,
        sid: Vec<u8>,
        reply: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    Hmsg {
        subject: Vec<u8>,
        sid: Vec<u8>,
        reply: Option<Vec<u8>>,
        headers: Vec<u8>,
        payload: Vec<u8>,
    },
    Ok,
    Err(String),
    Ping,
    Pong,
}

fn take<'a>(rest: &mut &'a [u8], len: usize) -> Result<&'a [u8], String> {
    if rest.len() < len {
        return Err(format!("wanted {len} bytes, {} left", rest.len()));
    }
    let (head, tail) = rest.split_at(len);
    *rest = tail;
    Ok(head)
}

fn number(token: &[u8]) -> Result<usize, String> {
    std::str::from_utf8(token)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("not a number: {token:?}"))
}

/// Parses a whole stream of server ops, strictly: CRLF line ends, single
/// spaces, upper-case names. An error for anything else or a partial op.
pub fn parse_server_stream(stream: &[u8]) -> Result<Vec<ServerOp>, String> {
    let mut rest = stream;
    let mut ops = Vec::new();
    while !rest.is_empty() {
        let line_len = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("no CRLF")?;
        let line = take(&mut rest, line_len)?;
        take(&mut rest, 2)?;
        let words: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let op = match words.as_slice() {
            [b"+OK"] => ServerOp::Ok,
            [b"PING"] => ServerOp::Ping,
            [b"PONG"] => ServerOp::Pong,
            [b"-ERR", ..] => {
                let text = std::str::from_utf8(&line[5..]).map_err(|e| e.to_string())?;
                let text = text
                    .strip_prefix('\'')
                    .and_then(|t| t.strip_suffix('\''))
                    .ok_or("-ERR text not quoted")?;
                ServerOp::Err(text.to_owned())
            }
            [b"INFO", json, b""] => {
                ServerOp::Info(serde_json::from_slice(json).map_err(|e| e.to_string())?)
            }
            [b"MSG", subject, sid, args @ ..] => {
                let (reply, size) = match args {
                    [size] => (None, size),
                    [reply, size] => (Some(reply.to_vec()), size),
                    _ => return Err("MSG arguments".into()),
                };
                let payload = take(&mut rest, number(size)?)?.to_vec();
                if take(&mut rest, 2)? != b"\r\n" {
                    return Err("MSG payload without CRLF".into());
                }
                ServerOp::Msg {
                    subject: subject.to_vec(),
                    sid: sid.to_vec(),
                    reply,
                    payload,
                }
            }
            [b"HMSG", subject, sid, args @ ..] => {
                let (reply, header_size, total_size) = match args {
                    [h, t] => (None, h, t),
                    [reply, h, t] => (Some(reply.to_vec()), h, t),
                    _ => return Err("HMSG arguments".into()),
                };
                let header_size = number(header_size)?;
                let total_size = number(total_size)?;
                let headers = take(&mut rest, header_size)?.to_vec();
                let payload_len = total_size.checked_sub(header_size).ok_or("sizes")?;
                let payload = take(&mut rest, payload_len)?.to_vec();
                if take(&mut rest, 2)? != b"\r\n" {
                    return Err("HMSG payload without CRLF".into());
                }
                ServerOp::Hmsg {
                    subject: subject.to_vec(),
                    sid: sid.to_vec(),
                    reply,
                    headers,
                    payload,
                }
            }
            _ => return Err(format!("unknown line {:?}", String::from_utf8_lossy(line))),
        };
        ops.push(op);
    }
    Ok(ops)
}
