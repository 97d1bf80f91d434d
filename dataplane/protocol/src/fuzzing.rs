//! The decoding logic the `decode` and `nats_decode` fuzz targets run, shared
//! with the test that replays the fuzz corpora. Not part of the API.

use bytes::BufMut;

use crate::encode;
use crate::nats::{
    check_blipmq_subject, check_subject, decode_client_op, ClientOp, ConnectOptions, NatsError,
    NatsLimits, SubjectRole,
};
use crate::{
    decode_frame, filter_matches, validate_filter, validate_queue, validate_subject, Connect, Info,
    Op, Request, ServerFrame,
};

/// A small frame limit, so that the fuzzer reaches the 413 rule easily.
pub const FUZZ_MAX_LEN: u32 = 4096 + 1024;
/// The default `max_topic_length`.
pub const FUZZ_MAX_TOPIC: usize = 255;

/// Decodes frames from `data` until it runs out or a frame is refused, and
/// parses each one in both directions. Panics only on a broken invariant:
/// a frame that parses must re-encode to exactly the bytes it came from.
pub fn fuzz_decode(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((frame, consumed))) = decode_frame(rest, FUZZ_MAX_LEN) {
        assert!(consumed >= 8 && consumed <= rest.len());
        assert_eq!(consumed, 8 + frame.topic.len() + frame.body.len());
        let wire = &rest[..consumed];
        let _ = validate_subject(frame.topic, FUZZ_MAX_TOPIC);
        if validate_filter(frame.topic, FUZZ_MAX_TOPIC).is_ok() {
            let _ = filter_matches(frame.topic, b"a.b.c");
        }

        if let Ok(request) = Request::parse(frame) {
            let mut out = Vec::with_capacity(consumed);
            match request {
                Request::Connect { json } => {
                    let _ = Connect::parse(json);
                    encode::put_connect(&mut out, json);
                }
                Request::Publish {
                    subject,
                    reply,
                    payload,
                    ack,
                } => {
                    if let Some(reply) = reply {
                        let _ = validate_subject(reply, FUZZ_MAX_TOPIC);
                    }
                    encode::put_publish(&mut out, subject, reply, payload, ack);
                }
                Request::Subscribe {
                    filter,
                    sid,
                    queue,
                    ack,
                } => {
                    if let Some(queue) = queue {
                        let _ = validate_queue(queue, FUZZ_MAX_TOPIC);
                    }
                    encode::put_subscribe(&mut out, filter, sid, queue, ack);
                }
                Request::Unsubscribe { sid, max_msgs, ack } => {
                    encode::put_unsubscribe(&mut out, sid, max_msgs, ack);
                    if max_msgs == 0 && frame.body.len() == 8 {
                        // An explicit max_msgs of 0 re-encodes without it.
                        out.put_u32(0);
                        let len = (out.len() - 4) as u32;
                        out[..4].copy_from_slice(&len.to_be_bytes());
                    }
                }
                Request::Ping => encode::put_ping(&mut out),
                Request::Pong => encode::put_pong(&mut out),
                Request::Disconnect => encode::put_disconnect(&mut out, ""),
            }
            assert_eq!(out, wire, "{request:?} does not re-encode to its bytes");
        }

        if let Ok(server) = ServerFrame::parse(frame) {
            let mut out = Vec::with_capacity(consumed);
            match server {
                ServerFrame::Info { json } => {
                    let _ = serde_json::from_slice::<Info>(json);
                    encode::put_info(&mut out, json);
                }
                ServerFrame::Ok => encode::put_ok(&mut out),
                ServerFrame::Error { code, reason } => {
                    encode::put_header(&mut out, Op::Error, 0, b"", 2 + reason.len());
                    out.put_u16(code);
                    out.put_slice(reason);
                }
                ServerFrame::Message {
                    subject,
                    sid,
                    reply,
                    payload,
                } => {
                    if let Some(reply) = reply {
                        let _ = validate_subject(reply, FUZZ_MAX_TOPIC);
                    }
                    assert_eq!(encode::message_len(subject, reply, payload.len()), consumed);
                    encode::put_message(&mut out, subject, sid, reply, payload);
                }
                ServerFrame::Ping => encode::put_ping(&mut out),
                ServerFrame::Pong => encode::put_pong(&mut out),
                ServerFrame::Disconnect { reason } => {
                    encode::put_header(&mut out, Op::Disconnect, 0, b"", reason.len());
                    out.put_slice(reason);
                }
            }
            assert_eq!(out, wire, "{server:?} does not re-encode to its bytes");
        }
        rest = &rest[consumed..];
    }
}

/// Small NATS limits, so that the fuzzer reaches both easily.
pub const FUZZ_NATS_LIMITS: NatsLimits = NatsLimits {
    max_control_line: 256,
    max_payload: 1024,
};

/// What decoding NATS input from the start of a buffer comes to: the bytes
/// each op consumed, and the error that stopped it, if any.
fn nats_decode_all(data: &[u8]) -> (Vec<usize>, Option<NatsError>) {
    let mut rest = data;
    let mut consumed_per_op = Vec::new();
    loop {
        match decode_client_op(rest, &FUZZ_NATS_LIMITS) {
            Ok(Some((op, consumed))) => {
                assert!(consumed > 0 && consumed <= rest.len());
                check_nats_op(op, consumed);
                consumed_per_op.push(consumed);
                rest = &rest[consumed..];
            }
            Ok(None) => return (consumed_per_op, None),
            Err(error) => return (consumed_per_op, Some(error)),
        }
    }
}

