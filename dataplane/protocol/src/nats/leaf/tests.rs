//! The leaf codec against lines as nats-server v2.9.10 writes them.

use super::encode;
use super::*;
use crate::nats::{NatsError, NatsLimits};

fn decode(bytes: &[u8]) -> (HubOp<'_>, usize) {
    decode_hub_op(bytes, &NatsLimits::default())
        .expect("decodes")
        .expect("complete")
}

fn decode_err(bytes: &[u8]) -> LeafDecodeError {
    decode_hub_op(bytes, &NatsLimits::default()).expect_err("refused")
}

fn queue_list<'a>(queues: &Queues<'a>) -> Vec<&'a [u8]> {
    queues.iter().collect()
}

#[test]
fn control_ops() {
    assert_eq!(decode(b"PING\r\n"), (HubOp::Ping, 6));
    assert_eq!(decode(b"pong\r\n"), (HubOp::Pong, 6));
    assert_eq!(decode(b"+OK\r\n"), (HubOp::Ok, 5));
    assert_eq!(
        decode(b"-ERR 'Authorization Violation'\r\n").0,
        HubOp::Err {
            text: b"Authorization Violation"
        }
    );
    let info = br#"INFO {"server_id":"NA","server_name":"hub","client_id":5,"leafnode_urls":["127.0.0.1:7422"],"info_on_connect":true,"headers":true,"max_payload":1048576,"nonce":"abc","cluster":"c1"} "#;
    let mut line = info.to_vec();
    line.extend_from_slice(b"\r\n");
    let HubOp::Info { json } = decode(&line).0 else {
        panic!("not INFO");
    };
    let parsed = HubInfo::parse(json).unwrap();
    assert!(parsed.is_leafnode_port());
    assert_eq!(parsed.name, "hub");
    assert_eq!(parsed.cluster, "c1");
    assert_eq!(parsed.max_payload, 1 << 20);
    assert_eq!(parsed.nonce, "abc");
    assert!(parsed.info_on_connect && parsed.headers && !parsed.connect_info);
    // A client port's INFO has no leafnode_urls.
    let client = HubInfo::parse(br#"{"client_id":3,"connect_urls":["a:4222"]}"#).unwrap();
    assert!(!client.is_leafnode_port());
}

#[test]
fn interest_ops() {
    assert_eq!(
        decode(b"LS+ foo.*\r\n").0,
        HubOp::Sub {
            subject: b"foo.*",
            queue: None
        }
    );
    assert_eq!(
        decode(b"LS+ foo.> workers 3\r\n").0,
        HubOp::Sub {
            subject: b"foo.>",
            queue: Some(QueueWeight {
                name: b"workers",
                weight: 3
            })
        }
    );
    assert_eq!(
        decode(b"LS- foo workers\r\n").0,
        HubOp::Unsub {
            subject: b"foo",
            queue: Some(b"workers")
        }
    );
    assert_eq!(
        decode(b"ls-\tfoo\n").0,
        HubOp::Unsub {
            subject: b"foo",
            queue: None
        }
    );
    assert_eq!(decode_err(b"LS+ foo q x\r\n"), LeafDecodeError::BadWeight);
    assert!(matches!(
        decode_err(b"LS+ foo q\r\n"),
        LeafDecodeError::Framing(NatsError::ArgumentCount { op: "LS+" })
    ));
    assert!(matches!(
        decode_err(b"LS+foo\r\n"),
        LeafDecodeError::Framing(NatsError::UnknownOperation)
    ));
}

#[test]
fn messages_in_every_form() {
    let (op, used) = decode(b"LMSG foo 5\r\nhello\r\nPING\r\n");
    assert_eq!(used, 19);
    let HubOp::Msg(msg) = op else { panic!() };
    assert_eq!(
        (msg.subject, msg.reply, msg.payload),
        (&b"foo"[..], None, &b"hello"[..])
    );
    assert!(msg.queues.is_empty() && msg.headers.is_none());

    let HubOp::Msg(msg) = decode(b"LMSG foo _INBOX.1 2\r\nhi\r\n").0 else {
        panic!()
    };
    assert_eq!(msg.reply, Some(&b"_INBOX.1"[..]));

    let HubOp::Msg(msg) = decode(b"LMSG foo + _INBOX.1 q1 q2 2\r\nhi\r\n").0 else {
        panic!()
    };
    assert_eq!(msg.reply, Some(&b"_INBOX.1"[..]));
    assert_eq!(queue_list(&msg.queues), vec![&b"q1"[..], b"q2"]);
    assert!(msg.queues.contains(b"q2") && !msg.queues.contains(b"q"));

    let HubOp::Msg(msg) = decode(b"LMSG foo | q1 0\r\n\r\n").0 else {
        panic!()
    };
    assert_eq!(msg.reply, None);
    assert_eq!(queue_list(&msg.queues), vec![&b"q1"[..]]);
    assert_eq!(msg.payload, b"");

    // A reply and no queues after `+`.
    let HubOp::Msg(msg) = decode(b"LMSG foo + r 0\r\n\r\n").0 else {
        panic!()
    };
    assert_eq!((msg.reply, msg.queues.is_empty()), (Some(&b"r"[..]), true));

    let hmsg = b"HMSG foo + r q 12 14\r\nNATS/1.0\r\n\r\nhi\r\n";
    let HubOp::Msg(msg) = decode(hmsg).0 else {
        panic!()
    };
    assert_eq!(msg.headers, Some(&b"NATS/1.0\r\n\r\n"[..]));
    assert_eq!(msg.payload, b"hi");
    assert_eq!(queue_list(&msg.queues), vec![&b"q"[..]]);
}

#[test]
fn bad_messages_are_errors() {
    assert_eq!(
        decode_err(b"LMSG foo x q 1\r\na\r\n"),
        LeafDecodeError::BadReplyIndicator { op: "LMSG" }
    );
    assert!(matches!(
        decode_err(b"LMSG foo\r\n"),
        LeafDecodeError::Framing(NatsError::ArgumentCount { .. })
    ));
    assert!(matches!(
        decode_err(b"LMSG foo 1x\r\n"),
        LeafDecodeError::Framing(NatsError::BadSize { .. })
    ));
    assert!(matches!(
        decode_err(b"HMSG foo 5 3\r\n"),
        LeafDecodeError::Framing(NatsError::HeaderLargerThanTotal)
    ));
    assert!(matches!(
        decode_err(b"LMSG foo 2\r\nabc\r\n"),
        LeafDecodeError::Framing(NatsError::MissingPayloadCrlf)
    ));
    assert!(matches!(
        decode_err(b"LMSG foo 2000000\r\n"),
        LeafDecodeError::Framing(NatsError::MaxPayload { .. })
    ));
    // Client ops are not hub ops.
    assert!(matches!(
        decode_err(b"MSG foo 1 2\r\n"),
        LeafDecodeError::Framing(NatsError::UnknownOperation)
    ));
}

#[test]
fn partial_input_asks_for_more() {
    let whole = b"LMSG foo + r q 5\r\nhello\r\n";
    for end in 0..whole.len() {
        assert_eq!(
            decode_hub_op(&whole[..end], &NatsLimits::default()),
            Ok(None),
            "{end}"
        );
    }
}

#[test]
fn encodes_as_nats_server_writes() {
    let mut out = Vec::new();
    encode::put_sub(&mut out, b"foo.>", None);
    encode::put_sub(&mut out, b"foo", Some((b"q", 12)));
    encode::put_unsub(&mut out, b"foo", Some(b"q"));
    encode::put_unsub(&mut out, b"foo.>", None);
    encode::put_msg(&mut out, b"a", None, [], None, b"x");
    encode::put_msg(&mut out, b"a", Some(b"r"), [], None, b"x");
    encode::put_msg(&mut out, b"a", Some(b"r"), [&b"q1"[..], b"q2"], None, b"x");
    encode::put_msg(
        &mut out,
        b"a",
        None,
        [&b"q1"[..]],
        Some(b"NATS/1.0\r\n\r\n"),
        b"x",
    );
    encode::put_ping(&mut out);
    let expected: &[u8] = b"LS+ foo.>\r\nLS+ foo q 12\r\nLS- foo q\r\nLS- foo.>\r\n\
LMSG a 1\r\nx\r\nLMSG a r 1\r\nx\r\nLMSG a + r q1 q2 1\r\nx\r\n\
HMSG a | q1 12 13\r\nNATS/1.0\r\n\r\nx\r\nPING\r\n";
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(expected)
    );

    let mut connect = Vec::new();
    encode::put_connect(
        &mut connect,
        &LeafConnect {
            name: "edge".into(),
            user: Some("u".into()),
            pass: Some("p".into()),
            headers: true,
            ..LeafConnect::default()
        },
    );
    assert_eq!(
        String::from_utf8(connect).unwrap(),
        "CONNECT {\"user\":\"u\",\"pass\":\"p\",\"tls_required\":false,\"name\":\"edge\",\"headers\":true}\r\n"
    );
}
