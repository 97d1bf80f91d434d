//! Framing and per-op checks against `shared/docs/protocol.md`.

use blipmq_protocol::encode;
use blipmq_protocol::{
    decode_frame, flags, Connect, ErrorCode, FrameError, Op, RawFrame, Request, ServerFrame,
    FRAME_ALLOWANCE,
};

const MAX: u32 = 4096 + FRAME_ALLOWANCE;

const ALL_OPS: [Op; 11] = [
    Op::Connect,
    Op::Publish,
    Op::Subscribe,
    Op::Unsubscribe,
    Op::Ping,
    Op::Pong,
    Op::Disconnect,
    Op::Message,
    Op::Ok,
    Op::Error,
    Op::Info,
];

/// A frame built by hand, header and all, independently of `encode`.
fn raw(op: u8, flag_bits: u8, topic: &[u8], body: &[u8]) -> Vec<u8> {
    let len = 4 + topic.len() + body.len();
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(op);
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.push(flag_bits);
    out.extend_from_slice(topic);
    out.extend_from_slice(body);
    out
}

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .filter(|t| *t != "|")
        .map(|t| u8::from_str_radix(t, 16).unwrap())
        .collect()
}

/// Decodes exactly one whole frame from `bytes`.
fn one(bytes: &[u8]) -> RawFrame<'_> {
    let (frame, consumed) = decode_frame(bytes, MAX)
        .expect("framing")
        .expect("complete");
    assert_eq!(consumed, bytes.len());
    frame
}

fn request(bytes: &[u8]) -> Result<Request<'_>, FrameError> {
    Request::parse(one(bytes))
}

fn server(bytes: &[u8]) -> Result<ServerFrame<'_>, FrameError> {
    ServerFrame::parse(one(bytes))
}