/// The same, feeding `data` to a buffer in two reads split at `cut`.
fn nats_decode_in_two_reads(data: &[u8], cut: usize) -> (Vec<usize>, Option<NatsError>) {
    let (first, second) = data.split_at(cut.min(data.len()));
    let mut buffer = Vec::with_capacity(data.len());
    let mut consumed_per_op = Vec::new();
    for read in [first, second] {
        buffer.extend_from_slice(read);
        loop {
            match decode_client_op(&buffer, &FUZZ_NATS_LIMITS) {
                Ok(Some((_, consumed))) => {
                    consumed_per_op.push(consumed);
                    buffer.drain(..consumed);
                }
                Ok(None) => break,
                Err(error) => return (consumed_per_op, Some(error)),
            }
        }
    }
    (consumed_per_op, None)
}

/// Writes `op` the plain way a client would.
fn put_canonical_nats_op(out: &mut Vec<u8>, op: ClientOp<'_>) {
    let mut line = |parts: &[&[u8]]| {
        out.extend_from_slice(parts.join(&b' ').as_slice());
        out.extend_from_slice(b"\r\n");
    };
    match op {
        ClientOp::Connect { json } => line(&[b"CONNECT", json]),
        ClientOp::Pub {
            subject,
            reply,
            payload,
        } => {
            let size = payload.len().to_string();
            match reply {
                Some(reply) => line(&[b"PUB", subject, reply, size.as_bytes()]),
                None => line(&[b"PUB", subject, size.as_bytes()]),
            }
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\r\n");
        }
        ClientOp::Hpub {
            subject,
            reply,
            headers,
            payload,
        } => {
            let header_size = headers.len().to_string();
            let total_size = (headers.len() + payload.len()).to_string();
            let sizes = [header_size.as_bytes(), total_size.as_bytes()];
            match reply {
                Some(reply) => line(&[b"HPUB", subject, reply, sizes[0], sizes[1]]),
                None => line(&[b"HPUB", subject, sizes[0], sizes[1]]),
            }
            out.extend_from_slice(headers);
            out.extend_from_slice(payload);
            out.extend_from_slice(b"\r\n");
        }
        ClientOp::Sub {
            subject,
            queue,
            sid,
        } => match queue {
            Some(queue) => line(&[b"SUB", subject, queue, sid]),
            None => line(&[b"SUB", subject, sid]),
        },
        ClientOp::Unsub { sid, max_msgs: 0 } => line(&[b"UNSUB", sid]),
        ClientOp::Unsub { sid, max_msgs } => {
            line(&[b"UNSUB", sid, max_msgs.to_string().as_bytes()])
        }
        ClientOp::Ping => line(&[b"PING"]),
        ClientOp::Pong => line(&[b"PONG"]),
    }
}

/// Runs the subject and CONNECT checks on what `op` carries, and checks
/// that its plain re-encoding decodes to the same op.
fn check_nats_op(op: ClientOp<'_>, consumed: usize) {
    let subjects: [(SubjectRole, Option<&[u8]>); 2] = match op {
        ClientOp::Connect { json } => {
            if let Ok(options) = ConnectOptions::parse(json) {
                let _ = options.check(true);
            }
            [(SubjectRole::Publish, None), (SubjectRole::Reply, None)]
        }
        ClientOp::Pub { subject, reply, .. } | ClientOp::Hpub { subject, reply, .. } => [
            (SubjectRole::Publish, Some(subject)),
            (SubjectRole::Reply, reply),
        ],
        ClientOp::Sub { subject, queue, .. } => [
            (SubjectRole::Filter, Some(subject)),
            (SubjectRole::Queue, queue),
        ],
        ClientOp::Unsub { .. } | ClientOp::Ping | ClientOp::Pong => {
            [(SubjectRole::Publish, None), (SubjectRole::Reply, None)]
        }
    };
    for (role, subject) in subjects {
        if let Some(subject) = subject {
            for pedantic in [false, true] {
                let _ = check_subject(role, subject, pedantic);
            }
            let _ = check_blipmq_subject(role, subject, FUZZ_MAX_TOPIC);
        }
    }

    let mut canonical = Vec::with_capacity(consumed);
    put_canonical_nats_op(&mut canonical, op);
    // The plain form's arguments are never longer than the input's: single
    // blanks, sizes without leading zeros, no ignored bytes after PING.
    match decode_client_op(&canonical, &FUZZ_NATS_LIMITS) {
        Ok(Some((again, used))) => {
            assert_eq!(again, op, "{op:?} does not survive re-encoding");
            assert_eq!(used, canonical.len());
        }
        other => panic!("{op:?} re-encodes to {canonical:?}, which gives {other:?}"),
    }
}

/// Decodes NATS client ops from `data` until it runs out or an op is
/// refused. Panics only on a broken invariant: an op over-consumes, does
/// not survive a plain re-encoding, or two reads split at any point give
/// other ops or another error than one read.
pub fn fuzz_nats_decode(data: &[u8]) {
    let whole = nats_decode_all(data);
    // The first byte picks the split point, so the fuzzer explores splits.
    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    assert_eq!(nats_decode_in_two_reads(data, cut), whole, "split at {cut}");
}
