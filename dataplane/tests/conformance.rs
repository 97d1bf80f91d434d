//! Conformance of `blipmqd` to `shared/docs/protocol.md` (normative).
//!
//! Each test names the statement of protocol.md it checks. Every test runs
//! on the kernel backend (`kernel::*`) and on the afpacket backend
//! (`afpacket::*`: the broker in a netns lab, the test's clients with kernel
//! TCP in the lab's client namespace; skipped without root, failed under
//! CI=true). Tests that make sense with any number of workers run with 1 and
//! 2 (`w1::*`, `w2::*`); the cross-worker rules are checked by
//! `two_workers_*` tests.

#[macro_use]
mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use blipmq_protocol::{encode, Op, ServerFrame};
use common::*;

fn hex(text: &str) -> Vec<u8> {
    text.split(|c: char| c.is_whitespace() || c == '|')
        .filter(|t| !t.is_empty())
        .map(|t| u8::from_str_radix(t, 16).expect("hex byte"))
        .collect()
}

/// The worker a test's `i`-th connection should live on: spread round robin.
fn spread(i: usize, workers: usize) -> u32 {
    (i % workers) as u32
}

fn seq_payload(seq: u32) -> Vec<u8> {
    seq.to_be_bytes().to_vec()
}

fn payload_seq(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().expect("4-byte sequence payload"))
}

fn msgs_of(frames: &[OwnedFrame]) -> Vec<Msg> {
    frames
        .iter()
        .map(|f| {
            as_msg(f).unwrap_or_else(|| panic!("expected only MESSAGEs, got {f:?} in {frames:?}"))
        })
        .collect()
}

fn config_with(extra_server: &str, limits: &str, extra: &str) -> String {
    format!("[server]\ndrain_timeout = \"2s\"\n{extra_server}\n[limits]\n{limits}\n{extra}\n")
}

const LIMITS: &str = "max_payload = 1024\nmax_topic_length = 32\nmax_subscriptions = 64\nmax_pending_bytes = 1048576\n";

// ---------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------

