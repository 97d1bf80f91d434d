//! Unit tests: each op, the grammar's leniencies, every error, splits, limits,
//! the CONNECT/INFO JSON, subject rules and the server encoder.

use super::encode;
use super::test_client::{
    decode_chunks, decode_whole, encode_ops, parse_server_stream, Op, ServerOp, Style, PLAIN,
};
use super::*;

fn limits() -> NatsLimits {
    NatsLimits::default()
}

/// Decodes exactly one op that spans all of `bytes`.
fn one(bytes: &[u8]) -> ClientOp<'_> {
    let (op, consumed) = decode_client_op(bytes, &limits())
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(bytes)))
        .unwrap_or_else(|| panic!("{:?} incomplete", String::from_utf8_lossy(bytes)));
    assert_eq!(
        consumed,
        bytes.len(),
        "{:?}",
        String::from_utf8_lossy(bytes)
    );
    op
}

fn error(bytes: &[u8]) -> NatsError {
    error_with(bytes, &limits())
}

fn error_with(bytes: &[u8], limits: &NatsLimits) -> NatsError {
    match decode_client_op(bytes, limits) {
        Err(e) => e,
        other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(bytes)),
    }
}

fn incomplete(bytes: &[u8]) {
    assert_eq!(
        decode_client_op(bytes, &limits()),
        Ok(None),
        "{:?}",
        String::from_utf8_lossy(bytes)
    );
}

fn op_pub(subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) -> Op {
    Op::Pub {
        subject: subject.to_vec(),
        reply: reply.map(<[u8]>::to_vec),
        payload: payload.to_vec(),
    }
}

#[test]
fn connect() {
    assert_eq!(
        one(b"CONNECT {\"verbose\":false}\r\n"),
        ClientOp::Connect {
            json: b"{\"verbose\":false}"
        }
    );
    // nats-server needs no blank between CONNECT and its JSON.
    assert_eq!(one(b"CONNECT{}\r\n"), ClientOp::Connect { json: b"{}" });
}

#[test]
fn pub_with_and_without_reply() {
    assert_eq!(
        one(b"PUB orders.eu 5\r\nhello\r\n"),
        ClientOp::Pub {
            subject: b"orders.eu",
            reply: None,
            payload: b"hello"
        }
    );
    assert_eq!(
        one(b"PUB orders.eu _INBOX.1 5\r\nhello\r\n"),
        ClientOp::Pub {
            subject: b"orders.eu",
            reply: Some(b"_INBOX.1"),
            payload: b"hello"
        }
    );
    // A payload is opaque: CRLF inside it and an empty one are fine.
    assert_eq!(
        one(b"PUB a 4\r\n\r\n\r\n\r\n"),
        ClientOp::Pub {
            subject: b"a",
            reply: None,
            payload: b"\r\n\r\n"
        }
    );
    assert_eq!(
        one(b"PUB a 0\r\n\r\n"),
        ClientOp::Pub {
            subject: b"a",
            reply: None,
            payload: b""
        }
    );
}

#[test]
fn hpub_with_and_without_reply() {
    let headers = b"NATS/1.0\r\nA: b\r\n\r\n";
    let mut wire = format!("HPUB s {} {}\r\n", headers.len(), headers.len() + 2).into_bytes();
    wire.extend_from_slice(headers);
    wire.extend_from_slice(b"hi\r\n");
    assert_eq!(
        one(&wire),
        ClientOp::Hpub {
            subject: b"s",
            reply: None,
            headers,
            payload: b"hi"
        }
    );
    let mut wire = format!("HPUB s r {} {}\r\n", headers.len(), headers.len()).into_bytes();
    wire.extend_from_slice(headers);
    wire.extend_from_slice(b"\r\n");
    assert_eq!(
        one(&wire),
        ClientOp::Hpub {
            subject: b"s",
            reply: Some(b"r"),
            headers,
            payload: b""
        }
    );
    // nats-server accepts an empty header block too.
    assert_eq!(
        one(b"HPUB s 0 2\r\nhi\r\n"),
        ClientOp::Hpub {
            subject: b"s",
            reply: None,
            headers: b"",
            payload: b"hi"
        }
    );
}

