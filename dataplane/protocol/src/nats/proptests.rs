//! Property tests: random valid op sequences, written as a client would and
//! split into random chunks, decode to the model; arbitrary bytes never
//! panic, never over-consume, and decode the same however they are split;
//! random server output round-trips through a client parser.

use proptest::collection::vec;
use proptest::prelude::*;

use super::encode;
use super::test_client::{
    decode_chunks, decode_whole, encode_ops, parse_server_stream, Op, ServerOp, Style,
};
use super::NatsLimits;

fn token() -> impl Strategy<Value = Vec<u8>> {
    // Any byte but blanks and line ends may be in a token.
    vec(
        any::<u8>().prop_filter("no blank or newline", |b| {
            !matches!(b, b' ' | b'\t' | b'\r' | b'\n')
        }),
        1..12,
    )
}

fn subject() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[a-zA-Z0-9_*>-]{1,8}(\\.[a-zA-Z0-9_*>-]{1,8}){0,4}".prop_map(String::into_bytes),
        1 => token(),
    ]
}

fn sid() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (0u64..1_000_000).prop_map(|n| n.to_string().into_bytes()),
        1 => token(),
    ]
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..64)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        "[a-z]{0,10}".prop_map(|name| Op::Connect(
            serde_json::to_vec(&serde_json::json!({"verbose": false, "name": name})).unwrap()
        )),
        (subject(), proptest::option::of(subject()), payload()).prop_map(
            |(subject, reply, payload)| Op::Pub {
                subject,
                reply,
                payload
            }
        ),
        (
            subject(),
            proptest::option::of(subject()),
            payload(),
            payload()
        )
            .prop_map(|(subject, reply, headers, payload)| Op::Hpub {
                subject,
                reply,
                headers,
                payload
            }),
        (subject(), proptest::option::of(token()), sid()).prop_map(|(subject, queue, sid)| {
            Op::Sub {
                subject,
                queue,
                sid,
            }
        }),
        (sid(), prop_oneof![Just(0u32), 1u32..1_000_000_000])
            .prop_map(|(sid, max_msgs)| Op::Unsub { sid, max_msgs }),
        Just(Op::Ping),
        Just(Op::Pong),
    ]
}

fn style() -> impl Strategy<Value = Style> {
    (
        any::<bool>(),
        prop_oneof![Just(" "), Just("\t"), Just("  "), Just(" \t\t ")],
        prop_oneof![Just("\r\n"), Just("\n")],
    )
        .prop_map(|(lowercase, blank, line_end)| Style {
            lowercase,
            blank,
            line_end,
        })
}

/// Cuts `bytes` at the given points (taken modulo its length, sorted).
pub(super) fn chunks<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = 0;
    for point in points {
        pieces.push(&bytes[at..point]);
        at = point;
    }
    pieces.push(&bytes[at..]);
    pieces
}

/// Bytes that often look like the protocol: pieces of valid ops, op names,
/// blanks, digits, line ends and noise.
fn protocolish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        (op(), style()).prop_map(|(op, style)| encode_ops(&[op], style)),
        prop_oneof![
            Just("PUB "),
            Just("HPUB "),
            Just("SUB "),
            Just("UNSUB "),
            Just("PING"),
            Just("PONG"),
            Just("CONNECT "),
            Just("pub\t"),
            Just(" "),
            Just("\t"),
            Just("\r\n"),
            Just("\n"),
            Just("\r"),
            Just("5"),
            Just("0 "),
            Just("12 "),
            Just("a.b "),
            Just("                                                  "),
        ]
        .prop_map(|s: &str| s.as_bytes().to_vec()),
        vec(any::<u8>(), 0..8),
    ];
    vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

fn small_limits() -> NatsLimits {
    NatsLimits {
        max_control_line: 48,
        max_payload: 40,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn valid_streams_decode_to_the_model(
        ops in vec(op(), 0..12),
        style in style(),
        cuts in vec(any::<usize>(), 0..6),
    ) {
        let stream = encode_ops(&ops, style);
        let outcome = decode_chunks(&chunks(&stream, &cuts), &NatsLimits::default());
        prop_assert_eq!(outcome.error, None);
        prop_assert_eq!(outcome.leftover, 0);
        prop_assert_eq!(outcome.ops, ops);
    }

    #[test]
    fn arbitrary_bytes_decode_the_same_however_split(
        bytes in prop_oneof![protocolish(), vec(any::<u8>(), 0..256)],
        cuts in vec(any::<usize>(), 0..6),
    ) {
        // decode_chunks asserts 0 < consumed <= buffered for every op.
        let limits = small_limits();
        let whole = decode_whole(&bytes, &limits);
        let split = decode_chunks(&chunks(&bytes, &cuts), &limits);
        prop_assert_eq!(split, whole);
        // And the fuzz target's invariants (re-encoding, a two-read split).
        crate::fuzzing::fuzz_nats_decode(&bytes);
    }

    #[test]
    fn server_output_round_trips(
        messages in vec(
            (subject(), sid(), proptest::option::of(subject()), proptest::option::of(payload()), payload()),
            0..8,
        ),
    ) {
        let mut out = Vec::new();
        let mut expected = Vec::new();
        for (subject, sid, reply, headers, payload) in messages {
            // The client parser splits at spaces, so the test sticks to
            // tokens without them, as the decoder yields.
            match headers {
                None => {
                    encode::put_msg(&mut out, &subject, &sid, reply.as_deref(), &payload);
                    expected.push(ServerOp::Msg { subject, sid, reply, payload });
                }
                Some(headers) => {
                    encode::put_hmsg(&mut out, &subject, &sid, reply.as_deref(), &headers, &payload);
                    expected.push(ServerOp::Hmsg { subject, sid, reply, headers, payload });
                }
            }
            encode::put_ping(&mut out);
            expected.push(ServerOp::Ping);
        }
        prop_assert_eq!(parse_server_stream(&out), Ok(expected));
    }
}