/// "Example, byte for byte": SUBSCRIBE `a.*` sid 7, PUBLISH `hi` to `a.b`,
/// the MESSAGE is exactly the bytes of protocol.md; OK and PONG are the bare
/// 4-byte-header frames.
fn framing_example_byte_for_byte(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let subscribe = hex("00 00 00 0b | 03 | 00 03 | 00 | 61 2e 2a | 00 00 00 07");
    let publish = hex("00 00 00 09 | 02 | 00 03 | 00 | 61 2e 62 | 68 69");
    let message = hex("00 00 00 0d | 10 | 00 03 | 00 | 61 2e 62 | 00 00 00 07 68 69");
    let ok = hex("00 00 00 04 11 00 00 00");
    let pong = hex("00 00 00 04 06 00 00 00");
    // The codec agrees with the page (so the rest of the suite speaks it).
    assert_eq!(
        build(|b| encode::put_subscribe(b, b"a.*", 7, None, false)),
        subscribe
    );
    assert_eq!(
        build(|b| encode::put_publish(b, b"a.b", None, b"hi", false)),
        publish
    );
    assert_eq!(
        build(|b| encode::put_message(b, b"a.b", 7, None, b"hi")),
        message
    );

    let mut c = Raw::connect(broker.addr());
    c.send(&connect_bytes(r#"{"protocol":1}"#));
    assert_eq!(c.read_exact_bytes(8), ok, "OK to CONNECT");
    c.send(&subscribe);
    c.send(&publish);
    assert_eq!(
        c.read_exact_bytes(message.len()),
        message,
        "MESSAGE to own PUBLISH"
    );
    c.send(&ping_bytes());
    assert_eq!(c.read_exact_bytes(8), pong, "PONG");

    // The same bytes when another connection (another worker, if any) publishes.
    let mut p = Raw::on_worker(broker.addr(), (c.worker() + 1) % workers as u32);
    p.do_connect(r#"{"protocol":1}"#);
    p.send(&publish);
    p.ping_pong();
    assert_eq!(
        c.read_exact_bytes(message.len()),
        message,
        "MESSAGE to another's PUBLISH"
    );
    c.ping_pong();

    // With flag REPLY: PUBLISH body `u16 reply_len, reply, payload`; MESSAGE
    // body `u32 sid, u16 reply_len, reply, payload`.
    let publish_reply = hex("00 00 00 0c | 02 | 00 03 | 02 | 61 2e 62 | 00 01 72 | 68 69");
    let message_reply =
        hex("00 00 00 10 | 10 | 00 03 | 02 | 61 2e 62 | 00 00 00 07 | 00 01 72 | 68 69");
    assert_eq!(
        build(|b| encode::put_publish(b, b"a.b", Some(b"r"), b"hi", false)),
        publish_reply
    );
    p.send(&publish_reply);
    p.ping_pong();
    assert_eq!(
        c.read_exact_bytes(message_reply.len()),
        message_reply,
        "MESSAGE with reply"
    );
    c.send(&publish_reply);
    assert_eq!(
        c.read_exact_bytes(message_reply.len()),
        message_reply,
        "own MESSAGE with reply"
    );
    c.ping_pong();
}

/// "A frame with len > max_payload + 1024 is refused as soon as its header is
/// read, before any of its body is buffered: ERROR 413, then close."
fn oversize_frame_refused_at_header(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    // len = 1024 + 1024 + 1; only the 8 header bytes are ever sent.
    let mut c = Raw::handshake(broker.addr());
    let mut header = Vec::new();
    header.extend_from_slice(&(2049u32).to_be_bytes());
    header.extend_from_slice(&[0x02, 0x00, 0x03, 0x00]);
    c.send(&header);
    c.expect_error_and_close(413);

    // Only the 4-byte len field: still refused (the frame is too long
    // whatever follows).
    let mut c = Raw::handshake(broker.addr());
    c.send(&u32::MAX.to_be_bytes());
    c.expect_error_and_close(413);

    // len == max_payload + 1024 is not refused at the header: the broker
    // waits for the body. Here the body is a PUBLISH payload of 2041 bytes,
    // which is over max_payload: 413 once it has arrived.
    let mut c = Raw::handshake(broker.addr());
    let frame = build(|b| encode::put_publish(b, b"a.b", None, &vec![b'x'; 2048 - 4 - 3], false));
    assert_eq!(&frame[..4], &2048u32.to_be_bytes());
    c.send(&frame[..8]);
    c.expect_silence(QUIET);
    c.send(&frame[8..]);
    c.expect_error_and_close(413);
}

/// The 413 rule is part of the framing and holds for the first frame too.
fn oversize_frame_before_connect(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let mut c = Raw::connect(broker.addr());
    let mut header = Vec::new();
    header.extend_from_slice(&(0xFFFF_FFFFu32).to_be_bytes());
    header.extend_from_slice(&[0x01, 0x00, 0x00, 0x00]);
    c.send(&header);
    c.expect_error_and_close(413);
}

/// "A PUBLISH whose payload, without its reply prefix, exceeds max_payload
/// gets the same answer" (413, close); a payload of exactly max_payload,
/// with or without a reply subject, is delivered.
fn publish_payload_limit(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let mut sub = Raw::handshake_on_worker(broker.addr(), 0);
    sub.subscribe("pl.x", 1);
    let mut p = Raw::handshake_on_worker(broker.addr(), spread(1, workers));

    let full = vec![b'f'; 1024];
    p.publish_ack("pl.x", &full);
    p.send_frame(|b| encode::put_publish(b, b"pl.x", Some(b"reply.to.me"), &full, true));
    p.expect_ok();
    let m = sub.expect_msg();
    assert_eq!(
        (
            m.subject.as_str(),
            m.sid,
            m.reply.as_deref(),
            m.payload.len()
        ),
        ("pl.x", 1, None, 1024)
    );
    let m = sub.expect_msg();
    assert_eq!(
        (
            m.subject.as_str(),
            m.sid,
            m.reply.as_deref(),
            m.payload.len()
        ),
        ("pl.x", 1, Some("reply.to.me"), 1024)
    );

    // One byte over: refused, closed, never delivered.
    p.send_frame(|b| encode::put_publish(b, b"pl.x", None, &vec![b'o'; 1025], true));
    p.expect_error_and_close(413);
    let mut p = Raw::handshake_on_worker(broker.addr(), spread(1, workers));
    p.send_frame(|b| encode::put_publish(b, b"pl.x", Some(b"r"), &vec![b'o'; 1025], false));
    p.expect_error_and_close(413);
    sub.expect_silence(QUIET);
    sub.ping_pong();
}

/// "A frame is malformed (ERROR 400, then close) when its op is not in this
/// table, when a client sends a broker → client op, when a topic or body that
/// must be empty is not, or when a body is shorter than its fixed fields."
/// "Any other bit, or a bit on an op that does not allow it, is malformed."
/// `len >= 4` and `4 + topic_len <= len`; anything else is malformed.
fn malformed_frames_close_with_400(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let sid = [0u8, 0, 0, 1];
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for op in [0x00u8, 0x08, 0x09, 0x0f, 0x14, 0x20, 0x7f, 0x80, 0xff] {
        cases.push((format!("unknown op 0x{op:02x}"), raw_frame(op, 0, b"", b"")));
    }
    cases.extend([
        (
            "client sends MESSAGE".to_string(),
            raw_frame(0x10, 0, b"a.b", &[0, 0, 0, 1, b'x']),
        ),
        ("client sends OK".to_string(), raw_frame(0x11, 0, b"", b"")),
        (
            "client sends ERROR".to_string(),
            raw_frame(0x12, 0, b"", &[0x01, 0x90, b'x']),
        ),
        (
            "client sends INFO".to_string(),
            raw_frame(0x13, 0, b"", b"{}"),
        ),
        ("topic on PING".to_string(), raw_frame(0x05, 0, b"x", b"")),
        ("body on PING".to_string(), raw_frame(0x05, 0, b"", b"x")),
        ("topic on PONG".to_string(), raw_frame(0x06, 0, b"x", b"")),
        ("body on PONG".to_string(), raw_frame(0x06, 0, b"", b"x")),
        (
            "topic on DISCONNECT".to_string(),
            raw_frame(0x07, 0, b"x", b""),
        ),
        (
            "body on client DISCONNECT".to_string(),
            raw_frame(0x07, 0, b"", b"bye"),
        ),
        (
            "topic on UNSUBSCRIBE".to_string(),
            raw_frame(0x04, 0, b"a", &sid),
        ),
        (
            "topic on CONNECT".to_string(),
            raw_frame(0x01, 0, b"a", br#"{"protocol":1}"#),
        ),
        ("ACK on PING".to_string(), raw_frame(0x05, ACK, b"", b"")),
        ("ACK on PONG".to_string(), raw_frame(0x06, ACK, b"", b"")),
        (
            "ACK on DISCONNECT".to_string(),
            raw_frame(0x07, ACK, b"", b""),
        ),
        (
            "REPLY on PING".to_string(),
            raw_frame(0x05, REPLY, b"", b""),
        ),
        (
            "REPLY on SUBSCRIBE".to_string(),
            raw_frame(0x03, REPLY, b"a", &sid),
        ),
        (
            "REPLY on UNSUBSCRIBE".to_string(),
            raw_frame(0x04, REPLY, b"", &sid),
        ),
        (
            "flag 0x04 on PUBLISH".to_string(),
            raw_frame(0x02, 0x04, b"a", b"x"),
        ),
        (
            "flag 0x80 on PUBLISH".to_string(),
            raw_frame(0x02, 0x80, b"a", b"x"),
        ),
        (
            "flag 0x04 on SUBSCRIBE".to_string(),
            raw_frame(0x03, 0x04 | ACK, b"a", &sid),
        ),
        (
            "flag 0x08 on UNSUBSCRIBE".to_string(),
            raw_frame(0x04, 0x08, b"", &sid),
        ),
        (
            "SUBSCRIBE without body".to_string(),
            raw_frame(0x03, ACK, b"a", b""),
        ),
        (
            "SUBSCRIBE body shorter than sid".to_string(),
            raw_frame(0x03, ACK, b"a", &[0, 0, 1]),
        ),
        (
            "UNSUBSCRIBE without body".to_string(),
            raw_frame(0x04, ACK, b"", b""),
        ),
        (
            "UNSUBSCRIBE body shorter than sid".to_string(),
            raw_frame(0x04, ACK, b"", &[0, 1]),
        ),
        (
            "UNSUBSCRIBE truncated max_msgs".to_string(),
            raw_frame(0x04, ACK, b"", &[0, 0, 0, 1, 0, 5]),
        ),
        (
            "PUBLISH REPLY body shorter than reply_len".to_string(),
            raw_frame(0x02, REPLY, b"a", &[0]),
        ),
        (
            "PUBLISH REPLY reply past body".to_string(),
            raw_frame(0x02, REPLY, b"a", &[0, 10, b'r']),
        ),
        ("len 0".to_string(), vec![0, 0, 0, 0]),
        ("len 3".to_string(), vec![0, 0, 0, 3, 0x05, 0, 0]),
        (
            "topic_len > len - 4".to_string(),
            vec![0, 0, 0, 5, 0x02, 0, 9, 0, b'a'],
        ),
        (
            "topic_len 0xffff, len 4".to_string(),
            vec![0, 0, 0, 4, 0x05, 0xff, 0xff, 0],
        ),
    ]);
    for (name, bytes) in &cases {
        let mut c = Raw::handshake(broker.addr());
        c.send(bytes);
        let frames = c.expect_closed();
        match frames.as_slice() {
            [only] if only.error().map(|e| e.0) == Some(400) => {}
            _ => panic!("{name}: expected ERROR 400 then close, got {frames:?} then close"),
        }
    }
}

/// Answers to earlier frames come out before the 400 to a malformed frame in
/// the same write; nothing after it is executed.
fn malformed_after_valid_frames(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let mut c = Raw::handshake(broker.addr());
    let mut bytes = Vec::new();
    encode::put_subscribe(&mut bytes, b"mv.x", 1, None, true);
    encode::put_ping(&mut bytes);
    bytes.extend(raw_frame(0x05, 0, b"", b"junk"));
    encode::put_ping(&mut bytes);
    c.send(&bytes);
    let frames = c.expect_closed();
    let ops: Vec<_> = frames.iter().map(|f| f.op).collect();
    assert_eq!(
        ops,
        vec![Op::Ok as u8, Op::Pong as u8, Op::Error as u8],
        "{frames:?}"
    );
    assert_eq!(frames[2].error().map(|e| e.0), Some(400), "{frames:?}");
}

// ---------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------

/// "On accept the broker sends INFO" with the fields of protocol.md, plus
/// `worker`.
fn info_fields(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let mut c = tcp_connect(broker.addr(), TIMEOUT).expect("connect");
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let json = loop {
        use std::io::Read;
        let n = c.read(&mut chunk).expect("read INFO");
        assert!(n > 0, "closed before INFO");
        raw.extend_from_slice(&chunk[..n]);
        if let Some((frame, _)) = blipmq_protocol::decode_frame(&raw, u32::MAX).expect("INFO frame")
        {
            assert_eq!(frame.op, Op::Info as u8, "first frame is not INFO");
            assert_eq!(frame.flags, 0);
            assert!(frame.topic.is_empty());
            break serde_json::from_slice::<serde_json::Value>(frame.body)
                .expect("INFO body is JSON");
        }
    };
    let obj = json.as_object().expect("INFO body is a JSON object");
    assert!(
        obj.get("server_id").and_then(|v| v.as_str()).is_some(),
        "server_id: {json}"
    );
    assert!(
        obj.get("version").and_then(|v| v.as_str()).is_some(),
        "version: {json}"
    );
    assert_eq!(
        obj.get("protocol").and_then(|v| v.as_u64()),
        Some(1),
        "protocol: {json}"
    );
    assert_eq!(
        obj.get("max_payload").and_then(|v| v.as_u64()),
        Some(1024),
        "max_payload: {json}"
    );
    assert_eq!(
        obj.get("max_topic_length").and_then(|v| v.as_u64()),
        Some(32),
        "max_topic_length: {json}"
    );
    assert_eq!(
        obj.get("auth_required").and_then(|v| v.as_bool()),
        Some(false),
        "auth_required: {json}"
    );
    assert_eq!(
        obj.get("tls_required").and_then(|v| v.as_bool()),
        Some(false),
        "tls_required: {json}"
    );
    let worker = obj.get("worker").and_then(|v| v.as_u64()).expect("worker");
    assert!((worker as usize) < workers, "worker {worker} of {workers}");

    // Every worker answers with the same INFO apart from `worker`.
    let a = Raw::on_worker(broker.addr(), 0).info;
    let b = Raw::on_worker(broker.addr(), (workers - 1) as u32).info;
    assert_eq!(a.server_id, b.server_id);
    assert_eq!(a.max_payload, b.max_payload);

    // With a token configured, auth_required is true.
    let broker = Broker::start_on(
        backend,
        workers,
        &format!("{BASE_CONFIG}\n[auth]\ntoken = \"s3cret\"\n"),
    );
    for w in 0..workers as u32 {
        let info = Raw::on_worker(broker.addr(), w).info;
        assert!(
            info.auth_required,
            "auth_required with a token, worker {w}: {info:?}"
        );
        assert!(!info.tls_required);
        assert_eq!(info.protocol, 1);
    }
}

/// "A well-formed first frame that is not CONNECT: ERROR 401, then close."
fn first_frame_not_connect_401(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("PING", ping_bytes()),
        ("PONG", build(encode::put_pong)),
        (
            "PUBLISH",
            build(|b| encode::put_publish(b, b"a.b", None, b"x", false)),
        ),
        (
            "PUBLISH+ACK",
            build(|b| encode::put_publish(b, b"a.b", None, b"x", true)),
        ),
        (
            "SUBSCRIBE",
            build(|b| encode::put_subscribe(b, b"a.b", 1, None, true)),
        ),
        (
            "UNSUBSCRIBE",
            build(|b| encode::put_unsubscribe(b, 1, 0, true)),
        ),
        ("DISCONNECT", build(|b| encode::put_disconnect(b, ""))),
    ];
    for (name, bytes) in cases {
        let mut c = Raw::connect(broker.addr());
        c.send(&bytes);
        let frames = c.expect_closed();
        match frames.as_slice() {
            [only] if only.error().map(|e| e.0) == Some(401) => {}
            _ => panic!("first frame {name}: expected ERROR 401 then close, got {frames:?}"),
        }
    }
}

/// "A malformed first frame: ERROR 400, then close."
fn first_frame_malformed_400(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown op", raw_frame(0x0a, 0, b"", b"")),
        ("client INFO", raw_frame(0x13, 0, b"", b"{}")),
        ("PING with body", raw_frame(0x05, 0, b"", b"x")),
        (
            "CONNECT with topic",
            raw_frame(0x01, 0, b"t", br#"{"protocol":1}"#),
        ),
        (
            "CONNECT with ACK flag",
            raw_frame(0x01, ACK, b"", br#"{"protocol":1}"#),
        ),
        ("topic_len > len", vec![0, 0, 0, 4, 0x01, 0, 1, 0]),
    ];
    for (name, bytes) in cases {
        let mut c = Raw::connect(broker.addr());
        c.send(&bytes);
        let frames = c.expect_closed();
        match frames.as_slice() {
            [only] if only.error().map(|e| e.0) == Some(400) => {}
            _ => panic!("first frame {name}: expected ERROR 400 then close, got {frames:?}"),
        }
    }
}

/// "A CONNECT whose body is not a JSON object, or whose protocol is not 1:
/// ERROR 400, then close." Unknown fields are ignored (as NATS does).
fn connect_body_rules(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let bad: &[&[u8]] = &[
        b"",
        b"{\"protocol\":1",
        b"not json",
        b"[1]",
        b"\"protocol\"",
        b"1",
        b"null",
        b"{}",
        b"{\"protocol\":2}",
        b"{\"protocol\":0}",
        b"{\"protocol\":\"1\"}",
        b"{\"protocol\":1, \"verbose\": \"yes\"}",
        b"\xff\xfe",
    ];
    for body in bad {
        let mut c = Raw::connect(broker.addr());
        c.send_frame(|b| encode::put_connect(b, body));
        let frames = c.expect_closed();
        match frames.as_slice() {
            [only] if only.error().map(|e| e.0) == Some(400) => {}
            _ => panic!(
                "CONNECT {:?}: expected ERROR 400 then close, got {frames:?}",
                String::from_utf8_lossy(body)
            ),
        }
    }
    for good in [
        r#"{"protocol":1}"#,
        r#"{"protocol":1,"name":"conformance","verbose":false}"#,
        r#"{"protocol":1,"some_future_field":{"x":[1,2]}}"#,
        r#"{"protocol":1,"token":"ignored when not required"}"#,
    ] {
        let mut c = Raw::connect(broker.addr());
        c.send(&connect_bytes(good));
        let frame = c.read_frame();
        assert!(
            matches!(frame.parse(), ServerFrame::Ok),
            "CONNECT {good}: expected OK, got {frame:?}"
        );
        c.ping_pong();
    }
}

/// "The broker answers OK, or ERROR 401 and closes when a token is required
/// and missing or wrong."
fn token_auth(backend: Backend, workers: usize) {
    let broker = Broker::start_on(
        backend,
        workers,
        &format!("{BASE_CONFIG}\n[auth]\ntoken = \"s3cret\"\n"),
    );
    for (what, json) in [
        ("missing", r#"{"protocol":1}"#),
        ("wrong", r#"{"protocol":1,"token":"s3creT"}"#),
        ("empty", r#"{"protocol":1,"token":""}"#),
        ("prefix", r#"{"protocol":1,"token":"s3cre"}"#),
    ] {
        let mut c = Raw::connect(broker.addr());
        assert!(c.info.auth_required);
        c.send(&connect_bytes(json));
        let frames = c.expect_closed();
        match frames.as_slice() {
            [only] if only.error().map(|e| e.0) == Some(401) => {}
            _ => panic!("token {what}: expected ERROR 401 then close, got {frames:?}"),
        }
    }
    // Not CONNECT first with auth on: 401 as well.
    let mut c = Raw::connect(broker.addr());
    c.send(&ping_bytes());
    c.expect_error_and_close(401);

    for w in 0..workers as u32 {
        let mut c = Raw::on_worker(broker.addr(), w);
        c.do_connect(r#"{"protocol":1,"token":"s3cret"}"#);
        c.subscribe("auth.ok", 1);
        c.publish("auth.ok", b"x");
        let frames = c.frames_until_pong();
        assert_eq!(msgs_of(&frames).len(), 1);
    }
}

/// "ERROR 401 and closes when credentials are required and missing or wrong
/// (a token, or a user and password)"; "403: subject not permitted for this
/// client, connection open".
fn users_and_permissions(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, &format!("{BASE_CONFIG}{}", users_toml()));
    for json in [
        r#"{"protocol":1,"user":"alice","pass":"wrong"}"#,
        r#"{"protocol":1,"user":"alice"}"#,
        r#"{"protocol":1,"user":"nobody","pass":"a-pass"}"#,
        r#"{"protocol":1,"user":"svc","pass":"svc-token"}"#,
        r#"{"protocol":1,"token":"a-pass"}"#,
        r#"{"protocol":1}"#,
    ] {
        let mut c = Raw::connect(broker.addr());
        assert!(c.info.auth_required);
        c.send(&connect_bytes(json));
        let reason = c.expect_error_and_close(401);
        assert!(!reason.contains("pass"), "{json}: {reason}");
    }
    let on = |i: usize, json: &str| {
        let mut c = Raw::on_worker(broker.addr(), spread(i, workers));
        c.do_connect(json);
        c
    };
    let mut alice = on(0, r#"{"protocol":1,"user":"alice","pass":"a-pass"}"#);
    let mut open = on(1, r#"{"protocol":1,"user":"hashed","pass":"h-pass"}"#);
    let mut svc = on(2, r#"{"protocol":1,"token":"svc-token"}"#);

    // Publish: allowed, denied by deny (which wins), outside allow.
    open.subscribe("orders.>", 1);
    open.subscribe("billing", 2);
    alice.publish("orders.new", b"ok");
    alice.publish("orders.secret", b"no");
    expect_refusal(&mut alice, r#"Publish to "orders.secret""#);
    alice.publish("billing", b"no");
    expect_refusal(&mut alice, r#"Publish to "billing""#);
    alice.ping_pong();
    assert_eq!(
        the_one_message(&mut open),
        ("orders.new".into(), b"ok".to_vec())
    );

    // Subscribe: outside allow (wider than updates.*), then allowed.
    alice.send_frame(|b| encode::put_subscribe(b, b"updates.>", 1, None, true));
    expect_refusal(&mut alice, r#"Subscription to "updates.>""#);
    alice.send_frame(|b| encode::put_subscribe(b, b"updates.x", 1, Some(b"q"), true));
    alice.expect_ok();
    // svc: deny wins over allow `>`; a wider subscription is made but what
    // the deny covers is not delivered.
    svc.send_frame(|b| encode::put_subscribe(b, b"admin.users", 1, None, true));
    expect_refusal(&mut svc, r#"Subscription to "admin.users""#);
    svc.subscribe("svc.>", 2);
    svc.subscribe("*.users", 3);
    open.subscribe("_INBOX.>", 3);
    open.publish("admin.users", b"secret");
    open.send_frame(|b| encode::put_publish(b, b"svc.time", Some(b"_INBOX.r1"), b"now?", false));
    open.publish("updates.x", b"u");
    open.ping_pong();
    let got = msgs_of(&svc.frames_until_pong());
    assert_eq!(got.len(), 1, "admin.users withheld: {got:?}");
    assert_eq!(got[0].reply.as_deref(), Some("_INBOX.r1"));
    assert_eq!(
        the_one_message(&mut alice),
        ("updates.x".into(), b"u".to_vec())
    );

    // allow_responses: svc answers the request once, and publishes nothing else.
    svc.publish("_INBOX.r1", b"noon");
    svc.publish("_INBOX.r1", b"again");
    expect_refusal(&mut svc, r#"Publish to "_INBOX.r1""#);
    svc.publish("svc.other", b"x");
    expect_refusal(&mut svc, r#"Publish to "svc.other""#);
    svc.ping_pong();
    assert_eq!(
        the_one_message(&mut open),
        ("_INBOX.r1".into(), b"noon".to_vec())
    );
}

/// ERROR 403 with nats-server's words for a refused `what`.
fn expect_refusal(c: &mut Raw, what: &str) {
    assert_eq!(
        c.expect_error(403),
        format!("Permissions Violation for {what}")
    );
}

/// The one MESSAGE before the answer to a PING: its subject and payload.
fn the_one_message(c: &mut Raw) -> (String, Vec<u8>) {
    let got = msgs_of(&c.frames_until_pong());
    assert_eq!(got.len(), 1, "{got:?}");
    (got[0].subject.clone(), got[0].payload.clone())
}

/// "With "verbose": true every PUBLISH, SUBSCRIBE and UNSUBSCRIBE is treated
/// as if it had flag ACK."
fn verbose_acks_everything(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let mut c = Raw::connect(broker.addr());
    c.do_connect(r#"{"protocol":1,"verbose":true}"#);
    let mut bytes = Vec::new();
    encode::put_subscribe(&mut bytes, b"vb.x", 1, None, false);
    encode::put_publish(&mut bytes, b"vb.other", None, b"p", false);
    encode::put_publish(&mut bytes, b"vb.other", Some(b"r.x"), b"p", false);
    encode::put_unsubscribe(&mut bytes, 1, 0, false);
    encode::put_unsubscribe(&mut bytes, 1, 0, false);
    encode::put_subscribe(&mut bytes, b"vb.y", 2, Some(b"grp"), false);
    encode::put_unsubscribe(&mut bytes, 2, 5, false);
    encode::put_ping(&mut bytes);
    c.send(&bytes);
    c.expect_ok(); // SUBSCRIBE
    c.expect_ok(); // PUBLISH
    c.expect_ok(); // PUBLISH with reply
    c.expect_ok(); // UNSUBSCRIBE
    c.expect_error(404); // UNSUBSCRIBE again: unknown sid
    c.expect_ok(); // SUBSCRIBE in a group
    c.expect_ok(); // UNSUBSCRIBE max 5
    c.expect_pong();

    // Without verbose, frames without ACK get no answer.
    let mut c = Raw::handshake(broker.addr());
    let mut bytes = Vec::new();
    encode::put_subscribe(&mut bytes, b"nv.x", 1, None, false);
    encode::put_publish(&mut bytes, b"nv.other", None, b"p", false);
    encode::put_unsubscribe(&mut bytes, 1, 0, false);
    encode::put_ping(&mut bytes);
    c.send(&bytes);
    c.expect_pong();
    c.expect_silence(QUIET);
}

/// "Answers (OK, ERROR, PONG) come in the order of the frames they answer."
fn answers_in_order(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let mut c = Raw::handshake(broker.addr());
    let mut bytes = Vec::new();
    encode::put_subscribe(&mut bytes, b"ord.a", 1, None, true);
    encode::put_publish(&mut bytes, b"ord.b", None, b"x", true);
    encode::put_ping(&mut bytes);
    encode::put_unsubscribe(&mut bytes, 99, 0, true);
    c.send(&bytes);
    c.expect_ok();
    c.expect_ok();
    c.expect_pong();
    c.expect_error(404);

    // A longer pipeline mixing every kind of answer, in one write.
    let mut bytes = Vec::new();
    encode::put_subscribe(&mut bytes, b"ord.c", 2, None, true); // OK
    encode::put_subscribe(&mut bytes, b"ord.d", 2, None, true); // 409
    encode::put_subscribe(&mut bytes, b"ord..d", 3, None, true); // 400
    encode::put_ping(&mut bytes); // PONG
    encode::put_publish(&mut bytes, b"ord.*", None, b"x", true); // 400
    encode::put_publish(&mut bytes, b"ord.e", None, b"x", true); // OK
    encode::put_unsubscribe(&mut bytes, 2, 0, true); // OK
    encode::put_unsubscribe(&mut bytes, 2, 0, true); // 404
    encode::put_ping(&mut bytes); // PONG
    encode::put_subscribe(&mut bytes, b"ord.f", 2, None, true); // OK (sid reused)
    encode::put_ping(&mut bytes); // PONG
    c.send(&bytes);
    let expected: Vec<(u8, u16)> = vec![
        (Op::Ok as u8, 0),
        (Op::Error as u8, 409),
        (Op::Error as u8, 400),
        (Op::Pong as u8, 0),
        (Op::Error as u8, 400),
        (Op::Ok as u8, 0),
        (Op::Ok as u8, 0),
        (Op::Error as u8, 404),
        (Op::Pong as u8, 0),
        (Op::Ok as u8, 0),
        (Op::Pong as u8, 0),
    ];
    let got: Vec<OwnedFrame> = (0..expected.len()).map(|_| c.read_frame()).collect();
    let got_codes: Vec<(u8, u16)> = got
        .iter()
        .map(|f| (f.op, f.error().map_or(0, |e| e.0)))
        .collect();
    assert_eq!(got_codes, expected, "answers: {got:?}");
    c.expect_silence(QUIET);
}

/// "A MESSAGE that a connection's own PUBLISH delivers to that same
/// connection comes before the answer to any later frame."
fn own_message_before_later_answer(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let mut c = Raw::handshake(broker.addr());
    c.subscribe("own.x", 1);
    c.subscribe("own.*", 2);
    for i in 0..200u32 {
        let mut bytes = Vec::new();
        encode::put_publish(&mut bytes, b"own.x", None, &seq_payload(i), false);
        if i % 2 == 0 {
            encode::put_ping(&mut bytes);
        } else {
            encode::put_subscribe(&mut bytes, b"own.none", 1000 + i, None, true);
        }
        c.send(&bytes);
        let mut sids = Vec::new();
        for _ in 0..2 {
            let m = c.expect_msg();
            assert_eq!(payload_seq(&m.payload), i);
            sids.push(m.sid);
        }
        sids.sort();
        assert_eq!(sids, vec![1, 2], "iteration {i}");
        if i % 2 == 0 {
            c.expect_pong();
        } else {
            c.expect_ok();
            c.unsubscribe(1000 + i, 0);
        }
    }
}

/// "The broker sends PING every ping_interval and closes the connection,
/// after ERROR 408, when max_pings_out are unanswered."
fn server_ping_timeout_408(backend: Backend, workers: usize) {
    let broker = Broker::start_on(
        backend,
        workers,
        &config_with("ping_interval = \"200ms\"\nmax_pings_out = 2", LIMITS, ""),
    );
    let mut c = Raw::handshake(broker.addr());
    let start = Instant::now();
    let frames = c.expect_closed();
    let elapsed = start.elapsed();
    let kinds: Vec<_> = frames
        .iter()
        .map(|f| (f.op, f.error().map_or(0, |e| e.0)))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (Op::Ping as u8, 0),
            (Op::Ping as u8, 0),
            (Op::Error as u8, 408)
        ],
        "expected PING, PING, ERROR 408, close: {frames:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(300),
        "closed after {elapsed:?}, before 2 ping intervals could pass"
    );
}

/// Answering every PING with PONG keeps the connection open.
fn server_ping_answered_stays_open(backend: Backend, workers: usize) {
    let broker = Broker::start_on(
        backend,
        workers,
        &config_with("ping_interval = \"200ms\"\nmax_pings_out = 2", LIMITS, ""),
    );
    let mut c = Raw::handshake(broker.addr());
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(1600) {
        match c.next_frame(Duration::from_millis(100)) {
            Next::Frame(frame) => {
                assert!(frame.is_op(Op::Ping), "expected only PINGs, got {frame:?}");
                pings += 1;
                c.pong();
            }
            Next::Timeout => {}
            Next::Closed => panic!("closed although every PING was answered (after {pings} PINGs)"),
        }
    }
    assert!(
        pings >= 4,
        "only {pings} PINGs in 1.6 s with ping_interval 200ms"
    );
    // Still fully usable.
    c.subscribe("pa.x", 1);
    c.publish("pa.x", b"x");
    loop {
        let frame = c.read_frame();
        if frame.is_op(Op::Ping) {
            c.pong();
            continue;
        }
        assert!(as_msg(&frame).is_some(), "expected MESSAGE, got {frame:?}");
        break;
    }
}

/// "DISCONNECT from the client: the broker flushes what it has queued for
/// that client ... then closes."
fn client_disconnect_flushes(backend: Backend, workers: usize) {
    let broker = Broker::start_on(
        backend,
        workers,
        &config_with("", "max_payload = 1024\nmax_pending_bytes = 8388608", ""),
    );
    let mut s = Raw::handshake_on_worker(broker.addr(), 0);
    s.subscribe("dq.x", 1);
    let mut p = Raw::handshake_on_worker(broker.addr(), spread(1, workers));
    let n = 600u32;
    let mut bytes = Vec::new();
    for i in 0..n {
        let mut payload = seq_payload(i);
        payload.resize(1000, b'd');
        encode::put_publish(&mut bytes, b"dq.x", None, &payload, false);
    }
    p.send(&bytes);
    p.ping_pong(); // every message is now queued for s
    s.send_frame(|b| encode::put_disconnect(b, ""));
    let frames = s.expect_closed_within(Duration::from_secs(10));
    let msgs = msgs_of(&frames);
    let seqs: Vec<u32> = msgs.iter().map(|m| payload_seq(&m.payload)).collect();
    assert_eq!(
        seqs,
        (0..n).collect::<Vec<_>>(),
        "messages flushed before the close"
    );
    assert!(msgs
        .iter()
        .all(|m| m.sid == 1 && m.subject == "dq.x" && m.payload.len() == 1000));
}

/// "... for at most drain_timeout, then closes": a client that sends
/// DISCONNECT and then does not read is closed once drain_timeout has
/// passed, and what was still queued is dropped.
fn client_disconnect_flush_bounded(backend: Backend, workers: usize) {
    let broker = Broker::start_on(
        backend,
        workers,
        "[server]\ndrain_timeout = \"1s\"\n[limits]\nmax_payload = 1024\nmax_pending_bytes = 33554432\n",
    );
    let mut s = small_rcvbuf_handshake_on_worker(broker.addr(), 4096, Some(0));
    s.subscribe("db.x", 1);
    let mut p = Raw::handshake_on_worker(broker.addr(), spread(1, workers));
    let n = 12_000u32;
    let mut batch = Vec::new();
    for i in 0..n {
        let mut payload = seq_payload(i);
        payload.resize(1000, b'b');
        encode::put_publish(&mut batch, b"db.x", None, &payload, false);
        if batch.len() >= 64 * 1024 {
            p.send(&batch);
            batch.clear();
        }
    }
    p.send(&batch);
    p.ping_pong();
    s.send_frame(|b| encode::put_disconnect(b, ""));
    // Waiting for drain_timeout (1 s) to pass, plus a margin, is the point.
    std::thread::sleep(Duration::from_millis(2500));
    // Cut off at the timeout, the last frame may be incomplete.
    let (frames, _partial) = s.expect_closed_allow_partial_within(Duration::from_secs(10));
    let msgs = msgs_of(&frames);
    assert!(
        (msgs.len() as u32) < n,
        "all {n} messages (12 MB) were still sent 1.5 s after drain_timeout: the broker did not close at drain_timeout"
    );
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(payload_seq(&m.payload), i as u32, "gap in what was flushed");
    }
    p.ping_pong();
}

/// 503 "connection limit reached": closed (server.max_connections counts
/// the whole broker).
fn connection_limit_503(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, "[server]\nmax_connections = 3\n");
    check_limit_of_three(broker.addr(), "connection limit reached");
}

// ---------------------------------------------------------------------------
// Subjects
// ---------------------------------------------------------------------------

/// `*` matches exactly one token, a last `>` one or more (`a.>` not `a`),
/// `*`/`>` inside a longer token are literal, subjects are case-sensitive.
fn wildcard_semantics(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let filters: &[(u32, &str)] = &[
        (1, "a.*"),
        (2, "a.>"),
        (3, "a"),
        (4, "*.b"),
        (5, ">"),
        (6, "a.b.c"),
        (7, "a*.b"),
        (8, "a.b>"),
        (9, "A.b"),
        (10, "*"),
        (11, "*.*.c"),
        (12, "a.*.>"),
        (13, "é.*"),
    ];
    let cases: &[(&str, &[u32])] = &[
        ("a", &[3, 5, 10]),
        ("a.b", &[1, 2, 4, 5]),
        ("a.b.c", &[2, 5, 6, 11, 12]),
        ("a.b.c.d", &[2, 5, 12]),
        ("ab.b", &[4, 5]),
        ("a*.b", &[4, 5, 7]),
        ("a.b>", &[1, 2, 5, 8]),
        ("a.b*", &[1, 2, 5]),
        ("A.b", &[4, 5, 9]),
        ("A", &[5, 10]),
        ("x.y.c", &[5, 11]),
        ("b", &[5, 10]),
        ("é.b", &[4, 5, 13]),
        ("aa.b.c", &[5, 11]),
    ];
    // One connection: its own publications arrive before the PONG.
    let mut c = Raw::handshake(broker.addr());
    for (sid, filter) in filters {
        c.subscribe(filter, *sid);
    }
    for (subject, expected) in cases {
        c.publish(subject, subject.as_bytes());
        let frames = c.frames_until_pong();
        let msgs = msgs_of(&frames);
        for m in &msgs {
            assert_eq!(m.subject, *subject);
            assert_eq!(m.payload, subject.as_bytes());
        }
        let mut sids: Vec<u32> = msgs.iter().map(|m| m.sid).collect();
        sids.sort();
        assert_eq!(&sids, expected, "subject {subject:?}: matched sids");
    }
    // Another connection (the other worker, if any) sees the same matches.
    let mut s = Raw::handshake_on_worker(broker.addr(), 0);
    for (sid, filter) in filters {
        s.subscribe(filter, *sid);
    }
    let mut p = Raw::handshake_on_worker(broker.addr(), spread(1, workers));
    for (subject, expected) in cases {
        p.publish(subject, subject.as_bytes());
        p.ping_pong();
        let mut sids: Vec<u32> = s.read_msgs(expected.len()).iter().map(|m| m.sid).collect();
        sids.sort();
        assert_eq!(
            &sids, expected,
            "subject {subject:?} from another connection"
        );
    }
    s.expect_silence(QUIET);
}

fn long_name(len: usize) -> String {
    let mut s = String::from("l.");
    while s.len() < len {
        s.push('x');
    }
    s
}

/// "An invalid SUBSCRIBE filter gets ERROR 400 with a reason containing
/// "invalid subject". The connection stays open." `>` as a token anywhere
/// but last is invalid; so are empty tokens, whitespace, control characters,
/// non-UTF-8 and over max_topic_length (32 here).
fn invalid_filters_400_open(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let mut c = Raw::handshake(broker.addr());
    let long = long_name(33);
    let bad: Vec<&[u8]> = vec![
        b"a.>.b",
        b">.a",
        b">.>",
        b"a..b",
        b".a",
        b"a.",
        b".",
        b"",
        b"a b",
        b"a\tb",
        b"a\nb",
        b"a\rb",
        b"a\x01b",
        b"a\x7fb",
        b"a.\xff",
        "a\u{a0}b".as_bytes(),
        "a.\u{2003}".as_bytes(),
        "a\u{85}b".as_bytes(),
        long.as_bytes(),
    ];
    for (i, filter) in bad.iter().enumerate() {
        let sid = 100 + i as u32;
        c.send_frame(|b| encode::put_subscribe(b, filter, sid, None, true));
        let frame = c.read_frame();
        match frame.error() {
            Some((400, reason)) if reason.contains("invalid subject") => {}
            _ => panic!(
                "filter {:?}: expected ERROR 400 \"invalid subject\", got {frame:?}",
                String::from_utf8_lossy(filter)
            ),
        }
        c.ping_pong();
    }
    // Nothing was created: the sids are free.
    c.subscribe("ok.filter", 100);
    c.subscribe(&long_name(32), 101);
    c.publish(&long_name(32), b"x");
    let msgs = msgs_of(&c.frames_until_pong());
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].sid, 101);

    // Without ACK the ERROR is sent as well.
    c.send_frame(|b| encode::put_subscribe(b, b"a..b", 200, None, false));
    let reason = c.expect_error(400);
    assert!(reason.contains("invalid subject"), "{reason}");
    c.ping_pong();
}

/// "A PUBLISH subject or reply subject with a `*` or `>` token, an empty
/// token, or over the length limit gets ERROR 400 with a reason containing
/// "invalid subject". The connection stays open." Nothing is delivered.
fn invalid_publish_subjects_400_open(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let mut c = Raw::handshake(broker.addr());
    c.subscribe(">", 1);
    let long = long_name(33);
    let long_utf8 = format!("{}é", long_name(31));
    assert_eq!((long_utf8.len(), long_utf8.chars().count()), (33, 32));
    let bad: Vec<&[u8]> = vec![
        b"a.*",
        b"a.>",
        b"*",
        b">",
        b"*.a",
        b"a.*.b",
        b"a..b",
        b".a",
        b"a.",
        b"",
        b"a b",
        b"a\x01",
        b"\xff",
        long.as_bytes(),
        // 32 characters but 33 bytes: the limit counts bytes.
        long_utf8.as_bytes(),
    ];
    for subject in &bad {
        for ack in [true, false] {
            c.send_frame(|b| encode::put_publish(b, subject, None, b"x", ack));
            let frames = c.frames_until_pong();
            match frames.as_slice() {
                [only] if only.error().is_some_and(|(code, r)| code == 400 && r.contains("invalid subject")) => {}
                _ => panic!(
                    "PUBLISH to {:?} (ack {ack}): expected only ERROR 400 \"invalid subject\" before PONG, got {frames:?}",
                    String::from_utf8_lossy(subject)
                ),
            }
        }
    }
    let bad_replies: Vec<&[u8]> = vec![
        b"r.*",
        b"r.>",
        b">",
        b"r..x",
        b"",
        b".r",
        b"r x",
        long.as_bytes(),
    ];
    for reply in &bad_replies {
        c.send_frame(|b| encode::put_publish(b, b"ok.subject", Some(reply), b"x", true));
        let frames = c.frames_until_pong();
        match frames.as_slice() {
            [only] if only.error().is_some_and(|(code, r)| code == 400 && r.contains("invalid subject")) => {}
            _ => panic!(
                "PUBLISH with reply {:?}: expected only ERROR 400 \"invalid subject\" before PONG, got {frames:?}",
                String::from_utf8_lossy(reply)
            ),
        }
    }
    // Literal `*`/`>` inside tokens and exactly max_topic_length are valid.
    for subject in ["a*.b", "a.b>", "x*y", ">a", &long_name(32)] {
        c.send_frame(|b| encode::put_publish(b, subject.as_bytes(), Some(b"r.ok"), b"v", true));
        let frames = c.frames_until_pong();
        let oks = frames.iter().filter(|f| f.is_op(Op::Ok)).count();
        let msgs: Vec<Msg> = frames.iter().filter_map(as_msg).collect();
        assert_eq!(
            (oks, msgs.len()),
            (1, 1),
            "PUBLISH to {subject:?}: {frames:?}"
        );
        assert_eq!(msgs[0].subject, subject);
        assert_eq!(msgs[0].reply.as_deref(), Some("r.ok"));
    }
}

/// "A queue group name follows the rules of a single token."
fn invalid_queue_names_400(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let bad: &[&[u8]] = &[b"q.x", b"q x", b"q\tx", b"q\x01", b".", b"q.", b"\xff"];
    for queue in bad {
        let mut c = Raw::handshake(broker.addr());
        c.send_frame(|b| encode::put_subscribe(b, b"qn.x", 1, Some(queue), true));
        let frame = c.read_frame();
        assert_eq!(
            frame.error().map(|e| e.0),
            Some(400),
            "queue {:?}: expected ERROR 400, got {frame:?}",
            String::from_utf8_lossy(queue)
        );
    }
    let mut c = Raw::handshake(broker.addr());
    c.subscribe_queue("qn.x", 1, "workers-1_ok");
    c.subscribe_queue("qn.y", 2, "é");
}

// ---------------------------------------------------------------------------
// Delivery
// ---------------------------------------------------------------------------

/// "A message goes to every matching subscription that is not in a queue
/// group", in publish order.
fn every_plain_subscription_gets_it(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let mut subs: Vec<Raw> = (0..4)
        .map(|i| {
            let mut s = Raw::handshake_on_worker(broker.addr(), spread(i, workers));
            s.subscribe(if i % 2 == 0 { "ev.x" } else { "ev.*" }, 10 + i as u32);
            s
        })
        .collect();
    let mut p = Raw::handshake_on_worker(broker.addr(), 0);
    for i in 0..50u32 {
        p.publish("ev.x", &seq_payload(i));
    }
    p.ping_pong();
    for (i, s) in subs.iter_mut().enumerate() {
        let msgs = s.read_msgs(50);
        for (seq, m) in msgs.iter().enumerate() {
            assert_eq!((m.subject.as_str(), m.sid), ("ev.x", 10 + i as u32));
            assert_eq!(payload_seq(&m.payload), seq as u32, "subscriber {i}: order");
        }
        s.expect_silence(Duration::from_millis(100));
    }
}

/// Reads every member of a queue group until they hold `n` messages in
/// total; returns the sequence numbers each member got.
fn collect_group(members: &mut [Raw], n: usize) -> Vec<Vec<u32>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); members.len()];
    while got.iter().map(Vec::len).sum::<usize>() < n {
        assert!(
            Instant::now() < deadline,
            "queue group received {} of {n} messages in 15 s (per member: {:?})",
            got.iter().map(Vec::len).sum::<usize>(),
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        for (i, member) in members.iter_mut().enumerate() {
            while let Next::Frame(frame) = member.next_frame(Duration::from_millis(20)) {
                let m = as_msg(&frame)
                    .unwrap_or_else(|| panic!("member {i}: expected MESSAGE, got {frame:?}"));
                got[i].push(payload_seq(&m.payload));
            }
        }
    }
    got
}

fn check_group(name: &str, got: &[Vec<u32>], n: u32) {
    let total: usize = got.iter().map(Vec::len).sum();
    assert_eq!(total, n as usize, "{name}: total delivered");
    let mut all: Vec<u32> = got.iter().flatten().copied().collect();
    all.sort();
    assert_eq!(
        all,
        (0..n).collect::<Vec<_>>(),
        "{name}: every message exactly once"
    );
    for (i, seqs) in got.iter().enumerate() {
        assert!(
            !seqs.is_empty(),
            "{name}: member {i} got nothing of {n} (per member: {:?})",
            got.iter().map(Vec::len).collect::<Vec<_>>()
        );
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{name}: member {i} out of order"
        );
    }
}

/// "... and to exactly one member of each matching queue group."
fn queue_group_exactly_one_member(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let n = 300u32;
    let mut g: Vec<Raw> = (0..3)
        .map(|i| {
            let mut s = Raw::handshake_on_worker(broker.addr(), spread(i, workers));
            s.subscribe_queue("qg.x", 1, "g");
            s
        })
        .collect();
    let mut h: Vec<Raw> = (0..2)
        .map(|i| {
            let mut s = Raw::handshake_on_worker(broker.addr(), spread(i + 1, workers));
            s.subscribe_queue("qg.*", 7, "h");
            s
        })
        .collect();
    let mut plain = Raw::handshake(broker.addr());
    plain.subscribe("qg.x", 3);
    let mut p = Raw::handshake(broker.addr());
    let mut bytes = Vec::new();
    for i in 0..n {
        encode::put_publish(&mut bytes, b"qg.x", None, &seq_payload(i), false);
    }
    p.send(&bytes);
    p.ping_pong();

    let got_g = collect_group(&mut g, n as usize);
    let got_h = collect_group(&mut h, n as usize);
    let plain_msgs = plain.read_msgs(n as usize);
    assert!(plain_msgs
        .iter()
        .enumerate()
        .all(|(i, m)| payload_seq(&m.payload) == i as u32 && m.sid == 3));
    for m in g.iter_mut().chain(h.iter_mut()) {
        m.expect_silence(Duration::from_millis(100));
    }
    plain.expect_silence(Duration::from_millis(100));
    check_group("group g", &got_g, n);
    check_group("group h", &got_h, n);
}

/// "A connection with several matching subscriptions gets one MESSAGE per
/// subscription, each with that subscription's sid."
fn one_message_per_matching_subscription(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let mut s = Raw::handshake_on_worker(broker.addr(), 0);
    s.subscribe("m.*", 1);
    s.subscribe("m.x", 2);
    s.subscribe(">", 3);
    s.subscribe("m.y", 4);
    s.subscribe_queue("m.x", 5, "solo");
    s.subscribe("m.x", 6); // the same filter twice: two subscriptions
    let mut p = Raw::handshake_on_worker(broker.addr(), spread(1, workers));
    p.publish("m.x", b"one");
    p.ping_pong();
    let mut sids: Vec<u32> = s.read_msgs(5).iter().map(|m| m.sid).collect();
    sids.sort();
    assert_eq!(sids, vec![1, 2, 3, 5, 6]);
    s.expect_silence(QUIET);
    // Own publication: the same, all before the PONG.
    s.publish("m.x", b"two");
    let mut sids: Vec<u32> = msgs_of(&s.frames_until_pong())
        .iter()
        .map(|m| m.sid)
        .collect();
    sids.sort();
    assert_eq!(sids, vec![1, 2, 3, 5, 6]);
}

/// "Per publisher connection and per subscription, messages arrive in
/// publish order."
fn per_publisher_order(backend: Backend, workers: usize) {
    let broker = Broker::start_on(
        backend,
        workers,
        &config_with("", "max_pending_bytes = 16777216", ""),
    );
    let n = 3000u32;
    let mut s = Raw::handshake_on_worker(broker.addr(), (workers - 1) as u32);
    s.subscribe("or.x", 1);
    s.subscribe("or.*", 2);
    let mut pubs: Vec<Raw> = (0..2)
        .map(|i| Raw::handshake_on_worker(broker.addr(), spread(i, workers)))
        .collect();
    // Interleave the publishers' writes.
    for chunk in 0..(n / 500) {
        for (id, p) in pubs.iter_mut().enumerate() {
            let mut bytes = Vec::new();
            for i in chunk * 500..(chunk + 1) * 500 {
                let mut payload = vec![id as u8];
                payload.extend_from_slice(&i.to_be_bytes());
                encode::put_publish(&mut bytes, b"or.x", None, &payload, false);
            }
            p.send(&bytes);
        }
    }
    for p in pubs.iter_mut() {
        p.ping_pong();
    }
    let mut next: BTreeMap<(u32, u8), u32> = BTreeMap::new();
    for _ in 0..(n * 4) {
        let m = s.expect_msg();
        let id = m.payload[0];
        let seq = u32::from_be_bytes(m.payload[1..5].try_into().unwrap());
        let want = next.entry((m.sid, id)).or_insert(0);
        assert_eq!(
            seq, *want,
            "sid {} publisher {id}: out of order or lost",
            m.sid
        );
        *want += 1;
    }
    assert!(next.values().all(|&v| v == n), "{next:?}");
    s.expect_silence(Duration::from_millis(100));
}

/// "UNSUBSCRIBE with max_msgs = N > 0: the subscription is removed once it
/// has received N messages in total, counting those received before the
/// UNSUBSCRIBE; at once if it already has. Without max_msgs, or with 0, it
/// is removed at once. A removed sid is free: UNSUBSCRIBE of it gets ERROR
/// 404, and SUBSCRIBE may use it again."
fn unsubscribe_max_msgs(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let mut c = Raw::handshake(broker.addr());
    let publish_n = |c: &mut Raw, subject: &str, from: u32, n: u32| {
        let mut bytes = Vec::new();
        for i in from..from + n {
            encode::put_publish(&mut bytes, subject.as_bytes(), None, &seq_payload(i), false);
        }
        c.send(&bytes);
    };

    // 2 before, max 5: 3 more, then removed.
    c.subscribe("u.x", 1);
    publish_n(&mut c, "u.x", 0, 2);
    assert_eq!(msgs_of(&c.frames_until_pong()).len(), 2);
    c.unsubscribe(1, 5);
    publish_n(&mut c, "u.x", 2, 10);
    let seqs: Vec<u32> = msgs_of(&c.frames_until_pong())
        .iter()
        .map(|m| payload_seq(&m.payload))
        .collect();
    assert_eq!(
        seqs,
        vec![2, 3, 4],
        "max_msgs 5 counts the 2 received before"
    );
    c.send_frame(|b| encode::put_unsubscribe(b, 1, 0, true));
    c.expect_error(404);
    // The sid is free again.
    c.subscribe("u.y", 1);
    c.publish("u.x", b"no");
    c.publish("u.y", b"yes");
    let msgs = msgs_of(&c.frames_until_pong());
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!((msgs[0].subject.as_str(), msgs[0].sid), ("u.y", 1));

    // Already reached (3 received, max 2; and 3 received, max 3): at once.
    for (sid, max) in [(2u32, 2u32), (3, 3)] {
        let subject = format!("ur.{sid}");
        c.subscribe(&subject, sid);
        publish_n(&mut c, &subject, 0, 3);
        assert_eq!(msgs_of(&c.frames_until_pong()).len(), 3);
        c.unsubscribe(sid, max);
        publish_n(&mut c, &subject, 3, 2);
        assert_eq!(
            msgs_of(&c.frames_until_pong()).len(),
            0,
            "max {max} already reached"
        );
        c.send_frame(|b| encode::put_unsubscribe(b, sid, 0, true));
        c.expect_error(404);
    }

    // max_msgs 0 (an explicit 8-byte body) and no max_msgs: at once.
    c.subscribe("uz.a", 4);
    c.subscribe("uz.b", 5);
    c.send(&raw_frame(0x04, ACK, b"", &[0, 0, 0, 4, 0, 0, 0, 0]));
    c.expect_ok();
    c.send(&raw_frame(0x04, ACK, b"", &[0, 0, 0, 5]));
    c.expect_ok();
    c.publish("uz.a", b"x");
    c.publish("uz.b", b"x");
    assert_eq!(msgs_of(&c.frames_until_pong()).len(), 0);
    for sid in [4, 5] {
        c.send_frame(|b| encode::put_unsubscribe(b, sid, 0, true));
        c.expect_error(404);
    }

    // max_msgs 1 on a fresh subscription: exactly one.
    c.subscribe("u1.x", 6);
    c.unsubscribe(6, 1);
    publish_n(&mut c, "u1.x", 0, 5);
    assert_eq!(msgs_of(&c.frames_until_pong()).len(), 1);

    // UNSUBSCRIBE (with max_msgs) of a sid never used: 404.
    c.send_frame(|b| encode::put_unsubscribe(b, 4242, 3, true));
    c.expect_error(404);
    c.ping_pong();
}

/// Auto-unsubscribe counts messages from another connection (and worker).
fn unsubscribe_max_msgs_other_publisher(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let mut s = Raw::handshake_on_worker(broker.addr(), 0);
    let mut p = Raw::handshake_on_worker(broker.addr(), spread(1, workers));
    s.subscribe("au.x", 1);
    p.publish("au.x", &seq_payload(0));
    p.ping_pong();
    assert_eq!(payload_seq(&s.expect_msg().payload), 0);
    s.unsubscribe(1, 5);
    for i in 1..40 {
        p.publish("au.x", &seq_payload(i));
    }
    p.ping_pong();
    let seqs: Vec<u32> = s
        .read_msgs(4)
        .iter()
        .map(|m| payload_seq(&m.payload))
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    s.expect_silence(QUIET);
    s.send_frame(|b| encode::put_unsubscribe(b, 1, 0, true));
    s.expect_error(404);
}

/// 409: "SUBSCRIBE with a sid already in use on this connection"; open.
fn sid_in_use_409(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let mut c = Raw::handshake(broker.addr());
    c.subscribe("dup.a", 1);
    c.send_frame(|b| encode::put_subscribe(b, b"dup.b", 1, None, true));
    c.expect_error(409);
    c.send_frame(|b| encode::put_subscribe(b, b"dup.a", 1, Some(b"q"), true));
    c.expect_error(409);
    c.ping_pong();
    // The first subscription is intact; the refused ones do not exist.
    c.publish("dup.a", b"a");
    c.publish("dup.b", b"b");
    let msgs = msgs_of(&c.frames_until_pong());
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!((msgs[0].subject.as_str(), msgs[0].sid), ("dup.a", 1));
    // Another connection may use the same sid.
    let mut d = Raw::handshake(broker.addr());
    d.subscribe("dup.a", 1);
}

/// 429: "subscription limit exceeded (the frame is refused)"; open.
fn subscription_limit_429(backend: Backend, workers: usize) {
    let broker = Broker::start_on(
        backend,
        workers,
        &config_with("", "max_subscriptions = 4", ""),
    );
    let mut c = Raw::handshake(broker.addr());
    for sid in 1..=4 {
        c.subscribe(&format!("lim.{sid}"), sid);
    }
    c.send_frame(|b| encode::put_subscribe(b, b"lim.5", 5, None, true));
    c.expect_error(429);
    c.ping_pong();
    c.publish("lim.5", b"x");
    c.publish("lim.1", b"x");
    let msgs = msgs_of(&c.frames_until_pong());
    assert_eq!(
        msgs.len(),
        1,
        "the refused subscription must not exist: {msgs:?}"
    );
    assert_eq!(msgs[0].sid, 1);
    // A freed slot can be used again.
    c.unsubscribe(4, 0);
    c.subscribe("lim.5", 5);
    c.send_frame(|b| encode::put_subscribe(b, b"lim.6", 6, None, true));
    c.expect_error(429);
    // The limit is per connection.
    let mut d = Raw::handshake(broker.addr());
    for sid in 1..=4 {
        d.subscribe(&format!("lim.{sid}"), sid);
    }
}

/// "A subscriber whose unsent backlog exceeds max_pending_bytes is a slow
/// consumer: the broker sends it ERROR 503 "slow consumer" where its socket
/// still takes bytes, then closes it." Publishers are not cut; the broker
/// keeps serving.
fn slow_consumer_cut(backend: Backend, workers: usize) {
    let mut broker = Broker::start_on(
        backend,
        workers,
        &config_with("", "max_payload = 1024\nmax_pending_bytes = 65536", ""),
    );
    let mut s = small_rcvbuf_handshake_on_worker(broker.addr(), 4096, Some((workers - 1) as u32));
    s.subscribe("sc.x", 1);
    let mut p = Raw::handshake_on_worker(broker.addr(), 0);
    // 16 MiB through a 4 KiB receive window: far past 64 KiB of backlog.
    let mut batch = Vec::new();
    let n = 16_000u32;
    for i in 0..n {
        let mut payload = seq_payload(i);
        payload.resize(1000, b's');
        encode::put_publish(&mut batch, b"sc.x", None, &payload, false);
        if batch.len() >= 64 * 1024 {
            p.try_send(&batch).unwrap_or_else(|e| {
                panic!("publisher blocked or cut while a subscriber is slow: {e}")
            });
            batch.clear();
        }
    }
    p.send(&batch);
    p.ping_pong();

    // A connection cut for not reading may end inside a frame.
    let (frames, _partial) = s.expect_closed_allow_partial_within(Duration::from_secs(10));
    let mut expected = 0u32;
    for (i, frame) in frames.iter().enumerate() {
        if let Some(m) = as_msg(frame) {
            assert_eq!(
                payload_seq(&m.payload),
                expected,
                "slow consumer: a message went missing before the cut"
            );
            expected += 1;
        } else {
            let (code, reason) = frame
                .error()
                .unwrap_or_else(|| panic!("unexpected {frame:?}"));
            assert_eq!(code, 503, "{frame:?}");
            assert!(reason.contains("slow consumer"), "{frame:?}");
            assert_eq!(i, frames.len() - 1, "frames after the 503");
        }
    }
    assert!(
        expected < n,
        "the slow consumer received everything: it was never slow"
    );

    // The publisher stays connected, the broker serves new clients.
    p.ping_pong();
    broker.assert_alive();
    assert_serves_fresh_client(broker.addr());
}

/// "Publishers are paced by backpressure": a subscriber that reads more
/// slowly than its publisher sends, through a small window, holds the
/// publisher back (README, pacing) and gets every message in order, though
/// the stream is 30 times max_pending_bytes; nobody is cut.
fn slow_reader_is_paced_not_cut(backend: Backend, workers: usize) {
    const COUNT: u32 = 2000;
    let mut broker = Broker::start_on(
        backend,
        workers,
        &config_with("", "max_payload = 1024\nmax_pending_bytes = 65536", ""),
    );
    let mut s = small_rcvbuf_handshake_on_worker(broker.addr(), 4096, Some((workers - 1) as u32));
    s.subscribe("pace.x", 1);
    let mut p = Raw::handshake_on_worker(broker.addr(), 0);
    let publisher = std::thread::spawn(move || {
        let mut batch = Vec::new();
        for i in 0..COUNT {
            let mut payload = seq_payload(i);
            payload.resize(1000, b'p');
            encode::put_publish(&mut batch, b"pace.x", None, &payload, false);
        }
        p.send(&batch);
        p.ping_pong();
        p
    });
    for i in 0..COUNT {
        // Far slower than the publisher: a pause every 16 messages.
        if i % 16 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let m = s.expect_msg();
        assert_eq!(payload_seq(&m.payload), i, "out of order or lost");
    }
    let mut p = publisher.join().expect("publisher");
    s.ping_pong();
    p.ping_pong();
    broker.assert_alive();
}

/// "DISCONNECT from the broker (draining for shutdown)": on SIGTERM every
/// client gets DISCONNECT "draining", and the broker exits 0 within
/// drain_timeout.
fn drain_on_sigterm(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG); // drain_timeout = 2s
    let mut clients: Vec<Raw> = (0..2 * workers)
        .map(|i| Raw::handshake_on_worker(broker.addr(), spread(i, workers)))
        .collect();
    clients[0].subscribe("dr.x", 1);
    let mut pre_connect = Raw::connect(broker.addr());
    let start = Instant::now();
    broker.send_sigterm();
    for (i, c) in clients.iter_mut().enumerate() {
        let frames = c.expect_closed_within(Duration::from_secs(5));
        let disconnect = frames.iter().find_map(|f| match f.parse() {
            ServerFrame::Disconnect { reason } => {
                Some(String::from_utf8_lossy(reason).into_owned())
            }
            _ => None,
        });
        match disconnect {
            Some(reason) if reason.contains("draining") => {}
            _ => panic!("client {i}: expected DISCONNECT \"draining\", got {frames:?}"),
        }
        for f in &frames {
            let ok = f.is_op(Op::Disconnect) || f.error().is_some_and(|e| e.0 == 503);
            assert!(ok, "client {i}: unexpected frame while draining: {f:?}");
        }
    }
    // The one that never sent CONNECT is closed as well.
    let _ = pre_connect.expect_closed_within(Duration::from_secs(5));
    let mut broker = broker;
    let status = broker
        .wait_exit(Duration::from_secs(5))
        .expect("blipmqd still running 5 s after SIGTERM with drain_timeout 2s");
    assert!(status.success(), "exit status after drain: {status:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        start.elapsed()
    );
}

/// While draining the broker takes no new clients: a connection attempt is
/// refused, or answered with ERROR 503 and closed; it never gets a session.
fn drain_refuses_new_clients(backend: Backend, workers: usize) {
    let mut broker = Broker::start_on(
        backend,
        workers,
        "[server]\ndrain_timeout = \"3s\"\n[limits]\nmax_payload = 1024\nmax_pending_bytes = 33554432\n",
    );
    // A client that does not read keeps the drain going for drain_timeout.
    let mut stuck = small_rcvbuf_handshake_on_worker(broker.addr(), 4096, None);
    stuck.subscribe("dn.x", 1);
    let mut p = Raw::handshake(broker.addr());
    let mut bytes = Vec::new();
    for _ in 0..12_000 {
        encode::put_publish(&mut bytes, b"dn.x", None, &[b'n'; 1000], false);
    }
    p.send(&bytes);
    p.ping_pong();
    let mut idle: Vec<Raw> = (0..workers as u32)
        .map(|w| Raw::handshake_on_worker(broker.addr(), w))
        .collect();
    broker.send_sigterm();
    // Every worker has begun draining once its client got DISCONNECT.
    for c in idle.iter_mut() {
        let frame = c.read_frame();
        assert!(
            frame.is_op(Op::Disconnect),
            "expected DISCONNECT, got {frame:?}"
        );
    }
    assert!(
        broker.is_alive(),
        "the drain should last up to drain_timeout with a stuck client"
    );
    for attempt in 0..10 {
        let stream = match tcp_connect(broker.addr(), TIMEOUT) {
            Ok(stream) => stream,
            Err(_) => continue, // refused: fine
        };
        let mut c = Raw::wrap_stream(stream);
        let _ = c.try_send(&connect_bytes(r#"{"protocol":1}"#));
        let (frames, _) = c.expect_closed_allow_partial_within(Duration::from_secs(5));
        for f in &frames {
            let fine = f.is_op(Op::Info) || f.error().is_some_and(|e| e.0 == 503);
            assert!(
                fine,
                "new connection {attempt} while draining got {frames:?}"
            );
        }
    }
    drop(stuck);
    let status = broker
        .wait_exit(Duration::from_secs(6))
        .expect("exit after the drain");
    assert!(status.success(), "{status:?}");
}

/// A client that does not read holds the drain for drain_timeout, not longer.
fn drain_bounded_with_stuck_client(backend: Backend, workers: usize) {
    let mut broker = Broker::start_on(
        backend,
        workers,
        &config_with("", "max_payload = 1024\nmax_pending_bytes = 33554432", ""),
    );
    let mut s = small_rcvbuf_handshake_on_worker(broker.addr(), 4096, None);
    s.subscribe("st.x", 1);
    let mut p = Raw::handshake(broker.addr());
    let mut bytes = Vec::new();
    for _ in 0..12_000 {
        encode::put_publish(&mut bytes, b"st.x", None, &[b'z'; 1000], false);
    }
    p.send(&bytes);
    p.ping_pong();
    let start = Instant::now();
    broker.send_sigterm();
    let status = broker
        .wait_exit(Duration::from_secs(6))
        .expect("blipmqd still running 6 s after SIGTERM with drain_timeout 2s and a stuck client");
    assert!(status.success(), "exit status: {status:?}");
    // blipmq.toml: drain_timeout is "how long to wait for queued data to
    // reach clients": the stuck client's 12 MB keep the drain going that long.
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "exited {:?} after SIGTERM although 12 MB were still queued for a client",
        start.elapsed()
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "drain took {:?}",
        start.elapsed()
    );
    drop(s);
}

for_backends! {
    workers: [
    framing_example_byte_for_byte,
    oversize_frame_refused_at_header,
    oversize_frame_before_connect,
    publish_payload_limit,
    malformed_frames_close_with_400,
    malformed_after_valid_frames,
    info_fields,
    first_frame_not_connect_401,
    first_frame_malformed_400,
    connect_body_rules,
    token_auth,
    users_and_permissions,
    verbose_acks_everything,
    answers_in_order,
    own_message_before_later_answer,
    server_ping_timeout_408,
    server_ping_answered_stays_open,
    client_disconnect_flushes,
    client_disconnect_flush_bounded,
    connection_limit_503,
    wildcard_semantics,
    invalid_filters_400_open,
    invalid_publish_subjects_400_open,
    invalid_queue_names_400,
    every_plain_subscription_gets_it,
    queue_group_exactly_one_member,
    queue_member_max_msgs_no_loss,
    one_message_per_matching_subscription,
    per_publisher_order,
    unsubscribe_max_msgs,
    unsubscribe_max_msgs_other_publisher,
    sid_in_use_409,
    subscription_limit_429,
    slow_consumer_cut,
    slow_reader_is_paced_not_cut,
    drain_on_sigterm,
    drain_refuses_new_clients,
    drain_bounded_with_stuck_client,
    ],
    two_workers: [
        two_workers_subscribe_ok_visible_to_other_worker,
        two_workers_pong_after_publish_reaches_other_worker,
        two_workers_queue_group_spans_workers,
        two_workers_unsubscribe_across_workers,
        two_workers_small_ring_no_loss,
        two_workers_queue_group_member_churn_no_loss,
        two_workers_interest_is_counted_per_subscription,
    ],
}

// ---------------------------------------------------------------------------
// Two workers: the cross-worker rules
// ---------------------------------------------------------------------------

/// Visibility: "once the broker has answered a client's SUBSCRIBE with OK ...
/// every publisher on every worker sees that subscription" (protocol.md:
/// "A PONG or OK means that every earlier frame of the connection took
/// effect: earlier SUBSCRIBEs are visible to every publisher on the broker").
fn two_workers_subscribe_ok_visible_to_other_worker(backend: Backend) {
    // Every subscription stays: the index grows while the race is probed.
    let broker = Broker::start_on(backend, 2, &config_with("", "max_subscriptions = 1000", ""));
    for (sw, pw) in [(0u32, 1u32), (1, 0)] {
        let mut s = Raw::handshake_on_worker(broker.addr(), sw);
        let mut p = Raw::handshake_on_worker(broker.addr(), pw);
        for i in 0..200u32 {
            let subject = format!("vis.{sw}.{i}");
            s.subscribe(&subject, i + 1);
            p.publish(&subject, &seq_payload(i));
            let m = s.expect_msg();
            assert_eq!(
                (m.subject.as_str(), m.sid, payload_seq(&m.payload)),
                (subject.as_str(), i + 1, i)
            );
        }
        // The PONG form: SUBSCRIBE without ACK, then PING.
        for i in 0..100u32 {
            let subject = format!("visp.{sw}.{i}");
            s.send_frame(|b| encode::put_subscribe(b, subject.as_bytes(), 1000 + i, None, false));
            s.ping_pong();
            p.publish(&subject, &seq_payload(i));
            let m = s.expect_msg();
            assert_eq!((m.subject.as_str(), m.sid), (subject.as_str(), 1000 + i));
        }
        s.expect_silence(Duration::from_millis(100));
    }
}

/// "A PONG or OK means ... earlier PUBLISHes are queued for every matching
/// subscription": a subscriber on the other worker receives them.
fn two_workers_pong_after_publish_reaches_other_worker(backend: Backend) {
    let broker = Broker::start_on(backend, 2, BASE_CONFIG);
    let mut s = Raw::handshake_on_worker(broker.addr(), 0);
    s.subscribe("pp.x", 1);
    let mut p = Raw::handshake_on_worker(broker.addr(), 1);
    for round in 0..50u32 {
        for i in 0..19 {
            p.publish("pp.x", &seq_payload(round * 20 + i));
        }
        if round % 2 == 0 {
            p.publish("pp.x", &seq_payload(round * 20 + 19));
            p.ping_pong();
        } else {
            p.publish_ack("pp.x", &seq_payload(round * 20 + 19));
        }
        for i in 0..20 {
            assert_eq!(payload_seq(&s.expect_msg().payload), round * 20 + i);
        }
    }
    s.expect_silence(Duration::from_millis(100));
}

/// Queue groups spanning both workers: exactly one member per message, all
/// members (on both workers) get some.
fn two_workers_queue_group_spans_workers(backend: Backend) {
    let broker = Broker::start_on(backend, 2, BASE_CONFIG);
    let n = 400u32;
    let mut members: Vec<Raw> = (0..4)
        .map(|i| {
            let mut s = Raw::handshake_on_worker(broker.addr(), (i % 2) as u32);
            s.subscribe_queue("qs.*", 1, "span");
            s
        })
        .collect();
    for pw in [0u32, 1] {
        let mut p = Raw::handshake_on_worker(broker.addr(), pw);
        let mut bytes = Vec::new();
        for i in 0..n {
            encode::put_publish(&mut bytes, b"qs.x", None, &seq_payload(i), false);
        }
        p.send(&bytes);
        p.ping_pong();
        let got = collect_group(&mut members, n as usize);
        for m in members.iter_mut() {
            m.expect_silence(Duration::from_millis(100));
        }
        check_group(&format!("publisher on worker {pw}"), &got, n);
        let per_worker: Vec<usize> = (0..2)
            .map(|w| {
                got.iter()
                    .enumerate()
                    .filter(|(i, _)| i % 2 == w)
                    .map(|(_, g)| g.len())
                    .sum()
            })
            .collect();
        assert!(
            per_worker.iter().all(|&c| c > 0),
            "per worker: {per_worker:?}"
        );
    }
}

/// Auto-unsubscribe when every message comes from the other worker, and the
/// removal of an UNSUBSCRIBE is effective for publishers on the other worker.
fn two_workers_unsubscribe_across_workers(backend: Backend) {
    let broker = Broker::start_on(backend, 2, BASE_CONFIG);
    let mut s = Raw::handshake_on_worker(broker.addr(), 0);
    let mut p = Raw::handshake_on_worker(broker.addr(), 1);
    s.subscribe("ax.x", 1);
    s.unsubscribe(1, 5);
    for i in 0..50 {
        p.publish("ax.x", &seq_payload(i));
    }
    p.ping_pong();
    let seqs: Vec<u32> = s
        .read_msgs(5)
        .iter()
        .map(|m| payload_seq(&m.payload))
        .collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    s.expect_silence(QUIET);
    s.send_frame(|b| encode::put_unsubscribe(b, 1, 0, true));
    s.expect_error(404);

    let mut seen = HashSet::new();
    for i in 0..100u32 {
        let subject = format!("uv.{i}");
        s.subscribe(&subject, 100 + i);
        p.publish(&subject, b"before");
        let m = s.expect_msg();
        assert_eq!(
            (m.sid, m.payload.as_slice()),
            (100 + i, &b"before"[..]),
            "iteration {i}"
        );
        assert!(seen.insert(m.sid));
        s.unsubscribe(100 + i, 0);
        p.publish(&subject, b"after");
    }
    p.ping_pong();
    s.expect_silence(QUIET);
}

/// "A full ring is backpressure ... Messages are never dropped because a
/// ring is full": the smallest legal ring (256 KiB) between the workers and
/// 20 MB crossing it to three subscribers, none lost, none reordered.
fn two_workers_small_ring_no_loss(backend: Backend) {
    let broker = Broker::start_on(
        backend,
         2,
        "[limits]\nmax_payload = 1024\nmax_pending_bytes = 67108864\n[dataplane]\nring_bytes = 262144\n",
    );
    let n = 200_000u32;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (tx, rx) = std::sync::mpsc::channel::<(String, Result<u32, String>)>();
    for (i, w) in [1u32, 1, 0].into_iter().enumerate() {
        let mut s = Raw::handshake_on_worker(broker.addr(), w);
        s.subscribe("ring.x", 1);
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut result = Ok(n);
            for seq in 0..n {
                if Instant::now() > deadline {
                    result = Err(format!("{seq} of {n} by the deadline"));
                    break;
                }
                let frame = s.read_frame_within(Duration::from_secs(10));
                match as_msg(&frame) {
                    Some(m) if payload_seq(&m.payload) == seq && m.payload.len() == 100 => {}
                    _ => {
                        result = Err(format!("expected message {seq}, got {frame:?}"));
                        break;
                    }
                }
            }
            let _ = tx.send((format!("subscriber {i} on worker {w}"), result));
        });
    }
    drop(tx);
    let mut p = Raw::handshake_on_worker(broker.addr(), 0);
    let mut batch = Vec::new();
    let mut payload = vec![b'r'; 100];
    for seq in 0..n {
        payload[..4].copy_from_slice(&seq.to_be_bytes());
        encode::put_publish(&mut batch, b"ring.x", None, &payload, false);
        if batch.len() >= 64 * 1024 {
            p.send(&batch);
            batch.clear();
        }
    }
    p.send(&batch);
    p.ping_pong();
    for _ in 0..3 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, Ok(got))) => assert_eq!(got, n),
            Ok((who, Err(err))) => panic!("{who}: {err}"),
            Err(_) => panic!("subscribers did not finish within 60 s"),
        }
    }
}

/// "... and to exactly one member of each matching queue group", also while
/// another member of the group comes and goes on the other worker: every
/// message goes to one of the members that exist, none is lost because the
/// member the publisher's worker picked has just left.
fn two_workers_queue_group_member_churn_no_loss(backend: Backend) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    let broker = Broker::start_on(
        backend,
        2,
        &config_with("", "max_pending_bytes = 67108864", ""),
    );
    let n = 40_000u32;
    let received = Arc::new(AtomicUsize::new(0));
    let published = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));

    let mut a = Raw::handshake_on_worker(broker.addr(), 0);
    a.subscribe_queue("qc.x", 1, "g");
    let mut b = Raw::handshake_on_worker(broker.addr(), 1);
    b.subscribe_queue("qc.x", 2, "g");

    let stable = {
        let (received, stop) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seqs = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Next::Frame(frame) = a.next_frame(Duration::from_millis(20)) {
                    let m = as_msg(&frame).unwrap_or_else(|| panic!("stable member: {frame:?}"));
                    seqs.push(payload_seq(&m.payload));
                    received.fetch_add(1, Ordering::SeqCst);
                }
            }
            seqs
        })
    };
    let churning = {
        let (received, published, stop) = (received.clone(), published.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seqs = Vec::new();
            let take = |frame: OwnedFrame, seqs: &mut Vec<u32>| -> bool {
                if frame.is_op(Op::Ok) {
                    return true;
                }
                let m = as_msg(&frame).unwrap_or_else(|| panic!("churning member: {frame:?}"));
                seqs.push(payload_seq(&m.payload));
                received.fetch_add(1, Ordering::SeqCst);
                false
            };
            let mut sid = 2u32;
            let mut subscribed = true;
            let mut cycles = 0;
            while !stop.load(Ordering::SeqCst) {
                if !published.load(Ordering::SeqCst) {
                    if subscribed {
                        b.send_frame(|f| encode::put_unsubscribe(f, sid, 0, true));
                    } else {
                        sid += 1;
                        b.send_frame(|f| encode::put_subscribe(f, b"qc.x", sid, Some(b"g"), true));
                    }
                    // Wait for the OK, taking the messages that come first.
                    while !take(b.read_frame(), &mut seqs) {}
                    subscribed = !subscribed;
                    cycles += 1;
                } else if let Next::Frame(frame) = b.next_frame(Duration::from_millis(20)) {
                    assert!(!take(frame, &mut seqs), "unexpected OK");
                }
            }
            (seqs, cycles)
        })
    };

    let mut p = Raw::handshake_on_worker(broker.addr(), 0);
    // Small paced batches, so that the churn overlaps the whole run.
    let mut batch = Vec::new();
    for seq in 0..n {
        encode::put_publish(&mut batch, b"qc.x", None, &seq_payload(seq), false);
        if seq % 50 == 49 {
            encode::put_ping(&mut batch);
            p.send(&batch);
            batch.clear();
            p.expect_pong();
        }
    }
    p.send(&batch);
    p.ping_pong();
    published.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::SeqCst) < n as usize && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10)); // polling a counter, bounded
    }
    // A short look for duplicates beyond n.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let a_seqs = stable.join().expect("stable member");
    let (b_seqs, cycles) = churning.join().expect("churning member");
    let mut all: Vec<u32> = a_seqs.iter().chain(b_seqs.iter()).copied().collect();
    all.sort();
    let total = all.len();
    all.dedup();
    assert_eq!(total, all.len(), "duplicates delivered");
    assert_eq!(
        total,
        n as usize,
        "the group (one stable member on worker 0, one joining and leaving on worker 1, {cycles} \
         subscribe/unsubscribe cycles) received {total} of {n} messages: stable {}, churning {}",
        a_seqs.len(),
        b_seqs.len()
    );
}

