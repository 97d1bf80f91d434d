//! Property tests: arbitrary bytes never panic, never over-consume and
//! decode the same however split; whatever a leaf encodes decodes back (the
//! hub parses leaf and hub messages with the same grammar).

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::encode;
use super::{decode_hub_op, HubOp, LeafDecodeError};
use crate::nats::proptests::chunks;
use crate::nats::NatsLimits;

fn token() -> impl Strategy<Value = Vec<u8>> {
    vec(
        any::<u8>().prop_filter("no blank or newline", |b| {
            !matches!(b, b' ' | b'\t' | b'\r' | b'\n')
        }),
        1..10,
    )
}

/// An owned op, as the model to compare with.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Model {
    Sub(Vec<u8>, Option<(Vec<u8>, u32)>),
    Unsub(Vec<u8>, Option<Vec<u8>>),
    Msg {
        subject: Vec<u8>,
        reply: Option<Vec<u8>>,
        queues: Vec<Vec<u8>>,
        headers: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    Ping,
    Pong,
}

fn model() -> impl Strategy<Value = Model> {
    // A subject of `+` or `|` alone would be read as an indicator only
    // when queues follow, which the encoder never writes ambiguously; a
    // reply token of `+`/`|` could be, so keep those out of replies.
    let reply = token().prop_filter("not an indicator", |t| t != b"+" && t != b"|");
    prop_oneof![
        (token(), option::of((token(), 0u32..1_000_000_000)))
            .prop_map(|(subject, queue)| Model::Sub(subject, queue)),
        (token(), option::of(token())).prop_map(|(subject, queue)| Model::Unsub(subject, queue)),
        (
            token(),
            option::of(reply),
            vec(token(), 0..4),
            option::of(vec(any::<u8>(), 0..16)),
            vec(any::<u8>(), 0..32)
        )
            .prop_map(|(subject, reply, queues, headers, payload)| Model::Msg {
                subject,
                reply,
                queues,
                headers,
                payload
            }),
        Just(Model::Ping),
        Just(Model::Pong),
    ]
}

fn encode_model(model: &Model, out: &mut Vec<u8>) {
    match model {
        Model::Sub(subject, queue) => encode::put_sub(
            out,
            subject,
            queue.as_ref().map(|(name, weight)| (&name[..], *weight)),
        ),
        Model::Unsub(subject, queue) => encode::put_unsub(out, subject, queue.as_deref()),
        Model::Msg {
            subject,
            reply,
            queues,
            headers,
            payload,
        } => encode::put_msg(
            out,
            subject,
            reply.as_deref(),
            queues.iter().map(Vec::as_slice),
            headers.as_deref(),
            payload,
        ),
        Model::Ping => encode::put_ping(out),
        Model::Pong => encode::put_pong(out),
    }
}

fn to_model(op: HubOp<'_>) -> Option<Model> {
    Some(match op {
        HubOp::Sub { subject, queue } => Model::Sub(
            subject.to_vec(),
            queue.map(|queue| (queue.name.to_vec(), queue.weight)),
        ),
        HubOp::Unsub { subject, queue } => {
            Model::Unsub(subject.to_vec(), queue.map(<[u8]>::to_vec))
        }
        HubOp::Msg(msg) => Model::Msg {
            subject: msg.subject.to_vec(),
            reply: msg.reply.map(<[u8]>::to_vec),
            queues: msg.queues.iter().map(<[u8]>::to_vec).collect(),
            headers: msg.headers.map(<[u8]>::to_vec),
            payload: msg.payload.to_vec(),
        },
        HubOp::Ping => Model::Ping,
        HubOp::Pong => Model::Pong,
        HubOp::Info { .. } | HubOp::Ok | HubOp::Err { .. } => return None,
    })
}

/// Decodes `chunks` as a reader fed piece by piece would: the ops as
/// models (or their debug text), and the first error.
fn decode_chunks(chunks: &[&[u8]], limits: &NatsLimits) -> (Vec<String>, Option<LeafDecodeError>) {
    let mut buffered = Vec::new();
    let mut ops = Vec::new();
    for chunk in chunks {
        buffered.extend_from_slice(chunk);
        loop {
            match decode_hub_op(&buffered, limits) {
                Ok(Some((op, used))) => {
                    assert!(used > 0 && used <= buffered.len());
                    ops.push(format!("{op:?}"));
                    buffered.drain(..used);
                }
                Ok(None) => break,
                Err(error) => return (ops, Some(error)),
            }
        }
    }
    (ops, None)
}

fn protocolish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        model().prop_map(|m| {
            let mut out = Vec::new();
            encode_model(&m, &mut out);
            out
        }),
        prop_oneof![
            Just("LMSG "),
            Just("HMSG "),
            Just("LS+ "),
            Just("LS- "),
            Just("INFO {} "),
            Just("-ERR 'x'"),
            Just("+OK"),
            Just("PING"),
            Just(" + "),
            Just(" | "),
            Just("\r\n"),
            Just("3 "),
            Just("\n"),
        ]
        .prop_map(|s: &str| s.as_bytes().to_vec()),
        vec(any::<u8>(), 0..8),
    ];
    vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encoded_ops_decode_back(models in vec(model(), 0..10), cuts in vec(any::<usize>(), 0..5)) {
        let mut stream = Vec::new();
        for m in &models {
            encode_model(m, &mut stream);
        }
        let limits = NatsLimits::default();
        let mut decoded = Vec::new();
        let mut rest = &stream[..];
        while let Some((op, used)) = decode_hub_op(rest, &limits).expect("valid") {
            decoded.extend(to_model(op));
            rest = &rest[used..];
        }
        prop_assert!(rest.is_empty());
        prop_assert_eq!(&decoded, &models);
        // And the same in pieces.
        let (pieces, error) = decode_chunks(&chunks(&stream, &cuts), &limits);
        prop_assert_eq!(error, None);
        prop_assert_eq!(pieces.len(), models.len());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_split_the_same(
        bytes in prop_oneof![protocolish(), vec(any::<u8>(), 0..256)],
        cuts in vec(any::<usize>(), 0..5),
    ) {
        let limits = NatsLimits { max_control_line: 48, max_payload: 40 };
        let whole = decode_chunks(&[&bytes], &limits);
        let pieces = decode_chunks(&chunks(&bytes, &cuts), &limits);
        prop_assert_eq!(pieces, whole);
    }
}
