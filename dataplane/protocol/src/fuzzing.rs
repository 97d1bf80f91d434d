//! The decoding logic the `decode` fuzz target runs, shared with the test that
//! replays the fuzz corpus. Not part of the API.

use bytes::BufMut;

use crate::encode;
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