/// A queue member that reaches its max_msgs (auto-unsubscribe) while
/// messages for its group keep coming (from the other worker, with two):
/// every message still goes to exactly one member (the one left), none is
/// lost.
fn queue_member_max_msgs_no_loss(backend: Backend, workers: usize) {
    let broker = Broker::start_on(backend, workers, BASE_CONFIG);
    let n = 1000u32;
    let members_on = (workers - 1) as u32;
    let mut x = Raw::handshake_on_worker(broker.addr(), members_on);
    x.subscribe_queue("qm.x", 1, "g");
    x.unsubscribe(1, 1);
    let mut y = Raw::handshake_on_worker(broker.addr(), members_on);
    y.subscribe_queue("qm.x", 1, "g");
    let mut p = Raw::handshake_on_worker(broker.addr(), 0);
    let mut bytes = Vec::new();
    for seq in 0..n {
        encode::put_publish(&mut bytes, b"qm.x", None, &seq_payload(seq), false);
    }
    p.send(&bytes);
    p.ping_pong();
    let mut got = collect_group_until(&mut [x, y], n as usize, Duration::from_secs(3));
    assert!(
        got[0].len() <= 1,
        "the member with max_msgs 1 got {}",
        got[0].len()
    );
    let total = got[0].len() + got[1].len();
    let mut all: Vec<u32> = got.drain(..).flatten().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), total, "duplicates");
    assert_eq!(
        total,
        n as usize,
        "{} of {n} messages lost: a queue member past its max_msgs was still picked",
        n as usize - total
    );
}