fn assert_malformed<T: std::fmt::Debug>(result: Result<T, FrameError>, what: &str) {
    match result {
        Err(e @ FrameError::Malformed(_)) => {
            assert_eq!(e.code(), ErrorCode::BadRequest, "{what}");
            assert_eq!(e.code().as_u16(), 400, "{what}");
        }
        other => panic!("{what}: expected Malformed, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The example at the end of protocol.md, byte for byte.

const EX_SUBSCRIBE: &str = "00 00 00 0b | 03 | 00 03 | 00 | 61 2e 2a | 00 00 00 07";
const EX_PUBLISH: &str = "00 00 00 09 | 02 | 00 03 | 00 | 61 2e 62 | 68 69";
const EX_MESSAGE: &str = "00 00 00 0d | 10 | 00 03 | 00 | 61 2e 62 | 00 00 00 07 68 69";

#[test]
fn example_encodes_byte_for_byte() {
    let mut out = Vec::new();
    encode::put_subscribe(&mut out, b"a.*", 7, None, false);
    assert_eq!(out, hex(EX_SUBSCRIBE));

    let mut out = Vec::new();
    encode::put_publish(&mut out, b"a.b", None, b"hi", false);
    assert_eq!(out, hex(EX_PUBLISH));

    let mut out = Vec::new();
    encode::put_message(&mut out, b"a.b", 7, None, b"hi");
    assert_eq!(out, hex(EX_MESSAGE));
    assert_eq!(encode::message_len(b"a.b", None, 2), out.len());

    // The head + payload split writes the same bytes.
    let mut out = Vec::new();
    encode::put_message_head(&mut out, b"a.b", 7, None, 2);
    out.extend_from_slice(b"hi");
    assert_eq!(out, hex(EX_MESSAGE));
}

#[test]
fn example_decodes() {
    let sub = hex(EX_SUBSCRIBE);
    assert_eq!(
        request(&sub).unwrap(),
        Request::Subscribe {
            filter: b"a.*",
            sid: 7,
            queue: None,
            ack: false
        }
    );
    let publish = hex(EX_PUBLISH);
    assert_eq!(
        request(&publish).unwrap(),
        Request::Publish {
            subject: b"a.b",
            reply: None,
            payload: b"hi",
            ack: false
        }
    );
    let message = hex(EX_MESSAGE);
    assert_eq!(
        server(&message).unwrap(),
        ServerFrame::Message {
            subject: b"a.b",
            sid: 7,
            reply: None,
            payload: b"hi"
        }
    );
    // The raw layer too.
    let frame = one(&message);
    assert_eq!(
        frame,
        RawFrame {
            op: 0x10,
            flags: 0,
            topic: b"a.b",
            body: &[0, 0, 0, 7, b'h', b'i']
        }
    );
}

#[test]
fn example_back_to_back() {
    let mut buf = hex(EX_SUBSCRIBE);
    buf.extend(hex(EX_PUBLISH));
    let (f1, c1) = decode_frame(&buf, MAX).unwrap().unwrap();
    assert_eq!(c1, 15);
    assert!(matches!(
        Request::parse(f1),
        Ok(Request::Subscribe { sid: 7, .. })
    ));
    let (f2, c2) = decode_frame(&buf[c1..], MAX).unwrap().unwrap();
    assert_eq!(c2, 13);
    assert!(matches!(
        Request::parse(f2),
        Ok(Request::Publish { payload: b"hi", .. })
    ));
    assert_eq!(c1 + c2, buf.len());
}

// ---------------------------------------------------------------------------
// Framing errors.

#[test]
fn len_below_four_is_malformed() {
    for len in 0u32..4 {
        let mut buf = len.to_be_bytes().to_vec();
        // Refused as soon as the length is there, with or without more bytes.
        assert_malformed(decode_frame(&buf, MAX), &format!("len {len}, 4 bytes"));
        buf.extend_from_slice(&[0x05, 0, 0, 0, 0, 0, 0, 0]);
        assert_malformed(decode_frame(&buf, MAX), &format!("len {len}, 12 bytes"));
    }
}

#[test]
fn topic_longer_than_frame_is_malformed() {
    // len 4 (header only) but topic_len 1.
    let buf = [0, 0, 0, 4, 0x02, 0, 1, 0, b'a'];
    assert_malformed(decode_frame(&buf, MAX), "topic_len 1, len 4");
    // Refused as soon as the header is there, before the frame is complete.
    let buf = [0, 0, 0, 10, 0x02, 0, 7, 0];
    assert_malformed(decode_frame(&buf, MAX), "topic_len 7, len 10, header only");
    let buf = [0, 0, 0, 10, 0x02, 0xff, 0xff, 0];
    assert_malformed(decode_frame(&buf, MAX), "topic_len 65535");
    // The boundary: 4 + topic_len == len is fine (empty body).
    let buf = raw(0x02, 0, b"abcdef", b"");
    assert_eq!(buf[3], 10);
    let frame = one(&buf);
    assert_eq!(frame.topic, b"abcdef");
    assert!(frame.body.is_empty());
}

#[test]
fn too_large_as_soon_as_the_length_is_read() {
    for len in [MAX + 1, MAX + 1000, u32::MAX] {
        let prefix = len.to_be_bytes();
        let err = decode_frame(&prefix, MAX).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: len as u64,
                limit: MAX as u64
            }
        );
        assert_eq!(err.code(), ErrorCode::TooLarge);
        assert_eq!(err.code().as_u16(), 413);
        // Same answer whatever follows.
        let mut more = prefix.to_vec();
        more.extend_from_slice(&[0x02, 0, 0, 0, 1, 2, 3]);
        assert_eq!(decode_frame(&more, MAX).unwrap_err(), err);
    }
    // Fewer than 4 bytes of a huge length: still waiting.
    assert_eq!(decode_frame(&[0xff, 0xff, 0xff], MAX), Ok(None));
}

#[test]
fn len_exactly_max_is_accepted() {
    let body = vec![0x5a; MAX as usize - 4 - 3];
    let buf = raw(0x02, 0, b"a.b", &body);
    assert_eq!(u32::from_be_bytes(buf[..4].try_into().unwrap()), MAX);
    let frame = one(&buf);
    assert_eq!(frame.body.len(), body.len());
    // And with only the header there, it is waiting, not refused.
    assert_eq!(decode_frame(&buf[..8], MAX), Ok(None));
}

#[test]
fn unknown_ops_are_malformed() {
    for op in 0u8..=255 {
        if Op::from_u8(op).is_some() {
            continue;
        }
        let buf = raw(op, 0, b"", b"");
        assert_malformed(request(&buf), &format!("request op {op:#04x}"));
        assert_malformed(server(&buf), &format!("server op {op:#04x}"));
    }
    // Exactly the table's ops are known.
    let known: Vec<u8> = (0u8..=255).filter(|&b| Op::from_u8(b).is_some()).collect();
    assert_eq!(
        known,
        ALL_OPS.iter().map(|&op| op as u8).collect::<Vec<_>>()
    );
    for op in ALL_OPS {
        assert_eq!(Op::from_u8(op as u8), Some(op));
        assert!(!op.name().is_empty());
    }
}

#[test]
fn client_sending_broker_ops_is_malformed() {
    let cases: [(&str, Vec<u8>); 4] = [
        ("MESSAGE", raw(0x10, 0, b"a.b", &[0, 0, 0, 7, b'h', b'i'])),
        ("OK", raw(0x11, 0, b"", b"")),
        ("ERROR", raw(0x12, 0, b"", &[1, 144, b'x'])),
        ("INFO", raw(0x13, 0, b"", br#"{"protocol":1}"#)),
    ];
    for (name, buf) in &cases {
        assert_malformed(request(buf), name);
        // The same frames are fine the other way.
        assert!(server(buf).is_ok(), "{name} from the broker");
    }
}

#[test]
fn broker_sending_client_ops_is_malformed() {
    let cases: [(&str, Vec<u8>); 4] = [
        ("CONNECT", raw(0x01, 0, b"", br#"{"protocol":1}"#)),
        ("PUBLISH", raw(0x02, 0, b"a.b", b"hi")),
        ("SUBSCRIBE", raw(0x03, 0, b"a.*", &[0, 0, 0, 7])),
        ("UNSUBSCRIBE", raw(0x04, 0, b"", &[0, 0, 0, 7])),
    ];
    for (name, buf) in &cases {
        assert_malformed(server(buf), name);
        assert!(request(buf).is_ok(), "{name} from the client");
    }
}

#[test]
fn topic_must_be_empty_where_the_table_says_so() {
    for op in [
        Op::Connect,
        Op::Unsubscribe,
        Op::Ping,
        Op::Pong,
        Op::Disconnect,
    ] {
        let body: &[u8] = match op {
            Op::Connect => br#"{"protocol":1}"#,
            Op::Unsubscribe => &[0, 0, 0, 1],
            _ => b"",
        };
        assert!(
            request(&raw(op as u8, 0, b"", body)).is_ok(),
            "{op:?} without topic"
        );
        assert_malformed(
            request(&raw(op as u8, 0, b"x", body)),
            &format!("{op:?} with topic"),
        );
    }
    // The broker's ops without a topic column.
    for op in [
        Op::Ok,
        Op::Error,
        Op::Info,
        Op::Ping,
        Op::Pong,
        Op::Disconnect,
    ] {
        let body: &[u8] = match op {
            Op::Error => &[1, 144],
            Op::Info => b"{}",
            _ => b"",
        };
        assert!(
            server(&raw(op as u8, 0, b"", body)).is_ok(),
            "{op:?} without topic"
        );
        assert_malformed(
            server(&raw(op as u8, 0, b"t", body)),
            &format!("server {op:?} with topic"),
        );
    }
}

#[test]
fn body_must_be_empty_on_client_control_frames() {
    for op in [Op::Ping, Op::Pong, Op::Disconnect] {
        assert_malformed(
            request(&raw(op as u8, 0, b"", b"x")),
            &format!("{op:?} with body"),
        );
    }
    assert_eq!(request(&raw(0x05, 0, b"", b"")), Ok(Request::Ping));
    assert_eq!(request(&raw(0x06, 0, b"", b"")), Ok(Request::Pong));
    assert_eq!(request(&raw(0x07, 0, b"", b"")), Ok(Request::Disconnect));
    // From the broker, PING/PONG/OK must be empty, DISCONNECT may carry a reason.
    for op in [Op::Ping, Op::Pong, Op::Ok] {
        assert_malformed(
            server(&raw(op as u8, 0, b"", b"x")),
            &format!("server {op:?} with body"),
        );
    }
    assert_eq!(server(&raw(0x05, 0, b"", b"")), Ok(ServerFrame::Ping));
    assert_eq!(server(&raw(0x06, 0, b"", b"")), Ok(ServerFrame::Pong));
    assert_eq!(server(&raw(0x11, 0, b"", b"")), Ok(ServerFrame::Ok));
    assert_eq!(
        server(&raw(0x07, 0, b"", b"draining")),
        Ok(ServerFrame::Disconnect {
            reason: b"draining"
        })
    );
    assert_eq!(
        server(&raw(0x07, 0, b"", b"")),
        Ok(ServerFrame::Disconnect { reason: b"" })
    );
}

/// A body that is valid for `op` with no flags, in the direction that sends it.
fn valid_body(op: Op) -> (&'static [u8], &'static [u8]) {
    match op {
        Op::Connect => (b"", br#"{"protocol":1}"#),
        Op::Publish => (b"a.b", b"hi"),
        Op::Subscribe => (b"a.*", &[0, 0, 0, 7]),
        Op::Unsubscribe => (b"", &[0, 0, 0, 7]),
        Op::Ping | Op::Pong | Op::Disconnect | Op::Ok => (b"", b""),
        Op::Message => (b"a.b", &[0, 0, 0, 7, b'h', b'i']),
        Op::Error => (b"", &[1, 144]),
        Op::Info => (b"", b"{}"),
    }
}

fn parse_either(op: Op, buf: &[u8]) -> Result<(), FrameError> {
    if (op as u8) < 0x10 && op != Op::Ping && op != Op::Pong && op != Op::Disconnect {
        request(buf).map(drop)
    } else if (op as u8) >= 0x10 {
        server(buf).map(drop)
    } else {
        // Both directions send PING/PONG/DISCONNECT: both must agree.
        let a = request(buf).map(drop);
        let b = server(buf).map(drop);
        assert_eq!(
            a.is_ok(),
            b.is_ok(),
            "{op:?}: request {a:?} vs server {b:?}"
        );
        a
    }
}

#[test]
fn flags_outside_the_table_are_malformed() {
    for op in ALL_OPS {
        let (topic, body) = valid_body(op);
        assert!(
            parse_either(op, &raw(op as u8, 0, topic, body)).is_ok(),
            "{op:?} no flags"
        );
        for bit in [0x04u8, 0x08, 0x10, 0x20, 0x40, 0x80] {
            assert_malformed(
                parse_either(op, &raw(op as u8, bit, topic, body)),
                &format!("{op:?} with bit {bit:#04x}"),
            );
            // Also together with an allowed bit.
            let bits = bit | op.allowed_flags();
            assert_malformed(
                parse_either(op, &raw(op as u8, bits, topic, body)),
                &format!("{op:?} with bits {bits:#04x}"),
            );
        }
        let ack_ok = matches!(op, Op::Publish | Op::Subscribe | Op::Unsubscribe);
        let ack = parse_either(op, &raw(op as u8, flags::ACK, topic, body));
        if ack_ok {
            assert!(ack.is_ok(), "ACK on {op:?}");
        } else {
            assert_malformed(ack, &format!("ACK on {op:?}"));
        }
        if !matches!(op, Op::Publish | Op::Message) {
            assert_malformed(
                parse_either(op, &raw(op as u8, flags::REPLY, topic, body)),
                &format!("REPLY on {op:?}"),
            );
        }
    }
    // ACK on MESSAGE (broker → client) is not allowed either.
    assert_malformed(
        server(&raw(0x10, flags::ACK, b"a", &[0, 0, 0, 1])),
        "ACK on MESSAGE",
    );
    // Every flag byte: exactly the allowed combinations pass.
    for bits in 0u8..=255 {
        let publish = request(&raw(0x02, bits, b"a", &[0, 1, b'r', b'p'])).is_ok();
        assert_eq!(publish, bits & !0x03 == 0, "PUBLISH flags {bits:#04x}");
        let sub = request(&raw(0x03, bits, b"a", &[0, 0, 0, 1])).is_ok();
        assert_eq!(sub, bits & !0x01 == 0, "SUBSCRIBE flags {bits:#04x}");
        let ping = request(&raw(0x05, bits, b"", b"")).is_ok();
        assert_eq!(ping, bits == 0, "PING flags {bits:#04x}");
    }
}

#[test]
fn ack_flag_is_reported() {
    assert_eq!(
        request(&raw(0x02, flags::ACK, b"a", b"p")),
        Ok(Request::Publish {
            subject: b"a",
            reply: None,
            payload: b"p",
            ack: true
        })
    );
    assert_eq!(
        request(&raw(0x03, flags::ACK, b"a", &[0, 0, 1, 0, b'q'])),
        Ok(Request::Subscribe {
            filter: b"a",
            sid: 256,
            queue: Some(b"q"),
            ack: true
        })
    );
    assert_eq!(
        request(&raw(0x04, flags::ACK, b"", &[0, 0, 0, 9, 0, 0, 0, 3])),
        Ok(Request::Unsubscribe {
            sid: 9,
            max_msgs: 3,
            ack: true
        })
    );
}

#[test]
fn subscribe_body_shorter_than_sid() {
    for n in 0..4 {
        assert_malformed(
            request(&raw(0x03, 0, b"a", &vec![0; n])),
            &format!("SUBSCRIBE body {n}"),
        );
    }
    assert_eq!(
        request(&raw(0x03, 0, b"a", &[0xff, 0xff, 0xff, 0xff])),
        Ok(Request::Subscribe {
            filter: b"a",
            sid: u32::MAX,
            queue: None,
            ack: false
        })
    );
    assert_eq!(
        request(&raw(0x03, 0, b"a.>", b"\0\0\0\x05workers")),
        Ok(Request::Subscribe {
            filter: b"a.>",
            sid: 5,
            queue: Some(b"workers"),
            ack: false
        })
    );
}

#[test]
fn unsubscribe_body_is_four_or_eight() {
    for n in [0usize, 1, 2, 3, 5, 6, 7, 9, 12, 16] {
        assert_malformed(
            request(&raw(0x04, 0, b"", &vec![0; n])),
            &format!("UNSUBSCRIBE body {n}"),
        );
    }
    assert_eq!(
        request(&raw(0x04, 0, b"", &[0, 0, 0, 7])),
        Ok(Request::Unsubscribe {
            sid: 7,
            max_msgs: 0,
            ack: false
        })
    );
    assert_eq!(
        request(&raw(0x04, 0, b"", &[0, 0, 0, 7, 0, 0, 0, 0])),
        Ok(Request::Unsubscribe {
            sid: 7,
            max_msgs: 0,
            ack: false
        })
    );
    assert_eq!(
        request(&raw(0x04, 0, b"", &[0, 0, 0, 7, 0x01, 0x02, 0x03, 0x04])),
        Ok(Request::Unsubscribe {
            sid: 7,
            max_msgs: 0x0102_0304,
            ack: false
        })
    );
}

#[test]
fn publish_reply_fields() {
    // Body shorter than reply_len.
    for body in [&b""[..], &[0][..]] {
        assert_malformed(
            request(&raw(0x02, flags::REPLY, b"a", body)),
            "PUBLISH REPLY body < 2",
        );
    }
    // reply_len beyond the rest of the body.
    assert_malformed(
        request(&raw(0x02, flags::REPLY, b"a", &[0, 1])),
        "reply_len 1, rest 0",
    );
    assert_malformed(
        request(&raw(0x02, flags::REPLY, b"a", &[0, 5, b'a', b'b'])),
        "reply_len 5, rest 2",
    );
    assert_malformed(
        request(&raw(0x02, flags::REPLY, b"a", &[0xff, 0xff, b'x'])),
        "reply_len 65535",
    );
    // reply_len exactly the rest: empty payload.
    assert_eq!(
        request(&raw(0x02, flags::REPLY, b"a", &[0, 2, b'r', b'.'])),
        Ok(Request::Publish {
            subject: b"a",
            reply: Some(b"r."),
            payload: b"",
            ack: false
        })
    );
    // reply_len 0: an empty reply subject (the session rejects it as a subject).
    assert_eq!(
        request(&raw(0x02, flags::REPLY | flags::ACK, b"a", &[0, 0, b'p'])),
        Ok(Request::Publish {
            subject: b"a",
            reply: Some(b""),
            payload: b"p",
            ack: true
        })
    );
    // Without REPLY the same bytes are payload.
    assert_eq!(
        request(&raw(0x02, 0, b"a", &[0, 1])),
        Ok(Request::Publish {
            subject: b"a",
            reply: None,
            payload: &[0, 1],
            ack: false
        })
    );
}

#[test]
fn server_fixed_fields() {
    for n in 0..2 {
        assert_malformed(
            server(&raw(0x12, 0, b"", &vec![1; n])),
            &format!("ERROR body {n}"),
        );
    }
    assert_eq!(
        server(&raw(0x12, 0, b"", b"\x01\x90invalid subject")),
        Ok(ServerFrame::Error {
            code: 400,
            reason: b"invalid subject"
        })
    );
    for n in 0..4 {
        assert_malformed(
            server(&raw(0x10, 0, b"a", &vec![0; n])),
            &format!("MESSAGE body {n}"),
        );
    }
    // MESSAGE with REPLY: sid, then reply_len and reply.
    assert_malformed(
        server(&raw(0x10, flags::REPLY, b"a", &[0, 0, 0, 1])),
        "MESSAGE REPLY no reply_len",
    );
    assert_malformed(
        server(&raw(0x10, flags::REPLY, b"a", &[0, 0, 0, 1, 0])),
        "MESSAGE REPLY half reply_len",
    );
    assert_malformed(
        server(&raw(0x10, flags::REPLY, b"a", &[0, 0, 0, 1, 0, 3, b'r'])),
        "MESSAGE reply_len past the body",
    );
    assert_eq!(
        server(&raw(
            0x10,
            flags::REPLY,
            b"a.b",
            &[0, 0, 0, 1, 0, 1, b'r', b'p', b'q']
        )),
        Ok(ServerFrame::Message {
            subject: b"a.b",
            sid: 1,
            reply: Some(b"r"),
            payload: b"pq"
        })
    );
}

#[test]
fn error_codes_map_to_400_and_413() {
    assert_eq!(FrameError::Malformed("x").code().as_u16(), 400);
    assert_eq!(
        FrameError::TooLarge { len: 10, limit: 5 }.code().as_u16(),
        413
    );
    let shown = FrameError::TooLarge { len: 10, limit: 5 }.to_string();
    assert!(shown.contains("10") && shown.contains('5'), "{shown}");
    assert!(FrameError::Malformed("bad op")
        .to_string()
        .contains("bad op"));
    for (code, n) in [
        (ErrorCode::BadRequest, 400),
        (ErrorCode::Unauthorized, 401),
        (ErrorCode::Forbidden, 403),
        (ErrorCode::NotFound, 404),
        (ErrorCode::PingTimeout, 408),
        (ErrorCode::Conflict, 409),
        (ErrorCode::TooLarge, 413),
        (ErrorCode::TooMany, 429),
        (ErrorCode::Unavailable, 503),
    ] {
        assert_eq!(code.as_u16(), n);
    }
}

// ---------------------------------------------------------------------------
// Partial input and back-to-back frames.

fn sample_frames() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut push = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::new();
        f(&mut out);
        frames.push(out);
    };
    push(&|o| encode::put_connect(o, br#"{"protocol":1,"name":"t"}"#));
    push(&|o| encode::put_publish(o, b"a.b", Some(b"_INBOX.1"), b"payload", true));
    push(&|o| encode::put_publish(o, b"a.b", None, b"", false));
    push(&|o| encode::put_subscribe(o, b"a.>", 42, Some(b"q"), true));
    push(&|o| encode::put_unsubscribe(o, 42, 0, false));
    push(&|o| encode::put_unsubscribe(o, 42, 10, true));
    push(&|o| encode::put_ping(o));
    push(&|o| encode::put_pong(o));
    push(&|o| encode::put_disconnect(o, ""));
    push(&|o| encode::put_message(o, b"a.b", 7, Some(b"r"), b"hi"));
    push(&|o| encode::put_ok(o));
    push(&|o| encode::put_error(o, ErrorCode::NotFound, "unknown sid"));
    push(&|o| encode::put_info(o, br#"{"protocol":1}"#));
    push(&|o| encode::put_disconnect(o, "draining"));
    frames.push(hex(EX_SUBSCRIBE));
    frames.push(hex(EX_PUBLISH));
    frames.push(hex(EX_MESSAGE));
    frames
}

#[test]
fn every_prefix_is_incomplete() {
    for frame in sample_frames() {
        for cut in 0..frame.len() {
            assert_eq!(
                decode_frame(&frame[..cut], MAX),
                Ok(None),
                "prefix {cut} of {} bytes of {frame:02x?}",
                frame.len()
            );
        }
        let (_, consumed) = decode_frame(&frame, MAX).unwrap().unwrap();
        assert_eq!(consumed, frame.len());
    }
}

#[test]
fn frames_back_to_back_decode_in_order() {
    let frames = sample_frames();
    let mut buf = Vec::new();
    for frame in &frames {
        buf.extend_from_slice(frame);
    }
    let mut offset = 0;
    for (i, frame) in frames.iter().enumerate() {
        let (raw_frame, consumed) = decode_frame(&buf[offset..], MAX).unwrap().unwrap();
        assert_eq!(consumed, frame.len(), "frame {i}");
        assert_eq!(raw_frame, one(frame), "frame {i}");
        offset += consumed;
    }
    assert_eq!(offset, buf.len());
    assert_eq!(decode_frame(&buf[offset..], MAX), Ok(None));
    // A trailing partial frame after whole ones.
    buf.extend_from_slice(&frames[1][..5]);
    assert_eq!(decode_frame(&buf[offset..], MAX), Ok(None));
}

#[test]
fn encoded_client_frames_parse() {
    let f = sample_frames();
    assert_eq!(
        request(&f[0]),
        Ok(Request::Connect {
            json: br#"{"protocol":1,"name":"t"}"#
        })
    );
    assert_eq!(
        request(&f[1]),
        Ok(Request::Publish {
            subject: b"a.b",
            reply: Some(b"_INBOX.1"),
            payload: b"payload",
            ack: true
        })
    );
    assert_eq!(
        request(&f[3]),
        Ok(Request::Subscribe {
            filter: b"a.>",
            sid: 42,
            queue: Some(b"q"),
            ack: true
        })
    );
    assert_eq!(
        request(&f[4]),
        Ok(Request::Unsubscribe {
            sid: 42,
            max_msgs: 0,
            ack: false
        })
    );
    assert_eq!(f[4].len(), 12);
    assert_eq!(f[5].len(), 16);
    assert_eq!(request(&f[8]), Ok(Request::Disconnect));
    assert_eq!(server(&f[10]), Ok(ServerFrame::Ok));
    assert_eq!(
        server(&f[11]),
        Ok(ServerFrame::Error {
            code: 404,
            reason: b"unknown sid"
        })
    );
    assert_eq!(
        server(&f[12]),
        Ok(ServerFrame::Info {
            json: br#"{"protocol":1}"#
        })
    );
    assert_eq!(encode::frame_len(3, 2), f[15].len());
}

// ---------------------------------------------------------------------------
// CONNECT bodies.

#[test]
fn connect_parse_rejects() {
    let bad: &[&[u8]] = &[
        b"",
        b"not json",
        b"{",
        b"{\"protocol\":1",
        b"{\"protocol\":1} x",
        b"[1]",
        b"[]",
        b"1",
        b"\"protocol\"",
        b"null",
        b"true",
        b"{}",
        b"{\"name\":\"x\"}",
        b"{\"protocol\":2}",
        b"{\"protocol\":0}",
        b"{\"protocol\":-1}",
        b"{\"protocol\":1.5}",
        b"{\"protocol\":\"1\"}",
        b"{\"protocol\":null}",
        b"{\"protocol\":4294967297}",
        b"{\"protocol\":1,\"name\":5}",
        b"{\"protocol\":1,\"token\":true}",
        b"{\"protocol\":1,\"verbose\":\"yes\"}",
        b"{\"protocol\":1,\"verbose\":1}",
        b"\xff\xfe{\"protocol\":1}",
        b"{\"protocol\":1,\"name\":\"\xff\"}",
    ];
    for body in bad {
        assert!(
            Connect::parse(body).is_err(),
            "accepted {:?}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn connect_parse_accepts() {
    assert_eq!(
        Connect::parse(br#"{"protocol":1}"#),
        Ok(Connect {
            protocol: 1,
            name: None,
            token: None,
            user: None,
            pass: None,
            verbose: false
        })
    );
    assert_eq!(
        Connect::parse(
            br#" {"protocol": 1, "name": "bench", "token": "s3cr\u00e9t", "verbose": true} "#
        ),
        Ok(Connect {
            protocol: 1,
            name: Some("bench".into()),
            token: Some("s3cr\u{e9}t".into()),
            user: None,
            pass: None,
            verbose: true
        })
    );
    // null for an optional string is absent.
    assert_eq!(
        Connect::parse(br#"{"protocol":1,"name":null,"token":null}"#).unwrap(),
        Connect {
            protocol: 1,
            ..Connect::default()
        }
    );
    // Unknown fields are ignored.
    let c = Connect::parse(
        br#"{"lang":"rust","protocol":1,"pedantic":true,"headers":{"a":[1,2]},"verbose":false}"#,
    )
    .unwrap();
    assert_eq!(c.protocol, 1);
    assert!(!c.verbose);
    // Round trip through serde.
    let c = Connect {
        protocol: 1,
        name: Some("n".into()),
        token: None,
        user: Some("alice".into()),
        pass: Some("pw".into()),
        verbose: true,
    };
    let json = serde_json::to_vec(&c).unwrap();
    assert_eq!(Connect::parse(&json), Ok(c));
}

#[test]
fn info_json_round_trips() {
    let info = blipmq_protocol::Info {
        server_id: "s1".into(),
        version: "0.1.0".into(),
        protocol: 1,
        max_payload: 1 << 20,
        max_topic_length: 255,
        auth_required: false,
        tls_required: false,
        worker: None,
    };
    let json = serde_json::to_vec(&info).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    for key in [
        "server_id",
        "version",
        "protocol",
        "max_payload",
        "max_topic_length",
        "auth_required",
        "tls_required",
    ] {
        assert!(value.get(key).is_some(), "INFO lacks {key}");
    }
    assert_eq!(value["protocol"], 1);
    let mut out = Vec::new();
    encode::put_info(&mut out, &json);
    match server(&out) {
        Ok(ServerFrame::Info { json: body }) => {
            assert_eq!(
                serde_json::from_slice::<blipmq_protocol::Info>(body).unwrap(),
                info
            )
        }
        other => panic!("{other:?}"),
    }
}