#[test]
fn sub_with_and_without_queue() {
    assert_eq!(
        one(b"SUB orders.* 1\r\n"),
        ClientOp::Sub {
            subject: b"orders.*",
            queue: None,
            sid: b"1"
        }
    );
    assert_eq!(
        one(b"SUB orders.> workers 42\r\n"),
        ClientOp::Sub {
            subject: b"orders.>",
            queue: Some(b"workers"),
            sid: b"42"
        }
    );
}

#[test]
fn unsub_with_and_without_max() {
    assert_eq!(
        one(b"UNSUB 1\r\n"),
        ClientOp::Unsub {
            sid: b"1",
            max_msgs: 0
        }
    );
    assert_eq!(
        one(b"UNSUB 1 5\r\n"),
        ClientOp::Unsub {
            sid: b"1",
            max_msgs: 5
        }
    );
    assert_eq!(
        one(b"UNSUB 1 999999999\r\n"),
        ClientOp::Unsub {
            sid: b"1",
            max_msgs: 999_999_999
        }
    );
    // parseSize gives -1 for these; nats-server then unsubscribes at once.
    for max in ["x", "-1", "1234567890", "5a"] {
        let wire = format!("UNSUB 1 {max}\r\n");
        assert_eq!(
            one(wire.as_bytes()),
            ClientOp::Unsub {
                sid: b"1",
                max_msgs: 0
            },
            "{max}"
        );
    }
}

#[test]
fn ping_pong() {
    assert_eq!(one(b"PING\r\n"), ClientOp::Ping);
    assert_eq!(one(b"PONG\r\n"), ClientOp::Pong);
    // parser.go ignores everything between PING/PONG and the newline.
    assert_eq!(one(b"PING foo\r\n"), ClientOp::Ping);
    assert_eq!(one(b"PONGX\n"), ClientOp::Pong);
}

#[test]
fn op_names_are_case_insensitive() {
    assert_eq!(one(b"ping\r\n"), ClientOp::Ping);
    assert_eq!(one(b"pOnG\r\n"), ClientOp::Pong);
    assert_eq!(one(b"connect {}\r\n"), ClientOp::Connect { json: b"{}" });
    assert_eq!(
        one(b"pub a 1\r\nx\r\n"),
        ClientOp::Pub {
            subject: b"a",
            reply: None,
            payload: b"x"
        }
    );
    assert_eq!(
        one(b"hPuB a 0 1\r\nx\r\n"),
        ClientOp::Hpub {
            subject: b"a",
            reply: None,
            headers: b"",
            payload: b"x"
        }
    );
    assert_eq!(
        one(b"Sub a 1\r\n"),
        ClientOp::Sub {
            subject: b"a",
            queue: None,
            sid: b"1"
        }
    );
    assert_eq!(
        one(b"unsub 1\r\n"),
        ClientOp::Unsub {
            sid: b"1",
            max_msgs: 0
        }
    );
    // Subjects keep their case.
    assert_eq!(
        one(b"pub Orders.EU 0\r\n\r\n"),
        ClientOp::Pub {
            subject: b"Orders.EU",
            reply: None,
            payload: b""
        }
    );
}

#[test]
fn tabs_and_runs_of_blanks_separate_arguments() {
    assert_eq!(
        one(b"PUB\ta\t\t_r  \t 2 \t\r\nhi\r\n"),
        ClientOp::Pub {
            subject: b"a",
            reply: Some(b"_r"),
            payload: b"hi"
        }
    );
    assert_eq!(
        one(b"SUB   a \t q\t\t7   \r\n"),
        ClientOp::Sub {
            subject: b"a",
            queue: Some(b"q"),
            sid: b"7"
        }
    );
    assert_eq!(
        one(b"UNSUB\t\t7\t3\r\n"),
        ClientOp::Unsub {
            sid: b"7",
            max_msgs: 3
        }
    );
    assert_eq!(
        one(b"HPUB  a  0  1 \r\nx\r\n"),
        ClientOp::Hpub {
            subject: b"a",
            reply: None,
            headers: b"",
            payload: b"x"
        }
    );
    assert_eq!(one(b"CONNECT \t {}\r\n"), ClientOp::Connect { json: b"{}" });
}

#[test]
fn a_bare_newline_ends_a_control_line() {
    assert_eq!(one(b"PING\n"), ClientOp::Ping);
    assert_eq!(
        one(b"SUB a 1\n"),
        ClientOp::Sub {
            subject: b"a",
            queue: None,
            sid: b"1"
        }
    );
    assert_eq!(
        one(b"PUB a 2\nhi\r\n"),
        ClientOp::Pub {
            subject: b"a",
            reply: None,
            payload: b"hi"
        }
    );
}