/// Like [`collect_group`], but returns what arrived by the deadline instead
/// of failing, so that the caller can report the loss.
fn collect_group_until(members: &mut [Raw], n: usize, within: Duration) -> Vec<Vec<u32>> {
    let deadline = Instant::now() + within;
    let mut got: Vec<Vec<u32>> = vec![Vec::new(); members.len()];
    while got.iter().map(Vec::len).sum::<usize>() < n && Instant::now() < deadline {
        for (i, member) in members.iter_mut().enumerate() {
            while let Next::Frame(frame) = member.next_frame(Duration::from_millis(20)) {
                let m = as_msg(&frame)
                    .unwrap_or_else(|| panic!("member {i}: expected MESSAGE, got {frame:?}"));
                got[i].push(payload_seq(&m.payload));
            }
        }
    }
    got
}

/// The other workers' view of interest counts subscriptions: removing one
/// of several identical filters on a worker (by UNSUBSCRIBE, max_msgs or a
/// closed connection) leaves the others reachable from every worker. A
/// queue group is its name (as in NATS, members with different matching
/// filters and the same queue name form one group for a message).
fn two_workers_interest_is_counted_per_subscription(backend: Backend) {
    let broker = Broker::start_on(backend, 2, BASE_CONFIG);
    let mut s = Raw::handshake_on_worker(broker.addr(), 1);
    let mut gone = Raw::handshake_on_worker(broker.addr(), 1);
    let mut p = Raw::handshake_on_worker(broker.addr(), 0);
    for (i, filter) in ["ic.x", "ic.*", "ic.>"].iter().enumerate() {
        let base = 10 * i as u32;
        s.subscribe(filter, base + 1);
        s.subscribe(filter, base + 2);
        s.subscribe(filter, base + 3);
        gone.subscribe(filter, base + 1);
        gone.subscribe_queue(filter, base + 2, "g");
        s.subscribe_queue(filter, base + 4, "g");
        s.unsubscribe(base + 1, 0);
        s.unsubscribe(base + 3, 1);
    }
    let group = |sid: &u32| sid % 10 == 4;
    p.publish("ic.x", b"1");
    p.ping_pong();
    // Plain: +2 and +3 (its one message) per filter; group g: one member of
    // all six (three on `gone`).
    let mut first: Vec<u32> = s.read_msgs(6).iter().map(|m| m.sid).collect();
    let mut more = Vec::new();
    while let Next::Frame(f) = s.next_frame(QUIET) {
        more.push(as_msg(&f).unwrap_or_else(|| panic!("{f:?}")).sid);
    }
    first.extend(more);
    first.sort();
    let plain: Vec<u32> = first.iter().copied().filter(|sid| !group(sid)).collect();
    assert_eq!(plain, vec![2, 3, 12, 13, 22, 23], "{first:?}");
    assert!(
        first.iter().filter(|sid| group(sid)).count() <= 1,
        "{first:?}"
    );
    // Gone for good once the broker has closed it.
    gone.send_frame(|b| encode::put_disconnect(b, ""));
    gone.expect_closed();
    for round in 0..20 {
        p.publish("ic.x", b"2");
        p.ping_pong();
        let mut sids: Vec<u32> = s.read_msgs(4).iter().map(|m| m.sid).collect();
        sids.sort();
        let plain: Vec<u32> = sids.iter().copied().filter(|sid| !group(sid)).collect();
        assert_eq!(plain, vec![2, 12, 22], "round {round}: {sids:?}");
        assert_eq!(
            sids.iter().filter(|sid| group(sid)).count(),
            1,
            "round {round}: {sids:?}"
        );
    }
    s.expect_silence(QUIET);
}
