//! Property tests: `encode::put_*` then `decode_frame` + parse gives back the
//! inputs; decoding arbitrary bytes never panics.

use blipmq_protocol::encode;
use blipmq_protocol::fuzzing::fuzz_decode;
use blipmq_protocol::{decode_frame, ErrorCode, Request, ServerFrame};
use proptest::collection::vec;
use proptest::prelude::*;

const MAX: u32 = 1 << 20;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

fn topic() -> impl Strategy<Value = Vec<u8>> {
    // Arbitrary bytes: the codec does not validate subjects. Mostly short,
    // sometimes long enough to need two bytes of topic_len.
    prop_oneof![4 => bytes(40), 1 => bytes(600)]
}

fn decode_one(buf: &[u8]) -> (blipmq_protocol::RawFrame<'_>, usize) {
    decode_frame(buf, MAX)
        .expect("framing")
        .expect("complete frame")
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::PingTimeout,
        ErrorCode::Conflict,
        ErrorCode::TooLarge,
        ErrorCode::TooMany,
        ErrorCode::Unavailable,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn publish_round_trips(
        subject in topic(),
        reply in prop::option::of(bytes(300)),
        payload in bytes(2000),
        ack in any::<bool>(),
        trailing in bytes(20),
    ) {
        let mut buf = Vec::new();
        encode::put_publish(&mut buf, &subject, reply.as_deref(), &payload, ack);
        let len = buf.len();
        prop_assert_eq!(len, encode::frame_len(subject.len(), reply.as_ref().map_or(0, |r| 2 + r.len()) + payload.len()));
        buf.extend_from_slice(&trailing);
        let (frame, consumed) = decode_one(&buf);
        prop_assert_eq!(consumed, len);
        prop_assert_eq!(
            Request::parse(frame),
            Ok(Request::Publish { subject: &subject, reply: reply.as_deref(), payload: &payload, ack })
        );
        prop_assert!(ServerFrame::parse(frame).is_err());
    }

    #[test]
    fn subscribe_round_trips(
        filter in topic(),
        sid in any::<u32>(),
        queue in prop::option::of(vec(any::<u8>(), 1..64)),
        ack in any::<bool>(),
    ) {
        let mut buf = Vec::new();
        encode::put_subscribe(&mut buf, &filter, sid, queue.as_deref(), ack);
        let (frame, consumed) = decode_one(&buf);
        prop_assert_eq!(consumed, buf.len());
        prop_assert_eq!(
            Request::parse(frame),
            Ok(Request::Subscribe { filter: &filter, sid, queue: queue.as_deref(), ack })
        );
    }

    #[test]
    fn unsubscribe_round_trips(sid in any::<u32>(), max_msgs in prop_oneof![Just(0u32), any::<u32>()], ack in any::<bool>()) {
        let mut buf = Vec::new();
        encode::put_unsubscribe(&mut buf, sid, max_msgs, ack);
        prop_assert_eq!(buf.len(), if max_msgs == 0 { 12 } else { 16 });
        let (frame, consumed) = decode_one(&buf);
        prop_assert_eq!(consumed, buf.len());
        prop_assert_eq!(Request::parse(frame), Ok(Request::Unsubscribe { sid, max_msgs, ack }));
    }

    #[test]
    fn connect_and_info_round_trip(json in bytes(300)) {
        let mut buf = Vec::new();
        encode::put_connect(&mut buf, &json);
        let (frame, consumed) = decode_one(&buf);
        prop_assert_eq!(consumed, buf.len());
        prop_assert_eq!(Request::parse(frame), Ok(Request::Connect { json: &json }));

        let mut buf = Vec::new();
        encode::put_info(&mut buf, &json);
        let (frame, consumed) = decode_one(&buf);
        prop_assert_eq!(consumed, buf.len());
        prop_assert_eq!(ServerFrame::parse(frame), Ok(ServerFrame::Info { json: &json }));
        prop_assert!(Request::parse(frame).is_err());
    }

    #[test]
    fn message_round_trips(
        subject in topic(),
        sid in any::<u32>(),
        reply in prop::option::of(bytes(300)),
        payload in bytes(2000),
    ) {
        let mut buf = Vec::new();
        encode::put_message(&mut buf, &subject, sid, reply.as_deref(), &payload);
        prop_assert_eq!(buf.len(), encode::message_len(&subject, reply.as_deref(), payload.len()));

        let mut head = Vec::new();
        encode::put_message_head(&mut head, &subject, sid, reply.as_deref(), payload.len());
        prop_assert_eq!(head.len() + payload.len(), buf.len());
        prop_assert_eq!(&buf[..head.len()], &head[..]);

        let (frame, consumed) = decode_one(&buf);
        prop_assert_eq!(consumed, buf.len());
        prop_assert_eq!(
            ServerFrame::parse(frame),
            Ok(ServerFrame::Message { subject: &subject, sid, reply: reply.as_deref(), payload: &payload })
        );
        prop_assert!(Request::parse(frame).is_err());
    }

    #[test]
    fn error_and_disconnect_round_trip(code in error_code(), reason in ".{0,80}") {
        let mut buf = Vec::new();
        encode::put_error(&mut buf, code, &reason);
        let (frame, consumed) = decode_one(&buf);
        prop_assert_eq!(consumed, buf.len());
        prop_assert_eq!(
            ServerFrame::parse(frame),
            Ok(ServerFrame::Error { code: code.as_u16(), reason: reason.as_bytes() })
        );

        let mut buf = Vec::new();
        encode::put_disconnect(&mut buf, &reason);
        let (frame, consumed) = decode_one(&buf);
        prop_assert_eq!(consumed, buf.len());
        prop_assert_eq!(ServerFrame::parse(frame), Ok(ServerFrame::Disconnect { reason: reason.as_bytes() }));
        // A client's DISCONNECT is empty.
        prop_assert_eq!(Request::parse(frame).is_ok(), reason.is_empty());
    }

    /// Many frames in one buffer, each cut at an arbitrary point: decoding
    /// the whole stream gives them back in order.
    #[test]
    fn streams_decode_in_order(
        frames in vec((topic(), any::<u32>(), prop::option::of(bytes(20)), bytes(100)), 1..12),
        split in any::<prop::sample::Index>(),
    ) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for (subject, sid, reply, payload) in &frames {
            encode::put_message(&mut buf, subject, *sid, reply.as_deref(), payload);
            ends.push(buf.len());
        }
        // Everything up to an arbitrary cut: whole frames, then Ok(None).
        let cut = split.index(buf.len() + 1);
        let mut offset = 0;
        let mut seen = 0;
        while let Some((frame, consumed)) = decode_frame(&buf[offset..cut], MAX).unwrap() {
            let (subject, sid, reply, payload) = &frames[seen];
            prop_assert_eq!(
                ServerFrame::parse(frame),
                Ok(ServerFrame::Message { subject, sid: *sid, reply: reply.as_deref(), payload })
            );
            offset += consumed;
            prop_assert_eq!(offset, ends[seen]);
            seen += 1;
        }
        prop_assert_eq!(seen, ends.iter().filter(|&&end| end <= cut).count());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(300), max_len in prop_oneof![Just(MAX), 0u32..64, any::<u32>()]) {
        if let Ok(Some((frame, consumed))) = decode_frame(&data, max_len) {
            prop_assert!(consumed <= data.len());
            prop_assert_eq!(consumed, 8 + frame.topic.len() + frame.body.len());
            let _ = Request::parse(frame);
            let _ = ServerFrame::parse(frame);
        }
        fuzz_decode(&data);
    }

    /// Arbitrary bytes after a length that fits them, so that decoding gets
    /// past the framing and into the per-op checks.
    #[test]
    fn framed_arbitrary_bytes_never_panic(
        op in prop_oneof![0u8..0x08, 0x10u8..0x14, any::<u8>()],
        flag_bits in prop_oneof![0u8..4, any::<u8>()],
        topic_len in 0usize..16,
        rest in bytes(64),
    ) {
        let topic_len = topic_len.min(rest.len());
        let mut data = ((4 + rest.len()) as u32).to_be_bytes().to_vec();
        data.push(op);
        data.extend_from_slice(&(topic_len as u16).to_be_bytes());
        data.push(flag_bits);
        data.extend_from_slice(&rest);
        let (frame, consumed) = decode_one(&data);
        prop_assert_eq!(consumed, data.len());
        prop_assert_eq!(frame.topic, &rest[..topic_len]);
        prop_assert_eq!(frame.body, &rest[topic_len..]);
        let request = Request::parse(frame);
        let server = ServerFrame::parse(frame);
        // No op is accepted in both directions except PING, PONG, DISCONNECT.
        if request.is_ok() && server.is_ok() {
            prop_assert!(matches!(op, 0x05..=0x07), "op {:#04x}", op);
        }
        fuzz_decode(&data);

        // And with an arbitrary length prefix in front of the same bytes.
        let mut data2 = (rest.len() as u32).to_be_bytes().to_vec();
        data2.extend_from_slice(&rest);
        fuzz_decode(&data2);
    }
}