#[test]
fn a_stream_of_ops_decodes_in_order() {
    let stream = b"CONNECT {}\r\nSUB a 1\r\nPUB a 2\r\nhiPING\r\n";
    // The PUB lacks its CRLF: a bad stream, refused at the P of PING.
    assert_eq!(
        decode_whole(stream, &limits()).error,
        Some(NatsError::MissingPayloadCrlf)
    );
    let stream = b"CONNECT {}\r\nSUB a 1\r\nPUB a 2\r\nhi\r\nPING\r\nPONG\r\nUNSUB 1\r\n";
    let outcome = decode_whole(stream, &limits());
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.leftover, 0);
    assert_eq!(
        outcome.ops,
        vec![
            Op::Connect(b"{}".to_vec()),
            Op::Sub {
                subject: b"a".to_vec(),
                queue: None,
                sid: b"1".to_vec()
            },
            op_pub(b"a", None, b"hi"),
            Op::Ping,
            Op::Pong,
            Op::Unsub {
                sid: b"1".to_vec(),
                max_msgs: 0
            },
        ]
    );
}

#[test]
fn every_proper_prefix_of_an_op_is_incomplete() {
    let ops: [&[u8]; 7] = [
        b"CONNECT {\"verbose\":false}\r\n",
        b"PUB a.b _INBOX.9 5\r\nhello\r\n",
        b"HPUB a 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",
        b"SUB a.* q 1\r\n",
        b"UNSUB 1 10\r\n",
        b"PING\r\n",
        b"PONG\r\n",
    ];
    for op in ops {
        for cut in 0..op.len() {
            incomplete(&op[..cut]);
        }
        one(op);
    }
}

/// The multi-op stream of the split tests: every op, with and without
/// optional arguments, in several styles.
fn mixed_stream() -> (Vec<u8>, Vec<Op>) {
    let ops = vec![
        Op::Connect(br#"{"verbose":false,"headers":true,"name":"t"}"#.to_vec()),
        Op::Sub {
            subject: b"a.*".to_vec(),
            queue: None,
            sid: b"1".to_vec(),
        },
        Op::Sub {
            subject: b"a.>".to_vec(),
            queue: Some(b"workers".to_vec()),
            sid: b"2".to_vec(),
        },
        op_pub(b"a.b", None, b"hello"),
        op_pub(b"a.c", Some(b"_INBOX.x"), b"PUB a 1\r\n"),
        Op::Hpub {
            subject: b"a.d".to_vec(),
            reply: None,
            headers: b"NATS/1.0\r\nK: v\r\n\r\n".to_vec(),
            payload: b"p".to_vec(),
        },
        Op::Hpub {
            subject: b"a.e".to_vec(),
            reply: Some(b"r".to_vec()),
            headers: b"NATS/1.0\r\n\r\n".to_vec(),
            payload: Vec::new(),
        },
        Op::Ping,
        Op::Pong,
        Op::Unsub {
            sid: b"1".to_vec(),
            max_msgs: 3,
        },
        Op::Unsub {
            sid: b"2".to_vec(),
            max_msgs: 0,
        },
    ];
    let mut stream = encode_ops(&ops[..4], PLAIN);
    let tabbed = Style {
        lowercase: true,
        blank: " \t ",
        line_end: "\n",
    };
    stream.extend(encode_ops(&ops[4..], tabbed));
    (stream, ops)
}

#[test]
fn splitting_a_stream_at_any_byte_gives_the_same_ops() {
    let (stream, ops) = mixed_stream();
    let whole = decode_whole(&stream, &limits());
    assert_eq!(whole.ops, ops);
    assert_eq!((whole.error, whole.leftover), (None, 0));
    for cut in 0..=stream.len() {
        let (first, second) = stream.split_at(cut);
        assert_eq!(
            decode_chunks(&[first, second], &limits()),
            whole,
            "split at {cut}"
        );
    }
}

#[test]
fn splitting_a_bad_stream_at_any_byte_gives_the_same_error() {
    let (mut stream, ops) = mixed_stream();
    stream.extend_from_slice(b"PUB a 2\r\nhiX\r\nPING\r\n");
    let whole = decode_whole(&stream, &limits());
    assert_eq!(whole.ops, ops);
    assert_eq!(whole.error, Some(NatsError::MissingPayloadCrlf));
    for cut in 0..=stream.len() {
        let (first, second) = stream.split_at(cut);
        assert_eq!(decode_chunks(&[first, second], &limits()), whole, "{cut}");
    }
}

#[test]
fn byte_at_a_time() {
    let (stream, ops) = mixed_stream();
    let chunks: Vec<&[u8]> = stream.chunks(1).collect();
    let outcome = decode_chunks(&chunks, &limits());
    assert_eq!(outcome.ops, ops);
    assert_eq!((outcome.error, outcome.leftover), (None, 0));
}

#[test]
fn unknown_operations() {
    for wire in [
        &b"FOO\r\n"[..],
        b"X",
        b"PX",
        b"PUX",
        b"SUX 1\r\n",
        b"CONNEXT {}\r\n",
        // Server → client ops (and the route/leaf ops) are not for clients.
        b"MSG a 1 1\r\nx\r\n",
        b"HMSG a 1 0 1\r\nx\r\n",
        b"RS+ a\r\n",
        b"INFO {}\r\n",
        b"+OK\r\n",
        b"-ERR 'x'\r\n",
        // Arguments must follow a blank.
        b"PUBX a 1\r\n",
        b"PUB\r\n",
        b"SUB\n",
        b"UNSUB1\r\n",
        b"HPUB,a 0 0\r\n",
        b"\r\n",
        b" PING\r\n",
    ] {
        assert_eq!(
            error(wire),
            NatsError::UnknownOperation,
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn control_line_limit() {
    let small = NatsLimits {
        max_control_line: 16,
        max_payload: 1024,
    };
    // The limit is on the arguments, as parser.go measures them: 16 is fine.
    let args = "a.bbbbbbbbbbbb 1"; // 16 bytes
    let ok = format!("SUB {args}\r\n");
    assert!(decode_client_op(ok.as_bytes(), &small).unwrap().is_some());
    let too_long = format!("SUB {args}2\r\n");
    let expected = NatsError::MaxControlLine { limit: 16 };
    assert_eq!(error_with(too_long.as_bytes(), &small), expected);
    // Refused before the newline arrives, as soon as the partial line is over.
    assert_eq!(error_with(&too_long.as_bytes()[..21], &small), expected);
    assert_eq!(
        decode_client_op(&too_long.as_bytes()[..20], &small),
        Ok(None)
    );
    // PUB, CONNECT, PING trailing bytes too.
    assert_eq!(
        error_with(b"PUB aaaaaaaaaaaaaaaa 1\r\nx\r\n", &small),
        expected
    );
    assert_eq!(
        error_with(b"CONNECT {\"name\":\"xxxxxxxxx\"}", &small),
        expected
    );
    assert_eq!(error_with(b"PING 12345678901234567", &small), expected);
    // A run of blanks longer than a line (this decoder's own bound), refused
    // whether or not arguments follow, so that splits cannot change it.
    let long_run = [b"SUB".as_slice(), &[b' '; 18], b"a 1\r\n"].concat();
    assert_eq!(error_with(&long_run, &small), expected);
    for cut in 0..long_run.len() {
        let (first, second) = long_run.split_at(cut);
        assert_eq!(
            decode_chunks(&[first, second], &small).error,
            Some(expected)
        );
    }
    let ok_run = [b"SUB".as_slice(), &[b' '; 17], b"a 1\r\n"].concat();
    assert!(decode_client_op(&ok_run, &small).unwrap().is_some());
    assert_eq!(
        error_with(&[b"SUB".as_slice(), &[b' '; 18]].concat(), &small),
        expected
    );
    assert_eq!(
        decode_client_op(&[b"SUB".as_slice(), &[b' '; 17]].concat(), &small),
        Ok(None)
    );
    // The default is nats-server's 4096.
    assert_eq!(limits().max_control_line, 4096);
    let long_subject = "a".repeat(4094);
    let ok = format!("SUB {long_subject} 1\r\n");
    assert!(decode_client_op(ok.as_bytes(), &limits())
        .unwrap()
        .is_some());
    let too_long = format!("SUB {long_subject}a 1\r\n");
    assert_eq!(
        error(too_long.as_bytes()),
        NatsError::MaxControlLine { limit: 4096 }
    );
}

#[test]
fn payload_limit_is_checked_before_the_payload_arrives() {
    let small = NatsLimits {
        max_control_line: 4096,
        max_payload: 8,
    };
    assert_eq!(
        error_with(b"PUB a 9\r\n", &small),
        NatsError::MaxPayload { size: 9, limit: 8 }
    );
    assert_eq!(
        error_with(b"PUB a r 999999999\r\n", &small),
        NatsError::MaxPayload {
            size: 999_999_999,
            limit: 8
        }
    );
    // HPUB counts headers and payload together.
    assert_eq!(
        error_with(b"HPUB a 4 9\r\n", &small),
        NatsError::MaxPayload { size: 9, limit: 8 }
    );
    assert_eq!(decode_client_op(b"PUB a 8\r\n", &small), Ok(None));
    assert!(decode_client_op(b"PUB a 8\r\n12345678\r\n", &small)
        .unwrap()
        .is_some());
    assert_eq!(limits().max_payload, 1024 * 1024);
}

#[test]
fn wrong_argument_counts() {
    for (wire, op) in [
        (&b"PUB a\r\n"[..], "PUB"),
        (b"PUB a b c 1\r\n", "PUB"),
        (b"PUB  \r\n", "PUB"),
        (b"HPUB a 5\r\n", "HPUB"),
        (b"HPUB a b c 0 1\r\n", "HPUB"),
        (b"SUB a\r\n", "SUB"),
        (b"SUB a b c d\r\n", "SUB"),
        (b"UNSUB \r\n", "UNSUB"),
        (b"UNSUB 1 2 3\r\n", "UNSUB"),
    ] {
        assert_eq!(
            error(wire),
            NatsError::ArgumentCount { op },
            "{:?}",
            String::from_utf8_lossy(wire)
        );
    }
}

#[test]
fn bad_sizes() {
    for wire in [
        &b"PUB a x\r\n"[..],
        b"PUB a -1\r\n",
        b"PUB a 1234567890\r\n",
        b"PUB a r 1x\r\n",
    ] {
        assert_eq!(error(wire), NatsError::BadSize { op: "PUB" });
    }
    assert_eq!(error(b"HPUB a 0 x\r\n"), NatsError::BadSize { op: "HPUB" });
    assert_eq!(error(b"HPUB a x 5\r\n"), NatsError::BadHeaderSize);
    assert_eq!(error(b"HPUB a 6 5\r\n"), NatsError::HeaderLargerThanTotal);
}

#[test]
fn payload_must_end_with_crlf() {
    for wire in [
        &b"PUB a 2\r\nhiX\r\n"[..],
        b"PUB a 2\r\nhi\rX",
        b"PUB a 2\r\nhi\n",
        b"PUB a 2\r\nhix",
        b"HPUB a 0 2\r\nhi\r\r",
    ] {
        assert_eq!(error(wire), NatsError::MissingPayloadCrlf);
    }
    incomplete(b"PUB a 2\r\nhi");
    incomplete(b"PUB a 2\r\nhi\r");
}

#[test]
fn what_each_error_sends_and_whether_it_closes() {
    let table = [
        (
            NatsError::UnknownOperation,
            Some("Unknown Protocol Operation"),
        ),
        (
            NatsError::MissingPayloadCrlf,
            Some("Unknown Protocol Operation"),
        ),
        (
            NatsError::MaxControlLine { limit: 1 },
            Some("maximum control line exceeded"),
        ),
        (
            NatsError::MaxPayload { size: 2, limit: 1 },
            Some("Maximum Payload Violation"),
        ),
        (NatsError::ArgumentCount { op: "PUB" }, None),
        (NatsError::BadSize { op: "PUB" }, None),
        (NatsError::BadHeaderSize, None),
        (NatsError::HeaderLargerThanTotal, None),
        (NatsError::BadConnectJson, None),
        (
            NatsError::BadClientProtocol,
            Some("invalid client protocol"),
        ),
        (
            NatsError::NoRespondersRequiresHeaders,
            Some("no responders requires headers support"),
        ),
    ];
    for (error, text) in table {
        assert_eq!(error.err_text(), text, "{error:?}");
        assert!(error.closes_connection(), "{error:?}");
    }
    for (error, text) in [
        (NatsSubjectError::InvalidSubject, "Invalid Subject"),
        (
            NatsSubjectError::InvalidPublishSubject,
            "Invalid Publish Subject",
        ),
    ] {
        assert_eq!(error.err_text(), text);
        assert!(!error.closes_connection());
    }
}

#[test]
fn connect_json() {
    let json = br#"{"verbose":false,"pedantic":false,"tls_required":false,"name":"svc",
        "lang":"python3","version":"2.6.0","protocol":1,"echo":false,"headers":true,
        "no_responders":true,"user":"u","pass":"p","auth_token":"t","sig":"ignored"}"#;
    let options = ConnectOptions::parse(json).unwrap();
    assert_eq!(
        options,
        ConnectOptions {
            verbose: false,
            pedantic: false,
            echo: false,
            headers: true,
            no_responders: true,
            tls_required: false,
            name: "svc".into(),
            lang: "python3".into(),
            version: "2.6.0".into(),
            protocol: 1,
            auth_token: Some("t".into()),
            user: Some("u".into()),
            pass: Some("p".into()),
        }
    );
    assert_eq!(options.check(true), Ok(()));
    // nats-server unmarshals over defaultOpts: verbose, pedantic and echo
    // are on unless the client turns them off.
    let bare = ConnectOptions::parse(b"{}").unwrap();
    assert_eq!(bare, ConnectOptions::default());
    assert!(bare.verbose && bare.pedantic && bare.echo && !bare.headers);

    assert_eq!(ConnectOptions::parse(b"{"), Err(NatsError::BadConnectJson));
    assert_eq!(
        ConnectOptions::parse(br#"{"verbose":"yes"}"#),
        Err(NatsError::BadConnectJson)
    );
    // "CONNECT\r\n" hands the parser a lone "\r", as parser.go does.
    let ClientOp::Connect { json } = one(b"CONNECT\r\n") else {
        panic!("not CONNECT");
    };
    assert_eq!(ConnectOptions::parse(json), Err(NatsError::BadConnectJson));

    let proto2 = ConnectOptions {
        protocol: 2,
        ..ConnectOptions::default()
    };
    assert_eq!(proto2.check(true), Err(NatsError::BadClientProtocol));
    let no_headers = ConnectOptions {
        no_responders: true,
        ..ConnectOptions::default()
    };
    assert_eq!(
        no_headers.check(true),
        Err(NatsError::NoRespondersRequiresHeaders)
    );
    let both = ConnectOptions {
        headers: true,
        ..no_headers
    };
    assert_eq!(both.check(true), Ok(()));
    assert_eq!(
        both.check(false),
        Err(NatsError::NoRespondersRequiresHeaders)
    );
}

#[test]
fn nats_subject_rules() {
    use SubjectRole::*;
    let publish_bad = NatsSubjectError::InvalidPublishSubject;
    let filter_bad = NatsSubjectError::InvalidSubject;
    for (role, subject, pedantic, expected) in [
        (Publish, &b"a.b"[..], true, Ok(())),
        (Publish, b"a..b", true, Err(publish_bad)),
        (Publish, b"a.*", true, Err(publish_bad)),
        (Publish, b">", true, Err(publish_bad)),
        (Publish, b".a", true, Err(publish_bad)),
        (Publish, b"a*.b>", true, Ok(())),
        // Not pedantic: nats-server does not look at PUB subjects.
        (Publish, b"a..b", false, Ok(())),
        (Publish, b"a.*", false, Ok(())),
        (Reply, b"a..*", true, Ok(())),
        (Filter, b"a.*.c", false, Ok(())),
        (Filter, b"a.>", false, Ok(())),
        (Filter, b">", true, Ok(())),
        (Filter, b"a.>.c", false, Err(filter_bad)),
        (Filter, b"a..c", true, Err(filter_bad)),
        (Filter, b"a.", false, Err(filter_bad)),
        (Filter, b"\xff.\x01", false, Ok(())),
        (Queue, b"q.v1", true, Ok(())),
    ] {
        assert_eq!(
            check_subject(role, subject, pedantic),
            expected,
            "{role:?} {:?} pedantic={pedantic}",
            String::from_utf8_lossy(subject)
        );
    }
    // BlipMQ's rules are stricter where the module docs say so.
    assert!(check_blipmq_subject(Publish, b"a.*", 255).is_err());
    assert!(check_blipmq_subject(Reply, b"_INBOX.x", 255).is_ok());
    assert!(check_blipmq_subject(Filter, b"a.>", 255).is_ok());
    assert!(check_blipmq_subject(Filter, b"\xff", 255).is_err());
    assert!(check_blipmq_subject(Queue, b"q.v1", 255).is_err());
    assert!(check_blipmq_subject(Queue, b"q", 255).is_ok());
    assert!(check_blipmq_subject(Publish, &[b'a'; 256], 255).is_err());
}

#[test]
fn server_ops_are_encoded_as_nats_server_writes_them() {
    let mut out = Vec::new();
    encode::put_msg(&mut out, b"a.b", b"7", None, b"hi");
    encode::put_msg(&mut out, b"a.b", b"7", Some(b"_INBOX.1"), b"");
    encode::put_hmsg(&mut out, b"a.b", b"12", None, b"NATS/1.0\r\n\r\n", b"hi");
    encode::put_hmsg(&mut out, b"a", b"1", Some(b"r"), b"NATS/1.0\r\n\r\n", b"");
    encode::put_ok(&mut out);
    encode::put_err(&mut out, "Unknown Protocol Operation");
    encode::put_ping(&mut out);
    encode::put_pong(&mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "MSG a.b 7 2\r\nhi\r\n\
         MSG a.b 7 _INBOX.1 0\r\n\r\n\
         HMSG a.b 12 12 14\r\nNATS/1.0\r\n\r\nhi\r\n\
         HMSG a 1 r 12 12\r\nNATS/1.0\r\n\r\n\r\n\
         +OK\r\n\
         -ERR 'Unknown Protocol Operation'\r\n\
         PING\r\n\
         PONG\r\n"
    );
}

#[test]
fn no_responders_is_the_bytes_nats_server_2_9_sends() {
    let mut out = Vec::new();
    encode::put_no_responders(&mut out, b"_INBOX.abc.1", b"3");
    assert_eq!(
        out,
        b"HMSG _INBOX.abc.1 3 16 16\r\nNATS/1.0 503\r\n\r\n\r\n".to_vec()
    );
}

#[test]
fn info_json() {
    let info = ServerInfo {
        server_id: "NABC".into(),
        server_name: "blip-1".into(),
        version: "2.9.0".into(),
        client_id: 5,
        client_ip: "127.0.0.1".into(),
        ..ServerInfo::default()
    };
    let mut out = Vec::new();
    encode::put_info(&mut out, &info);
    assert!(out.starts_with(b"INFO {\"server_id\":\"NABC\""));
    assert!(
        out.ends_with(b"} \r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    let json: serde_json::Value = serde_json::from_slice(&out[5..out.len() - 3]).unwrap();
    assert_eq!(json["proto"], 1);
    assert_eq!(json["headers"], true);
    assert_eq!(json["max_payload"], 1024 * 1024);
    assert_eq!(json["port"], 4222);
    assert_eq!(json["client_id"], 5);
    // omitempty fields stay out, as nats-server leaves them out.
    for absent in ["go", "auth_required", "tls_required", "nonce", "ldm"] {
        assert!(json.get(absent).is_none(), "{absent}");
    }
    let parsed: ServerInfo = serde_json::from_value(json).unwrap();
    assert_eq!(parsed, info);
}

#[test]
fn decimals() {
    for value in [0usize, 7, 9, 10, 99, 100, 4096, 999_999_999, usize::MAX] {
        let mut out = Vec::new();
        encode::put_decimal(&mut out, value);
        assert_eq!(out, value.to_string().into_bytes());
    }
}

#[test]
fn message_encoding_writes_only_into_the_reserved_buffer() {
    let payload = [7u8; 128];
    let headers = b"NATS/1.0\r\nA: b\r\n\r\n";
    let len = encode::msg_len(b"orders.eu", b"12", Some(b"_INBOX.x"), payload.len())
        + encode::hmsg_len(b"orders.eu", b"12", None, headers.len(), payload.len());
    let mut out = Vec::with_capacity(len);
    let (capacity, pointer) = (out.capacity(), out.as_ptr());
    encode::put_msg(&mut out, b"orders.eu", b"12", Some(b"_INBOX.x"), &payload);
    encode::put_hmsg(&mut out, b"orders.eu", b"12", None, headers, &payload);
    assert_eq!(
        out.len(),
        len,
        "msg_len/hmsg_len agree with what is written"
    );
    assert_eq!((out.capacity(), out.as_ptr()), (capacity, pointer));
}

#[test]
fn server_output_round_trips_through_a_client_parser() {
    let info = ServerInfo {
        server_id: "S".into(),
        go: Some("go1.19".into()),
        auth_required: true,
        connect_urls: vec!["10.0.0.1:4222".into()],
        ..ServerInfo::default()
    };
    let headers = b"NATS/1.0\r\nK: v\r\n\r\n";
    let mut out = bytes::BytesMut::new();
    encode::put_info(&mut out, &info);
    encode::put_ok(&mut out);
    encode::put_msg(&mut out, b"a.b", b"1", None, b"x y\r\nz");
    encode::put_msg(&mut out, b"a.b", b"1", Some(b"_R.1"), b"");
    encode::put_hmsg(&mut out, b"a.c", b"2", Some(b"_R.2"), headers, b"body");
    encode::put_no_responders(&mut out, b"_R.3", b"9");
    encode::put_err(&mut out, "Invalid Subject");
    encode::put_ping(&mut out);
    encode::put_pong(&mut out);
    let ops = parse_server_stream(&out).unwrap();
    let owned = |b: &[u8]| b.to_vec();
    assert_eq!(
        ops,
        vec![
            ServerOp::Info(serde_json::to_value(&info).unwrap()),
            ServerOp::Ok,
            ServerOp::Msg {
                subject: owned(b"a.b"),
                sid: owned(b"1"),
                reply: None,
                payload: owned(b"x y\r\nz")
            },
            ServerOp::Msg {
                subject: owned(b"a.b"),
                sid: owned(b"1"),
                reply: Some(owned(b"_R.1")),
                payload: Vec::new()
            },
            ServerOp::Hmsg {
                subject: owned(b"a.c"),
                sid: owned(b"2"),
                reply: Some(owned(b"_R.2")),
                headers: owned(headers),
                payload: owned(b"body")
            },
            ServerOp::Hmsg {
                subject: owned(b"_R.3"),
                sid: owned(b"9"),
                reply: None,
                headers: owned(b"NATS/1.0 503\r\n\r\n"),
                payload: Vec::new()
            },
            ServerOp::Err("Invalid Subject".into()),
            ServerOp::Ping,
            ServerOp::Pong,
        ]
    );
}

#[test]
fn server_op_len_walks_every_op_this_module_writes() {
    let mut queue = Vec::new();
    let mut lens = Vec::new();
    let mut push = |queue: &mut Vec<u8>, write: &dyn Fn(&mut Vec<u8>)| {
        let start = queue.len();
        write(queue);
        lens.push(queue.len() - start);
    };
    push(&mut queue, &|q| {
        encode::put_msg(q, b"a.b", b"7", Some(b"r"), b"x\r\ny")
    });
    push(&mut queue, &|q| {
        encode::put_hmsg(q, b"a", b"12", None, b"NATS/1.0\r\nK: v\r\n\r\n", b"body")
    });
    push(&mut queue, &|q| {
        encode::put_no_responders(q, b"_INBOX.1", b"3")
    });
    push(&mut queue, &|q| encode::put_ok(q));
    push(&mut queue, &|q| encode::put_err(q, "Slow Consumer"));
    push(&mut queue, &|q| encode::put_ping(q));
    push(&mut queue, &|q| encode::put_msg(q, b"e", b"1", None, b""));
    let mut at = 0;
    let mut walked = Vec::new();
    while at < queue.len() {
        let len = encode::server_op_len(&queue[at..]);
        walked.push(len);
        at += len;
    }
    assert_eq!(walked, lens);
    assert!(encode::is_msg(&queue));
    assert!(!encode::is_msg(b"+OK\r\n"));
}

#[test]
fn connect_with_nulls_as_async_nats_sends_it() {
    let json = br#"{"verbose":false,"pedantic":false,"jwt":null,"nkey":null,"sig":null,"name":null,"echo":true,"lang":"rust","version":"0.51.0","protocol":1,"tls_required":false,"user":null,"pass":null,"auth_token":null,"headers":true,"no_responders":true}"#;
    let connect = ConnectOptions::parse(json).expect("parses");
    assert!(!connect.verbose && !connect.pedantic && connect.echo);
    assert_eq!(connect.name, "");
    assert_eq!(connect.auth_token, None);
    assert!(connect.check(true).is_ok());
    let nulls = ConnectOptions::parse(br#"{"verbose":null,"echo":null}"#).expect("parses");
    assert!(nulls.verbose && nulls.echo, "null keeps the default");
}
